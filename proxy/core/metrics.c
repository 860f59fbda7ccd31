/*
 * Metric names and help texts, indexed by ae_metric. The admin endpoint renders each as
 * anyedge_<name>_total, except the handshake counters, which it renders as labelled families.
 */
#include "proxy/core/metrics.h"

#include "tls/tls.h"

/* The handshake failure counters follow ae_tls_fail_reason (AE_M_HS_FAIL_PROTOCOL + reason). */
_Static_assert(AE_M_HS_FAIL_NO_SHARED - AE_M_HS_FAIL_PROTOCOL == AE_TLS_FAIL_NO_SHARED &&
                   AE_M_HS_FAIL_SNI - AE_M_HS_FAIL_PROTOCOL == AE_TLS_FAIL_SNI &&
                   AE_M_HS_FAIL_PEER_CLOSED - AE_M_HS_FAIL_PROTOCOL == AE_TLS_FAIL_PEER_CLOSED &&
                   AE_M_HS_FAIL_OTHER - AE_M_HS_FAIL_PROTOCOL == AE_TLS_FAIL_OTHER &&
                   AE_M_HS_FAIL_OTHER - AE_M_HS_FAIL_PROTOCOL + 1 == AE_TLS_FAIL__COUNT,
               "one handshake failure counter per ae_tls_fail_reason, in its order");

const char *const ae_metric_names[AE_M__COUNT] = {
    [AE_M_ACCEPTED] = "connections_accepted",
    [AE_M_CLOSED] = "connections_closed",
    [AE_M_HS_FULL] = "handshakes_full",
    [AE_M_HS_RESUMED] = "handshakes_resumed",
    [AE_M_HS_TIMEOUT] = "handshake_timeouts",
    [AE_M_HS_FAIL_PROTOCOL] = "handshake_fail_protocol",
    [AE_M_HS_FAIL_NO_SHARED] = "handshake_fail_no_shared",
    [AE_M_HS_FAIL_SNI] = "handshake_fail_sni",
    [AE_M_HS_FAIL_PEER_CLOSED] = "handshake_fail_peer_closed",
    [AE_M_HS_FAIL_OTHER] = "handshake_fail_other",
    [AE_M_BYTES_IN] = "client_bytes_in",
    [AE_M_BYTES_OUT] = "client_bytes_out",
    [AE_M_UP_CONNECT_FAIL] = "upstream_connect_failures",
    [AE_M_UP_CONNECT_TIMEOUT] = "upstream_connect_timeouts",
    [AE_M_NO_UPSTREAM] = "no_upstream",
    [AE_M_IDLE_TIMEOUT] = "idle_timeouts",
    [AE_M_ACCEPT_ERRORS] = "accept_errors",
    [AE_M_CONN_LIMIT] = "connection_limit_refusals",
    [AE_M_DRAIN_FORCED] = "drain_forced_closes",
    [AE_M_AFFINITY_HIT] = "affinity_hits",
    [AE_M_AFFINITY_MISS] = "affinity_misses",
    [AE_M_QUIC_CONN_OPENED] = "quic_connections_opened",
    [AE_M_QUIC_CONN_CLOSED] = "quic_connections_closed",
    [AE_M_QUIC_HANDSHAKES] = "quic_handshakes",
    [AE_M_QUIC_IDLE_CLOSED] = "quic_idle_closes",
    [AE_M_QUIC_PKTS_IN] = "quic_datagrams_in",
    [AE_M_QUIC_PKTS_OUT] = "quic_datagrams_out",
    [AE_M_QUIC_PKTS_DROPPED] = "quic_datagrams_dropped",
    [AE_M_QUIC_GRO_PKTS] = "quic_datagrams_gro",
    [AE_M_QUIC_SHORT_INITIAL] = "quic_short_initials",
    [AE_M_QUIC_VN_SENT] = "quic_version_negotiations",
    [AE_M_QUIC_RESET_SENT] = "quic_stateless_resets",
    [AE_M_QUIC_SEND_ERRORS] = "quic_send_errors",
    [AE_M_H3_REQ_2XX] = "h3_responses_2xx",
    [AE_M_H3_REQ_3XX] = "h3_responses_3xx",
    [AE_M_H3_REQ_4XX] = "h3_responses_4xx",
    [AE_M_H3_REQ_5XX] = "h3_responses_5xx",
    [AE_M_H3_REQ_RESET] = "h3_requests_reset",
    [AE_M_H3_UPSTREAM_REUSED] = "h3_upstream_reused",
    [AE_M_QUIC_HS_FULL] = "quic_handshakes_full",
    [AE_M_QUIC_HS_RESUMED] = "quic_handshakes_resumed",
    [AE_M_QUIC_0RTT_ACCEPTED] = "quic_0rtt_accepted",
    [AE_M_QUIC_0RTT_REJECTED] = "quic_0rtt_rejected",
    [AE_M_QUIC_0RTT_REFUSED_FULL] = "quic_0rtt_refused_full",
    [AE_M_QUIC_0RTT_HELD] = "quic_0rtt_held",
    [AE_M_QUIC_0RTT_RELEASED_REDIS] = "quic_0rtt_released_redis",
    [AE_M_QUIC_0RTT_RELEASED_HANDSHAKE] = "quic_0rtt_released_handshake",
    [AE_M_QUIC_0RTT_SEEN_ELSEWHERE] = "quic_0rtt_seen_elsewhere",
    [AE_M_QUIC_0RTT_CLAIM_UNSENT] = "quic_0rtt_claims_unsent",
    [AE_M_QUIC_0RTT_CLAIM_ERRORS] = "quic_0rtt_claim_errors",
    [AE_M_QUIC_RETRY_SENT] = "quic_retry_sent",
    [AE_M_QUIC_TOKEN_RETRY_OK] = "quic_tokens_retry_accepted",
    [AE_M_QUIC_TOKEN_NEW_OK] = "quic_tokens_new_token_accepted",
    [AE_M_QUIC_TOKEN_REJECTED] = "quic_tokens_rejected",
    [AE_M_QUIC_TOKEN_REUSED] = "quic_tokens_reused",
    [AE_M_QUIC_NEW_TOKEN_SENT] = "quic_new_tokens_sent",
    [AE_M_QUIC_BYTES_IN] = "quic_bytes_in",
    [AE_M_QUIC_BYTES_OUT] = "quic_bytes_out",
    [AE_M_H3_EARLY_FORWARDED] = "h3_early_data_requests",
    [AE_M_H3_TOO_EARLY] = "h3_too_early",
    [AE_M_H3_EARLY_HELD] = "h3_early_data_held",
    [AE_M_FWD_OUT] = "forward_out",
    [AE_M_FWD_IN] = "forward_in",
    [AE_M_FWD_HANDOFF] = "forward_handoffs",
    [AE_M_FWD_HANDOFF_FULL] = "forward_handoffs_dropped",
    [AE_M_FWD_RESET_DEAD] = "forward_resets_owner_dead",
    [AE_M_FWD_UNDECODABLE] = "forward_undecodable",
    [AE_M_FWD_SEND_ERRORS] = "forward_send_errors",
    [AE_M_FWD_REPLY_OUT] = "forward_reply_out",
    [AE_M_FWD_REPLY_IN] = "forward_reply_in",
    [AE_M_H3_ILLEGAL_MOVES] = "h3_illegal_state_moves",
    [AE_M_SRC_EVICTIONS] = "limit_table_evictions",
    /* AE_M_SRC_*: rendered as limit_refusals_total{reason=...} */
    /* AE_M_TUN_DROP_*: rendered as tunnel_drops_total{reason=...} */
    /* AE_M_H3_UPLAT_*: no name, rendered as the histogram h3_upstream_latency_seconds */
    /* AE_M_FWD_LAT_*: no name, rendered as the histogram forward_latency_seconds */
    /* AE_M_H3_REQ_STATE_*, AE_M_H3_UP_STATE_*: rendered as h3_stream_state_total{machine,state} */
};

const double ae_h3_uplat_bounds[AE_H3_UPLAT_NBUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

/* 0.1 ms .. 1 s. The frame timestamp has 1 ms resolution: a single observation is the true
 * delay rounded to a neighbouring whole ms (so sub-ms delays land in 0.0001 or 0.001), but the
 * sum / count is an unbiased mean when the send time's phase within the ms is uniform. */
const double ae_fwd_lat_bounds[AE_FWD_LAT_NBUCKETS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};

const char *const ae_metric_help[AE_M__COUNT] = {
    [AE_M_ACCEPTED] = "Client TCP connections accepted.",
    [AE_M_CLOSED] = "Client connections closed, for any reason.",
    [AE_M_HS_FULL] = "Completed full TLS handshakes.",
    [AE_M_HS_RESUMED] = "Completed resumed TLS handshakes.",
    [AE_M_HS_TIMEOUT] = "TLS handshakes that did not finish within timeouts.handshake.",
    [AE_M_HS_FAIL_PROTOCOL] = "TLS handshakes failed: protocol error.",
    [AE_M_HS_FAIL_NO_SHARED] = "TLS handshakes failed: no shared version, cipher or ALPN.",
    [AE_M_HS_FAIL_SNI] = "TLS handshakes failed: malformed or oversized SNI.",
    [AE_M_HS_FAIL_PEER_CLOSED] = "TLS handshakes failed: peer closed during the handshake.",
    [AE_M_HS_FAIL_OTHER] = "TLS handshakes failed: other reasons.",
    [AE_M_BYTES_IN] = "Bytes received from clients, after decryption.",
    [AE_M_BYTES_OUT] = "Bytes sent to clients, before encryption.",
    [AE_M_UP_CONNECT_FAIL] = "Failed upstream connect attempts.",
    [AE_M_UP_CONNECT_TIMEOUT] = "Upstream connect attempts that timed out.",
    [AE_M_NO_UPSTREAM] = "Client connections refused: no healthy upstream server answered.",
    [AE_M_IDLE_TIMEOUT] = "Connections closed by an idle timeout.",
    [AE_M_ACCEPT_ERRORS] = "accept(2) failures (EMFILE, ENOBUFS, ...).",
    [AE_M_CONN_LIMIT] = "Client connections refused by tune.max_connections.",
    [AE_M_DRAIN_FORCED] = "Connections cut at the end of the drain timeout.",
    [AE_M_AFFINITY_HIT] =
        "Affinity pools: resumed sessions sent to the server recorded in their ticket.",
    [AE_M_AFFINITY_MISS] = "Affinity pools: resumed sessions whose ticket named no usable "
                           "server (none, unknown, down or unreadable): chosen anew.",
    [AE_M_QUIC_CONN_OPENED] = "QUIC connections created from an accepted Initial.",
    [AE_M_QUIC_CONN_CLOSED] = "QUIC connections ended, for any reason.",
    [AE_M_QUIC_HANDSHAKES] = "QUIC handshakes completed.",
    [AE_M_QUIC_IDLE_CLOSED] = "QUIC connections ended by the idle timeout.",
    [AE_M_QUIC_PKTS_IN] = "UDP datagrams received on QUIC listeners.",
    [AE_M_QUIC_PKTS_OUT] = "UDP datagrams sent by QUIC listeners.",
    [AE_M_QUIC_PKTS_DROPPED] = "UDP datagrams dropped without processing (garbage, unknown "
                               "connection, short Initial, truncated, draining).",
    [AE_M_QUIC_GRO_PKTS] = "Of the datagrams received, those that arrived coalesced with others "
                           "of the same flow (UDP GRO): one read for several datagrams.",
    [AE_M_QUIC_SHORT_INITIAL] = "Datagrams dropped: Initial packet in a datagram below 1200 bytes.",
    [AE_M_QUIC_VN_SENT] = "QUIC version negotiation packets sent.",
    [AE_M_QUIC_RESET_SENT] = "QUIC stateless resets sent.",
    [AE_M_QUIC_SEND_ERRORS] = "UDP send failures other than a full socket buffer.",
    [AE_M_H3_REQ_2XX] = "HTTP/3 responses with a 2xx status.",
    [AE_M_H3_REQ_3XX] = "HTTP/3 responses with a 3xx status.",
    [AE_M_H3_REQ_4XX] = "HTTP/3 responses with a 4xx status.",
    [AE_M_H3_REQ_5XX] = "HTTP/3 responses with a 5xx status (502/503/504 made by the proxy).",
    [AE_M_H3_REQ_RESET] = "HTTP/3 request streams reset (malformed request, upstream failure "
                          "after the response started).",
    [AE_M_H3_UPSTREAM_REUSED] = "HTTP/3 requests sent on a pooled keep-alive upstream "
                                "connection instead of a new one.",
    [AE_M_QUIC_HS_FULL] = "QUIC handshakes completed without session resumption.",
    [AE_M_QUIC_HS_RESUMED] = "QUIC handshakes completed by resuming a session ticket (any site).",
    [AE_M_QUIC_0RTT_ACCEPTED] = "QUIC handshakes whose 0-RTT early data was accepted.",
    [AE_M_QUIC_0RTT_HELD] = "QUIC connections whose 0-RTT requests were held until the handshake "
                            "completed or the sites' shared record said first use "
                            "(quic.early_data_shared: hold).",
    [AE_M_QUIC_0RTT_RELEASED_REDIS] = "Held 0-RTT connections released by the shared record in "
                                      "Redis (first use of the ClientHello at any site).",
    [AE_M_QUIC_0RTT_RELEASED_HANDSHAKE] = "Held 0-RTT connections released by the handshake "
                                          "completing before the shared record answered.",
    [AE_M_QUIC_0RTT_SEEN_ELSEWHERE] = "0-RTT ClientHellos the shared record had seen before (a "
                                      "replay to another site, or a client whose first flight "
                                      "reached two sites): held until a handshake that a "
                                      "replay never completes.",
    [AE_M_QUIC_0RTT_CLAIM_UNSENT] = "Held 0-RTT connections whose shared record could not be "
                                    "asked (Redis not connected, too many in flight): released "
                                    "by the handshake.",
    [AE_M_QUIC_0RTT_CLAIM_ERRORS] = "Shared-record requests that got no usable answer (timeout, "
                                    "error reply).",
    [AE_M_QUIC_0RTT_REJECTED] = "QUIC handshakes whose client offered 0-RTT and was refused "
                                "(quic.early_data off, replay, ticket older than the process or "
                                "than a reload raising quic.early_data_max_age, table full).",
    [AE_M_QUIC_0RTT_REFUSED_FULL] = "Of quic_0rtt_rejected: refused because the table of accepted "
                                    "0-RTT ClientHellos was full (quic.early_data_records): a "
                                    "1-RTT handshake instead, never a replay.",
    [AE_M_QUIC_RETRY_SENT] = "QUIC Retry packets sent (address validation).",
    [AE_M_QUIC_TOKEN_RETRY_OK] = "Client Initials carrying a valid Retry token.",
    [AE_M_QUIC_TOKEN_NEW_OK] = "Client Initials carrying a valid, unused NEW_TOKEN token.",
    [AE_M_QUIC_TOKEN_REJECTED] = "Client Initials carrying a token that failed validation "
                                 "(unreadable, wrong address, expired, reused).",
    [AE_M_QUIC_TOKEN_REUSED] = "NEW_TOKEN tokens presented again at this site (refused).",
    [AE_M_QUIC_NEW_TOKEN_SENT] = "NEW_TOKEN tokens sent to clients after the handshake.",
    [AE_M_QUIC_BYTES_IN] = "UDP payload bytes received on QUIC listeners.",
    [AE_M_QUIC_BYTES_OUT] = "UDP payload bytes sent by QUIC listeners.",
    [AE_M_H3_EARLY_FORWARDED] = "HTTP/3 requests received in 0-RTT and forwarded with "
                                "Early-Data: 1.",
    [AE_M_H3_EARLY_HELD] = "HTTP/3 requests received in 0-RTT that waited for the handshake or the "
                           "sites' shared record before going upstream (quic.early_data_shared: "
                           "hold).",
    [AE_M_H3_TOO_EARLY] = "HTTP/3 requests received in 0-RTT with an unsafe method, answered "
                          "425 Too Early.",
    [AE_M_FWD_OUT] = "QUIC datagrams forwarded to their owner site in tunnel frames (all sites; "
                     "per site: forwarded_datagrams_total).",
    [AE_M_FWD_IN] = "QUIC datagrams received from other sites in valid tunnel frames.",
    [AE_M_FWD_HANDOFF] = "QUIC datagrams handed to the worker of this site that owns the "
                         "connection.",
    [AE_M_FWD_HANDOFF_FULL] = "Hand-offs dropped because the owning worker's inbox was full.",
    [AE_M_FWD_RESET_DEAD] = "Stateless resets sent because the connection's owner site is dead, "
                            "unknown or draining.",
    [AE_M_FWD_UNDECODABLE] = "Short-header datagrams for an unknown connection whose CID does "
                             "not decode under the ring (dropped).",
    [AE_M_FWD_SEND_ERRORS] = "Tunnel frames that could not be sent (socket error or full).",
    [AE_M_FWD_REPLY_OUT] = "Reply frames sent back to the site that received the client's "
                           "packets (site.return: tunnel; per site: forwarded_datagrams_total).",
    [AE_M_FWD_REPLY_IN] = "Reply frames from the owner of a connection, sent on to its client "
                          "from the anycast address.",
    [AE_M_H3_ILLEGAL_MOVES] = "HTTP/3 request stream or upstream client state moves that their "
                              "transition table refuses (bugs; each is logged as an error).",
    [AE_M_SRC_EVICTIONS] = "Sources forgotten to make room in the per-source limits table "
                           "(limits.table_size).",
};
