/*
 * Unit tests for the single-use table (conf/seen.h): SipHash vectors, single use, expiry,
 * bounded memory (FULL, never eviction of a live record), many keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "conf/seen.h"

static const uint8_t seed[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void test_siphash_vectors(void **state)
{
    uint8_t key[16], in[64];
    (void)state;
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        in[i] = (uint8_t)i;
    /* Reference vectors of the SipHash paper / reference implementation (64-bit output). */
    assert_true(ae_siphash24(key, in, 0) == 0x726fdb47dd0e0e31ull);
    assert_true(ae_siphash24(key, in, 1) == 0x74f839c593dc67fdull);
    assert_true(ae_siphash24(key, in, 8) == 0x93f5f5799a932462ull);
    assert_true(ae_siphash24(key, in, 15) == 0xa129ca6149be45e5ull);
    assert_true(ae_siphash24(key, in, 63) == 0x958a324ceb064572ull);
}

static void test_single_use(void **state)
{
    (void)state;
    ae_seen *s = ae_seen_new(1024, seed);
    assert_non_null(s);
    const char *a = "token-a", *b = "token-b";
    assert_int_equal(ae_seen_add(s, a, strlen(a), 100, 200), AE_SEEN_NEW);
    assert_int_equal(ae_seen_add(s, a, strlen(a), 101, 201), AE_SEEN_DUP);
    assert_int_equal(ae_seen_add(s, b, strlen(b), 101, 201), AE_SEEN_NEW);
    /* a prefix or a longer key is another key */
    assert_int_equal(ae_seen_add(s, a, strlen(a) - 1, 101, 201), AE_SEEN_NEW);
    assert_int_equal(ae_seen_count(s, 150), 3);
    /* the first record of a still holds at 199, not at 200 (expired) */
    assert_int_equal(ae_seen_add(s, a, strlen(a), 199, 300), AE_SEEN_DUP);
    assert_int_equal(ae_seen_add(s, a, strlen(a), 200, 300), AE_SEEN_NEW);
    assert_int_equal(ae_seen_add(s, a, strlen(a), 250, 350), AE_SEEN_DUP);
    /* an already expired record is not kept */
    assert_int_equal(ae_seen_add(s, "x", 1, 500, 400), AE_SEEN_NEW);
    assert_int_equal(ae_seen_add(s, "x", 1, 500, 600), AE_SEEN_NEW);
    assert_int_equal(ae_seen_add(s, "x", 1, 501, 600), AE_SEEN_DUP);
    ae_seen_free(s);
}

static void test_bounded(void **state)
{
    (void)state;
    /* 16 slots (the minimum): every key probes all of them. */
    ae_seen *s = ae_seen_new(1, seed);
    assert_non_null(s);
    char k[32];
    int full = 0;
    for (int i = 0; i < 16; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_int_equal(ae_seen_add(s, k, strlen(k), 10, 100), AE_SEEN_NEW);
    }
    assert_int_equal(ae_seen_count(s, 10), 16);
    for (int i = 16; i < 40; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        full += ae_seen_add(s, k, strlen(k), 10, 100) == AE_SEEN_FULL;
    }
    assert_int_equal(full, 24); /* fail closed: no live record was evicted */
    for (int i = 0; i < 16; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_int_equal(ae_seen_add(s, k, strlen(k), 50, 100), AE_SEEN_DUP);
    }
    /* once they expire, the room comes back */
    assert_int_equal(ae_seen_add(s, "late", 4, 100, 200), AE_SEEN_NEW);
    assert_int_equal(ae_seen_count(s, 100), 1);
    ae_seen_free(s);
}

static void test_many(void **state)
{
    (void)state;
    ae_seen *s = ae_seen_new(1 << 14, seed);
    assert_non_null(s);
    uint8_t k[24];
    size_t added = 0, full = 0;
    for (uint32_t i = 0; i < 12000; i++) {
        memset(k, 0, sizeof(k));
        memcpy(k, &i, sizeof(i));
        int r = ae_seen_add(s, k, sizeof(k), 1, 1000);
        assert_true(r != AE_SEEN_DUP);
        added += r == AE_SEEN_NEW;
        full += r == AE_SEEN_FULL;
    }
    /* 73% load with a 16-probe window: essentially everything fits */
    printf("12000 keys in 16384 slots: %zu recorded, %zu refused (full)\n", added, full);
    assert_true(full * 1000 < added);
    for (uint32_t i = 0; i < 12000; i++) {
        memset(k, 0, sizeof(k));
        memcpy(k, &i, sizeof(i));
        int r = ae_seen_add(s, k, sizeof(k), 2, 1000);
        assert_true(r == AE_SEEN_DUP || r == AE_SEEN_FULL);
    }
    ae_seen_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_single_use),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
