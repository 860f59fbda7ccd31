/*
 * QUIC secrets derived from the key ring (qsecrets.c): CID epochs, stateless-reset secrets,
 * Retry / NEW_TOKEN token keys, the GnuTLS session-ticket key and the HTTP/3 affinity cookie
 * keys (state/affcookie.h).
 */
#ifndef AE_QSECRETS_H
#define AE_QSECRETS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "state/affcookie.h"
#include "state/ring.h"

/* Immutable snapshot, reference counted: the main thread builds one per ring change and every
 * worker holds a reference to the newest. Arrays are indexed like ring.keys. */
typedef struct ae_qsecrets {
    _Atomic int refcnt;
    ae_ring ring;                        /* copy: workers build their CID keys from it */
    int epoch[AE_RING_MAX_KEYS];         /* CID epoch of each ring key */
    uint8_t reset[AE_RING_MAX_KEYS][32]; /* stateless-reset secrets */
    uint8_t token[AE_RING_MAX_KEYS][32]; /* Retry / NEW_TOKEN token keys */
    uint8_t ticket[64];                  /* GnuTLS session-ticket master key (current) */
    size_t cur;                          /* index of the current key */
    ae_affcookie_keys *cookie;           /* affinity cookie keys ("h3-affinity-cookie") */
} ae_qsecrets;

int ae_qsecrets_new(const ae_ring *ring, ae_qsecrets **out);
ae_qsecrets *ae_qsecrets_ref(ae_qsecrets *q);
void ae_qsecrets_unref(ae_qsecrets *q);
/* The reset secret of the ring key whose CID epoch is epoch: 0, or AE_ERR_NOTFOUND. */
int ae_qsecrets_reset_secret(const ae_qsecrets *q, int epoch, const uint8_t **secret);

#endif
