/*
 * anyedge TLS layer: the one interface proxy/ uses; OpenSSL stays inside tls/.
 *
 * Objects:
 *  - ae_keyring: the session-ticket key ring (next -> current -> previous -> retired). Shared by
 *    every worker thread; read under a read lock in the ticket callback, changed by the main
 *    thread (its own rotation timer standalone, the shared ring from Redis via state/).
 *  - ae_tls_ctx: server contexts built from one config snapshot (certificates, SNI, ALPN,
 *    ciphers, tickets). Immutable once built; reference-counted by the proxy's runtime.
 *  - ae_tls_conn: one server-side TLS connection over a non-blocking socket.
 */
#ifndef AE_TLS_H
#define AE_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf/conf.h"

/* ---- key ring ---- */

typedef enum {
    AE_KEY_NEXT = 0,     /* published, not yet used to encrypt; decrypts */
    AE_KEY_CURRENT = 1,  /* encrypts and decrypts */
    AE_KEY_PREVIOUS = 2, /* decrypts; tickets it opens are renewed */
    AE_KEY_RETIRED = 3,  /* gone: tickets under it get a full handshake */
} ae_key_state;

#define AE_TICKET_NAME_LEN 16
#define AE_TICKET_KEY_LEN  32

typedef struct {
    uint64_t id;         /* monotonically increasing */
    uint64_t created_ms; /* wall clock */
    ae_key_state state;
    uint8_t name[AE_TICKET_NAME_LEN]; /* ticket key name (sent in the ticket) */
    uint8_t aes[AE_TICKET_KEY_LEN];   /* AES-256-CBC key */
    uint8_t hmac[AE_TICKET_KEY_LEN];  /* HMAC-SHA256 key */
} ae_ticket_key;

typedef struct ae_keyring ae_keyring;

/* Creates a local ring with fresh random keys: one current and one next. 0 or AE_ERR_*. */
int ae_keyring_new(ae_keyring **out);
/* Frees the ring. Accepts NULL. Only when no ae_tls_ctx uses it any more. */
void ae_keyring_free(ae_keyring *ring);
/* Local rotation: previous is retired, current becomes previous, next becomes current and a
 * fresh next is generated. Returns 0 or AE_ERR_*. */
int ae_keyring_rotate(ae_keyring *ring);
/* Most keys a ring holds: the shared ring's three plus decrypt-only keys kept from a local
 * ring that was replaced by the shared one. */
#define AE_KEYRING_CAP 8
/* Replaces every key (shared mode: keys derived from the Redis ring, newest first, any states;
 * one AE_KEY_CURRENT encrypts, every other key only decrypts and its tickets are renewed).
 * Returns 0, or AE_ERR_INVAL when n is 0 or above AE_KEYRING_CAP or no key is current. */
int ae_keyring_replace(ae_keyring *ring, const ae_ticket_key *keys, size_t n);
/* Copies up to max keys (newest first) into out; returns how many. For status and tests. */
size_t ae_keyring_snapshot(ae_keyring *ring, ae_ticket_key *out, size_t max);
/* Generation: incremented on every change. */
uint64_t ae_keyring_generation(ae_keyring *ring);

/* Resumptions counted by the key state that decrypted the ticket. */
typedef struct {
    uint64_t decrypt_current;
    uint64_t decrypt_previous;
    uint64_t decrypt_next;
    uint64_t decrypt_unknown; /* ticket whose key is unknown or retired: full handshake */
    uint64_t encrypt;
} ae_keyring_stats;
void ae_keyring_get_stats(ae_keyring *ring, ae_keyring_stats *out);

/* ---- contexts ---- */

typedef struct ae_tls_ctx ae_tls_ctx;

/* Builds the server contexts for conf (certificate files are read here). ring is borrowed and
 * must outlive the context. On error returns AE_ERR_TLS/AE_ERR_IO and writes one line
 * "FILE:LINE:COL: KEY: message" naming the config key (unreadable file, bad PEM, key not
 * matching the certificate). */
int ae_tls_ctx_new(const ae_conf *conf, ae_keyring *ring, ae_tls_ctx **out, char *err,
                   size_t errlen);
void ae_tls_ctx_free(ae_tls_ctx *ctx);

/* Checks the certificates of conf as ae_tls_ctx_new would, for `anyedge -t`. */
int ae_tls_check_conf(const ae_conf *conf, char *err, size_t errlen);

/* ---- connections ---- */

typedef struct ae_tls_conn ae_tls_conn;

/* I/O results besides byte counts. */
enum {
    AE_TLS_WANT_READ = -100,  /* retry when the socket is readable */
    AE_TLS_WANT_WRITE = -101, /* retry when the socket is writable */
};

/* Handshake failure reasons, for metrics (index into ae_tls_fail_reason_names). */
typedef enum {
    AE_TLS_FAIL_PROTOCOL = 0, /* not TLS, bad record, unsupported version */
    AE_TLS_FAIL_NO_SHARED,    /* no shared cipher / group / ALPN */
    AE_TLS_FAIL_SNI,          /* oversized or malformed server name */
    AE_TLS_FAIL_PEER_CLOSED,  /* EOF or reset during the handshake */
    AE_TLS_FAIL_OTHER,
    AE_TLS_FAIL__COUNT
} ae_tls_fail_reason;
extern const char *const ae_tls_fail_reason_names[AE_TLS_FAIL__COUNT];

/* Creates a server connection on fd (borrowed: the caller closes it after freeing). */
int ae_tls_conn_new(ae_tls_ctx *ctx, int fd, ae_tls_conn **out);
void ae_tls_conn_free(ae_tls_conn *c);

/* Advances the handshake. Returns 0 when complete, AE_TLS_WANT_READ/WRITE, or AE_ERR_TLS with
 * *reason set. */
int ae_tls_conn_handshake(ae_tls_conn *c, ae_tls_fail_reason *reason);

/* Reads decrypted bytes. Returns n > 0, AE_TLS_WANT_READ/WRITE, AE_ERR_CLOSED on the peer's
 * close_notify or a clean EOF, AE_ERR_TLS/AE_ERR_IO on errors. */
ssize_t ae_tls_conn_read(ae_tls_conn *c, void *buf, size_t len);

/* Encrypts and sends up to len bytes. Returns n > 0 (possibly less than len),
 * AE_TLS_WANT_READ/WRITE, or AE_ERR_TLS/AE_ERR_IO. After WANT_*, retry with the same buffer. */
ssize_t ae_tls_conn_write(ae_tls_conn *c, const void *buf, size_t len);

/* Sends close_notify (half-close of the write side). Returns 0, AE_TLS_WANT_*, or an error. */
int ae_tls_conn_shutdown(ae_tls_conn *c);

/* 1 when the TLS layer holds received data, decrypted or not yet (read-ahead records): read
 * again before waiting for the socket, which may have nothing more to say. */
int ae_tls_conn_pending(ae_tls_conn *c);

/* Per-connection hooks for data the proxy keeps in the session ticket ("ticket app data").
 * Both run inside ae_tls_conn_handshake(), on the connection's thread.
 *  - ticket_appdata: a ticket is being issued; writes up to cap bytes to store in it and
 *    returns the length (0: store nothing).
 *  - resumed_appdata: a ticket was opened (the session may still be refused later in the
 *    handshake, and with several TLS 1.3 PSK identities it may run more than once); data/len
 *    are what ticket_appdata stored (len 0 for a ticket with none). Setting *renew = 1 asks
 *    for a new ticket to be issued on this handshake.
 * Either function may be NULL. */
#define AE_TLS_APPDATA_MAX 256
typedef struct {
    size_t (*ticket_appdata)(void *arg, uint8_t *out, size_t cap);
    void (*resumed_appdata)(void *arg, const uint8_t *data, size_t len, int *renew);
    void *arg;
} ae_tls_conn_hooks;

/* Installs hooks (copied) on c; call before the handshake starts. NULL removes them. */
void ae_tls_conn_set_hooks(ae_tls_conn *c, const ae_tls_conn_hooks *hooks);

/* Handshake facts, valid after completion. Strings are owned by the connection. */
const char *ae_tls_conn_sni(ae_tls_conn *c);     /* "" when none */
const char *ae_tls_conn_alpn(ae_tls_conn *c);    /* "" when none */
const char *ae_tls_conn_version(ae_tls_conn *c); /* "TLSv1.3" */
int ae_tls_conn_resumed(ae_tls_conn *c);

/* One-time library initialisation (idempotent). */
void ae_tls_global_init(void);

#endif
