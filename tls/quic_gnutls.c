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

/* 0-RTT anti-replay (RFC 8446 §8.2; docs/0rtt-design.md, design O2). GnuTLS's check refuses
 * every ticket issued before its object's "recording start" and moves that start to now once
 * the window has passed, so with a short window only tickets a few seconds old got 0-RTT on a
 * busy site. Instead the window is 0xffffffff ms: the start never moves (the object is never
 * written after init and can serve every worker) and the freshness test is void. What makes a
 * replay impossible then is the record table: every accepted ClientHello (its PSK binder,
 * without GnuTLS's start-time prefix) is kept for E + 1 s, E being the ticket lifetime that
 * GnuTLS enforces at resumption (gnutls_db_set_cache_expiration, against this site's clock), so
 * the record outlives every chance that ClientHello has to be accepted here. The start (=
 * object creation) is after every record we lost: a restart refuses 0-RTT of older tickets.
 *
 * One object for the process, shared by the contexts of all workers and reloads. A reload that
 * raises E gets a new object (start = now): records made with the smaller E would expire while
 * their ClientHellos are still acceptable under the larger one, so older tickets must lose 0-RTT.
 * The old object stays alive while a context (and so a session) refers to it. Records always
 * take the largest E of any live object (the current one's: objects are replaced only to raise
 * E), which covers a worker still serving the previous snapshot for a moment. */
typedef struct {
    gnutls_anti_replay_t ar;
    uint32_t expire_s; /* E of the snapshot that created it: never below a later snapshot's */
    int refcnt;        /* the contexts using it, plus 1 while it is replay_cur (replay_mu) */
} replay_obj;

static pthread_mutex_t replay_mu = PTHREAD_MUTEX_INITIALIZER;
static replay_obj *replay_cur;  /* for new contexts */
static ae_seen *replay_seen;    /* the records, sized by the first snapshot with early_data */
static uint32_t replay_records; /* quic.early_data_records of that snapshot */

struct ae_quic_tls_ctx {
    int refcnt;
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    int early_data;     /* quic.early_data */
    unsigned expire_s;  /* quic.early_data_max_age in seconds: ticket lifetime E */
    replay_obj *replay; /* the process's anti-replay object (early_data only) */
};

struct ae_quic_tls {
    gnutls_session_t session;
    int early_offered; /* the ClientHello carried the early_data extension */
    int early_full;    /* its early data was refused because the record table is full */
    int early_id_set;  /* early_id holds SHA-256 of the binder GnuTLS recorded */
    uint8_t early_id[32];
};

/* TLS 1.3 only (RFC 9001 §4.2), the suites QUIC defines, no middlebox compatibility mode. */
#define AE_QUIC_PRIORITY                                                                           \
    "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:"           \
    "+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"      \
    "+GROUP-SECP384R1:+GROUP-SECP521R1"

/* The session whose ClientHello this thread is processing (set by the ClientHello hook before
 * GnuTLS parses it, cleared after): the add function below only gets the anti-replay object's
 * pointer, not the session, and GnuTLS processes a ClientHello synchronously in
 * gnutls_handshake() on the connection's worker thread. */
static __thread ae_quic_tls *hello_session;

static int replay_add(void *ptr, time_t exp_time, const gnutls_datum_t *key,
                      const gnutls_datum_t *data)
{
    (void)ptr;
    (void)exp_time; /* now + 49 days with our window: we use E instead */
    (void)data;
    /* key = 12 bytes of the object's start time, then the binder. */
    if (key->size <= 12)
        return GNUTLS_E_DB_ERROR;
    uint64_t now = (uint64_t)time(NULL);
    int rv;
    pthread_mutex_lock(&replay_mu);
    if (replay_seen == NULL || replay_cur == NULL)
        rv = AE_SEEN_FULL;
    else
        rv = ae_seen_add(replay_seen, key->data + 12, key->size - 12, now,
                         now + replay_cur->expire_s + 1);
    pthread_mutex_unlock(&replay_mu);
    ae_quic_tls *s = hello_session;
    if (rv == AE_SEEN_NEW) {
        /* The binder verified and was new here: it names this ClientHello for the sites'
         * shared first-use record (ae_quic_tls_early_id). */
        if (s != NULL &&
            gnutls_hash_fast(GNUTLS_DIG_SHA256, key->data + 12, key->size - 12, s->early_id) == 0)
            s->early_id_set = 1;
        return 0;
    }
    if (rv == AE_SEEN_DUP)
        return GNUTLS_E_DB_ENTRY_EXISTS;
    if (s != NULL) /* fail closed: 1-RTT, never a ClientHello we could not record */
        s->early_full = 1;
    return GNUTLS_E_DB_ERROR;
}

static void replay_obj_unref(replay_obj *o)
{
    if (o == NULL)
        return;
    pthread_mutex_lock(&replay_mu);
    int last = --o->refcnt == 0;
    pthread_mutex_unlock(&replay_mu);
    if (last) {
        gnutls_anti_replay_deinit(o->ar);
        free(o);
    }
}

/* The anti-replay object for a new context with ticket lifetime expire_s (a new reference), and
 * the record table on first use. NULL with err set when out of memory. */
static replay_obj *replay_obj_get(const ae_conf *conf, unsigned expire_s, char *err, size_t errlen)
{
    replay_obj *o = NULL, *old = NULL;
    pthread_mutex_lock(&replay_mu);
    if (replay_seen == NULL) {
        uint8_t seed[32];
        if (gnutls_rnd(GNUTLS_RND_RANDOM, seed, sizeof(seed)) != 0 ||
            (replay_seen = ae_seen_new(conf->quic.early_data_records, seed)) == NULL) {
            snprintf(err, errlen, "quic.early_data_records: cannot allocate %u records",
                     conf->quic.early_data_records);
            goto out;
        }
        replay_records = conf->quic.early_data_records;
    } else if (conf->quic.early_data_records != replay_records) {
        AE_WARN("quic.early_data_records: changing it needs a restart (keeping %u)",
                replay_records);
    }
    if (replay_cur == NULL || expire_s > replay_cur->expire_s) {
        o = calloc(1, sizeof(*o));
        if (o == NULL || gnutls_anti_replay_init(&o->ar) != 0) {
            free(o);
            o = NULL;
            snprintf(err, errlen, "gnutls_anti_replay_init failed");
            goto out;
        }
        gnutls_anti_replay_set_window(o->ar, 0xffffffffu);
        gnutls_anti_replay_set_add_function(o->ar, replay_add);
        o->expire_s = expire_s;
        o->refcnt = 1; /* as replay_cur */
        old = replay_cur;
        replay_cur = o;
    }
    o = replay_cur;
    o->refcnt++;
out:
    pthread_mutex_unlock(&replay_mu);
    replay_obj_unref(old); /* its contexts keep it alive */
    return o;
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
    s->early_full = 0;
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
    t->expire_s = (conf->quic.early_data_max_age_ms + 999) / 1000;
    if (conf->quic.early_data) {
        t->replay = replay_obj_get(conf, t->expire_s, err, errlen);
        if (t->replay == NULL)
            goto fail;
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
    replay_obj_unref(ctx->replay);
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
    /* The ticket lifetime, before anything encrypts or decrypts a ticket: GnuTLS derives the
     * ticket key from the shared master key and floor(now / 3E), so all sites need the same E. */
    gnutls_db_set_cache_expiration(s->session, (int)ctx->expire_s);
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
        gnutls_anti_replay_enable(s->session, ctx->replay->ar);
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
    if (s->early_full)
        return -2;
    return s->early_offered ? -1 : 0;
}

int ae_quic_tls_early_id(ae_quic_tls *s, uint8_t out[32])
{
    if (!s->early_id_set || !(gnutls_session_get_flags(s->session) & GNUTLS_SFLAGS_EARLY_DATA))
        return 0;
    memcpy(out, s->early_id, 32);
    return 1;
}
