/*
 * The admin HTTP endpoint on the main thread's loop: metrics, status, reload, key rotation.
 *
 * Deliberately tiny HTTP/1.x: one request per connection, no bodies, Connection: close. Every
 * connection has a hard deadline, a bounded request buffer and a bounded count, so a slow or
 * hostile local client cannot stall the main loop or grow memory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4; CMake defines it for the whole build */
#endif
#include "proxy/site/admin.h"

#include "proxy/site/anycast.h"
#include "proxy/site/render.h"
#include "proxy/site/sb.h"
#include "proxy/forward/forward.h"
#include "proxy/handoff/handoff.h"
#include "proxy/core/metrics.h"
#include "proxy/core/reason.h"
#include "proxy/core/runtime.h"
#include "proxy/site/server.h"
#include "state/state.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADMIN_TIMEOUT_S   5.0
#define ADMIN_LINGER_S    1.0 /* max wait for the client's EOF after our response */
#define ADMIN_MAX_CONNS   64
#define ADMIN_BACKLOG     64
#define ADMIN_ACCEPT_WAIT 0.1 /* accept paused after EMFILE/ENFILE/ENOBUFS/ENOMEM */

/* ---- request parsing and routing (pure) ---- */

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

int ae_admin_parse_request(const char *buf, size_t len, ae_admin_request *req)
{
    const char *p = buf, *end = buf + len, *nl, *sp;
    size_t i;

    memset(req, 0, sizeof(*req));
    nl = memchr(p, '\n', len);
    /* Reject what can be rejected before the line is complete, so junk fails fast. */
    for (i = 0; i < (nl != NULL ? (size_t)(nl - p) : len); i++) {
        unsigned char ch = (unsigned char)p[i];

        if (ch == '\0' || (ch < 0x20 && ch != '\r') || ch >= 0x7f)
            return AE_ERR_PARSE;
    }
    if (nl == NULL)
        return AE_ERR_AGAIN;
    if (nl == p || nl[-1] != '\r')
        return AE_ERR_PARSE;

    /* method SP */
    for (sp = p; sp < nl && *sp >= 'A' && *sp <= 'Z'; sp++)
        ;
    if (sp == p || sp - p > 16 || *sp != ' ')
        return AE_ERR_PARSE;
    req->method = p;
    req->method_len = (size_t)(sp - p);
    /* origin-form target SP */
    p = sp + 1;
    if (*p != '/')
        return AE_ERR_PARSE;
    for (sp = p; sp<nl && * sp> 0x20 && *sp < 0x7f; sp++)
        ;
    if (*sp != ' ')
        return AE_ERR_PARSE;
    req->path = p;
    req->path_len = (size_t)(sp - p);
    for (i = 0; i < req->path_len; i++) {
        if (p[i] == '?' || p[i] == '#') {
            size_t tlen = req->path_len, j;
            req->path_len = i;
            if (p[i] == '?') {
                for (j = i + 1; j < tlen && p[j] != '#'; j++)
                    ;
                req->query = p + i + 1;
                req->query_len = j - i - 1;
            }
            break;
        }
    }
    /* HTTP/1.x CR LF */
    p = sp + 1;
    if (nl - p != 9 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9')
        return AE_ERR_PARSE;
    req->minor = p[7] - '0';

    /* Header lines: "name: value" CRLF, no obsolete folding, up to the empty line. */
    for (p = nl + 1;;) {
        const char *colon;

        if (p >= end)
            return AE_ERR_AGAIN;
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return memchr(p, '\0', (size_t)(end - p)) != NULL ? AE_ERR_PARSE : AE_ERR_AGAIN;
        if (nl == p || nl[-1] != '\r')
            return AE_ERR_PARSE;
        if (nl - 1 == p) {
            req->head_len = (size_t)(nl + 1 - buf);
            return 0;
        }
        for (colon = p; colon < nl - 1 && is_tchar((unsigned char)*colon); colon++)
            ;
        if (colon == p || *colon != ':')
            return AE_ERR_PARSE;
        for (sp = colon + 1; sp < nl - 1; sp++) {
            unsigned char ch = (unsigned char)*sp;

            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return AE_ERR_PARSE;
        }
        p = nl + 1;
    }
}

static const struct {
    const char *path;
    const char *method;
    ae_admin_route_id id;
} routes[] = {
    {"/metrics", "GET", AE_ADMIN_METRICS}, {"/status", "GET", AE_ADMIN_STATUS},
    {"/reload", "POST", AE_ADMIN_RELOAD},  {"/keys/rotate", "POST", AE_ADMIN_KEYS_ROTATE},
    {"/sites", "GET", AE_ADMIN_SITES},     {"/whereis", "GET", AE_ADMIN_WHEREIS},
    {"/drain", "POST", AE_ADMIN_DRAIN},    {"/undrain", "POST", AE_ADMIN_UNDRAIN},
};

static int span_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

int ae_admin_route(const ae_admin_request *req, const char **allow)
{
    size_t i;

    *allow = NULL;
    for (i = 0; i < AE_ARRAY_LEN(routes); i++) {
        if (!span_eq(req->path, req->path_len, routes[i].path))
            continue;
        if (span_eq(req->method, req->method_len, routes[i].method))
            return (int)routes[i].id;
        *allow = routes[i].method;
        return AE_ERR_INVAL;
    }
    return AE_ERR_NOTFOUND;
}

/* ---- connections ---- */

typedef enum {
    AC_READING = 0, /* reading the request head */
    AC_WRITING,     /* sending the response */
    AC_LINGERING,   /* response sent and write side shut: draining until the client's EOF */
    AC_CLOSED,      /* done; freed by the callback that set it, after the handler returns */
} ac_state;

typedef struct admin_conn {
    ae_admin *a;
    struct admin_conn *prev, *next;
    int fd;
    ac_state state;
    ev_io io;
    ev_timer timer;
    size_t rlen;
    char *out;
    size_t outlen, outoff;
    char rbuf[AE_ADMIN_REQ_MAX];
} admin_conn;

struct ae_admin {
    struct ev_loop *loop;
    ae_server_main *srv;
    int fd;
    ev_io io;
    ev_timer pause;
    admin_conn *conns;
    size_t nconns;
};

static void conn_free(admin_conn *c)
{
    ae_admin *a = c->a;

    ev_io_stop(a->loop, &c->io);
    ev_timer_stop(a->loop, &c->timer);
    if (c->fd >= 0)
        close(c->fd);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    a->nconns--;
    free(c->out);
    free(c);
}

static void conn_set_io(admin_conn *c, int events)
{
    ev_io_stop(c->a->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->a->loop, &c->io);
}

static void conn_linger(admin_conn *c)
{
    /* Closing with unread request bytes would make the kernel send RST, which can destroy
     * the response before the client read it; shut our side and wait for theirs. */
    shutdown(c->fd, SHUT_WR);
    c->state = AC_LINGERING;
    conn_set_io(c, EV_READ);
    if (ev_timer_remaining(c->a->loop, &c->timer) > ADMIN_LINGER_S) {
        ev_timer_stop(c->a->loop, &c->timer);
        ev_timer_set(&c->timer, ADMIN_LINGER_S, 0.);
        ev_timer_start(c->a->loop, &c->timer);
    }
}

static void conn_write(admin_conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!ev_is_active(&c->io))
                    conn_set_io(c, EV_WRITE);
                return;
            }
            c->state = AC_CLOSED;
            return;
        }
        c->outoff += (size_t)w;
    }
    conn_linger(c);
}

static const char *status_text(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    default:
        return "Error";
    }
}

/* Queues the response (body is borrowed) and starts sending it. */
static void conn_respond(admin_conn *c, int code, const char *ctype, const char *allow,
                         const char *body, size_t bodylen)
{
    ae_sb b = {0};

    ae_sb_printf(&b,
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Cache-Control: no-store\r\nConnection: close\r\n",
                 code, status_text(code), ctype, bodylen);
    if (allow != NULL)
        ae_sb_printf(&b, "Allow: %s\r\n", allow);
    ae_sb_add(&b, "\r\n", 2);
    ae_sb_add(&b, body, bodylen);
    if (b.oom) {
        free(b.p);
        c->state = AC_CLOSED;
        return;
    }
    free(c->out);
    c->out = b.p;
    c->outlen = b.len;
    c->outoff = 0;
    ev_io_stop(c->a->loop, &c->io);
    c->state = AC_WRITING;
    conn_write(c);
}

static void conn_respond_text(admin_conn *c, int code, const char *allow, const char *text)
{
    conn_respond(c, code, "text/plain; charset=utf-8", allow, text, strlen(text));
}

static void conn_respond_json_result(admin_conn *c, int rv, uint64_t generation, const char *err)
{
    ae_sb b = {0};
    int code = 200;

    if (rv == 0) {
        ae_sb_printf(&b, "{\"ok\":true,\"generation\":%llu}\n", (unsigned long long)generation);
    } else {
        /* The config or certificates are wrong: the client's problem. Anything else is ours. */
        code = rv == AE_ERR_PARSE || rv == AE_ERR_TLS || rv == AE_ERR_INVAL || rv == AE_ERR_NOTFOUND
                   ? 400
               : rv == AE_ERR_AGAIN ? 503
                                    : 500;
        ae_sb_puts(&b, "{\"ok\":false,\"error\":");
        ae_sb_json_str(&b, err != NULL && err[0] != '\0' ? err : ae_strerror(rv));
        ae_sb_puts(&b, "}\n");
    }
    if (b.oom) {
        free(b.p);
        conn_respond_text(c, 500, NULL, "out of memory\n");
        return;
    }
    conn_respond(c, code, "application/json", NULL, b.p, b.len);
    free(b.p);
}

/* POST /drain, /undrain: {"ok":true,"state":"draining"} or an error. */
static void anycast_drain_request(admin_conn *c, int drain)
{
    ae_anycast *a = ae_server_anycast(c->a->srv);
    ae_anycast_info in;
    char err[256] = "";
    int rv;
    ae_sb b = {0};

    if (a == NULL) {
        conn_respond_text(c, 503, NULL, "not running\n");
        return;
    }
    rv = drain ? ae_anycast_drain(a, "admin: drain", err, sizeof(err))
               : ae_anycast_undrain(a, "admin: undrain", err, sizeof(err));
    ae_anycast_get_info(a, &in);
    if (rv != 0) {
        ae_sb_puts(&b, "{\"ok\":false,\"error\":");
        ae_sb_json_str(&b, err[0] != '\0' ? err : ae_strerror(rv));
    } else {
        ae_sb_printf(&b, "{\"ok\":true,\"state\":\"%s\"", ae_anycast_state_names[in.state]);
    }
    ae_sb_puts(&b, "}\n");
    if (b.oom) {
        free(b.p);
        conn_respond_text(c, 500, NULL, "out of memory\n");
        return;
    }
    conn_respond(c, rv == 0 ? 200 : 409, "application/json", NULL, b.p, b.len);
    free(b.p);
}

/* The value of parameter name among the &-separated parameters of query[0, qlen) (the last one
 * when repeated; *vn its length), or NULL. */
static const char *query_param(const char *query, size_t qlen, const char *name, size_t *vn)
{
    const char *v = NULL;
    size_t nl = strlen(name);
    for (size_t i = 0; i < qlen;) {
        size_t j = i;
        while (j < qlen && query[j] != '&')
            j++;
        if (j - i > nl && memcmp(query + i, name, nl) == 0 && query[i + nl] == '=') {
            v = query + i + nl + 1;
            *vn = j - i - nl - 1;
        }
        i = j + 1;
    }
    return v;
}

/* ---- GET /whereis?cid=HEX (where a QUIC connection ID's packets go) ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* JSON {cid, site, worker, self, alive, ...} in *out (malloc'd); *code is the HTTP status
 * (200, 400 bad query, 404 undecodable, 503 no keys). 0 or AE_ERR_NOMEM. */
static int whereis_cid(ae_server_main *s, const char *query, size_t qlen, char **out,
                       size_t *outlen, int *code)
{
    char buf[512];
    int n;
    uint8_t cid[AE_CID_LEN];
    size_t hexlen = 0;
    const char *hex = query_param(query, qlen, "cid", &hexlen);

    *code = 400;
    if (hex == NULL || hexlen != 2 * AE_CID_LEN) {
        n = snprintf(buf, sizeof(buf),
                     "{\"ok\":false,\"error\":\"want ?cid=HEX with %d hex octets\"}\n", AE_CID_LEN);
        goto done;
    }
    for (size_t i = 0; i < AE_CID_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            n = snprintf(buf, sizeof(buf), "{\"ok\":false,\"error\":\"cid is not hex\"}\n");
            goto done;
        }
        cid[i] = (uint8_t)(hi << 4 | lo);
    }
    ae_cid_keys *k = NULL;
    uint16_t site;
    uint8_t worker;
    const ae_ring *ring = ae_server_qring(s);
    if (ring == NULL || ae_cid_keys_from_ring(ring, &k) != 0) {
        *code = 503;
        n = snprintf(buf, sizeof(buf), "{\"ok\":false,\"error\":\"no CID keys\"}\n");
        goto done;
    }
    int rv = ae_cid_decode(k, cid, sizeof(cid), &site, &worker);
    ae_cid_keys_free(k);
    if (rv != 0) {
        *code = 404;
        n = snprintf(buf, sizeof(buf),
                     "{\"ok\":false,\"cid\":\"%.*s\",\"error\":\"undecodable: not issued under "
                     "a key of the current ring\"}\n",
                     (int)hexlen, hex);
        goto done;
    }
    *code = 200;
    ae_runtime *rt = ae_server_runtime(s);
    if (rt != NULL && site == rt->conf->site.id) {
        int alive = worker < ae_server_nworkers(s) && !ae_server_draining(s);
        n = snprintf(buf, sizeof(buf),
                     "{\"ok\":true,\"cid\":\"%.*s\",\"site\":%u,\"worker\":%u,\"self\":true,"
                     "\"alive\":%s,\"state\":\"%s\",\"action\":\"%s\"}\n",
                     (int)hexlen, hex, site, worker, alive ? "true" : "false",
                     ae_server_draining(s) ? "draining" : "active",
                     worker < ae_server_nworkers(s) ? "local" : "reset");
        goto done;
    }
    const ae_fwd_peer *p = ae_fwd_peers_find(ae_server_peers(s), site);
    char addr[80] = "";
    if (p != NULL && p->addrlen > 0)
        ae_addr_format(&p->addr.sa, addr, sizeof(addr));
    int unreach = ae_fwd_group_unreachable(ae_server_fwd_group(s), site, ae_wall_ms());
    int alive = p != NULL && p->live && !unreach;
    int fwd = alive && !p->draining && p->addrlen > 0;
    n = snprintf(buf, sizeof(buf),
                 "{\"ok\":true,\"cid\":\"%.*s\",\"site\":%u,\"worker\":%u,\"self\":false,"
                 "\"alive\":%s,\"known\":%s,\"draining\":%s,\"unreachable\":%s,"
                 "\"forward\":\"%s\",\"action\":\"%s\"}\n",
                 (int)hexlen, hex, site, worker, alive ? "true" : "false",
                 p != NULL ? "true" : "false", p != NULL && p->draining ? "true" : "false",
                 unreach ? "true" : "false", addr, fwd ? "forward" : "reset");
done:
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(buf))
        n = sizeof(buf) - 1;
    *out = malloc((size_t)n + 1);
    if (*out == NULL)
        return AE_ERR_NOMEM;
    memcpy(*out, buf, (size_t)n + 1);
    *outlen = (size_t)n;
    return 0;
}

static void conn_dispatch(admin_conn *c, const ae_admin_request *req)
{
    ae_server_main *s = c->a->srv;
    const char *allow;
    char err[512];
    char *body = NULL;
    size_t bodylen = 0;
    int route = ae_admin_route(req, &allow), rv;

    switch (route) {
    case AE_ERR_NOTFOUND:
        conn_respond_text(c, 404, NULL, "not found\n");
        return;
    case AE_ERR_INVAL:
        conn_respond_text(c, 405, allow, "method not allowed\n");
        return;
    case AE_ADMIN_METRICS:
    case AE_ADMIN_STATUS:
    case AE_ADMIN_SITES:
        rv = route == AE_ADMIN_METRICS  ? ae_admin_render_metrics(s, &body, &bodylen)
             : route == AE_ADMIN_STATUS ? ae_admin_render_status(s, &body, &bodylen)
                                        : ae_admin_render_sites(s, &body, &bodylen);
        if (rv != 0) {
            conn_respond_text(c, 500, NULL, "out of memory\n");
            return;
        }
        conn_respond(c, 200,
                     route == AE_ADMIN_METRICS ? "text/plain; version=0.0.4; charset=utf-8"
                                               : "application/json",
                     NULL, body, bodylen);
        free(body);
        return;
    case AE_ADMIN_WHEREIS: {
        int code = 500;
        const char *q = req->query != NULL ? req->query : "";
        size_t qlen = req->query != NULL ? req->query_len : 0;
        size_t tn = 0;
        const char *tcp = query_param(q, qlen, "tcp", &tn);
        rv = tcp != NULL ? ae_handoff_whereis(ae_server_handoff(s), ae_server_conntab(s), tcp, tn,
                                              &body, &bodylen, &code)
                         : whereis_cid(s, q, qlen, &body, &bodylen, &code);
        if (rv != 0) {
            conn_respond_text(c, 500, NULL, "out of memory\n");
            return;
        }
        conn_respond(c, code, "application/json", NULL, body, bodylen);
        free(body);
        return;
    }
    case AE_ADMIN_DRAIN:
    case AE_ADMIN_UNDRAIN:
        anycast_drain_request(c, route == AE_ADMIN_DRAIN);
        return;
    case AE_ADMIN_RELOAD:
        err[0] = '\0';
        rv = ae_server_reload(s, err, sizeof(err));
        if (rv == 0)
            AE_INFO("admin: reload requested: now at generation %llu",
                    (unsigned long long)(ae_server_runtime(s) != NULL
                                             ? ae_server_runtime(s)->generation
                                             : 0));
        else
            AE_WARN("admin: reload failed: %s", err[0] != '\0' ? err : ae_strerror(rv));
        conn_respond_json_result(
            c, rv, ae_server_runtime(s) != NULL ? ae_server_runtime(s)->generation : 0, err);
        return;
    case AE_ADMIN_KEYS_ROTATE:
        err[0] = '\0';
        rv = ae_server_rotate_keys(s, err, sizeof(err));
        if (rv == 0)
            AE_INFO("admin: ticket key rotation %s",
                    ae_server_state(s) != NULL ? "requested" : "done");
        else
            AE_WARN("admin: key rotation failed: %s", err[0] != '\0' ? err : ae_strerror(rv));
        {
            /* Shared mode: the ring's generation (the rotation itself shows up shortly). */
            uint64_t gen = 0;
            if (ae_server_state(s) != NULL) {
                ae_state_info in;
                ae_state_get_info(ae_server_state(s), &in);
                gen = in.ring_generation;
            } else if (ae_server_keyring(s) != NULL) {
                gen = ae_keyring_generation(ae_server_keyring(s));
            }
            conn_respond_json_result(c, rv, gen, err[0] != '\0' ? err : NULL);
        }
        return;
    default:
        conn_respond_text(c, 500, NULL, "internal error\n");
    }
}

static void conn_read(admin_conn *c)
{
    ae_admin_request req;
    int rv;

    for (;;) {
        ssize_t r;

        if (c->rlen == sizeof(c->rbuf)) {
            conn_respond_text(c, 431, NULL, "request too large\n");
            return;
        }
        r = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->state = AC_CLOSED;
            return;
        }
        if (r == 0) {
            c->state = AC_CLOSED; /* gave up before finishing the request */
            return;
        }
        c->rlen += (size_t)r;
        rv = ae_admin_parse_request(c->rbuf, c->rlen, &req);
        if (rv == AE_ERR_AGAIN)
            continue;
        if (rv != 0) {
            conn_respond_text(c, 400, NULL, "bad request\n");
            return;
        }
        conn_dispatch(c, &req);
        return;
    }
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    admin_conn *c = w->data;
    char sink[1024];
    ssize_t r;

    switch (c->state) {
    case AC_READING:
        conn_read(c);
        break;
    case AC_WRITING:
        conn_write(c);
        break;
    case AC_LINGERING:
        do {
            r = recv(c->fd, sink, sizeof(sink), 0);
        } while (r > 0 || (r < 0 && errno == EINTR));
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            c->state = AC_CLOSED;
        break;
    case AC_CLOSED:
        break;
    }
    if (c->state == AC_CLOSED)
        conn_free(c);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    admin_conn *c = w->data;

    conn_free(c);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    ae_admin *a = w->data;

    for (;;) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        admin_conn *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Level-triggered: waiting on the socket again would spin. */
                AE_WARN("admin: accept: %s; pausing", strerror(errno));
                ev_io_stop(loop, &a->io);
                ev_timer_set(&a->pause, ADMIN_ACCEPT_WAIT, 0.);
                ev_timer_start(loop, &a->pause);
            }
            return;
        }
        if (a->nconns >= ADMIN_MAX_CONNS || (c = calloc(1, sizeof(*c))) == NULL) {
            close(fd);
            continue;
        }
        c->a = a;
        c->fd = fd;
        c->state = AC_READING;
        c->next = a->conns;
        if (a->conns != NULL)
            a->conns->prev = c;
        a->conns = c;
        a->nconns++;
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_io_start(loop, &c->io);
        ev_timer_init(&c->timer, conn_timer_cb, ADMIN_TIMEOUT_S, 0.);
        c->timer.data = c;
        ev_timer_start(loop, &c->timer);
    }
}

static void pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ae_admin *a = w->data;

    ev_io_start(loop, &a->io);
}

int ae_admin_new(struct ev_loop *loop, ae_server_main *srv, const ae_addr *addr, ae_admin **out,
                 char *err, size_t errlen)
{
    ae_admin *a;
    int one = 1, e;
    const char *what;

    *out = NULL;
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return AE_ERR_NOMEM;
    }
    a->loop = loop;
    a->srv = srv;
    what = "socket";
    a->fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->fd < 0)
        goto fail_socket;
    what = "setsockopt SO_REUSEADDR";
    if (setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        goto fail_bind;
    what = "bind";
    if (bind(a->fd, (const struct sockaddr *)&addr->sa, addr->len) != 0)
        goto fail_bind;
    what = "listen";
    if (listen(a->fd, ADMIN_BACKLOG) != 0)
        goto fail_bind;

    ev_io_init(&a->io, accept_cb, a->fd, EV_READ);
    a->io.data = a;
    ev_io_start(loop, &a->io);
    ev_timer_init(&a->pause, pause_cb, ADMIN_ACCEPT_WAIT, 0.);
    a->pause.data = a;
    *out = a;
    return 0;

fail_bind:
    e = errno;
    close(a->fd);
    errno = e;
fail_socket:
    snprintf(err, errlen, "admin: %s %s: %s", what, addr->text, strerror(errno));
    free(a);
    return AE_ERR_IO;
}

void ae_admin_free(ae_admin *a)
{
    if (a == NULL)
        return;
    while (a->conns != NULL)
        conn_free(a->conns);
    ev_io_stop(a->loop, &a->io);
    ev_timer_stop(a->loop, &a->pause);
    if (a->fd >= 0)
        close(a->fd);
    free(a);
}
