/*
 * Key management of the main thread (keys.c): the TLS session-ticket key ring the workers'
 * TLS contexts use, and the ring the QUIC secrets (token, CID and stateless-reset keys) are
 * derived from.
 *
 * Two modes:
 *  - local: a ring of this process only (standalone, or shared mode before Redis was ever
 *    reachable), rotated here every tls.ticket_rotation;
 *  - shared: the ring in Redis (state/). ae_keys_ring_changed puts its keys into the TLS ring
 *    (ticket keys derived from each ring key, never the ring secret itself) and derives the
 *    QUIC secrets from it; local rotation stops for good. The local keys that may have
 *    encrypted tickets before the switch stay decrypt-only for one rotation period.
 *
 * Every new set of QUIC secrets goes to the secrets callback (ae_keys_new), which takes its own
 * references (the server posts them to the workers and the TCP hand-off). Key material is
 * zeroed when replaced and at free. Main thread only.
 */
#ifndef AE_SITE_KEYS_H
#define AE_SITE_KEYS_H

#include <stdint.h>

#include <ev.h>

#include "proxy/core/qsecrets.h"
#include "state/ring.h"
#include "tls/tls.h"

typedef struct ae_keys ae_keys;

/* Called with the QUIC secrets of every new ring; sec is borrowed (take a reference). */
typedef void (*ae_keys_secrets_cb)(ae_qsecrets *sec, void *arg);

/* A local ring (TLS keys and QUIC ring), not rotating until ae_keys_set_rotation. Returns 0,
 * AE_ERR_NOMEM or AE_ERR_TLS. */
int ae_keys_new(struct ev_loop *loop, ae_keys_secrets_cb cb, void *arg, ae_keys **out);
/* Stops the rotation timer, zeroes every key. Accepts NULL. */
void ae_keys_free(ae_keys *k);

/* The TLS ticket key ring (borrowed; lives as long as k). */
ae_keyring *ae_keys_tls(ae_keys *k);
/* The ring the current QUIC secrets come from (the shared ring, or the local one). */
const ae_ring *ae_keys_qring(const ae_keys *k);
/* Whether the keys come from the shared ring (rotation happens through Redis). */
int ae_keys_shared(const ae_keys *k);

/* Adopts a (new generation of the) shared ring: TLS keys, QUIC secrets (to the callback). */
void ae_keys_ring_changed(ae_keys *k, const ae_ring *ring);
/* The workers are serving from now on: tickets may be issued under the local keys, so a later
 * switch to the shared ring keeps them decrypt-only for a while. */
void ae_keys_serving(ae_keys *k);
/* Derives the QUIC secrets of the current ring again and hands them to the callback (the
 * workers exist now). */
void ae_keys_post(ae_keys *k);
/* Rotates the local ring now (TLS and QUIC). Not for the shared ring (ae_state_rotate).
 * Returns 0 or an AE_ERR_* with err set; logs the outcome. */
int ae_keys_rotate_local(ae_keys *k, char *err, size_t errlen);
/* Local rotation every rotation_s seconds (tls.ticket_rotation); nothing in shared mode. */
void ae_keys_set_rotation(ae_keys *k, uint32_t rotation_s);
/* Stops local rotation (drain). */
void ae_keys_stop(ae_keys *k);

#endif
