/*
 * QUIC (proxy/quic/quic.c, proxy/quic/io.c): what the rest of proxy/ may use. The worker starts and
 * stops listeners and feeds runtimes, secrets and drains; forward.c feeds datagrams in and
 * sends reply frames' datagrams out; the application on the streams (HTTP/3, h3.c) reads and
 * steers its connections. Everything else (endpoints, the CID table, connections, tokens) is
 * internal (proxy/quic/quic_int.h, only for quic*.c).
 *
 * Layers: quic is below forward and h3 and never calls them. What it must tell them goes
 * through two tables the worker registers once per worker (worker.c), before the worker
 * starts:
 *   - ae_quic_hooks: a datagram whose connection is not on this worker, and the return path
 *     of connections whose client reaches us through another site's tunnel (forward.c);
 *   - ae_quic_app_ops: the application protocol on the connections' streams (h3.c).
 * forward.c and h3.c call down into the functions below.
 *
 * Threads: all of it runs on the worker thread that owns the endpoint or connection, except
 * ae_quic_socket_setup (main thread) and ae_quic_set_hooks / ae_quic_set_app (main thread,
 * before the worker starts). Nothing here may be called from another worker.
 */
#ifndef AE_QUIC_H
#define AE_QUIC_H

#include <ngtcp2/ngtcp2.h>

#include "proxy/core/dgram.h"
#include "proxy/core/reason.h"
#include "proxy/core/worker.h"
#include "state/cid.h"

#define AE_QUIC_RX_BUF        2048         /* largest datagram received (max_udp_payload_size) */
#define AE_QUIC_STREAM_WINDOW (256 * 1024) /* initial flow-control window of each stream */
/* Client datagrams that, forwarded in a tunnel frame (AE_TUNNEL_OVERHEAD, 78 bytes), still fit
 * a 1500-byte IPv6 path: 1500 - 40 - 8 - 78. */
#define AE_QUIC_TUNNEL_PAYLOAD 1374

/* A QUIC endpoint: one per QUIC listener per worker (l->qep). */
typedef struct ae_qep ae_qep;
/* A QUIC connection (server side). Owned by quic; the application sees it through the
 * functions at the end of this file and keeps its own state in the `app` pointer its setup
 * returned. */
typedef struct ae_qconn ae_qconn;

/* ---- hooks: what quic tells the forwarding layer ----
 *
 * Registered by the worker with ae_quic_set_hooks() (main thread, before the worker starts;
 * copied). Called on the worker thread, from inside ae_quic_input() (unknown_cid, site_addr)
 * or while a connection sends (reply). A hook must not call back into quic for the same
 * endpoint (no ae_quic_input, no ae_quic_flush); it may queue work for later. A NULL member
 * (or no registration) behaves as "no forwarding": unknown_cid returns 0, site_addr -1. */
typedef struct ae_quic_hooks {
    void *ctx; /* first argument of every hook */
    /* dg arrived on ep and its DCID (dcid, dcidlen) is in no connection table of ep. Returns
     * 1 when the hook took care of it (handed to another worker, forwarded to another site,
     * or dropped and counted), 0 when quic goes on as if there were no forwarding: a
     * stateless reset for a short header, Initial admission for a long one. dg is borrowed
     * for the call: copy what must outlive it. */
    int (*unknown_cid)(void *ctx, ae_qep *ep, const ae_dgram *dg, const uint8_t *dcid,
                       size_t dcidlen);
    /* site.return: tunnel. The forward endpoint of site (copied into *addr, *len), where the
     * replies of a connection whose client's packets come through site's tunnel go. 0, or -1
     * (unknown site, no endpoint published): the replies then leave directly. */
    int (*site_addr)(void *ctx, uint16_t site, struct sockaddr_storage *addr, socklen_t *len);
    /* site.return: tunnel. One datagram data[0, len) of a connection, to go to the client `to`
     * from `from` (the address the client sent to) with ECN codepoint ecn, in a reply frame to
     * site's forward endpoint fwd (what site_addr gave). Queued, not necessarily sent; no
     * allocation. 0, or -1 (nothing queued: quic counts a forward send error and QUIC's loss
     * recovery resends). */
    int (*reply)(void *ctx, uint16_t site, const struct sockaddr *fwd, socklen_t fwdlen,
                 const struct sockaddr *to, const struct sockaddr *from, uint8_t ecn,
                 const uint8_t *data, size_t len);
} ae_quic_hooks;

/* Registers w's hooks (copied). 0 or AE_ERR_NOMEM. */
int ae_quic_set_hooks(ae_worker *w, const ae_quic_hooks *hooks);

/* ---- application ops: what quic tells the protocol on its streams (HTTP/3) ----
 *
 * One table per worker, registered with ae_quic_set_app() (main thread, before the worker
 * starts) together with the application's per-worker context wctx. Every op runs on the
 * worker thread. Connection ops get `app`, what setup() stored, and run from inside ngtcp2
 * callbacks (reading a packet) or from quic's write loop: they must not free the connection
 * or call ae_quic_input / ae_quic_flush; they may call the connection functions below (kick
 * defers the write while a read batch is open) and ngtcp2's stream functions on
 * ae_quic_conn_ngtcp2(). An op returning -1 fails the connection: it is closed with the
 * error the application set with ae_quic_conn_set_app_error() (or a transport error when it
 * set none). Streams and stream IDs are ngtcp2's (RFC 9000 §2.1). All members are required
 * unless noted. */
typedef struct ae_quic_app_ops {
    uint64_t no_error; /* application error code of a graceful close (drain, shutdown) */

    /* The connection has 1-RTT keys (the ClientHello was processed): create the session
     * (control streams...) and store its state in *app. Called at most once per connection;
     * until it succeeds no other connection op is called. 0, or -1 (nothing stored). */
    int (*setup)(void *wctx, ae_qconn *c, void **app);
    /* Stream data from the client, in order: ngtcp2's recv_stream_data flags
     * (NGTCP2_STREAM_DATA_FLAG_FIN, _0RTT). The app extends the flow-control windows itself
     * (ngtcp2_conn_extend_max_stream_offset) as it consumes. 0 or -1. Before setup the
     * connection fails instead. */
    int (*recv_stream_data)(void *app, uint32_t flags, int64_t sid, const uint8_t *data,
                            size_t len);
    /* The client acknowledged len more bytes of stream sid. 0 or -1. */
    int (*acked_stream_data)(void *app, int64_t sid, uint64_t len);
    /* Stream sid is closed in both directions (ngtcp2's stream_close flags and code). 0 or -1. */
    int (*stream_close)(void *app, uint32_t flags, int64_t sid, uint64_t code);
    /* The client reset stream sid (RESET_STREAM) or asked us to stop sending (STOP_SENDING).
     * 0 or -1. */
    int (*stream_reset)(void *app, int64_t sid);
    /* Stream sid may send more (its flow-control window grew). 0 or -1. */
    int (*extend_max_stream_data)(void *app, int64_t sid);
    /* The client may open bidirectional streams up to max_streams. */
    void (*extend_max_streams_bidi)(void *app, uint64_t max_streams);

    /* Writing (quic's write loop, while the connection may send). write_stream: the next
     * stream data to send: *sid (-1: none), *fin, up to veccnt pieces in vec (borrowed until
     * acknowledged). Returns the number of pieces, or -1 (fails the connection).
     * stream_blocked / stream_shut_wr: sid cannot take data now (flow control) / any more.
     * add_write_offset: n bytes of sid's data were packed into packets. 0 or -1. */
    int (*write_stream)(void *app, int64_t *sid, int *fin, ngtcp2_vec *vec, size_t veccnt);
    void (*stream_blocked)(void *app, int64_t sid);
    void (*stream_shut_wr)(void *app, int64_t sid);
    int (*add_write_offset)(void *app, int64_t sid, size_t n);

    /* quic.early_data_shared: hold: the connection's 0-RTT requests may go upstream now (its
     * handshake completed, or the sites' shared record said first use). Called at most once,
     * only after setup, and only for a connection that was held (ae_quic_conn_early_held). */
    void (*early_release)(void *app);

    /* Graceful drain of an established connection: step 0 announces it (no new requests),
     * step 1 names the last request served (HTTP/3 GOAWAY, RFC 9114 §5.2). quic closes the
     * connection with no_error once nstreams() is 0 after step 1. */
    void (*goaway)(void *app, int step);
    size_t (*nstreams)(void *app); /* requests still open */
    /* The connection is closing or closed (reason for logs: AE_QCLOSE_IDLE_TIMEOUT,
     * _PEER_CLOSED, _CLOSED, _SHUTDOWN, ...): detach every stream; no stream op follows. May
     * be called more than once. */
    void (*close)(void *app, ae_quic_close reason);
    /* Frees app (the connection is being freed, after close). */
    void (*free)(void *app);

    /* Per worker: frees what the app's connections left for the gc (after the event loop's
     * callbacks returned). Optional. */
    void (*gc)(void *wctx);
    /* Worker exit, after the last connection was freed: releases wctx. Optional. */
    void (*release)(void *wctx);
} ae_quic_app_ops;

/* Registers w's application (ops is kept, not copied; wctx is passed to the per-worker ops and
 * setup). From then on quic owns wctx: ae_quic_free() calls ops->release(wctx). 0, or
 * AE_ERR_NOMEM (wctx stays the caller's). */
int ae_quic_set_app(ae_worker *w, const ae_quic_app_ops *ops, void *wctx);

/* ---- the worker (worker.c) ---- */

/* Socket options for a QUIC listening socket (main thread): 0 or -1 with errno. */
int ae_quic_socket_setup(int fd, int family);
/* Starts serving datagrams on a QUIC listener (sets up l->io and l->qep). 0 or AE_ERR_*. */
int ae_quic_listener_start(ae_worker *w, ae_wlistener *l);
/* Closes every connection of the listener and frees its endpoint (not the fd). */
void ae_quic_listener_stop(ae_worker *w, ae_wlistener *l);
/* The worker adopts rt: builds the QUIC TLS credentials when rt has a QUIC listener. */
void ae_quic_runtime(ae_worker *w, ae_runtime *rt);
/* Adopts the QUIC secrets of a new ring (takes over the reference). */
void ae_quic_secrets(ae_worker *w, ae_qsecrets *sec);
/* Worker drain: the application's graceful drain (HTTP/3 GOAWAY) on the listener's
 * connections, each closed once its requests are done. Returns 1 when the listener must stay
 * open (connections to drain), 0 when it can be closed now. */
int ae_quic_listener_drain(ae_worker *w, ae_wlistener *l);
/* Open QUIC connections of the worker (the drain waits for them too). */
size_t ae_quic_nconns(ae_worker *w);
/* Site drain (not stopping): on = graceful drain (HTTP/3 GOAWAY) of every connection, now and
 * of those that complete a handshake later, each closed once its requests are done; off = stop
 * doing so. */
void ae_quic_site_drain(ae_worker *w, int on);
/* Frees closed QUIC connections (and, through the app's gc, streams), and everything at worker
 * exit. */
void ae_quic_gc(ae_worker *w);
void ae_quic_free(ae_worker *w);

/* ---- datagrams in and out (forward.c: worker inbox, tunnel input, reply frames) ---- */

/* Processes one datagram on ep as if read from its socket. Inside a batch (between
 * ae_quic_batch_begin and ae_quic_flush) the connections it touches are written at the end. */
void ae_quic_input(ae_qep *ep, const ae_dgram *dg);
/* Starts a batch of input on ep: writes are deferred to ae_quic_flush. */
void ae_quic_batch_begin(ae_qep *ep);
/* Ends a batch on ep: writes the connections it touched. */
void ae_quic_flush(ae_qep *ep);
/* Sends one datagram of a reply frame from ep's socket to `to`, from `from` (PKTINFO when ep is
 * a wildcard), with ECN codepoint ecn. 0, or an AE_ERR_* (socket full: dropped). */
int ae_quic_send_reply(ae_qep *ep, const struct sockaddr *to, socklen_t tolen,
                       const struct sockaddr *from, uint8_t ecn, const uint8_t *data, size_t len);

/* The worker listener ep serves (its index names the listener in the runtime). */
ae_wlistener *ae_quic_ep_listener(const ae_qep *ep);
/* Whether ep's socket receives datagrams sent to `local`: AE_QUIC_EP_EXACT (bound to that
 * address and port), AE_QUIC_EP_WILDCARD (bound to the wildcard address of its family, same
 * port) or AE_QUIC_EP_NONE. */
enum { AE_QUIC_EP_NONE = 0, AE_QUIC_EP_WILDCARD, AE_QUIC_EP_EXACT };
int ae_quic_ep_serves(const ae_qep *ep, const struct sockaddr *local);

/* The CID cipher contexts of w's newest ring (whose connection a CID names), NULL before the
 * first secrets. Borrowed: valid until the next ae_quic_secrets(). */
ae_cid_keys *ae_quic_cid_keys(ae_worker *w);
/* The QUIC secrets of w's newest ring, NULL before the first. Borrowed (take a reference to
 * keep them): valid until the next ae_quic_secrets(). */
ae_qsecrets *ae_quic_current_secrets(ae_worker *w);

/* ---- a connection, for the application (worker thread) ---- */

/* Writes what the connection has to send: now, or at the end of the current read batch. */
void ae_quic_conn_kick(ae_qconn *c);
/* The application error (RFC 9000 §20.2) the connection is closed with when an op fails. */
void ae_quic_conn_set_app_error(ae_qconn *c, uint64_t code);
/* The ngtcp2 connection, for stream-level calls (flow-control credit, stream shutdown,
 * opening streams, transport parameters). Never read or write packets on it, never free it. */
ngtcp2_conn *ae_quic_conn_ngtcp2(ae_qconn *c);
/* Fixed for the connection's life: its id (log prefix), worker, runtime it started under (a
 * reference the connection holds until freed), listener and that listener's upstream pool in
 * the runtime, and the client's address of its first packet. */
uint64_t ae_quic_conn_id(const ae_qconn *c);
ae_worker *ae_quic_conn_worker(const ae_qconn *c);
ae_runtime *ae_quic_conn_runtime(const ae_qconn *c);
const ae_conf_listener *ae_quic_conn_listener(const ae_qconn *c);
ae_pool *ae_quic_conn_pool(const ae_qconn *c);
const struct sockaddr *ae_quic_conn_remote(const ae_qconn *c, socklen_t *len);
/* The TLS server name the client asked for, "" before the handshake completed. */
const char *ae_quic_conn_sni(const ae_qconn *c);
/* 1 while requests received in 0-RTT must wait (quic.early_data_shared: hold, neither the
 * handshake nor the shared record released them yet): ops->early_release follows. */
int ae_quic_conn_early_held(const ae_qconn *c);

#endif
