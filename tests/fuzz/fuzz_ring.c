/*
 * libFuzzer harness for the key ring text format ae_ring_decode (state/ring.c), as read from
 * Redis, with and without a key-encryption key.
 *
 * The input's first byte is a mode (bit 0: decode with the fixed KEK of fuzz_common.h, as with
 * state.kek_file; the seed corpus has rings sealed with it), the rest the ring text. Checked
 * beyond "no crash":
 *   - a decoded ring has 1..3 keys, exactly one current, no two in one state, distinct non-zero
 *     ids, newest first (next, current, previous) and a non-zero generation;
 *   - round trip: ae_ring_encode of the decoded ring (sealed again with the KEK when it was
 *     sealed) decodes to the same ring, and without a KEK the encoding is canonical (encoding
 *     the re-decoded ring gives the same text);
 *   - the error message of a refused ring is a NUL-terminated line that holds no run of more
 *     than 20 hex digits (never secret material; a number in decimal has at most 20 digits).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/base.h"
#include "state/ring.h"
#include "tests/fuzz/fuzz_common.h"

static int same_ring(const ae_ring *a, const ae_ring *b)
{
    if (a->generation != b->generation || a->rotated_ms != b->rotated_ms || a->nkeys != b->nkeys)
        return 0;
    for (size_t i = 0; i < a->nkeys; i++)
        if (a->keys[i].id != b->keys[i].id || a->keys[i].created_ms != b->keys[i].created_ms ||
            a->keys[i].state != b->keys[i].state ||
            memcmp(a->keys[i].secret, b->keys[i].secret, AE_RING_SECRET_LEN) != 0)
            return 0;
    return 1;
}

static void check_err(const char *err, size_t errlen)
{
    size_t run = 0, i;
    for (i = 0; i < errlen && err[i] != 0; i++) {
        if (err[i] == '\n')
            abort();
        run = ae_hex_digit((unsigned char)err[i]) >= 0 ? run + 1 : 0;
        if (run > 20)
            abort();
    }
    if (i == errlen || i == 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *k = (data[0] & 1) ? fz_kek : NULL;
    char *text = (char *)fz_copy(data + 1, size - 1, 0);
    char err[256];
    ae_ring r, r2;

    memset(err, 0x55, sizeof(err));
    int rc = ae_ring_decode(text, size - 1, k, &r, err, sizeof(err));
    free(text);
    if (rc != 0) {
        check_err(err, sizeof(err));
        return 0;
    }

    int seen[3] = {0, 0, 0};
    if (r.nkeys < 1 || r.nkeys > AE_RING_MAX_KEYS || r.generation == 0)
        abort();
    for (size_t i = 0; i < r.nkeys; i++) {
        if (r.keys[i].id == 0 || (int)r.keys[i].state < 0 || r.keys[i].state > AE_RING_PREVIOUS ||
            seen[r.keys[i].state]++ > 0 || (i > 0 && r.keys[i].state <= r.keys[i - 1].state))
            abort();
        for (size_t j = 0; j < i; j++)
            if (r.keys[j].id == r.keys[i].id)
                abort();
    }
    if (seen[AE_RING_CURRENT] != 1 || ae_ring_find(&r, AE_RING_CURRENT) == NULL)
        abort();

    char *enc, *enc2;
    size_t elen, elen2;
    if (ae_ring_encode(&r, k, &enc, &elen) != 0)
        abort();
    if (ae_ring_decode(enc, elen, k, &r2, err, sizeof(err)) != 0 || !same_ring(&r, &r2))
        abort();
    if (k == NULL) {
        if (ae_ring_encode(&r2, NULL, &enc2, &elen2) != 0)
            abort();
        if (elen2 != elen || memcmp(enc, enc2, elen) != 0)
            abort();
        free(enc2);
    }
    free(enc);
    return 0;
}
