/*
 * Runtime snapshots and upstream pools.
 */
#include "proxy/core/runtime.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/core/hrw.h"

/* Without an active health check, a server that failed `fall` connects in a row is kept out of
 * rotation this long, then tried again. */
#define AE_PASSIVE_HOLD_MS   5000
#define AE_PASSIVE_FALL_DFLT 3

static ae_upstream_server *server_ref(ae_upstream_server *s)
{
    atomic_fetch_add_explicit(&s->refcnt, 1, memory_order_relaxed);
    return s;
}

static void server_unref(ae_upstream_server *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refcnt, 1, memory_order_acq_rel) != 1)
        return;
    free(s->pool);
    free(s);
}

static ae_upstream_server *server_new(const char *pool, const ae_addr *addr)
{
    ae_upstream_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->pool = strdup(pool);
    if (s->pool == NULL) {
        free(s);
        return NULL;
    }
    s->addr = *addr;
    s->hrw_id = ae_hrw_hash(addr->text, strlen(addr->text));
    atomic_init(&s->refcnt, 1);
    atomic_init(&s->healthy, 1); /* optimistic start, as HAProxy does: checks take it down */
    return s;
}

static ae_upstream_server *find_prev(const ae_runtime *prev, const char *pool, const ae_addr *a)
{
    if (prev == NULL)
        return NULL;
    for (size_t i = 0; i < prev->npools; i++) {
        const ae_pool *p = &prev->pools[i];
        if (strcmp(p->conf->name, pool) != 0)
            continue;
        for (size_t j = 0; j < p->nservers; j++)
            if (ae_addr_equal(&p->servers[j]->addr, a))
                return p->servers[j];
    }
    return NULL;
}

static void stats_unref(ae_pool_stats *st)
{
    if (st == NULL || atomic_fetch_sub_explicit(&st->refcnt, 1, memory_order_acq_rel) != 1)
        return;
    free(st->name);
    free(st);
}

/* The stats object of pool `name`: prev's (a new reference) or a new one. NULL: no memory. */
static ae_pool_stats *stats_get(const ae_runtime *prev, const char *name)
{
    for (size_t i = 0; prev != NULL && i < prev->npools; i++)
        if (strcmp(prev->pools[i].stats->name, name) == 0) {
            atomic_fetch_add_explicit(&prev->pools[i].stats->refcnt, 1, memory_order_relaxed);
            return prev->pools[i].stats;
        }
    ae_pool_stats *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    if ((st->name = strdup(name)) == NULL) {
        free(st);
        return NULL;
    }
    atomic_init(&st->refcnt, 1);
    return st;
}

static void runtime_free(ae_runtime *rt)
{
    if (rt == NULL)
        return;
    for (size_t i = 0; i < rt->npools; i++) {
        for (size_t j = 0; j < rt->pools[i].nservers; j++)
            server_unref(rt->pools[i].servers[j]);
        free(rt->pools[i].servers);
        stats_unref(rt->pools[i].stats);
    }
    free(rt->pools);
    ae_tls_ctx_free(rt->tls);
    ae_conf_free(rt->conf);
    free(rt);
}

int ae_runtime_new(ae_conf *conf, ae_keyring *ring, const ae_runtime *prev, uint64_t generation,
                   ae_runtime **out, char *err, size_t errlen)
{
    int rv = AE_ERR_NOMEM;
    ae_runtime *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        ae_conf_free(conf);
        snprintf(err, errlen, "out of memory");
        return AE_ERR_NOMEM;
    }
    atomic_init(&rt->refcnt, 1);
    rt->conf = conf;
    rt->generation = generation;
    rt->pools = calloc(conf->nupstreams ? conf->nupstreams : 1, sizeof(*rt->pools));
    if (rt->pools == NULL)
        goto fail_nomem;
    rt->npools = conf->nupstreams;
    for (size_t i = 0; i < conf->nupstreams; i++) {
        const ae_conf_upstream *u = &conf->upstreams[i];
        ae_pool *p = &rt->pools[i];
        p->conf = u;
        p->stats = stats_get(prev, u->name);
        p->servers = calloc(u->nservers, sizeof(*p->servers));
        if (p->stats == NULL || p->servers == NULL)
            goto fail_nomem;
        for (size_t j = 0; j < u->nservers; j++) {
            ae_upstream_server *s = find_prev(prev, u->name, &u->servers[j].addr);
            s = s ? server_ref(s) : server_new(u->name, &u->servers[j].addr);
            if (s == NULL)
                goto fail_nomem;
            p->servers[p->nservers++] = s;
        }
    }
    if (conf->nlisteners > 0) {
        rv = ae_tls_ctx_new(conf, ring, &rt->tls, err, errlen);
        if (rv != 0)
            goto fail;
    }
    *out = rt;
    return 0;
fail_nomem:
    snprintf(err, errlen, "out of memory");
fail:
    runtime_free(rt);
    return rv;
}

ae_runtime *ae_runtime_ref(ae_runtime *rt)
{
    atomic_fetch_add_explicit(&rt->refcnt, 1, memory_order_relaxed);
    return rt;
}

void ae_runtime_unref(ae_runtime *rt)
{
    if (rt != NULL && atomic_fetch_sub_explicit(&rt->refcnt, 1, memory_order_acq_rel) == 1)
        runtime_free(rt);
}

int ae_upstream_usable(const ae_pool *pool, const ae_upstream_server *s, uint64_t now_ms)
{
    if (!atomic_load_explicit(&s->healthy, memory_order_relaxed))
        return 0;
    if (pool->conf->health.kind == AE_HC_NONE &&
        atomic_load_explicit(&s->down_until_ms, memory_order_relaxed) > now_ms)
        return 0;
    return 1;
}

/* 1 when servers[i] may take this connection: not in the tried mask, and usable. */
static int pickable(const ae_pool *pool, size_t i, uint64_t tried_mask, uint64_t now_ms)
{
    return !((tried_mask >> (i % 64)) & 1) && ae_upstream_usable(pool, pool->servers[i], now_ms);
}

int ae_pool_pick(ae_pool *pool, uint64_t tried_mask, uint64_t now_ms)
{
    /* Candidates: the pickable servers (round_robin), or those of them with the fewest active
     * connections (least_conn). The shared cursor picks the (cursor mod count)-th candidate, so
     * candidates share the load evenly: the turns of a down or tried server are spread over
     * all the others instead of all falling to the next one in the list. */
    int lc = pool->conf->balance == AE_BAL_LEAST_CONN;
    uint32_t best = 0;
    size_t count = 0;
    for (size_t i = 0; i < pool->nservers; i++) {
        if (!pickable(pool, i, tried_mask, now_ms))
            continue;
        uint32_t a = lc ? atomic_load_explicit(&pool->servers[i]->active, memory_order_relaxed) : 0;
        if (count == 0 || a < best) {
            best = a;
            count = 1;
        } else if (a == best) {
            count++;
        }
    }
    if (count == 0)
        return -1;
    size_t k = atomic_fetch_add_explicit(&pool->rr, 1, memory_order_relaxed) % count;
    int fallback = -1;
    for (size_t i = 0; i < pool->nservers; i++) {
        if (!pickable(pool, i, tried_mask, now_ms))
            continue;
        fallback = (int)i;
        if (lc && atomic_load_explicit(&pool->servers[i]->active, memory_order_relaxed) != best)
            continue;
        if (k-- == 0)
            return (int)i;
    }
    /* Health or load changed between the passes (other threads): any pickable server. */
    return fallback;
}

int ae_pool_pick_hash(ae_pool *pool, uint64_t key, uint64_t tried_mask, uint64_t now_ms, int *first)
{
    /* The key's ranking over all servers; the best usable one not yet tried wins. Ties (a
     * 2^-64 event) go to the earlier server in the list, identically at every site only when
     * the lists are in the same order: harmless either way. */
    int best = -1, top = -1;
    uint64_t best_score = 0, top_score = 0;
    for (size_t i = 0; i < pool->nservers; i++) {
        uint64_t sc = ae_hrw_score(key, pool->servers[i]->hrw_id);
        if (top < 0 || sc > top_score) {
            top = (int)i;
            top_score = sc;
        }
        if (!pickable(pool, i, tried_mask, now_ms))
            continue;
        if (best < 0 || sc > best_score) {
            best = (int)i;
            best_score = sc;
        }
    }
    if (first != NULL)
        *first = best >= 0 && best == top;
    return best;
}

int ae_pool_find_id(const ae_pool *pool, uint64_t id)
{
    for (size_t i = 0; i < pool->nservers; i++)
        if (pool->servers[i]->hrw_id == id)
            return (int)i;
    return -1;
}

void ae_pool_report_connect(ae_pool *pool, size_t idx, int ok, uint64_t now_ms)
{
    ae_upstream_server *s = pool->servers[idx];
    atomic_fetch_add_explicit(&s->connects, 1, memory_order_relaxed);
    if (ok) {
        atomic_store_explicit(&s->passive_fails, 0, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&s->connect_fails, 1, memory_order_relaxed);
    uint32_t fall =
        pool->conf->health.kind != AE_HC_NONE ? pool->conf->health.fall : AE_PASSIVE_FALL_DFLT;
    uint32_t fails = atomic_fetch_add_explicit(&s->passive_fails, 1, memory_order_relaxed) + 1;
    if (fails < fall)
        return;
    if (pool->conf->health.kind == AE_HC_NONE) {
        /* No checker to bring it back: hold it out for a while, then try again. */
        atomic_store_explicit(&s->down_until_ms, now_ms + AE_PASSIVE_HOLD_MS, memory_order_relaxed);
        return;
    }
    /* With an active checker, passive failures take the server down; `rise` good checks
     * bring it back. Only the first worker to flip it logs. */
    int expected = 1;
    if (atomic_compare_exchange_strong(&s->healthy, &expected, 0)) {
        atomic_fetch_add_explicit(&s->transitions, 1, memory_order_relaxed);
        AE_WARN("upstream %s server %s DOWN: %u consecutive connect failures", s->pool,
                s->addr.text, fails);
    }
}

/* ---- upstream affinity records (stored in session tickets) ---- */

#define AE_AFFINITY_ADDR_MAX (sizeof(((ae_addr *)0)->text) - 1)

/* 1 when s[0, n) could be an address text: printable ASCII, no space. */
static int addr_text_ok(const uint8_t *s, size_t n)
{
    if (n == 0 || n > AE_AFFINITY_ADDR_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return 0;
    return 1;
}

size_t ae_affinity_encode(const char *addr_text, uint8_t *out, size_t cap)
{
    size_t n = addr_text != NULL ? strnlen(addr_text, AE_AFFINITY_ADDR_MAX + 1) : 0;
    if (!addr_text_ok((const uint8_t *)addr_text, n) || cap < n + 1)
        return 0;
    out[0] = AE_AFFINITY_V1;
    memcpy(out + 1, addr_text, n);
    return n + 1;
}

int ae_affinity_decode(const uint8_t *data, size_t len, char *addr, size_t cap)
{
    if (data == NULL || len < 2 || data[0] != AE_AFFINITY_V1 || !addr_text_ok(data + 1, len - 1) ||
        cap < len)
        return AE_ERR_PARSE;
    memcpy(addr, data + 1, len - 1);
    addr[len - 1] = '\0';
    return 0;
}

int ae_affinity_find(const ae_pool *pool, const uint8_t *data, size_t len)
{
    char text[AE_AFFINITY_ADDR_MAX + 1];
    if (ae_affinity_decode(data, len, text, sizeof(text)) != 0)
        return -1;
    for (size_t i = 0; i < pool->nservers; i++)
        if (strcmp(pool->servers[i]->addr.text, text) == 0)
            return (int)i;
    return -1;
}
