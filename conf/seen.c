/*
 * Single-use table (conf/seen.h).
 */
#include "conf/seen.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t fp[2];
    uint64_t expires; /* 0 = empty */
} seen_slot;

struct ae_seen {
    uint8_t k0[16], k1[16];
    size_t mask;
    seen_slot *slots;
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint64_t ae_siphash24(const uint8_t key[16], const void *data, size_t len)
{
    const uint8_t *in = data;
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    uint64_t b = (uint64_t)len << 56;
    size_t i, full = len & ~(size_t)7;

    for (i = 0; i < full; i += 8) {
        uint64_t m = le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)in[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

ae_seen *ae_seen_new(size_t slots, const uint8_t seed[32])
{
    size_t cap = AE_SEEN_PROBE;
    while (cap < slots)
        cap *= 2;
    ae_seen *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->slots = calloc(cap, sizeof(*s->slots));
    if (s->slots == NULL) {
        free(s);
        return NULL;
    }
    memcpy(s->k0, seed, 16);
    memcpy(s->k1, seed + 16, 16);
    s->mask = cap - 1;
    return s;
}

void ae_seen_free(ae_seen *s)
{
    if (s == NULL)
        return;
    free(s->slots);
    free(s);
}

int ae_seen_add(ae_seen *s, const void *key, size_t len, uint64_t now, uint64_t expires)
{
    uint64_t fp0 = ae_siphash24(s->k0, key, len), fp1 = ae_siphash24(s->k1, key, len);
    seen_slot *free_slot = NULL;
    if (expires == 0)
        expires = 1; /* 0 marks an empty slot */
    /* Double hashing (odd step over a power-of-two table): no primary clustering, so a window
     * of AE_SEEN_PROBE slots fills up only near full load. */
    uint64_t step = (fp1 >> 1) | 1;
    for (size_t i = 0; i < AE_SEEN_PROBE; i++) {
        seen_slot *e = &s->slots[(fp0 + i * step) & s->mask];
        int live = e->expires > now;
        if (live && e->fp[0] == fp0 && e->fp[1] == fp1)
            return AE_SEEN_DUP;
        if (!live && free_slot == NULL)
            free_slot = e;
    }
    if (free_slot == NULL)
        return AE_SEEN_FULL;
    free_slot->fp[0] = fp0;
    free_slot->fp[1] = fp1;
    free_slot->expires = expires;
    return AE_SEEN_NEW;
}

size_t ae_seen_count(const ae_seen *s, uint64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i <= s->mask; i++)
        n += s->slots[i].expires > now;
    return n;
}
