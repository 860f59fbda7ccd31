/* TCP hand-off engine thread: capture -> owner discovery -> tunnel -> injection (see handoff.h;
 * start/stop in start.c, metrics and whereis in report.c). */
#include "proxy/handoff/handoff_int.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void drop(ae_handoff *h, size_t why)
{
    atomic_fetch_add_explicit(&h->drops[why], 1, memory_order_relaxed);
}

static void inc(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- addresses ---- */

/* The hand-off endpoint of a site whose forward endpoint is fwd: same address, port + 1. */
int ae_ho_endpoint(const struct sockaddr *fwd, struct sockaddr_storage *out, socklen_t *len)
{
    if (fwd->sa_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, fwd, sizeof(in));
        if (ntohs(in.sin_port) == 65535)
            return -1;
        in.sin_port = htons((uint16_t)(ntohs(in.sin_port) + 1));
        memcpy(out, &in, sizeof(in));
        *len = sizeof(in);
        return 0;
    }
    if (fwd->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, fwd, sizeof(in6));
        if (ntohs(in6.sin6_port) == 65535)
            return -1;
        in6.sin6_port = htons((uint16_t)(ntohs(in6.sin6_port) + 1));
        memcpy(out, &in6, sizeof(in6));
        *len = sizeof(in6);
        return 0;
    }
    return -1;
}

static void key_to_sa(const ae_flowkey *k, struct sockaddr_storage *c, struct sockaddr_storage *l)
{
    memset(c, 0, sizeof(*c));
    memset(l, 0, sizeof(*l));
    if (k->family == AF_INET) {
        struct sockaddr_in *ci = (struct sockaddr_in *)c, *li = (struct sockaddr_in *)l;
        ci->sin_family = li->sin_family = AF_INET;
        memcpy(&ci->sin_addr, k->caddr, 4);
        memcpy(&li->sin_addr, k->laddr, 4);
        ci->sin_port = htons(k->cport);
        li->sin_port = htons(k->lport);
    } else {
        struct sockaddr_in6 *ci = (struct sockaddr_in6 *)c, *li = (struct sockaddr_in6 *)l;
        ci->sin6_family = li->sin6_family = AF_INET6;
        memcpy(&ci->sin6_addr, k->caddr, 16);
        memcpy(&li->sin6_addr, k->laddr, 16);
        ci->sin6_port = htons(k->cport);
        li->sin6_port = htons(k->lport);
    }
}

/* A packet's key: client = source, local = destination. */
static void key_from_pkt(const ae_ippkt *p, ae_flowkey *k)
{
    memset(k, 0, sizeof(*k));
    k->family = (uint8_t)p->family;
    memcpy(k->caddr, p->src, p->family == AF_INET ? 4 : 16);
    memcpy(k->laddr, p->dst, p->family == AF_INET ? 4 : 16);
    k->cport = p->sport;
    k->lport = p->dport;
}

/* ---- out batch ---- */

static void read_errqueue(ae_handoff *h);

static void flush(ae_handoff *h)
{
    int n = h->nout, sent = 0, retries = 0;
    while (sent < n) {
        int r = sendmmsg(h->sock, h->msgs + sent, (unsigned)(n - sent), MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* A pending ICMP error (IP_RECVERR) is reported once by the next call: it is
             * about an earlier frame; read it and send this batch again. */
            if ((errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) &&
                retries++ < 4) {
                read_errqueue(h);
                continue;
            }
            for (int i = sent; i < n; i++)
                drop(h, AE_HO_DROP_SEND);
            break;
        }
        sent += r;
    }
    h->nout = 0;
}

/* The next free slot of the out batch (flushing a full batch first). */
static uint8_t *slot_next(ae_handoff *h)
{
    if (h->nout == HO_BATCH)
        flush(h);
    return h->slots + (size_t)h->nout * HO_SLOT;
}

/* Commits the frame of length len in the current slot, to dst. */
static void slot_commit(ae_handoff *h, size_t len, const struct sockaddr *dst, socklen_t dlen)
{
    int i = h->nout++;
    memcpy(&h->dst[i], dst, dlen);
    h->iov[i].iov_base = h->slots + (size_t)i * HO_SLOT;
    h->iov[i].iov_len = len;
    memset(&h->msgs[i], 0, sizeof(h->msgs[i]));
    h->msgs[i].msg_hdr.msg_name = &h->dst[i];
    h->msgs[i].msg_hdr.msg_namelen = dlen;
    h->msgs[i].msg_hdr.msg_iov = &h->iov[i];
    h->msgs[i].msg_hdr.msg_iovlen = 1;
}

/* ---- giving back and injecting ---- */

/* Writes a packet into the local stack through the TUN device, completing a partial TCP
 * checksum. Returns 0, or the drop reason. */
static int tun_write(ae_handoff *h, uint8_t *pkt, size_t len, const ae_ippkt *p)
{
    int cs = ae_ippkt_tcp_csum_state(pkt, p);
    if (cs == AE_CSUM_PARTIAL)
        ae_ippkt_tcp_csum_fill(pkt, p);
    else if (cs != AE_CSUM_OK)
        return AE_HO_DROP_CSUM;
    ssize_t w;
    do
        w = write(h->tun, pkt, len);
    while (w < 0 && errno == EINTR);
    return w == (ssize_t)len ? 0 : AE_HO_DROP_TUN_WRITE;
}

/* Hands a captured segment back to this site's kernel: it has no connection for it and
 * answers with a RST, as without the hand-off. */
static void give_back(ae_handoff *h, uint8_t *pkt, size_t len, int why)
{
    ae_ippkt p;
    if (ae_ippkt_parse(pkt, len, &p) != 0) {
        drop(h, AE_HO_DROP_PACKET);
        return;
    }
    int rc = tun_write(h, pkt, len, &p);
    if (rc != 0)
        drop(h, (size_t)rc);
    else
        inc(&h->returned[why]);
}

/* ---- flow cache ---- */

hflow *ae_ho_flow_find(ae_handoff *h, const ae_flowkey *k, uint32_t hash)
{
    for (int32_t i = h->buckets[hash % h->nbuckets]; i >= 0; i = h->flows[i].hnext)
        if (h->flows[i].hash == hash && memcmp(&h->flows[i].key, k, sizeof(*k)) == 0)
            return &h->flows[i];
    return NULL;
}

static void fifo_unlink(ae_handoff *h, hflow *f)
{
    int32_t i = (int32_t)(f - h->flows);
    if (f->qprev >= 0)
        h->flows[f->qprev].qnext = f->qnext;
    else if (h->q_head == i)
        h->q_head = f->qnext;
    if (f->qnext >= 0)
        h->flows[f->qnext].qprev = f->qprev;
    else if (h->q_tail == i)
        h->q_tail = f->qprev;
    f->qprev = f->qnext = -1;
}

static void hold_release(ae_handoff *h, hflow *f)
{
    for (uint8_t i = 0; i < f->nheld; i++)
        h->hold_free[h->nhold_free++] = f->held[i];
    f->nheld = 0;
}

static void flow_free(ae_handoff *h, hflow *f)
{
    int32_t idx = (int32_t)(f - h->flows);
    int32_t *pp = &h->buckets[f->hash % h->nbuckets];
    while (*pp >= 0 && *pp != idx)
        pp = &h->flows[*pp].hnext;
    if (*pp == idx)
        *pp = f->hnext;
    if (f->state == F_QUERY)
        fifo_unlink(h, f);
    hold_release(h, f);
    f->state = F_FREE;
    f->hnext = h->free_head;
    h->free_head = idx;
    atomic_fetch_sub_explicit(&h->nflows_used, 1, memory_order_relaxed);
}

static hflow *flow_new(ae_handoff *h, const ae_flowkey *k, uint32_t hash, uint64_t now)
{
    if (h->free_head < 0)
        return NULL;
    int32_t idx = h->free_head;
    hflow *f = &h->flows[idx];
    h->free_head = f->hnext;
    memset(f, 0, sizeof(*f));
    f->key = *k;
    f->hash = hash;
    f->qprev = f->qnext = -1;
    f->last_ms = now;
    f->hnext = h->buckets[hash % h->nbuckets];
    h->buckets[hash % h->nbuckets] = idx;
    atomic_fetch_add_explicit(&h->nflows_used, 1, memory_order_relaxed);
    return f;
}

static int hold(ae_handoff *h, hflow *f, const uint8_t *pkt, size_t len)
{
    if (f->nheld >= HO_HOLD_FLOW || h->nhold_free == 0 || len > HO_HOLD_SIZE)
        return -1;
    uint16_t b = h->hold_free[--h->nhold_free];
    memcpy(h->hold[b], pkt, len);
    h->hold_len[b] = (uint16_t)len;
    f->held[f->nheld++] = b;
    return 0;
}

/* A peer that may hold TCP connections: live (heartbeat fresh), reachable (no ICMP error
 * lately) and publishing an endpoint. A draining peer counts as long as it is live: unlike its
 * QUIC connections (which it ends with GOAWAY, so `draining` stops forwarding to it after the
 * drain deadline), its TCP connections run until their clients or upstreams end them, and
 * their segments must keep reaching it. */
static int peer_usable(const ae_handoff *h, const ae_fwd_peer *p)
{
    return p != NULL && p->site != h->site && p->live && p->addrlen > 0 &&
           h->down_until[p->site] <= ae_now_ms();
}

#define HO_DOWN_MS 10000 /* an unreachable endpoint is skipped this long, or until it speaks */

/* Same family, address and port. */
static int same_endpoint(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* Reads the socket's error queue (IP_RECVERR): an ICMP port or host unreachable for a frame
 * sent to a peer's endpoint means its anyedge is gone (killed, crashed) before the registry
 * notices: its flows are given back at once, so their clients see a RST, not a stall. */
static void read_errqueue(ae_handoff *h)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage dst;
        union {
            char buf[512];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {.iov_base = h->rx, .iov_len = 64};
        struct msghdr m = {.msg_name = &dst,
                           .msg_namelen = sizeof(dst),
                           .msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = ctl.buf,
                           .msg_controllen = sizeof(ctl.buf)};
        if (recvmsg(h->sock, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
            return;
        int refused = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
            if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
                (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
                struct sock_extended_err ee;
                memcpy(&ee, CMSG_DATA(c), sizeof(ee));
                refused = ee.ee_errno == ECONNREFUSED || ee.ee_errno == EHOSTUNREACH ||
                          ee.ee_errno == ENETUNREACH;
            }
        }
        for (size_t j = 0; refused && h->peers != NULL && j < h->peers->n; j++) {
            const ae_fwd_peer *p = &h->peers->p[j];
            struct sockaddr_storage ep;
            socklen_t eplen;
            if (p->site == h->site || ae_ho_endpoint(&p->addr.sa, &ep, &eplen) != 0 ||
                !same_endpoint(&ep, &dst))
                continue;
            uint64_t now = ae_now_ms();
            if (h->down_until[p->site] <= now)
                AE_INFO("tcp handoff: site %u's hand-off endpoint refuses frames (ICMP "
                        "unreachable): its moved flows are given back (RST)",
                        p->site);
            h->down_until[p->site] = now + HO_DOWN_MS;
        }
    }
}

/* Sends pkt (len bytes, already at slot + AE_HOFF_HDR_LEN when in_place) to owner. */
static void send_segment(ae_handoff *h, uint16_t owner, const uint8_t *pkt, size_t len,
                         int in_place, uint64_t now_wall)
{
    const ae_fwd_peer *p = ae_fwd_peers_find(h->peers, owner);
    struct sockaddr_storage dst;
    socklen_t dlen;
    if (!peer_usable(h, p) || ae_ho_endpoint(&p->addr.sa, &dst, &dlen) != 0) {
        drop(h, AE_HO_DROP_SEND);
        return;
    }
    uint8_t *out = in_place ? h->slots + (size_t)h->nout * HO_SLOT : slot_next(h);
    int n = ae_hoff_encode_segment(h->keys, h->site, now_wall, ++h->seq,
                                   in_place ? out + AE_HOFF_HDR_LEN : pkt, len, out, HO_SLOT);
    if (n < 0) {
        drop(h, AE_HO_DROP_SEND);
        return;
    }
    slot_commit(h, (size_t)n, (struct sockaddr *)&dst, dlen);
    inc(&h->seg_out[owner]);
}

/* The flow's owner is known (or not): releases its held segments. */
static void flow_resolved(ae_handoff *h, hflow *f, int owned, uint16_t owner, int why,
                          uint64_t now_wall)
{
    if (f->state == F_QUERY)
        fifo_unlink(h, f);
    f->state = owned ? F_OWNED : F_LOCAL;
    f->owner = owned ? owner : 0;
    for (uint8_t i = 0; i < f->nheld; i++) {
        uint16_t b = f->held[i];
        if (owned)
            send_segment(h, owner, h->hold[b], h->hold_len[b], 0, now_wall);
        else
            give_back(h, h->hold[b], h->hold_len[b], why);
    }
    hold_release(h, f);
}

static void arm_qtimer(ae_handoff *h)
{
    ev_timer_stop(h->loop, &h->qtimer);
    if (h->q_head < 0)
        return;
    uint64_t now = ae_now_ms(), due = h->flows[h->q_head].t0_ms + h->qtimeout_ms;
    ev_timer_set(&h->qtimer, due > now ? (double)(due - now) / 1000.0 : 0.0, 0.0);
    ev_timer_start(h->loop, &h->qtimer);
}

/* Asks every live peer whose flow f is. Returns the number of queries sent. */
static unsigned send_queries(ae_handoff *h, hflow *f, uint64_t now_wall)
{
    struct sockaddr_storage c, l, dst;
    socklen_t dlen;
    unsigned n = 0;
    key_to_sa(&f->key, &c, &l);
    for (size_t i = 0; h->peers != NULL && i < h->peers->n; i++) {
        const ae_fwd_peer *p = &h->peers->p[i];
        if (!peer_usable(h, p) || ae_ho_endpoint(&p->addr.sa, &dst, &dlen) != 0)
            continue;
        uint8_t *out = slot_next(h);
        int len = ae_hoff_encode_query(h->keys, h->site, now_wall, ++h->seq, f->qid,
                                       (struct sockaddr *)&c, (struct sockaddr *)&l, out, HO_SLOT);
        if (len < 0)
            continue;
        slot_commit(h, (size_t)len, (struct sockaddr *)&dst, dlen);
        inc(&h->q_out[p->site]);
        n++;
    }
    return n;
}

static int ready(const ae_handoff *h)
{
    return h->keys != NULL && h->peers != NULL;
}

/* Once ready: asks the peers about the flows that waited for keys or a peer table. */
static void ask_waiting(ae_handoff *h, uint64_t now_wall)
{
    for (int32_t i = h->q_head, next; i >= 0; i = next) {
        hflow *f = &h->flows[i];
        next = f->qnext;
        if (f->waiting > 0)
            continue;
        unsigned n = send_queries(h, f, now_wall);
        if (n == 0)
            flow_resolved(h, f, 0, 0, RET_NOT_MINE, now_wall);
        else
            f->waiting = (uint16_t)n;
    }
}

/* Query budget: at most max_qps new flows looked up per second (0 = no limit). */
static int query_allowed(ae_handoff *h, uint64_t now)
{
    if (h->max_qps == 0)
        return 1;
    if (now / 1000 != h->qps_second) {
        h->qps_second = now / 1000;
        h->qps_count = 0;
    }
    return h->qps_count++ < h->max_qps;
}

/* One captured orphan at slot + AE_HOFF_HDR_LEN (len bytes). */
static void orphan(ae_handoff *h, uint8_t *pkt, size_t len, uint64_t now, uint64_t now_wall)
{
    ae_ippkt p;
    ae_flowkey k;
    inc(&h->orphans);
    if (ae_ippkt_parse(pkt, len, &p) != 0) {
        drop(h, AE_HO_DROP_PACKET);
        return;
    }
    key_from_pkt(&p, &k);
    uint32_t hash = ae_flowkey_hash(&k);
    hflow *f = ae_ho_flow_find(h, &k, hash);
    if (f != NULL) {
        f->last_ms = now;
        switch (f->state) {
        case F_OWNED:
            if (peer_usable(h, ae_fwd_peers_find(h->peers, f->owner))) {
                inc(&h->cache_hits);
                send_segment(h, f->owner, pkt, len, 1, now_wall);
                return;
            }
            /* The owner is gone: the client's connection cannot continue anywhere. */
            AE_INFO("tcp handoff: owner site %u of a moved flow is no longer live or "
                    "reachable; giving the flow back (RST)",
                    f->owner);
            f->state = F_LOCAL;
            give_back(h, pkt, len, RET_OWNER_GONE);
            return;
        case F_QUERY:
            if (hold(h, f, pkt, len) != 0)
                drop(h, AE_HO_DROP_HOLD);
            return;
        default:
            give_back(h, pkt, len, RET_LOCAL);
            return;
        }
    }
    if (p.tcp_flags & TH_RST) {
        give_back(h, pkt, len, RET_RST); /* a RST for an unknown flow: never worth a query */
        return;
    }
    if (!query_allowed(h, now)) {
        give_back(h, pkt, len, RET_BUDGET);
        return;
    }
    f = flow_new(h, &k, hash, now);
    if (f == NULL) {
        drop(h, AE_HO_DROP_FLOWS);
        return;
    }
    f->qid = ++h->qid_next;
    f->t0_ms = now;
    if (hold(h, f, pkt, len) != 0) {
        drop(h, AE_HO_DROP_HOLD);
    }
    /* Not ready (start-up: no ring keys or peer table yet): the segments wait, and the queries
     * go out when both arrive (ask_waiting), or the flow times out as not_ready. */
    unsigned n = 0;
    if (ready(h)) {
        n = send_queries(h, f, now_wall);
        if (n == 0) {
            flow_resolved(h, f, 0, 0, RET_NOT_MINE, now_wall); /* nobody to ask */
            return;
        }
    }
    f->state = F_QUERY;
    f->waiting = (uint16_t)n;
    f->qprev = h->q_tail;
    f->qnext = -1;
    if (h->q_tail >= 0)
        h->flows[h->q_tail].qnext = (int32_t)(f - h->flows);
    else
        h->q_head = (int32_t)(f - h->flows);
    h->q_tail = (int32_t)(f - h->flows);
    if (h->q_head == (int32_t)(f - h->flows))
        arm_qtimer(h);
}

void ae_ho_tun_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    ae_handoff *h = io->data;
    uint64_t now = ae_now_ms(), now_wall = ae_wall_ms();
    pthread_mutex_lock(&h->flock);
    for (int i = 0; i < HO_TUN_BURST; i++) {
        if (h->nout == HO_BATCH)
            flush(h);
        uint8_t *pkt = h->slots + (size_t)h->nout * HO_SLOT + AE_HOFF_HDR_LEN;
        ssize_t r = read(h->tun, pkt, HO_SLOT - AE_HOFF_OVERHEAD);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (r == 0)
            break;
        orphan(h, pkt, (size_t)r, now, now_wall);
    }
    pthread_mutex_unlock(&h->flock);
    flush(h);
}

/* ---- frames from other sites ---- */

/* Whether k is a connection of this site: one anyedge accepted (conntab), or, on a miss, one
 * the kernel holds before a worker accepts it (handshake in progress, accept queue). */
static int held(ae_handoff *h, const ae_flowkey *k, uint64_t now)
{
    if (ae_conntab_lookup(h->tab, k, now, NULL))
        return 1;
    if (ae_sockdiag_holds(h->diag, k) == 1) {
        inc(&h->kernel_held);
        return 1;
    }
    return 0;
}

static void on_query(ae_handoff *h, const ae_hoff_frame *f, const struct sockaddr *from,
                     socklen_t fromlen, uint64_t now, uint64_t now_wall)
{
    ae_flowkey k;
    inc(&h->queries_in);
    if (ae_flowkey_from_sa(&k, &f->tuple.client.sa, &f->tuple.local.sa) != 0) {
        drop(h, AE_HO_DROP_PACKET);
        return;
    }
    uint8_t verdict = (uint8_t)held(h, &k, now);
    uint8_t *out = slot_next(h);
    int len = ae_hoff_encode_answer(h->keys, h->site, now_wall, ++h->seq, f->qid,
                                    &f->tuple.client.sa, &f->tuple.local.sa, verdict, out, HO_SLOT);
    if (len < 0) {
        drop(h, AE_HO_DROP_SEND);
        return;
    }
    slot_commit(h, (size_t)len, from, fromlen);
}

static void on_answer(ae_handoff *h, const ae_hoff_frame *a, uint64_t now_wall)
{
    ae_flowkey k;
    if (ae_flowkey_from_sa(&k, &a->tuple.client.sa, &a->tuple.local.sa) != 0) {
        drop(h, AE_HO_DROP_PACKET);
        return;
    }
    inc(a->verdict ? &h->a_mine[a->site] : &h->a_not[a->site]);
    hflow *f = ae_ho_flow_find(h, &k, ae_flowkey_hash(&k));
    if (f != NULL && f->state == F_OWNED && f->owner == a->site && !a->verdict) {
        /* The cached owner no longer holds the flow (it restarted, or the connection is long
         * gone): its next segments go back to our kernel, whose RST ends the client's wait. */
        char buf[128];
        AE_INFO("tcp handoff: site %u no longer holds flow %s; giving it back (RST)", a->site,
                ae_flowkey_format(&k, buf, sizeof(buf)));
        f->state = F_LOCAL;
        f->owner = 0;
        return;
    }
    if (f == NULL || f->state != F_QUERY || f->qid != a->qid) {
        drop(h, AE_HO_DROP_ANSWER); /* late (timed out), duplicate or unasked */
        return;
    }
    if (a->verdict) {
        char buf[128];
        inc(&h->flows_moved);
        AE_INFO("tcp handoff: flow %s belongs to site %u (answered in %llu ms)",
                ae_flowkey_format(&k, buf, sizeof(buf)), a->site,
                (unsigned long long)(ae_now_ms() - f->t0_ms));
        flow_resolved(h, f, 1, a->site, 0, now_wall);
    } else if (--f->waiting == 0) {
        flow_resolved(h, f, 0, 0, RET_NOT_MINE, now_wall); /* every peer said no */
    }
}

/* Tells the sender of a segment for a tuple we do not hold: an unsolicited ANSWER "not mine"
 * (query id 0), so that it stops sending the flow here and gives it back to its kernel. */
static void tell_not_held(ae_handoff *h, const ae_flowkey *k, const struct sockaddr *from,
                          socklen_t fromlen, uint64_t now_wall)
{
    struct sockaddr_storage c, l;
    key_to_sa(k, &c, &l);
    uint8_t *out = slot_next(h);
    int len = ae_hoff_encode_answer(h->keys, h->site, now_wall, ++h->seq, 0, (struct sockaddr *)&c,
                                    (struct sockaddr *)&l, 0, out, HO_SLOT);
    if (len > 0)
        slot_commit(h, (size_t)len, from, fromlen);
}

static void on_segment(ae_handoff *h, const ae_hoff_frame *f, const struct sockaddr *from,
                       socklen_t fromlen, uint64_t now, uint64_t now_wall)
{
    ae_ippkt p;
    ae_flowkey k;
    uint8_t *pkt = (uint8_t *)(uintptr_t)f->pkt; /* in our receive buffer */
    if (ae_ippkt_parse(pkt, f->pkt_len, &p) != 0) {
        drop(h, AE_HO_DROP_PACKET);
        return;
    }
    if ((p.tcp_flags & TH_SYN) && !(p.tcp_flags & TH_ACK)) {
        drop(h, AE_HO_DROP_SYN);
        return;
    }
    key_from_pkt(&p, &k);
    if (!held(h, &k, now)) {
        drop(h, AE_HO_DROP_NOT_HELD);
        tell_not_held(h, &k, from, fromlen, now_wall);
        return;
    }
    int rc = tun_write(h, pkt, f->pkt_len, &p);
    if (rc != 0) {
        drop(h, (size_t)rc);
        return;
    }
    inc(&h->injected);
    inc(&h->seg_in[f->site]);
}

void ae_ho_sock_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    ae_handoff *h = io->data;
    read_errqueue(h);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < HO_BATCH; i++) {
            h->riov[i].iov_base = h->rx + (size_t)i * HO_RX_SLOT;
            h->riov[i].iov_len = HO_RX_SLOT;
            memset(&h->rmsgs[i], 0, sizeof(h->rmsgs[i]));
            h->rmsgs[i].msg_hdr.msg_name = &h->src[i];
            h->rmsgs[i].msg_hdr.msg_namelen = sizeof(h->src[i]);
            h->rmsgs[i].msg_hdr.msg_iov = &h->riov[i];
            h->rmsgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(h->sock, h->rmsgs, HO_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break;
        uint64_t now = ae_now_ms(), now_wall = ae_wall_ms();
        pthread_mutex_lock(&h->flock);
        for (int i = 0; i < n; i++) {
            ae_hoff_frame f;
            if (h->keys == NULL) {
                drop(h, AE_HO_DROP_NO_KEYS);
                continue;
            }
            int rc = ae_hoff_decode(h->keys, h->riov[i].iov_base, h->rmsgs[i].msg_len, now_wall,
                                    h->window_ms, &f);
            if (rc < 0) {
                if (-rc - 1 < AE_HOFF_NREASONS)
                    drop(h, AE_HO_DROP_TUNNEL + (size_t)(-rc - 1));
                continue;
            }
            if (ae_replay_check(&h->replay[f.site], f.seq) != 0) {
                drop(h, AE_HO_DROP_REPLAY);
                continue;
            }
            h->down_until[f.site] = 0; /* it speaks again */
            switch (f.type) {
            case AE_HOFF_QUERY:
                on_query(h, &f, (struct sockaddr *)&h->src[i], h->rmsgs[i].msg_hdr.msg_namelen, now,
                         now_wall);
                break;
            case AE_HOFF_ANSWER:
                on_answer(h, &f, now_wall);
                break;
            case AE_HOFF_SEGMENT:
                on_segment(h, &f, (struct sockaddr *)&h->src[i], h->rmsgs[i].msg_hdr.msg_namelen,
                           now, now_wall);
                break;
            }
        }
        pthread_mutex_unlock(&h->flock);
        flush(h);
        if (n < HO_BATCH)
            break;
    }
}

/* ---- timers ---- */

void ae_ho_qtimer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ae_handoff *h = t->data;
    uint64_t now = ae_now_ms(), now_wall = ae_wall_ms();
    pthread_mutex_lock(&h->flock);
    while (h->q_head >= 0) {
        hflow *f = &h->flows[h->q_head];
        if (f->t0_ms + h->qtimeout_ms > now)
            break;
        char buf[128];
        int asked = f->waiting > 0;
        AE_INFO("tcp handoff: %s flow %s within %u ms; giving it back (RST)",
                asked ? "no site claimed" : "no ring keys or peer table yet to ask about",
                ae_flowkey_format(&f->key, buf, sizeof(buf)), h->qtimeout_ms);
        flow_resolved(h, f, 0, 0, asked ? RET_TIMEOUT : RET_NOT_READY, now_wall);
    }
    pthread_mutex_unlock(&h->flock);
    flush(h);
    arm_qtimer(h);
}

void ae_ho_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ae_handoff *h = t->data;
    uint64_t now = ae_now_ms();
    ae_conntab_sweep(h->tab, now);
    pthread_mutex_lock(&h->flock);
    for (uint32_t i = 0; i < h->nflows; i++) {
        hflow *f = &h->flows[i];
        if ((f->state == F_OWNED && now > f->last_ms + h->ttl_ms) ||
            (f->state == F_LOCAL && now > f->last_ms + HO_LOCAL_MS))
            flow_free(h, f);
    }
    pthread_mutex_unlock(&h->flock);
}

/* Messages from the main thread. */
void ae_ho_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    ae_handoff *h = a->data;
    pthread_mutex_lock(&h->lock);
    struct ae_qsecrets *sec = h->new_sec;
    ae_fwd_peers *peers = h->new_peers;
    ae_capture_listener *ls = h->new_ls;
    size_t nls = h->new_nls;
    int ls_set = h->new_ls_set, stop = h->stop;
    h->new_sec = NULL;
    h->new_peers = NULL;
    h->new_ls = NULL;
    h->new_ls_set = 0;
    pthread_mutex_unlock(&h->lock);
    if (sec != NULL) {
        ae_tunnel_keys *k;
        if (ae_tunnel_keys_from_ring(&sec->ring, &k) == 0) {
            ae_tunnel_keys_free(h->keys);
            h->keys = k;
        } else {
            AE_ERROR("tcp handoff: cannot derive tunnel keys from ring generation %llu",
                     (unsigned long long)sec->ring.generation);
        }
        ae_qsecrets_unref(h->sec);
        h->sec = sec;
    }
    if (peers != NULL) {
        ae_fwd_peers_unref(h->peers);
        h->peers = peers;
    }
    if ((sec != NULL || peers != NULL) && ready(h)) {
        pthread_mutex_lock(&h->flock);
        ask_waiting(h, ae_wall_ms());
        pthread_mutex_unlock(&h->flock);
        flush(h);
    }
    if (ls_set && h->cap != NULL && ae_capture_set_listeners(h->cap, ls, nls) != 0)
        AE_ERROR("tcp handoff: cannot update the capture's listener addresses");
    free(ls);
    if (stop)
        ev_break(loop, EVBREAK_ALL);
}

void *ae_ho_thread_main(void *arg)
{
    ae_handoff *h = arg;
    ae_log_worker = -1;
    ev_run(h->loop, 0);
    return NULL;
}
