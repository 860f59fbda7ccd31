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
 *   GET /cookie      200 "N VALUE\n": how many Cookie lines the request had and the last one's
 *                    value (first 255 bytes)
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

#include "origin.h"

#define MAX_ROUNDS  16  /* write rounds per event, so one bulk stream can't starve others */
#define FREE_KEEP   64  /* connection structs kept for reuse */
#define LINGER_SECS 2.0 /* after shutdown(SHUT_WR), wait this long for the peer's EOF */

struct origin_globals g;

uint8_t pattern[PAT_PERIOD + OUT_SZ];

void logf_(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "ae-origin[%s]: ", g.id);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- socket addresses ------------------------------------------------------------------ */

void fmt_addr(const struct sockaddr_storage *ss, char *ip, size_t iplen, unsigned *port)
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

void load_socket_addrs(struct conn *c)
{
    socklen_t l1 = sizeof(c->src), l2 = sizeof(c->dst);
    if (getpeername(c->fd, (struct sockaddr *)&c->src, &l1) != 0)
        c->src.ss_family = AF_UNSPEC;
    if (getsockname(c->fd, (struct sockaddr *)&c->dst, &l2) != 0)
        c->dst.ss_family = AF_UNSPEC;
    c->have_addrs = true;
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
