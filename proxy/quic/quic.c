/*
 * QUIC connections (RFC 9000/9001/9002 through ngtcp2) of a worker's endpoints: creation from
 * an admitted Initial, reading, writing (UDP GSO batches), timers, closing and draining, the
 * ngtcp2 callbacks, and the connection's face to the application (ae_quic_conn_*).
 *
 * The endpoint (endpoint.c) routes each datagram by destination connection ID through an
 * open-addressing table (all CIDs a connection issued plus the client's original DCID) to a
 * connection here; io.c reads and sends the datagrams. Connections touched by a read batch are
 * written once at its end, so ACKs and stream data coalesce. Each connection has one ev_timer
 * armed at ngtcp2_conn_get_expiry(). The protocol on the streams (HTTP/3, proxy/h3/) is reached
 * only through the application ops the worker registered (ae_quic_app_ops, quic.h), datagrams
 * for connections elsewhere only through the forwarding hooks (ae_quic_hooks).
 */
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conf/seen.h"
#include "proxy/quic/quic_int.h"
#include "state/claim.h"

/* ---- small utilities ---- */

ngtcp2_tstamp ae_quic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

void ae_quic_rand_bytes(void *buf, size_t n)
{
    if (ae_quic_rand(buf, n) != 0)
        abort(); /* no randomness: nothing safe to do */
}

/* The max_udp_payload_size we announce (quic.max_udp_payload; 0 = auto, see conf_keys.c). */
static uint64_t max_udp_payload(const ae_conf *conf)
{
    if (conf->quic.max_udp_payload != 0)
        return conf->quic.max_udp_payload;
    return conf->site.forward.len != 0 ? AE_QUIC_TUNNEL_PAYLOAD : AE_QUIC_RX_BUF;
}

ae_qworker *ae_quic_qw_get(ae_worker *w)
{
    if (w->quic == NULL) {
        ae_qworker *qw = calloc(1, sizeof(*qw));
        if (qw == NULL)
            return NULL;
        /* Until the first AE_MSG_SECRETS arrives (the main thread sends it before the worker
         * starts), a random reset secret keeps resets valid within this process. */
        ae_quic_rand_bytes(qw->reset_secret, sizeof(qw->reset_secret));
        ae_quic_rand_bytes(qw->token_key, sizeof(qw->token_key));
        w->quic = qw;
    }
    return w->quic;
}

void ae_quic_secrets(ae_worker *w, ae_qsecrets *sec)
{
    ae_qworker *qw = ae_quic_qw_get(w);
    ae_cid_keys *keys = NULL;

    if (qw == NULL || ae_cid_keys_from_ring(&sec->ring, &keys) != 0) {
        AE_ERROR("quic: cannot adopt the secrets of ring generation %llu; keeping the previous",
                 (unsigned long long)sec->ring.generation);
        ae_qsecrets_unref(sec);
        return;
    }
    ae_qsecrets_unref(qw->sec);
    ae_cid_keys_free(qw->cidk);
    qw->sec = sec;
    qw->cidk = keys;
}

/* ---- sending (the socket side is in quic_io.c) ---- */

/* One datagram from `from` (NULL = the socket's address) to `to`, no ECN codepoint. */
int ae_quic_ep_send(ae_qep *ep, const struct sockaddr *to, socklen_t tolen,
                    const struct sockaddr *from, const uint8_t *data, size_t len)
{
    return ae_quic_send_batch(ep, to, tolen, from, data, len, 0, 0);
}

/* ---- site.return: tunnel ---- */

/* Whether c's datagrams go back through the site its client's packets now reach (the last one
 * came in that site's tunnel frame, and this site's `site.return` is tunnel: read at each send,
 * so a reload applies to open connections). */
static int conn_tunnel(const qconn *c)
{
    return c->ret_site != 0 && c->w->rt != NULL && c->w->rt->conf->site.ret == AE_RETURN_TUNNEL;
}

/* After a packet of c was accepted: remember through which site it came (dg's tunnel origin). */
static void conn_note_entry(qconn *c, const ae_dgram *dg)
{
    const ae_quic_hooks *h = &c->w->quic->hooks;
    uint16_t site = dg->origin == AE_DGRAM_TUNNEL ? dg->site : 0;
    uint16_t was = c->ret_site;
    if (site == 0 || h->site_addr == NULL ||
        h->site_addr(h->ctx, site, &c->ret_addr, &c->ret_addrlen) != 0) {
        c->ret_site = 0;
        c->ret_addrlen = 0;
    } else {
        c->ret_site = site;
    }
    if (c->ret_site != was)
        AE_CDEBUG(c->id, "quic: client now reaches us %s%u",
                  c->ret_site ? "through site " : "directly", c->ret_site);
}

/* One datagram of c in a reply frame to the site its client's packets come through. */
static void conn_send_tunnel(qconn *c, const struct sockaddr *to, const struct sockaddr *from,
                             uint8_t ecn, const uint8_t *data, size_t len)
{
    const ae_quic_hooks *h = &c->w->quic->hooks;
    if (h->reply == NULL || h->reply(h->ctx, c->ret_site, (const struct sockaddr *)&c->ret_addr,
                                     c->ret_addrlen, to, from, ecn, data, len) != 0)
        ae_count(&c->w->counters, AE_M_FWD_SEND_ERRORS, 1); /* QUIC recovers the loss */
}

/* A single datagram of c outside ae_quic_conn_write (CONNECTION_CLOSE): the tunnel or the socket.
 */
static void conn_send(qconn *c, const struct sockaddr *to, socklen_t tolen,
                      const struct sockaddr *from, const uint8_t *data, size_t len)
{
    if (conn_tunnel(c))
        conn_send_tunnel(c, to, from, 0, data, len);
    else
        ae_quic_ep_send(c->ep, to, tolen, from, data, len);
}

void ae_quic_ep_block(ae_qep *ep)
{
    if (!ep->wblocked) {
        ep->wblocked = 1;
        ev_io_start(ep->w->loop, &ep->wio);
    }
}

/* ---- connection life cycle ---- */

static void arm_timer(qconn *c)
{
    ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(c->conn), now = ae_quic_now();
    ev_tstamp after = exp <= now ? 0 : (ev_tstamp)(exp - now) / NGTCP2_SECONDS;
    ev_timer_stop(c->w->loop, &c->timer);
    ev_timer_set(&c->timer, after, 0);
    ev_timer_start(c->w->loop, &c->timer);
}

/* ---- the application (ae_quic_app_ops) ---- */

/* The connection is going away: the application detaches its streams (once it has a session). */
static void app_close(qconn *c, ae_quic_close reason)
{
    if (c->app != NULL)
        c->w->quic->app->close(c->app, reason);
}

/* The application error code of a graceful close. */
uint64_t ae_quic_app_no_error(ae_worker *w)
{
    return w->quic->app != NULL ? w->quic->app->no_error : 0;
}

/* Why a connection ended, for anyedge_quic_connections_closed_by_reason_total: the period it
 * was in (draining: the peer closed; closing: we did) or the reason given to conn_kill. */
static ae_quic_close_cause close_cause(qc_state was, ae_quic_close reason, int hs_done)
{
    if (reason == AE_QCLOSE_SHUTDOWN)
        return AE_QCAUSE_SHUTDOWN;
    if (!hs_done) /* an Initial that never became a connection */
        return AE_QCAUSE_NO_HANDSHAKE;
    if (reason == AE_QCLOSE_IDLE_TIMEOUT)
        return AE_QCAUSE_IDLE_TIMEOUT;
    if (was == QC_DRAINING)
        return AE_QCAUSE_PEER_CLOSED;
    if (was == QC_CLOSING)
        return AE_QCAUSE_LOCAL_CLOSE;
    return AE_QCAUSE_ERROR;
}

/* Detaches c from everything (CIDs, streams, lists, timer) and queues it for gc. */
void ae_quic_conn_kill(qconn *c, ae_quic_close reason)
{
    if (c->state == QC_DEAD)
        return;
    qc_state was = c->state;
    ae_worker *w = c->w;
    ae_qep *ep = c->ep;
    AE_CDEBUG(c->id, "quic connection closed: %s", ae_quic_close_names[reason]);
    app_close(c, reason);
    for (size_t i = 0; i < c->ncids; i++)
        ae_quic_cid_del(ep, &c->cids[i]);
    c->ncids = 0;
    ev_timer_stop(w->loop, &c->timer);
    c->state = QC_DEAD;
    if (c->prev)
        c->prev->next = c->next;
    else
        ep->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = w->quic->dead;
    w->quic->dead = c;
    w->quic->nconns--;
    ae_count(&w->counters, AE_M_QUIC_CONN_CLOSED, 1);
    ae_count(&w->counters, (ae_metric)(AE_M_QUIC_CLOSE_B0 + close_cause(was, reason, c->hs_done)),
             1);
}

static void conn_free(qconn *c)
{
    if (c->claim != 0)
        ae_claims_cancel(c->w->quic->claims, c->claim);
    if (c->app != NULL)
        c->w->quic->app->free(c->app);
    ngtcp2_conn_del(c->conn);
    ae_quic_tls_free(c->tls);
    ae_quic_tls_ctx_unref(c->tlsctx);
    ae_runtime_unref(c->rt);
    free(c->close_pkt);
    free(c->pending);
    free(c);
}

static void start_period(qconn *c, qc_state st)
{
    c->state = st;
    app_close(c, st == QC_DRAINING ? AE_QCLOSE_PEER_CLOSED : AE_QCLOSE_CLOSED);
    ev_timer_stop(c->w->loop, &c->timer);
    ev_timer_set(&c->timer, 3.0 * (ev_tstamp)ngtcp2_conn_get_pto(c->conn) / NGTCP2_SECONDS, 0);
    ev_timer_start(c->w->loop, &c->timer);
}

/* Sends CONNECTION_CLOSE with c->err and enters the closing period (3 PTO), during which any
 * packet from the peer is answered with the same close (RFC 9000 §10.2.1). */
void ae_quic_conn_close_err(qconn *c)
{
    if (c->state != QC_OPEN)
        return;
    ae_qworker *qw = c->w->quic;
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, qw->tx,
                                                        AE_QUIC_MAX_PKT, &c->err, ae_quic_now());
    if (n <= 0 || (c->close_pkt = malloc((size_t)n)) == NULL) {
        ae_quic_conn_kill(c, AE_QCLOSE_CLOSED);
        return;
    }
    memcpy(c->close_pkt, qw->tx, (size_t)n);
    c->close_len = (size_t)n;
    conn_send(c, (struct sockaddr *)&c->remote, c->remotelen, (struct sockaddr *)&c->local,
              c->close_pkt, c->close_len);
    start_period(c, QC_CLOSING);
}

void ae_quic_conn_kick(qconn *c)
{
    if (c->state != QC_OPEN)
        return;
    if (c->ep->in_batch) {
        if (!c->is_dirty) {
            c->is_dirty = 1;
            c->dirty_next = c->ep->dirty;
            c->ep->dirty = c;
        }
        return;
    }
    ae_quic_conn_write(c);
}

/* Packets of one connection written back to back into qw->tx and sent with one sendmsg
 * (UDP GSO: every segment `gso` bytes but the last, which may be shorter). */
typedef struct {
    size_t len, gso, nseg;
    uint8_t ecn;
    struct sockaddr_storage to, from;
    socklen_t tolen, fromlen;
} gso_batch;

/* Sends the batch; on a full socket buffer keeps a copy (ngtcp2 considers it sent) for the
 * endpoint's write callback. Returns 0, or -1 when the connection must stop writing. */
static int batch_flush(qconn *c, gso_batch *b)
{
    ae_qworker *qw = c->w->quic;
    int rv;

    if (b->len == 0)
        return 0;
    rv = ae_quic_send_batch(c->ep, (struct sockaddr *)&b->to, b->tolen, (struct sockaddr *)&b->from,
                            qw->tx, b->len, b->gso, b->ecn);
    if (rv == AE_ERR_AGAIN) {
        c->pending = malloc(b->len); /* only when the socket buffer is full */
        if (c->pending != NULL) {
            memcpy(c->pending, qw->tx, b->len);
            c->pending_len = b->len;
            c->pending_gso = b->gso;
            c->pending_ecn = b->ecn;
            c->pending_to = b->to;
            c->pending_tolen = b->tolen;
            c->pending_from = b->from;
            c->pending_fromlen = b->fromlen;
            ae_quic_ep_block(c->ep);
        }
    }
    b->len = b->nseg = b->gso = 0;
    return rv == AE_ERR_AGAIN ? -1 : 0;
}

/* Adds the n-byte packet just written at qw->tx + b->len for path. Returns 0 to go on, -1 to
 * stop writing (socket full). */
static int batch_add(qconn *c, gso_batch *b, const ngtcp2_path *path, uint8_t ecn, size_t n)
{
    ae_qworker *qw = c->w->quic;
    if (conn_tunnel(c)) {
        /* site.return: tunnel: one reply frame per packet (no GSO), batched with the forward
         * frames; the packet is copied into the frame at once, so b stays empty. */
        conn_send_tunnel(c, (const struct sockaddr *)path->remote.addr,
                         (const struct sockaddr *)path->local.addr, ecn, qw->tx + b->len, n);
        return 0;
    }
    int same = b->nseg > 0 && ecn == b->ecn && path->remote.addrlen == b->tolen &&
               memcmp(path->remote.addr, &b->to, b->tolen) == 0 && n <= b->gso && !c->ep->no_gso;

    if (b->nseg > 0 && !same) {
        /* Send what is batched; the new packet moves to the front of the buffer. */
        size_t at = b->len;
        if (batch_flush(c, b) != 0) {
            /* The new packet is lost to the socket; QUIC's loss recovery resends its data. */
            return -1;
        }
        memmove(qw->tx, qw->tx + at, n);
    }
    if (b->nseg == 0) {
        b->gso = n;
        b->ecn = ecn;
        memcpy(&b->to, path->remote.addr, path->remote.addrlen);
        b->tolen = path->remote.addrlen;
        memcpy(&b->from, path->local.addr, path->local.addrlen);
        b->fromlen = path->local.addrlen;
    }
    b->len += n;
    b->nseg++;
    /* A short packet ends a GSO batch; so does a full one. */
    if (n < b->gso || b->nseg == AE_QUIC_GSO_SEGS || c->ep->no_gso)
        return batch_flush(c, b);
    return 0;
}

void ae_quic_conn_write(qconn *c)
{
    if (c->state != QC_OPEN || c->pending != NULL)
        return;
    ae_qworker *qw = c->w->quic;
    ngtcp2_tstamp ts = ae_quic_now();
    size_t maxpkt = ngtcp2_conn_get_max_tx_udp_payload_size(c->conn);
    if (maxpkt > AE_QUIC_MAX_PKT)
        maxpkt = AE_QUIC_MAX_PKT;
    size_t limit = ngtcp2_conn_get_send_quantum(c->conn) / maxpkt;
    if (limit < 2)
        limit = 2;
    if (limit > 64)
        limit = 64;
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    gso_batch b = {0};
    const ae_quic_app_ops *app = qw->app;
    for (size_t npkt = 0; npkt < limit;) {
        if (b.len + maxpkt > sizeof(qw->tx) && batch_flush(c, &b) != 0)
            break;
        int64_t sid = -1; /* >= 0 only from app->write_stream: c->app is set */
        int fin = 0;
        ngtcp2_vec vec[16];
        int nvec = 0;
        if (c->app != NULL && ngtcp2_conn_get_max_data_left(c->conn) > 0) {
            nvec = app->write_stream(c->app, &sid, &fin, vec, AE_ARRAY_LEN(vec));
            if (nvec < 0) { /* the application set the error */
                ae_quic_conn_close_err(c);
                return;
            }
        }
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
        ngtcp2_ssize ndatalen = -1;
        ngtcp2_pkt_info pi;
        ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, qw->tx + b.len, maxpkt,
                                                   &ndatalen, flags, sid, vec, (size_t)nvec, ts);
        if (n < 0) {
            switch (n) {
            case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                app->stream_blocked(c->app, sid);
                continue;
            case NGTCP2_ERR_STREAM_SHUT_WR:
                app->stream_shut_wr(c->app, sid);
                continue;
            case NGTCP2_ERR_WRITE_MORE:
                if (app->add_write_offset(c->app, sid, (size_t)ndatalen) == 0)
                    continue;
                break; /* the application set the error */
            default:
                ngtcp2_ccerr_set_liberr(&c->err, (int)n, NULL, 0);
                break;
            }
            ae_quic_conn_close_err(c);
            return;
        }
        if (ndatalen >= 0 && app->add_write_offset(c->app, sid, (size_t)ndatalen) != 0) {
            ae_quic_conn_close_err(c);
            return;
        }
        if (n == 0)
            break;
        npkt++;
        if (batch_add(c, &b, &ps.path, pi.ecn, (size_t)n) != 0)
            break;
    }
    if (b.len > 0)
        batch_flush(c, &b);
    ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
    arm_timer(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    qconn *c = t->data;
    if (c->state != QC_OPEN) {
        ae_quic_conn_kill(c, c->state == QC_DRAINING ? AE_QCLOSE_PEER_CLOSED : AE_QCLOSE_CLOSED);
        return;
    }
    int rv = ngtcp2_conn_handle_expiry(c->conn, ae_quic_now());
    if (rv != 0) {
        if (rv == NGTCP2_ERR_IDLE_CLOSE) {
            ae_count(&c->w->counters, AE_M_QUIC_IDLE_CLOSED, 1);
            ae_quic_conn_kill(c, AE_QCLOSE_IDLE_TIMEOUT);
            return;
        }
        ngtcp2_ccerr_set_liberr(&c->err, rv, NULL, 0);
        ae_quic_conn_close_err(c);
        return;
    }
    ae_quic_conn_write(c);
}

/* ---- ngtcp2 callbacks ---- */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    return ((qconn *)ref->user_data)->conn;
}

/* ---- 0-RTT hold (quic.early_data_shared: hold; docs/architecture.md "0-RTT policy") ---- */

/* How long the sites' shared record of a ClientHello must live: as long as any site could still
 * accept that ClientHello's early data, i.e. the ticket lifetime E (quic.early_data_max_age,
 * equal at every site, whole seconds as GnuTLS checks it; the record is made at the first
 * acceptance, after the session's full handshake), plus a margin for clock differences between
 * sites. */
static uint64_t claim_ttl_ms(const ae_conf *conf)
{
    return ((uint64_t)conf->quic.early_data_max_age_ms + 999) / 1000 * 1000 + 2000;
}

static void early_release(qconn *c, ae_metric how)
{
    if (!c->early_held)
        return;
    c->early_held = 0;
    ae_count(&c->w->counters, how, 1);
    if (c->claim != 0) {
        ae_claims_cancel(c->w->quic->claims, c->claim);
        c->claim = 0;
    }
    if (c->app != NULL && c->w->quic->app->early_release != NULL)
        c->w->quic->app->early_release(c->app);
}

static void claim_cb(void *owner, ae_claim_result res)
{
    qconn *c = owner;
    c->claim = 0;
    switch (res) {
    case AE_CLAIM_FIRST:
        if (c->state == QC_OPEN && c->early_held) {
            AE_CDEBUG(c->id, "quic: 0-RTT requests released: first use at any site");
            early_release(c, AE_M_QUIC_0RTT_RELEASED_REDIS);
            ae_quic_conn_kick(c);
        }
        break;
    case AE_CLAIM_SEEN:
        ae_count(&c->w->counters, AE_M_QUIC_0RTT_SEEN_ELSEWHERE, 1);
        AE_CDEBUG(c->id, "quic: 0-RTT ClientHello used before (shared record): its requests "
                         "wait for the handshake");
        break;
    default:
        ae_count(&c->w->counters, AE_M_QUIC_0RTT_CLAIM_ERRORS, 1);
        break;
    }
}

/* The ClientHello was processed and its early data accepted: with hold, the requests it
 * carries wait, and the shared record is asked (without waiting for it). */
static void early_hold(qconn *c)
{
    uint8_t id[AE_CLAIM_ID_LEN];
    ae_qworker *qw = c->w->quic;
    if (c->rt->conf->quic.early_data_shared != AE_EARLY_SHARED_HOLD)
        return;
    c->early_held = 1;
    ae_count(&c->w->counters, AE_M_QUIC_0RTT_HELD, 1);
    if (qw->claims != NULL && ae_quic_tls_early_id(c->tls, id))
        c->claim = ae_claims_send(qw->claims, id, claim_ttl_ms(c->rt->conf), claim_cb, c);
    if (c->claim == 0)
        ae_count(&c->w->counters, AE_M_QUIC_0RTT_CLAIM_UNSENT, 1);
}

int ae_quic_conn_early_held(const qconn *c)
{
    return c->early_held;
}

static int cb_handshake_completed(ngtcp2_conn *conn, void *ud)
{
    qconn *c = ud;
    c->hs_done = 1;
    ae_count(&c->w->counters, AE_M_QUIC_HANDSHAKES, 1);
    ae_count(&c->w->counters,
             ae_quic_tls_resumed(c->tls) ? AE_M_QUIC_HS_RESUMED : AE_M_QUIC_HS_FULL, 1);
    ae_quic_tls_sni(c->tls, c->sni, sizeof(c->sni));
    if (ae_quic_tls_send_ticket(c->tls) != 0)
        AE_CDEBUG(c->id, "quic: cannot send a session ticket");
    ae_quic_send_new_token(c);
    /* The client proved it holds the handshake keys: its 0-RTT requests are not a replay. */
    early_release(c, AE_M_QUIC_0RTT_RELEASED_HANDSHAKE);
    return 0;
}

/* Stream events go to the application once it has a session on c (before: data fails the
 * connection, anything else is ignored). */
static int cb_recv_stream_data(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t len, void *ud, void *sud)
{
    qconn *c = ud;
    if (c->app == NULL || c->w->quic->app->recv_stream_data(c->app, flags, sid, data, len) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_acked(ngtcp2_conn *conn, int64_t sid, uint64_t offset, uint64_t len, void *ud,
                    void *sud)
{
    qconn *c = ud;
    if (c->app != NULL && c->w->quic->app->acked_stream_data(c->app, sid, len) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t code, void *ud,
                           void *sud)
{
    qconn *c = ud;
    if (c->app != NULL && c->w->quic->app->stream_close(c->app, flags, sid, code) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_stream_reset(ngtcp2_conn *conn, int64_t sid, uint64_t final_size, uint64_t code,
                           void *ud, void *sud)
{
    qconn *c = ud;
    if (c->app != NULL && c->w->quic->app->stream_reset(c->app, sid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_stop_sending(ngtcp2_conn *conn, int64_t sid, uint64_t code, void *ud, void *sud)
{
    qconn *c = ud;
    if (c->app != NULL && c->w->quic->app->stream_reset(c->app, sid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_extend_max_stream_data(ngtcp2_conn *conn, int64_t sid, uint64_t max_data, void *ud,
                                     void *sud)
{
    qconn *c = ud;
    if (c->app != NULL && c->w->quic->app->extend_max_stream_data(c->app, sid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_extend_max_remote_bidi(ngtcp2_conn *conn, uint64_t max_streams, void *ud)
{
    qconn *c = ud;
    if (c->app != NULL)
        c->w->quic->app->extend_max_streams_bidi(c->app, max_streams);
    return 0;
}

static void cb_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
    ae_quic_rand_bytes(dest, len);
}

static int cb_new_cid(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *ud)
{
    qconn *c = ud;
    ae_quic_new_cid(c->ep, cid);
    if (ae_quic_reset_token(c->w, cid, token) != 0 || ae_quic_conn_cid_add(c, cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_remove_cid(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *ud)
{
    ae_quic_conn_cid_del(ud, cid);
    return 0;
}

static int cb_recv_tx_key(ngtcp2_conn *conn, ngtcp2_encryption_level level, void *ud)
{
    qconn *c = ud;
    if (level != NGTCP2_ENCRYPTION_LEVEL_1RTT)
        return 0;
    /* The ClientHello is processed (the server's 1-RTT key comes with its first flight): the
     * 0-RTT decision is made, whether or not the handshake ever completes (a replay does not).
     * A refused 0-RTT needs nothing from us: GnuTLS installed no early key, so ngtcp2 drops
     * the 0-RTT packets and the client sends its requests again in 1-RTT. */
    int early = ae_quic_tls_early_data(c->tls);
    if (early != 0)
        ae_count(&c->w->counters, early > 0 ? AE_M_QUIC_0RTT_ACCEPTED : AE_M_QUIC_0RTT_REJECTED, 1);
    if (early == -2)
        ae_count(&c->w->counters, AE_M_QUIC_0RTT_REFUSED_FULL, 1);
    if (early > 0 && c->app == NULL)
        early_hold(c);
    if (c->app != NULL)
        return 0;
    ae_qworker *qw = c->w->quic;
    if (qw->app == NULL || qw->app->setup(qw->app_ctx, c, &c->app) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static const ngtcp2_callbacks callbacks = {
    .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = cb_handshake_completed,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = cb_recv_stream_data,
    .acked_stream_data_offset = cb_acked,
    .stream_close = cb_stream_close,
    .rand = cb_rand,
    .get_new_connection_id = cb_new_cid,
    .remove_connection_id = cb_remove_cid,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = cb_stream_reset,
    .extend_max_remote_streams_bidi = cb_extend_max_remote_bidi,
    .extend_max_stream_data = cb_extend_max_stream_data,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .stream_stop_sending = cb_stop_sending,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
    .recv_tx_key = cb_recv_tx_key,
};

/* ---- receiving ---- */

void ae_quic_drop(ae_qep *ep)
{
    ae_count(&ep->w->counters, AE_M_QUIC_PKTS_DROPPED, 1);
}

void ae_quic_conn_read(qconn *c, const ae_dgram *dg)
{
    if (c->state == QC_CLOSING) {
        conn_send(c, dg->peer, dg->peerlen, dg->local, c->close_pkt, c->close_len);
        return;
    }
    if (c->state != QC_OPEN)
        return;
    ngtcp2_path path = {{(ngtcp2_sockaddr *)dg->local, dg->locallen},
                        {(ngtcp2_sockaddr *)dg->peer, dg->peerlen},
                        NULL};
    ngtcp2_pkt_info pi = {.ecn = dg->ecn};
    int rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, dg->data, dg->len, ae_quic_now());
    if (rv != 0) {
        switch (rv) {
        case NGTCP2_ERR_DRAINING:
            start_period(c, QC_DRAINING);
            return;
        case NGTCP2_ERR_DROP_CONN:
            ae_quic_conn_kill(c, AE_QCLOSE_DROPPED);
            return;
        case NGTCP2_ERR_RETRY: /* Retry is decided in admit_initial; too late now: drop */
            ae_quic_conn_kill(c, AE_QCLOSE_RETRY);
            return;
        case NGTCP2_ERR_CRYPTO:
            if (!c->err_set)
                ngtcp2_ccerr_set_tls_alert(&c->err, ngtcp2_conn_get_tls_alert(c->conn), NULL, 0);
            break;
        default:
            if (!c->err_set)
                ngtcp2_ccerr_set_liberr(&c->err, rv, NULL, 0);
            break;
        }
        AE_CDEBUG(c->id, "quic: read: %s", ngtcp2_strerror(rv));
        ae_quic_conn_close_err(c);
        return;
    }
    /* The current path: replies go where the last packet came from (ngtcp2 validates new
     * paths itself and reports the one to use in each written packet), through the site that
     * packet came from when this site's site.return is tunnel. */
    conn_note_entry(c, dg);
    ae_quic_conn_kick(c);
}

/* tt: the kind of valid token hd carries (the address is validated: no amplification limit),
 * NGTCP2_TOKEN_TYPE_UNKNOWN for none; odcid: the client's first DCID when tt is RETRY. */
void ae_quic_conn_new(ae_qep *ep, const ae_dgram *dg, const ngtcp2_pkt_hd *hd, ngtcp2_token_type tt,
                      const ngtcp2_cid *odcid)
{
    ae_worker *w = ep->w;
    ae_qworker *qw = w->quic;
    ae_runtime *rt = w->rt;
    if (rt == NULL || qw->tls == NULL || ep->l->index >= rt->conf->nlisteners || w->stopping) {
        ae_quic_drop(ep);
        return;
    }
    if (qw->nconns >= rt->conf->tune.max_connections) {
        ae_count(&w->counters, AE_M_CONN_LIMIT, 1);
        ae_worker_overload(w, AE_OVL_QUIC_LIMIT, 0);
        ae_quic_drop(ep);
        return;
    }
    qconn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        ae_quic_drop(ep);
        return;
    }
    c->ep = ep;
    c->w = w;
    c->id = w->next_conn_id++;
    c->rt = ae_runtime_ref(rt);
    c->lis = &rt->conf->listeners[ep->l->index];
    c->pool = &rt->pools[c->lis->upstream_index];
    c->tlsctx = ae_quic_tls_ctx_ref(qw->tls);
    c->ref.get_conn = get_conn;
    c->ref.user_data = c;
    c->started = ev_now(w->loop);
    memcpy(&c->remote, dg->peer, dg->peerlen);
    c->remotelen = dg->peerlen;
    memcpy(&c->local, dg->local, dg->locallen);
    c->locallen = dg->locallen;
    ngtcp2_ccerr_default(&c->err);
    ev_timer_init(&c->timer, timer_cb, 0, 0);
    c->timer.data = c;
    c->next = ep->conns;
    if (ep->conns)
        ep->conns->prev = c;
    ep->conns = c;
    qw->nconns++;
    ae_count(&w->counters, AE_M_QUIC_CONN_OPENED, 1);

    ngtcp2_cid scid;
    ae_quic_new_cid(ep, &scid);
    ngtcp2_settings settings;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = ae_quic_now();
    settings.handshake_timeout =
        (ngtcp2_duration)rt->conf->timeouts.handshake_ms * NGTCP2_MILLISECONDS;
    settings.cc_algo = NGTCP2_CC_ALGO_CUBIC;
    settings.max_tx_udp_payload_size = AE_QUIC_MAX_PKT;
    ngtcp2_transport_params params;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = AE_QUIC_STREAM_WINDOW;
    params.initial_max_stream_data_bidi_remote = AE_QUIC_STREAM_WINDOW; /* request bodies */
    params.initial_max_stream_data_uni = AE_QUIC_STREAM_WINDOW;
    params.initial_max_data = 4 * 1024 * 1024;
    params.initial_max_streams_bidi = 100;
    params.initial_max_streams_uni = 3;
    params.max_idle_timeout =
        (ngtcp2_duration)rt->conf->timeouts.client_idle_ms * NGTCP2_MILLISECONDS;
    params.max_udp_payload_size = max_udp_payload(rt->conf);
    params.active_connection_id_limit = 7;
    params.original_dcid = hd->dcid;
    params.original_dcid_present = 1;
    if (tt != NGTCP2_TOKEN_TYPE_UNKNOWN) {
        settings.token = hd->token;
        settings.tokenlen = hd->tokenlen;
        settings.token_type = tt;
    }
    if (tt == NGTCP2_TOKEN_TYPE_RETRY) {
        params.original_dcid = *odcid;
        params.retry_scid = hd->dcid;
        params.retry_scid_present = 1;
    }
    params.stateless_reset_token_present = 1;
    ngtcp2_path path = {{(ngtcp2_sockaddr *)dg->local, dg->locallen},
                        {(ngtcp2_sockaddr *)dg->peer, dg->peerlen},
                        NULL};
    if (ae_quic_reset_token(w, &scid, params.stateless_reset_token) != 0 ||
        ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, &path, hd->version, &callbacks,
                               &settings, &params, NULL, c) != 0) {
        ae_quic_conn_kill(c, AE_QCLOSE_QUIC_ALLOC);
        return;
    }
    if (ae_quic_tls_new(c->tlsctx, c->conn, &c->ref, qw->sec != NULL ? qw->sec->ticket : NULL,
                        &c->tls) != 0) {
        ae_quic_conn_kill(c, AE_QCLOSE_TLS_ALLOC);
        return;
    }
    if (ae_quic_conn_cid_add(c, &hd->dcid) != 0 || ae_quic_conn_cid_add(c, &scid) != 0) {
        ae_quic_conn_kill(c, AE_QCLOSE_NOMEM);
        return;
    }
    ae_quic_conn_read(c, dg);
}

/* ---- graceful drain (worker stopping) ----
 * Every open connection gets a GOAWAY notice at once (the application's goaway step 0; HTTP/3:
 * RFC 9114 §5.2, no new requests), the final GOAWAY one tick later (at least an RTT for
 * requests already in flight to arrive), and is closed with the application's no_error
 * (H3_NO_ERROR) once its last request stream is done. Handshakes in progress are
 * closed at once. The listener keeps reading datagrams until its last connection is gone; the
 * worker waits for ae_quic_nconns() == 0 or the drain timeout. */

#define AE_QUIC_DRAIN_TICK 0.05 /* seconds between drain steps */

static void drain_conn(qconn *c, ev_tstamp now)
{
    /* A site drain (anycast.c) only sends GOAWAY: closings run their course, handshakes
     * complete and get their GOAWAY on a later tick. */
    if (!c->w->stopping && (c->state != QC_OPEN || !c->hs_done || c->app == NULL))
        return;
    if (c->state == QC_CLOSING || c->state == QC_DRAINING) {
        /* Shutting down: its CONNECTION_CLOSE went out (or the peer closed); the process does
         * not wait out the 3xPTO closing period. */
        ae_quic_conn_kill(c, AE_QCLOSE_SHUTDOWN);
        return;
    }
    if (c->state != QC_OPEN)
        return;
    const ae_quic_app_ops *app = c->w->quic->app;
    if (!c->hs_done || c->app == NULL) {
        ngtcp2_ccerr_set_application_error(&c->err, ae_quic_app_no_error(c->w), NULL, 0);
        ae_quic_conn_close_err(c);
        return;
    }
    if (c->goaway == 0) {
        app->goaway(c->app, 0);
        c->goaway = 1;
        c->goaway_at = now;
        return;
    }
    ev_tstamp rtt = (ev_tstamp)ngtcp2_conn_get_pto(c->conn) / NGTCP2_SECONDS;
    if (c->goaway == 1 && now - c->goaway_at >= rtt) {
        app->goaway(c->app, 1);
        c->goaway = 2;
        return; /* let the final GOAWAY leave before a close */
    }
    if (c->goaway == 2 && app->nstreams(c->app) == 0) {
        ngtcp2_ccerr_set_application_error(&c->err, ae_quic_app_no_error(c->w), NULL, 0);
        ae_quic_conn_close_err(c);
    }
}

static void drain_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ae_worker *w = t->data;
    ev_tstamp now = ev_now(loop);
    for (ae_wlistener *l = w->listeners; l != NULL; l = l->next) {
        if (l->qep == NULL)
            continue;
        qconn *next;
        for (qconn *c = l->qep->conns; c != NULL; c = next) {
            next = c->next;
            drain_conn(c, now);
        }
    }
    if (w->quic->nconns == 0 && (w->stopping || !w->site_draining))
        ev_timer_stop(loop, t);
}

int ae_quic_listener_drain(ae_worker *w, ae_wlistener *l)
{
    ae_qep *ep = l->qep;
    if (ep == NULL || ep->conns == NULL)
        return 0;
    ae_qworker *qw = w->quic;
    if (!ev_is_active(&qw->drain_tick)) {
        ev_timer_init(&qw->drain_tick, drain_tick_cb, AE_QUIC_DRAIN_TICK, AE_QUIC_DRAIN_TICK);
        qw->drain_tick.data = w;
        ev_timer_start(w->loop, &qw->drain_tick);
    }
    ev_tstamp now = ev_now(w->loop);
    qconn *next;
    for (qconn *c = ep->conns; c != NULL; c = next) {
        next = c->next;
        drain_conn(c, now);
    }
    return 1;
}

size_t ae_quic_nconns(ae_worker *w)
{
    return w->quic != NULL ? w->quic->nconns : 0;
}

void ae_quic_runtime(ae_worker *w, ae_runtime *rt)
{
    int any = 0;
    for (size_t i = 0; i < rt->conf->nlisteners; i++)
        any |= rt->conf->listeners[i].protocol == AE_LPROTO_QUIC;
    if (!any)
        return;
    ae_qworker *qw = ae_quic_qw_get(w);
    if (qw == NULL)
        return;
    char err[512];
    ae_quic_tls_ctx *ctx;
    if (ae_quic_tls_ctx_new(rt->conf, &ctx, err, sizeof(err)) != 0) {
        AE_ERROR("quic: %s%s", err, qw->tls ? " (keeping the previous credentials)" : "");
        return;
    }
    ae_quic_tls_ctx_unref(qw->tls);
    qw->tls = ctx;
    qw->tls_rt = rt;
    if (rt->conf->quic.early_data_shared == AE_EARLY_SHARED_HOLD && qw->claims == NULL) {
        /* state.* is read at start only: the first runtime that asks sets the connection up;
         * later reloads reuse it. */
        if (ae_claims_new(w->loop, rt->conf, &qw->claims, err, sizeof(err)) != 0)
            AE_ERROR("quic: early_data_shared: %s (0-RTT requests wait for their handshakes)", err);
    }
}

void ae_quic_gc(ae_worker *w)
{
    ae_qworker *qw = w->quic;
    if (qw == NULL)
        return;
    if (qw->app != NULL && qw->app->gc != NULL)
        qw->app->gc(qw->app_ctx); /* streams first: they may point at their connections */
    while (qw->dead != NULL) {
        qconn *c = qw->dead;
        qw->dead = c->next;
        conn_free(c);
    }
}

void ae_quic_free(ae_worker *w)
{
    if (w->quic == NULL)
        return;
    ae_quic_gc(w);
    ev_timer_stop(w->loop, &w->quic->drain_tick);
    if (w->quic->app != NULL && w->quic->app->release != NULL)
        w->quic->app->release(w->quic->app_ctx);
    ae_quic_tls_ctx_unref(w->quic->tls);
    ae_claims_free(w->quic->claims);
    ae_qsecrets_unref(w->quic->sec);
    ae_cid_keys_free(w->quic->cidk);
    free(w->quic);
    w->quic = NULL;
}

/* ---- site drain (anycast.c): GOAWAY without stopping ---- */

void ae_quic_site_drain(ae_worker *w, int on)
{
    ae_qworker *qw = w->quic;
    if (qw == NULL)
        return; /* no QUIC listener */
    if (!on) {
        ev_timer_stop(w->loop, &qw->drain_tick);
        return;
    }
    if (!ev_is_active(&qw->drain_tick)) {
        ev_timer_init(&qw->drain_tick, drain_tick_cb, AE_QUIC_DRAIN_TICK, AE_QUIC_DRAIN_TICK);
        qw->drain_tick.data = w;
        ev_timer_start(w->loop, &qw->drain_tick);
    }
}

/* ---- a connection, for the application ---- */

void ae_quic_conn_set_app_error(qconn *c, uint64_t code)
{
    ngtcp2_ccerr_set_application_error(&c->err, code, NULL, 0);
    c->err_set = 1;
}

ngtcp2_conn *ae_quic_conn_ngtcp2(qconn *c)
{
    return c->conn;
}

uint64_t ae_quic_conn_id(const qconn *c)
{
    return c->id;
}

ae_worker *ae_quic_conn_worker(const qconn *c)
{
    return c->w;
}

ae_runtime *ae_quic_conn_runtime(const qconn *c)
{
    return c->rt;
}

const ae_conf_listener *ae_quic_conn_listener(const qconn *c)
{
    return c->lis;
}

ae_pool *ae_quic_conn_pool(const qconn *c)
{
    return c->pool;
}

const struct sockaddr *ae_quic_conn_remote(const qconn *c, socklen_t *len)
{
    *len = c->remotelen;
    return (const struct sockaddr *)&c->remote;
}

const char *ae_quic_conn_sni(const qconn *c)
{
    return c->sni;
}
