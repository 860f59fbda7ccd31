/*
 * Internal to proxy/h3/h3.c and proxy/h3/upstream.c (the public API is proxy/h3/h3.h): the HTTP/3
 * session of a QUIC connection (h3conn) and its request streams (qstream).
 *
 * Ownership (all on one worker thread): quic owns the connection (ae_qconn) and holds an
 * h3conn as its application state (ae_quic_app_ops setup/free); an h3conn owns its nghttp3
 * object and its request streams, each with at most one upstream TCP connection. Streams are
 * never freed inside a callback: closing detaches them and queues them on the worker's
 * ae_h3_worker, freed by gc.
 */
#ifndef AE_H3_INT_H
#define AE_H3_INT_H

#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>

#include "proxy/h3/h3.h"
#include "proxy/upstream/http1.h"

#define AE_H3_DOWN_LIMIT AE_QUIC_STREAM_WINDOW /* response bytes held per stream (not acked) */

typedef struct h3conn h3conn;
typedef struct qstream qstream;

struct ae_h3_worker {
    ae_worker *w;
    qstream *dead_streams;     /* detached, freed by gc */
    struct ae_h3_upool *upool; /* idle keep-alive upstream connections (h3_upstream.c) */
};

/* The HTTP/3 session of one QUIC connection. The fields from w to remote are copied from the
 * connection at setup (fixed for its life; ae_quic_conn_*). */
struct h3conn {
    ae_qconn *qc;      /* the QUIC connection (owns this session) */
    ngtcp2_conn *conn; /* its ngtcp2 object (stream flow control and shutdown) */
    nghttp3_conn *h3;  /* NULL until setup succeeded */
    ae_h3_worker *hw;  /* this worker's HTTP/3 state */
    ae_worker *w;
    uint64_t id;    /* the connection's id (log prefix) */
    ae_runtime *rt; /* held by the connection */
    const ae_conf_listener *lis;
    ae_pool *pool;
    struct sockaddr_storage remote; /* the client's address at the first packet */
    socklen_t remotelen;
    qstream *streams;
    unsigned rx_early : 1; /* set while nghttp3 reads stream data that came in 0-RTT */
};

#define AE_H3_MAX_RESP_FIELDS 128 /* response header fields relayed */

/* One HTTP/3 request stream and its upstream side (h3.c, h3_upstream.c). */
struct qstream {
    qstream *dead_next;
    qstream *prev, *next; /* in c->streams */
    h3conn *c;
    ae_worker *w;
    int64_t sid;
    int dead;
    /* request */
    char *method, *path, *authority, *scheme, *xff;
    char *hdrs; /* "Name: value\r\n" lines to forward */
    size_t hdrs_len, hdrs_cap, head_bytes;
    int64_t req_cl; /* -1: no Content-Length */
    unsigned headers_done : 1, req_fin : 1, req_chunked : 1, head_queued : 1, too_big : 1,
        is_head : 1;
    unsigned bad_field : 1, dup_pseudo : 1, late_pseudo : 1, has_protocol : 1, seen_regular : 1,
        host_auth : 1;
    /* 0-RTT (RFC 8470): early = part of the header section came in 0-RTT (c->rx_early while
     * nghttp3 read it); early_hdr = the client itself sent Early-Data (kept, normalised to "1") */
    unsigned early : 1, early_hdr : 1;
    uint64_t pending_consume; /* body bytes received, not yet credited to the client */
    uint64_t bytes_in;
    ae_buf *up_head, *up_tail; /* bytes to the upstream */
    /* upstream */
    int ufd;
    ev_io uio;
    ev_timer ut;
    int server_idx;
    uint64_t tried;
    uint32_t attempts;
    unsigned counted : 1, connecting : 1, u_eof : 1, last_timeout : 1, up_done : 1;
    /* keep-alive: reused = on a pooled connection; retried = once on a fresh one; no_reuse =
     * never take a pooled one; u_err = a send failed; resp_close = "Connection: close" or
     * HTTP/1.0; keep = the response completed in a way that allows reuse */
    unsigned reused : 1, retried : 1, no_reuse : 1, u_err : 1, resp_close : 1, keep : 1;
    ev_tstamp u_last;
    ev_tstamp u_start; /* first upstream attempt (latency histogram), 0 before */
    uint64_t u_bytes;  /* bytes received from the current upstream connection */
    /* response */
    ae_buf *rin; /* raw bytes from the upstream */
    int status;
    unsigned resp_started : 1, resp_done : 1, h3_blocked : 1, reset : 1;
    ae_h1_body body;           /* the response body's framing, set up from the head */
    ae_buf *dn_head, *dn_tail; /* response body queue, data[0, len) each */
    uint64_t dn_base, dn_in, dn_handed, dn_acked;
    uint64_t bytes_out;
    ev_tstamp started;
    ae_h3_close reason; /* why it ended, for the access log (AE_H3CLOSE_NONE until decided) */
};

/* A response field for nghttp3 from a literal name (h3.c, h3_upstream.c). */
#define AE_H3_NV(n, v, vl)                                                                         \
    ((nghttp3_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP3_NV_FLAG_NONE})

/* ---- h3.c, used by h3_upstream.c ---- */
/* Submits the response HEADERS (nva[0, n)), with a body to follow when body != 0. */
int ae_h3_submit(qstream *s, nghttp3_nv *nva, size_t n, int body);
/* A response made by the proxy (errors); a reset once the response has started. */
void ae_h3_respond_error(qstream *s, int status, ae_h3_close reason);
/* Ends the stream abruptly in both directions (the response, if any, is cut). */
void ae_h3_qstream_reset(qstream *s, uint64_t code, ae_h3_close reason);

/* ---- h3_upstream.c (HTTP/1.1 upstream side of a qstream), used by h3.c ---- */
/* Closes every idle keep-alive upstream connection of the worker (exit). */
void ae_h3_upool_free(ae_h3_worker *hw);
/* Sets up s's upstream watchers (no socket yet). */
void ae_h3_up_init(qstream *s);
/* Appends bytes to the queue to the upstream. Returns 0 or AE_ERR_NOMEM. */
int ae_h3_up_append(qstream *s, const void *data, size_t len);
/* Appends formatted text (under 64 bytes) to the queue to the upstream. */
int ae_h3_up_printf(qstream *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns the buffers of a chain to the worker. */
void ae_h3_free_chain(ae_worker *w, ae_buf **head, ae_buf **tail);
/* Appends response body bytes for the client. */
int ae_h3_dn_append(qstream *s, const uint8_t *p, size_t len);
/* Closes s's upstream connection (if any) and credits unsent request body bytes back. */
void ae_h3_close_upstream(qstream *s);
/* Queues the HTTP/1.1 request head. */
int ae_h3_queue_head(qstream *s);
/* Picks an upstream server and connects (or takes a pooled connection); errors answer s. */
void ae_h3_try_connect(qstream *s);
/* Moves bytes between the queues and the upstream socket until nothing moves. */
void ae_h3_pump(qstream *s);

#endif
