/*
 * Why connections end: one enum per kind, each with one names table checked by _Static_assert
 * (reason.c). Code decides on the enum; the names are what logs and metric labels show, and
 * they are part of the public contract (access logs, anyedge_*{reason="..."}): extend them,
 * do not rename them.
 */
#ifndef AE_REASON_H
#define AE_REASON_H

#include "tls/tls.h"

/* ---- TCP relay (tcp_relay.c): reason= of the access log line ---- */

typedef enum {
    AE_TCLOSE_NONE = 0,             /* "": still open */
    AE_TCLOSE_DONE,                 /* both directions finished and flushed */
    AE_TCLOSE_HANDSHAKE_TIMEOUT,    /* no complete TLS handshake within timeouts.handshake */
    AE_TCLOSE_IDLE_TIMEOUT,         /* no byte either way within the idle timeouts */
    AE_TCLOSE_SHUTDOWN,             /* cut by the worker: end of the drain, exit */
    AE_TCLOSE_NO_UPSTREAM,          /* every usable server of the pool was tried and failed */
    AE_TCLOSE_UPSTREAM_SOCKET,      /* socket(2) for the upstream failed */
    AE_TCLOSE_UPSTREAM_READ_ERROR,  /* recv from the upstream failed */
    AE_TCLOSE_UPSTREAM_WRITE_ERROR, /* send to the upstream failed */
    AE_TCLOSE_CLIENT_ERROR,         /* TLS read from the client failed */
    AE_TCLOSE_CLIENT_WRITE_ERROR,   /* TLS write to the client failed */
    AE_TCLOSE_PROXY_HEADER,         /* the PROXY header could not be encoded */
    AE_TCLOSE_NOMEM,                /* no relay buffer */
    AE_TCLOSE_TLS_ALLOC,            /* no TLS object for the connection */
    AE_TCLOSE_HS_FAIL_B0,           /* TLS handshake failed: + ae_tls_fail_reason, named by */
    AE_TCLOSE__COUNT = AE_TCLOSE_HS_FAIL_B0 + AE_TLS_FAIL__COUNT /* ae_tls_fail_reason_names */
} ae_tcp_close;

/* The handshake failure r of tls/ as a close reason. */
static inline ae_tcp_close ae_tcp_close_hs_fail(ae_tls_fail_reason r)
{
    return (ae_tcp_close)(AE_TCLOSE_HS_FAIL_B0 + r);
}
/* Name of r: "done", "idle_timeout", ..., for handshake failures the tls/ name ("protocol",
 * "sni", ...); "?" out of range. */
const char *ae_tcp_close_name(ae_tcp_close r);

/* ---- QUIC connections (quic.c): why a connection was freed ----
 * Shown in the debug log and, for the streams still open, in their access log lines. */

typedef enum {
    AE_QCLOSE_CLOSED = 0,   /* our closing period ended, or our CONNECTION_CLOSE failed */
    AE_QCLOSE_PEER_CLOSED,  /* the draining period after the peer's CONNECTION_CLOSE ended */
    AE_QCLOSE_IDLE_TIMEOUT, /* the idle timeout expired */
    AE_QCLOSE_DROPPED,      /* ngtcp2: drop the connection silently (NGTCP2_ERR_DROP_CONN) */
    AE_QCLOSE_RETRY,        /* ngtcp2 asked for a Retry after the connection was created */
    AE_QCLOSE_QUIC_ALLOC,   /* ngtcp2_conn_server_new failed */
    AE_QCLOSE_TLS_ALLOC,    /* the TLS session could not be created */
    AE_QCLOSE_NOMEM,        /* out of memory for the connection's CIDs */
    AE_QCLOSE_SHUTDOWN,     /* the listener closed or the worker stopped */
    AE_QCLOSE__COUNT
} ae_quic_close;
extern const char *const ae_quic_close_names[AE_QCLOSE__COUNT];

/* The cause a QUIC connection is counted under in
 * anyedge_quic_connections_closed_by_reason_total{reason=...} (AE_M_QUIC_CLOSE_B0 + cause):
 * the reason when it is a timeout or a shutdown, else the period the connection was in. */
typedef enum {
    AE_QCAUSE_IDLE_TIMEOUT = 0, /* "idle_timeout" */
    AE_QCAUSE_PEER_CLOSED,      /* "peer_closed": it was draining (the peer closed) */
    AE_QCAUSE_LOCAL_CLOSE,      /* "local_close": it was closing (we closed: error, GOAWAY end) */
    AE_QCAUSE_SHUTDOWN,         /* "shutdown" */
    AE_QCAUSE_ERROR,            /* "error": anything else (freed while open) */
    AE_QCAUSE_NO_HANDSHAKE,     /* "no_handshake": ended before its handshake completed */
    AE_QCAUSE__COUNT
} ae_quic_close_cause;
extern const char *const ae_quic_close_cause_names[AE_QCAUSE__COUNT];

/* ---- HTTP/3 request streams (proxy/h3/): reason= of the access log line ----
 * Set once when the stream's end is decided (a later reset may still overwrite an error
 * answer's reason); a stream still open when its connection goes away takes the connection's
 * reason, AE_H3CLOSE_CONN_B0 + ae_quic_close, named by ae_quic_close_names. */

typedef enum {
    AE_H3CLOSE_NONE = 0,              /* not decided yet (logged as "done") */
    AE_H3CLOSE_DONE,                  /* the response was sent in full */
    AE_H3CLOSE_CLIENT_RESET,          /* the stream closed before the whole response was queued */
    AE_H3CLOSE_RESET,                 /* the client reset the stream */
    AE_H3CLOSE_MALFORMED,             /* malformed request: reset with H3_MESSAGE_ERROR */
    AE_H3CLOSE_HEADER_TOO_BIG,        /* 431: header section over AE_H3_HEAD_MAX */
    AE_H3CLOSE_CONNECT_NOT_SUPPORTED, /* 501: CONNECT */
    AE_H3CLOSE_TOO_EARLY,             /* 425: unsafe method in 0-RTT */
    AE_H3CLOSE_SUBMIT_FAILED,         /* nghttp3 refused the response HEADERS */
    AE_H3CLOSE_NOMEM,                 /* no buffer for the response */
    AE_H3CLOSE_NO_UPSTREAM,           /* 503: no usable server in the pool */
    AE_H3CLOSE_UPSTREAM_CONNECT,      /* 502: every connect attempt failed */
    AE_H3CLOSE_UPSTREAM_CONNECT_TIMEOUT, /* 504: ... and the last one timed out */
    AE_H3CLOSE_UPSTREAM_SOCKET,          /* 502: socket(2) for the upstream failed */
    AE_H3CLOSE_UPSTREAM_TIMEOUT,         /* 504 or reset: no upstream progress (upstream_idle) */
    AE_H3CLOSE_UPSTREAM_CLOSED,          /* 502: the server closed before the response head */
    AE_H3CLOSE_UPSTREAM_READ_ERROR,      /* 502 or reset: recv from the upstream failed */
    AE_H3CLOSE_UPSTREAM_HEAD_TOO_BIG,    /* 502: the response head does not fit a buffer */
    AE_H3CLOSE_UPSTREAM_BAD_RESPONSE,    /* 502: malformed response head (upstream/http1.c) */
    AE_H3CLOSE_UPSTREAM_BAD_BODY,        /* reset: malformed response body framing */
    AE_H3CLOSE_UPSTREAM_TRUNCATED,       /* reset: the server closed before the body's end */
    AE_H3CLOSE_RATE_LIMITED,             /* 429: over limits.h3_requests_per_second */
    AE_H3CLOSE_CONN_B0,                  /* the connection ended: + ae_quic_close */
    AE_H3CLOSE__COUNT = AE_H3CLOSE_CONN_B0 + AE_QCLOSE__COUNT
} ae_h3_close;

/* The connection close reason r as a stream close reason. */
static inline ae_h3_close ae_h3_close_conn(ae_quic_close r)
{
    return (ae_h3_close)(AE_H3CLOSE_CONN_B0 + r);
}
/* Name of r: "done", "malformed", ..., for connection reasons the QUIC name ("idle_timeout",
 * "peer_closed", ...); AE_H3CLOSE_NONE is "done"; "?" out of range. */
const char *ae_h3_close_name(ae_h3_close r);

#endif
