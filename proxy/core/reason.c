/* Names of the close reasons (reason.h): one table per enum, checked against its size. */
#include "proxy/core/reason.h"

#include "conf/base.h"

static const char *const tcp_close_names[] = {
    [AE_TCLOSE_NONE] = "",
    [AE_TCLOSE_DONE] = "done",
    [AE_TCLOSE_HANDSHAKE_TIMEOUT] = "handshake_timeout",
    [AE_TCLOSE_IDLE_TIMEOUT] = "idle_timeout",
    [AE_TCLOSE_SHUTDOWN] = "shutdown",
    [AE_TCLOSE_NO_UPSTREAM] = "no_upstream",
    [AE_TCLOSE_UPSTREAM_SOCKET] = "upstream_socket",
    [AE_TCLOSE_UPSTREAM_READ_ERROR] = "upstream_read_error",
    [AE_TCLOSE_UPSTREAM_WRITE_ERROR] = "upstream_write_error",
    [AE_TCLOSE_CLIENT_ERROR] = "client_error",
    [AE_TCLOSE_CLIENT_WRITE_ERROR] = "client_write_error",
    [AE_TCLOSE_PROXY_HEADER] = "proxy_header",
    [AE_TCLOSE_NOMEM] = "nomem",
    [AE_TCLOSE_TLS_ALLOC] = "tls_alloc",
};
_Static_assert(AE_ARRAY_LEN(tcp_close_names) == AE_TCLOSE_HS_FAIL_B0,
               "one name per TCP close reason (handshake failures are named by tls/)");

const char *ae_tcp_close_name(ae_tcp_close r)
{
    if ((unsigned)r < AE_TCLOSE_HS_FAIL_B0)
        return tcp_close_names[r];
    if ((unsigned)r < AE_TCLOSE__COUNT)
        return ae_tls_fail_reason_names[r - AE_TCLOSE_HS_FAIL_B0];
    return "?";
}

const char *const ae_quic_close_names[] = {
    [AE_QCLOSE_CLOSED] = "closed",
    [AE_QCLOSE_PEER_CLOSED] = "peer_closed",
    [AE_QCLOSE_IDLE_TIMEOUT] = "idle_timeout",
    [AE_QCLOSE_DROPPED] = "dropped",
    [AE_QCLOSE_RETRY] = "retry",
    [AE_QCLOSE_QUIC_ALLOC] = "quic_alloc",
    [AE_QCLOSE_TLS_ALLOC] = "tls_alloc",
    [AE_QCLOSE_NOMEM] = "nomem",
    [AE_QCLOSE_SHUTDOWN] = "shutdown",
};
_Static_assert(AE_ARRAY_LEN(ae_quic_close_names) == AE_QCLOSE__COUNT,
               "one name per QUIC close reason");

const char *const ae_quic_close_cause_names[] = {
    [AE_QCAUSE_IDLE_TIMEOUT] = "idle_timeout",
    [AE_QCAUSE_PEER_CLOSED] = "peer_closed",
    [AE_QCAUSE_LOCAL_CLOSE] = "local_close",
    [AE_QCAUSE_SHUTDOWN] = "shutdown",
    [AE_QCAUSE_ERROR] = "error",
    [AE_QCAUSE_NO_HANDSHAKE] = "no_handshake",
};
_Static_assert(AE_ARRAY_LEN(ae_quic_close_cause_names) == AE_QCAUSE__COUNT,
               "one label per QUIC close cause");

static const char *const h3_close_names[] = {
    [AE_H3CLOSE_NONE] = "done",
    [AE_H3CLOSE_DONE] = "done",
    [AE_H3CLOSE_CLIENT_RESET] = "client_reset",
    [AE_H3CLOSE_RESET] = "reset",
    [AE_H3CLOSE_MALFORMED] = "malformed",
    [AE_H3CLOSE_HEADER_TOO_BIG] = "header_too_big",
    [AE_H3CLOSE_CONNECT_NOT_SUPPORTED] = "connect_not_supported",
    [AE_H3CLOSE_TOO_EARLY] = "too_early",
    [AE_H3CLOSE_SUBMIT_FAILED] = "submit_failed",
    [AE_H3CLOSE_NOMEM] = "nomem",
    [AE_H3CLOSE_NO_UPSTREAM] = "no_upstream",
    [AE_H3CLOSE_UPSTREAM_CONNECT] = "upstream_connect",
    [AE_H3CLOSE_UPSTREAM_CONNECT_TIMEOUT] = "upstream_connect_timeout",
    [AE_H3CLOSE_UPSTREAM_SOCKET] = "upstream_socket",
    [AE_H3CLOSE_UPSTREAM_TIMEOUT] = "upstream_timeout",
    [AE_H3CLOSE_UPSTREAM_CLOSED] = "upstream_closed",
    [AE_H3CLOSE_UPSTREAM_READ_ERROR] = "upstream_read_error",
    [AE_H3CLOSE_UPSTREAM_HEAD_TOO_BIG] = "upstream_head_too_big",
    [AE_H3CLOSE_UPSTREAM_BAD_RESPONSE] = "upstream_bad_response",
    [AE_H3CLOSE_UPSTREAM_BAD_BODY] = "upstream_bad_body",
    [AE_H3CLOSE_UPSTREAM_TRUNCATED] = "upstream_truncated",
    [AE_H3CLOSE_RATE_LIMITED] = "rate_limited",
};
_Static_assert(AE_ARRAY_LEN(h3_close_names) == AE_H3CLOSE_CONN_B0,
               "one name per HTTP/3 stream close reason (connection reasons are named by quic)");

const char *ae_h3_close_name(ae_h3_close r)
{
    if ((unsigned)r < AE_H3CLOSE_CONN_B0)
        return h3_close_names[r];
    if ((unsigned)r < AE_H3CLOSE__COUNT)
        return ae_quic_close_names[r - AE_H3CLOSE_CONN_B0];
    return "?";
}
