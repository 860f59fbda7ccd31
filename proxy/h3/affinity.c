/*
 * Upstream affinity of HTTP/3 requests to `balance: hash` pools (docs/architecture.md, "Upstream
 * affinity"): the hash key and the affinity cookie read from the request's fields, the server
 * choice of each attempt, and the Set-Cookie of the response. Declared in h3_int.h.
 *
 * Nothing here allocates, blocks or asks Redis: the key is hashed while nghttp3 hands over the
 * fields, the cookie is opened once at the first pick with the worker's ring-derived keys
 * (ae_quic_current_secrets), and a choice is O(servers).
 */
#include <string.h>

#include "proxy/core/affinity.h"
#include "proxy/core/hrw.h"
#include "proxy/h3/h3_int.h"

static int name_eq(const uint8_t *n, size_t nlen, const char *lit, size_t litlen)
{
    return nlen == litlen && memcmp(n, lit, nlen) == 0;
}

void ae_h3_aff_field(qstream *s, const uint8_t *n, size_t nlen, const uint8_t *v, size_t vlen)
{
    const ae_conf_upstream *uc = s->c->pool->conf;
    const ae_hash_spec *h = &uc->hash;
    const uint8_t *cv;
    size_t cl;

    if (h->kind == AE_HASH_HEADER) {
        /* The first field line wins; an empty value is no key (it would pile every such client
         * onto one server). */
        if (!s->aff.has_key && vlen > 0 && name_eq(n, nlen, h->name, h->name_len)) {
            s->aff.key = ae_hrw_hash(v, vlen);
            s->aff.has_key = 1;
        }
    }
    /* HTTP/3 may split cookies over several `cookie` field lines (RFC 9114 §4.2.1): each line
     * is scanned; the first occurrence of a name wins. */
    if (!name_eq(n, nlen, "cookie", 6))
        return;
    if (h->kind == AE_HASH_COOKIE && !s->aff.has_key &&
        ae_cookie_find(v, vlen, h->name, h->name_len, &cv, &cl) && cl > 0) {
        s->aff.key = ae_hrw_hash(cv, cl);
        s->aff.has_key = 1;
    }
    if (uc->affinity_cookie != NULL && !s->aff.cookie_seen &&
        ae_cookie_find(v, vlen, uc->affinity_cookie, strlen(uc->affinity_cookie), &cv, &cl)) {
        s->aff.cookie_seen = 1;
        if (cl == sizeof(s->aff.cookie)) /* any other length cannot be one of ours */
            memcpy(s->aff.cookie, cv, cl);
        else
            s->aff.cookie_bad = 1;
    }
}

/* Once per request, at its first pick: the key's fallback, and the cookie's server. */
static void resolve(qstream *s)
{
    ae_pool *pool = s->c->pool;
    const ae_conf_upstream *uc = pool->conf;

    s->aff.resolved = 1;
    if (!s->aff.has_key) {
        if (uc->hash.kind != AE_HASH_CLIENT_IP)
            ae_pool_count_affinity(pool, AE_AFF_NO_KEY);
        s->aff.key = ae_aff_addr_key((const struct sockaddr *)&s->c->remote, uc->hash.v4_prefix,
                                     uc->hash.v6_prefix);
        s->aff.has_key = 1;
    }
    if (uc->affinity_cookie == NULL || !s->aff.cookie_seen)
        return;
    ae_qsecrets *sec = ae_quic_current_secrets(s->w);
    uint64_t id = 0;
    int renew = 0;
    if (s->aff.cookie_bad || sec == NULL || sec->cookie == NULL ||
        ae_affcookie_open(sec->cookie, uc->affinity_cookie, strlen(uc->affinity_cookie),
                          (const uint8_t *)s->aff.cookie, sizeof(s->aff.cookie), &id,
                          &renew) != 0) {
        ae_pool_count_affinity(pool, AE_AFF_COOKIE_INVALID);
        AE_CDEBUG(s->c->id, "stream %lld: affinity cookie %s ignored: invalid", (long long)s->sid,
                  uc->affinity_cookie);
        return;
    }
    int idx = ae_pool_find_id(pool, id);
    if (idx < 0) {
        ae_pool_count_affinity(pool, AE_AFF_COOKIE_DOWN); /* its server left the pool */
        return;
    }
    s->aff.cookie_id = id;
    s->aff.cookie_idx1 = idx + 1;
    s->aff.cookie_valid = 1;
    s->aff.renew = renew != 0;
}

int ae_h3_aff_pick(qstream *s, uint64_t tried, uint64_t now_ms)
{
    ae_pool *pool = s->c->pool;
    int first = 0, idx;

    if (!s->aff.resolved)
        resolve(s);
    /* The cookie's server while untried (a retry on a fresh connection clears tried); once it
     * failed or when it is down, the key's ranking (the same next server at every site). */
    if (s->aff.cookie_idx1 > 0 && !((tried >> ((s->aff.cookie_idx1 - 1) % 64)) & 1)) {
        idx = s->aff.cookie_idx1 - 1;
        if (ae_upstream_usable(pool, pool->servers[idx], now_ms)) {
            ae_pool_count_affinity(pool, AE_AFF_COOKIE);
            return idx;
        }
        ae_pool_count_affinity(pool, AE_AFF_COOKIE_DOWN);
        s->aff.cookie_idx1 = 0;
    }
    idx = ae_pool_pick_hash(pool, s->aff.key, tried, now_ms, &first);
    if (idx >= 0)
        ae_pool_count_affinity(pool, first ? AE_AFF_HIT : AE_AFF_MOVED);
    return idx;
}

size_t ae_h3_aff_set_cookie(qstream *s, char *buf, size_t cap)
{
    ae_pool *pool = s->c->pool;
    const char *name = pool->conf->affinity_cookie;
    int idx = s->up.server_idx;

    if (name == NULL || pool->conf->balance != AE_BAL_HASH || idx < 0 ||
        (size_t)idx >= pool->nservers)
        return 0;
    uint64_t id = pool->servers[idx]->hrw_id;
    if (s->aff.cookie_valid && s->aff.cookie_id == id && !s->aff.renew)
        return 0; /* the client already holds a current cookie naming this server */
    ae_qsecrets *sec = ae_quic_current_secrets(s->w);
    char val[AE_AFFCOOKIE_LEN + 1];
    size_t nlen = strlen(name);
    if (sec == NULL || sec->cookie == NULL ||
        ae_affcookie_seal(sec->cookie, name, nlen, id, val) != 0)
        return 0;
    /* A session cookie for the whole origin, never sent over cleartext nor read by scripts;
     * Lax still sends it on top-level navigations from other sites (the server choice is not a
     * credential). */
    int n = snprintf(buf, cap, "%s=%s; Path=/; HttpOnly; Secure; SameSite=Lax", name, val);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}
