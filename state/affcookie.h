/*
 * The sealed affinity cookie of `balance: hash` pools with `affinity_cookie` (docs/architecture.md,
 * "Upstream affinity"): a cookie value that names an upstream server, readable and forgeable only
 * by the sites that share the key ring.
 *
 * Value: 51 characters, base64url without padding (RFC 4648 §5) of 38 octets:
 *
 *   octet 0       version, 1
 *   octet 1       key tag: the low octet of the id of the ring key that sealed it
 *   octets 2..13  nonce (random)
 *   octets 14..21 AES-256-GCM ciphertext of the server id (ae_hrw_hash of its address text,
 *                 8 octets big-endian: the same at every site listing the server)
 *   octets 22..37 GCM tag over the above, with additional data octets 0..1 and the cookie name
 *
 * Key: ae_ring_derive(ring key, AE_AFFCOOKIE_LABEL, 32). The current ring key seals; next,
 * current and previous open (the tag picks the key, so opening costs one AES-GCM at most), so a
 * cookie survives one rotation at least and works at every site holding the ring; standalone
 * sites use their local ring. The cookie name in the additional data keeps a value from being
 * replayed under another cookie name. Random nonces: GCM stays within its bounds for 2^32 seals
 * per key, far more than the Set-Cookie headers one rotation period sees (a cookie is set only
 * when a client has none or a stale one).
 *
 * ae_affcookie_keys is immutable after construction (nettle AES and GHASH key schedules, which
 * encryption only reads): any number of threads may seal and open with it at once, without
 * allocation. Built by the main thread once per ring change (proxy/core/qsecrets.c).
 */
#ifndef AE_STATE_AFFCOOKIE_H
#define AE_STATE_AFFCOOKIE_H

#include <stddef.h>
#include <stdint.h>

#include "state/ring.h"

#define AE_AFFCOOKIE_LABEL   "h3-affinity-cookie"
#define AE_AFFCOOKIE_V1      1
#define AE_AFFCOOKIE_RAW_LEN 38
#define AE_AFFCOOKIE_LEN     51 /* characters of the value */

typedef struct ae_affcookie_keys ae_affcookie_keys;

/* The cookie keys of ring: its current key seals, every key opens. 0, AE_ERR_INVAL (no current
 * key), AE_ERR_NOMEM or AE_ERR_TLS (derivation failed). */
int ae_affcookie_keys_new(const ae_ring *ring, ae_affcookie_keys **out);
/* Wipes and frees; accepts NULL. */
void ae_affcookie_keys_free(ae_affcookie_keys *k);

/* Seals server_id for the cookie named name[0, nlen) into out (AE_AFFCOOKIE_LEN characters and
 * a NUL). 0, or AE_ERR_TLS when no random nonce could be drawn. */
int ae_affcookie_seal(const ae_affcookie_keys *k, const char *name, size_t nlen, uint64_t server_id,
                      char out[AE_AFFCOOKIE_LEN + 1]);

/* Opens a cookie value v[0, len) of the cookie named name[0, nlen). Returns 0 with *server_id,
 * and *renew (may be NULL) = 1 when it was sealed under a key other than current (the caller
 * should set a fresh one); AE_ERR_PARSE: wrong length, not base64url, non-zero padding bits,
 * unknown version; AE_ERR_NOTFOUND: its key is not in the ring (expired); AE_ERR_PROTO: the tag
 * does not verify (tampered, another cookie name, forged). No allocation. */
int ae_affcookie_open(const ae_affcookie_keys *k, const char *name, size_t nlen, const uint8_t *v,
                      size_t len, uint64_t *server_id, int *renew);

#endif
