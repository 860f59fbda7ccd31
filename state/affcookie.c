/* Sealed affinity cookies: see affcookie.h for the format and the threading rules. */
#include "state/affcookie.h"

#include <stdlib.h>
#include <string.h>

#include <nettle/aes.h>
#include <nettle/gcm.h>
#include <nettle/memops.h>
#include <openssl/rand.h>

#include "conf/base.h"

#define NONCE_LEN 12
#define ID_LEN    8
#define TAG_LEN   16
#define HDR_LEN   2 /* version, key tag */
#define NAME_MAX_ 255
_Static_assert(HDR_LEN + NONCE_LEN + ID_LEN + TAG_LEN == AE_AFFCOOKIE_RAW_LEN, "cookie layout");
_Static_assert((AE_AFFCOOKIE_RAW_LEN * 8 + 5) / 6 == AE_AFFCOOKIE_LEN, "base64url length");

typedef struct {
    uint64_t ring_id;
    struct aes256_ctx aes;
    struct gcm_key gcm;
} cookie_key;

struct ae_affcookie_keys {
    size_t nkeys, cur;
    cookie_key keys[AE_RING_MAX_KEYS];
};

int ae_affcookie_keys_new(const ae_ring *ring, ae_affcookie_keys **out)
{
    const ae_ring_key *cur = ae_ring_find(ring, AE_RING_CURRENT);
    ae_affcookie_keys *k;
    uint8_t key[32];

    *out = NULL;
    if (cur == NULL)
        return AE_ERR_INVAL;
    if ((k = calloc(1, sizeof(*k))) == NULL)
        return AE_ERR_NOMEM;
    for (size_t i = 0; i < ring->nkeys; i++) {
        cookie_key *ck = &k->keys[k->nkeys];
        if (ae_ring_derive(&ring->keys[i], AE_AFFCOOKIE_LABEL, key, sizeof(key)) != 0) {
            ae_memzero(key, sizeof(key));
            ae_affcookie_keys_free(k);
            return AE_ERR_TLS;
        }
        ck->ring_id = ring->keys[i].id;
        aes256_set_encrypt_key(&ck->aes, key);
        gcm_set_key(&ck->gcm, &ck->aes, (nettle_cipher_func *)aes256_encrypt);
        if (&ring->keys[i] == cur)
            k->cur = k->nkeys;
        k->nkeys++;
    }
    ae_memzero(key, sizeof(key));
    *out = k;
    return 0;
}

void ae_affcookie_keys_free(ae_affcookie_keys *k)
{
    if (k == NULL)
        return;
    ae_memzero(k, sizeof(*k));
    free(k);
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64_encode(const uint8_t *in, size_t len, char *out)
{
    size_t o = 0, i;
    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
    }
    out[o] = '\0';
}

static int b64_val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes exactly AE_AFFCOOKIE_LEN characters into AE_AFFCOOKIE_RAW_LEN octets; the unused low
 * bits of the last character must be zero, so every value has one spelling. 0 or -1. */
static int b64_decode(const uint8_t *in, uint8_t out[AE_AFFCOOKIE_RAW_LEN])
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < AE_AFFCOOKIE_LEN; i++) {
        int v = b64_val(in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return o == AE_AFFCOOKIE_RAW_LEN && acc == 0 ? 0 : -1;
}

/* The additional data, version | key tag | cookie name, in one gcm_update: nettle takes only
 * the last update of a message at a length that is not a multiple of the block size. */
static void aad(struct gcm_ctx *g, const cookie_key *ck, const uint8_t *hdr, const char *name,
                size_t nlen)
{
    uint8_t buf[HDR_LEN + NAME_MAX_];
    if (nlen > NAME_MAX_)
        nlen = NAME_MAX_; /* names are at most AE_HASH_NAME_MAX by config */
    memcpy(buf, hdr, HDR_LEN);
    memcpy(buf + HDR_LEN, name, nlen);
    gcm_update(g, &ck->gcm, HDR_LEN + nlen, buf);
}

int ae_affcookie_seal(const ae_affcookie_keys *k, const char *name, size_t nlen, uint64_t server_id,
                      char out[AE_AFFCOOKIE_LEN + 1])
{
    const cookie_key *ck = &k->keys[k->cur];
    uint8_t raw[AE_AFFCOOKIE_RAW_LEN], id[ID_LEN];
    struct gcm_ctx g;

    raw[0] = AE_AFFCOOKIE_V1;
    raw[1] = (uint8_t)ck->ring_id;
    if (RAND_bytes(raw + HDR_LEN, NONCE_LEN) != 1)
        return AE_ERR_TLS;
    for (int i = 0; i < ID_LEN; i++)
        id[i] = (uint8_t)(server_id >> (56 - 8 * i));
    gcm_set_iv(&g, &ck->gcm, NONCE_LEN, raw + HDR_LEN);
    aad(&g, ck, raw, name, nlen);
    gcm_encrypt(&g, &ck->gcm, &ck->aes, (nettle_cipher_func *)aes256_encrypt, ID_LEN,
                raw + HDR_LEN + NONCE_LEN, id);
    gcm_digest(&g, &ck->gcm, &ck->aes, (nettle_cipher_func *)aes256_encrypt, TAG_LEN,
               raw + HDR_LEN + NONCE_LEN + ID_LEN);
    b64_encode(raw, sizeof(raw), out);
    return 0;
}

int ae_affcookie_open(const ae_affcookie_keys *k, const char *name, size_t nlen, const uint8_t *v,
                      size_t len, uint64_t *server_id, int *renew)
{
    uint8_t raw[AE_AFFCOOKIE_RAW_LEN], id[ID_LEN], tag[TAG_LEN];
    const cookie_key *ck = NULL;
    struct gcm_ctx g;
    size_t i;

    if (v == NULL || len != AE_AFFCOOKIE_LEN || b64_decode(v, raw) != 0 ||
        raw[0] != AE_AFFCOOKIE_V1)
        return AE_ERR_PARSE;
    for (i = 0; i < k->nkeys; i++)
        if ((uint8_t)k->keys[i].ring_id == raw[1]) {
            ck = &k->keys[i];
            break;
        }
    if (ck == NULL)
        return AE_ERR_NOTFOUND;
    gcm_set_iv(&g, &ck->gcm, NONCE_LEN, raw + HDR_LEN);
    aad(&g, ck, raw, name, nlen);
    gcm_decrypt(&g, &ck->gcm, &ck->aes, (nettle_cipher_func *)aes256_encrypt, ID_LEN, id,
                raw + HDR_LEN + NONCE_LEN);
    gcm_digest(&g, &ck->gcm, &ck->aes, (nettle_cipher_func *)aes256_encrypt, TAG_LEN, tag);
    if (!memeql_sec(tag, raw + HDR_LEN + NONCE_LEN + ID_LEN, TAG_LEN))
        return AE_ERR_PROTO;
    uint64_t sid = 0;
    for (int j = 0; j < ID_LEN; j++)
        sid = sid << 8 | id[j];
    *server_id = sid;
    if (renew != NULL)
        *renew = i != k->cur;
    return 0;
}
