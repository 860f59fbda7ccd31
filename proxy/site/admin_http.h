/*
 * The admin endpoint's HTTP (admin_http.c), pure so it can be unit tested: the request head
 * parser, the router, and the checks of Host, Origin and the bearer token.
 */
#ifndef AE_SITE_ADMIN_HTTP_H
#define AE_SITE_ADMIN_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#include "conf/base.h"

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
/* Whether the host part of a Host value (port aside; not a bracketed IPv6 literal) is one of
 * names (case-insensitive). */
int ae_admin_host_in(const char *host, size_t n, char *const *names, size_t nnames);
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
