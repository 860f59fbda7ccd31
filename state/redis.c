/*
 * A small asynchronous Redis client on the hiredis API (hiredict 1.3's shims; async API + libev
 * adapter): URL parsing, connect/command timeouts, reconnect with backoff, AUTH/SELECT handshake,
 * one subscriber connection, TLS (redis_tls.c). See redis.h for the contract.
 *
 * hiredis rules this file lives by:
 *  - a context is freed by hiredis itself on any I/O or protocol error (and on a failed
 *    connect); it then calls every pending reply callback with a NULL reply, then onDisconnect
 *    (only when it had connected; a failed connect calls onConnect(REDIS_ERR) first instead). A
 *    NULL reply therefore always means "this context is being freed".
 *  - redisAsyncFree() is only called from the top of a libev callback of our own (timers) or
 *    from ae_redis_free(), never from inside a hiredis callback: a connection that must be
 *    dropped from inside one is dropped by a zero-delay timer.
 *  - conn->ac is cleared before a context is given up (by us or by hiredis), so callbacks for a
 *    context we no longer own are recognised (conn->ac != ac) and ignored.
 *
 * User commands are tracked in a FIFO that mirrors hiredis' reply queue (commands are only
 * accepted once the handshake is done, so no handshake reply is interleaved). A command failed
 * early (timeout, connection lost) is marked detached: its callback has been called and the
 * small struct is freed when hiredis hands it back with a NULL reply.
 */
#include "state/redis.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include "conf/base.h"

/* hiredict's shims spell this flag REDIS_DICONNECTING (hiredis: REDIS_DISCONNECTING). */
#ifdef REDIS_DISCONNECTING
#define AE_REDIS_DISCONNECTING REDIS_DISCONNECTING
#else
#define AE_REDIS_DISCONNECTING REDIS_DICONNECTING
#endif

/* ---- URL parsing ---- */

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "redis url: %s", msg);
}

/* Decodes s[0..n) (with %XX escapes) into a new string; NULL with *bad set on a bad escape. */
static char *pct_decode(const char *s, size_t n, int *bad)
{
    char *out = malloc(n + 1);
    size_t j = 0;

    *bad = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[j++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? ae_hex_digit((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < n ? ae_hex_digit((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            explicit_bzero(out, n + 1);
            free(out);
            *bad = 1;
            return NULL;
        }
        out[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[j] = '\0';
    return out;
}

/* Parses a decimal number s[0..n) in [lo, hi]; -1 when malformed or out of range. */
static long parse_num(const char *s, size_t n, long lo, long hi)
{
    long v = 0;

    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v < lo || v > hi ? -1 : v;
}

static int parse_unix(const char *p, ae_redis_target *out, char *err, size_t errlen)
{
    const char *q = strchr(p, '?');
    size_t plen = q ? (size_t)(q - p) : strlen(p);
    struct sockaddr_un sun;

    if (plen == 0 || p[0] != '/') {
        set_err(err, errlen, "unix socket path must be absolute (unix:///path)");
        return AE_ERR_PARSE;
    }
    if (plen >= sizeof(sun.sun_path)) {
        set_err(err, errlen, "unix socket path too long");
        return AE_ERR_PARSE;
    }
    if (q) {
        const char *v = q + 1;
        long db;
        if (strncmp(v, "db=", 3) != 0) {
            set_err(err, errlen, "unknown query parameter (only ?db=N)");
            return AE_ERR_PARSE;
        }
        db = parse_num(v + 3, strlen(v + 3), 0, INT_MAX);
        if (db < 0) {
            set_err(err, errlen, "bad db number");
            return AE_ERR_PARSE;
        }
        out->db = (int)db;
    }
    out->unix_path = strndup(p, plen);
    return out->unix_path ? 0 : AE_ERR_NOMEM;
}

static int valid_hostname(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_')
            return 0;
    }
    return 1;
}

static int parse_tcp(const char *p, ae_redis_target *out, char *err, size_t errlen)
{
    /* Userinfo ends at the last '@' (the host/port/db part can hold none). */
    const char *at = strrchr(p, '@');
    const char *h, *hend, *s;
    int bad;

    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) {
            set_err(err, errlen,
                    "userinfo needs ':' (redis://:password@ or redis://user:password@)");
            return AE_ERR_PARSE;
        }
        if (colon == at - 1) {
            set_err(err, errlen, "empty password");
            return AE_ERR_PARSE;
        }
        if (colon > p) {
            out->user = pct_decode(p, (size_t)(colon - p), &bad);
            if (!out->user) {
                set_err(err, errlen, bad ? "bad %-escape in user" : "out of memory");
                return bad ? AE_ERR_PARSE : AE_ERR_NOMEM;
            }
        }
        out->password = pct_decode(colon + 1, (size_t)(at - colon - 1), &bad);
        if (!out->password) {
            set_err(err, errlen, bad ? "bad %-escape in password" : "out of memory");
            return bad ? AE_ERR_PARSE : AE_ERR_NOMEM;
        }
        p = at + 1;
    }

    if (*p == '[') {
        char tmp[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        h = p + 1;
        hend = strchr(h, ']');
        if (!hend || (size_t)(hend - h) >= sizeof(tmp)) {
            set_err(err, errlen, "bad [IPv6] host");
            return AE_ERR_PARSE;
        }
        memcpy(tmp, h, (size_t)(hend - h));
        tmp[hend - h] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1) {
            set_err(err, errlen, "bad [IPv6] host");
            return AE_ERR_PARSE;
        }
        s = hend + 1;
    } else {
        h = p;
        hend = h + strcspn(h, ":/?#");
        if (!valid_hostname(h, (size_t)(hend - h))) {
            set_err(err, errlen, "bad or missing host");
            return AE_ERR_PARSE;
        }
        s = hend;
    }
    out->host = strndup(h, (size_t)(hend - h));
    if (!out->host)
        return AE_ERR_NOMEM;

    out->port = 6379;
    if (*s == ':') {
        size_t n = strcspn(s + 1, "/");
        long port = parse_num(s + 1, n, 1, 65535);
        if (port < 0) {
            set_err(err, errlen, "bad port (1..65535)");
            return AE_ERR_PARSE;
        }
        out->port = (int)port;
        s += 1 + n;
    }
    if (*s == '/') {
        size_t n = strlen(s + 1);
        if (n > 0) {
            long db = parse_num(s + 1, n, 0, INT_MAX);
            if (db < 0) {
                set_err(err, errlen, "bad db number (/N, 0..2147483647)");
                return AE_ERR_PARSE;
            }
            out->db = (int)db;
        }
        s += 1 + n;
    }
    if (*s != '\0') {
        set_err(err, errlen, "unexpected characters after host:port");
        return AE_ERR_PARSE;
    }
    return 0;
}

int ae_redis_url_parse(const char *url, ae_redis_target *out, char *err, size_t errlen)
{
    int rv;

    if (err && errlen)
        err[0] = '\0';
    memset(out, 0, sizeof(*out));
    if (!url) {
        set_err(err, errlen, "empty");
        return AE_ERR_PARSE;
    }
    if (strncasecmp(url, "redis://", 8) == 0) {
        rv = parse_tcp(url + 8, out, err, errlen);
    } else if (strncasecmp(url, "unix://", 7) == 0) {
        rv = parse_unix(url + 7, out, err, errlen);
    } else if (strncasecmp(url, "rediss://", 9) == 0) {
        rv = parse_tcp(url + 9, out, err, errlen);
        out->tls = 1;
    } else {
        set_err(err, errlen, "unsupported scheme (want redis://, rediss:// or unix://)");
        rv = AE_ERR_PARSE;
    }
    if (rv == AE_ERR_NOMEM)
        set_err(err, errlen, "out of memory");
    if (rv != 0)
        ae_redis_target_free(out);
    return rv;
}

void ae_redis_target_free(ae_redis_target *t)
{
    if (!t)
        return;
    free(t->host);
    free(t->unix_path);
    free(t->user);
    if (t->password) {
        explicit_bzero(t->password, strlen(t->password));
        free(t->password);
    }
    for (size_t i = 0; i < t->nsentinels; i++)
        free(t->sentinels[i].host);
    free(t->sentinels);
    free(t->master_name);
    free(t->sentinel_user);
    if (t->sentinel_password) {
        explicit_bzero(t->sentinel_password, strlen(t->sentinel_password));
        free(t->sentinel_password);
    }
    memset(t, 0, sizeof(*t));
}

const char *ae_redis_target_describe(const ae_redis_target *t, char *buf, size_t len)
{
    if (!len)
        return buf;
    if (t->unix_path)
        snprintf(buf, len, "unix:%s?db=%d", t->unix_path, t->db);
    else if (t->host && strchr(t->host, ':'))
        snprintf(buf, len, "[%s]:%d/%d%s", t->host, t->port, t->db, t->tls ? " tls" : "");
    else
        snprintf(buf, len, "%s:%d/%d%s", t->host ? t->host : "?", t->port, t->db,
                 t->tls ? " tls" : "");
    return buf;
}

/* *dst = strdup(src) (NULL stays NULL); -1 when out of memory. */
static int dup_opt(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? -1 : 0;
}

static int target_copy(ae_redis_target *dst, const ae_redis_target *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->tls = src->tls;
    dst->port = src->port;
    dst->db = src->db;
    if (dup_opt(&dst->host, src->host) || dup_opt(&dst->unix_path, src->unix_path) ||
        dup_opt(&dst->user, src->user) || dup_opt(&dst->password, src->password) ||
        dup_opt(&dst->master_name, src->master_name) ||
        dup_opt(&dst->sentinel_user, src->sentinel_user) ||
        dup_opt(&dst->sentinel_password, src->sentinel_password))
        goto nomem;
    if (src->nsentinels > 0) {
        dst->sentinels = calloc(src->nsentinels, sizeof(*dst->sentinels));
        if (!dst->sentinels)
            goto nomem;
        dst->nsentinels = src->nsentinels;
        for (size_t i = 0; i < src->nsentinels; i++) {
            dst->sentinels[i].port = src->sentinels[i].port;
            if (dup_opt(&dst->sentinels[i].host, src->sentinels[i].host))
                goto nomem;
        }
    }
    return 0;
nomem:
    ae_redis_target_free(dst);
    return AE_ERR_NOMEM;
}

/* ---- the client ---- */

enum conn_state {
    CS_IDLE = 0,   /* not started / shut down */
    CS_BACKOFF,    /* waiting for the reconnect timer */
    CS_CONNECTING, /* TCP/unix connect in progress (handshake commands queued) */
    CS_HANDSHAKE,  /* connected, AUTH/SELECT/PING/SUBSCRIBE in flight */
    CS_READY,      /* usable */
    CS_CLOSING,    /* to be dropped by a zero-delay timer (decided inside a hiredis callback) */
    CS_DISCOVER,   /* sentinel mode: waiting for the sentinels to name the master */
};

enum hs_step { HS_NONE = 0, HS_AUTH, HS_SELECT, HS_ROLE, HS_PING, HS_SUBSCRIBE, HS_MASTER };

/* The connections of one client: commands, the subscriber, and in sentinel mode the master
 * lookup (one sentinel after the other) and the +switch-master watcher. */
enum conn_kind { K_CMD = 0, K_SUB, K_DISC, K_WATCH };

#define SWITCH_CHANNEL "+switch-master"

#define ERRLOG_INTERVAL_MS 10000

typedef struct ae_redis_conn {
    ae_redis *r;
    int kind; /* enum conn_kind */
    int state;
    int closing_ready; /* CS_CLOSING of a connection that was ready */
    int found;         /* K_DISC: this lookup named the master */
    size_t sidx;       /* K_DISC, K_WATCH: the sentinel (index mod nsentinels) */
    unsigned tried;    /* K_DISC: sentinels asked in this lookup */
    char where[80];    /* K_DISC, K_WATCH: the sentinel's host:port */
    int hs_step;
    redisAsyncContext *ac;
    ev_timer timer; /* backoff, connect timeout or deferred close, depending on state */
    unsigned attempts;
    const char *close_reason;
    char last_err[192]; /* rate limit of identical failure lines */
    uint64_t last_err_ms;
    unsigned suppressed;
} ae_redis_conn;

typedef struct ae_redis_pending {
    struct ae_redis_pending *next;
    ae_redis *r;
    ae_redis_reply_cb cb;
    void *arg;
    uint64_t deadline_ms;
    int detached; /* callback already called (or dropped): free when hiredis returns it */
} ae_redis_pending;

struct ae_redis {
    struct ev_loop *loop;
    ae_redis_target target;
    ae_redis_tls *tls; /* rediss:// only; owned by the caller */
    char desc[300];
    uint32_t connect_timeout_ms;
    uint32_t command_timeout_ms;
    uint32_t backoff_min_ms;
    uint32_t backoff_max_ms;
    char *channel;
    ae_redis_state_cb on_state;
    ae_redis_message_cb on_message;
    void *arg;
    ae_redis_conn cmd;
    ae_redis_conn subc;
    int sentinel;    /* target.nsentinels > 0 */
    int master_ok;   /* sentinel mode: target.host:port is the master the sentinels named */
    int master_seen; /* a sentinel has named the master once (later changes are switches) */
    ae_redis_conn disc, watch;
    ae_redis_pending *head, *tail;
    ev_timer cmd_timer;
    ae_redis_stats stats;
    uint64_t rng;
};

static const char *conn_name(const ae_redis_conn *c)
{
    static const char *const names[] = {"redis", "redis subscriber", "redis sentinel",
                                        "redis sentinel watch"};
    return names[c->kind];
}

/* Where a connection goes, for its log lines. */
static const char *conn_where(const ae_redis_conn *c)
{
    return c->kind == K_DISC || c->kind == K_WATCH ? c->where : c->r->desc;
}

static void update_desc(ae_redis *r)
{
    char t[200];
    ae_redis_target_describe(&r->target, t, sizeof(t));
    if (r->sentinel)
        snprintf(r->desc, sizeof(r->desc), "master %s at %s", r->target.master_name, t);
    else
        snprintf(r->desc, sizeof(r->desc), "%s", t);
}

/* Logs a failure line, at most once per ERRLOG_INTERVAL_MS for the same text. */
static void conn_log_fail(ae_redis_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_log_fail(ae_redis_conn *c, const char *fmt, ...)
{
    char line[sizeof(c->last_err)];
    va_list ap;
    uint64_t now = ae_now_ms();

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (strcmp(line, c->last_err) == 0 && now - c->last_err_ms < ERRLOG_INTERVAL_MS) {
        c->suppressed++;
        return;
    }
    if (c->suppressed)
        AE_WARN("%s %s: %s (%u similar lines suppressed)", conn_name(c), conn_where(c), line,
                c->suppressed);
    else
        AE_WARN("%s %s: %s", conn_name(c), conn_where(c), line);
    memcpy(c->last_err, line, sizeof(line));
    c->last_err_ms = now;
    c->suppressed = 0;
}

static uint64_t rng_next(ae_redis *r)
{
    /* xorshift64* */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 0x2545F4914F6CDD1DULL;
}

/* Exponential backoff with full jitter: uniform in [min, min(max, min * 2^attempts)]. */
static uint32_t backoff_delay(ae_redis_conn *c)
{
    ae_redis *r = c->r;
    uint64_t ceil = r->backoff_min_ms;
    unsigned n = c->attempts < 32 ? c->attempts : 32;

    if (c->attempts < UINT_MAX)
        c->attempts++;
    for (unsigned i = 0; i < n && ceil < r->backoff_max_ms; i++)
        ceil *= 2;
    if (ceil > r->backoff_max_ms)
        ceil = r->backoff_max_ms;
    if (ceil <= r->backoff_min_ms)
        return r->backoff_min_ms;
    return r->backoff_min_ms + (uint32_t)(rng_next(r) % (ceil - r->backoff_min_ms + 1));
}

static void timer_arm(ae_redis *r, ev_timer *t, uint64_t ms)
{
    ev_timer_stop(r->loop, t);
    ev_timer_set(t, (double)ms / 1000.0, 0.);
    ev_timer_start(r->loop, t);
}

/* Fails every pending command with err (calls their callbacks). The state must already be
 * non-ready, so callbacks that send commands get AE_ERR_AGAIN. */
static void fail_all(ae_redis *r, const char *err)
{
    ae_redis_pending *p = r->head;

    r->head = r->tail = NULL;
    while (p) {
        ae_redis_pending *next = p->next;
        p->next = NULL;
        p->detached = 1; /* freed by cmd_reply_cb when hiredis returns it */
        p->cb(r, NULL, err, p->arg);
        p = next;
    }
}

static void conn_start(ae_redis_conn *c);
static void conn_close_deferred(ae_redis_conn *c, const char *why);

/* ---- sentinel: master lookup ---- */

static void disc_start(ae_redis *r)
{
    if (r->disc.state != CS_IDLE)
        return; /* running: its end wakes every waiter */
    r->disc.tried = 0;
    conn_start(&r->disc);
}

/* The lookup ended: the waiting connections connect (master known) or back off. */
static void disc_wake(ae_redis *r, int ok)
{
    ae_redis_conn *w[2] = {&r->cmd, &r->subc};
    for (int i = 0; i < 2; i++) {
        if (w[i]->state != CS_DISCOVER)
            continue;
        if (ok) {
            conn_start(w[i]);
        } else {
            w[i]->state = CS_BACKOFF;
            timer_arm(r, &w[i]->timer, backoff_delay(w[i]));
        }
    }
}

/* The sentinel asked did not name the master: the next one, or give up this round. */
static void disc_next(ae_redis *r)
{
    ae_redis_conn *d = &r->disc;

    d->sidx++;
    if (++d->tried < r->target.nsentinels) {
        d->state = CS_BACKOFF;
        timer_arm(r, &d->timer, 0);
        return;
    }
    d->state = CS_IDLE;
    r->stats.errors++;
    AE_WARN("redis sentinel: no sentinel named master %s (%zu asked); retrying with backoff",
            r->target.master_name, r->target.nsentinels);
    disc_wake(r, 0);
}

/* host:port is the master now; 1 when that is a change. */
static int set_master(ae_redis *r, const char *host, size_t hlen, long port)
{
    if (r->target.host && strlen(r->target.host) == hlen &&
        memcmp(r->target.host, host, hlen) == 0 && r->target.port == port)
        return 0;
    char *h = strndup(host, hlen);
    if (!h)
        return 0;
    free(r->target.host);
    r->target.host = h;
    r->target.port = (int)port;
    update_desc(r);
    return 1;
}

/* "+switch-master NAME OLDIP OLDPORT NEWIP NEWPORT" from the watched sentinel. */
static void on_switch(ae_redis *r, const char *msg, size_t len)
{
    const char *f[5];
    size_t fl[5], n = 0, i = 0;

    while (i < len && n < 5) {
        size_t st = i;
        while (i < len && msg[i] != ' ')
            i++;
        f[n] = msg + st;
        fl[n++] = i - st;
        i++;
    }
    if (n < 5 || fl[0] != strlen(r->target.master_name) ||
        memcmp(f[0], r->target.master_name, fl[0]) != 0)
        return;
    long port = parse_num(f[4], fl[4], 1, 65535);
    if (port < 0 || fl[3] == 0)
        return;
    if (!set_master(r, f[3], fl[3], port))
        return;
    r->master_ok = 1;
    r->master_seen = 1;
    r->stats.master_switches++;
    AE_WARN("redis sentinel %s: +switch-master: %s; reconnecting", r->watch.where, r->desc);
    ae_redis_conn *w[2] = {&r->cmd, &r->subc};
    for (int k = 0; k < 2; k++) {
        if (w[k]->state == CS_READY || w[k]->state == CS_CONNECTING ||
            w[k]->state == CS_HANDSHAKE) {
            conn_close_deferred(w[k], "master switched");
        } else if (w[k]->state == CS_BACKOFF) {
            w[k]->attempts = 0; /* waiting out the backoff of a dead master: go now */
            timer_arm(r, &w[k]->timer, 0);
        }
    }
}

/* The connection went away (ac already given up by the caller). Schedules a reconnect and
 * tells the user. */
static void conn_down(ae_redis_conn *c, const char *why)
{
    ae_redis *r = c->r;
    int was_ready = c->state == CS_READY || (c->state == CS_CLOSING && c->closing_ready);

    c->closing_ready = 0;
    c->hs_step = HS_NONE;
    if (c->kind == K_DISC) {
        c->state = CS_IDLE;
        if (!c->found)
            disc_next(r);
        else if (r->cmd.state == CS_DISCOVER || r->subc.state == CS_DISCOVER) {
            if (r->master_ok) /* woken already, unless one started waiting since */
                disc_wake(r, 1);
            else
                disc_start(r);
        }
        return;
    }
    if (r->sentinel && c->kind != K_WATCH)
        r->master_ok = 0; /* ask the sentinels again before reconnecting */
    if (c->kind == K_WATCH)
        c->sidx++; /* the next sentinel */
    c->state = CS_BACKOFF;
    timer_arm(r, &c->timer, backoff_delay(c));
    if (was_ready) {
        r->stats.disconnects++;
        AE_WARN("%s %s: connection lost (%s)", conn_name(c), conn_where(c), why);
    }
    if (c->kind == K_CMD) {
        ev_timer_stop(r->loop, &r->cmd_timer);
        fail_all(r, why);
        if (was_ready && r->on_state)
            r->on_state(r, 0, r->arg);
    }
}

/* Drops the connection ourselves. Only from the top of a libev callback of ours. */
static void conn_drop(ae_redis_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;

    c->ac = NULL;
    conn_down(c, why); /* before the free: pending callbacks must see their err, not NULL */
    if (ac)
        redisAsyncFree(ac);
}

/* hiredis is freeing c->ac (error or server close): it must not be touched any more. */
static void conn_lost(ae_redis_conn *c, const redisAsyncContext *ac)
{
    const char *why = ac->errstr && ac->errstr[0] ? ac->errstr : "connection closed";
    char cert[160];
    const char *refused = ae_redis_tls_take_error(c->r->tls, cert, sizeof(cert));

    c->ac = NULL;
    if (c->state != CS_READY && c->state != CS_CLOSING) { /* CLOSING: already counted */
        c->r->stats.errors++;
        if (refused != NULL) /* hiredis' own text is then only "Success" or "SSL_connect..." */
            conn_log_fail(c, "connect failed: TLS: %s", refused);
        else
            conn_log_fail(c, "connect failed: %s", why);
    }
    conn_down(c, c->state == CS_READY ? "disconnected" : "connect failed");
}

/* Called inside a hiredis callback: drop on the next loop iteration. */
static void conn_close_deferred(ae_redis_conn *c, const char *why)
{
    c->closing_ready = c->state == CS_READY;
    c->state = CS_CLOSING;
    c->close_reason = why;
    timer_arm(c->r, &c->timer, 0);
}

static void conn_ready(ae_redis_conn *c)
{
    ae_redis *r = c->r;

    ev_timer_stop(r->loop, &c->timer);
    c->state = CS_READY;
    c->attempts = 0;
    c->last_err[0] = '\0';
    c->suppressed = 0;
    r->stats.connects++;
    AE_INFO("%s %s: %s", conn_name(c), conn_where(c),
            c->kind == K_CMD ? "connected" : "subscribed");
    if (c->kind == K_CMD && r->on_state)
        r->on_state(r, 1, r->arg);
}

static void hs_reply_cb(redisAsyncContext *ac, void *reply, void *privdata);
static void sub_reply_cb(redisAsyncContext *ac, void *reply, void *privdata);

static const char *hs_name(int step)
{
    switch (step) {
    case HS_AUTH:
        return "AUTH";
    case HS_SELECT:
        return "SELECT";
    case HS_PING:
        return "PING";
    case HS_SUBSCRIBE:
        return "SUBSCRIBE";
    case HS_ROLE:
        return "ROLE";
    case HS_MASTER:
        return "SENTINEL get-master-addr-by-name";
    }
    return "?";
}

/* Sends the next handshake command or, when all are done, marks the connection ready.
 * Returns -1 when hiredis refused the command. */
static int hs_next(ae_redis_conn *c)
{
    ae_redis *r = c->r;
    const char *argv[3];
    size_t argvlen[3];
    char dbbuf[16];
    int argc = 0, rv;
    int to_sentinel = c->kind == K_DISC || c->kind == K_WATCH;
    const char *user = to_sentinel ? r->target.sentinel_user : r->target.user;
    const char *pass = to_sentinel ? r->target.sentinel_password : r->target.password;

    if (c->hs_step < HS_AUTH && pass) {
        c->hs_step = HS_AUTH;
        argv[argc++] = "AUTH";
        if (user)
            argv[argc++] = user;
        argv[argc++] = pass;
    } else if (c->kind == K_CMD && c->hs_step < HS_SELECT && r->target.db != 0) {
        c->hs_step = HS_SELECT;
        snprintf(dbbuf, sizeof(dbbuf), "%d", r->target.db);
        argv[argc++] = "SELECT";
        argv[argc++] = dbbuf;
    } else if (r->sentinel && !to_sentinel && c->hs_step < HS_ROLE) {
        c->hs_step = HS_ROLE; /* the sentinels may be behind: is it the master? */
        argv[argc++] = "ROLE";
    } else if (c->kind == K_CMD && c->hs_step < HS_PING) {
        c->hs_step = HS_PING; /* nothing else proves the server answers */
        argv[argc++] = "PING";
    } else if ((c->kind == K_SUB || c->kind == K_WATCH) && c->hs_step < HS_SUBSCRIBE) {
        c->hs_step = HS_SUBSCRIBE;
        argv[argc++] = "SUBSCRIBE";
        argv[argc++] = c->kind == K_SUB ? r->channel : SWITCH_CHANNEL;
    } else if (c->kind == K_DISC && c->hs_step < HS_MASTER) {
        c->hs_step = HS_MASTER;
        argv[argc++] = "SENTINEL";
        argv[argc++] = "get-master-addr-by-name";
        argv[argc++] = r->target.master_name;
    } else {
        conn_ready(c);
        return 0;
    }
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    rv = redisAsyncCommandArgv(c->ac, c->hs_step == HS_SUBSCRIBE ? sub_reply_cb : hs_reply_cb, c,
                               argc, argv, argvlen);
    return rv == REDIS_OK ? 0 : -1;
}

static void hs_reply_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    ae_redis_conn *c = privdata;
    redisReply *reply = reply_;
    const char *want;

    if (c->ac != ac)
        return; /* a context we gave up */
    if (!reply) {
        conn_lost(c, ac);
        return;
    }
    if (c->hs_step == HS_ROLE) {
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
            reply->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(reply->element[0]->str, "master") == 0) {
            if (hs_next(c) != 0)
                conn_close_deferred(c, "handshake failed");
            return;
        }
        c->r->stats.errors++;
        c->r->stats.not_master++;
        c->r->master_ok = 0;
        conn_log_fail(c, "ROLE is %.40s, not master: asking the sentinels again",
                      reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                              reply->element[0]->type == REDIS_REPLY_STRING
                          ? reply->element[0]->str
                      : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                         : "unknown");
        conn_close_deferred(c, "not the master");
        return;
    }
    if (c->hs_step == HS_MASTER) {
        ae_redis *r = c->r;
        long port = -1;
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
            reply->element[0]->type == REDIS_REPLY_STRING &&
            reply->element[1]->type == REDIS_REPLY_STRING && reply->element[0]->len > 0)
            port = parse_num(reply->element[1]->str, reply->element[1]->len, 1, 65535);
        if (port < 0) {
            r->stats.errors++;
            conn_log_fail(c, "does not name master %s: %.120s", r->target.master_name,
                          reply->type == REDIS_REPLY_NIL     ? "unknown master name"
                          : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                             : "unexpected reply");
            conn_close_deferred(c, "no master");
            return;
        }
        r->stats.master_lookups++;
        if (set_master(r, reply->element[0]->str, reply->element[0]->len, port) ||
            !r->master_seen) {
            if (r->master_seen)
                r->stats.master_switches++;
            AE_INFO("redis sentinel %s: %s", c->where, r->desc);
        }
        r->master_seen = 1;
        r->master_ok = 1;
        c->found = 1;
        conn_close_deferred(c, "lookup done");
        disc_wake(r, 1);
        return;
    }
    want = c->hs_step == HS_PING ? "PONG" : "OK";
    if (reply->type == REDIS_REPLY_ERROR || reply->type != REDIS_REPLY_STATUS ||
        strcmp(reply->str, want) != 0) {
        c->r->stats.errors++;
        conn_log_fail(c, "%s failed: %.120s", hs_name(c->hs_step),
                      reply->type == REDIS_REPLY_ERROR || reply->type == REDIS_REPLY_STATUS
                          ? reply->str
                          : "unexpected reply type");
        conn_close_deferred(c, "handshake failed");
        return;
    }
    if (hs_next(c) != 0)
        conn_close_deferred(c, "handshake failed");
}

static void sub_reply_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    ae_redis_conn *c = privdata;
    ae_redis *r = c->r;
    redisReply *reply = reply_;
    const redisReply *kind;

    if (c->ac != ac)
        return;
    if (!reply) {
        conn_lost(c, ac);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    kind = reply->element[0];
    if (strcasecmp(kind->str, "message") == 0) {
        const redisReply *m = reply->element[2];
        if (m->type != REDIS_REPLY_STRING || c->state != CS_READY)
            return;
        if (c->kind == K_WATCH) {
            on_switch(r, m->str, m->len);
            return;
        }
        r->stats.messages++;
        r->on_message(r, m->str, m->len, r->arg);
    } else if (strcasecmp(kind->str, "subscribe") == 0 && c->state != CS_READY &&
               c->state != CS_CLOSING) {
        conn_ready(c);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    ae_redis_conn *c = ac->data;

    if (!c || c->ac != ac)
        return;
    if (status != REDIS_OK) {
        conn_lost(c, ac); /* hiredis frees ac after this returns */
        return;
    }
    if (c->state == CS_CONNECTING)
        c->state = CS_HANDSHAKE;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    ae_redis_conn *c = ac->data;

    if (!c || c->ac != ac)
        return;
    conn_lost(c, ac);
}

/* A connection that could not even start: retried like a lost one. */
static void conn_start_failed(ae_redis_conn *c)
{
    if (c->kind == K_DISC) {
        c->state = CS_IDLE;
        disc_next(c->r);
        return;
    }
    if (c->kind == K_WATCH)
        c->sidx++;
    c->state = CS_BACKOFF;
    timer_arm(c->r, &c->timer, backoff_delay(c));
}

static void conn_start(ae_redis_conn *c)
{
    ae_redis *r = c->r;
    redisAsyncContext *ac;
    const char *host = r->target.host;
    int port = r->target.port;

    c->hs_step = HS_NONE;
    c->found = 0;
    if (r->sentinel && (c->kind == K_CMD || c->kind == K_SUB) && !r->master_ok) {
        ev_timer_stop(r->loop, &c->timer);
        c->state = CS_DISCOVER;
        disc_start(r);
        return;
    }
    if (c->kind == K_DISC || c->kind == K_WATCH) {
        const struct ae_redis_sentinel *sn = &r->target.sentinels[c->sidx % r->target.nsentinels];
        host = sn->host;
        port = sn->port;
        snprintf(c->where, sizeof(c->where), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    }
    if (r->target.unix_path)
        ac = redisAsyncConnectUnix(r->target.unix_path);
    else
        ac = redisAsyncConnect(host, port);
    if (!ac || ac->err) {
        r->stats.errors++;
        conn_log_fail(c, "connect failed: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        conn_start_failed(c);
        return;
    }
    if (r->tls != NULL) {
        char e[256];
        /* The handshake runs in the event loop; connect_timeout covers it. */
        if (ae_redis_tls_start(r->tls, &ac->c, host, e, sizeof(e)) != 0) {
            r->stats.errors++;
            conn_log_fail(c, "connect failed: %s", e);
            redisAsyncFree(ac);
            conn_start_failed(c);
            return;
        }
    }
    ac->data = c;
    c->ac = ac;
    c->state = CS_CONNECTING;
    timer_arm(r, &c->timer, r->connect_timeout_ms);
    if (redisLibevAttach(r->loop, ac) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, on_connect) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, on_disconnect) != REDIS_OK || hs_next(c) != 0) {
        r->stats.errors++;
        conn_log_fail(c, "connect failed: cannot set up the connection");
        conn_drop(c, "connect failed");
    }
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ae_redis_conn *c = w->data;
    ae_redis *r = c->r;

    switch (c->state) {
    case CS_BACKOFF:
        conn_start(c);
        break;
    case CS_CONNECTING:
    case CS_HANDSHAKE:
        r->stats.timeouts++;
        conn_log_fail(c, "%s timeout after %u ms",
                      c->state == CS_CONNECTING ? "connect" : "handshake",
                      (unsigned)r->connect_timeout_ms);
        conn_drop(c, "timeout");
        break;
    case CS_CLOSING:
        conn_drop(c, c->close_reason ? c->close_reason : "closed");
        break;
    default:
        break;
    }
}

static void cmd_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ae_redis *r = w->data;
    uint64_t now = ae_now_ms();

    if (!r->head || r->cmd.state != CS_READY)
        return;
    if (r->head->deadline_ms > now) {
        timer_arm(r, w, r->head->deadline_ms - now);
        return;
    }
    r->stats.timeouts++;
    conn_log_fail(&r->cmd, "command timeout after %u ms; reconnecting",
                  (unsigned)r->command_timeout_ms);
    conn_drop(&r->cmd, "timeout");
}

static void cmd_reply_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    ae_redis_pending *p = privdata;
    redisReply *reply = reply_;
    ae_redis *r = p->r;

    if (p->detached) {
        free(p);
        return;
    }
    if (!reply) {
        /* The context is being freed by hiredis: fail everything (p included). */
        if (r->cmd.ac == ac) {
            conn_lost(&r->cmd, ac);
        } else {
            /* Not expected (we fail all before giving a context up), but stay exact. */
            ae_redis_pending **pp = &r->head;
            while (*pp && *pp != p)
                pp = &(*pp)->next;
            if (*pp) {
                *pp = p->next;
                if (r->tail == p) {
                    r->tail = NULL;
                    for (ae_redis_pending *q = r->head; q; q = q->next)
                        r->tail = q;
                }
            }
            p->cb(r, NULL, "disconnected", p->arg);
        }
        free(p);
        return;
    }
    /* Replies come in order: p is the head. */
    r->head = p->next;
    if (!r->head)
        r->tail = NULL;
    if (reply->type == REDIS_REPLY_ERROR)
        r->stats.errors++;
    p->cb(r, reply, NULL, p->arg);
    free(p);
}

int ae_redis_new(struct ev_loop *loop, const ae_redis_opts *opts, ae_redis **out)
{
    ae_redis *r;

    *out = NULL;
    if (!loop || !opts || !opts->target || (opts->subscribe_channel && !opts->on_message) ||
        (!opts->target->host && !opts->target->unix_path) || (opts->target->tls && !opts->tls) ||
        (opts->target->nsentinels > 0 &&
         (!opts->target->master_name || !opts->target->sentinels || opts->target->unix_path)))
        return AE_ERR_INVAL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return AE_ERR_NOMEM;
    if (target_copy(&r->target, opts->target) != 0 ||
        (opts->subscribe_channel && !(r->channel = strdup(opts->subscribe_channel)))) {
        ae_redis_target_free(&r->target);
        free(r);
        return AE_ERR_NOMEM;
    }
    r->loop = loop;
    r->tls = r->target.tls ? opts->tls : NULL;
    r->sentinel = r->target.nsentinels > 0;
    update_desc(r);
    r->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 1000;
    r->command_timeout_ms = opts->command_timeout_ms ? opts->command_timeout_ms : 1000;
    r->backoff_min_ms = opts->backoff_min_ms ? opts->backoff_min_ms : 100;
    r->backoff_max_ms = opts->backoff_max_ms ? opts->backoff_max_ms : 10000;
    if (r->backoff_max_ms < r->backoff_min_ms)
        r->backoff_max_ms = r->backoff_min_ms;
    r->on_state = opts->on_state;
    r->on_message = opts->on_message;
    r->arg = opts->arg;
    r->rng = ae_now_ns() ^ ((uint64_t)(uintptr_t)r << 16) ^ 0x9E3779B97F4A7C15ULL;
    if (!r->rng)
        r->rng = 1;
    ev_timer_init(&r->cmd_timer, cmd_timer_cb, 0., 0.);
    r->cmd_timer.data = r;

    ae_redis_conn *conns[4] = {&r->cmd, &r->subc, &r->disc, &r->watch};
    for (int k = 0; k < 4; k++) {
        conns[k]->r = r;
        conns[k]->kind = k; /* K_CMD, K_SUB, K_DISC, K_WATCH */
        ev_timer_init(&conns[k]->timer, conn_timer_cb, 0., 0.);
        conns[k]->timer.data = conns[k];
    }

    conn_start(&r->cmd);
    if (r->channel)
        conn_start(&r->subc);
    if (r->channel && r->sentinel)
        conn_start(&r->watch);
    *out = r;
    return 0;
}

static void conn_shutdown(ae_redis_conn *c)
{
    redisAsyncContext *ac = c->ac;

    ev_timer_stop(c->r->loop, &c->timer);
    c->ac = NULL;
    c->state = CS_IDLE;
    if (ac)
        redisAsyncFree(ac); /* callbacks see c->ac != ac and do nothing */
}

void ae_redis_free(ae_redis *r)
{
    if (!r)
        return;
    /* Pending commands are dropped silently; hiredis hands each back (NULL reply) to
     * cmd_reply_cb during the free below, which frees the detached struct. */
    for (ae_redis_pending *p = r->head; p; p = p->next)
        p->detached = 1;
    r->head = r->tail = NULL;
    ev_timer_stop(r->loop, &r->cmd_timer);
    conn_shutdown(&r->cmd);
    conn_shutdown(&r->subc);
    conn_shutdown(&r->disc);
    conn_shutdown(&r->watch);
    ae_redis_target_free(&r->target);
    free(r->channel);
    free(r);
}

int ae_redis_connected(const ae_redis *r)
{
    return r && r->cmd.state == CS_READY;
}

int ae_redis_subscribed(const ae_redis *r)
{
    return r && r->channel && r->subc.state == CS_READY;
}

/* Commands that would change the connection's reply mode (and break the reply FIFO). */
static int mode_command(const char *s, size_t n)
{
    static const char *const bad[] = {"subscribe",   "psubscribe",   "ssubscribe",
                                      "unsubscribe", "punsubscribe", "monitor"};
    for (size_t i = 0; i < AE_ARRAY_LEN(bad); i++)
        if (strlen(bad[i]) == n && strncasecmp(s, bad[i], n) == 0)
            return 1;
    return 0;
}

int ae_redis_command(ae_redis *r, ae_redis_reply_cb cb, void *arg, int argc, const char **argv,
                     const size_t *argvlen)
{
    ae_redis_pending *p;
    redisAsyncContext *ac;

    if (!r || !cb || argc <= 0 || !argv || !argv[0])
        return AE_ERR_INVAL;
    if (mode_command(argv[0], argvlen ? argvlen[0] : strlen(argv[0])))
        return AE_ERR_INVAL;
    ac = r->cmd.ac;
    if (r->cmd.state != CS_READY || !ac)
        return AE_ERR_AGAIN;
    p = calloc(1, sizeof(*p));
    if (!p)
        return AE_ERR_NOMEM;
    p->r = r;
    p->cb = cb;
    p->arg = arg;
    p->deadline_ms = ae_now_ms() + r->command_timeout_ms;
    if (redisAsyncCommandArgv(ac, cmd_reply_cb, p, argc, argv, argvlen) != REDIS_OK) {
        free(p);
        return ac->c.flags & (AE_REDIS_DISCONNECTING | REDIS_FREEING) ? AE_ERR_AGAIN : AE_ERR_NOMEM;
    }
    if (r->tail)
        r->tail->next = p;
    else
        r->head = p;
    r->tail = p;
    r->stats.commands++;
    if (!ev_is_active(&r->cmd_timer))
        timer_arm(r, &r->cmd_timer, r->command_timeout_ms);
    return 0;
}

void ae_redis_get_stats(const ae_redis *r, ae_redis_stats *out)
{
    if (r)
        *out = r->stats;
    else
        memset(out, 0, sizeof(*out));
}
