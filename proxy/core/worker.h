/*
 * Worker threads (worker.c): one libev loop each, its listening sockets, messages from the main
 * thread; the worker context the engines (tcp_relay.c, quic.c, forward.c) work in.
 *
 * Each worker thread owns its loop, its listening sockets (handed over by the main thread in a
 * message), its connections, its buffer pool and its metric counters. Workers never touch each
 * other's objects; the main thread talks to a worker only through ae_worker_post.
 */
#ifndef AE_WORKER_H
#define AE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "conf/conf.h"
#include "proxy/core/buf.h"
#include "proxy/core/metrics.h"
#include "proxy/core/qsecrets.h"
#include "proxy/core/runtime.h"

typedef struct ae_worker ae_worker;

/* Overload events a worker reports in one log line per period (ae_worker_overload). */
typedef enum {
    AE_OVL_ACCEPT = 0, /* accept(2) failed (EMFILE, ENFILE, ENOBUFS, ENOMEM...) */
    AE_OVL_TCP_LIMIT,  /* a TCP connection refused by tune.max_connections */
    AE_OVL_QUIC_LIMIT, /* a QUIC Initial refused by tune.max_connections */
    AE_OVL_SOURCE,     /* something refused by a per-source limit (limits.*) */
    AE_OVL__COUNT
} ae_overload;
#define AE_OVERLOAD_LOG_S 10.0 /* at most one overload line per worker per this period */
typedef struct ae_tconn ae_tconn;

/* One listening socket owned by a worker (its member of the SO_REUSEPORT group). */
typedef struct ae_wlistener {
    ev_io io;       /* TCP: accept; QUIC: datagrams */
    ev_timer pause; /* accept paused after EMFILE/ENFILE */
    int fd;
    size_t index; /* listener index in the worker's current runtime */
    ae_listener_proto proto;
    struct ae_qep *qep; /* QUIC endpoint (proxy/quic/quic.c), NULL for TCP */
    ae_worker *w;
    struct ae_wlistener *next;
} ae_wlistener;

/* A listening fd handed from the main thread to a worker (ownership moves with it). */
typedef struct {
    int fd;
    size_t index;
    ae_listener_proto proto; /* TCP: listening stream socket; QUIC: bound UDP socket */
} ae_lfd;

typedef enum {
    AE_MSG_RUNTIME = 0, /* adopt rt (a reference moves with it) and exactly the listeners in fds */
    AE_MSG_STOP = 1,    /* stop accepting, drain connections up to drain_ms, then exit */
    AE_MSG_SECRETS = 2, /* adopt sec (a reference moves with it): QUIC secrets of a new ring */
    AE_MSG_PEERS = 3,   /* adopt peers (a reference moves with it): forwarding peer table */
    AE_MSG_SITE_DRAIN = 4,   /* site drain (anycast.c): HTTP/3 GOAWAY, keep serving/accepting */
    AE_MSG_SITE_UNDRAIN = 5, /* end of the site drain */
} ae_msg_type;

typedef struct ae_msg {
    ae_msg_type type;
    ae_runtime *rt;
    ae_qsecrets *sec;
    struct ae_fwd_peers *peers;
    int fwd_fd; /* AE_MSG_RUNTIME: this worker's site.forward socket, -1 none
                   (proxy/forward/forward.c) */
    ae_lfd *fds;
    size_t nfds;
    struct ae_msg *next;
} ae_msg;

struct ae_worker {
    int id;
    pthread_t thread;
    int started;
    struct ev_loop *loop;
    ev_async wake;
    ev_prepare gc;        /* frees closed connections after callbacks return */
    ev_timer drain;       /* end of the drain period */
    pthread_mutex_t lock; /* protects the message queue only */
    ae_msg *mq_head, *mq_tail;

    ae_runtime *rt; /* current runtime for new connections */
    ae_wlistener *listeners;
    ae_tconn *conns; /* open connections (intrusive list) */
    ae_tconn *dead;  /* closed, to free in gc */
    size_t nconns;
    int stopping;
    int site_draining; /* AE_MSG_SITE_DRAIN received (not undrained): QUIC conns get GOAWAY */

    ae_bufpool bufs; /* relay buffers; kept at the size of rt's tune.buffer_size */
    uint64_t next_conn_id;

    ae_counters counters;
    struct ae_qworker *quic; /* QUIC state of this worker (proxy/quic/quic.c), NULL until needed */
    struct ae_fwd_worker *fwd; /* forwarding state (proxy/forward/forward.c), set before start */
    struct ae_conntab
        *conntab; /* TCP hand-off: connections by 4-tuple, or NULL (set before start) */
    struct ae_srclimit *srclim; /* per-source limits of the current runtime, NULL: none set */

    /* Set by the main thread before start: signalled when the worker's loop has ended. */
    struct ev_loop *exit_loop;
    ev_async *exit_notify;
    _Atomic int exited; /* set by the worker thread when its loop has ended */
    /* overload events not logged yet (ae_worker_overload), the last accept errno, the time of
     * the last line, and the timer that writes the pending ones out */
    uint64_t ovl[AE_OVL__COUNT];
    int ovl_errno;
    ev_tstamp ovl_logged;
    ev_timer ovl_timer;
};

/* Creates a worker (not started). */
int ae_worker_new(int id, ae_worker **out);
/* Worker thread: notes an overload event (err: the errno of an accept failure, else 0). The
 * first one is logged at once, the ones after it in one summary line per AE_OVERLOAD_LOG_S
 * (counters count every event as they always did). */
void ae_worker_overload(ae_worker *w, ae_overload what, int err);
int ae_worker_start(ae_worker *w);
/* Queues a message (ownership of msg and its contents moves to the worker). Any thread. */
void ae_worker_post(ae_worker *w, ae_msg *msg);
/* Joins the thread and frees the worker. */
void ae_worker_free(ae_worker *w);

/* The worker's buffer pool (buf.h): get returns an empty buffer of size bytes or NULL; put
 * accepts NULL. */
static inline ae_buf *ae_worker_buf_get(ae_worker *w, uint32_t size)
{
    return ae_buf_get(&w->bufs, size);
}
static inline void ae_worker_buf_put(ae_worker *w, ae_buf *b)
{
    ae_buf_put(&w->bufs, b);
}

/* QUIC listeners, connections and their drain: proxy/quic/quic.h. */

#endif
