/*
 * ae-origin: a small, single-threaded HTTP/1.1 origin server on libev. It is the demo upstream,
 * the integration-test backend and the benchmark origin, so it must be correct, strict about
 * framing and cheap per request (no allocation after accept; buffers live in the connection).
 *
 * Usage: ae-origin -l ADDR:PORT [-l ...] [-i ID] [-m http|echo|sink] [-P] [-H FILE]
 *                  [-p PIDFILE] [-q]
 *   -l  listen address, repeatable: "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080".
 *   -i  identity reported in X-Origin and some bodies (default "origin").
 *   -m  mode (default http), see below.
 *   -P  every connection starts with a PROXY protocol v1 or v2 header; it is parsed strictly
 *       (v2 CRC32c TLV verified when present) and a bad one is logged and the connection closed.
 *   -H  health file: while FILE exists, GET /healthz answers 503.
 *   -p  write our pid to PIDFILE (removed on exit).
 *   -q  quiet: no startup banner and no per-connection diagnostics (PROXY errors still log).
 * SIGTERM and SIGINT exit 0.
 *
 * http mode: every response has "Server: ae-origin", "X-Origin: ID" and Content-Length, except
 * the echo of a chunked request body, which is streamed back chunked.
 *   GET /            200 "hello from ID\n"
 *   GET /id          200 "ID" (no newline)
 *   GET /healthz     200 "ok\n", or 503 "unhealthy\n" while the -H file exists
 *   GET /bytes/N     200 with N bytes (N <= 10 GiB), streamed: byte i is
 *                    (k * 7 + (k >> 8) + 3) & 0xff with k = i % 65521. The period is a prime so a
 *                    misplaced or repeated buffer of any power-of-two size changes the digest.
 *   GET /sleep/MS    200 "slept MS\n" after MS milliseconds (MS <= 3600000), without blocking
 *   GET /client      200 "SRC_IP SRC_PORT DST_IP DST_PORT\n" from the PROXY header, or from
 *                    the socket when there is no -P (or the header was LOCAL/UNKNOWN)
 *   POST|PUT /echo   200 echoing the request body as it arrives (Content-Length or chunked)
 *   POST|PUT /sink   200 "N\n", the request body byte count
 *   anything else    404 "not found\n" (HEAD works for every GET route, without a body)
 * Keep-alive and pipelining: requests are answered in order, one at a time; HTTP/1.0 and
 * "Connection: close" close after the response. A request head over 16 KiB gets 431, a malformed
 * request 400 (unknown transfer coding 501, unknown HTTP version 505), then the connection closes.
 *
 * echo mode: raw TCP echo with back-pressure. After the client half-closes, the buffered bytes
 * are written, then shutdown(SHUT_WR) and close.
 * sink mode: raw TCP; reads until EOF, then writes "<bytes> <fnv1a64 hex>\n" and closes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, memmem */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define IN_SZ        (80 * 1024)  /* > HEAD_MAX and > the largest PROXY v2 header (16 + 65535) */
#define OUT_SZ       (256 * 1024) /* large, so bulk bodies go out in few syscalls */
#define HEAD_MAX     (16 * 1024)  /* request head limit, else 431 */
#define RESP_RESERVE 2048         /* out space needed to answer a request with a small body */
#define CHUNK_FRAME  32           /* worst-case chunk framing ("%zx\r\n" ... "\r\n") */
#define LINE_MAX_CH  1024         /* chunk-size line and trailer line limit */
#define PAT_PERIOD   65521        /* /bytes pattern period (prime) */
#define BYTES_MAX    (10ULL << 30)
#define SLEEP_MAX    3600000ULL
#define ID_MAX       200
#define MAX_LISTEN   16
#define MAX_ROUNDS   16  /* write rounds per event, so one bulk stream can't starve others */
#define FREE_KEEP    64  /* connection structs kept for reuse */
#define LINGER_SECS  2.0 /* after shutdown(SHUT_WR), wait this long for the peer's EOF */

enum mode { MODE_HTTP, MODE_ECHO, MODE_SINK };

enum cstate {
    CS_PROXY,   /* waiting for the PROXY protocol header (-P) */
    CS_HEAD,    /* http: waiting for, then parsing, the next request head */
    CS_BODY,    /* http: consuming a request body (echoing, counting or discarding it) */
    CS_SLEEP,   /* http: /sleep timer armed, response not written yet */
    CS_BYTES,   /* http: streaming a /bytes/N body from the pattern table */
    CS_ECHO,    /* echo mode: copying input to output */
    CS_SINK,    /* sink mode: hashing input until EOF */
    CS_CLOSING, /* flush output, shutdown(SHUT_WR), discard input until EOF or linger timeout */
};

enum route { R_ROOT, R_ID, R_HEALTH, R_BYTES, R_SLEEP, R_CLIENT, R_ECHO, R_SINK, R_NOTFOUND };

enum bstate {
    B_DONE,       /* no body, or body fully consumed */
    B_LEN,        /* Content-Length body, body_left bytes to go */
    B_CHUNK_SIZE, /* expecting a chunk-size line */
    B_CHUNK_DATA, /* inside chunk data, body_left bytes to go */
    B_CHUNK_CRLF, /* expecting the CRLF after chunk data */
    B_TRAILER,    /* after the last chunk: trailer lines until an empty line */
};

struct conn {
    ev_io io;
    ev_timer tm;
    struct conn *next_free;
    int fd;
    int events; /* events io is started with, 0 when stopped */
    enum cstate state;
    bool rd_eof, wblocked, shut_wr, dead, more, have_addrs;
    /* current request */
    enum route route;
    enum bstate bstate;
    bool keep_alive, head_only, chunked_resp;
    uint64_t body_left, body_count, arg;
    uint64_t gen_pos, gen_left; /* /bytes stream position and bytes to go */
    size_t scan;                /* head terminator search resumes here (relative to in_off) */
    size_t trailer_len;
    uint64_t hash; /* sink mode */
    struct sockaddr_storage src, dst;
    size_t in_off, in_len, out_off, out_len;
    char in[IN_SZ];
    char out[OUT_SZ];
};

static struct {
    enum mode mode;
    bool proxy, quiet;
    const char *id;
    const char *health_file;
    const char *pidfile;
    char hdr_fixed[64 + ID_MAX]; /* "Server: ...\r\nX-Origin: ID\r\n" */
    size_t hdr_fixed_len;
    struct ev_loop *loop;
    ev_io lis[MAX_LISTEN];
    int nlis;
    ev_timer lis_pause;
    struct conn *free_list;
    int nfree;
} g;

static uint8_t pattern[PAT_PERIOD + OUT_SZ];

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "ae-origin[%s]: ", g.id);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define LOG(...)                                                                                   \
    do {                                                                                           \
        if (!g.quiet)                                                                              \
            logf_(__VA_ARGS__);                                                                    \
    } while (0)

/* ---- buffers ---------------------------------------------------------------------------- */

static size_t in_avail(const struct conn *c)
{
    return c->in_len - c->in_off;
}

/* Free space at the end of the input buffer, compacting when the tail is short. */
static size_t in_room(struct conn *c)
{
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
    } else if (c->in_off > 0 && IN_SZ - c->in_len < IN_SZ / 2) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    return IN_SZ - c->in_len;
}

static void in_consume(struct conn *c, size_t n)
{
    c->in_off += n;
    c->scan = 0;
}

static bool out_pending(const struct conn *c)
{
    return c->out_off < c->out_len;
}

static size_t out_room(struct conn *c)
{
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
    } else if (c->out_off > 0 && OUT_SZ - c->out_len < OUT_SZ / 4) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    return OUT_SZ - c->out_len;
}

/* The out_put family assumes the caller checked out_room(). */
static void out_put(struct conn *c, const void *p, size_t n)
{
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void out_str(struct conn *c, const char *s)
{
    out_put(c, s, strlen(s));
}

static void out_u64(struct conn *c, uint64_t v, int base)
{
    char tmp[24];
    int i = sizeof(tmp);
    do {
        tmp[--i] = "0123456789abcdef"[v % (unsigned)base];
        v /= (unsigned)base;
    } while (v != 0);
    out_put(c, tmp + i, sizeof(tmp) - (size_t)i);
}

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

static void set_state(struct conn *c, enum cstate s)
{
    /* Once closing, a connection only goes away. */
    if (c->state == CS_CLOSING && s != CS_CLOSING)
        abort();
    c->state = s;
}

static void req_done(struct conn *c)
{
    set_state(c, c->keep_alive ? CS_HEAD : CS_CLOSING);
}

static void resp_simple(struct conn *c, int status, const char *body, size_t len)
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

static void fmt_addr(const struct sockaddr_storage *ss, char *ip, size_t iplen, unsigned *port)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen);
        *port = ntohs(s6->sin6_port);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen);
        *port = ntohs(s4->sin_port);
    } else {
        snprintf(ip, iplen, "unknown");
        *port = 0;
    }
}

static void load_socket_addrs(struct conn *c)
{
    socklen_t l1 = sizeof(c->src), l2 = sizeof(c->dst);
    if (getpeername(c->fd, (struct sockaddr *)&c->src, &l1) != 0)
        c->src.ss_family = AF_UNSPEC;
    if (getsockname(c->fd, (struct sockaddr *)&c->dst, &l2) != 0)
        c->dst.ss_family = AF_UNSPEC;
    c->have_addrs = true;
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
static bool parse_u64(const char *p, size_t n, uint64_t *v)
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

static int step_head(struct conn *c)
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

static int step_body(struct conn *c)
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

static int step_bytes(struct conn *c)
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

/* ---- raw modes -------------------------------------------------------------------------- */

static int step_echo(struct conn *c)
{
    size_t n = in_avail(c), room = out_room(c);
    if (n == 0) {
        if (c->rd_eof) {
            set_state(c, CS_CLOSING);
            return 1;
        }
        return 0;
    }
    if (n > room)
        n = room;
    if (n == 0)
        return 0;
    out_put(c, c->in + c->in_off, n);
    in_consume(c, n);
    return 1;
}

static int step_sink(struct conn *c)
{
    const unsigned char *p = (const unsigned char *)c->in + c->in_off;
    size_t n = in_avail(c);
    uint64_t h = c->hash;
    char line[64];
    int l;

    if (n > 0) {
        for (size_t i = 0; i < n; i++) {
            h ^= p[i];
            h *= 0x100000001b3ULL;
        }
        c->hash = h;
        c->body_count += n;
        in_consume(c, n);
        return 1;
    }
    if (!c->rd_eof)
        return 0;
    l = snprintf(line, sizeof(line), "%" PRIu64 " %016" PRIx64 "\n", c->body_count, h);
    out_room(c);
    out_put(c, line, (size_t)l);
    set_state(c, CS_CLOSING);
    return 1;
}

static int step_closing(struct conn *c)
{
    c->in_off = c->in_len = 0; /* discard whatever still arrives */
    if (out_pending(c))
        return 0;
    if (!c->shut_wr) {
        c->shut_wr = true;
        shutdown(c->fd, SHUT_WR);
        ev_timer_stop(g.loop, &c->tm);
        ev_timer_set(&c->tm, LINGER_SECS, 0.0);
        ev_timer_start(g.loop, &c->tm);
    }
    if (c->rd_eof)
        c->dead = true;
    return 0;
}

/* ---- PROXY protocol --------------------------------------------------------------------- */

static const uint8_t pp2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static uint32_t crc32c(const uint8_t *p, size_t n)
{
    static uint32_t tab[256];
    uint32_t crc = 0xffffffffu;
    if (tab[1] == 0) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t r = i;
            for (int k = 0; k < 8; k++)
                r = (r >> 1) ^ (0x82f63b78u & (0u - (r & 1)));
            tab[i] = r;
        }
    }
    for (size_t i = 0; i < n; i++)
        crc = tab[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* Decimal port without leading zeroes (spec 2.1). */
static bool pp1_port(const char *s, size_t n, uint16_t *port)
{
    uint64_t v;
    if ((n > 1 && s[0] == '0') || n > 5 || !parse_u64(s, n, &v) || v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

static bool pp1_addr(int af, const char *s, size_t n, uint16_t port, struct sockaddr_storage *ss)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    memset(ss, 0, sizeof(*ss));
    if (af == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        return inet_pton(AF_INET, buf, &s4->sin_addr) == 1; /* rejects leading zeroes */
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    return strchr(buf, '.') == NULL && inet_pton(AF_INET6, buf, &s6->sin6_addr) == 1;
}

/* Parses a v1 line; returns header length, 0 for more, -1 for invalid (*why set). */
static ssize_t pp1_parse(struct conn *c, const char *p, size_t n, const char **why)
{
    const char *nl = memchr(p, '\n', n < 107 ? n : 107), *f[6];
    size_t fl[6], nf = 0, ll;
    uint16_t sport, dport;
    int af;

    if (nl == NULL) {
        *why = "v1 line without CRLF in 107 bytes";
        return n >= 107 ? -1 : 0;
    }
    if (nl[-1] != '\r') {
        *why = "v1 line not ended by CRLF";
        return -1;
    }
    ll = (size_t)(nl - 1 - p);
    /* "PROXY UNKNOWN" may be followed by anything up to the CRLF. */
    if ((ll == 13 || (ll > 13 && p[13] == ' ')) && memcmp(p + 6, "UNKNOWN", 7) == 0) {
        load_socket_addrs(c);
        return (ssize_t)ll + 2;
    }
    /* Otherwise exactly six fields separated by single spaces. */
    f[0] = p;
    for (size_t k = 0; k <= ll; k++) {
        if (k < ll && p[k] != ' ')
            continue;
        fl[nf] = (size_t)(p + k - f[nf]);
        if (fl[nf] == 0 || nf == 5) {
            if (fl[nf] == 0 || k != ll) {
                *why = "v1 line is not 'PROXY TCPx SRC DST SPORT DPORT'";
                return -1;
            }
        }
        if (++nf == 6)
            break;
        f[nf] = p + k + 1;
    }
    if (nf != 6) {
        *why = "v1 line has too few fields";
        return -1;
    }
    if (fl[1] == 4 && memcmp(f[1], "TCP4", 4) == 0) {
        af = AF_INET;
    } else if (fl[1] == 4 && memcmp(f[1], "TCP6", 4) == 0) {
        af = AF_INET6;
    } else {
        *why = "v1 unknown protocol";
        return -1;
    }
    if (!pp1_port(f[4], fl[4], &sport) || !pp1_port(f[5], fl[5], &dport)) {
        *why = "v1 bad port";
        return -1;
    }
    if (!pp1_addr(af, f[2], fl[2], sport, &c->src) || !pp1_addr(af, f[3], fl[3], dport, &c->dst)) {
        *why = "v1 bad address";
        return -1;
    }
    c->have_addrs = true;
    return (ssize_t)ll + 2;
}

static ssize_t pp2_parse(struct conn *c, const uint8_t *p, size_t n, const char **why)
{
    uint8_t ver_cmd, fam;
    size_t len, alen = 0, off;

    if (n < 16)
        return 0;
    ver_cmd = p[12];
    fam = p[13];
    len = (size_t)p[14] << 8 | p[15];
    if (ver_cmd >> 4 != 2) {
        *why = "v2 bad version";
        return -1;
    }
    if ((ver_cmd & 0xf) > 1) {
        *why = "v2 bad command";
        return -1;
    }
    if (n < 16 + len)
        return 0;
    if ((ver_cmd & 0xf) == 0) {
        /* LOCAL: the proxy's own connection; the family and address block are ignored. */
        load_socket_addrs(c);
        return (ssize_t)(16 + len);
    }
    if (fam >> 4 > 3 || (fam & 0xf) > 2) {
        *why = "v2 bad family or protocol";
        return -1;
    }
    switch (fam >> 4) {
    case 1:
        alen = 12;
        break;
    case 2:
        alen = 36;
        break;
    case 3:
        alen = 216;
        break;
    }
    if (len < alen) {
        *why = "v2 address block too short";
        return -1;
    }
    /* TLVs follow a known address block and must tile the rest exactly. */
    if (alen > 0) {
        uint32_t crc_got = 0;
        const uint8_t *crc_at = NULL;
        off = 16 + alen;
        while (off < 16 + len) {
            size_t tl;
            if (16 + len - off < 3) {
                *why = "v2 truncated TLV";
                return -1;
            }
            tl = (size_t)p[off + 1] << 8 | p[off + 2];
            if (off + 3 + tl > 16 + len) {
                *why = "v2 TLV overruns the header";
                return -1;
            }
            if (p[off] == 0x03) {
                if (tl != 4 || crc_at != NULL) {
                    *why = "v2 bad CRC32C TLV";
                    return -1;
                }
                crc_at = p + off + 3;
                crc_got = (uint32_t)crc_at[0] << 24 | (uint32_t)crc_at[1] << 16 |
                          (uint32_t)crc_at[2] << 8 | crc_at[3];
            }
            off += 3 + tl;
        }
        if (crc_at != NULL) {
            uint8_t tmp[16 + 65535];
            memcpy(tmp, p, 16 + len);
            memset(tmp + (crc_at - p), 0, 4);
            if (crc32c(tmp, 16 + len) != crc_got) {
                *why = "v2 CRC32C mismatch";
                return -1;
            }
        }
    }
    if (fam == 0x11 || fam == 0x21) {
        memset(&c->src, 0, sizeof(c->src));
        memset(&c->dst, 0, sizeof(c->dst));
        if (fam == 0x11) {
            struct sockaddr_in *s = (struct sockaddr_in *)&c->src;
            struct sockaddr_in *d = (struct sockaddr_in *)&c->dst;
            s->sin_family = d->sin_family = AF_INET;
            memcpy(&s->sin_addr, p + 16, 4);
            memcpy(&d->sin_addr, p + 20, 4);
            memcpy(&s->sin_port, p + 24, 2);
            memcpy(&d->sin_port, p + 26, 2);
        } else {
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&c->src;
            struct sockaddr_in6 *d = (struct sockaddr_in6 *)&c->dst;
            s->sin6_family = d->sin6_family = AF_INET6;
            memcpy(&s->sin6_addr, p + 16, 16);
            memcpy(&d->sin6_addr, p + 32, 16);
            memcpy(&s->sin6_port, p + 48, 2);
            memcpy(&d->sin6_port, p + 50, 2);
        }
        c->have_addrs = true;
    } else {
        /* A family we don't map (UNSPEC, UNIX, datagram): use the real endpoints (spec 2.2). */
        load_socket_addrs(c);
    }
    return (ssize_t)(16 + len);
}

static enum cstate mode_state(void)
{
    return g.mode == MODE_HTTP ? CS_HEAD : g.mode == MODE_ECHO ? CS_ECHO : CS_SINK;
}

static int step_proxy(struct conn *c)
{
    const uint8_t *p = (const uint8_t *)c->in + c->in_off;
    size_t n = in_avail(c), k;
    const char *why = "bad signature";
    ssize_t r;

    if (n == 0) {
        r = 0;
        why = "EOF before the header";
    } else if (p[0] == pp2_sig[0]) {
        k = n < 12 ? n : 12;
        r = memcmp(p, pp2_sig, k) != 0 ? -1 : pp2_parse(c, p, n, &why);
    } else {
        k = n < 6 ? n : 6;
        r = memcmp(p, "PROXY ", k) != 0 ? -1 : k < 6 ? 0 : pp1_parse(c, (const char *)p, n, &why);
    }
    if (r == 0 && c->rd_eof) {
        if (n > 0)
            why = "EOF inside the header";
        r = -1;
    }
    if (r < 0) {
        char ip[INET6_ADDRSTRLEN];
        unsigned port;
        load_socket_addrs(c);
        fmt_addr(&c->src, ip, sizeof(ip), &port);
        logf_("bad PROXY header from %s:%u: %s", ip, port, why);
        c->dead = true;
        return 0;
    }
    if (r == 0)
        return 0;
    in_consume(c, (size_t)r);
    set_state(c, mode_state());
    return 1;
}

/* ---- connection driver ------------------------------------------------------------------ */

static int step(struct conn *c)
{
    switch (c->state) {
    case CS_PROXY:
        return step_proxy(c);
    case CS_HEAD:
        return step_head(c);
    case CS_BODY:
        return step_body(c);
    case CS_SLEEP:
        return 0;
    case CS_BYTES:
        return step_bytes(c);
    case CS_ECHO:
        return step_echo(c);
    case CS_SINK:
        return step_sink(c);
    case CS_CLOSING:
        return step_closing(c);
    }
    return 0;
}

static ssize_t flush(struct conn *c)
{
    size_t len = c->out_len - c->out_off;
    ssize_t n = send(c->fd, c->out + c->out_off, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->wblocked = true;
            return 0;
        }
        if (errno == EINTR)
            return 1; /* retry on the next round */
        c->dead = true;
        return -1;
    }
    c->out_off += (size_t)n;
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    else
        c->wblocked = true; /* a short write means the socket buffer is full */
    return n;
}

static void do_read(struct conn *c)
{
    size_t room = in_room(c);
    ssize_t n;
    if (room == 0 || c->rd_eof)
        return;
    n = recv(c->fd, c->in + c->in_len, room, 0);
    if (n > 0)
        c->in_len += (size_t)n;
    else if (n == 0)
        c->rd_eof = true;
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        c->dead = true;
}

static void update_events(struct conn *c)
{
    int want = 0;
    if (!c->rd_eof && in_room(c) > 0)
        want |= EV_READ;
    if (out_pending(c) || c->more)
        want |= EV_WRITE;
    if (want == c->events)
        return;
    ev_io_stop(g.loop, &c->io);
    if (want != 0) {
        ev_io_set(&c->io, c->fd, want);
        ev_io_start(g.loop, &c->io);
    }
    c->events = want;
}

/* Runs the state machine until it stalls on input or output. Never frees c. */
static void process(struct conn *c)
{
    int rounds = 0;
    c->more = false;
    for (;;) {
        while (!c->dead && step(c))
            ;
        if (c->dead)
            return;
        if (!out_pending(c) || c->wblocked)
            break;
        if (flush(c) <= 0 || c->dead)
            break;
        if (++rounds >= MAX_ROUNDS) {
            c->more = true; /* come back on the next write readiness */
            break;
        }
    }
    if (!c->dead)
        update_events(c);
}

static void conn_free(struct conn *c)
{
    ev_io_stop(g.loop, &c->io);
    ev_timer_stop(g.loop, &c->tm);
    close(c->fd);
    if (g.nfree < FREE_KEEP) {
        c->next_free = g.free_list;
        g.free_list = c;
        g.nfree++;
    } else {
        free(c);
    }
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    (void)loop;
    if (revents & EV_WRITE)
        c->wblocked = false;
    if (revents & EV_READ)
        do_read(c);
    if (!c->dead)
        process(c);
    if (c->dead)
        conn_free(c);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = w->data;
    (void)loop;
    (void)revents;
    if (c->state == CS_SLEEP) {
        char body[32];
        int n = snprintf(body, sizeof(body), "slept %" PRIu64 "\n", c->arg);
        resp_simple(c, 200, body, (size_t)n); /* room was reserved before the timer started */
    } else {
        c->dead = true; /* linger timeout */
    }
    if (!c->dead)
        process(c);
    if (c->dead)
        conn_free(c);
}

static void resume_listeners(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    for (int i = 0; i < g.nlis; i++)
        ev_io_start(loop, &g.lis[i]);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    for (int i = 0; i < 64; i++) {
        struct conn *c;
        int one = 1;
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* Out of descriptors or memory: stop accepting for a moment. */
                LOG("accept: %s", strerror(errno));
                for (int k = 0; k < g.nlis; k++)
                    ev_io_stop(loop, &g.lis[k]);
                ev_timer_stop(loop, &g.lis_pause);
                ev_timer_set(&g.lis_pause, 0.1, 0.0);
                ev_timer_start(loop, &g.lis_pause);
            }
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (g.free_list != NULL) {
            c = g.free_list;
            g.free_list = c->next_free;
            g.nfree--;
        } else if ((c = malloc(sizeof(*c))) == NULL) {
            close(fd);
            continue;
        }
        memset(c, 0, offsetof(struct conn, in));
        c->fd = fd;
        c->state = g.proxy ? CS_PROXY : mode_state();
        c->hash = 0xcbf29ce484222325ULL;
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_init(&c->tm, conn_timer_cb);
        c->tm.data = c;
        ev_io_start(loop, &c->io);
        c->events = EV_READ;
    }
}

/* ---- setup ------------------------------------------------------------------------------ */

static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon;
    uint16_t port;
    size_t hl;

    memset(ss, 0, sizeof(*ss));
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return -1;
        hl = (size_t)(rb - s - 1);
        colon = rb + 1;
        s++;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        hl = (size_t)(colon - s);
    }
    if (hl >= sizeof(host) || !pp1_port(colon + 1, strlen(colon + 1), &port))
        return -1;
    memcpy(host, s, hl);
    host[hl] = 0;
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        *len = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *len = sizeof(*s6);
        return 0;
    }
    return -1;
}

static int open_listener(const char *spec)
{
    struct sockaddr_storage ss, bound;
    socklen_t len, blen = sizeof(bound);
    int fd, one = 1;
    char ip[INET6_ADDRSTRLEN];
    unsigned port;

    if (parse_listen(spec, &ss, &len) != 0) {
        logf_("bad listen address '%s' (want IP:PORT or [IPv6]:PORT)", spec);
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        logf_("socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 4096) != 0) {
        logf_("listen on %s: %s", spec, strerror(errno));
        close(fd);
        return -1;
    }
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    fmt_addr(&bound, ip, sizeof(ip), &port);
    LOG("listening on %s%s%s:%u", bound.ss_family == AF_INET6 ? "[" : "", ip,
        bound.ss_family == AF_INET6 ? "]" : "", port);
    return fd;
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: ae-origin -l ADDR:PORT [-l ...] [-i ID] [-m http|echo|sink] [-P] [-H FILE]\n"
               "                 [-p PIDFILE] [-q]\n");
}

int main(int argc, char **argv)
{
    const char *listen_specs[MAX_LISTEN];
    int nspecs = 0, opt;
    ev_signal sig_term, sig_int;

    g.id = "origin";
    while ((opt = getopt(argc, argv, "l:i:m:PH:p:qh")) != -1) {
        switch (opt) {
        case 'l':
            if (nspecs == MAX_LISTEN) {
                fprintf(stderr, "ae-origin: at most %d -l\n", MAX_LISTEN);
                return 2;
            }
            listen_specs[nspecs++] = optarg;
            break;
        case 'i':
            g.id = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "http") == 0)
                g.mode = MODE_HTTP;
            else if (strcmp(optarg, "echo") == 0)
                g.mode = MODE_ECHO;
            else if (strcmp(optarg, "sink") == 0)
                g.mode = MODE_SINK;
            else {
                usage(stderr);
                return 2;
            }
            break;
        case 'P':
            g.proxy = true;
            break;
        case 'H':
            g.health_file = optarg;
            break;
        case 'p':
            g.pidfile = optarg;
            break;
        case 'q':
            g.quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (nspecs == 0 || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (strlen(g.id) == 0 || strlen(g.id) > ID_MAX) {
        fprintf(stderr, "ae-origin: -i must be 1..%d characters\n", ID_MAX);
        return 2;
    }
    for (const char *q = g.id; *q; q++) {
        if ((unsigned char)*q < 0x21 || *q == 0x7f) {
            fprintf(stderr, "ae-origin: -i must be printable, without spaces\n");
            return 2;
        }
    }
    g.hdr_fixed_len = (size_t)snprintf(g.hdr_fixed, sizeof(g.hdr_fixed),
                                       "Server: ae-origin\r\nX-Origin: %s\r\n", g.id);

    for (size_t i = 0; i < sizeof(pattern); i++) {
        size_t k = i % PAT_PERIOD;
        pattern[i] = (uint8_t)((k * 7 + (k >> 8) + 3) & 0xff);
    }

    signal(SIGPIPE, SIG_IGN);
    g.loop = ev_default_loop(EVFLAG_AUTO);
    for (int i = 0; i < nspecs; i++) {
        int fd = open_listener(listen_specs[i]);
        if (fd < 0)
            return 1;
        ev_io_init(&g.lis[g.nlis], accept_cb, fd, EV_READ);
        ev_io_start(g.loop, &g.lis[g.nlis]);
        g.nlis++;
    }
    ev_init(&g.lis_pause, resume_listeners);
    ev_signal_init(&sig_term, on_signal, SIGTERM);
    ev_signal_start(g.loop, &sig_term);
    ev_signal_init(&sig_int, on_signal, SIGINT);
    ev_signal_start(g.loop, &sig_int);

    if (g.pidfile != NULL) {
        FILE *f = fopen(g.pidfile, "w");
        if (f == NULL) {
            logf_("pidfile %s: %s", g.pidfile, strerror(errno));
            return 1;
        }
        fprintf(f, "%ld\n", (long)getpid());
        fclose(f);
    }
    static const char *const mode_names[] = {"http", "echo", "sink"};
    LOG("mode %s%s", mode_names[g.mode], g.proxy ? ", PROXY protocol required" : "");

    ev_run(g.loop, 0);

    if (g.pidfile != NULL)
        unlink(g.pidfile);
    LOG("exiting");
    return 0;
}
