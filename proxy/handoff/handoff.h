/*
 * TCP hand-off across sites (issue #10): TCP flows survive an anycast route shift.
 *
 * After a route shift, a client's TCP segments reach a site whose kernel has no socket for
 * them; left alone, that kernel answers with a RST and the download, upload or long-lived
 * connection breaks. With `tcp_handoff` enabled, each site:
 *
 *  - captures such "orphans" before its TCP sees them (proxy/handoff/capture.h: a tc ingress
 *    BPF program redirects non-SYN segments to a TCP listener address that match no
 *    connection, or only the listener, into a TUN device this engine reads);
 *  - finds the owner: one authenticated QUERY frame (state/tunnel.h, "AEh1") to every live
 *    peer's hand-off endpoint; the site whose connection table (conntab.h) holds the 4-tuple
 *    answers "mine", the others "not mine". The flow's segments wait in a small bounded queue
 *    meanwhile. The answer is cached per flow (idle TTL `tcp_handoff.flow_ttl`), so the next
 *    segments go straight to the owner;
 *  - sends each segment of an owned flow in a SEGMENT frame to the owner, which checks that the
 *    4-tuple is one of its connections (never a SYN, never a tuple it does not hold), completes
 *    the TCP checksum when the capture left it partial, and writes it into its own TUN device:
 *    the local stack delivers it to the existing socket, and the replies leave that site
 *    directly from the anycast address (as `site.return: direct`; TCP replies are never
 *    tunnelled);
 *  - gives a segment back to its own kernel when no peer claims the flow before
 *    `tcp_handoff.query_timeout`, when every peer says "not mine", when the owner is no longer
 *    live, or when queries exceed `tcp_handoff.max_queries` per second: the kernel answers with
 *    a RST as it always did, and the client reconnects (and resumes TLS).
 *
 * The hand-off endpoint of a site is its `site.forward` address with port + 1 (one UDP socket,
 * owned by the engine thread). Frames use the ring's tunnel keys (label "tcp-handoff"), the
 * `site.forward_window` time window and a per-sender sequence number checked against a sliding
 * anti-replay window per origin site.
 *
 * Threads: the engine runs in its own thread with its own libev loop: it owns the TUN device,
 * the UDP socket, the flow cache and the replay windows; nothing on it allocates per packet.
 * The main thread starts it, posts new QUIC secrets (for the ring) and peer tables, reads the
 * counters and asks whereis; the workers only insert into / remove from the conntab.
 */
#ifndef AE_HANDOFF_H
#define AE_HANDOFF_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "proxy/handoff/conntab.h"

struct ae_qsecrets;
struct ae_fwd_peers;
typedef struct ae_handoff ae_handoff;

/* Starts the engine for conf (tcp_handoff.enabled must be set; site.forward too): opens the
 * UDP endpoint, creates the TUN device, loads and attaches the capture program on
 * tcp_handoff.interfaces for conf's TCP listeners, starts the thread. tab: the connection table
 * the workers fill (borrowed; outlives the engine). On failure returns an AE_ERR_* with a
 * one-line reason in err (the caller logs it and runs without the hand-off). */
int ae_handoff_start(const ae_conf *conf, ae_conntab *tab, ae_handoff **out, char *err,
                     size_t errlen);
/* Stops the thread, detaches the program, closes the device and socket, frees. Accepts NULL. */
void ae_handoff_stop(ae_handoff *h);

/* Main thread: adopt the secrets of a new ring (a reference is taken) / a new peer table (a
 * reference is taken). The engine picks them up on its next loop iteration. */
void ae_handoff_set_secrets(ae_handoff *h, struct ae_qsecrets *sec);
void ae_handoff_set_peers(ae_handoff *h, struct ae_fwd_peers *p);
/* "tcx" or "tc": how the capture program is attached. */
const char *ae_handoff_capture_mode(const ae_handoff *h);
/* Main thread, reload: the TCP listener addresses of a new config (capture map). */
void ae_handoff_set_listeners(ae_handoff *h, const ae_conf *conf);

/* Drop reasons (metric label `reason` of anyedge_tcp_handoff_drops_total). The first
 * AE_HO_DROP_TUN_N are the frame decoder's (AE_TUN_ERR_*, index -rc - 1). */
typedef enum {
    AE_HO_DROP_REPLAY = 0, /* sequence number already seen or too old */
    AE_HO_DROP_NOT_HELD,   /* segment for a 4-tuple that is no connection of this site */
    AE_HO_DROP_SYN,        /* SYN in a segment frame (new connections are always local) */
    AE_HO_DROP_PACKET,     /* malformed IP/TCP packet (capture or frame) */
    AE_HO_DROP_CSUM,       /* TCP checksum neither valid nor partial */
    AE_HO_DROP_HOLD,       /* no room to hold a segment while its owner is looked up */
    AE_HO_DROP_FLOWS,      /* flow cache full */
    AE_HO_DROP_TUN_WRITE,  /* the TUN device refused the packet */
    AE_HO_DROP_SEND,       /* sending a frame failed */
    AE_HO_DROP_NO_KEYS,    /* no ring keys yet */
    AE_HO_DROP_ANSWER,     /* answer for no pending query */
    AE_HO_DROP_TUNNEL,     /* first of the frame decoder's reasons */
} ae_ho_drop;
const char *ae_handoff_drop_name(size_t i); /* NULL past the last */

/* Main thread: Prometheus text of the hand-off metrics (malloc'd, *len set); h may be NULL
 * (feature off: the enabled gauge at 0). NULL on no memory. */
char *ae_handoff_metrics(ae_handoff *h, const ae_conntab *tab, size_t *len);

/* Main thread, GET /whereis?tcp=CLIENT,LOCAL (e.g. tcp=10.0.0.2:5555,192.0.2.10:443): the value
 * of the tcp parameter is v[0, vn) (NULL: absent). JSON {tuple, self, worker, conn, closed,
 * cached:{state, owner}} in *out (malloc'd); *code the HTTP status (200, 400 bad query). 0 or
 * AE_ERR_NOMEM. h and tab may be NULL. */
int ae_handoff_whereis(ae_handoff *h, ae_conntab *tab, const char *v, size_t vn, char **out,
                       size_t *outlen, int *code);

#endif
