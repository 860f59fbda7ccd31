/*
 * The main thread (server.c): start-up, listening sockets, reload, key rotation, the workers.
 *
 * Threads and ownership
 *  - The main thread owns the server (ae_server_main): signals, reload, admin endpoint, health
 *    checks, key rotation, anycast control, and the listening sockets it creates for workers.
 *  - Each worker thread owns one libev loop, its listening sockets (handed over by the main
 *    thread in a message), its connections, its buffer pool and its metric counters. Workers
 *    never touch each other's objects (worker.h).
 *  - Runtime snapshots and upstream servers are shared and reference-counted (runtime.h).
 *
 * Everything here is main thread only.
 */
#ifndef AE_SERVER_H
#define AE_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/site/anycast.h"
#include "proxy/core/metrics.h"
#include "proxy/core/runtime.h"
#include "state/ring.h"

typedef struct ae_server_main ae_server_main;

/* What the admin endpoint, anycast control and forwarding see of the server. */
ae_runtime *ae_server_runtime(ae_server_main *s); /* borrowed */
ae_keyring *ae_server_keyring(ae_server_main *s);
struct ae_admin *ae_server_admin(ae_server_main *s); /* NULL when off */
size_t ae_server_nworkers(ae_server_main *s);
/* Sums every worker's counters into out. */
void ae_server_counters(ae_server_main *s, ae_counters_snapshot *out);
/* Reloads the config file. Returns 0, or AE_ERR_* with the reason in err. */
int ae_server_reload(ae_server_main *s, char *err, size_t errlen);
/* Rotates the ticket keys now: locally, or through Redis in shared mode (asynchronous: 0 means
 * requested). Returns 0 or AE_ERR_* with err set. */
int ae_server_rotate_keys(ae_server_main *s, char *err, size_t errlen);
/* The shared-state module, or NULL in standalone mode. */
struct ae_state *ae_server_state(ae_server_main *s);
uint64_t ae_server_reloads_ok(ae_server_main *s);
uint64_t ae_server_reloads_failed(ae_server_main *s);
uint64_t ae_server_started_ms(ae_server_main *s); /* wall clock */
int ae_server_draining(ae_server_main *s);
/* The ring the QUIC secrets come from, the newest forwarding peer table (borrowed; may be
 * NULL), the forwarding group (for the per-site counters): proxy/forward/forward.h. */
const ae_ring *ae_server_qring(ae_server_main *s);
struct ae_fwd_peers *ae_server_peers(ae_server_main *s);
struct ae_fwd_group *ae_server_fwd_group(ae_server_main *s);
/* The TCP hand-off engine and its connection table (NULL when off): proxy/handoff/. */
struct ae_handoff *ae_server_handoff(ae_server_main *s);
struct ae_conntab *ae_server_conntab(ae_server_main *s);

/* Runs anyedge with the config at path until SIGTERM/SIGINT and the drain complete.
 * Returns the process exit code. */
int ae_server_run(const char *path);

/* server.c hooks for anycast.c. */
ae_anycast *ae_server_anycast(ae_server_main *s);
/* 1 while the listening sockets of every configured listener are open (not shutting down). */
int ae_server_listening(ae_server_main *s);
/* Tells every worker that the site drains (1: HTTP/3 GOAWAY on QUIC connections) or not. */
void ae_server_site_drain(ae_server_main *s, int on);

#endif
