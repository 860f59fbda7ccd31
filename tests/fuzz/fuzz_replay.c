/*
 * libFuzzer harness for the anti-replay window ae_replay_check (state/replay.c).
 *
 * The input is a sequence of 64-bit sequence numbers, each 9 octets: a delta mode octet and 8
 * octets (big-endian). Mode bit 0 set: the number is the last one plus the (small) value of the
 * 8 octets' low 12 bits, minus 2048, so that numbers cluster around the window's edge; clear:
 * the 8 octets taken as they are (jumps, UINT64_MAX, 0). Every answer is compared with a
 * reference model: a number is new when it is above every number seen, or within
 * AE_REPLAY_WINDOW - 1 below the highest and not seen before (the model keeps the full history).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state/replay.h"
#include "tests/fuzz/fuzz_common.h"

#define MAXN 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seen[MAXN], top = 0, last = 0;
    size_t nseen = 0;
    ae_replay w;

    memset(&w, 0, sizeof(w));
    for (size_t off = 0; off + 9 <= size && nseen < MAXN; off += 9) {
        uint64_t v = fz_get64(data + off + 1), seq;
        if (data[off] & 1)
            seq = last + (v & 0xfff) - 2048;
        else
            seq = v;
        last = seq;

        int want;
        if (nseen == 0 || seq > top) {
            want = 0;
        } else if (top - seq >= AE_REPLAY_WINDOW) {
            want = -1;
        } else {
            want = 0;
            for (size_t i = 0; i < nseen; i++)
                if (seen[i] == seq)
                    want = -1;
        }
        if (ae_replay_check(&w, seq) != want)
            abort();
        if (want == 0) {
            if (nseen == 0 || seq > top)
                top = seq;
            seen[nseen++] = seq;
        }
    }
    return 0;
}
