/*
 * HTTP/3 (RFC 9114, nghttp3) to HTTP/1.1 upstream: one qstream per request stream.
 *
 * Request: the header section is turned into an HTTP/1.1 head (request line from :method and
 * :path, Host from :authority, X-Forwarded-For / X-Forwarded-Proto added, hop-by-hop fields
 * dropped) and sent on a new upstream TCP connection (one per request, `Connection: close`).
 * The request body follows with Content-Length when the client gave one, chunked otherwise.
 * Request body bytes are credited back to the client's flow-control window only once they
 * were written to the upstream socket, so a slow upstream throttles the client.
 *
 * Response: the status line and fields become the HTTP/3 HEADERS; the body (Content-Length,
 * chunked or close-delimited) is queued in worker buffers that nghttp3 reads without copying.
 * Bytes stay queued until the client acknowledges them; while more than AE_H3_DOWN_LIMIT bytes
 * are queued the upstream socket is not read (back-pressure), reading resumes on acks.
 *
 * Errors: no usable server 503, connect failures 502, connect or response timeout 504; once
 * the response has started, an upstream failure resets the stream (H3_INTERNAL_ERROR).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/quic_int.h"

enum { BODY_NONE = 0, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };
enum { CH_SIZE = 0, CH_DATA, CH_DATA_CRLF, CH_TRAILER, CH_DONE };

#define AE_H3_MAX_RESP_FIELDS 128

struct qstream {
    qstream *dead_next;
    qstream *prev, *next; /* in c->streams */
    qconn *c;
    ae_worker *w;
    int64_t sid;
    int dead;
    /* request */
    char *method, *path, *authority, *scheme, *xff;
    char *hdrs; /* "Name: value\r\n" lines to forward */
    size_t hdrs_len, hdrs_cap, head_bytes;
    int64_t req_cl; /* -1: no Content-Length */
    unsigned headers_done : 1, req_fin : 1, req_chunked : 1, head_queued : 1, too_big : 1,
        is_head : 1;
    unsigned bad_field : 1, dup_pseudo : 1, late_pseudo : 1, has_protocol : 1, seen_regular : 1,
        host_auth : 1;
    /* 0-RTT (RFC 8470): early = part of the header section came in 0-RTT (quic.c sets
     * c->rx_early); early_hdr = the client itself sent Early-Data (kept, normalised to "1") */
    unsigned early : 1, early_hdr : 1;
    uint64_t pending_consume; /* body bytes received, not yet credited to the client */
    uint64_t bytes_in;
    ae_buf *up_head, *up_tail; /* bytes to the upstream */
    /* upstream */
    int ufd;
    ev_io uio;
    ev_timer ut;
    int server_idx;
    uint64_t tried;
    uint32_t attempts;
    unsigned counted : 1, connecting : 1, u_eof : 1, last_timeout : 1, up_done : 1;
    /* keep-alive: reused = on a pooled connection; retried = once on a fresh one; no_reuse =
     * never take a pooled one; u_err = a send failed; resp_close = "Connection: close" or
     * HTTP/1.0; keep = the response completed in a way that allows reuse */
    unsigned reused : 1, retried : 1, no_reuse : 1, u_err : 1, resp_close : 1, keep : 1;
    ev_tstamp u_last;
    ev_tstamp u_start; /* first upstream attempt (latency histogram), 0 before */
    uint64_t u_bytes;  /* bytes received from the current upstream connection */
    /* response */
    ae_buf *rin; /* raw bytes from the upstream */
    int status;
    unsigned resp_started : 1, resp_done : 1, h3_blocked : 1, reset : 1;
    int body_mode, chunk_state;
    uint64_t body_left;
    ae_buf *dn_head, *dn_tail; /* response body queue, data[0, len) each */
    uint64_t dn_base, dn_in, dn_handed, dn_acked;
    uint64_t bytes_out;
    ev_tstamp started;
    const char *reason;
};

static void pump(qstream *s);
static void consume(qstream *s, uint64_t n);
static int retry(qstream *s);
static void observe_latency(qstream *s);
static int queue_head(qstream *s);

/* ---- helpers ---- */

static uint32_t bufsize(qstream *s)
{
    return s->c->rt->conf->tune.buffer_size;
}

static void set_app_error(qconn *c, int liberr)
{
    ngtcp2_ccerr_set_application_error(&c->err, nghttp3_err_infer_quic_app_error_code(liberr), NULL,
                                       0);
    c->err_set = 1;
}

static int up_append(qstream *s, const void *data, size_t len)
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

static int up_printf(qstream *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int up_printf(qstream *s, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= sizeof(buf) ? AE_ERR_INVAL : up_append(s, buf, (size_t)n);
}

static void free_chain(ae_worker *w, ae_buf **head, ae_buf **tail)
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

void ae_h3_upool_free(ae_worker *w)
{
    if (w->quic == NULL || w->quic->upool == NULL)
        return;
    while (w->quic->upool->head != NULL)
        upidle_close(w->quic->upool->head);
    free(w->quic->upool);
    w->quic->upool = NULL;
}

/* Hands s's upstream connection to the pool. Returns 0, or -1 (the caller closes it). */
static int upool_put(qstream *s)
{
    ae_qworker *qw = s->w->quic;
    ae_upstream_server *srv = s->c->pool->servers[s->server_idx];
    if (qw->upool == NULL) {
        if ((qw->upool = calloc(1, sizeof(*qw->upool))) == NULL)
            return -1;
        qw->upool->w = s->w;
    }
    struct ae_h3_upool *p = qw->upool;
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
static int upool_take(ae_worker *w, ae_upstream_server *srv)
{
    struct ae_h3_upool *p = w->quic->upool;
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
static int dn_append(qstream *s, const uint8_t *p, size_t len)
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

static void close_upstream(qstream *s)
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
    free_chain(s->w, &s->up_head, &s->up_tail);
    /* Request body bytes nobody will forward any more: give the client its window back. */
    if (s->pending_consume > 0 && !s->dead)
        consume(s, s->pending_consume);
}

static void access_log(qstream *s)
{
    qconn *c = s->c;
    if (!c->rt->conf->log.access)
        return;
    char client[64], dur[32], in[32], out[32], st[16], sid[24];
    ae_addr_format((struct sockaddr *)&c->remote, client, sizeof(client));
    snprintf(dur, sizeof(dur), "%.3f", (ev_now(s->w->loop) - s->started) * 1000.0);
    snprintf(in, sizeof(in), "%llu", (unsigned long long)s->bytes_in);
    snprintf(out, sizeof(out), "%llu", (unsigned long long)s->bytes_out);
    snprintf(st, sizeof(st), "%d", s->status);
    snprintf(sid, sizeof(sid), "%lld", (long long)s->sid);
    ae_log_access(c->id, "listener", c->lis->name, "proto", "h3", "client", client, "sni", c->sni,
                  "stream", sid, "method", s->method ? s->method : "-", "authority",
                  s->authority ? s->authority : "-", "path", s->path ? s->path : "-", "status",
                  s->status ? st : "-", "upstream",
                  s->server_idx >= 0 ? c->pool->servers[s->server_idx]->addr.text : "-", "bytes_in",
                  in, "bytes_out", out, "duration_ms", dur, "reason",
                  s->reason ? s->reason : "done", (const char *)NULL);
}

/* Detaches s: upstream closed, logged, off the connection's list, queued for gc. */
static void stream_detach(qstream *s, const char *reason, int unbind)
{
    if (s->dead)
        return;
    if (s->reason == NULL)
        s->reason = reason;
    close_upstream(s);
    access_log(s);
    s->dead = 1;
    qconn *c = s->c;
    if (unbind && c->h3 != NULL)
        nghttp3_conn_set_stream_user_data(c->h3, s->sid, NULL);
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->dead_next = s->w->quic->dead_streams;
    s->w->quic->dead_streams = s;
}

void ae_h3_gc(ae_qworker *qw)
{
    while (qw->dead_streams != NULL) {
        qstream *s = qw->dead_streams;
        qw->dead_streams = s->dead_next;
        free_chain(s->w, &s->dn_head, &s->dn_tail);
        ae_worker_buf_put(s->w, s->rin);
        free(s->method);
        free(s->path);
        free(s->authority);
        free(s->scheme);
        free(s->xff);
        free(s->hdrs);
        free(s);
    }
}

void ae_h3_close_all(qconn *c, const char *reason)
{
    while (c->streams != NULL) {
        qstream *s = c->streams;
        /* A response sent in full is "done" even if the client closed before acking it all. */
        int full = s->resp_done && s->dn_handed == s->dn_in && !s->reset;
        stream_detach(s, full ? "done" : reason, 1);
    }
}

static void count_status(qstream *s)
{
    int k = s->status / 100;
    if (k >= 2 && k <= 5)
        ae_count(&s->w->counters, (ae_metric)(AE_M_H3_REQ_2XX + (k - 2)), 1);
}

/* Ends the stream abruptly in both directions (the response, if any, is cut). */
static void stream_reset(qstream *s, uint64_t code, const char *reason)
{
    if (s->reset || s->dead)
        return;
    s->reset = 1;
    s->reason = reason;
    ae_count(&s->w->counters, AE_M_H3_REQ_RESET, 1);
    close_upstream(s);
    ngtcp2_conn_shutdown_stream(s->c->conn, 0, s->sid, code);
    ae_quic_conn_kick(s->c);
}

/* ---- response ---- */

static nghttp3_ssize read_data(nghttp3_conn *h3, int64_t sid, nghttp3_vec *vec, size_t veccnt,
                               uint32_t *pflags, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL) {
        *pflags |= NGHTTP3_DATA_FLAG_EOF;
        return 0;
    }
    size_t n = 0;
    uint64_t base = s->dn_base;
    for (ae_buf *b = s->dn_head; b != NULL && n < veccnt; base += b->len, b = b->next) {
        if (s->dn_handed >= base + b->len)
            continue;
        size_t start = (size_t)(s->dn_handed - base), avail = b->len - start;
        vec[n].base = b->data + start;
        vec[n].len = avail;
        s->dn_handed += avail;
        s->bytes_out += avail;
        n++;
    }
    if (s->dn_handed == s->dn_in) {
        if (s->resp_done)
            *pflags |= NGHTTP3_DATA_FLAG_EOF;
        else if (n == 0) {
            s->h3_blocked = 1;
            return NGHTTP3_ERR_WOULDBLOCK;
        }
    }
    return (nghttp3_ssize)n;
}

static int submit(qstream *s, nghttp3_nv *nva, size_t n, int body)
{
    static const nghttp3_data_reader dr = {read_data};
    s->resp_started = 1;
    count_status(s);
    const ae_conf *conf = s->c->rt->conf;
    nghttp3_nv all[AE_H3_MAX_RESP_FIELDS + 1];
    if (conf->quic.site_header != NULL && n < AE_ARRAY_LEN(all)) {
        memcpy(all, nva, n * sizeof(*nva));
        all[n++] = (nghttp3_nv){(uint8_t *)conf->quic.site_header, (uint8_t *)conf->site.name,
                                strlen(conf->quic.site_header), strlen(conf->site.name),
                                NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE};
        nva = all;
    }
    int rv = nghttp3_conn_submit_response(s->c->h3, s->sid, nva, n, body ? &dr : NULL);
    if (rv != 0) {
        stream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, "submit_failed");
        return rv;
    }
    ae_quic_conn_kick(s->c);
    return 0;
}

#define NV(n, v, vl)                                                                               \
    ((nghttp3_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP3_NV_FLAG_NONE})

/* A response made by the proxy (errors). Once a response started, only a reset is left. */
static void respond_error(qstream *s, int status, const char *reason)
{
    if (s->dead || s->reset)
        return;
    close_upstream(s);
    s->up_done = 1;
    if (s->resp_started) {
        stream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, reason);
        return;
    }
    static const char *const texts[] = {
        "502 bad gateway\n", "503 no upstream available\n", "504 gateway timeout\n",
        "431 request header fields too large\n", "501 not implemented\n"};
    const char *body = status == 503   ? texts[1]
                       : status == 504 ? texts[2]
                       : status == 502 ? texts[0]
                       : status == 431 ? texts[3]
                       : status == 501 ? texts[4]
                       : status == 425 ? "425 too early\n"
                                       : "error\n";
    char st[8], cl[24];
    snprintf(st, sizeof(st), "%d", status);
    snprintf(cl, sizeof(cl), "%zu", strlen(body));
    s->status = status;
    s->reason = reason;
    if (dn_append(s, (const uint8_t *)body, strlen(body)) != 0) {
        stream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, "nomem");
        return;
    }
    s->resp_done = 1;
    nghttp3_nv nva[] = {NV(":status", st, strlen(st)), NV("content-type", "text/plain", 10),
                        NV("content-length", cl, strlen(cl))};
    submit(s, nva, AE_ARRAY_LEN(nva), 1);
}

static int ieq(const char *a, size_t alen, const char *b)
{
    return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* Parses the response head in buf[0, len) (ends with the empty line). Returns 0 and submits
 * it, 1 for an interim (1xx) head to skip, or -1 when malformed. */
static int parse_head(qstream *s, char *buf, size_t len)
{
    char *end = buf + len, *p = buf;
    char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (eol == NULL || eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return -1;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        status = status * 10 + (p[i] - '0');
    }
    if (status < 100 || status > 599 || (eol - p > 12 && p[12] != ' '))
        return -1;
    int http10 = p[7] == '0';
    if (status >= 100 && status < 200) {
        if (status == 101)
            return -1; /* no upgrades through HTTP/3 */
        return 1;
    }
    nghttp3_nv nva[AE_H3_MAX_RESP_FIELDS];
    size_t n = 0;
    char st[4] = {p[9], p[10], p[11], 0};
    nva[n++] = NV(":status", st, 3);
    const char *site_header = s->c->rt->conf->quic.site_header;
    int chunked = 0, conn_close = http10, conn_keep = 0;
    int64_t cl = -1;
    for (p = eol + 2; p < end;) {
        eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL)
            return -1;
        if (eol == p)
            break; /* the empty line */
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL || colon == p || *p == ' ' || *p == '\t')
            return -1; /* no name, or obsolete line folding */
        size_t nlen = (size_t)(colon - p);
        char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (size_t i = 0; i < nlen; i++) {
            if (p[i] >= 'A' && p[i] <= 'Z')
                p[i] = (char)(p[i] + 32); /* HTTP/3 field names are lower case */
            if (p[i] <= ' ' || p[i] >= 127)
                return -1;
        }
        if (ieq(p, nlen, "transfer-encoding")) {
            if (!ieq(v, (size_t)(ve - v), "chunked"))
                return -1; /* other codings are not relayed */
            chunked = 1;
        } else if (ieq(p, nlen, "content-length")) {
            char *e;
            errno = 0;
            long long x = strtoll(v, &e, 10);
            if (e != ve || v == ve || x < 0 || errno != 0 || (cl >= 0 && cl != x))
                return -1;
            cl = x;
        }
        if (ieq(p, nlen, "connection")) {
            /* a comma-separated list of options: look for close / keep-alive tokens */
            for (char *t = v; t < ve;) {
                while (t < ve && (*t == ',' || *t == ' ' || *t == '\t'))
                    t++;
                char *te = t;
                while (te < ve && *te != ',' && *te != ' ' && *te != '\t')
                    te++;
                if (ieq(t, (size_t)(te - t), "close"))
                    conn_close = 1;
                else if (ieq(t, (size_t)(te - t), "keep-alive"))
                    conn_keep = 1;
                t = te;
            }
        }
        if (site_header != NULL && ieq(p, nlen, site_header)) {
            p = eol + 2; /* ours replaces the upstream's */
            continue;
        }
        if (ieq(p, nlen, "connection") || ieq(p, nlen, "keep-alive") ||
            ieq(p, nlen, "proxy-connection") || ieq(p, nlen, "transfer-encoding") ||
            ieq(p, nlen, "upgrade") || ieq(p, nlen, "te")) {
            p = eol + 2;
            continue;
        }
        if (n == AE_ARRAY_LEN(nva))
            return -1;
        nva[n++] =
            (nghttp3_nv){(uint8_t *)p, (uint8_t *)v, nlen, (size_t)(ve - v), NGHTTP3_NV_FLAG_NONE};
        p = eol + 2;
    }
    s->status = status;
    /* HTTP/1.0 keeps the connection only with "Connection: keep-alive"; we do not rely on it. */
    s->resp_close = conn_close || (http10 && !conn_keep) || http10;
    if (s->is_head || status == 204 || status == 304)
        s->body_mode = BODY_NONE;
    else if (chunked)
        s->body_mode = BODY_CHUNKED;
    else if (cl >= 0)
        s->body_mode = cl > 0 ? BODY_LENGTH : BODY_NONE;
    else
        s->body_mode = BODY_CLOSE;
    if (chunked && cl >= 0) { /* RFC 9112 §6.3: chunked wins; do not pass the length on */
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (!(nva[i].namelen == 14 && memcmp(nva[i].name, "content-length", 14) == 0))
                nva[k++] = nva[i];
        n = k;
    }
    s->body_left = s->body_mode == BODY_LENGTH ? (uint64_t)cl : 0;
    s->chunk_state = CH_SIZE;
    if (s->body_mode == BODY_NONE)
        s->resp_done = 1;
    return submit(s, nva, n, s->body_mode != BODY_NONE) == 0 ? 0 : -2;
}

/* Response complete: the upstream connection is done. It may go back to the keep-alive pool
 * (decided by pump() once the bytes of this read are accounted for: s->keep). */
static void response_complete(qstream *s)
{
    s->resp_done = 1;
    s->up_done = 1;
    s->keep = !s->resp_close && s->body_mode != BODY_CLOSE && !s->u_err && !s->u_eof;
    if (!s->keep)
        close_upstream(s);
    if (s->h3_blocked && s->c->h3 != NULL) {
        s->h3_blocked = 0;
        nghttp3_conn_resume_stream(s->c->h3, s->sid);
    }
    if (!s->req_fin) /* the rest of the request body is not needed any more */
        ngtcp2_conn_shutdown_stream_read(s->c->conn, 0, s->sid, NGHTTP3_H3_NO_ERROR);
    ae_quic_conn_kick(s->c);
}

/* Consumes body bytes of p[0, len); returns bytes used, or -1 on a framing error. */
static ssize_t body_bytes(qstream *s, const uint8_t *p, size_t len)
{
    size_t used = 0;
    while (used < len && !s->resp_done) {
        const uint8_t *q = p + used;
        size_t avail = len - used;
        if (s->body_mode == BODY_CLOSE || s->body_mode == BODY_LENGTH ||
            (s->body_mode == BODY_CHUNKED && s->chunk_state == CH_DATA)) {
            size_t n = avail;
            if (s->body_mode != BODY_CLOSE && n > s->body_left)
                n = (size_t)s->body_left;
            if (dn_append(s, q, n) != 0)
                return -1;
            used += n;
            if (s->body_mode != BODY_CLOSE) {
                s->body_left -= n;
                if (s->body_left == 0) {
                    if (s->body_mode == BODY_LENGTH)
                        response_complete(s);
                    else
                        s->chunk_state = CH_DATA_CRLF;
                }
            }
            continue;
        }
        /* chunked framing lines: need a whole line */
        const uint8_t *eol = memmem(q, avail, "\r\n", 2);
        if (eol == NULL)
            return avail > 1024 ? -1 : (ssize_t)used;
        size_t linelen = (size_t)(eol - q);
        used += linelen + 2;
        if (s->chunk_state == CH_DATA_CRLF) {
            if (linelen != 0)
                return -1;
            s->chunk_state = CH_SIZE;
        } else if (s->chunk_state == CH_SIZE) {
            uint64_t size = 0;
            size_t i = 0;
            for (; i < linelen; i++) {
                int d = q[i] >= '0' && q[i] <= '9'   ? q[i] - '0'
                        : q[i] >= 'a' && q[i] <= 'f' ? q[i] - 'a' + 10
                        : q[i] >= 'A' && q[i] <= 'F' ? q[i] - 'A' + 10
                                                     : -1;
                if (d < 0)
                    break;
                if (size >> 56)
                    return -1;
                size = size * 16 + (uint64_t)d;
            }
            if (i == 0 || (i < linelen && q[i] != ';' && q[i] != ' ' && q[i] != '\t'))
                return -1;
            if (size == 0)
                s->chunk_state = CH_TRAILER;
            else {
                s->body_left = size;
                s->chunk_state = CH_DATA;
            }
        } else if (s->chunk_state == CH_TRAILER) {
            if (linelen == 0) /* trailers are dropped */
                response_complete(s);
        }
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
            uint8_t *e = memmem(p, b->len, "\r\n\r\n", 4);
            if (e == NULL) {
                if (b->len >= b->cap / 2) {
                    respond_error(s, 502, "upstream_head_too_big");
                    return -1;
                }
                break;
            }
            size_t hl = (size_t)(e - p) + 4;
            int rv = parse_head(s, (char *)p, hl);
            if (rv < 0) {
                if (rv == -1)
                    respond_error(s, 502, "upstream_bad_response");
                return -1;
            }
            b->off += (uint32_t)hl;
            b->len -= (uint32_t)hl;
            if (s->resp_done) /* no body (HEAD, 204, 304, Content-Length: 0) */
                response_complete(s);
            continue;
        }
        ssize_t n = body_bytes(s, p, b->len);
        if (n < 0) {
            stream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, "upstream_bad_body");
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
            respond_error(s, 502, "upstream_closed");
    } else if (s->body_mode == BODY_CLOSE) {
        response_complete(s);
    } else if (!s->resp_done) {
        stream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, "upstream_truncated");
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

static void try_connect(qstream *s);

static void connect_failed(qstream *s, int timeout)
{
    ae_count(&s->w->counters, AE_M_UP_CONNECT_FAIL, 1);
    if (timeout)
        ae_count(&s->w->counters, AE_M_UP_CONNECT_TIMEOUT, 1);
    s->last_timeout = (unsigned)timeout;
    ae_pool_report_connect(s->c->pool, (size_t)s->server_idx, 0, ae_now_ms());
    AE_CWARN(s->c->id, "upstream %s: connect %s", s->c->pool->servers[s->server_idx]->addr.text,
             timeout ? "timeout" : "failed");
    close_upstream(s);
    try_connect(s);
}

static void connected(qstream *s)
{
    s->connecting = 0;
    ae_pool_report_connect(s->c->pool, (size_t)s->server_idx, 1, ae_now_ms());
    s->u_last = ev_now(s->w->loop);
    arm_idle(s, s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0);
    pump(s);
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
        pump(s);
    }
    if (!s->dead)
        ae_quic_conn_kick(s->c);
}

static void upstream_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    qstream *s = t->data;
    if (s->connecting) {
        connect_failed(s, 1);
        ae_quic_conn_kick(s->c);
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
    respond_error(s, 504, "upstream_timeout");
    ae_quic_conn_kick(s->c);
}

static void try_connect(qstream *s)
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
                respond_error(s, 503, "no_upstream");
            else
                respond_error(s, s->last_timeout ? 504 : 502,
                              s->last_timeout ? "upstream_connect_timeout" : "upstream_connect");
            return;
        }
        s->attempts++;
        s->tried |= 1ull << (idx % 64);
        s->server_idx = idx;
        ae_upstream_server *srv = pool->servers[idx];
        s->u_bytes = 0;
        s->reused = 0;
        if (!s->no_reuse && (s->ufd = upool_take(s->w, srv)) >= 0) {
            ae_count(&s->w->counters, AE_M_H3_UPSTREAM_REUSED, 1);
            atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
            s->counted = 1;
            s->reused = 1;
            ev_io_set(&s->uio, s->ufd, EV_READ);
            s->u_last = ev_now(s->w->loop);
            arm_idle(s, s->c->rt->conf->timeouts.upstream_idle_ms / 1000.0);
            pump(s);
            return;
        }
        s->ufd = socket(srv->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->ufd < 0) {
            AE_CERROR(s->c->id, "upstream socket: %s", strerror(errno));
            respond_error(s, 502, "upstream_socket");
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
        close_upstream(s);
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
    close_upstream(s);
    s->up_done = s->u_eof = s->u_err = s->head_queued = s->req_chunked = 0;
    if (s->rin != NULL)
        s->rin->off = s->rin->len = 0;
    if (queue_head(s) != 0)
        return 0;
    s->tried = 0;
    s->attempts = 0;
    try_connect(s);
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
static void pump(qstream *s)
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
            free_chain(s->w, &s->up_head, &s->up_tail);
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
            stream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, "nomem");
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
                respond_error(s, 502, "upstream_read_error");
        } else
            stream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, "upstream_read_error");
        return;
    }
    if (s->keep) {
        /* Reusable only when the exchange is over on the wire: the whole request written, no
         * byte beyond the response read. */
        s->keep = 0;
        if (s->ufd >= 0 && (s->rin == NULL || s->rin->len == 0) && s->req_fin && s->head_queued &&
            s->up_head == NULL && !s->u_err && !s->reset && !s->dead)
            upool_put(s);
        close_upstream(s); /* closes the fd unless the pool took it */
    }
    if (s->resp_done && s->rin != NULL) {
        ae_worker_buf_put(s->w, s->rin);
        s->rin = NULL;
    }
    if (s->ufd >= 0)
        watch(s, ev);
}

/* ---- request ---- */

static int hdr_append(qstream *s, const char *p, size_t n)
{
    if (s->hdrs_len + n > s->hdrs_cap) {
        size_t cap = s->hdrs_cap ? s->hdrs_cap * 2 : 1024;
        while (cap < s->hdrs_len + n)
            cap *= 2;
        char *h = realloc(s->hdrs, cap);
        if (h == NULL)
            return AE_ERR_NOMEM;
        s->hdrs = h;
        s->hdrs_cap = cap;
    }
    memcpy(s->hdrs + s->hdrs_len, p, n);
    s->hdrs_len += n;
    return 0;
}

/* Queues the HTTP/1.1 request head. Framing: Content-Length when known, chunked when a body of
 * unknown length follows, none when the request has ended. */
static int queue_head(qstream *s)
{
    qconn *c = s->c;
    char ip[INET6_ADDRSTRLEN] = "";
    if (c->remote.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&c->remote)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c->remote)->sin6_addr, ip, sizeof(ip));
    int rv = 0;
    rv |= up_append(s, s->method, strlen(s->method));
    rv |= up_append(s, " ", 1);
    rv |= up_append(s, s->path, strlen(s->path));
    rv |= up_append(s, " HTTP/1.1\r\nHost: ", 17);
    rv |= up_append(s, s->authority, strlen(s->authority));
    rv |= up_append(s, "\r\n", 2);
    if (s->hdrs_len)
        rv |= up_append(s, s->hdrs, s->hdrs_len);
    rv |= up_append(s, "X-Forwarded-For: ", 17);
    if (s->xff) {
        rv |= up_append(s, s->xff, strlen(s->xff));
        rv |= up_append(s, ", ", 2);
    }
    rv |= up_append(s, ip, strlen(ip));
    rv |= up_append(s, "\r\nX-Forwarded-Proto: https\r\n", 28);
    if (s->early || s->early_hdr)
        rv |= up_append(s, "Early-Data: 1\r\n", 15);
    if (s->req_cl >= 0)
        rv |= up_printf(s, "Content-Length: %lld\r\n", (long long)s->req_cl);
    else if (!s->req_fin) {
        s->req_chunked = 1;
        rv |= up_append(s, "Transfer-Encoding: chunked\r\n", 28);
    } else if (!strcmp(s->method, "POST") || !strcmp(s->method, "PUT") ||
               !strcmp(s->method, "PATCH"))
        rv |= up_append(s, "Content-Length: 0\r\n", 19);
    rv |= up_append(s, "\r\n", 2);
    s->head_queued = 1;
    return rv;
}

static qstream *stream_get(qconn *c, int64_t sid, void *sud)
{
    qstream *s = sud;
    if (s != NULL)
        return s;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->c = c;
    s->w = c->w;
    s->sid = sid;
    s->ufd = -1;
    s->server_idx = -1;
    s->req_cl = -1;
    s->early = c->rx_early;
    s->started = ev_now(c->w->loop);
    ev_io_init(&s->uio, upstream_cb, -1, 0);
    s->uio.data = s;
    ev_timer_init(&s->ut, upstream_timer_cb, 0, 0);
    s->ut.data = s;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    nghttp3_conn_set_stream_user_data(c->h3, sid, s);
    return s;
}

static int h3_begin_headers(nghttp3_conn *h3, int64_t sid, void *cud, void *sud)
{
    return stream_get(cud, sid, sud) ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int set_str(char **dst, const uint8_t *p, size_t n)
{
    *dst = strndup((const char *)p, n);
    return *dst ? 0 : -1;
}

/* A pseudo-header: duplicates make the request malformed (the first value stays). */
static int set_pseudo(qstream *s, char **dst, const uint8_t *p, size_t n)
{
    if (*dst != NULL) {
        s->dup_pseudo = 1;
        return 0;
    }
    return set_str(dst, p, n);
}

static int h3_recv_header(nghttp3_conn *h3, int64_t sid, int32_t token, nghttp3_rcbuf *name,
                          nghttp3_rcbuf *value, uint8_t flags, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL || s->headers_done)
        return 0;
    nghttp3_vec n = nghttp3_rcbuf_get_buf(name), v = nghttp3_rcbuf_get_buf(value);
    s->head_bytes += n.len + v.len + 32;
    if (s->head_bytes > AE_H3_HEAD_MAX) {
        s->too_big = 1;
        return 0;
    }
    /* nghttp3 validated names and values already (RFC 9114 §4.2); check again with our own
     * rules: a CR, LF or NUL would split the HTTP/1.1 request. */
    if (ae_h3_check_field(n.base, n.len, v.base, v.len) != AE_H3_OK) {
        s->bad_field = 1;
        return 0;
    }
    if (n.base[0] == ':') {
        if (s->seen_regular)
            s->late_pseudo = 1;
    } else
        s->seen_regular = 1;
    int rv = 0;
    switch (token) {
    case NGHTTP3_QPACK_TOKEN__METHOD:
        rv = set_pseudo(s, &s->method, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN__PATH:
        rv = set_pseudo(s, &s->path, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN__AUTHORITY:
        if (s->authority != NULL && s->host_auth) { /* Host came first: :authority wins */
            free(s->authority);
            s->authority = NULL;
            s->host_auth = 0;
        }
        rv = set_pseudo(s, &s->authority, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN__SCHEME:
        rv = set_pseudo(s, &s->scheme, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN__PROTOCOL:
        s->has_protocol = 1;
        break;
    case NGHTTP3_QPACK_TOKEN_HOST:
        if (s->authority == NULL) {
            rv = set_str(&s->authority, v.base, v.len);
            s->host_auth = 1;
        }
        break;
    case NGHTTP3_QPACK_TOKEN_CONTENT_LENGTH: {
        char buf[24];
        if (v.len == 0 || v.len >= sizeof(buf))
            return NGHTTP3_ERR_CALLBACK_FAILURE;
        memcpy(buf, v.base, v.len);
        buf[v.len] = 0;
        s->req_cl = strtoll(buf, NULL, 10); /* nghttp3 checked the syntax */
        break;
    }
    case NGHTTP3_QPACK_TOKEN_X_FORWARDED_FOR:
        if (s->xff == NULL)
            rv = set_str(&s->xff, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN_TE:
    case NGHTTP3_QPACK_TOKEN_CONNECTION:
    case NGHTTP3_QPACK_TOKEN_KEEP_ALIVE:
    case NGHTTP3_QPACK_TOKEN_PROXY_CONNECTION:
    case NGHTTP3_QPACK_TOKEN_TRANSFER_ENCODING:
    case NGHTTP3_QPACK_TOKEN_UPGRADE:
        break;
    default:
        if (n.len > 0 && n.base[0] == ':')
            break;
        if (n.len == 17 && memcmp(n.base, "x-forwarded-proto", 17) == 0)
            break;
        if (n.len == 10 && memcmp(n.base, "early-data", 10) == 0) {
            s->early_hdr = 1; /* re-emitted once by queue_head */
            break;
        }
        rv = hdr_append(s, (const char *)n.base, n.len) | hdr_append(s, ": ", 2) |
             hdr_append(s, (const char *)v.base, v.len) | hdr_append(s, "\r\n", 2);
        break;
    }
    return rv == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int h3_end_headers(nghttp3_conn *h3, int64_t sid, int fin, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL)
        return 0;
    s->headers_done = 1;
    s->req_fin = fin != 0;
    ae_h3_req_info ri = {.method = s->method,
                         .scheme = s->scheme,
                         .path = s->path,
                         .authority = s->authority,
                         .section_size = s->head_bytes,
                         .bad_field = s->bad_field,
                         .dup_pseudo = s->dup_pseudo,
                         .late_pseudo = s->late_pseudo,
                         .has_protocol = s->has_protocol};
    switch (ae_h3_check_request(&ri)) {
    case AE_H3_OK:
        break;
    case AE_H3_TOO_BIG:
        respond_error(s, 431, "header_too_big");
        return 0;
    case AE_H3_CONNECT:
        respond_error(s, 501, "connect_not_supported");
        return 0;
    default:
        stream_reset(s, NGHTTP3_H3_MESSAGE_ERROR, "malformed");
        return 0;
    }
    s->is_head = strcmp(s->method, "HEAD") == 0;
    s->early |= s->c->rx_early;
    if (s->early) {
        /* RFC 8470 §5: a request that may be replayed goes upstream only when its method is
         * safe (or the operator said so); otherwise 425 and the client retries after the
         * handshake. */
        if (!s->c->rt->conf->quic.early_data_unsafe && strcmp(s->method, "GET") != 0 &&
            !s->is_head && strcmp(s->method, "OPTIONS") != 0) {
            ae_count(&s->w->counters, AE_M_H3_TOO_EARLY, 1);
            respond_error(s, 425, "too_early");
            return 0;
        }
        ae_count(&s->w->counters, AE_M_H3_EARLY_FORWARDED, 1);
    }
    if ((s->req_fin || s->req_cl >= 0) && queue_head(s) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    try_connect(s);
    return 0;
}

static int h3_recv_data(nghttp3_conn *h3, int64_t sid, const uint8_t *data, size_t len, void *cud,
                        void *sud)
{
    qstream *s = sud;
    qconn *c = cud;
    if (s == NULL || s->up_done || s->reset) { /* nobody wants it: credit it at once */
        ngtcp2_conn_extend_max_stream_offset(c->conn, sid, len);
        ngtcp2_conn_extend_max_offset(c->conn, len);
        return 0;
    }
    if (!s->head_queued && queue_head(s) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    int rv = 0;
    if (s->req_chunked)
        rv |= up_printf(s, "%zx\r\n", len);
    rv |= up_append(s, data, len);
    if (s->req_chunked)
        rv |= up_append(s, "\r\n", 2);
    if (rv != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    s->bytes_in += len;
    s->pending_consume += len;
    pump(s);
    return 0;
}

static int h3_end_stream(nghttp3_conn *h3, int64_t sid, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL || s->reset)
        return 0;
    s->req_fin = 1;
    if (s->up_done)
        return 0;
    if (!s->head_queued) {
        if (queue_head(s) != 0)
            return NGHTTP3_ERR_CALLBACK_FAILURE;
    } else if (s->req_chunked && up_append(s, "0\r\n\r\n", 5) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    pump(s);
    return 0;
}

static int h3_deferred_consume(nghttp3_conn *h3, int64_t sid, size_t n, void *cud, void *sud)
{
    qconn *c = cud;
    ngtcp2_conn_extend_max_stream_offset(c->conn, sid, n);
    ngtcp2_conn_extend_max_offset(c->conn, n);
    return 0;
}

static int h3_acked_stream_data(nghttp3_conn *h3, int64_t sid, uint64_t n, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL)
        return 0;
    s->dn_acked += n;
    while (s->dn_head != NULL && s->dn_base + s->dn_head->len <= s->dn_acked) {
        ae_buf *b = s->dn_head;
        s->dn_base += b->len;
        s->dn_head = b->next;
        if (s->dn_head == NULL)
            s->dn_tail = NULL;
        ae_worker_buf_put(s->w, b);
    }
    s->u_last = ev_now(s->w->loop); /* a slow client is not an idle upstream */
    if (!s->resp_done && s->ufd >= 0 && s->dn_in - s->dn_acked < AE_H3_DOWN_LIMIT)
        ev_feed_event(s->w->loop, &s->uio, EV_READ); /* resume reading after this callback */
    return 0;
}

static int h3_stream_close(nghttp3_conn *h3, int64_t sid, uint64_t code, void *cud, void *sud)
{
    qconn *c = cud;
    qstream *s = sud;
    if (ngtcp2_is_bidi_stream(sid))
        ngtcp2_conn_extend_max_streams_bidi(c->conn, 1);
    if (s != NULL) {
        if (!s->resp_done && s->reason == NULL)
            s->reason = "client_reset";
        stream_detach(s, "done", 0);
    }
    return 0;
}

static int h3_stop_sending(nghttp3_conn *h3, int64_t sid, uint64_t code, void *cud, void *sud)
{
    qconn *c = cud;
    ngtcp2_conn_shutdown_stream_read(c->conn, 0, sid, code);
    return 0;
}

static int h3_reset_stream(nghttp3_conn *h3, int64_t sid, uint64_t code, void *cud, void *sud)
{
    qconn *c = cud;
    qstream *s = sud;
    if (s != NULL && !s->reset) {
        s->reset = 1;
        s->reason = code == NGHTTP3_H3_MESSAGE_ERROR ? "malformed" : "reset";
        ae_count(&c->w->counters, AE_M_H3_REQ_RESET, 1);
        close_upstream(s);
    }
    ngtcp2_conn_shutdown_stream_write(c->conn, 0, sid, code);
    return 0;
}

/* ---- ngtcp2 -> nghttp3 glue (called from quic.c) ---- */

int ae_h3_setup(qconn *c)
{
    static const nghttp3_callbacks cbs = {
        .acked_stream_data = h3_acked_stream_data,
        .stream_close = h3_stream_close,
        .recv_data = h3_recv_data,
        .deferred_consume = h3_deferred_consume,
        .begin_headers = h3_begin_headers,
        .recv_header = h3_recv_header,
        .end_headers = h3_end_headers,
        .stop_sending = h3_stop_sending,
        .end_stream = h3_end_stream,
        .reset_stream = h3_reset_stream,
    };
    if (c->h3 != NULL)
        return 0;
    nghttp3_settings settings;
    nghttp3_settings_default(&settings);
    settings.qpack_max_dtable_capacity = 4096;
    settings.qpack_blocked_streams = 100;
    settings.max_field_section_size = AE_H3_HEAD_MAX;
    if (nghttp3_conn_server_new(&c->h3, &cbs, &settings, NULL, c) != 0)
        return -1;
    const ngtcp2_transport_params *p = ngtcp2_conn_get_local_transport_params(c->conn);
    nghttp3_conn_set_max_client_streams_bidi(c->h3, p->initial_max_streams_bidi);
    int64_t ctrl, enc, dec;
    if (ngtcp2_conn_open_uni_stream(c->conn, &ctrl, NULL) != 0 ||
        nghttp3_conn_bind_control_stream(c->h3, ctrl) != 0 ||
        ngtcp2_conn_open_uni_stream(c->conn, &enc, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(c->conn, &dec, NULL) != 0 ||
        nghttp3_conn_bind_qpack_streams(c->h3, enc, dec) != 0)
        return -1;
    return 0;
}

int ae_h3_recv_stream_data(qconn *c, uint32_t flags, int64_t sid, const uint8_t *data, size_t len)
{
    if (c->h3 == NULL)
        return -1;
    nghttp3_ssize n =
        nghttp3_conn_read_stream(c->h3, sid, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    if (n < 0) {
        set_app_error(c, (int)n);
        return -1;
    }
    ngtcp2_conn_extend_max_stream_offset(c->conn, sid, (uint64_t)n);
    ngtcp2_conn_extend_max_offset(c->conn, (uint64_t)n);
    return 0;
}

int ae_h3_acked(qconn *c, int64_t sid, uint64_t len)
{
    if (c->h3 == NULL)
        return 0;
    int rv = nghttp3_conn_add_ack_offset(c->h3, sid, len);
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

int ae_h3_stream_close(qconn *c, uint32_t flags, int64_t sid, uint64_t code)
{
    if (c->h3 == NULL)
        return 0;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        code = NGHTTP3_H3_NO_ERROR;
    int rv = nghttp3_conn_close_stream(c->h3, sid, code);
    if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
        if (ngtcp2_is_bidi_stream(sid))
            ngtcp2_conn_extend_max_streams_bidi(c->conn, 1);
        return 0;
    }
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

int ae_h3_stream_reset(qconn *c, int64_t sid)
{
    if (c->h3 == NULL)
        return 0;
    int rv = nghttp3_conn_shutdown_stream_read(c->h3, sid);
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

int ae_h3_extend_max_stream_data(qconn *c, int64_t sid)
{
    if (c->h3 == NULL)
        return 0;
    int rv = nghttp3_conn_unblock_stream(c->h3, sid);
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

/* ---- graceful drain ---- */

size_t ae_h3_goaway(qconn *c, int step)
{
    size_t n = 0;
    for (qstream *s = c->streams; s != NULL; s = s->next)
        n++;
    if (c->h3 == NULL)
        return n;
    int rv = step == 0 ? nghttp3_conn_submit_shutdown_notice(c->h3) : nghttp3_conn_shutdown(c->h3);
    if (rv != 0)
        AE_CDEBUG(c->id, "h3: GOAWAY: %s", nghttp3_strerror(rv));
    ae_quic_conn_kick(c);
    return n;
}

/* ---- RFC 9114 request validation ---- */

static int is_tchar_lower(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int name_is(const uint8_t *name, size_t nlen, const char *lit)
{
    return nlen == strlen(lit) && memcmp(name, lit, nlen) == 0;
}

int ae_h3_check_field(const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
    if (nlen == 0)
        return AE_H3_MALFORMED;
    for (size_t i = 0; i < vlen; i++) /* §4.2: never NUL, CR or LF in a value */
        if (value[i] == 0 || value[i] == '\r' || value[i] == '\n')
            return AE_H3_MALFORMED;
    if (name[0] == ':') /* §4.3.1: only the request pseudo-headers we know */
        return name_is(name, nlen, ":method") || name_is(name, nlen, ":scheme") ||
                       name_is(name, nlen, ":authority") || name_is(name, nlen, ":path") ||
                       name_is(name, nlen, ":protocol")
                   ? AE_H3_OK
                   : AE_H3_MALFORMED;
    for (size_t i = 0; i < nlen; i++) /* §4.2: lower-case tokens only */
        if (!is_tchar_lower(name[i]))
            return AE_H3_MALFORMED;
    /* §4.2: connection-specific fields are malformed in HTTP/3 */
    if (name_is(name, nlen, "connection") || name_is(name, nlen, "keep-alive") ||
        name_is(name, nlen, "proxy-connection") || name_is(name, nlen, "transfer-encoding") ||
        name_is(name, nlen, "upgrade"))
        return AE_H3_MALFORMED;
    if (name_is(name, nlen, "te") &&
        !(vlen == 8 && strncasecmp((const char *)value, "trailers", 8) == 0))
        return AE_H3_MALFORMED;
    return AE_H3_OK;
}

/* Characters of a request-target or authority we put on the HTTP/1.1 request line / Host:
 * visible ASCII only (no space, control or DEL byte). */
static int visible(const char *p)
{
    for (; *p; p++)
        if ((uint8_t)*p <= ' ' || (uint8_t)*p >= 0x7f)
            return 0;
    return 1;
}

int ae_h3_check_request(const ae_h3_req_info *r)
{
    if (r->section_size > AE_H3_HEAD_MAX)
        return AE_H3_TOO_BIG;
    if (r->bad_field || r->dup_pseudo || r->late_pseudo || r->method == NULL || r->method[0] == 0)
        return AE_H3_MALFORMED;
    for (const char *m = r->method; *m; m++)
        if (!is_tchar_lower((uint8_t)*m) && !(*m >= 'A' && *m <= 'Z'))
            return AE_H3_MALFORMED;
    if (strcmp(r->method, "CONNECT") == 0) {
        /* §4.4: :scheme and :path omitted, :authority present; extended CONNECT (:protocol)
         * needs SETTINGS_ENABLE_CONNECT_PROTOCOL, which we do not send. */
        if (r->scheme != NULL || r->path != NULL || r->authority == NULL || r->has_protocol)
            return AE_H3_MALFORMED;
        return AE_H3_CONNECT;
    }
    if (r->has_protocol || r->scheme == NULL || r->path == NULL || r->scheme[0] == 0 ||
        r->path[0] == 0)
        return AE_H3_MALFORMED;
    /* §4.3.1: http and https URIs need an authority (:authority or Host). */
    if (r->authority == NULL || r->authority[0] == 0 || !visible(r->authority))
        return AE_H3_MALFORMED;
    if (!visible(r->path) ||
        !(r->path[0] == '/' || (strcmp(r->path, "*") == 0 && strcmp(r->method, "OPTIONS") == 0)))
        return AE_H3_MALFORMED;
    return AE_H3_OK;
}
