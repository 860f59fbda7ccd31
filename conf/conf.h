/*
 * anyedge configuration: YAML file -> validated, immutable snapshot.
 *
 * The public contract of conf/. A snapshot (ae_conf) is built once by ae_conf_load() and never
 * modified afterwards; the proxy wraps it in a reference-counted runtime so that connections
 * keep the config they started with across reloads.
 *
 * Every key the file may hold is declared once, in the key table in conf/conf_keys.c (name,
 * type, default, bounds, where stored, help text). The same table drives parsing, validation,
 * `anyedge -t` and the generated reference docs/config.md (`anyedge --config-doc`).
 */
#ifndef AE_CONF_H
#define AE_CONF_H

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "base.h"

/* A position in the config file, for error messages of later checks (e.g. tls/ loading a
 * certificate named at that place). line and col are 1-based; 0 means "not from the file". */
typedef struct {
    uint32_t line;
    uint32_t col;
} ae_conf_pos;

/* A parsed socket address ("127.0.0.1:8443", "[::1]:8443", "localhost:80" is not accepted:
 * addresses are numeric so that config loading never blocks on DNS). */
typedef struct {
    struct sockaddr_storage sa;
    socklen_t len;
    char text[64]; /* canonical text form, "1.2.3.4:5" or "[::1]:5" */
} ae_addr;

/* Parses "IPv4:port" or "[IPv6]:port" (port 0..65535 when allow_port0, else 1..65535).
 * Returns 0 or AE_ERR_PARSE. */
int ae_addr_parse(const char *s, ae_addr *out, int allow_port0);
/* Formats a sockaddr as text ("1.2.3.4:5" / "[::1]:5") into buf; returns buf. */
char *ae_addr_format(const struct sockaddr *sa, char *buf, size_t len);
/* 1 when the two addresses are the same family, address and port. */
int ae_addr_equal(const ae_addr *a, const ae_addr *b);

typedef enum { AE_LPROTO_TCP = 0, AE_LPROTO_QUIC = 1 } ae_listener_proto;
typedef enum { AE_PP_NONE = 0, AE_PP_V1 = 1, AE_PP_V2 = 2 } ae_proxy_proto;
typedef enum {
    AE_BAL_ROUND_ROBIN = 0,
    AE_BAL_LEAST_CONN = 1,
    AE_BAL_AFFINITY = 2, /* resumed sessions go back to the server of the original session */
    AE_BAL_HASH = 3,     /* rendezvous hash of hash_key (proxy/core/hrw.h) */
} ae_balance;
/* upstreams.<name>.hash_key: what `balance: hash` hashes (conf/hashkey.h). */
typedef enum { AE_HASH_CLIENT_IP = 0, AE_HASH_HEADER = 1, AE_HASH_COOKIE = 2 } ae_hash_kind;
#define AE_HASH_NAME_MAX 63 /* longest header or cookie name of hash_key / affinity_cookie */
typedef struct {
    ae_hash_kind kind;
    uint8_t v4_prefix, v6_prefix;    /* client_ip prefix lengths (also the fallback's) */
    char name[AE_HASH_NAME_MAX + 1]; /* HEADER: lower-case field name; COOKIE: cookie name */
    size_t name_len;
} ae_hash_spec;
typedef enum { AE_HC_NONE = 0, AE_HC_TCP = 1, AE_HC_HTTP = 2 } ae_hc_kind;
typedef enum { AE_QRETRY_OFF = 0, AE_QRETRY_ALWAYS = 1, AE_QRETRY_AUTO = 2 } ae_quic_retry;
/* quic.early_data_shared: off = each site on its own; hold = 0-RTT requests wait for the
 * handshake or the sites' shared first-use record in Redis (state/claim.h). */
typedef enum { AE_EARLY_SHARED_OFF = 0, AE_EARLY_SHARED_HOLD = 1 } ae_early_shared;
/* site.return: how the owner of a forwarded connection sends its replies. */
typedef enum { AE_RETURN_DIRECT = 0, AE_RETURN_TUNNEL = 1 } ae_site_return;
typedef enum { AE_ANYCAST_OFF = 0, AE_ANYCAST_COMMAND = 1, AE_ANYCAST_EXABGP = 2 } ae_anycast_mode;

typedef struct {
    char *cert; /* path of PEM certificate chain */
    char *key;  /* path of PEM private key */
    ae_conf_pos cert_pos, key_pos;
    char where[48]; /* config path of this entry for messages: "tls" or "tls.certs[1]" */
} ae_conf_cert;

typedef struct {
    ae_addr addr;
    ae_conf_pos pos;
} ae_conf_server;

typedef struct {
    char *name;
    ae_balance balance;
    char *hash_key;        /* as written; NULL = client_ip */
    ae_hash_spec hash;     /* hash_key, parsed by validation */
    char *affinity_cookie; /* balance: hash: name of the sealed server cookie, NULL = none */
    ae_conf_server *servers;
    size_t nservers;
    uint32_t connect_timeout_ms;
    struct {
        ae_hc_kind kind; /* NONE when the pool has no `health` block */
        char *http_path; /* for AE_HC_HTTP, starts with '/' */
        uint32_t interval_ms;
        uint32_t timeout_ms;
        uint32_t rise;
        uint32_t fall;
    } health;
    ae_conf_pos pos;
} ae_conf_upstream;

typedef struct {
    char *name;
    ae_listener_proto protocol;
    ae_addr addr;
    char *upstream;        /* name as written */
    size_t upstream_index; /* index into ae_conf.upstreams, resolved by validation */
    ae_proxy_proto proxy_protocol;
    uint32_t backlog;
    ae_conf_pos pos;
} ae_conf_listener;

typedef struct ae_conf {
    char *path; /* file it was read from */

    struct {
        uint32_t id; /* 1..4095 */
        char *name;
        ae_addr
            forward; /* inter-site forwarding address (published in the registry); len 0 = unset */
        uint32_t forward_window_ms; /* tunnel frames accepted within now ± this */
        ae_site_return ret;         /* replies of forwarded connections: direct or tunnel */
    } site;

    uint32_t workers; /* 0 in the file means "number of CPUs"; resolved here, always >= 1 */

    struct {
        ae_conf_cert *certs; /* tls.cert/tls.key give certs[0]; tls.certs[] adds more (SNI) */
        size_t ncerts;
        char *ciphers;      /* TLS 1.2 cipher list (OpenSSL syntax) or NULL for default */
        char *ciphersuites; /* TLS 1.3 suites or NULL for default */
        char **alpn;        /* protocol names, in preference order; default ["http/1.1"] */
        size_t nalpn;
        uint32_t ticket_rotation_s; /* default 12h */
        uint32_t min_version;       /* 0x0303 (TLS 1.2, default) or 0x0304 */
    } tls;

    ae_conf_listener *listeners;
    size_t nlisteners;
    ae_conf_upstream *upstreams;
    size_t nupstreams;

    struct {
        char *redis; /* redis://... or unix://...; NULL = standalone (keys in memory) */
        ae_conf_pos redis_pos;
        char *prefix;   /* key prefix, default "anyedge:" */
        char *kek_file; /* key-encryption key for sealing the ring, or NULL */
        ae_conf_pos kek_pos;
        uint32_t sync_interval_ms;   /* full re-read of the shared ring, default 10s */
        uint32_t heartbeat_ms;       /* site registry refresh, default 1s */
        uint32_t connect_timeout_ms; /* default 1s */
        uint32_t command_timeout_ms; /* default 1s */
        /* Redis Sentinel: the master's address comes from these sentinels ("host:port"). */
        char **sentinels;
        size_t nsentinels;
        char *master_name;
        char *sentinel_user, *sentinel_password;
        /* TLS to Redis (rediss:// URLs; state/redis.h ae_redis_tls). */
        struct {
            char *ca;          /* CA file; NULL = the system's trust store */
            char *cert, *key;  /* client certificate and key, both or neither */
            char *server_name; /* name checked against the certificate; NULL = the URL's host */
            int verify;        /* default on */
            int set;           /* the block is present */
            ae_conf_pos pos;
        } tls;
    } state;

    struct {
        /* Response header naming the site (`<name>: <site.name>`) on every HTTP/3 response;
         * NULL = off. A lower-case field name. */
        char *site_header;
        /* 0-RTT (tls/quic_gnutls.c, proxy/h3/h3.c): accept early data on resumed sessions;
         * unsafe = also forward non-safe methods received in 0-RTT (else 425). */
        int early_data, early_data_unsafe;
        ae_early_shared early_data_shared; /* at most once across sites (state/claim.h) */
        uint32_t early_data_window_ms;     /* deprecated, unused (conf_keys.c) */
        /* The QUIC ticket lifetime E (gnutls_db_set_cache_expiration, whole seconds: rounded
         * up), which is also how long an accepted 0-RTT ClientHello is remembered; equal at
         * every site. */
        uint32_t early_data_max_age_ms;
        uint32_t early_data_records; /* size of the per-process 0-RTT record table */
        ae_quic_retry retry;         /* address validation with Retry */
        uint32_t retry_threshold;    /* auto: new connections per second per worker */
        uint32_t token_lifetime_ms;  /* NEW_TOKEN validity */
        /* max_udp_payload_size transport parameter (largest datagram clients may send);
         * 0 = auto: AE_QUIC_TUNNEL_PAYLOAD with site.forward, else AE_QUIC_RX_BUF. */
        uint32_t max_udp_payload;
    } quic;

    struct {
        /* Route control (proxy/site/anycast.c): announce the prefix while the site is healthy and
         * not draining. */
        ae_anycast_mode mode; /* default off */
        char *prefix;         /* "192.0.2.10/32"; required unless mode is off */
        ae_conf_pos prefix_pos;
        char *announce, *withdraw;   /* mode command: /bin/sh -c strings; required there */
        uint32_t command_timeout_ms; /* default 10s; then the command is killed (failed) */
        uint32_t interval_ms;        /* health evaluation period, default 1s */
        uint32_t rise, fall;         /* consecutive healthy / unhealthy evaluations */
        int require_redis;           /* Redis reachable is part of "healthy" */
        uint32_t drain_timeout_ms;   /* site drain: draining -> drained; 0 = timeouts.drain */
    } anycast;

    struct {
        /* TCP hand-off (proxy/handoff/): segments of TCP flows that reach this site after a
         * route shift are handed to the site holding the connection. Taken at start only. */
        int enabled;
        char **interfaces; /* where client traffic arrives (capture program attached) */
        size_t ninterfaces;
        char *device;              /* TUN device name, default "aeho0" */
        uint32_t query_timeout_ms; /* no owner by then: the segment goes back to the kernel */
        uint32_t flow_ttl_ms;      /* idle time after which a moved flow's owner is forgotten */
        uint32_t max_flows;        /* flow cache size */
        uint32_t max_queries;      /* new flows looked up per second; 0 = no limit */
    } tcp_handoff;

    struct {
        ae_addr addr; /* default 127.0.0.1:9901; port 0 disables */
        int enabled;
        char *socket; /* Unix socket path (mode 0600), or NULL */
        char **hosts; /* more names Host may carry (besides loopback, local address) */
        size_t nhosts;
        char *token_file; /* bearer token for the POST routes, or NULL */
        ae_conf_pos token_pos;
        char *token;             /* read from token_file at load (printable ASCII), or NULL */
        uint32_t max_conns;      /* connections held at once (the oldest idle one makes room) */
        uint32_t max_per_source; /* per client address (TCP) */
    } admin;

    struct {
        ae_log_level level;
        ae_log_format format;
        int access; /* access log on/off, default on */
    } log;

    struct {
        uint32_t client_idle_ms;   /* default 60s */
        uint32_t upstream_idle_ms; /* default 60s */
        uint32_t handshake_ms;     /* default 10s */
        uint32_t drain_ms;         /* default 30s */
    } timeouts;

    struct {
        uint32_t buffer_size;     /* relay buffer per direction, default 64 KiB */
        uint32_t max_connections; /* per worker, default 100000 */
    } tune;

    /* Per-source limits (proxy/core/srclimit.h): 0 = off. Rates are per second. */
    struct {
        uint32_t ipv4_prefix, ipv6_prefix; /* sources aggregated to these prefixes */
        uint32_t tcp_rate;                 /* new TCP connections per second */
        uint32_t tcp_concurrent;           /* open TCP connections */
        uint32_t quic_retry_rate;          /* QUIC Initials per second before Retry */
        uint32_t quic_drop_rate;           /* QUIC Initials per second before dropping */
        uint32_t h3_rate;                  /* HTTP/3 requests per second (429 beyond) */
        uint32_t table_size;               /* sources tracked per worker */
    } limits;
} ae_conf;

/* Reads and validates path. On success stores a new snapshot in *out and returns 0. On error
 * returns AE_ERR_PARSE (or AE_ERR_IO when the file cannot be read, AE_ERR_NOMEM) and writes one
 * line "FILE:LINE:COL: KEY: message" into err (always NUL-terminated when errlen > 0).
 * Validation covers: unknown key, wrong type, out-of-range value, bad enum value, bad address,
 * missing required key, duplicate listener address or name, duplicate upstream server,
 * upstream referenced but undefined. It does not open certificate files (tls/ does that, see
 * ae_tls_check_conf()). */
int ae_conf_load(const char *path, ae_conf **out, char *err, size_t errlen);

/* Same, parsing an in-memory YAML document; name is used in error messages. */
int ae_conf_load_string(const char *name, const char *yaml, size_t len, ae_conf **out, char *err,
                        size_t errlen);

/* Frees a snapshot. Accepts NULL. */
void ae_conf_free(ae_conf *conf);

/* Writes the Markdown config reference (docs/config.md) generated from the key table. */
void ae_conf_write_doc(FILE *f);

/* Returns the upstream called name, or NULL. */
const ae_conf_upstream *ae_conf_find_upstream(const ae_conf *conf, const char *name);

/* Parses a duration "250ms", "2s", "5m", "12h", "1d" or a bare number of seconds into
 * milliseconds. Returns 0 or AE_ERR_PARSE (also on overflow of uint32 milliseconds). */
int ae_conf_parse_duration_ms(const char *s, uint32_t *out_ms);
/* Parses a size "4096", "64k", "1m" (binary units) into bytes. 0 or AE_ERR_PARSE. */
int ae_conf_parse_size(const char *s, uint32_t *out);

#endif
