/* TCP hand-off: start, stop, and what the main thread posts to the engine (handoff_int.h). */
#include "proxy/handoff/handoff.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/handoff/handoff_int.h"

/* ---- start / stop ---- */

/* The capture's listener addresses: every TCP listener of conf. *out malloc'd. */
static int listeners_of(const ae_conf *conf, ae_capture_listener **out, size_t *n)
{
    ae_capture_listener *ls = calloc(conf->nlisteners * 2 + 1, sizeof(*ls));
    size_t k = 0;
    if (ls == NULL)
        return AE_ERR_NOMEM;
    for (size_t i = 0; i < conf->nlisteners; i++) {
        const ae_conf_listener *l = &conf->listeners[i];
        if (l->protocol != AE_LPROTO_TCP)
            continue;
        const struct sockaddr *sa = (const struct sockaddr *)&l->addr.sa;
        if (sa->sa_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
            ls[k].family = AF_INET;
            memcpy(ls[k].addr, &in->sin_addr, 4);
            ls[k++].port = ntohs(in->sin_port);
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
            ls[k].family = AF_INET6;
            memcpy(ls[k].addr, &in6->sin6_addr, 16);
            ls[k].port = ntohs(in6->sin6_port);
            if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) { /* dual stack: IPv4 too */
                ls[k + 1] = ls[k];
                ls[k + 1].family = AF_INET;
                k++;
            }
            k++;
        }
    }
    *out = ls;
    *n = k;
    return 0;
}

static int sock_open(const ae_conf *conf, char *err, size_t errlen)
{
    struct sockaddr_storage a;
    socklen_t alen;
    int one = 1, pmtu = IP_PMTUDISC_DONT;
    if (ae_ho_endpoint((const struct sockaddr *)&conf->site.forward.sa, &a, &alen) != 0) {
        snprintf(err, errlen, "site.forward port 65535 leaves no port for the hand-off endpoint");
        return -1;
    }
    int fd = socket(a.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    /* Segments of a full-MTU client path do not fit one datagram between sites with the frame
     * overhead: let the kernel fragment rather than drop them. */
    /* IP_RECVERR: ICMP errors for frames sent to a peer land on the error queue (a dead peer
     * is noticed at its first refused frame, see read_errqueue). */
    if (a.ss_family == AF_INET) {
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu));
        setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof(one));
    } else {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof(one));
    }
    if (bind(fd, (struct sockaddr *)&a, alen) != 0) {
        char t[64];
        snprintf(err, errlen, "cannot bind the hand-off endpoint %s: %s",
                 ae_addr_format((struct sockaddr *)&a, t, sizeof(t)), strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void handoff_free(ae_handoff *h)
{
    if (h->loop != NULL)
        ev_loop_destroy(h->loop);
    ae_capture_close(h->cap);
    ae_sockdiag_close(h->diag);
    if (h->sock >= 0)
        close(h->sock);
    ae_tunnel_keys_free(h->keys);
    ae_qsecrets_unref(h->sec);
    ae_qsecrets_unref(h->new_sec);
    ae_fwd_peers_unref(h->peers);
    ae_fwd_peers_unref(h->new_peers);
    free(h->new_ls);
    free(h->replay);
    free(h->down_until);
    free(h->flows);
    free(h->buckets);
    free(h->hold);
    free(h->slots);
    free(h->rx);
    pthread_mutex_destroy(&h->lock);
    pthread_mutex_destroy(&h->flock);
    free(h);
}

int ae_handoff_start(const ae_conf *conf, ae_conntab *tab, ae_handoff **out, char *err,
                     size_t errlen)
{
    ae_capture_listener *ls = NULL;
    size_t nls = 0;
    int rv;
    if (conf->site.forward.len == 0) {
        snprintf(err, errlen,
                 "tcp_handoff needs site.forward (the hand-off endpoint is its port + 1)");
        return AE_ERR_INVAL;
    }
    ae_handoff *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return AE_ERR_NOMEM;
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->flock, NULL);
    h->sock = -1;
    h->tun = -1;
    h->tab = tab;
    h->site = (uint16_t)conf->site.id;
    h->window_ms = conf->site.forward_window_ms;
    h->qtimeout_ms = conf->tcp_handoff.query_timeout_ms;
    h->ttl_ms = conf->tcp_handoff.flow_ttl_ms;
    h->max_qps = conf->tcp_handoff.max_queries;
    h->nflows = conf->tcp_handoff.max_flows;
    h->nbuckets = h->nflows;
    h->seq = ae_wall_ms() * 1000000ull; /* larger than anything sent before a restart */
    h->qid_next = ae_wall_ms() << 20;
    h->q_head = h->q_tail = -1;
    h->replay = calloc(HO_NSITES, sizeof(*h->replay));
    h->down_until = calloc(HO_NSITES, sizeof(*h->down_until));
    h->flows = calloc(h->nflows, sizeof(*h->flows));
    h->buckets = malloc(h->nbuckets * sizeof(*h->buckets));
    h->hold = malloc(sizeof(*h->hold) * HO_HOLD_BUFS);
    h->slots = malloc((size_t)HO_BATCH * HO_SLOT);
    h->rx = malloc((size_t)HO_BATCH * HO_RX_SLOT);
    if (h->replay == NULL || h->down_until == NULL || h->flows == NULL || h->buckets == NULL ||
        h->hold == NULL || h->slots == NULL || h->rx == NULL) {
        handoff_free(h);
        return AE_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < h->nbuckets; i++)
        h->buckets[i] = -1;
    for (uint32_t i = 0; i < h->nflows; i++)
        h->flows[i].hnext = i + 1 < h->nflows ? (int32_t)(i + 1) : -1;
    h->free_head = 0;
    for (uint32_t i = 0; i < HO_HOLD_BUFS; i++)
        h->hold_free[i] = (uint16_t)i;
    h->nhold_free = HO_HOLD_BUFS;

    if ((rv = ae_sockdiag_open(&h->diag, err, errlen)) != 0) {
        handoff_free(h);
        return rv;
    }
    if ((h->sock = sock_open(conf, err, errlen)) < 0) {
        handoff_free(h);
        return AE_ERR_IO;
    }
    if ((rv = listeners_of(conf, &ls, &nls)) != 0) {
        handoff_free(h);
        return rv;
    }
    rv =
        ae_capture_open(conf->tcp_handoff.device, (const char *const *)conf->tcp_handoff.interfaces,
                        conf->tcp_handoff.ninterfaces, ls, nls, &h->cap, err, errlen);
    free(ls);
    if (rv != 0) {
        handoff_free(h);
        return rv;
    }
    h->tun = ae_capture_tun_fd(h->cap);
    h->loop = ev_loop_new(EVFLAG_AUTO);
    if (h->loop == NULL) {
        snprintf(err, errlen, "cannot create an event loop");
        handoff_free(h);
        return AE_ERR_NOMEM;
    }
    ev_async_init(&h->wake, ae_ho_wake_cb);
    h->wake.data = h;
    ev_async_start(h->loop, &h->wake);
    ev_io_init(&h->tun_io, ae_ho_tun_cb, h->tun, EV_READ);
    h->tun_io.data = h;
    ev_io_start(h->loop, &h->tun_io);
    ev_io_init(&h->sock_io, ae_ho_sock_cb, h->sock, EV_READ);
    h->sock_io.data = h;
    ev_io_start(h->loop, &h->sock_io);
    ev_timer_init(&h->qtimer, ae_ho_qtimer_cb, 0, 0);
    h->qtimer.data = h;
    ev_timer_init(&h->tick, ae_ho_tick_cb, 1.0, 1.0);
    h->tick.data = h;
    ev_timer_start(h->loop, &h->tick);
    if (pthread_create(&h->thread, NULL, ae_ho_thread_main, h) != 0) {
        snprintf(err, errlen, "cannot start the hand-off thread");
        handoff_free(h);
        return AE_ERR_NOMEM;
    }
    h->started = 1;
    *out = h;
    return 0;
}

void ae_handoff_stop(ae_handoff *h)
{
    if (h == NULL)
        return;
    if (h->started) {
        pthread_mutex_lock(&h->lock);
        h->stop = 1;
        pthread_mutex_unlock(&h->lock);
        ev_async_send(h->loop, &h->wake);
        pthread_join(h->thread, NULL);
    }
    handoff_free(h);
}

void ae_handoff_set_secrets(ae_handoff *h, struct ae_qsecrets *sec)
{
    if (h == NULL || sec == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    ae_qsecrets_unref(h->new_sec);
    h->new_sec = ae_qsecrets_ref(sec);
    pthread_mutex_unlock(&h->lock);
    ev_async_send(h->loop, &h->wake);
}

void ae_handoff_set_peers(ae_handoff *h, ae_fwd_peers *p)
{
    if (h == NULL || p == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    ae_fwd_peers_unref(h->new_peers);
    h->new_peers = ae_fwd_peers_ref(p);
    pthread_mutex_unlock(&h->lock);
    ev_async_send(h->loop, &h->wake);
}

void ae_handoff_set_listeners(ae_handoff *h, const ae_conf *conf)
{
    ae_capture_listener *ls;
    size_t n;
    if (h == NULL || listeners_of(conf, &ls, &n) != 0)
        return;
    pthread_mutex_lock(&h->lock);
    free(h->new_ls);
    h->new_ls = ls;
    h->new_nls = n;
    h->new_ls_set = 1;
    pthread_mutex_unlock(&h->lock);
    ev_async_send(h->loop, &h->wake);
}

const char *ae_handoff_capture_mode(const ae_handoff *h)
{
    return ae_capture_mode(h->cap);
}
