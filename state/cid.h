/*
 * QUIC connection IDs that carry the issuing site and worker, encrypted under the shared ring.
 *
 * The format is QUIC-LB's (draft-ietf-quic-load-balancers) "single-pass encryption": a fixed
 * 17-byte CID whose first octet is plaintext and whose other 16 octets are one AES-128-ECB block
 * over server id + nonce. Fixing the length at 17 (QUIC allows up to 20) makes server id + nonce
 * exactly one cipher block, so one AES call encodes or decodes a CID; any other length would need
 * the draft's four-pass Feistel construction.
 *
 *   octet 0      : epoch (3 high bits, 0..6; 7 = unroutable) | length - 1 = 16 (5 low bits)
 *   octets 1..16 : AES-128-ECB(key[epoch], plaintext)
 *   plaintext    : site (12 bits, 1..4095) | worker (8 bits) | 4 zero bits | nonce (104 bits)
 *
 * site, worker and the 4 zero bits are the 3-octet QUIC-LB server id; the zero bits are checked
 * on decode, so a CID made under another key (or garbage) is refused 15 times in 16 before the
 * site id is even looked at. The nonce is random (RAND_bytes): 104 bits make a repeated CID
 * (which would let an observer link two paths) negligible without any per-worker state.
 *
 * Keys: epoch e's key is ae_ring_derive(ring key, "quic-cid", 16 bytes) of the ring key whose
 * id % 7 == e. Ring key ids increase by one per rotation, so next, current and previous always
 * have three different epochs. CIDs are encoded under current; next (a site that synced the
 * rotation earlier already encodes with it), current and previous decode.
 *
 * Ownership and threads: OpenSSL cipher contexts must not be used by two threads at once
 * (openssl-threads(7): EVP_CipherUpdate mutates its context), and encode/decode use the contexts
 * set up at construction so they do no allocation and no algorithm fetch. Therefore an
 * ae_cid_keys belongs to ONE thread at a time: the main thread builds one object per worker from
 * each new ring (ae_cid_keys_from_ring is cheap: three HKDFs and six cipher inits), hands each
 * worker its own through the worker's snapshot, and the old object is freed once that worker has
 * switched. The logical content (which keys, which epoch encodes) never changes after
 * construction.
 */
#ifndef AE_STATE_CID_H
#define AE_STATE_CID_H

#include <stddef.h>
#include <stdint.h>

#include "state/ring.h"

#define AE_CID_LEN            17 /* first octet + one 16-byte AES block */
#define AE_CID_EPOCHS         7  /* epochs 0..6; 7 is QUIC-LB's "unroutable" code point */
#define AE_CID_EPOCH_RESERVED 7
#define AE_CID_SITE_MAX       4095 /* site ids are 1..4095; 0 is invalid */
#define AE_CID_KEY_LABEL      "quic-cid"

typedef struct ae_cid_keys ae_cid_keys;

/* The epoch of a ring key id (id % 7). */
int ae_cid_epoch_of(uint64_t ring_key_id);

/* Builds the CID keys of ring: its current key encodes, next/current/previous decode. Should two
 * ring keys share an epoch (not possible with rings made by ae_ring_rotate), current wins over
 * previous, previous over next. 0, AE_ERR_INVAL (ring has no current key), AE_ERR_NOMEM or
 * AE_ERR_TLS. */
int ae_cid_keys_from_ring(const ae_ring *ring, ae_cid_keys **out);
void ae_cid_keys_free(ae_cid_keys *k);

/* The epoch new CIDs are encoded under (0..6). */
int ae_cid_keys_epoch(const ae_cid_keys *k);
/* Whether epoch e (0..7) is decodable with k. */
int ae_cid_keys_has_epoch(const ae_cid_keys *k, int epoch);

/* A new CID for {site, worker}. 0, AE_ERR_INVAL (site not 1..4095) or AE_ERR_TLS. */
int ae_cid_encode(ae_cid_keys *k, uint16_t site, uint8_t worker, uint8_t out[AE_CID_LEN]);

/* The {site, worker} a CID was issued for. worker may be NULL. Returns 0, or AE_ERR_PARSE when
 * the length is not AE_CID_LEN, the first octet's length bits are not AE_CID_LEN - 1, the epoch
 * is 7 or not loaded, or the decrypted server id is invalid (site 0, non-zero padding bits).
 * A CID issued under another key decodes to an error or to a random server. */
int ae_cid_decode(ae_cid_keys *k, const uint8_t *cid, size_t len, uint16_t *site, uint8_t *worker);

#endif
