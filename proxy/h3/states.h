/*
 * The two state machines of an HTTP/3 request (proxy/h3/states.c; pure, unit-tested): the
 * request stream the client sees (h3.c) and the upstream HTTP/1.1 client that serves it
 * (upstream.c). Each has one state enum, one names table (the metric labels of
 * anyedge_h3_stream_state_total{machine,state}) and one table of legal moves.
 *
 * A request stream owns exactly one upstream client (embedded in it, no allocation of its own).
 * The machines move on their own, with three ties: the client leaves IDLE only for a FORWARDED
 * request; a request RESET or CLOSED, or answered by the proxy itself, has its client DONE; the
 * request becomes RESPONDING / RESPONDED from the client's response head (HEAD -> BODY, KEEP,
 * DONE).
 *
 * Moves go through ae_h3_req_set_state() / ae_h3_up_set_state() only: each entry into a state
 * is counted (per worker, AE_M_H3_REQ_STATE_B0 + state, AE_M_H3_UP_STATE_B0 + state). A move
 * the table does not allow is a bug: it is logged as an error with the connection and stream
 * id, counted in AE_M_H3_ILLEGAL_MOVES, asserted in debug builds (!NDEBUG), and made anyway
 * (the state stays the truth about what the code did).
 */
#ifndef AE_H3_STATES_H
#define AE_H3_STATES_H

#include <stdint.h>

#include "proxy/core/metrics.h"

/* The request stream (qstream, h3.c). */
typedef enum {
    AE_H3_REQ_HEADERS = 0, /* the request header section is being received: fields collected
                            * and checked; nothing went upstream; the upstream client is IDLE */
    AE_H3_REQ_FORWARDED,   /* the request was accepted and handed to the upstream client; no
                            * response yet; request body bytes may still arrive */
    AE_H3_REQ_RESPONDING,  /* the response HEADERS were submitted to nghttp3; body bytes are
                            * queued (dn_*) as the upstream client delivers them */
    AE_H3_REQ_RESPONDED,   /* the whole response is queued (an upstream response that ended,
                            * or an answer made by the proxy); nghttp3 sends it, the client
                            * acknowledges it; nothing more is read from the upstream */
    AE_H3_REQ_RESET,       /* the stream was reset (by us: malformed request, upstream failure
                            * after the response started; or by the client); the upstream
                            * client is DONE; waiting for the stream to close */
    AE_H3_REQ_CLOSED,      /* detached: logged, off the connection's list, upstream client
                            * DONE; freed by the worker's gc; nothing moves any more */
    AE_H3_REQ__COUNT
} ae_h3_req_state;

/* The upstream HTTP/1.1 client of a request stream (h3uclient, upstream.c). */
typedef enum {
    AE_H3_UP_IDLE = 0,   /* no connection: before the first attempt, or between two (a failed
                          * connect, a retry); request bytes may wait in the queue */
    AE_H3_UP_CONNECTING, /* a socket with a non-blocking connect in progress (connect timer
                          * armed); counted in the server's active */
    AE_H3_UP_HEAD,       /* connected (new or pooled): request bytes are written as they come,
                          * response bytes are read until the response head is complete */
    AE_H3_UP_BODY,       /* the response head was submitted; body bytes are decoded into the
                          * stream's queue (not read while AE_H3_DOWN_LIMIT bytes are unacked) */
    AE_H3_UP_KEEP,       /* the response is complete and the connection may be reused: the
                          * pump round that completed it gives it to the keep-alive pool (or
                          * closes it) before it returns */
    AE_H3_UP_DONE,       /* the exchange is over (complete, failed or abandoned): no socket,
                          * no watcher, no queued request byte; final */
    AE_H3_UP__COUNT
} ae_h3_up_state;

_Static_assert(AE_M_H3_REQ_STATE_LAST - AE_M_H3_REQ_STATE_B0 + 1 == AE_H3_REQ__COUNT,
               "one entry counter per request stream state");
_Static_assert(AE_M_H3_UP_STATE_LAST - AE_M_H3_UP_STATE_B0 + 1 == AE_H3_UP__COUNT,
               "one entry counter per upstream client state");

/* State names (metric labels): "headers", "forwarded", ...; "idle", "connecting", ... */
extern const char *const ae_h3_req_state_names[AE_H3_REQ__COUNT];
extern const char *const ae_h3_up_state_names[AE_H3_UP__COUNT];

/* 1 when the machine may move from `from` to `to` (the tables in states.c), else 0 (also for
 * values out of range). Staying in a state is not a move. */
int ae_h3_req_move_ok(ae_h3_req_state from, ae_h3_req_state to);
int ae_h3_up_move_ok(ae_h3_up_state from, ae_h3_up_state to);

/* Moves *st to `to` and counts the entry in k. conn, sid: for the error log of an illegal
 * move. Returns 0, or -1 for an illegal move (logged, counted, made anyway). */
int ae_h3_req_set_state(ae_counters *k, uint64_t conn, int64_t sid, ae_h3_req_state *st,
                        ae_h3_req_state to);
int ae_h3_up_set_state(ae_counters *k, uint64_t conn, int64_t sid, ae_h3_up_state *st,
                       ae_h3_up_state to);
/* Counts the entry into the first state of a new machine (HEADERS, IDLE). */
void ae_h3_req_state_init(ae_counters *k, ae_h3_req_state *st);
void ae_h3_up_state_init(ae_counters *k, ae_h3_up_state *st);

#endif
