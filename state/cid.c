/*
 * QUIC-LB single-pass connection IDs (see state/cid.h for the layout and the threading rules).
 */
#include "state/cid.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "conf/base.h"

#define CID_BLOCK   16               /* AES block = octets 1..16 of the CID */
#define CID_KEY_LEN 16               /* AES-128 */
#define LEN_BITS    (AE_CID_LEN - 1) /* QUIC-LB length self-encoding: length - 1 */

typedef struct {
    int loaded;
    uint64_t key_id; /* ring key id, for diagnostics */
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
} cid_epoch;

struct ae_cid_keys {
    int enc_epoch;
    cid_epoch epochs[AE_CID_EPOCHS];
};

int ae_cid_epoch_of(uint64_t ring_key_id)
{
    return (int)(ring_key_id % AE_CID_EPOCHS);
}

void ae_cid_keys_free(ae_cid_keys *k)
{
    if (k == NULL)
        return;
    for (int e = 0; e < AE_CID_EPOCHS; e++) {
        EVP_CIPHER_CTX_free(k->epochs[e].enc);
        EVP_CIPHER_CTX_free(k->epochs[e].dec);
    }
    free(k);
}

/* A context for one direction of AES-128-ECB, no padding: ready for EVP_CipherUpdate calls on
 * whole blocks (ECB has no chaining state, and without Final the context stays initialised). */
static EVP_CIPHER_CTX *ecb_ctx(const uint8_t *key, int enc)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

    if (ctx == NULL)
        return NULL;
    if (EVP_CipherInit_ex2(ctx, EVP_aes_128_ecb(), key, NULL, enc, NULL) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx, 0) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int load_epoch(ae_cid_keys *k, const ae_ring_key *rk)
{
    cid_epoch *ep = &k->epochs[ae_cid_epoch_of(rk->id)];
    uint8_t key[CID_KEY_LEN];
    int rv;

    if (ep->loaded)
        return 0; /* epoch clash: the earlier (higher priority) key keeps it */
    rv = ae_ring_derive(rk, AE_CID_KEY_LABEL, key, sizeof(key));
    if (rv != 0)
        return rv;
    ep->enc = ecb_ctx(key, 1);
    ep->dec = ecb_ctx(key, 0);
    OPENSSL_cleanse(key, sizeof(key));
    if (ep->enc == NULL || ep->dec == NULL)
        return AE_ERR_TLS;
    ep->key_id = rk->id;
    ep->loaded = 1;
    return 0;
}

int ae_cid_keys_from_ring(const ae_ring *ring, ae_cid_keys **out)
{
    static const ae_ring_state order[] = {AE_RING_CURRENT, AE_RING_PREVIOUS, AE_RING_NEXT};
    const ae_ring_key *cur = ae_ring_find(ring, AE_RING_CURRENT);
    ae_cid_keys *k;
    int rv;

    *out = NULL;
    if (cur == NULL)
        return AE_ERR_INVAL;
    k = calloc(1, sizeof(*k));
    if (k == NULL)
        return AE_ERR_NOMEM;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const ae_ring_key *rk = ae_ring_find(ring, order[i]);
        if (rk == NULL)
            continue;
        rv = load_epoch(k, rk);
        if (rv != 0) {
            ae_cid_keys_free(k);
            return rv;
        }
    }
    k->enc_epoch = ae_cid_epoch_of(cur->id);
    *out = k;
    return 0;
}

int ae_cid_keys_epoch(const ae_cid_keys *k)
{
    return k->enc_epoch;
}

int ae_cid_keys_has_epoch(const ae_cid_keys *k, int epoch)
{
    return epoch >= 0 && epoch < AE_CID_EPOCHS && k->epochs[epoch].loaded;
}

/* One whole block through a prepared ECB context. */
static int block(EVP_CIPHER_CTX *ctx, const uint8_t *in, uint8_t *out)
{
    int n = 0;
    return EVP_CipherUpdate(ctx, out, &n, in, CID_BLOCK) == 1 && n == CID_BLOCK ? 0 : AE_ERR_TLS;
}

int ae_cid_encode(ae_cid_keys *k, uint16_t site, uint8_t worker, uint8_t out[AE_CID_LEN])
{
    const cid_epoch *ep = &k->epochs[k->enc_epoch];
    uint8_t pt[CID_BLOCK];
    uint32_t sid;
    int rv;

    if (site == 0 || site > AE_CID_SITE_MAX)
        return AE_ERR_INVAL;
    /* Server id: site(12) | worker(8) | 0000, big-endian in octets 0..2; nonce in 3..15. */
    sid = (uint32_t)site << 12 | (uint32_t)worker << 4;
    pt[0] = (uint8_t)(sid >> 16);
    pt[1] = (uint8_t)(sid >> 8);
    pt[2] = (uint8_t)sid;
    if (RAND_bytes(pt + 3, CID_BLOCK - 3) != 1)
        return AE_ERR_TLS;
    out[0] = (uint8_t)(k->enc_epoch << 5 | LEN_BITS);
    rv = block(ep->enc, pt, out + 1);
    OPENSSL_cleanse(pt, sizeof(pt));
    return rv;
}

int ae_cid_decode(ae_cid_keys *k, const uint8_t *cid, size_t len, uint16_t *site, uint8_t *worker)
{
    uint8_t pt[CID_BLOCK];
    uint32_t sid;
    int epoch;

    if (len != AE_CID_LEN || (cid[0] & 0x1f) != LEN_BITS)
        return AE_ERR_PARSE;
    epoch = cid[0] >> 5;
    if (epoch == AE_CID_EPOCH_RESERVED || !k->epochs[epoch].loaded)
        return AE_ERR_PARSE;
    if (block(k->epochs[epoch].dec, cid + 1, pt) != 0)
        return AE_ERR_PARSE;
    sid = (uint32_t)pt[0] << 16 | (uint32_t)pt[1] << 8 | pt[2];
    if ((sid & 0xf) != 0 || (sid >> 12) == 0)
        return AE_ERR_PARSE;
    *site = (uint16_t)(sid >> 12);
    if (worker != NULL)
        *worker = (uint8_t)(sid >> 4);
    return 0;
}
