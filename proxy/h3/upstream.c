/*
 * HTTP/3 requests to HTTP/1.1 upstreams: the upstream client of a qstream (s->up, h3uclient;
 * see h3.c for the HTTP/3 side).
 *
 * Life cycle (ae_h3_up_state, proxy/h3/states.h; moved by up_set_state() only): IDLE until
 * h3.c forwards the request; CONNECTING while a new connection is made (a failed connect goes
 * back to IDLE and the next server gets the queued request bytes); HEAD once connected (or with
 * a pooled connection) until the response head is complete; BODY while the body is read; KEEP
 * for the rest of a pump round when the connection may go back to the pool; DONE at the end
 * (complete, failed, or the stream reset or closed). A pooled connection that fails in HEAD
 * before any response byte goes back to IDLE once for a retry.
 *
 * Request: the HTTP/1.1 head is serialized from what h3.c collected (request line from :method
 * and :path, Host from :authority, X-Forwarded-For / X-Forwarded-Proto added) and sent on an
 * upstream TCP connection, a pooled keep-alive one when there is one, else a new one. An
 * idempotent request without a body that fails on a pooled connection before any response byte
 * is retried once on a fresh one.
 *
 * Response: the status line and fields become the HTTP/3 HEADERS; the body (Content-Length,
 * chunked or close-delimited) is queued in worker buffers that nghttp3 reads without copying.
 * The HTTP/1.1 rules (what is malformed, which fields are relayed, how the body is framed,
 * whether the connection can be kept) are the pure parser's, proxy/upstream/http1.c.
 * Bytes stay queued until the client acknowledges them; while more than AE_H3_DOWN_LIMIT bytes
 * are queued the upstream socket is not read (back-pressure), reading resumes on acks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/h3/h3_int.h"

static void try_connect(qstream *s);
static int retry(qstream *s);
static void observe_latency(qstream *s);

/* ---- helpers ---- */

static void up_set_state(qstream *s, ae_h3_up_state to)
{
    ae_h3_up_set_state(&s->w->counters, s->c->id, s->sid, &s->up.state, to);
}

static uint32_t bufsize(qstream *s)
{
    return s->c->rt->conf->tune.buffer_size;
}

static const char *server_name(qstream *s)
{
    return s->c->pool->servers[s->up.server_idx]->addr.text;
}

/* Appends bytes to the queue to the upstream. Returns 0 or AE_ERR_NOMEM. */
static int out_append(qstream *s, const void *data, size_t len)
{
    h3uclient *u = &s->up;
    const uint8_t *p = data;
    while (len > 0) {
        ae_buf *b = u->out_tail;
        if (b == NULL || b->off + b->len == b->cap) {
            b = ae_worker_buf_get(s->w, bufsize(s));
            if (b == NULL)
                return AE_ERR_NOMEM;
            if (u->out_tail)
                u->out_tail->next = b;
            else
                u->out_head = b;
            u->out_tail = b;
        }
        size_t room = b->cap - b->off - b->len, n = len < room ? len : room;
        memcpy(b->data + b->off + b->len, p, n);
        b->len += (uint32_t)n;
        p += n;
        len -= n;
    }
    return 0;
}

/* Appends formatted text (under 64 bytes) to the queue to the upstream. */
__attribute__((format(printf, 2, 3))) static int out_printf(qstream *s, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= sizeof(buf) ? AE_ERR_INVAL : out_append(s, buf, (size_t)n);
}

void ae_h3_free_chain(ae_worker *w, ae_buf **head, ae_buf **tail)
{
    while (*head != NULL) {
        ae_buf *b = *head;
        *head = b->next;
        ae_worker_buf_put(w, b);
    }
    *tail = NULL;
}

/* ---- upstream keep-alive pool ----
 * Per worker: idle HTTP/1.1 connections, newest first, each for one upstream server object
 * (shared across reloads while the pool keeps the server). An idle connection holds a reference
 * to the runtime it was made under, which keeps its server object alive. It is closed when the
 * server sends anything or closes (nothing is expected while idle), after the idle timeout, or
 * when the pool is over its bounds. Idle connections are not counted in the server's `active`. */

#define AE_H3_POOL_PER_SERVER 32   /* idle connections kept per upstream server and worker */
#define AE_H3_POOL_MAX        1024 /* and per worker in all */
#define AE_H3_POOL_IDLE_MAX   30.0 /* seconds, at most timeouts.upstream_idle */

typedef struct upidle {
    struct upidle *prev, *next;
    struct ae_h3_upool *pool;
    ae_runtime *rt;
    ae_upstream_server *srv;
    int fd;
    ev_io io;
    ev_timer t;
} upidle;

struct ae_h3_upool {
    ae_worker *w;
    upidle *head;
    size_t n;
};

/* Removes e from the pool; returns its fd, or -1 after closing it when !keep_fd. */
static int upidle_remove(upidle *e, int keep_fd)
{
    struct ae_h3_upool *p = e->pool;
    int fd = e->fd;
    ev_io_stop(p->w->loop, &e->io);
    ev_timer_stop(p->w->loop, &e->t);
    if (!keep_fd) {
        close(fd);
        fd = -1;
    }
    if (e->prev)
        e->prev->next = e->next;
    else
        p->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    p->n--;
    ae_runtime_unref(e->rt);
    free(e);
    return fd;
}

static void upidle_close(upidle *e)
{
    upidle_remove(e, 0);
}

static void upidle_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    upidle_close(io->data); /* the server closed it, or sent bytes nobody asked for */
}

static void upidle_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    upidle_close(t->data);
}

void ae_h3_upool_free(ae_h3_worker *hw)
{
    if (hw->upool == NULL)
        return;
    while (hw->upool->head != NULL)
        upidle_close(hw->upool->head);
    free(hw->upool);
    hw->upool = NULL;
}

/* Hands s's upstream connection (KEEP) to the pool. Returns 0, or -1 (the caller closes it). */
static int upool_put(qstream *s)
{
    h3uclient *u = &s->up;
    ae_h3_worker *hw = s->c->hw;
    ae_upstream_server *srv = s->c->pool->servers[u->server_idx];
    if (hw->upool == NULL) {
        if ((hw->upool = calloc(1, sizeof(*hw->upool))) == NULL)
            return -1;
        hw->upool->w = s->w;
    }
    struct ae_h3_upool *p = hw->upool;
    size_t same = 0;
    upidle *oldest = NULL;
    for (upidle *e = p->head; e != NULL; e = e->next) {
        if (e->srv == srv) {
            same++;
            oldest = e;
        }
    }
    if (same >= AE_H3_POOL_PER_SERVER)
        upidle_close(oldest);
    else if (p->n >= AE_H3_POOL_MAX) {
        upidle *last = p->head;
        while (last->next != NULL)
            last = last->next;
        upidle_close(last);
    }
    upidle *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    ev_io_stop(s->w->loop, &u->io);
    ev_timer_stop(s->w->loop, &u->timer);
    e->pool = p;
    e->rt = ae_runtime_ref(s->c->rt);
    e->srv = srv;
    e->fd = u->fd;
    u->fd = -1;
    double idle = s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0;
    if (idle > AE_H3_POOL_IDLE_MAX)
        idle = AE_H3_POOL_IDLE_MAX;
    ev_io_init(&e->io, upidle_io_cb, e->fd, EV_READ);
    e->io.data = e;
    ev_timer_init(&e->t, upidle_timer_cb, idle, 0);
    e->t.data = e;
    ev_io_start(s->w->loop, &e->io);
    ev_timer_start(s->w->loop, &e->t);
    e->next = p->head;
    if (p->head)
        p->head->prev = e;
    p->head = e;
    p->n++;
    return 0;
}

/* Takes the newest idle connection to srv that still looks open, or returns -1. */
static int upool_take(ae_h3_worker *hw, ae_upstream_server *srv)
{
    struct ae_h3_upool *p = hw->upool;
    if (p == NULL)
        return -1;
    upidle *next;
    for (upidle *e = p->head; e != NULL; e = next) {
        next = e->next;
        if (e->srv != srv)
            continue;
        char c;
        ssize_t n = recv(e->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return upidle_remove(e, 1);
        upidle_close(e); /* EOF, error or stray bytes: unusable */
    }
    return -1;
}

/* ---- the connection ---- */

/* Closes s's upstream socket (watchers, the server's active slot) and keeps the request bytes
 * queued: the next server gets them (failover after a failed connect). No state move. */
static void drop_connection(qstream *s)
{
    h3uclient *u = &s->up;
    ev_io_stop(s->w->loop, &u->io);
    ev_timer_stop(s->w->loop, &u->timer);
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    if (u->counted) {
        atomic_fetch_sub_explicit(&s->c->pool->servers[u->server_idx]->active, 1,
                                  memory_order_relaxed);
        u->counted = 0;
    }
}

void ae_h3_close_upstream(qstream *s)
{
    h3uclient *u = &s->up;
    drop_connection(s);
    ae_h3_free_chain(s->w, &u->out_head, &u->out_tail);
    /* Request body bytes nobody will forward any more: give the client its window back. */
    if (s->pending_consume > 0 && s->state != AE_H3_REQ_CLOSED)
        ae_h3_credit(s, s->pending_consume);
    if (u->state != AE_H3_UP_DONE)
        up_set_state(s, AE_H3_UP_DONE);
}

/* ---- response parsing (the HTTP/1.1 rules are in proxy/upstream/http1.c) ---- */

/* What parse_head() did with a response head. */
typedef enum {
    HEAD_SUBMITTED = 0, /* a final response: submitted to nghttp3, s->up.body set up */
    HEAD_INTERIM,       /* a 1xx head (not 101): skipped, the final head follows */
    HEAD_MALFORMED,     /* refused by the parser: the caller answers 502 */
    HEAD_SUBMIT_FAILED, /* nghttp3 refused it: ae_h3_respond() has reset the stream already */
} head_result;

/* Parses the response head in buf[0, len) (ends with the empty line) and submits it. A head
 * with a body moves the client to BODY; one without leaves it in HEAD for the caller to
 * complete. */
static head_result parse_head(qstream *s, char *buf, size_t len)
{
    h3uclient *u = &s->up;
    ae_h1_field fields[AE_H3_MAX_RESP_FIELDS - 1]; /* and :status */
    ae_h1_head h;
    ae_h1_req req = {.is_head = s->is_head, .drop_field = s->c->rt->conf->quic.site_header};
    int rv = ae_h1_parse_head(buf, len, &req, &h, fields, AE_ARRAY_LEN(fields));
    if (rv != AE_H1_OK) {
        AE_CDEBUG(s->c->id, "upstream %s: bad response head: %s", server_name(s),
                  ae_h1_strerror(rv));
        u->h1err = rv;
        return HEAD_MALFORMED;
    }
    if (h.interim)
        return HEAD_INTERIM;
    nghttp3_nv nva[AE_H3_MAX_RESP_FIELDS + 1]; /* and Set-Cookie */
    char cookie[AE_HASH_NAME_MAX + AE_AFFCOOKIE_LEN + 64];
    size_t n = 0, cl;
    char st[4] = {(char)('0' + h.status / 100), (char)('0' + h.status / 10 % 10),
                  (char)('0' + h.status % 10), 0};
    nva[n++] = AE_H3_NV(":status", st, 3);
    for (size_t i = 0; i < h.nfields; i++)
        nva[n++] = (nghttp3_nv){(uint8_t *)fields[i].name, (uint8_t *)fields[i].value,
                                fields[i].namelen, fields[i].valuelen, NGHTTP3_NV_FLAG_NONE};
    if ((cl = ae_h3_aff_set_cookie(s, cookie, sizeof(cookie))) > 0)
        nva[n++] = AE_H3_NV("set-cookie", cookie, cl);
    u->resp_close = !h.keep_alive;
    ae_h1_body_init(&u->body, h.body, (uint64_t)h.content_length);
    int body = h.body != AE_H1_BODY_NONE;
    if (body)
        up_set_state(s, AE_H3_UP_BODY);
    return ae_h3_respond(s, h.status, nva, n, body) == 0 ? HEAD_SUBMITTED : HEAD_SUBMIT_FAILED;
}

/* The response is complete (HEAD without a body, or BODY at its end): the exchange is over.
 * The connection may go back to the keep-alive pool (KEEP: decided by ae_h3_pump() once the
 * bytes of this read are accounted for), else it is closed (DONE). */
static void response_complete(qstream *s)
{
    h3uclient *u = &s->up;
    if (!u->resp_close && u->body.mode != AE_H1_BODY_CLOSE && !u->send_err && !u->eof)
        up_set_state(s, AE_H3_UP_KEEP);
    else
        ae_h3_close_upstream(s);
    ae_h3_response_end(s);
}

/* Consumes body bytes of p[0, len) (BODY); returns bytes used, or -1 on a framing error. */
static ssize_t body_bytes(qstream *s, const uint8_t *p, size_t len)
{
    h3uclient *u = &s->up;
    size_t used = 0;
    while (used < len && u->state == AE_H3_UP_BODY) {
        const uint8_t *data;
        size_t datalen;
        ssize_t n = ae_h1_body_decode(&u->body, p + used, len - used, &data, &datalen);
        if (n < 0) {
            AE_CDEBUG(s->c->id, "upstream %s: bad response body: %s", server_name(s),
                      ae_h1_strerror((int)n));
            u->h1err = (int)n;
            return -1;
        }
        if (datalen > 0 && ae_h3_dn_append(s, data, datalen) != 0)
            return -1;
        used += (size_t)n;
        if (ae_h1_body_done(&u->body))
            response_complete(s);
        else if (n == 0)
            break;
    }
    return (ssize_t)used;
}

/* Processes what s->up.rin holds (HEAD or BODY). Returns 0, or -1 when the stream ended with
 * an error or is gone. */
static int parse(qstream *s)
{
    h3uclient *u = &s->up;
    ae_buf *b = u->rin;
    while (b->len > 0 && (u->state == AE_H3_UP_HEAD || u->state == AE_H3_UP_BODY)) {
        uint8_t *p = b->data + b->off;
        if (u->state == AE_H3_UP_HEAD) {
            size_t hl = ae_h1_head_len((const char *)p, b->len);
            if (hl == 0) {
                if (b->len >= b->cap / 2) {
                    ae_h3_respond_error(s, 502, AE_H3CLOSE_UPSTREAM_HEAD_TOO_BIG);
                    return -1;
                }
                break;
            }
            head_result rv = parse_head(s, (char *)p, hl);
            if (rv == HEAD_MALFORMED) {
                ae_h3_respond_error(s, 502, AE_H3CLOSE_UPSTREAM_BAD_RESPONSE);
                return -1;
            }
            if (rv == HEAD_SUBMIT_FAILED)
                return -1;
            b->off += (uint32_t)hl;
            b->len -= (uint32_t)hl;
            if (rv == HEAD_SUBMITTED) {
                if (!ae_h3_live(s)) /* sending closed the connection */
                    return -1;
                if (u->state == AE_H3_UP_HEAD) /* no body (HEAD, 204, 304, Content-Length: 0) */
                    response_complete(s);
            }
            continue;
        }
        ssize_t n = body_bytes(s, p, b->len);
        if (n < 0) {
            ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_UPSTREAM_BAD_BODY);
            return -1;
        }
        if (!ae_h3_live(s))
            return -1;
        b->off += (uint32_t)n;
        b->len -= (uint32_t)n;
        if (n == 0)
            break;
    }
    if (b->len == 0)
        b->off = 0;
    else if (b->off > 0 && b->off + b->len == b->cap) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
    }
    return 0;
}

/* The server closed its side (HEAD or BODY). */
static void upstream_eof(qstream *s)
{
    h3uclient *u = &s->up;
    u->eof = 1;
    if (u->state == AE_H3_UP_HEAD) {
        if (!retry(s))
            ae_h3_respond_error(s, 502, AE_H3CLOSE_UPSTREAM_CLOSED);
    } else if (u->state == AE_H3_UP_BODY) {
        int rv = ae_h1_body_eof(&u->body);
        if (rv == AE_H1_OK) { /* close-delimited */
            response_complete(s);
        } else {
            u->h1err = rv;
            ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_UPSTREAM_TRUNCATED);
        }
    }
}

/* ---- connecting ---- */

static void arm_idle(qstream *s, double secs)
{
    ev_timer *t = &s->up.timer;
    ev_timer_stop(s->w->loop, t);
    ev_timer_set(t, secs, 0);
    ev_timer_start(s->w->loop, t);
}

/* CONNECTING failed: back to IDLE, the next server is tried. */
static void connect_failed(qstream *s, int timeout)
{
    ae_count(&s->w->counters, AE_M_UP_CONNECT_FAIL, 1);
    if (timeout)
        ae_count(&s->w->counters, AE_M_UP_CONNECT_TIMEOUT, 1);
    s->up.last_timeout = (unsigned)timeout;
    ae_pool_report_connect(s->c->pool, (size_t)s->up.server_idx, 0, ae_now_ms());
    AE_CWARN(s->c->id, "upstream %s: connect %s", server_name(s), timeout ? "timeout" : "failed");
    drop_connection(s);
    up_set_state(s, AE_H3_UP_IDLE);
    try_connect(s);
}

/* CONNECTING succeeded: HEAD. */
static void connected(qstream *s)
{
    up_set_state(s, AE_H3_UP_HEAD);
    ae_pool_report_connect(s->c->pool, (size_t)s->up.server_idx, 1, ae_now_ms());
    s->up.last = ev_now(s->w->loop);
    arm_idle(s, s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0);
    ae_h3_pump(s);
}

static void upstream_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    qstream *s = io->data;
    if (s->up.state == AE_H3_UP_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        if (getsockopt(s->up.fd, SOL_SOCKET, SO_ERROR, &err, &l) != 0)
            err = errno;
        if (err == EINPROGRESS || err == EALREADY)
            return;
        if (err != 0)
            connect_failed(s, 0);
        else
            connected(s);
    } else {
        ae_h3_pump(s);
    }
    if (s->state != AE_H3_REQ_CLOSED)
        ae_quic_conn_kick(s->c->qc);
}

static void upstream_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    qstream *s = t->data;
    if (s->up.state == AE_H3_UP_CONNECTING) {
        connect_failed(s, 1);
        ae_quic_conn_kick(s->c->qc);
        return;
    }
    ev_tstamp idle = s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0;
    ev_tstamp left = s->up.last + idle - ev_now(loop);
    if (left > 0.001) {
        arm_idle(s, left);
        return;
    }
    AE_CWARN(s->c->id, "upstream %s: no response progress for %.0f ms", server_name(s),
             idle * 1000);
    ae_h3_respond_error(s, 504, AE_H3CLOSE_UPSTREAM_TIMEOUT);
    ae_quic_conn_kick(s->c->qc);
}

void ae_h3_up_init(qstream *s)
{
    h3uclient *u = &s->up;
    u->fd = -1;
    u->server_idx = -1;
    ev_io_init(&u->io, upstream_cb, -1, 0);
    u->io.data = s;
    ev_timer_init(&u->timer, upstream_timer_cb, 0, 0);
    u->timer.data = s;
    ae_h3_up_state_init(&s->w->counters, &u->state);
}

/* IDLE: picks the next server and takes a pooled connection to it (HEAD) or connects
 * (CONNECTING, or HEAD at once); a connect that fails at once tries the next server. No server
 * left: the error answers s (DONE). */
static void try_connect(qstream *s)
{
    h3uclient *u = &s->up;
    ae_pool *pool = s->c->pool;
    uint64_t now = ae_now_ms();
    if (u->start == 0)
        u->start = ev_time();
    for (;;) {
        int idx = -1;
        if (u->attempts >= pool->nservers)
            ;
        else if (pool->conf->balance == AE_BAL_HASH)
            idx = ae_h3_aff_pick(s, u->tried, now);
        else
            idx = ae_pool_pick(pool, u->tried, now);
        if (idx < 0) {
            ae_count(&s->w->counters, AE_M_NO_UPSTREAM, 1);
            if (u->attempts == 0)
                ae_h3_respond_error(s, 503, AE_H3CLOSE_NO_UPSTREAM);
            else
                ae_h3_respond_error(s, u->last_timeout ? 504 : 502,
                                    u->last_timeout ? AE_H3CLOSE_UPSTREAM_CONNECT_TIMEOUT
                                                    : AE_H3CLOSE_UPSTREAM_CONNECT);
            return;
        }
        u->attempts++;
        u->tried |= 1ull << (idx % 64);
        u->server_idx = idx;
        ae_upstream_server *srv = pool->servers[idx];
        u->bytes = 0;
        u->reused = 0;
        if (!u->no_reuse && (u->fd = upool_take(s->c->hw, srv)) >= 0) {
            ae_count(&s->w->counters, AE_M_H3_UPSTREAM_REUSED, 1);
            atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
            u->counted = 1;
            u->reused = 1;
            up_set_state(s, AE_H3_UP_HEAD);
            ev_io_set(&u->io, u->fd, EV_READ);
            u->last = ev_now(s->w->loop);
            arm_idle(s, s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0);
            ae_h3_pump(s);
            return;
        }
        u->fd = socket(srv->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (u->fd < 0) {
            AE_CERROR(s->c->id, "upstream socket: %s", strerror(errno));
            ae_h3_respond_error(s, 502, AE_H3CLOSE_UPSTREAM_SOCKET);
            return;
        }
        int one = 1;
        setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
        u->counted = 1;
        up_set_state(s, AE_H3_UP_CONNECTING);
        ev_io_set(&u->io, u->fd, EV_WRITE);
        if (connect(u->fd, (struct sockaddr *)&srv->addr.sa, srv->addr.len) == 0) {
            connected(s);
            return;
        }
        if (errno == EINPROGRESS) {
            ev_io_start(s->w->loop, &u->io);
            arm_idle(s, pool->conf->connect_timeout_ms / 1000.0);
            return;
        }
        ae_count(&s->w->counters, AE_M_UP_CONNECT_FAIL, 1);
        ae_pool_report_connect(pool, (size_t)idx, 0, now);
        AE_CWARN(s->c->id, "upstream %s: connect: %s", srv->addr.text, strerror(errno));
        drop_connection(s);
        up_set_state(s, AE_H3_UP_IDLE);
    }
}

static int is_idempotent(const char *m)
{
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "OPTIONS") ||
           !strcmp(m, "TRACE") || !strcmp(m, "PUT") || !strcmp(m, "DELETE");
}

static int queue_head(qstream *s);

/* A pooled connection failed in HEAD before any response byte (the server closed it while we
 * were sending): an idempotent request whose whole content is still at hand (no body) is sent
 * once more on a fresh connection (HEAD -> IDLE -> ...). Returns 1 when it was, 0 when the
 * caller reports the error. */
static int retry(qstream *s)
{
    h3uclient *u = &s->up;
    if (!u->reused || u->retried || u->bytes > 0 || s->state != AE_H3_REQ_FORWARDED ||
        !s->req_fin || s->bytes_in > 0 || s->method == NULL || !is_idempotent(s->method))
        return 0;
    AE_CDEBUG(s->c->id, "upstream %s: pooled connection failed, retrying on a new one",
              server_name(s));
    u->retried = 1;
    u->no_reuse = 1;
    drop_connection(s);
    ae_h3_free_chain(s->w, &u->out_head, &u->out_tail);
    up_set_state(s, AE_H3_UP_IDLE);
    u->eof = u->send_err = u->head_queued = u->chunked = 0;
    if (u->rin != NULL)
        u->rin->off = u->rin->len = 0;
    if (queue_head(s) != 0)
        return 0;
    u->tried = 0;
    u->attempts = 0;
    try_connect(s);
    return 1;
}

static void observe_latency(qstream *s)
{
    double d = ev_time() - s->up.start;
    if (d < 0)
        d = 0;
    size_t i = 0;
    while (i < AE_H3_UPLAT_NBUCKETS - 1 && d > ae_h3_uplat_bounds[i])
        i++;
    ae_count(&s->w->counters, (ae_metric)(AE_M_H3_UPLAT_B0 + i), 1);
    ae_count(&s->w->counters, AE_M_H3_UPLAT_SUM_US, (uint64_t)(d * 1e6));
    s->up.start = -1; /* once per request */
}

/* ---- moving bytes ---- */

static void watch(qstream *s, int events)
{
    h3uclient *u = &s->up;
    if (u->fd < 0)
        return;
    if ((u->io.events & (EV_READ | EV_WRITE)) == events && (events == 0 || ev_is_active(&u->io)))
        return;
    ev_io_stop(s->w->loop, &u->io);
    if (events != 0) {
        ev_io_modify(&u->io, events);
        ev_io_start(s->w->loop, &u->io);
    }
}

/* Moves bytes between the queues and the upstream socket until nothing moves (HEAD, BODY; a
 * no-op in other states). */
void ae_h3_pump(qstream *s)
{
    h3uclient *u = &s->up;
    if (!ae_h3_live(s) || (u->state != AE_H3_UP_HEAD && u->state != AE_H3_UP_BODY))
        return;
    ev_tstamp now = ev_now(s->w->loop);
    int ev = 0;
    /* request -> upstream */
    while (u->out_head != NULL) {
        ae_buf *b = u->out_head;
        ssize_t n = send(u->fd, b->data + b->off, b->len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                ev |= EV_WRITE;
                break;
            }
            /* The upstream may have answered and closed already: read what it said. */
            ae_h3_free_chain(s->w, &u->out_head, &u->out_tail);
            u->send_err = 1;
            ae_h3_credit(s, s->pending_consume);
            break;
        }
        u->last = now;
        ae_h3_credit(s, (uint64_t)n);
        b->off += (uint32_t)n;
        b->len -= (uint32_t)n;
        if (b->len == 0) {
            u->out_head = b->next;
            if (u->out_head == NULL)
                u->out_tail = NULL;
            ae_worker_buf_put(s->w, b);
        }
    }
    /* upstream -> response queue, bounded by what the client has not acknowledged */
    while (!u->eof && (u->state == AE_H3_UP_HEAD || u->state == AE_H3_UP_BODY) &&
           s->dn_in - s->dn_acked < AE_H3_DOWN_LIMIT) {
        /* A body with no framing to decode (Content-Length, close-delimited) is received
         * straight into the response queue, no copy, never past the Content-Length (what
         * follows belongs to no one); anything else into the read buffer for parse(). */
        int direct = u->state == AE_H3_UP_BODY && (u->rin == NULL || u->rin->len == 0) &&
                     (u->body.mode == AE_H1_BODY_LENGTH || u->body.mode == AE_H1_BODY_CLOSE);
        uint8_t *dst;
        size_t room;
        if (direct) {
            dst = ae_h3_dn_room(s, &room);
            if (dst != NULL && u->body.mode == AE_H1_BODY_LENGTH && room > u->body.left)
                room = (size_t)u->body.left;
        } else {
            if (u->rin == NULL)
                u->rin = ae_worker_buf_get(s->w, bufsize(s));
            ae_buf *b = u->rin;
            dst = b != NULL ? b->data + b->off + b->len : NULL;
            room = b != NULL ? b->cap - b->off - b->len : 0;
        }
        if (dst == NULL) {
            ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_NOMEM);
            return;
        }
        if (room == 0) /* parse() keeps room unless a head is too big (answered already) */
            break;
        ssize_t n = recv(u->fd, dst, room, 0);
        if (n > 0) {
            if (u->bytes == 0 && u->start > 0)
                observe_latency(s);
            u->bytes += (uint64_t)n;
            u->last = now;
            if (!direct) {
                u->rin->len += (uint32_t)n;
                if (parse(s) != 0)
                    return;
                continue;
            }
            const uint8_t *data;
            size_t datalen;
            ae_h1_body_decode(&u->body, dst, (size_t)n, &data, &datalen); /* all of it */
            ae_h3_dn_commit(s, (size_t)n);
            if (ae_h1_body_done(&u->body))
                response_complete(s);
            if (!ae_h3_live(s))
                return;
            continue;
        }
        if (n == 0) {
            upstream_eof(s);
            return;
        }
        if (errno == EAGAIN || errno == EINTR) {
            ev |= EV_READ;
            break;
        }
        if (u->state == AE_H3_UP_HEAD) {
            if (!retry(s))
                ae_h3_respond_error(s, 502, AE_H3CLOSE_UPSTREAM_READ_ERROR);
        } else
            ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_UPSTREAM_READ_ERROR);
        return;
    }
    if (u->state == AE_H3_UP_KEEP) {
        /* Reusable only when the exchange is over on the wire: the whole request written, no
         * byte beyond the response read. */
        if ((u->rin == NULL || u->rin->len == 0) && s->req_fin && u->head_queued &&
            u->out_head == NULL && !u->send_err)
            upool_put(s);
        ae_h3_close_upstream(s); /* DONE; closes the fd unless the pool took it */
    }
    if (u->state == AE_H3_UP_DONE && u->rin != NULL) {
        ae_worker_buf_put(s->w, u->rin);
        u->rin = NULL;
    }
    if (u->fd >= 0)
        watch(s, ev);
}

void ae_h3_pump_later(qstream *s)
{
    h3uclient *u = &s->up;
    /* A fed event is pending once however often it is fed (and dropped by ev_io_stop when
     * the connection goes first); upstream_cb pumps and kicks the QUIC connection. */
    if (u->fd >= 0 && (u->state == AE_H3_UP_HEAD || u->state == AE_H3_UP_BODY))
        ev_feed_event(s->w->loop, &u->io, EV_WRITE);
}

void ae_h3_up_acked(qstream *s)
{
    h3uclient *u = &s->up;
    u->last = ev_now(s->w->loop); /* a slow client is not an idle upstream */
    if (u->state == AE_H3_UP_BODY && s->dn_in - s->dn_acked < AE_H3_DOWN_LIMIT)
        ev_feed_event(s->w->loop, &u->io, EV_READ); /* resume reading after this callback */
}

/* ---- request ---- */

int ae_h3_up_takes_body(const qstream *s)
{
    const h3uclient *u = &s->up;
    return u->state != AE_H3_UP_KEEP && u->state != AE_H3_UP_DONE && !u->send_err;
}

/* Queues the HTTP/1.1 request head. Framing: Content-Length when known, chunked when a body of
 * unknown length follows, none when the request has ended. */
static int queue_head(qstream *s)
{
    h3conn *c = s->c;
    char ip[INET6_ADDRSTRLEN] = "";
    if (c->remote.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&c->remote)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c->remote)->sin6_addr, ip, sizeof(ip));
    int rv = 0;
    rv |= out_append(s, s->method, strlen(s->method));
    rv |= out_append(s, " ", 1);
    rv |= out_append(s, s->path, strlen(s->path));
    rv |= out_append(s, " HTTP/1.1\r\nHost: ", 17);
    rv |= out_append(s, s->authority, strlen(s->authority));
    rv |= out_append(s, "\r\n", 2);
    if (s->hdrs_len)
        rv |= out_append(s, s->hdrs, s->hdrs_len);
    rv |= out_append(s, "X-Forwarded-For: ", 17);
    if (s->xff) {
        rv |= out_append(s, s->xff, strlen(s->xff));
        rv |= out_append(s, ", ", 2);
    }
    rv |= out_append(s, ip, strlen(ip));
    rv |= out_append(s, "\r\nX-Forwarded-Proto: https\r\n", 28);
    if (s->early || s->early_hdr)
        rv |= out_append(s, "Early-Data: 1\r\n", 15);
    if (s->req_cl >= 0)
        rv |= out_printf(s, "Content-Length: %lld\r\n", (long long)s->req_cl);
    else if (!s->req_fin) {
        s->up.chunked = 1;
        rv |= out_append(s, "Transfer-Encoding: chunked\r\n", 28);
    } else if (!strcmp(s->method, "POST") || !strcmp(s->method, "PUT") ||
               !strcmp(s->method, "PATCH"))
        rv |= out_append(s, "Content-Length: 0\r\n", 19);
    rv |= out_append(s, "\r\n", 2);
    s->up.head_queued = 1;
    return rv;
}

int ae_h3_up_start(qstream *s, int hold)
{
    if ((s->req_fin || s->req_cl >= 0) && queue_head(s) != 0)
        return AE_ERR_NOMEM;
    if (hold) {
        s->up.held = 1;
        return 0;
    }
    try_connect(s);
    return 0;
}

void ae_h3_up_release(qstream *s)
{
    if (!s->up.held)
        return;
    s->up.held = 0;
    if (ae_h3_live(s) && s->up.state == AE_H3_UP_IDLE)
        try_connect(s);
}

int ae_h3_up_body(qstream *s, const uint8_t *data, size_t len)
{
    if (!s->up.head_queued && queue_head(s) != 0)
        return AE_ERR_NOMEM;
    int rv = 0;
    if (s->up.chunked)
        rv |= out_printf(s, "%zx\r\n", len);
    rv |= out_append(s, data, len);
    if (s->up.chunked)
        rv |= out_append(s, "\r\n", 2);
    return rv == 0 ? 0 : AE_ERR_NOMEM;
}

int ae_h3_up_body_end(qstream *s)
{
    if (!s->up.head_queued)
        return queue_head(s) == 0 ? 0 : AE_ERR_NOMEM;
    if (s->up.chunked && out_append(s, "0\r\n\r\n", 5) != 0)
        return AE_ERR_NOMEM;
    return 0;
}
