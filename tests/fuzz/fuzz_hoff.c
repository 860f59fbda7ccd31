/*
 * libFuzzer harness for the TCP hand-off frame decoder ae_hoff_decode (state/tunnel.c, "AEh1"),
 * the anti-replay window it feeds (state/replay.c) and, for SEGMENT frames, the IP/TCP packet
 * check the receiver runs next (proxy/handoff/ippkt.c).
 *
 * The input's first byte is a mode, the rest a frame. As in fuzz_tunnel.c, with mode bit 0 set
 * the harness plays the sender (body length field, key id of one of the fixed ring's keys, the
 * right MAC from an independent HMAC) so the checks on authenticated content are reached; the
 * clock is the frame's timestamp plus 0..15 s (mode bits 4-7). Checked beyond "no crash":
 *   - a decoded frame has a site in 1..4095, a known type with the body size of its type, a
 *     verdict 0 or 1, one address family on both ends with non-zero ports, and a SEGMENT's
 *     packet is exactly the frame's body;
 *   - round trip: encoding the decoded frame again (ae_hoff_encode_query / _answer / _segment)
 *     gives the input byte for byte when it was made with the current key, otherwise a frame
 *     that decodes to the same content;
 *   - a decoded frame is refused once any one of its bits is flipped (position from a hash of
 *     the input) and once its last octet is cut off;
 *   - the replay window accepts the frame's sequence number once, then refuses it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nettle/hmac.h>

#include "proxy/handoff/ippkt.h"
#include "state/replay.h"
#include "state/tunnel.h"
#include "tests/fuzz/fuzz_common.h"

#define OFF_KEY 8
#define OFF_TS  16
#define OFF_LEN 32
#define CAP     (AE_HOFF_OVERHEAD + 65535)

static ae_ring ring;
static ae_tunnel_keys *keys;
static uint8_t mac_keys[AE_RING_MAX_KEYS][AE_TUNNEL_KEY_LEN];

static void init(void)
{
    fz_ring(&ring);
    if (ae_tunnel_keys_from_ring(&ring, &keys) != 0)
        abort();
    for (size_t i = 0; i < ring.nkeys; i++)
        if (ae_ring_derive(&ring.keys[i], AE_HOFF_KEY_LABEL, mac_keys[i], AE_TUNNEL_KEY_LEN) != 0)
            abort();
}

static void seal(uint8_t *f, size_t len, size_t ki)
{
    struct hmac_sha256_ctx h;
    size_t blen = len - AE_HOFF_OVERHEAD;
    f[OFF_LEN] = (uint8_t)(blen >> 8);
    f[OFF_LEN + 1] = (uint8_t)blen;
    fz_put64(f + OFF_KEY, ring.keys[ki].id);
    hmac_sha256_set_key(&h, AE_TUNNEL_KEY_LEN, mac_keys[ki]);
    hmac_sha256_update(&h, len - AE_TUNNEL_MAC_LEN, f);
    hmac_sha256_digest(&h, AE_TUNNEL_MAC_LEN, f + len - AE_TUNNEL_MAC_LEN);
}

static int port_ok(const ae_tunnel_addr *a, socklen_t len)
{
    if (a->sa.sa_family == AF_INET)
        return len == sizeof(a->in) && a->in.sin_port != 0;
    if (a->sa.sa_family == AF_INET6)
        return len == sizeof(a->in6) && a->in6.sin6_port != 0;
    return 0;
}

static int encode(const ae_hoff_frame *d, uint8_t *out, size_t cap)
{
    const struct sockaddr *c = &d->tuple.client.sa, *l = &d->tuple.local.sa;
    switch (d->type) {
    case AE_HOFF_QUERY:
        return ae_hoff_encode_query(keys, d->site, d->timestamp_ms, d->seq, d->qid, c, l, out, cap);
    case AE_HOFF_ANSWER:
        return ae_hoff_encode_answer(keys, d->site, d->timestamp_ms, d->seq, d->qid, c, l,
                                     d->verdict, out, cap);
    default:
        return ae_hoff_encode_segment(keys, d->site, d->timestamp_ms, d->seq, d->pkt, d->pkt_len,
                                      out, cap);
    }
}

static int same(const ae_hoff_frame *a, const ae_hoff_frame *b)
{
    return a->type == b->type && a->site == b->site && a->timestamp_ms == b->timestamp_ms &&
           a->seq == b->seq && a->qid == b->qid && a->verdict == b->verdict &&
           a->pkt_len == b->pkt_len &&
           (a->pkt_len == 0 || memcmp(a->pkt, b->pkt, a->pkt_len) == 0) &&
           a->tuple.client_len == b->tuple.client_len && a->tuple.local_len == b->tuple.local_len &&
           memcmp(&a->tuple.client, &b->tuple.client, a->tuple.client_len) == 0 &&
           memcmp(&a->tuple.local, &b->tuple.local, a->tuple.local_len) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (keys == NULL)
        init();
    if (size < 1 || size - 1 > CAP)
        return 0;
    uint8_t mode = data[0];
    size_t len = size - 1;
    uint8_t *f = fz_copy(data + 1, len, 0);
    if ((mode & 1) && len >= AE_HOFF_OVERHEAD)
        seal(f, len, (mode >> 1) % 3);
    uint64_t now = len >= OFF_TS + 8 ? fz_get64(f + OFF_TS) + (uint64_t)(mode >> 4) * 1000 : FZ_NOW;

    ae_hoff_frame d;
    int rc = ae_hoff_decode(keys, f, len, now, FZ_WINDOW, &d);
    if (ae_hoff_reason_name(rc)[0] == '?')
        abort();
    if (rc != 0) {
        free(f);
        return 0;
    }

    if (d.site == 0 || d.site > AE_TUNNEL_SITE_MAX || !ae_tunnel_keys_has(keys, d.key_id))
        abort();
    size_t blen = len - AE_HOFF_OVERHEAD;
    switch (d.type) {
    case AE_HOFF_QUERY:
    case AE_HOFF_ANSWER:
        if (blen != (d.type == AE_HOFF_QUERY ? AE_HOFF_QUERY_LEN : AE_HOFF_ANSWER_LEN) ||
            d.verdict > 1 || d.pkt != NULL || !port_ok(&d.tuple.client, d.tuple.client_len) ||
            !port_ok(&d.tuple.local, d.tuple.local_len) ||
            d.tuple.client.sa.sa_family != d.tuple.local.sa.sa_family)
            abort();
        break;
    case AE_HOFF_SEGMENT: {
        if (d.pkt != f + AE_HOFF_HDR_LEN || d.pkt_len != blen || blen < AE_HOFF_SEGMENT_MIN)
            abort();
        ae_ippkt p;
        if (ae_ippkt_parse(d.pkt, d.pkt_len, &p) == 0 && p.l4_off + p.l4_len != d.pkt_len)
            abort();
        break;
    }
    default:
        abort();
    }

    /* Round trip. */
    uint8_t *out = malloc(len);
    if (out == NULL)
        abort();
    int n = encode(&d, out, len);
    if (n < 0 || (size_t)n != len)
        abort();
    if (d.key_id == ae_tunnel_keys_id(keys)) {
        if (memcmp(out, f, len) != 0)
            abort();
    } else {
        ae_hoff_frame d2;
        if (ae_hoff_decode(keys, out, len, now, FZ_WINDOW, &d2) != 0 || !same(&d, &d2) ||
            d2.key_id != ae_tunnel_keys_id(keys))
            abort();
    }
    free(out);

    /* Replay: the first time new, the second time not. */
    ae_replay win;
    memset(&win, 0, sizeof(win));
    if (ae_replay_check(&win, d.seq) != 0 || ae_replay_check(&win, d.seq) != -1)
        abort();

    /* Any single-bit change, and a cut, is refused. */
    uint64_t bit = fz_hash(data, size) % (len * 8);
    ae_hoff_frame d3;
    f[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    if (ae_hoff_decode(keys, f, len, now, FZ_WINDOW, &d3) == 0)
        abort();
    f[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    if (ae_hoff_decode(keys, f, len - 1, now, FZ_WINDOW, &d3) == 0)
        abort();
    free(f);
    return 0;
}
