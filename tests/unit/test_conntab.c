/*
 * Unit tests for the TCP hand-off connection table (proxy/handoff/conntab.h): keys from
 * sockaddrs (IPv4, IPv6, v4-mapped), insert / lookup / remove with the grace period, sweep,
 * tuple reuse after a close, and many connections.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "conf/base.h"
#include "proxy/handoff/conntab.h"

static struct sockaddr_storage sa4(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    memset(&ss, 0, sizeof(ss));
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    inet_pton(AF_INET, ip, &in->sin_addr);
    return ss;
}

static struct sockaddr_storage sa6(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    memset(&ss, 0, sizeof(ss));
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &in6->sin6_addr);
    return ss;
}

#define SA(x) ((struct sockaddr *)&(x))

static void test_keys(void **state)
{
    (void)state;
    ae_flowkey a, b;
    char buf[128];
    struct sockaddr_storage c4 = sa4("10.0.0.2", 5555), l4 = sa4("192.0.2.10", 443);
    struct sockaddr_storage cm = sa6("::ffff:10.0.0.2", 5555), lm = sa6("::ffff:192.0.2.10", 443);
    struct sockaddr_storage c6 = sa6("2001:db8::2", 5555), l6 = sa6("2001:db8::10", 443);
    assert_int_equal(ae_flowkey_from_sa(&a, SA(c4), SA(l4)), 0);
    assert_int_equal(ae_flowkey_from_sa(&b, SA(cm), SA(lm)), 0);
    assert_memory_equal(&a, &b, sizeof(a)); /* a dual-stack socket's mapped address = IPv4 */
    assert_string_equal(ae_flowkey_format(&a, buf, sizeof(buf)), "10.0.0.2:5555>192.0.2.10:443");
    assert_int_equal(ae_flowkey_from_sa(&a, SA(c6), SA(l6)), 0);
    assert_string_equal(ae_flowkey_format(&a, buf, sizeof(buf)),
                        "[2001:db8::2]:5555>[2001:db8::10]:443");
    /* mixed families, port 0, unknown family */
    assert_int_equal(ae_flowkey_from_sa(&a, SA(c4), SA(l6)), AE_ERR_INVAL);
    struct sockaddr_storage z = sa4("10.0.0.2", 0);
    assert_int_equal(ae_flowkey_from_sa(&a, SA(z), SA(l4)), AE_ERR_INVAL);
    struct sockaddr_storage u;
    memset(&u, 0, sizeof(u));
    u.ss_family = AF_UNIX;
    assert_int_equal(ae_flowkey_from_sa(&a, SA(u), SA(l4)), AE_ERR_INVAL);
}

static void test_lifecycle(void **state)
{
    (void)state;
    ae_conntab *t;
    ae_flowkey k, other;
    ae_conntab_info info;
    struct sockaddr_storage c = sa4("10.0.0.2", 5555), l = sa4("192.0.2.10", 443);
    struct sockaddr_storage c2 = sa4("10.0.0.2", 5556);
    assert_int_equal(ae_conntab_new(&t), 0);
    ae_flowkey_from_sa(&k, SA(c), SA(l));
    ae_flowkey_from_sa(&other, SA(c2), SA(l));
    assert_int_equal(ae_conntab_lookup(t, &k, 1000, NULL), 0);
    ae_conntab_entry *e = ae_conntab_insert(t, SA(c), SA(l), 3, 77, 1000);
    assert_non_null(e);
    assert_int_equal(ae_conntab_lookup(t, &k, 1500, &info), 1);
    assert_int_equal(info.worker, 3);
    assert_int_equal(info.conn_id, 77);
    assert_int_equal(info.closed, 0);
    assert_int_equal(info.age_ms, 500);
    assert_int_equal(ae_conntab_lookup(t, &other, 1500, NULL), 0);
    assert_int_equal(ae_conntab_sweep(t, 2000), 1);
    /* closed: still found during the grace period, then gone, then freed by the sweep */
    ae_conntab_remove(t, e, 3000);
    assert_int_equal(ae_conntab_lookup(t, &k, 3000 + AE_CONNTAB_GRACE_MS, &info), 1);
    assert_int_equal(info.closed, 1);
    assert_int_equal(ae_conntab_lookup(t, &k, 3001 + AE_CONNTAB_GRACE_MS, NULL), 0);
    assert_int_equal(ae_conntab_sweep(t, 3000), 0);
    assert_int_equal(ae_conntab_lookup(t, &k, 3000, NULL), 1); /* the sweep kept it */
    assert_int_equal(ae_conntab_sweep(t, 3001 + AE_CONNTAB_GRACE_MS), 0);
    assert_int_equal(ae_conntab_lookup(t, &k, 3000, NULL), 0); /* freed */
    ae_conntab_remove(t, NULL, 0);
    ae_conntab_remove(NULL, NULL, 0);
    ae_conntab_free(t);
    ae_conntab_free(NULL);
}

static void test_reuse(void **state)
{
    (void)state;
    ae_conntab *t;
    ae_flowkey k;
    ae_conntab_info info;
    struct sockaddr_storage c = sa4("10.0.0.2", 5555), l = sa4("192.0.2.10", 443);
    assert_int_equal(ae_conntab_new(&t), 0);
    ae_flowkey_from_sa(&k, SA(c), SA(l));
    ae_conntab_entry *e1 = ae_conntab_insert(t, SA(c), SA(l), 0, 1, 100);
    ae_conntab_remove(t, e1, 200);
    ae_conntab_entry *e2 = ae_conntab_insert(t, SA(c), SA(l), 1, 2, 300);
    assert_non_null(e2);
    assert_int_equal(ae_conntab_lookup(t, &k, 400, &info), 1);
    assert_int_equal(info.conn_id, 2); /* the open one */
    assert_int_equal(info.closed, 0);
    ae_conntab_free(t); /* frees open and closed entries (LSan checks) */
}

static void test_many(void **state)
{
    (void)state;
    ae_conntab *t;
    enum { N = 100000 };
    static ae_conntab_entry *es[N];
    struct sockaddr_storage l = sa6("2001:db8::10", 443);
    assert_int_equal(ae_conntab_new(&t), 0);
    for (int i = 0; i < N; i++) {
        char ip[64];
        snprintf(ip, sizeof(ip), "2001:db8::%x:%x", i >> 12, i & 0xfff);
        struct sockaddr_storage c = sa6(ip, (uint16_t)(1024 + i % 60000));
        es[i] = ae_conntab_insert(t, SA(c), SA(l), i % 4, (uint64_t)i, 1);
        assert_non_null(es[i]);
    }
    assert_int_equal(ae_conntab_sweep(t, 2), N);
    for (int i = 0; i < N; i += 7) {
        char ip[64];
        ae_flowkey k;
        ae_conntab_info info;
        snprintf(ip, sizeof(ip), "2001:db8::%x:%x", i >> 12, i & 0xfff);
        struct sockaddr_storage c = sa6(ip, (uint16_t)(1024 + i % 60000));
        ae_flowkey_from_sa(&k, SA(c), SA(l));
        assert_int_equal(ae_conntab_lookup(t, &k, 2, &info), 1);
        assert_int_equal(info.conn_id, (uint64_t)i);
    }
    for (int i = 0; i < N; i += 2)
        ae_conntab_remove(t, es[i], 10);
    assert_int_equal(ae_conntab_sweep(t, 11 + AE_CONNTAB_GRACE_MS), N / 2);
    ae_conntab_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
