/*
 * The shared key ring: creation, rotation, text encoding with optional sealing, derivation.
 */
#include "state/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "conf/base.h"

#define GCM_NONCE_LEN 12
#define GCM_TAG_LEN   16
#define SEALED_LEN    (GCM_NONCE_LEN + AE_RING_SECRET_LEN + GCM_TAG_LEN)
#define LINE_MAX_LEN  512
#define MAC_LEN       32 /* HMAC-SHA256 over the ring text before the "mac" line */

static const char *const state_names[] = {"next", "current", "previous"};

const char *ae_ring_state_name(ae_ring_state s)
{
    return (unsigned)s < 3 ? state_names[s] : "?";
}

static int fresh_key(ae_ring_key *k, uint64_t id, uint64_t now_ms)
{
    memset(k, 0, sizeof(*k));
    k->id = id;
    k->created_ms = now_ms;
    k->state = AE_RING_NEXT;
    return RAND_bytes(k->secret, sizeof(k->secret)) == 1 ? 0 : AE_ERR_TLS;
}

int ae_ring_init(ae_ring *r, uint64_t now_ms)
{
    memset(r, 0, sizeof(*r));
    if (fresh_key(&r->keys[0], 2, now_ms) != 0 || fresh_key(&r->keys[1], 1, now_ms) != 0)
        return AE_ERR_TLS;
    r->keys[1].state = AE_RING_CURRENT;
    r->nkeys = 2;
    r->generation = 1;
    r->rotated_ms = now_ms;
    return 0;
}

int ae_ring_rotate(const ae_ring *in, ae_ring *out, uint64_t now_ms)
{
    ae_ring tmp;
    uint64_t max_id = 0;
    size_t n;

    for (size_t i = 0; i < in->nkeys; i++)
        if (in->keys[i].id > max_id)
            max_id = in->keys[i].id;
    memset(&tmp, 0, sizeof(tmp));
    if (fresh_key(&tmp.keys[0], max_id + 1, now_ms) != 0)
        return AE_ERR_TLS;
    /* Keys are newest first; shifting by one moves each a state on and drops the oldest. */
    n = in->nkeys < AE_RING_MAX_KEYS ? in->nkeys : AE_RING_MAX_KEYS - 1;
    memcpy(&tmp.keys[1], &in->keys[0], n * sizeof(in->keys[0]));
    tmp.nkeys = n + 1;
    for (size_t i = 0; i < tmp.nkeys; i++)
        tmp.keys[i].state = (ae_ring_state)i;
    tmp.generation = in->generation + 1;
    tmp.rotated_ms = now_ms;
    *out = tmp;
    OPENSSL_cleanse(&tmp, sizeof(tmp));
    return 0;
}

const ae_ring_key *ae_ring_find(const ae_ring *r, ae_ring_state s)
{
    for (size_t i = 0; i < r->nkeys; i++)
        if (r->keys[i].state == s)
            return &r->keys[i];
    return NULL;
}

/* ---- sealing ---- */

static void seal_aad(uint64_t id, char *aad, size_t len)
{
    snprintf(aad, len, "anyedge-ring %d id=%" PRIu64, AE_RING_FORMAT, id);
}

static int gcm(int enc, const uint8_t *kek, uint64_t id, const uint8_t *nonce, const uint8_t *in,
               uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    char aad[64];
    int n = 0, ok;

    if (ctx == NULL)
        return AE_ERR_NOMEM;
    seal_aad(id, aad, sizeof(aad));
    ok = EVP_CipherInit_ex2(ctx, EVP_aes_256_gcm(), kek, nonce, enc, NULL) == 1 &&
         EVP_CipherUpdate(ctx, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
         EVP_CipherUpdate(ctx, out, &n, in, AE_RING_SECRET_LEN) == 1;
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, tag) == 1;
    if (ok)
        ok = EVP_CipherFinal_ex(ctx, out + n, &n) == 1;
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : AE_ERR_TLS;
}

/* ---- encoding ---- */

static void hex_put(char *dst, const uint8_t *src, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 15];
    }
    dst[2 * n] = '\0';
}

/* Decodes exactly 2*n hex digits of s[0, slen). 0 or -1. */
static int hex_get(const char *s, size_t slen, uint8_t *out, size_t n)
{
    if (slen != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = ae_hex_digit((unsigned char)s[2 * i]),
            lo = ae_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* HKDF-SHA256(key, salt = "anyedge-ring", info = label) -> out[0, outlen). 0 or AE_ERR_TLS. */
static int hkdf(const uint8_t *key, size_t keylen, const char *label, uint8_t *out, size_t outlen)
{
    static const char salt[] = "anyedge-ring";
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, keylen),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof(salt) - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)label, strlen(label)),
        OSSL_PARAM_construct_end(),
    };
    int ok = ctx != NULL && EVP_KDF_derive(ctx, out, outlen, params) == 1;

    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return ok ? 0 : AE_ERR_TLS;
}

/* The ring's MAC: HMAC-SHA256 of text[0, len) under a key derived from the KEK (its own label:
 * the KEK itself only seals). 0 or AE_ERR_TLS. */
static int ring_mac(const uint8_t *kek, const char *text, size_t len, uint8_t mac[MAC_LEN])
{
    uint8_t mk[32];
    unsigned int ml = 0;
    int rv = hkdf(kek, AE_RING_KEK_LEN, "anyedge-ring mac", mk, sizeof(mk));

    if (rv == 0 &&
        (HMAC(EVP_sha256(), mk, sizeof(mk), (const unsigned char *)text, len, mac, &ml) == NULL ||
         ml != MAC_LEN))
        rv = AE_ERR_TLS;
    OPENSSL_cleanse(mk, sizeof(mk));
    return rv;
}

int ae_ring_encode(const ae_ring *r, const uint8_t *kek, char **out, size_t *outlen)
{
    char *buf = malloc(AE_RING_ENCODED_MAX);
    size_t off = 0;
    int n;

    if (buf == NULL)
        return AE_ERR_NOMEM;
    n = snprintf(buf, AE_RING_ENCODED_MAX,
                 "anyedge-ring %d\ngeneration %" PRIu64 "\nrotated_ms %" PRIu64 "\n",
                 AE_RING_FORMAT, r->generation, r->rotated_ms);
    off = (size_t)n;
    for (size_t i = 0; i < r->nkeys; i++) {
        const ae_ring_key *k = &r->keys[i];
        char hex[2 * SEALED_LEN + 1];

        if (kek != NULL) {
            uint8_t sealed[SEALED_LEN];
            if (RAND_bytes(sealed, GCM_NONCE_LEN) != 1 ||
                gcm(1, kek, k->id, sealed, k->secret, sealed + GCM_NONCE_LEN,
                    sealed + GCM_NONCE_LEN + AE_RING_SECRET_LEN) != 0) {
                free(buf);
                return AE_ERR_TLS;
            }
            hex_put(hex, sealed, sizeof(sealed));
        } else {
            hex_put(hex, k->secret, sizeof(k->secret));
        }
        n = snprintf(buf + off, AE_RING_ENCODED_MAX - off,
                     "key id=%" PRIu64 " state=%s created_ms=%" PRIu64 " %s=%s\n", k->id,
                     ae_ring_state_name(k->state), k->created_ms, kek != NULL ? "sealed" : "secret",
                     hex);
        OPENSSL_cleanse(hex, sizeof(hex));
        if (n < 0 || (size_t)n >= AE_RING_ENCODED_MAX - off) {
            OPENSSL_cleanse(buf, off);
            free(buf);
            return AE_ERR_NOMEM;
        }
        off += (size_t)n;
    }
    if (kek != NULL) { /* the whole ring authenticated: see the format in ring.h */
        uint8_t mac[MAC_LEN];
        char hex[2 * MAC_LEN + 1];
        if (ring_mac(kek, buf, off, mac) != 0 || off + 5 + 2 * MAC_LEN + 1 >= AE_RING_ENCODED_MAX) {
            OPENSSL_cleanse(buf, off);
            free(buf);
            return AE_ERR_TLS;
        }
        hex_put(hex, mac, sizeof(mac));
        off += (size_t)snprintf(buf + off, AE_RING_ENCODED_MAX - off, "mac %s\n", hex);
    }
    *out = buf;
    *outlen = off;
    return 0;
}

/* ---- decoding ---- */

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        goto fail;                                                                                 \
    } while (0)

/* Parses the fields of one "key ..." line (after "key "). */
static int parse_key_line(const char *s, size_t len, unsigned lineno, const uint8_t *kek,
                          ae_ring_key *k, int *sealed, char *err, size_t errlen)
{
    int have_id = 0, have_state = 0, have_created = 0, have_secret = 0;
    size_t i = 0;

    memset(k, 0, sizeof(*k));
    *sealed = 0;
    while (i < len) {
        size_t start = i, eq = 0, vlen;
        const char *name, *val;

        while (i < len && s[i] != ' ')
            i++;
        for (size_t j = start; j < i; j++)
            if (s[j] == '=') {
                eq = j;
                break;
            }
        if (i == start) {
            i++;
            continue;
        }
        if (eq == 0)
            FAIL("line %u: field without '='", lineno);
        name = s + start;
        val = s + eq + 1;
        vlen = i - eq - 1;
#define IS(lit) (eq - start == sizeof(lit) - 1 && memcmp(name, lit, sizeof(lit) - 1) == 0)
        if ((IS("id") && have_id) || (IS("state") && have_state) ||
            (IS("created_ms") && have_created) || ((IS("secret") || IS("sealed")) && have_secret))
            FAIL("line %u: field %.*s given twice", lineno, (int)(eq - start), name);
        if (IS("id")) {
            if (parse_u64(val, vlen, &k->id) != 0 || k->id == 0)
                FAIL("line %u: bad key id", lineno);
            have_id = 1;
        } else if (IS("state")) {
            int st = -1;
            for (int j = 0; j < 3; j++)
                if (strlen(state_names[j]) == vlen && memcmp(val, state_names[j], vlen) == 0)
                    st = j;
            if (st < 0)
                FAIL("line %u: unknown key state", lineno);
            k->state = (ae_ring_state)st;
            have_state = 1;
        } else if (IS("created_ms")) {
            if (parse_u64(val, vlen, &k->created_ms) != 0)
                FAIL("line %u: bad created_ms", lineno);
            have_created = 1;
        } else if (IS("secret")) {
            if (kek != NULL)
                FAIL("line %u: plain secret but state.kek_file is set (refusing unsealed keys)",
                     lineno);
            if (have_secret || hex_get(val, vlen, k->secret, AE_RING_SECRET_LEN) != 0)
                FAIL("line %u: bad secret (want %d hex digits)", lineno, 2 * AE_RING_SECRET_LEN);
            have_secret = 1;
        } else if (IS("sealed")) {
            uint8_t buf[SEALED_LEN];
            if (kek == NULL)
                FAIL("line %u: sealed secret but no state.kek_file configured", lineno);
            if (have_secret || hex_get(val, vlen, buf, SEALED_LEN) != 0)
                FAIL("line %u: bad sealed secret (want %d hex digits)", lineno, 2 * SEALED_LEN);
            have_secret = 1;
            *sealed = 1;
            if (!have_id)
                FAIL("line %u: sealed secret before id", lineno);
            if (gcm(0, kek, k->id, buf, buf + GCM_NONCE_LEN, k->secret,
                    buf + GCM_NONCE_LEN + AE_RING_SECRET_LEN) != 0) {
                OPENSSL_cleanse(k->secret, sizeof(k->secret));
                FAIL("line %u: sealed secret of key %" PRIu64
                     " does not open with the KEK (tampered, or another KEK)",
                     lineno, k->id);
            }
        }
        /* Other fields: written by another version; ignored. */
#undef IS
    }
    if (!have_id || !have_state || !have_created || !have_secret)
        FAIL("line %u: key needs id, state, created_ms and secret/sealed", lineno);
    return 0;
fail:
    OPENSSL_cleanse(k, sizeof(*k));
    return AE_ERR_PARSE;
}

int ae_ring_decode(const char *buf, size_t len, const uint8_t *kek, ae_ring *out, char *err,
                   size_t errlen)
{
    ae_ring r;
    int have_gen = 0, have_rot = 0, seen_counts[3] = {0, 0, 0};
    unsigned lineno = 0;
    size_t off = 0;

    memset(&r, 0, sizeof(r));
    if (len > AE_RING_ENCODED_MAX)
        FAIL("ring too large (%zu bytes)", len);
    if (kek != NULL) {
        /* The last line is "mac <hex>", over every byte before it; nothing is read from a ring
         * that does not carry the right one (forged, relabelled, or older than MACs). */
        size_t end = len, ls;
        uint8_t want[MAC_LEN], got[MAC_LEN];
        while (end > 0 && buf[end - 1] == '\n')
            end--;
        ls = end;
        while (ls > 0 && buf[ls - 1] != '\n')
            ls--;
        if (end - ls != 4 + 2 * MAC_LEN || memcmp(buf + ls, "mac ", 4) != 0 ||
            hex_get(buf + ls + 4, 2 * MAC_LEN, got, MAC_LEN) != 0)
            FAIL("no ring MAC (state.kek_file is set: the ring must end with its \"mac\" line)");
        if (ring_mac(kek, buf, ls, want) != 0)
            FAIL("cannot compute the ring MAC");
        if (CRYPTO_memcmp(want, got, MAC_LEN) != 0)
            FAIL("ring MAC does not verify (tampered, or another KEK)");
        len = ls; /* the text the MAC covers */
    }
    while (off < len) {
        const char *line = buf + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t llen = nl != NULL ? (size_t)(nl - line) : len - off;

        off += llen + (nl != NULL ? 1 : 0);
        lineno++;
        if (llen > LINE_MAX_LEN)
            FAIL("line %u: too long", lineno);
        for (size_t i = 0; i < llen; i++)
            if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e)
                FAIL("line %u: control or non-ASCII byte", lineno);
        if (lineno == 1) {
            uint64_t v;
            if (llen < 14 || memcmp(line, "anyedge-ring ", 13) != 0 ||
                parse_u64(line + 13, llen - 13, &v) != 0)
                FAIL("not an anyedge key ring (bad first line)");
            if (v != AE_RING_FORMAT)
                FAIL("ring format %" PRIu64 " is not supported (this version reads %d)", v,
                     AE_RING_FORMAT);
            continue;
        }
        if (llen > 11 && memcmp(line, "generation ", 11) == 0) {
            if (have_gen)
                FAIL("line %u: generation given twice", lineno);
            if (parse_u64(line + 11, llen - 11, &r.generation) != 0 || r.generation == 0)
                FAIL("line %u: bad generation", lineno);
            have_gen = 1;
        } else if (llen > 11 && memcmp(line, "rotated_ms ", 11) == 0) {
            if (have_rot)
                FAIL("line %u: rotated_ms given twice", lineno);
            if (parse_u64(line + 11, llen - 11, &r.rotated_ms) != 0)
                FAIL("line %u: bad rotated_ms", lineno);
            have_rot = 1;
        } else if (llen > 4 && memcmp(line, "key ", 4) == 0) {
            ae_ring_key k;
            int sealed;
            if (r.nkeys == AE_RING_MAX_KEYS)
                FAIL("line %u: more than %d keys", lineno, AE_RING_MAX_KEYS);
            if (parse_key_line(line + 4, llen - 4, lineno, kek, &k, &sealed, err, errlen) != 0)
                goto fail_quiet;
            for (size_t i = 0; i < r.nkeys; i++)
                if (r.keys[i].id == k.id)
                    FAIL("line %u: duplicate key id %" PRIu64, lineno, k.id);
            if (seen_counts[k.state]++ > 0)
                FAIL("line %u: two keys in state %s", lineno, ae_ring_state_name(k.state));
            r.keys[r.nkeys++] = k;
            OPENSSL_cleanse(&k, sizeof(k));
        }
        /* Other lines: written by another version; ignored. */
    }
    if (lineno == 0)
        FAIL("empty ring");
    if (!have_gen || !have_rot)
        FAIL("ring lacks generation or rotated_ms");
    if (seen_counts[AE_RING_CURRENT] != 1)
        FAIL("ring has no current key");
    /* Canonical order, newest first: next, current, previous. */
    {
        ae_ring sorted = r;
        size_t n = 0;
        for (int st = 0; st < 3; st++)
            for (size_t i = 0; i < r.nkeys; i++)
                if ((int)r.keys[i].state == st)
                    sorted.keys[n++] = r.keys[i];
        *out = sorted;
        OPENSSL_cleanse(&sorted, sizeof(sorted));
    }
    OPENSSL_cleanse(&r, sizeof(r));
    return 0;
fail:
fail_quiet:
    OPENSSL_cleanse(&r, sizeof(r));
    return AE_ERR_PARSE;
}

int ae_ring_load_kek(const char *path, uint8_t kek[AE_RING_KEK_LEN], char *err, size_t errlen)
{
    char buf[2 * AE_RING_KEK_LEN + 3];
    struct stat st;
    ssize_t n;
    size_t len;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return AE_ERR_IO;
    }
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
        snprintf(err, errlen, "%s: must not be accessible by group or others (chmod 600)", path);
        close(fd);
        return AE_ERR_INVAL;
    }
    n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return AE_ERR_IO;
    }
    len = (size_t)n;
    if (len == AE_RING_KEK_LEN) {
        memcpy(kek, buf, AE_RING_KEK_LEN);
        OPENSSL_cleanse(buf, sizeof(buf));
        return 0;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (hex_get(buf, len, kek, AE_RING_KEK_LEN) == 0) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return 0;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    snprintf(err, errlen, "%s: want exactly %d bytes or %d hex digits", path, AE_RING_KEK_LEN,
             2 * AE_RING_KEK_LEN);
    return AE_ERR_PARSE;
}

int ae_ring_derive(const ae_ring_key *k, const char *label, uint8_t *out, size_t outlen)
{
    return hkdf(k->secret, sizeof(k->secret), label, out, outlen);
}
