/*
 * QUIC (proxy/quic.c, proxy/quic_io.c): what the rest of proxy/ may use. The worker starts and
 * stops listeners and feeds runtimes, secrets and drains; forward.c feeds datagrams in and
 * sends reply frames' datagrams out; the application on the streams (HTTP/3, h3.c) reads and
 * steers its connections. Everything else (endpoints, the CID table, connections, tokens) is
 * internal (proxy/quic_int.h, only for quic*.c).
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
 * ae_quic_socket_setup (main thread) and ae_quic_set_hooks (main thread, before the worker
 * starts). Nothing here may be called from another worker.
 */
#ifndef AE_QUIC_H
#define AE_QUIC_H

#include "proxy/dgram.h"
#include "proxy/worker.h"
#include "state/cid.h"

#define AE_QUIC_RX_BUF 2048 /* largest datagram received (max_udp_payload_size too) */

/* A QUIC endpoint: one per QUIC listener per worker (l->qep). */
typedef struct ae_qep ae_qep;

/* ---- hooks: what quic tells the forwarding layer ----
 *
 * Registered by the worker with ae_quic_set_hooks() (main thread, before the worker starts;
 * copied). Called on the worker thread, from inside ae_quic_input() (unknown_cid, site_addr)
 * or while a connection writes (reply). A hook must not call back into quic for the same
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
/* Worker drain: sends HTTP/3 GOAWAY on the listener's connections and closes each once its
 * requests are done. Returns 1 when the listener must stay open (connections to drain), 0 when
 * it can be closed now. */
int ae_quic_listener_drain(ae_worker *w, ae_wlistener *l);
/* Open QUIC connections of the worker (the drain waits for them too). */
size_t ae_quic_nconns(ae_worker *w);
/* Site drain (not stopping): on = HTTP/3 GOAWAY to every connection, now and to those that
 * complete a handshake later, each closed once its requests are done; off = stop doing so. */
void ae_quic_site_drain(ae_worker *w, int on);
/* Frees closed QUIC connections and streams (gc), and everything at worker exit. */
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

#endif
