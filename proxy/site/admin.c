/*
 * The admin HTTP endpoint on the main thread's loop: metrics, status, reload, key rotation.
 *
 * Deliberately tiny HTTP/1.x: one request per connection, no bodies, Connection: close. Every
 * connection has a hard deadline, a bounded request buffer and a bounded count, so a slow or
 * hostile local client cannot stall the main loop or grow memory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4; CMake defines it for the whole build */
#endif
#include "proxy/site/admin.h"

#include "proxy/site/anycast.h"
#include "proxy/forward/forward.h"
#include "proxy/handoff/handoff.h"
#include "proxy/h3/states.h"
#include "proxy/core/metrics.h"
#include "proxy/core/reason.h"
#include "proxy/core/runtime.h"
#include "proxy/site/server.h"
#include "state/state.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADMIN_TIMEOUT_S   5.0
#define ADMIN_LINGER_S    1.0 /* max wait for the client's EOF after our response */
#define ADMIN_MAX_CONNS   64
#define ADMIN_BACKLOG     64
#define ADMIN_ACCEPT_WAIT 0.1 /* accept paused after EMFILE/ENFILE/ENOBUFS/ENOMEM */
#define ADMIN_MAX_KEYS    16

/* ---- string builder ---- */

/* A growable string; on allocation failure it stops growing and sets oom, which callers check
 * once at the end instead of after every append. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sb;

static int sb_reserve(sb *b, size_t extra)
{
    size_t cap;
    char *np;

    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    cap = b->cap > 0 ? b->cap : 1024;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    np = realloc(b->p, cap);
    if (np == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

static void sb_add(sb *b, const char *s, size_t n)
{
    if (sb_reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sb *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if (sb_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Prometheus label value: backslash, double quote and line feed are escaped. With help, only
 * backslash and line feed (the HELP line rules). */
static void sb_prom_esc(sb *b, const char *s, int help)
{
    for (; s != NULL && *s != '\0'; s++) {
        if (*s == '\\')
            sb_add(b, "\\\\", 2);
        else if (*s == '\n')
            sb_add(b, "\\n", 2);
        else if (*s == '"' && !help)
            sb_add(b, "\\\"", 2);
        else
            sb_add(b, s, 1);
    }
}

/* A JSON string literal, quotes included. Bytes >= 0x80 pass through (UTF-8 in, UTF-8 out). */
static void sb_json_str(sb *b, const char *s)
{
    sb_add(b, "\"", 1);
    for (; s != NULL && *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        switch (ch) {
        case '"':
            sb_add(b, "\\\"", 2);
            break;
        case '\\':
            sb_add(b, "\\\\", 2);
            break;
        case '\n':
            sb_add(b, "\\n", 2);
            break;
        case '\r':
            sb_add(b, "\\r", 2);
            break;
        case '\t':
            sb_add(b, "\\t", 2);
            break;
        default:
            if (ch < 0x20 || ch == 0x7f)
                sb_printf(b, "\\u%04x", ch);
            else
                sb_add(b, s, 1);
        }
    }
    sb_add(b, "\"", 1);
}

static int sb_finish(sb *b, char **out, size_t *outlen)
{
    if (b->oom || sb_reserve(b, 0) != 0) {
        free(b->p);
        *out = NULL;
        *outlen = 0;
        return AE_ERR_NOMEM;
    }
    *out = b->p;
    *outlen = b->len;
    return 0;
}

/* ---- names ---- */

static const char *key_state_name(ae_key_state s)
{
    switch (s) {
    case AE_KEY_NEXT:
        return "next";
    case AE_KEY_CURRENT:
        return "current";
    case AE_KEY_PREVIOUS:
        return "previous";
    case AE_KEY_RETIRED:
        return "retired";
    }
    return "unknown";
}

static const char *pp_name(ae_proxy_proto p)
{
    return p == AE_PP_V1 ? "v1" : p == AE_PP_V2 ? "v2" : "none";
}

static const char *fail_reason_name(size_t i)
{
    const char *n = ae_tls_fail_reason_names[i];

    return n != NULL ? n : "other";
}

/* ---- Prometheus rendering ---- */

static void prom_head(sb *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP anyedge_%s ", name);
    sb_prom_esc(b, help, 1);
    sb_printf(b, "\n# TYPE anyedge_%s %s\n", name, type);
}

/* anyedge_<name>{pool="..",server=".."<extra>} */
static void prom_server_labels(sb *b, const char *name, const ae_pool *pool,
                               const ae_upstream_server *s)
{
    sb_printf(b, "anyedge_%s{pool=\"", name);
    sb_prom_esc(b, pool->conf->name, 0);
    sb_puts(b, "\",server=\"");
    sb_prom_esc(b, s->addr.text, 0);
    sb_puts(b, "\"");
}

static int is_split_metric(size_t i)
{
    return i == AE_M_HS_FULL || i == AE_M_HS_RESUMED ||
           (i >= AE_M_HS_FAIL_PROTOCOL && i < AE_M_HS_FAIL_PROTOCOL + AE_TLS_FAIL__COUNT) ||
           (i >= AE_M_TUN_DROP_B0 && i <= AE_M_TUN_DROP_LAST);
}

static void render_upstreams(sb *b, ae_runtime *rt)
{
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"upstream_server_up", "gauge", "1 when the upstream server takes new connections."},
        {"upstream_server_active", "gauge", "Open connections through the upstream server."},
        {"upstream_connects_total", "counter", "Upstream connect attempts."},
        {"upstream_server_connect_failures_total", "counter",
         "Failed upstream connect attempts, by server."},
        {"health_checks_total", "counter", "Active health checks by result."},
    };
    uint64_t now = ae_now_ms();
    size_t f, p, i;

    for (f = 0; f < AE_ARRAY_LEN(fams); f++) {
        prom_head(b, fams[f].name, fams[f].type, fams[f].help);
        for (p = 0; rt != NULL && p < rt->npools; p++) {
            ae_pool *pool = &rt->pools[p];

            for (i = 0; i < pool->nservers; i++) {
                ae_upstream_server *s = pool->servers[i];

                prom_server_labels(b, fams[f].name, pool, s);
                switch (f) {
                case 0:
                    sb_printf(b, "} %d\n", ae_upstream_usable(pool, s, now) ? 1 : 0);
                    break;
                case 1:
                    sb_printf(b, "} %u\n", (unsigned)atomic_load(&s->active));
                    break;
                case 2:
                    sb_printf(b, "} %llu\n", (unsigned long long)atomic_load(&s->connects));
                    break;
                case 3:
                    sb_printf(b, "} %llu\n", (unsigned long long)atomic_load(&s->connect_fails));
                    break;
                default:
                    sb_printf(b, ",result=\"ok\"} %llu\n",
                              (unsigned long long)atomic_load(&s->checks_ok));
                    prom_server_labels(b, fams[f].name, pool, s);
                    sb_printf(b, ",result=\"failed\"} %llu\n",
                              (unsigned long long)atomic_load(&s->checks_failed));
                }
            }
        }
    }
}

static void render_keys(sb *b, ae_keyring *ring)
{
    ae_keyring_stats st;
    ae_ticket_key keys[ADMIN_MAX_KEYS];
    int seen[4] = {0, 0, 0, 0};
    uint64_t now = ae_wall_ms();
    size_t n, i;

    memset(&st, 0, sizeof(st));
    if (ring != NULL)
        ae_keyring_get_stats(ring, &st);
    prom_head(b, "tls_ticket_resumptions_total", "counter",
              "Resumption attempts by the state of the key that decrypted the ticket.");
    sb_printf(b, "anyedge_tls_ticket_resumptions_total{key=\"current\"} %llu\n",
              (unsigned long long)st.decrypt_current);
    sb_printf(b, "anyedge_tls_ticket_resumptions_total{key=\"previous\"} %llu\n",
              (unsigned long long)st.decrypt_previous);
    sb_printf(b, "anyedge_tls_ticket_resumptions_total{key=\"next\"} %llu\n",
              (unsigned long long)st.decrypt_next);
    sb_printf(b, "anyedge_tls_ticket_resumptions_total{key=\"unknown\"} %llu\n",
              (unsigned long long)st.decrypt_unknown);
    prom_head(b, "tls_tickets_issued_total", "counter", "Session tickets issued.");
    sb_printf(b, "anyedge_tls_tickets_issued_total %llu\n", (unsigned long long)st.encrypt);

    prom_head(b, "tls_ticket_key_age_seconds", "gauge",
              "Age of the newest ticket key in each state.");
    n = ring != NULL ? ae_keyring_snapshot(ring, keys, ADMIN_MAX_KEYS) : 0;
    for (i = 0; i < n; i++) {
        unsigned st_idx = (unsigned)keys[i].state;

        /* Newest first: one series per state, for the newest key in it. */
        if (st_idx >= 4 || seen[st_idx])
            continue;
        seen[st_idx] = 1;
        sb_printf(b, "anyedge_tls_ticket_key_age_seconds{state=\"%s\"} %.3f\n",
                  key_state_name(keys[i].state),
                  now > keys[i].created_ms ? (double)(now - keys[i].created_ms) / 1000.0 : 0.0);
    }
}

static void render_state(sb *b, struct ae_state *st)
{
    ae_state_info in;
    uint64_t now = ae_wall_ms();

    prom_head(b, "redis_configured", "gauge", "1 when state.redis is set (shared state).");
    sb_printf(b, "anyedge_redis_configured %d\n", st != NULL);
    if (st == NULL)
        return;
    ae_state_get_info(st, &in);
    prom_head(b, "redis_connected", "gauge", "1 while the Redis command connection is up.");
    sb_printf(b, "anyedge_redis_connected %d\n", in.connected);
    prom_head(b, "redis_subscribed", "gauge", "1 while the ring notification channel is up.");
    sb_printf(b, "anyedge_redis_subscribed %d\n", in.subscribed);
    prom_head(b, "redis_commands_total", "counter", "Redis commands sent.");
    sb_printf(b, "anyedge_redis_commands_total %llu\n", (unsigned long long)in.redis.commands);
    prom_head(b, "redis_errors_total", "counter",
              "Redis errors: failed connects, AUTH, error replies, failed scripts.");
    sb_printf(b, "anyedge_redis_errors_total %llu\n", (unsigned long long)in.redis.errors);
    prom_head(b, "redis_timeouts_total", "counter", "Redis connect and command timeouts.");
    sb_printf(b, "anyedge_redis_timeouts_total %llu\n", (unsigned long long)in.redis.timeouts);
    prom_head(b, "redis_connects_total", "counter", "Successful Redis (re)connections.");
    sb_printf(b, "anyedge_redis_connects_total %llu\n", (unsigned long long)in.redis.connects);
    prom_head(b, "ring_generation", "gauge", "Generation of the shared key ring in use.");
    sb_printf(b, "anyedge_ring_generation %llu\n", (unsigned long long)in.ring_generation);
    prom_head(b, "ring_shared", "gauge", "1 when the TLS keys come from the shared ring.");
    sb_printf(b, "anyedge_ring_shared %d\n", in.have_ring);
    prom_head(b, "ring_last_sync_age_seconds", "gauge",
              "Time since the ring was last read from Redis (-1: never).");
    sb_printf(b, "anyedge_ring_last_sync_age_seconds %.3f\n",
              in.last_sync_ms == 0
                  ? -1.0
                  : (double)(now > in.last_sync_ms ? now - in.last_sync_ms : 0) / 1000.0);
    prom_head(b, "ring_errors_total", "counter", "Invalid rings read from Redis.");
    sb_printf(b, "anyedge_ring_errors_total %llu\n", (unsigned long long)in.ring_errors);
    prom_head(b, "ring_rotations_total", "counter", "Ring rotations by result at this site.");
    sb_printf(b, "anyedge_ring_rotations_total{result=\"done\"} %llu\n",
              (unsigned long long)in.rotations);
    sb_printf(b, "anyedge_ring_rotations_total{result=\"lost\"} %llu\n",
              (unsigned long long)in.rotations_lost);
    prom_head(b, "ring_republished_total", "counter",
              "Times this site wrote its cached ring back to a Redis that had lost it.");
    sb_printf(b, "anyedge_ring_republished_total %llu\n", (unsigned long long)in.republished);
    prom_head(b, "site_conflicts_total", "counter",
              "Heartbeats refused: another live instance uses this site id.");
    sb_printf(b, "anyedge_site_conflicts_total %llu\n", (unsigned long long)in.site_conflicts);
}

static void status_sites(sb *b, struct ae_state *st)
{
    ae_site_info sites[64];
    size_t n = st != NULL ? ae_state_sites(st, sites, 64) : 0;
    uint64_t now = ae_wall_ms();

    sb_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        const ae_site_info *si = &sites[i];
        sb_printf(b, "%s{\"id\":%u,\"name\":", i > 0 ? "," : "", si->id);
        sb_json_str(b, si->name);
        sb_puts(b, ",\"forward\":");
        sb_json_str(b, si->forward);
        sb_puts(b, ",\"state\":");
        sb_json_str(b, si->state);
        sb_puts(b, ",\"version\":");
        sb_json_str(b, si->version);
        sb_printf(b, ",\"live\":%s,\"self\":%s,\"heartbeat_age_ms\":%llu}",
                  si->live ? "true" : "false", si->self ? "true" : "false",
                  (unsigned long long)(now > si->heartbeat_ms ? now - si->heartbeat_ms : 0));
    }
    sb_puts(b, "]");
}

static void status_state(sb *b, struct ae_state *st)
{
    ae_state_info in;

    if (st == NULL) {
        sb_puts(b, "\"state\":{\"mode\":\"standalone\"}");
        return;
    }
    ae_state_get_info(st, &in);
    sb_printf(b,
              "\"state\":{\"mode\":\"redis\",\"connected\":%s,\"subscribed\":%s,"
              "\"shared_ring\":%s,\"ring_generation\":%llu,\"last_sync_ms\":%llu,"
              "\"ring_errors\":%llu,\"rotations\":%llu,\"site_conflicts\":%llu,\"sites\":",
              in.connected ? "true" : "false", in.subscribed ? "true" : "false",
              in.have_ring ? "true" : "false", (unsigned long long)in.ring_generation,
              (unsigned long long)in.last_sync_ms, (unsigned long long)in.ring_errors,
              (unsigned long long)in.rotations, (unsigned long long)in.site_conflicts);
    status_sites(b, st);
    sb_puts(b, "}");
}

static const char *anycast_mode_name(ae_anycast_mode m)
{
    return m == AE_ANYCAST_COMMAND ? "command" : m == AE_ANYCAST_EXABGP ? "exabgp" : "off";
}

/* "anycast":{...}: route state, site drain, last evaluation and command. */
static void status_anycast(sb *b, ae_anycast *a)
{
    ae_anycast_info in;
    uint64_t now = ae_wall_ms();

    ae_anycast_get_info(a, &in);
    sb_printf(b, "\"anycast\":{\"mode\":\"%s\",\"prefix\":", anycast_mode_name(in.mode));
    sb_json_str(b, in.prefix);
    sb_printf(b,
              ",\"state\":\"%s\",\"route\":\"%s\",\"target\":\"%s\",\"uncertain\":%s,"
              "\"site\":\"%s\",\"healthy\":%s,\"reason\":",
              ae_anycast_state_names[in.state], in.fsm.have == 1 ? "announced" : "withdrawn",
              in.fsm.want ? "announced" : "withdrawn", in.fsm.dirty ? "true" : "false",
              in.site == AE_SITE_DRAINED    ? "drained"
              : in.site == AE_SITE_DRAINING ? "draining"
                                            : "active",
              in.fsm.healthy ? "true" : "false");
    sb_json_str(b, in.reason);
    sb_printf(b,
              ",\"rise\":%u,\"fall\":%u,\"healthy_streak\":%u,\"unhealthy_streak\":%u,"
              "\"last_transition_ms\":%llu,\"last_transition_age_s\":%llu,"
              "\"drain_started_ms\":%llu,\"drain_timeout_ms\":%u,\"running\":",
              (unsigned)in.fsm.rise, (unsigned)in.fsm.fall, (unsigned)in.fsm.ok_streak,
              (unsigned)in.fsm.bad_streak, (unsigned long long)in.last_transition_ms,
              (unsigned long long)(now > in.last_transition_ms
                                       ? (now - in.last_transition_ms) / 1000
                                       : 0),
              (unsigned long long)in.drain_started_ms, (unsigned)in.drain_timeout_ms);
    if (in.running != NULL)
        sb_printf(b, "{\"action\":\"%s\",\"pid\":%d}", in.running, in.running_pid);
    else
        sb_puts(b, "null");
    sb_puts(b, ",\"last_command\":");
    if (in.last.action != NULL)
        sb_printf(b,
                  "{\"action\":\"%s\",\"result\":\"%s\",\"exit_status\":%d,\"at_ms\":%llu,"
                  "\"duration_ms\":%llu}",
                  in.last.action, in.last.result, in.last.exit_status,
                  (unsigned long long)in.last.at_ms, (unsigned long long)in.last.duration_ms);
    else
        sb_puts(b, "null");
    sb_printf(b, ",\"commands\":%llu,\"command_failures\":%llu,\"consecutive_failures\":%u}",
              (unsigned long long)in.commands, (unsigned long long)in.command_failures,
              (unsigned)in.fsm.failures);
}

static void render_anycast(sb *b, ae_anycast *a)
{
    ae_anycast_info in;

    ae_anycast_get_info(a, &in);
    prom_head(b, "anycast_announced", "gauge",
              "1 while the anycast prefix is announced (last route command succeeded).");
    sb_printf(b, "anyedge_anycast_announced %d\n", in.fsm.have == 1 ? 1 : 0);
    prom_head(b, "anycast_healthy", "gauge", "1 when the last anycast health evaluation passed.");
    sb_printf(b, "anyedge_anycast_healthy %d\n", in.fsm.healthy ? 1 : 0);
    prom_head(b, "anycast_draining", "gauge",
              "Site drain: 0 active, 1 draining, 2 drained (anyedgectl drain / undrain).");
    sb_printf(b, "anyedge_anycast_draining %d\n", (int)in.site);
    prom_head(b, "anycast_transitions_total", "counter",
              "Anycast state changes, by the state entered.");
    for (int i = 0; i < AE_ANYCAST_S__COUNT; i++)
        sb_printf(b, "anyedge_anycast_transitions_total{to=\"%s\"} %llu\n",
                  ae_anycast_state_names[i], (unsigned long long)in.transitions[i]);
    prom_head(b, "anycast_commands_total", "counter",
              "Announce/withdraw commands (or ExaBGP lines) run.");
    sb_printf(b, "anyedge_anycast_commands_total %llu\n", (unsigned long long)in.commands);
    prom_head(b, "anycast_command_failures_total", "counter",
              "Announce/withdraw commands that failed (exit status, timeout, spawn or write "
              "error); each is retried with backoff.");
    sb_printf(b, "anyedge_anycast_command_failures_total %llu\n",
              (unsigned long long)in.command_failures);
}

int ae_admin_render_sites(ae_server_main *s, char **out, size_t *outlen)
{
    sb b = {0};
    status_sites(&b, ae_server_state(s));
    sb_puts(&b, "\n");
    return sb_finish(&b, out, outlen);
}

/* A Prometheus histogram from per-bucket counts (bucket i counts observations <= bounds[i];
 * the last bucket, +Inf, the rest) and a sum in microseconds. */
static void render_histogram(sb *b, const char *name, const char *help, const uint64_t *buckets,
                             const double *bounds, size_t nbuckets, uint64_t sum_us)
{
    uint64_t cum = 0;

    prom_head(b, name, "histogram", help);
    for (size_t i = 0; i < nbuckets; i++) {
        cum += buckets[i];
        if (i + 1 < nbuckets)
            sb_printf(b, "anyedge_%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
                      (unsigned long long)cum);
        else
            sb_printf(b, "anyedge_%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    sb_printf(b, "anyedge_%s_sum %.6f\n", name, (double)sum_us / 1e6);
    sb_printf(b, "anyedge_%s_count %llu\n", name, (unsigned long long)cum);
}

int ae_admin_render_metrics(ae_server_main *s, char **out, size_t *outlen)
{
    ae_counters_snapshot c;
    ae_runtime *rt = ae_server_runtime(s);
    sb b = {0};
    size_t i;

    memset(&c, 0, sizeof(c));
    ae_server_counters(s, &c);

    for (i = 0; i < AE_M__COUNT; i++) {
        char name[96];

        if (is_split_metric(i) || ae_metric_names[i] == NULL)
            continue;
        snprintf(name, sizeof(name), "%s_total", ae_metric_names[i]);
        prom_head(&b, name, "counter", ae_metric_help[i] != NULL ? ae_metric_help[i] : "");
        sb_printf(&b, "anyedge_%s %llu\n", name, (unsigned long long)c.v[i]);
    }
    prom_head(&b, "handshakes_total", "counter", "Completed TLS handshakes by type.");
    sb_printf(&b, "anyedge_handshakes_total{type=\"full\"} %llu\n",
              (unsigned long long)c.v[AE_M_HS_FULL]);
    sb_printf(&b, "anyedge_handshakes_total{type=\"resumed\"} %llu\n",
              (unsigned long long)c.v[AE_M_HS_RESUMED]);
    prom_head(&b, "handshake_failures_total", "counter", "Failed TLS handshakes by reason.");
    for (i = 0; i < AE_TLS_FAIL__COUNT; i++) {
        sb_puts(&b, "anyedge_handshake_failures_total{reason=\"");
        sb_prom_esc(&b, fail_reason_name(i), 0);
        sb_printf(&b, "\"} %llu\n", (unsigned long long)c.v[AE_M_HS_FAIL_PROTOCOL + i]);
    }
    render_histogram(&b, "h3_upstream_latency_seconds",
                     "HTTP/3 requests: time from the first upstream attempt to the first response "
                     "byte from the upstream server.",
                     &c.v[AE_M_H3_UPLAT_B0], ae_h3_uplat_bounds, AE_H3_UPLAT_NBUCKETS,
                     c.v[AE_M_H3_UPLAT_SUM_US]);
    prom_head(&b, "quic_connections_active", "gauge", "Open QUIC connections.");
    sb_printf(&b, "anyedge_quic_connections_active %llu\n",
              (unsigned long long)(c.v[AE_M_QUIC_CONN_OPENED] >= c.v[AE_M_QUIC_CONN_CLOSED]
                                       ? c.v[AE_M_QUIC_CONN_OPENED] - c.v[AE_M_QUIC_CONN_CLOSED]
                                       : 0));
    prom_head(&b, "quic_connections_closed_by_reason_total", "counter",
              "QUIC connections ended, by cause: idle timeout, closed by the peer, closed by "
              "us (error or GOAWAY end), shutdown, other errors.");
    for (i = 0; i < AE_QCAUSE__COUNT; i++)
        sb_printf(&b, "anyedge_quic_connections_closed_by_reason_total{reason=\"%s\"} %llu\n",
                  ae_quic_close_cause_names[i], (unsigned long long)c.v[AE_M_QUIC_CLOSE_B0 + i]);
    prom_head(&b, "h3_stream_state_total", "counter",
              "HTTP/3 request streams (machine=request) and their upstream HTTP/1.1 clients "
              "(machine=upstream) entering each state of their life cycle.");
    for (i = 0; i < AE_H3_REQ__COUNT; i++)
        sb_printf(&b, "anyedge_h3_stream_state_total{machine=\"request\",state=\"%s\"} %llu\n",
                  ae_h3_req_state_names[i], (unsigned long long)c.v[AE_M_H3_REQ_STATE_B0 + i]);
    for (i = 0; i < AE_H3_UP__COUNT; i++)
        sb_printf(&b, "anyedge_h3_stream_state_total{machine=\"upstream\",state=\"%s\"} %llu\n",
                  ae_h3_up_state_names[i], (unsigned long long)c.v[AE_M_H3_UP_STATE_B0 + i]);
    render_histogram(&b, "forward_latency_seconds",
                     "Accepted tunnel frames: this site's wall clock minus the frame's timestamp "
                     "(the forwarding site's wall clock; 1 ms resolution, negatives counted as 0).",
                     &c.v[AE_M_FWD_LAT_B0], ae_fwd_lat_bounds, AE_FWD_LAT_NBUCKETS,
                     c.v[AE_M_FWD_LAT_SUM_US]);
    prom_head(&b, "tunnel_drops_total", "counter",
              "Tunnel frames dropped at this site, by reason (short, magic, version, key, mac, "
              "stale, site, addr, flags, no_endpoint, initial, loop, no_keys, reply_peer).");
    for (i = 0; i < AE_FWD_NDROPS; i++)
        sb_printf(&b, "anyedge_tunnel_drops_total{reason=\"%s\"} %llu\n", ae_fwd_drop_name((int)i),
                  (unsigned long long)c.v[AE_M_TUN_DROP_B0 + i]);
    prom_head(&b, "forwarded_datagrams_total", "counter",
              "QUIC datagrams forwarded to (direction=out) or received from (direction=in) "
              "another site, and reply frames (site.return: tunnel) sent to the site that "
              "received the client's packets (direction=reply_out) or received from the "
              "connection's owner (direction=reply_in), by peer site id.");
    for (i = 1; i <= AE_CID_SITE_MAX; i++) {
        uint64_t o, in, ro, ri;
        ae_fwd_site_counts(ae_server_fwd_group(s), (uint16_t)i, &o, &in);
        ae_fwd_site_reply_counts(ae_server_fwd_group(s), (uint16_t)i, &ro, &ri);
        if (ro > 0)
            sb_printf(&b,
                      "anyedge_forwarded_datagrams_total{direction=\"reply_out\",site=\"%zu\"} "
                      "%llu\n",
                      i, (unsigned long long)ro);
        if (ri > 0)
            sb_printf(&b,
                      "anyedge_forwarded_datagrams_total{direction=\"reply_in\",site=\"%zu\"} "
                      "%llu\n",
                      i, (unsigned long long)ri);
        if (o > 0)
            sb_printf(&b,
                      "anyedge_forwarded_datagrams_total{direction=\"out\",site=\"%zu\"} %llu\n", i,
                      (unsigned long long)o);
        if (in > 0)
            sb_printf(&b, "anyedge_forwarded_datagrams_total{direction=\"in\",site=\"%zu\"} %llu\n",
                      i, (unsigned long long)in);
    }
    prom_head(&b, "connections_active", "gauge", "Open client connections.");
    sb_printf(&b, "anyedge_connections_active %lld\n", (long long)c.active);

    render_upstreams(&b, rt);

    prom_head(&b, "reloads_total", "counter", "Configuration reloads by result.");
    sb_printf(&b, "anyedge_reloads_total{result=\"ok\"} %llu\n",
              (unsigned long long)ae_server_reloads_ok(s));
    sb_printf(&b, "anyedge_reloads_total{result=\"failed\"} %llu\n",
              (unsigned long long)ae_server_reloads_failed(s));
    prom_head(&b, "config_generation", "gauge", "Generation of the running configuration.");
    sb_printf(&b, "anyedge_config_generation %llu\n",
              (unsigned long long)(rt != NULL ? rt->generation : 0));
    prom_head(&b, "workers", "gauge", "Worker threads.");
    sb_printf(&b, "anyedge_workers %zu\n", ae_server_nworkers(s));
    prom_head(&b, "draining", "gauge", "1 while the server drains before exiting.");
    sb_printf(&b, "anyedge_draining %d\n", ae_server_draining(s) ? 1 : 0);

    {
        size_t hl = 0;
        char *ht = ae_handoff_metrics(ae_server_handoff(s), ae_server_conntab(s), &hl);
        if (ht != NULL)
            sb_add(&b, ht, hl);
        free(ht);
    }
    render_anycast(&b, ae_server_anycast(s));
    render_keys(&b, ae_server_keyring(s));
    render_state(&b, ae_server_state(s));

    prom_head(&b, "start_time_seconds", "gauge", "Start time of the process since the epoch.");
    sb_printf(&b, "anyedge_start_time_seconds %.3f\n", (double)ae_server_started_ms(s) / 1000.0);
    prom_head(&b, "build_info", "gauge", "Build information.");
    sb_puts(&b, "anyedge_build_info{version=\"");
    sb_prom_esc(&b, AE_VERSION, 0);
    sb_puts(&b, "\"} 1\n");
    return sb_finish(&b, out, outlen);
}

/* ---- /status JSON ---- */

static void status_listeners(sb *b, const ae_conf *conf)
{
    size_t i;

    sb_puts(b, "\"listeners\":[");
    for (i = 0; conf != NULL && i < conf->nlisteners; i++) {
        const ae_conf_listener *l = &conf->listeners[i];

        sb_puts(b, i > 0 ? ",{\"name\":" : "{\"name\":");
        sb_json_str(b, l->name);
        sb_puts(b, ",\"protocol\":");
        sb_json_str(b, l->protocol == AE_LPROTO_QUIC ? "quic" : "tcp");
        sb_puts(b, ",\"address\":");
        sb_json_str(b, l->addr.text);
        sb_puts(b, ",\"upstream\":");
        sb_json_str(b, l->upstream);
        sb_puts(b, ",\"proxy_protocol\":");
        sb_json_str(b, pp_name(l->proxy_protocol));
        sb_puts(b, "}");
    }
    sb_puts(b, "]");
}

static void status_upstreams(sb *b, ae_runtime *rt)
{
    uint64_t now = ae_now_ms();
    size_t p, i;

    sb_puts(b, "\"upstreams\":[");
    for (p = 0; rt != NULL && p < rt->npools; p++) {
        ae_pool *pool = &rt->pools[p];

        sb_puts(b, p > 0 ? ",{\"name\":" : "{\"name\":");
        sb_json_str(b, pool->conf->name);
        sb_puts(b, ",\"balance\":");
        sb_json_str(b, pool->conf->balance == AE_BAL_LEAST_CONN ? "least_conn"
                       : pool->conf->balance == AE_BAL_AFFINITY ? "affinity"
                                                                : "round_robin");
        sb_puts(b, ",\"servers\":[");
        for (i = 0; i < pool->nservers; i++) {
            ae_upstream_server *s = pool->servers[i];

            sb_puts(b, i > 0 ? ",{\"address\":" : "{\"address\":");
            sb_json_str(b, s->addr.text);
            sb_printf(b, ",\"up\":%s,\"active\":%u,\"connects\":%llu,\"connect_failures\":%llu}",
                      ae_upstream_usable(pool, s, now) ? "true" : "false",
                      (unsigned)atomic_load(&s->active),
                      (unsigned long long)atomic_load(&s->connects),
                      (unsigned long long)atomic_load(&s->connect_fails));
        }
        sb_puts(b, "]}");
    }
    sb_puts(b, "]");
}

static void status_keys(sb *b, ae_keyring *ring)
{
    ae_ticket_key keys[ADMIN_MAX_KEYS];
    uint64_t now = ae_wall_ms();
    size_t n = ring != NULL ? ae_keyring_snapshot(ring, keys, ADMIN_MAX_KEYS) : 0, i;

    sb_puts(b, "\"keys\":[");
    for (i = 0; i < n; i++) {
        sb_printf(
            b, "%s{\"id\":%llu,\"state\":\"%s\",\"age_s\":%llu}", i > 0 ? "," : "",
            (unsigned long long)keys[i].id, key_state_name(keys[i].state),
            (unsigned long long)(now > keys[i].created_ms ? (now - keys[i].created_ms) / 1000 : 0));
    }
    /* Key material never leaves the ring's copy on our stack. */
    memset(keys, 0, sizeof(keys));
    sb_puts(b, "]");
}

int ae_admin_render_status(ae_server_main *s, char **out, size_t *outlen)
{
    ae_runtime *rt = ae_server_runtime(s);
    const ae_conf *conf = rt != NULL ? rt->conf : NULL;
    ae_counters_snapshot c;
    sb b = {0};

    memset(&c, 0, sizeof(c));
    ae_server_counters(s, &c);
    sb_printf(&b, "{\"site\":{\"id\":%u,\"name\":", conf != NULL ? (unsigned)conf->site.id : 0);
    sb_json_str(&b, conf != NULL ? conf->site.name : "");
    sb_puts(&b, "},\"version\":");
    sb_json_str(&b, AE_VERSION);
    sb_printf(&b, ",\"generation\":%llu,\"started\":%llu,\"draining\":%s,\"workers\":%zu,",
              (unsigned long long)(rt != NULL ? rt->generation : 0),
              (unsigned long long)(ae_server_started_ms(s) / 1000),
              ae_server_draining(s) ? "true" : "false", ae_server_nworkers(s));
    status_listeners(&b, conf);
    sb_puts(&b, ",");
    status_upstreams(&b, rt);
    sb_puts(&b, ",");
    status_keys(&b, ae_server_keyring(s));
    sb_puts(&b, ",");
    status_anycast(&b, ae_server_anycast(s));
    sb_puts(&b, ",");
    status_state(&b, ae_server_state(s));
    sb_printf(&b, ",\"connections\":{\"active\":%lld,\"accepted\":%llu}}\n", (long long)c.active,
              (unsigned long long)c.v[AE_M_ACCEPTED]);
    return sb_finish(&b, out, outlen);
}

/* ---- request parsing and routing (pure) ---- */

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

int ae_admin_parse_request(const char *buf, size_t len, ae_admin_request *req)
{
    const char *p = buf, *end = buf + len, *nl, *sp;
    size_t i;

    memset(req, 0, sizeof(*req));
    nl = memchr(p, '\n', len);
    /* Reject what can be rejected before the line is complete, so junk fails fast. */
    for (i = 0; i < (nl != NULL ? (size_t)(nl - p) : len); i++) {
        unsigned char ch = (unsigned char)p[i];

        if (ch == '\0' || (ch < 0x20 && ch != '\r') || ch >= 0x7f)
            return AE_ERR_PARSE;
    }
    if (nl == NULL)
        return AE_ERR_AGAIN;
    if (nl == p || nl[-1] != '\r')
        return AE_ERR_PARSE;

    /* method SP */
    for (sp = p; sp < nl && *sp >= 'A' && *sp <= 'Z'; sp++)
        ;
    if (sp == p || sp - p > 16 || *sp != ' ')
        return AE_ERR_PARSE;
    req->method = p;
    req->method_len = (size_t)(sp - p);
    /* origin-form target SP */
    p = sp + 1;
    if (*p != '/')
        return AE_ERR_PARSE;
    for (sp = p; sp<nl && * sp> 0x20 && *sp < 0x7f; sp++)
        ;
    if (*sp != ' ')
        return AE_ERR_PARSE;
    req->path = p;
    req->path_len = (size_t)(sp - p);
    for (i = 0; i < req->path_len; i++) {
        if (p[i] == '?' || p[i] == '#') {
            size_t tlen = req->path_len, j;
            req->path_len = i;
            if (p[i] == '?') {
                for (j = i + 1; j < tlen && p[j] != '#'; j++)
                    ;
                req->query = p + i + 1;
                req->query_len = j - i - 1;
            }
            break;
        }
    }
    /* HTTP/1.x CR LF */
    p = sp + 1;
    if (nl - p != 9 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9')
        return AE_ERR_PARSE;
    req->minor = p[7] - '0';

    /* Header lines: "name: value" CRLF, no obsolete folding, up to the empty line. */
    for (p = nl + 1;;) {
        const char *colon;

        if (p >= end)
            return AE_ERR_AGAIN;
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return memchr(p, '\0', (size_t)(end - p)) != NULL ? AE_ERR_PARSE : AE_ERR_AGAIN;
        if (nl == p || nl[-1] != '\r')
            return AE_ERR_PARSE;
        if (nl - 1 == p) {
            req->head_len = (size_t)(nl + 1 - buf);
            return 0;
        }
        for (colon = p; colon < nl - 1 && is_tchar((unsigned char)*colon); colon++)
            ;
        if (colon == p || *colon != ':')
            return AE_ERR_PARSE;
        for (sp = colon + 1; sp < nl - 1; sp++) {
            unsigned char ch = (unsigned char)*sp;

            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return AE_ERR_PARSE;
        }
        p = nl + 1;
    }
}

static const struct {
    const char *path;
    const char *method;
    ae_admin_route_id id;
} routes[] = {
    {"/metrics", "GET", AE_ADMIN_METRICS}, {"/status", "GET", AE_ADMIN_STATUS},
    {"/reload", "POST", AE_ADMIN_RELOAD},  {"/keys/rotate", "POST", AE_ADMIN_KEYS_ROTATE},
    {"/sites", "GET", AE_ADMIN_SITES},     {"/whereis", "GET", AE_ADMIN_WHEREIS},
    {"/drain", "POST", AE_ADMIN_DRAIN},    {"/undrain", "POST", AE_ADMIN_UNDRAIN},
};

static int span_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

int ae_admin_route(const ae_admin_request *req, const char **allow)
{
    size_t i;

    *allow = NULL;
    for (i = 0; i < AE_ARRAY_LEN(routes); i++) {
        if (!span_eq(req->path, req->path_len, routes[i].path))
            continue;
        if (span_eq(req->method, req->method_len, routes[i].method))
            return (int)routes[i].id;
        *allow = routes[i].method;
        return AE_ERR_INVAL;
    }
    return AE_ERR_NOTFOUND;
}

/* ---- connections ---- */

typedef enum {
    AC_READING = 0, /* reading the request head */
    AC_WRITING,     /* sending the response */
    AC_LINGERING,   /* response sent and write side shut: draining until the client's EOF */
    AC_CLOSED,      /* done; freed by the callback that set it, after the handler returns */
} ac_state;

typedef struct admin_conn {
    ae_admin *a;
    struct admin_conn *prev, *next;
    int fd;
    ac_state state;
    ev_io io;
    ev_timer timer;
    size_t rlen;
    char *out;
    size_t outlen, outoff;
    char rbuf[AE_ADMIN_REQ_MAX];
} admin_conn;

struct ae_admin {
    struct ev_loop *loop;
    ae_server_main *srv;
    int fd;
    ev_io io;
    ev_timer pause;
    admin_conn *conns;
    size_t nconns;
};

static void conn_free(admin_conn *c)
{
    ae_admin *a = c->a;

    ev_io_stop(a->loop, &c->io);
    ev_timer_stop(a->loop, &c->timer);
    if (c->fd >= 0)
        close(c->fd);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    a->nconns--;
    free(c->out);
    free(c);
}

static void conn_set_io(admin_conn *c, int events)
{
    ev_io_stop(c->a->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->a->loop, &c->io);
}

static void conn_linger(admin_conn *c)
{
    /* Closing with unread request bytes would make the kernel send RST, which can destroy
     * the response before the client read it; shut our side and wait for theirs. */
    shutdown(c->fd, SHUT_WR);
    c->state = AC_LINGERING;
    conn_set_io(c, EV_READ);
    if (ev_timer_remaining(c->a->loop, &c->timer) > ADMIN_LINGER_S) {
        ev_timer_stop(c->a->loop, &c->timer);
        ev_timer_set(&c->timer, ADMIN_LINGER_S, 0.);
        ev_timer_start(c->a->loop, &c->timer);
    }
}

static void conn_write(admin_conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!ev_is_active(&c->io))
                    conn_set_io(c, EV_WRITE);
                return;
            }
            c->state = AC_CLOSED;
            return;
        }
        c->outoff += (size_t)w;
    }
    conn_linger(c);
}

static const char *status_text(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    default:
        return "Error";
    }
}

/* Queues the response (body is borrowed) and starts sending it. */
static void conn_respond(admin_conn *c, int code, const char *ctype, const char *allow,
                         const char *body, size_t bodylen)
{
    sb b = {0};

    sb_printf(&b,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-store\r\nConnection: close\r\n",
              code, status_text(code), ctype, bodylen);
    if (allow != NULL)
        sb_printf(&b, "Allow: %s\r\n", allow);
    sb_add(&b, "\r\n", 2);
    sb_add(&b, body, bodylen);
    if (b.oom) {
        free(b.p);
        c->state = AC_CLOSED;
        return;
    }
    free(c->out);
    c->out = b.p;
    c->outlen = b.len;
    c->outoff = 0;
    ev_io_stop(c->a->loop, &c->io);
    c->state = AC_WRITING;
    conn_write(c);
}

static void conn_respond_text(admin_conn *c, int code, const char *allow, const char *text)
{
    conn_respond(c, code, "text/plain; charset=utf-8", allow, text, strlen(text));
}

static void conn_respond_json_result(admin_conn *c, int rv, uint64_t generation, const char *err)
{
    sb b = {0};
    int code = 200;

    if (rv == 0) {
        sb_printf(&b, "{\"ok\":true,\"generation\":%llu}\n", (unsigned long long)generation);
    } else {
        /* The config or certificates are wrong: the client's problem. Anything else is ours. */
        code = rv == AE_ERR_PARSE || rv == AE_ERR_TLS || rv == AE_ERR_INVAL || rv == AE_ERR_NOTFOUND
                   ? 400
               : rv == AE_ERR_AGAIN ? 503
                                    : 500;
        sb_puts(&b, "{\"ok\":false,\"error\":");
        sb_json_str(&b, err != NULL && err[0] != '\0' ? err : ae_strerror(rv));
        sb_puts(&b, "}\n");
    }
    if (b.oom) {
        free(b.p);
        conn_respond_text(c, 500, NULL, "out of memory\n");
        return;
    }
    conn_respond(c, code, "application/json", NULL, b.p, b.len);
    free(b.p);
}

/* POST /drain, /undrain: {"ok":true,"state":"draining"} or an error. */
static void anycast_drain_request(admin_conn *c, int drain)
{
    ae_anycast *a = ae_server_anycast(c->a->srv);
    ae_anycast_info in;
    char err[256] = "";
    int rv;
    sb b = {0};

    if (a == NULL) {
        conn_respond_text(c, 503, NULL, "not running\n");
        return;
    }
    rv = drain ? ae_anycast_drain(a, "admin: drain", err, sizeof(err))
               : ae_anycast_undrain(a, "admin: undrain", err, sizeof(err));
    ae_anycast_get_info(a, &in);
    if (rv != 0) {
        sb_puts(&b, "{\"ok\":false,\"error\":");
        sb_json_str(&b, err[0] != '\0' ? err : ae_strerror(rv));
    } else {
        sb_printf(&b, "{\"ok\":true,\"state\":\"%s\"", ae_anycast_state_names[in.state]);
    }
    sb_puts(&b, "}\n");
    if (b.oom) {
        free(b.p);
        conn_respond_text(c, 500, NULL, "out of memory\n");
        return;
    }
    conn_respond(c, rv == 0 ? 200 : 409, "application/json", NULL, b.p, b.len);
    free(b.p);
}

/* The value of parameter name among the &-separated parameters of query[0, qlen) (the last one
 * when repeated; *vn its length), or NULL. */
static const char *query_param(const char *query, size_t qlen, const char *name, size_t *vn)
{
    const char *v = NULL;
    size_t nl = strlen(name);
    for (size_t i = 0; i < qlen;) {
        size_t j = i;
        while (j < qlen && query[j] != '&')
            j++;
        if (j - i > nl && memcmp(query + i, name, nl) == 0 && query[i + nl] == '=') {
            v = query + i + nl + 1;
            *vn = j - i - nl - 1;
        }
        i = j + 1;
    }
    return v;
}

/* ---- GET /whereis?cid=HEX (where a QUIC connection ID's packets go) ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* JSON {cid, site, worker, self, alive, ...} in *out (malloc'd); *code is the HTTP status
 * (200, 400 bad query, 404 undecodable, 503 no keys). 0 or AE_ERR_NOMEM. */
static int whereis_cid(ae_server_main *s, const char *query, size_t qlen, char **out,
                       size_t *outlen, int *code)
{
    char buf[512];
    int n;
    uint8_t cid[AE_CID_LEN];
    size_t hexlen = 0;
    const char *hex = query_param(query, qlen, "cid", &hexlen);

    *code = 400;
    if (hex == NULL || hexlen != 2 * AE_CID_LEN) {
        n = snprintf(buf, sizeof(buf),
                     "{\"ok\":false,\"error\":\"want ?cid=HEX with %d hex octets\"}\n", AE_CID_LEN);
        goto done;
    }
    for (size_t i = 0; i < AE_CID_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            n = snprintf(buf, sizeof(buf), "{\"ok\":false,\"error\":\"cid is not hex\"}\n");
            goto done;
        }
        cid[i] = (uint8_t)(hi << 4 | lo);
    }
    ae_cid_keys *k = NULL;
    uint16_t site;
    uint8_t worker;
    const ae_ring *ring = ae_server_qring(s);
    if (ring == NULL || ae_cid_keys_from_ring(ring, &k) != 0) {
        *code = 503;
        n = snprintf(buf, sizeof(buf), "{\"ok\":false,\"error\":\"no CID keys\"}\n");
        goto done;
    }
    int rv = ae_cid_decode(k, cid, sizeof(cid), &site, &worker);
    ae_cid_keys_free(k);
    if (rv != 0) {
        *code = 404;
        n = snprintf(buf, sizeof(buf),
                     "{\"ok\":false,\"cid\":\"%.*s\",\"error\":\"undecodable: not issued under "
                     "a key of the current ring\"}\n",
                     (int)hexlen, hex);
        goto done;
    }
    *code = 200;
    ae_runtime *rt = ae_server_runtime(s);
    if (rt != NULL && site == rt->conf->site.id) {
        int alive = worker < ae_server_nworkers(s) && !ae_server_draining(s);
        n = snprintf(buf, sizeof(buf),
                     "{\"ok\":true,\"cid\":\"%.*s\",\"site\":%u,\"worker\":%u,\"self\":true,"
                     "\"alive\":%s,\"state\":\"%s\",\"action\":\"%s\"}\n",
                     (int)hexlen, hex, site, worker, alive ? "true" : "false",
                     ae_server_draining(s) ? "draining" : "active",
                     worker < ae_server_nworkers(s) ? "local" : "reset");
        goto done;
    }
    const ae_fwd_peer *p = ae_fwd_peers_find(ae_server_peers(s), site);
    char addr[80] = "";
    if (p != NULL && p->addrlen > 0)
        ae_addr_format(&p->addr.sa, addr, sizeof(addr));
    int unreach = ae_fwd_group_unreachable(ae_server_fwd_group(s), site, ae_wall_ms());
    int alive = p != NULL && p->live && !unreach;
    int fwd = alive && !p->draining && p->addrlen > 0;
    n = snprintf(buf, sizeof(buf),
                 "{\"ok\":true,\"cid\":\"%.*s\",\"site\":%u,\"worker\":%u,\"self\":false,"
                 "\"alive\":%s,\"known\":%s,\"draining\":%s,\"unreachable\":%s,"
                 "\"forward\":\"%s\",\"action\":\"%s\"}\n",
                 (int)hexlen, hex, site, worker, alive ? "true" : "false",
                 p != NULL ? "true" : "false", p != NULL && p->draining ? "true" : "false",
                 unreach ? "true" : "false", addr, fwd ? "forward" : "reset");
done:
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(buf))
        n = sizeof(buf) - 1;
    *out = malloc((size_t)n + 1);
    if (*out == NULL)
        return AE_ERR_NOMEM;
    memcpy(*out, buf, (size_t)n + 1);
    *outlen = (size_t)n;
    return 0;
}

static void conn_dispatch(admin_conn *c, const ae_admin_request *req)
{
    ae_server_main *s = c->a->srv;
    const char *allow;
    char err[512];
    char *body = NULL;
    size_t bodylen = 0;
    int route = ae_admin_route(req, &allow), rv;

    switch (route) {
    case AE_ERR_NOTFOUND:
        conn_respond_text(c, 404, NULL, "not found\n");
        return;
    case AE_ERR_INVAL:
        conn_respond_text(c, 405, allow, "method not allowed\n");
        return;
    case AE_ADMIN_METRICS:
    case AE_ADMIN_STATUS:
    case AE_ADMIN_SITES:
        rv = route == AE_ADMIN_METRICS  ? ae_admin_render_metrics(s, &body, &bodylen)
             : route == AE_ADMIN_STATUS ? ae_admin_render_status(s, &body, &bodylen)
                                        : ae_admin_render_sites(s, &body, &bodylen);
        if (rv != 0) {
            conn_respond_text(c, 500, NULL, "out of memory\n");
            return;
        }
        conn_respond(c, 200,
                     route == AE_ADMIN_METRICS ? "text/plain; version=0.0.4; charset=utf-8"
                                               : "application/json",
                     NULL, body, bodylen);
        free(body);
        return;
    case AE_ADMIN_WHEREIS: {
        int code = 500;
        const char *q = req->query != NULL ? req->query : "";
        size_t qlen = req->query != NULL ? req->query_len : 0;
        size_t tn = 0;
        const char *tcp = query_param(q, qlen, "tcp", &tn);
        rv = tcp != NULL ? ae_handoff_whereis(ae_server_handoff(s), ae_server_conntab(s), tcp, tn,
                                              &body, &bodylen, &code)
                         : whereis_cid(s, q, qlen, &body, &bodylen, &code);
        if (rv != 0) {
            conn_respond_text(c, 500, NULL, "out of memory\n");
            return;
        }
        conn_respond(c, code, "application/json", NULL, body, bodylen);
        free(body);
        return;
    }
    case AE_ADMIN_DRAIN:
    case AE_ADMIN_UNDRAIN:
        anycast_drain_request(c, route == AE_ADMIN_DRAIN);
        return;
    case AE_ADMIN_RELOAD:
        err[0] = '\0';
        rv = ae_server_reload(s, err, sizeof(err));
        if (rv == 0)
            AE_INFO("admin: reload requested: now at generation %llu",
                    (unsigned long long)(ae_server_runtime(s) != NULL
                                             ? ae_server_runtime(s)->generation
                                             : 0));
        else
            AE_WARN("admin: reload failed: %s", err[0] != '\0' ? err : ae_strerror(rv));
        conn_respond_json_result(
            c, rv, ae_server_runtime(s) != NULL ? ae_server_runtime(s)->generation : 0, err);
        return;
    case AE_ADMIN_KEYS_ROTATE:
        err[0] = '\0';
        rv = ae_server_rotate_keys(s, err, sizeof(err));
        if (rv == 0)
            AE_INFO("admin: ticket key rotation %s",
                    ae_server_state(s) != NULL ? "requested" : "done");
        else
            AE_WARN("admin: key rotation failed: %s", err[0] != '\0' ? err : ae_strerror(rv));
        {
            /* Shared mode: the ring's generation (the rotation itself shows up shortly). */
            uint64_t gen = 0;
            if (ae_server_state(s) != NULL) {
                ae_state_info in;
                ae_state_get_info(ae_server_state(s), &in);
                gen = in.ring_generation;
            } else if (ae_server_keyring(s) != NULL) {
                gen = ae_keyring_generation(ae_server_keyring(s));
            }
            conn_respond_json_result(c, rv, gen, err[0] != '\0' ? err : NULL);
        }
        return;
    default:
        conn_respond_text(c, 500, NULL, "internal error\n");
    }
}

static void conn_read(admin_conn *c)
{
    ae_admin_request req;
    int rv;

    for (;;) {
        ssize_t r;

        if (c->rlen == sizeof(c->rbuf)) {
            conn_respond_text(c, 431, NULL, "request too large\n");
            return;
        }
        r = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->state = AC_CLOSED;
            return;
        }
        if (r == 0) {
            c->state = AC_CLOSED; /* gave up before finishing the request */
            return;
        }
        c->rlen += (size_t)r;
        rv = ae_admin_parse_request(c->rbuf, c->rlen, &req);
        if (rv == AE_ERR_AGAIN)
            continue;
        if (rv != 0) {
            conn_respond_text(c, 400, NULL, "bad request\n");
            return;
        }
        conn_dispatch(c, &req);
        return;
    }
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    admin_conn *c = w->data;
    char sink[1024];
    ssize_t r;

    switch (c->state) {
    case AC_READING:
        conn_read(c);
        break;
    case AC_WRITING:
        conn_write(c);
        break;
    case AC_LINGERING:
        do {
            r = recv(c->fd, sink, sizeof(sink), 0);
        } while (r > 0 || (r < 0 && errno == EINTR));
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            c->state = AC_CLOSED;
        break;
    case AC_CLOSED:
        break;
    }
    if (c->state == AC_CLOSED)
        conn_free(c);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    admin_conn *c = w->data;

    conn_free(c);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    ae_admin *a = w->data;

    for (;;) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        admin_conn *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Level-triggered: waiting on the socket again would spin. */
                AE_WARN("admin: accept: %s; pausing", strerror(errno));
                ev_io_stop(loop, &a->io);
                ev_timer_set(&a->pause, ADMIN_ACCEPT_WAIT, 0.);
                ev_timer_start(loop, &a->pause);
            }
            return;
        }
        if (a->nconns >= ADMIN_MAX_CONNS || (c = calloc(1, sizeof(*c))) == NULL) {
            close(fd);
            continue;
        }
        c->a = a;
        c->fd = fd;
        c->state = AC_READING;
        c->next = a->conns;
        if (a->conns != NULL)
            a->conns->prev = c;
        a->conns = c;
        a->nconns++;
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_io_start(loop, &c->io);
        ev_timer_init(&c->timer, conn_timer_cb, ADMIN_TIMEOUT_S, 0.);
        c->timer.data = c;
        ev_timer_start(loop, &c->timer);
    }
}

static void pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ae_admin *a = w->data;

    ev_io_start(loop, &a->io);
}

int ae_admin_new(struct ev_loop *loop, ae_server_main *srv, const ae_addr *addr, ae_admin **out,
                 char *err, size_t errlen)
{
    ae_admin *a;
    int one = 1, e;
    const char *what;

    *out = NULL;
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return AE_ERR_NOMEM;
    }
    a->loop = loop;
    a->srv = srv;
    what = "socket";
    a->fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->fd < 0)
        goto fail_socket;
    what = "setsockopt SO_REUSEADDR";
    if (setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        goto fail_bind;
    what = "bind";
    if (bind(a->fd, (const struct sockaddr *)&addr->sa, addr->len) != 0)
        goto fail_bind;
    what = "listen";
    if (listen(a->fd, ADMIN_BACKLOG) != 0)
        goto fail_bind;

    ev_io_init(&a->io, accept_cb, a->fd, EV_READ);
    a->io.data = a;
    ev_io_start(loop, &a->io);
    ev_timer_init(&a->pause, pause_cb, ADMIN_ACCEPT_WAIT, 0.);
    a->pause.data = a;
    *out = a;
    return 0;

fail_bind:
    e = errno;
    close(a->fd);
    errno = e;
fail_socket:
    snprintf(err, errlen, "admin: %s %s: %s", what, addr->text, strerror(errno));
    free(a);
    return AE_ERR_IO;
}

void ae_admin_free(ae_admin *a)
{
    if (a == NULL)
        return;
    while (a->conns != NULL)
        conn_free(a->conns);
    ev_io_stop(a->loop, &a->io);
    ev_timer_stop(a->loop, &a->pause);
    if (a->fd >= 0)
        close(a->fd);
    free(a);
}
