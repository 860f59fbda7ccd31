/*
 * HTTP/3 requests to HTTP/1.1 upstreams: the upstream side of a qstream (see h3.c for the
 * HTTP/3 side).
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

static void consume(qstream *s, uint64_t n);
static int retry(qstream *s);
static void observe_latency(qstream *s);

/* ---- helpers ---- */

static uint32_t bufsize(qstream *s)
{
    return s->c->rt->conf->tune.buffer_size;
}

int ae_h3_up_append(qstream *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ae_buf *b = s->up_tail;
        if (b == NULL || b->off + b->len == b->cap) {
            b = ae_worker_buf_get(s->w, bufsize(s));
            if (b == NULL)
                return AE_ERR_NOMEM;
            if (s->up_tail)
                s->up_tail->next = b;
            else
                s->up_head = b;
            s->up_tail = b;
        }
        size_t room = b->cap - b->off - b->len, n = len < room ? len : room;
        memcpy(b->data + b->off + b->len, p, n);
        b->len += (uint32_t)n;
        p += n;
        len -= n;
    }
    return 0;
}

int ae_h3_up_printf(qstream *s, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= sizeof(buf) ? AE_ERR_INVAL : ae_h3_up_append(s, buf, (size_t)n);
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

/* Hands s's upstream connection to the pool. Returns 0, or -1 (the caller closes it). */
static int upool_put(qstream *s)
{
    ae_h3_worker *hw = s->c->hw;
    ae_upstream_server *srv = s->c->pool->servers[s->server_idx];
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
    ev_io_stop(s->w->loop, &s->uio);
    ev_timer_stop(s->w->loop, &s->ut);
    e->pool = p;
    e->rt = ae_runtime_ref(s->c->rt);
    e->srv = srv;
    e->fd = s->ufd;
    s->ufd = -1;
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

/* Appends response body bytes for the client. */
int ae_h3_dn_append(qstream *s, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ae_buf *b = s->dn_tail;
        if (b == NULL || b->len == b->cap) {
            b = ae_worker_buf_get(s->w, bufsize(s));
            if (b == NULL)
                return AE_ERR_NOMEM;
            if (s->dn_tail)
                s->dn_tail->next = b;
            else {
                s->dn_head = b;
                s->dn_base = s->dn_in;
            }
            s->dn_tail = b;
        }
        size_t room = b->cap - b->len, n = len < room ? len : room;
        memcpy(b->data + b->len, p, n);
        b->len += (uint32_t)n;
        s->dn_in += n;
        p += n;
        len -= n;
    }
    if (s->h3_blocked && s->c->h3 != NULL) {
        s->h3_blocked = 0;
        nghttp3_conn_resume_stream(s->c->h3, s->sid);
    }
    return 0;
}

/* Closes s's upstream socket (watchers, the server's active slot) and keeps the request bytes
 * queued: the next server gets them (failover after a failed connect). */
static void drop_connection(qstream *s)
{
    ev_io_stop(s->w->loop, &s->uio);
    ev_timer_stop(s->w->loop, &s->ut);
    if (s->ufd >= 0)
        close(s->ufd);
    s->ufd = -1;
    s->connecting = 0;
    if (s->counted) {
        atomic_fetch_sub_explicit(&s->c->pool->servers[s->server_idx]->active, 1,
                                  memory_order_relaxed);
        s->counted = 0;
    }
}

void ae_h3_close_upstream(qstream *s)
{
    drop_connection(s);
    ae_h3_free_chain(s->w, &s->up_head, &s->up_tail);
    /* Request body bytes nobody will forward any more: give the client its window back. */
    if (s->pending_consume > 0 && !s->dead)
        consume(s, s->pending_consume);
}

/* ---- response parsing (the HTTP/1.1 rules are in proxy/upstream/http1.c) ---- */

/* What parse_head() did with a response head. */
typedef enum {
    HEAD_SUBMITTED = 0, /* a final response: submitted to nghttp3, s->body set up */
    HEAD_INTERIM,       /* a 1xx head (not 101): skipped, the final head follows */
    HEAD_MALFORMED,     /* refused by the parser: the caller answers 502 */
    HEAD_SUBMIT_FAILED, /* nghttp3 refused it: ae_h3_submit() has reset the stream already */
} head_result;

/* Parses the response head in buf[0, len) (ends with the empty line) and submits it. */
static head_result parse_head(qstream *s, char *buf, size_t len)
{
    ae_h1_field fields[AE_H3_MAX_RESP_FIELDS - 1]; /* and :status */
    ae_h1_head h;
    ae_h1_req req = {.is_head = s->is_head, .drop_field = s->c->rt->conf->quic.site_header};
    int rv = ae_h1_parse_head(buf, len, &req, &h, fields, AE_ARRAY_LEN(fields));
    if (rv != AE_H1_OK) {
        AE_CDEBUG(s->c->id, "upstream %s: bad response head: %s",
                  s->c->pool->servers[s->server_idx]->addr.text, ae_h1_strerror(rv));
        return HEAD_MALFORMED;
    }
    if (h.interim)
        return HEAD_INTERIM;
    nghttp3_nv nva[AE_H3_MAX_RESP_FIELDS];
    size_t n = 0;
    char st[4] = {(char)('0' + h.status / 100), (char)('0' + h.status / 10 % 10),
                  (char)('0' + h.status % 10), 0};
    nva[n++] = AE_H3_NV(":status", st, 3);
    for (size_t i = 0; i < h.nfields; i++)
        nva[n++] = (nghttp3_nv){(uint8_t *)fields[i].name, (uint8_t *)fields[i].value,
                                fields[i].namelen, fields[i].valuelen, NGHTTP3_NV_FLAG_NONE};
    s->status = h.status;
    s->resp_close = !h.keep_alive;
    ae_h1_body_init(&s->body, h.body, (uint64_t)h.content_length);
    if (h.body == AE_H1_BODY_NONE)
        s->resp_done = 1;
    return ae_h3_submit(s, nva, n, h.body != AE_H1_BODY_NONE) == 0 ? HEAD_SUBMITTED
                                                                   : HEAD_SUBMIT_FAILED;
}

/* Response complete: the upstream connection is done. It may go back to the keep-alive pool
 * (decided by ae_h3_pump() once the bytes of this read are accounted for: s->keep). */
static void response_complete(qstream *s)
{
    s->resp_done = 1;
    s->up_done = 1;
    s->keep = !s->resp_close && s->body.mode != AE_H1_BODY_CLOSE && !s->u_err && !s->u_eof;
    if (!s->keep)
        ae_h3_close_upstream(s);
    if (s->h3_blocked && s->c->h3 != NULL) {
        s->h3_blocked = 0;
        nghttp3_conn_resume_stream(s->c->h3, s->sid);
    }
    if (!s->req_fin) /* the rest of the request body is not needed any more */
        ngtcp2_conn_shutdown_stream_read(s->c->conn, 0, s->sid, NGHTTP3_H3_NO_ERROR);
    ae_quic_conn_kick(s->c->qc);
}

/* Consumes body bytes of p[0, len); returns bytes used, or -1 on a framing error. */
static ssize_t body_bytes(qstream *s, const uint8_t *p, size_t len)
{
    size_t used = 0;
    while (used < len && !s->resp_done) {
        const uint8_t *data;
        size_t datalen;
        ssize_t n = ae_h1_body_decode(&s->body, p + used, len - used, &data, &datalen);
        if (n < 0) {
            AE_CDEBUG(s->c->id, "upstream %s: bad response body: %s",
                      s->c->pool->servers[s->server_idx]->addr.text, ae_h1_strerror((int)n));
            return -1;
        }
        if (datalen > 0 && ae_h3_dn_append(s, data, datalen) != 0)
            return -1;
        used += (size_t)n;
        if (ae_h1_body_done(&s->body))
            response_complete(s);
        else if (n == 0)
            break;
    }
    return (ssize_t)used;
}

/* Processes what s->rin holds. Returns 0, or -1 when the stream ended with an error. */
static int parse(qstream *s)
{
    ae_buf *b = s->rin;
    while (b->len > 0 && !s->resp_done) {
        uint8_t *p = b->data + b->off;
        if (!s->resp_started) {
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
            if (s->resp_done) /* no body (HEAD, 204, 304, Content-Length: 0) */
                response_complete(s);
            continue;
        }
        ssize_t n = body_bytes(s, p, b->len);
        if (n < 0) {
            ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_UPSTREAM_BAD_BODY);
            return -1;
        }
        if (s->dead || s->reset)
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

static void upstream_eof(qstream *s)
{
    s->u_eof = 1;
    if (!s->resp_started) {
        if (!retry(s))
            ae_h3_respond_error(s, 502, AE_H3CLOSE_UPSTREAM_CLOSED);
    } else if (!s->resp_done) {
        if (ae_h1_body_eof(&s->body) == AE_H1_OK) /* close-delimited */
            response_complete(s);
        else
            ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_UPSTREAM_TRUNCATED);
    }
}

/* ---- upstream connection ---- */

static void consume(qstream *s, uint64_t n)
{
    if (n > s->pending_consume)
        n = s->pending_consume;
    if (n == 0)
        return;
    s->pending_consume -= n;
    ngtcp2_conn_extend_max_stream_offset(s->c->conn, s->sid, n);
    ngtcp2_conn_extend_max_offset(s->c->conn, n);
}

static void arm_idle(qstream *s, double secs)
{
    ev_timer_stop(s->w->loop, &s->ut);
    ev_timer_set(&s->ut, secs, 0);
    ev_timer_start(s->w->loop, &s->ut);
}

static void connect_failed(qstream *s, int timeout)
{
    ae_count(&s->w->counters, AE_M_UP_CONNECT_FAIL, 1);
    if (timeout)
        ae_count(&s->w->counters, AE_M_UP_CONNECT_TIMEOUT, 1);
    s->last_timeout = (unsigned)timeout;
    ae_pool_report_connect(s->c->pool, (size_t)s->server_idx, 0, ae_now_ms());
    AE_CWARN(s->c->id, "upstream %s: connect %s", s->c->pool->servers[s->server_idx]->addr.text,
             timeout ? "timeout" : "failed");
    drop_connection(s);
    ae_h3_try_connect(s);
}

static void connected(qstream *s)
{
    s->connecting = 0;
    ae_pool_report_connect(s->c->pool, (size_t)s->server_idx, 1, ae_now_ms());
    s->u_last = ev_now(s->w->loop);
    arm_idle(s, s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0);
    ae_h3_pump(s);
}

static void upstream_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    qstream *s = io->data;
    if (s->connecting) {
        int err = 0;
        socklen_t l = sizeof(err);
        if (getsockopt(s->ufd, SOL_SOCKET, SO_ERROR, &err, &l) != 0)
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
    if (!s->dead)
        ae_quic_conn_kick(s->c->qc);
}

static void upstream_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    qstream *s = t->data;
    if (s->connecting) {
        connect_failed(s, 1);
        ae_quic_conn_kick(s->c->qc);
        return;
    }
    ev_tstamp idle = s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0;
    ev_tstamp left = s->u_last + idle - ev_now(loop);
    if (left > 0.001) {
        arm_idle(s, left);
        return;
    }
    AE_CWARN(s->c->id, "upstream %s: no response progress for %.0f ms",
             s->c->pool->servers[s->server_idx]->addr.text, idle * 1000);
    ae_h3_respond_error(s, 504, AE_H3CLOSE_UPSTREAM_TIMEOUT);
    ae_quic_conn_kick(s->c->qc);
}

/* Sets up s's upstream watchers (no socket yet). */
void ae_h3_up_init(qstream *s)
{
    ev_io_init(&s->uio, upstream_cb, -1, 0);
    s->uio.data = s;
    ev_timer_init(&s->ut, upstream_timer_cb, 0, 0);
    s->ut.data = s;
}

void ae_h3_try_connect(qstream *s)
{
    ae_pool *pool = s->c->pool;
    uint64_t now = ae_now_ms();
    if (s->u_start == 0)
        s->u_start = ev_time();
    for (;;) {
        int idx = s->attempts < pool->nservers ? ae_pool_pick(pool, s->tried, now) : -1;
        if (idx < 0) {
            ae_count(&s->w->counters, AE_M_NO_UPSTREAM, 1);
            if (s->attempts == 0)
                ae_h3_respond_error(s, 503, AE_H3CLOSE_NO_UPSTREAM);
            else
                ae_h3_respond_error(s, s->last_timeout ? 504 : 502,
                                    s->last_timeout ? AE_H3CLOSE_UPSTREAM_CONNECT_TIMEOUT
                                                    : AE_H3CLOSE_UPSTREAM_CONNECT);
            return;
        }
        s->attempts++;
        s->tried |= 1ull << (idx % 64);
        s->server_idx = idx;
        ae_upstream_server *srv = pool->servers[idx];
        s->u_bytes = 0;
        s->reused = 0;
        if (!s->no_reuse && (s->ufd = upool_take(s->c->hw, srv)) >= 0) {
            ae_count(&s->w->counters, AE_M_H3_UPSTREAM_REUSED, 1);
            atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
            s->counted = 1;
            s->reused = 1;
            ev_io_set(&s->uio, s->ufd, EV_READ);
            s->u_last = ev_now(s->w->loop);
            arm_idle(s, s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0);
            ae_h3_pump(s);
            return;
        }
        s->ufd = socket(srv->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->ufd < 0) {
            AE_CERROR(s->c->id, "upstream socket: %s", strerror(errno));
            ae_h3_respond_error(s, 502, AE_H3CLOSE_UPSTREAM_SOCKET);
            return;
        }
        int one = 1;
        setsockopt(s->ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
        s->counted = 1;
        ev_io_set(&s->uio, s->ufd, EV_WRITE);
        if (connect(s->ufd, (struct sockaddr *)&srv->addr.sa, srv->addr.len) == 0) {
            connected(s);
            return;
        }
        if (errno == EINPROGRESS) {
            s->connecting = 1;
            ev_io_start(s->w->loop, &s->uio);
            arm_idle(s, pool->conf->connect_timeout_ms / 1000.0);
            return;
        }
        ae_count(&s->w->counters, AE_M_UP_CONNECT_FAIL, 1);
        ae_pool_report_connect(pool, (size_t)idx, 0, now);
        AE_CWARN(s->c->id, "upstream %s: connect: %s", srv->addr.text, strerror(errno));
        drop_connection(s);
    }
}

static int is_idempotent(const char *m)
{
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "OPTIONS") ||
           !strcmp(m, "TRACE") || !strcmp(m, "PUT") || !strcmp(m, "DELETE");
}

/* A pooled connection failed before any response byte (the server closed it while we were
 * sending): an idempotent request whose whole content is still at hand (no body) is sent once
 * more on a fresh connection. Returns 1 when it was, 0 when the caller reports the error. */
static int retry(qstream *s)
{
    if (!s->reused || s->retried || s->u_bytes > 0 || s->resp_started || s->dead || s->reset ||
        !s->req_fin || s->bytes_in > 0 || s->method == NULL || !is_idempotent(s->method))
        return 0;
    AE_CDEBUG(s->c->id, "upstream %s: pooled connection failed, retrying on a new one",
              s->c->pool->servers[s->server_idx]->addr.text);
    s->retried = 1;
    s->no_reuse = 1;
    ae_h3_close_upstream(s);
    s->up_done = s->u_eof = s->u_err = s->head_queued = s->req_chunked = 0;
    if (s->rin != NULL)
        s->rin->off = s->rin->len = 0;
    if (ae_h3_queue_head(s) != 0)
        return 0;
    s->tried = 0;
    s->attempts = 0;
    ae_h3_try_connect(s);
    return 1;
}

static void observe_latency(qstream *s)
{
    double d = ev_time() - s->u_start;
    if (d < 0)
        d = 0;
    size_t i = 0;
    while (i < AE_H3_UPLAT_NBUCKETS - 1 && d > ae_h3_uplat_bounds[i])
        i++;
    ae_count(&s->w->counters, (ae_metric)(AE_M_H3_UPLAT_B0 + i), 1);
    ae_count(&s->w->counters, AE_M_H3_UPLAT_SUM_US, (uint64_t)(d * 1e6));
    s->u_start = -1; /* once per request */
}

static void watch(qstream *s, int events)
{
    if (s->ufd < 0)
        return;
    if ((s->uio.events & (EV_READ | EV_WRITE)) == events && (events == 0 || ev_is_active(&s->uio)))
        return;
    ev_io_stop(s->w->loop, &s->uio);
    if (events != 0) {
        ev_io_modify(&s->uio, events);
        ev_io_start(s->w->loop, &s->uio);
    }
}

/* Moves bytes between the queues and the upstream socket until nothing moves. */
void ae_h3_pump(qstream *s)
{
    if (s->dead || s->reset || s->ufd < 0 || s->connecting)
        return;
    ev_tstamp now = ev_now(s->w->loop);
    int ev = 0;
    /* request -> upstream */
    while (s->up_head != NULL) {
        ae_buf *b = s->up_head;
        ssize_t n = send(s->ufd, b->data + b->off, b->len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                ev |= EV_WRITE;
                break;
            }
            /* The upstream may have answered and closed already: read what it said. */
            ae_h3_free_chain(s->w, &s->up_head, &s->up_tail);
            s->up_done = 1;
            s->u_err = 1;
            consume(s, s->pending_consume);
            break;
        }
        s->u_last = now;
        consume(s, (uint64_t)n);
        b->off += (uint32_t)n;
        b->len -= (uint32_t)n;
        if (b->len == 0) {
            s->up_head = b->next;
            if (s->up_head == NULL)
                s->up_tail = NULL;
            ae_worker_buf_put(s->w, b);
        }
    }
    /* upstream -> response queue, bounded by what the client has not acknowledged */
    while (!s->u_eof && !s->resp_done && s->dn_in - s->dn_acked < AE_H3_DOWN_LIMIT) {
        if (s->rin == NULL && (s->rin = ae_worker_buf_get(s->w, bufsize(s))) == NULL) {
            ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_NOMEM);
            return;
        }
        ae_buf *b = s->rin;
        size_t room = b->cap - b->off - b->len;
        if (room == 0) /* parse() keeps room unless a head is too big (answered already) */
            break;
        ssize_t n = recv(s->ufd, b->data + b->off + b->len, room, 0);
        if (n > 0) {
            if (s->u_bytes == 0 && s->u_start > 0)
                observe_latency(s);
            s->u_bytes += (uint64_t)n;
            b->len += (uint32_t)n;
            s->u_last = now;
            if (parse(s) != 0)
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
        if (!s->resp_started) {
            if (!retry(s))
                ae_h3_respond_error(s, 502, AE_H3CLOSE_UPSTREAM_READ_ERROR);
        } else
            ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_UPSTREAM_READ_ERROR);
        return;
    }
    if (s->keep) {
        /* Reusable only when the exchange is over on the wire: the whole request written, no
         * byte beyond the response read. */
        s->keep = 0;
        if (s->ufd >= 0 && (s->rin == NULL || s->rin->len == 0) && s->req_fin && s->head_queued &&
            s->up_head == NULL && !s->u_err && !s->reset && !s->dead)
            upool_put(s);
        ae_h3_close_upstream(s); /* closes the fd unless the pool took it */
    }
    if (s->resp_done && s->rin != NULL) {
        ae_worker_buf_put(s->w, s->rin);
        s->rin = NULL;
    }
    if (s->ufd >= 0)
        watch(s, ev);
}

/* ---- request head ---- */

/* Queues the HTTP/1.1 request head. Framing: Content-Length when known, chunked when a body of
 * unknown length follows, none when the request has ended. */
int ae_h3_queue_head(qstream *s)
{
    h3conn *c = s->c;
    char ip[INET6_ADDRSTRLEN] = "";
    if (c->remote.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&c->remote)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c->remote)->sin6_addr, ip, sizeof(ip));
    int rv = 0;
    rv |= ae_h3_up_append(s, s->method, strlen(s->method));
    rv |= ae_h3_up_append(s, " ", 1);
    rv |= ae_h3_up_append(s, s->path, strlen(s->path));
    rv |= ae_h3_up_append(s, " HTTP/1.1\r\nHost: ", 17);
    rv |= ae_h3_up_append(s, s->authority, strlen(s->authority));
    rv |= ae_h3_up_append(s, "\r\n", 2);
    if (s->hdrs_len)
        rv |= ae_h3_up_append(s, s->hdrs, s->hdrs_len);
    rv |= ae_h3_up_append(s, "X-Forwarded-For: ", 17);
    if (s->xff) {
        rv |= ae_h3_up_append(s, s->xff, strlen(s->xff));
        rv |= ae_h3_up_append(s, ", ", 2);
    }
    rv |= ae_h3_up_append(s, ip, strlen(ip));
    rv |= ae_h3_up_append(s, "\r\nX-Forwarded-Proto: https\r\n", 28);
    if (s->early || s->early_hdr)
        rv |= ae_h3_up_append(s, "Early-Data: 1\r\n", 15);
    if (s->req_cl >= 0)
        rv |= ae_h3_up_printf(s, "Content-Length: %lld\r\n", (long long)s->req_cl);
    else if (!s->req_fin) {
        s->req_chunked = 1;
        rv |= ae_h3_up_append(s, "Transfer-Encoding: chunked\r\n", 28);
    } else if (!strcmp(s->method, "POST") || !strcmp(s->method, "PUT") ||
               !strcmp(s->method, "PATCH"))
        rv |= ae_h3_up_append(s, "Content-Length: 0\r\n", 19);
    rv |= ae_h3_up_append(s, "\r\n", 2);
    s->head_queued = 1;
    return rv;
}
