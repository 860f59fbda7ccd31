/*
 * Unit tests for QUIC connection IDs: round trips, nonces, wrong keys, malformed CIDs, epochs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conf/base.h"
#include "state/cid.h"
#include "state/ring.h"

static ae_cid_keys *keys_of(const ae_ring *r)
{
    ae_cid_keys *k = NULL;
    assert_int_equal(ae_cid_keys_from_ring(r, &k), 0);
    assert_non_null(k);
    return k;
}

static void check_roundtrip(ae_cid_keys *k, uint16_t site, uint8_t worker)
{
    uint8_t cid[AE_CID_LEN];
    uint16_t s = 0;
    uint8_t w = 0;

    assert_int_equal(ae_cid_encode(k, site, worker, cid), 0);
    assert_int_equal(cid[0] >> 5, ae_cid_keys_epoch(k));
    assert_int_equal(cid[0] & 0x1f, AE_CID_LEN - 1);
    assert_int_equal(ae_cid_decode(k, cid, sizeof(cid), &s, &w), 0);
    assert_int_equal(s, site);
    assert_int_equal(w, worker);
}

static void test_roundtrip(void **state)
{
    static const uint8_t workers[] = {0, 1, 7, 128, 255};
    static const uint16_t sites[] = {1, 2, 100, 2048, 4095};
    ae_ring r;
    ae_cid_keys *k;
    uint8_t cid[AE_CID_LEN];
    uint16_t s;
    (void)state;

    assert_int_equal(ae_ring_init(&r, 1000), 0);
    k = keys_of(&r);
    for (unsigned site = 1; site <= AE_CID_SITE_MAX; site++)
        for (size_t i = 0; i < sizeof(workers); i++)
            check_roundtrip(k, (uint16_t)site, workers[i]);
    for (size_t i = 0; i < sizeof(sites) / sizeof(sites[0]); i++)
        for (unsigned w = 0; w <= 255; w++)
            check_roundtrip(k, sites[i], (uint8_t)w);

    /* worker may be NULL. */
    assert_int_equal(ae_cid_encode(k, 42, 9, cid), 0);
    assert_int_equal(ae_cid_decode(k, cid, sizeof(cid), &s, NULL), 0);
    assert_int_equal(s, 42);

    /* Site ids outside 1..4095 are refused. */
    assert_int_equal(ae_cid_encode(k, 0, 0, cid), AE_ERR_INVAL);
    assert_int_equal(ae_cid_encode(k, AE_CID_SITE_MAX + 1, 0, cid), AE_ERR_INVAL);
    assert_int_equal(ae_cid_encode(k, 0xffff, 0, cid), AE_ERR_INVAL);
    ae_cid_keys_free(k);
    ae_cid_keys_free(NULL);
}

#define NONCE_TRIALS 1000

static void test_nonce(void **state)
{
    static uint8_t cids[NONCE_TRIALS][AE_CID_LEN];
    ae_ring r;
    ae_cid_keys *k;
    (void)state;

    assert_int_equal(ae_ring_init(&r, 1000), 0);
    k = keys_of(&r);
    for (int i = 0; i < NONCE_TRIALS; i++)
        assert_int_equal(ae_cid_encode(k, 17, 3, cids[i]), 0);
    for (int i = 0; i < NONCE_TRIALS; i++)
        for (int j = i + 1; j < NONCE_TRIALS; j++)
            assert_memory_not_equal(cids[i], cids[j], AE_CID_LEN);
    ae_cid_keys_free(k);
}

#define WRONG_KEY_TRIALS 10000

static void test_wrong_key(void **state)
{
    ae_ring ra, rb;
    ae_cid_keys *ka, *kb;
    uint8_t cid[AE_CID_LEN];
    int right = 0, errors = 0;
    (void)state;

    /* Two independent rings have the same key ids, hence the same epochs, different keys. */
    assert_int_equal(ae_ring_init(&ra, 1000), 0);
    assert_int_equal(ae_ring_init(&rb, 1000), 0);
    ka = keys_of(&ra);
    kb = keys_of(&rb);
    assert_int_equal(ae_cid_keys_epoch(ka), ae_cid_keys_epoch(kb));
    for (int i = 0; i < WRONG_KEY_TRIALS; i++) {
        uint16_t site = (uint16_t)(1 + i % AE_CID_SITE_MAX), s = 0;
        uint8_t worker = (uint8_t)(i * 7), w = 0;
        int rv;

        assert_int_equal(ae_cid_encode(ka, site, worker, cid), 0);
        rv = ae_cid_decode(kb, cid, sizeof(cid), &s, &w);
        if (rv != 0) {
            assert_int_equal(rv, AE_ERR_PARSE);
            errors++;
        } else if (s == site && w == worker) {
            right++;
        }
    }
    /* Random plaintext: right server with p = 2^-24, padding check fails with p = 15/16. */
    assert_true(right <= WRONG_KEY_TRIALS / 1000);
    assert_true(errors > WRONG_KEY_TRIALS * 8 / 10);
    ae_cid_keys_free(ka);
    ae_cid_keys_free(kb);
}

static void test_malformed(void **state)
{
    static const size_t lens[] = {0, 1, 8, 15, 16, 18, 20, 21};
    ae_ring r;
    ae_cid_keys *k;
    uint8_t cid[32], bad[32];
    uint16_t s = 0;
    uint8_t w = 0;
    int epoch;
    (void)state;

    assert_int_equal(ae_ring_init(&r, 1000), 0);
    k = keys_of(&r);
    memset(cid, 0, sizeof(cid));
    assert_int_equal(ae_cid_encode(k, 5, 6, cid), 0);
    epoch = cid[0] >> 5;

    /* Wrong lengths, even with a valid CID prefix. */
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        assert_int_equal(ae_cid_decode(k, cid, lens[i], &s, &w), AE_ERR_PARSE);

    /* Length self-encoding bits other than 16. */
    for (unsigned bits = 0; bits < 32; bits++) {
        memcpy(bad, cid, AE_CID_LEN);
        bad[0] = (uint8_t)(epoch << 5 | bits);
        assert_int_equal(ae_cid_decode(k, bad, AE_CID_LEN, &s, &w),
                         bits == AE_CID_LEN - 1 ? 0 : AE_ERR_PARSE);
    }

    /* Reserved epoch 7, and every epoch that is not loaded. */
    memcpy(bad, cid, AE_CID_LEN);
    bad[0] = (uint8_t)(7 << 5 | (AE_CID_LEN - 1));
    assert_int_equal(ae_cid_decode(k, bad, AE_CID_LEN, &s, &w), AE_ERR_PARSE);
    assert_false(ae_cid_keys_has_epoch(k, 7));
    for (int e = 0; e < 7; e++) {
        if (ae_cid_keys_has_epoch(k, e))
            continue;
        bad[0] = (uint8_t)(e << 5 | (AE_CID_LEN - 1));
        assert_int_equal(ae_cid_decode(k, bad, AE_CID_LEN, &s, &w), AE_ERR_PARSE);
    }

    /* The untouched CID still decodes. */
    assert_int_equal(ae_cid_decode(k, cid, AE_CID_LEN, &s, &w), 0);
    assert_int_equal(s, 5);
    assert_int_equal(w, 6);

    /* A ring without a current key gives no keys. */
    {
        ae_ring empty;
        ae_cid_keys *none = (ae_cid_keys *)&empty;
        memset(&empty, 0, sizeof(empty));
        assert_int_equal(ae_cid_keys_from_ring(&empty, &none), AE_ERR_INVAL);
        assert_null(none);
    }
    ae_cid_keys_free(k);
}

static void test_rotation(void **state)
{
    ae_ring r;
    ae_cid_keys *k1, *k2, *k4, *k8;
    uint8_t old[AE_CID_LEN], fresh[AE_CID_LEN];
    uint16_t s = 0;
    uint8_t w = 0;
    int e1, e2, rv;
    (void)state;

    assert_int_equal(ae_ring_init(&r, 1000), 0); /* current id 1, next id 2 */
    k1 = keys_of(&r);
    e1 = ae_cid_keys_epoch(k1);
    assert_int_equal(e1, ae_cid_epoch_of(1));
    assert_true(ae_cid_keys_has_epoch(k1, ae_cid_epoch_of(2))); /* next decodes */
    assert_int_equal(ae_cid_encode(k1, 300, 4, old), 0);
    assert_int_equal(old[0] >> 5, e1);

    /* One rotation: the old CID decodes with the previous key, new CIDs use a new epoch. */
    assert_int_equal(ae_ring_rotate(&r, &r, 2000), 0);
    k2 = keys_of(&r);
    e2 = ae_cid_keys_epoch(k2);
    assert_int_not_equal(e1, e2);
    assert_int_equal(e2, ae_cid_epoch_of(2));
    assert_int_equal(ae_cid_decode(k2, old, sizeof(old), &s, &w), 0);
    assert_int_equal(s, 300);
    assert_int_equal(w, 4);
    assert_int_equal(ae_cid_encode(k2, 301, 5, fresh), 0);
    assert_int_equal(fresh[0] >> 5, e2);
    /* A site that has not synced the rotation yet decodes it with its next key. */
    assert_int_equal(ae_cid_decode(k1, fresh, sizeof(fresh), &s, &w), 0);
    assert_int_equal(s, 301);
    assert_int_equal(w, 5);

    /* Two more rotations: the old epoch is retired and refused. */
    assert_int_equal(ae_ring_rotate(&r, &r, 3000), 0);
    assert_int_equal(ae_ring_rotate(&r, &r, 4000), 0);
    k4 = keys_of(&r);
    assert_false(ae_cid_keys_has_epoch(k4, e1));
    assert_int_equal(ae_cid_decode(k4, old, sizeof(old), &s, &w), AE_ERR_PARSE);

    /* When epoch e1 comes back (key id 8, seven rotations on) its key is a different one. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(ae_ring_rotate(&r, &r, 5000 + (uint64_t)i), 0);
    k8 = keys_of(&r);
    assert_int_equal(ae_cid_keys_epoch(k8), e1);
    rv = ae_cid_decode(k8, old, sizeof(old), &s, &w);
    assert_true(rv == AE_ERR_PARSE || s != 300 || w != 4);

    ae_cid_keys_free(k1);
    ae_cid_keys_free(k2);
    ae_cid_keys_free(k4);
    ae_cid_keys_free(k8);
}

static void test_epoch_clash(void **state)
{
    ae_ring r;
    ae_cid_keys *k, *kprev;
    uint8_t cid[AE_CID_LEN];
    uint16_t s = 0;
    uint8_t w = 0;
    int n = 0;
    (void)state;

    /* A hand-made ring whose current (id 8) and previous (id 1) share epoch 1: current wins. */
    assert_int_equal(ae_ring_init(&r, 1000), 0);
    assert_int_equal(ae_ring_rotate(&r, &r, 2000), 0); /* ids 3 next, 2 current, 1 previous */
    r.keys[1].id = 8;
    k = keys_of(&r);
    assert_int_equal(ae_cid_keys_epoch(k), 1);
    for (int e = 0; e < 8; e++)
        n += ae_cid_keys_has_epoch(k, e);
    assert_int_equal(n, 2); /* epochs 3 (next) and 1 (current) */
    assert_int_equal(ae_cid_encode(k, 9, 9, cid), 0);
    assert_int_equal(ae_cid_decode(k, cid, sizeof(cid), &s, &w), 0);
    assert_int_equal(s, 9);

    /* Keys from the dropped previous key (id 1 as current) do not decode under k. */
    r.keys[1] = r.keys[2];
    r.keys[1].state = AE_RING_CURRENT;
    r.nkeys = 2;
    kprev = keys_of(&r);
    assert_int_equal(ae_cid_keys_epoch(kprev), 1);
    assert_int_equal(ae_cid_encode(kprev, 9, 9, cid), 0);
    assert_true(ae_cid_decode(k, cid, sizeof(cid), &s, &w) != 0 || s != 9 || w != 9);
    ae_cid_keys_free(k);
    ae_cid_keys_free(kprev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_nonce),
        cmocka_unit_test(test_wrong_key), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_rotation),  cmocka_unit_test(test_epoch_clash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
