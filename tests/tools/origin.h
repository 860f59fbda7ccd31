/*
 * ae-origin internals shared by tests/tools/origin.c (process, connections, raw modes, PROXY
 * protocol, setup) and tests/tools/origin_http.c (HTTP/1.1 requests, routes and responses).
 */
#ifndef AE_ORIGIN_H
#define AE_ORIGIN_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define IN_SZ      (80 * 1024)  /* > HEAD_MAX and > the largest PROXY v2 header (16 + 65535) */
#define OUT_SZ     (256 * 1024) /* large, so bulk bodies go out in few syscalls */
#define PAT_PERIOD 65521        /* /bytes pattern period (prime) */
#define ID_MAX     200
#define MAX_LISTEN 16

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

enum route {
    R_ROOT,
    R_ID,
    R_HEALTH,
    R_BYTES,
    R_SLEEP,
    R_CLIENT,
    R_COOKIE,
    R_ECHO,
    R_SINK,
    R_NOTFOUND
};

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
    uint64_t hash;    /* sink mode */
    unsigned ncookie; /* cookie lines of the request (GET /cookie) and the last one's value */
    char cookie[256];
    struct sockaddr_storage src, dst;
    size_t in_off, in_len, out_off, out_len;
    char in[IN_SZ];
    char out[OUT_SZ];
};

struct origin_globals {
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
};

/* Process-wide state (origin.c). */
extern struct origin_globals g;
/* The /bytes pattern table, filled once at startup (origin.c). */
extern uint8_t pattern[PAT_PERIOD + OUT_SZ];

/* Logs "ae-origin[ID]: ..." to stderr (origin.c); LOG only when not -q. */
void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define LOG(...)                                                                                   \
    do {                                                                                           \
        if (!g.quiet)                                                                              \
            logf_(__VA_ARGS__);                                                                    \
    } while (0)

/* ---- buffers ---------------------------------------------------------------------------- */

static inline size_t in_avail(const struct conn *c)
{
    return c->in_len - c->in_off;
}

/* Free space at the end of the input buffer, compacting when the tail is short. */
static inline size_t in_room(struct conn *c)
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

static inline void in_consume(struct conn *c, size_t n)
{
    c->in_off += n;
    c->scan = 0;
}

static inline bool out_pending(const struct conn *c)
{
    return c->out_off < c->out_len;
}

static inline size_t out_room(struct conn *c)
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
static inline void out_put(struct conn *c, const void *p, size_t n)
{
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static inline void out_str(struct conn *c, const char *s)
{
    out_put(c, s, strlen(s));
}

static inline void out_u64(struct conn *c, uint64_t v, int base)
{
    char tmp[24];
    int i = sizeof(tmp);
    do {
        tmp[--i] = "0123456789abcdef"[v % (unsigned)base];
        v /= (unsigned)base;
    } while (v != 0);
    out_put(c, tmp + i, sizeof(tmp) - (size_t)i);
}

static inline void set_state(struct conn *c, enum cstate s)
{
    /* Once closing, a connection only goes away. */
    if (c->state == CS_CLOSING && s != CS_CLOSING)
        abort();
    c->state = s;
}

/* ---- origin.c, used by origin_http.c ---- */
/* Formats a socket address as IP text and port ("unknown" / 0 for other families). */
void fmt_addr(const struct sockaddr_storage *ss, char *ip, size_t iplen, unsigned *port);
/* Sets c->src / c->dst from the socket's peer and local addresses. */
void load_socket_addrs(struct conn *c);

/* ---- origin_http.c, used by origin.c ---- */
/* Parses decimal digits p[0..n) into *v, rejecting empty, overlong, signs and overflow. */
bool parse_u64(const char *p, size_t n, uint64_t *v);
/* Answers the current request with a text/plain body (needs RESP_RESERVE of out room). */
void resp_simple(struct conn *c, int status, const char *body, size_t len);
/* State machine steps of an http connection: 1 to step again, 0 when stalled. */
int step_head(struct conn *c);
int step_body(struct conn *c);
int step_bytes(struct conn *c);

#endif
