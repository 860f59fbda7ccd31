/*
 * Rendezvous (highest random weight) hashing for `balance: hash` (docs/architecture.md,
 * "Upstream affinity").
 *
 * A key (client address or a request header's value) ranks the servers of a pool by
 * score(key, server); the key goes to the highest-ranked usable server. Properties the proxy
 * relies on:
 *  - every site computes the same ranking from the same server list (the hash key below is a
 *    fixed constant, servers are identified by their address text, never by list position), so
 *    a client that moves to another site after a route shift reaches the same server;
 *  - when a server is down, each of its keys moves to that key's own next server: the other
 *    servers' keys do not move, and the moved keys spread over all remaining servers;
 *  - O(servers) per choice without allocation (pools are small; 4096 at most by config).
 * Pure functions, any thread.
 */
#ifndef AE_HRW_H
#define AE_HRW_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of data under the fixed public key of anyedge's rendezvous hashing. Not a secret:
 * the hash must be identical at every site and across versions (a change moves every key). */
uint64_t ae_hrw_hash(const void *data, size_t len);

/* The weight of server (ae_hrw_hash of its address text) for key (ae_hrw_hash of the key). */
static inline uint64_t ae_hrw_score(uint64_t key, uint64_t server)
{
    /* murmur3's 64-bit finalizer over the combination: every input bit affects every output
     * bit, so the scores of one key over different servers behave as independent draws. */
    uint64_t x = key ^ (server * 0x9E3779B97F4A7C15ULL);
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDULL;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ULL;
    x ^= x >> 33;
    return x;
}

#endif
