/*
 * Admin endpoint (admin.c), main thread: HTTP/1.1 on a loopback address serving the Prometheus
 * metrics, /status and /sites JSON (documents written by render.c), /whereis, reload, key
 * rotation, drain; a pure request parser and router (unit-tested).
 */
#ifndef AE_ADMIN_H
#define AE_ADMIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>

#include "conf/conf.h"

typedef struct ae_server_main ae_server_main;

typedef struct ae_admin ae_admin;
/* Listens on conf's admin.address (when enabled) and admin.socket (when set) and serves the
 * routes of ae_admin_route_id below. Over TCP it answers only requests whose Host names a
 * loopback address or the address the connection came in on (no DNS name: that stops DNS
 * rebinding), refuses any request with a foreign Origin (a web page's), and, with
 * admin.token_file, wants `Authorization: Bearer TOKEN` on the POST routes. The Unix socket
 * (mode 0600) is trusted by its file mode. Slots: admin.max_connections in all and
 * admin.max_per_source per TCP client address; when full, the oldest connection still sending
 * its request head is closed to make room; a head must be complete within 2 s. Refusals are
 * counted by reason (ae_admin_refusals) and logged, at most one line per 10 s.
 * Returns 0 (a Unix socket that cannot be opened is logged, the TCP side serves), or
 * AE_ERR_NOMEM / AE_ERR_IO with err. */
int ae_admin_new(struct ev_loop *loop, ae_server_main *srv, const ae_conf *conf, ae_admin **out,
                 char *err, size_t errlen);
/* Takes the token and limits of a new config; re-opens the Unix socket when its path changed
 * (the TCP address is the caller's business: a new address needs a new ae_admin). Returns 0,
 * or AE_ERR_IO with err (the old socket is kept). */
int ae_admin_configure(ae_admin *a, const ae_conf *conf, char *err, size_t errlen);
void ae_admin_free(ae_admin *a);

/* Why the admin endpoint refused a request or a connection (label `reason` of
 * anyedge_admin_refused_total). */
typedef enum {
    AE_ADMIN_REFUSE_HOST = 0,    /* Host missing (HTTP/1.1) or not a loopback/local address */
    AE_ADMIN_REFUSE_ORIGIN,      /* an Origin header that is not the endpoint itself */
    AE_ADMIN_REFUSE_TOKEN,       /* a POST route without the configured bearer token */
    AE_ADMIN_REFUSE_BAD_REQUEST, /* malformed request head (400) or too large (431) */
    AE_ADMIN_REFUSE_TIMEOUT,     /* head not complete within the deadline */
    AE_ADMIN_REFUSE_EVICTED,     /* closed while sending its head, to make room for a new one */
    AE_ADMIN_REFUSE_BUSY,        /* no slot and none to free: connection closed at accept */
    AE_ADMIN_NREFUSE
} ae_admin_refuse;
extern const char *const ae_admin_refuse_names[AE_ADMIN_NREFUSE];
/* Refusals so far, by reason. a may be NULL (all zero). */
void ae_admin_refusals(const ae_admin *a, uint64_t out[AE_ADMIN_NREFUSE]);

/* Request parsing and routing, pure so they can be unit tested. */
#define AE_ADMIN_REQ_MAX 8192 /* request head limit; larger heads get 431 */

typedef struct {
    const char *method; /* into the caller's buffer, not NUL-terminated */
    size_t method_len;
    const char *path; /* origin-form target without query or fragment */
    size_t path_len;
    const char *query; /* after '?' up to '#' or the end of the target; NULL when none */
    size_t query_len;
    int minor;       /* HTTP/1.<minor> */
    size_t head_len; /* bytes up to and including the empty line */
    /* Header values (leading and trailing blanks trimmed), NULL when absent. */
    const char *host, *origin, *authorization;
    size_t host_len, origin_len, authorization_len;
} ae_admin_request;

/* Parses an HTTP/1.x request head from buf[0, len): request line "METHOD SP /target SP
 * HTTP/1.x CRLF" (method upper-case letters), then "name: value" CRLF header lines up to an
 * empty CRLF line. Returns 0 with *req filled, AE_ERR_AGAIN when the head is incomplete, or
 * AE_ERR_PARSE on bad syntax (bare LF, control bytes, folding, absolute-form target...). */
int ae_admin_parse_request(const char *buf, size_t len, ae_admin_request *req);
/* (A repeated Host, Origin or Authorization header is a parse error.) */

/* Whether a Host header value names the endpoint without a DNS name: localhost, an IPv4
 * address in 127.0.0.0/8, [::1], or the literal local address of the connection (local; NULL:
 * none), each with or without a port. */
int ae_admin_host_ok(const char *host, size_t n, const struct sockaddr *local);
/* Whether an Origin header value is the endpoint itself: http:// or https:// and a host that
 * ae_admin_host_ok accepts ("null" and every other origin are foreign). */
int ae_admin_origin_ok(const char *origin, size_t n, const struct sockaddr *local);
/* Whether an Authorization header value is "Bearer TOKEN" (scheme case-insensitive) for token;
 * compares in constant time for a given token length. */
int ae_admin_token_ok(const char *auth, size_t n, const char *token);

typedef enum {
    AE_ADMIN_METRICS = 0, /* GET /metrics */
    AE_ADMIN_STATUS,      /* GET /status */
    AE_ADMIN_RELOAD,      /* POST /reload */
    AE_ADMIN_KEYS_ROTATE, /* POST /keys/rotate */
    AE_ADMIN_SITES,       /* GET /sites */
    AE_ADMIN_WHEREIS,     /* GET /whereis?cid=HEX */
    AE_ADMIN_DRAIN,       /* POST /drain (site drain, anycast.c) */
    AE_ADMIN_UNDRAIN,     /* POST /undrain */
} ae_admin_route_id;

/* Returns the route of req (an ae_admin_route_id), AE_ERR_NOTFOUND for an unknown path (404)
 * or AE_ERR_INVAL for a known path with the wrong method (405; *allow names the method). */
int ae_admin_route(const ae_admin_request *req, const char **allow);

#endif
