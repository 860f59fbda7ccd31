/*
 * First-use claims in Redis (state/claim.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/base.h"
#include "state/claim.h"
#include "state/redis.h"

#define SLOT_BITS 10
_Static_assert((1u << SLOT_BITS) == AE_CLAIM_SLOTS, "slot index bits match the table");

typedef struct claim_slot {
    struct ae_claims *c;
    uint64_t gen;   /* bumped on every use: handle = gen << SLOT_BITS | index */
    int busy;       /* a command is in flight */
    ae_claim_cb cb; /* NULL: free, or cancelled */
    void *owner;
    uint32_t next; /* free list */
} claim_slot;

struct ae_claims {
    ae_redis *redis;
    ae_redis_target target;
    ae_redis_tls *tls; /* rediss:// only */
    char prefix[96];   /* "<state.prefix>0rtt:" */
    char site[16];
    claim_slot slots[AE_CLAIM_SLOTS];
    uint32_t free_head; /* AE_CLAIM_SLOTS: none free */
    ae_claims_stats st;
};

int ae_claims_new(struct ev_loop *loop, const ae_conf *conf, ae_claims **out, char *err,
                  size_t errlen)
{
    char e[256];
    *out = NULL;
    if (conf->state.redis == NULL) {
        snprintf(err, errlen, "no state.redis");
        return AE_ERR_INVAL;
    }
    ae_claims *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return AE_ERR_NOMEM;
    }
    if (ae_redis_target_from_conf(conf, &c->target, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "%s", e);
        free(c);
        return AE_ERR_PARSE;
    }
    if (ae_redis_tls_from_conf(conf, &c->target, &c->tls, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "state.tls: %s", e);
        ae_redis_target_free(&c->target);
        free(c);
        return AE_ERR_TLS;
    }
    snprintf(c->prefix, sizeof(c->prefix),
             "%s0rtt:", conf->state.prefix != NULL ? conf->state.prefix : "anyedge:");
    snprintf(c->site, sizeof(c->site), "%u", (unsigned)conf->site.id);
    for (uint32_t i = 0; i < AE_CLAIM_SLOTS; i++) {
        c->slots[i].c = c;
        c->slots[i].next = i + 1;
    }
    c->free_head = 0;
    ae_redis_opts o;
    memset(&o, 0, sizeof(o));
    o.target = &c->target;
    o.tls = c->tls;
    o.connect_timeout_ms = conf->state.connect_timeout_ms;
    o.command_timeout_ms = conf->state.command_timeout_ms;
    if (ae_redis_new(loop, &o, &c->redis) != 0) {
        snprintf(err, errlen, "cannot create the Redis client");
        ae_redis_tls_free(c->tls);
        ae_redis_target_free(&c->target);
        free(c);
        return AE_ERR_NOMEM;
    }
    *out = c;
    return 0;
}

void ae_claims_free(ae_claims *c)
{
    if (c == NULL)
        return;
    ae_redis_free(c->redis);
    ae_redis_tls_free(c->tls); /* after the client that uses it */
    ae_redis_target_free(&c->target);
    free(c);
}

static void slot_release(ae_claims *c, claim_slot *s)
{
    s->busy = 0;
    s->cb = NULL;
    s->owner = NULL;
    s->next = c->free_head;
    c->free_head = (uint32_t)(s - c->slots);
}

static void reply_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    claim_slot *s = arg;
    ae_claims *c = s->c;
    ae_claim_result res = AE_CLAIM_ERROR;
    (void)r;
    (void)err;
    if (reply != NULL && reply->type == REDIS_REPLY_STATUS && reply->len == 2 &&
        strncasecmp(reply->str, "OK", 2) == 0)
        res = AE_CLAIM_FIRST;
    else if (reply != NULL && reply->type == REDIS_REPLY_NIL)
        res = AE_CLAIM_SEEN;
    c->st.first += res == AE_CLAIM_FIRST;
    c->st.seen += res == AE_CLAIM_SEEN;
    c->st.errors += res == AE_CLAIM_ERROR;
    ae_claim_cb cb = s->cb;
    void *owner = s->owner;
    if (cb == NULL)
        c->st.cancelled++;
    slot_release(c, s);
    if (cb != NULL)
        cb(owner, res);
}

uint64_t ae_claims_send(ae_claims *c, const uint8_t *id, uint64_t ttl_ms, ae_claim_cb cb,
                        void *owner)
{
    static const char hex[] = "0123456789abcdef";
    char key[sizeof(c->prefix) + 2 * AE_CLAIM_ID_LEN], px[24];
    if (c == NULL || cb == NULL)
        return 0;
    if (c->free_head >= AE_CLAIM_SLOTS || !ae_redis_connected(c->redis)) {
        c->st.not_sent++;
        return 0;
    }
    size_t n = strlen(c->prefix);
    memcpy(key, c->prefix, n);
    for (size_t i = 0; i < AE_CLAIM_ID_LEN; i++) {
        key[n++] = hex[id[i] >> 4];
        key[n++] = hex[id[i] & 15];
    }
    int pxlen = snprintf(px, sizeof(px), "%llu", (unsigned long long)(ttl_ms ? ttl_ms : 1));
    const char *argv[6] = {"SET", key, c->site, "NX", "PX", px};
    size_t argvlen[6] = {3, n, strlen(c->site), 2, 2, (size_t)pxlen};

    uint32_t idx = c->free_head;
    claim_slot *s = &c->slots[idx];
    if (ae_redis_command(c->redis, reply_cb, s, 6, argv, argvlen) != 0) {
        c->st.not_sent++;
        return 0;
    }
    c->free_head = s->next;
    s->busy = 1;
    s->gen++;
    s->cb = cb;
    s->owner = owner;
    c->st.sent++;
    return s->gen << SLOT_BITS | idx;
}

void ae_claims_cancel(ae_claims *c, uint64_t handle)
{
    if (c == NULL || handle == 0)
        return;
    claim_slot *s = &c->slots[handle & (AE_CLAIM_SLOTS - 1)];
    if (s->busy && s->gen == handle >> SLOT_BITS) {
        s->cb = NULL;
        s->owner = NULL;
    }
}

void ae_claims_get_stats(const ae_claims *c, ae_claims_stats *out)
{
    if (c == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = c->st;
}
