/*
 * Inter-site forwarding of QUIC packets (issue #5) and the hand-off of packets between the
 * workers of one site.
 *
 * A packet whose DCID is in no connection table of the receiving worker is routed by the
 * owner its CID names (state/cid.h): this worker (stateless reset, as before), another worker
 * of this site (hand-off through that worker's inbox: a bounded lock-free ring of preallocated
 * datagram slots + ev_async, no allocation per packet), another live site (a tunnel frame,
 * state/tunnel.h, to that site's `site.forward` endpoint), or a dead / unknown / draining site
 * (stateless reset: the reset secret is shared, so the token is valid). Initials are never
 * forwarded. The owner verifies the frame and feeds the datagram to the connection as if it had
 * arrived directly, with the client's address as the remote path; replies leave the owner's QUIC
 * socket from the anycast address straight to the client (direct server return), or, with
 * `site.return: tunnel`, go back in reply frames to the site that received the client's packets,
 * which sends them to the client from the anycast address.
 *
 * Threads: the peer table (ae_fwd_peers) is an immutable, reference-counted snapshot the main
 * thread builds from the site registry every second and posts to every worker (AE_MSG_PEERS).
 * Each worker owns its ae_fwd_worker (forward socket, tunnel keys, out batch); other workers
 * only push into its inbox (multi-producer, single consumer) and the admin thread only reads
 * the per-site counters (relaxed atomics).
 */
#ifndef AE_FORWARD_H
#define AE_FORWARD_H

#include <stdatomic.h>
#include <stdint.h>

#include "proxy/quic/quic.h"
#include "state/cid.h"
#include "state/state.h"
#include "state/tunnel.h"

#define AE_FWD_WINDOW_DEFAULT_MS 5000

/* ---- peer table (main thread builds, workers read) ---- */

typedef struct {
    uint16_t site;
    uint8_t live;        /* registry record present and heartbeat fresh */
    uint8_t draining;    /* draining for longer than the forward deadline: no more forwarding */
    ae_tunnel_addr addr; /* the site's forward endpoint */
    socklen_t addrlen;   /* 0: the site publishes none */
} ae_fwd_peer;

typedef struct ae_fwd_peers {
    _Atomic int refcnt;
    size_t n;
    ae_fwd_peer p[]; /* sorted by site */
} ae_fwd_peers;

/* n peers, refcount 1, entries zeroed (fill p[0..n) sorted by site). NULL on no memory. */
ae_fwd_peers *ae_fwd_peers_new(size_t n);
ae_fwd_peers *ae_fwd_peers_ref(ae_fwd_peers *p);
void ae_fwd_peers_unref(ae_fwd_peers *p); /* accepts NULL; any thread */
const ae_fwd_peer *ae_fwd_peers_find(const ae_fwd_peers *p, uint16_t site);

/* ---- the decision (pure, unit-tested) ---- */

typedef enum {
    AE_FWD_LOCAL = 0,  /* not for forwarding (Initial, VN, unknown version, long header with a
                          client-chosen DCID...): the caller goes on as before */
    AE_FWD_RESET_SELF, /* our site and this worker (or no such worker): no such connection */
    AE_FWD_HANDOFF,    /* our site, another worker: hand the datagram over */
    AE_FWD_FORWARD,    /* another live site with a forward endpoint: tunnel frame */
    AE_FWD_RESET_DEAD, /* short header for a dead / unknown / draining site: stateless reset */
    AE_FWD_DROP,       /* undecodable short header, long header for a site we cannot reach,
                          or a packet that came through the tunnel and names another site */
} ae_fwd_action;

typedef struct {
    uint16_t self_site;
    int self_worker;
    int nworkers;
    const ae_fwd_peers *peers; /* may be NULL: no other site known */
    int from_tunnel;           /* the datagram came in a tunnel frame: never forward again */
} ae_fwd_ctx;

/* Decides what to do with datagram pkt[0, len) whose DCID (dcid, dcidlen) is in no connection
 * table of this worker. *site / *worker receive the decoded owner when the CID decodes. */
ae_fwd_action ae_fwd_decide(ae_cid_keys *k, const ae_fwd_ctx *ctx, const uint8_t *pkt, size_t len,
                            const uint8_t *dcid, size_t dcidlen, uint16_t *site, uint8_t *worker);
const char *ae_fwd_action_name(ae_fwd_action a);

/* ---- per-worker state ---- */

typedef struct ae_fwd_worker ae_fwd_worker;
typedef struct ae_fwd_group ae_fwd_group;

/* Main thread, before the workers start: one ae_fwd_worker per worker (w[i]->fwd), inboxes
 * registered on the workers' loops. */
int ae_fwd_group_new(ae_worker **w, size_t n, ae_fwd_group **out);
/* After every worker has been joined. Accepts NULL. */
void ae_fwd_group_free(ae_fwd_group *g);
/* Whether site's forward endpoint refused a frame lately (ICMP), as of wall clock now_ms; any
 * thread. */
int ae_fwd_group_unreachable(ae_fwd_group *g, uint16_t site, uint64_t now_ms);

/* Worker thread: the forward socket of this worker (its member of the site.forward
 * SO_REUSEPORT group; -1 = none). A different fd replaces (and closes) the current one. */
void ae_fwd_set_socket(ae_worker *w, int fd);
/* The worker's current forward socket (-1 none). */
int ae_fwd_socket(ae_worker *w);
/* Worker thread: adopt a new peer table (takes over the reference). */
void ae_fwd_set_peers(ae_worker *w, ae_fwd_peers *p);
/* Worker thread, worker exit: closes the forward socket, stops watchers. */
void ae_fwd_worker_stop(ae_worker *w);

/* Datagrams forwarded to (out) and received from (in) site, summed over the workers. */
void ae_fwd_site_counts(const ae_fwd_group *g, uint16_t site, uint64_t *out, uint64_t *in);
/* Reply frames (site.return: tunnel) sent to (out) and received from (in) site. */
void ae_fwd_site_reply_counts(const ae_fwd_group *g, uint16_t site, uint64_t *out, uint64_t *in);

/* ---- the QUIC hooks (ae_quic_hooks, proxy/quic/quic.h), which the worker registers ----
 * ctx is the ae_worker; worker thread. */

/* unknown_cid: routes a datagram dg whose DCID is in no table of ep by the owner its CID
 * names. Returns 1 when the datagram was handled here (handed off, forwarded or dropped), 0
 * when quic goes on as without forwarding (stateless reset for a short header, Initial
 * processing for a long header). */
int ae_fwd_unknown(void *ctx, ae_qep *ep, const ae_dgram *dg, const uint8_t *dcid, size_t dcidlen);
/* site_addr (site.return: tunnel): site's forward endpoint from the worker's peer table; 0,
 * or -1 (unknown site, no endpoint published). */
int ae_fwd_peer_addr(void *ctx, uint16_t site, struct sockaddr_storage *addr, socklen_t *len);
/* reply (site.return: tunnel, at the owner): queues a reply frame (datagram[0, len) to go to
 * client from local with ECN codepoint ecn) for site's forward endpoint fwd into the worker's
 * out batch (the forward frames' sendmmsg batch, sent from the forward socket). No
 * allocation. 0, or -1 (no tunnel keys, bad address or size). */
int ae_fwd_reply(void *ctx, uint16_t site, const struct sockaddr *fwd, socklen_t fwdlen,
                 const struct sockaddr *client, const struct sockaddr *local, uint8_t ecn,
                 const uint8_t *data, size_t len);

/* Main thread: the socket options of a forward socket (0, or -1 with errno). */
int ae_fwd_socket_setup(int fd, int family);

/* Main thread: builds the peer table from the registry (sites as ae_state_sites gives them).
 * hb_ms: heartbeat period (a heartbeat older than 3 periods is not live); drain_ms: how long a
 * draining site still gets packets; seen_draining[4096]: when each site was first seen
 * draining (ms, 0 = not draining), kept by the caller. */
ae_fwd_peers *ae_fwd_peers_build(const ae_site_info *sites, size_t n, uint16_t self_site,
                                 uint64_t now_ms, uint64_t hb_ms, uint64_t drain_ms,
                                 uint64_t *seen_draining);

/* Tunnel drop reasons beyond the frame decoder's (AE_TUN_ERR_*: index -rc - 1). */
enum {
    AE_FWD_DROP_NOEP = AE_TUN_NREASONS, /* no QUIC listener for the frame's local address */
    AE_FWD_DROP_INITIAL,                /* an Initial in a frame (never forwarded) */
    AE_FWD_DROP_LOOP,                   /* forwarded datagram names another site */
    AE_FWD_DROP_NOKEYS,                 /* no tunnel keys yet */
    AE_FWD_DROP_REPLY_PEER,             /* reply frame from a site that is not a live peer */
    AE_FWD_NDROPS
};
/* Metric label of tunnel drop reason i (0 .. AE_FWD_NDROPS - 1). */
const char *ae_fwd_drop_name(int i);

#endif
