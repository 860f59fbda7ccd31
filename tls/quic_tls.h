/*
 * TLS for QUIC: the one interface proxy/quic/quic.c uses. The backend (GnuTLS through
 * ngtcp2_crypto_gnutls, tls/quic_gnutls.c) stays inside tls/, so an OpenSSL backend
 * (ngtcp2_crypto_ossl) can be added behind the same functions later.
 *
 *  - ae_quic_tls_ctx: server credentials built from one config snapshot (every certificate of
 *    tls.cert/tls.key and tls.certs[], chosen by SNI; ALPN "h3" only; TLS 1.3 only), the ticket
 *    lifetime (quic.early_data_max_age) and with quic.early_data a reference to the process's
 *    0-RTT anti-replay state (shared by all workers, kept across reloads). Reference counted,
 *    single thread (each worker builds its own for the runtime it serves).
 *  - ae_quic_tls: the TLS session of one QUIC connection, installed as ngtcp2's native handle.
 */
#ifndef AE_QUIC_TLS_H
#define AE_QUIC_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "conf/conf.h"

typedef struct ae_quic_tls_ctx ae_quic_tls_ctx;
typedef struct ae_quic_tls ae_quic_tls;

/* Builds the credentials for conf. Returns 0, or AE_ERR_TLS with "FILE:LINE:COL: KEY: message"
 * in err. The reference count starts at 1. */
int ae_quic_tls_ctx_new(const ae_conf *conf, ae_quic_tls_ctx **out, char *err, size_t errlen);
ae_quic_tls_ctx *ae_quic_tls_ctx_ref(ae_quic_tls_ctx *ctx);
/* Drops a reference; frees at zero. Accepts NULL. */
void ae_quic_tls_ctx_unref(ae_quic_tls_ctx *ctx);

/* Creates the server session of a new connection and installs it on conn
 * (ngtcp2_conn_set_tls_native_handle). ref must stay valid while the session lives: the
 * crypto callbacks find the connection through it. Returns 0 or AE_ERR_TLS/AE_ERR_NOMEM. */
int ae_quic_tls_new(ae_quic_tls_ctx *ctx, ngtcp2_conn *conn, ngtcp2_crypto_conn_ref *ref,
                    const uint8_t *ticket_key, ae_quic_tls **out);
/* ticket_key: the 64-byte session-ticket master key shared by all sites (from the key ring),
 * or NULL for the process's own random key. */
/* Frees a session (after ngtcp2_conn_del or before: ngtcp2 does not free it). NULL is fine. */
void ae_quic_tls_free(ae_quic_tls *s);
/* After the handshake: sends one session ticket (NewSessionTicket in CRYPTO frames). */
int ae_quic_tls_send_ticket(ae_quic_tls *s);
/* Handshake facts. sni writes "" when the client sent none. */
void ae_quic_tls_sni(ae_quic_tls *s, char *buf, size_t len);
int ae_quic_tls_resumed(ae_quic_tls *s);
/* After the ClientHello: 1 when 0-RTT early data was accepted, -2 when the client offered it and
 * it was refused because the table of accepted ClientHellos is full (quic.early_data_records),
 * -1 when it was refused for another reason (early data off, replayed ClientHello, ticket issued
 * before this process started or before a reload raised quic.early_data_max_age, clock
 * skew), 0 when it was not offered. */
int ae_quic_tls_early_data(ae_quic_tls *s);
/* After the ClientHello, when its early data was accepted: the id of that ClientHello for the
 * sites' shared first-use record (SHA-256 of the PSK binder GnuTLS verified and recorded), in
 * out; returns 1. Otherwise 0. */
int ae_quic_tls_early_id(ae_quic_tls *s, uint8_t out[32]);
/* Fills n random bytes (the TLS library's RNG). Returns 0 or AE_ERR_TLS. */
int ae_quic_rand(void *buf, size_t n);

#endif
