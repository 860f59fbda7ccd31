/*
 * Metrics: per-worker counters indexed by ae_metric, summed by the admin endpoint and rendered
 * in the Prometheus text format (admin.c). Names and help texts are in metrics.c.
 *
 * Each worker owns one ae_counters and is its only writer; the main thread reads them.
 */
#ifndef AE_METRICS_H
#define AE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "proxy/core/reason.h"
#include "proxy/core/srclimit.h"

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
    AE_M_QUIC_GRO_PKTS,      /* datagrams received coalesced by UDP GRO (two or more per read) */
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
    AE_M_QUIC_HS_RESUMED,        /* QUIC handshakes completed with a session ticket */
    AE_M_QUIC_0RTT_ACCEPTED,     /* QUIC handshakes whose early data was accepted */
    AE_M_QUIC_0RTT_REJECTED,     /* early data offered by the client, refused by us */
    AE_M_QUIC_0RTT_REFUSED_FULL, /* ...of which: the table of accepted ClientHellos was full */
    /* quic.early_data_shared: hold (state/claim.h) */
    AE_M_QUIC_0RTT_HELD,               /* 0-RTT connections whose early requests were held */
    AE_M_QUIC_0RTT_RELEASED_REDIS,     /* ...released by the shared record: first use */
    AE_M_QUIC_0RTT_RELEASED_HANDSHAKE, /* ...released by the handshake completing first */
    AE_M_QUIC_0RTT_SEEN_ELSEWHERE,     /* shared record: this ClientHello was used before */
    AE_M_QUIC_0RTT_CLAIM_UNSENT,       /* record not asked: Redis down or too many in flight */
    AE_M_QUIC_0RTT_CLAIM_ERRORS,       /* record asked, no usable answer (timeout, error) */
    AE_M_QUIC_RETRY_SENT,              /* Retry packets sent */
    AE_M_QUIC_TOKEN_RETRY_OK,          /* Initials with a valid Retry token */
    AE_M_QUIC_TOKEN_NEW_OK,            /* Initials with a valid, unused NEW_TOKEN token */
    AE_M_QUIC_TOKEN_REJECTED, /* Initials with a token that failed (bad, expired, reused) */
    AE_M_QUIC_TOKEN_REUSED,   /* of which: NEW_TOKEN token already used at this site */
    AE_M_QUIC_NEW_TOKEN_SENT, /* NEW_TOKEN frames submitted after a handshake */
    AE_M_QUIC_BYTES_IN,       /* UDP payload bytes received on QUIC listeners */
    AE_M_QUIC_BYTES_OUT,      /* UDP payload bytes sent */
    AE_M_H3_EARLY_FORWARDED,  /* HTTP/3 requests received in 0-RTT, forwarded (Early-Data: 1) */
    AE_M_H3_TOO_EARLY,        /* HTTP/3 requests received in 0-RTT answered 425 by us */
    AE_M_H3_EARLY_HELD,       /* HTTP/3 0-RTT requests held before going upstream (hold) */
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
    AE_M_QUIC_CLOSE_B0, /* QUIC connections ended, by cause: + ae_quic_close_cause (reason.h) */
    AE_M_QUIC_CLOSE_LAST = AE_M_QUIC_CLOSE_B0 + AE_QCAUSE__COUNT - 1,
    AE_M_H3_REQ_STATE_B0, /* HTTP/3 request streams entering each state: + ae_h3_req_state */
    AE_M_H3_REQ_STATE_LAST = AE_M_H3_REQ_STATE_B0 + 5, /* (proxy/h3/states.h) */
    AE_M_H3_UP_STATE_B0, /* HTTP/3 upstream clients entering each state: + ae_h3_up_state */
    AE_M_H3_UP_STATE_LAST = AE_M_H3_UP_STATE_B0 + 5,
    AE_M_H3_ILLEGAL_MOVES, /* state moves of either machine its table refuses (bugs) */
    AE_M_SRC_B0, /* per-source limits: refusals by verdict, + ae_src_verdict (srclimit.h; */
    AE_M_SRC_LAST = AE_M_SRC_B0 + AE_SRC__COUNT - 1, /* the AE_SRC_OK slot stays 0) */
    AE_M_SRC_EVICTIONS, /* sources forgotten to make room in the per-source table */
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

/* A plain copy of counters: one worker's, or every worker's summed (ae_server_counters). */
typedef struct {
    uint64_t v[AE_M__COUNT];
    int64_t active;
} ae_counters_snapshot;

#endif
