/*
 * QUIC endpoint dispatch (quic_int.h): the connection-ID table, what a datagram that belongs
 * to no connection gets (version negotiation, stateless reset, the forwarding hooks), address
 * validation (Retry and NEW_TOKEN tokens) and Initial admission, the listener's start and
 * stop, and the entry points the forwarding layer calls (proxy/quic/quic.h). Connections
 * themselves live in quic.c.
 */
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf/seen.h"
#include "proxy/quic/quic_int.h"

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

void ae_quic_cid_del(ae_qep *ep, const ngtcp2_cid *cid)
{
    ae_cid_slot *s = cid_find(ep, cid->data, cid->datalen);
    if (s != NULL) {
        s->len = 0xff;
        s->c = NULL;
        ep->n--;
    }
}

int ae_quic_conn_cid_add(qconn *c, const ngtcp2_cid *cid)
{
    if (c->ncids == AE_QUIC_MAX_CIDS || cid_add(c->ep, cid, c) != 0)
        return AE_ERR_NOMEM;
    c->cids[c->ncids++] = *cid;
    return 0;
}

void ae_quic_conn_cid_del(qconn *c, const ngtcp2_cid *cid)
{
    for (size_t i = 0; i < c->ncids; i++) {
        if (ngtcp2_cid_eq(&c->cids[i], cid)) {
            ae_quic_cid_del(c->ep, cid);
            c->cids[i] = c->cids[--c->ncids];
            return;
        }
    }
}

/* Every connection ID this server issues: QUIC-LB encoded {epoch, site, worker, nonce}
 * (state/cid.h) under the ring's current CID key, so any site holding the ring can tell whose
 * it is. Random only before the first secrets arrive. Never a CID already in the table. */
void ae_quic_new_cid(ae_qep *ep, ngtcp2_cid *cid)
{
    ae_qworker *qw = ep->w->quic;
    uint16_t site = ep->w->rt != NULL ? (uint16_t)ep->w->rt->conf->site.id : 1;

    _Static_assert(AE_QUIC_CIDLEN == AE_CID_LEN, "one CID length");
    do {
        cid->datalen = AE_QUIC_CIDLEN;
        if (qw->cidk == NULL || ae_cid_encode(qw->cidk, site, (uint8_t)ep->w->id, cid->data) != 0)
            ae_quic_rand_bytes(cid->data, AE_QUIC_CIDLEN);
    } while (cid_find(ep, cid->data, cid->datalen) != NULL);
}

/* The stateless-reset token of a CID: from the reset secret of the ring key of the CID's
 * epoch, so every site derives the same token. AE_ERR_NOTFOUND when that key is not in the
 * ring (the CID is too old, or not ours). */
int ae_quic_reset_token(ae_worker *w, const ngtcp2_cid *cid, uint8_t *token)
{
    ae_qworker *qw = w->quic;
    const uint8_t *secret = qw->reset_secret;

    if (qw->sec != NULL &&
        ae_qsecrets_reset_secret(qw->sec, cid->datalen > 0 ? cid->data[0] >> 5 : -1, &secret) != 0)
        return AE_ERR_NOTFOUND;
    return ngtcp2_crypto_generate_stateless_reset_token(token, secret, 32, cid) == 0 ? 0
                                                                                     : AE_ERR_TLS;
}

static void send_version_negotiation(ae_qep *ep, const ae_dgram *dg, const ngtcp2_version_cid *vc)
{
    static const uint32_t sv[] = {NGTCP2_PROTO_VER_V1, NGTCP2_PROTO_VER_V2};
    uint8_t buf[256], r;
    ae_quic_rand_bytes(&r, 1);
    ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(
        buf, sizeof(buf), r, vc->scid, vc->scidlen, vc->dcid, vc->dcidlen, sv, AE_ARRAY_LEN(sv));
    if (n > 0 && ae_quic_ep_send(ep, dg->peer, dg->peerlen, dg->local, buf, (size_t)n) == 0)
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
    if (ae_quic_reset_token(ep->w, &cid, token) != 0)
        return;
    size_t randlen = dg->len - 2 - NGTCP2_STATELESS_RESET_TOKENLEN;
    if (randlen > sizeof(rnd))
        randlen = sizeof(rnd);
    ae_quic_rand_bytes(rnd, randlen);
    ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, sizeof(buf), token, rnd, randlen);
    if (n > 0 && ae_quic_ep_send(ep, dg->peer, dg->peerlen, dg->local, buf, (size_t)n) == 0)
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
    ae_quic_new_cid(ep, &scid); /* the client's next DCID: ours, QUIC-LB encoded */
    ngtcp2_ssize tlen = ngtcp2_crypto_generate_retry_token2(
        token, token_key(qw, 0), 32, hd->version, (const ngtcp2_sockaddr *)dg->peer,
        (ngtcp2_socklen)dg->peerlen, &scid, &hd->dcid, ae_quic_now());
    if (tlen < 0)
        return;
    ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version, &hd->scid, &scid,
                                               &hd->dcid, token, (size_t)tlen);
    if (n > 0 && ae_quic_ep_send(ep, dg->peer, dg->peerlen, dg->local, buf, (size_t)n) == 0)
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
        ae_quic_ep_send(ep, dg->peer, dg->peerlen, dg->local, buf, (size_t)n);
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
            ae_quic_rand_bytes(seed, sizeof(seed));
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
void ae_quic_send_new_token(qconn *c)
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

    if (w->srclim != NULL) { /* per source: beyond the hard rate dropped, the soft one Retry */
        ae_src_verdict v =
            ae_srclimit_quic_initial(w->srclim, dg->peer, (uint64_t)(ev_now(w->loop) * 1e9));
        if (v == AE_SRC_QUIC_DROP) {
            ae_count(&w->counters, (ae_metric)(AE_M_SRC_B0 + v), 1);
            ae_worker_overload(w, AE_OVL_SOURCE, 0);
            ae_quic_drop(ep);
            return;
        }
        if (v == AE_SRC_QUIC_RETRY &&
            !(hd->tokenlen > 0 && hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2)) {
            ae_count(&w->counters, (ae_metric)(AE_M_SRC_B0 + v), 1);
            want_retry = 1;
        }
    }

    if (hd->tokenlen > 0) {
        if (hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2) {
            int rv = verify_retry_token(qw, hd, dg->peer, dg->peerlen, &odcid);
            if (rv != 0) {
                ae_count(&w->counters, AE_M_QUIC_TOKEN_REJECTED, 1);
                ae_quic_drop(ep);
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
    ae_quic_conn_new(ep, dg, hd, tt, &odcid);
}

static void handle_datagram(ae_qep *ep, const ae_dgram *dg)
{
    const uint8_t *data = dg->data;
    size_t len = dg->len;
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, AE_QUIC_CIDLEN);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        ae_quic_drop(ep);
        if (len >= NGTCP2_MAX_UDP_PAYLOAD_SIZE) /* only for Initial-sized datagrams */
            send_version_negotiation(ep, dg, &vc);
        return;
    }
    if (rv != 0) {
        ae_quic_drop(ep);
        return;
    }
    ae_cid_slot *s = cid_find(ep, vc.dcid, vc.dcidlen);
    if (s != NULL) {
        ae_quic_conn_read(s->c, dg);
        return;
    }
    /* Owned by another worker or site: handed off, forwarded or dropped (the forwarding hook,
     * proxy/forward/forward.c). */
    const ae_quic_hooks *h = &ep->w->quic->hooks;
    if (h->unknown_cid != NULL && h->unknown_cid(h->ctx, ep, dg, vc.dcid, vc.dcidlen))
        return;
    if (!(data[0] & 0x80)) {
        ae_quic_drop(ep);
        send_stateless_reset(ep, dg, vc.dcid, vc.dcidlen);
        return;
    }
    /* A long header for an unknown connection can only be a client's first Initial, which
     * must come in a datagram of at least 1200 bytes (RFC 9000 §14.1). */
    if (len < NGTCP2_MAX_UDP_PAYLOAD_SIZE) {
        ae_count(&ep->w->counters, AE_M_QUIC_SHORT_INITIAL, 1);
        ae_quic_drop(ep);
        return;
    }
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, data, len) != 0 || hd.type != NGTCP2_PKT_INITIAL) {
        ae_quic_drop(ep); /* includes 0-RTT ahead of its Initial: the client sends it again */
        return;
    }
    if (ep->w->rt == NULL) {
        ae_quic_drop(ep);
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
            ae_quic_ep_block(ep);
            return;
        }
        free(c->pending);
        c->pending = NULL;
        ae_quic_conn_write(c);
    }
}

/* ---- worker hooks ---- */

int ae_quic_listener_start(ae_worker *w, ae_wlistener *l)
{
    ae_qworker *qw = ae_quic_qw_get(w);
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
    ae_quic_rand_bytes(ep->hkey, sizeof(ep->hkey));
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
            ngtcp2_ccerr_set_application_error(&c->err, ae_quic_app_no_error(w), NULL, 0);
            ae_quic_conn_close_err(c);
        }
        ae_quic_conn_kill(c, AE_QCLOSE_SHUTDOWN);
    }
    ev_io_stop(w->loop, &ep->wio);
    ae_quic_gc(w);
    free(ep->slots);
    free(ep);
    l->qep = NULL;
}

/* ---- hooks, and entry points for proxy/forward/forward.c (hand-off, tunnel input, replies) ----
 */

int ae_quic_set_hooks(ae_worker *w, const ae_quic_hooks *hooks)
{
    ae_qworker *qw = ae_quic_qw_get(w);
    if (qw == NULL)
        return AE_ERR_NOMEM;
    qw->hooks = *hooks;
    return 0;
}

int ae_quic_set_app(ae_worker *w, const ae_quic_app_ops *ops, void *wctx)
{
    ae_qworker *qw = ae_quic_qw_get(w);
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
        ae_quic_conn_write(c);
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
