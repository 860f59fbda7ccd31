/*
 * The runtime snapshot, upstream servers and pools, affinity records (runtime.c).
 *
 *  - An ae_runtime (config + TLS contexts + pools) is immutable and reference-counted: the
 *    server holds one reference to the current runtime, every worker one, every connection one.
 *  - ae_upstream_server objects carry health and load shared across workers and across
 *    reloads (same pool name and address = same object); their mutable fields are atomics.
 */
#ifndef AE_RUNTIME_H
#define AE_RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "proxy/core/affinity.h"
#include "tls/tls.h"

typedef struct ae_upstream_server {
    _Atomic int refcnt;
    char *pool; /* pool name */
    ae_addr addr;
    uint64_t hrw_id;                /* ae_hrw_hash(addr.text): its identity for balance: hash */
    _Atomic int healthy;            /* 1 = takes new connections */
    _Atomic uint32_t active;        /* open connections through this server (all workers) */
    _Atomic uint32_t passive_fails; /* consecutive failed connects */
    _Atomic uint64_t down_until_ms; /* passive hold-off end when the pool has no health check */
    _Atomic uint64_t connects, connect_fails, checks_ok, checks_failed, transitions;
    /* Main thread only (health checker). */
    uint32_t rise_streak, fall_streak;
} ae_upstream_server;

/* Counters of one pool that outlive reloads (same pool name = same object), like servers. */
typedef struct ae_pool_stats {
    _Atomic int refcnt;
    char *name;
    _Atomic uint64_t affinity[AE_AFF__COUNT]; /* balance: hash choices, by result */
} ae_pool_stats;

typedef struct {
    const ae_conf_upstream *conf;
    ae_upstream_server **servers;
    size_t nservers;
    ae_pool_stats *stats;
    _Atomic uint32_t rr; /* round-robin cursor */
} ae_pool;

/* ---- runtime snapshot ---- */

typedef struct ae_runtime {
    _Atomic int refcnt;
    uint64_t generation; /* 1 for the first config, +1 per successful reload */
    ae_conf *conf;
    ae_tls_ctx *tls;
    ae_pool *pools; /* one per conf->upstreams[i] */
    size_t npools;
} ae_runtime;

/* Builds a runtime owning conf (consumed even on failure). Server objects whose pool name and
 * address exist in prev (may be NULL) are shared with it, so health and load carry over.
 * Returns 0 or AE_ERR_* with a message in err. */
int ae_runtime_new(ae_conf *conf, ae_keyring *ring, const ae_runtime *prev, uint64_t generation,
                   ae_runtime **out, char *err, size_t errlen);
ae_runtime *ae_runtime_ref(ae_runtime *rt);
/* Drops a reference; frees at zero. Accepts NULL. Any thread. */
void ae_runtime_unref(ae_runtime *rt);

/* Chooses a server for a new connection from pool by its balance policy among healthy
 * servers not in the tried mask (bit i = servers[i], pools of more than 64 servers reuse
 * bits). Returns the index or -1 when none is available. now_ms is the monotonic clock. */
int ae_pool_pick(ae_pool *pool, uint64_t tried_mask, uint64_t now_ms);
/* balance: hash: the usable server not in tried_mask that ranks highest for key (proxy/core/
 * hrw.h); *first (optional) = 1 when it is the key's first-ranked server of the whole pool.
 * Returns the index or -1. */
int ae_pool_pick_hash(ae_pool *pool, uint64_t key, uint64_t tried_mask, uint64_t now_ms,
                      int *first);
/* The index of the server whose hrw_id is id, or -1. O(servers). */
int ae_pool_find_id(const ae_pool *pool, uint64_t id);
/* Counts one affinity result of the pool (anyedge_affinity_total{pool,result}). Any thread. */
static inline void ae_pool_count_affinity(ae_pool *pool, ae_aff_result r)
{
    atomic_fetch_add_explicit(&pool->stats->affinity[r], 1, memory_order_relaxed);
}
/* Reports a connect result to the passive health logic. */
void ae_pool_report_connect(ae_pool *pool, size_t idx, int ok, uint64_t now_ms);
/* 1 when the server may take new connections now. */
int ae_upstream_usable(const ae_pool *pool, const ae_upstream_server *s, uint64_t now_ms);

/* ---- upstream affinity (runtime.c) ----
 * With `balance: affinity` the server chosen for a session is stored in its session ticket
 * (ae_tls_conn_hooks) as: 1 byte version (AE_AFFINITY_V1), then the server address in its
 * canonical text form (ae_addr.text, no NUL), 1..63 bytes of printable ASCII. */
#define AE_AFFINITY_V1 1

/* Encodes the record for server address text into out. Returns the length, or 0 when it does
 * not fit or the text is not a valid address text. */
size_t ae_affinity_encode(const char *addr_text, uint8_t *out, size_t cap);
/* Decodes a record into addr (NUL-terminated, cap >= 64). Returns 0, or AE_ERR_PARSE for an
 * empty, unknown-version, oversized or malformed record. */
int ae_affinity_decode(const uint8_t *data, size_t len, char *addr, size_t cap);
/* The index in pool of the server a record names, or -1 (bad record, no such server). Says
 * nothing about health: see ae_upstream_usable(). */
int ae_affinity_find(const ae_pool *pool, const uint8_t *data, size_t len);

#endif
