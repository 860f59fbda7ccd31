/*
 * QUIC TLS backend on GnuTLS (ngtcp2_crypto_gnutls). See tls/quic_tls.h.
 *
 * Session tickets: the master key comes from the key ring ("quic-ticket" of the current key),
 * so a ticket from one site resumes at every site; a process-wide random key serves only
 * until the first ring is known.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include "conf/seen.h"
#include "tls/quic_tls.h"

/* 0-RTT anti-replay (RFC 8446 §8.2, GnuTLS's ClientHello recording): each worker's context has
 * its own gnutls_anti_replay_t (GnuTLS updates its window start without locking, so one object
 * must not serve two threads), and all of them record into this one process-wide table, keyed by
 * the ClientHello's PSK binder without GnuTLS's per-object window prefix: a replayed ClientHello
 * is refused whichever worker it reaches. Bounded: when full, early data is refused (a full
 * handshake, never a replay). */
#define AE_QUIC_REPLAY_SLOTS (1u << 16)
static pthread_mutex_t replay_mu = PTHREAD_MUTEX_INITIALIZER;
static ae_seen *replay_seen;

/* TLS 1.3 only (RFC 9001 §4.2), the suites QUIC defines, no middlebox compatibility mode. */
#define AE_QUIC_PRIORITY                                                                           \
    "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:"           \
    "+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"      \
    "+GROUP-SECP384R1:+GROUP-SECP521R1"

struct ae_quic_tls_ctx {
    int refcnt;
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    int early_data;              /* quic.early_data */
    gnutls_anti_replay_t replay; /* this worker's recording window (early_data only) */
};

struct ae_quic_tls {
    gnutls_session_t session;
    int early_offered; /* the ClientHello carried the early_data extension */
    int early_id_set;  /* early_id holds SHA-256 of the binder GnuTLS recorded */
    uint8_t early_id[32];
};

/* The session whose ClientHello this thread is processing (set by the ClientHello hook before
 * GnuTLS parses it, cleared after): the add function below only gets the anti-replay object's
 * pointer, not the session, and GnuTLS processes a ClientHello synchronously in
 * gnutls_handshake() on the connection's worker thread. */
static __thread ae_quic_tls *hello_session;

static int replay_add(void *ptr, time_t exp_time, const gnutls_datum_t *key,
                      const gnutls_datum_t *data)
{
    (void)ptr;
    (void)data;
    /* key = 12 bytes of window start time (per anti-replay object), then the binder. */
    if (key->size <= 12)
        return GNUTLS_E_DB_ERROR;
    uint64_t now = (uint64_t)time(NULL);
    int rv;
    pthread_mutex_lock(&replay_mu);
    if (replay_seen == NULL) {
        uint8_t seed[32];
        if (gnutls_rnd(GNUTLS_RND_RANDOM, seed, sizeof(seed)) == 0)
            replay_seen = ae_seen_new(AE_QUIC_REPLAY_SLOTS, seed);
    }
    rv = replay_seen == NULL ? AE_SEEN_FULL
                             : ae_seen_add(replay_seen, key->data + 12, key->size - 12, now,
                                           (uint64_t)exp_time + 1);
    pthread_mutex_unlock(&replay_mu);
    if (rv == AE_SEEN_NEW) {
        /* The binder verified and was new here: it names this ClientHello for the sites'
         * shared first-use record (ae_quic_tls_early_id). */
        ae_quic_tls *s = hello_session;
        if (s != NULL &&
            gnutls_hash_fast(GNUTLS_DIG_SHA256, key->data + 12, key->size - 12, s->early_id) == 0)
            s->early_id_set = 1;
        return 0;
    }
    return rv == AE_SEEN_DUP ? GNUTLS_E_DB_ENTRY_EXISTS : GNUTLS_E_DB_ERROR;
}

static int early_ext_cb(void *ctx, unsigned tls_id, const unsigned char *data, unsigned size)
{
    (void)data;
    (void)size;
    if (tls_id == 42) /* early_data (RFC 8446 §4.2.10) */
        ((ae_quic_tls *)ctx)->early_offered = 1;
    return 0;
}

static int client_hello_hook(gnutls_session_t session, unsigned htype, unsigned when,
                             unsigned incoming, const gnutls_datum_t *msg)
{
    ae_quic_tls *s = gnutls_db_get_ptr(session);
    (void)htype;
    if (!incoming || s == NULL)
        return 0;
    if (when == GNUTLS_HOOK_POST) {
        hello_session = NULL;
        return 0;
    }
    hello_session = s;
    s->early_id_set = 0;
    gnutls_ext_raw_parse(s, early_ext_cb, msg, GNUTLS_EXT_RAW_FLAG_TLS_CLIENT_HELLO);
    return 0;
}

static gnutls_datum_t local_ticket_key;
static int ticket_key_ok;

static void ticket_key_once(void)
{
    ticket_key_ok = gnutls_session_ticket_key_generate(&local_ticket_key) == 0;
}

int ae_quic_rand(void *buf, size_t n)
{
    return gnutls_rnd(GNUTLS_RND_RANDOM, buf, n) == 0 ? 0 : AE_ERR_TLS;
}

int ae_quic_tls_ctx_new(const ae_conf *conf, ae_quic_tls_ctx **out, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, ticket_key_once);
    ae_quic_tls_ctx *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return AE_ERR_NOMEM;
    }
    t->refcnt = 1;
    int rv = gnutls_certificate_allocate_credentials(&t->cred);
    if (rv != 0) {
        snprintf(err, errlen, "gnutls_certificate_allocate_credentials: %s", gnutls_strerror(rv));
        goto fail;
    }
    for (size_t i = 0; i < conf->tls.ncerts; i++) {
        const ae_conf_cert *c = &conf->tls.certs[i];
        rv = gnutls_certificate_set_x509_key_file(t->cred, c->cert, c->key, GNUTLS_X509_FMT_PEM);
        if (rv < 0) {
            snprintf(err, errlen, "%s:%u:%u: %s.cert: cannot load '%s' / '%s' for QUIC: %s",
                     conf->path ? conf->path : "-", c->cert_pos.line, c->cert_pos.col, c->where,
                     c->cert, c->key, gnutls_strerror(rv));
            goto fail;
        }
    }
    rv = gnutls_priority_init2(&t->prio, AE_QUIC_PRIORITY, NULL, 0);
    if (rv != 0) {
        snprintf(err, errlen, "gnutls_priority_init: %s", gnutls_strerror(rv));
        goto fail;
    }
    if (!ticket_key_ok) {
        snprintf(err, errlen, "cannot generate the QUIC session ticket key");
        goto fail;
    }
    if (conf->quic.early_data) {
        rv = gnutls_anti_replay_init(&t->replay);
        if (rv != 0) {
            snprintf(err, errlen, "gnutls_anti_replay_init: %s", gnutls_strerror(rv));
            goto fail;
        }
        gnutls_anti_replay_set_window(t->replay, conf->quic.early_data_window_ms);
        gnutls_anti_replay_set_add_function(t->replay, replay_add);
        t->early_data = 1;
    }
    *out = t;
    return 0;
fail:
    t->refcnt = 1;
    ae_quic_tls_ctx_unref(t);
    return AE_ERR_TLS;
}

ae_quic_tls_ctx *ae_quic_tls_ctx_ref(ae_quic_tls_ctx *ctx)
{
    ctx->refcnt++;
    return ctx;
}

void ae_quic_tls_ctx_unref(ae_quic_tls_ctx *ctx)
{
    if (ctx == NULL || --ctx->refcnt > 0)
        return;
    if (ctx->prio != NULL)
        gnutls_priority_deinit(ctx->prio);
    if (ctx->cred != NULL)
        gnutls_certificate_free_credentials(ctx->cred);
    if (ctx->replay != NULL)
        gnutls_anti_replay_deinit(ctx->replay);
    free(ctx);
}

int ae_quic_tls_new(ae_quic_tls_ctx *ctx, ngtcp2_conn *conn, ngtcp2_crypto_conn_ref *ref,
                    const uint8_t *ticket_key, ae_quic_tls **out)
{
    gnutls_datum_t shared = {(unsigned char *)ticket_key, 64};
    ae_quic_tls *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return AE_ERR_NOMEM;
    /* Early data: QUIC carries it in 0-RTT packets, so the TLS limit must be 0xffffffff
     * (RFC 9001 §4.6.1) and there is no EndOfEarlyData message. */
    if (gnutls_init(&s->session, GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET |
                                     GNUTLS_NO_END_OF_EARLY_DATA |
                                     (ctx->early_data ? GNUTLS_ENABLE_EARLY_DATA : 0)) != 0) {
        free(s);
        return AE_ERR_TLS;
    }
    static const gnutls_datum_t h3 = {(unsigned char *)"h3", 2};
    if (gnutls_priority_set(s->session, ctx->prio) != 0 ||
        gnutls_session_ticket_enable_server(
            s->session, ticket_key != NULL ? &shared : &local_ticket_key) != 0 ||
        ngtcp2_crypto_gnutls_configure_server_session(s->session) != 0 ||
        gnutls_credentials_set(s->session, GNUTLS_CRD_CERTIFICATE, ctx->cred) != 0 ||
        gnutls_alpn_set_protocols(s->session, &h3, 1, GNUTLS_ALPN_MANDATORY) != 0) {
        ae_quic_tls_free(s);
        return AE_ERR_TLS;
    }
    if (ctx->early_data) {
        gnutls_anti_replay_enable(s->session, ctx->replay);
        if (gnutls_record_set_max_early_data_size(s->session, 0xffffffffu) != 0) {
            ae_quic_tls_free(s);
            return AE_ERR_TLS;
        }
    }
    gnutls_db_set_ptr(s->session, s);
    gnutls_handshake_set_hook_function(s->session, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_BOTH,
                                       client_hello_hook);
    gnutls_session_set_ptr(s->session, ref);
    ngtcp2_conn_set_tls_native_handle(conn, s->session);
    *out = s;
    return 0;
}

void ae_quic_tls_free(ae_quic_tls *s)
{
    if (s == NULL)
        return;
    if (hello_session == s) /* a ClientHello that failed between the hooks */
        hello_session = NULL;
    gnutls_deinit(s->session);
    free(s);
}

int ae_quic_tls_send_ticket(ae_quic_tls *s)
{
    return gnutls_session_ticket_send(s->session, 1, 0) == 0 ? 0 : AE_ERR_TLS;
}

void ae_quic_tls_sni(ae_quic_tls *s, char *buf, size_t len)
{
    size_t n = len;
    unsigned int type = 0;
    if (len == 0)
        return;
    buf[0] = 0;
    if (gnutls_server_name_get(s->session, buf, &n, &type, 0) != 0 || type != GNUTLS_NAME_DNS)
        buf[0] = 0;
}

int ae_quic_tls_resumed(ae_quic_tls *s)
{
    return gnutls_session_is_resumed(s->session) != 0;
}

int ae_quic_tls_early_data(ae_quic_tls *s)
{
    if (gnutls_session_get_flags(s->session) & GNUTLS_SFLAGS_EARLY_DATA)
        return 1;
    return s->early_offered ? -1 : 0;
}

int ae_quic_tls_early_id(ae_quic_tls *s, uint8_t out[32])
{
    if (!s->early_id_set || !(gnutls_session_get_flags(s->session) & GNUTLS_SFLAGS_EARLY_DATA))
        return 0;
    memcpy(out, s->early_id, 32);
    return 1;
}
