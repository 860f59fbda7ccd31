/*
 * Metric names and help texts, indexed by ae_metric. The admin endpoint renders each as
 * anyedge_<name>_total, except the handshake counters, which it renders as labelled families.
 */
#include "proxy/proxy.h"

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
};

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
};
