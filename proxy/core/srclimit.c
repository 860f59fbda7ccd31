/*
 * Per-source limits: a set-associative table of sources with GCRA rate limiters (srclimit.h).
 */
#include "proxy/core/srclimit.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "conf/base.h"

const char *const ae_src_verdict_names[AE_SRC__COUNT] = {
    [AE_SRC_OK] = "ok",
    [AE_SRC_TCP_RATE] = "tcp_rate",
    [AE_SRC_TCP_CONCURRENT] = "tcp_concurrent",
    [AE_SRC_QUIC_RETRY] = "quic_retry",
    [AE_SRC_QUIC_DROP] = "quic_drop",
    [AE_SRC_H3_RATE] = "h3_rate",
};

#define NS 1000000000ull

/* GCRA: tat is the theoretical arrival time of the next event; an event at now conforms when
 * tat - now <= one second (the burst), and moves tat by one interval. */
typedef struct {
    uint64_t tat;
} gcra;

typedef struct {
    uint8_t key[17]; /* family (4 or 6), then the address cut to the prefix */
    uint8_t used;
    uint32_t conns; /* open TCP connections */
    uint64_t seen_ns;
    gcra tcp, initial, initial_hard, h3;
} src;

struct ae_srclimit {
    ae_srclimit_conf c;                                  /* per-worker limits (divided) */
    uint64_t iv_tcp, iv_initial, iv_initial_hard, iv_h3; /* ns between events, 0: no limit */
    uint64_t seed[2];
    size_t nbuckets; /* power of two */
    _Atomic uint64_t *evictions;
    src *s; /* nbuckets * AE_SRC_WAYS */
};

int ae_srclimit_any(const ae_srclimit_conf *c)
{
    return c->tcp_rate || c->tcp_concurrent || c->quic_retry_rate || c->quic_drop_rate ||
           c->h3_rate;
}

static uint32_t share(uint32_t v, uint32_t n)
{
    if (v == 0)
        return 0;
    if (n <= 1)
        return v;
    return (v + n - 1) / n;
}

void ae_srclimit_set_limits(ae_srclimit *t, const ae_srclimit_conf *c)
{
    t->c = *c;
    t->c.tcp_rate = share(c->tcp_rate, c->nworkers);
    t->c.tcp_concurrent = share(c->tcp_concurrent, c->nworkers);
    t->c.quic_retry_rate = share(c->quic_retry_rate, c->nworkers);
    t->c.quic_drop_rate = share(c->quic_drop_rate, c->nworkers);
    t->c.h3_rate = share(c->h3_rate, c->nworkers);
    t->iv_tcp = t->c.tcp_rate ? NS / t->c.tcp_rate : 0;
    t->iv_initial = t->c.quic_retry_rate ? NS / t->c.quic_retry_rate : 0;
    t->iv_initial_hard = t->c.quic_drop_rate ? NS / t->c.quic_drop_rate : 0;
    t->iv_h3 = t->c.h3_rate ? NS / t->c.h3_rate : 0;
}

int ae_srclimit_new(const ae_srclimit_conf *c, _Atomic uint64_t *evictions, ae_srclimit **out)
{
    ae_srclimit *t = calloc(1, sizeof(*t));
    size_t nb = 1;

    *out = NULL;
    if (t == NULL)
        return AE_ERR_NOMEM;
    while (nb * AE_SRC_WAYS < c->table_size && nb < ((size_t)1 << 24))
        nb <<= 1;
    t->nbuckets = nb;
    t->evictions = evictions;
    t->s = calloc(nb * AE_SRC_WAYS, sizeof(*t->s));
    if (t->s == NULL) {
        free(t);
        return AE_ERR_NOMEM;
    }
    if (getrandom(t->seed, sizeof(t->seed), 0) != (ssize_t)sizeof(t->seed)) {
        t->seed[0] = (uint64_t)(uintptr_t)t ^ 0x9e3779b97f4a7c15ull;
        t->seed[1] = (uint64_t)(uintptr_t)t->s * 0xbf58476d1ce4e5b9ull;
    }
    ae_srclimit_set_limits(t, c);
    *out = t;
    return 0;
}

void ae_srclimit_free(ae_srclimit *t)
{
    if (t == NULL)
        return;
    free(t->s);
    free(t);
}

int ae_srclimit_same_shape(const ae_srclimit *t, const ae_srclimit_conf *c)
{
    return t->c.v4_prefix == c->v4_prefix && t->c.v6_prefix == c->v6_prefix &&
           t->c.table_size == c->table_size;
}

/* The source key of peer: its family and address cut to the prefix. -1 for other families. */
static int make_key(const ae_srclimit *t, const struct sockaddr *peer, uint8_t key[17])
{
    const uint8_t *a;
    size_t alen;
    uint32_t plen;

    memset(key, 0, 17);
    if (peer->sa_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)peer)->sin_addr;
        alen = 4;
        plen = t->c.v4_prefix;
        key[0] = 4;
    } else if (peer->sa_family == AF_INET6) {
        a = ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr;
        alen = 16;
        plen = t->c.v6_prefix;
        key[0] = 6;
    } else {
        return -1;
    }
    for (size_t i = 0; i < alen && plen > 0; i++, plen = plen > 8 ? plen - 8 : 0)
        key[1 + i] = plen >= 8 ? a[i] : (uint8_t)(a[i] & (0xff00u >> plen));
    return 0;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static size_t bucket_of(const ae_srclimit *t, const uint8_t key[17])
{
    uint64_t w[3] = {0, 0, 0};
    memcpy(w, key, 17);
    uint64_t h = mix(w[0] ^ t->seed[0]);
    h = mix(h ^ w[1] ^ t->seed[1]);
    h = mix(h ^ w[2]);
    return (size_t)(h & (t->nbuckets - 1));
}

/* The entry of peer's source, created when create (evicting if need be); NULL when not found
 * (create 0) or for an address family without sources. */
static src *lookup(ae_srclimit *t, const struct sockaddr *peer, uint64_t now_ns, int create)
{
    uint8_t key[17];
    src *b, *victim = NULL;

    if (make_key(t, peer, key) != 0)
        return NULL;
    b = &t->s[bucket_of(t, key) * AE_SRC_WAYS];
    for (size_t i = 0; i < AE_SRC_WAYS; i++) {
        if (b[i].used && memcmp(b[i].key, key, sizeof(key)) == 0) {
            b[i].seen_ns = now_ns;
            return &b[i];
        }
    }
    if (!create)
        return NULL;
    /* An empty way, else the least recently seen, one without open connections first. */
    for (size_t i = 0; i < AE_SRC_WAYS; i++) {
        src *e = &b[i];
        if (!e->used) {
            victim = e;
            break;
        }
        if (victim == NULL || (e->conns == 0 && victim->conns > 0) ||
            ((e->conns == 0) == (victim->conns == 0) && e->seen_ns < victim->seen_ns))
            victim = e;
    }
    if (victim->used && t->evictions != NULL)
        atomic_fetch_add_explicit(t->evictions, 1, memory_order_relaxed);
    memset(victim, 0, sizeof(*victim));
    memcpy(victim->key, key, sizeof(key));
    victim->used = 1;
    victim->seen_ns = now_ns;
    return victim;
}

/* One event on limiter g with interval iv: 1 when it conforms (and is counted), else 0. */
static int gcra_take(gcra *g, uint64_t iv, uint64_t now_ns)
{
    uint64_t tat = g->tat > now_ns ? g->tat : now_ns;
    if (tat - now_ns > NS - iv) /* the burst (one second's worth) is spent */
        return 0;
    g->tat = tat + iv;
    return 1;
}

ae_src_verdict ae_srclimit_tcp_open(ae_srclimit *t, const struct sockaddr *peer, uint64_t now_ns)
{
    src *e = lookup(t, peer, now_ns, 1);
    if (e == NULL)
        return AE_SRC_OK;
    if (t->iv_tcp && !gcra_take(&e->tcp, t->iv_tcp, now_ns))
        return AE_SRC_TCP_RATE;
    if (t->c.tcp_concurrent && e->conns >= t->c.tcp_concurrent)
        return AE_SRC_TCP_CONCURRENT;
    e->conns++;
    return AE_SRC_OK;
}

void ae_srclimit_tcp_close(ae_srclimit *t, const struct sockaddr *peer)
{
    src *e = lookup(t, peer, 0, 0);
    if (e != NULL && e->conns > 0) /* a forgotten source started afresh: nothing to undo */
        e->conns--;
}

ae_src_verdict ae_srclimit_quic_initial(ae_srclimit *t, const struct sockaddr *peer,
                                        uint64_t now_ns)
{
    src *e = lookup(t, peer, now_ns, 1);
    if (e == NULL)
        return AE_SRC_OK;
    if (t->iv_initial_hard && !gcra_take(&e->initial_hard, t->iv_initial_hard, now_ns))
        return AE_SRC_QUIC_DROP;
    if (t->iv_initial && !gcra_take(&e->initial, t->iv_initial, now_ns))
        return AE_SRC_QUIC_RETRY;
    return AE_SRC_OK;
}

ae_src_verdict ae_srclimit_h3_request(ae_srclimit *t, const struct sockaddr *peer, uint64_t now_ns)
{
    src *e;
    if (!t->iv_h3 || (e = lookup(t, peer, now_ns, 1)) == NULL)
        return AE_SRC_OK;
    return gcra_take(&e->h3, t->iv_h3, now_ns) ? AE_SRC_OK : AE_SRC_H3_RATE;
}
