/*
 * PROXY protocol encoder: exact byte layouts of v1 and v2 headers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "proxy/upstream/proxy_proto.h"

static struct sockaddr_in v4(const char *ip, uint16_t port)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    return sin;
}

static struct sockaddr_in6 v6(const char *ip, uint16_t port)
{
    struct sockaddr_in6 sin6;

    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
    return sin6;
}

#define SA(x) ((const struct sockaddr *)&(x))

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static void expect_v1(int n, const uint8_t *buf, const char *want)
{
    assert_int_equal(n, (int)strlen(want));
    assert_memory_equal(buf, want, strlen(want));
}

static void test_v1_tcp4(void **state)
{
    struct sockaddr_in s = v4("192.0.2.10", 51234), d = v4("198.51.100.1", 443);
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    memset(buf, 0xAA, sizeof(buf));
    n = ae_pp_encode(AE_PP_V1, SA(s), SA(d), "h2", "example.com", buf, sizeof(buf));
    expect_v1(n, buf, "PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n");
    assert_int_equal(buf[n], 0xAA); /* nothing written past the header */
}

static void test_v1_tcp4_max(void **state)
{
    struct sockaddr_in s = v4("255.255.255.255", 65535), d = v4("255.255.255.255", 65535);
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    n = ae_pp_encode(AE_PP_V1, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    expect_v1(n, buf, "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n");
}

static void test_v1_tcp6(void **state)
{
    struct sockaddr_in6 s = v6("2001:db8::1", 40000), d = v6("2001:db8:0:0:1::2", 8443);
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    n = ae_pp_encode(AE_PP_V1, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    expect_v1(n, buf, "PROXY TCP6 2001:db8::1 2001:db8::1:0:0:2 40000 8443\r\n");
}

static void test_v1_tcp6_longest(void **state)
{
    const char *ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    struct sockaddr_in6 s = v6(ip, 65535), d = v6(ip, 65535);
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    n = ae_pp_encode(AE_PP_V1, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    assert_int_equal(n, 104);
    expect_v1(n, buf,
              "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
}

static void test_v1_unknown(void **state)
{
    struct sockaddr_in s = v4("192.0.2.10", 1000);
    struct sockaddr_in6 d = v6("2001:db8::1", 443);
    struct sockaddr_un_like {
        sa_family_t family;
        char path[16];
    } u = {AF_UNIX, "/tmp/x"};
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    n = ae_pp_encode(AE_PP_V1, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    expect_v1(n, buf, "PROXY UNKNOWN\r\n");
    n = ae_pp_encode(AE_PP_V1, SA(u), SA(u), NULL, NULL, buf, sizeof(buf));
    expect_v1(n, buf, "PROXY UNKNOWN\r\n");
    n = ae_pp_encode(AE_PP_V1, NULL, SA(d), NULL, NULL, buf, sizeof(buf));
    expect_v1(n, buf, "PROXY UNKNOWN\r\n");
}

static void test_v1_mapped(void **state)
{
    struct sockaddr_in6 s = v6("::ffff:192.0.2.10", 5000), d = v6("::ffff:198.51.100.1", 443);
    struct sockaddr_in d4 = v4("198.51.100.1", 443);
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    n = ae_pp_encode(AE_PP_V1, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    expect_v1(n, buf, "PROXY TCP4 192.0.2.10 198.51.100.1 5000 443\r\n");
    /* one mapped side and one plain IPv4 side are the same family */
    n = ae_pp_encode(AE_PP_V1, SA(s), SA(d4), NULL, NULL, buf, sizeof(buf));
    expect_v1(n, buf, "PROXY TCP4 192.0.2.10 198.51.100.1 5000 443\r\n");
}

static void test_v1_too_small(void **state)
{
    struct sockaddr_in s = v4("192.0.2.10", 51234), d = v4("198.51.100.1", 443);
    const char *want = "PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n";
    uint8_t buf[AE_PP_MAX_LEN];

    assert_int_equal(ae_pp_encode(AE_PP_V1, SA(s), SA(d), NULL, NULL, buf, strlen(want) - 1),
                     AE_ERR_TOOBIG);
    assert_int_equal(ae_pp_encode(AE_PP_V1, SA(s), SA(d), NULL, NULL, buf, strlen(want)),
                     (int)strlen(want));
    assert_int_equal(ae_pp_encode(AE_PP_V1, SA(s), SA(d), NULL, NULL, buf, 0), AE_ERR_TOOBIG);
}

static void test_v2_tcp4(void **state)
{
    struct sockaddr_in s = v4("192.0.2.10", 0xC822), d = v4("198.51.100.1", 443);
    const uint8_t want[] = {
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, /* signature */
        0x21,                                                                   /* v2 PROXY */
        0x11,                                                                   /* TCP4 */
        0x00, 0x0C,                                                             /* length 12 */
        192,  0,    2,    10,                                                   /* src */
        198,  51,   100,  1,                                                    /* dst */
        0xC8, 0x22,                                                             /* sport */
        0x01, 0xBB,                                                             /* dport 443 */
    };
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    memset(buf, 0xAA, sizeof(buf));
    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    assert_int_equal(n, (int)sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    assert_int_equal(buf[n], 0xAA);
    /* empty strings add no TLV either */
    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), "", "", buf, sizeof(buf));
    assert_int_equal(n, (int)sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void test_v2_tcp4_tlvs(void **state)
{
    struct sockaddr_in s = v4("10.0.0.1", 1), d = v4("10.0.0.2", 2);
    const uint8_t want[] = {
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
        0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 12 + 3 + 2 + 3 + 5, /* length 25 */
        10,   0,    0,    1,    10,   0,    0,    2,                  /* src, dst */
        0x00, 0x01, 0x00, 0x02,                                       /* ports */
        0x01, 0x00, 0x02, 'h',  '2',                                  /* PP2_TYPE_ALPN */
        0x02, 0x00, 0x05, 'a',  '.',  'e',  'x',  'y',                /* PP2_TYPE_AUTHORITY */
    };
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), "h2", "a.exy", buf, sizeof(buf));
    assert_int_equal(n, (int)sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));

    /* authority only */
    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, "a.exy", buf, sizeof(buf));
    assert_int_equal(n, 16 + 12 + 8);
    assert_int_equal(buf[14], 0x00);
    assert_int_equal(buf[15], 20);
    assert_memory_equal(buf + 28,
                        "\x02\x00\x05"
                        "a.exy",
                        8);
}

static void test_v2_tcp6(void **state)
{
    struct sockaddr_in6 s = v6("2001:db8::1", 0x1234), d = v6("2001:db8::ff", 0xABCD);
    uint8_t want[16 + 36] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
                             0x55, 0x49, 0x54, 0x0A, 0x21, 0x21, 0x00, 36};
    const uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
    const uint8_t b[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff};
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    memcpy(want + 16, a, 16);
    memcpy(want + 32, b, 16);
    want[48] = 0x12;
    want[49] = 0x34;
    want[50] = 0xAB;
    want[51] = 0xCD;
    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    assert_int_equal(n, (int)sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void test_v2_tcp6_tlvs(void **state)
{
    struct sockaddr_in6 s = v6("::1", 1), d = v6("::2", 2);
    uint8_t buf[AE_PP_MAX_LEN];
    size_t i;
    int n;

    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), "http/1.1", "host", buf, sizeof(buf));
    assert_int_equal(n, 16 + 36 + 3 + 8 + 3 + 4);
    assert_memory_equal(buf, sig, 12);
    assert_int_equal(buf[12], 0x21);
    assert_int_equal(buf[13], 0x21);
    assert_int_equal(buf[14], 0x00);
    assert_int_equal(buf[15], 36 + 11 + 7);
    for (i = 0; i < 15; i++) {
        assert_int_equal(buf[16 + i], 0);
        assert_int_equal(buf[32 + i], 0);
    }
    assert_int_equal(buf[31], 1);
    assert_int_equal(buf[47], 2);
    assert_memory_equal(buf + 48, "\x00\x01\x00\x02", 4);
    assert_memory_equal(buf + 52, "\x01\x00\x08http/1.1", 11);
    assert_memory_equal(buf + 63, "\x02\x00\x04host", 7);
}

static void test_v2_mapped(void **state)
{
    struct sockaddr_in6 s = v6("::ffff:192.0.2.10", 5000), d = v6("::ffff:198.51.100.1", 443);
    const uint8_t want[] = {
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11,
        0x00, 0x0C, 192,  0,    2,    10,   198,  51,   100,  1,    0x13, 0x88, 0x01, 0xBB,
    };
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    assert_int_equal(n, (int)sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void test_v2_mixed(void **state)
{
    struct sockaddr_in s = v4("192.0.2.10", 1000);
    struct sockaddr_in6 d = v6("2001:db8::1", 443);
    const uint8_t want[] = {
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54,
        0x0A, 0x21, 0x00, 0x00, 0x05, 0x01, 0x00, 0x02, 'h',  '2',
    };
    uint8_t buf[AE_PP_MAX_LEN];
    int n;

    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), "h2", NULL, buf, sizeof(buf));
    assert_int_equal(n, (int)sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    n = ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, NULL, buf, sizeof(buf));
    assert_int_equal(n, 16);
    assert_memory_equal(buf, want, 14);
    assert_int_equal(buf[14], 0);
    assert_int_equal(buf[15], 0);
}

static void test_v2_too_small(void **state)
{
    struct sockaddr_in s = v4("10.0.0.1", 1), d = v4("10.0.0.2", 2);
    uint8_t buf[AE_PP_MAX_LEN];
    char big[600];

    assert_int_equal(ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, NULL, buf, 27), AE_ERR_TOOBIG);
    assert_int_equal(ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, NULL, buf, 28), 28);
    assert_int_equal(ae_pp_encode(AE_PP_V2, SA(s), SA(d), "h2", NULL, buf, 32), AE_ERR_TOOBIG);
    assert_int_equal(ae_pp_encode(AE_PP_V2, SA(s), SA(d), "h2", NULL, buf, 33), 33);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, big, buf, sizeof(buf)),
                     AE_ERR_TOOBIG);
}

static void test_bad_version(void **state)
{
    struct sockaddr_in s = v4("10.0.0.1", 1), d = v4("10.0.0.2", 2);
    uint8_t buf[AE_PP_MAX_LEN];

    assert_int_equal(ae_pp_encode(AE_PP_NONE, SA(s), SA(d), NULL, NULL, buf, sizeof(buf)),
                     AE_ERR_INVAL);
    assert_int_equal(ae_pp_encode(AE_PP_V2, SA(s), SA(d), NULL, NULL, NULL, 0), AE_ERR_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),      cmocka_unit_test(test_v1_tcp4_max),
        cmocka_unit_test(test_v1_tcp6),      cmocka_unit_test(test_v1_tcp6_longest),
        cmocka_unit_test(test_v1_unknown),   cmocka_unit_test(test_v1_mapped),
        cmocka_unit_test(test_v1_too_small), cmocka_unit_test(test_v2_tcp4),
        cmocka_unit_test(test_v2_tcp4_tlvs), cmocka_unit_test(test_v2_tcp6),
        cmocka_unit_test(test_v2_tcp6_tlvs), cmocka_unit_test(test_v2_mapped),
        cmocka_unit_test(test_v2_mixed),     cmocka_unit_test(test_v2_too_small),
        cmocka_unit_test(test_bad_version),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
