/*
 * THE key table: every key the config file may hold, declared once.
 *
 * Parsing, defaults, validation of single values, freeing and docs/config.md are all driven by
 * these tables; checks that involve several keys (duplicates, references, tls.cert -> certs[0])
 * are in validate() in conf.c. To add a key: add a field to ae_conf in conf.h, a line here,
 * then regenerate docs/config.md (test_conf fails until you do).
 *
 * Sections (AE_KT_SECTION) do not change the object base: their members' offsets are taken
 * from the enclosing object, so a section may store into any nested struct of it. Lists and
 * maps of objects switch the base to each element.
 */
#include "conf_int.h"

#include <string.h>

/* Numeric fields are written as 4 bytes; make sure the enums really are that wide. */
_Static_assert(sizeof(ae_log_level) == 4, "enum width");
_Static_assert(sizeof(ae_log_format) == 4, "enum width");
_Static_assert(sizeof(ae_listener_proto) == 4, "enum width");
_Static_assert(sizeof(ae_proxy_proto) == 4, "enum width");
_Static_assert(sizeof(ae_balance) == 4, "enum width");
_Static_assert(sizeof(ae_hc_kind) == 4, "enum width");
_Static_assert(sizeof(ae_quic_retry) == 4, "enum width");
_Static_assert(sizeof(ae_anycast_mode) == 4, "enum width");
_Static_assert(sizeof(ae_site_return) == 4, "enum width");

#define MS(x)   ((uint64_t)(x))
#define SEC(x)  (MS(x) * 1000)
#define MIN(x)  (SEC(x) * 60)
#define HOUR(x) (MIN(x) * 60)
#define DAY(x)  (HOUR(x) * 24)

/* offsets in the root object */
#define R(field) offsetof(ae_conf_build, pub.field)

/* Names of listeners and upstreams appear in logs, metrics and the admin API. */
static const char *check_name(const char *s)
{
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return "invalid name (use letters, digits, '-', '_' and '.')";
    }
    return NULL;
}

static const char *check_http_path(const char *s)
{
    if (s[0] != '/')
        return "path must start with '/'";
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return "path must not contain spaces or control characters";
    return NULL;
}

static const ae_key_enum site_return_modes[] = {
    {"direct", AE_RETURN_DIRECT}, {"tunnel", AE_RETURN_TUNNEL}, {0}};

static const ae_key site_keys[] = {
    {.name = "id",
     .type = AE_KT_UINT,
     .off = R(site.id),
     .def = "1",
     .min = 1,
     .max = 4095,
     .help = "Number of this site, unique in the deployment. Appears in logs and is embedded in "
             "QUIC connection IDs so that packets reaching the wrong site can be forwarded."},
    {.name = "name",
     .type = AE_KT_STR,
     .off = R(site.name),
     .def = "anyedge",
     .min = 1,
     .max = 63,
     .check = check_name,
     .help = "Short name of this site (e.g. `lon1`), for logs."},
    {.name = "forward",
     .type = AE_KT_ADDR,
     .off = R(site.forward),
     .help = "Address other sites use to reach this one for forwarded QUIC packets; published "
             "in the site registry (optional)."},
    {.name = "forward_window",
     .type = AE_KT_DURATION,
     .off = R(site.forward_window_ms),
     .def = "5s",
     .min = MS(500),
     .max = MIN(1),
     .help = "Tunnel frames from other sites are accepted when their timestamp is within this "
             "much of this site's clock (older or newer: dropped as `stale`)."},
    {.name = "return",
     .type = AE_KT_ENUM,
     .off = R(site.ret),
     .def = "direct",
     .enums = site_return_modes,
     .help = "How this site answers the clients of connections whose packets reach it through "
             "another site (route shift): `direct` sends the replies straight to the client from "
             "the anycast address (direct server return); `tunnel` sends them back in reply "
             "frames to the site that received the client's packets, which sends them from the "
             "anycast address, for networks that drop packets with the anycast source from this "
             "site. Every site must run a version that knows reply frames."},
    {0},
};

static const char *check_prefix(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            return "prefix must be printable ASCII without spaces";
    return NULL;
}

/* TLS to Redis (state.tls): see docs/operations.md, "Redis over TLS". */
static const ae_key state_tls_keys[] = {
    {.name = "ca",
     .type = AE_KT_STR,
     .flags = AE_KF_PATH,
     .off = R(state.tls.ca),
     .min = 1,
     .max = 4095,
     .help = "PEM file of the CA(s) that sign the Redis server's certificate. Unset: the "
             "system's trust store."},
    {.name = "cert",
     .type = AE_KT_STR,
     .flags = AE_KF_PATH,
     .off = R(state.tls.cert),
     .min = 1,
     .max = 4095,
     .help = "Client certificate (PEM, may hold the chain) for servers that require one "
             "(`tls-auth-clients yes`); needs `key`."},
    {.name = "key",
     .type = AE_KT_STR,
     .flags = AE_KF_PATH,
     .off = R(state.tls.key),
     .min = 1,
     .max = 4095,
     .help = "Private key of `cert` (PEM)."},
    {.name = "server_name",
     .type = AE_KT_STR,
     .off = R(state.tls.server_name),
     .min = 1,
     .max = 253,
     .help = "Name (or IP address) the server's certificate must carry, also sent as SNI. "
             "Unset: the host of the `rediss://` URL."},
    {.name = "verify",
     .type = AE_KT_BOOL,
     .off = R(state.tls.verify),
     .def = "on",
     .help = "Check the server's certificate chain and name. `off` encrypts without "
             "authenticating the server (logged as a warning at every start); for tests only."},
    {0},
};

static const ae_key state_keys[] = {
    {.name = "redis",
     .type = AE_KT_STR,
     .flags = AE_KF_POS,
     .off = R(state.redis),
     .pos_off = R(state.redis_pos),
     .min = 8,
     .max = 1024,
     .help = "Shared state: `redis://[[user]:password@]host:port[/db]`, the same with "
             "`rediss://` for TLS (see `tls`), or `unix:///path/to/socket[?db=N]`. Unset: "
             "standalone, keys in memory."},
    {.name = "prefix",
     .type = AE_KT_STR,
     .off = R(state.prefix),
     .def = "anyedge:",
     .min = 1,
     .max = 64,
     .check = check_prefix,
     .help = "Prefix of every Redis key and channel anyedge uses."},
    {.name = "kek_file",
     .type = AE_KT_STR,
     .flags = AE_KF_PATH | AE_KF_POS,
     .off = R(state.kek_file),
     .pos_off = R(state.kek_pos),
     .min = 1,
     .max = 4095,
     .help = "File with a 32-byte key-encryption key (raw or 64 hex digits, mode 0600): ring "
             "secrets are sealed with AES-256-GCM in Redis. All sites need the same file."},
    {.name = "sync_interval",
     .type = AE_KT_DURATION,
     .off = R(state.sync_interval_ms),
     .def = "10s",
     .min = MS(200),
     .max = HOUR(1),
     .help = "Full re-read of the shared key ring (besides pub/sub notifications). A new key "
             "is published at least this long before any site encrypts with it."},
    {.name = "heartbeat",
     .type = AE_KT_DURATION,
     .off = R(state.heartbeat_ms),
     .def = "1s",
     .min = MS(100),
     .max = MIN(1),
     .help = "Site registry refresh; the record expires after 5 heartbeats."},
    {.name = "connect_timeout",
     .type = AE_KT_DURATION,
     .off = R(state.connect_timeout_ms),
     .def = "1s",
     .min = MS(10),
     .max = MIN(1),
     .help = "Time allowed to connect (and authenticate) to Redis."},
    {.name = "command_timeout",
     .type = AE_KT_DURATION,
     .off = R(state.command_timeout_ms),
     .def = "1s",
     .min = MS(10),
     .max = MIN(1),
     .help = "Time a Redis command may take; then the connection is dropped and re-opened."},
    {.name = "sentinels",
     .type = AE_KT_STRLIST,
     .off = R(state.sentinels),
     .count_off = R(state.nsentinels),
     .min = 3,
     .max = 262,
     .help = "Redis Sentinel: `host:port` of each sentinel (a name, an IPv4 address or "
             "`[IPv6]`). The master's address comes from them (asked before every connection, "
             "checked with ROLE, +switch-master followed); the host:port of `redis` is then "
             "only a label. Needs `master_name`."},
    {.name = "master_name",
     .type = AE_KT_STR,
     .off = R(state.master_name),
     .min = 1,
     .max = 128,
     .help = "Redis Sentinel: the name of the monitored master (`sentinel monitor NAME ...`)."},
    {.name = "sentinel_user",
     .type = AE_KT_STR,
     .off = R(state.sentinel_user),
     .min = 1,
     .max = 128,
     .help = "ACL user for the sentinels (`AUTH user password`); needs `sentinel_password`."},
    {.name = "sentinel_password",
     .type = AE_KT_STR,
     .off = R(state.sentinel_password),
     .min = 1,
     .max = 512,
     .help = "Password of the sentinels (their `requirepass`); unset: no AUTH to them. The "
             "master's password is the one in `redis`. TLS settings (`tls`) serve both."},
    {.name = "tls",
     .type = AE_KT_SECTION,
     .sub = state_tls_keys,
     .help = "TLS settings for a `rediss://` URL (all keys optional: a `rediss://` URL "
             "alone verifies the server against the system's trust store)."},
    {0},
};

/* An HTTP field name as HTTP/3 sends it: lower-case token characters. */
static const char *check_field_name(const char *s)
{
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch)))
            return "invalid header name (lower-case letters, digits and !#$%&'*+-.^_`|~ only)";
    }
    return NULL;
}

static const ae_key_enum early_shared_modes[] = {
    {"off", AE_EARLY_SHARED_OFF}, {"hold", AE_EARLY_SHARED_HOLD}, {0}};
static const ae_key_enum quic_retry_modes[] = {
    {"off", AE_QRETRY_OFF}, {"always", AE_QRETRY_ALWAYS}, {"auto", AE_QRETRY_AUTO}, {0}};

/* QUIC / HTTP/3 listener settings (all `protocol: quic` listeners). */
static const ae_key quic_keys[] = {
    {.name = "site_header",
     .type = AE_KT_STR,
     .off = R(quic.site_header),
     .min = 1,
     .max = 63,
     .check = check_field_name,
     .help = "When set (e.g. `x-anyedge-site`), every HTTP/3 response carries this header with "
             "`site.name` as its value, replacing one the upstream sent. Unset: off."},
    {.name = "early_data",
     .type = AE_KT_BOOL,
     .off = R(quic.early_data),
     .def = "off",
     .help = "Accept 0-RTT (TLS early data) on resumed QUIC sessions, from tickets issued by any "
             "site of the ring. Requests received in 0-RTT are forwarded with `Early-Data: 1` "
             "(RFC 8470); unsafe methods get 425 unless `early_data_unsafe` is on. Replayable: "
             "see docs/architecture.md, \"0-RTT policy, Retry and tokens\"."},
    {.name = "early_data_unsafe",
     .type = AE_KT_BOOL,
     .off = R(quic.early_data_unsafe),
     .def = "off",
     .help = "Also forward methods other than GET, HEAD and OPTIONS received in 0-RTT (with "
             "`Early-Data: 1`) instead of answering 425 Too Early."},
    {.name = "early_data_shared",
     .type = AE_KT_ENUM,
     .off = R(quic.early_data_shared),
     .def = "off",
     .enums = early_shared_modes,
     .help = "`hold`: requests received in 0-RTT wait until the handshake completes (then they "
             "cannot be a replay) or the sites' shared record in Redis (`state.redis`) says this "
             "ClientHello is used for the first time, whichever comes first; a ClientHello "
             "replayed to another site then never reaches an upstream. Redis slow or down only "
             "delays them to the handshake's completion. `off`: each site decides alone (a "
             "flight can be replayed once to each other site). Needs `early_data` and "
             "`state.redis`."},
    {.name = "early_data_max_age",
     .type = AE_KT_DURATION,
     .off = R(quic.early_data_max_age_ms),
     .def = "1h",
     .min = SEC(10),
     .max = DAY(7),
     .help = "Lifetime of QUIC session tickets (whole seconds, rounded up), counted from the "
             "session's full handshake: a client that resumes within it gets 0-RTT (with "
             "`early_data`) at any site whose process started before its ticket was issued; "
             "later, a full handshake. Each site remembers every 0-RTT ClientHello it accepted "
             "this long, so its early data is accepted at most once per site. **Must be equal at "
             "every site**: it also drives GnuTLS's ticket-key rotation, and a site with another "
             "value cannot resume the others' tickets. A reload that raises it refuses 0-RTT "
             "(not resumption) for tickets issued before the reload."},
    {.name = "early_data_records",
     .type = AE_KT_UINT,
     .off = R(quic.early_data_records),
     .def = "1048576",
     .min = 16,
     .max = 67108864,
     .help = "Size of the table of accepted 0-RTT ClientHellos (24 bytes each, rounded up to a "
             "power of two; the default takes 24 MiB). It holds each for `early_data_max_age`, "
             "so it sustains about 0.8 x records / max_age accepted 0-RTT handshakes per second "
             "(2^20 at 1h: ~230/s); above that 0-RTT degrades to 1-RTT "
             "(`quic_0rtt_refused_full`), never to a replay. Read at start: changing it needs a "
             "restart."},
    {.name = "early_data_window",
     .type = AE_KT_DURATION,
     .off = R(quic.early_data_window_ms),
     .def = "10s",
     .min = SEC(1),
     .max = MIN(10),
     .help = "Deprecated and ignored (accepted so that older configs still load): it was GnuTLS's "
             "anti-replay window, which refused 0-RTT for tickets older than about this on a busy "
             "site. 0-RTT freshness is now bounded by `early_data_max_age`."},
    {.name = "retry",
     .type = AE_KT_ENUM,
     .off = R(quic.retry),
     .def = "auto",
     .enums = quic_retry_modes,
     .help = "Address validation with Retry: `off`, `always` (every new connection without a "
             "valid token), or `auto` (when a worker sees more than `retry_threshold` new "
             "connections per second)."},
    {.name = "retry_threshold",
     .type = AE_KT_UINT,
     .off = R(quic.retry_threshold),
     .def = "1000",
     .min = 1,
     .max = 10000000,
     .help = "`retry: auto`: new QUIC connections per second per worker above which Initials "
             "without a valid token get a Retry (until a full second stays below it)."},
    {.name = "token_lifetime",
     .type = AE_KT_DURATION,
     .off = R(quic.token_lifetime_ms),
     .def = "1h",
     .min = SEC(10),
     .max = DAY(1),
     .help = "Validity of NEW_TOKEN address-validation tokens (accepted at any site of the ring, "
             "once per site)."},
    {.name = "max_udp_payload",
     .type = AE_KT_UINT,
     .off = R(quic.max_udp_payload),
     .def = "0",
     .min = 0,
     .max = 2048,
     .help = "Largest UDP payload clients may send (the max_udp_payload_size transport "
             "parameter), 1200..2048; 0 = auto: 1374 when `site.forward` is set (a datagram "
             "forwarded to another site, 78 bytes of tunnel framing added, still fits a "
             "1500-byte path over IPv6 unfragmented, so frames can be sent in UDP GSO "
             "batches), else 2048."},
    {0},
};

/* "ADDRESS/LEN", IPv4 or IPv6, checked again with inet_pton by conf.c. */
static const char *check_cidr(const char *s)
{
    const char *slash = strchr(s, '/');
    if (slash == NULL || slash == s || slash[1] == '\0')
        return "expected ADDRESS/LENGTH, e.g. 192.0.2.10/32 or 2001:db8::10/128";
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F') ||
              *s == '.' || *s == ':' || *s == '/'))
            return "expected ADDRESS/LENGTH, e.g. 192.0.2.10/32 or 2001:db8::10/128";
    return NULL;
}

static const ae_key_enum anycast_modes[] = {
    {"off", AE_ANYCAST_OFF}, {"command", AE_ANYCAST_COMMAND}, {"exabgp", AE_ANYCAST_EXABGP}, {0}};

/* Route control: see docs/operations.md, "Anycast route control". */
static const ae_key anycast_keys[] = {
    {.name = "mode",
     .type = AE_KT_ENUM,
     .off = R(anycast.mode),
     .def = "off",
     .enums = anycast_modes,
     .help = "`off`: no route control. `command`: run `announce` / `withdraw` (shell commands) "
             "when the route must change. `exabgp`: anyedge runs as an ExaBGP `process` and "
             "writes `announce route PREFIX next-hop self` / `withdraw route PREFIX next-hop "
             "self` lines on stdout (stdout is used for nothing else). Changing it needs a "
             "restart."},
    {.name = "prefix",
     .type = AE_KT_STR,
     .flags = AE_KF_POS,
     .off = R(anycast.prefix),
     .pos_off = R(anycast.prefix_pos),
     .min = 3,
     .max = 63,
     .check = check_cidr,
     .help = "The anycast prefix this site announces, `ADDRESS/LENGTH` (e.g. `192.0.2.10/32`); "
             "required unless `mode` is off. Passed to commands as `$ANYEDGE_PREFIX`. Changing "
             "it needs a restart."},
    {.name = "announce",
     .type = AE_KT_STR,
     .off = R(anycast.announce),
     .min = 1,
     .max = 4095,
     .help = "`mode: command`: shell command (`/bin/sh -c`) that announces the prefix, e.g. "
             "`birdc -s /run/bird/bird.ctl enable anycast`. Run asynchronously; exit status 0 "
             "is success; its output is logged line by line. Environment: `ANYEDGE_ACTION` "
             "(`announce`), `ANYEDGE_PREFIX`, `ANYEDGE_SITE_ID`, `ANYEDGE_SITE_NAME`."},
    {.name = "withdraw",
     .type = AE_KT_STR,
     .off = R(anycast.withdraw),
     .min = 1,
     .max = 4095,
     .help = "`mode: command`: shell command that withdraws the prefix (same rules as "
             "`announce`, `ANYEDGE_ACTION=withdraw`)."},
    {.name = "command_timeout",
     .type = AE_KT_DURATION,
     .off = R(anycast.command_timeout_ms),
     .def = "10s",
     .min = MS(100),
     .max = MIN(10),
     .help = "Time an announce/withdraw command may run; then its process group gets SIGTERM "
             "(SIGKILL 2 s later), the attempt counts as failed and is retried with backoff."},
    {.name = "interval",
     .type = AE_KT_DURATION,
     .off = R(anycast.interval_ms),
     .def = "1s",
     .min = MS(100),
     .max = MIN(1),
     .help = "How often the site's health is evaluated for the route."},
    {.name = "rise",
     .type = AE_KT_UINT,
     .off = R(anycast.rise),
     .def = "3",
     .min = 1,
     .max = 1000,
     .help = "Consecutive healthy evaluations before the prefix is announced (also at start)."},
    {.name = "fall",
     .type = AE_KT_UINT,
     .off = R(anycast.fall),
     .def = "3",
     .min = 1,
     .max = 1000,
     .help = "Consecutive unhealthy evaluations before the prefix is withdrawn. Healthy = every "
             "listener's upstream pool has a healthy server, the listeners are open, the site "
             "is not draining and (with `require_redis`) Redis is connected. Draining withdraws "
             "at once."},
    {.name = "require_redis",
     .type = AE_KT_BOOL,
     .off = R(anycast.require_redis),
     .def = "off",
     .help = "Count a lost Redis connection as unhealthy (needs `state.redis`)."},
    {.name = "drain_timeout",
     .type = AE_KT_DURATION,
     .off = R(anycast.drain_timeout_ms),
     .min = MS(100),
     .max = DAY(1),
     .help = "Site drain (`anyedgectl drain`, SIGUSR2): time from `draining` to `drained`. "
             "Unset: `timeouts.drain`."},
    {0},
};

static const ae_key_enum tls_versions[] = {{"1.2", 0x0303}, {"1.3", 0x0304}, {0}};

static const ae_key cert_keys[] = {
    {.name = "cert",
     .type = AE_KT_STR,
     .flags = AE_KF_REQUIRED | AE_KF_PATH | AE_KF_POS,
     .off = offsetof(ae_conf_cert, cert),
     .pos_off = offsetof(ae_conf_cert, cert_pos),
     .min = 1,
     .max = 4095,
     .help = "PEM certificate chain (leaf first)."},
    {.name = "key",
     .type = AE_KT_STR,
     .flags = AE_KF_REQUIRED | AE_KF_PATH | AE_KF_POS,
     .off = offsetof(ae_conf_cert, key),
     .pos_off = offsetof(ae_conf_cert, key_pos),
     .min = 1,
     .max = 4095,
     .help = "PEM private key of `cert`."},
    {0},
};

static const ae_key tls_keys[] = {
    {.name = "cert",
     .type = AE_KT_STR,
     .flags = AE_KF_PATH | AE_KF_POS | AE_KF_STAGED,
     .off = offsetof(ae_conf_build, tls_cert),
     .pos_off = offsetof(ae_conf_build, tls_cert_pos),
     .min = 1,
     .max = 4095,
     .help = "PEM certificate chain of the default certificate (becomes `certs[0]`). "
             "Required, with `key`, unless `certs` is given; some certificate is required when "
             "any listener is configured."},
    {.name = "key",
     .type = AE_KT_STR,
     .flags = AE_KF_PATH | AE_KF_POS | AE_KF_STAGED,
     .off = offsetof(ae_conf_build, tls_key),
     .pos_off = offsetof(ae_conf_build, tls_key_pos),
     .min = 1,
     .max = 4095,
     .help = "PEM private key of `cert`."},
    {.name = "certs",
     .type = AE_KT_LIST,
     .off = R(tls.certs),
     .count_off = R(tls.ncerts),
     .elem_size = sizeof(ae_conf_cert),
     .pos_off = SIZE_MAX,
     .sub = cert_keys,
     .help = "Additional certificates, chosen by SNI (server name) from their subject names."},
    {.name = "ciphers",
     .type = AE_KT_STR,
     .off = R(tls.ciphers),
     .min = 1,
     .max = 4095,
     .help = "TLS 1.2 cipher list in OpenSSL syntax; OpenSSL's default when unset."},
    {.name = "ciphersuites",
     .type = AE_KT_STR,
     .off = R(tls.ciphersuites),
     .min = 1,
     .max = 4095,
     .help = "TLS 1.3 cipher suites in OpenSSL syntax, in the server's order of preference. "
             "Unset: TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256 "
             "(AES-128 first: the key exchanges give 128-bit security; a client that lists "
             "ChaCha20 first gets ChaCha20)."},
    {.name = "alpn",
     .type = AE_KT_STRLIST,
     .off = R(tls.alpn),
     .count_off = R(tls.nalpn),
     .def = "http/1.1",
     .min = 1,
     .max = 255,
     .help = "ALPN protocol names offered, in order of preference (each 1..255 bytes)."},
    {.name = "ticket_rotation",
     .type = AE_KT_DURATION,
     .off = R(tls.ticket_rotation_s),
     .def = "12h",
     .min = MIN(1),
     .max = DAY(7),
     .scale = 1000,
     .help = "How often the session ticket key is rotated (whole seconds)."},
    {.name = "min_version",
     .type = AE_KT_ENUM,
     .off = R(tls.min_version),
     .def = "1.2",
     .enums = tls_versions,
     .help = "Oldest TLS version accepted on TCP listeners."},
    {0},
};

static const ae_key_enum lprotos[] = {{"tcp", AE_LPROTO_TCP}, {"quic", AE_LPROTO_QUIC}, {0}};
static const ae_key_enum pprotos[] = {
    {"none", AE_PP_NONE}, {"v1", AE_PP_V1}, {"v2", AE_PP_V2}, {0}};

#define LS(field) offsetof(ae_conf_listener, field)
static const ae_key listener_keys[] = {
    {.name = "name",
     .type = AE_KT_STR,
     .flags = AE_KF_REQUIRED,
     .off = LS(name),
     .min = 1,
     .max = 63,
     .check = check_name,
     .help = "Unique name of the listener, for logs and metrics."},
    {.name = "protocol",
     .type = AE_KT_ENUM,
     .off = LS(protocol),
     .def = "tcp",
     .enums = lprotos,
     .help = "`tcp` (TLS over TCP) or `quic` (QUIC over UDP)."},
    {.name = "address",
     .type = AE_KT_ADDR,
     .flags = AE_KF_REQUIRED,
     .off = LS(addr),
     .help = "Numeric address and port to listen on, `IPv4:port` or `[IPv6]:port`; unique among "
             "listeners of the same protocol."},
    {.name = "upstream",
     .type = AE_KT_STR,
     .flags = AE_KF_REQUIRED,
     .off = LS(upstream),
     .min = 1,
     .max = 63,
     .help = "Name of the upstream (key of `upstreams`) to relay to."},
    {.name = "proxy_protocol",
     .type = AE_KT_ENUM,
     .off = LS(proxy_protocol),
     .def = "none",
     .enums = pprotos,
     .help = "Send a PROXY protocol header of this version to the upstream servers."},
    {.name = "backlog",
     .type = AE_KT_UINT,
     .off = LS(backlog),
     .def = "1024",
     .min = 1,
     .max = 65535,
     .help = "listen(2) backlog (TCP listeners)."},
    {0},
};

#define UP(field) offsetof(ae_conf_upstream, field)
static const ae_key health_keys[] = {
    {.name = "tcp",
     .type = AE_KT_BOOL,
     .off = UP(health.kind),
     .def = "off",
     .tval = AE_HC_TCP,
     .help = "Check servers by opening a TCP connection."},
    {.name = "http",
     .type = AE_KT_STR,
     .off = UP(health.http_path),
     .min = 1,
     .max = 1024,
     .check = check_http_path,
     .help = "Check servers with `GET <path>` over HTTP/1.1; a 2xx or 3xx status is healthy. "
             "Exclusive with `tcp`."},
    {.name = "interval",
     .type = AE_KT_DURATION,
     .off = UP(health.interval_ms),
     .def = "2s",
     .min = MS(100),
     .max = HOUR(1),
     .help = "Time between two checks of a server."},
    {.name = "timeout",
     .type = AE_KT_DURATION,
     .off = UP(health.timeout_ms),
     .def = "1s",
     .min = MS(10),
     .max = HOUR(1),
     .help = "Time a check may take before it counts as failed; at most `interval`."},
    {.name = "rise",
     .type = AE_KT_UINT,
     .off = UP(health.rise),
     .def = "2",
     .min = 1,
     .max = 100,
     .help = "Consecutive successful checks that mark a server up."},
    {.name = "fall",
     .type = AE_KT_UINT,
     .off = UP(health.fall),
     .def = "3",
     .min = 1,
     .max = 100,
     .help = "Consecutive failed checks that mark a server down."},
    {0},
};

static const ae_key_enum balances[] = {{"round_robin", AE_BAL_ROUND_ROBIN},
                                       {"least_conn", AE_BAL_LEAST_CONN},
                                       {"affinity", AE_BAL_AFFINITY},
                                       {"hash", AE_BAL_HASH},
                                       {0}};

static const ae_key upstream_keys[] = {
    {.name = "balance",
     .type = AE_KT_ENUM,
     .off = UP(balance),
     .def = "round_robin",
     .enums = balances,
     .help = "How a server is chosen for a new connection. `round_robin`: in turn among healthy "
             "servers. `least_conn`: fewest open connections, round robin among ties. "
             "`affinity`: a resumed TLS session goes to the server that served the session it "
             "resumes (recorded in the session ticket, so at any site sharing the ticket keys) "
             "when that server is healthy; otherwise, and for new sessions, round robin, and the "
             "client gets a new ticket naming the new choice. `hash`: rendezvous (highest "
             "random weight) hashing of `hash_key` over the servers' addresses, so every site "
             "with the same server list sends a key to the same server, with no shared state; "
             "when that server is down, the key's next server in its own ranking (only the down "
             "server's keys move)."},
    {.name = "hash_key",
     .type = AE_KT_STR,
     .off = UP(hash_key),
     .min = 8,
     .max = 70,
     .help = "`balance: hash`: what is hashed. `client_ip` (the default): the client's address, "
             "IPv4 whole and IPv6 by its /64; `client_ip/V4` or `client_ip/V4,V6` hash the "
             "IPv4 /V4 (8..32) and IPv6 /V6 (16..128) prefix instead (e.g. `client_ip/24,56`: "
             "clients whose carrier moves them within a /24 keep their server, at the cost of "
             "coarser spreading). `header:NAME`: the first value of request header NAME (lower "
             "case, e.g. `header:x-api-key`). `cookie:NAME`: the value of the first cookie NAME "
             "in the request's `cookie` fields. A request without that header or cookie is "
             "hashed by its client address (/32, /64) and counted (`no_key`). Header and cookie "
             "keys need HTTP/3: a TCP listener relays bytes and can only use `client_ip`."},
    {.name = "affinity_cookie",
     .type = AE_KT_STR,
     .off = UP(affinity_cookie),
     .min = 1,
     .max = 63,
     .help = "`balance: hash`, HTTP/3: the name of a cookie the proxy sets (`Set-Cookie: "
             "NAME=<sealed>; Path=/; HttpOnly; Secure; SameSite=Lax`, a session cookie) naming "
             "the server that answered, sealed (AES-256-GCM) under a key derived from the key "
             "ring, so clients can neither read, choose nor forge a server. A request with a "
             "valid cookie whose server is usable goes to that server at any site sharing the "
             "ring (also after the server list changed); an invalid, tampered or expired cookie "
             "is ignored and counted (`cookie_invalid`), and the request goes by `hash_key`. The "
             "cookie is set when the request had none, an invalid one, one naming another "
             "server, or one sealed under an older ring key. Unset: no cookie."},
    {.name = "servers",
     .type = AE_KT_ADDRLIST,
     .flags = AE_KF_REQUIRED | AE_KF_UNIQUE,
     .off = UP(servers),
     .count_off = UP(nservers),
     .min = 1,
     .max = 4096,
     .help = "Server addresses, `IPv4:port` or `[IPv6]:port`, at least one, no duplicates."},
    {.name = "connect_timeout",
     .type = AE_KT_DURATION,
     .off = UP(connect_timeout_ms),
     .def = "3s",
     .min = MS(10),
     .max = SEC(60),
     .help = "Time allowed to connect to a server before trying the next one."},
    {.name = "health",
     .type = AE_KT_SECTION,
     .sub = health_keys,
     .help = "Active health checks. Without this block every server is always considered up; "
             "with it, exactly one of `tcp: on` or `http: PATH` is required."},
    {0},
};

static const ae_key admin_keys[] = {
    {.name = "address",
     .type = AE_KT_ADDR,
     .flags = AE_KF_PORT0,
     .off = R(admin.addr),
     .def = "127.0.0.1:9901",
     .help = "Address of the admin HTTP endpoint (metrics, status); port 0 disables it. Only "
             "requests whose Host names this address or a loopback name are answered."},
    {.name = "hosts",
     .type = AE_KT_STRLIST,
     .off = R(admin.hosts),
     .count_off = R(admin.nhosts),
     .min = 1,
     .max = 253,
     .help = "More names the Host header may carry, without port (e.g. the name a Prometheus "
             "server scrapes this site by). Loopback addresses and the address a connection came "
             "in on are always accepted; list only names you control (DNS rebinding)."},
    {.name = "socket",
     .type = AE_KT_STR,
     .flags = AE_KF_PATH,
     .off = R(admin.socket),
     .min = 1,
     .max = 107,
     .help = "Unix socket for the admin endpoint as well (created mode 0600; anyedgectl -c "
             "prefers it). Access is the file mode's: no token needed there."},
    {.name = "token_file",
     .type = AE_KT_STR,
     .flags = AE_KF_PATH | AE_KF_POS,
     .off = R(admin.token_file),
     .pos_off = R(admin.token_pos),
     .min = 1,
     .max = 4095,
     .help = "File holding a token (16..1024 printable characters, mode 0600) that the POST "
             "routes (reload, keys/rotate, drain, undrain) require over TCP as `Authorization: "
             "Bearer TOKEN`; anyedgectl -c sends it."},
    {.name = "max_connections",
     .type = AE_KT_UINT,
     .off = R(admin.max_conns),
     .def = "256",
     .min = 4,
     .max = 65536,
     .help = "Admin connections held at once; when full, the oldest one still sending its "
             "request is closed to make room."},
    {.name = "max_per_source",
     .type = AE_KT_UINT,
     .off = R(admin.max_per_source),
     .def = "32",
     .min = 1,
     .max = 65536,
     .help = "Admin connections held at once per client address; at the limit, that address's "
             "oldest one still sending its request is closed to make room."},
    {0},
};

static const ae_key_enum log_levels[] = {{"error", AE_LOG_ERROR},
                                         {"warn", AE_LOG_WARN},
                                         {"info", AE_LOG_INFO},
                                         {"debug", AE_LOG_DEBUG},
                                         {0}};
static const ae_key_enum log_formats[] = {{"text", AE_LOG_TEXT}, {"json", AE_LOG_JSON}, {0}};

static const ae_key log_keys[] = {
    {.name = "level",
     .type = AE_KT_ENUM,
     .off = R(log.level),
     .def = "info",
     .enums = log_levels,
     .help = "Least severe level written to stderr."},
    {.name = "format",
     .type = AE_KT_ENUM,
     .off = R(log.format),
     .def = "text",
     .enums = log_formats,
     .help = "`text` lines or one `json` object per line."},
    {.name = "access",
     .type = AE_KT_BOOL,
     .off = R(log.access),
     .def = "on",
     .help = "Write one access-log line per finished connection."},
    {0},
};

static const ae_key timeout_keys[] = {
    {.name = "client_idle",
     .type = AE_KT_DURATION,
     .off = R(timeouts.client_idle_ms),
     .def = "60s",
     .min = MS(100),
     .max = DAY(1),
     .help = "Close a connection after the client sent nothing for this long."},
    {.name = "upstream_idle",
     .type = AE_KT_DURATION,
     .off = R(timeouts.upstream_idle_ms),
     .def = "60s",
     .min = MS(100),
     .max = DAY(1),
     .help = "Close a connection after the server sent nothing for this long."},
    {.name = "handshake",
     .type = AE_KT_DURATION,
     .off = R(timeouts.handshake_ms),
     .def = "10s",
     .min = MS(100),
     .max = DAY(1),
     .help = "Time allowed for the TLS/QUIC handshake."},
    {.name = "drain",
     .type = AE_KT_DURATION,
     .off = R(timeouts.drain_ms),
     .def = "30s",
     .min = MS(100),
     .max = DAY(1),
     .help = "On reload or shutdown, time given to open connections to finish."},
    {0},
};

static const ae_key tune_keys[] = {
    {.name = "buffer_size",
     .type = AE_KT_SIZE,
     .off = R(tune.buffer_size),
     .def = "64k",
     .min = 4096,
     .max = 16 * 1024 * 1024,
     .help = "Relay buffer per connection and direction (binary units: `k`, `m`)."},
    {.name = "max_connections",
     .type = AE_KT_UINT,
     .off = R(tune.max_connections),
     .def = "100000",
     .min = 1,
     .max = 10000000,
     .help = "Most connections a worker handles at once; new ones are refused beyond."},
    {0},
};

/* Per-source limits: see docs/operations.md, "Per-source limits". */
static const ae_key limits_keys[] = {
    {.name = "ipv4_prefix",
     .type = AE_KT_UINT,
     .off = R(limits.ipv4_prefix),
     .def = "32",
     .min = 8,
     .max = 32,
     .help = "IPv4 sources count together per this prefix length (32: each address; 24: each "
             "/24)."},
    {.name = "ipv6_prefix",
     .type = AE_KT_UINT,
     .off = R(limits.ipv6_prefix),
     .def = "64",
     .min = 16,
     .max = 128,
     .help = "IPv6 sources count together per this prefix length (64: a subscriber's usual "
             "network)."},
    {.name = "tcp_connections_per_second",
     .type = AE_KT_UINT,
     .off = R(limits.tcp_rate),
     .def = "0",
     .max = 10000000,
     .help = "New TCP connections a source may open per second (burst: one second's worth); "
             "beyond, they are closed at accept. 0: no limit."},
    {.name = "tcp_concurrent",
     .type = AE_KT_UINT,
     .off = R(limits.tcp_concurrent),
     .def = "0",
     .max = 10000000,
     .help = "TCP connections a source may hold open at once. 0: no limit."},
    {.name = "quic_initials_per_second",
     .type = AE_KT_UINT,
     .off = R(limits.quic_retry_rate),
     .def = "0",
     .max = 10000000,
     .help = "QUIC connection attempts (Initials without a valid token) a source may make per "
             "second before it gets a Retry (address validation) instead of a connection. 0: no "
             "limit."},
    {.name = "quic_initials_hard",
     .type = AE_KT_UINT,
     .off = R(limits.quic_drop_rate),
     .def = "0",
     .max = 10000000,
     .help = "QUIC Initials per second from a source beyond which they are dropped (no Retry "
             "either). 0: no limit."},
    {.name = "h3_requests_per_second",
     .type = AE_KT_UINT,
     .off = R(limits.h3_rate),
     .def = "0",
     .max = 10000000,
     .help = "HTTP/3 requests a source may make per second (burst: one second's worth); beyond, "
             "they get 429 with Retry-After: 1. 0: no limit."},
    {.name = "table_size",
     .type = AE_KT_UINT,
     .off = R(limits.table_size),
     .def = "65536",
     .min = 64,
     .max = 16777216,
     .help = "Sources each worker tracks (about 64 bytes each); when full, the least recently "
             "seen source is forgotten first."},
    {0},
};

static const char *check_ifname(const char *s)
{
    if (strlen(s) >= 16)
        return "interface names are at most 15 characters";
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == '/' || (unsigned char)*s >= 0x7f)
            return "invalid interface name";
    return NULL;
}

/* TCP hand-off: see docs/operations.md, "TCP flows across route shifts". */
static const ae_key tcp_handoff_keys[] = {
    {.name = "enabled",
     .type = AE_KT_BOOL,
     .off = R(tcp_handoff.enabled),
     .def = "off",
     .help = "Keep TCP connections alive across route shifts: segments of this site's "
             "connections that reach another site are handed back to this one, and segments "
             "reaching this site for another site's connections are handed to it. Needs "
             "`site.forward` (the hand-off endpoint is its port + 1), `interfaces`, root "
             "(CAP_NET_ADMIN, CAP_BPF) and a kernel with tc BPF and TUN; without them anyedge "
             "logs why and runs without it. Changing it needs a restart."},
    {.name = "interfaces",
     .type = AE_KT_STRLIST,
     .off = R(tcp_handoff.interfaces),
     .count_off = R(tcp_handoff.ninterfaces),
     .min = 1,
     .max = 15,
     .check = check_ifname,
     .help = "Network interfaces where client traffic arrives; the capture program is attached "
             "to their ingress."},
    {.name = "device",
     .type = AE_KT_STR,
     .off = R(tcp_handoff.device),
     .def = "aeho0",
     .min = 1,
     .max = 15,
     .check = check_ifname,
     .help = "Name of the TUN device anyedge creates for captured and injected segments."},
    {.name = "query_timeout",
     .type = AE_KT_DURATION,
     .off = R(tcp_handoff.query_timeout_ms),
     .def = "300ms",
     .min = MS(10),
     .max = SEC(10),
     .help = "How long a captured flow waits for a site to claim it; then its segments go "
             "back to this site's kernel, which resets the connection (the client reconnects)."},
    {.name = "flow_ttl",
     .type = AE_KT_DURATION,
     .off = R(tcp_handoff.flow_ttl_ms),
     .def = "2m",
     .min = SEC(1),
     .max = HOUR(24),
     .help = "A moved flow's owner is remembered this long after its last segment."},
    {.name = "max_flows",
     .type = AE_KT_UINT,
     .off = R(tcp_handoff.max_flows),
     .def = "65536",
     .min = 16,
     .max = 16777216,
     .help = "Flows the hand-off cache holds (moved flows, flows being looked up)."},
    {.name = "max_queries",
     .type = AE_KT_UINT,
     .off = R(tcp_handoff.max_queries),
     .def = "10000",
     .min = 0,
     .max = 10000000,
     .help = "New flows looked up per second at most (each costs one query per live site); "
             "beyond, orphans go back to the kernel (RST). 0: no limit."},
    {0},
};

const ae_key ae_conf_keys[] = {
    {.name = "site", .type = AE_KT_SECTION, .sub = site_keys, .help = "Identity of this site."},
    {.name = "workers",
     .type = AE_KT_UINT,
     .off = R(workers),
     .def = "0",
     .min = 0,
     .max = 256,
     .help = "Worker threads; 0 means one per online CPU."},
    {.name = "tls",
     .type = AE_KT_SECTION,
     .sub = tls_keys,
     .help = "Certificates and TLS settings shared by all listeners."},
    {.name = "listeners",
     .type = AE_KT_LIST,
     .off = R(listeners),
     .count_off = R(nlisteners),
     .elem_size = sizeof(ae_conf_listener),
     .pos_off = LS(pos),
     .sub = listener_keys,
     .help = "Addresses the proxy accepts connections on."},
    {.name = "upstreams",
     .type = AE_KT_MAP,
     .off = R(upstreams),
     .count_off = R(nupstreams),
     .elem_size = sizeof(ae_conf_upstream),
     .pos_off = UP(pos),
     .name_off = UP(name),
     .check = check_name,
     .sub = upstream_keys,
     .help = "Pools of servers, by name; listeners refer to them by that name."},
    {.name = "state",
     .type = AE_KT_SECTION,
     .sub = state_keys,
     .help = "Shared state in Redis (key ring, site registry). Optional."},
    {.name = "quic",
     .type = AE_KT_SECTION,
     .sub = quic_keys,
     .help = "QUIC and HTTP/3 settings shared by the `protocol: quic` listeners."},
    {.name = "anycast",
     .type = AE_KT_SECTION,
     .sub = anycast_keys,
     .help = "Anycast route control from the site's health, and site drain. Optional."},
    {.name = "tcp_handoff",
     .type = AE_KT_SECTION,
     .sub = tcp_handoff_keys,
     .help = "TCP flows across route shifts (hand-off of orphaned segments). Optional."},
    {.name = "admin",
     .type = AE_KT_SECTION,
     .sub = admin_keys,
     .help = "Admin HTTP endpoint (metrics and status)."},
    {.name = "log", .type = AE_KT_SECTION, .sub = log_keys, .help = "Logging."},
    {.name = "timeouts",
     .type = AE_KT_SECTION,
     .sub = timeout_keys,
     .help = "Connection timeouts."},
    {.name = "tune", .type = AE_KT_SECTION, .sub = tune_keys, .help = "Resource limits."},
    {.name = "limits",
     .type = AE_KT_SECTION,
     .sub = limits_keys,
     .help = "Per-source limits (connections, QUIC Initials, HTTP/3 requests), enforced by each "
             "worker on its share: a limit of N allows about N / workers per worker (see "
             "docs/operations.md). All off by default."},
    {0},
};
