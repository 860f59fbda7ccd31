/*
 * The admin endpoint's documents (render.h): Prometheus metrics, /status and /sites JSON.
 */
#include "proxy/site/render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/metrics.h"
#include "proxy/core/reason.h"
#include "proxy/core/runtime.h"
#include "proxy/forward/forward.h"
#include "proxy/h3/states.h"
#include "proxy/handoff/handoff.h"
#include "proxy/site/admin.h"
#include "proxy/site/anycast.h"
#include "proxy/site/sb.h"
#include "proxy/site/server.h"
#include "state/state.h"

#define ADMIN_MAX_KEYS 16

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

static void prom_head(ae_sb *b, const char *name, const char *type, const char *help)
{
    ae_sb_printf(b, "# HELP anyedge_%s ", name);
    ae_sb_prom_esc(b, help, 1);
    ae_sb_printf(b, "\n# TYPE anyedge_%s %s\n", name, type);
}

/* anyedge_<name>{pool="..",server=".."<extra>} */
static void prom_server_labels(ae_sb *b, const char *name, const ae_pool *pool,
                               const ae_upstream_server *s)
{
    ae_sb_printf(b, "anyedge_%s{pool=\"", name);
    ae_sb_prom_esc(b, pool->conf->name, 0);
    ae_sb_puts(b, "\",server=\"");
    ae_sb_prom_esc(b, s->addr.text, 0);
    ae_sb_puts(b, "\"");
}

static int is_split_metric(size_t i)
{
    return i == AE_M_HS_FULL || i == AE_M_HS_RESUMED ||
           (i >= AE_M_HS_FAIL_PROTOCOL && i < AE_M_HS_FAIL_PROTOCOL + AE_TLS_FAIL__COUNT) ||
           (i >= AE_M_TUN_DROP_B0 && i <= AE_M_TUN_DROP_LAST) ||
           (i >= AE_M_SRC_B0 && i <= AE_M_SRC_LAST);
}

static void render_upstreams(ae_sb *b, ae_runtime *rt)
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
                    ae_sb_printf(b, "} %d\n", ae_upstream_usable(pool, s, now) ? 1 : 0);
                    break;
                case 1:
                    ae_sb_printf(b, "} %u\n", (unsigned)atomic_load(&s->active));
                    break;
                case 2:
                    ae_sb_printf(b, "} %llu\n", (unsigned long long)atomic_load(&s->connects));
                    break;
                case 3:
                    ae_sb_printf(b, "} %llu\n", (unsigned long long)atomic_load(&s->connect_fails));
                    break;
                default:
                    ae_sb_printf(b, ",result=\"ok\"} %llu\n",
                                 (unsigned long long)atomic_load(&s->checks_ok));
                    prom_server_labels(b, fams[f].name, pool, s);
                    ae_sb_printf(b, ",result=\"failed\"} %llu\n",
                                 (unsigned long long)atomic_load(&s->checks_failed));
                }
            }
        }
    }
    prom_head(b, "affinity_total", "counter",
              "balance: hash pools: server choices by result (hit: the key's first-ranked "
              "server; moved: a later-ranked one; cookie: the server of a valid affinity cookie) "
              "and ignored or missing keys (cookie_invalid, cookie_down, no_key).");
    for (p = 0; rt != NULL && p < rt->npools; p++) {
        ae_pool *pool = &rt->pools[p];

        if (pool->conf->balance != AE_BAL_HASH)
            continue;
        for (i = 0; i < AE_AFF__COUNT; i++) {
            ae_sb_puts(b, "anyedge_affinity_total{pool=\"");
            ae_sb_prom_esc(b, pool->conf->name, 0);
            ae_sb_printf(b, "\",result=\"%s\"} %llu\n", ae_aff_result_names[i],
                         (unsigned long long)atomic_load(&pool->stats->affinity[i]));
        }
    }
}

static void render_keys(ae_sb *b, ae_keyring *ring)
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
    ae_sb_printf(b, "anyedge_tls_ticket_resumptions_total{key=\"current\"} %llu\n",
                 (unsigned long long)st.decrypt_current);
    ae_sb_printf(b, "anyedge_tls_ticket_resumptions_total{key=\"previous\"} %llu\n",
                 (unsigned long long)st.decrypt_previous);
    ae_sb_printf(b, "anyedge_tls_ticket_resumptions_total{key=\"next\"} %llu\n",
                 (unsigned long long)st.decrypt_next);
    ae_sb_printf(b, "anyedge_tls_ticket_resumptions_total{key=\"unknown\"} %llu\n",
                 (unsigned long long)st.decrypt_unknown);
    prom_head(b, "tls_tickets_issued_total", "counter", "Session tickets issued.");
    ae_sb_printf(b, "anyedge_tls_tickets_issued_total %llu\n", (unsigned long long)st.encrypt);

    prom_head(b, "tls_ticket_key_age_seconds", "gauge",
              "Age of the newest ticket key in each state.");
    n = ring != NULL ? ae_keyring_snapshot(ring, keys, ADMIN_MAX_KEYS) : 0;
    for (i = 0; i < n; i++) {
        unsigned st_idx = (unsigned)keys[i].state;

        /* Newest first: one series per state, for the newest key in it. */
        if (st_idx >= 4 || seen[st_idx])
            continue;
        seen[st_idx] = 1;
        ae_sb_printf(b, "anyedge_tls_ticket_key_age_seconds{state=\"%s\"} %.3f\n",
                     key_state_name(keys[i].state),
                     now > keys[i].created_ms ? (double)(now - keys[i].created_ms) / 1000.0 : 0.0);
    }
}

static void render_state(ae_sb *b, struct ae_state *st)
{
    ae_state_info in;
    uint64_t now = ae_wall_ms();

    prom_head(b, "redis_configured", "gauge", "1 when state.redis is set (shared state).");
    ae_sb_printf(b, "anyedge_redis_configured %d\n", st != NULL);
    if (st == NULL)
        return;
    ae_state_get_info(st, &in);
    prom_head(b, "redis_connected", "gauge", "1 while the Redis command connection is up.");
    ae_sb_printf(b, "anyedge_redis_connected %d\n", in.connected);
    prom_head(b, "redis_subscribed", "gauge", "1 while the ring notification channel is up.");
    ae_sb_printf(b, "anyedge_redis_subscribed %d\n", in.subscribed);
    prom_head(b, "redis_commands_total", "counter", "Redis commands sent.");
    ae_sb_printf(b, "anyedge_redis_commands_total %llu\n", (unsigned long long)in.redis.commands);
    prom_head(b, "redis_errors_total", "counter",
              "Redis errors: failed connects, AUTH, error replies, failed scripts.");
    ae_sb_printf(b, "anyedge_redis_errors_total %llu\n", (unsigned long long)in.redis.errors);
    prom_head(b, "redis_timeouts_total", "counter", "Redis connect and command timeouts.");
    ae_sb_printf(b, "anyedge_redis_timeouts_total %llu\n", (unsigned long long)in.redis.timeouts);
    prom_head(b, "redis_connects_total", "counter", "Successful Redis (re)connections.");
    ae_sb_printf(b, "anyedge_redis_connects_total %llu\n", (unsigned long long)in.redis.connects);
    prom_head(b, "redis_master_switches_total", "counter",
              "Sentinel: times the master's address changed (lookup or +switch-master).");
    ae_sb_printf(b, "anyedge_redis_master_switches_total %llu\n",
                 (unsigned long long)in.redis.master_switches);
    prom_head(b, "redis_not_master_total", "counter",
              "Sentinel: connections dropped because ROLE was not master.");
    ae_sb_printf(b, "anyedge_redis_not_master_total %llu\n",
                 (unsigned long long)in.redis.not_master);
    prom_head(b, "ring_conflicts_total", "counter",
              "Rings of the cached generation with other keys found in Redis (adopted).");
    ae_sb_printf(b, "anyedge_ring_conflicts_total %llu\n", (unsigned long long)in.ring_conflicts);
    prom_head(b, "ring_generation", "gauge", "Generation of the shared key ring in use.");
    ae_sb_printf(b, "anyedge_ring_generation %llu\n", (unsigned long long)in.ring_generation);
    prom_head(b, "ring_shared", "gauge", "1 when the TLS keys come from the shared ring.");
    ae_sb_printf(b, "anyedge_ring_shared %d\n", in.have_ring);
    prom_head(b, "ring_last_sync_age_seconds", "gauge",
              "Time since the ring was last read from Redis (-1: never).");
    ae_sb_printf(b, "anyedge_ring_last_sync_age_seconds %.3f\n",
                 in.last_sync_ms == 0
                     ? -1.0
                     : (double)(now > in.last_sync_ms ? now - in.last_sync_ms : 0) / 1000.0);
    prom_head(b, "ring_errors_total", "counter", "Invalid rings read from Redis.");
    ae_sb_printf(b, "anyedge_ring_errors_total %llu\n", (unsigned long long)in.ring_errors);
    prom_head(b, "ring_rotations_total", "counter", "Ring rotations by result at this site.");
    ae_sb_printf(b, "anyedge_ring_rotations_total{result=\"done\"} %llu\n",
                 (unsigned long long)in.rotations);
    ae_sb_printf(b, "anyedge_ring_rotations_total{result=\"lost\"} %llu\n",
                 (unsigned long long)in.rotations_lost);
    prom_head(b, "ring_republished_total", "counter",
              "Times this site wrote its cached ring back to a Redis that had lost it.");
    ae_sb_printf(b, "anyedge_ring_republished_total %llu\n", (unsigned long long)in.republished);
    prom_head(b, "site_conflicts_total", "counter",
              "Heartbeats refused: another live instance uses this site id.");
    ae_sb_printf(b, "anyedge_site_conflicts_total %llu\n", (unsigned long long)in.site_conflicts);
}

static void status_sites(ae_sb *b, struct ae_state *st)
{
    ae_site_info sites[64];
    size_t n = st != NULL ? ae_state_sites(st, sites, 64) : 0;
    uint64_t now = ae_wall_ms();

    ae_sb_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        const ae_site_info *si = &sites[i];
        ae_sb_printf(b, "%s{\"id\":%u,\"name\":", i > 0 ? "," : "", si->id);
        ae_sb_json_str(b, si->name);
        ae_sb_puts(b, ",\"forward\":");
        ae_sb_json_str(b, si->forward);
        ae_sb_puts(b, ",\"state\":");
        ae_sb_json_str(b, si->state);
        ae_sb_puts(b, ",\"version\":");
        ae_sb_json_str(b, si->version);
        ae_sb_printf(b, ",\"live\":%s,\"self\":%s,\"heartbeat_age_ms\":%llu}",
                     si->live ? "true" : "false", si->self ? "true" : "false",
                     (unsigned long long)(now > si->heartbeat_ms ? now - si->heartbeat_ms : 0));
    }
    ae_sb_puts(b, "]");
}

static void status_state(ae_sb *b, struct ae_state *st)
{
    ae_state_info in;

    if (st == NULL) {
        ae_sb_puts(b, "\"state\":{\"mode\":\"standalone\"}");
        return;
    }
    ae_state_get_info(st, &in);
    ae_sb_printf(b,
                 "\"state\":{\"mode\":\"redis\",\"connected\":%s,\"subscribed\":%s,"
                 "\"shared_ring\":%s,\"ring_generation\":%llu,\"last_sync_ms\":%llu,"
                 "\"ring_errors\":%llu,\"rotations\":%llu,\"site_conflicts\":%llu,\"sites\":",
                 in.connected ? "true" : "false", in.subscribed ? "true" : "false",
                 in.have_ring ? "true" : "false", (unsigned long long)in.ring_generation,
                 (unsigned long long)in.last_sync_ms, (unsigned long long)in.ring_errors,
                 (unsigned long long)in.rotations, (unsigned long long)in.site_conflicts);
    status_sites(b, st);
    ae_sb_puts(b, ",\"ring_keys\":[");
    for (size_t i = 0; i < in.ring_nkeys && i < 3; i++)
        ae_sb_printf(b, "%s\"%llu:%08x\"", i ? "," : "", (unsigned long long)in.ring_key_ids[i],
                     in.ring_key_fp[i]);
    ae_sb_puts(b, "]");
    ae_sb_puts(b, "}");
}

static const char *anycast_mode_name(ae_anycast_mode m)
{
    return m == AE_ANYCAST_COMMAND ? "command" : m == AE_ANYCAST_EXABGP ? "exabgp" : "off";
}

/* "anycast":{...}: route state, site drain, last evaluation and command. */
static void status_anycast(ae_sb *b, ae_anycast *a)
{
    ae_anycast_info in;
    uint64_t now = ae_wall_ms();

    ae_anycast_get_info(a, &in);
    ae_sb_printf(b, "\"anycast\":{\"mode\":\"%s\",\"prefix\":", anycast_mode_name(in.mode));
    ae_sb_json_str(b, in.prefix);
    ae_sb_printf(b,
                 ",\"state\":\"%s\",\"route\":\"%s\",\"target\":\"%s\",\"uncertain\":%s,"
                 "\"site\":\"%s\",\"healthy\":%s,\"reason\":",
                 ae_anycast_state_names[in.state], in.fsm.have == 1 ? "announced" : "withdrawn",
                 in.fsm.want ? "announced" : "withdrawn", in.fsm.dirty ? "true" : "false",
                 in.site == AE_SITE_DRAINED    ? "drained"
                 : in.site == AE_SITE_DRAINING ? "draining"
                                               : "active",
                 in.fsm.healthy ? "true" : "false");
    ae_sb_json_str(b, in.reason);
    ae_sb_printf(b,
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
        ae_sb_printf(b, "{\"action\":\"%s\",\"pid\":%d}", in.running, in.running_pid);
    else
        ae_sb_puts(b, "null");
    ae_sb_puts(b, ",\"last_command\":");
    if (in.last.action != NULL)
        ae_sb_printf(b,
                     "{\"action\":\"%s\",\"result\":\"%s\",\"exit_status\":%d,\"at_ms\":%llu,"
                     "\"duration_ms\":%llu}",
                     in.last.action, in.last.result, in.last.exit_status,
                     (unsigned long long)in.last.at_ms, (unsigned long long)in.last.duration_ms);
    else
        ae_sb_puts(b, "null");
    ae_sb_printf(b, ",\"commands\":%llu,\"command_failures\":%llu,\"consecutive_failures\":%u}",
                 (unsigned long long)in.commands, (unsigned long long)in.command_failures,
                 (unsigned)in.fsm.failures);
}

static void render_anycast(ae_sb *b, ae_anycast *a)
{
    ae_anycast_info in;

    ae_anycast_get_info(a, &in);
    prom_head(b, "anycast_announced", "gauge",
              "1 while the anycast prefix is announced (last route command succeeded).");
    ae_sb_printf(b, "anyedge_anycast_announced %d\n", in.fsm.have == 1 ? 1 : 0);
    prom_head(b, "anycast_healthy", "gauge", "1 when the last anycast health evaluation passed.");
    ae_sb_printf(b, "anyedge_anycast_healthy %d\n", in.fsm.healthy ? 1 : 0);
    prom_head(b, "anycast_draining", "gauge",
              "Site drain: 0 active, 1 draining, 2 drained (anyedgectl drain / undrain).");
    ae_sb_printf(b, "anyedge_anycast_draining %d\n", (int)in.site);
    prom_head(b, "anycast_transitions_total", "counter",
              "Anycast state changes, by the state entered.");
    for (int i = 0; i < AE_ANYCAST_S__COUNT; i++)
        ae_sb_printf(b, "anyedge_anycast_transitions_total{to=\"%s\"} %llu\n",
                     ae_anycast_state_names[i], (unsigned long long)in.transitions[i]);
    prom_head(b, "anycast_commands_total", "counter",
              "Announce/withdraw commands (or ExaBGP lines) run.");
    ae_sb_printf(b, "anyedge_anycast_commands_total %llu\n", (unsigned long long)in.commands);
    prom_head(b, "anycast_command_failures_total", "counter",
              "Announce/withdraw commands that failed (exit status, timeout, spawn or write "
              "error); each is retried with backoff.");
    ae_sb_printf(b, "anyedge_anycast_command_failures_total %llu\n",
                 (unsigned long long)in.command_failures);
}

int ae_admin_render_sites(ae_server_main *s, char **out, size_t *outlen)
{
    ae_sb b = {0};
    status_sites(&b, ae_server_state(s));
    ae_sb_puts(&b, "\n");
    return ae_sb_finish(&b, out, outlen);
}

/* A Prometheus histogram from per-bucket counts (bucket i counts observations <= bounds[i];
 * the last bucket, +Inf, the rest) and a sum in microseconds. */
static void render_histogram(ae_sb *b, const char *name, const char *help, const uint64_t *buckets,
                             const double *bounds, size_t nbuckets, uint64_t sum_us)
{
    uint64_t cum = 0;

    prom_head(b, name, "histogram", help);
    for (size_t i = 0; i < nbuckets; i++) {
        cum += buckets[i];
        if (i + 1 < nbuckets)
            ae_sb_printf(b, "anyedge_%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
                         (unsigned long long)cum);
        else
            ae_sb_printf(b, "anyedge_%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    ae_sb_printf(b, "anyedge_%s_sum %.6f\n", name, (double)sum_us / 1e6);
    ae_sb_printf(b, "anyedge_%s_count %llu\n", name, (unsigned long long)cum);
}

/* QUIC connections and HTTP/3 streams, from the workers' counters. */
static void render_quic(ae_sb *b, const ae_counters_snapshot *c)
{
    size_t i;

    render_histogram(b, "h3_upstream_latency_seconds",
                     "HTTP/3 requests: time from the first upstream attempt to the first response "
                     "byte from the upstream server.",
                     &c->v[AE_M_H3_UPLAT_B0], ae_h3_uplat_bounds, AE_H3_UPLAT_NBUCKETS,
                     c->v[AE_M_H3_UPLAT_SUM_US]);
    prom_head(b, "quic_connections_active", "gauge", "Open QUIC connections.");
    ae_sb_printf(
        b, "anyedge_quic_connections_active %llu\n",
        (unsigned long long)(c->v[AE_M_QUIC_CONN_OPENED] >= c->v[AE_M_QUIC_CONN_CLOSED]
                                 ? c->v[AE_M_QUIC_CONN_OPENED] - c->v[AE_M_QUIC_CONN_CLOSED]
                                 : 0));
    prom_head(b, "quic_connections_closed_by_reason_total", "counter",
              "QUIC connections ended, by cause: idle timeout, closed by the peer, closed by "
              "us (error or GOAWAY end), shutdown, other errors, and no_handshake: Initials "
              "that never became a connection (handshake not completed).");
    for (i = 0; i < AE_QCAUSE__COUNT; i++)
        ae_sb_printf(b, "anyedge_quic_connections_closed_by_reason_total{reason=\"%s\"} %llu\n",
                     ae_quic_close_cause_names[i],
                     (unsigned long long)c->v[AE_M_QUIC_CLOSE_B0 + i]);
    prom_head(b, "h3_stream_state_total", "counter",
              "HTTP/3 request streams (machine=request) and their upstream HTTP/1.1 clients "
              "(machine=upstream) entering each state of their life cycle.");
    for (i = 0; i < AE_H3_REQ__COUNT; i++)
        ae_sb_printf(b, "anyedge_h3_stream_state_total{machine=\"request\",state=\"%s\"} %llu\n",
                     ae_h3_req_state_names[i], (unsigned long long)c->v[AE_M_H3_REQ_STATE_B0 + i]);
    for (i = 0; i < AE_H3_UP__COUNT; i++)
        ae_sb_printf(b, "anyedge_h3_stream_state_total{machine=\"upstream\",state=\"%s\"} %llu\n",
                     ae_h3_up_state_names[i], (unsigned long long)c->v[AE_M_H3_UP_STATE_B0 + i]);
}

/* Inter-site forwarding: latency, drops, datagrams per peer site. */
static void render_forwarding(ae_sb *b, const ae_counters_snapshot *c, ae_fwd_group *g)
{
    size_t i;

    render_histogram(b, "forward_latency_seconds",
                     "Accepted tunnel frames: this site's wall clock minus the frame's timestamp "
                     "(the forwarding site's wall clock; 1 ms resolution, negatives counted as 0).",
                     &c->v[AE_M_FWD_LAT_B0], ae_fwd_lat_bounds, AE_FWD_LAT_NBUCKETS,
                     c->v[AE_M_FWD_LAT_SUM_US]);
    prom_head(b, "tunnel_drops_total", "counter",
              "Tunnel frames dropped at this site, by reason (short, magic, version, key, mac, "
              "stale, site, addr, flags, no_endpoint, initial, loop, no_keys, reply_peer).");
    for (i = 0; i < AE_FWD_NDROPS; i++)
        ae_sb_printf(b, "anyedge_tunnel_drops_total{reason=\"%s\"} %llu\n",
                     ae_fwd_drop_name((int)i), (unsigned long long)c->v[AE_M_TUN_DROP_B0 + i]);
    prom_head(b, "forwarded_datagrams_total", "counter",
              "QUIC datagrams forwarded to (direction=out) or received from (direction=in) "
              "another site, and reply frames (site.return: tunnel) sent to the site that "
              "received the client's packets (direction=reply_out) or received from the "
              "connection's owner (direction=reply_in), by peer site id.");
    for (i = 1; i <= AE_CID_SITE_MAX; i++) {
        uint64_t o, in, ro, ri;
        ae_fwd_site_counts(g, (uint16_t)i, &o, &in);
        ae_fwd_site_reply_counts(g, (uint16_t)i, &ro, &ri);
        if (ro > 0)
            ae_sb_printf(b,
                         "anyedge_forwarded_datagrams_total{direction=\"reply_out\",site=\"%zu\"} "
                         "%llu\n",
                         i, (unsigned long long)ro);
        if (ri > 0)
            ae_sb_printf(b,
                         "anyedge_forwarded_datagrams_total{direction=\"reply_in\",site=\"%zu\"} "
                         "%llu\n",
                         i, (unsigned long long)ri);
        if (o > 0)
            ae_sb_printf(b,
                         "anyedge_forwarded_datagrams_total{direction=\"out\",site=\"%zu\"} %llu\n",
                         i, (unsigned long long)o);
        if (in > 0)
            ae_sb_printf(b,
                         "anyedge_forwarded_datagrams_total{direction=\"in\",site=\"%zu\"} %llu\n",
                         i, (unsigned long long)in);
    }
}

int ae_admin_render_metrics(ae_server_main *s, char **out, size_t *outlen)
{
    ae_counters_snapshot c;
    ae_runtime *rt = ae_server_runtime(s);
    ae_sb b = {0};
    size_t i;

    memset(&c, 0, sizeof(c));
    ae_server_counters(s, &c);

    for (i = 0; i < AE_M__COUNT; i++) {
        char name[96];

        if (is_split_metric(i) || ae_metric_names[i] == NULL)
            continue;
        snprintf(name, sizeof(name), "%s_total", ae_metric_names[i]);
        prom_head(&b, name, "counter", ae_metric_help[i] != NULL ? ae_metric_help[i] : "");
        ae_sb_printf(&b, "anyedge_%s %llu\n", name, (unsigned long long)c.v[i]);
    }
    prom_head(&b, "handshakes_total", "counter", "Completed TLS handshakes by type.");
    ae_sb_printf(&b, "anyedge_handshakes_total{type=\"full\"} %llu\n",
                 (unsigned long long)c.v[AE_M_HS_FULL]);
    ae_sb_printf(&b, "anyedge_handshakes_total{type=\"resumed\"} %llu\n",
                 (unsigned long long)c.v[AE_M_HS_RESUMED]);
    prom_head(&b, "handshake_failures_total", "counter", "Failed TLS handshakes by reason.");
    for (i = 0; i < AE_TLS_FAIL__COUNT; i++) {
        ae_sb_puts(&b, "anyedge_handshake_failures_total{reason=\"");
        ae_sb_prom_esc(&b, fail_reason_name(i), 0);
        ae_sb_printf(&b, "\"} %llu\n", (unsigned long long)c.v[AE_M_HS_FAIL_PROTOCOL + i]);
    }
    render_quic(&b, &c);
    render_forwarding(&b, &c, ae_server_fwd_group(s));
    prom_head(&b, "limit_refusals_total", "counter",
              "Refused by per-source limits (limits.*): tcp_rate, tcp_concurrent (connection "
              "closed at accept), quic_retry (Retry sent instead of a connection), quic_drop "
              "(Initial dropped), h3_rate (429).");
    for (i = AE_SRC_OK + 1; i < AE_SRC__COUNT; i++)
        ae_sb_printf(&b, "anyedge_limit_refusals_total{reason=\"%s\"} %llu\n",
                     ae_src_verdict_names[i], (unsigned long long)c.v[AE_M_SRC_B0 + i]);
    prom_head(&b, "connections_active", "gauge", "Open client connections.");
    ae_sb_printf(&b, "anyedge_connections_active %lld\n", (long long)c.active);

    render_upstreams(&b, rt);

    prom_head(&b, "reloads_total", "counter", "Configuration reloads by result.");
    ae_sb_printf(&b, "anyedge_reloads_total{result=\"ok\"} %llu\n",
                 (unsigned long long)ae_server_reloads_ok(s));
    ae_sb_printf(&b, "anyedge_reloads_total{result=\"failed\"} %llu\n",
                 (unsigned long long)ae_server_reloads_failed(s));
    {
        uint64_t ref[AE_ADMIN_NREFUSE];
        ae_admin_refusals(ae_server_admin(s), ref);
        prom_head(&b, "admin_refused_total", "counter",
                  "Admin requests and connections refused, by reason (host, origin, token, "
                  "bad_request, timeout, evicted, busy).");
        for (size_t r = 0; r < AE_ADMIN_NREFUSE; r++)
            ae_sb_printf(&b, "anyedge_admin_refused_total{reason=\"%s\"} %llu\n",
                         ae_admin_refuse_names[r], (unsigned long long)ref[r]);
    }
    prom_head(&b, "config_generation", "gauge", "Generation of the running configuration.");
    ae_sb_printf(&b, "anyedge_config_generation %llu\n",
                 (unsigned long long)(rt != NULL ? rt->generation : 0));
    prom_head(&b, "workers", "gauge", "Worker threads.");
    ae_sb_printf(&b, "anyedge_workers %zu\n", ae_server_nworkers(s));
    prom_head(&b, "draining", "gauge", "1 while the server drains before exiting.");
    ae_sb_printf(&b, "anyedge_draining %d\n", ae_server_draining(s) ? 1 : 0);

    {
        size_t hl = 0;
        char *ht = ae_handoff_metrics(ae_server_handoff(s), ae_server_conntab(s), &hl);
        if (ht != NULL)
            ae_sb_add(&b, ht, hl);
        free(ht);
    }
    render_anycast(&b, ae_server_anycast(s));
    render_keys(&b, ae_server_keyring(s));
    render_state(&b, ae_server_state(s));

    prom_head(&b, "start_time_seconds", "gauge", "Start time of the process since the epoch.");
    ae_sb_printf(&b, "anyedge_start_time_seconds %.3f\n", (double)ae_server_started_ms(s) / 1000.0);
    prom_head(&b, "build_info", "gauge", "Build information.");
    ae_sb_puts(&b, "anyedge_build_info{version=\"");
    ae_sb_prom_esc(&b, AE_VERSION, 0);
    ae_sb_puts(&b, "\"} 1\n");
    return ae_sb_finish(&b, out, outlen);
}

/* ---- /status JSON ---- */

static void status_listeners(ae_sb *b, const ae_conf *conf)
{
    size_t i;

    ae_sb_puts(b, "\"listeners\":[");
    for (i = 0; conf != NULL && i < conf->nlisteners; i++) {
        const ae_conf_listener *l = &conf->listeners[i];

        ae_sb_puts(b, i > 0 ? ",{\"name\":" : "{\"name\":");
        ae_sb_json_str(b, l->name);
        ae_sb_puts(b, ",\"protocol\":");
        ae_sb_json_str(b, l->protocol == AE_LPROTO_QUIC ? "quic" : "tcp");
        ae_sb_puts(b, ",\"address\":");
        ae_sb_json_str(b, l->addr.text);
        ae_sb_puts(b, ",\"upstream\":");
        ae_sb_json_str(b, l->upstream);
        ae_sb_puts(b, ",\"proxy_protocol\":");
        ae_sb_json_str(b, pp_name(l->proxy_protocol));
        ae_sb_puts(b, "}");
    }
    ae_sb_puts(b, "]");
}

static void status_upstreams(ae_sb *b, ae_runtime *rt)
{
    uint64_t now = ae_now_ms();
    size_t p, i;

    ae_sb_puts(b, "\"upstreams\":[");
    for (p = 0; rt != NULL && p < rt->npools; p++) {
        ae_pool *pool = &rt->pools[p];

        ae_sb_puts(b, p > 0 ? ",{\"name\":" : "{\"name\":");
        ae_sb_json_str(b, pool->conf->name);
        ae_sb_puts(b, ",\"balance\":");
        ae_sb_json_str(b, pool->conf->balance == AE_BAL_LEAST_CONN ? "least_conn"
                          : pool->conf->balance == AE_BAL_AFFINITY ? "affinity"
                          : pool->conf->balance == AE_BAL_HASH     ? "hash"
                                                                   : "round_robin");
        ae_sb_puts(b, ",\"servers\":[");
        for (i = 0; i < pool->nservers; i++) {
            ae_upstream_server *s = pool->servers[i];

            ae_sb_puts(b, i > 0 ? ",{\"address\":" : "{\"address\":");
            ae_sb_json_str(b, s->addr.text);
            ae_sb_printf(b, ",\"up\":%s,\"active\":%u,\"connects\":%llu,\"connect_failures\":%llu}",
                         ae_upstream_usable(pool, s, now) ? "true" : "false",
                         (unsigned)atomic_load(&s->active),
                         (unsigned long long)atomic_load(&s->connects),
                         (unsigned long long)atomic_load(&s->connect_fails));
        }
        ae_sb_puts(b, "]}");
    }
    ae_sb_puts(b, "]");
}

static void status_keys(ae_sb *b, ae_keyring *ring)
{
    ae_ticket_key keys[ADMIN_MAX_KEYS];
    uint64_t now = ae_wall_ms();
    size_t n = ring != NULL ? ae_keyring_snapshot(ring, keys, ADMIN_MAX_KEYS) : 0, i;

    ae_sb_puts(b, "\"keys\":[");
    for (i = 0; i < n; i++) {
        ae_sb_printf(
            b, "%s{\"id\":%llu,\"state\":\"%s\",\"age_s\":%llu}", i > 0 ? "," : "",
            (unsigned long long)keys[i].id, key_state_name(keys[i].state),
            (unsigned long long)(now > keys[i].created_ms ? (now - keys[i].created_ms) / 1000 : 0));
    }
    /* Key material never leaves the ring's copy on our stack. */
    memset(keys, 0, sizeof(keys));
    ae_sb_puts(b, "]");
}

int ae_admin_render_status(ae_server_main *s, char **out, size_t *outlen)
{
    ae_runtime *rt = ae_server_runtime(s);
    const ae_conf *conf = rt != NULL ? rt->conf : NULL;
    ae_counters_snapshot c;
    ae_sb b = {0};

    memset(&c, 0, sizeof(c));
    ae_server_counters(s, &c);
    ae_sb_printf(&b, "{\"site\":{\"id\":%u,\"name\":", conf != NULL ? (unsigned)conf->site.id : 0);
    ae_sb_json_str(&b, conf != NULL ? conf->site.name : "");
    ae_sb_puts(&b, "},\"version\":");
    ae_sb_json_str(&b, AE_VERSION);
    ae_sb_printf(&b, ",\"generation\":%llu,\"started\":%llu,\"draining\":%s,\"workers\":%zu,",
                 (unsigned long long)(rt != NULL ? rt->generation : 0),
                 (unsigned long long)(ae_server_started_ms(s) / 1000),
                 ae_server_draining(s) ? "true" : "false", ae_server_nworkers(s));
    status_listeners(&b, conf);
    ae_sb_puts(&b, ",");
    status_upstreams(&b, rt);
    ae_sb_puts(&b, ",");
    status_keys(&b, ae_server_keyring(s));
    ae_sb_puts(&b, ",");
    status_anycast(&b, ae_server_anycast(s));
    ae_sb_puts(&b, ",");
    status_state(&b, ae_server_state(s));
    ae_sb_printf(&b, ",\"connections\":{\"active\":%lld,\"accepted\":%llu}}\n", (long long)c.active,
                 (unsigned long long)c.v[AE_M_ACCEPTED]);
    return ae_sb_finish(&b, out, outlen);
}
