/*
 * Per-source limits (proxy/core/srclimit.c): prefixes, rate limiters, open connections, the
 * per-worker share, eviction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "proxy/core/srclimit.h"

#define S(x) ((uint64_t)(x)*1000000000ull)

static struct sockaddr_storage v4(const char *a)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    memset(&ss, 0, sizeof(ss));
    in->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, a, &in->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *a)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 *in = (struct sockaddr_in6 *)&ss;
    memset(&ss, 0, sizeof(ss));
    in->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, a, &in->sin6_addr), 1);
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static ae_srclimit *mk(ae_srclimit_conf c)
{
    ae_srclimit *t;
    if (c.v4_prefix == 0)
        c.v4_prefix = 32;
    if (c.v6_prefix == 0)
        c.v6_prefix = 64;
    if (c.table_size == 0)
        c.table_size = 1024;
    if (c.nworkers == 0)
        c.nworkers = 1;
    assert_int_equal(ae_srclimit_new(&c, NULL, &t), 0);
    return t;
}

/* Burst of one second's worth, then one per interval. */
static void test_tcp_rate(void **state)
{
    (void)state;
    ae_srclimit *t = mk((ae_srclimit_conf){.tcp_rate = 10});
    struct sockaddr_storage a = v4("192.0.2.1"), b = v4("192.0.2.2");
    uint64_t now = S(100);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ae_srclimit_tcp_open(t, SA(a), now), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), now), AE_SRC_TCP_RATE);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(b), now), AE_SRC_OK); /* another source */
    /* 100 ms later one more is allowed, not two */
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), now + S(1) / 10), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), now + S(1) / 10), AE_SRC_TCP_RATE);
    /* after a quiet second, a whole burst again */
    for (int i = 0; i < 10; i++)
        assert_int_equal(ae_srclimit_tcp_open(t, SA(a), now + S(3)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), now + S(3)), AE_SRC_TCP_RATE);
    ae_srclimit_free(t);
}

static void test_tcp_concurrent(void **state)
{
    (void)state;
    ae_srclimit *t = mk((ae_srclimit_conf){.tcp_concurrent = 3});
    struct sockaddr_storage a = v4("198.51.100.7");
    for (int i = 0; i < 3; i++)
        assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_TCP_CONCURRENT);
    ae_srclimit_tcp_close(t, SA(a));
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_TCP_CONCURRENT);
    /* more closes than opens never go below zero */
    for (int i = 0; i < 10; i++)
        ae_srclimit_tcp_close(t, SA(a));
    for (int i = 0; i < 3; i++)
        assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(2)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(2)), AE_SRC_TCP_CONCURRENT);
    ae_srclimit_free(t);
}

/* Sources aggregate to the prefix: a /24 shares one budget, the next /24 has its own. */
static void test_prefixes(void **state)
{
    (void)state;
    ae_srclimit *t = mk((ae_srclimit_conf){.tcp_rate = 4, .v4_prefix = 24, .v6_prefix = 56});
    char buf[64];
    for (int i = 0; i < 4; i++) {
        snprintf(buf, sizeof(buf), "203.0.113.%d", 10 + i);
        struct sockaddr_storage a = v4(buf);
        assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_OK);
    }
    struct sockaddr_storage x = v4("203.0.113.200"), y = v4("203.0.114.1");
    assert_int_equal(ae_srclimit_tcp_open(t, SA(x), S(1)), AE_SRC_TCP_RATE);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(y), S(1)), AE_SRC_OK);
    /* IPv6 /56: ::/56 of 2001:db8:0:100:: and 2001:db8:0:1ff:: are the same */
    for (int i = 0; i < 4; i++) {
        struct sockaddr_storage a = v6(i % 2 ? "2001:db8:0:1ff::1" : "2001:db8:0:100::9");
        assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_OK);
    }
    struct sockaddr_storage z = v6("2001:db8:0:180::1"), o = v6("2001:db8:0:200::1");
    assert_int_equal(ae_srclimit_tcp_open(t, SA(z), S(1)), AE_SRC_TCP_RATE);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(o), S(1)), AE_SRC_OK);
    /* an odd prefix: /20 cuts inside the third octet */
    ae_srclimit_free(t);
    t = mk((ae_srclimit_conf){.tcp_rate = 1, .v4_prefix = 20});
    struct sockaddr_storage p = v4("10.1.16.1"), q = v4("10.1.31.255"), r = v4("10.1.32.0");
    assert_int_equal(ae_srclimit_tcp_open(t, SA(p), S(1)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(q), S(1)), AE_SRC_TCP_RATE);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(r), S(1)), AE_SRC_OK);
    ae_srclimit_free(t);
}

static void test_quic_and_h3(void **state)
{
    (void)state;
    ae_srclimit *t =
        mk((ae_srclimit_conf){.quic_retry_rate = 2, .quic_drop_rate = 4, .h3_rate = 3});
    struct sockaddr_storage a = v4("192.0.2.9");
    assert_int_equal(ae_srclimit_quic_initial(t, SA(a), S(5)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_quic_initial(t, SA(a), S(5)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_quic_initial(t, SA(a), S(5)), AE_SRC_QUIC_RETRY);
    assert_int_equal(ae_srclimit_quic_initial(t, SA(a), S(5)), AE_SRC_QUIC_RETRY);
    assert_int_equal(ae_srclimit_quic_initial(t, SA(a), S(5)), AE_SRC_QUIC_DROP);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ae_srclimit_h3_request(t, SA(a), S(5)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_h3_request(t, SA(a), S(5)), AE_SRC_H3_RATE);
    assert_string_equal(ae_src_verdict_names[AE_SRC_H3_RATE], "h3_rate");
    ae_srclimit_free(t);
}

/* Each of 4 workers allows a quarter (rounded up); set_limits keeps the sources. */
static void test_share_and_reload(void **state)
{
    (void)state;
    ae_srclimit_conf c = {
        .tcp_concurrent = 10, .nworkers = 4, .v4_prefix = 32, .v6_prefix = 64, .table_size = 1024};
    ae_srclimit *t = mk(c);
    struct sockaddr_storage a = v4("192.0.2.50");
    for (int i = 0; i < 3; i++)
        assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_TCP_CONCURRENT);
    c.tcp_concurrent = 20;
    assert_true(ae_srclimit_same_shape(t, &c));
    ae_srclimit_set_limits(t, &c); /* 5 per worker: 3 open already */
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_OK);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(1)), AE_SRC_TCP_CONCURRENT);
    c.v4_prefix = 24;
    assert_false(ae_srclimit_same_shape(t, &c));
    assert_false(ae_srclimit_any(&(ae_srclimit_conf){.v4_prefix = 32}));
    ae_srclimit_free(t);
}

/* A full table forgets the least recently seen source, one without open connections first. */
static void test_eviction(void **state)
{
    (void)state;
    _Atomic uint64_t ev = 0;
    ae_srclimit_conf c = {
        .tcp_concurrent = 1, .v4_prefix = 32, .v6_prefix = 64, .table_size = 8, .nworkers = 1};
    ae_srclimit *t;
    assert_int_equal(ae_srclimit_new(&c, &ev, &t), 0);
    struct sockaddr_storage held = v4("192.0.2.1");
    assert_int_equal(ae_srclimit_tcp_open(t, SA(held), S(1)), AE_SRC_OK);
    char buf[64];
    /* 1000 one-off sources through an 8-entry table: the held one is never the victim */
    for (int i = 0; i < 1000; i++) {
        snprintf(buf, sizeof(buf), "10.0.%d.%d", i / 250, i % 250 + 1);
        struct sockaddr_storage a = v4(buf);
        assert_int_equal(ae_srclimit_tcp_open(t, SA(a), S(2) + (uint64_t)i), AE_SRC_OK);
        ae_srclimit_tcp_close(t, SA(a));
    }
    assert_true(ev >= 990);
    assert_int_equal(ae_srclimit_tcp_open(t, SA(held), S(3)), AE_SRC_TCP_CONCURRENT);
    ae_srclimit_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_rate),         cmocka_unit_test(test_tcp_concurrent),
        cmocka_unit_test(test_prefixes),         cmocka_unit_test(test_quic_and_h3),
        cmocka_unit_test(test_share_and_reload), cmocka_unit_test(test_eviction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
