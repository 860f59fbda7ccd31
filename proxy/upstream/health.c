/*
 * Active health checks on the main thread's loop.
 *
 * One check object per (pool, server) of the current runtime, created by
 * ae_health_set_runtime. Each check cycles IDLE -> CONNECTING -> (SENDING -> READING) -> IDLE
 * with one ev_io for the socket and one ev_timer that is the interval timer while idle and the
 * check deadline while a check is in flight. The result moves the shared server's streaks; the
 * up/down decision is written to the server's atomics that workers read.
 */
#include "proxy/upstream/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HC_RESP_MAX   1024 /* status line must fit in this */
#define HC_FIRST_MIN  0.05 /* first check 50 ms after start ... */
#define HC_FIRST_SPAN 0.50 /* ... plus up to 500 ms of jitter */
#define HC_REQ_FMT                                                                                 \
    "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: anyedge-health\r\nConnection: close\r\n\r\n"

typedef enum {
    HC_IDLE = 0,   /* waiting for the interval timer; no socket */
    HC_CONNECTING, /* non-blocking connect in progress; waiting for writability */
    HC_SENDING,    /* HTTP only: writing the request */
    HC_READING,    /* HTTP only: reading until the status line is complete */
} hc_state;

typedef struct hc_check {
    ae_health *h;
    ae_pool *pool; /* in h->rt */
    ae_upstream_server *srv;
    hc_state state;
    int fd;
    ev_io io;
    ev_timer timer;
    char *req; /* HTTP request, built at set_runtime */
    size_t reqlen, sent;
    char resp[HC_RESP_MAX + 1];
    size_t resplen;
    int seen; /* mark used while re-targeting */
} hc_check;

struct ae_health {
    struct ev_loop *loop;
    ae_runtime *rt;
    hc_check **checks;
    size_t nchecks;
    uint64_t rng;
};

/* xorshift64*: jitter only, no need for quality or thread safety (main thread). */
static double jitter01(ae_health *h)
{
    uint64_t x = h->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    h->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / (double)(1ULL << 53);
}

static uint32_t timeout_ms(const hc_check *c)
{
    uint32_t ms = c->pool->conf->health.timeout_ms;

    return ms > 0 ? ms : 1000;
}

static double interval_s(const hc_check *c)
{
    uint32_t ms = c->pool->conf->health.interval_ms;

    return (ms > 0 ? ms : 1000) / 1000.0;
}

static void check_close_fd(hc_check *c)
{
    ev_io_stop(c->h->loop, &c->io);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

/* Stops whatever is in flight and waits delay seconds before the next check. */
static void check_schedule(hc_check *c, double delay)
{
    check_close_fd(c);
    c->state = HC_IDLE;
    ev_timer_stop(c->h->loop, &c->timer);
    ev_timer_set(&c->timer, delay, 0.);
    ev_timer_start(c->h->loop, &c->timer);
}

static void check_done(hc_check *c, int ok, const char *reason)
{
    ae_upstream_server *s = c->srv;
    const ae_conf_upstream *uc = c->pool->conf;
    uint32_t rise = uc->health.rise > 0 ? uc->health.rise : 1;
    uint32_t fall = uc->health.fall > 0 ? uc->health.fall : 1;
    int healthy = atomic_load(&s->healthy);

    if (ok) {
        atomic_fetch_add(&s->checks_ok, 1);
        s->fall_streak = 0;
        if (s->rise_streak < UINT32_MAX)
            s->rise_streak++;
        if (!healthy && s->rise_streak >= rise) {
            atomic_store(&s->passive_fails, 0);
            atomic_store(&s->healthy, 1);
            atomic_fetch_add(&s->transitions, 1);
            AE_INFO("health: upstream %s server %s is UP (%u consecutive checks passed)", uc->name,
                    s->addr.text, (unsigned)s->rise_streak);
        }
    } else {
        atomic_fetch_add(&s->checks_failed, 1);
        s->rise_streak = 0;
        if (s->fall_streak < UINT32_MAX)
            s->fall_streak++;
        if (healthy && s->fall_streak >= fall) {
            atomic_store(&s->healthy, 0);
            atomic_fetch_add(&s->transitions, 1);
            AE_WARN("health: upstream %s server %s is DOWN: %s (%u consecutive failures)", uc->name,
                    s->addr.text, reason, (unsigned)s->fall_streak);
        } else if (healthy) {
            AE_DEBUG("health: upstream %s server %s check failed: %s", uc->name, s->addr.text,
                     reason);
        }
    }
    /* Up to 10% jitter keeps checks of many servers from lining up. */
    check_schedule(c, interval_s(c) * (0.95 + 0.1 * jitter01(c->h)));
}

static void check_fail_errno(hc_check *c, const char *what, int err)
{
    char reason[128];

    snprintf(reason, sizeof(reason), "%s: %s", what, strerror(err));
    check_done(c, 0, reason);
}

/* Parses "HTTP/1.x NNN" at the start of c->resp. Returns the status, 0 when more bytes are
 * needed, -1 when it is not an HTTP/1 status line. */
static int parse_status(const hc_check *c, int eof)
{
    const char *p = c->resp;
    size_t n = c->resplen;
    int i, code = 0;

    if (n < 12) {
        if (memcmp(p, "HTTP/1.", n < 7 ? n : 7) != 0)
            return -1;
        return eof ? -1 : 0;
    }
    if (memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' || p[8] != ' ')
        return -1;
    for (i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        code = code * 10 + (p[i] - '0');
    }
    if (n > 12 && p[12] != ' ' && p[12] != '\r' && p[12] != '\n')
        return -1;
    /* The status code alone decides; the reason phrase need not arrive. */
    return code;
}

static void check_read(hc_check *c)
{
    for (;;) {
        ssize_t r = recv(c->fd, c->resp + c->resplen, HC_RESP_MAX - c->resplen, 0);
        int eof = r == 0, code;
        char reason[64];

        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            check_fail_errno(c, "read", errno);
            return;
        }
        c->resplen += (size_t)r;
        code = parse_status(c, eof);
        if (code == 0 && !eof && c->resplen < HC_RESP_MAX)
            continue;
        if (code <= 0) {
            check_done(c, 0,
                       eof && c->resplen == 0 ? "HTTP: connection closed without response"
                                              : "HTTP: malformed status line");
            return;
        }
        if (code >= 200 && code < 400) {
            check_done(c, 1, NULL);
        } else {
            snprintf(reason, sizeof(reason), "HTTP %d", code);
            check_done(c, 0, reason);
        }
        return;
    }
}

static void check_send(hc_check *c)
{
    while (c->sent < c->reqlen) {
        ssize_t w = send(c->fd, c->req + c->sent, c->reqlen - c->sent, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return; /* still waiting for EV_WRITE */
            check_fail_errno(c, "write", errno);
            return;
        }
        c->sent += (size_t)w;
    }
    c->state = HC_READING;
    ev_io_stop(c->h->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_READ);
    ev_io_start(c->h->loop, &c->io);
}

static void check_connected(hc_check *c)
{
    if (c->pool->conf->health.kind != AE_HC_HTTP || c->req == NULL) {
        check_done(c, 1, NULL);
        return;
    }
    c->state = HC_SENDING;
    c->sent = 0;
    c->resplen = 0;
    check_send(c);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    hc_check *c = w->data;
    int err = 0;
    socklen_t elen = sizeof(err);

    switch (c->state) {
    case HC_CONNECTING:
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
            err = errno;
        if (err == EINPROGRESS || err == EALREADY)
            return;
        if (err != 0) {
            check_fail_errno(c, "connect", err);
            return;
        }
        check_connected(c);
        break;
    case HC_SENDING:
        check_send(c);
        break;
    case HC_READING:
        check_read(c);
        break;
    case HC_IDLE:
        ev_io_stop(loop, w);
        break;
    }
}

static void check_start(hc_check *c)
{
    const ae_addr *a = &c->srv->addr;
    double timeout;

    c->fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        check_fail_errno(c, "socket", errno);
        return;
    }
    timeout = timeout_ms(c) / 1000.0;
    ev_timer_stop(c->h->loop, &c->timer);
    ev_timer_set(&c->timer, timeout, 0.);
    ev_timer_start(c->h->loop, &c->timer);

    c->state = HC_CONNECTING;
    if (connect(c->fd, (const struct sockaddr *)&a->sa, a->len) != 0 && errno != EINPROGRESS) {
        /* e.g. ECONNREFUSED reported at once on loopback */
        check_fail_errno(c, "connect", errno);
        return;
    }
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(c->h->loop, &c->io);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    hc_check *c = w->data;
    char reason[64];

    if (c->state == HC_IDLE) {
        check_start(c);
        return;
    }
    snprintf(reason, sizeof(reason), "timeout after %ums", (unsigned)timeout_ms(c));
    check_done(c, 0, reason);
}

static void check_free(hc_check *c)
{
    if (c == NULL)
        return;
    check_close_fd(c);
    ev_timer_stop(c->h->loop, &c->timer);
    free(c->req);
    free(c);
}

/* (Re)builds the request for the check's current pool config. */
static int check_build_req(hc_check *c)
{
    const ae_conf_upstream *uc = c->pool->conf;
    const char *path;
    int n;

    free(c->req);
    c->req = NULL;
    c->reqlen = 0;
    if (uc->health.kind != AE_HC_HTTP)
        return 0;
    path = uc->health.http_path != NULL && uc->health.http_path[0] != '\0' ? uc->health.http_path
                                                                           : "/";
    n = snprintf(NULL, 0, HC_REQ_FMT, path, c->srv->addr.text);
    if (n < 0 || (c->req = malloc((size_t)n + 1)) == NULL)
        return AE_ERR_NOMEM;
    snprintf(c->req, (size_t)n + 1, HC_REQ_FMT, path, c->srv->addr.text);
    c->reqlen = (size_t)n;
    return 0;
}

static hc_check *check_new(ae_health *h, ae_pool *pool, ae_upstream_server *srv)
{
    hc_check *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->h = h;
    c->pool = pool;
    c->srv = srv;
    c->fd = -1;
    c->state = HC_IDLE;
    ev_io_init(&c->io, io_cb, -1, EV_WRITE);
    c->io.data = c;
    ev_timer_init(&c->timer, timer_cb, 0., 0.);
    c->timer.data = c;
    if (check_build_req(c) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

int ae_health_new(struct ev_loop *loop, ae_health **out)
{
    ae_health *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return AE_ERR_NOMEM;
    h->loop = loop;
    h->rng = ((uint64_t)getpid() << 32) ^ ae_now_ns() ^ (uint64_t)(uintptr_t)h;
    if (h->rng == 0)
        h->rng = 0x9E3779B97F4A7C15ULL;
    *out = h;
    return 0;
}

/* Looks up the old check of srv; servers are unique per pool name and address, and the same
 * object is shared by the new runtime when both still exist. */
static hc_check *find_old(ae_health *h, const ae_upstream_server *srv)
{
    size_t i;

    for (i = 0; i < h->nchecks; i++) {
        if (h->checks[i] != NULL && h->checks[i]->srv == srv)
            return h->checks[i];
    }
    return NULL;
}

void ae_health_set_runtime(ae_health *h, ae_runtime *rt)
{
    hc_check **next = NULL;
    size_t n = 0, cap = 0, p, i;

    if (rt != NULL) {
        for (p = 0; p < rt->npools; p++) {
            if (rt->pools[p].conf->health.kind != AE_HC_NONE)
                cap += rt->pools[p].nservers;
        }
    }
    if (cap > 0) {
        next = calloc(cap, sizeof(*next));
        if (next == NULL) {
            /* Keep checking the old set rather than nothing; the old runtime stays alive. */
            AE_ERROR("health: out of memory re-targeting checks; keeping the previous set");
            return;
        }
    }
    for (p = 0; rt != NULL && p < rt->npools; p++) {
        ae_pool *pool = &rt->pools[p];

        if (pool->conf->health.kind == AE_HC_NONE)
            continue;
        for (i = 0; i < pool->nservers; i++) {
            ae_upstream_server *srv = pool->servers[i];
            hc_check *c = find_old(h, srv);

            if (c != NULL && !c->seen) {
                /* The request and settings may have changed: restart any check in flight
                 * with the new config, keeping the streaks (they live in srv). */
                c->seen = 1;
                c->pool = pool;
                if (check_build_req(c) != 0) {
                    c->seen = 0; /* freed with the leftovers below */
                    c = NULL;
                } else if (c->state != HC_IDLE ||
                           ev_timer_remaining(h->loop, &c->timer) > interval_s(c)) {
                    check_schedule(c, HC_FIRST_MIN + HC_FIRST_SPAN * jitter01(h));
                }
            } else {
                c = check_new(h, pool, srv);
                if (c != NULL)
                    check_schedule(c, HC_FIRST_MIN + HC_FIRST_SPAN * jitter01(h));
            }
            if (c == NULL) {
                AE_ERROR("health: out of memory: upstream %s server %s is not checked",
                         pool->conf->name, srv->addr.text);
                continue;
            }
            next[n++] = c;
        }
    }
    /* Checks of servers that left (or whose pool lost its health block) are cancelled. A
     * server still in use but no longer checked must not stay marked down forever. */
    for (i = 0; i < h->nchecks; i++) {
        hc_check *c = h->checks[i];

        if (c == NULL)
            continue;
        if (c->seen) {
            c->seen = 0;
            continue;
        }
        if (!atomic_load(&c->srv->healthy)) {
            atomic_store(&c->srv->healthy, 1);
            atomic_fetch_add(&c->srv->transitions, 1);
        }
        c->srv->rise_streak = 0;
        c->srv->fall_streak = 0;
        check_free(c);
    }
    free(h->checks);
    h->checks = next;
    h->nchecks = n;

    if (rt != NULL)
        ae_runtime_ref(rt);
    ae_runtime_unref(h->rt);
    h->rt = rt;
}

void ae_health_free(ae_health *h)
{
    size_t i;

    if (h == NULL)
        return;
    for (i = 0; i < h->nchecks; i++)
        check_free(h->checks[i]);
    free(h->checks);
    ae_runtime_unref(h->rt);
    free(h);
}
