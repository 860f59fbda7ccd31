/* Sliding anti-replay window (see state/replay.h). */
#include "state/replay.h"

#include <string.h>

#define NWORDS (AE_REPLAY_WINDOW / 64)

static int test_bit(const ae_replay *r, uint64_t n)
{
    uint64_t i = n % AE_REPLAY_WINDOW;
    return (int)(r->bits[i / 64] >> (i % 64) & 1);
}

static void set_bit(ae_replay *r, uint64_t n)
{
    uint64_t i = n % AE_REPLAY_WINDOW;
    r->bits[i / 64] |= (uint64_t)1 << (i % 64);
}

static void clear_bit(ae_replay *r, uint64_t n)
{
    uint64_t i = n % AE_REPLAY_WINDOW;
    r->bits[i / 64] &= ~((uint64_t)1 << (i % 64));
}

int ae_replay_check(ae_replay *r, uint64_t seq)
{
    if (!r->init) {
        memset(r->bits, 0, sizeof(r->bits));
        r->init = 1;
        r->top = seq;
        set_bit(r, seq);
        return 0;
    }
    if (seq > r->top) {
        uint64_t d = seq - r->top;
        if (d >= AE_REPLAY_WINDOW) {
            memset(r->bits, 0, sizeof(r->bits));
        } else {
            /* Numbers top+1 .. seq enter the window: clear their (recycled) bits. Counted by
             * distance, not "n <= seq", which never ends when seq is UINT64_MAX. */
            for (uint64_t i = 1; i <= d; i++)
                clear_bit(r, r->top + i);
        }
        r->top = seq;
        set_bit(r, seq);
        return 0;
    }
    if (r->top - seq >= AE_REPLAY_WINDOW)
        return -1; /* too old to tell */
    if (test_bit(r, seq))
        return -1;
    set_bit(r, seq);
    return 0;
}
