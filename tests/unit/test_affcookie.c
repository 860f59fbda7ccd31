/* The sealed affinity cookie (state/affcookie.h): round trip, rotation, and every way a value
 * can be wrong (tampered, truncated, wrong key or name, garbage, non-canonical base64url). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "conf/base.h"
#include "state/affcookie.h"
#include "state/ring.h"

static ae_affcookie_keys *keys_of(const ae_ring *r)
{
    ae_affcookie_keys *k = NULL;
    assert_int_equal(ae_affcookie_keys_new(r, &k), 0);
    assert_non_null(k);
    return k;
}

static int open_str(const ae_affcookie_keys *k, const char *name, const char *v, uint64_t *id,
                    int *renew)
{
    return ae_affcookie_open(k, name, strlen(name), (const uint8_t *)v, strlen(v), id, renew);
}

static void test_round_trip(void **state)
{
    (void)state;
    ae_ring r;
    char a[AE_AFFCOOKIE_LEN + 1], b[AE_AFFCOOKIE_LEN + 1];
    uint64_t id = 0;
    int renew = -1;
    assert_int_equal(ae_ring_init(&r, 1000), 0);
    ae_affcookie_keys *k = keys_of(&r);
    assert_int_equal(ae_affcookie_seal(k, "aff", 3, 0x0123456789abcdefULL, a), 0);
    assert_int_equal(strlen(a), AE_AFFCOOKIE_LEN);
    for (size_t i = 0; i < AE_AFFCOOKIE_LEN; i++) /* cookie-octet safe: base64url only */
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", a[i]));
    assert_int_equal(open_str(k, "aff", a, &id, &renew), 0);
    assert_true(id == 0x0123456789abcdefULL);
    assert_int_equal(renew, 0);
    /* random nonces: two seals of one server differ, both open */
    assert_int_equal(ae_affcookie_seal(k, "aff", 3, 0x0123456789abcdefULL, b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(open_str(k, "aff", b, &id, NULL), 0);
    /* another site holding the same ring opens it */
    ae_affcookie_keys *k2 = keys_of(&r);
    assert_int_equal(open_str(k2, "aff", a, &id, NULL), 0);
    assert_true(id == 0x0123456789abcdefULL);
    ae_affcookie_keys_free(k2);
    ae_affcookie_keys_free(k);
    ae_affcookie_keys_free(NULL);
}

static void test_rotation(void **state)
{
    (void)state;
    ae_ring r, r1, r2, other;
    char v[AE_AFFCOOKIE_LEN + 1];
    uint64_t id;
    int renew;
    assert_int_equal(ae_ring_init(&r, 1000), 0);
    assert_int_equal(ae_ring_rotate(&r, &r1, 2000), 0);
    assert_int_equal(ae_ring_rotate(&r1, &r2, 3000), 0);
    ae_affcookie_keys *k = keys_of(&r), *k1 = keys_of(&r1), *k2 = keys_of(&r2);
    assert_int_equal(ae_affcookie_seal(k, "aff", 3, 42, v), 0);
    /* one rotation later: opened with the previous key, to be renewed */
    assert_int_equal(open_str(k1, "aff", v, &id, &renew), 0);
    assert_true(id == 42);
    assert_int_equal(renew, 1);
    /* two rotations later its key is retired */
    assert_int_equal(open_str(k2, "aff", v, &id, &renew), AE_ERR_NOTFOUND);
    /* a site running ahead (its current is our next) seals; we open with next, and renew */
    ae_affcookie_keys_free(k2);
    k2 = keys_of(&r1);
    assert_int_equal(ae_affcookie_seal(k2, "aff", 3, 7, v), 0);
    assert_int_equal(open_str(k, "aff", v, &id, &renew), 0);
    assert_true(id == 7);
    assert_int_equal(renew, 1);
    /* an unrelated ring whose key ids match: the tag does not verify */
    assert_int_equal(ae_ring_init(&other, 1000), 0);
    ae_affcookie_keys *ko = keys_of(&other);
    assert_int_equal(ae_affcookie_seal(ko, "aff", 3, 42, v), 0);
    assert_int_equal(open_str(k, "aff", v, &id, NULL), AE_ERR_PROTO);
    ae_affcookie_keys_free(ko);
    ae_affcookie_keys_free(k);
    ae_affcookie_keys_free(k1);
    ae_affcookie_keys_free(k2);
}

static void test_bad_values(void **state)
{
    (void)state;
    ae_ring r;
    char v[AE_AFFCOOKIE_LEN + 1], t[AE_AFFCOOKIE_LEN + 2];
    uint64_t id = 99;
    assert_int_equal(ae_ring_init(&r, 1000), 0);
    ae_affcookie_keys *k = keys_of(&r);
    assert_int_equal(ae_affcookie_seal(k, "aff", 3, 42, v), 0);
    /* another cookie name: the name is authenticated */
    assert_int_equal(open_str(k, "aff2", v, &id, NULL), AE_ERR_PROTO);
    /* every single-character change of the sealed part fails (header changes: parse/key) */
    int proto = 0;
    for (size_t i = 0; i < AE_AFFCOOKIE_LEN; i++) {
        memcpy(t, v, sizeof(v));
        t[i] = t[i] == 'A' ? 'B' : 'A';
        int rv = open_str(k, "aff", t, &id, NULL);
        assert_true(rv == AE_ERR_PROTO || rv == AE_ERR_PARSE || rv == AE_ERR_NOTFOUND);
        proto += rv == AE_ERR_PROTO;
    }
    assert_true(proto >= AE_AFFCOOKIE_LEN - 4);
    /* truncated, extended, empty */
    assert_int_equal(
        ae_affcookie_open(k, "aff", 3, (const uint8_t *)v, AE_AFFCOOKIE_LEN - 1, &id, NULL),
        AE_ERR_PARSE);
    memcpy(t, v, AE_AFFCOOKIE_LEN);
    t[AE_AFFCOOKIE_LEN] = 'A';
    t[AE_AFFCOOKIE_LEN + 1] = '\0';
    assert_int_equal(open_str(k, "aff", t, &id, NULL), AE_ERR_PARSE);
    assert_int_equal(open_str(k, "aff", "", &id, NULL), AE_ERR_PARSE);
    assert_int_equal(ae_affcookie_open(k, "aff", 3, NULL, 0, &id, NULL), AE_ERR_PARSE);
    /* not base64url: '+', '/', '=', space, NUL */
    const char bad[] = "+/= ";
    for (size_t i = 0; i < sizeof(bad); i++) {
        memcpy(t, v, sizeof(v));
        t[10] = bad[i];
        assert_int_equal(
            ae_affcookie_open(k, "aff", 3, (const uint8_t *)t, AE_AFFCOOKIE_LEN, &id, NULL),
            AE_ERR_PARSE);
    }
    /* the last character carries 2 unused bits: a non-zero one is another spelling, refused */
    memcpy(t, v, sizeof(v));
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t last = (size_t)(strchr(alpha, t[AE_AFFCOOKIE_LEN - 1]) - alpha);
    assert_int_equal(last & 3, 0);
    t[AE_AFFCOOKIE_LEN - 1] = alpha[last | 1];
    assert_int_equal(open_str(k, "aff", t, &id, NULL), AE_ERR_PARSE);
    /* garbage of the right length; an unknown version */
    memset(t, 'A', AE_AFFCOOKIE_LEN);
    t[AE_AFFCOOKIE_LEN] = '\0';
    assert_int_equal(open_str(k, "aff", t, &id, NULL), AE_ERR_PARSE); /* version 0 */
    memcpy(t, v, sizeof(v));
    t[1] = t[1] == 'Q' ? 'g' : 'Q'; /* the version octet's low bits */
    assert_true(open_str(k, "aff", t, &id, NULL) != 0);
    assert_true(id == 99); /* never written on failure */
    ae_affcookie_keys_free(k);
}

static void test_no_current_key(void **state)
{
    (void)state;
    ae_ring r;
    ae_affcookie_keys *k = (ae_affcookie_keys *)1;
    memset(&r, 0, sizeof(r));
    assert_int_equal(ae_affcookie_keys_new(&r, &k), AE_ERR_INVAL);
    assert_null(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_no_current_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
