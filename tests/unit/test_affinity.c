/*
 * Upstream affinity records (proxy/core/runtime.c): the versioned blob stored in session tickets
 * for `balance: affinity` pools, its parser on good and hostile input, and the lookup of the
 * named server in a pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/runtime.h"

static const char pool_yaml[] = "upstreams:\n"
                                "  sticky:\n"
                                "    balance: affinity\n"
                                "    servers: [\"10.0.9.1:8080\", \"10.0.9.2:8080\", "
                                "\"[2001:db8::1]:443\"]\n";

static int setup(void **state)
{
    ae_conf *c = NULL;
    ae_runtime *rt = NULL;
    char err[512];

    if (ae_conf_load_string("aff.yaml", pool_yaml, strlen(pool_yaml), &c, err, sizeof(err)) != 0)
        fail_msg("config: %s", err);
    if (ae_runtime_new(c, NULL, NULL, 1, &rt, err, sizeof(err)) != 0)
        fail_msg("runtime: %s", err);
    *state = rt;
    return 0;
}

static int teardown(void **state)
{
    ae_runtime_unref(*state);
    return 0;
}

static void test_roundtrip(void **state)
{
    uint8_t buf[AE_TLS_APPDATA_MAX];
    char text[64];
    size_t n = ae_affinity_encode("10.0.9.2:8080", buf, sizeof(buf));

    assert_int_equal(n, 1 + strlen("10.0.9.2:8080"));
    assert_int_equal(buf[0], AE_AFFINITY_V1);
    assert_memory_equal(buf + 1, "10.0.9.2:8080", n - 1);
    assert_int_equal(ae_affinity_decode(buf, n, text, sizeof(text)), 0);
    assert_string_equal(text, "10.0.9.2:8080");

    n = ae_affinity_encode("[2001:db8::1]:443", buf, sizeof(buf));
    assert_int_equal(ae_affinity_decode(buf, n, text, sizeof(text)), 0);
    assert_string_equal(text, "[2001:db8::1]:443");
}

static void test_encode_limits(void **state)
{
    uint8_t buf[AE_TLS_APPDATA_MAX];
    char longtext[100];

    /* Too small an output buffer, empty, NULL, too long, or not address-like text: nothing. */
    assert_int_equal(ae_affinity_encode("10.0.9.2:8080", buf, 13), 0);
    assert_int_equal(ae_affinity_encode("10.0.9.2:8080", buf, 14), 14);
    assert_int_equal(ae_affinity_encode("", buf, sizeof(buf)), 0);
    assert_int_equal(ae_affinity_encode(NULL, buf, sizeof(buf)), 0);
    memset(longtext, '1', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';
    assert_int_equal(ae_affinity_encode(longtext, buf, sizeof(buf)), 0);
    longtext[63] = '\0';
    assert_int_equal(ae_affinity_encode(longtext, buf, sizeof(buf)), 64);
    assert_int_equal(ae_affinity_encode("10.0.9.2 :80", buf, sizeof(buf)), 0);
    assert_int_equal(ae_affinity_encode("10.0.9.2:80\n", buf, sizeof(buf)), 0);
}

/* Bad records: every one is "no record", never a crash or an out-of-bounds read (run under
 * ASan). */
static void test_bad_blobs(void **state)
{
    char text[64];
    uint8_t big[300];
    static const struct {
        const char *what;
        const char *data;
        size_t len;
    } bad[] = {
        {"empty", "", 0},
        {"version only", "\x01", 1},
        {"version 0",
         "\x00"
         "10.0.9.2:8080",
         14},
        {"version 2",
         "\x02"
         "10.0.9.2:8080",
         14},
        {"version 0xff",
         "\xff"
         "10.0.9.2:8080",
         14},
        {"embedded NUL",
         "\x01"
         "10.0.9.2\0:8080",
         15},
        {"control byte",
         "\x01"
         "10.0.9.2\n8080",
         14},
        {"space",
         "\x01"
         "10.0.9.2 8080",
         14},
        {"high byte",
         "\x01"
         "10.0.9.2\xc3\xa9",
         11},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(text, 'x', sizeof(text));
        if (ae_affinity_decode((const uint8_t *)bad[i].data, bad[i].len, text, sizeof(text)) !=
            AE_ERR_PARSE)
            fail_msg("%s: accepted", bad[i].what);
    }
    assert_int_equal(ae_affinity_decode(NULL, 5, text, sizeof(text)), AE_ERR_PARSE);
    /* Longer than any address text (64 bytes of text), valid version and characters. */
    big[0] = AE_AFFINITY_V1;
    memset(big + 1, '7', sizeof(big) - 1);
    assert_int_equal(ae_affinity_decode(big, 65, text, sizeof(text)), AE_ERR_PARSE);
    assert_int_equal(ae_affinity_decode(big, sizeof(big), text, sizeof(text)), AE_ERR_PARSE);
    assert_int_equal(ae_affinity_decode(big, 64, text, sizeof(text)), 0); /* 63 chars: fits */
    /* Output buffer too small for the text: refused, not truncated. */
    assert_int_equal(ae_affinity_decode(big, 64, text, 10), AE_ERR_PARSE);
}

static void test_find(void **state)
{
    ae_runtime *rt = *state;
    ae_pool *p = &rt->pools[0];
    uint8_t buf[AE_TLS_APPDATA_MAX];
    size_t n;

    assert_int_equal(p->conf->balance, AE_BAL_AFFINITY);
    assert_int_equal(p->nservers, 3);
    for (size_t i = 0; i < p->nservers; i++) {
        n = ae_affinity_encode(p->servers[i]->addr.text, buf, sizeof(buf));
        assert_int_equal(ae_affinity_find(p, buf, n), (int)i);
    }
    /* Unknown server, prefix of a known one, bad version, no record. */
    n = ae_affinity_encode("10.0.9.3:8080", buf, sizeof(buf));
    assert_int_equal(ae_affinity_find(p, buf, n), -1);
    n = ae_affinity_encode("10.0.9.2:808", buf, sizeof(buf));
    assert_int_equal(ae_affinity_find(p, buf, n), -1);
    n = ae_affinity_encode("10.0.9.2:8080", buf, sizeof(buf));
    buf[0] = 2;
    assert_int_equal(ae_affinity_find(p, buf, n), -1);
    assert_int_equal(ae_affinity_find(p, NULL, 0), -1);
    /* A record that is a prefix-truncated copy (length one short). */
    buf[0] = AE_AFFINITY_V1;
    assert_int_equal(ae_affinity_find(p, buf, n - 1), -1);
}

static void test_pick_is_round_robin(void **state)
{
    ae_runtime *rt = *state;
    ae_pool *p = &rt->pools[0];
    int seen[3] = {0, 0, 0};

    /* The affinity pool's own choice (new sessions, misses) is round robin over usable servers. */
    for (int i = 0; i < 6; i++) {
        int idx = ae_pool_pick(p, 0, 1000);
        assert_true(idx >= 0 && idx < 3);
        seen[idx]++;
    }
    assert_int_equal(seen[0], 2);
    assert_int_equal(seen[1], 2);
    assert_int_equal(seen[2], 2);
}

static void test_conf_enum(void **state)
{
    static const char bad[] = "upstreams:\n  u:\n    balance: sticky\n"
                              "    servers: [\"10.0.9.1:80\"]\n";
    ae_conf *c = NULL;
    char err[512];

    assert_int_equal(ae_conf_load_string("bad.yaml", bad, strlen(bad), &c, err, sizeof(err)),
                     AE_ERR_PARSE);
    assert_non_null(strstr(err, "affinity")); /* the message lists the accepted values */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_bad_blobs),
        cmocka_unit_test_setup_teardown(test_find, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_is_round_robin, setup, teardown),
        cmocka_unit_test(test_conf_enum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
