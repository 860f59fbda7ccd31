/*
 * Unit tests for the health -> route state machine (proxy/site/anycast.c, ae_anycast_fsm_*):
 * rise/fall hysteresis (a flapping check does not flap the route), drain withdraws at once,
 * require_redis, actions only on transitions, failed commands retried with backoff, obsolete
 * commands cancelled.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/site/anycast.h"

static const ae_anycast_input healthy = {.pools_ok = 1, .listeners_ok = 1, .redis_ok = 1};
static const ae_anycast_input no_pool = {.pools_ok = 0, .listeners_ok = 1, .redis_ok = 1};

/* Feeds one sample and applies whatever command it asks for as an immediate success. Returns
 * the action started (NONE when nothing). */
static ae_anycast_action step(ae_anycast_fsm *f, const ae_anycast_input *in, uint64_t now)
{
    ae_anycast_fsm_sample(f, in);
    ae_anycast_action act = ae_anycast_fsm_next(f, now);
    if (act != AE_ANYCAST_ACT_NONE)
        ae_anycast_fsm_done(f, AE_ANYCAST_OK, now);
    return act;
}

static void test_starts_withdrawn_announces_after_rise(void **state)
{
    ae_anycast_fsm f;
    (void)state;
    ae_anycast_fsm_init(&f, 3, 2, 0);
    assert_int_equal(f.want, 0);
    assert_int_equal(f.have, 0);
    /* Nothing to do at start: withdrawn is assumed, no command. */
    assert_int_equal(ae_anycast_fsm_next(&f, 0), AE_ANYCAST_ACT_NONE);
    assert_int_equal(step(&f, &healthy, 1), AE_ANYCAST_ACT_NONE);
    assert_int_equal(step(&f, &healthy, 2), AE_ANYCAST_ACT_NONE);
    assert_int_equal(step(&f, &healthy, 3), AE_ANYCAST_ACT_ANNOUNCE);
    assert_int_equal(f.have, 1);
    /* Steady healthy: no further action. */
    for (int i = 0; i < 100; i++)
        assert_int_equal(step(&f, &healthy, 4 + (uint64_t)i), AE_ANYCAST_ACT_NONE);
    /* fall = 2 unhealthy: withdraw exactly once. */
    assert_int_equal(step(&f, &no_pool, 200), AE_ANYCAST_ACT_NONE);
    assert_int_equal(step(&f, &no_pool, 201), AE_ANYCAST_ACT_WITHDRAW);
    for (int i = 0; i < 10; i++)
        assert_int_equal(step(&f, &no_pool, 202 + (uint64_t)i), AE_ANYCAST_ACT_NONE);
    assert_int_equal(f.have, 0);
}

static void test_flapping_does_not_flap(void **state)
{
    ae_anycast_fsm f;
    int actions = 0;
    (void)state;
    ae_anycast_fsm_init(&f, 3, 3, 0);
    for (int i = 0; i < 3; i++)
        step(&f, &healthy, (uint64_t)i);
    assert_int_equal(f.have, 1);
    /* Alternating, and two bad in a row out of every three: never 3 consecutive failures. */
    for (int i = 0; i < 300; i++) {
        const ae_anycast_input *in = (i % 3 == 2) ? &healthy : &no_pool;
        actions += step(&f, in, 10 + (uint64_t)i) != AE_ANYCAST_ACT_NONE;
    }
    assert_int_equal(actions, 0);
    assert_int_equal(f.have, 1);
    /* Withdrawn, the same flapping never reaches 3 consecutive healthy samples either. */
    for (int i = 0; i < 3; i++)
        step(&f, &no_pool, 400 + (uint64_t)i);
    assert_int_equal(f.have, 0);
    for (int i = 0; i < 300; i++) {
        const ae_anycast_input *in = (i % 3 == 2) ? &no_pool : &healthy;
        actions += step(&f, in, 500 + (uint64_t)i) != AE_ANYCAST_ACT_NONE;
    }
    assert_int_equal(actions, 0);
    assert_int_equal(f.have, 0);
}

static void test_drain_withdraws_at_once(void **state)
{
    ae_anycast_fsm f;
    ae_anycast_input drain = healthy;
    (void)state;
    drain.draining = 1;
    ae_anycast_fsm_init(&f, 2, 5, 0);
    step(&f, &healthy, 0);
    assert_int_equal(step(&f, &healthy, 1), AE_ANYCAST_ACT_ANNOUNCE);
    /* fall = 5, but a drain is no flap: one sample withdraws. */
    assert_true(ae_anycast_fsm_sample(&f, &drain));
    assert_int_equal(f.want, 0);
    assert_int_equal(ae_anycast_fsm_next(&f, 2), AE_ANYCAST_ACT_WITHDRAW);
    ae_anycast_fsm_done(&f, AE_ANYCAST_OK, 2);
    /* Staying drained: nothing more. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(step(&f, &drain, 3 + (uint64_t)i), AE_ANYCAST_ACT_NONE);
    /* Undrain: announce only after rise (2) healthy samples. */
    assert_int_equal(step(&f, &healthy, 20), AE_ANYCAST_ACT_NONE);
    assert_int_equal(step(&f, &healthy, 21), AE_ANYCAST_ACT_ANNOUNCE);
    /* A drain while still rising (not yet announced) announces nothing. */
    step(&f, &drain, 30);
    assert_int_equal(f.have, 0);
    assert_int_equal(step(&f, &healthy, 31), AE_ANYCAST_ACT_NONE);
    assert_int_equal(step(&f, &drain, 32), AE_ANYCAST_ACT_NONE);
    assert_int_equal(step(&f, &healthy, 33), AE_ANYCAST_ACT_NONE);
    assert_int_equal(f.ok_streak, 1);
}

static void test_require_redis(void **state)
{
    ae_anycast_fsm f, g;
    ae_anycast_input no_redis = healthy;
    (void)state;
    no_redis.redis_ok = 0;
    ae_anycast_fsm_init(&f, 1, 1, 1);
    ae_anycast_fsm_init(&g, 1, 1, 0);
    assert_false(ae_anycast_fsm_healthy(&f, &no_redis));
    assert_true(ae_anycast_fsm_healthy(&g, &no_redis));
    assert_int_equal(step(&f, &no_redis, 0), AE_ANYCAST_ACT_NONE);
    assert_int_equal(step(&g, &no_redis, 0), AE_ANYCAST_ACT_ANNOUNCE);
    assert_int_equal(step(&f, &healthy, 1), AE_ANYCAST_ACT_ANNOUNCE);
    assert_int_equal(step(&f, &no_redis, 2), AE_ANYCAST_ACT_WITHDRAW);
    assert_int_equal(step(&g, &no_redis, 2), AE_ANYCAST_ACT_NONE);
    /* Listeners closed or a pool without a healthy server are unhealthy in both. */
    ae_anycast_input closed = healthy;
    closed.listeners_ok = 0;
    assert_false(ae_anycast_fsm_healthy(&g, &closed));
    assert_false(ae_anycast_fsm_healthy(&g, &no_pool));
}

static void test_failed_command_retried_with_backoff(void **state)
{
    ae_anycast_fsm f;
    (void)state;
    assert_int_equal(ae_anycast_backoff_ms(1), 1000);
    assert_int_equal(ae_anycast_backoff_ms(2), 2000);
    assert_int_equal(ae_anycast_backoff_ms(3), 4000);
    assert_int_equal(ae_anycast_backoff_ms(30), 60000);
    ae_anycast_fsm_init(&f, 1, 1, 0);
    ae_anycast_fsm_sample(&f, &healthy);
    assert_int_equal(ae_anycast_fsm_next(&f, 1000), AE_ANYCAST_ACT_ANNOUNCE);
    /* Running: nothing else starts. */
    assert_int_equal(ae_anycast_fsm_next(&f, 1000), AE_ANYCAST_ACT_NONE);
    ae_anycast_fsm_done(&f, AE_ANYCAST_FAILED, 2000); /* e.g. killed at its timeout */
    assert_int_equal(f.have, 0);
    assert_int_equal(f.failures, 1);
    ae_anycast_fsm_sample(&f, &healthy);
    assert_int_equal(ae_anycast_fsm_next(&f, 2500), AE_ANYCAST_ACT_NONE); /* backoff 1 s */
    assert_int_equal(ae_anycast_fsm_next(&f, 3000), AE_ANYCAST_ACT_ANNOUNCE);
    ae_anycast_fsm_done(&f, AE_ANYCAST_FAILED, 3000);
    assert_int_equal(ae_anycast_fsm_next(&f, 4999), AE_ANYCAST_ACT_NONE); /* backoff 2 s */
    assert_int_equal(ae_anycast_fsm_next(&f, 5000), AE_ANYCAST_ACT_ANNOUNCE);
    ae_anycast_fsm_done(&f, AE_ANYCAST_OK, 5000);
    assert_int_equal(f.have, 1);
    assert_int_equal(f.failures, 0);
    assert_int_equal(ae_anycast_fsm_next(&f, 6000), AE_ANYCAST_ACT_NONE);

    /* A failed announce followed by a withdraw decision: the withdraw goes out at once (no
     * backoff for a new decision) even though have == want, since the failed attempt may
     * have half-applied. */
    ae_anycast_fsm_init(&f, 1, 1, 0);
    ae_anycast_fsm_sample(&f, &healthy);
    assert_int_equal(ae_anycast_fsm_next(&f, 0), AE_ANYCAST_ACT_ANNOUNCE);
    ae_anycast_fsm_done(&f, AE_ANYCAST_FAILED, 0);
    ae_anycast_fsm_sample(&f, &no_pool);
    assert_int_equal(f.want, 0);
    assert_int_equal(f.have, 0);
    assert_int_equal(ae_anycast_fsm_next(&f, 1), AE_ANYCAST_ACT_WITHDRAW);
    ae_anycast_fsm_done(&f, AE_ANYCAST_OK, 1);
    assert_int_equal(f.dirty, 0);
    assert_int_equal(ae_anycast_fsm_next(&f, 2), AE_ANYCAST_ACT_NONE);
}

static void test_obsolete_command_cancelled(void **state)
{
    ae_anycast_fsm f;
    ae_anycast_input drain = healthy;
    (void)state;
    drain.draining = 1;
    ae_anycast_fsm_init(&f, 1, 3, 0);
    ae_anycast_fsm_sample(&f, &healthy);
    assert_int_equal(ae_anycast_fsm_next(&f, 0), AE_ANYCAST_ACT_ANNOUNCE);
    assert_false(ae_anycast_fsm_obsolete(&f));
    /* Drain while the announce hangs: it is obsolete; once it is gone the withdraw runs. */
    ae_anycast_fsm_sample(&f, &drain);
    assert_true(ae_anycast_fsm_obsolete(&f));
    assert_int_equal(ae_anycast_fsm_next(&f, 1), AE_ANYCAST_ACT_NONE);
    ae_anycast_fsm_done(&f, AE_ANYCAST_CANCELLED, 2);
    assert_int_equal(f.failures, 0);
    assert_int_equal(ae_anycast_fsm_next(&f, 2), AE_ANYCAST_ACT_WITHDRAW);
    ae_anycast_fsm_done(&f, AE_ANYCAST_OK, 3);
    assert_int_equal(f.have, 0);
    assert_int_equal(f.dirty, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starts_withdrawn_announces_after_rise),
        cmocka_unit_test(test_flapping_does_not_flap),
        cmocka_unit_test(test_drain_withdraws_at_once),
        cmocka_unit_test(test_require_redis),
        cmocka_unit_test(test_failed_command_retried_with_backoff),
        cmocka_unit_test(test_obsolete_command_cancelled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
