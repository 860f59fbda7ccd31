/*
 * Admin endpoint (admin.c), main thread: HTTP/1.1 on a loopback address serving the Prometheus
 * metrics, /status and /sites JSON (documents written by render.c), /whereis, reload, key
 * rotation, drain; a pure request parser and router (unit-tested).
 */
#ifndef AE_ADMIN_H
#define AE_ADMIN_H

#include <stddef.h>

#include <ev.h>

#include "conf/conf.h"

typedef struct ae_server_main ae_server_main;

typedef struct ae_admin ae_admin;
/* Listens on addr (loopback by default) and serves the routes of ae_admin_route_id below.
 * Returns 0, or AE_ERR_NOMEM / AE_ERR_IO with err. */
int ae_admin_new(struct ev_loop *loop, ae_server_main *srv, const ae_addr *addr, ae_admin **out,
                 char *err, size_t errlen);
void ae_admin_free(ae_admin *a);

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
} ae_admin_request;

/* Parses an HTTP/1.x request head from buf[0, len): request line "METHOD SP /target SP
 * HTTP/1.x CRLF" (method upper-case letters), then "name: value" CRLF header lines up to an
 * empty CRLF line. Returns 0 with *req filled, AE_ERR_AGAIN when the head is incomplete, or
 * AE_ERR_PARSE on bad syntax (bare LF, control bytes, folding, absolute-form target...). */
int ae_admin_parse_request(const char *buf, size_t len, ae_admin_request *req);

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
