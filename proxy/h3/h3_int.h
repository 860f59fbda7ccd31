/*
 * Internal to proxy/h3/h3.c and proxy/h3/upstream.c (the public API is proxy/h3/h3.h): the HTTP/3
 * session of a QUIC connection (h3conn) and its request streams (qstream).
 *
 * Ownership (all on one worker thread): quic owns the connection (ae_qconn) and holds an
 * h3conn as its application state (ae_quic_app_ops setup/free); an h3conn owns its nghttp3
 * object and its request streams (qstream); each stream embeds its upstream HTTP/1.1 client
 * (h3uclient), which holds at most one upstream TCP connection at a time. Streams are never
 * freed inside a callback: closing detaches them and queues them on the worker's ae_h3_worker,
 * freed by gc. The two state machines (stream, client) are described in proxy/h3/states.h.
 */
#ifndef AE_H3_INT_H
#define AE_H3_INT_H

#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>

#include "proxy/h3/h3.h"
#include "proxy/h3/states.h"
#include "state/affcookie.h"
#include "proxy/upstream/http1.h"

#define AE_H3_DOWN_LIMIT AE_QUIC_STREAM_WINDOW /* response bytes held per stream (not acked) */

typedef struct h3conn h3conn;
typedef struct qstream qstream;

struct ae_h3_worker {
    ae_worker *w;
    qstream *dead_streams;     /* detached, freed by gc */
    struct ae_h3_upool *upool; /* idle keep-alive upstream connections (upstream.c) */
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

/* The upstream HTTP/1.1 client of one request stream (upstream.c): one exchange, the request
 * out and the response in, on one upstream TCP connection at a time (a new one, or one from
 * the worker's keep-alive pool; failover and one retry may use others in turn). Embedded in
 * its qstream (its watchers' data is the qstream). Its life cycle is state (ae_h3_up_state,
 * proxy/h3/states.h), moved by upstream.c only; the bits below are facts across states. */
typedef struct {
    ae_h3_up_state state;
    int fd; /* the connection: >= 0 in CONNECTING, HEAD, BODY and KEEP, else -1 */
    ev_io io;
    ev_timer timer;              /* CONNECTING: connect timeout; HEAD, BODY: idle timeout */
    int server_idx;              /* pool server of the current or last attempt, -1 before */
    uint64_t tried;              /* servers tried (bit idx % 64) */
    uint32_t attempts;           /* connect attempts (pool takes included) */
    ae_buf *out_head, *out_tail; /* request bytes to send: head, body, chunk framing */
    ae_buf *rin;                 /* response bytes read, not parsed yet */
    ae_h1_body body;             /* the response body's framing (BODY), from the head */
    ev_tstamp last;              /* last progress either way (idle timeout) */
    ev_tstamp start;             /* first attempt (latency histogram): 0 before, -1 once observed */
    uint64_t bytes;              /* bytes received on the current connection */
    int h1err; /* why the response was refused (AE_H1_ERR_*), 0: not: access log upstream_error */
    unsigned head_queued : 1;  /* the HTTP/1.1 request head is in the queue */
    unsigned chunked : 1;      /* the request body goes chunked (length unknown at the head) */
    unsigned counted : 1;      /* holds a slot in the server's active */
    unsigned eof : 1;          /* the server closed its side */
    unsigned send_err : 1;     /* a send failed: no more request bytes go out (the response is
                                * still read: the server may have answered and closed) */
    unsigned last_timeout : 1; /* the last failed connect timed out (504 rather than 502) */
    unsigned held : 1;         /* IDLE until ae_h3_up_release (0-RTT hold) */
    /* keep-alive: reused = on a pooled connection; retried = once on a fresh one; no_reuse =
     * never take a pooled one; resp_close = "Connection: close" or HTTP/1.0 */
    unsigned reused : 1, retried : 1, no_reuse : 1, resp_close : 1;
} h3uclient;

/* One HTTP/3 request stream (h3.c): the request the client sends, the response it gets. Its
 * life cycle is state (ae_h3_req_state, proxy/h3/states.h), moved by h3.c only (upstream.c
 * reports through ae_h3_respond() and ae_h3_response_end()); up serves it. */
struct qstream {
    qstream *dead_next;
    qstream *prev, *next; /* in c->streams */
    h3conn *c;
    ae_worker *w;
    int64_t sid;
    ae_h3_req_state state;
    ae_h3_close reason; /* why it ended, for the access log (AE_H3CLOSE_NONE until decided) */
    /* request */
    char *method, *path, *authority, *scheme, *xff;
    char *hdrs; /* "Name: value\r\n" lines to forward */
    size_t hdrs_len, hdrs_cap, head_bytes;
    /* the cookie crumbs of every `cookie` field line joined with "; " (RFC 9114 §4.2.1), the
     * pool's affinity cookie left out; forwarded as one line at the end of the section */
    char *cookies;
    size_t cookies_len, cookies_cap;
    int64_t req_cl; /* -1: no Content-Length */
    /* what the header section carried (HEADERS; for ae_h3_check_request) */
    unsigned bad_field : 1, dup_pseudo : 1, late_pseudo : 1, has_protocol : 1, seen_regular : 1,
        host_auth : 1;
    unsigned is_head : 1; /* HEAD: the response has no body whatever its head says */
    unsigned req_fin : 1; /* the client ended the request (its side of the stream) */
    /* 0-RTT (RFC 8470): early = part of the header section came in 0-RTT (c->rx_early while
     * nghttp3 read it); early_hdr = the client itself sent Early-Data (kept, normalised to "1") */
    unsigned early : 1, early_hdr : 1;
    uint64_t pending_consume; /* body bytes received, not yet credited to the client */
    uint64_t bytes_in;
    /* response */
    int status;
    unsigned h3_blocked : 1;   /* nghttp3 waits for body bytes (read_data said WOULDBLOCK) */
    ae_buf *dn_head, *dn_tail; /* response body queue, data[0, len) each */
    uint64_t dn_base, dn_in, dn_handed, dn_acked;
    uint64_t bytes_out;
    ev_tstamp started;
    /* balance: hash (affinity.c): the key, the affinity cookie as received, its server */
    struct {
        uint64_t key;       /* ae_hrw_hash of the hash_key header / cookie, or the address */
        uint64_t cookie_id; /* cookie_valid: the server id the affinity cookie names */
        int cookie_idx1;    /* its index in the pool + 1 while usable; 0: none */
        char cookie[AE_AFFCOOKIE_LEN]; /* cookie_seen and not cookie_bad: the value */
        unsigned has_key : 1, resolved : 1;
        unsigned cookie_seen : 1, cookie_bad : 1; /* bad: not a sealed value's length */
        unsigned cookie_valid : 1, renew : 1;     /* renew: sealed under an older ring key */
    } aff;
    h3uclient up;
};

/* Not reset nor closed: the stream may still send, receive and move. */
static inline int ae_h3_live(const qstream *s)
{
    return s->state != AE_H3_REQ_RESET && s->state != AE_H3_REQ_CLOSED;
}

/* A response field for nghttp3 from a literal name (h3.c, upstream.c). */
#define AE_H3_NV(n, v, vl)                                                                         \
    ((nghttp3_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP3_NV_FLAG_NONE})

/* ---- h3.c (the request stream), used by upstream.c ---- */
/* The upstream's response head (status, fields nva[0, n)) for a FORWARDED stream: submitted to
 * nghttp3; the stream becomes RESPONDING when a body follows (body != 0), else RESPONDED.
 * Returns 0, or nghttp3's error (the stream was reset). Sending may close the connection, and
 * with it the stream: check ae_h3_live() after. */
int ae_h3_respond(qstream *s, int status, nghttp3_nv *nva, size_t n, int body);
/* The whole response is queued (RESPONDING -> RESPONDED; RESPONDED stays): nghttp3 reads on to
 * the end, the rest of the request body is refused (STOP_SENDING) when it has not ended. */
void ae_h3_response_end(qstream *s);
/* A response made by the proxy (errors), RESPONDED; a reset once the response has started.
 * The upstream client ends (DONE). */
void ae_h3_respond_error(qstream *s, int status, ae_h3_close reason);
/* Ends the stream abruptly in both directions (RESET; the response, if any, is cut). */
void ae_h3_qstream_reset(qstream *s, uint64_t code, ae_h3_close reason);
/* Appends response body bytes for the client. 0 or AE_ERR_NOMEM. */
int ae_h3_dn_append(qstream *s, const uint8_t *p, size_t len);
/* The free space at the end of the response queue (a new buffer when the last is full): bytes
 * can be received there directly, then counted in with ae_h3_dn_commit(s, n <= *room). NULL when
 * out of buffers. */
uint8_t *ae_h3_dn_room(qstream *s, size_t *room);
void ae_h3_dn_commit(qstream *s, size_t n);
/* Credits n request body bytes (at most s->pending_consume) back to the client's windows. */
void ae_h3_credit(qstream *s, uint64_t n);

/* ---- upstream.c (the upstream client s->up), used by h3.c ---- */
/* Closes every idle keep-alive upstream connection of the worker (exit). */
void ae_h3_upool_free(ae_h3_worker *hw);
/* Sets up s->up: IDLE, no socket, watchers ready. */
void ae_h3_up_init(qstream *s);
/* Starts the exchange of a FORWARDED request: queues the request head when its framing is
 * known (the request ended with its headers, or has a Content-Length; otherwise at the first
 * body byte or the end), then picks a server and connects or takes a pooled connection (errors
 * answer s). With hold (a 0-RTT request of a held connection, quic.early_data_shared: hold)
 * the client stays IDLE with its bytes queued until ae_h3_up_release(). 0, or AE_ERR_NOMEM. */
int ae_h3_up_start(qstream *s, int hold);
/* A held exchange may go: picks a server and connects as ae_h3_up_start() would. No-op for an
 * exchange that is not held (any more) or a stream that is not live. */
void ae_h3_up_release(qstream *s);
/* Whether the upstream still takes request body bytes (not KEEP nor DONE, no failed send). */
int ae_h3_up_takes_body(const qstream *s);
/* Queues request body bytes (the head first when not queued yet; chunk framing when chunked).
 * 0 or AE_ERR_NOMEM. */
int ae_h3_up_body(qstream *s, const uint8_t *data, size_t len);
/* The request ended: queues the head when not queued yet, else the last chunk when chunked. */
int ae_h3_up_body_end(qstream *s);
/* The client acknowledged response bytes: a slow client is not an idle upstream; reading
 * resumes (after this callback) once the queue is below AE_H3_DOWN_LIMIT. */
void ae_h3_up_acked(qstream *s);
/* Moves bytes between the queues and the upstream socket until nothing moves. */
void ae_h3_pump(qstream *s);
/* Schedules ae_h3_pump for after the current callback: what arrives for the upstream within
 * one loop iteration (a read batch's request body chunks) goes out in one send. */
void ae_h3_pump_later(qstream *s);
/* Ends the exchange (DONE; stays DONE): the connection closed (unless the pool took it),
 * queued request bytes dropped and their window credited back to the client. */
void ae_h3_close_upstream(qstream *s);
/* Returns the buffers of a chain to the worker. */
void ae_h3_free_chain(ae_worker *w, ae_buf **head, ae_buf **tail);

/* ---- affinity.c (balance: hash), used by h3.c and upstream.c ---- */
/* A regular request field n: v of a stream whose pool balances by hash: takes the hash_key
 * header's or cookie's first value, and the affinity cookie's first value. */
void ae_h3_aff_field(qstream *s, const uint8_t *n, size_t nlen, const uint8_t *v, size_t vlen);
/* The server for the next attempt of s (tried: the attempts so far): the affinity cookie's
 * server when valid, usable and untried (first attempt only), else the key's highest-ranked
 * usable untried server; counts the result (anyedge_affinity_total). Index or -1. */
int ae_h3_aff_pick(qstream *s, uint64_t tried, uint64_t now_ms);
/* The Set-Cookie value for the response from server s->up.server_idx into buf, when the pool
 * has affinity_cookie and the request did not carry a current valid cookie naming that server.
 * Returns its length, or 0 (no Set-Cookie). */
size_t ae_h3_aff_set_cookie(qstream *s, char *buf, size_t cap);

#endif
