/*
 * TLS context construction from a config: ae_tls_ctx_new() and ae_tls_check_conf() error
 * messages point at the config position (FILE:LINE:COL) of the tls.cert / tls.key that failed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "tls/tls.h"
#include "unit_tls.h"

typedef struct {
    char dir[256];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    ut_tmpdir(f->dir, sizeof(f->dir));
    ut_make_cert(f->dir, "ec.pem", "ec.key", "ec.test", 0);
    ut_make_cert(f->dir, "ec2.pem", "ec2.key", "ec2.test", 0);
    ut_make_cert(f->dir, "rsa.pem", "rsa.key", "rsa.test", 1);
    ut_write_file(f->dir, "garbage.pem", "this is not PEM\n");
    ut_write_file(f->dir, "empty.pem", "");
    ut_write_file(f->dir, "truncated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    ut_rmdir(f->dir);
    free(f);
    return 0;
}

/* Config with the default certificate at line 2 col 9 (cert) and line 3 col 8 (key), and an
 * SNI certificate whose cert is at line 5 col 13 and key at line 6 col 12. */
static ae_conf *conf_with(fixture *f, const char *cert, const char *key, const char *cert2,
                          const char *key2)
{
    char yaml[1024];

    snprintf(yaml, sizeof(yaml),
             "tls:\n"
             "  cert: %s\n"
             "  key: %s\n"
             "  certs:\n"
             "    - cert: %s\n"
             "      key: %s\n"
             "listeners:\n"
             "  - {name: l, address: \"127.0.0.1:8443\", upstream: u}\n"
             "upstreams:\n"
             "  u: {servers: [\"127.0.0.1:80\"]}\n",
             cert, key, cert2, key2);
    return ut_load_conf(f->dir, yaml);
}

/* Copies want into out with every '@' replaced by dir. */
static void expand_dir(char *out, size_t len, const char *want, const char *dir)
{
    size_t n = 0;

    for (; *want != '\0'; want++) {
        const char *add = *want == '@' ? dir : want;
        size_t l = *want == '@' ? strlen(dir) : 1;

        assert_true(n + l < len);
        memcpy(out + n, add, l);
        n += l;
    }
    out[n] = '\0';
}

/* Runs both entry points on the config and checks the return value and the message: exact
 * when want_exact, else want is a prefix; '@' in want stands for the test directory. */
static void expect_fail(fixture *f, const char *cert, const char *key, const char *cert2,
                        const char *key2, int want_rv, const char *want, int want_exact)
{
    ae_conf *c = conf_with(f, cert, key, cert2, key2);
    ae_keyring *ring;
    ae_tls_ctx *t = (ae_tls_ctx *)0x1;
    char err[1024], full[1024];
    int pass, rv;

    expand_dir(full, sizeof(full), want, f->dir);
    assert_int_equal(ae_keyring_new(&ring), 0);
    for (pass = 0; pass < 2; pass++) {
        memset(err, 0, sizeof(err));
        rv = pass == 0 ? ae_tls_ctx_new(c, ring, &t, err, sizeof(err))
                       : ae_tls_check_conf(c, err, sizeof(err));
        if (rv != want_rv)
            fail_msg("pass %d: rv %d, want %d (%s)", pass, rv, want_rv, err);
        if (pass == 0)
            assert_ptr_equal(t, (ae_tls_ctx *)0x1); /* *out untouched on failure */
        if (want_exact ? strcmp(err, full) != 0 : strncmp(err, full, strlen(full)) != 0)
            fail_msg("pass %d: message\n  got:  %s\n  want: %s%s", pass, err, full,
                     want_exact ? "" : "...");
    }
    ae_keyring_free(ring);
    ae_conf_free(c);
}

static void test_ok(void **state)
{
    fixture *f = *state;
    ae_conf *c = conf_with(f, "ec.pem", "ec.key", "rsa.pem", "rsa.key");
    ae_keyring *ring;
    ae_tls_ctx *t = NULL;
    char err[256] = "untouched";

    assert_int_equal(ae_keyring_new(&ring), 0);
    assert_int_equal(ae_tls_ctx_new(c, ring, &t, err, sizeof(err)), 0);
    assert_non_null(t);
    assert_string_equal(err, "untouched");
    ae_tls_ctx_free(t);
    ae_tls_ctx_free(NULL);
    assert_int_equal(ae_tls_check_conf(c, err, sizeof(err)), 0);
    assert_string_equal(err, "untouched");
    ae_keyring_free(ring);
    ae_conf_free(c);
}

static void test_missing_files(void **state)
{
    fixture *f = *state;

    expect_fail(f, "nope.pem", "ec.key", "rsa.pem", "rsa.key", AE_ERR_IO,
                "@/edge.yaml:2:9: tls.cert: cannot read '@/nope.pem': No such file or directory",
                1);
    expect_fail(f, "ec.pem", "nope.key", "rsa.pem", "rsa.key", AE_ERR_IO,
                "@/edge.yaml:3:8: tls.key: cannot read '@/nope.key': No such file or directory", 1);
    expect_fail(f, "ec.pem", "ec.key", "nope.pem", "rsa.key", AE_ERR_IO,
                "@/edge.yaml:5:13: tls.certs[0].cert: cannot read '@/nope.pem': "
                "No such file or directory",
                1);
    expect_fail(f, "ec.pem", "ec.key", "rsa.pem", "nope.key", AE_ERR_IO,
                "@/edge.yaml:6:12: tls.certs[0].key: cannot read '@/nope.key': "
                "No such file or directory",
                1);
    /* absolute paths are used as written */
    expect_fail(f, "/nonexistent/x.pem", "ec.key", "rsa.pem", "rsa.key", AE_ERR_IO,
                "@/edge.yaml:2:9: tls.cert: cannot read '/nonexistent/x.pem': "
                "No such file or directory",
                1);
}

static void test_bad_pem(void **state)
{
    fixture *f = *state;

    expect_fail(f, "garbage.pem", "ec.key", "rsa.pem", "rsa.key", AE_ERR_TLS,
                "@/edge.yaml:2:9: tls.cert: no valid certificate in '@/garbage.pem': error:", 0);
    expect_fail(f, "empty.pem", "ec.key", "rsa.pem", "rsa.key", AE_ERR_TLS,
                "@/edge.yaml:2:9: tls.cert: no valid certificate in '@/empty.pem': error:", 0);
    expect_fail(f, "truncated.pem", "ec.key", "rsa.pem", "rsa.key", AE_ERR_TLS,
                "@/edge.yaml:2:9: tls.cert: no valid certificate in '@/truncated.pem': error:", 0);
    /* a private key where the certificate should be */
    expect_fail(f, "ec.key", "ec.key", "rsa.pem", "rsa.key", AE_ERR_TLS,
                "@/edge.yaml:2:9: tls.cert: no valid certificate in '@/ec.key': error:", 0);
    expect_fail(f, "ec.pem", "garbage.pem", "rsa.pem", "rsa.key", AE_ERR_TLS,
                "@/edge.yaml:3:8: tls.key: no valid private key in '@/garbage.pem': error:", 0);
    /* a certificate where the key should be */
    expect_fail(f, "ec.pem", "ec.pem", "rsa.pem", "rsa.key", AE_ERR_TLS,
                "@/edge.yaml:3:8: tls.key: no valid private key in '@/ec.pem': error:", 0);
    expect_fail(f, "ec.pem", "ec.key", "rsa.pem", "empty.pem", AE_ERR_TLS,
                "@/edge.yaml:6:12: tls.certs[0].key: no valid private key in '@/empty.pem': "
                "error:",
                0);
}

static void test_key_mismatch(void **state)
{
    fixture *f = *state;

    /* same key type, different key */
    expect_fail(f, "ec.pem", "ec2.key", "rsa.pem", "rsa.key", AE_ERR_TLS,
                "@/edge.yaml:3:8: tls.key: private key '@/ec2.key' does not match certificate "
                "'@/ec.pem'",
                1);
    /* different key type */
    expect_fail(f, "ec.pem", "rsa.key", "rsa.pem", "rsa.key", AE_ERR_TLS,
                "@/edge.yaml:3:8: tls.key: private key '@/rsa.key' does not match certificate "
                "'@/ec.pem'",
                1);
    expect_fail(f, "ec.pem", "ec.key", "ec2.pem", "ec.key", AE_ERR_TLS,
                "@/edge.yaml:6:12: tls.certs[0].key: private key '@/ec.key' does not match "
                "certificate '@/ec2.pem'",
                1);
}

/* The message is cut to errlen and always terminated. */
static void test_errlen(void **state)
{
    fixture *f = *state;
    ae_conf *c = conf_with(f, "nope.pem", "ec.key", "rsa.pem", "rsa.key");
    char err[16];

    memset(err, 'x', sizeof(err));
    assert_int_equal(ae_tls_check_conf(c, err, 10), AE_ERR_IO);
    assert_int_equal(strlen(err), 9);
    assert_memory_equal(err, f->dir, 9);
    assert_int_equal(err[10], 'x');
    ae_conf_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_pem, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errlen, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
