/*
 * TLS to Redis (rediss://): one OpenSSL client context per owner, one SSL object per connection,
 * handed to the hiredis API (redisInitiateSSL), which owns it from then on.
 *
 * hiredis' own helper (redisCreateSSLContext) only sends the server name as SNI and does not check
 * it against the certificate; here the name is checked (SSL_set1_host / an IP address SAN), which
 * is what makes a CA shared with other services safe to trust.
 */
#include "state/redis.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis_ssl.h>
#ifdef redisInitiateSSL
/* hiredict's shim maps the names but declares nothing (and gcc hides the implicit declaration
 * behind -isystem): take the declarations from hiredict itself. */
#include <hiredict/hiredict_ssl.h>
#endif
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conf/base.h"
#include "conf/conf.h"

struct ae_redis_tls {
    SSL_CTX *ctx;
    char *server_name; /* NULL: the URL's host */
    int verify;
    char last_verify[160]; /* why the last chain or name check failed ("" = none since read) */
};

static int tls_ex_index = -1;
static pthread_once_t tls_ex_once = PTHREAD_ONCE_INIT;

static void tls_ex_init(void)
{
    tls_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Records why a certificate was refused: hiredis reports only "certificate verify failed". The
 * context (and so this record) belongs to one thread's clients. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl;
    ae_redis_tls *t;

    if (ok)
        return 1;
    ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    t = ssl != NULL ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ex_index) : NULL;
    if (t != NULL)
        snprintf(t->last_verify, sizeof(t->last_verify), "certificate refused: %s (depth %d)",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)),
                 X509_STORE_CTX_get_error_depth(xs));
    return 0;
}

const char *ae_redis_tls_take_error(ae_redis_tls *t, char *buf, size_t len)
{
    if (t == NULL || t->last_verify[0] == '\0')
        return NULL;
    snprintf(buf, len, "%s", t->last_verify);
    t->last_verify[0] = '\0';
    return buf;
}

/* The newest OpenSSL error as one line ("what: reason"), the queue cleared. */
static void ssl_err(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

    snprintf(err, errlen, "%s%s%s: %s", what, file != NULL ? " " : "", file != NULL ? file : "",
             reason != NULL ? reason : "unknown error");
    ERR_clear_error();
}

int ae_redis_tls_new(const ae_redis_tls_opts *o, ae_redis_tls **out, char *err, size_t errlen)
{
    ae_redis_tls *t;

    *out = NULL;
    if ((o->cert == NULL) != (o->key == NULL)) {
        snprintf(err, errlen, "a client certificate needs its key (cert and key go together)");
        return AE_ERR_TLS;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL ||
        (o->server_name != NULL && (t->server_name = strdup(o->server_name)) == NULL)) {
        free(t);
        snprintf(err, errlen, "out of memory");
        return AE_ERR_NOMEM;
    }
    t->verify = o->verify;
    ERR_clear_error();
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (t->ctx == NULL) {
        ssl_err(err, errlen, "cannot create the TLS context", NULL);
        goto fail;
    }
    pthread_once(&tls_ex_once, tls_ex_init);
    if (tls_ex_index < 0 || SSL_CTX_set_ex_data(t->ctx, tls_ex_index, t) != 1) {
        ssl_err(err, errlen, "cannot create the TLS context", NULL);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(t->ctx, o->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, verify_cb);
    if (o->verify) {
        if (o->ca != NULL ? SSL_CTX_load_verify_locations(t->ctx, o->ca, NULL) != 1
                          : SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
            ssl_err(err, errlen, "cannot load the CA file", o->ca);
            goto fail;
        }
    }
    if (o->cert != NULL) {
        if (SSL_CTX_use_certificate_chain_file(t->ctx, o->cert) != 1) {
            ssl_err(err, errlen, "cannot load the client certificate", o->cert);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(t->ctx, o->key, SSL_FILETYPE_PEM) != 1) {
            ssl_err(err, errlen, "cannot load the client key", o->key);
            goto fail;
        }
        if (SSL_CTX_check_private_key(t->ctx) != 1) {
            ssl_err(err, errlen, "the client key does not match the certificate", o->key);
            goto fail;
        }
    }
    *out = t;
    return 0;
fail:
    ae_redis_tls_free(t);
    return AE_ERR_TLS;
}

void ae_redis_tls_free(ae_redis_tls *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t->server_name);
    free(t);
}

int ae_redis_tls_start(ae_redis_tls *t, redisContext *c, const char *host, char *err, size_t errlen)
{
    const char *name = t->server_name != NULL ? t->server_name : host;
    unsigned char ip[16];
    int is_ip =
        name != NULL && (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1);
    SSL *ssl;

    ERR_clear_error();
    ssl = SSL_new(t->ctx);
    if (ssl == NULL) {
        ssl_err(err, errlen, "TLS: cannot create a connection", NULL);
        return -1;
    }
    if (name != NULL && !is_ip && SSL_set_tlsext_host_name(ssl, name) != 1) {
        ssl_err(err, errlen, "TLS: bad server name", name);
        SSL_free(ssl);
        return -1;
    }
    if (t->verify && name != NULL) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name)
                       : (X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS),
                          X509_VERIFY_PARAM_set1_host(vp, name, 0));
        if (ok != 1) {
            ssl_err(err, errlen, "TLS: cannot set the name to check", name);
            SSL_free(ssl);
            return -1;
        }
    }
    if (redisInitiateSSL(c, ssl) != REDIS_OK) {
        /* On failure the SSL object stays ours. */
        char why[160];
        if (ae_redis_tls_take_error(t, why, sizeof(why)) != NULL)
            snprintf(err, errlen, "TLS: %s", why); /* more precise than "verify failed" */
        else
            snprintf(err, errlen, "TLS: %s", c->errstr[0] ? c->errstr : "handshake failed");
        SSL_free(ssl);
        return -1;
    }
    return 0;
}

int ae_redis_tls_from_conf(const ae_conf *conf, const ae_redis_target *target, ae_redis_tls **out,
                           char *err, size_t errlen)
{
    ae_redis_tls_opts o = {.ca = conf->state.tls.ca,
                           .cert = conf->state.tls.cert,
                           .key = conf->state.tls.key,
                           .server_name = conf->state.tls.server_name,
                           .verify = conf->state.tls.set ? conf->state.tls.verify : 1};

    *out = NULL;
    if (!target->tls) {
        if (conf->state.tls.set) {
            snprintf(err, errlen, "state.tls is set but state.redis is not a rediss:// URL");
            return AE_ERR_PARSE;
        }
        return 0;
    }
    return ae_redis_tls_new(&o, out, err, errlen);
}
