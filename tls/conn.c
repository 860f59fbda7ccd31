/*
 * One server-side TLS connection over a non-blocking socket.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "tls/tls_int.h"

const char *const ae_tls_fail_reason_names[AE_TLS_FAIL__COUNT] = {
    [AE_TLS_FAIL_PROTOCOL] = "protocol", [AE_TLS_FAIL_NO_SHARED] = "no_shared",
    [AE_TLS_FAIL_SNI] = "sni",           [AE_TLS_FAIL_PEER_CLOSED] = "peer_closed",
    [AE_TLS_FAIL_OTHER] = "other",
};

int ae_tls_conn_new(ae_tls_ctx *ctx, int fd, ae_tls_conn **out)
{
    ae_tls_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return AE_ERR_NOMEM;
    c->ctx = ctx;
    c->ssl = SSL_new(ctx->ssl[0]);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        ERR_clear_error();
        ae_tls_conn_free(c);
        return AE_ERR_TLS;
    }
    SSL_set_app_data(c->ssl, c);
    SSL_set_accept_state(c->ssl);
    *out = c;
    return 0;
}

void ae_tls_conn_set_hooks(ae_tls_conn *c, const ae_tls_conn_hooks *hooks)
{
    c->has_hooks = hooks != NULL;
    if (hooks != NULL)
        c->hooks = *hooks;
    else
        memset(&c->hooks, 0, sizeof(c->hooks));
}

void ae_tls_conn_free(ae_tls_conn *c)
{
    if (c == NULL)
        return;
    SSL_free(c->ssl);
    free(c);
}

static ae_tls_fail_reason classify(unsigned long e)
{
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return AE_TLS_FAIL_OTHER;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_APPLICATION_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
        return AE_TLS_FAIL_NO_SHARED;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        return AE_TLS_FAIL_PEER_CLOSED;
    default:
        return AE_TLS_FAIL_PROTOCOL;
    }
}

/* Maps an OpenSSL result to ours. For the handshake, reason gets a failure class. */
static int map_err(ae_tls_conn *c, int ret, ae_tls_fail_reason *reason)
{
    int e = SSL_get_error(c->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return AE_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return AE_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        if (reason)
            *reason = AE_TLS_FAIL_PEER_CLOSED;
        return AE_ERR_CLOSED;
    case SSL_ERROR_SYSCALL: {
        int saved = errno;
        ERR_clear_error();
        if (reason)
            *reason = AE_TLS_FAIL_PEER_CLOSED;
        if (saved == 0 || saved == ECONNRESET || saved == EPIPE)
            return AE_ERR_CLOSED;
        errno = saved;
        return AE_ERR_IO;
    }
    default: {
        unsigned long le = ERR_peek_last_error();
        if (reason)
            *reason = c->fail_set ? c->fail : classify(le);
        ERR_clear_error();
        return AE_ERR_TLS;
    }
    }
}

int ae_tls_conn_handshake(ae_tls_conn *c, ae_tls_fail_reason *reason)
{
    ERR_clear_error();
    errno = 0;
    int ret = SSL_do_handshake(c->ssl);
    if (ret == 1)
        return 0;
    ae_tls_fail_reason r = AE_TLS_FAIL_OTHER;
    int rv = map_err(c, ret, &r);
    if (rv == AE_TLS_WANT_READ || rv == AE_TLS_WANT_WRITE)
        return rv;
    if (reason)
        *reason = c->fail_set ? c->fail : r;
    return AE_ERR_TLS;
}

ssize_t ae_tls_conn_read(ae_tls_conn *c, void *buf, size_t len)
{
    size_t n = 0;
    /* No ERR_clear_error() here (hot path): every error path of map_err() leaves the
     * thread's error queue empty, so SSL_get_error() sees only this call's errors. */
    errno = 0;
    int ret = SSL_read_ex(c->ssl, buf, len, &n);
    if (ret == 1)
        return (ssize_t)n;
    return map_err(c, ret, NULL);
}

ssize_t ae_tls_conn_write(ae_tls_conn *c, const void *buf, size_t len)
{
    size_t n = 0;
    /* No ERR_clear_error() here (hot path): every error path of map_err() leaves the
     * thread's error queue empty, so SSL_get_error() sees only this call's errors. */
    errno = 0;
    int ret = SSL_write_ex(c->ssl, buf, len, &n);
    if (ret == 1)
        return (ssize_t)n;
    int rv = map_err(c, ret, NULL);
    return rv == AE_ERR_CLOSED ? AE_ERR_IO : rv;
}

int ae_tls_conn_shutdown(ae_tls_conn *c)
{
    ERR_clear_error();
    errno = 0;
    /* One call sends our close_notify; we do not wait for the peer's (that is the read
     * side's business), so 0 ("sent, peer's not yet seen") is success here. */
    int ret = SSL_shutdown(c->ssl);
    if (ret >= 0)
        return 0;
    int rv = map_err(c, ret, NULL);
    return rv == AE_ERR_CLOSED ? AE_ERR_IO : rv;
}

int ae_tls_conn_pending(ae_tls_conn *c)
{
    return SSL_has_pending(c->ssl);
}

const char *ae_tls_conn_sni(ae_tls_conn *c)
{
    return c->sni;
}

const char *ae_tls_conn_alpn(ae_tls_conn *c)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &len);
    memcpy(c->alpn, p ? (const char *)p : "", len);
    c->alpn[len] = '\0';
    return c->alpn;
}

const char *ae_tls_conn_version(ae_tls_conn *c)
{
    return SSL_get_version(c->ssl);
}

int ae_tls_conn_resumed(ae_tls_conn *c)
{
    return SSL_session_reused(c->ssl);
}
