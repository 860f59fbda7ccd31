/*
 * The state machines of an HTTP/3 request (proxy/h3/states.c): every legal and illegal move of
 * the request stream and of the upstream client, the per-state entry counters, the counter of
 * illegal moves, and the metric labels.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "proxy/h3/states.h"

enum { H = AE_H3_REQ_HEADERS, F, RG, RD, RS, C };
enum { I = AE_H3_UP_IDLE, CN, HD, B, K, D };

/* want[from][to]: 1 for a legal move (the tables of states.h, written out once more). */
static const int req_want[AE_H3_REQ__COUNT][AE_H3_REQ__COUNT] = {
    /*     H  F  RG RD RS C */
    [H] = {0, 1, 0, 1, 1, 1},  /* headers */
    [F] = {0, 0, 1, 1, 1, 1},  /* forwarded */
    [RG] = {0, 0, 0, 1, 1, 1}, /* responding */
    [RD] = {0, 0, 0, 0, 1, 1}, /* responded */
    [RS] = {0, 0, 0, 0, 0, 1}, /* reset */
    [C] = {0, 0, 0, 0, 0, 0},  /* closed */
};
static const int up_want[AE_H3_UP__COUNT][AE_H3_UP__COUNT] = {
    /*     I  CN HD B  K  D */
    [I] = {0, 1, 1, 0, 0, 1},  /* idle */
    [CN] = {1, 0, 1, 0, 0, 1}, /* connecting */
    [HD] = {1, 0, 0, 1, 1, 1}, /* head */
    [B] = {0, 0, 0, 0, 1, 1},  /* body */
    [K] = {0, 0, 0, 0, 0, 1},  /* keep */
    [D] = {0, 0, 0, 0, 0, 0},  /* done */
};

static uint64_t get(ae_counters *k, int m)
{
    return atomic_load(&k->v[m]);
}

static void test_names(void **state)
{
    static const char *const req[] = {"headers",   "forwarded", "responding",
                                      "responded", "reset",     "closed"};
    static const char *const up[] = {"idle", "connecting", "head", "body", "keep", "done"};
    (void)state;
    assert_int_equal(AE_H3_REQ__COUNT, sizeof(req) / sizeof(req[0]));
    assert_int_equal(AE_H3_UP__COUNT, sizeof(up) / sizeof(up[0]));
    for (int i = 0; i < AE_H3_REQ__COUNT; i++)
        assert_string_equal(ae_h3_req_state_names[i], req[i]);
    for (int i = 0; i < AE_H3_UP__COUNT; i++)
        assert_string_equal(ae_h3_up_state_names[i], up[i]);
    assert_int_equal(AE_M_H3_REQ_STATE_LAST - AE_M_H3_REQ_STATE_B0 + 1, AE_H3_REQ__COUNT);
    assert_int_equal(AE_M_H3_UP_STATE_LAST - AE_M_H3_UP_STATE_B0 + 1, AE_H3_UP__COUNT);
}

static void test_request_moves(void **state)
{
    (void)state;
    for (int from = 0; from < AE_H3_REQ__COUNT; from++)
        for (int to = 0; to < AE_H3_REQ__COUNT; to++) {
            int ok = ae_h3_req_move_ok((ae_h3_req_state)from, (ae_h3_req_state)to);
            if (ok != req_want[from][to])
                fail_msg("request %s -> %s: %d", ae_h3_req_state_names[from],
                         ae_h3_req_state_names[to], ok);
        }
    /* out of range either way */
    assert_false(ae_h3_req_move_ok(AE_H3_REQ__COUNT, AE_H3_REQ_CLOSED));
    assert_false(ae_h3_req_move_ok(AE_H3_REQ_HEADERS, AE_H3_REQ__COUNT));
    assert_false(ae_h3_req_move_ok((ae_h3_req_state)-1, AE_H3_REQ_CLOSED));
}

static void test_upstream_moves(void **state)
{
    (void)state;
    for (int from = 0; from < AE_H3_UP__COUNT; from++)
        for (int to = 0; to < AE_H3_UP__COUNT; to++) {
            int ok = ae_h3_up_move_ok((ae_h3_up_state)from, (ae_h3_up_state)to);
            if (ok != up_want[from][to])
                fail_msg("upstream %s -> %s: %d", ae_h3_up_state_names[from],
                         ae_h3_up_state_names[to], ok);
        }
    assert_false(ae_h3_up_move_ok(AE_H3_UP__COUNT, AE_H3_UP_DONE));
    assert_false(ae_h3_up_move_ok(AE_H3_UP_IDLE, AE_H3_UP__COUNT));
}

/* Every state can be left towards the end, and the end is final. */
static void test_every_state_can_end(void **state)
{
    (void)state;
    for (int s = 0; s < AE_H3_REQ_CLOSED; s++)
        assert_true(ae_h3_req_move_ok((ae_h3_req_state)s, AE_H3_REQ_CLOSED));
    for (int s = 0; s < AE_H3_UP_DONE; s++)
        assert_true(ae_h3_up_move_ok((ae_h3_up_state)s, AE_H3_UP_DONE));
    for (int s = 0; s < AE_H3_REQ__COUNT; s++)
        assert_false(ae_h3_req_move_ok(AE_H3_REQ_CLOSED, (ae_h3_req_state)s));
    for (int s = 0; s < AE_H3_UP__COUNT; s++)
        assert_false(ae_h3_up_move_ok(AE_H3_UP_DONE, (ae_h3_up_state)s));
}

/* A request answered by the upstream over a new connection that then went to the pool. */
static void test_counters_legal(void **state)
{
    static ae_counters k;
    ae_h3_req_state rs;
    ae_h3_up_state us;
    (void)state;
    memset(&k, 0, sizeof(k));
    ae_h3_req_state_init(&k, &rs);
    ae_h3_up_state_init(&k, &us);
    assert_int_equal(rs, AE_H3_REQ_HEADERS);
    assert_int_equal(us, AE_H3_UP_IDLE);
    assert_int_equal(ae_h3_req_set_state(&k, 1, 0, &rs, AE_H3_REQ_FORWARDED), 0);
    assert_int_equal(ae_h3_up_set_state(&k, 1, 0, &us, AE_H3_UP_CONNECTING), 0);
    assert_int_equal(ae_h3_up_set_state(&k, 1, 0, &us, AE_H3_UP_IDLE), 0); /* connect failed */
    assert_int_equal(ae_h3_up_set_state(&k, 1, 0, &us, AE_H3_UP_CONNECTING), 0);
    assert_int_equal(ae_h3_up_set_state(&k, 1, 0, &us, AE_H3_UP_HEAD), 0);
    assert_int_equal(ae_h3_req_set_state(&k, 1, 0, &rs, AE_H3_REQ_RESPONDING), 0);
    assert_int_equal(ae_h3_up_set_state(&k, 1, 0, &us, AE_H3_UP_BODY), 0);
    assert_int_equal(ae_h3_req_set_state(&k, 1, 0, &rs, AE_H3_REQ_RESPONDED), 0);
    assert_int_equal(ae_h3_up_set_state(&k, 1, 0, &us, AE_H3_UP_KEEP), 0);
    assert_int_equal(ae_h3_up_set_state(&k, 1, 0, &us, AE_H3_UP_DONE), 0);
    assert_int_equal(ae_h3_req_set_state(&k, 1, 0, &rs, AE_H3_REQ_CLOSED), 0);
    assert_int_equal(rs, AE_H3_REQ_CLOSED);
    assert_int_equal(us, AE_H3_UP_DONE);

    static const uint64_t req[] = {1, 1, 1, 1, 0, 1};
    static const uint64_t up[] = {2, 2, 1, 1, 1, 1};
    for (int i = 0; i < AE_H3_REQ__COUNT; i++)
        assert_int_equal(get(&k, AE_M_H3_REQ_STATE_B0 + i), req[i]);
    for (int i = 0; i < AE_H3_UP__COUNT; i++)
        assert_int_equal(get(&k, AE_M_H3_UP_STATE_B0 + i), up[i]);
    assert_int_equal(get(&k, AE_M_H3_ILLEGAL_MOVES), 0);
}

/* An illegal move is logged, counted and made anyway (release builds; debug builds assert). */
static void test_counters_illegal(void **state)
{
    (void)state;
#ifdef NDEBUG
    static ae_counters k;
    ae_h3_req_state rs = AE_H3_REQ_CLOSED;
    ae_h3_up_state us = AE_H3_UP_DONE;
    memset(&k, 0, sizeof(k));
    assert_int_equal(ae_h3_req_set_state(&k, 7, 4, &rs, AE_H3_REQ_RESPONDING), -1);
    assert_int_equal(rs, AE_H3_REQ_RESPONDING);
    assert_int_equal(get(&k, AE_M_H3_ILLEGAL_MOVES), 1);
    assert_int_equal(get(&k, AE_M_H3_REQ_STATE_B0 + AE_H3_REQ_RESPONDING), 1);
    assert_int_equal(ae_h3_up_set_state(&k, 7, 4, &us, AE_H3_UP_HEAD), -1);
    assert_int_equal(us, AE_H3_UP_HEAD);
    assert_int_equal(get(&k, AE_M_H3_ILLEGAL_MOVES), 2);
    /* a self-move is not a move */
    assert_int_equal(ae_h3_up_set_state(&k, 7, 4, &us, AE_H3_UP_HEAD), -1);
    assert_int_equal(get(&k, AE_M_H3_ILLEGAL_MOVES), 3);
    /* out of range: logged and counted, the state stays */
    assert_int_equal(ae_h3_up_set_state(&k, 7, 4, &us, AE_H3_UP__COUNT), -1);
    assert_int_equal(us, AE_H3_UP_HEAD);
    assert_int_equal(get(&k, AE_M_H3_ILLEGAL_MOVES), 4);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),          cmocka_unit_test(test_request_moves),
        cmocka_unit_test(test_upstream_moves), cmocka_unit_test(test_every_state_can_end),
        cmocka_unit_test(test_counters_legal), cmocka_unit_test(test_counters_illegal),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
