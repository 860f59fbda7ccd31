/*
 * Per-source limits (srclimit.c): one table per worker, no lock, no allocation after creation.
 *
 * A source is the client's address cut to a prefix (limits.ipv4_prefix / ipv6_prefix). For each
 * source the table keeps its open TCP connections and three rate limiters (new TCP connections,
 * QUIC Initials, HTTP/3 requests), each a GCRA token bucket whose burst is one second's worth.
 * The table is set-associative (buckets of AE_SRC_WAYS entries, keyed with a random seed so a
 * client cannot aim at one bucket); a new source takes an empty way or the least recently seen
 * one of its bucket (one with no open connection first), counted as an eviction. A forgotten
 * source starts afresh, so the table bounds memory, not correctness of the limits for sources
 * that stay active.
 *
 * Limits are per worker: each worker enforces limit / workers (rounded up, at least 1), since
 * SO_REUSEPORT spreads a source's connections over the workers.
 */
#ifndef AE_CORE_SRCLIMIT_H
#define AE_CORE_SRCLIMIT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define AE_SRC_WAYS 8

typedef struct {
    uint32_t v4_prefix, v6_prefix;
    uint32_t tcp_rate, tcp_concurrent; /* per second; open at once (0: no limit) */
    uint32_t quic_retry_rate, quic_drop_rate;
    uint32_t h3_rate;
    uint32_t table_size; /* sources tracked (rounded up to whole buckets) */
    uint32_t nworkers;   /* the limits above are divided among them */
} ae_srclimit_conf;

/* What a check decided. */
typedef enum {
    AE_SRC_OK = 0,
    AE_SRC_TCP_RATE,       /* a new TCP connection over tcp_connections_per_second */
    AE_SRC_TCP_CONCURRENT, /* a new TCP connection over tcp_concurrent */
    AE_SRC_QUIC_RETRY,     /* a QUIC Initial over quic_initials_per_second: Retry */
    AE_SRC_QUIC_DROP,      /* a QUIC Initial over quic_initials_hard: dropped */
    AE_SRC_H3_RATE,        /* an HTTP/3 request over h3_requests_per_second: 429 */
    AE_SRC__COUNT
} ae_src_verdict;
extern const char *const ae_src_verdict_names[AE_SRC__COUNT]; /* "ok", "tcp_rate", ... */

typedef struct ae_srclimit ae_srclimit;

/* Whether c sets any limit (otherwise no table is needed). */
int ae_srclimit_any(const ae_srclimit_conf *c);
/* A table for c; evictions are counted in *evictions (a worker's counter: single writer). Returns
 * 0 or AE_ERR_NOMEM. */
int ae_srclimit_new(const ae_srclimit_conf *c, _Atomic uint64_t *evictions, ae_srclimit **out);
void ae_srclimit_free(ae_srclimit *t);
/* Whether t was made for the same prefixes and size as c (its sources can be kept when only
 * the limits change); ae_srclimit_set_limits then takes c's limits. */
int ae_srclimit_same_shape(const ae_srclimit *t, const ae_srclimit_conf *c);
void ae_srclimit_set_limits(ae_srclimit *t, const ae_srclimit_conf *c);

/* A new TCP connection from peer at now_ns (monotonic): AE_SRC_OK (its open count is now one
 * more: call ae_srclimit_tcp_close when it ends), AE_SRC_TCP_RATE or AE_SRC_TCP_CONCURRENT. */
ae_src_verdict ae_srclimit_tcp_open(ae_srclimit *t, const struct sockaddr *peer, uint64_t now_ns);
/* A TCP connection that ae_srclimit_tcp_open let in has ended. */
void ae_srclimit_tcp_close(ae_srclimit *t, const struct sockaddr *peer);
/* A QUIC Initial that would create a connection: AE_SRC_OK, AE_SRC_QUIC_RETRY (validated: a
 * Retry token is fine, so the caller ignores it then) or AE_SRC_QUIC_DROP. */
ae_src_verdict ae_srclimit_quic_initial(ae_srclimit *t, const struct sockaddr *peer,
                                        uint64_t now_ns);
/* An HTTP/3 request: AE_SRC_OK or AE_SRC_H3_RATE. */
ae_src_verdict ae_srclimit_h3_request(ae_srclimit *t, const struct sockaddr *peer, uint64_t now_ns);

#endif
