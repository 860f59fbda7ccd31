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
#include "proxy/site/admin_http.h"

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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ADMIN_HEAD_S      2.0 /* the request head must be complete by then */
#define ADMIN_TIMEOUT_S   5.0 /* answering it (the response written) */
#define ADMIN_LINGER_S    1.0 /* max wait for the client's EOF after our response */
#define ADMIN_BACKLOG     256
#define ADMIN_ACCEPT_WAIT 0.1  /* accept paused after EMFILE/ENFILE/ENOBUFS/ENOMEM */
#define ADMIN_LOG_EVERY_S 10.0 /* refusals: at most one log line per this period */

const char *const ae_admin_refuse_names[AE_ADMIN_NREFUSE] = {
    [AE_ADMIN_REFUSE_HOST] = "host",       [AE_ADMIN_REFUSE_ORIGIN] = "origin",
    [AE_ADMIN_REFUSE_TOKEN] = "token",     [AE_ADMIN_REFUSE_BAD_REQUEST] = "bad_request",
    [AE_ADMIN_REFUSE_TIMEOUT] = "timeout", [AE_ADMIN_REFUSE_EVICTED] = "evicted",
    [AE_ADMIN_REFUSE_BUSY] = "busy",
};

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
    int is_unix;  /* came in on the Unix socket */
    uint64_t seq; /* accept order: the smallest is the oldest */
    struct sockaddr_storage peer, local;
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
    int fd;      /* TCP listener, -1 none */
    int ufd;     /* Unix listener, -1 none */
    char *upath; /* its path (ours to unlink) */
    ev_io io, uio;
    ev_timer pause;
    admin_conn *conns;
    size_t nconns;
    uint64_t seq;
    char *token;  /* admin.token_file's token, NULL: none */
    char **hosts; /* admin.hosts (copies) */
    size_t nhosts;
    uint32_t max_conns, max_per_source;
    uint64_t refused[AE_ADMIN_NREFUSE];
    uint64_t unlogged;   /* refusals since the last log line */
    ev_tstamp logged_at; /* that line's time, 0 never */
};

/* Counts a refusal and logs it, at most one line per ADMIN_LOG_EVERY_S (with how many were not
 * logged since the previous line). */
static void refuse(ae_admin *a, ae_admin_refuse why, const admin_conn *c)
{
    ev_tstamp now = ev_now(a->loop);
    char addr[80] = "unix socket";

    a->refused[why]++;
    a->unlogged++;
    if (a->logged_at != 0 && now - a->logged_at < ADMIN_LOG_EVERY_S)
        return;
    if (c != NULL && !c->is_unix)
        ae_addr_format((const struct sockaddr *)&c->peer, addr, sizeof(addr));
    AE_WARN("admin: refused a %s from %s (%s); %llu refusal(s) since the last such line",
            why == AE_ADMIN_REFUSE_BUSY || why == AE_ADMIN_REFUSE_EVICTED ? "connection"
                                                                          : "request",
            c != NULL ? addr : "?", ae_admin_refuse_names[why], (unsigned long long)a->unlogged);
    a->unlogged = 0;
    a->logged_at = now;
}

void ae_admin_refusals(const ae_admin *a, uint64_t out[AE_ADMIN_NREFUSE])
{
    for (size_t i = 0; i < AE_ADMIN_NREFUSE; i++)
        out[i] = a != NULL ? a->refused[i] : 0;
}

/* Whether two client addresses are the same host (ports aside). */
static int same_host(const struct sockaddr_storage *x, const struct sockaddr_storage *y)
{
    if (x->ss_family != y->ss_family)
        return 0;
    if (x->ss_family == AF_INET)
        return ((const struct sockaddr_in *)x)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)y)->sin_addr.s_addr;
    if (x->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)x)->sin6_addr,
                      &((const struct sockaddr_in6 *)y)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return 0;
}

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
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
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
    if (code == 401)
        ae_sb_puts(&b, "WWW-Authenticate: Bearer realm=\"anyedge admin\"\r\n");
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
    ev_timer_stop(c->a->loop, &c->timer);
    ev_timer_set(&c->timer, ADMIN_TIMEOUT_S, 0.);
    ev_timer_start(c->a->loop, &c->timer);
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

/* ae_admin_host_ok, or one of admin.hosts (with or without a port). */
static int host_allowed(const ae_admin *a, const char *h, size_t n, const struct sockaddr *local)
{
    return ae_admin_host_ok(h, n, local) || ae_admin_host_in(h, n, a->hosts, a->nhosts);
}

static int origin_allowed(const ae_admin *a, const char *o, size_t n, const struct sockaddr *local)
{
    if (n > 7 && strncasecmp(o, "http://", 7) == 0)
        return host_allowed(a, o + 7, n - 7, local);
    if (n > 8 && strncasecmp(o, "https://", 8) == 0)
        return host_allowed(a, o + 8, n - 8, local);
    return 0;
}

/* Over TCP a browser can reach us: no DNS name in Host (rebinding), no foreign Origin (a web
 * page's request), and the token on what changes the site. Returns 1, or 0 after answering
 * the refusal. */
static int conn_allowed(admin_conn *c, const ae_admin_request *req, int route)
{
    int post = route == AE_ADMIN_RELOAD || route == AE_ADMIN_KEYS_ROTATE ||
               route == AE_ADMIN_DRAIN || route == AE_ADMIN_UNDRAIN;

    if (!c->is_unix && (req->host != NULL ? !host_allowed(c->a, req->host, req->host_len,
                                                          (struct sockaddr *)&c->local)
                                          : req->minor >= 1)) {
        refuse(c->a, AE_ADMIN_REFUSE_HOST, c);
        conn_respond_text(c, 403, NULL, "forbidden: Host must name a loopback or this address\n");
        return 0;
    }
    if (req->origin != NULL &&
        !origin_allowed(c->a, req->origin, req->origin_len, (struct sockaddr *)&c->local)) {
        refuse(c->a, AE_ADMIN_REFUSE_ORIGIN, c);
        conn_respond_text(c, 403, NULL, "forbidden: cross-origin request\n");
        return 0;
    }
    if (post && !c->is_unix && c->a->token != NULL &&
        !ae_admin_token_ok(req->authorization, req->authorization_len, c->a->token)) {
        refuse(c->a, AE_ADMIN_REFUSE_TOKEN, c);
        conn_respond_text(c, 401, NULL, "unauthorized: admin.token_file is set\n");
        return 0;
    }
    return 1;
}

static void conn_dispatch(admin_conn *c, const ae_admin_request *req)
{
    ae_server_main *s = c->a->srv;
    const char *allow;
    char err[512];
    char *body = NULL;
    size_t bodylen = 0;
    int route = ae_admin_route(req, &allow), rv;
    if (!conn_allowed(c, req, route))
        return;
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
            refuse(c->a, AE_ADMIN_REFUSE_BAD_REQUEST, c);
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
            refuse(c->a, AE_ADMIN_REFUSE_BAD_REQUEST, c);
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

    if (c->state == AC_READING)
        refuse(c->a, AE_ADMIN_REFUSE_TIMEOUT, c);
    conn_free(c);
}

/* The oldest connection still sending its head (of peer's address when peer is not NULL). */
static admin_conn *oldest_reading(ae_admin *a, const struct sockaddr_storage *peer)
{
    admin_conn *best = NULL;
    for (admin_conn *c = a->conns; c != NULL; c = c->next) {
        if (c->state != AC_READING || (peer != NULL && (c->is_unix || !same_host(&c->peer, peer))))
            continue;
        if (best == NULL || c->seq < best->seq)
            best = c;
    }
    return best;
}

/* Makes room for a connection from peer (NULL: the Unix socket): 0, or -1 when there is none. */
static int make_room(ae_admin *a, const struct sockaddr_storage *peer)
{
    admin_conn *v;

    if (peer != NULL) {
        size_t n = 0;
        for (admin_conn *c = a->conns; c != NULL; c = c->next)
            n += !c->is_unix && same_host(&c->peer, peer);
        if (n >= a->max_per_source) {
            if ((v = oldest_reading(a, peer)) == NULL)
                return -1;
            refuse(a, AE_ADMIN_REFUSE_EVICTED, v);
            conn_free(v);
        }
    }
    if (a->nconns >= a->max_conns) {
        if ((v = oldest_reading(a, NULL)) == NULL)
            return -1;
        refuse(a, AE_ADMIN_REFUSE_EVICTED, v);
        conn_free(v);
    }
    return 0;
}

static void accept_on(ae_admin *a, ev_io *w, int is_unix)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(w->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        admin_conn *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Level-triggered: waiting on the socket again would spin. */
                AE_WARN("admin: accept: %s; pausing", strerror(errno));
                ev_io_stop(a->loop, &a->io);
                ev_io_stop(a->loop, &a->uio);
                ev_timer_set(&a->pause, ADMIN_ACCEPT_WAIT, 0.);
                ev_timer_start(a->loop, &a->pause);
            }
            return;
        }
        if (make_room(a, is_unix ? NULL : &peer) != 0 || (c = calloc(1, sizeof(*c))) == NULL) {
            admin_conn tmp = {.is_unix = is_unix, .peer = peer};
            refuse(a, AE_ADMIN_REFUSE_BUSY, &tmp);
            close(fd);
            continue;
        }
        c->a = a;
        c->fd = fd;
        c->is_unix = is_unix;
        c->peer = peer;
        if (!is_unix) {
            socklen_t llen = sizeof(c->local);
            if (getsockname(fd, (struct sockaddr *)&c->local, &llen) != 0)
                c->local.ss_family = AF_UNSPEC;
        }
        c->seq = ++a->seq;
        c->state = AC_READING;
        c->next = a->conns;
        if (a->conns != NULL)
            a->conns->prev = c;
        a->conns = c;
        a->nconns++;
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_io_start(a->loop, &c->io);
        ev_timer_init(&c->timer, conn_timer_cb, ADMIN_HEAD_S, 0.);
        c->timer.data = c;
        ev_timer_start(a->loop, &c->timer);
    }
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    accept_on(w->data, w, 0);
}

static void uaccept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    accept_on(w->data, w, 1);
}

static void pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ae_admin *a = w->data;

    if (a->fd >= 0)
        ev_io_start(loop, &a->io);
    if (a->ufd >= 0)
        ev_io_start(loop, &a->uio);
}

/* The Unix socket at path, mode 0600. A stale socket file (nobody listening) is replaced; a
 * live one or any other file is an error. Returns the fd, or -1 with err. */
static int unix_open(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct stat st;
    mode_t old;
    int fd, e;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "admin: socket path %s is too long", path);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "admin: %s exists and is not a socket", path);
            return -1;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
            close(fd);
            snprintf(err, errlen, "admin: %s is in use by another process", path);
            return -1;
        }
        if (fd >= 0)
            close(fd);
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "admin: socket: %s", strerror(errno));
        return -1;
    }
    old = umask(077); /* main thread; no other thread creates files */
    e = bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 ? errno : 0;
    umask(old);
    if (e == 0 && (chmod(path, 0600) != 0 || listen(fd, ADMIN_BACKLOG) != 0))
        e = errno;
    if (e != 0) {
        close(fd);
        snprintf(err, errlen, "admin: socket %s: %s", path, strerror(e));
        return -1;
    }
    return fd;
}

static void unix_close(ae_admin *a)
{
    if (a->ufd < 0)
        return;
    ev_io_stop(a->loop, &a->uio);
    close(a->ufd);
    unlink(a->upath);
    a->ufd = -1;
    free(a->upath);
    a->upath = NULL;
}

static void hosts_free(ae_admin *a)
{
    for (size_t i = 0; i < a->nhosts; i++)
        free(a->hosts[i]);
    free(a->hosts);
    a->hosts = NULL;
    a->nhosts = 0;
}

int ae_admin_configure(ae_admin *a, const ae_conf *conf, char *err, size_t errlen)
{
    const char *path = conf->admin.socket;
    char *tok = NULL;

    if (conf->admin.token != NULL && (tok = strdup(conf->admin.token)) == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return AE_ERR_NOMEM;
    }
    if (a->token != NULL) {
        ae_memzero(a->token, strlen(a->token));
        free(a->token);
    }
    a->token = tok;
    hosts_free(a);
    if (conf->admin.nhosts > 0 &&
        (a->hosts = calloc(conf->admin.nhosts, sizeof(*a->hosts))) != NULL) {
        for (size_t i = 0; i < conf->admin.nhosts; i++)
            if ((a->hosts[a->nhosts] = strdup(conf->admin.hosts[i])) != NULL)
                a->nhosts++;
    }
    a->max_conns = conf->admin.max_conns;
    a->max_per_source = conf->admin.max_per_source;
    if (path == NULL ? a->upath == NULL : a->upath != NULL && strcmp(path, a->upath) == 0)
        return 0;
    unix_close(a);
    if (path == NULL)
        return 0;
    char *p = strdup(path);
    int fd = p != NULL ? unix_open(path, err, errlen) : -1;
    if (fd < 0) {
        if (p == NULL)
            snprintf(err, errlen, "admin: out of memory");
        free(p);
        return AE_ERR_IO;
    }
    a->ufd = fd;
    a->upath = p;
    ev_io_init(&a->uio, uaccept_cb, fd, EV_READ);
    a->uio.data = a;
    ev_io_start(a->loop, &a->uio);
    return 0;
}

static int tcp_open(ae_admin *a, const ae_addr *addr, char *err, size_t errlen)
{
    int one = 1, e;
    const char *what = "socket";

    a->fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->fd < 0)
        goto fail;
    what = "setsockopt SO_REUSEADDR";
    if (setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        goto fail;
    what = "bind";
    if (bind(a->fd, (const struct sockaddr *)&addr->sa, addr->len) != 0)
        goto fail;
    what = "listen";
    if (listen(a->fd, ADMIN_BACKLOG) != 0)
        goto fail;
    ev_io_init(&a->io, accept_cb, a->fd, EV_READ);
    a->io.data = a;
    ev_io_start(a->loop, &a->io);
    return 0;
fail:
    e = errno;
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
    snprintf(err, errlen, "admin: %s %s: %s", what, addr->text, strerror(e));
    return AE_ERR_IO;
}

int ae_admin_new(struct ev_loop *loop, ae_server_main *srv, const ae_conf *conf, ae_admin **out,
                 char *err, size_t errlen)
{
    ae_admin *a;
    int rv;

    *out = NULL;
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return AE_ERR_NOMEM;
    }
    a->loop = loop;
    a->srv = srv;
    a->fd = a->ufd = -1;
    ev_timer_init(&a->pause, pause_cb, ADMIN_ACCEPT_WAIT, 0.);
    a->pause.data = a;
    if (conf->admin.enabled && (rv = tcp_open(a, &conf->admin.addr, err, errlen)) != 0) {
        ae_admin_free(a);
        return rv;
    }
    /* Without its Unix socket the endpoint still serves over TCP: say why, go on. */
    if ((rv = ae_admin_configure(a, conf, err, errlen)) != 0) {
        if (a->fd < 0) {
            ae_admin_free(a);
            return rv;
        }
        AE_ERROR("admin endpoint: %s", err);
    }
    *out = a;
    return 0;
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
    unix_close(a);
    if (a->token != NULL) {
        ae_memzero(a->token, strlen(a->token));
        free(a->token);
    }
    hosts_free(a);
    free(a);
}
