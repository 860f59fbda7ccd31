/*
 * QUIC endpoint (RFC 9000/9001/9002 through ngtcp2): one per worker per `protocol: quic`
 * listener, on the worker's member of the listener's SO_REUSEPORT UDP group.
 *
 * Datagrams are read in batches (recvmmsg), routed by destination connection ID through an
 * open-addressing table (all CIDs a connection issued plus the client's original DCID), and
 * handed to ngtcp2. Connections touched by a batch are written once at its end, so ACKs and
 * stream data coalesce. Each connection has one ev_timer armed at ngtcp2_conn_get_expiry().
 * The protocol on the streams (HTTP/3, h3.c) is reached only through the application ops the
 * worker registered (ae_quic_app_ops, proxy/quic/quic.h), datagrams for connections elsewhere only
 * through the forwarding hooks (ae_quic_hooks).
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

/* ---- small utilities ---- */

ngtcp2_tstamp ae_quic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

static void rand_bytes(void *buf, size_t n)
{
    if (ae_quic_rand(buf, n) != 0)
        abort(); /* no randomness: nothing safe to do */
}

static ae_qworker *qw_get(ae_worker *w)
{
    if (w->quic == NULL) {
        ae_qworker *qw = calloc(1, sizeof(*qw));
        if (qw == NULL)
            return NULL;
        /* Until the first AE_MSG_SECRETS arrives (the main thread sends it before the worker
         * starts), a random reset secret keeps resets valid within this process. */
        rand_bytes(qw->reset_secret, sizeof(qw->reset_secret));
        rand_bytes(qw->token_key, sizeof(qw->token_key));
        w->quic = qw;
    }
    return w->quic;
}

void ae_quic_secrets(ae_worker *w, ae_qsecrets *sec)
{
    ae_qworker *qw = qw_get(w);
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

/* ---- connection-ID table ---- */

static uint64_t cid_hash(const ae_qep *ep, const uint8_t *cid, size_t len)
{
    /* Keyed mix: client-chosen DCIDs must not let a peer aim at one probe chain. */
    uint64_t h = ep->hkey[0] ^ (len * 0x9e3779b97f4a7c15ull);
    for (size_t i = 0; i < len; i++) {
        h ^= cid[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    h ^= ep->hkey[1];
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static ae_cid_slot *cid_find(ae_qep *ep, const uint8_t *cid, size_t len)
{
    if (ep->cap == 0 || len == 0 || len > NGTCP2_MAX_CIDLEN)
        return NULL;
    size_t mask = ep->cap - 1;
    for (size_t i = cid_hash(ep, cid, len) & mask;; i = (i + 1) & mask) {
        ae_cid_slot *s = &ep->slots[i];
        if (s->len == 0)
            return NULL;
        if (s->len == len && memcmp(s->cid, cid, len) == 0)
            return s;
    }
}

static int cid_resize(ae_qep *ep, size_t cap)
{
    ae_cid_slot *old = ep->slots;
    size_t oldcap = ep->cap;
    ep->slots = calloc(cap, sizeof(*ep->slots));
    if (ep->slots == NULL) {
        ep->slots = old;
        return AE_ERR_NOMEM;
    }
    ep->cap = cap;
    ep->used = ep->n = 0;
    for (size_t i = 0; i < oldcap; i++) {
        ae_cid_slot *s = &old[i];
        if (s->len == 0 || s->len == 0xff)
            continue;
        size_t mask = cap - 1, j = cid_hash(ep, s->cid, s->len) & mask;
        while (ep->slots[j].len != 0)
            j = (j + 1) & mask;
        ep->slots[j] = *s;
        ep->used++;
        ep->n++;
    }
    free(old);
    return 0;
}

static int cid_add(ae_qep *ep, const ngtcp2_cid *cid, qconn *c)
{
    if ((ep->used + 1) * 2 > ep->cap) {
        size_t cap = ep->cap ? ep->cap : 64;
        while ((ep->n + 1) * 2 > cap / 2) /* keep the live load at most 1/4 after a resize */
            cap *= 2;
        if (cid_resize(ep, cap) != 0)
            return AE_ERR_NOMEM;
    }
    size_t mask = ep->cap - 1;
    size_t i = cid_hash(ep, cid->data, cid->datalen) & mask;
    while (ep->slots[i].len != 0 && ep->slots[i].len != 0xff)
        i = (i + 1) & mask;
    if (ep->slots[i].len == 0)
        ep->used++;
    ep->slots[i].len = (uint8_t)cid->datalen;
    memcpy(ep->slots[i].cid, cid->data, cid->datalen);
    ep->slots[i].c = c;
    ep->n++;
    return 0;
}

static void cid_del(ae_qep *ep, const ngtcp2_cid *cid)
{
    ae_cid_slot *s = cid_find(ep, cid->data, cid->datalen);
    if (s != NULL) {
        s->len = 0xff;
        s->c = NULL;
        ep->n--;
    }
}

static int conn_cid_add(qconn *c, const ngtcp2_cid *cid)
{
    if (c->ncids == AE_QUIC_MAX_CIDS || cid_add(c->ep, cid, c) != 0)
        return AE_ERR_NOMEM;
    c->cids[c->ncids++] = *cid;
    return 0;
}

static void conn_cid_del(qconn *c, const ngtcp2_cid *cid)
{
    for (size_t i = 0; i < c->ncids; i++) {
        if (ngtcp2_cid_eq(&c->cids[i], cid)) {
            cid_del(c->ep, cid);
            c->cids[i] = c->cids[--c->ncids];
            return;
        }
    }
}

/* Every connection ID this server issues: QUIC-LB encoded {epoch, site, worker, nonce}
 * (state/cid.h) under the ring's current CID key, so any site holding the ring can tell whose
 * it is. Random only before the first secrets arrive. Never a CID already in the table. */
static void quic_new_cid(ae_qep *ep, ngtcp2_cid *cid)
{
    ae_qworker *qw = ep->w->quic;
    uint16_t site = ep->w->rt != NULL ? (uint16_t)ep->w->rt->conf->site.id : 1;

    _Static_assert(AE_QUIC_CIDLEN == AE_CID_LEN, "one CID length");
    do {
        cid->datalen = AE_QUIC_CIDLEN;
        if (qw->cidk == NULL || ae_cid_encode(qw->cidk, site, (uint8_t)ep->w->id, cid->data) != 0)
            rand_bytes(cid->data, AE_QUIC_CIDLEN);
    } while (cid_find(ep, cid->data, cid->datalen) != NULL);
}

/* The stateless-reset token of a CID: from the reset secret of the ring key of the CID's
 * epoch, so every site derives the same token. AE_ERR_NOTFOUND when that key is not in the
 * ring (the CID is too old, or not ours). */
static int reset_token(ae_worker *w, const ngtcp2_cid *cid, uint8_t *token)
{
    ae_qworker *qw = w->quic;
    const uint8_t *secret = qw->reset_secret;

    if (qw->sec != NULL &&
        ae_qsecrets_reset_secret(qw->sec, cid->datalen > 0 ? cid->data[0] >> 5 : -1, &secret) != 0)
        return AE_ERR_NOTFOUND;
    return ngtcp2_crypto_generate_stateless_reset_token(token, secret, 32, cid) == 0 ? 0
                                                                                     : AE_ERR_TLS;
}

/* ---- sending (the socket side is in quic_io.c) ---- */

/* One datagram from `from` (NULL = the socket's address) to `to`, no ECN codepoint. */
static int ep_send(ae_qep *ep, const struct sockaddr *to, socklen_t tolen,
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

/* A single datagram of c outside conn_write (CONNECTION_CLOSE): the tunnel or the socket. */
static void conn_send(qconn *c, const struct sockaddr *to, socklen_t tolen,
                      const struct sockaddr *from, const uint8_t *data, size_t len)
{
    if (conn_tunnel(c))
        conn_send_tunnel(c, to, from, 0, data, len);
    else
        ep_send(c->ep, to, tolen, from, data, len);
}

static void ep_block(ae_qep *ep)
{
    if (!ep->wblocked) {
        ep->wblocked = 1;
        ev_io_start(ep->w->loop, &ep->wio);
    }
}

/* ---- connection life cycle ---- */

static void conn_write(qconn *c);

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
static uint64_t app_no_error(ae_worker *w)
{
    return w->quic->app != NULL ? w->quic->app->no_error : 0;
}

/* Why a connection ended, for anyedge_quic_connections_closed_by_reason_total: the period it
 * was in (draining: the peer closed; closing: we did) or the reason given to conn_kill. */
static ae_quic_close_cause close_cause(qc_state was, ae_quic_close reason)
{
    if (reason == AE_QCLOSE_IDLE_TIMEOUT)
        return AE_QCAUSE_IDLE_TIMEOUT;
    if (reason == AE_QCLOSE_SHUTDOWN)
        return AE_QCAUSE_SHUTDOWN;
    if (was == QC_DRAINING)
        return AE_QCAUSE_PEER_CLOSED;
    if (was == QC_CLOSING)
        return AE_QCAUSE_LOCAL_CLOSE;
    return AE_QCAUSE_ERROR;
}

/* Detaches c from everything (CIDs, streams, lists, timer) and queues it for gc. */
static void conn_kill(qconn *c, ae_quic_close reason)
{
    if (c->state == QC_DEAD)
        return;
    qc_state was = c->state;
    ae_worker *w = c->w;
    ae_qep *ep = c->ep;
    AE_CDEBUG(c->id, "quic connection closed: %s", ae_quic_close_names[reason]);
    app_close(c, reason);
    for (size_t i = 0; i < c->ncids; i++)
        cid_del(ep, &c->cids[i]);
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
    ae_count(&w->counters, (ae_metric)(AE_M_QUIC_CLOSE_B0 + close_cause(was, reason)), 1);
}

static void conn_free(qconn *c)
{
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
static void conn_close_err(qconn *c)
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
        conn_kill(c, AE_QCLOSE_CLOSED);
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
    conn_write(c);
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
            ep_block(c->ep);
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

static void conn_write(qconn *c)
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
                conn_close_err(c);
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
            conn_close_err(c);
            return;
        }
        if (ndatalen >= 0 && app->add_write_offset(c->app, sid, (size_t)ndatalen) != 0) {
            conn_close_err(c);
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
        conn_kill(c, c->state == QC_DRAINING ? AE_QCLOSE_PEER_CLOSED : AE_QCLOSE_CLOSED);
        return;
    }
    int rv = ngtcp2_conn_handle_expiry(c->conn, ae_quic_now());
    if (rv != 0) {
        if (rv == NGTCP2_ERR_IDLE_CLOSE) {
            ae_count(&c->w->counters, AE_M_QUIC_IDLE_CLOSED, 1);
            conn_kill(c, AE_QCLOSE_IDLE_TIMEOUT);
            return;
        }
        ngtcp2_ccerr_set_liberr(&c->err, rv, NULL, 0);
        conn_close_err(c);
        return;
    }
    conn_write(c);
}

/* ---- ngtcp2 callbacks ---- */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    return ((qconn *)ref->user_data)->conn;
}

static void send_new_token(qconn *c);

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
    send_new_token(c);
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
    rand_bytes(dest, len);
}

static int cb_new_cid(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *ud)
{
    qconn *c = ud;
    quic_new_cid(c->ep, cid);
    if (reset_token(c->w, cid, token) != 0 || conn_cid_add(c, cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_remove_cid(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *ud)
{
    conn_cid_del(ud, cid);
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

static void drop(ae_qep *ep)
{
    ae_count(&ep->w->counters, AE_M_QUIC_PKTS_DROPPED, 1);
}

static void conn_read(qconn *c, const ae_dgram *dg)
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
            conn_kill(c, AE_QCLOSE_DROPPED);
            return;
        case NGTCP2_ERR_RETRY: /* Retry is decided in admit_initial; too late now: drop */
            conn_kill(c, AE_QCLOSE_RETRY);
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
        conn_close_err(c);
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
static void conn_new(ae_qep *ep, const ae_dgram *dg, const ngtcp2_pkt_hd *hd, ngtcp2_token_type tt,
                     const ngtcp2_cid *odcid)
{
    ae_worker *w = ep->w;
    ae_qworker *qw = w->quic;
    ae_runtime *rt = w->rt;
    if (rt == NULL || qw->tls == NULL || ep->l->index >= rt->conf->nlisteners || w->stopping) {
        drop(ep);
        return;
    }
    if (qw->nconns >= rt->conf->tune.max_connections) {
        ae_count(&w->counters, AE_M_CONN_LIMIT, 1);
        drop(ep);
        return;
    }
    qconn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        drop(ep);
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
    quic_new_cid(ep, &scid);
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
    params.max_udp_payload_size = AE_QUIC_RX_BUF;
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
    if (reset_token(w, &scid, params.stateless_reset_token) != 0 ||
        ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, &path, hd->version, &callbacks,
                               &settings, &params, NULL, c) != 0) {
        conn_kill(c, AE_QCLOSE_QUIC_ALLOC);
        return;
    }
    if (ae_quic_tls_new(c->tlsctx, c->conn, &c->ref, qw->sec != NULL ? qw->sec->ticket : NULL,
                        &c->tls) != 0) {
        conn_kill(c, AE_QCLOSE_TLS_ALLOC);
        return;
    }
    if (conn_cid_add(c, &hd->dcid) != 0 || conn_cid_add(c, &scid) != 0) {
        conn_kill(c, AE_QCLOSE_NOMEM);
        return;
    }
    conn_read(c, dg);
}

static void send_version_negotiation(ae_qep *ep, const ae_dgram *dg, const ngtcp2_version_cid *vc)
{
    static const uint32_t sv[] = {NGTCP2_PROTO_VER_V1, NGTCP2_PROTO_VER_V2};
    uint8_t buf[256], r;
    rand_bytes(&r, 1);
    ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(
        buf, sizeof(buf), r, vc->scid, vc->scidlen, vc->dcid, vc->dcidlen, sv, AE_ARRAY_LEN(sv));
    if (n > 0 && ep_send(ep, dg->peer, dg->peerlen, dg->local, buf, (size_t)n) == 0)
        ae_count(&ep->w->counters, AE_M_QUIC_VN_SENT, 1);
}

/* A short-header packet for a CID we do not know: a stateless reset (RFC 9000 §10.3), always
 * smaller than the packet that caused it so two endpoints cannot loop. */
static void send_stateless_reset(ae_qep *ep, const ae_dgram *dg, const uint8_t *dcid,
                                 size_t dcidlen)
{
    if (dcidlen != AE_QUIC_CIDLEN ||
        dg->len < 1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN + 1)
        return;
    ngtcp2_cid cid;
    ngtcp2_cid_init(&cid, dcid, dcidlen);
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN], rnd[64], buf[128];
    if (reset_token(ep->w, &cid, token) != 0)
        return;
    size_t randlen = dg->len - 2 - NGTCP2_STATELESS_RESET_TOKENLEN;
    if (randlen > sizeof(rnd))
        randlen = sizeof(rnd);
    rand_bytes(rnd, randlen);
    ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, sizeof(buf), token, rnd, randlen);
    if (n > 0 && ep_send(ep, dg->peer, dg->peerlen, dg->local, buf, (size_t)n) == 0)
        ae_count(&ep->w->counters, AE_M_QUIC_RESET_SENT, 1);
}

/* ---- address validation: Retry and NEW_TOKEN (RFC 9000 §8.1) ----
 *
 * Both token kinds are ngtcp2_crypto's AEAD tokens under the ring's token key ("quic-token" of
 * the current ring key; every key of the snapshot verifies), so a token from any site is good
 * at every site. Retry tokens bind the client's address and port, the original DCID and a
 * 10-second lifetime; NEW_TOKEN tokens bind the client's IP address and quic.token_lifetime, and
 * are single-use within a site (process-wide table of fingerprints until they expire, conf/seen.h;
 * fail closed: a full table means a Retry, not a second use). */

#define AE_QUIC_RETRY_TOKEN_TIMEOUT (10 * NGTCP2_SECONDS)
#define AE_QUIC_TOKEN_SLOTS         (1u << 16)

static pthread_mutex_t tokens_mu = PTHREAD_MUTEX_INITIALIZER;
static ae_seen *tokens_seen;

/* Key i of the token keys (0 = current), NULL past the last. */
static const uint8_t *token_key(ae_qworker *qw, size_t i)
{
    if (qw->sec == NULL)
        return i == 0 ? qw->token_key : NULL;
    if (i >= qw->sec->ring.nkeys)
        return NULL;
    /* current first, then the others in ring order */
    size_t idx = i == 0 ? qw->sec->cur : (i <= qw->sec->cur ? i - 1 : i);
    return qw->sec->token[idx];
}

/* retry: auto: counts this new connection; is the worker above quic.retry_threshold (this
 * second or the one before)? */
static int retry_wanted(ae_qworker *qw, const ae_conf *conf)
{
    if (conf->quic.retry == AE_QRETRY_OFF)
        return 0;
    if (conf->quic.retry == AE_QRETRY_ALWAYS)
        return 1;
    uint64_t sec = ae_quic_now() / NGTCP2_SECONDS;
    if (sec != qw->rate_sec) {
        qw->rate_prev = sec == qw->rate_sec + 1 ? qw->rate_cur : 0;
        qw->rate_cur = 0;
        qw->rate_sec = sec;
    }
    qw->rate_cur++;
    return qw->rate_cur > conf->quic.retry_threshold || qw->rate_prev > conf->quic.retry_threshold;
}

static void send_retry(ae_qep *ep, const ae_dgram *dg, const ngtcp2_pkt_hd *hd)
{
    ae_qworker *qw = ep->w->quic;
    uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN2], buf[NGTCP2_MAX_UDP_PAYLOAD_SIZE];
    ngtcp2_cid scid;
    quic_new_cid(ep, &scid); /* the client's next DCID: ours, QUIC-LB encoded */
    ngtcp2_ssize tlen = ngtcp2_crypto_generate_retry_token2(
        token, token_key(qw, 0), 32, hd->version, (const ngtcp2_sockaddr *)dg->peer,
        (ngtcp2_socklen)dg->peerlen, &scid, &hd->dcid, ae_quic_now());
    if (tlen < 0)
        return;
    ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version, &hd->scid, &scid,
                                               &hd->dcid, token, (size_t)tlen);
    if (n > 0 && ep_send(ep, dg->peer, dg->peerlen, dg->local, buf, (size_t)n) == 0)
        ae_count(&ep->w->counters, AE_M_QUIC_RETRY_SENT, 1);
}

/* An Initial whose Retry token is readable but wrong (address, lifetime, CID): CONNECTION_CLOSE
 * with INVALID_TOKEN from no state (RFC 9000 §8.1.2). Smaller than the Initial. */
static void send_invalid_token(ae_qep *ep, const ae_dgram *dg, const ngtcp2_pkt_hd *hd)
{
    uint8_t buf[256];
    ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(buf, sizeof(buf), hd->version, &hd->scid,
                                                          &hd->dcid, NGTCP2_INVALID_TOKEN, NULL, 0);
    if (n > 0)
        ep_send(ep, dg->peer, dg->peerlen, dg->local, buf, (size_t)n);
}

/* 0 and *odcid for a valid Retry token; NGTCP2_CRYPTO_ERR_UNREADABLE_TOKEN when no key opens
 * it; another error when a key opens it and it does not hold. */
static int verify_retry_token(ae_qworker *qw, const ngtcp2_pkt_hd *hd,
                              const struct sockaddr *remote, socklen_t remotelen, ngtcp2_cid *odcid)
{
    int rv = NGTCP2_CRYPTO_ERR_UNREADABLE_TOKEN;
    ngtcp2_tstamp now = ae_quic_now();
    const uint8_t *key;
    for (size_t i = 0; (key = token_key(qw, i)) != NULL; i++) {
        rv = ngtcp2_crypto_verify_retry_token2(
            odcid, hd->token, hd->tokenlen, key, 32, hd->version, (const ngtcp2_sockaddr *)remote,
            (ngtcp2_socklen)remotelen, &hd->dcid, AE_QUIC_RETRY_TOKEN_TIMEOUT, now);
        if (rv != NGTCP2_CRYPTO_ERR_UNREADABLE_TOKEN)
            return rv;
    }
    return rv;
}

/* AE_SEEN_NEW for a valid NEW_TOKEN token seen here for the first time, AE_SEEN_DUP for a
 * valid one already used at this site, AE_SEEN_FULL when it cannot be recorded, -1 invalid. */
static int verify_regular_token(ae_qworker *qw, const ae_conf *conf, const ngtcp2_pkt_hd *hd,
                                const struct sockaddr *remote, socklen_t remotelen)
{
    ngtcp2_tstamp now = ae_quic_now();
    ngtcp2_duration life = (ngtcp2_duration)conf->quic.token_lifetime_ms * NGTCP2_MILLISECONDS;
    const uint8_t *key;
    for (size_t i = 0; (key = token_key(qw, i)) != NULL; i++) {
        if (ngtcp2_crypto_verify_regular_token(hd->token, hd->tokenlen, key, 32,
                                               (const ngtcp2_sockaddr *)remote,
                                               (ngtcp2_socklen)remotelen, life, now) != 0)
            continue;
        int rv;
        pthread_mutex_lock(&tokens_mu);
        if (tokens_seen == NULL) {
            uint8_t seed[32];
            rand_bytes(seed, sizeof(seed));
            tokens_seen = ae_seen_new(AE_QUIC_TOKEN_SLOTS, seed);
        }
        /* Kept for the whole lifetime from now: the token cannot be valid any longer. */
        rv = tokens_seen == NULL
                 ? AE_SEEN_FULL
                 : ae_seen_add(tokens_seen, hd->token, hd->tokenlen, now, now + life);
        pthread_mutex_unlock(&tokens_mu);
        return rv;
    }
    return -1;
}

/* After the handshake: a NEW_TOKEN token for the client's next connection (any site). */
static void send_new_token(qconn *c)
{
    uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];
    const ngtcp2_path *path = ngtcp2_conn_get_path(c->conn);
    ngtcp2_ssize n =
        ngtcp2_crypto_generate_regular_token(token, token_key(c->w->quic, 0), 32, path->remote.addr,
                                             path->remote.addrlen, ae_quic_now());
    if (n > 0 && ngtcp2_conn_submit_new_token(c->conn, token, (size_t)n) == 0)
        ae_count(&c->w->counters, AE_M_QUIC_NEW_TOKEN_SENT, 1);
}

/* A client Initial for a new connection: check its token, answer with a Retry when the policy
 * wants a validated address and it has none, or start the connection. */
static void admit_initial(ae_qep *ep, const ae_dgram *dg, const ngtcp2_pkt_hd *hd)
{
    ae_worker *w = ep->w;
    ae_qworker *qw = w->quic;
    const ae_conf *conf = w->rt->conf;
    ngtcp2_token_type tt = NGTCP2_TOKEN_TYPE_UNKNOWN;
    ngtcp2_cid odcid;
    int want_retry = retry_wanted(qw, conf);

    if (hd->tokenlen > 0) {
        if (hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2) {
            int rv = verify_retry_token(qw, hd, dg->peer, dg->peerlen, &odcid);
            if (rv != 0) {
                ae_count(&w->counters, AE_M_QUIC_TOKEN_REJECTED, 1);
                drop(ep);
                if (rv != NGTCP2_CRYPTO_ERR_UNREADABLE_TOKEN)
                    send_invalid_token(ep, dg, hd);
                return;
            }
            ae_count(&w->counters, AE_M_QUIC_TOKEN_RETRY_OK, 1);
            tt = NGTCP2_TOKEN_TYPE_RETRY;
        } else if (hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR) {
            int rv = verify_regular_token(qw, conf, hd, dg->peer, dg->peerlen);
            if (rv == AE_SEEN_NEW) {
                ae_count(&w->counters, AE_M_QUIC_TOKEN_NEW_OK, 1);
                tt = NGTCP2_TOKEN_TYPE_NEW_TOKEN;
            } else {
                /* Not usable: the connection goes on as if it had no token. */
                ae_count(&w->counters, AE_M_QUIC_TOKEN_REJECTED, 1);
                if (rv == AE_SEEN_DUP)
                    ae_count(&w->counters, AE_M_QUIC_TOKEN_REUSED, 1);
            }
        } else {
            ae_count(&w->counters, AE_M_QUIC_TOKEN_REJECTED, 1);
        }
    }
    if (tt == NGTCP2_TOKEN_TYPE_UNKNOWN && want_retry) {
        send_retry(ep, dg, hd);
        return;
    }
    conn_new(ep, dg, hd, tt, &odcid);
}

static void handle_datagram(ae_qep *ep, const ae_dgram *dg)
{
    const uint8_t *data = dg->data;
    size_t len = dg->len;
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, AE_QUIC_CIDLEN);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        drop(ep);
        if (len >= NGTCP2_MAX_UDP_PAYLOAD_SIZE) /* only for Initial-sized datagrams */
            send_version_negotiation(ep, dg, &vc);
        return;
    }
    if (rv != 0) {
        drop(ep);
        return;
    }
    ae_cid_slot *s = cid_find(ep, vc.dcid, vc.dcidlen);
    if (s != NULL) {
        conn_read(s->c, dg);
        return;
    }
    /* Owned by another worker or site: handed off, forwarded or dropped (the forwarding hook,
     * proxy/forward/forward.c). */
    const ae_quic_hooks *h = &ep->w->quic->hooks;
    if (h->unknown_cid != NULL && h->unknown_cid(h->ctx, ep, dg, vc.dcid, vc.dcidlen))
        return;
    if (!(data[0] & 0x80)) {
        drop(ep);
        send_stateless_reset(ep, dg, vc.dcid, vc.dcidlen);
        return;
    }
    /* A long header for an unknown connection can only be a client's first Initial, which
     * must come in a datagram of at least 1200 bytes (RFC 9000 §14.1). */
    if (len < NGTCP2_MAX_UDP_PAYLOAD_SIZE) {
        ae_count(&ep->w->counters, AE_M_QUIC_SHORT_INITIAL, 1);
        drop(ep);
        return;
    }
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, data, len) != 0 || hd.type != NGTCP2_PKT_INITIAL) {
        drop(ep); /* includes 0-RTT ahead of its Initial: the client sends it again */
        return;
    }
    if (ep->w->rt == NULL) {
        drop(ep);
        return;
    }
    admit_initial(ep, dg, &hd);
}

static void ep_write_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    ae_qep *ep = io->data;
    ev_io_stop(loop, io);
    ep->wblocked = 0;
    qconn *next;
    for (qconn *c = ep->conns; c != NULL; c = next) {
        next = c->next;
        if (c->pending == NULL)
            continue;
        int rv = ae_quic_send_batch(ep, (struct sockaddr *)&c->pending_to, c->pending_tolen,
                                    (struct sockaddr *)&c->pending_from, c->pending, c->pending_len,
                                    c->pending_gso, c->pending_ecn);
        if (rv == AE_ERR_AGAIN) {
            ep_block(ep);
            return;
        }
        free(c->pending);
        c->pending = NULL;
        conn_write(c);
    }
}

/* ---- worker hooks ---- */

int ae_quic_listener_start(ae_worker *w, ae_wlistener *l)
{
    ae_qworker *qw = qw_get(w);
    ae_qep *ep = calloc(1, sizeof(*ep));
    if (qw == NULL || ep == NULL) {
        free(ep);
        return AE_ERR_NOMEM;
    }
    ep->w = w;
    ep->l = l;
    ep->fd = l->fd;
    ep->boundlen = sizeof(ep->bound);
    if (getsockname(l->fd, (struct sockaddr *)&ep->bound, &ep->boundlen) != 0) {
        free(ep);
        return AE_ERR_IO;
    }
    ep->family = ep->bound.ss_family;
    if (ep->family == AF_INET)
        ep->wildcard = ((struct sockaddr_in *)&ep->bound)->sin_addr.s_addr == htonl(INADDR_ANY);
    else
        ep->wildcard = IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&ep->bound)->sin6_addr);
    rand_bytes(ep->hkey, sizeof(ep->hkey));
    ev_io_init(&ep->wio, ep_write_cb, l->fd, EV_WRITE);
    ep->wio.data = ep;
    ev_io_init(&l->io, ae_quic_read_cb, l->fd, EV_READ);
    l->io.data = l;
    l->qep = ep;
    return 0;
}

void ae_quic_listener_stop(ae_worker *w, ae_wlistener *l)
{
    ae_qep *ep = l->qep;
    if (ep == NULL)
        return;
    /* Tell every peer (best effort) that the connection ends, then drop it. */
    while (ep->conns != NULL) {
        qconn *c = ep->conns;
        if (c->state == QC_OPEN) {
            ngtcp2_ccerr_set_application_error(&c->err, app_no_error(w), NULL, 0);
            conn_close_err(c);
        }
        conn_kill(c, AE_QCLOSE_SHUTDOWN);
    }
    ev_io_stop(w->loop, &ep->wio);
    ae_quic_gc(w);
    free(ep->slots);
    free(ep);
    l->qep = NULL;
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
        conn_kill(c, AE_QCLOSE_SHUTDOWN);
        return;
    }
    if (c->state != QC_OPEN)
        return;
    const ae_quic_app_ops *app = c->w->quic->app;
    if (!c->hs_done || c->app == NULL) {
        ngtcp2_ccerr_set_application_error(&c->err, app_no_error(c->w), NULL, 0);
        conn_close_err(c);
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
        ngtcp2_ccerr_set_application_error(&c->err, app_no_error(c->w), NULL, 0);
        conn_close_err(c);
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
    ae_qworker *qw = qw_get(w);
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
    ae_qsecrets_unref(w->quic->sec);
    ae_cid_keys_free(w->quic->cidk);
    free(w->quic);
    w->quic = NULL;
}

/* ---- hooks, and entry points for proxy/forward/forward.c (hand-off, tunnel input, replies) ----
 */

int ae_quic_set_hooks(ae_worker *w, const ae_quic_hooks *hooks)
{
    ae_qworker *qw = qw_get(w);
    if (qw == NULL)
        return AE_ERR_NOMEM;
    qw->hooks = *hooks;
    return 0;
}

int ae_quic_set_app(ae_worker *w, const ae_quic_app_ops *ops, void *wctx)
{
    ae_qworker *qw = qw_get(w);
    if (qw == NULL)
        return AE_ERR_NOMEM;
    qw->app = ops;
    qw->app_ctx = wctx;
    return 0;
}

void ae_quic_input(ae_qep *ep, const ae_dgram *dg)
{
    handle_datagram(ep, dg);
}

void ae_quic_batch_begin(ae_qep *ep)
{
    ep->in_batch = 1;
}

void ae_quic_flush(ae_qep *ep)
{
    ep->in_batch = 0;
    while (ep->dirty != NULL) {
        qconn *c = ep->dirty;
        ep->dirty = c->dirty_next;
        c->is_dirty = 0;
        conn_write(c);
    }
}

ae_wlistener *ae_quic_ep_listener(const ae_qep *ep)
{
    return ep->l;
}

int ae_quic_ep_serves(const ae_qep *ep, const struct sockaddr *local)
{
    if (local->sa_family != ep->family)
        return AE_QUIC_EP_NONE;
    if (ep->family == AF_INET) {
        const struct sockaddr_in *b = (const struct sockaddr_in *)&ep->bound;
        const struct sockaddr_in *a = (const struct sockaddr_in *)local;
        if (b->sin_port != a->sin_port)
            return AE_QUIC_EP_NONE;
        if (b->sin_addr.s_addr == a->sin_addr.s_addr)
            return AE_QUIC_EP_EXACT;
    } else {
        const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)&ep->bound;
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)local;
        if (b->sin6_port != a->sin6_port)
            return AE_QUIC_EP_NONE;
        if (memcmp(&b->sin6_addr, &a->sin6_addr, sizeof(b->sin6_addr)) == 0)
            return AE_QUIC_EP_EXACT;
    }
    return ep->wildcard ? AE_QUIC_EP_WILDCARD : AE_QUIC_EP_NONE;
}

ae_cid_keys *ae_quic_cid_keys(ae_worker *w)
{
    return w->quic != NULL ? w->quic->cidk : NULL;
}

ae_qsecrets *ae_quic_current_secrets(ae_worker *w)
{
    return w->quic != NULL ? w->quic->sec : NULL;
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
