/*
 * The admin endpoint's documents (render.c), main thread: each call reads the server's
 * current state and writes one document into a malloc'd string (*out, *outlen; the caller
 * frees it). Returns 0 or AE_ERR_NOMEM.
 */
#ifndef AE_SITE_RENDER_H
#define AE_SITE_RENDER_H

#include <stddef.h>

typedef struct ae_server_main ae_server_main;

/* The Prometheus text exposition (GET /metrics). */
int ae_admin_render_metrics(ae_server_main *s, char **out, size_t *outlen);
/* The /status JSON document. */
int ae_admin_render_status(ae_server_main *s, char **out, size_t *outlen);
/* The /sites JSON array (sites as last read from Redis; [] standalone). */
int ae_admin_render_sites(ae_server_main *s, char **out, size_t *outlen);

#endif
