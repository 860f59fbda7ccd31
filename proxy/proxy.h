/*
 * proxy/ internals: runtime snapshots, upstream pools, workers, metrics, the main thread.
 *
 * Threads and ownership
 *  - The main thread owns the server (ae_server_main): signals, reload, admin endpoint, health
 *    checks, key rotation, and the listening sockets it creates for workers.
 *  - Each worker thread owns one libev loop, its listening sockets (handed over by the main
 *    thread in a message), its connections, its buffer pool and its metric counters. Workers
 *    never touch each other's objects.
 *  - An ae_runtime (config + TLS contexts + pools) is immutable and reference-counted: the
 *    server holds one reference to the current runtime, every worker one, every connection one.
 *  - ae_upstream_server objects carry health and load shared across workers and across
 *    reloads (same pool name and address = same object); their mutable fields are atomics.
 */
#ifndef AE_PROXY_H
#define AE_PROXY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <ev.h>

#include "conf/conf.h"
#include "state/ring.h"
#include "tls/tls.h"

/* ---- metrics: per-worker counters, summed by the admin endpoint ---- */

typedef enum {
    AE_M_ACCEPTED = 0,      /* TCP connections accepted */
    AE_M_CLOSED,            /* connections closed (any reason) */
    AE_M_HS_FULL,           /* completed full handshakes */
    AE_M_HS_RESUMED,        /* completed resumed handshakes */
    AE_M_HS_TIMEOUT,        /* handshakes that timed out */
    AE_M_HS_FAIL_PROTOCOL,  /* handshake failures, one counter per ae_tls_fail_reason, */
    AE_M_HS_FAIL_NO_SHARED, /* in that enum's order */
    AE_M_HS_FAIL_SNI,
    AE_M_HS_FAIL_PEER_CLOSED,
    AE_M_HS_FAIL_OTHER,
    AE_M_BYTES_IN,           /* bytes from clients (decrypted) */
    AE_M_BYTES_OUT,          /* bytes to clients (before encryption) */
    AE_M_UP_CONNECT_FAIL,    /* failed upstream connect attempts */
    AE_M_UP_CONNECT_TIMEOUT, /* of which timed out */
    AE_M_NO_UPSTREAM,        /* connections refused: no healthy server / all attempts failed */
    AE_M_IDLE_TIMEOUT,       /* connections closed by an idle timeout */
    AE_M_ACCEPT_ERRORS,      /* accept(2) failures (EMFILE, ENOBUFS...) */
    AE_M_CONN_LIMIT,         /* connections refused by tune.max_connections */
    AE_M_DRAIN_FORCED,       /* connections cut at the end of the drain timeout */
    AE_M_AFFINITY_HIT,       /* affinity pools: resumed sessions sent to their recorded server */
    AE_M_AFFINITY_MISS,      /* resumed without a usable recorded server: chosen anew */
    AE_M_QUIC_CONN_OPENED,   /* QUIC connections created (accepted Initial) */
    AE_M_QUIC_CONN_CLOSED,   /* QUIC connections freed, any reason */
    AE_M_QUIC_HANDSHAKES,    /* QUIC handshakes completed */
    AE_M_QUIC_IDLE_CLOSED,   /* QUIC connections ended by the idle timeout */
    AE_M_QUIC_PKTS_IN,       /* UDP datagrams received on QUIC listeners */
    AE_M_QUIC_PKTS_OUT,      /* UDP datagrams sent (QUIC packets, VN, resets) */
    AE_M_QUIC_PKTS_DROPPED,  /* datagrams dropped unprocessed (any reason, incl. below) */
    AE_M_QUIC_SHORT_INITIAL, /* of which: Initial in a datagram below 1200 bytes */
    AE_M_QUIC_VN_SENT,       /* version negotiation packets sent */
    AE_M_QUIC_RESET_SENT,    /* stateless resets sent */
    AE_M_QUIC_SEND_ERRORS,   /* sendmsg failures other than EAGAIN */
    AE_M_H3_REQ_2XX,         /* HTTP/3 responses by status class */
    AE_M_H3_REQ_3XX,
    AE_M_H3_REQ_4XX,
    AE_M_H3_REQ_5XX,
    AE_M_H3_REQ_RESET,       /* HTTP/3 requests reset (malformed, upstream failure after headers) */
    AE_M_H3_UPSTREAM_REUSED, /* HTTP/3 requests sent on a pooled keep-alive upstream connection */
    AE_M_H3_UPLAT_B0,        /* upstream latency histogram: AE_H3_UPLAT_NBUCKETS per-bucket */
    AE_M_H3_UPLAT_LAST = AE_M_H3_UPLAT_B0 + 12, /* (not cumulative) counts, the last is +Inf */
    AE_M_H3_UPLAT_SUM_US,                       /* sum of the observations, microseconds */
    AE_M_QUIC_HS_FULL,                          /* QUIC handshakes completed without resumption */
    AE_M_QUIC_HS_RESUMED,     /* QUIC handshakes completed with a session ticket */
    AE_M_QUIC_0RTT_ACCEPTED,  /* QUIC handshakes whose early data was accepted */
    AE_M_QUIC_0RTT_REJECTED,  /* early data offered by the client, refused by us */
    AE_M_QUIC_RETRY_SENT,     /* Retry packets sent */
    AE_M_QUIC_TOKEN_RETRY_OK, /* Initials with a valid Retry token */
    AE_M_QUIC_TOKEN_NEW_OK,   /* Initials with a valid, unused NEW_TOKEN token */
    AE_M_QUIC_TOKEN_REJECTED, /* Initials with a token that failed (bad, expired, reused) */
    AE_M_QUIC_TOKEN_REUSED,   /* of which: NEW_TOKEN token already used at this site */
    AE_M_QUIC_NEW_TOKEN_SENT, /* NEW_TOKEN frames submitted after a handshake */
    AE_M_QUIC_BYTES_IN,       /* UDP payload bytes received on QUIC listeners */
    AE_M_QUIC_BYTES_OUT,      /* UDP payload bytes sent */
    AE_M_H3_EARLY_FORWARDED,  /* HTTP/3 requests received in 0-RTT, forwarded (Early-Data: 1) */
    AE_M_H3_TOO_EARLY,        /* HTTP/3 requests received in 0-RTT answered 425 by us */
    AE_M_FWD_OUT,             /* datagrams forwarded to another site in tunnel frames */
    AE_M_FWD_IN,              /* datagrams accepted from tunnel frames */
    AE_M_FWD_HANDOFF,         /* datagrams handed to another worker of this site */
    AE_M_FWD_HANDOFF_FULL,    /* hand-offs dropped: the owning worker's inbox was full */
    AE_M_FWD_RESET_DEAD,      /* stateless resets: owner site dead, unknown or draining */
    AE_M_FWD_UNDECODABLE,     /* short-header datagrams with an undecodable unknown DCID */
    AE_M_FWD_SEND_ERRORS,     /* tunnel frames that could not be sent */
    AE_M_FWD_REPLY_OUT,       /* reply frames sent to the receiving site (site.return: tunnel) */
    AE_M_FWD_REPLY_IN,        /* reply frames accepted and sent on to the client */
    AE_M_TUN_DROP_B0,         /* tunnel frames dropped, one counter per reason (forward.h: */
    AE_M_TUN_DROP_LAST = AE_M_TUN_DROP_B0 + 13, /* AE_TUN_ERR_* then AE_FWD_DROP_*) */
    AE_M_FWD_LAT_B0, /* forward latency histogram (accepted tunnel frames): AE_FWD_LAT_NBUCKETS */
    AE_M_FWD_LAT_LAST = AE_M_FWD_LAT_B0 + 13, /* per-bucket counts, the last is +Inf */
    AE_M_FWD_LAT_SUM_US,                      /* sum of the observations, microseconds */
    AE_M_QUIC_CLOSE_B0, /* QUIC connections ended, by cause (ae_quic_close_cause_names order) */
    AE_M_QUIC_CLOSE_LAST = AE_M_QUIC_CLOSE_B0 + 4,
    AE_M__COUNT
} ae_metric;

/* Upper bounds (seconds) of the HTTP/3 upstream latency histogram (time from the first upstream
 * attempt to the first response byte): buckets AE_M_H3_UPLAT_B0 + i, i < AE_H3_UPLAT_NBUCKETS - 1,
 * then +Inf. Rendered cumulative as anyedge_h3_upstream_latency_seconds. */
#define AE_H3_UPLAT_NBUCKETS (AE_M_H3_UPLAT_LAST - AE_M_H3_UPLAT_B0 + 1)
extern const double ae_h3_uplat_bounds[AE_H3_UPLAT_NBUCKETS - 1];

/* Upper bounds (seconds) of the forward latency histogram: receiver's wall clock minus the
 * tunnel frame's timestamp (origin's wall clock, both in ms, negatives clamped to 0), per
 * accepted frame. Buckets AE_M_FWD_LAT_B0 + i, then +Inf; rendered cumulative as
 * anyedge_forward_latency_seconds. */
#define AE_FWD_LAT_NBUCKETS (AE_M_FWD_LAT_LAST - AE_M_FWD_LAT_B0 + 1)
extern const double ae_fwd_lat_bounds[AE_FWD_LAT_NBUCKETS - 1];

/* Metric name (without the anyedge_ prefix and _total suffix) and help text, by ae_metric. */
extern const char *const ae_metric_names[AE_M__COUNT];
/* Label values of the QUIC close causes (AE_M_QUIC_CLOSE_B0 + i), defined in quic.c. */
extern const char *const ae_quic_close_cause_names[5];
extern const char *const ae_metric_help[AE_M__COUNT];

typedef struct {
    _Atomic uint64_t v[AE_M__COUNT];
    _Atomic int64_t active; /* gauge: open client connections */
} ae_counters;

/* Single writer (the owning worker): relaxed atomics keep reads from the admin thread sane. */
static inline void ae_count(ae_counters *c, ae_metric m, uint64_t n)
{
    atomic_fetch_add_explicit(&c->v[m], n, memory_order_relaxed);
}

/* ---- QUIC secrets derived from the key ring (proxy/qsecrets.c) ---- */

/* Immutable snapshot, reference counted: the main thread builds one per ring change and every
 * worker holds a reference to the newest. Arrays are indexed like ring.keys. */
typedef struct ae_qsecrets {
    _Atomic int refcnt;
    ae_ring ring;                        /* copy: workers build their CID keys from it */
    int epoch[AE_RING_MAX_KEYS];         /* CID epoch of each ring key */
    uint8_t reset[AE_RING_MAX_KEYS][32]; /* stateless-reset secrets */
    uint8_t token[AE_RING_MAX_KEYS][32]; /* Retry / NEW_TOKEN token keys */
    uint8_t ticket[64];                  /* GnuTLS session-ticket master key (current) */
    size_t cur;                          /* index of the current key */
} ae_qsecrets;

int ae_qsecrets_new(const ae_ring *ring, ae_qsecrets **out);
ae_qsecrets *ae_qsecrets_ref(ae_qsecrets *q);
void ae_qsecrets_unref(ae_qsecrets *q);
/* The reset secret of the ring key whose CID epoch is epoch: 0, or AE_ERR_NOTFOUND. */
int ae_qsecrets_reset_secret(const ae_qsecrets *q, int epoch, const uint8_t **secret);

/* ---- upstream servers and pools ---- */

typedef struct ae_upstream_server {
    _Atomic int refcnt;
    char *pool; /* pool name */
    ae_addr addr;
    _Atomic int healthy;            /* 1 = takes new connections */
    _Atomic uint32_t active;        /* open connections through this server (all workers) */
    _Atomic uint32_t passive_fails; /* consecutive failed connects */
    _Atomic uint64_t down_until_ms; /* passive hold-off end when the pool has no health check */
    _Atomic uint64_t connects, connect_fails, checks_ok, checks_failed, transitions;
    /* Main thread only (health checker). */
    uint32_t rise_streak, fall_streak;
} ae_upstream_server;

typedef struct {
    const ae_conf_upstream *conf;
    ae_upstream_server **servers;
    size_t nservers;
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

/* ---- PROXY protocol (proxy_proto.c) ---- */

#define AE_PP_MAX_LEN 536 /* v1 max 107; v2 16 + 216 (unix) + TLVs we add */

/* Encodes a PROXY header for a connection from src to dst (the address the client reached)
 * into buf. v2 adds PP2_TYPE_ALPN and PP2_TYPE_AUTHORITY TLVs when alpn/authority are non-empty
 * (either may be NULL). Returns the length, or AE_ERR_INVAL (mixed families / unsupported
 * family for v1 writes "PROXY UNKNOWN"), AE_ERR_TOOBIG when len is too small. */
int ae_pp_encode(ae_proxy_proto version, const struct sockaddr *src, const struct sockaddr *dst,
                 const char *alpn, const char *authority, uint8_t *buf, size_t len);

/* ---- workers (worker.c) ---- */

typedef struct ae_worker ae_worker;

/* Per-worker stats snapshot for the admin endpoint. */
typedef struct {
    uint64_t v[AE_M__COUNT];
    int64_t active;
} ae_counters_snapshot;

/* ---- the main thread (server.c) ---- */

typedef struct ae_server_main ae_server_main;

/* What the admin endpoint and health checker see of the server. Main thread only. */
ae_runtime *ae_server_runtime(ae_server_main *s); /* borrowed */
ae_keyring *ae_server_keyring(ae_server_main *s);
size_t ae_server_nworkers(ae_server_main *s);
/* Sums every worker's counters into out. */
void ae_server_counters(ae_server_main *s, ae_counters_snapshot *out);
/* Reloads the config file. Returns 0, or AE_ERR_* with the reason in err. */
int ae_server_reload(ae_server_main *s, char *err, size_t errlen);
/* Rotates the ticket keys now. */
/* Rotates the ticket keys now: locally, or through Redis in shared mode (asynchronous: 0 means
 * requested). Returns 0 or AE_ERR_* with err set. */
int ae_server_rotate_keys(ae_server_main *s, char *err, size_t errlen);
/* The shared-state module, or NULL in standalone mode. */
struct ae_state *ae_server_state(ae_server_main *s);
uint64_t ae_server_reloads_ok(ae_server_main *s);
uint64_t ae_server_reloads_failed(ae_server_main *s);
uint64_t ae_server_started_ms(ae_server_main *s); /* wall clock */
int ae_server_draining(ae_server_main *s);

/* Runs anyedge with the config at path until SIGTERM/SIGINT and the drain complete.
 * Returns the process exit code. */
int ae_server_run(const char *path);

/* ---- health checks (health.c), main thread ---- */

typedef struct ae_health ae_health;
/* Starts checking every server of rt that has a health block. */
int ae_health_new(struct ev_loop *loop, ae_health **out);
/* Re-targets the checker at a new runtime (after reload); checks of servers that stay carry
 * their streaks over (they live in the shared server object). */
void ae_health_set_runtime(ae_health *h, ae_runtime *rt);
void ae_health_free(ae_health *h);

/* ---- admin endpoint (admin.c), main thread ---- */

typedef struct ae_admin ae_admin;
/* Listens on addr (loopback by default) and serves GET /metrics, GET /status, POST /reload,
 * POST /keys/rotate. Returns 0 or AE_ERR_IO with err. */
int ae_admin_new(struct ev_loop *loop, ae_server_main *srv, const ae_addr *addr, ae_admin **out,
                 char *err, size_t errlen);
void ae_admin_free(ae_admin *a);
/* Writes the Prometheus text exposition into a malloc'd string (*out, *outlen). */
int ae_admin_render_metrics(ae_server_main *s, char **out, size_t *outlen);
/* Writes the /status JSON document into a malloc'd string. */
int ae_admin_render_status(ae_server_main *s, char **out, size_t *outlen);
/* Writes the /sites JSON array (sites as last read from Redis; [] standalone). */
int ae_admin_render_sites(ae_server_main *s, char **out, size_t *outlen);

/* Request parsing and routing, pure so they can be unit tested. */
#define AE_ADMIN_REQ_MAX 8192 /* request head limit; larger heads get 431 */

typedef struct {
    const char *method; /* into the caller's buffer, not NUL-terminated */
    size_t method_len;
    const char *path; /* origin-form target without query or fragment */
    size_t path_len;
    const char *query; /* after '?' up to '#' or the end of the target; NULL when none */
    size_t query_len;
    int minor;       /* HTTP/1.<minor> */
    size_t head_len; /* bytes up to and including the empty line */
} ae_admin_request;

/* Parses an HTTP/1.x request head from buf[0, len): request line "METHOD SP /target SP
 * HTTP/1.x CRLF" (method upper-case letters), then "name: value" CRLF header lines up to an
 * empty CRLF line. Returns 0 with *req filled, AE_ERR_AGAIN when the head is incomplete, or
 * AE_ERR_PARSE on bad syntax (bare LF, control bytes, folding, absolute-form target...). */
int ae_admin_parse_request(const char *buf, size_t len, ae_admin_request *req);

typedef enum {
    AE_ADMIN_METRICS = 0, /* GET /metrics */
    AE_ADMIN_STATUS,      /* GET /status */
    AE_ADMIN_RELOAD,      /* POST /reload */
    AE_ADMIN_KEYS_ROTATE, /* POST /keys/rotate */
    AE_ADMIN_SITES,       /* GET /sites */
    AE_ADMIN_WHEREIS,     /* GET /whereis?cid=HEX */
    AE_ADMIN_DRAIN,       /* POST /drain (site drain, anycast.c) */
    AE_ADMIN_UNDRAIN,     /* POST /undrain */
} ae_admin_route_id;

/* Returns the route of req (an ae_admin_route_id), AE_ERR_NOTFOUND for an unknown path (404)
 * or AE_ERR_INVAL for a known path with the wrong method (405; *allow names the method). */
int ae_admin_route(const ae_admin_request *req, const char **allow);

/* ---- anycast route control and site drain (anycast.c), main thread ----
 * The site announces anycast.prefix while it is healthy and not draining. "Healthy" is decided
 * by a pure state machine with rise/fall hysteresis (ae_anycast_fsm, unit-tested); commands
 * (mode command) or ExaBGP API lines (mode exabgp) apply its decisions. */

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

/* server.c hooks for anycast.c. */
ae_anycast *ae_server_anycast(ae_server_main *s);
/* 1 while the listening sockets of every configured listener are open (not shutting down). */
int ae_server_listening(ae_server_main *s);
/* Tells every worker that the site drains (1: HTTP/3 GOAWAY on QUIC connections) or not. */
void ae_server_site_drain(ae_server_main *s, int on);

#endif
