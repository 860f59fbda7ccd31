/*
 * A small asynchronous Redis client for one libev loop (hiredis async API + its libev adapter;
 * the library is hiredict 1.3 through its hiredis shims, for TLS).
 *
 * Used by the main thread's state module and the workers' 0-RTT claims: the data path never
 * waits on Redis. What the library lacks is added here:
 *  - connect timeout and per-command timeout (a command that does not answer in time fails with
 *    "timeout", and the connection is dropped and re-established: a Redis that accepts but never
 *    answers cannot pile up commands);
 *  - reconnect with exponential backoff and full jitter (backoff_min .. backoff_max);
 *  - AUTH (password, or ACL user + password) and SELECT db, sent first on every connection; a
 *    failed AUTH is reported (log line + error counter) and retried with backoff;
 *  - an optional second connection in SUBSCRIBE mode for one channel, re-subscribed on reconnect;
 *  - TLS (rediss://) with the server's certificate chain and name checked (ae_redis_tls).
 *
 * Commands are not queued while disconnected: ae_redis_command() returns AE_ERR_AGAIN and the
 * caller retries on its own schedule (its periodic sync), so a long outage cannot grow memory.
 */
#ifndef AE_STATE_REDIS_H
#define AE_STATE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <hiredis/hiredis.h>

/* Where Redis is: parsed from "redis://[[user]:pass@]host:port[/db]" (host an IPv4 address,
 * [IPv6] or a name resolved at connect time; port default 6379; db default 0), the same with
 * "rediss://" (TLS) or "unix:///path/to/socket[?db=N]". user and password are URL-decoded (%XX). */
typedef struct {
    int tls;         /* rediss:// */
    char *host;      /* NULL for a unix socket */
    int port;        /* default 6379 */
    char *unix_path; /* NULL for TCP */
    char *user;      /* NULL: AUTH with the password alone (or no AUTH without a password) */
    char *password;  /* NULL: no AUTH */
    int db;          /* 0..(2^31-1): SELECT when non-zero */
    /* Sentinel mode (nsentinels > 0): host:port above is where the master was last seen (the
     * URL's host:port until the sentinels answer); the sentinels are asked for master_name
     * before every (re)connection, ROLE is checked after it, +switch-master is followed. */
    struct ae_redis_sentinel {
        char *host;
        int port;
    } * sentinels;
    size_t nsentinels;
    char *master_name;
    char *sentinel_user, *sentinel_password; /* AUTH to the sentinels; NULL: none */
} ae_redis_target;

/* Parses url into *out (strings malloc'd). Returns 0, or AE_ERR_PARSE with a one-line reason in
 * err (no password is ever copied into err). */
int ae_redis_url_parse(const char *url, ae_redis_target *out, char *err, size_t errlen);
void ae_redis_target_free(ae_redis_target *t);

/* One sentinel's "host:port" (host a name, an IPv4 address or [IPv6], port 1..65535) into *out
 * (host malloc'd). 0, or -1 with *out empty. */
int ae_redis_sentinel_parse(const char *s, struct ae_redis_sentinel *out);

struct ae_conf;
/* The target of conf's state: state.redis parsed, plus state.sentinels / master_name /
 * sentinel_user / sentinel_password when set ("host:port" each, a name or an IP address).
 * 0 or AE_ERR_PARSE / AE_ERR_NOMEM with a one-line reason in err. */
int ae_redis_target_from_conf(const struct ae_conf *conf, ae_redis_target *out, char *err,
                              size_t errlen);

/* Writes "host:port/db" ("host:port/db tls" for rediss://) or "unix:/path?db=N" (never the
 * password) into buf; returns buf. */
const char *ae_redis_target_describe(const ae_redis_target *t, char *buf, size_t len);

/* TLS settings for rediss:// connections: an OpenSSL client context (CA file or the system's
 * trust store, optional client certificate and key) and the name to check. Built once by its
 * owner (the state module, each worker's claims), shared by that owner's connections, freed after
 * them. */
typedef struct ae_redis_tls ae_redis_tls;
typedef struct {
    const char *ca;          /* PEM CA file; NULL: the system's default verify paths */
    const char *cert, *key;  /* client certificate and key; both or neither */
    const char *server_name; /* checked against the certificate and sent as SNI; NULL: the host */
    int verify;              /* 0: no chain or name check (encrypted, not authenticated) */
} ae_redis_tls_opts;

/* Loads the files now (a bad CA, certificate or key fails here with a one-line reason).
 * 0 or AE_ERR_TLS / AE_ERR_NOMEM. */
int ae_redis_tls_new(const ae_redis_tls_opts *o, ae_redis_tls **out, char *err, size_t errlen);
void ae_redis_tls_free(ae_redis_tls *t); /* accepts NULL */
/* Starts TLS on a connected (or connecting, for the async API) context to host (the URL's host,
 * used as the name when no server_name is set). For a blocking context the handshake runs now,
 * bounded by the context's timeout. 0 or -1 with c->errstr / err set. */
int ae_redis_tls_start(ae_redis_tls *t, redisContext *c, const char *host, char *err,
                       size_t errlen);
/* Why the last certificate check failed (chain or name), copied into buf and forgotten; NULL when
 * none failed since the last call. The library itself only says "certificate verify failed". */
const char *ae_redis_tls_take_error(ae_redis_tls *t, char *buf, size_t len);

/* The TLS context for conf's state.redis and state.tls: *out stays NULL for redis:// and unix://
 * (and state.tls set with them is an error). 0 or AE_ERR_* with a one-line reason in err. */
int ae_redis_tls_from_conf(const struct ae_conf *conf, const ae_redis_target *target,
                           ae_redis_tls **out, char *err, size_t errlen);

/* Asks the sentinels of t (in order) for the master's address, blocking, each bounded by
 * timeout_ms for the connect and for the reply; on success t->host and t->port are replaced.
 * Used at startup and on the way out, never on the event loop's path. 0, or -1 with err set. */
int ae_redis_sentinel_resolve(ae_redis_target *t, ae_redis_tls *tls, uint32_t timeout_ms, char *err,
                              size_t errlen);

typedef struct ae_redis ae_redis;

/* Reply callback: reply is NULL when the command failed without a reply (timeout, disconnect,
 * shutdown); err then says why. A Redis error reply (REDIS_REPLY_ERROR) is passed as a reply:
 * the caller decides. The reply is freed after the callback returns. Never called after
 * ae_redis_free() returned, and never called from inside ae_redis_command(). */
typedef void (*ae_redis_reply_cb)(ae_redis *r, redisReply *reply, const char *err, void *arg);
/* Connection state changes: connected=1 once AUTH/SELECT succeeded, 0 when lost. */
typedef void (*ae_redis_state_cb)(ae_redis *r, int connected, void *arg);
/* A message published on the subscribed channel. */
typedef void (*ae_redis_message_cb)(ae_redis *r, const char *msg, size_t len, void *arg);

typedef struct {
    const ae_redis_target *target;  /* copied */
    ae_redis_tls *tls;              /* required for a rediss:// target; must outlive the client */
    uint32_t connect_timeout_ms;    /* default 1000 when 0 */
    uint32_t command_timeout_ms;    /* default 1000 when 0 */
    uint32_t backoff_min_ms;        /* default 100 when 0 */
    uint32_t backoff_max_ms;        /* default 10000 when 0 */
    const char *subscribe_channel;  /* NULL: no subscriber connection */
    ae_redis_state_cb on_state;     /* optional */
    ae_redis_message_cb on_message; /* required with subscribe_channel */
    void *arg;                      /* passed to on_state and on_message */
} ae_redis_opts;

typedef struct {
    uint64_t commands;    /* commands sent */
    uint64_t errors;      /* error replies, failed connects, failed AUTH/SELECT, protocol errors */
    uint64_t timeouts;    /* connect and command timeouts */
    uint64_t connects;    /* successful (re)connections (after AUTH/SELECT) */
    uint64_t disconnects; /* connections lost */
    uint64_t messages;    /* pub/sub messages received */
    uint64_t master_lookups;  /* sentinel: answers naming the master */
    uint64_t master_switches; /* sentinel: +switch-master followed, or a new address learned */
    uint64_t not_master;      /* sentinel: connections refused because ROLE was not master */
} ae_redis_stats;

/* Creates the client and starts connecting at once (asynchronously). 0 or AE_ERR_*. */
int ae_redis_new(struct ev_loop *loop, const ae_redis_opts *opts, ae_redis **out);
/* Closes the connections; pending commands are dropped without calling their callbacks.
 * Accepts NULL. Must not be called from inside one of its callbacks. */
void ae_redis_free(ae_redis *r);

/* 1 when the command connection is up (AUTH/SELECT done). */
int ae_redis_connected(const ae_redis *r);
/* 1 when the subscriber connection is subscribed. */
int ae_redis_subscribed(const ae_redis *r);

/* Sends a command given as an argument vector (binary safe). Returns 0 (cb will be called
 * exactly once), AE_ERR_AGAIN when not connected (cb not called), AE_ERR_NOMEM. */
int ae_redis_command(ae_redis *r, ae_redis_reply_cb cb, void *arg, int argc, const char **argv,
                     const size_t *argvlen);

void ae_redis_get_stats(const ae_redis *r, ae_redis_stats *out);

#endif
