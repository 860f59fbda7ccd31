/*
 * Redis Sentinel, the parts outside the event loop: the target read from the config
 * (state.sentinels, state.master_name, state.sentinel_user / sentinel_password) and the blocking
 * master lookup used at startup and when leaving the registry. The asynchronous lookup, the ROLE
 * check and +switch-master live in redis.c with the connections they serve.
 */
#include "state/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "conf/base.h"
#include "conf/conf.h"

int ae_redis_sentinel_parse(const char *s, struct ae_redis_sentinel *sn)
{
    const char *colon = strrchr(s, ':');
    const char *h = s, *he;
    char *end;

    sn->host = NULL;
    sn->port = 0;
    if (colon == NULL || colon == s)
        return -1;
    he = colon;
    if (s[0] == '[') {
        if (colon[-1] != ']')
            return -1;
        h = s + 1;
        he = colon - 1;
    } else if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
        return -1; /* an IPv6 address needs its brackets */
    }
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || port < 1 || port > 65535 || he == h)
        return -1;
    for (const char *p = h; p < he; p++)
        if (!(*p == '-' || *p == '.' || *p == '_' || *p == ':' || (*p >= '0' && *p <= '9') ||
              (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return -1;
    sn->host = strndup(h, (size_t)(he - h));
    sn->port = (int)port;
    return sn->host ? 0 : -1;
}

int ae_redis_target_from_conf(const ae_conf *conf, ae_redis_target *out, char *err, size_t errlen)
{
    char e[256];
    int rv = ae_redis_url_parse(conf->state.redis, out, e, sizeof(e));

    if (rv != 0) {
        snprintf(err, errlen, "state.redis: %s", e);
        return rv;
    }
    if (conf->state.nsentinels == 0)
        return 0;
    if (out->unix_path) {
        snprintf(err, errlen, "state.sentinels: needs a redis:// or rediss:// state.redis");
        goto fail;
    }
    out->sentinels = calloc(conf->state.nsentinels, sizeof(*out->sentinels));
    if (!out->sentinels)
        goto nomem;
    for (size_t i = 0; i < conf->state.nsentinels; i++) {
        if (ae_redis_sentinel_parse(conf->state.sentinels[i], &out->sentinels[i]) != 0) {
            snprintf(err, errlen, "state.sentinels: '%.100s' is not host:port",
                     conf->state.sentinels[i]);
            out->nsentinels = i + 1;
            goto fail;
        }
        out->nsentinels = i + 1;
    }
    if ((out->master_name = strdup(conf->state.master_name)) == NULL ||
        (conf->state.sentinel_user && !(out->sentinel_user = strdup(conf->state.sentinel_user))) ||
        (conf->state.sentinel_password &&
         !(out->sentinel_password = strdup(conf->state.sentinel_password))))
        goto nomem;
    return 0;
nomem:
    snprintf(err, errlen, "state: out of memory");
    ae_redis_target_free(out);
    return AE_ERR_NOMEM;
fail:
    ae_redis_target_free(out);
    return AE_ERR_PARSE;
}

static struct timeval tv_ms(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* One sentinel: 0 with *host and *port set, or -1 with why in err. */
static int ask_one(const ae_redis_target *t, const struct ae_redis_sentinel *sn, ae_redis_tls *tls,
                   uint32_t timeout_ms, char **host, int *port, char *err, size_t errlen)
{
    redisContext *c = redisConnectWithTimeout(sn->host, sn->port, tv_ms(timeout_ms));
    redisReply *rep = NULL;
    int rv = -1;

    if (c == NULL || c->err) {
        snprintf(err, errlen, "%s", c ? c->errstr : "out of memory");
        goto out;
    }
    redisSetTimeout(c, tv_ms(timeout_ms));
    if (tls != NULL && ae_redis_tls_start(tls, c, sn->host, err, errlen) != 0)
        goto out;
    if (t->sentinel_password != NULL) {
        rep = t->sentinel_user != NULL
                  ? redisCommand(c, "AUTH %s %s", t->sentinel_user, t->sentinel_password)
                  : redisCommand(c, "AUTH %s", t->sentinel_password);
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "AUTH failed: %.120s", rep ? rep->str : c->errstr);
            goto out;
        }
        freeReplyObject(rep);
    }
    rep = redisCommand(c, "SENTINEL get-master-addr-by-name %s", t->master_name);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "no master %s: %.120s", t->master_name,
                 rep == NULL                      ? c->errstr
                 : rep->type == REDIS_REPLY_ERROR ? rep->str
                 : rep->type == REDIS_REPLY_NIL   ? "unknown master name"
                                                  : "unexpected reply");
        goto out;
    }
    long p = strtol(rep->element[1]->str, NULL, 10);
    if (p < 1 || p > 65535 || rep->element[0]->len == 0) {
        snprintf(err, errlen, "bad master address in the reply");
        goto out;
    }
    *host = strdup(rep->element[0]->str);
    *port = (int)p;
    rv = *host ? 0 : -1;
out:
    freeReplyObject(rep);
    redisFree(c);
    return rv;
}

int ae_redis_sentinel_resolve(ae_redis_target *t, ae_redis_tls *tls, uint32_t timeout_ms, char *err,
                              size_t errlen)
{
    char e[200] = "";
    size_t off = 0;

    for (size_t i = 0; i < t->nsentinels; i++) {
        char *host = NULL;
        int port = 0;
        if (ask_one(t, &t->sentinels[i], tls, timeout_ms, &host, &port, e, sizeof(e)) == 0) {
            free(t->host);
            t->host = host;
            t->port = port;
            return 0;
        }
        if (off < errlen)
            off += (size_t)snprintf(err + off, errlen - off, "%ssentinel %s:%d: %s", i ? "; " : "",
                                    t->sentinels[i].host, t->sentinels[i].port, e);
    }
    if (t->nsentinels == 0)
        snprintf(err, errlen, "no sentinels");
    return -1;
}
