/*
 * The shared key ring: every secret the sites share, as one versioned, serialisable value.
 *
 * A ring holds up to AE_RING_MAX_KEYS entries, each a 32-byte random master secret with an id,
 * a creation time and a state (next -> current -> previous; older ones are dropped = retired).
 * Consumers never use a master secret directly: each derives its own keys from it with
 * HKDF-SHA256 and a purpose label (ae_ring_derive), so one rotation schedule serves the TLS
 * ticket keys, the QUIC ticket / token / CID / reset keys and the tunnel keys, and a key leaked
 * from one purpose reveals nothing about the others.
 *
 * Text format (what Redis stores; one line per item, unknown lines and unknown fields are
 * ignored so that older and newer versions can read each other's rings):
 *
 *   anyedge-ring 1
 *   generation 7
 *   rotated_ms 1795635712000
 *   key id=5 state=next created_ms=1795635712000 secret=<64 hex>
 *   key id=4 state=current created_ms=... sealed=<hex of nonce(12) | ciphertext(32) | tag(16)>
 *
 *   mac <64 hex>
 *
 * With a key-encryption key (state.kek_file) secrets are sealed with AES-256-GCM, the additional
 * data binding each sealed secret to its key id, and the ring ends with a "mac" line: HMAC-SHA256
 * of every byte before it under HKDF(KEK, "anyedge-ring mac"), so the format version, the
 * generation and every key's id, state and times cannot be changed, relabelled or swapped by
 * whoever can write to Redis without the KEK (a ring without a valid MAC is refused; replaying
 * an older ring whole is refused by the sync, which never adopts a lower generation). A ring
 * mixing sealed and plain secrets, or sealed without a KEK here, is refused. Without a KEK the
 * ring is plain text: a Redis writer can read and replace every secret. A field repeated in a
 * key line, or a repeated generation or rotated_ms line, is refused (it could relabel a key).
 */
#ifndef AE_STATE_RING_H
#define AE_STATE_RING_H

#include <stddef.h>
#include <stdint.h>

#define AE_RING_FORMAT      1
#define AE_RING_MAX_KEYS    3 /* next, current, previous */
#define AE_RING_SECRET_LEN  32
#define AE_RING_KEK_LEN     32
#define AE_RING_ENCODED_MAX 4096 /* a ring larger than this in Redis is refused */

typedef enum {
    AE_RING_NEXT = 0,
    AE_RING_CURRENT = 1,
    AE_RING_PREVIOUS = 2,
} ae_ring_state;

typedef struct {
    uint64_t id;
    uint64_t created_ms; /* wall clock */
    ae_ring_state state;
    uint8_t secret[AE_RING_SECRET_LEN];
} ae_ring_key;

typedef struct {
    uint64_t generation; /* +1 on every change */
    uint64_t rotated_ms; /* wall clock of the last rotation (or creation) */
    size_t nkeys;
    ae_ring_key keys[AE_RING_MAX_KEYS]; /* newest first: [next, current, previous] */
} ae_ring;

/* A new ring: a current and a next key with fresh random secrets, generation 1. */
int ae_ring_init(ae_ring *r, uint64_t now_ms);
/* out = in rotated once: previous dropped, current -> previous, next -> current, fresh next;
 * generation + 1. in and out may be the same object. */
int ae_ring_rotate(const ae_ring *in, ae_ring *out, uint64_t now_ms);
/* The key in state s, or NULL. */
const ae_ring_key *ae_ring_find(const ae_ring *r, ae_ring_state s);
const char *ae_ring_state_name(ae_ring_state s);

/* Serialises r (sealed with kek when kek != NULL) into a malloc'd NUL-terminated string.
 * 0 or AE_ERR_*. */
int ae_ring_encode(const ae_ring *r, const uint8_t *kek, char **out, size_t *outlen);
/* Parses and validates a ring (see the format above). kek: the key-encryption key or NULL.
 * Returns 0, or AE_ERR_PARSE with a one-line reason in err (never any secret material). */
int ae_ring_decode(const char *buf, size_t len, const uint8_t *kek, ae_ring *out, char *err,
                   size_t errlen);

/* Reads a key-encryption key file: exactly 32 bytes, or 64 hex digits (optionally followed by a
 * newline). The file must not be readable by group or others. 0 or AE_ERR_* with err set. */
int ae_ring_load_kek(const char *path, uint8_t kek[AE_RING_KEK_LEN], char *err, size_t errlen);

/* HKDF-SHA256(secret, salt = "anyedge-ring", info = label) -> out[0, outlen). 0 or AE_ERR_*. */
int ae_ring_derive(const ae_ring_key *k, const char *label, uint8_t *out, size_t outlen);

#endif
