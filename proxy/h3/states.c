/* The state machines of an HTTP/3 request (states.h): names, legal moves, set_state. */
#include "proxy/h3/states.h"

#include <assert.h>

#include "conf/base.h"

const char *const ae_h3_req_state_names[] = {
    [AE_H3_REQ_HEADERS] = "headers",       [AE_H3_REQ_FORWARDED] = "forwarded",
    [AE_H3_REQ_RESPONDING] = "responding", [AE_H3_REQ_RESPONDED] = "responded",
    [AE_H3_REQ_RESET] = "reset",           [AE_H3_REQ_CLOSED] = "closed",
};
_Static_assert(AE_ARRAY_LEN(ae_h3_req_state_names) == AE_H3_REQ__COUNT,
               "one name per request stream state");

const char *const ae_h3_up_state_names[] = {
    [AE_H3_UP_IDLE] = "idle", [AE_H3_UP_CONNECTING] = "connecting",
    [AE_H3_UP_HEAD] = "head", [AE_H3_UP_BODY] = "body",
    [AE_H3_UP_KEEP] = "keep", [AE_H3_UP_DONE] = "done",
};
_Static_assert(AE_ARRAY_LEN(ae_h3_up_state_names) == AE_H3_UP__COUNT,
               "one name per upstream client state");

#define TO(s) (1u << (s))

/* The states each state may move to. Every state but the last may end (RESET / CLOSED, DONE). */
static const unsigned req_moves[] = {
    /* end of headers: forwarded, answered by the proxy (431, 501, 425) or malformed */
    [AE_H3_REQ_HEADERS] = TO(AE_H3_REQ_FORWARDED) | TO(AE_H3_REQ_RESPONDED) | TO(AE_H3_REQ_RESET) |
                          TO(AE_H3_REQ_CLOSED),
    /* a response head with a body; one without, or an answer of the proxy (502, 503, 504) */
    [AE_H3_REQ_FORWARDED] = TO(AE_H3_REQ_RESPONDING) | TO(AE_H3_REQ_RESPONDED) |
                            TO(AE_H3_REQ_RESET) | TO(AE_H3_REQ_CLOSED),
    /* the body ended; an upstream failure after the response started resets */
    [AE_H3_REQ_RESPONDING] = TO(AE_H3_REQ_RESPONDED) | TO(AE_H3_REQ_RESET) | TO(AE_H3_REQ_CLOSED),
    /* the client may still reset its side; nghttp3 may refuse the HEADERS of an answer */
    [AE_H3_REQ_RESPONDED] = TO(AE_H3_REQ_RESET) | TO(AE_H3_REQ_CLOSED),
    [AE_H3_REQ_RESET] = TO(AE_H3_REQ_CLOSED),
    [AE_H3_REQ_CLOSED] = 0,
};
_Static_assert(AE_ARRAY_LEN(req_moves) == AE_H3_REQ__COUNT, "one row per request stream state");

static const unsigned up_moves[] = {
    /* a new connection, a pooled one, or the request ended before any */
    [AE_H3_UP_IDLE] = TO(AE_H3_UP_CONNECTING) | TO(AE_H3_UP_HEAD) | TO(AE_H3_UP_DONE),
    /* connected; failed (the next server is tried from IDLE) */
    [AE_H3_UP_CONNECTING] = TO(AE_H3_UP_HEAD) | TO(AE_H3_UP_IDLE) | TO(AE_H3_UP_DONE),
    /* a head with a body; a complete response without one; a pooled connection that failed
     * before any response byte is retried on a fresh one (IDLE) */
    [AE_H3_UP_HEAD] = TO(AE_H3_UP_BODY) | TO(AE_H3_UP_KEEP) | TO(AE_H3_UP_IDLE) | TO(AE_H3_UP_DONE),
    [AE_H3_UP_BODY] = TO(AE_H3_UP_KEEP) | TO(AE_H3_UP_DONE),
    [AE_H3_UP_KEEP] = TO(AE_H3_UP_DONE),
    [AE_H3_UP_DONE] = 0,
};
_Static_assert(AE_ARRAY_LEN(up_moves) == AE_H3_UP__COUNT, "one row per upstream client state");

int ae_h3_req_move_ok(ae_h3_req_state from, ae_h3_req_state to)
{
    return (unsigned)from < AE_H3_REQ__COUNT && (unsigned)to < AE_H3_REQ__COUNT &&
           (req_moves[from] & TO(to)) != 0;
}

int ae_h3_up_move_ok(ae_h3_up_state from, ae_h3_up_state to)
{
    return (unsigned)from < AE_H3_UP__COUNT && (unsigned)to < AE_H3_UP__COUNT &&
           (up_moves[from] & TO(to)) != 0;
}

/* An illegal move: a bug in h3.c or upstream.c (states.h). */
static void illegal(ae_counters *k, uint64_t conn, int64_t sid, const char *machine,
                    const char *from, const char *to)
{
    AE_CERROR(conn, "BUG: illegal HTTP/3 %s state move %s -> %s (stream %lld)", machine, from, to,
              (long long)sid);
    ae_count(k, AE_M_H3_ILLEGAL_MOVES, 1);
    assert(!"illegal HTTP/3 state move");
}

static const char *req_name(ae_h3_req_state st)
{
    return (unsigned)st < AE_H3_REQ__COUNT ? ae_h3_req_state_names[st] : "?";
}

static const char *up_name(ae_h3_up_state st)
{
    return (unsigned)st < AE_H3_UP__COUNT ? ae_h3_up_state_names[st] : "?";
}

int ae_h3_req_set_state(ae_counters *k, uint64_t conn, int64_t sid, ae_h3_req_state *st,
                        ae_h3_req_state to)
{
    int ok = ae_h3_req_move_ok(*st, to);
    if (!ok)
        illegal(k, conn, sid, "request", req_name(*st), req_name(to));
    if ((unsigned)to < AE_H3_REQ__COUNT) {
        *st = to;
        ae_count(k, (ae_metric)(AE_M_H3_REQ_STATE_B0 + to), 1);
    }
    return ok ? 0 : -1;
}

int ae_h3_up_set_state(ae_counters *k, uint64_t conn, int64_t sid, ae_h3_up_state *st,
                       ae_h3_up_state to)
{
    int ok = ae_h3_up_move_ok(*st, to);
    if (!ok)
        illegal(k, conn, sid, "upstream", up_name(*st), up_name(to));
    if ((unsigned)to < AE_H3_UP__COUNT) {
        *st = to;
        ae_count(k, (ae_metric)(AE_M_H3_UP_STATE_B0 + to), 1);
    }
    return ok ? 0 : -1;
}

void ae_h3_req_state_init(ae_counters *k, ae_h3_req_state *st)
{
    *st = AE_H3_REQ_HEADERS;
    ae_count(k, (ae_metric)(AE_M_H3_REQ_STATE_B0 + AE_H3_REQ_HEADERS), 1);
}

void ae_h3_up_state_init(ae_counters *k, ae_h3_up_state *st)
{
    *st = AE_H3_UP_IDLE;
    ae_count(k, (ae_metric)(AE_M_H3_UP_STATE_B0 + AE_H3_UP_IDLE), 1);
}
