/* Rendezvous hashing (proxy/core/hrw.h): the properties `balance: hash` relies on; and the
 * helpers of proxy/core/affinity.h (client-address keys, the cookie scanner). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "proxy/core/affinity.h"
#include "proxy/core/hrw.h"

#define NSRV  5
#define NKEYS 20000

static const char *const servers[NSRV] = {"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080",
                                          "[2001:db8::7]:80", "10.0.0.5:8080"};

/* Index (into ids) of the best-ranked server for key among those with alive[i]. */
static int pick(uint64_t key, const uint64_t *ids, const int *alive, int n)
{
    int best = -1;
    uint64_t bs = 0;
    for (int i = 0; i < n; i++) {
        uint64_t sc = ae_hrw_score(key, ids[i]);
        if (alive[i] && (best < 0 || sc > bs)) {
            best = i;
            bs = sc;
        }
    }
    return best;
}

static uint64_t key_of(unsigned i)
{
    char k[32];
    int n = snprintf(k, sizeof(k), "user-%u", i);
    return ae_hrw_hash(k, (size_t)n);
}

static void test_fixed_values(void **state)
{
    /* The hash is part of the deployment contract (every site and version must agree): a
     * change here moves every key. These values pin it. */
    uint64_t a = ae_hrw_hash("10.0.0.1:8080", 13);
    assert_true(a == 0xfddbac70e08be445ULL);
    assert_true(ae_hrw_score(1, 2) == 0xe85028e6b31f8e7aULL);
    assert_true(a != ae_hrw_hash("10.0.0.1:8081", 13));
    assert_true(ae_hrw_score(1, 2) == ae_hrw_score(1, 2));
    assert_true(ae_hrw_score(1, 2) != ae_hrw_score(2, 1));
}

static void test_distribution_and_moves(void **state)
{
    uint64_t ids[NSRV];
    int alive[NSRV], count[NSRV] = {0}, moved_other = 0, moved = 0, to[NSRV] = {0};
    for (int i = 0; i < NSRV; i++) {
        ids[i] = ae_hrw_hash(servers[i], strlen(servers[i]));
        alive[i] = 1;
    }
    static int first[NKEYS];
    for (unsigned k = 0; k < NKEYS; k++) {
        first[k] = pick(key_of(k), ids, alive, NSRV);
        count[first[k]]++;
    }
    /* Even spread: each server within 10 % of NKEYS / NSRV. */
    for (int i = 0; i < NSRV; i++) {
        assert_in_range(count[i], NKEYS / NSRV * 9 / 10, NKEYS / NSRV * 11 / 10);
    }
    /* Server 2 down: only its keys move, and they spread over all the others. */
    alive[2] = 0;
    for (unsigned k = 0; k < NKEYS; k++) {
        int p = pick(key_of(k), ids, alive, NSRV);
        if (p != first[k]) {
            moved++;
            to[p]++;
            if (first[k] != 2)
                moved_other++;
        }
    }
    assert_int_equal(moved_other, 0);
    assert_int_equal(moved, count[2]);
    print_message("%d keys over %d servers: %d %d %d %d %d; server 2 down: %d keys moved "
                  "(%.1f%%), 0 of the others', spread %d %d - %d %d\n",
                  NKEYS, NSRV, count[0], count[1], count[2], count[3], count[4], moved,
                  100.0 * moved / NKEYS, to[0], to[1], to[3], to[4]);
    for (int i = 0; i < NSRV; i++)
        if (i != 2)
            assert_in_range(to[i], count[2] / 4 * 7 / 10, count[2] / 4 * 13 / 10);
}

static void test_order_independent(void **state)
{
    uint64_t ids[NSRV], rev[NSRV];
    int alive[NSRV] = {1, 1, 1, 1, 1};
    for (int i = 0; i < NSRV; i++) {
        ids[i] = ae_hrw_hash(servers[i], strlen(servers[i]));
        rev[NSRV - 1 - i] = ids[i];
    }
    for (unsigned k = 0; k < 2000; k++) {
        int a = pick(key_of(k), ids, alive, NSRV), b = pick(key_of(k), rev, alive, NSRV);
        assert_true(ids[a] == rev[b]);
    }
}

static uint64_t v4key(const char *a, unsigned p4)
{
    struct sockaddr_in s = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, a, &s.sin_addr), 1);
    return ae_aff_addr_key((struct sockaddr *)&s, p4, 64);
}

static uint64_t v6key(const char *a, unsigned p6)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6};
    assert_int_equal(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
    return ae_aff_addr_key((struct sockaddr *)&s, 32, p6);
}

static void test_addr_key(void **state)
{
    (void)state;
    uint8_t four[4] = {192, 0, 2, 7}, eight[8] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1};
    /* the defaults hash exactly the address / the /64 (pinned: part of the contract) */
    assert_true(v4key("192.0.2.7", 32) == ae_hrw_hash(four, 4));
    assert_true(v6key("2001:db8:0:1::5", 64) == ae_hrw_hash(eight, 8));
    assert_true(v4key("192.0.2.7", 32) != v4key("192.0.2.8", 32));
    assert_true(v4key("192.0.2.7", 24) == v4key("192.0.2.200", 24));
    assert_true(v4key("192.0.2.7", 24) != v4key("192.0.3.7", 24));
    assert_true(v4key("192.0.2.7", 20) == v4key("192.0.15.1", 20));
    assert_true(v4key("192.0.2.7", 20) != v4key("192.0.16.1", 20));
    assert_true(v6key("2001:db8:0:1::5", 64) == v6key("2001:db8:0:1:ffff::9", 64));
    assert_true(v6key("2001:db8:0:1::5", 56) == v6key("2001:db8:0:ff::9", 56));
    assert_true(v6key("2001:db8:0:1::5", 56) != v6key("2001:db8:0:100::9", 56));
    assert_true(v6key("2001:db8::5", 128) != v6key("2001:db8::6", 128));
    /* an IPv4-mapped IPv6 address is its IPv4 address (dual-stack sockets) */
    assert_true(v6key("::ffff:192.0.2.7", 64) == v4key("192.0.2.7", 32));
    struct sockaddr_un_like {
        sa_family_t f;
        char pad[30];
    } u = {.f = AF_UNIX};
    assert_true(ae_aff_addr_key((struct sockaddr *)&u, 32, 64) == 0);
}

/* ae_cookie_find over one field: 1 and the value, or 0. */
static int find(const char *field, const char *name, char *out)
{
    const uint8_t *v;
    size_t vl;
    if (!ae_cookie_find((const uint8_t *)field, strlen(field), name, strlen(name), &v, &vl))
        return 0;
    memcpy(out, v, vl);
    out[vl] = '\0';
    return 1;
}

static void test_cookie_find(void **state)
{
    (void)state;
    char v[256];
    assert_true(find("a=1; aff=XYZ; b=2", "aff", v));
    assert_string_equal(v, "XYZ");
    assert_true(find("aff=first; aff=second", "aff", v)); /* the first wins */
    assert_string_equal(v, "first");
    assert_true(find("aff=x", "aff", v));
    assert_string_equal(v, "x");
    assert_true(find(" \taff = \"q\" ;", "aff", v)); /* OWS and quotes */
    assert_string_equal(v, "q");
    assert_true(find("aff=", "aff", v));
    assert_string_equal(v, "");
    assert_true(find("aff=\"", "aff", v)); /* a lone quote stays */
    assert_string_equal(v, "\"");
    assert_true(find("x;aff=a=b", "aff", v)); /* '=' inside a value */
    assert_string_equal(v, "a=b");
    assert_false(find("affx=1; xaff=2; Aff=3", "aff", v)); /* exact, case-sensitive names */
    assert_false(find("aff; noeq", "aff", v));
    assert_false(find("", "aff", v));
    assert_false(find(";;;;", "aff", v));
    assert_false(find("=1", "", v));
    assert_true(find(";;aff=1;;", "aff", v));
    assert_string_equal(v, "1");
    /* a long field: linear, found at the end */
    static char big[8192];
    size_t n = 0;
    for (int i = 0; i < 900; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "c%d=v; ", i);
    snprintf(big + n, sizeof(big) - n, "aff=end");
    assert_true(find(big, "aff", v));
    assert_string_equal(v, "end");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_values),      cmocka_unit_test(test_distribution_and_moves),
        cmocka_unit_test(test_order_independent), cmocka_unit_test(test_addr_key),
        cmocka_unit_test(test_cookie_find),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
