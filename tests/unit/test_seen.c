/*
 * Unit tests for the single-use table (conf/seen.h): SipHash vectors, single use, expiry,
 * bounded memory (FULL, never eviction of a live record), many keys, and the 0-RTT use: records
 * for a ticket's life (E + 1 s) and the load quic.early_data_records is sized for (80%).
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

/* 0-RTT anti-replay (tls/quic_gnutls.c): a binder accepted at t is kept until t + E + 1, so it
 * is a duplicate at every second GnuTLS could still accept it (ticket age <= E, whole seconds),
 * and its slot is free again afterwards. */
static void test_ticket_life(void **state)
{
    (void)state;
    const uint64_t e = 3600, t = 1700000000;
    ae_seen *s = ae_seen_new(16, seed);
    assert_non_null(s);
    uint8_t binder[32];
    memset(binder, 0xab, sizeof(binder));
    assert_int_equal(ae_seen_add(s, binder, sizeof(binder), t, t + e + 1), AE_SEEN_NEW);
    assert_int_equal(ae_seen_add(s, binder, sizeof(binder), t + 120, t + 120 + e + 1),
                     AE_SEEN_DUP); /* 2 min later */
    assert_int_equal(ae_seen_add(s, binder, sizeof(binder), t + e, t + e + e + 1), AE_SEEN_DUP);
    assert_int_equal(ae_seen_count(s, t + e), 1);
    assert_int_equal(ae_seen_count(s, t + e + 1), 0);
    assert_int_equal(ae_seen_add(s, binder, sizeof(binder), t + e + 1, t + 2 * e + 2), AE_SEEN_NEW);
    ae_seen_free(s);
}

/* quic.early_data_records' help promises about 0.8 x records live records (the sustainable
 * 0-RTT rate is 0.8 x records / E): at 80% load next to nothing is refused. */
static void test_load_80(void **state)
{
    (void)state;
    const uint32_t slots = 1 << 16, n = slots / 10 * 8;
    ae_seen *s = ae_seen_new(slots, seed);
    assert_non_null(s);
    uint8_t k[32];
    size_t full = 0;
    for (uint32_t i = 0; i < n; i++) {
        memset(k, 0x5a, sizeof(k));
        memcpy(k, &i, sizeof(i));
        full += ae_seen_add(s, k, sizeof(k), 1, 3602) == AE_SEEN_FULL;
    }
    printf("%u binders in %u slots: %zu refused (full)\n", n, slots, full);
    assert_true(full * 100 < n); /* under 1% */
    ae_seen_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors), cmocka_unit_test(test_single_use),
        cmocka_unit_test(test_bounded),         cmocka_unit_test(test_many),
        cmocka_unit_test(test_ticket_life),     cmocka_unit_test(test_load_80),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
