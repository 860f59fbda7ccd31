/*
 * Upstream pools (proxy/core/runtime.c): runtimes built from a config, the balance policies of
 * ae_pool_pick(), the tried mask, health, passive failure accounting, and server objects
 * shared with the previous runtime across a reload.
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

#define NOW 1000000ull

/* Pools: 0 "rr" (4 servers, round robin, no health check), 1 "lc" (4 servers, least_conn),
 * 2 "hc" (2 servers, round robin, TCP health check with fall 2). No listener, so no TLS. */
static const char pools_yaml[] = "upstreams:\n"
                                 "  rr:\n"
                                 "    servers: [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", "
                                 "\"127.0.0.1:4\"]\n"
                                 "  lc:\n"
                                 "    balance: least_conn\n"
                                 "    servers: [\"127.0.0.1:11\", \"127.0.0.1:12\", "
                                 "\"127.0.0.1:13\", \"127.0.0.1:14\"]\n"
                                 "  hc:\n"
                                 "    servers: [\"127.0.0.1:21\", \"127.0.0.1:22\"]\n"
                                 "    health: {tcp: on, fall: 2}\n";

static ae_runtime *runtime_from(const char *yaml, const ae_runtime *prev, uint64_t gen)
{
    ae_conf *c = NULL;
    ae_runtime *rt = NULL;
    char err[512];

    if (ae_conf_load_string("pools.yaml", yaml, strlen(yaml), &c, err, sizeof(err)) != 0)
        fail_msg("config: %s", err);
    if (ae_runtime_new(c, NULL, prev, gen, &rt, err, sizeof(err)) != 0)
        fail_msg("runtime: %s", err);
    assert_non_null(rt);
    return rt;
}

static int setup(void **state)
{
    *state = runtime_from(pools_yaml, NULL, 1);
    return 0;
}

static int teardown(void **state)
{
    ae_runtime_unref(*state);
    return 0;
}

static void set_healthy(ae_pool *p, size_t i, int up)
{
    atomic_store(&p->servers[i]->healthy, up);
}

static void set_active(ae_pool *p, size_t i, uint32_t n)
{
    atomic_store(&p->servers[i]->active, n);
}

/* Picks count times and checks the exact sequence of indexes. */
static void expect_picks(ae_pool *p, uint64_t tried, const int *want, size_t count)
{
    size_t i;

    for (i = 0; i < count; i++) {
        int got = ae_pool_pick(p, tried, NOW);
        if (got != want[i])
            fail_msg("pick %zu: got %d, want %d", i, got, want[i]);
    }
}

static void test_runtime(void **state)
{
    ae_runtime *rt = *state;

    assert_int_equal(rt->generation, 1);
    assert_int_equal(atomic_load(&rt->refcnt), 1);
    assert_null(rt->tls); /* no listener: no TLS context needed */
    assert_int_equal(rt->npools, 3);
    assert_string_equal(rt->pools[0].conf->name, "rr");
    assert_string_equal(rt->pools[1].conf->name, "lc");
    assert_string_equal(rt->pools[2].conf->name, "hc");
    assert_int_equal(rt->pools[0].nservers, 4);
    assert_int_equal(rt->pools[1].nservers, 4);
    assert_int_equal(rt->pools[2].nservers, 2);
    assert_string_equal(rt->pools[0].servers[2]->addr.text, "127.0.0.1:3");
    assert_string_equal(rt->pools[0].servers[2]->pool, "rr");
    assert_string_equal(rt->pools[1].servers[0]->addr.text, "127.0.0.1:11");
    /* servers start up, idle, with no history */
    for (size_t i = 0; i < rt->npools; i++)
        for (size_t j = 0; j < rt->pools[i].nservers; j++) {
            ae_upstream_server *s = rt->pools[i].servers[j];
            assert_int_equal(atomic_load(&s->healthy), 1);
            assert_int_equal(atomic_load(&s->active), 0);
            assert_int_equal(atomic_load(&s->passive_fails), 0);
            assert_int_equal(atomic_load(&s->refcnt), 1);
            assert_true(ae_upstream_usable(&rt->pools[i], s, NOW));
        }
    assert_ptr_equal(ae_runtime_ref(rt), rt);
    assert_int_equal(atomic_load(&rt->refcnt), 2);
    ae_runtime_unref(rt);
    assert_int_equal(atomic_load(&rt->refcnt), 1);
    ae_runtime_unref(NULL);
}

static void test_round_robin(void **state)
{
    ae_pool *p = &((ae_runtime *)*state)->pools[0];
    static const int all[] = {0, 1, 2, 3, 0, 1, 2, 3, 0};

    expect_picks(p, 0, all, AE_ARRAY_LEN(all));
}

/* Unhealthy servers are skipped and the others share the load evenly: the server after a
 * down one must not take its turns as well. */
static void test_round_robin_unhealthy(void **state)
{
    ae_pool *p = &((ae_runtime *)*state)->pools[0];
    int counts[4] = {0};
    int i;

    set_healthy(p, 1, 0);
    for (i = 0; i < 300; i++) {
        int got = ae_pool_pick(p, 0, NOW);
        assert_in_range(got, 0, 3);
        assert_int_not_equal(got, 1);
        counts[got]++;
    }
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 100);
    assert_int_equal(counts[3], 100);

    /* two adjacent servers down: the remaining two alternate */
    set_healthy(p, 2, 0);
    {
        int prev = ae_pool_pick(p, 0, NOW);
        assert_true(prev == 0 || prev == 3);
        for (i = 0; i < 10; i++) {
            int got = ae_pool_pick(p, 0, NOW);
            assert_int_equal(got, prev == 0 ? 3 : 0);
            prev = got;
        }
    }
    /* back up: all four again, in order */
    set_healthy(p, 1, 1);
    set_healthy(p, 2, 1);
    memset(counts, 0, sizeof(counts));
    for (i = 0; i < 400; i++)
        counts[ae_pool_pick(p, 0, NOW)]++;
    for (i = 0; i < 4; i++)
        assert_int_equal(counts[i], 100);
}

static void test_tried_mask(void **state)
{
    ae_runtime *rt = *state;
    ae_pool *p = &rt->pools[0];
    int i;

    /* the tried servers are never picked, whatever the cursor */
    for (i = 0; i < 8; i++) {
        int got = ae_pool_pick(p, (1u << 0) | (1u << 2), NOW);
        assert_true(got == 1 || got == 3);
    }
    for (i = 0; i < 8; i++)
        assert_int_equal(ae_pool_pick(p, 0x7, NOW), 3);
    /* bits beyond the pool are ignored */
    for (i = 0; i < 8; i++)
        assert_int_equal(ae_pool_pick(p, ~0ull & ~(1ull << 1), NOW), 1);
    /* everything tried */
    assert_int_equal(ae_pool_pick(p, 0xf, NOW), -1);
    assert_int_equal(ae_pool_pick(p, ~0ull, NOW), -1);
    /* tried + unhealthy cover the pool */
    set_healthy(p, 3, 0);
    assert_int_equal(ae_pool_pick(p, 0x7, NOW), -1);
    assert_int_equal(ae_pool_pick(p, 0x3, NOW), 2);

    /* least_conn honours the mask too, even for the least loaded server */
    p = &rt->pools[1];
    set_active(p, 0, 9);
    set_active(p, 1, 0);
    set_active(p, 2, 5);
    set_active(p, 3, 7);
    assert_int_equal(ae_pool_pick(p, 1u << 1, NOW), 2);
    assert_int_equal(ae_pool_pick(p, (1u << 1) | (1u << 2), NOW), 3);
    assert_int_equal(ae_pool_pick(p, 0xe, NOW), 0);
    assert_int_equal(ae_pool_pick(p, 0xf, NOW), -1);
}

/* Pools larger than 64 servers reuse mask bits: bit i covers servers i, i+64, ... */
static void test_tried_mask_wraps(void **state)
{
    char *yaml = malloc(65 * 32 + 64);
    size_t n;
    ae_runtime *rt;
    ae_pool *p;
    int i;

    (void)state;
    assert_non_null(yaml);
    n = (size_t)sprintf(yaml, "upstreams:\n  big:\n    servers:\n");
    for (i = 0; i < 65; i++)
        n += (size_t)sprintf(yaml + n, "      - \"127.0.0.1:%d\"\n", 1000 + i);
    rt = runtime_from(yaml, NULL, 1);
    free(yaml);
    p = &rt->pools[0];
    assert_int_equal(p->nservers, 65);
    /* everything but 0 and 64 down: bit 0 excludes both */
    for (i = 1; i < 64; i++)
        set_healthy(p, (size_t)i, 0);
    assert_int_equal(ae_pool_pick(p, 1, NOW), -1);
    i = ae_pool_pick(p, 0, NOW);
    assert_true(i == 0 || i == 64);
    ae_runtime_unref(rt);
}

static void test_least_conn(void **state)
{
    ae_pool *p = &((ae_runtime *)*state)->pools[1];
    int counts[4] = {0};
    int i;

    set_active(p, 0, 3);
    set_active(p, 1, 1);
    set_active(p, 2, 2);
    set_active(p, 3, 4);
    for (i = 0; i < 8; i++)
        assert_int_equal(ae_pool_pick(p, 0, NOW), 1);
    set_active(p, 1, 5);
    for (i = 0; i < 8; i++)
        assert_int_equal(ae_pool_pick(p, 0, NOW), 2);
    /* the least loaded server is skipped when down */
    set_healthy(p, 2, 0);
    for (i = 0; i < 8; i++)
        assert_int_equal(ae_pool_pick(p, 0, NOW), 0);
    /* ties are shared round robin */
    set_healthy(p, 2, 1);
    set_active(p, 0, 2);
    set_active(p, 1, 2);
    set_active(p, 2, 9);
    set_active(p, 3, 2);
    for (i = 0; i < 300; i++)
        counts[ae_pool_pick(p, 0, NOW)]++;
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 100);
    assert_int_equal(counts[2], 0);
    assert_int_equal(counts[3], 100);
    /* all idle: plain round robin */
    for (i = 0; i < 4; i++)
        set_active(p, (size_t)i, 0);
    memset(counts, 0, sizeof(counts));
    for (i = 0; i < 400; i++)
        counts[ae_pool_pick(p, 0, NOW)]++;
    for (i = 0; i < 4; i++)
        assert_int_equal(counts[i], 100);
    /* a server with UINT32_MAX connections is still a candidate */
    for (i = 0; i < 4; i++)
        set_active(p, (size_t)i, UINT32_MAX);
    i = ae_pool_pick(p, 0, NOW);
    assert_in_range(i, 0, 3);
}

static void test_all_down(void **state)
{
    ae_runtime *rt = *state;
    size_t i, j;

    for (i = 0; i < rt->npools; i++) {
        for (j = 0; j < rt->pools[i].nservers; j++)
            set_healthy(&rt->pools[i], j, 0);
        for (j = 0; j < 5; j++)
            assert_int_equal(ae_pool_pick(&rt->pools[i], 0, NOW), -1);
    }
    /* one back up: it is the only choice */
    set_healthy(&rt->pools[1], 3, 1);
    for (j = 0; j < 5; j++)
        assert_int_equal(ae_pool_pick(&rt->pools[1], 0, NOW), 3);
}

/* Without a health check: `fall` (3) consecutive failed connects hold a server out for 5 s. */
static void test_passive_no_check(void **state)
{
    ae_pool *p = &((ae_runtime *)*state)->pools[0];
    ae_upstream_server *s = p->servers[2];
    int i;

    ae_pool_report_connect(p, 2, 0, NOW);
    ae_pool_report_connect(p, 2, 0, NOW);
    assert_int_equal(atomic_load(&s->passive_fails), 2);
    assert_true(ae_upstream_usable(p, s, NOW));
    /* a success resets the streak */
    ae_pool_report_connect(p, 2, 1, NOW);
    assert_int_equal(atomic_load(&s->passive_fails), 0);
    ae_pool_report_connect(p, 2, 0, NOW);
    ae_pool_report_connect(p, 2, 0, NOW);
    assert_true(ae_upstream_usable(p, s, NOW));
    ae_pool_report_connect(p, 2, 0, NOW);
    assert_false(ae_upstream_usable(p, s, NOW));
    assert_false(ae_upstream_usable(p, s, NOW + 4999));
    assert_true(ae_upstream_usable(p, s, NOW + 5000));
    /* held out, but not marked unhealthy (nothing would bring it back) */
    assert_int_equal(atomic_load(&s->healthy), 1);
    assert_int_equal(atomic_load(&s->connects), 6);
    assert_int_equal(atomic_load(&s->connect_fails), 5);
    assert_int_equal(atomic_load(&s->transitions), 0);
    for (i = 0; i < 12; i++)
        assert_int_not_equal(ae_pool_pick(p, 0, NOW + 10), 2);
    /* other servers are not affected */
    assert_true(ae_upstream_usable(p, p->servers[1], NOW));
    assert_int_equal(atomic_load(&p->servers[1]->connects), 0);
}

/* With a health check: `fall` (2) failed connects take the server down until checks bring
 * it back; the transition is counted once. */
static void test_passive_with_check(void **state)
{
    ae_pool *p = &((ae_runtime *)*state)->pools[2];
    ae_upstream_server *s = p->servers[0];

    assert_int_equal(p->conf->health.kind, AE_HC_TCP);
    assert_int_equal(p->conf->health.fall, 2);
    ae_pool_report_connect(p, 0, 0, NOW);
    assert_int_equal(atomic_load(&s->healthy), 1);
    ae_pool_report_connect(p, 0, 0, NOW);
    assert_int_equal(atomic_load(&s->healthy), 0);
    assert_int_equal(atomic_load(&s->transitions), 1);
    assert_false(ae_upstream_usable(p, s, NOW + 3600000));
    assert_int_equal(atomic_load(&s->down_until_ms), 0);
    ae_pool_report_connect(p, 0, 0, NOW);
    assert_int_equal(atomic_load(&s->transitions), 1);
    assert_int_equal(ae_pool_pick(p, 0, NOW), 1);
    assert_int_equal(ae_pool_pick(p, 0, NOW), 1);
    assert_int_equal(ae_pool_pick(p, 1u << 1, NOW), -1);
}

/* A reload shares server objects with the same pool name and address, so health and load
 * carry over; new or renamed ones start fresh; the old runtime can be dropped first. */
static void test_reload_shares_servers(void **state)
{
    ae_runtime *old = *state, *rt;
    ae_upstream_server *s3, *s4;

    set_healthy(&old->pools[0], 2, 0);
    set_active(&old->pools[0], 3, 7);
    s3 = old->pools[0].servers[2];
    s4 = old->pools[0].servers[3];
    rt = runtime_from("upstreams:\n"
                      "  rr: {servers: [\"127.0.0.1:4\", \"127.0.0.1:3\", \"127.0.0.1:9\"]}\n"
                      "  other: {servers: [\"127.0.0.1:1\"]}\n",
                      old, 2);
    assert_int_equal(rt->generation, 2);
    assert_int_equal(rt->npools, 2);
    assert_ptr_equal(rt->pools[0].servers[0], s4);
    assert_ptr_equal(rt->pools[0].servers[1], s3);
    assert_int_equal(atomic_load(&s3->refcnt), 2);
    assert_int_equal(atomic_load(&s4->active), 7);
    assert_int_equal(atomic_load(&rt->pools[0].servers[2]->refcnt), 1);
    /* same address, other pool: a different object */
    assert_ptr_not_equal(rt->pools[1].servers[0], old->pools[0].servers[0]);
    assert_int_equal(atomic_load(&rt->pools[1].servers[0]->healthy), 1);
    /* the down server stays down in the new runtime: picks avoid index 1 */
    for (int i = 0; i < 6; i++)
        assert_int_not_equal(ae_pool_pick(&rt->pools[0], 0, NOW), 1);

    /* drop the old runtime first: shared servers survive it */
    ae_runtime_unref(old);
    *state = NULL;
    assert_int_equal(atomic_load(&s3->refcnt), 1);
    assert_string_equal(s3->addr.text, "127.0.0.1:3");
    ae_runtime_unref(rt);
}

/* ae_runtime_new consumes the config on failure too, and reports the TLS error. */
static void test_runtime_tls_error(void **state)
{
    static const char yaml[] = "tls: {cert: /nonexistent/c.pem, key: /nonexistent/c.key}\n"
                               "listeners:\n"
                               "  - {name: l, address: \"127.0.0.1:8443\", upstream: u}\n"
                               "upstreams:\n"
                               "  u: {servers: [\"127.0.0.1:80\"]}\n";
    ae_conf *c = NULL;
    ae_keyring *ring;
    ae_runtime *rt = (ae_runtime *)0x1;
    char err[512];

    (void)state;
    assert_int_equal(ae_conf_load_string("e.yaml", yaml, strlen(yaml), &c, err, sizeof(err)), 0);
    assert_int_equal(ae_keyring_new(&ring), 0);
    assert_int_equal(ae_runtime_new(c, ring, NULL, 1, &rt, err, sizeof(err)), AE_ERR_IO);
    assert_ptr_equal(rt, (ae_runtime *)0x1);
    assert_string_equal(err, "e.yaml:1:13: tls.cert: cannot read '/nonexistent/c.pem': "
                             "No such file or directory");
    ae_keyring_free(ring);
}

/* balance: hash: the pick follows the ranking, skips down and tried servers, is the same for any
 * list order; find_id; the per-pool affinity counters outlive a reload. */
static void test_pick_hash(void **state)
{
    (void)state;
    static const char a[] = "upstreams:\n  h:\n    balance: hash\n"
                            "    servers: [\"10.0.0.1:80\", \"10.0.0.2:80\", \"10.0.0.3:80\", "
                            "\"10.0.0.4:80\"]\n";
    static const char b[] = "upstreams:\n  h:\n    balance: hash\n"
                            "    servers: [\"10.0.0.4:80\", \"10.0.0.2:80\", \"10.0.0.1:80\", "
                            "\"10.0.0.3:80\"]\n";
    ae_runtime *ra = runtime_from(a, NULL, 1), *rb = runtime_from(b, NULL, 1);
    ae_pool *pa = &ra->pools[0], *pb = &rb->pools[0];
    for (uint64_t key = 1; key < 500; key++) {
        int first = 0, fb = 0;
        int ia = ae_pool_pick_hash(pa, key * 0x9E3779B97F4A7C15ULL, 0, NOW, &first);
        int ib = ae_pool_pick_hash(pb, key * 0x9E3779B97F4A7C15ULL, 0, NOW, &fb);
        assert_true(ia >= 0 && ib >= 0 && first && fb);
        assert_string_equal(pa->servers[ia]->addr.text, pb->servers[ib]->addr.text);
        assert_int_equal(ae_pool_find_id(pb, pa->servers[ia]->hrw_id), ib);
        /* its server down: the same next one in both lists, not first */
        set_healthy(pa, (size_t)ia, 0);
        set_healthy(pb, (size_t)ib, 0);
        int na = ae_pool_pick_hash(pa, key * 0x9E3779B97F4A7C15ULL, 0, NOW, &first);
        int nb = ae_pool_pick_hash(pb, key * 0x9E3779B97F4A7C15ULL, 0, NOW, &fb);
        assert_true(na >= 0 && na != ia && !first && !fb);
        assert_string_equal(pa->servers[na]->addr.text, pb->servers[nb]->addr.text);
        /* tried instead of down: the same next one */
        set_healthy(pa, (size_t)ia, 1);
        set_healthy(pb, (size_t)ib, 1);
        assert_int_equal(ae_pool_pick_hash(pa, key * 0x9E3779B97F4A7C15ULL, 1ull << ia, NOW, NULL),
                         na);
    }
    assert_int_equal(ae_pool_pick_hash(pa, 5, 0xf, NOW, NULL), -1);
    assert_int_equal(ae_pool_find_id(pa, 12345), -1);
    /* counters by result, carried to the next runtime of the same pool name */
    ae_pool_count_affinity(pa, AE_AFF_HIT);
    ae_pool_count_affinity(pa, AE_AFF_COOKIE_INVALID);
    ae_runtime *ra2 = runtime_from(b, ra, 2);
    assert_ptr_equal(ra2->pools[0].stats, pa->stats);
    assert_int_equal(atomic_load(&ra2->pools[0].stats->affinity[AE_AFF_HIT]), 1);
    assert_int_equal(atomic_load(&ra2->pools[0].stats->affinity[AE_AFF_COOKIE_INVALID]), 1);
    ae_runtime_unref(ra);
    assert_int_equal(atomic_load(&ra2->pools[0].stats->affinity[AE_AFF_HIT]), 1);
    ae_runtime_unref(ra2);
    ae_runtime_unref(rb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick_hash),
        cmocka_unit_test_setup_teardown(test_runtime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_robin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_robin_unhealthy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tried_mask, setup, teardown),
        cmocka_unit_test(test_tried_mask_wraps),
        cmocka_unit_test_setup_teardown(test_least_conn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_passive_no_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_passive_with_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_shares_servers, setup, teardown),
        cmocka_unit_test(test_runtime_tls_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
