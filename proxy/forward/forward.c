/*
 * Inter-site forwarding of QUIC packets and hand-off between workers (see proxy/forward/forward.h
 * and "Forwarding decision" in docs/architecture.md).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/errqueue.h>

#include "proxy/forward/forward.h"
#include "proxy/quic/quic.h"

#define FWD_INBOX_SLOTS 512 /* hand-off slots per worker (power of two) */
#define FWD_BATCH       32  /* frames per sendmmsg / recvmmsg */
#define FWD_FRAME_MAX   (AE_QUIC_RX_BUF + AE_TUNNEL_OVERHEAD)
#define FWD_RX_SLOT     65536 /* UDP GRO hands over up to 64 KiB of frames in one read */
#define FWD_GSO_MAX     65000 /* bytes of frames per UDP GSO send (below the 64 KiB limit) */
#define FWD_UNREACH_MS  3000  /* a peer whose forward port bounced an ICMP error: dead this long */

_Static_assert(AE_M_TUN_DROP_LAST - AE_M_TUN_DROP_B0 + 1 == AE_FWD_NDROPS,
               "one counter per tunnel drop reason");

/* ---- peer table ---- */

ae_fwd_peers *ae_fwd_peers_new(size_t n)
{
    ae_fwd_peers *p = calloc(1, sizeof(*p) + n * sizeof(p->p[0]));
    if (p == NULL)
        return NULL;
    atomic_init(&p->refcnt, 1);
    p->n = n;
    return p;
}

ae_fwd_peers *ae_fwd_peers_ref(ae_fwd_peers *p)
{
    if (p != NULL)
        atomic_fetch_add_explicit(&p->refcnt, 1, memory_order_relaxed);
    return p;
}

void ae_fwd_peers_unref(ae_fwd_peers *p)
{
    if (p != NULL && atomic_fetch_sub_explicit(&p->refcnt, 1, memory_order_acq_rel) == 1)
        free(p);
}

const ae_fwd_peer *ae_fwd_peers_find(const ae_fwd_peers *p, uint16_t site)
{
    if (p == NULL)
        return NULL;
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->p[mid].site == site)
            return &p->p[mid];
        if (p->p[mid].site < site)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

ae_fwd_peers *ae_fwd_peers_build(const ae_site_info *sites, size_t n, uint16_t self_site,
                                 uint64_t now_ms, uint64_t hb_ms, uint64_t drain_ms,
                                 uint64_t *seen_draining)
{
    ae_fwd_peers *p = ae_fwd_peers_new(n);
    size_t k = 0;
    if (p == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const ae_site_info *si = &sites[i];
        if (si->id == 0 || si->id > AE_CID_SITE_MAX || si->id == self_site)
            continue;
        ae_fwd_peer *e = &p->p[k];
        ae_addr a;
        e->site = (uint16_t)si->id;
        /* Fresh: heartbeat within three periods (the record itself lives five). */
        e->live = si->live && si->heartbeat_ms + 3 * hb_ms >= now_ms;
        if (si->live && strcmp(si->state, "draining") == 0) {
            if (seen_draining[si->id] == 0)
                seen_draining[si->id] = now_ms;
            e->draining = now_ms - seen_draining[si->id] > drain_ms;
        } else {
            seen_draining[si->id] = 0;
        }
        if (si->forward[0] != '\0' && ae_addr_parse(si->forward, &a, 0) == 0 &&
            a.len <= sizeof(e->addr)) {
            memcpy(&e->addr, &a.sa, a.len);
            e->addrlen = a.len;
        }
        k++;
    }
    p->n = k;
    /* The registry lists sites sorted by id already; keep the invariant regardless. */
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && p->p[j - 1].site > p->p[j].site; j--) {
            ae_fwd_peer t = p->p[j];
            p->p[j] = p->p[j - 1];
            p->p[j - 1] = t;
        }
    return p;
}

/* ---- the decision ---- */

#define QUIC_V1 0x00000001u
#define QUIC_V2 0x6b3343cfu

/* For a long header: 1 Initial, 2 0-RTT or Handshake, 0 anything else (VN, Retry, unknown). */
static int long_kind(const uint8_t *pkt, size_t len)
{
    if (len < 5)
        return 0;
    uint32_t v = (uint32_t)pkt[1] << 24 | (uint32_t)pkt[2] << 16 | (uint32_t)pkt[3] << 8 | pkt[4];
    int t = (pkt[0] >> 4) & 3;
    if (v == QUIC_V1)
        return t == 0 ? 1 : t == 1 || t == 2 ? 2 : 0;
    if (v == QUIC_V2)
        return t == 1 ? 1 : t == 2 || t == 3 ? 2 : 0;
    return 0;
}

ae_fwd_action ae_fwd_decide(ae_cid_keys *k, const ae_fwd_ctx *ctx, const uint8_t *pkt, size_t len,
                            const uint8_t *dcid, size_t dcidlen, uint16_t *site, uint8_t *worker)
{
    int is_long;
    uint16_t s = 0;
    uint8_t wk = 0;

    if (len < 1)
        return AE_FWD_DROP;
    is_long = (pkt[0] & 0x80) != 0;
    if (is_long && long_kind(pkt, len) != 2)
        return AE_FWD_LOCAL; /* Initials are never forwarded */
    if (k == NULL || ae_cid_decode(k, dcid, dcidlen, &s, &wk) != 0)
        /* Long: a client-chosen DCID (0-RTT ahead of its Initial): as before. */
        return is_long ? AE_FWD_LOCAL : AE_FWD_DROP;
    *site = s;
    *worker = wk;
    if (s == ctx->self_site) {
        if (wk == ctx->self_worker || wk >= ctx->nworkers)
            return is_long ? AE_FWD_LOCAL : AE_FWD_RESET_SELF;
        return AE_FWD_HANDOFF;
    }
    if (ctx->from_tunnel)
        return AE_FWD_DROP; /* never a second hop */
    if (ctx->peers == NULL)
        /* No registry read yet: whether the owner lives is unknown, and RFC 9000 §21.11 forbids
         * resetting a connection that may live elsewhere. Dropping lets the client retry. */
        return AE_FWD_DROP;
    const ae_fwd_peer *p = ae_fwd_peers_find(ctx->peers, s);
    if (p != NULL && p->live && !p->draining && p->addrlen > 0)
        return AE_FWD_FORWARD;
    return is_long ? AE_FWD_DROP : AE_FWD_RESET_DEAD;
}

const char *ae_fwd_action_name(ae_fwd_action a)
{
    static const char *const names[] = {"local",   "reset_self", "handoff",
                                        "forward", "reset_dead", "drop"};
    return (unsigned)a < AE_ARRAY_LEN(names) ? names[a] : "?";
}

const char *ae_fwd_drop_name(int i)
{
    switch (i) {
    case AE_FWD_DROP_NOEP:
        return "no_endpoint";
    case AE_FWD_DROP_INITIAL:
        return "initial";
    case AE_FWD_DROP_LOOP:
        return "loop";
    case AE_FWD_DROP_NOKEYS:
        return "no_keys";
    case AE_FWD_DROP_REPLY_PEER:
        return "reply_peer";
    default:
        return i >= 0 && i < AE_TUN_NREASONS ? ae_tunnel_reason_name(-i - 1) : "?";
    }
}

/* ---- per-worker state ---- */

typedef struct {
    _Atomic size_t seq;
    uint16_t lindex;        /* listener index the datagram arrived on */
    ae_dgram_origin origin; /* AE_DGRAM_HANDOFF, or AE_DGRAM_TUNNEL: never forward it again */
    uint16_t site;          /* AE_DGRAM_TUNNEL: the site whose tunnel frame carried it */
    uint16_t len;
    socklen_t remotelen, locallen;
    struct sockaddr_storage remote, local;
    uint8_t data[AE_QUIC_RX_BUF];
} fwd_slot;

struct ae_fwd_worker {
    ae_worker *w;
    ae_fwd_group *g;
    /* inbox: bounded MPSC queue (Vyukov), consumed on this worker's loop */
    fwd_slot *slots;
    _Atomic size_t enq;
    size_t deq;
    ev_async wake;
    /* forward socket (site.forward group member) and sockets to send from without one */
    int fd, sfd4, sfd6;
    int fd_family;    /* fd's address family (the peer's must match to send from it) */
    int no_gso;       /* a GSO send failed (device without UDP GSO): one datagram per frame */
    size_t gso_below; /* frames this long or longer exceed the path MTU: never in a GSO run */
    ev_io io;
    ev_prepare flush; /* sends the frames of one loop iteration with one sendmmsg */
    ae_fwd_peers *peers;
    ae_qsecrets *tk_sec; /* the secrets tk was built from (a reference) */
    ae_tunnel_keys *tk;
    /* out batch: forward frames and reply frames (site.return: tunnel) */
    size_t on;
    uint16_t osite[FWD_BATCH];
    uint8_t oreply[FWD_BATCH];
    size_t olen[FWD_BATCH];
    ae_tunnel_addr odst[FWD_BATCH];
    socklen_t odstlen[FWD_BATCH];
    uint8_t obuf[FWD_BATCH][FWD_FRAME_MAX];
    uint8_t rbuf[FWD_BATCH][FWD_RX_SLOT]; /* one read: a frame, or several with UDP GRO */
    /* counters read by the admin thread */
    _Atomic uint64_t site_out[AE_CID_SITE_MAX + 1], site_in[AE_CID_SITE_MAX + 1];
    _Atomic uint64_t site_rout[AE_CID_SITE_MAX + 1], site_rin[AE_CID_SITE_MAX + 1]; /* replies */
};

struct ae_fwd_group {
    size_t n;
    ae_fwd_worker **fw;
    /* ICMP error from the peer's forward port: dead until (wall ms). Shared: the kernel queues
     * the error on whichever member of the SO_REUSEPORT group it picks, not the sender. */
    _Atomic uint64_t unreach_until[AE_CID_SITE_MAX + 1];
};

static void inbox_cb(struct ev_loop *loop, ev_async *a, int revents);
static void flush_cb(struct ev_loop *loop, ev_prepare *p, int revents);
static void tunnel_read_cb(struct ev_loop *loop, ev_io *io, int revents);

int ae_fwd_group_new(ae_worker **w, size_t n, ae_fwd_group **out)
{
    ae_fwd_group *g = calloc(1, sizeof(*g));
    *out = NULL;
    if (g == NULL || (g->fw = calloc(n, sizeof(*g->fw))) == NULL) {
        free(g);
        return AE_ERR_NOMEM;
    }
    g->n = n;
    for (size_t i = 0; i < n; i++) {
        ae_fwd_worker *fw = calloc(1, sizeof(*fw));
        if (fw == NULL || (fw->slots = calloc(FWD_INBOX_SLOTS, sizeof(*fw->slots))) == NULL) {
            free(fw);
            ae_fwd_group_free(g);
            return AE_ERR_NOMEM;
        }
        for (size_t k = 0; k < FWD_INBOX_SLOTS; k++)
            atomic_init(&fw->slots[k].seq, k);
        atomic_init(&fw->enq, 0);
        fw->w = w[i];
        fw->g = g;
        fw->fd = fw->sfd4 = fw->sfd6 = -1;
        fw->gso_below = SIZE_MAX;
        ev_async_init(&fw->wake, inbox_cb);
        fw->wake.data = fw;
        ev_async_start(w[i]->loop, &fw->wake); /* before the worker thread starts */
        ev_prepare_init(&fw->flush, flush_cb);
        fw->flush.data = fw;
        ev_prepare_start(w[i]->loop, &fw->flush);
        ev_init(&fw->io, tunnel_read_cb);
        fw->io.data = fw;
        g->fw[i] = fw;
        w[i]->fwd = fw;
    }
    *out = g;
    return 0;
}

int ae_fwd_group_unreachable(ae_fwd_group *g, uint16_t site, uint64_t now_ms)
{
    return g != NULL && site <= AE_CID_SITE_MAX &&
           atomic_load_explicit(&g->unreach_until[site], memory_order_relaxed) > now_ms;
}

void ae_fwd_group_free(ae_fwd_group *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->n; i++) {
        ae_fwd_worker *fw = g->fw[i];
        if (fw == NULL)
            continue;
        if (fw->fd >= 0)
            close(fw->fd);
        if (fw->sfd4 >= 0)
            close(fw->sfd4);
        if (fw->sfd6 >= 0)
            close(fw->sfd6);
        ae_fwd_peers_unref(fw->peers);
        ae_tunnel_keys_free(fw->tk);
        ae_qsecrets_unref(fw->tk_sec);
        free(fw->slots);
        free(fw);
    }
    free(g->fw);
    free(g);
}

void ae_fwd_worker_stop(ae_worker *w)
{
    ae_fwd_worker *fw = w->fwd;
    if (fw == NULL)
        return;
    ev_async_stop(w->loop, &fw->wake);
    ev_prepare_stop(w->loop, &fw->flush);
    ev_io_stop(w->loop, &fw->io);
}

void ae_fwd_set_socket(ae_worker *w, int fd)
{
    ae_fwd_worker *fw = w->fwd;
    if (fw == NULL) {
        if (fd >= 0)
            close(fd);
        return;
    }
    if (fd == fw->fd)
        return;
    if (fw->fd >= 0) {
        ev_io_stop(w->loop, &fw->io);
        close(fw->fd);
    }
    fw->fd = fd;
    fw->fd_family = AF_UNSPEC;
    if (fd >= 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            fw->fd_family = ss.ss_family;
        ev_io_set(&fw->io, fd, EV_READ);
        ev_io_start(w->loop, &fw->io);
    }
}

int ae_fwd_socket(ae_worker *w)
{
    return w->fwd != NULL ? w->fwd->fd : -1;
}

void ae_fwd_set_peers(ae_worker *w, ae_fwd_peers *p)
{
    ae_fwd_worker *fw = w->fwd;
    if (fw == NULL) {
        ae_fwd_peers_unref(p);
        return;
    }
    ae_fwd_peers_unref(fw->peers);
    fw->peers = p;
}

void ae_fwd_site_counts(const ae_fwd_group *g, uint16_t site, uint64_t *out, uint64_t *in)
{
    *out = *in = 0;
    if (g == NULL || site > AE_CID_SITE_MAX)
        return;
    for (size_t i = 0; i < g->n; i++) {
        *out += atomic_load_explicit(&g->fw[i]->site_out[site], memory_order_relaxed);
        *in += atomic_load_explicit(&g->fw[i]->site_in[site], memory_order_relaxed);
    }
}

void ae_fwd_site_reply_counts(const ae_fwd_group *g, uint16_t site, uint64_t *out, uint64_t *in)
{
    *out = *in = 0;
    if (g == NULL || site > AE_CID_SITE_MAX)
        return;
    for (size_t i = 0; i < g->n; i++) {
        *out += atomic_load_explicit(&g->fw[i]->site_rout[site], memory_order_relaxed);
        *in += atomic_load_explicit(&g->fw[i]->site_rin[site], memory_order_relaxed);
    }
}

int ae_fwd_peer_addr(void *ctx, uint16_t site, struct sockaddr_storage *addr, socklen_t *len)
{
    ae_worker *w = ctx;
    const ae_fwd_peer *p = w->fwd != NULL ? ae_fwd_peers_find(w->fwd->peers, site) : NULL;
    if (p == NULL || p->addrlen == 0 || p->addrlen > sizeof(*addr))
        return -1;
    memcpy(addr, &p->addr, p->addrlen);
    *len = p->addrlen;
    return 0;
}

int ae_fwd_socket_setup(int fd, int family)
{
    int one = 1, buf = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    /* UDP GRO: a peer's GSO batch of frames is one read (tunnel_read_cb splits it). */
    setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one));
    /* ICMP errors (port unreachable: the peer's anyedge is gone) reach the error queue. */
    if (family == AF_INET6)
        return setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof(one));
    return setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof(one));
}

/* The tunnel keys of the worker's newest ring (rebuilt when the secrets changed). */
static ae_tunnel_keys *tunnel_keys(ae_fwd_worker *fw)
{
    ae_qsecrets *sec = ae_quic_current_secrets(fw->w);
    if (sec == NULL)
        return NULL;
    if (fw->tk_sec != sec) {
        ae_tunnel_keys *k;
        if (ae_tunnel_keys_from_ring(&sec->ring, &k) != 0)
            return fw->tk; /* keep the previous keys */
        ae_tunnel_keys_free(fw->tk);
        ae_qsecrets_unref(fw->tk_sec);
        fw->tk = k;
        fw->tk_sec = ae_qsecrets_ref(sec);
    }
    return fw->tk;
}

static uint64_t fwd_window_ms(ae_worker *w)
{
    return w->rt != NULL && w->rt->conf->site.forward_window_ms > 0
               ? w->rt->conf->site.forward_window_ms
               : AE_FWD_WINDOW_DEFAULT_MS;
}

static void tun_drop(ae_worker *w, int reason)
{
    ae_count(&w->counters, (ae_metric)(AE_M_TUN_DROP_B0 + reason), 1);
}

/* Forward latency of an accepted frame: now_ms (ours) - ts_ms (the origin's), clamped to 0. */
static void fwd_observe_latency(ae_worker *w, uint64_t now_ms, uint64_t ts_ms)
{
    uint64_t ms = now_ms > ts_ms ? now_ms - ts_ms : 0;
    double d = (double)ms / 1e3;
    size_t i = 0;
    while (i < AE_FWD_LAT_NBUCKETS - 1 && d > ae_fwd_lat_bounds[i])
        i++;
    ae_count(&w->counters, (ae_metric)(AE_M_FWD_LAT_B0 + i), 1);
    ae_count(&w->counters, AE_M_FWD_LAT_SUM_US, ms * 1000);
}

/* ---- hand-off between workers ---- */

/* Pushes the datagram into worker `to`'s inbox (a tunnelled one stays tunnelled, with its
 * site). 0, or -1 when the inbox is full. */
static int inbox_push(ae_fwd_worker *to, size_t lindex, const ae_dgram *dg)
{
    const size_t mask = FWD_INBOX_SLOTS - 1;
    size_t pos = atomic_load_explicit(&to->enq, memory_order_relaxed);
    fwd_slot *s;

    if (dg->len > sizeof(s->data) || dg->peerlen > sizeof(s->remote) ||
        dg->locallen > sizeof(s->local))
        return -1;
    for (;;) {
        s = &to->slots[pos & mask];
        size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&to->enq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            return -1; /* full */
        } else {
            pos = atomic_load_explicit(&to->enq, memory_order_relaxed);
        }
    }
    s->lindex = (uint16_t)lindex;
    s->origin = dg->origin == AE_DGRAM_TUNNEL ? AE_DGRAM_TUNNEL : AE_DGRAM_HANDOFF;
    s->site = dg->origin == AE_DGRAM_TUNNEL ? dg->site : 0;
    s->len = (uint16_t)dg->len;
    memcpy(s->data, dg->data, dg->len);
    memcpy(&s->remote, dg->peer, dg->peerlen);
    s->remotelen = dg->peerlen;
    memcpy(&s->local, dg->local, dg->locallen);
    s->locallen = dg->locallen;
    atomic_store_explicit(&s->seq, pos + 1, memory_order_release);
    ev_async_send(to->w->loop, &to->wake);
    return 0;
}

static ae_qep *ep_by_index(ae_worker *w, size_t index)
{
    for (ae_wlistener *l = w->listeners; l != NULL; l = l->next)
        if (l->proto == AE_LPROTO_QUIC && l->qep != NULL && l->index == index)
            return l->qep;
    return NULL;
}

/* Endpoints touched by a batch of input, written once at its end. */
typedef struct {
    ae_qep *ep[8];
    size_t n;
} ep_set;

static void ep_set_add(ep_set *s, ae_qep *ep)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->ep[i] == ep)
            return;
    if (s->n == AE_ARRAY_LEN(s->ep)) {
        ae_quic_flush(s->ep[0]);
        s->ep[0] = s->ep[--s->n];
    }
    ae_quic_batch_begin(ep);
    s->ep[s->n++] = ep;
}

static void ep_set_flush(ep_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        ae_quic_flush(s->ep[i]);
    s->n = 0;
}

static void inbox_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    ae_fwd_worker *fw = a->data;
    const size_t mask = FWD_INBOX_SLOTS - 1;
    ep_set eps = {0};

    for (size_t done = 0; done < FWD_INBOX_SLOTS; done++) {
        fwd_slot *s = &fw->slots[fw->deq & mask];
        if (atomic_load_explicit(&s->seq, memory_order_acquire) != fw->deq + 1)
            break;
        ae_qep *ep = ep_by_index(fw->w, s->lindex);
        if (ep != NULL) {
            ae_dgram dg = {.data = s->data,
                           .len = s->len,
                           .peer = (struct sockaddr *)&s->remote,
                           .peerlen = s->remotelen,
                           .local = (struct sockaddr *)&s->local,
                           .locallen = s->locallen,
                           .origin = s->origin,
                           .site = s->site};
            ep_set_add(&eps, ep);
            ae_quic_input(ep, &dg);
        } else {
            ae_count(&fw->w->counters, AE_M_QUIC_PKTS_DROPPED, 1);
        }
        atomic_store_explicit(&s->seq, fw->deq + FWD_INBOX_SLOTS, memory_order_release);
        fw->deq++;
    }
    ep_set_flush(&eps);
    /* More than one round's worth queued: come back after the other watchers had a turn. */
    if (atomic_load_explicit(&fw->slots[fw->deq & mask].seq, memory_order_acquire) == fw->deq + 1)
        ev_async_send(loop, &fw->wake);
}

/* ---- forwarding out ---- */

static int send_fd(ae_fwd_worker *fw, int family)
{
    if (fw->fd >= 0 && fw->fd_family == family) /* the peer's family must match */
        return fw->fd;
    int *p = family == AF_INET6 ? &fw->sfd6 : &fw->sfd4;
    if (*p < 0) {
        *p = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (*p >= 0)
            ae_fwd_socket_setup(*p, family);
    }
    return *p;
}

/* Frames [i, i + n) go in one message when they leave from the same socket to the same
 * address, all of one length but the last (which may be shorter), within FWD_GSO_MAX bytes:
 * with UDP GSO the kernel builds, routes and delivers them as one packet until the peer's
 * socket (UDP GRO) or the device splits them. Returns the number of frames from i. */
static size_t gso_run(const ae_fwd_worker *fw, size_t i, size_t end)
{
    size_t n = 1, total = fw->olen[i];
    if (fw->no_gso || fw->olen[i] >= fw->gso_below)
        return 1;
    while (i + n < end && fw->olen[i + n] <= fw->olen[i] &&
           total + fw->olen[i + n] <= FWD_GSO_MAX && fw->odstlen[i + n] == fw->odstlen[i] &&
           memcmp(&fw->odst[i + n], &fw->odst[i], fw->odstlen[i]) == 0) {
        total += fw->olen[i + n];
        if (fw->olen[i + n++] < fw->olen[i])
            break; /* a shorter frame ends the run */
    }
    return n;
}

static void count_sent(ae_fwd_worker *fw, size_t j)
{
    atomic_fetch_add_explicit(fw->oreply[j] ? &fw->site_rout[fw->osite[j]]
                                            : &fw->site_out[fw->osite[j]],
                              1, memory_order_relaxed);
    ae_count(&fw->w->counters, fw->oreply[j] ? AE_M_FWD_REPLY_OUT : AE_M_FWD_OUT, 1);
}

static void out_flush(ae_fwd_worker *fw)
{
    struct mmsghdr msgs[FWD_BATCH];
    struct iovec iov[FWD_BATCH];
    size_t first[FWD_BATCH + 1]; /* message m carries frames [first[m], first[m + 1]) */
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl[FWD_BATCH];
    size_t i = 0;

    while (i < fw->on) {
        /* One sendmmsg per run of frames that leave from the same socket. */
        int fd = send_fd(fw, fw->odst[i].sa.sa_family);
        size_t end = i;
        while (end < fw->on && send_fd(fw, fw->odst[end].sa.sa_family) == fd)
            end++;
        size_t nmsg = 0;
        for (size_t k = i; k < end; nmsg++) {
            size_t n = gso_run(fw, k, end);
            struct msghdr *mh = &msgs[nmsg].msg_hdr;
            memset(&msgs[nmsg], 0, sizeof(msgs[nmsg]));
            for (size_t j = 0; j < n; j++) {
                iov[k - i + j].iov_base = fw->obuf[k + j];
                iov[k - i + j].iov_len = fw->olen[k + j];
            }
            mh->msg_name = &fw->odst[k];
            mh->msg_namelen = fw->odstlen[k];
            mh->msg_iov = &iov[k - i];
            mh->msg_iovlen = n;
            if (n > 1) {
                mh->msg_control = ctl[nmsg].buf;
                mh->msg_controllen = sizeof(ctl[nmsg].buf);
                struct cmsghdr *cm = CMSG_FIRSTHDR(mh);
                cm->cmsg_level = IPPROTO_UDP;
                cm->cmsg_type = UDP_SEGMENT;
                cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t gso = (uint16_t)fw->olen[k];
                memcpy(CMSG_DATA(cm), &gso, sizeof(gso));
            }
            first[nmsg] = k;
            k += n;
        }
        first[nmsg] = end;
        size_t sent = 0; /* messages */
        while (fd >= 0 && sent < nmsg) {
            int r = sendmmsg(fd, msgs + sent, (unsigned)(nmsg - sent), MSG_DONTWAIT);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                int err = errno;
                size_t nf = first[sent + 1] - first[sent];
                if (r < 0 && (err == EIO || err == EINVAL || err == EMSGSIZE) && nf > 1) {
                    /* EIO: the route's device cannot segment UDP: no GSO from now on.
                     * EINVAL, EMSGSIZE: the frames exceed the path MTU (sent alone, the kernel
                     * fragments them): no GSO runs of frames this long. The frames of this
                     * message are lost (QUIC recovers). */
                    size_t len = fw->olen[first[sent]];
                    if (err == EIO) {
                        fw->no_gso = 1;
                        AE_WARN("forward: UDP GSO unavailable (%s): one datagram per frame",
                                strerror(err));
                    } else if (len < fw->gso_below) {
                        fw->gso_below = len;
                        AE_INFO("forward: frames of %zu bytes exceed the path MTU: sent one by one",
                                len);
                    }
                    ae_count(&fw->w->counters, AE_M_FWD_SEND_ERRORS, nf);
                    sent++;
                    continue;
                }
                /* ECONNREFUSED & co. report an earlier ICMP error: skip that message. */
                if (r < 0 && err != EAGAIN && err != EWOULDBLOCK && err != ENOBUFS) {
                    ae_count(&fw->w->counters, AE_M_FWD_SEND_ERRORS, nf);
                    sent++;
                    continue;
                }
                break;
            }
            for (size_t m = sent; m < sent + (size_t)r; m++)
                for (size_t j = first[m]; j < first[m + 1]; j++)
                    count_sent(fw, j);
            sent += (size_t)r;
        }
        if (sent < nmsg) /* socket buffer full: QUIC recovers the loss */
            ae_count(&fw->w->counters, AE_M_FWD_SEND_ERRORS, end - first[sent]);
        i = end;
    }
    fw->on = 0;
}

static void flush_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    ae_fwd_worker *fw = p->data;
    if (fw->on > 0)
        out_flush(fw);
}

/* Queues dg in a tunnel frame for peer's forward endpoint. 0, or -1 (no keys, too big). */
static int forward_out(ae_fwd_worker *fw, const ae_fwd_peer *peer, const ae_dgram *dg)
{
    ae_tunnel_keys *tk = tunnel_keys(fw);
    if (tk == NULL)
        return -1;
    if (fw->on == FWD_BATCH)
        out_flush(fw);
    size_t i = fw->on;
    int n = ae_tunnel_encode(tk, (uint16_t)fw->w->rt->conf->site.id, ae_wall_ms(), dg->peer,
                             dg->local, dg->data, dg->len, fw->obuf[i], sizeof(fw->obuf[i]));
    if (n < 0)
        return -1;
    fw->olen[i] = (size_t)n;
    fw->osite[i] = peer->site;
    fw->oreply[i] = 0;
    memcpy(&fw->odst[i], &peer->addr, peer->addrlen);
    fw->odstlen[i] = peer->addrlen;
    fw->on++;
    return 0;
}

int ae_fwd_reply(void *ctx, uint16_t site, const struct sockaddr *fwd, socklen_t fwdlen,
                 const struct sockaddr *client, const struct sockaddr *local, uint8_t ecn,
                 const uint8_t *data, size_t len)
{
    ae_worker *w = ctx;
    ae_fwd_worker *fw = w->fwd;
    if (fw == NULL || w->rt == NULL || site > AE_CID_SITE_MAX || fwdlen == 0 ||
        fwdlen > sizeof(fw->odst[0]))
        return -1;
    ae_tunnel_keys *tk = tunnel_keys(fw);
    if (tk == NULL)
        return -1;
    if (fw->on == FWD_BATCH)
        out_flush(fw);
    size_t i = fw->on;
    int n = ae_tunnel_encode_reply(tk, (uint16_t)w->rt->conf->site.id, ae_wall_ms(), client, local,
                                   ecn, data, len, fw->obuf[i], sizeof(fw->obuf[i]));
    if (n < 0)
        return -1;
    fw->olen[i] = (size_t)n;
    fw->osite[i] = site;
    fw->oreply[i] = 1;
    memcpy(&fw->odst[i], fwd, fwdlen);
    fw->odstlen[i] = fwdlen;
    fw->on++;
    return 0;
}

int ae_fwd_unknown(void *hctx, ae_qep *ep, const ae_dgram *dg, const uint8_t *dcid, size_t dcidlen)
{
    ae_worker *w = hctx;
    ae_fwd_worker *fw = w->fwd;
    ae_cid_keys *cidk = ae_quic_cid_keys(w);
    int tunnelled = dg->origin == AE_DGRAM_TUNNEL;

    if (fw == NULL || cidk == NULL || w->rt == NULL)
        return 0; /* no CID keys yet: as before */
    uint64_t now = ae_wall_ms();
    ae_fwd_ctx ctx = {.self_site = (uint16_t)w->rt->conf->site.id,
                      .self_worker = w->id,
                      .nworkers = (int)fw->g->n,
                      .peers = fw->peers,
                      .from_tunnel = tunnelled};
    uint16_t site = 0;
    uint8_t worker = 0;
    ae_fwd_action a = ae_fwd_decide(cidk, &ctx, dg->data, dg->len, dcid, dcidlen, &site, &worker);
    if (a == AE_FWD_FORWARD &&
        atomic_load_explicit(&fw->g->unreach_until[site], memory_order_relaxed) > now)
        a = (dg->data[0] & 0x80) ? AE_FWD_DROP : AE_FWD_RESET_DEAD;
    switch (a) {
    case AE_FWD_LOCAL:
    case AE_FWD_RESET_SELF:
        return 0;
    case AE_FWD_RESET_DEAD:
        ae_count(&w->counters, AE_M_FWD_RESET_DEAD, 1);
        return 0; /* quic.c sends the stateless reset */
    case AE_FWD_HANDOFF:
        if (inbox_push(fw->g->fw[worker], ae_quic_ep_listener(ep)->index, dg) != 0) {
            ae_count(&w->counters, AE_M_FWD_HANDOFF_FULL, 1);
            ae_count(&w->counters, AE_M_QUIC_PKTS_DROPPED, 1);
        } else {
            ae_count(&w->counters, AE_M_FWD_HANDOFF, 1);
        }
        return 1;
    case AE_FWD_FORWARD:
        if (forward_out(fw, ae_fwd_peers_find(fw->peers, site), dg) != 0)
            ae_count(&w->counters, AE_M_QUIC_PKTS_DROPPED, 1);
        return 1;
    case AE_FWD_DROP:
        if (tunnelled)
            tun_drop(w, AE_FWD_DROP_LOOP);
        else
            ae_count(&w->counters, AE_M_FWD_UNDECODABLE, 1);
        ae_count(&w->counters, AE_M_QUIC_PKTS_DROPPED, 1);
        return 1;
    }
    return 0;
}

/* ---- forwarding in ---- */

/* The QUIC endpoint of this worker whose socket serves `local` (its bound address, or a
 * wildcard of the same family and port). */
static ae_qep *ep_by_local(ae_worker *w, const ae_tunnel_addr *local)
{
    ae_qep *wild = NULL;
    for (ae_wlistener *l = w->listeners; l != NULL; l = l->next) {
        if (l->proto != AE_LPROTO_QUIC || l->qep == NULL)
            continue;
        int m = ae_quic_ep_serves(l->qep, &local->sa);
        if (m == AE_QUIC_EP_EXACT)
            return l->qep;
        if (m == AE_QUIC_EP_WILDCARD)
            wild = l->qep;
    }
    return wild;
}

/* Drains the socket's error queue: an ICMP error for a frame we sent marks that peer
 * unreachable for a while (its anyedge is gone), so its clients get a reset at once instead
 * of after the registry notices. */
static void read_errqueue(ae_fwd_worker *fw, int fd)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage to;
        uint8_t buf[64];
        union {
            char c[512];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {buf, sizeof(buf)};
        struct msghdr mh = {.msg_name = &to,
                            .msg_namelen = sizeof(to),
                            .msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.c,
                            .msg_controllen = sizeof(ctl.c)};
        if (recvmsg(fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
            return;
        int refused = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if ((cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_RECVERR) ||
                (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_RECVERR)) {
                struct sock_extended_err ee;
                memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
                refused = ee.ee_errno == ECONNREFUSED || ee.ee_errno == EHOSTUNREACH ||
                          ee.ee_errno == ENETUNREACH;
            }
        }
        if (!refused || fw->peers == NULL)
            continue;
        for (size_t k = 0; k < fw->peers->n; k++) {
            const ae_fwd_peer *p = &fw->peers->p[k];
            if (p->addrlen == mh.msg_namelen && memcmp(&p->addr, &to, p->addrlen) == 0) {
                uint64_t now = ae_wall_ms();
                if (atomic_exchange_explicit(&fw->g->unreach_until[p->site], now + FWD_UNREACH_MS,
                                             memory_order_relaxed) <= now)
                    AE_WARN("forward: site %u is unreachable (ICMP error from its forward "
                            "port); resetting its clients' packets for %d ms",
                            p->site, FWD_UNREACH_MS);
            }
        }
    }
}

/* A verified reply frame (site.return: tunnel at its owner): the owner of a connection whose
 * client reaches it through this site sends its datagram back to us; it leaves this worker's
 * QUIC socket for the frame's local (anycast) address, from that address, to the client. Only
 * from a live peer: a frame from a site our registry does not list as alive is dropped. */
static void tunnel_reply_in(ae_fwd_worker *fw, const ae_tunnel_hdr *hdr, const uint8_t *dg,
                            size_t dglen)
{
    ae_worker *w = fw->w;
    const ae_fwd_peer *p = ae_fwd_peers_find(fw->peers, hdr->site);
    if (p == NULL || !p->live || hdr->site == w->rt->conf->site.id) {
        tun_drop(w, AE_FWD_DROP_REPLY_PEER);
        return;
    }
    ae_qep *ep = ep_by_local(w, &hdr->local);
    if (ep == NULL) {
        tun_drop(w, AE_FWD_DROP_NOEP);
        return;
    }
    atomic_fetch_add_explicit(&fw->site_rin[hdr->site], 1, memory_order_relaxed);
    ae_count(&w->counters, AE_M_FWD_REPLY_IN, 1);
    uint8_t ecn = (uint8_t)((hdr->flags & AE_TUNNEL_ECN_MASK) >> AE_TUNNEL_ECN_SHIFT);
    if (ae_quic_send_reply(ep, &hdr->client.sa, hdr->client_len, &hdr->local.sa, ecn, dg, dglen) !=
        0)
        ae_count(&w->counters, AE_M_QUIC_PKTS_DROPPED, 1); /* socket full: QUIC recovers */
}

/* One tunnel frame (buf, len) received on the forward socket: a reply to send to its client,
 * or a datagram for one of our QUIC endpoints (added to eps, flushed by the caller). */
static void tunnel_frame_in(ae_fwd_worker *fw, ae_tunnel_keys *tk, const uint8_t *buf, size_t len,
                            uint64_t now, uint64_t window, ep_set *eps)
{
    ae_worker *w = fw->w;
    ae_tunnel_hdr hdr;
    const uint8_t *dg;
    size_t dglen;
    if (tk == NULL) {
        tun_drop(w, AE_FWD_DROP_NOKEYS);
        return;
    }
    int rc = ae_tunnel_decode(tk, buf, len, now, window, &hdr, &dg, &dglen);
    if (rc != 0) {
        tun_drop(w, -rc - 1);
        return;
    }
    if (hdr.flags & AE_TUNNEL_FLAG_REPLY) {
        tunnel_reply_in(fw, &hdr, dg, dglen);
        return;
    }
    if ((dg[0] & 0x80) && long_kind(dg, dglen) != 2) {
        tun_drop(w, AE_FWD_DROP_INITIAL);
        return;
    }
    ae_qep *ep = ep_by_local(w, &hdr.local);
    if (ep == NULL) {
        tun_drop(w, AE_FWD_DROP_NOEP);
        return;
    }
    fwd_observe_latency(w, now, hdr.timestamp_ms);
    atomic_fetch_add_explicit(&fw->site_in[hdr.site], 1, memory_order_relaxed);
    ae_count(&w->counters, AE_M_FWD_IN, 1);
    ae_count(&w->counters, AE_M_QUIC_PKTS_IN, 1);
    ae_count(&w->counters, AE_M_QUIC_BYTES_IN, dglen);
    ae_dgram d = {.data = dg,
                  .len = dglen,
                  .peer = &hdr.client.sa,
                  .peerlen = hdr.client_len,
                  .local = &hdr.local.sa,
                  .locallen = hdr.local_len,
                  .origin = AE_DGRAM_TUNNEL,
                  .site = hdr.site};
    ep_set_add(eps, ep);
    ae_quic_input(ep, &d);
}

/* The UDP GRO segment size of a received message, or 0 (one datagram). */
static size_t gro_size(struct msghdr *mh)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO &&
            cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int gso;
            memcpy(&gso, CMSG_DATA(cm), sizeof(gso));
            return gso > 0 ? (size_t)gso : 0;
        }
    }
    return 0;
}

static void tunnel_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    ae_fwd_worker *fw = io->data;
    ae_worker *w = fw->w;
    struct mmsghdr msgs[FWD_BATCH];
    struct iovec iov[FWD_BATCH];
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl[FWD_BATCH];
    ep_set eps = {0};

    read_errqueue(fw, fw->fd);
    if (fw->sfd4 >= 0)
        read_errqueue(fw, fw->sfd4);
    if (fw->sfd6 >= 0)
        read_errqueue(fw, fw->sfd6);
    ae_tunnel_keys *tk = tunnel_keys(fw);
    uint64_t window = fwd_window_ms(w);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < FWD_BATCH; i++) {
            iov[i].iov_base = fw->rbuf[i];
            iov[i].iov_len = sizeof(fw->rbuf[i]);
            memset(&msgs[i], 0, sizeof(msgs[i]));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctl[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
        }
        int n = recvmmsg(fw->fd, msgs, FWD_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break;
        uint64_t now = ae_wall_ms();
        for (int i = 0; i < n; i++) {
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                tun_drop(w, -AE_TUN_ERR_SHORT - 1);
                continue;
            }
            /* With UDP GRO one read may hold several frames of one sender, all of seg bytes
             * but the last: each is decoded on its own. */
            size_t total = msgs[i].msg_len, seg = gro_size(&msgs[i].msg_hdr);
            if (seg == 0 || seg > total)
                seg = total;
            size_t off = 0;
            do {
                size_t len = total - off < seg ? total - off : seg;
                tunnel_frame_in(fw, tk, fw->rbuf[i] + off, len, now, window, &eps);
                off += seg;
            } while (off < total);
        }
        if (n < FWD_BATCH)
            break;
    }
    ep_set_flush(&eps);
}
