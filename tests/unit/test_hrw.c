/* Rendezvous hashing (proxy/core/hrw.h): the properties `balance: hash` relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_values),
        cmocka_unit_test(test_distribution_and_moves),
        cmocka_unit_test(test_order_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
