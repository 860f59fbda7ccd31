/*
 * Single-use table: remembers fingerprints of keys until they expire, in bounded memory.
 *
 * Used for NEW_TOKEN tokens (a token is accepted once per site: one table per process behind a
 * mutex, proxy/quic/quic.c) and for 0-RTT anti-replay (every accepted early-data ClientHello, one
 * table per process behind a mutex, tls/quic_gnutls.c).
 *
 * A key is reduced to a 128-bit keyed fingerprint (SipHash-2-4 under two random per-table keys),
 * so colliding fingerprints are not a practical concern and the table holds no secrets. Open
 * addressing with a bounded probe window: an insert looks at AE_SEEN_PROBE slots, reuses the
 * first empty or expired one, and reports AE_SEEN_FULL when all are live. Callers fail closed on
 * FULL (treat the key as not usable once), so a flood can cost an extra round trip, never a
 * replay. Not thread-safe.
 */
#ifndef AE_SEEN_H
#define AE_SEEN_H

#include <stddef.h>
#include <stdint.h>

#define AE_SEEN_PROBE 16

enum { AE_SEEN_NEW = 0, AE_SEEN_DUP = 1, AE_SEEN_FULL = 2 };

typedef struct ae_seen ae_seen;

/* A table of at least `slots` slots (rounded up to a power of two, at least AE_SEEN_PROBE);
 * seed: 32 random bytes for the fingerprint keys. NULL when out of memory. */
ae_seen *ae_seen_new(size_t slots, const uint8_t seed[32]);
void ae_seen_free(ae_seen *s);
/* Records key until `expires` (any clock, same units as now). Returns AE_SEEN_NEW when it was
 * not recorded (or its record expired: expiry <= now), AE_SEEN_DUP when a live record exists
 * (the record is left as is), AE_SEEN_FULL when it could not be recorded. */
int ae_seen_add(ae_seen *s, const void *key, size_t len, uint64_t now, uint64_t expires);
/* Live records (expiry > now) — for tests and metrics; O(slots). */
size_t ae_seen_count(const ae_seen *s, uint64_t now);

/* SipHash-2-4 of data under a 16-byte key (exposed for tests). */
uint64_t ae_siphash24(const uint8_t key[16], const void *data, size_t len);

#endif
