/*
 * Session-ticket key ring.
 *
 * Workers read the ring in OpenSSL's ticket callback (once per handshake that issues or
 * presents a ticket) under a read lock; the main thread changes it under the write lock. A
 * reader-writer lock is the simplest correct choice: contention is one uncontended atomic per
 * handshake, far below the cost of the handshake itself.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "tls/tls_int.h"

int ae_keyring_new(ae_keyring **out)
{
    ae_keyring *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return AE_ERR_NOMEM;
    if (pthread_rwlock_init(&r->lock, NULL) != 0) {
        free(r);
        return AE_ERR_NOMEM;
    }
    r->cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    r->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (r->cipher == NULL || r->mac == NULL)
        goto fail;
    /* Start with a current and a next key: the next one is published before it is used. */
    if (ae_keyring_rotate(r) != 0 || ae_keyring_rotate(r) != 0)
        goto fail;
    *out = r;
    return 0;
fail:
    ae_keyring_free(r);
    return AE_ERR_TLS;
}

void ae_keyring_free(ae_keyring *r)
{
    if (r == NULL)
        return;
    EVP_CIPHER_free(r->cipher);
    EVP_MAC_free(r->mac);
    pthread_rwlock_destroy(&r->lock);
    OPENSSL_cleanse(r->keys, sizeof(r->keys));
    free(r);
}

static int fresh_key(ae_keyring *r, ae_ticket_key *k)
{
    memset(k, 0, sizeof(*k));
    if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
        RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
        return AE_ERR_TLS;
    k->id = ++r->last_id;
    k->created_ms = ae_wall_ms();
    k->state = AE_KEY_NEXT;
    return 0;
}

int ae_keyring_rotate(ae_keyring *r)
{
    ae_ticket_key k;
    int rv = fresh_key(r, &k);
    if (rv != 0)
        return rv;
    pthread_rwlock_wrlock(&r->lock);
    /* Keys are kept newest first: [next, current, previous]. Shifting by one retires the
     * oldest and moves every other key one state on. */
    size_t n = r->nkeys < AE_RING_MAX ? r->nkeys : AE_RING_MAX - 1;
    memmove(&r->keys[1], &r->keys[0], n * sizeof(r->keys[0]));
    r->keys[0] = k;
    r->nkeys = n + 1;
    for (size_t i = 0; i < r->nkeys; i++)
        r->keys[i].state = (ae_key_state)i;
    r->generation++;
    pthread_rwlock_unlock(&r->lock);
    OPENSSL_cleanse(&k, sizeof(k));
    return 0;
}

int ae_keyring_replace(ae_keyring *r, const ae_ticket_key *keys, size_t n)
{
    size_t ncur = 0;

    if (n == 0 || n > AE_KEYRING_CAP)
        return AE_ERR_INVAL;
    for (size_t i = 0; i < n; i++)
        if (keys[i].state == AE_KEY_CURRENT)
            ncur++;
    if (ncur != 1)
        return AE_ERR_INVAL;
    pthread_rwlock_wrlock(&r->lock);
    OPENSSL_cleanse(r->keys, sizeof(r->keys));
    memcpy(r->keys, keys, n * sizeof(*keys));
    r->nkeys = n;
    for (size_t i = 0; i < n; i++)
        if (keys[i].id > r->last_id)
            r->last_id = keys[i].id;
    r->generation++;
    pthread_rwlock_unlock(&r->lock);
    return 0;
}

size_t ae_keyring_snapshot(ae_keyring *r, ae_ticket_key *out, size_t max)
{
    pthread_rwlock_rdlock(&r->lock);
    size_t n = r->nkeys < max ? r->nkeys : max;
    memcpy(out, r->keys, n * sizeof(*out));
    pthread_rwlock_unlock(&r->lock);
    return n;
}

uint64_t ae_keyring_generation(ae_keyring *r)
{
    pthread_rwlock_rdlock(&r->lock);
    uint64_t g = r->generation;
    pthread_rwlock_unlock(&r->lock);
    return g;
}

void ae_keyring_get_stats(ae_keyring *r, ae_keyring_stats *out)
{
    out->decrypt_current = atomic_load_explicit(&r->st_current, memory_order_relaxed);
    out->decrypt_previous = atomic_load_explicit(&r->st_previous, memory_order_relaxed);
    out->decrypt_next = atomic_load_explicit(&r->st_next, memory_order_relaxed);
    out->decrypt_unknown = atomic_load_explicit(&r->st_unknown, memory_order_relaxed);
    out->encrypt = atomic_load_explicit(&r->st_encrypt, memory_order_relaxed);
}

static int set_hmac_key(ae_keyring *r, EVP_MAC_CTX *hctx, const uint8_t *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key, AE_TICKET_KEY_LEN),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    AE_UNUSED(r);
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : AE_ERR_TLS;
}

/* OpenSSL's ticket key callback contract: on encrypt return 1 (or <0 on error); on decrypt
 * return 0 for "unknown key, do a full handshake", 1 for "ok", 2 for "ok, renew the ticket". */
int ae_keyring_ticket_cb(ae_keyring *r, unsigned char *key_name, unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    int ret = -1;
    pthread_rwlock_rdlock(&r->lock);
    if (enc) {
        const ae_ticket_key *k = NULL;
        for (size_t i = 0; i < r->nkeys; i++)
            if (r->keys[i].state == AE_KEY_CURRENT)
                k = &r->keys[i];
        if (k == NULL || RAND_bytes(iv, EVP_CIPHER_get_iv_length(r->cipher)) != 1)
            goto out;
        memcpy(key_name, k->name, AE_TICKET_NAME_LEN);
        if (EVP_EncryptInit_ex2(cctx, r->cipher, k->aes, iv, NULL) != 1 ||
            set_hmac_key(r, hctx, k->hmac) != 0)
            goto out;
        atomic_fetch_add_explicit(&r->st_encrypt, 1, memory_order_relaxed);
        ret = 1;
        goto out;
    }
    ret = 0;
    for (size_t i = 0; i < r->nkeys; i++) {
        const ae_ticket_key *k = &r->keys[i];
        if (memcmp(key_name, k->name, AE_TICKET_NAME_LEN) != 0)
            continue;
        if (EVP_DecryptInit_ex2(cctx, r->cipher, k->aes, iv, NULL) != 1 ||
            set_hmac_key(r, hctx, k->hmac) != 0) {
            ret = -1;
            goto out;
        }
        switch (k->state) {
        case AE_KEY_CURRENT:
            atomic_fetch_add_explicit(&r->st_current, 1, memory_order_relaxed);
            ret = 1;
            break;
        case AE_KEY_NEXT:
            /* Another site already encrypts with what is next here: accept, and renew so the
             * client holds a ticket under our current key as well. */
            atomic_fetch_add_explicit(&r->st_next, 1, memory_order_relaxed);
            ret = 2;
            break;
        default:
            atomic_fetch_add_explicit(&r->st_previous, 1, memory_order_relaxed);
            ret = 2;
            break;
        }
        goto out;
    }
    atomic_fetch_add_explicit(&r->st_unknown, 1, memory_order_relaxed);
out:
    pthread_rwlock_unlock(&r->lock);
    return ret;
}
