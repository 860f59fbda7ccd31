/*
 * The main thread: start-up, listening socket groups, reload, key rotation, signals, drain.
 */
#include "proxy/site/server.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/site/admin.h"
#include "proxy/site/anycast.h"
#include "proxy/site/keys.h"
#include "proxy/forward/forward.h"
#include "proxy/handoff/conntab.h"
#include "proxy/handoff/handoff.h"
#include "proxy/upstream/health.h"
#include "proxy/core/qsecrets.h"
#include "proxy/quic/quic.h"
#include "proxy/core/worker.h"
#include "state/state.h"

/* A listening address served by every worker: one SO_REUSEPORT socket per worker. The fds
 * belong to the workers once handed over; the main thread only remembers them to know which
 * listeners a reload keeps. */
typedef struct {
    ae_addr addr;
    ae_listener_proto proto;
    int *fds; /* [nworkers] */
} ae_lsock;

struct ae_server_main {
    char *path;
    struct ev_loop *loop;
    ev_signal sig_hup, sig_term, sig_int, sig_usr2;
    ev_async worker_exit;
    ae_keys *keys;   /* TLS ticket keys and the QUIC secrets' ring (keys.h) */
    ae_state *state; /* NULL in standalone mode */
    int serving;     /* workers started */
    ae_runtime *rt;
    ae_worker **workers;
    size_t nworkers, nexited;
    ae_lsock *lsocks;
    size_t nlsocks;
    ae_health *health;
    ae_admin *admin;
    ae_addr admin_addr;
    int admin_enabled; /* the admin object listens on admin_addr (TCP) */
    uint64_t reloads_ok, reloads_failed, started_ms;
    int draining;
    ae_anycast *anycast; /* route control and site drain (proxy/site/anycast.c) */
    /* inter-site forwarding (proxy/forward/forward.c) */
    ae_fwd_group *fwdg;
    ae_addr fwd_addr; /* site.forward the fds below are bound to */
    int *fwd_fds; /* [nworkers] site.forward SO_REUSEPORT group (the workers own them), or NULL */
    ae_fwd_peers *peers; /* newest peer table (whereis) */
    ev_timer peers_tick;
    uint64_t seen_draining[AE_CID_SITE_MAX + 1];
    /* TCP hand-off (proxy/handoff/): NULL when off or unavailable */
    ae_conntab *conntab;
    ae_handoff *handoff;
};

ae_handoff *ae_server_handoff(ae_server_main *s)
{
    return s->handoff;
}

ae_conntab *ae_server_conntab(ae_server_main *s)
{
    return s->conntab;
}

const ae_ring *ae_server_qring(ae_server_main *s)
{
    return ae_keys_qring(s->keys);
}

ae_fwd_peers *ae_server_peers(ae_server_main *s)
{
    return s->peers;
}

ae_fwd_group *ae_server_fwd_group(ae_server_main *s)
{
    return s->fwdg;
}

ae_runtime *ae_server_runtime(ae_server_main *s)
{
    return s->rt;
}

ae_keyring *ae_server_keyring(ae_server_main *s)
{
    return ae_keys_tls(s->keys);
}

size_t ae_server_nworkers(ae_server_main *s)
{
    return s->nworkers;
}

uint64_t ae_server_reloads_ok(ae_server_main *s)
{
    return s->reloads_ok;
}

uint64_t ae_server_reloads_failed(ae_server_main *s)
{
    return s->reloads_failed;
}

uint64_t ae_server_started_ms(ae_server_main *s)
{
    return s->started_ms;
}

int ae_server_draining(ae_server_main *s)
{
    return s->draining;
}

/* ---- hooks for anycast.c ---- */

ae_anycast *ae_server_anycast(ae_server_main *s)
{
    return s->anycast;
}

int ae_server_listening(ae_server_main *s)
{
    return s->serving && !s->draining && s->rt != NULL && s->nlsocks == s->rt->conf->nlisteners &&
           s->nlsocks > 0;
}

void ae_server_site_drain(ae_server_main *s, int on)
{
    for (size_t i = 0; s->workers != NULL && i < s->nworkers; i++) {
        ae_msg *m = calloc(1, sizeof(*m));
        if (m == NULL) {
            AE_ERROR("out of memory while telling worker %zu about the site drain", i);
            continue;
        }
        m->type = on ? AE_MSG_SITE_DRAIN : AE_MSG_SITE_UNDRAIN;
        ae_worker_post(s->workers[i], m);
    }
}

void ae_server_counters(ae_server_main *s, ae_counters_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < s->nworkers; i++) {
        ae_counters *c = &s->workers[i]->counters;
        for (int m = 0; m < AE_M__COUNT; m++)
            out->v[m] += atomic_load_explicit(&c->v[m], memory_order_relaxed);
        out->active += atomic_load_explicit(&c->active, memory_order_relaxed);
    }
}

static void apply_log_settings(const ae_conf *conf)
{
    ae_log_level_cur = (int)conf->log.level;
    ae_log_format_cur = (int)conf->log.format;
    ae_log_site_id = conf->site.id;
    snprintf(ae_log_site_name, sizeof(ae_log_site_name), "%s", conf->site.name);
}

/* ---- listening sockets ---- */

static int open_one(const ae_conf_listener *l, int reuseport, char *err, size_t errlen,
                    const char *path, size_t li)
{
    int quic = l->protocol == AE_LPROTO_QUIC;
    int fd = socket(l->addr.sa.ss_family,
                    (quic ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    if (!quic)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (quic && ae_quic_socket_setup(fd, l->addr.sa.ss_family) != 0)
        goto fail;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        goto fail;
    if (l->addr.sa.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr.sa, l->addr.len) != 0)
        goto fail;
    if (reuseport && !quic && listen(fd, (int)l->backlog) != 0)
        goto fail;
    return fd;
fail:
    snprintf(err, errlen, "%s:%u:%u: listeners[%zu].address: cannot listen on %s: %s", path,
             l->pos.line, l->pos.col, li, l->addr.text, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static void lsock_close(ae_lsock *ls, size_t nworkers)
{
    for (size_t i = 0; i < nworkers; i++)
        if (ls->fds[i] >= 0)
            close(ls->fds[i]);
    free(ls->fds);
}

/* Opens the SO_REUSEPORT group for listener li of conf. A probe bind without SO_REUSEPORT
 * first makes sure no other process (which could silently share a reuseport group with us)
 * already listens there. */
static int lsock_open(ae_lsock *ls, const ae_conf *conf, size_t li, size_t nworkers, char *err,
                      size_t errlen)
{
    const ae_conf_listener *l = &conf->listeners[li];
    ls->addr = l->addr;
    ls->proto = l->protocol;
    ls->fds = malloc(nworkers * sizeof(int));
    if (ls->fds == NULL) {
        snprintf(err, errlen, "out of memory");
        return AE_ERR_NOMEM;
    }
    for (size_t i = 0; i < nworkers; i++)
        ls->fds[i] = -1;
    int probe = open_one(l, 0, err, errlen, conf->path, li);
    if (probe < 0)
        goto fail;
    close(probe);
    for (size_t i = 0; i < nworkers; i++) {
        ls->fds[i] = open_one(l, 1, err, errlen, conf->path, li);
        if (ls->fds[i] < 0)
            goto fail;
    }
    return 0;
fail:
    lsock_close(ls, nworkers);
    return AE_ERR_IO;
}

/* Builds the socket set for conf, reusing the groups of the current set whose address and
 * protocol are unchanged. On success *out and *nout hold the new set; groups of the old set that
 * are not in it are left to the workers to close (they drop them when they adopt the new set). */
static int lsocks_build(ae_server_main *s, const ae_conf *conf, ae_lsock **out, size_t *nout,
                        char *err, size_t errlen)
{
    ae_lsock *set = calloc(conf->nlisteners ? conf->nlisteners : 1, sizeof(*set));
    if (set == NULL) {
        snprintf(err, errlen, "out of memory");
        return AE_ERR_NOMEM;
    }
    size_t n = 0;
    for (size_t li = 0; li < conf->nlisteners; li++) {
        const ae_conf_listener *l = &conf->listeners[li];
        ae_lsock *old = NULL;
        for (size_t k = 0; k < s->nlsocks; k++)
            if (s->lsocks[k].proto == l->protocol && ae_addr_equal(&s->lsocks[k].addr, &l->addr))
                old = &s->lsocks[k];
        if (old != NULL) {
            set[n].addr = old->addr;
            set[n].proto = old->proto;
            set[n].fds = malloc(s->nworkers * sizeof(int));
            if (set[n].fds == NULL)
                goto fail_nomem;
            memcpy(set[n].fds, old->fds, s->nworkers * sizeof(int));
            n++;
            continue;
        }
        if (lsock_open(&set[n], conf, li, s->nworkers, err, errlen) != 0)
            goto fail;
        n++;
    }
    *out = set;
    *nout = n;
    return 0;
fail_nomem:
    snprintf(err, errlen, "out of memory");
fail:
    /* Close only the groups this call opened: reused fds still belong to the workers. */
    for (size_t k = 0; k < n; k++) {
        int reused = 0;
        for (size_t j = 0; j < s->nlsocks; j++)
            if (s->lsocks[j].fds[0] == set[k].fds[0])
                reused = 1;
        if (reused)
            free(set[k].fds);
        else
            lsock_close(&set[k], s->nworkers);
    }
    free(set);
    return AE_ERR_IO;
}

static void lsocks_forget(ae_lsock *set, size_t n)
{
    for (size_t k = 0; k < n; k++)
        free(set[k].fds);
    free(set);
}

/* ---- site.forward: one SO_REUSEPORT UDP socket per worker ---- */

static void fwd_close(int *fds, size_t n)
{
    for (size_t i = 0; fds != NULL && i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
}

static int fwd_open_one(const ae_addr *a, int reuseport)
{
    int one = 1;
    int fd = socket(a->sa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (ae_fwd_socket_setup(fd, a->sa.ss_family) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        (a->sa.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)&a->sa, a->len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* The forward socket set for conf: the current one when site.forward is unchanged (*reused
 * = 1; a copy of the array), a new group, or NULL when site.forward is unset. */
static int fwd_build(ae_server_main *s, const ae_conf *conf, int **out, int *reused, char *err,
                     size_t errlen)
{
    const ae_addr *a = &conf->site.forward;
    *out = NULL;
    *reused = 0;
    if (a->len == 0)
        return 0;
    int *fds = malloc(s->nworkers * sizeof(int));
    if (fds == NULL) {
        snprintf(err, errlen, "out of memory");
        return AE_ERR_NOMEM;
    }
    if (s->fwd_fds != NULL && ae_addr_equal(&s->fwd_addr, a)) {
        memcpy(fds, s->fwd_fds, s->nworkers * sizeof(int));
        *reused = 1;
        *out = fds;
        return 0;
    }
    for (size_t i = 0; i < s->nworkers; i++)
        fds[i] = -1;
    int probe = fwd_open_one(a, 0); /* nobody else may share the group */
    if (probe >= 0)
        close(probe);
    for (size_t i = 0; probe >= 0 && i < s->nworkers; i++)
        if ((fds[i] = fwd_open_one(a, 1)) < 0)
            probe = -1;
    if (probe < 0) {
        snprintf(err, errlen, "%s: site.forward: cannot bind %s: %s", conf->path, a->text,
                 strerror(errno));
        fwd_close(fds, s->nworkers);
        return AE_ERR_IO;
    }
    *out = fds;
    return 0;
}

/* Adopts the forward set after post_runtime handed it over (old fds not in it are closed by
 * the workers). */
static void fwd_adopt(ae_server_main *s, const ae_conf *conf, int *fds)
{
    free(s->fwd_fds);
    s->fwd_fds = fds;
    s->fwd_addr = conf->site.forward;
}

/* Every second: the peer table from the site registry, to every worker. */
static void peers_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ae_server_main *s = t->data;
    ae_site_info *sites;
    size_t n;
    if (s->state == NULL || s->workers == NULL || s->draining)
        return;
    ae_state_info si;
    ae_state_get_info(s->state, &si);
    if (!si.connected)
        return; /* heartbeats look stale while Redis is away: keep the last table */
    sites = malloc(256 * sizeof(*sites));
    if (sites == NULL)
        return;
    n = ae_state_sites(s->state, sites, 256);
    if (n == 0) {
        /* The registry has not been read yet (this site lists itself once it has): an empty
         * table would make every other site look dead and earn their clients resets. */
        free(sites);
        return;
    }
    if (t->repeat < 1.0) { /* the first table: from now on once a second */
        t->repeat = 1.0;
        ev_timer_again(loop, t);
    }
    ae_fwd_peers *p = ae_fwd_peers_build(sites, n, (uint16_t)s->rt->conf->site.id, ae_wall_ms(),
                                         s->rt->conf->state.heartbeat_ms,
                                         s->rt->conf->timeouts.drain_ms, s->seen_draining);
    free(sites);
    if (p == NULL)
        return;
    ae_fwd_peers_unref(s->peers);
    s->peers = p;
    ae_handoff_set_peers(s->handoff, p);
    for (size_t i = 0; i < s->nworkers; i++) {
        ae_msg *m = calloc(1, sizeof(*m));
        if (m == NULL)
            continue;
        m->type = AE_MSG_PEERS;
        m->peers = ae_fwd_peers_ref(p);
        ae_worker_post(s->workers[i], m);
    }
}

/* Hands rt and the listening set to every worker (each message carries its own reference).
 * conf->listeners[i] corresponds to set[i]. */
static int post_runtime(ae_server_main *s, ae_runtime *rt, const ae_lsock *set, size_t n,
                        const int *fwd_fds)
{
    for (size_t i = 0; i < s->nworkers; i++) {
        ae_msg *m = calloc(1, sizeof(*m));
        ae_lfd *fds = calloc(n ? n : 1, sizeof(*fds));
        if (m == NULL || fds == NULL) {
            free(m);
            free(fds);
            return AE_ERR_NOMEM;
        }
        for (size_t k = 0; k < n; k++) {
            fds[k].fd = set[k].fds[i];
            fds[k].index = k;
            fds[k].proto = set[k].proto;
        }
        m->type = AE_MSG_RUNTIME;
        m->fwd_fd = fwd_fds != NULL ? fwd_fds[i] : -1;
        m->rt = ae_runtime_ref(rt);
        m->fds = fds;
        m->nfds = n;
        ae_worker_post(s->workers[i], m);
    }
    return 0;
}

/* ---- admin endpoint and key rotation follow the config ---- */

static void admin_apply(ae_server_main *s, const ae_conf *conf)
{
    char err[512];
    int want = conf->admin.enabled || conf->admin.socket != NULL;

    if (s->admin != NULL && want && s->admin_enabled == conf->admin.enabled &&
        (!conf->admin.enabled || ae_addr_equal(&s->admin_addr, &conf->admin.addr))) {
        if (ae_admin_configure(s->admin, conf, err, sizeof(err)) != 0)
            AE_ERROR("admin endpoint: %s", err);
        else if (conf->admin.socket != NULL)
            AE_INFO("admin endpoint on unix socket %s", conf->admin.socket);
        return;
    }
    ae_admin_free(s->admin);
    s->admin = NULL;
    if (!want)
        return;
    if (ae_admin_new(s->loop, s, conf, &s->admin, err, sizeof(err)) != 0) {
        AE_ERROR("admin endpoint: %s", err);
        return;
    }
    s->admin_addr = conf->admin.addr;
    s->admin_enabled = conf->admin.enabled;
    if (conf->admin.enabled)
        AE_INFO("admin endpoint on http://%s/%s", conf->admin.addr.text,
                conf->admin.token != NULL ? " (POST routes need the admin token)" : "");
    if (conf->admin.socket != NULL)
        AE_INFO("admin endpoint on unix socket %s", conf->admin.socket);
}

ae_admin *ae_server_admin(ae_server_main *s)
{
    return s->admin;
}

ae_state *ae_server_state(ae_server_main *s)
{
    return s->state;
}

/* The QUIC secrets of a new ring (keys.c) go to every worker and the TCP hand-off; before the
 * workers exist there is no one to tell (ae_keys_post repeats it once they do). */
static void secrets_cb(ae_qsecrets *sec, void *arg)
{
    ae_server_main *s = arg;

    if (s->workers == NULL)
        return;
    for (size_t i = 0; i < s->nworkers; i++) {
        ae_msg *m = calloc(1, sizeof(*m));
        if (s->workers[i] == NULL || m == NULL) {
            free(m);
            continue;
        }
        m->type = AE_MSG_SECRETS;
        m->sec = ae_qsecrets_ref(sec);
        ae_worker_post(s->workers[i], m);
    }
    ae_handoff_set_secrets(s->handoff, sec);
}

static void ring_changed(const ae_ring *ring, void *arg)
{
    ae_server_main *s = arg;
    ae_keys_ring_changed(s->keys, ring);
}

int ae_server_rotate_keys(ae_server_main *s, char *err, size_t errlen)
{
    /* Shared mode rotates through Redis; the local ring (standalone, or shared mode before
     * Redis was ever reachable) rotates here. */
    if (ae_keys_shared(s->keys))
        return ae_state_rotate(s->state, err, errlen);
    return ae_keys_rotate_local(s->keys, err, errlen);
}

static void rotation_apply(ae_server_main *s, const ae_conf *conf)
{
    if (s->state != NULL)
        ae_state_set_rotation(s->state, (uint64_t)conf->tls.ticket_rotation_s * 1000);
    ae_keys_set_rotation(s->keys, conf->tls.ticket_rotation_s);
}

/* ---- reload ---- */

/* Whether the tcp_handoff sections of a and b are the same (the hand-off starts once). */
static int handoff_conf_same(const ae_conf *a, const ae_conf *b)
{
    if (a->tcp_handoff.enabled != b->tcp_handoff.enabled)
        return 0;
    if (!a->tcp_handoff.enabled)
        return 1;
    if (a->tcp_handoff.ninterfaces != b->tcp_handoff.ninterfaces ||
        strcmp(a->tcp_handoff.device, b->tcp_handoff.device) != 0 ||
        a->tcp_handoff.query_timeout_ms != b->tcp_handoff.query_timeout_ms ||
        a->tcp_handoff.flow_ttl_ms != b->tcp_handoff.flow_ttl_ms ||
        a->tcp_handoff.max_flows != b->tcp_handoff.max_flows ||
        a->tcp_handoff.max_queries != b->tcp_handoff.max_queries)
        return 0;
    for (size_t i = 0; i < a->tcp_handoff.ninterfaces; i++)
        if (strcmp(a->tcp_handoff.interfaces[i], b->tcp_handoff.interfaces[i]) != 0)
            return 0;
    return 1;
}

int ae_server_reload(ae_server_main *s, char *err, size_t errlen)
{
    ae_conf *conf = NULL;
    ae_runtime *rt = NULL;
    ae_lsock *set = NULL;
    size_t n = 0;
    int *fwd = NULL, fwd_reused = 0;
    int rv;
    if (s->draining) {
        snprintf(err, errlen, "draining: reload refused");
        rv = AE_ERR_INVAL;
        goto fail;
    }
    rv = ae_conf_load(s->path, &conf, err, errlen);
    if (rv != 0)
        goto fail;
    if (conf->workers != s->nworkers)
        AE_WARN("reload: workers %u -> %zu needs a restart; keeping %zu workers", conf->workers,
                s->nworkers, s->nworkers);
    if (!handoff_conf_same(conf, s->rt->conf))
        AE_WARN("reload: tcp_handoff changes need a restart; keeping the running hand-off "
                "settings (listener addresses are updated)");
    rv = ae_runtime_new(conf, ae_keys_tls(s->keys), s->rt, s->rt->generation + 1, &rt, err, errlen);
    if (rv != 0)
        goto fail;
    rv = fwd_build(s, rt->conf, &fwd, &fwd_reused, err, errlen);
    if (rv != 0)
        goto fail;
    rv = lsocks_build(s, rt->conf, &set, &n, err, errlen);
    if (rv != 0) {
        if (fwd_reused)
            free(fwd);
        else
            fwd_close(fwd, s->nworkers);
        goto fail;
    }
    rv = post_runtime(s, rt, set, n, fwd);
    if (rv != 0) {
        /* Some workers may have the new set already; the rest keep the old one. Both are
         * valid: keep our bookkeeping on the new set so fds are never closed twice. */
        snprintf(err, errlen, "out of memory while handing the config to workers");
    }
    lsocks_forget(s->lsocks, s->nlsocks);
    s->lsocks = set;
    s->nlsocks = n;
    fwd_adopt(s, rt->conf, fwd);
    ae_runtime_unref(s->rt);
    s->rt = rt;
    ae_handoff_set_listeners(s->handoff, rt->conf);
    apply_log_settings(rt->conf);
    ae_health_set_runtime(s->health, rt);
    ae_anycast_set_conf(s->anycast, rt->conf);
    admin_apply(s, rt->conf);
    rotation_apply(s, rt->conf);
    s->reloads_ok++;
    AE_INFO("reload: configuration generation %llu from %s is live",
            (unsigned long long)rt->generation, s->path);
    return 0;
fail:
    ae_runtime_unref(rt);
    s->reloads_failed++;
    AE_ERROR("reload failed, keeping generation %llu: %s", (unsigned long long)s->rt->generation,
             err);
    return rv;
}

/* ---- signals and shutdown ---- */

static void begin_drain(ae_server_main *s, const char *why)
{
    if (s->draining) {
        AE_WARN("%s again while draining: closing the remaining connections now", why);
    } else {
        s->draining = 1;
        if (s->state != NULL)
            ae_state_set_draining(s->state);
        ae_anycast_shutdown(s->anycast); /* withdraw the route now */
        AE_INFO("%s: stop accepting, draining connections for up to %u ms (repeat the signal "
                "to stop at once)",
                why, s->rt->conf->timeouts.drain_ms);
    }
    for (size_t i = 0; i < s->nworkers; i++) {
        ae_msg *m = calloc(1, sizeof(*m));
        if (m == NULL) {
            AE_ERROR("out of memory while stopping worker %zu", i);
            continue;
        }
        m->type = AE_MSG_STOP;
        ae_worker_post(s->workers[i], m);
    }
    /* Workers close their listening sockets now. */
    lsocks_forget(s->lsocks, s->nlsocks);
    s->lsocks = NULL;
    s->nlsocks = 0;
    ae_keys_stop(s->keys);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    ae_server_main *s = w->data;
    if (w->signum == SIGHUP) {
        char err[1024];
        AE_INFO("SIGHUP: reloading %s", s->path);
        ae_server_reload(s, err, sizeof(err));
        return;
    }
    if (w->signum == SIGUSR2) {
        char err[256];
        if (s->anycast != NULL)
            ae_anycast_drain(s->anycast, "SIGUSR2", err, sizeof(err));
        return;
    }
    begin_drain(s, w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void worker_exit_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    ae_server_main *s = a->data;
    /* ev_async coalesces: count the workers whose loops have really ended. */
    size_t done = 0;
    for (size_t i = 0; i < s->nworkers; i++)
        if (atomic_load(&s->workers[i]->exited))
            done++;
    s->nexited = done;
    if (s->draining && done == s->nworkers)
        ev_break(loop, EVBREAK_ALL);
}

/* TCP hand-off: when enabled and possible here; otherwise one line saying why, and anyedge
 * runs as without it (anyedge_tcp_handoff_enabled 0). Before the workers start. */
static void handoff_start(ae_server_main *s, const ae_conf *conf)
{
    char err[512];
    if (!conf->tcp_handoff.enabled)
        return;
    if (ae_conntab_new(&s->conntab) != 0) {
        AE_ERROR("tcp handoff disabled: out of memory");
        return;
    }
    int rv = ae_handoff_start(conf, s->conntab, &s->handoff, err, sizeof(err));
    if (rv != 0) {
        AE_WARN("tcp handoff disabled: %s", err);
        ae_conntab_free(s->conntab);
        s->conntab = NULL;
        return;
    }
    for (size_t i = 0; i < s->nworkers; i++)
        s->workers[i]->conntab = s->conntab;
    AE_INFO("tcp handoff on: capture on %zu interface(s) via %s, device %s, endpoint port %u",
            conf->tcp_handoff.ninterfaces, ae_handoff_capture_mode(s->handoff),
            conf->tcp_handoff.device,
            (unsigned)ntohs(((const struct sockaddr_in *)&conf->site.forward.sa)->sin_port) + 1);
}

static void server_free(ae_server_main *s)
{
    /* Join every worker before freeing any: a running worker may still hand a datagram to
     * another one's inbox (ev_async_send on its loop). */
    for (size_t i = 0; s->workers != NULL && i < s->nworkers; i++)
        if (s->workers[i] != NULL && s->workers[i]->started) {
            pthread_join(s->workers[i]->thread, NULL);
            s->workers[i]->started = 0;
        }
    for (size_t i = 0; s->workers != NULL && i < s->nworkers; i++)
        ae_worker_free(s->workers[i]);
    free(s->workers);
    ae_fwd_group_free(s->fwdg);
    ae_handoff_stop(s->handoff); /* after the workers: nothing touches the conntab any more */
    ae_conntab_free(s->conntab);
    free(s->fwd_fds); /* the fds belonged to the workers */
    ae_fwd_peers_unref(s->peers);
    lsocks_forget(s->lsocks, s->nlsocks);
    ae_health_free(s->health);
    ae_anycast_free(s->anycast);
    ae_admin_free(s->admin);
    ae_runtime_unref(s->rt);
    ae_state_free(s->state);
    ae_keys_free(s->keys);
    if (s->loop != NULL) {
        ev_signal_stop(s->loop, &s->sig_hup);
        ev_signal_stop(s->loop, &s->sig_term);
        ev_signal_stop(s->loop, &s->sig_int);
        ev_signal_stop(s->loop, &s->sig_usr2);
        ev_timer_stop(s->loop, &s->peers_tick);
        ev_async_stop(s->loop, &s->worker_exit);
    }
    free(s->path);
    free(s);
}

/* The workers with everything they need before their loops start: the forwarding group, the
 * TCP hand-off, the QUIC secrets, the site.forward sockets, the listening sockets and the
 * runtime (messages waiting in their queues). Returns 0, or -1 after logging why. */
static int workers_start(ae_server_main *s)
{
    char err[1024];
    int *fwd = NULL, reused;

    s->workers = calloc(s->nworkers, sizeof(*s->workers));
    if (s->workers == NULL)
        return -1;
    ev_async_init(&s->worker_exit, worker_exit_cb);
    s->worker_exit.data = s;
    ev_async_start(s->loop, &s->worker_exit);
    for (size_t i = 0; i < s->nworkers; i++) {
        if (ae_worker_new((int)i, &s->workers[i]) != 0)
            return -1;
        s->workers[i]->exit_loop = s->loop;
        s->workers[i]->exit_notify = &s->worker_exit;
    }
    if (ae_fwd_group_new(s->workers, s->nworkers, &s->fwdg) != 0)
        return -1;
    handoff_start(s, s->rt->conf);
    ae_keys_post(s->keys);
    if (fwd_build(s, s->rt->conf, &fwd, &reused, err, sizeof(err)) != 0) {
        AE_ERROR("%s", err);
        return -1;
    }
    fwd_adopt(s, s->rt->conf, fwd);
    if (lsocks_build(s, s->rt->conf, &s->lsocks, &s->nlsocks, err, sizeof(err)) != 0) {
        AE_ERROR("%s", err);
        return -1;
    }
    if (post_runtime(s, s->rt, s->lsocks, s->nlsocks, s->fwd_fds) != 0)
        return -1;
    for (size_t i = 0; i < s->nworkers; i++)
        if (ae_worker_start(s->workers[i]) != 0)
            return -1;
    return 0;
}

static void signals_start(ae_server_main *s)
{
    ev_signal_init(&s->sig_hup, signal_cb, SIGHUP);
    ev_signal_init(&s->sig_term, signal_cb, SIGTERM);
    ev_signal_init(&s->sig_int, signal_cb, SIGINT);
    ev_signal_init(&s->sig_usr2, signal_cb, SIGUSR2);
    s->sig_hup.data = s->sig_term.data = s->sig_int.data = s->sig_usr2.data = s;
    ev_signal_start(s->loop, &s->sig_usr2);
    ev_signal_start(s->loop, &s->sig_hup);
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_int);
}

int ae_server_run(const char *path)
{
    char err[1024];
    ae_conf *conf = NULL;
    int rv = ae_conf_load(path, &conf, err, sizeof(err));
    if (rv != 0) {
        fprintf(stderr, "anyedge: %s\n", err);
        return 1;
    }
    apply_log_settings(conf);
    signal(SIGPIPE, SIG_IGN);
    ae_tls_global_init();

    ae_server_main *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        ae_conf_free(conf);
        fprintf(stderr, "anyedge: out of memory\n");
        return 1;
    }
    s->loop = EV_DEFAULT;
    s->started_ms = ae_wall_ms();
    s->nworkers = conf->workers;
    /* Every 100 ms until the registry has been read and the first peer table built (the
     * forwarding and the TCP hand-off wait for it), then every second. */
    ev_timer_init(&s->peers_tick, peers_tick_cb, 0, 0.1);
    s->peers_tick.data = s;
    if (ae_keys_new(s->loop, secrets_cb, s, &s->keys) != 0) {
        ae_conf_free(conf);
        AE_ERROR("cannot create the key rings");
        goto fail;
    }
    if (conf->state.redis != NULL) {
        ae_state_hooks hooks = {.ring_changed = ring_changed, .arg = s};
        if (ae_state_new(s->loop, conf, (uint64_t)conf->tls.ticket_rotation_s * 1000, &hooks,
                         &s->state, err, sizeof(err)) != 0) {
            ae_conf_free(conf);
            AE_ERROR("%s", err);
            goto fail;
        }
    }
    if (ae_runtime_new(conf, ae_keys_tls(s->keys), NULL, 1, &s->rt, err, sizeof(err)) != 0) {
        AE_ERROR("%s", err);
        goto fail;
    }
    if (s->state != NULL && ae_state_ring(s->state) != NULL)
        ae_keys_ring_changed(s->keys, ae_state_ring(s->state)); /* no workers yet */
    if (workers_start(s) != 0)
        goto fail;
    s->serving = 1;
    ae_keys_serving(s->keys);
    if (ae_health_new(s->loop, &s->health) != 0)
        goto fail;
    ae_health_set_runtime(s->health, s->rt);
    if (ae_anycast_new(s->loop, s, &s->anycast) != 0)
        goto fail;
    admin_apply(s, s->rt->conf);
    rotation_apply(s, s->rt->conf);
    if (s->state != NULL)
        ev_timer_start(s->loop, &s->peers_tick);
    if (s->fwd_fds != NULL)
        AE_INFO("forward endpoint on %s (udp)", s->fwd_addr.text);
    signals_start(s);
    for (size_t i = 0; i < s->nlsocks; i++)
        AE_INFO("listening on %s (%s, %s)", s->lsocks[i].addr.text, s->rt->conf->listeners[i].name,
                s->lsocks[i].proto == AE_LPROTO_QUIC ? "quic/udp" : "tcp");
    AE_INFO("anyedge %s started: site %u (%s), %zu workers, config %s", AE_VERSION,
            s->rt->conf->site.id, s->rt->conf->site.name, s->nworkers, path);

    ev_run(s->loop, 0);

    ae_anycast_finish(s->anycast); /* a withdraw still running gets its time */
    ae_state_leave(s->state);      /* peers see the site gone at their next registry read */
    AE_INFO("drain complete, exiting");
    server_free(s);
    return 0;
fail:
    /* Workers that started must be told to stop before they are joined. */
    s->draining = 1;
    for (size_t i = 0; i < s->nworkers; i++) {
        if (s->workers && s->workers[i] && s->workers[i]->started) {
            ae_msg *m = calloc(1, sizeof(*m));
            if (m != NULL) {
                m->type = AE_MSG_STOP;
                ae_worker_post(s->workers[i], m);
            }
        }
    }
    server_free(s);
    return 1;
}
