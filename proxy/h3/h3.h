/*
 * HTTP/3 (proxy/h3/h3.c, proxy/h3/upstream.c): the application on QUIC connections. HTTP/3
 * requests (RFC 9114, nghttp3) go to HTTP/1.1 upstream servers.
 *
 * Layers: above quic. h3 implements the QUIC application ops (ae_h3_app_ops), which the worker
 * registers with ae_quic_set_app() together with a per-worker ae_h3_worker; quic calls the ops,
 * h3 calls quic's public functions (proxy/quic/quic.h) downwards. Internal types:
 * proxy/h3/h3_int.h.
 */
#ifndef AE_H3_H
#define AE_H3_H

#include "proxy/quic/quic.h"

#define AE_H3_HEAD_MAX (64 * 1024) /* request header section limit */

/* The QUIC application ops of HTTP/3. wctx: an ae_h3_worker; app: the HTTP/3 session of one
 * connection (nghttp3, its request streams). */
extern const ae_quic_app_ops ae_h3_app_ops;

/* Per-worker HTTP/3 state: streams waiting for the gc, idle keep-alive upstream connections. */
typedef struct ae_h3_worker ae_h3_worker;
/* For worker w (any thread before the worker starts; then only w's thread). NULL on no
 * memory. */
ae_h3_worker *ae_h3_worker_new(ae_worker *w);
/* Frees hw, its dead streams and idle upstream connections (ae_h3_app_ops.release does this
 * once quic owns it). Accepts NULL. */
void ae_h3_worker_free(ae_h3_worker *hw);

/* ---- RFC 9114 request validation (h3.c; pure, unit-tested) ---- */
enum {
    AE_H3_OK = 0,
    AE_H3_MALFORMED = -1, /* reset the stream with H3_MESSAGE_ERROR (§4.1.2) */
    AE_H3_TOO_BIG = -2,   /* header section over AE_H3_HEAD_MAX: 431 (§4.2.2) */
    AE_H3_CONNECT = -3,   /* CONNECT: not supported, 501 */
};
/* Checks one field of a request header section (name as received, value). Returns AE_H3_OK
 * or AE_H3_MALFORMED: empty, non-token or upper-case name, unknown pseudo-header,
 * connection-specific field (connection, keep-alive, proxy-connection, transfer-encoding,
 * upgrade), `te` other than "trailers", NUL / CR / LF in the value. */
int ae_h3_check_field(const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen);

/* What a request header section carried, for ae_h3_check_request(). */
typedef struct {
    const char *method, *scheme, *path, *authority; /* NULL when absent (authority: or Host) */
    size_t section_size;                            /* sum of name + value + 32 per field */
    unsigned bad_field : 1;                         /* some field failed ae_h3_check_field() */
    unsigned dup_pseudo : 1;                        /* a pseudo-header appeared twice */
    unsigned late_pseudo : 1;                       /* a pseudo-header after a regular field */
    unsigned has_protocol : 1; /* :protocol (extended CONNECT, not supported) */
} ae_h3_req_info;
/* Request-level checks (RFC 9114 §4.3.1): AE_H3_OK, AE_H3_MALFORMED, AE_H3_TOO_BIG or
 * AE_H3_CONNECT. Order: size first (431 even when the cut section looks incomplete), then
 * malformed, then CONNECT. */
int ae_h3_check_request(const ae_h3_req_info *r);

#endif
