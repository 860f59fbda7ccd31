/*
 * Internal to proxy/handoff/ (handoff.c: the engine thread; start.c: start, stop and what the
 * main thread posts; report.c: metrics and whereis): the engine's state. The public API is
 * handoff.h.
 *
 * Threads: fields under "Posted by the main thread" are guarded by lock; the flow cache by
 * flock (the main thread's whereis reads it); counters are atomics the main thread reads
 * (relaxed); everything else belongs to the engine thread.
 */
#ifndef AE_HANDOFF_INT_H
#define AE_HANDOFF_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>

#include "proxy/core/qsecrets.h"
#include "proxy/forward/forward.h"
#include "proxy/handoff/capture.h"
#include "proxy/handoff/handoff.h"
#include "proxy/handoff/ippkt.h"
#include "proxy/handoff/sockdiag.h"
#include "state/replay.h"
#include "state/tunnel.h"

#define HO_BATCH     32                         /* frames per sendmmsg / recvmmsg */
#define HO_SLOT      (65535 + AE_HOFF_OVERHEAD) /* one frame of the out batch */
#define HO_RX_SLOT   (65535 + AE_HOFF_OVERHEAD) /* one received frame */
#define HO_TUN_BURST 64                         /* TUN reads per readiness event */
#define HO_HOLD_BUFS 1024                       /* segments held while owners are asked */
#define HO_HOLD_SIZE 2048                       /* larger segments are not held (dropped) */
#define HO_HOLD_FLOW 16                         /* per flow */
#define HO_LOCAL_MS  5000                       /* a given-back flow is remembered this long */
#define HO_NSITES    (AE_TUNNEL_SITE_MAX + 1)
#define HO_NDROPS    (AE_HO_DROP_TUNNEL + AE_HOFF_NREASONS)

enum { F_FREE = 0, F_QUERY, F_OWNED, F_LOCAL };

/* Why a captured segment went back to this site's kernel (which answers it with a RST): the
 * label `reason` of anyedge_tcp_handoff_returned_total. */
enum {
    RET_NOT_MINE = 0, /* every live peer answered "not mine", or there was none to ask */
    RET_TIMEOUT,      /* no answer "mine" within tcp_handoff.query_timeout */
    RET_NOT_READY,    /* no ring keys or peer table yet (start-up) within query_timeout */
    RET_OWNER_GONE,   /* the cached owner is no longer live, or no longer holds the flow */
    RET_LOCAL,        /* a later segment of a flow already given back */
    RET_RST,          /* a RST of an unknown flow (never worth a query) */
    RET_BUDGET,       /* tcp_handoff.max_queries per second spent */
    HO_NRET
};
typedef struct {
    ae_flowkey key;
    uint32_t hash;
    int32_t hnext;        /* hash chain, or free list */
    int32_t qprev, qnext; /* FIFO of flows waiting for answers (F_QUERY only) */
    uint8_t state;
    uint8_t nheld;
    uint16_t waiting; /* answers still expected */
    uint16_t owner;   /* F_OWNED: the site holding the connection */
    uint64_t qid;
    uint64_t t0_ms;   /* query sent */
    uint64_t last_ms; /* last segment */
    uint16_t held[HO_HOLD_FLOW];
} hflow;

struct ae_handoff {
    /* Posted by the main thread (lock). */
    pthread_mutex_t lock;
    struct ae_qsecrets *new_sec;
    ae_fwd_peers *new_peers;
    ae_capture_listener *new_ls;
    size_t new_nls;
    int new_ls_set;
    int stop;

    pthread_t thread;
    int started;
    struct ev_loop *loop;
    ev_async wake;
    ev_io tun_io, sock_io;
    ev_timer qtimer, tick;

    uint16_t site;
    uint32_t window_ms, qtimeout_ms, ttl_ms, max_qps;
    ae_capture *cap;
    int tun, sock;
    ae_conntab *tab;
    ae_sockdiag *diag; /* engine thread: kernel lookups on conntab misses */

    /* Engine thread only. */
    struct ae_qsecrets *sec;
    ae_tunnel_keys *keys;
    ae_fwd_peers *peers;
    uint64_t seq, qid_next;
    ae_replay *replay;    /* one window per origin site */
    uint64_t *down_until; /* per site: its endpoint refused a frame (ICMP), not asked till then */
    uint64_t qps_second;
    uint32_t qps_count;

    /* Flow cache. flock guards it against whereis from the main thread. */
    pthread_mutex_t flock;
    hflow *flows;
    uint32_t nflows, nbuckets;
    int32_t *buckets;
    int32_t free_head, q_head, q_tail;
    uint8_t (*hold)[HO_HOLD_SIZE];
    uint16_t hold_len[HO_HOLD_BUFS];
    uint16_t hold_free[HO_HOLD_BUFS];
    uint32_t nhold_free;

    /* Out batch and receive buffers (allocated once). */
    uint8_t *slots;
    struct mmsghdr msgs[HO_BATCH];
    struct iovec iov[HO_BATCH];
    struct sockaddr_storage dst[HO_BATCH];
    uint16_t dst_site[HO_BATCH];
    int nout;
    uint8_t *rx;
    struct mmsghdr rmsgs[HO_BATCH];
    struct iovec riov[HO_BATCH];
    struct sockaddr_storage src[HO_BATCH];

    /* Counters, read by the main thread (relaxed). */
    _Atomic uint64_t orphans, cache_hits, injected, queries_in, flows_moved;
    _Atomic uint64_t returned[HO_NRET];
    _Atomic uint64_t kernel_held; /* tuples found by the kernel lookup, not the conntab */
    _Atomic uint64_t drops[HO_NDROPS];
    _Atomic uint64_t seg_out[HO_NSITES], seg_in[HO_NSITES], q_out[HO_NSITES];
    _Atomic uint64_t a_mine[HO_NSITES], a_not[HO_NSITES];
    _Atomic uint32_t nflows_used;
};

/* ---- handoff.c (the engine), used by start.c and report.c ---- */
/* The hand-off endpoint of a site whose forward endpoint is fwd: same address, port + 1.
 * Returns 0, or -1 for port 65535 or an address family other than IPv4/IPv6. */
int ae_ho_endpoint(const struct sockaddr *fwd, struct sockaddr_storage *out, socklen_t *len);
/* The cached flow of k (hash: its hash), or NULL. Under flock when not on the engine thread. */
hflow *ae_ho_flow_find(ae_handoff *h, const ae_flowkey *k, uint32_t hash);
/* The engine thread's main function (arg: the ae_handoff). */
void *ae_ho_thread_main(void *arg);
/* The engine's watchers' callbacks (data: the ae_handoff). */
void ae_ho_tun_cb(struct ev_loop *loop, ev_io *io, int revents);
void ae_ho_sock_cb(struct ev_loop *loop, ev_io *io, int revents);
void ae_ho_qtimer_cb(struct ev_loop *loop, ev_timer *t, int revents);
void ae_ho_tick_cb(struct ev_loop *loop, ev_timer *t, int revents);
void ae_ho_wake_cb(struct ev_loop *loop, ev_async *a, int revents);

#endif
