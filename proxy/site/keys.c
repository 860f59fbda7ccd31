/*
 * Key management of the main thread: TLS ticket keys and the QUIC secrets' ring (keys.h).
 */
#include "proxy/site/keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/base.h"

struct ae_keys {
    struct ev_loop *loop;
    ev_timer rotate; /* local rotation; stopped for good in shared mode */
    ae_keys_secrets_cb cb;
    void *arg;
    ae_keyring *tls;
    ae_ring qring; /* the ring the QUIC secrets come from: the shared ring, or a local one */
    int shared;    /* the TLS ring holds the shared ring's keys (local rotation stopped) */
    int serving;   /* workers started: tickets may have been issued under local keys */
    uint32_t rotation_s;
    ae_ticket_key local[AE_KEYRING_CAP]; /* local keys kept decrypt-only after the switch */
    size_t nlocal;
    uint64_t local_expire_ms; /* wall clock until which local[] is kept */
};

static void rotate_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    char err[256];
    (void)loop;
    (void)revents;
    ae_keys_rotate_local(t->data, err, sizeof(err));
}

int ae_keys_new(struct ev_loop *loop, ae_keys_secrets_cb cb, void *arg, ae_keys **out)
{
    ae_keys *k = calloc(1, sizeof(*k));
    int rv;

    *out = NULL;
    if (k == NULL)
        return AE_ERR_NOMEM;
    k->loop = loop;
    k->cb = cb;
    k->arg = arg;
    ev_timer_init(&k->rotate, rotate_cb, 0, 0);
    k->rotate.data = k;
    if ((rv = ae_keyring_new(&k->tls)) != 0) {
        free(k);
        return rv;
    }
    if (ae_ring_init(&k->qring, ae_wall_ms()) != 0) {
        ae_keys_free(k);
        return AE_ERR_TLS;
    }
    *out = k;
    return 0;
}

void ae_keys_free(ae_keys *k)
{
    if (k == NULL)
        return;
    ev_timer_stop(k->loop, &k->rotate);
    ae_keyring_free(k->tls);
    ae_memzero(k, sizeof(*k));
    free(k);
}

ae_keyring *ae_keys_tls(ae_keys *k)
{
    return k->tls;
}

const ae_ring *ae_keys_qring(const ae_keys *k)
{
    return &k->qring;
}

int ae_keys_shared(const ae_keys *k)
{
    return k->shared;
}

void ae_keys_post(ae_keys *k)
{
    ae_qsecrets *sec;

    if (ae_qsecrets_new(&k->qring, &sec) != 0) {
        AE_ERROR("cannot derive the QUIC secrets of ring generation %llu",
                 (unsigned long long)k->qring.generation);
        return;
    }
    k->cb(sec, k->arg);
    ae_qsecrets_unref(sec);
}

/* Ticket keys of a shared ring key: derived, never the master secret itself. */
static int ticket_key_from_ring(const ae_ring_key *rk, ae_ticket_key *tk)
{
    memset(tk, 0, sizeof(*tk));
    tk->id = rk->id;
    tk->created_ms = rk->created_ms;
    tk->state = rk->state == AE_RING_NEXT      ? AE_KEY_NEXT
                : rk->state == AE_RING_CURRENT ? AE_KEY_CURRENT
                                               : AE_KEY_PREVIOUS;
    if (ae_ring_derive(rk, "tls-ticket name", tk->name, sizeof(tk->name)) != 0 ||
        ae_ring_derive(rk, "tls-ticket aes", tk->aes, sizeof(tk->aes)) != 0 ||
        ae_ring_derive(rk, "tls-ticket hmac", tk->hmac, sizeof(tk->hmac)) != 0)
        return AE_ERR_TLS;
    return 0;
}

/* Puts the shared ring's keys into the TLS key ring. The first time, the local keys that may
 * have encrypted tickets (the site served before Redis was reachable) stay as decrypt-only
 * keys for one rotation period, so those tickets keep resuming until they expire. */
static void apply_shared_ring(ae_keys *k, const ae_ring *ring)
{
    ae_ticket_key keys[AE_KEYRING_CAP];
    size_t n = 0;
    uint64_t now = ae_wall_ms();

    if (!k->shared) {
        k->shared = 1;
        ev_timer_stop(k->loop, &k->rotate);
        if (k->serving) {
            k->nlocal = ae_keyring_snapshot(k->tls, k->local, AE_RING_MAX_KEYS);
            for (size_t i = 0; i < k->nlocal; i++)
                k->local[i].state = AE_KEY_PREVIOUS;
            k->local_expire_ms = now + (uint64_t)k->rotation_s * 1000;
            AE_INFO("switching to the shared key ring; %zu local keys stay decrypt-only for %u s",
                    k->nlocal, k->rotation_s);
        }
    }
    for (size_t i = 0; i < ring->nkeys && n < AE_KEYRING_CAP; i++)
        if (ticket_key_from_ring(&ring->keys[i], &keys[n]) == 0)
            n++;
    if (k->nlocal > 0 && now >= k->local_expire_ms) {
        ae_memzero(k->local, sizeof(k->local));
        k->nlocal = 0;
    }
    for (size_t i = 0; i < k->nlocal && n < AE_KEYRING_CAP; i++)
        keys[n++] = k->local[i];
    if (ae_keyring_replace(k->tls, keys, n) != 0)
        AE_ERROR("shared ring generation %llu has no usable current key; keeping the previous keys",
                 (unsigned long long)ring->generation);
    ae_memzero(keys, sizeof(keys));
}

void ae_keys_ring_changed(ae_keys *k, const ae_ring *ring)
{
    apply_shared_ring(k, ring);
    k->qring = *ring;
    ae_keys_post(k);
}

void ae_keys_serving(ae_keys *k)
{
    k->serving = 1;
}

int ae_keys_rotate_local(ae_keys *k, char *err, size_t errlen)
{
    int rv = ae_keyring_rotate(k->tls);
    if (rv == 0 && ae_ring_rotate(&k->qring, &k->qring, ae_wall_ms()) == 0)
        ae_keys_post(k);
    if (rv != 0) {
        snprintf(err, errlen, "ticket key rotation failed: %s", ae_strerror(rv));
        AE_ERROR("%s", err);
    } else
        AE_INFO("ticket keys rotated (generation %llu)",
                (unsigned long long)ae_keyring_generation(k->tls));
    return rv;
}

void ae_keys_set_rotation(ae_keys *k, uint32_t rotation_s)
{
    ev_tstamp iv = rotation_s;

    k->rotation_s = rotation_s;
    if (k->shared)
        return; /* the shared ring rotates through Redis */
    if (ev_is_active(&k->rotate) && k->rotate.repeat == iv)
        return;
    ev_timer_stop(k->loop, &k->rotate);
    ev_timer_set(&k->rotate, iv, iv);
    ev_timer_start(k->loop, &k->rotate);
}

void ae_keys_stop(ae_keys *k)
{
    ev_timer_stop(k->loop, &k->rotate);
}
