/*
 * Internal to proxy/quic.c, proxy/quic_io.c, proxy/h3.c and proxy/h3_upstream.c: QUIC
 * endpoints, connections, HTTP/3 streams.
 *
 * Ownership (all on one worker thread): a worker's QUIC state (ae_qworker) holds the TLS
 * credentials of the runtime it serves and the dead lists; each QUIC listener of the worker has
 * an endpoint (ae_qep: its UDP socket, the connection-ID table, its connections); a connection
 * (qconn) owns its ngtcp2 and nghttp3 objects and its HTTP/3 request streams (qstream), each with
 * at most one upstream TCP connection. Connections and streams are never freed inside a
 * callback: closing detaches them and queues them on the worker's dead lists, freed by gc.
 */
#ifndef AE_QUIC_INT_H
#define AE_QUIC_INT_H

#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "proxy/quic.h"
#include "tls/quic_tls.h"

#define AE_QUIC_CIDLEN   17   /* server connection IDs: fixed length (QUIC-LB ready) */
#define AE_QUIC_MAX_PKT  1472 /* largest UDP payload we build */
#define AE_QUIC_GSO_SEGS 40   /* packets per UDP GSO send (kernel limit 64) */
#define AE_QUIC_TX_BUF   (AE_QUIC_GSO_SEGS * AE_QUIC_MAX_PKT) /* < 64 KiB: one GSO datagram */

#define AE_QUIC_RX_BATCH 32           /* datagrams per recvmmsg (of AE_QUIC_RX_BUF bytes) */
#define AE_QUIC_MAX_CIDS 10           /* CIDs a connection can have in the table (odcid + ours) */
#define AE_H3_DOWN_LIMIT (256 * 1024) /* response bytes held per stream (sent, not acked) */
#define AE_H3_HEAD_MAX   (64 * 1024)  /* request header section limit */

typedef struct qconn qconn;
typedef struct qstream qstream;

typedef struct {
    uint8_t len; /* 0 empty, 0xff tombstone */
    uint8_t cid[NGTCP2_MAX_CIDLEN];
    qconn *c;
} ae_cid_slot;

struct ae_qep {
    ae_worker *w;
    ae_wlistener *l;
    int fd;
    int family;
    int wildcard; /* bound to 0.0.0.0/:: : replies carry the destination as source (PKTINFO) */
    struct sockaddr_storage bound;
    socklen_t boundlen;
    ae_cid_slot *slots;
    size_t cap, used, n; /* used counts tombstones */
    uint64_t hkey[2];
    qconn *conns;
    qconn *dirty; /* connections to write after the current read batch */
    int wblocked; /* socket buffer full: connections wait for EV_WRITE */
    int no_gso;   /* the kernel refused UDP_SEGMENT: one sendmsg per packet */
    int in_batch; /* inside a read batch: writes are deferred to its end */
    ev_io wio;
};

typedef struct ae_qworker {
    ae_runtime *tls_rt; /* runtime the credentials were built for */
    ae_quic_tls_ctx *tls;
    qconn *dead;
    qstream *dead_streams;
    size_t nconns; /* open QUIC connections of this worker (tune.max_connections) */
    uint8_t rx[AE_QUIC_RX_BATCH][AE_QUIC_RX_BUF];
    uint8_t tx[AE_QUIC_TX_BUF];   /* packets of one GSO batch, back to back */
    uint8_t reset_secret[32];     /* stateless reset secret before the first secrets arrive */
    uint8_t token_key[32];        /* Retry / NEW_TOKEN key before the first secrets arrive */
    uint64_t rate_sec;            /* retry: auto: new connections seen in second rate_sec */
    uint32_t rate_cur, rate_prev; /* (rate_cur) and in the second before (rate_prev) */
    ae_qsecrets *sec;             /* QUIC secrets of the newest ring (a reference) */
    struct ae_cid_keys *cidk;     /* this worker's CID cipher contexts for that ring */
    struct ae_h3_upool *upool;    /* idle keep-alive upstream connections (h3_upstream.c) */
    ev_timer drain_tick;          /* while the worker drains: GOAWAY steps (quic.c) */
    ae_quic_hooks hooks;          /* forwarding layer (ae_quic_set_hooks) */
} ae_qworker;

typedef enum { QC_OPEN = 0, QC_CLOSING, QC_DRAINING, QC_DEAD } qc_state;

struct qconn {
    qconn *prev, *next; /* in ep->conns; next = dead list link once dead */
    qconn *dirty_next;
    int is_dirty;
    ae_qep *ep;
    ae_worker *w;
    uint64_t id;
    qc_state state;
    ae_runtime *rt;
    const ae_conf_listener *lis;
    ae_pool *pool;
    ngtcp2_conn *conn;
    ngtcp2_crypto_conn_ref ref;
    ae_quic_tls *tls;
    ae_quic_tls_ctx *tlsctx;
    nghttp3_conn *h3;
    ngtcp2_ccerr err;
    ev_timer timer;
    struct sockaddr_storage remote, local;
    socklen_t remotelen, locallen;
    uint8_t *close_pkt; /* CONNECTION_CLOSE resent during the closing period */
    size_t close_len;
    uint8_t *pending; /* one GSO batch that met a full socket buffer */
    size_t pending_len, pending_gso;
    uint8_t pending_ecn;
    struct sockaddr_storage pending_to, pending_from;
    socklen_t pending_tolen, pending_fromlen;
    /* site.return: tunnel. The site whose tunnel frames brought this connection's last packet
     * (0: it came directly to our QUIC socket) and that site's forward endpoint: with
     * `site.return: tunnel` every datagram goes back there in a reply frame. */
    uint16_t ret_site;
    socklen_t ret_addrlen;
    struct sockaddr_storage ret_addr;
    ngtcp2_cid cids[AE_QUIC_MAX_CIDS]; /* in the endpoint table */
    size_t ncids;
    qstream *streams;
    char sni[256];
    ev_tstamp started;
    unsigned hs_done : 1;
    unsigned rx_early : 1; /* set while recv_stream_data hands h3.c data that came in 0-RTT */
    unsigned err_set : 1;  /* err holds an application error chosen by h3.c */
    unsigned goaway : 2;   /* drain: 1 GOAWAY notice sent, 2 final GOAWAY sent */
    ev_tstamp goaway_at;   /* when the notice was sent */
};

#define AE_H3_MAX_RESP_FIELDS 128 /* response header fields relayed */

/* One HTTP/3 request stream and its upstream side (h3.c, h3_upstream.c). */
struct qstream {
    qstream *dead_next;
    qstream *prev, *next; /* in c->streams */
    qconn *c;
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
    /* 0-RTT (RFC 8470): early = part of the header section came in 0-RTT (quic.c sets
     * c->rx_early); early_hdr = the client itself sent Early-Data (kept, normalised to "1") */
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
    int body_mode, chunk_state;
    uint64_t body_left;
    ae_buf *dn_head, *dn_tail; /* response body queue, data[0, len) each */
    uint64_t dn_base, dn_in, dn_handed, dn_acked;
    uint64_t bytes_out;
    ev_tstamp started;
    const char *reason;
};

/* A response field for nghttp3 from a literal name (h3.c, h3_upstream.c). */
#define AE_H3_NV(n, v, vl)                                                                         \
    ((nghttp3_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP3_NV_FLAG_NONE})

/* ---- quic.c, used by h3.c ---- */
/* Writes what ngtcp2/nghttp3 have to send (now, unless inside a read batch). */
void ae_quic_conn_kick(qconn *c);
/* Closes the connection with c->err set (application error set by h3.c). */
void ae_quic_conn_fail(qconn *c);
ngtcp2_tstamp ae_quic_now(void);

/* ---- quic_io.c, used by quic.c (endpoint packet I/O) ---- */
/* Sends one datagram or a UDP GSO batch: 0, AE_ERR_AGAIN (socket buffer full), AE_ERR_IO. */
int ae_quic_send_batch(ae_qep *ep, const struct sockaddr *to, socklen_t tolen,
                       const struct sockaddr *from, const uint8_t *data, size_t len, size_t gso,
                       uint8_t ecn);
/* EV_READ callback of a QUIC listener (io->data: the ae_wlistener): reads a recvmmsg batch. */
void ae_quic_read_cb(struct ev_loop *loop, ev_io *io, int revents);

/* ---- h3.c ---- */
/* Creates the HTTP/3 session (control and QPACK streams) once 1-RTT keys exist. */
int ae_h3_setup(qconn *c);
/* ngtcp2 callbacks forwarded to nghttp3. */
int ae_h3_recv_stream_data(qconn *c, uint32_t flags, int64_t sid, const uint8_t *data, size_t len);
int ae_h3_acked(qconn *c, int64_t sid, uint64_t len);
int ae_h3_stream_close(qconn *c, uint32_t flags, int64_t sid, uint64_t app_error_code);
int ae_h3_stream_reset(qconn *c, int64_t sid);
int ae_h3_extend_max_stream_data(qconn *c, int64_t sid);
/* Detaches every stream of c (connection going away; reason for the access log). */
void ae_h3_close_all(qconn *c, const char *reason);
/* Frees the streams queued on qw->dead_streams. */
void ae_h3_gc(ae_qworker *qw);
/* Graceful drain (RFC 9114 §5.2): step 0 sends a GOAWAY notice (no new requests), step 1 the
 * final GOAWAY naming the last stream processed. Returns the request streams still open. */
size_t ae_h3_goaway(qconn *c, int step);

/* ---- h3.c, used by h3_upstream.c ---- */
/* Submits the response HEADERS (nva[0, n)), with a body to follow when body != 0. */
int ae_h3_submit(qstream *s, nghttp3_nv *nva, size_t n, int body);
/* A response made by the proxy (errors); a reset once the response has started. */
void ae_h3_respond_error(qstream *s, int status, const char *reason);
/* Ends the stream abruptly in both directions (the response, if any, is cut). */
void ae_h3_qstream_reset(qstream *s, uint64_t code, const char *reason);

/* ---- h3_upstream.c (HTTP/1.1 upstream side of a qstream), used by h3.c ---- */
/* Closes every idle keep-alive upstream connection of the worker (exit). */
void ae_h3_upool_free(ae_worker *w);
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

/* ---- RFC 9114 request validation (h3.c; pure, unit-tested) ---- */
enum {
    AE_H3_OK = 0,
    AE_H3_MALFORMED = -1, /* reset the stream with H3_MESSAGE_ERROR (§4.1.2) */
    AE_H3_TOO_BIG = -2,   /* header section over AE_H3_HEAD_MAX: 431 (§4.2.2) */
    AE_H3_CONNECT = -3,   /* CONNECT: not supported, 501 */
};
/* Checks one field of a request header section (name as received, value). Returns AE_H3_OK
 * or AE_H3_MALFORMED: empty, non-token or upper-case name, unknown pseudo-header,
 * connection-specific field (connection, keep-alive, proxy-connection, transfer-encoding,
 * upgrade), `te` other than "trailers", NUL / CR / LF in the value. */
int ae_h3_check_field(const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen);

/* What a request header section carried, for ae_h3_check_request(). */
typedef struct {
    const char *method, *scheme, *path, *authority; /* NULL when absent (authority: or Host) */
    size_t section_size;                            /* sum of name + value + 32 per field */
    unsigned bad_field : 1;                         /* some field failed ae_h3_check_field() */
    unsigned dup_pseudo : 1;                        /* a pseudo-header appeared twice */
    unsigned late_pseudo : 1;                       /* a pseudo-header after a regular field */
    unsigned has_protocol : 1; /* :protocol (extended CONNECT, not supported) */
} ae_h3_req_info;
/* Request-level checks (RFC 9114 §4.3.1): AE_H3_OK, AE_H3_MALFORMED, AE_H3_TOO_BIG or
 * AE_H3_CONNECT. Order: size first (431 even when the cut section looks incomplete), then
 * malformed, then CONNECT. */
int ae_h3_check_request(const ae_h3_req_info *r);

#endif
