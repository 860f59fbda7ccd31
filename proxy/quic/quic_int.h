/*
 * Internal to proxy/quic/ (quic.c, endpoint.c, io.c) (the public API is proxy/quic/quic.h): QUIC
 * endpoints and connections.
 *
 * Ownership (all on one worker thread): a worker's QUIC state (ae_qworker) holds the TLS
 * credentials of the runtime it serves, the dead list, the forwarding hooks and the
 * application ops; each QUIC listener of the worker has an endpoint (ae_qep: its UDP socket,
 * the connection-ID table, its connections); a connection (qconn) owns its ngtcp2 object and
 * the application's state for it (app, e.g. the HTTP/3 session and its request streams, freed
 * through the application ops). Connections are never freed inside a callback: closing
 * detaches them and queues them on the worker's dead list, freed by gc.
 */
#ifndef AE_QUIC_INT_H
#define AE_QUIC_INT_H

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "proxy/quic/quic.h"
#include "tls/quic_tls.h"

#define AE_QUIC_CIDLEN   17   /* server connection IDs: fixed length (QUIC-LB ready) */
#define AE_QUIC_MAX_PKT  1472 /* largest UDP payload we build */
#define AE_QUIC_GSO_SEGS 64   /* packets per UDP GSO send (the kernel's UDP_MAX_SEGMENTS) */
/* Bytes of one GSO send, below the 65507-byte UDP payload limit: a send quantum of ~44 full
 * packets goes out in one sendmsg (at 40 packets it took two, the second of 4 packets). */
#define AE_QUIC_TX_BUF 65000

#define AE_QUIC_RX_BATCH 32 /* reads per recvmmsg */
/* One read's buffer: with UDP GRO the kernel hands over up to 64 KiB of datagrams of one flow
 * (all of one size but the last) in one read; a smaller buffer would truncate them. */
#define AE_QUIC_RX_SLOT  65536
#define AE_QUIC_MAX_CIDS 10 /* CIDs a connection can have in the table (odcid + ours) */

typedef struct ae_qconn qconn;

typedef struct {
    uint8_t len; /* 0 empty, 0xff tombstone */
    uint8_t cid[NGTCP2_MAX_CIDLEN];
    qconn *c;
} ae_cid_slot;

struct ae_qep {
    ae_worker *w;
    ae_wlistener *l;
    int fd;
    int family;
    int wildcard; /* bound to 0.0.0.0/:: : replies carry the destination as source (PKTINFO) */
    struct sockaddr_storage bound;
    socklen_t boundlen;
    ae_cid_slot *slots;
    size_t cap, used, n; /* used counts tombstones */
    uint64_t hkey[2];
    qconn *conns;
    qconn *dirty; /* connections to write after the current read batch */
    int wblocked; /* socket buffer full: connections wait for EV_WRITE */
    int no_gso;   /* the kernel refused UDP_SEGMENT: one sendmsg per packet */
    int in_batch; /* inside a read batch: writes are deferred to its end */
    ev_io wio;
};

typedef struct ae_qworker {
    ae_runtime *tls_rt; /* runtime the credentials were built for */
    ae_quic_tls_ctx *tls;
    qconn *dead;
    size_t nconns; /* open QUIC connections of this worker (tune.max_connections) */
    uint8_t rx[AE_QUIC_RX_BATCH][AE_QUIC_RX_SLOT];
    uint8_t tx[AE_QUIC_TX_BUF];   /* packets of one GSO batch, back to back */
    uint8_t reset_secret[32];     /* stateless reset secret before the first secrets arrive */
    uint8_t token_key[32];        /* Retry / NEW_TOKEN key before the first secrets arrive */
    uint64_t rate_sec;            /* retry: auto: new connections seen in second rate_sec */
    uint32_t rate_cur, rate_prev; /* (rate_cur) and in the second before (rate_prev) */
    ae_qsecrets *sec;             /* QUIC secrets of the newest ring (a reference) */
    struct ae_cid_keys *cidk;     /* this worker's CID cipher contexts for that ring */
    ev_timer drain_tick;          /* while the worker drains: GOAWAY steps (quic.c) */
    ae_quic_hooks hooks;          /* forwarding layer (ae_quic_set_hooks) */
    const ae_quic_app_ops *app;   /* application (ae_quic_set_app), NULL: none */
    void *app_ctx;                /* its per-worker context (ours to release) */
    struct ae_claims *claims;     /* quic.early_data_shared: hold: the shared record's Redis
                                   * connection (created with the first runtime asking) */
} ae_qworker;

typedef enum { QC_OPEN = 0, QC_CLOSING, QC_DRAINING, QC_DEAD } qc_state;

struct ae_qconn {
    qconn *prev, *next; /* in ep->conns; next = dead list link once dead */
    qconn *dirty_next;
    int is_dirty;
    ae_qep *ep;
    ae_worker *w;
    uint64_t id;
    qc_state state;
    ae_runtime *rt;
    const ae_conf_listener *lis;
    ae_pool *pool;
    ngtcp2_conn *conn;
    ngtcp2_crypto_conn_ref ref;
    ae_quic_tls *tls;
    ae_quic_tls_ctx *tlsctx;
    void *app; /* the application's state (ops->setup), NULL before */
    ngtcp2_ccerr err;
    ev_timer timer;
    struct sockaddr_storage remote, local;
    socklen_t remotelen, locallen;
    uint8_t *close_pkt; /* CONNECTION_CLOSE resent during the closing period */
    size_t close_len;
    uint8_t *pending; /* one GSO batch that met a full socket buffer */
    size_t pending_len, pending_gso;
    uint8_t pending_ecn;
    struct sockaddr_storage pending_to, pending_from;
    socklen_t pending_tolen, pending_fromlen;
    /* site.return: tunnel. The site whose tunnel frames brought this connection's last packet
     * (0: it came directly to our QUIC socket) and that site's forward endpoint: with
     * `site.return: tunnel` every datagram goes back there in a reply frame. */
    uint16_t ret_site;
    socklen_t ret_addrlen;
    struct sockaddr_storage ret_addr;
    ngtcp2_cid cids[AE_QUIC_MAX_CIDS]; /* in the endpoint table */
    size_t ncids;
    char sni[256];
    ev_tstamp started;
    unsigned hs_done : 1;
    unsigned err_set : 1;    /* err holds an application error the application chose */
    unsigned early_held : 1; /* 0-RTT requests wait (ae_quic_conn_early_held) */
    uint64_t claim;          /* the shared record's pending claim (state/claim.h), 0: none */
    unsigned goaway : 2;     /* drain: 1 goaway step 0 (notice) done, 2 step 1 (final) done */
    ev_tstamp goaway_at;     /* when the notice was sent */
};

/* ---- quic.c (connections), used by endpoint.c ---- */
ngtcp2_tstamp ae_quic_now(void);
/* Random bytes for keys and hashes (aborts: nothing is safe without randomness). */
void ae_quic_rand_bytes(void *buf, size_t n);
/* The worker's QUIC state, created on first use; NULL when out of memory. */
ae_qworker *ae_quic_qw_get(ae_worker *w);
/* Sends one datagram from the endpoint's socket (to, from: addresses, from may be NULL). */
int ae_quic_ep_send(ae_qep *ep, const struct sockaddr *to, socklen_t tolen,
                    const struct sockaddr *from, const uint8_t *data, size_t len);
/* The socket buffer is full: wait for EV_WRITE before writing connections again. */
void ae_quic_ep_block(ae_qep *ep);
/* Counts a dropped datagram. */
void ae_quic_drop(ae_qep *ep);
/* The application's "no error" code (HTTP/3: H3_NO_ERROR), 0 without an application. */
uint64_t ae_quic_app_no_error(ae_worker *w);
/* A new connection for an admitted Initial (tt: the token it carried; odcid: the original
 * DCID when the token is a Retry token, else NULL); errors are counted and logged. */
void ae_quic_conn_new(ae_qep *ep, const ae_dgram *dg, const ngtcp2_pkt_hd *hd, ngtcp2_token_type tt,
                      const ngtcp2_cid *odcid);
/* Hands a datagram to its connection (marks it dirty: written at the end of the batch). */
void ae_quic_conn_read(qconn *c, const ae_dgram *dg);
/* Writes whatever c has to send (packets, CONNECTION_CLOSE), then rearms its timer. */
void ae_quic_conn_write(qconn *c);
/* Sends c's CONNECTION_CLOSE (c->err) and enters the closing period. */
void ae_quic_conn_close_err(qconn *c);
/* Ends c: tells the application, removes its CIDs, moves it to the dead list (gc frees it). */
void ae_quic_conn_kill(qconn *c, ae_quic_close reason);

/* ---- endpoint.c (dispatch, CID table, tokens), used by quic.c ---- */
/* A fresh server connection ID (QUIC-LB encoded with the current secrets). */
void ae_quic_new_cid(ae_qep *ep, ngtcp2_cid *cid);
/* The stateless reset token of cid (RFC 9000 §10.3.2). Returns 0 or an AE_ERR_*. */
int ae_quic_reset_token(ae_worker *w, const ngtcp2_cid *cid, uint8_t *token);
/* Adds cid to the endpoint table for c (and to c->cids). Returns 0 or AE_ERR_NOMEM. */
int ae_quic_conn_cid_add(qconn *c, const ngtcp2_cid *cid);
/* Removes cid from the table and from c->cids. */
void ae_quic_conn_cid_del(qconn *c, const ngtcp2_cid *cid);
/* Removes cid from the endpoint table. */
void ae_quic_cid_del(ae_qep *ep, const ngtcp2_cid *cid);
/* Sends c a NEW_TOKEN frame (address validation for its next connection). */
void ae_quic_send_new_token(qconn *c);

/* ---- quic_io.c, used by quic.c (endpoint packet I/O) ---- */
/* Sends one datagram or a UDP GSO batch: 0, AE_ERR_AGAIN (socket buffer full), AE_ERR_IO. */
int ae_quic_send_batch(ae_qep *ep, const struct sockaddr *to, socklen_t tolen,
                       const struct sockaddr *from, const uint8_t *data, size_t len, size_t gso,
                       uint8_t ecn);
/* EV_READ callback of a QUIC listener (io->data: the ae_wlistener): reads a recvmmsg batch. */
void ae_quic_read_cb(struct ev_loop *loop, ev_io *io, int revents);

#endif
