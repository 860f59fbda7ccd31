/* TCP hand-off: metrics and /whereis?tcp= for the main thread (handoff_int.h). */
#include "proxy/handoff/handoff.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/handoff/handoff_int.h"

static const char *const ret_names[HO_NRET] = {
    [RET_NOT_MINE] = "not_mine",     [RET_TIMEOUT] = "timeout", [RET_NOT_READY] = "not_ready",
    [RET_OWNER_GONE] = "owner_gone", [RET_LOCAL] = "local",     [RET_RST] = "rst",
    [RET_BUDGET] = "budget",
};
static const char *const flow_state_names[] = {"free", "query", "owned", "local"};

static const char *const drop_names[] = {
    [AE_HO_DROP_REPLAY] = "replay",    [AE_HO_DROP_NOT_HELD] = "not_held",
    [AE_HO_DROP_SYN] = "syn",          [AE_HO_DROP_PACKET] = "packet",
    [AE_HO_DROP_CSUM] = "csum",        [AE_HO_DROP_HOLD] = "hold_full",
    [AE_HO_DROP_FLOWS] = "flows_full", [AE_HO_DROP_TUN_WRITE] = "tun_write",
    [AE_HO_DROP_SEND] = "send",        [AE_HO_DROP_NO_KEYS] = "no_keys",
    [AE_HO_DROP_ANSWER] = "answer",
};
_Static_assert(AE_ARRAY_LEN(drop_names) == AE_HO_DROP_TUNNEL, "one name per drop reason");

const char *ae_handoff_drop_name(size_t i)
{
    if (i < AE_HO_DROP_TUNNEL)
        return drop_names[i];
    if (i < HO_NDROPS)
        return ae_hoff_reason_name(-(int)(i - AE_HO_DROP_TUNNEL) - 1);
    return NULL;
}

/* ---- metrics and whereis (main thread) ---- */

static uint64_t rd(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

char *ae_handoff_metrics(ae_handoff *h, const ae_conntab *tab, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (f == NULL)
        return NULL;
    fprintf(f,
            "# HELP anyedge_tcp_handoff_enabled 1 when TCP hand-off (tcp_handoff) runs: orphan "
            "capture attached, hand-off endpoint open.\n"
            "# TYPE anyedge_tcp_handoff_enabled gauge\nanyedge_tcp_handoff_enabled %d\n",
            h != NULL);
    if (h != NULL) {
        ae_capture_counts cc;
        ae_capture_counts_get(h->cap, &cc);
        fprintf(f,
                "# HELP anyedge_tcp_handoff_capture_packets_total Packets the capture program "
                "examined for TCP listener addresses (seen), redirected as orphans, and let "
                "through as valid SYN cookies.\n"
                "# TYPE anyedge_tcp_handoff_capture_packets_total counter\n"
                "anyedge_tcp_handoff_capture_packets_total{result=\"seen\"} %llu\n"
                "anyedge_tcp_handoff_capture_packets_total{result=\"orphan\"} %llu\n"
                "anyedge_tcp_handoff_capture_packets_total{result=\"syncookie\"} %llu\n",
                (unsigned long long)cc.seen, (unsigned long long)cc.orphans,
                (unsigned long long)cc.syncookies);
        fprintf(f,
                "# HELP anyedge_tcp_handoff_orphans_total Orphaned TCP segments read from the "
                "capture device.\n# TYPE anyedge_tcp_handoff_orphans_total counter\n"
                "anyedge_tcp_handoff_orphans_total %llu\n",
                (unsigned long long)rd(&h->orphans));
        fprintf(f,
                "# HELP anyedge_tcp_handoff_cache_hits_total Orphans sent straight to a known "
                "owner (flow cache).\n# TYPE anyedge_tcp_handoff_cache_hits_total counter\n"
                "anyedge_tcp_handoff_cache_hits_total %llu\n",
                (unsigned long long)rd(&h->cache_hits));
        fprintf(f,
                "# HELP anyedge_tcp_handoff_flows_moved_total Flows another site claimed "
                "(answer \"mine\").\n# TYPE anyedge_tcp_handoff_flows_moved_total counter\n"
                "anyedge_tcp_handoff_flows_moved_total %llu\n",
                (unsigned long long)rd(&h->flows_moved));
        fprintf(f,
                "# HELP anyedge_tcp_handoff_kernel_held_total Queried or forwarded tuples found "
                "by the kernel lookup (handshake in progress, not accepted yet), not the "
                "connection table.\n# TYPE anyedge_tcp_handoff_kernel_held_total counter\n"
                "anyedge_tcp_handoff_kernel_held_total %llu\n",
                (unsigned long long)rd(&h->kernel_held));
        fprintf(f, "# HELP anyedge_tcp_handoff_returned_total Captured segments given back to "
                   "this site's kernel (it answers with a RST), by reason.\n"
                   "# TYPE anyedge_tcp_handoff_returned_total counter\n");
        for (size_t i = 0; i < HO_NRET; i++)
            fprintf(f, "anyedge_tcp_handoff_returned_total{reason=\"%s\"} %llu\n", ret_names[i],
                    (unsigned long long)rd(&h->returned[i]));
        fprintf(f,
                "# HELP anyedge_tcp_handoff_injected_total Segments from other sites injected "
                "into this site's connections.\n"
                "# TYPE anyedge_tcp_handoff_injected_total counter\n"
                "anyedge_tcp_handoff_injected_total %llu\n",
                (unsigned long long)rd(&h->injected));
        fprintf(f,
                "# HELP anyedge_tcp_handoff_queries_received_total Owner queries received from "
                "other sites.\n# TYPE anyedge_tcp_handoff_queries_received_total counter\n"
                "anyedge_tcp_handoff_queries_received_total %llu\n",
                (unsigned long long)rd(&h->queries_in));
        fprintf(f, "# HELP anyedge_tcp_handoff_flows Flows in the hand-off cache (being looked "
                   "up, owned by another site, or given back).\n"
                   "# TYPE anyedge_tcp_handoff_flows gauge\n");
        fprintf(f, "anyedge_tcp_handoff_flows %u\n",
                atomic_load_explicit(&h->nflows_used, memory_order_relaxed));
        fprintf(f, "# HELP anyedge_tcp_handoff_drops_total Hand-off segments and frames dropped, "
                   "by reason.\n# TYPE anyedge_tcp_handoff_drops_total counter\n");
        for (size_t i = 0; i < HO_NDROPS; i++)
            fprintf(f, "anyedge_tcp_handoff_drops_total{reason=\"%s\"} %llu\n",
                    ae_handoff_drop_name(i), (unsigned long long)rd(&h->drops[i]));
        fprintf(f, "# HELP anyedge_tcp_handoff_segments_total TCP segments sent to (out) or "
                   "received from (in) another site, by peer site id.\n"
                   "# TYPE anyedge_tcp_handoff_segments_total counter\n");
        for (size_t s = 1; s < HO_NSITES; s++) {
            uint64_t o = rd(&h->seg_out[s]), in = rd(&h->seg_in[s]);
            if (o)
                fprintf(f,
                        "anyedge_tcp_handoff_segments_total{direction=\"out\",site=\"%zu\"} %llu\n",
                        s, (unsigned long long)o);
            if (in)
                fprintf(f,
                        "anyedge_tcp_handoff_segments_total{direction=\"in\",site=\"%zu\"} %llu\n",
                        s, (unsigned long long)in);
        }
        fprintf(f, "# HELP anyedge_tcp_handoff_queries_total Owner queries sent, by peer site.\n"
                   "# TYPE anyedge_tcp_handoff_queries_total counter\n");
        for (size_t s = 1; s < HO_NSITES; s++)
            if (rd(&h->q_out[s]))
                fprintf(f, "anyedge_tcp_handoff_queries_total{site=\"%zu\"} %llu\n", s,
                        (unsigned long long)rd(&h->q_out[s]));
        fprintf(f, "# HELP anyedge_tcp_handoff_answers_total Answers to our queries, by peer "
                   "site and verdict.\n# TYPE anyedge_tcp_handoff_answers_total counter\n");
        for (size_t s = 1; s < HO_NSITES; s++) {
            if (rd(&h->a_mine[s]))
                fprintf(f,
                        "anyedge_tcp_handoff_answers_total{site=\"%zu\",verdict=\"mine\"} %llu\n",
                        s, (unsigned long long)rd(&h->a_mine[s]));
            if (rd(&h->a_not[s]))
                fprintf(
                    f,
                    "anyedge_tcp_handoff_answers_total{site=\"%zu\",verdict=\"not_mine\"} %llu\n",
                    s, (unsigned long long)rd(&h->a_not[s]));
        }
    }
    (void)tab;
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* "A:P,B:P" -> key. */
static int parse_tuple(const char *q, size_t n, ae_flowkey *k)
{
    char tmp[160];
    ae_addr c, l;
    if (n >= sizeof(tmp))
        return -1;
    memcpy(tmp, q, n);
    tmp[n] = 0;
    char *comma = strchr(tmp, ',');
    if (comma == NULL)
        return -1;
    *comma = 0;
    if (ae_addr_parse(tmp, &c, 0) != 0 || ae_addr_parse(comma + 1, &l, 0) != 0)
        return -1;
    return ae_flowkey_from_sa(k, (struct sockaddr *)&c.sa, (struct sockaddr *)&l.sa) == 0 ? 0 : -1;
}

int ae_handoff_whereis(ae_handoff *h, ae_conntab *tab, const char *v, size_t vn, char **out,
                       size_t *outlen, int *code)
{
    ae_flowkey k;
    char *buf = NULL;
    FILE *f = open_memstream(&buf, outlen);
    if (f == NULL)
        return AE_ERR_NOMEM;
    if (v == NULL || parse_tuple(v, vn, &k) != 0) {
        *code = 400;
        fprintf(f, "{\"error\":\"expected tcp=CLIENT_ADDR:PORT,LOCAL_ADDR:PORT\"}\n");
    } else {
        char t[128];
        ae_conntab_info info = {0};
        int self = tab != NULL && ae_conntab_lookup(tab, &k, ae_now_ms(), &info);
        *code = 200;
        fprintf(f, "{\"tuple\":\"%s\",\"handoff\":%s,\"self\":%s",
                ae_flowkey_format(&k, t, sizeof(t)), h != NULL ? "true" : "false",
                self ? "true" : "false");
        if (self)
            fprintf(f, ",\"worker\":%d,\"conn\":%llu,\"closed\":%s", info.worker,
                    (unsigned long long)info.conn_id, info.closed ? "true" : "false");
        if (h != NULL) {
            pthread_mutex_lock(&h->flock);
            hflow *fl = ae_ho_flow_find(h, &k, ae_flowkey_hash(&k));
            if (fl != NULL)
                fprintf(f, ",\"cached\":{\"state\":\"%s\",\"owner\":%u}",
                        flow_state_names[fl->state], fl->owner);
            pthread_mutex_unlock(&h->flock);
        }
        fprintf(f, "}\n");
    }
    if (fclose(f) != 0) {
        free(buf);
        return AE_ERR_NOMEM;
    }
    *out = buf;
    return 0;
}
