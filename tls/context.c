/*
 * OpenSSL server contexts: certificates, SNI selection, ALPN, ciphers, session tickets.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls/tls_int.h"

static void global_init_once(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
}

void ae_tls_global_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init_once);
}

static void tls_err(char *err, size_t errlen, const ae_conf *conf, ae_conf_pos pos,
                    const char *where, const char *key, const char *what, const char *path)
{
    char detail[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (errno != 0 && e == 0)
        snprintf(detail, sizeof(detail), ": %s", strerror(errno));
    else if (e != 0) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(detail, sizeof(detail), ": %s", buf);
    }
    snprintf(err, errlen, "%s:%u:%u: %s.%s: %s '%s'%s", conf->path ? conf->path : "-", pos.line,
             pos.col, where, key, what, path, detail);
    ERR_clear_error();
}

/* Adds the DNS names of cert (SANs, or the CN without SANs) to the SNI table. */
static int add_names(ae_tls_ctx *t, X509 *x, size_t idx)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char *names[64];
    size_t n = 0;
    if (sans != NULL) {
        for (int i = 0; i < sk_GENERAL_NAME_num(sans) && n < AE_ARRAY_LEN(names); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
            if (g->type != GEN_DNS)
                continue;
            const unsigned char *s = ASN1_STRING_get0_data(g->d.dNSName);
            int len = ASN1_STRING_length(g->d.dNSName);
            if (len <= 0 || len > AE_SNI_MAX || memchr(s, 0, (size_t)len) != NULL)
                continue;
            names[n++] = strndup((const char *)s, (size_t)len);
        }
        GENERAL_NAMES_free(sans);
    } else {
        char cn[AE_SNI_MAX + 1];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0)
            names[n++] = strdup(cn);
    }
    for (size_t i = 0; i < n; i++) {
        if (names[i] == NULL)
            goto nomem;
        ae_sni_entry *ne = realloc(t->sni, (t->nsni + 1) * sizeof(*ne));
        if (ne == NULL)
            goto nomem;
        t->sni = ne;
        for (char *p = names[i]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        t->sni[t->nsni].name = names[i];
        t->sni[t->nsni].cert = idx;
        t->nsni++;
        names[i] = NULL;
    }
    return 0;
nomem:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    return AE_ERR_NOMEM;
}

/* Index of the certificate for a (lower-case) host name: exact match first, then a wildcard
 * covering exactly one label; the default certificate otherwise. */
static size_t sni_lookup(const ae_tls_ctx *t, const char *host)
{
    const char *dot = strchr(host, '.');
    for (size_t i = 0; i < t->nsni; i++)
        if (strcmp(t->sni[i].name, host) == 0)
            return t->sni[i].cert;
    if (dot != NULL)
        for (size_t i = 0; i < t->nsni; i++)
            if (t->sni[i].name[0] == '*' && strcmp(t->sni[i].name + 1, dot) == 0)
                return t->sni[i].cert;
    return 0;
}

static void conn_fail(ae_tls_conn *c, ae_tls_fail_reason r)
{
    if (c != NULL && !c->fail_set) {
        c->fail = r;
        c->fail_set = 1;
    }
}

/* Reads the server_name extension ourselves (RFC 6066 §3) so that oversized or malformed
 * names are counted as SNI failures and the certificate is chosen before any other
 * extension is processed. */
static int client_hello_cb(SSL *s, int *alert, void *arg)
{
    ae_tls_ctx *t = arg;
    ae_tls_conn *c = SSL_get_app_data(s);
    const unsigned char *p;
    size_t len;
    if (!SSL_client_hello_get0_ext(s, TLSEXT_TYPE_server_name, &p, &len))
        return SSL_CLIENT_HELLO_SUCCESS;
    /* ServerNameList: u16 length, then entries { u8 type, u16 len, name } */
    if (len < 5 || (size_t)((p[0] << 8) | p[1]) != len - 2 || p[2] != TLSEXT_NAMETYPE_host_name)
        goto bad;
    size_t hlen = (size_t)((p[3] << 8) | p[4]);
    if (hlen == 0 || hlen > AE_SNI_MAX || hlen > len - 5)
        goto bad;
    char host[AE_SNI_MAX + 1];
    for (size_t i = 0; i < hlen; i++) {
        unsigned char ch = p[5 + i];
        if (ch <= 0x20 || ch >= 0x7f)
            goto bad;
        host[i] = (char)tolower(ch);
    }
    host[hlen] = '\0';
    if (c != NULL)
        memcpy(c->sni, host, hlen + 1);
    size_t idx = sni_lookup(t, host);
    if (idx != 0 && SSL_set_SSL_CTX(s, t->ssl[idx]) == NULL)
        return SSL_CLIENT_HELLO_ERROR;
    return SSL_CLIENT_HELLO_SUCCESS;
bad:
    conn_fail(c, AE_TLS_FAIL_SNI);
    *alert = SSL_AD_DECODE_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
}

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    ae_tls_ctx *t = arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, t->alpn_wire, (unsigned int)t->alpn_wire_len, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED) {
        conn_fail(SSL_get_app_data(s), AE_TLS_FAIL_NO_SHARED);
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301 §3.2: no_application_protocol */
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    ae_tls_ctx *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    int rv = ae_keyring_ticket_cb(t->ring, key_name, iv, cctx, hctx, enc);
    /* TLS 1.3 tickets are meant to be used once (RFC 8446 C.4): browsers and OpenSSL's client
     * session cache drop a ticket when they use it. Without a fresh ticket after each
     * resumption every second connection of such a client is a full handshake. */
    if (!enc && rv == 1 && SSL_version(s) == TLS1_3_VERSION)
        rv = 2;
    return rv;
}

/* Session ticket app data (see ae_tls_conn_hooks). Runs when a ticket is issued: stores what
 * the connection's hook writes into the session the ticket is made from. */
static int ticket_gen_cb(SSL *s, void *arg)
{
    ae_tls_conn *c = SSL_get_app_data(s);
    SSL_SESSION *sess = SSL_get0_session(s);
    if (c == NULL || !c->has_hooks || c->hooks.ticket_appdata == NULL || sess == NULL)
        return 1;
    uint8_t buf[AE_TLS_APPDATA_MAX];
    size_t n = c->hooks.ticket_appdata(c->hooks.arg, buf, sizeof(buf));
    if (n > sizeof(buf))
        n = 0;
    /* Failing to attach the data only loses the record: never fail the handshake for it. */
    if (SSL_SESSION_set1_ticket_appdata(sess, n > 0 ? buf : NULL, n) != 1)
        ERR_clear_error();
    return 1;
}

/* Runs after the key callback (keyring.c) has tried to open a ticket. Keeps OpenSSL's own
 * decisions (a ticket under the previous or next key is renewed: status SUCCESS_RENEW) and
 * hands the ticket's app data to the connection's hook, which may ask for a renewal too. */
static SSL_TICKET_RETURN ticket_dec_cb(SSL *s, SSL_SESSION *ss, const unsigned char *keyname,
                                       size_t keyname_len, SSL_TICKET_STATUS status, void *arg)
{
    switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW: {
        int renew = status == SSL_TICKET_SUCCESS_RENEW;
        ae_tls_conn *c = SSL_get_app_data(s);
        if (c != NULL && c->has_hooks && c->hooks.resumed_appdata != NULL && ss != NULL) {
            void *data = NULL;
            size_t len = 0;
            if (SSL_SESSION_get0_ticket_appdata(ss, &data, &len) != 1 || data == NULL)
                len = 0;
            int want = 0;
            c->hooks.resumed_appdata(c->hooks.arg, len > 0 ? data : NULL, len, &want);
            renew |= want;
        }
        return renew ? SSL_TICKET_RETURN_USE_RENEW : SSL_TICKET_RETURN_USE;
    }
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
        return SSL_TICKET_RETURN_ABORT;
    }
}

/* TLS 1.3 suites when tls.ciphersuites is unset: OpenSSL's three, AES-128-GCM first. Every
 * key exchange offered (X25519, P-256) and the P-256 certificates give ~128-bit security, so
 * AES-256 and SHA-384 add cost (14 AES rounds; SHA-512 compressions with no SHA-NI, in every
 * HKDF step and the transcript hash) and no strength. RFC 8446 §9.1 makes AES-128-GCM the one
 * mandatory suite; Go, BoringSSL and QUIC's Initial packets rank it first as well. */
#define AE_TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

static int setup_ctx(ae_tls_ctx *t, const ae_conf *conf, size_t i, char *err, size_t errlen)
{
    const ae_conf_cert *cc = &conf->tls.certs[i];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return AE_ERR_NOMEM;
    t->ssl[i] = ctx;
    SSL_CTX_set_app_data(ctx, t);
    SSL_CTX_set_min_proto_version(ctx, (int)conf->tls.min_version);
    /* Server preference, with ChaCha20 moved first for clients that list it first (they lack
     * AES hardware); see AE_TLS13_SUITES. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_PRIORITIZE_CHACHA | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Partial writes and a moving buffer let the relay hand OpenSSL whatever it has; released
     * buffers keep idle connections small; read-ahead pulls many records per read(2). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
    /* Tickets only: no server-side session cache to lock and grow. One TLS 1.3 ticket per
     * handshake instead of OpenSSL's default two halves the ticket work. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, (long)conf->tls.ticket_rotation_s);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    SSL_CTX_set_session_ticket_cb(ctx, ticket_gen_cb, ticket_dec_cb, t);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"anyedge", 7);
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, t);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, t);

    errno = 0;
    if (conf->tls.ciphers && SSL_CTX_set_cipher_list(ctx, conf->tls.ciphers) != 1) {
        snprintf(err, errlen, "%s: tls.ciphers: no valid cipher in '%s'", conf->path,
                 conf->tls.ciphers);
        return AE_ERR_TLS;
    }
    const char *suites = conf->tls.ciphersuites ? conf->tls.ciphersuites : AE_TLS13_SUITES;
    if (SSL_CTX_set_ciphersuites(ctx, suites) != 1) {
        snprintf(err, errlen, "%s: tls.ciphersuites: no valid suite in '%s'", conf->path, suites);
        return AE_ERR_TLS;
    }
    FILE *f = fopen(cc->cert, "r");
    if (f == NULL) {
        tls_err(err, errlen, conf, cc->cert_pos, cc->where, "cert", "cannot read", cc->cert);
        return AE_ERR_IO;
    }
    fclose(f);
    errno = 0;
    if (SSL_CTX_use_certificate_chain_file(ctx, cc->cert) != 1) {
        tls_err(err, errlen, conf, cc->cert_pos, cc->where, "cert", "no valid certificate in",
                cc->cert);
        return AE_ERR_TLS;
    }
    f = fopen(cc->key, "r");
    if (f == NULL) {
        tls_err(err, errlen, conf, cc->key_pos, cc->where, "key", "cannot read", cc->key);
        return AE_ERR_IO;
    }
    fclose(f);
    errno = 0;
    int loaded = SSL_CTX_use_PrivateKey_file(ctx, cc->key, SSL_FILETYPE_PEM);
    /* A valid key of the certificate's type but not its key fails here already (OpenSSL
     * checks it against the certificate of its slot): report it as a mismatch too. */
    unsigned long le = loaded != 1 ? ERR_peek_last_error() : 0;
    int mismatch =
        ERR_GET_LIB(le) == ERR_LIB_X509 && (ERR_GET_REASON(le) == X509_R_KEY_VALUES_MISMATCH ||
                                            ERR_GET_REASON(le) == X509_R_KEY_TYPE_MISMATCH);
    if (loaded != 1 && !mismatch) {
        tls_err(err, errlen, conf, cc->key_pos, cc->where, "key", "no valid private key in",
                cc->key);
        return AE_ERR_TLS;
    }
    if (mismatch || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "%s:%u:%u: %s.key: private key '%s' does not match certificate '%s'",
                 conf->path, cc->key_pos.line, cc->key_pos.col, cc->where, cc->key, cc->cert);
        return AE_ERR_TLS;
    }
    return add_names(t, SSL_CTX_get0_certificate(ctx), i);
}

int ae_tls_ctx_new(const ae_conf *conf, ae_keyring *ring, ae_tls_ctx **out, char *err,
                   size_t errlen)
{
    int rv = AE_ERR_NOMEM;
    ae_tls_global_init();
    if (conf->tls.ncerts == 0) {
        snprintf(err, errlen, "%s: tls.cert: no certificate configured", conf->path);
        return AE_ERR_INVAL;
    }
    ae_tls_ctx *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return AE_ERR_NOMEM;
    t->ring = ring;
    t->ssl = calloc(conf->tls.ncerts, sizeof(*t->ssl));
    if (t->ssl == NULL)
        goto fail;
    t->nssl = conf->tls.ncerts;
    for (size_t i = 0; i < conf->tls.nalpn; i++)
        t->alpn_wire_len += 1 + strlen(conf->tls.alpn[i]);
    t->alpn_wire = malloc(t->alpn_wire_len + 1);
    if (t->alpn_wire == NULL)
        goto fail;
    unsigned char *w = t->alpn_wire;
    for (size_t i = 0; i < conf->tls.nalpn; i++) {
        size_t l = strlen(conf->tls.alpn[i]);
        *w++ = (unsigned char)l;
        memcpy(w, conf->tls.alpn[i], l);
        w += l;
    }
    for (size_t i = 0; i < t->nssl; i++) {
        rv = setup_ctx(t, conf, i, err, errlen);
        if (rv != 0)
            goto fail;
    }
    *out = t;
    return 0;
fail:
    ae_tls_ctx_free(t);
    return rv;
}

void ae_tls_ctx_free(ae_tls_ctx *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nssl; i++)
        SSL_CTX_free(t->ssl[i]);
    for (size_t i = 0; i < t->nsni; i++)
        free(t->sni[i].name);
    free(t->sni);
    free(t->ssl);
    free(t->alpn_wire);
    free(t);
}

int ae_tls_check_conf(const ae_conf *conf, char *err, size_t errlen)
{
    ae_keyring *ring;
    ae_tls_ctx *t;
    int rv = ae_keyring_new(&ring);
    if (rv != 0) {
        snprintf(err, errlen, "cannot create the ticket key ring");
        return rv;
    }
    rv = ae_tls_ctx_new(conf, ring, &t, err, errlen);
    if (rv == 0)
        ae_tls_ctx_free(t);
    ae_keyring_free(ring);
    return rv;
}
