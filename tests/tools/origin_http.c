/*
 * ae-origin http mode: request heads (strict HTTP/1.1 framing), routes, request bodies
 * (Content-Length and chunked) and responses. See origin.c for the routes and the process.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "origin.h"

#define HEAD_MAX     (16 * 1024) /* request head limit, else 431 */
#define RESP_RESERVE 2048        /* out space needed to answer a request with a small body */
#define CHUNK_FRAME  32          /* worst-case chunk framing ("%zx\r\n" ... "\r\n") */
#define LINE_MAX_CH  1024        /* chunk-size line and trailer line limit */
#define BYTES_MAX    (10ULL << 30)
#define SLEEP_MAX    3600000ULL

/* ---- HTTP responses --------------------------------------------------------------------- */

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "200 OK";
    case 400:
        return "400 Bad Request";
    case 404:
        return "404 Not Found";
    case 431:
        return "431 Request Header Fields Too Large";
    case 501:
        return "501 Not Implemented";
    case 503:
        return "503 Service Unavailable";
    case 505:
        return "505 HTTP Version Not Supported";
    default:
        return "500 Internal Server Error";
    }
}

/* Writes a response head. clen < 0 means a chunked body. */
static void resp_head(struct conn *c, int status, int64_t clen, const char *ctype)
{
    out_str(c, "HTTP/1.1 ");
    out_str(c, status_text(status));
    out_str(c, "\r\n");
    out_put(c, g.hdr_fixed, g.hdr_fixed_len);
    out_str(c, "Content-Type: ");
    out_str(c, ctype);
    if (clen < 0) {
        out_str(c, "\r\nTransfer-Encoding: chunked\r\n");
    } else {
        out_str(c, "\r\nContent-Length: ");
        out_u64(c, (uint64_t)clen, 10);
        out_str(c, "\r\n");
    }
    out_str(c, c->keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
}

static void req_done(struct conn *c)
{
    set_state(c, c->keep_alive ? CS_HEAD : CS_CLOSING);
}

void resp_simple(struct conn *c, int status, const char *body, size_t len)
{
    resp_head(c, status, (int64_t)len, "text/plain");
    if (!c->head_only)
        out_put(c, body, len);
    req_done(c);
}

/* Error answer: the request can't be trusted for framing, so close after it. */
static void http_error(struct conn *c, int status)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%s\n", status_text(status));
    c->keep_alive = false;
    c->head_only = false;
    LOG("fd %d: answering %d", c->fd, status);
    resp_simple(c, status, body, (size_t)n);
}

/* The request body has been consumed: answer the request. Needs RESP_RESERVE of out room. */
static void body_done(struct conn *c)
{
    char body[2 * INET6_ADDRSTRLEN + 64];
    int n;

    switch (c->route) {
    case R_ECHO:
        if (c->chunked_resp)
            out_str(c, "0\r\n\r\n");
        req_done(c);
        return;
    case R_SINK:
        n = snprintf(body, sizeof(body), "%" PRIu64 "\n", c->body_count);
        resp_simple(c, 200, body, (size_t)n);
        return;
    case R_ROOT:
        resp_head(c, 200, (int64_t)strlen(g.id) + 12, "text/plain"); /* "hello from " ID "\n" */
        if (!c->head_only) {
            out_str(c, "hello from ");
            out_str(c, g.id);
            out_str(c, "\n");
        }
        req_done(c);
        return;
    case R_ID:
        resp_simple(c, 200, g.id, strlen(g.id));
        return;
    case R_HEALTH: {
        struct stat st;
        if (g.health_file && stat(g.health_file, &st) == 0)
            resp_simple(c, 503, "unhealthy\n", 10);
        else
            resp_simple(c, 200, "ok\n", 3);
        return;
    }
    case R_BYTES:
        resp_head(c, 200, (int64_t)c->arg, "application/octet-stream");
        if (c->head_only || c->arg == 0) {
            req_done(c);
        } else {
            c->gen_pos = 0;
            c->gen_left = c->arg;
            set_state(c, CS_BYTES);
        }
        return;
    case R_SLEEP:
        ev_timer_set(&c->tm, (double)c->arg / 1000.0, 0.0);
        ev_timer_start(g.loop, &c->tm);
        set_state(c, CS_SLEEP);
        return;
    case R_CLIENT: {
        char sip[INET6_ADDRSTRLEN], dip[INET6_ADDRSTRLEN];
        unsigned sport, dport;
        if (!c->have_addrs)
            load_socket_addrs(c);
        fmt_addr(&c->src, sip, sizeof(sip), &sport);
        fmt_addr(&c->dst, dip, sizeof(dip), &dport);
        n = snprintf(body, sizeof(body), "%s %u %s %u\n", sip, sport, dip, dport);
        resp_simple(c, 200, body, (size_t)n);
        return;
    }
    case R_COOKIE: {
        char cb[300];
        n = snprintf(cb, sizeof(cb), "%u %s\n", c->ncookie, c->cookie);
        resp_simple(c, 200, cb, (size_t)n);
        return;
    }
    case R_NOTFOUND:
        resp_simple(c, 404, "not found\n", 10);
        return;
    }
}

/* ---- HTTP request parsing --------------------------------------------------------------- */

static bool is_tchar(unsigned char ch)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return true;
    return ch != 0 && strchr(extra, ch) != NULL;
}

static bool name_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* Parses decimal digits p[0..n) into *v, rejecting empty, overlong, signs and overflow. */
bool parse_u64(const char *p, size_t n, uint64_t *v)
{
    uint64_t r = 0;
    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        r = r * 10 + (uint64_t)(p[i] - '0');
    }
    *v = r;
    return true;
}

/* Does the comma-separated token list p[0..n) contain tok (case-insensitive)? */
static bool list_has(const char *p, size_t n, const char *tok)
{
    size_t i = 0;
    while (i < n) {
        size_t s, e;
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        s = i;
        while (i < n && p[i] != ',')
            i++;
        e = i;
        while (e > s && (p[e - 1] == ' ' || p[e - 1] == '\t'))
            e--;
        if (e > s && name_is(p + s, e - s, tok))
            return true;
    }
    return false;
}

static bool route_arg(const char *path, size_t plen, const char *prefix, uint64_t max,
                      uint64_t *arg, bool *bad)
{
    size_t l = strlen(prefix);
    if (plen <= l || memcmp(path, prefix, l) != 0)
        return false;
    if (!parse_u64(path + l, plen - l, arg) || *arg > max)
        *bad = true;
    return true;
}

/*
 * Parses the request head p[0..hl) (hl includes the final CRLFCRLF) and sets up the request.
 * Returns 0, or an HTTP status for a request we refuse.
 */
static int parse_head(struct conn *c, const char *p, size_t hl)
{
    const char *end = p + hl - 2; /* the final empty line's CRLF */
    const char *line = p, *eol, *sp1, *sp2, *path;
    size_t mlen, tlen, plen;
    bool http10, conn_close = false, conn_ka = false, expect100 = false, te = false;
    bool has_cl = false, bad_arg = false, chunked = false;
    uint64_t cl = 0;
    int minor;

    c->ncookie = 0;
    c->cookie[0] = 0;

    /* Request line: method SP request-target SP HTTP-version CRLF */
    eol = memchr(line, '\n', (size_t)(end - line) + 1);
    if (eol == NULL || eol == line || eol[-1] != '\r')
        return 400;
    sp1 = memchr(line, ' ', (size_t)(eol - line));
    if (sp1 == NULL || sp1 == line)
        return 400;
    mlen = (size_t)(sp1 - line);
    for (size_t i = 0; i < mlen; i++)
        if (!is_tchar((unsigned char)line[i]))
            return 400;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1)
        return 400;
    path = sp1 + 1;
    tlen = (size_t)(sp2 - path);
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)path[i] <= 0x20 || path[i] == 0x7f)
            return 400;
    if (eol - 1 - (sp2 + 1) != 8 || memcmp(sp2 + 1, "HTTP/", 5) != 0 || sp2[7] != '.' ||
        sp2[6] < '0' || sp2[6] > '9' || sp2[8] < '0' || sp2[8] > '9')
        return 400;
    if (sp2[6] != '1' || (sp2[8] != '0' && sp2[8] != '1'))
        return 505;
    minor = sp2[8] - '0';
    http10 = minor == 0;

    /* Header fields */
    for (line = eol + 1; line < end; line = eol + 1) {
        const char *colon, *v, *ve;
        eol = memchr(line, '\n', (size_t)(end - line) + 1);
        if (eol == NULL || eol[-1] != '\r' || eol - 1 == line)
            return 400;
        if (*line == ' ' || *line == '\t')
            return 400; /* obs-fold */
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line)
            return 400;
        for (const char *q = line; q < colon; q++)
            if (!is_tchar((unsigned char)*q))
                return 400;
        v = colon + 1;
        ve = eol - 1;
        for (const char *q = v; q < ve; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
                return 400;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;

        size_t nlen = (size_t)(colon - line), vlen = (size_t)(ve - v);
        if (name_is(line, nlen, "content-length")) {
            uint64_t x;
            if (!parse_u64(v, vlen, &x) || (has_cl && x != cl))
                return 400;
            has_cl = true;
            cl = x;
        } else if (name_is(line, nlen, "transfer-encoding")) {
            if (te)
                return 400; /* chunked may be applied once only */
            te = true;
            if (!name_is(v, vlen, "chunked"))
                return 501;
            chunked = true;
        } else if (name_is(line, nlen, "connection")) {
            if (list_has(v, vlen, "close"))
                conn_close = true;
            if (list_has(v, vlen, "keep-alive"))
                conn_ka = true;
        } else if (name_is(line, nlen, "cookie")) {
            size_t k = vlen < sizeof(c->cookie) - 1 ? vlen : sizeof(c->cookie) - 1;
            memcpy(c->cookie, v, k);
            c->cookie[k] = 0;
            c->ncookie++;
        } else if (name_is(line, nlen, "expect")) {
            if (name_is(v, vlen, "100-continue"))
                expect100 = true;
        }
    }
    if (te && (has_cl || http10))
        return 400; /* request smuggling shapes: refuse rather than guess (RFC 9112 6.1, 6.3) */

    c->keep_alive = http10 ? (conn_ka && !conn_close) : !conn_close;
    c->head_only = name_is(p, mlen, "HEAD");
    c->chunked_resp = false;
    c->body_count = 0;
    c->trailer_len = 0;
    c->arg = 0;
    c->bstate = chunked ? B_CHUNK_SIZE : (cl > 0 ? B_LEN : B_DONE);
    c->body_left = chunked ? 0 : cl;

    plen = tlen;
    {
        const char *q = memchr(path, '?', tlen);
        if (q != NULL)
            plen = (size_t)(q - path);
    }
    bool get = name_is(p, mlen, "GET") || c->head_only;
    bool post = (mlen == 4 && memcmp(p, "POST", 4) == 0) || (mlen == 3 && memcmp(p, "PUT", 3) == 0);
    c->route = R_NOTFOUND;
    if (get) {
        if (plen == 1 && path[0] == '/')
            c->route = R_ROOT;
        else if (plen == 3 && memcmp(path, "/id", 3) == 0)
            c->route = R_ID;
        else if (plen == 8 && memcmp(path, "/healthz", 8) == 0)
            c->route = R_HEALTH;
        else if (plen == 7 && memcmp(path, "/client", 7) == 0)
            c->route = R_CLIENT;
        else if (plen == 7 && memcmp(path, "/cookie", 7) == 0)
            c->route = R_COOKIE;
        else if (route_arg(path, plen, "/bytes/", BYTES_MAX, &c->arg, &bad_arg))
            c->route = R_BYTES;
        else if (route_arg(path, plen, "/sleep/", SLEEP_MAX, &c->arg, &bad_arg))
            c->route = R_SLEEP;
        if (bad_arg)
            return 400;
    } else if (post) {
        if (plen == 5 && memcmp(path, "/echo", 5) == 0)
            c->route = R_ECHO;
        else if (plen == 5 && memcmp(path, "/sink", 5) == 0)
            c->route = R_SINK;
    }

    if (expect100 && !http10 && c->bstate != B_DONE)
        out_str(c, "HTTP/1.1 100 Continue\r\n\r\n");
    if (c->route == R_ECHO) {
        c->chunked_resp = chunked;
        resp_head(c, 200, chunked ? -1 : (int64_t)cl, "application/octet-stream");
    }
    return 0;
}

int step_head(struct conn *c)
{
    char *p = c->in + c->in_off;
    size_t avail = in_avail(c), lim, hl;
    char *t;
    int st;

    /* RFC 9112 2.2: ignore empty lines received before a request line. */
    if (avail >= 2 && p[0] == '\r' && p[1] == '\n') {
        in_consume(c, 2);
        return 1;
    }
    if (avail == 0 || out_room(c) < RESP_RESERVE) {
        if (avail == 0 && c->rd_eof)
            set_state(c, CS_CLOSING);
        return avail == 0 && c->rd_eof;
    }
    lim = avail < HEAD_MAX ? avail : HEAD_MAX;
    t = c->scan < lim ? memmem(p + c->scan, lim - c->scan, "\r\n\r\n", 4) : NULL;
    if (t == NULL) {
        if (avail >= HEAD_MAX) {
            http_error(c, 431);
            return 1;
        }
        c->scan = lim >= 3 ? lim - 3 : 0;
        if (c->rd_eof) {
            set_state(c, CS_CLOSING); /* truncated request */
            return 1;
        }
        return 0;
    }
    hl = (size_t)(t - p) + 4;
    st = parse_head(c, p, hl);
    in_consume(c, hl);
    if (st != 0) {
        http_error(c, st);
        return 1;
    }
    set_state(c, CS_BODY);
    return 1;
}

/* Copies up to n body bytes from the input to the echo output (or just counts them). */
static size_t body_take(struct conn *c, size_t n)
{
    if (c->route == R_ECHO) {
        size_t room = out_room(c);
        if (c->chunked_resp) {
            if (room <= CHUNK_FRAME)
                return 0;
            if (n > room - CHUNK_FRAME)
                n = room - CHUNK_FRAME;
            out_u64(c, n, 16);
            out_str(c, "\r\n");
            out_put(c, c->in + c->in_off, n);
            out_str(c, "\r\n");
        } else {
            if (n > room)
                n = room;
            out_put(c, c->in + c->in_off, n);
        }
    }
    in_consume(c, n);
    c->body_count += n;
    return n;
}

/* Finds a CRLF-terminated line at the input head; returns its length without CRLF, or -1. */
static ssize_t in_line(struct conn *c, bool *bad)
{
    const char *p = c->in + c->in_off;
    size_t avail = in_avail(c);
    const char *nl = memchr(p, '\n', avail < LINE_MAX_CH ? avail : LINE_MAX_CH);
    if (nl == NULL) {
        if (avail >= LINE_MAX_CH)
            *bad = true;
        return -1;
    }
    if (nl == p || nl[-1] != '\r') {
        *bad = true;
        return -1;
    }
    return nl - 1 - p;
}

/* A framing error in a request body. An echo has already started its 200 answer, so it can only
 * be cut short; other routes still get an error response. */
static int body_error(struct conn *c)
{
    if (c->route == R_ECHO) {
        LOG("fd %d: bad request body framing during echo, closing", c->fd);
        c->dead = true;
        return 0;
    }
    http_error(c, 400);
    return 1;
}

int step_body(struct conn *c)
{
    size_t avail = in_avail(c), n;
    const char *p = c->in + c->in_off;
    bool bad = false;
    ssize_t ll;

    switch (c->bstate) {
    case B_DONE:
        if (c->route != R_ECHO && out_room(c) < RESP_RESERVE)
            return 0;
        if (c->route == R_ECHO && out_room(c) < 8)
            return 0;
        body_done(c);
        return 1;
    case B_LEN:
    case B_CHUNK_DATA:
        n = avail < c->body_left ? avail : (size_t)c->body_left;
        if (n == 0)
            break;
        if ((n = body_take(c, n)) == 0)
            return 0; /* echo output full: wait for the client to read */
        c->body_left -= n;
        if (c->body_left == 0)
            c->bstate = c->bstate == B_LEN ? B_DONE : B_CHUNK_CRLF;
        return 1;
    case B_CHUNK_CRLF:
        if (avail < 2)
            break;
        if (p[0] != '\r' || p[1] != '\n')
            return body_error(c);
        in_consume(c, 2);
        c->bstate = B_CHUNK_SIZE;
        return 1;
    case B_CHUNK_SIZE: {
        uint64_t sz = 0;
        ssize_t i = 0;
        if ((ll = in_line(c, &bad)) < 0) {
            if (bad)
                return body_error(c);
            break;
        }
        for (; i < ll; i++) {
            int d = p[i] >= '0' && p[i] <= '9'   ? p[i] - '0'
                    : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
                    : p[i] >= 'A' && p[i] <= 'F' ? p[i] - 'A' + 10
                                                 : -1;
            if (d < 0)
                break;
            if (i >= 15)
                return body_error(c);
            sz = sz * 16 + (uint64_t)d;
        }
        if (i == 0)
            return body_error(c);
        while (i < ll && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (i < ll && p[i] != ';') /* only chunk extensions may follow; they are ignored */
            return body_error(c);
        in_consume(c, (size_t)ll + 2);
        c->body_left = sz;
        c->bstate = sz == 0 ? B_TRAILER : B_CHUNK_DATA;
        return 1;
    }
    case B_TRAILER:
        if ((ll = in_line(c, &bad)) < 0) {
            if (bad)
                return body_error(c);
            break;
        }
        in_consume(c, (size_t)ll + 2);
        c->trailer_len += (size_t)ll + 2;
        if (c->trailer_len > HEAD_MAX)
            return body_error(c);
        if (ll == 0)
            c->bstate = B_DONE;
        return 1;
    }
    /* Need more input. */
    if (c->rd_eof) {
        LOG("fd %d: EOF inside a request body", c->fd);
        c->dead = true;
    }
    return 0;
}

int step_bytes(struct conn *c)
{
    size_t room = out_room(c), n;
    if (room < 4096 && room < c->gen_left)
        return 0; /* wait for a useful amount of space */
    n = c->gen_left < room ? (size_t)c->gen_left : room;
    out_put(c, pattern + c->gen_pos % PAT_PERIOD, n);
    c->gen_pos += n;
    c->gen_left -= n;
    if (c->gen_left == 0)
        req_done(c);
    return 1;
}
