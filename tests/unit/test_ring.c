/*
 * Unit tests for the shared key ring: state transitions, encoding, sealing, malformed input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/base.h"
#include "state/ring.h"

static const uint8_t kek1[AE_RING_KEK_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t kek2[AE_RING_KEK_LEN] = {9, 8, 7, 6, 5, 4, 3, 2, 1};

static void test_init_rotate(void **state)
{
    ae_ring r, r2;
    (void)state;

    assert_int_equal(ae_ring_init(&r, 1000), 0);
    assert_int_equal(r.nkeys, 2);
    assert_int_equal(r.generation, 1);
    assert_int_equal(r.keys[0].state, AE_RING_NEXT);
    assert_int_equal(r.keys[0].id, 2);
    assert_int_equal(r.keys[1].state, AE_RING_CURRENT);
    assert_int_equal(r.keys[1].id, 1);
    assert_memory_not_equal(r.keys[0].secret, r.keys[1].secret, AE_RING_SECRET_LEN);
    assert_ptr_equal(ae_ring_find(&r, AE_RING_CURRENT), &r.keys[1]);
    assert_null(ae_ring_find(&r, AE_RING_PREVIOUS));

    assert_int_equal(ae_ring_rotate(&r, &r2, 2000), 0);
    assert_int_equal(r2.nkeys, 3);
    assert_int_equal(r2.generation, 2);
    assert_int_equal(r2.rotated_ms, 2000);
    assert_int_equal(r2.keys[0].id, 3);
    assert_int_equal(r2.keys[0].state, AE_RING_NEXT);
    assert_int_equal(r2.keys[1].id, 2);
    assert_int_equal(r2.keys[1].state, AE_RING_CURRENT);
    assert_memory_equal(r2.keys[1].secret, r.keys[0].secret, AE_RING_SECRET_LEN);
    assert_int_equal(r2.keys[2].id, 1);
    assert_int_equal(r2.keys[2].state, AE_RING_PREVIOUS);

    /* In place, twice more: key 1 is dropped (retired), ids keep increasing. */
    assert_int_equal(ae_ring_rotate(&r2, &r2, 3000), 0);
    assert_int_equal(ae_ring_rotate(&r2, &r2, 4000), 0);
    assert_int_equal(r2.nkeys, 3);
    assert_int_equal(r2.generation, 4);
    assert_int_equal(r2.keys[0].id, 5);
    assert_int_equal(r2.keys[1].id, 4);
    assert_int_equal(r2.keys[2].id, 3);
    for (size_t i = 0; i < r2.nkeys; i++)
        assert_int_equal(r2.keys[i].state, (int)i);
}

static void roundtrip(const uint8_t *kek)
{
    ae_ring r, back;
    char *enc = NULL, err[256];
    size_t len = 0;

    assert_int_equal(ae_ring_init(&r, 1795635712000ull), 0);
    assert_int_equal(ae_ring_rotate(&r, &r, 1795635713000ull), 0);
    assert_int_equal(ae_ring_encode(&r, kek, &enc, &len), 0);
    assert_int_equal(strlen(enc), len);
    assert_non_null(strstr(enc, kek != NULL ? " sealed=" : " secret="));
    assert_int_equal(ae_ring_decode(enc, len, kek, &back, err, sizeof(err)), 0);
    assert_int_equal(back.generation, r.generation);
    assert_int_equal(back.rotated_ms, r.rotated_ms);
    assert_int_equal(back.nkeys, r.nkeys);
    for (size_t i = 0; i < r.nkeys; i++) {
        assert_int_equal(back.keys[i].id, r.keys[i].id);
        assert_int_equal(back.keys[i].state, r.keys[i].state);
        assert_int_equal(back.keys[i].created_ms, r.keys[i].created_ms);
        assert_memory_equal(back.keys[i].secret, r.keys[i].secret, AE_RING_SECRET_LEN);
    }
    free(enc);
}

static void test_roundtrip_plain(void **state)
{
    (void)state;
    roundtrip(NULL);
}

static void test_roundtrip_sealed(void **state)
{
    ae_ring r, back;
    char *enc = NULL, err[256];
    size_t len = 0;
    (void)state;

    roundtrip(kek1);
    assert_int_equal(ae_ring_init(&r, 5), 0);
    assert_int_equal(ae_ring_encode(&r, kek1, &enc, &len), 0);
    /* The secret does not appear in the sealed encoding. */
    {
        char hex[2 * AE_RING_SECRET_LEN + 1];
        for (size_t i = 0; i < AE_RING_SECRET_LEN; i++)
            snprintf(hex + 2 * i, 3, "%02x", r.keys[1].secret[i]);
        assert_null(strstr(enc, hex));
    }
    /* The ring ends with its MAC line. Wrong KEK, no KEK. */
    assert_non_null(strstr(enc, "\nmac "));
    assert_int_equal(enc[len - 1], '\n');
    assert_int_equal(ae_ring_decode(enc, len, kek2, &back, err, sizeof(err)), AE_ERR_PARSE);
    assert_non_null(strstr(err, "MAC does not verify"));
    assert_int_equal(ae_ring_decode(enc, len, NULL, &back, err, sizeof(err)), AE_ERR_PARSE);
    assert_non_null(strstr(err, "no state.kek_file"));
    /* Tampered: flip one hex digit of the first sealed value. */
    {
        char *p = strstr(enc, "sealed=") + 7 + 30;
        *p = *p == '0' ? '1' : '0';
        assert_int_equal(ae_ring_decode(enc, len, kek1, &back, err, sizeof(err)), AE_ERR_PARSE);
        assert_non_null(strstr(err, "MAC does not verify"));
    }
    free(enc);
    /* A sealed secret moved to another key id does not open (AAD binds the id). */
    assert_int_equal(ae_ring_encode(&r, kek1, &enc, &len), 0);
    {
        char *p = strstr(enc, "key id=2 ");
        assert_non_null(p);
        p[7] = '7';
        assert_int_equal(ae_ring_decode(enc, len, kek1, &back, err, sizeof(err)), AE_ERR_PARSE);
    }
    free(enc);
    /* Plain ring while a KEK is configured: refused (it has no MAC either). */
    assert_int_equal(ae_ring_encode(&r, NULL, &enc, &len), 0);
    assert_int_equal(ae_ring_decode(enc, len, kek1, &back, err, sizeof(err)), AE_ERR_PARSE);
    assert_non_null(strstr(err, "no ring MAC"));
    free(enc);
}

/* Issue #11: with a KEK nothing in the ring can be changed; without one, a key line cannot be
 * relabelled by repeating a field. */
static void test_authenticated(void **state)
{
    ae_ring r, back;
    char *enc = NULL, err[256], buf[AE_RING_ENCODED_MAX + 64];
    size_t len = 0;
    (void)state;

    assert_int_equal(ae_ring_init(&r, 5), 0);
    assert_int_equal(ae_ring_rotate(&r, &r, 6), 0);
    assert_int_equal(ae_ring_encode(&r, kek1, &enc, &len), 0);
    assert_int_equal(ae_ring_decode(enc, len, kek1, &back, err, sizeof(err)), 0);
    /* generation raised, a state swapped, a time changed, a field appended, the MAC cut */
    static const char *const from[] = {"generation 2", "state=next", "created_ms=6",
                                       " sealed=", "\nmac "};
    static const char *const to[] = {"generation 9", "state=previous", "created_ms=7",
                                     " id=99 sealed=", "\nmax "};
    for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++) {
        const char *p = strstr(enc, from[i]);
        assert_non_null(p);
        size_t pre = (size_t)(p - enc);
        int n = snprintf(buf, sizeof(buf), "%.*s%s%s", (int)pre, enc, to[i], p + strlen(from[i]));
        assert_true(n > 0);
        if (ae_ring_decode(buf, (size_t)n, kek1, &back, err, sizeof(err)) != AE_ERR_PARSE)
            fail_msg("change %zu accepted", i);
        assert_true(strstr(err, "MAC") != NULL);
    }
    /* a trailing newline more is still the same ring */
    memcpy(buf, enc, len);
    buf[len] = '\n';
    assert_int_equal(ae_ring_decode(buf, len + 1, kek1, &back, err, sizeof(err)), 0);
    free(enc);

    /* no KEK: repeated fields are refused (key 2's secret read as key 99's) */
    assert_int_equal(ae_ring_encode(&r, NULL, &enc, &len), 0);
    assert_null(strstr(enc, "\nmac "));
    {
        const char *p = strstr(enc, " secret=");
        int n = snprintf(buf, sizeof(buf), "%.*s id=99%s", (int)(p - enc), enc, p);
        assert_int_equal(ae_ring_decode(buf, (size_t)n, NULL, &back, err, sizeof(err)),
                         AE_ERR_PARSE);
        assert_non_null(strstr(err, "given twice"));
        p = strstr(enc, "\nrotated_ms");
        n = snprintf(buf, sizeof(buf), "%.*s\ngeneration 5%s", (int)(p - enc), enc, p);
        assert_int_equal(ae_ring_decode(buf, (size_t)n, NULL, &back, err, sizeof(err)),
                         AE_ERR_PARSE);
        assert_non_null(strstr(err, "generation given twice"));
    }
    free(enc);
}

#define SECRET_A "secret=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static void test_forward_compat(void **state)
{
    const char *doc = "anyedge-ring 1\n"
                      "generation 9\n"
                      "comment written by a newer version\n"
                      "rotated_ms 77\n"
                      "key id=3 state=current created_ms=70 kind=all " SECRET_A " future=x\n"
                      "key id=4 created_ms=71 state=next " SECRET_A "\n"
                      "quic_extra 1 2 3\n";
    ae_ring r;
    char err[256];
    (void)state;

    assert_int_equal(ae_ring_decode(doc, strlen(doc), NULL, &r, err, sizeof(err)), 0);
    assert_int_equal(r.generation, 9);
    assert_int_equal(r.rotated_ms, 77);
    assert_int_equal(r.nkeys, 2);
    /* Canonical order regardless of the order in the document. */
    assert_int_equal(r.keys[0].id, 4);
    assert_int_equal(r.keys[0].state, AE_RING_NEXT);
    assert_int_equal(r.keys[1].id, 3);
    assert_int_equal(r.keys[1].secret[0], 0x00);
    assert_int_equal(r.keys[1].secret[1], 0x11);
    assert_int_equal(r.keys[1].secret[31], 0xff);
}

static void test_bad_input(void **state)
{
    static const struct {
        const char *doc;
        const char *msg;
    } cases[] = {
        {"", "empty"},
        {"hello world\n", "not an anyedge key ring"},
        {"anyedge-ring 2\ngeneration 1\nrotated_ms 1\n", "format 2 is not supported"},
        {"anyedge-ring 1\nrotated_ms 1\nkey id=1 state=current created_ms=1 " SECRET_A "\n",
         "lacks generation"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\n", "no current key"},
        {"anyedge-ring 1\ngeneration x\nrotated_ms 1\n", "bad generation"},
        {"anyedge-ring 1\ngeneration 0\nrotated_ms 1\n", "bad generation"},
        {"anyedge-ring 1\ngeneration 99999999999999999999999\nrotated_ms 1\n", "bad generation"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=1 state=current created_ms=1\n",
         "needs id, state"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=1 state=current created_ms=1 "
         "secret=abc\n",
         "bad secret"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=1 state=current created_ms=1 "
         "secret=zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
         "bad secret"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=1 state=bogus created_ms=1 " SECRET_A
         "\n",
         "unknown key state"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=0 state=current created_ms=1 " SECRET_A
         "\n",
         "bad key id"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=1 state=current created_ms=1 " SECRET_A
         "\nkey id=1 state=next created_ms=1 " SECRET_A "\n",
         "duplicate key id"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=1 state=current created_ms=1 " SECRET_A
         "\nkey id=2 state=current created_ms=1 " SECRET_A "\n",
         "two keys in state current"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=1 state=current created_ms=1 noeq "
         "\n",
         "without '='"},
        {"anyedge-ring 1\ngeneration 1\nrotated_ms 1\nkey id=1 state=current\x01 created_ms=1\n",
         "control"},
    };
    ae_ring r;
    char err[256];
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        int rv = ae_ring_decode(cases[i].doc, strlen(cases[i].doc), NULL, &r, err, sizeof(err));
        if (rv != AE_ERR_PARSE || strstr(err, cases[i].msg) == NULL)
            fail_msg("case %zu: rv %d, err '%s', want '%s'", i, rv, err, cases[i].msg);
    }
    /* Four keys: too many. */
    {
        char doc[1024];
        snprintf(doc, sizeof(doc),
                 "anyedge-ring 1\ngeneration 1\nrotated_ms 1\n"
                 "key id=1 state=current created_ms=1 %s\nkey id=2 state=next created_ms=1 %s\n"
                 "key id=3 state=previous created_ms=1 %s\nkey id=4 state=previous "
                 "created_ms=1 %s\n",
                 SECRET_A, SECRET_A, SECRET_A, SECRET_A);
        assert_int_equal(ae_ring_decode(doc, strlen(doc), NULL, &r, err, sizeof(err)),
                         AE_ERR_PARSE);
        assert_non_null(strstr(err, "more than 3 keys"));
    }
    /* Oversized and binary garbage. */
    {
        size_t n = AE_RING_ENCODED_MAX + 1;
        char *big = malloc(n);
        assert_non_null(big);
        memset(big, 'a', n);
        assert_int_equal(ae_ring_decode(big, n, NULL, &r, err, sizeof(err)), AE_ERR_PARSE);
        for (size_t i = 0; i < n; i++)
            big[i] = (char)(i * 131 + 7);
        assert_int_equal(ae_ring_decode(big, 600, NULL, &r, err, sizeof(err)), AE_ERR_PARSE);
        free(big);
    }
}

static void test_kek_file(void **state)
{
    char dir[] = "/tmp/ae-ring-XXXXXX", path[64], err[256];
    uint8_t kek[AE_RING_KEK_LEN];
    FILE *f;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/kek", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", f);
    fclose(f);
    chmod(path, 0644);
    assert_int_equal(ae_ring_load_kek(path, kek, err, sizeof(err)), AE_ERR_INVAL);
    assert_non_null(strstr(err, "chmod 600"));
    chmod(path, 0600);
    assert_int_equal(ae_ring_load_kek(path, kek, err, sizeof(err)), 0);
    assert_int_equal(kek[0], 0);
    assert_int_equal(kek[31], 0x1f);
    f = fopen(path, "w");
    fputs("too short", f);
    fclose(f);
    assert_int_equal(ae_ring_load_kek(path, kek, err, sizeof(err)), AE_ERR_PARSE);
    unlink(path);
    assert_int_equal(ae_ring_load_kek(path, kek, err, sizeof(err)), AE_ERR_IO);
    rmdir(dir);
}

static void test_derive(void **state)
{
    ae_ring r;
    uint8_t a[32], b[32], c[32];
    (void)state;

    assert_int_equal(ae_ring_init(&r, 1), 0);
    assert_int_equal(ae_ring_derive(&r.keys[1], "tls-ticket aes", a, sizeof(a)), 0);
    assert_int_equal(ae_ring_derive(&r.keys[1], "tls-ticket aes", b, sizeof(b)), 0);
    assert_memory_equal(a, b, sizeof(a));
    assert_int_equal(ae_ring_derive(&r.keys[1], "tls-ticket hmac", c, sizeof(c)), 0);
    assert_memory_not_equal(a, c, sizeof(a));
    assert_int_equal(ae_ring_derive(&r.keys[0], "tls-ticket aes", c, sizeof(c)), 0);
    assert_memory_not_equal(a, c, sizeof(a));
    assert_memory_not_equal(a, r.keys[1].secret, sizeof(a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rotate),      cmocka_unit_test(test_roundtrip_plain),
        cmocka_unit_test(test_roundtrip_sealed), cmocka_unit_test(test_forward_compat),
        cmocka_unit_test(test_bad_input),        cmocka_unit_test(test_kek_file),
        cmocka_unit_test(test_derive),           cmocka_unit_test(test_authenticated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
