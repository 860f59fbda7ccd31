/*
 * Helpers shared by the libFuzzer harnesses of tests/fuzz/ (header-only, static functions).
 *
 * A fixed key ring (three keys with constant secrets, ids 4 / 5 / 6 = previous / current /
 * next) so that every run, and the seed corpus written by gen_corpus.c, uses the same keys.
 * These secrets (and the KEK below) are test constants, not keys of any deployment.
 */
#ifndef AE_FUZZ_COMMON_H
#define AE_FUZZ_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state/ring.h"

#define FZ_NOW      1795635712000ull /* the harnesses' wall clock (ms) */
#define FZ_WINDOW   5000ull          /* tunnel timestamp window (ms) */
#define FZ_KEY_PREV 4
#define FZ_KEY_CUR  5
#define FZ_KEY_NEXT 6

/* The key-encryption key of the ring harness (rings in its seed corpus are sealed with it). */
static const uint8_t fz_kek[AE_RING_KEK_LEN] = {
    0x6b, 0x65, 0x6b, 0x2d, 0x66, 0x6f, 0x72, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x69, 0x6e, 0x67, 0x00,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fixed ring: keys newest first, as ae_ring_rotate leaves them. */
static inline void fz_ring(ae_ring *r)
{
    memset(r, 0, sizeof(*r));
    r->generation = 3;
    r->rotated_ms = FZ_NOW - 60000;
    r->nkeys = 3;
    for (size_t i = 0; i < 3; i++) {
        ae_ring_key *k = &r->keys[i];
        k->id = FZ_KEY_NEXT - i;
        k->created_ms = FZ_NOW - 60000 * (i + 1);
        k->state = (ae_ring_state)i; /* AE_RING_NEXT, CURRENT, PREVIOUS */
        for (size_t j = 0; j < AE_RING_SECRET_LEN; j++)
            k->secret[j] = (uint8_t)(0xa0 + 16 * i + j);
    }
}

/* A malloc'd copy of data[0, size) with nothing after it (plus NUL when nul is set, not
 * counted), so that ASan sees any read past the input. */
static inline uint8_t *fz_copy(const uint8_t *data, size_t size, int nul)
{
    uint8_t *p = malloc(size + (nul ? 1 : 0) + (size == 0 && !nul ? 1 : 0));
    if (p == NULL)
        abort();
    if (size > 0)
        memcpy(p, data, size);
    if (nul)
        p[size] = 0;
    return p;
}

/* FNV-1a of data: picks "random" positions deterministically from the input. */
static inline uint64_t fz_hash(const uint8_t *data, size_t size)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    return h;
}

static inline uint64_t fz_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static inline void fz_put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

#endif
