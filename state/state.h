/*
 * Shared state in Redis, run by the main thread: the shared key ring (sync, rotation under a
 * lock with a fencing token, re-publication after a Redis restart) and the site registry.
 *
 * Nothing here is on the data path. The proxy learns about a new ring through the ring_changed
 * hook and pushes derived keys into its TLS key ring; when Redis is slow or gone, the last ring
 * stays in use and only rotation pauses.
 *
 * Redis layout (P = state.prefix, default "anyedge:"):
 *   P ring            string  the ring, text format of state/ring.h (sealed with a KEK if set)
 *   P ring:lock       string  rotation lock: fencing token, SET NX PX
 *   P ring:fence      integer INCR'd for every lock attempt: the fencing tokens
 *   P ring:events     channel PUBLISH <generation> after every change
 *   P site:<id>       string  site record, expires after 5 heartbeats
 *   P sites           zset    site id -> last heartbeat (ms), the index for listing sites
 */
#ifndef AE_STATE_STATE_H
#define AE_STATE_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "conf/conf.h"
#include "state/redis.h"
#include "state/ring.h"

typedef struct ae_state ae_state;

typedef struct {
    /* The shared ring changed: adopted from Redis or rotated here. On the loop's thread. */
    void (*ring_changed)(const ae_ring *ring, void *arg);
    void *arg;
} ae_state_hooks;

typedef struct {
    int connected;            /* command connection up */
    int subscribed;           /* pub/sub connection up */
    int have_ring;            /* a shared ring is known */
    uint64_t ring_generation; /* of the cached shared ring */
    uint64_t last_sync_ms;    /* wall clock of the last successful ring read; 0 never */
    uint64_t ring_errors;     /* invalid rings read from Redis */
    uint64_t rotations;       /* rotations done by this site */
    uint64_t rotations_lost;  /* rotations given up: another site held the lock or won */
    uint64_t site_conflicts;  /* heartbeats refused: another live instance has our site id */
    uint64_t republished;     /* times this site wrote its cached ring back to Redis */
    uint64_t ring_conflicts;  /* Redis held our generation with other keys (a write lost in a
                                 failover): Redis's ring adopted */
    uint64_t ring_key_ids[3]; /* ids of the cached ring's keys, newest first */
    uint32_t ring_key_fp[3];  /* their fingerprints: 32 bits of SHA-256(label, secret), to tell
                                 two rings of one generation apart without showing secrets */
    size_t ring_nkeys;
    ae_redis_stats redis;
} ae_state_info;

typedef struct {
    uint32_t id;
    char name[64];
    char forward[64];
    char state[16];
    char version[16];
    uint64_t started_ms;
    uint64_t heartbeat_ms;
    int live; /* record present (not expired) */
    int self; /* this process */
} ae_site_info;

/* Checks state.* of conf without connecting: URL syntax, KEK file. Errors as
 * "FILE:LINE:COL: state.KEY: message". */
int ae_state_check_conf(const ae_conf *conf, char *err, size_t errlen);

/* Starts the state module for conf (state.redis must be set). Before returning it tries, with
 * blocking calls bounded by state.connect_timeout/command_timeout, to claim the site id and
 * read the shared ring, so a site starts with the shared keys when Redis is there:
 *  - another live instance already registered with this site id: AE_ERR_INVAL (refuse to
 *    start) with the reason in err;
 *  - Redis unreachable: a warning; the site starts without a shared ring and adopts it later.
 * rotation_ms is tls.ticket_rotation. */
int ae_state_new(struct ev_loop *loop, const ae_conf *conf, uint64_t rotation_ms,
                 const ae_state_hooks *hooks, ae_state **out, char *err, size_t errlen);
/* At a clean exit, after the last connection is gone: deletes this instance's site record so
 * peers see the site gone at their next registry read (one heartbeat) instead of after the
 * record's expiry (5 heartbeats). Blocking, bounded by connect/command_timeout; only when
 * connected now. Accepts NULL. */
void ae_state_leave(ae_state *s);
/* Stops timers and connections. Accepts NULL. */
void ae_state_free(ae_state *s);

/* The cached shared ring, or NULL when none is known yet. */
const ae_ring *ae_state_ring(const ae_state *s);
/* New rotation period after a reload. */
void ae_state_set_rotation(ae_state *s, uint64_t rotation_ms);
/* Asks for a rotation now (one site wins if several ask at once). 0 when the request was sent
 * (the result shows in the ring generation), AE_ERR_AGAIN when Redis is not connected or a
 * rotation is already running here, with the reason in err. */
int ae_state_rotate(ae_state *s, char *err, size_t errlen);
/* Marks this site draining in the registry. */
void ae_state_set_draining(ae_state *s);
/* Marks this site active again (end of a site drain). */
void ae_state_clear_draining(ae_state *s);

void ae_state_get_info(const ae_state *s, ae_state_info *out);
/* Copies up to max known sites (as last read from Redis, sorted by id) into out. */
size_t ae_state_sites(const ae_state *s, ae_site_info *out, size_t max);

#endif
