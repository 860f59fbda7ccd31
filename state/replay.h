/*
 * Anti-replay window over per-sender sequence numbers (RFC 4303 §3.4.3 style, a sliding bitmap
 * of the last AE_REPLAY_WINDOW numbers). Used by the TCP hand-off (issue #10) for "AEh1"
 * frames: a frame replayed inside the timestamp window would inject the same TCP segment
 * twice, which TCP tolerates, but a replayed QUERY costs a lookup and an ANSWER, so every frame
 * is checked.
 *
 * A sender starts its numbers at its wall clock in nanoseconds, so a restarted sender's numbers
 * are above those of its previous run. Check only after the frame is authenticated.
 * Single-threaded; plain struct, zero-initialised means "nothing seen yet".
 */
#ifndef AE_STATE_REPLAY_H
#define AE_STATE_REPLAY_H

#include <stdint.h>

#define AE_REPLAY_WINDOW 1024

typedef struct {
    uint64_t top; /* highest number seen */
    uint64_t
        bits[AE_REPLAY_WINDOW / 64]; /* bit (n % WINDOW): number n, for n in (top-WINDOW, top] */
    int init;
} ae_replay;

/* 0: seq is new (now recorded); -1: seen already, or older than the window. */
int ae_replay_check(ae_replay *r, uint64_t seq);

#endif
