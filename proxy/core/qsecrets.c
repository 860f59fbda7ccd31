/*
 * QUIC secrets from the key ring: one immutable, reference-counted snapshot per ring change,
 * built by the main thread and handed to every worker (AE_MSG_SECRETS).
 *
 * Every secret is derived from a ring key with its own HKDF label, so any site holding the
 * ring computes the same values:
 *  - "quic-reset": stateless-reset secret; a CID's token uses the key of the CID's epoch, so
 *    any site can reset any site's CID while that key is in the ring;
 *  - "quic-token": Retry / NEW_TOKEN token key (current encrypts, every key verifies);
 *  - "quic-ticket": GnuTLS session-ticket master key (current only: GnuTLS takes one key);
 *  - "h3-affinity-cookie": the sealed affinity cookie of balance: hash (state/affcookie.h).
 * The connection-ID keys ("quic-cid", state/cid.c) are built per worker from the ring copy.
 */
#include "proxy/core/qsecrets.h"

#include <stdlib.h>
#include <string.h>

#include "conf/base.h"
#include "state/cid.h"

int ae_qsecrets_new(const ae_ring *ring, ae_qsecrets **out)
{
    ae_qsecrets *q = calloc(1, sizeof(*q));
    const ae_ring_key *cur = ae_ring_find(ring, AE_RING_CURRENT);

    *out = NULL;
    if (q == NULL)
        return AE_ERR_NOMEM;
    if (cur == NULL) {
        free(q);
        return AE_ERR_INVAL;
    }
    atomic_init(&q->refcnt, 1);
    q->ring = *ring;
    for (size_t i = 0; i < ring->nkeys; i++) {
        const ae_ring_key *k = &ring->keys[i];
        q->epoch[i] = ae_cid_epoch_of(k->id);
        if (ae_ring_derive(k, "quic-reset", q->reset[i], sizeof(q->reset[i])) != 0 ||
            ae_ring_derive(k, "quic-token", q->token[i], sizeof(q->token[i])) != 0)
            goto fail;
        if (k == cur)
            q->cur = i;
    }
    if (ae_ring_derive(cur, "quic-ticket", q->ticket, sizeof(q->ticket)) != 0 ||
        ae_affcookie_keys_new(ring, &q->cookie) != 0)
        goto fail;
    *out = q;
    return 0;
fail:
    ae_affcookie_keys_free(q->cookie);
    ae_memzero(q, sizeof(*q));
    free(q);
    return AE_ERR_TLS;
}

ae_qsecrets *ae_qsecrets_ref(ae_qsecrets *q)
{
    if (q != NULL)
        atomic_fetch_add_explicit(&q->refcnt, 1, memory_order_relaxed);
    return q;
}

void ae_qsecrets_unref(ae_qsecrets *q)
{
    if (q == NULL || atomic_fetch_sub_explicit(&q->refcnt, 1, memory_order_acq_rel) != 1)
        return;
    ae_affcookie_keys_free(q->cookie);
    ae_memzero(q, sizeof(*q));
    free(q);
}

int ae_qsecrets_reset_secret(const ae_qsecrets *q, int epoch, const uint8_t **secret)
{
    for (size_t i = 0; i < q->ring.nkeys; i++)
        if (q->epoch[i] == epoch) {
            *secret = q->reset[i];
            return 0;
        }
    return AE_ERR_NOTFOUND;
}
