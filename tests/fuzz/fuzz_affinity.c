/*
 * libFuzzer harness for the inputs of `balance: hash` affinity: the sealed cookie opener
 * ae_affcookie_open (state/affcookie.c), the cookie field scanner ae_cookie_find
 * (proxy/core/affinity.c) and the hash_key parser ae_hash_key_parse (conf/hashkey.c).
 *
 * The first input octet picks the target (low 2 bits), the rest is its input:
 *   0  a cookie value, opened with the fixed ring's cookie keys (fuzz_common.h) under the name
 *      "aeaff". A fuzzer cannot forge the GCM tag, so with mode bit 2 set the harness first
 *      seals the server id given by the input's first 8 octets and opens that instead, after
 *      overwriting one of its characters with the input's 9th octet. Checked: an opened value is
 *      exactly AE_AFFCOOKIE_LEN characters; opening it under another name fails; one changed
 *      character (position from the input) makes it fail; a value sealed here opens to its id
 *      (also after a round trip through a cookie field).
 *   1  a cookie field: octet 0 = name length (0..63), then the name, then the field value.
 *      Checked: a found value lies inside the field, holds no ';', and scanning the same field
 *      with "x=1; " in front finds the same value.
 *   2  a hash_key text (NUL-terminated here, at most 127 octets). Checked: an accepted key has a
 *      known kind, prefixes in range, a header name in lower case, a valid cookie name; its
 *      canonical spelling parses to the same spec; a refused one leaves the client_ip default
 *      and a non-empty message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/hashkey.h"
#include "proxy/core/affinity.h"
#include "state/affcookie.h"
#include "tests/fuzz/fuzz_common.h"

static ae_affcookie_keys *keys;

static void fuzz_cookie(const uint8_t *d, size_t n, int seal)
{
    uint8_t v[AE_AFFCOOKIE_LEN + 1];
    uint64_t id = 0, want = 0;
    if (seal) {
        if (n < 9)
            return;
        want = fz_get64(d);
        if (ae_affcookie_seal(keys, "aeaff", 5, want, (char *)v) != 0)
            abort();
        if (ae_affcookie_open(keys, "aeaff", 5, v, AE_AFFCOOKIE_LEN, &id, NULL) != 0 || id != want)
            abort();
        /* through a cookie field and back */
        char field[128];
        int fl = snprintf(field, sizeof(field), "a=b; aeaff=%s; c", (char *)v);
        const uint8_t *fv;
        size_t fvl;
        if (!ae_cookie_find((const uint8_t *)field, (size_t)fl, "aeaff", 5, &fv, &fvl) ||
            fvl != AE_AFFCOOKIE_LEN || memcmp(fv, v, fvl) != 0)
            abort();
        size_t pos = d[8] % AE_AFFCOOKIE_LEN;
        if (v[pos] == d[8])
            return;
        v[pos] = d[8];
        if (ae_affcookie_open(keys, "aeaff", 5, v, AE_AFFCOOKIE_LEN, &id, NULL) == 0)
            abort(); /* one changed character must not open */
        return;
    }
    int renew = -1;
    if (ae_affcookie_open(keys, "aeaff", 5, d, n, &id, &renew) != 0)
        return;
    if (n != AE_AFFCOOKIE_LEN || (renew != 0 && renew != 1))
        abort();
    if (ae_affcookie_open(keys, "aeaff2", 6, d, n, &id, NULL) == 0)
        abort();
    memcpy(v, d, n);
    size_t pos = (size_t)(id % AE_AFFCOOKIE_LEN);
    v[pos] = v[pos] == 'A' ? 'B' : 'A';
    if (ae_affcookie_open(keys, "aeaff", 5, v, n, &id, NULL) == 0)
        abort();
}

static void fuzz_field(const uint8_t *d, size_t n)
{
    if (n < 1 || (size_t)d[0] % 64 > n - 1)
        return;
    size_t nl = d[0] % 64;
    char name[64];
    memcpy(name, d + 1, nl);
    const uint8_t *f = d + 1 + nl, *v, *v2;
    size_t fl = n - 1 - nl, vl, vl2;
    int found = ae_cookie_find(f, fl, name, nl, &v, &vl);
    if (!found)
        return;
    if (v < f || v + vl > f + fl || memchr(v, ';', vl) != NULL)
        abort();
    uint8_t *g = malloc(fl + 5);
    if (g == NULL)
        return;
    memcpy(g, "x=1; ", 5);
    memcpy(g + 5, f, fl);
    /* "x" is found first when the name is "x": skip that case */
    if (!(nl == 1 && name[0] == 'x')) {
        if (!ae_cookie_find(g, fl + 5, name, nl, &v2, &vl2) || vl2 != vl || memcmp(v2, v, vl) != 0)
            abort();
    }
    free(g);
}

static void fuzz_hash_key(const uint8_t *d, size_t n)
{
    char s[128], err[200], canon[160];
    ae_hash_spec h, h2;
    if (n > sizeof(s) - 1)
        n = sizeof(s) - 1;
    memcpy(s, d, n);
    s[n] = '\0';
    err[0] = '\0';
    if (ae_hash_key_parse(s, &h, err, sizeof(err)) != 0) {
        if (h.kind != AE_HASH_CLIENT_IP || h.v4_prefix != 32 || h.v6_prefix != 64 || err[0] == '\0')
            abort();
        return;
    }
    switch (h.kind) {
    case AE_HASH_CLIENT_IP:
        if (h.v4_prefix < 8 || h.v4_prefix > 32 || h.v6_prefix < 16 || h.v6_prefix > 128)
            abort();
        snprintf(canon, sizeof(canon), "client_ip/%u,%u", h.v4_prefix, h.v6_prefix);
        break;
    case AE_HASH_HEADER:
        if (h.name_len == 0 || h.name_len != strlen(h.name))
            abort();
        for (size_t i = 0; i < h.name_len; i++)
            if (h.name[i] >= 'A' && h.name[i] <= 'Z')
                abort();
        snprintf(canon, sizeof(canon), "header:%s", h.name);
        break;
    case AE_HASH_COOKIE:
        if (!ae_cookie_name_ok(h.name, h.name_len) || h.name_len != strlen(h.name))
            abort();
        snprintf(canon, sizeof(canon), "cookie:%s", h.name);
        break;
    default:
        abort();
    }
    if (ae_hash_key_parse(canon, &h2, err, sizeof(err)) != 0 || h2.kind != h.kind ||
        h2.v4_prefix != h.v4_prefix || h2.v6_prefix != h.v6_prefix || strcmp(h2.name, h.name) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (keys == NULL) {
        ae_ring r;
        fz_ring(&r);
        if (ae_affcookie_keys_new(&r, &keys) != 0)
            abort();
    }
    if (size < 1)
        return 0;
    switch (data[0] & 3) {
    case 0:
        fuzz_cookie(data + 1, size - 1, (data[0] >> 2) & 1);
        break;
    case 1:
        fuzz_field(data + 1, size - 1);
        break;
    default:
        fuzz_hash_key(data + 1, size - 1);
    }
    return 0;
}
