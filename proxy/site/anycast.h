/*
 * Anycast route control and site drain (anycast.c), main thread.
 * The site announces anycast.prefix while it is healthy and not draining. "Healthy" is decided
 * by a pure state machine with rise/fall hysteresis (ae_anycast_fsm, unit-tested); commands
 * (mode command) or ExaBGP API lines (mode exabgp) apply its decisions.
 */
#ifndef AE_ANYCAST_H
#define AE_ANYCAST_H

#include <stdint.h>

#include <ev.h>

#include "conf/conf.h"

typedef struct ae_server_main ae_server_main;

typedef enum {
    AE_ANYCAST_ACT_NONE = 0,
    AE_ANYCAST_ACT_ANNOUNCE,
    AE_ANYCAST_ACT_WITHDRAW,
} ae_anycast_action;

typedef enum {
    AE_ANYCAST_OK = 0,    /* the command applied its route */
    AE_ANYCAST_FAILED,    /* exit status != 0, killed at its timeout, spawn/write error: retried */
    AE_ANYCAST_CANCELLED, /* stopped because the decision changed while it ran: not retried */
} ae_anycast_result;

/* One evaluation of the site's health. */
typedef struct {
    int pools_ok;      /* every listener's upstream pool has at least one usable server */
    int listeners_ok;  /* the listeners are open */
    int draining;      /* site drain or shutdown: withdraw at once, no hysteresis */
    int redis_ok;      /* Redis connected (counts only with require_redis) */
    int registry_wait; /* shared state: connected but the site registry not read yet, so this
                        * site could not forward other sites' flows: not healthy */
} ae_anycast_input;

typedef struct {
    uint32_t rise, fall;
    int require_redis;
    int healthy;                    /* last sample */
    uint32_t ok_streak, bad_streak; /* consecutive healthy / unhealthy samples */
    int want;                       /* decided route: 1 announced, 0 withdrawn (start: 0) */
    int have;                       /* route applied by the last successful command (start: 0) */
    int dirty;            /* a command failed or was cancelled: the route may differ from have */
    int running;          /* route (0/1) the command in flight applies, -1 none */
    int last_target;      /* route of the last failed/cancelled attempt */
    uint32_t failures;    /* consecutive failed attempts at last_target */
    uint64_t retry_at_ms; /* no retry of last_target before this (monotonic ms) */
} ae_anycast_fsm;

void ae_anycast_fsm_init(ae_anycast_fsm *f, uint32_t rise, uint32_t fall, int require_redis);
/* 1 when the input is a healthy sample. */
int ae_anycast_fsm_healthy(const ae_anycast_fsm *f, const ae_anycast_input *in);
/* Feeds one evaluation; returns 1 when the decided route (want) changed. */
int ae_anycast_fsm_sample(ae_anycast_fsm *f, const ae_anycast_input *in);
/* The command to start now (the fsm then counts it as running), or NONE: nothing to do, a
 * command is running, or a failed one waits for its backoff. */
ae_anycast_action ae_anycast_fsm_next(ae_anycast_fsm *f, uint64_t now_ms);
/* The running command ended. */
void ae_anycast_fsm_done(ae_anycast_fsm *f, ae_anycast_result r, uint64_t now_ms);
/* 1 when the running command applies a route that is no longer wanted (cancel it). */
int ae_anycast_fsm_obsolete(const ae_anycast_fsm *f);
/* Wait before retry after n consecutive failures: 1 s, 2 s, 4 s ... at most 60 s. */
uint64_t ae_anycast_backoff_ms(uint32_t failures);

typedef enum { AE_SITE_ACTIVE = 0, AE_SITE_DRAINING, AE_SITE_DRAINED } ae_site_drain;

/* Combined state shown in /status and counted in anyedge_anycast_transitions_total{to}. */
typedef enum {
    AE_ANYCAST_S_WITHDRAWN = 0,
    AE_ANYCAST_S_ANNOUNCED,
    AE_ANYCAST_S_DRAINING,
    AE_ANYCAST_S_DRAINED,
    AE_ANYCAST_S__COUNT
} ae_anycast_state;
extern const char *const ae_anycast_state_names[AE_ANYCAST_S__COUNT];

typedef struct {
    ae_anycast_mode mode;
    char prefix[64];
    ae_anycast_state state;
    ae_site_drain site;
    ae_anycast_fsm fsm;
    char reason[160];            /* why the last sample was unhealthy ("" when healthy) */
    uint64_t last_transition_ms; /* wall clock of the last state change */
    uint64_t drain_started_ms;   /* wall clock; 0 when not draining */
    uint32_t drain_timeout_ms;
    const char *running; /* "announce" / "withdraw" in flight, or NULL */
    int running_pid;
    struct {
        const char *action; /* NULL: no command ran yet */
        const char *result; /* ok, failed, timeout, cancelled, error */
        int exit_status;    /* -1 when killed or not run */
        uint64_t at_ms;     /* wall clock of the end */
        uint64_t duration_ms;
    } last;
    uint64_t transitions[AE_ANYCAST_S__COUNT];
    uint64_t commands, command_failures;
} ae_anycast_info;

typedef struct ae_anycast ae_anycast;
/* Starts route control for the server's current runtime (evaluation timer; nothing runs when
 * mode is off, but drain still works). */
int ae_anycast_new(struct ev_loop *loop, ae_server_main *srv, ae_anycast **out);
/* After a reload: adopts the new commands, timings and rise/fall (mode and prefix need a
 * restart: a warning, the old ones stay). */
void ae_anycast_set_conf(ae_anycast *a, const ae_conf *conf);
/* Site drain: withdraw at once, registry `draining`, HTTP/3 GOAWAY, `drained` after the drain
 * timeout; connections keep being served and accepted. 0, or AE_ERR_* with err. */
int ae_anycast_drain(ae_anycast *a, const char *why, char *err, size_t errlen);
/* Ends a site drain: registry `active`, announce again after `rise` healthy evaluations. */
int ae_anycast_undrain(ae_anycast *a, const char *why, char *err, size_t errlen);
/* Shutdown (SIGTERM): withdraw now; undrain is refused from then on. */
void ae_anycast_shutdown(ae_anycast *a);
/* After the main loop ended: lets a running or pending withdraw finish (bounded by
 * 2 x command_timeout + a few seconds) by running the loop again. */
void ae_anycast_finish(ae_anycast *a);
void ae_anycast_get_info(const ae_anycast *a, ae_anycast_info *out);
/* Kills a running command's process group and frees. Accepts NULL. */
void ae_anycast_free(ae_anycast *a);

#endif
