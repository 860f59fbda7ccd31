/*
 * Upstream affinity of `balance: hash` (docs/architecture.md, "Upstream affinity"): the result
 * of one choice (counted per pool as anyedge_affinity_total{pool,result}), the hash key of a
 * client address, and the scanner that finds one cookie in a `cookie` field. Pure functions, no
 * allocation, any thread. The ranking itself is proxy/core/hrw.h; the pool pick runtime.h; the
 * sealed cookie state/affcookie.h.
 */
#ifndef AE_AFFINITY_H
#define AE_AFFINITY_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* What one request's (or TCP connection's) server choice was. One of HIT, MOVED, COOKIE per
 * chosen server (failover attempts included); COOKIE_INVALID, COOKIE_DOWN and NO_KEY are counted
 * once per request besides, when they apply. */
typedef enum {
    AE_AFF_HIT = 0,        /* the key's first-ranked server */
    AE_AFF_MOVED,          /* a later-ranked one: the first is down, or failed this request */
    AE_AFF_COOKIE,         /* the server a valid affinity cookie names */
    AE_AFF_COOKIE_INVALID, /* an affinity cookie that did not open (tampered, truncated, sealed
                            * under a key no longer in the ring, garbage, too long): ignored */
    AE_AFF_COOKIE_DOWN,    /* a valid cookie whose server is down or not in the pool: ignored */
    AE_AFF_NO_KEY,         /* no hash_key header / cookie in the request: client address used */
    AE_AFF__COUNT
} ae_aff_result;

/* Label values ("hit", "moved", ...), by ae_aff_result. */
extern const char *const ae_aff_result_names[AE_AFF__COUNT];

/* The hash key (ae_hrw_hash) of a client address: its first v4_prefix bits (IPv4, and IPv6
 * addresses mapping IPv4) or v6_prefix bits (IPv6); prefixes are clamped to 32 / 128. 0 for
 * another family. The defaults (/32, /64) hash 4 and 8 bytes. */
uint64_t ae_aff_addr_key(const struct sockaddr *sa, unsigned v4_prefix, unsigned v6_prefix);

/* Finds cookie `name` (nlen bytes, compared exactly) in one `cookie` field value f[0, len):
 * `name=value` pairs separated by ';' with optional spaces or tabs around them (RFC 6265
 * §4.2.1, read leniently: pairs without '=' are skipped); a value in double quotes loses them.
 * The first match wins. Returns 1 and the value in *val / *vlen (pointing into f; may be empty),
 * or 0. O(len), no allocation. */
int ae_cookie_find(const uint8_t *f, size_t len, const char *name, size_t nlen, const uint8_t **val,
                   size_t *vlen);

#endif
