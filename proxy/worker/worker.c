/*
 * Worker threads: one libev loop each, listening sockets in an SO_REUSEPORT group, messages
 * from the main thread, a buffer pool (buf.c).
 */
#include "proxy/core/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/forward/forward.h"
#include "proxy/h3/h3.h"
#include "proxy/quic/quic.h"
#include "proxy/tcp/relay.h"
#include "proxy/core/worker.h"

#define AE_ACCEPT_BATCH   64  /* accepts per readiness event: fairness against connections */
#define AE_ACCEPT_PAUSE_S 0.1 /* pause after EMFILE/ENFILE/ENOBUFS */

static void listener_close(ae_worker *w, ae_wlistener *l)
{
    if (l->proto == AE_LPROTO_QUIC)
        ae_quic_listener_stop(w, l);
    ev_io_stop(w->loop, &l->io);
    ev_timer_stop(w->loop, &l->pause);
    close(l->fd);
    free(l);
}

/* ---- per-source limits: the table follows the runtime's limits.* ---- */

static void srclimit_apply(ae_worker *w)
{
    const ae_conf *conf = w->rt->conf;
    ae_srclimit_conf c = {.v4_prefix = conf->limits.ipv4_prefix,
                          .v6_prefix = conf->limits.ipv6_prefix,
                          .tcp_rate = conf->limits.tcp_rate,
                          .tcp_concurrent = conf->limits.tcp_concurrent,
                          .quic_retry_rate = conf->limits.quic_retry_rate,
                          .quic_drop_rate = conf->limits.quic_drop_rate,
                          .h3_rate = conf->limits.h3_rate,
                          .table_size = conf->limits.table_size,
                          .nworkers = conf->workers};
    if (!ae_srclimit_any(&c)) {
        ae_srclimit_free(w->srclim); /* open connections are no longer counted */
        w->srclim = NULL;
        return;
    }
    if (w->srclim != NULL && ae_srclimit_same_shape(w->srclim, &c)) {
        ae_srclimit_set_limits(w->srclim, &c); /* keep the sources and their counts */
        return;
    }
    ae_srclimit *t;
    if (ae_srclimit_new(&c, &w->counters.v[AE_M_SRC_EVICTIONS], &t) != 0) {
        AE_ERROR("per-source limits: out of memory for %u sources; keeping the previous table",
                 c.table_size);
        return;
    }
    ae_srclimit_free(w->srclim);
    w->srclim = t;
}

/* ---- overload reporting: one line per period, not one per event ---- */

static void overload_flush(ae_worker *w)
{
    uint64_t *o = w->ovl;
    if (o[AE_OVL_ACCEPT] + o[AE_OVL_TCP_LIMIT] + o[AE_OVL_QUIC_LIMIT] + o[AE_OVL_SOURCE] == 0)
        return;
    AE_WARN("overload: %llu accept failure(s)%s%s%s, %llu TCP connection(s) and %llu QUIC "
            "Initial(s) refused by tune.max_connections (%u per worker), %llu refusal(s) by "
            "per-source limits (anyedge_limit_refusals_total), since the last such line",
            (unsigned long long)o[AE_OVL_ACCEPT], o[AE_OVL_ACCEPT] ? " (last: " : "",
            o[AE_OVL_ACCEPT] ? strerror(w->ovl_errno) : "", o[AE_OVL_ACCEPT] ? ")" : "",
            (unsigned long long)o[AE_OVL_TCP_LIMIT], (unsigned long long)o[AE_OVL_QUIC_LIMIT],
            w->rt != NULL ? w->rt->conf->tune.max_connections : 0,
            (unsigned long long)o[AE_OVL_SOURCE]);
    memset(w->ovl, 0, sizeof(w->ovl));
    w->ovl_logged = ev_now(w->loop);
}

static void overload_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    overload_flush(t->data);
}

void ae_worker_overload(ae_worker *w, ae_overload what, int err)
{
    ev_tstamp now = ev_now(w->loop);

    w->ovl[what]++;
    if (err != 0)
        w->ovl_errno = err;
    if (w->ovl_logged == 0 || now - w->ovl_logged >= AE_OVERLOAD_LOG_S) {
        overload_flush(w);
    } else if (!ev_is_active(&w->ovl_timer)) {
        ev_timer_set(&w->ovl_timer, w->ovl_logged + AE_OVERLOAD_LOG_S - now, 0);
        ev_timer_start(w->loop, &w->ovl_timer);
    }
}

static void accept_resume_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ae_wlistener *l = t->data;
    ev_io_start(loop, &l->io);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    ae_wlistener *l = io->data;
    ae_worker *w = l->w;
    for (int i = 0; i < AE_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            if (errno == ECONNABORTED || errno == EPERM || errno == EPROTO)
                continue;
            ae_count(&w->counters, AE_M_ACCEPT_ERRORS, 1);
            ae_worker_overload(w, AE_OVL_ACCEPT, errno); /* accepts pause AE_ACCEPT_PAUSE_S */
            ev_io_stop(loop, io);
            ev_timer_set(&l->pause, AE_ACCEPT_PAUSE_S, 0);
            ev_timer_start(loop, &l->pause);
            return;
        }
        ae_tconn_accept(w, l, fd, (struct sockaddr *)&ss, sl);
    }
}

static int listener_add(ae_worker *w, const ae_lfd *lf)
{
    ae_wlistener *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return AE_ERR_NOMEM;
    l->fd = lf->fd;
    l->index = lf->index;
    l->proto = lf->proto;
    l->w = w;
    ev_io_init(&l->io, accept_cb, l->fd, EV_READ);
    l->io.data = l;
    ev_timer_init(&l->pause, accept_resume_cb, 0, 0);
    l->pause.data = l;
    if (l->proto == AE_LPROTO_QUIC) {
        int rv = ae_quic_listener_start(w, l); /* replaces the accept callback */
        if (rv != 0) {
            free(l);
            return rv;
        }
    }
    ev_io_start(w->loop, &l->io);
    l->next = w->listeners;
    w->listeners = l;
    return 0;
}

/* Makes the worker's listeners exactly the set in msg: kept fds get their new index, fds not
 * in the set are closed, new fds are watched. */
static void apply_listeners(ae_worker *w, ae_msg *m)
{
    ae_wlistener **pp = &w->listeners;
    while (*pp != NULL) {
        ae_wlistener *l = *pp;
        size_t k;
        for (k = 0; k < m->nfds; k++)
            if (m->fds[k].fd == l->fd)
                break;
        if (k == m->nfds) {
            *pp = l->next;
            listener_close(w, l);
            continue;
        }
        l->index = m->fds[k].index;
        m->fds[k].fd = -1; /* already ours */
        pp = &l->next;
    }
    for (size_t k = 0; k < m->nfds; k++) {
        if (m->fds[k].fd < 0)
            continue;
        if (listener_add(w, &m->fds[k]) != 0) {
            AE_ERROR("cannot watch a listening socket: out of memory");
            close(m->fds[k].fd);
        }
    }
}

static void maybe_finish(ae_worker *w)
{
    if (w->stopping && w->nconns == 0 && ae_quic_nconns(w) == 0)
        ev_break(w->loop, EVBREAK_ALL);
}

static void drain_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ae_worker *w = t->data;
    AE_WARN("drain timeout: closing %zu remaining connections", w->nconns);
    ae_tconn_close_all(w, AE_M_DRAIN_FORCED);
    ev_break(loop, EVBREAK_ALL);
}

static void handle_msg(ae_worker *w, ae_msg *m)
{
    switch (m->type) {
    case AE_MSG_RUNTIME:
        if (w->stopping) {
            for (size_t k = 0; k < m->nfds; k++)
                close(m->fds[k].fd);
            if (m->fwd_fd >= 0 && (w->fwd == NULL || m->fwd_fd != ae_fwd_socket(w)))
                close(m->fwd_fd);
            ae_runtime_unref(m->rt);
            break;
        }
        ae_quic_runtime(w, m->rt);
        apply_listeners(w, m);
        ae_fwd_set_socket(w, m->fwd_fd);
        ae_runtime_unref(w->rt);
        w->rt = m->rt;
        ae_bufpool_set_size(&w->bufs, w->rt->conf->tune.buffer_size);
        srclimit_apply(w);
        break;
    case AE_MSG_STOP:
        if (w->stopping) {
            /* A second stop (second SIGTERM/SIGINT) ends the drain now. */
            AE_WARN("forced stop: closing %zu remaining connections", w->nconns);
            ae_tconn_close_all(w, AE_M_DRAIN_FORCED);
            ev_break(w->loop, EVBREAK_ALL);
            break;
        }
        w->stopping = 1;
        for (ae_wlistener **pp = &w->listeners; *pp != NULL;) {
            ae_wlistener *l = *pp;
            /* QUIC listeners with connections keep reading until those drained (GOAWAY). */
            if (l->proto == AE_LPROTO_QUIC && ae_quic_listener_drain(w, l)) {
                pp = &l->next;
                continue;
            }
            *pp = l->next;
            listener_close(w, l);
        }
        if (w->rt != NULL) {
            ev_timer_set(&w->drain, w->rt->conf->timeouts.drain_ms / 1000.0, 0);
            ev_timer_start(w->loop, &w->drain);
        }
        AE_INFO("draining %zu connections, %zu QUIC", w->nconns, ae_quic_nconns(w));
        maybe_finish(w);
        break;
    case AE_MSG_SECRETS:
        ae_quic_secrets(w, m->sec);
        break;
    case AE_MSG_PEERS:
        ae_fwd_set_peers(w, m->peers);
        break;
    case AE_MSG_SITE_DRAIN:
    case AE_MSG_SITE_UNDRAIN:
        w->site_draining = m->type == AE_MSG_SITE_DRAIN;
        if (!w->stopping)
            ae_quic_site_drain(w, w->site_draining);
        break;
    }
    free(m->fds);
    free(m);
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    ae_worker *w = a->data;
    pthread_mutex_lock(&w->lock);
    ae_msg *m = w->mq_head;
    w->mq_head = w->mq_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (m != NULL) {
        ae_msg *next = m->next;
        handle_msg(w, m);
        m = next;
    }
}

static void gc_cb(struct ev_loop *loop, ev_prepare *c, int revents)
{
    ae_worker *w = c->data;
    ae_tconn_gc(w);
    ae_quic_gc(w);
    maybe_finish(w);
}

void ae_worker_post(ae_worker *w, ae_msg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->mq_tail)
        w->mq_tail->next = m;
    else
        w->mq_head = m;
    w->mq_tail = m;
    pthread_mutex_unlock(&w->lock);
    ev_async_send(w->loop, &w->wake);
}

int ae_worker_new(int id, ae_worker **out)
{
    ae_worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return AE_ERR_NOMEM;
    w->id = id;
    w->next_conn_id = ((uint64_t)id << 48) + 1;
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL) {
        free(w);
        return AE_ERR_NOMEM;
    }
    pthread_mutex_init(&w->lock, NULL);
    ev_async_init(&w->wake, wake_cb);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    /* ev_prepare, not ev_check: check watchers run before the callbacks of their iteration,
     * so a connection closed by them (the last one of a drain) would wait for the next event. */
    ev_prepare_init(&w->gc, gc_cb);
    w->gc.data = w;
    ev_prepare_start(w->loop, &w->gc);
    ev_timer_init(&w->drain, drain_timeout_cb, 0, 0);
    w->drain.data = w;
    ev_timer_init(&w->ovl_timer, overload_cb, 0, 0);
    w->ovl_timer.data = w;
    /* QUIC tells the forwarding layer about datagrams whose connection is not here and sends
     * tunnel replies through it, and runs HTTP/3 on its connections through the application
     * ops (calls go down only: quic never calls forward.c or h3.c itself). */
    ae_quic_hooks hooks = {.ctx = w,
                           .unknown_cid = ae_fwd_unknown,
                           .site_addr = ae_fwd_peer_addr,
                           .reply = ae_fwd_reply};
    ae_h3_worker *h3 = ae_h3_worker_new(w);
    if (h3 == NULL || ae_quic_set_hooks(w, &hooks) != 0 ||
        ae_quic_set_app(w, &ae_h3_app_ops, h3) != 0) {
        ae_h3_worker_free(h3);
        ae_worker_free(w);
        return AE_ERR_NOMEM;
    }
    *out = w;
    return 0;
}

static void *worker_main(void *arg)
{
    ae_worker *w = arg;
    ae_log_worker = w->id;
    AE_DEBUG("worker started");
    ev_run(w->loop, 0);
    overload_flush(w);
    ae_tconn_gc(w);
    AE_DEBUG("worker stopped");
    atomic_store(&w->exited, 1);
    if (w->exit_loop != NULL)
        ev_async_send(w->exit_loop, w->exit_notify);
    return NULL;
}

int ae_worker_start(ae_worker *w)
{
    /* Signals belong to the main thread: workers start with them blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return AE_ERR_NOMEM;
    w->started = 1;
    return 0;
}

void ae_worker_free(ae_worker *w)
{
    if (w == NULL)
        return;
    if (w->started)
        pthread_join(w->thread, NULL);
    /* The thread has ended: whatever is left is ours to release. */
    ae_tconn_close_all(w, AE_M_DRAIN_FORCED);
    ae_tconn_gc(w);
    while (w->listeners != NULL) {
        ae_wlistener *l = w->listeners;
        w->listeners = l->next;
        listener_close(w, l);
    }
    ae_quic_free(w);
    ae_msg *m = w->mq_head;
    while (m != NULL) {
        ae_msg *next = m->next;
        for (size_t k = 0; k < m->nfds; k++)
            close(m->fds[k].fd);
        ae_runtime_unref(m->rt);
        ae_qsecrets_unref(m->sec);
        ae_fwd_peers_unref(m->peers);
        if (m->type == AE_MSG_RUNTIME && m->fwd_fd >= 0 &&
            (w->fwd == NULL || m->fwd_fd != ae_fwd_socket(w)))
            close(m->fwd_fd);
        free(m->fds);
        free(m);
        m = next;
    }
    ae_bufpool_clear(&w->bufs);
    ae_runtime_unref(w->rt);
    ae_srclimit_free(w->srclim);
    ae_fwd_worker_stop(w);
    ev_async_stop(w->loop, &w->wake);
    ev_prepare_stop(w->loop, &w->gc);
    ev_timer_stop(w->loop, &w->drain);
    ev_timer_stop(w->loop, &w->ovl_timer);
    ev_loop_destroy(w->loop);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
