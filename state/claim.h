/*
 * First-use claims in Redis: "has any site seen this 0-RTT ClientHello before?" (issue #12
 * item 3, docs/architecture.md "0-RTT policy").
 *
 * A claim is `SET <prefix>0rtt:<hex id> <site> NX PX <ttl>` sent on a Redis connection of the
 * calling thread's loop. The answer comes back later through a callback; nobody waits for it:
 * the caller (a QUIC connection holding its 0-RTT requests) is released by whichever comes
 * first, the claim's AE_CLAIM_FIRST or its own handshake completing.
 *
 * Bounded and allocation-free per claim: a fixed table of slots; a claim takes one until its
 * reply (or failure) arrives, also when the caller cancelled it meanwhile. No slot free, or
 * Redis not connected: the claim is not sent (ae_claims_send returns 0) and the caller simply
 * waits for its handshake.
 *
 * Single-threaded: one ae_claims per worker loop, used only on that loop's thread.
 */
#ifndef AE_STATE_CLAIM_H
#define AE_STATE_CLAIM_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "conf/conf.h"

typedef struct ae_claims ae_claims;

typedef enum {
    AE_CLAIM_FIRST = 0, /* the key was set by this claim: no site claimed this id before */
    AE_CLAIM_SEEN = 1,  /* the key exists: some site (maybe this one) claimed it before */
    AE_CLAIM_ERROR = 2, /* no answer: timeout, disconnect, error reply, unexpected reply */
} ae_claim_result;

/* Called once per sent, not cancelled claim, on the loop's thread, never from inside
 * ae_claims_send. */
typedef void (*ae_claim_cb)(void *owner, ae_claim_result result);

typedef struct {
    uint64_t sent;      /* claims sent to Redis */
    uint64_t first;     /* AE_CLAIM_FIRST answers */
    uint64_t seen;      /* AE_CLAIM_SEEN answers */
    uint64_t errors;    /* AE_CLAIM_ERROR outcomes */
    uint64_t not_sent;  /* not sent: Redis not connected, or every slot busy */
    uint64_t cancelled; /* answers that arrived for a cancelled claim */
} ae_claims_stats;

#define AE_CLAIM_ID_LEN 32 /* bytes of a claim id (a SHA-256) */
#define AE_CLAIM_SLOTS  1024

/* A Redis connection on loop for conf->state (its URL, timeouts, key prefix). site: the value
 * stored under each key (the claiming site's id). 0, or AE_ERR_* with a reason in err. */
int ae_claims_new(struct ev_loop *loop, const ae_conf *conf, ae_claims **out, char *err,
                  size_t errlen);
/* Closes the connection; pending claims are dropped without their callbacks. NULL is fine. */
void ae_claims_free(ae_claims *c);

/* Sends a claim of id (AE_CLAIM_ID_LEN bytes), kept by Redis for ttl_ms. Returns a handle (> 0)
 * to cancel it with, or 0 when it was not sent (cb will not be called). */
uint64_t ae_claims_send(ae_claims *c, const uint8_t *id, uint64_t ttl_ms, ae_claim_cb cb,
                        void *owner);
/* The owner goes away: its callback will not be called. Unknown or finished handles are
 * ignored. */
void ae_claims_cancel(ae_claims *c, uint64_t handle);

void ae_claims_get_stats(const ae_claims *c, ae_claims_stats *out);

#endif
