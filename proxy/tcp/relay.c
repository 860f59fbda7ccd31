/*
 * TLS-terminating TCP relay: client (TLS) <-> upstream server (plain TCP).
 *
 * One ae_tconn per client connection, owned by its worker. The relay itself is a pump that
 * moves bytes through two buffers (client->upstream, upstream->client) until nothing more can
 * move, then arms exactly the I/O events that would let it move again. A full buffer therefore
 * stops reading its source side (back-pressure), and an end-of-stream on one side is passed on
 * as a half-close to the other (close_notify towards the client, shutdown(SHUT_WR) towards the
 * upstream) while the opposite direction keeps flowing.
 */
#include "proxy/tcp/relay.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/core/buf.h"
#include "proxy/handoff/conntab.h"
#include "proxy/upstream/proxy_proto.h"
#include "proxy/core/reason.h"
#include "proxy/core/runtime.h"

typedef enum {
    TC_HANDSHAKE = 0, /* TLS handshake with the client in progress */
    TC_CONNECTING,    /* handshake done; connecting to an upstream server */
    TC_RELAY,         /* bytes flow both ways (either may be half-closed) */
    TC_CLOSED,        /* sockets closed; memory freed by the worker's gc */
    TC__COUNT
} tc_state;

static const char *const tc_state_names[TC__COUNT] = {"handshake", "connecting", "relay", "closed"};

#define AE_RELAY_ROUNDS 8 /* pump rounds per event before yielding to other connections */

enum { AFF_NONE = 0, AFF_HIT, AFF_MISS };
static const char *const aff_names[] = {"-", "hit", "miss"};

struct ae_tconn {
    ae_tconn *prev, *next; /* in w->conns, or w->dead once closed */
    ae_worker *w;
    uint64_t id;
    tc_state state;
    ae_runtime *rt;
    const ae_conf_listener *lis;
    ae_pool *pool;
    int cfd, ufd;
    ae_tls_conn *tls;
    ev_io cio, uio;
    ev_timer timer;
    ae_buf *c2u, *u2c;
    unsigned c_eof : 1;    /* client finished sending (close_notify or EOF) */
    unsigned u_eof : 1;    /* upstream finished sending */
    unsigned u_shut : 1;   /* we sent FIN to the upstream */
    unsigned c_shut : 1;   /* we sent close_notify to the client */
    unsigned counted : 1;  /* holds a slot in server->active */
    unsigned c_ready : 1;  /* client may have data: readable event seen, not yet drained */
    unsigned u_ready : 1;  /* upstream may have data */
    unsigned c_rww : 1;    /* the last TLS read wanted the socket writable */
    unsigned src_open : 1; /* counted open in the worker's per-source table */
    int server_idx;
    int pre_idx;      /* affinity: server chosen during the handshake (recorded in the ticket) */
    uint8_t affinity; /* affinity: AFF_NONE / AFF_HIT / AFF_MISS (a ticket was opened) */
    uint64_t tried;
    uint32_t attempts;
    ev_tstamp started, c_last, u_last, deadline;
    uint64_t bytes_in, bytes_out;
    struct sockaddr_storage peer, local;
    ae_tcp_close reason;  /* why it closed, for the access log */
    ae_conntab_entry *ct; /* in w->conntab (TCP hand-off), or NULL */
};

static void drive(ae_tconn *c);

static void set_state(ae_tconn *c, tc_state to)
{
    /* Legal moves: forward only, and any state may close. */
    if (!(to == c->state + 1 || to == TC_CLOSED)) {
        AE_CERROR(c->id, "BUG: illegal connection state move %s -> %s", tc_state_names[c->state],
                  tc_state_names[to]);
        abort();
    }
    c->state = to;
}

static void watch(ae_tconn *c, ev_io *io, int events)
{
    if ((io->events & (EV_READ | EV_WRITE)) == events && (events == 0 || ev_is_active(io)))
        return;
    ev_io_stop(c->w->loop, io);
    if (events != 0) {
        ev_io_modify(io, events);
        ev_io_start(c->w->loop, io);
    }
}

static void access_log(ae_tconn *c)
{
    if (!c->rt->conf->log.access)
        return;
    char client[64], dur[32], in[32], out[32];
    ae_addr_format((struct sockaddr *)&c->peer, client, sizeof(client));
    snprintf(dur, sizeof(dur), "%.3f", (ev_now(c->w->loop) - c->started) * 1000.0);
    snprintf(in, sizeof(in), "%llu", (unsigned long long)c->bytes_in);
    snprintf(out, sizeof(out), "%llu", (unsigned long long)c->bytes_out);
    int hs = c->tls && c->state != TC_HANDSHAKE;
    ae_log_access(c->id, "listener", c->lis->name, "client", client, "sni",
                  c->tls ? ae_tls_conn_sni(c->tls) : "", "alpn", hs ? ae_tls_conn_alpn(c->tls) : "",
                  "tls", hs ? ae_tls_conn_version(c->tls) : "", "resumed",
                  hs && ae_tls_conn_resumed(c->tls) ? "1" : "0", "upstream",
                  c->server_idx >= 0 ? c->pool->servers[c->server_idx]->addr.text : "-", "affinity",
                  aff_names[hs && ae_tls_conn_resumed(c->tls) ? c->affinity : AFF_NONE], "bytes_in",
                  in, "bytes_out", out, "duration_ms", dur, "reason", ae_tcp_close_name(c->reason),
                  (const char *)NULL);
}

static void close_upstream(ae_tconn *c)
{
    ev_io_stop(c->w->loop, &c->uio);
    if (c->ufd >= 0)
        close(c->ufd);
    c->ufd = -1;
    if (c->counted) {
        atomic_fetch_sub_explicit(&c->pool->servers[c->server_idx]->active, 1,
                                  memory_order_relaxed);
        c->counted = 0;
    }
}

/* Closes both sides now. The object stays allocated until the worker's gc runs, after every
 * callback of this loop iteration has returned. */
static void conn_close(ae_tconn *c, ae_tcp_close reason)
{
    if (c->state == TC_CLOSED)
        return;
    ae_worker *w = c->w;
    c->reason = reason;
    access_log(c);
    set_state(c, TC_CLOSED);
    ev_io_stop(w->loop, &c->cio);
    ev_timer_stop(w->loop, &c->timer);
    close_upstream(c);
    ae_tls_conn_free(c->tls);
    c->tls = NULL;
    close(c->cfd);
    c->cfd = -1;
    ae_conntab_remove(w->conntab, c->ct, ae_now_ms());
    c->ct = NULL;
    if (c->src_open && w->srclim != NULL)
        ae_srclimit_tcp_close(w->srclim, (struct sockaddr *)&c->peer);
    ae_worker_buf_put(w, c->c2u);
    ae_worker_buf_put(w, c->u2c);
    c->c2u = c->u2c = NULL;
    /* Move from the open list to the dead list. */
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = w->dead;
    w->dead = c;
    w->nconns--;
    atomic_fetch_sub_explicit(&w->counters.active, 1, memory_order_relaxed);
    ae_count(&w->counters, AE_M_CLOSED, 1);
}

/* Ends the connection politely: close_notify to the client (best effort), then close. */
static void conn_close_clean(ae_tconn *c, ae_tcp_close reason)
{
    if (c->tls != NULL && c->state != TC_HANDSHAKE && !c->c_shut)
        (void)ae_tls_conn_shutdown(c->tls);
    conn_close(c, reason);
}

void ae_tconn_free(ae_tconn *c)
{
    ae_runtime_unref(c->rt);
    free(c);
}

void ae_tconn_gc(ae_worker *w)
{
    while (w->dead != NULL) {
        ae_tconn *c = w->dead;
        w->dead = c->next;
        ae_tconn_free(c);
    }
}

void ae_tconn_close_all(ae_worker *w, ae_metric why)
{
    while (w->conns != NULL) {
        ae_count(&w->counters, why, 1);
        conn_close_clean(w->conns, AE_TCLOSE_SHUTDOWN);
    }
}

/* ---- timers ---- */

static void arm_timer(ae_tconn *c, ev_tstamp deadline)
{
    c->deadline = deadline;
    ev_timer_stop(c->w->loop, &c->timer);
    ev_timer_set(&c->timer, deadline - ev_now(c->w->loop), 0);
    ev_timer_start(c->w->loop, &c->timer);
}

/* The relay's idle deadline is derived from the last activity of each side: bumping a
 * timestamp per I/O is cheaper than re-arming a timer per I/O (libev's "lazy" timer). */
static ev_tstamp idle_deadline(ae_tconn *c)
{
    const ae_conf *cf = c->rt->conf;
    ev_tstamp a = c->c_last + cf->timeouts.client_idle_ms / 1000.0;
    ev_tstamp b = c->u_last + cf->timeouts.upstream_idle_ms / 1000.0;
    return a < b ? a : b;
}

static void try_connect(ae_tconn *c);

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ae_tconn *c = t->data;
    switch (c->state) {
    case TC_HANDSHAKE:
        ae_count(&c->w->counters, AE_M_HS_TIMEOUT, 1);
        conn_close(c, AE_TCLOSE_HANDSHAKE_TIMEOUT);
        return;
    case TC_CONNECTING: {
        ae_count(&c->w->counters, AE_M_UP_CONNECT_TIMEOUT, 1);
        ae_count(&c->w->counters, AE_M_UP_CONNECT_FAIL, 1);
        ae_pool_report_connect(c->pool, (size_t)c->server_idx, 0, ae_now_ms());
        AE_CWARN(c->id, "upstream %s: connect timeout", c->pool->servers[c->server_idx]->addr.text);
        close_upstream(c);
        try_connect(c);
        return;
    }
    case TC_RELAY: {
        ev_tstamp d = idle_deadline(c);
        if (d <= ev_now(loop) + 0.001) {
            ae_count(&c->w->counters, AE_M_IDLE_TIMEOUT, 1);
            conn_close_clean(c, AE_TCLOSE_IDLE_TIMEOUT);
            return;
        }
        arm_timer(c, d);
        return;
    }
    default:
        return;
    }
}

/* ---- upstream connect ---- */

static void relay_start(ae_tconn *c)
{
    ae_worker *w = c->w;
    set_state(c, TC_RELAY);
    c->c_last = c->u_last = ev_now(w->loop);
    c->c_ready = c->u_ready = 1;
    if (c->lis->proxy_protocol != AE_PP_NONE) {
        c->c2u = ae_worker_buf_get(w, c->rt->conf->tune.buffer_size);
        if (c->c2u == NULL) {
            conn_close_clean(c, AE_TCLOSE_NOMEM);
            return;
        }
        int n = ae_pp_encode(c->lis->proxy_protocol, (struct sockaddr *)&c->peer,
                             (struct sockaddr *)&c->local, ae_tls_conn_alpn(c->tls),
                             ae_tls_conn_sni(c->tls), c->c2u->data, c->c2u->cap);
        if (n < 0) {
            conn_close_clean(c, AE_TCLOSE_PROXY_HEADER);
            return;
        }
        c->c2u->len = (uint32_t)n;
    }
    arm_timer(c, idle_deadline(c));
    drive(c);
}

static void connect_done(ae_tconn *c)
{
    int err = 0;
    socklen_t l = sizeof(err);
    if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &l) != 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return;
    if (err != 0) {
        ae_count(&c->w->counters, AE_M_UP_CONNECT_FAIL, 1);
        ae_pool_report_connect(c->pool, (size_t)c->server_idx, 0, ae_now_ms());
        AE_CWARN(c->id, "upstream %s: connect: %s", c->pool->servers[c->server_idx]->addr.text,
                 strerror(err));
        close_upstream(c);
        try_connect(c);
        return;
    }
    ae_pool_report_connect(c->pool, (size_t)c->server_idx, 1, ae_now_ms());
    relay_start(c);
}

static void try_connect(ae_tconn *c)
{
    ae_worker *w = c->w;
    uint64_t now = ae_now_ms();
    for (;;) {
        int idx = -1;
        if (c->pre_idx >= 0 && !((c->tried >> (c->pre_idx % 64)) & 1) &&
            ae_upstream_usable(c->pool, c->pool->servers[c->pre_idx], now))
            idx = c->pre_idx; /* affinity: the server named in the ticket */
        else if (c->attempts < c->pool->nservers && c->pool->conf->balance == AE_BAL_HASH) {
            /* TCP relays bytes: the client's address is the only key (docs/config.md). */
            const ae_hash_spec *h = &c->pool->conf->hash;
            int first = 0;
            idx = ae_pool_pick_hash(
                c->pool, ae_aff_addr_key((struct sockaddr *)&c->peer, h->v4_prefix, h->v6_prefix),
                c->tried, now, &first);
            if (idx >= 0)
                ae_pool_count_affinity(c->pool, first ? AE_AFF_HIT : AE_AFF_MOVED);
        } else if (c->attempts < c->pool->nservers)
            idx = ae_pool_pick(c->pool, c->tried, now);
        if (idx < 0) {
            ae_count(&w->counters, AE_M_NO_UPSTREAM, 1);
            AE_CWARN(c->id, "upstream pool %s: no server available after %u attempts",
                     c->pool->conf->name, c->attempts);
            conn_close_clean(c, AE_TCLOSE_NO_UPSTREAM);
            return;
        }
        c->attempts++;
        c->tried |= 1ull << (idx % 64);
        c->server_idx = idx;
        ae_upstream_server *s = c->pool->servers[idx];
        c->ufd = socket(s->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->ufd < 0) {
            AE_CERROR(c->id, "upstream socket: %s", strerror(errno));
            conn_close_clean(c, AE_TCLOSE_UPSTREAM_SOCKET);
            return;
        }
        int one = 1;
        setsockopt(c->ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        atomic_fetch_add_explicit(&s->active, 1, memory_order_relaxed);
        c->counted = 1;
        ev_io_set(&c->uio, c->ufd, 0);
        if (connect(c->ufd, (struct sockaddr *)&s->addr.sa, s->addr.len) == 0) {
            ae_pool_report_connect(c->pool, (size_t)idx, 1, now);
            relay_start(c);
            return;
        }
        if (errno == EINPROGRESS) {
            watch(c, &c->uio, EV_WRITE);
            arm_timer(c, ev_now(w->loop) + c->pool->conf->connect_timeout_ms / 1000.0);
            return;
        }
        ae_count(&w->counters, AE_M_UP_CONNECT_FAIL, 1);
        ae_pool_report_connect(c->pool, (size_t)idx, 0, now);
        AE_CWARN(c->id, "upstream %s: connect: %s", s->addr.text, strerror(errno));
        close_upstream(c);
    }
}

/* ---- upstream affinity (balance: affinity) ----
 * The server is chosen during the handshake, when the session ticket is made (TLS 1.3 sends
 * it at the end of the server's handshake, before any upstream connect), and recorded in it;
 * a resumed session's ticket names the server to go back to. */

static size_t aff_ticket_appdata(void *arg, uint8_t *out, size_t cap)
{
    ae_tconn *c = arg;
    if (c->pre_idx < 0)
        c->pre_idx = ae_pool_pick(c->pool, 0, ae_now_ms());
    if (c->pre_idx < 0)
        return 0; /* nothing usable now: a ticket without a record */
    return ae_affinity_encode(c->pool->servers[c->pre_idx]->addr.text, out, cap);
}

static void aff_resumed_appdata(void *arg, const uint8_t *data, size_t len, int *renew)
{
    ae_tconn *c = arg;
    int idx = ae_affinity_find(c->pool, data, len);
    if (idx >= 0 && ae_upstream_usable(c->pool, c->pool->servers[idx], ae_now_ms())) {
        c->pre_idx = idx;
        c->affinity = AFF_HIT;
        return;
    }
    /* No record, an unknown server or a down one: the pick happens when the new ticket is
     * made (or at connect time) and the client's new ticket names it. */
    c->pre_idx = -1;
    c->affinity = AFF_MISS;
    *renew = 1;
}

/* ---- handshake ---- */

static void handshake(ae_tconn *c)
{
    ae_worker *w = c->w;
    ae_tls_fail_reason why = AE_TLS_FAIL_OTHER;
    int rv = ae_tls_conn_handshake(c->tls, &why);
    if (rv == AE_TLS_WANT_READ || rv == AE_TLS_WANT_WRITE) {
        watch(c, &c->cio, rv == AE_TLS_WANT_READ ? EV_READ : EV_WRITE);
        return;
    }
    if (rv != 0) {
        ae_count(&w->counters, (ae_metric)(AE_M_HS_FAIL_PROTOCOL + why), 1);
        AE_CDEBUG(c->id, "handshake failed: %s", ae_tls_fail_reason_names[why]);
        conn_close(c, ae_tcp_close_hs_fail(why));
        return;
    }
    int resumed = ae_tls_conn_resumed(c->tls);
    ae_count(&w->counters, resumed ? AE_M_HS_RESUMED : AE_M_HS_FULL, 1);
    if (resumed && c->pool->conf->balance == AE_BAL_AFFINITY)
        ae_count(&w->counters, c->affinity == AFF_HIT ? AE_M_AFFINITY_HIT : AE_M_AFFINITY_MISS, 1);
    watch(c, &c->cio, 0);
    set_state(c, TC_CONNECTING);
    try_connect(c);
}

/* ---- relay ---- */

static ae_buf *need_buf(ae_tconn *c, ae_buf **b)
{
    if (*b == NULL)
        *b = ae_worker_buf_get(c->w, c->rt->conf->tune.buffer_size);
    return *b;
}

static void release_if_empty(ae_tconn *c, ae_buf **b)
{
    if (*b != NULL && (*b)->len == 0) {
        ae_worker_buf_put(c->w, *b);
        *b = NULL;
    }
}

static int tls_want_events(ssize_t rv)
{
    return rv == AE_TLS_WANT_WRITE ? EV_WRITE : EV_READ;
}

/* The four steps of one relay round. Each returns 0, or -1 when it closed c; it sets
 * *progress when bytes (or an EOF) moved and adds the events its side waits for. */

/* client -> c2u */
static int client_read(ae_tconn *c, ev_tstamp now, int *cev, int *progress)
{
    ae_buf *b = c->c2u;
    if (c->c_eof || !c->c_ready || (b != NULL && b->off + b->len >= b->cap))
        return 0;
    if ((b = need_buf(c, &c->c2u)) == NULL) {
        conn_close_clean(c, AE_TCLOSE_NOMEM);
        return -1;
    }
    if (b->len == 0)
        b->off = 0;
    size_t room = b->cap - b->off - b->len;
    ssize_t n = ae_tls_conn_read(c->tls, b->data + b->off + b->len, room);
    if (n > 0) {
        b->len += (uint32_t)n;
        c->bytes_in += (uint64_t)n;
        c->c_last = now;
        *progress = 1;
        /* Nothing buffered in OpenSSL: the socket was read as far as it had data
         * (read-ahead), so the next read would most likely be EAGAIN. Wait for the
         * (level-triggered) readable event instead of paying that syscall. */
        if ((size_t)n < room && ae_tls_conn_pending(c->tls) == 0)
            c->c_ready = 0;
    } else if (n == AE_TLS_WANT_READ || n == AE_TLS_WANT_WRITE) {
        c->c_ready = 0;
        c->c_rww = n == AE_TLS_WANT_WRITE; /* retry once the socket is writable */
        *cev |= tls_want_events(n);
    } else if (n == AE_ERR_CLOSED) {
        c->c_eof = 1;
        *progress = 1;
    } else {
        conn_close(c, AE_TCLOSE_CLIENT_ERROR);
        return -1;
    }
    return 0;
}

/* c2u -> upstream; the upstream's FIN once the client's EOF is relayed */
static int upstream_write(ae_tconn *c, ev_tstamp now, int *uev, int *progress)
{
    ae_buf *b = c->c2u;
    if (b != NULL && b->len > 0) {
        ssize_t n = send(c->ufd, b->data + b->off, b->len, MSG_NOSIGNAL);
        if (n > 0) {
            b->off += (uint32_t)n;
            b->len -= (uint32_t)n;
            c->u_last = now;
            *progress = 1;
        } else if (errno == EAGAIN || errno == EINTR) {
            *uev |= EV_WRITE;
        } else {
            conn_close_clean(c, AE_TCLOSE_UPSTREAM_WRITE_ERROR);
            return -1;
        }
    }
    release_if_empty(c, &c->c2u);
    if (c->c_eof && c->c2u == NULL && !c->u_shut) {
        shutdown(c->ufd, SHUT_WR);
        c->u_shut = 1;
    }
    return 0;
}

/* upstream -> u2c */
static int upstream_read(ae_tconn *c, ev_tstamp now, int *uev, int *progress)
{
    ae_buf *b = c->u2c;
    if (c->u_eof || !c->u_ready || (b != NULL && b->off + b->len >= b->cap))
        return 0;
    if ((b = need_buf(c, &c->u2c)) == NULL) {
        conn_close_clean(c, AE_TCLOSE_NOMEM);
        return -1;
    }
    if (b->len == 0)
        b->off = 0;
    size_t room = b->cap - b->off - b->len;
    ssize_t n = recv(c->ufd, b->data + b->off + b->len, room, 0);
    if (n > 0) {
        b->len += (uint32_t)n;
        c->u_last = now;
        *progress = 1;
        if ((size_t)n < room) /* short read: the socket is drained */
            c->u_ready = 0;
    } else if (n == 0) {
        c->u_eof = 1;
        *progress = 1;
    } else if (errno == EAGAIN || errno == EINTR) {
        c->u_ready = 0;
        *uev |= EV_READ;
    } else {
        conn_close_clean(c, AE_TCLOSE_UPSTREAM_READ_ERROR);
        return -1;
    }
    return 0;
}

/* u2c -> client; close_notify and the client's FIN once the upstream's EOF is relayed */
static int client_write(ae_tconn *c, ev_tstamp now, int *cev, int *progress)
{
    ae_buf *b = c->u2c;
    if (b != NULL && b->len > 0) {
        ssize_t n = ae_tls_conn_write(c->tls, b->data + b->off, b->len);
        if (n > 0) {
            b->off += (uint32_t)n;
            b->len -= (uint32_t)n;
            c->bytes_out += (uint64_t)n;
            c->c_last = now;
            *progress = 1;
        } else if (n == AE_TLS_WANT_READ || n == AE_TLS_WANT_WRITE) {
            *cev |= tls_want_events(n);
        } else {
            conn_close(c, AE_TCLOSE_CLIENT_WRITE_ERROR);
            return -1;
        }
    }
    release_if_empty(c, &c->u2c);
    if (c->u_eof && c->u2c == NULL && !c->c_shut) {
        /* FIN only after the close_notify is out: a full socket buffer retries it. */
        int rv = ae_tls_conn_shutdown(c->tls);
        if (rv == AE_TLS_WANT_WRITE || rv == AE_TLS_WANT_READ) {
            *cev |= tls_want_events(rv);
        } else {
            shutdown(c->cfd, SHUT_WR);
            c->c_shut = 1;
        }
    }
    return 0;
}

static void relay(ae_tconn *c)
{
    ae_worker *w = c->w;
    ev_tstamp now = ev_now(w->loop);
    int cev = 0, uev = 0, progress = 0;
    for (int round = 0; round < AE_RELAY_ROUNDS; round++) {
        progress = 0;
        cev = uev = 0;
        if (client_read(c, now, &cev, &progress) != 0 ||
            upstream_write(c, now, &uev, &progress) != 0 ||
            upstream_read(c, now, &uev, &progress) != 0 ||
            client_write(c, now, &cev, &progress) != 0)
            return;
        if (c->c_eof && c->u_eof && c->c_shut && c->c2u == NULL && c->u2c == NULL) {
            conn_close(c, AE_TCLOSE_DONE);
            return;
        }
        if (!progress)
            break;
    }
    /* A side not known to be readable is watched while its buffer has room. */
    if (!c->c_eof && !c->c_ready && (c->c2u == NULL || c->c2u->off + c->c2u->len < c->c2u->cap))
        cev |= EV_READ;
    if (!c->u_eof && !c->u_ready && (c->u2c == NULL || c->u2c->off + c->u2c->len < c->u2c->cap))
        uev |= EV_READ;
    watch(c, &c->cio, cev);
    watch(c, &c->uio, uev);
    if (progress) /* out of rounds with work left: continue on the next loop iteration */
        ev_feed_event(w->loop, &c->cio, EV_CUSTOM);
}

static void drive(ae_tconn *c)
{
    switch (c->state) {
    case TC_HANDSHAKE:
        handshake(c);
        break;
    case TC_RELAY: {
        uint64_t in0 = c->bytes_in, out0 = c->bytes_out;
        relay(c);
        ae_counters *k = &c->w->counters;
        ae_count(k, AE_M_BYTES_IN, c->bytes_in - in0);
        ae_count(k, AE_M_BYTES_OUT, c->bytes_out - out0);
        break;
    }
    default:
        break;
    }
}

static void client_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    ae_tconn *c = io->data;
    if (revents & EV_READ)
        c->c_ready = 1;
    if ((revents & EV_WRITE) && c->c_rww) {
        c->c_ready = 1; /* the TLS read that wanted to write can go on */
        c->c_rww = 0;
    }
    drive(c);
}

static void upstream_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    ae_tconn *c = io->data;
    if (c->state == TC_CONNECTING) {
        connect_done(c);
        return;
    }
    if (revents & EV_READ)
        c->u_ready = 1;
    drive(c);
}

void ae_tconn_accept(ae_worker *w, ae_wlistener *l, int fd, const struct sockaddr *peer,
                     socklen_t peerlen)
{
    ae_runtime *rt = w->rt;
    ae_count(&w->counters, AE_M_ACCEPTED, 1);
    if (rt == NULL || l->index >= rt->conf->nlisteners ||
        w->nconns >= rt->conf->tune.max_connections) {
        ae_count(&w->counters, AE_M_CONN_LIMIT, 1);
        ae_worker_overload(w, AE_OVL_TCP_LIMIT, 0);
        close(fd);
        return;
    }
    if (w->srclim != NULL) {
        ae_src_verdict v = ae_srclimit_tcp_open(w->srclim, peer, (uint64_t)(ev_now(w->loop) * 1e9));
        if (v != AE_SRC_OK) {
            ae_count(&w->counters, (ae_metric)(AE_M_SRC_B0 + v), 1);
            ae_worker_overload(w, AE_OVL_SOURCE, 0);
            close(fd);
            return;
        }
    }
    ae_tconn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        if (w->srclim != NULL)
            ae_srclimit_tcp_close(w->srclim, peer);
        close(fd);
        return;
    }
    c->src_open = w->srclim != NULL;
    c->w = w;
    c->id = w->next_conn_id++;
    c->rt = ae_runtime_ref(rt);
    c->lis = &rt->conf->listeners[l->index];
    c->pool = &rt->pools[c->lis->upstream_index];
    c->cfd = fd;
    c->ufd = -1;
    c->server_idx = -1;
    c->pre_idx = -1;
    c->reason = AE_TCLOSE_NONE;
    memcpy(&c->peer, peer, peerlen < sizeof(c->peer) ? peerlen : sizeof(c->peer));
    if (c->lis->proxy_protocol != AE_PP_NONE || w->conntab != NULL) {
        socklen_t sl = sizeof(c->local);
        getsockname(fd, (struct sockaddr *)&c->local, &sl);
    }
    if (w->conntab != NULL) /* TCP hand-off: segments other sites forward are checked here */
        c->ct = ae_conntab_insert(w->conntab, (struct sockaddr *)&c->peer,
                                  (struct sockaddr *)&c->local, w->id, c->id, ae_now_ms());
    c->started = ev_now(w->loop);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ev_io_init(&c->cio, client_cb, fd, EV_READ);
    c->cio.data = c;
    ev_io_init(&c->uio, upstream_cb, -1, 0);
    c->uio.data = c;
    ev_timer_init(&c->timer, timer_cb, 0, 0);
    c->timer.data = c;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    atomic_fetch_add_explicit(&w->counters.active, 1, memory_order_relaxed);
    if (ae_tls_conn_new(rt->tls, fd, &c->tls) != 0) {
        conn_close(c, AE_TCLOSE_TLS_ALLOC);
        return;
    }
    if (c->pool->conf->balance == AE_BAL_AFFINITY) {
        ae_tls_conn_hooks hooks = {aff_ticket_appdata, aff_resumed_appdata, c};
        ae_tls_conn_set_hooks(c->tls, &hooks);
    }
    arm_timer(c, c->started + rt->conf->timeouts.handshake_ms / 1000.0);
    handshake(c);
}
