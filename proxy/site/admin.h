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
#include "proxy/site/admin_http.h"

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

#endif
