/*
 * libFuzzer harness for the QUIC tunnel frame decoder ae_tunnel_decode (state/tunnel.c, "AEt1").
 *
 * The input's first byte is a mode, the rest a frame. The keys come from a fixed ring
 * (fuzz_common.h); a fuzzer cannot forge a MAC, so with mode bit 0 set the harness plays the
 * sender: it sets the datagram length field to fit, the key id to one of the ring's keys and
 * the MAC to the right one (computed here with an independent HMAC), which takes the frame past
 * the MAC to the checks on authenticated content. The clock is the frame's timestamp plus
 * 0..15 s (mode bits 4-7), so both fresh and stale frames occur. Checked beyond "no crash":
 *   - a decoded frame has a site in 1..4095, known flags, IPv4 / IPv6 addresses with non-zero
 *     ports, and its datagram is exactly the frame's [62, len - 16);
 *   - round trip: encoding the decoded header and datagram again (ae_tunnel_encode / _reply)
 *     gives the input byte for byte when it was made with the current key, and otherwise a frame
 *     that decodes to the same header and datagram;
 *   - a decoded frame is refused once any one of its bits is flipped (position from a hash of
 *     the input) and once its last octet is cut off.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nettle/hmac.h>

#include "state/tunnel.h"
#include "tests/fuzz/fuzz_common.h"

#define OFF_KEY 8
#define OFF_TS  16
#define OFF_LEN 60
#define CAP     (AE_TUNNEL_OVERHEAD + AE_TUNNEL_DGRAM_MAX)

static ae_ring ring;
static ae_tunnel_keys *keys;
static uint8_t mac_keys[AE_RING_MAX_KEYS][AE_TUNNEL_KEY_LEN];

static void init(void)
{
    fz_ring(&ring);
    if (ae_tunnel_keys_from_ring(&ring, &keys) != 0)
        abort();
    for (size_t i = 0; i < ring.nkeys; i++)
        if (ae_ring_derive(&ring.keys[i], AE_TUNNEL_KEY_LABEL, mac_keys[i], AE_TUNNEL_KEY_LEN) != 0)
            abort();
}

/* What the sender does: length field, key id of ring key ki, the MAC. len >= overhead. */
static void seal(uint8_t *f, size_t len, size_t ki)
{
    struct hmac_sha256_ctx h;
    size_t dlen = len - AE_TUNNEL_OVERHEAD;
    f[OFF_LEN] = (uint8_t)(dlen >> 8);
    f[OFF_LEN + 1] = (uint8_t)dlen;
    fz_put64(f + OFF_KEY, ring.keys[ki].id);
    hmac_sha256_set_key(&h, AE_TUNNEL_KEY_LEN, mac_keys[ki]);
    hmac_sha256_update(&h, len - AE_TUNNEL_MAC_LEN, f);
    hmac_sha256_digest(&h, AE_TUNNEL_MAC_LEN, f + len - AE_TUNNEL_MAC_LEN);
}

static int same_hdr(const ae_tunnel_hdr *a, const ae_tunnel_hdr *b)
{
    return a->version == b->version && a->flags == b->flags && a->site == b->site &&
           a->timestamp_ms == b->timestamp_ms && a->client_len == b->client_len &&
           a->local_len == b->local_len && memcmp(&a->client, &b->client, a->client_len) == 0 &&
           memcmp(&a->local, &b->local, a->local_len) == 0;
}

static int addr_ok(const ae_tunnel_addr *a, socklen_t len)
{
    if (a->sa.sa_family == AF_INET)
        return len == sizeof(a->in) && a->in.sin_port != 0;
    if (a->sa.sa_family == AF_INET6)
        return len == sizeof(a->in6) && a->in6.sin6_port != 0;
    return 0;
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
    if ((mode & 1) && len >= AE_TUNNEL_OVERHEAD)
        seal(f, len, (mode >> 1) % 3);
    uint64_t now = len >= OFF_TS + 8 ? fz_get64(f + OFF_TS) + (uint64_t)(mode >> 4) * 1000 : FZ_NOW;

    ae_tunnel_hdr hdr;
    const uint8_t *dg;
    size_t dlen;
    int rc = ae_tunnel_decode(keys, f, len, now, FZ_WINDOW, &hdr, &dg, &dlen);
    if (ae_tunnel_reason_name(rc)[0] == '?')
        abort();
    if (rc != 0) {
        free(f);
        return 0;
    }

    if (hdr.site == 0 || hdr.site > AE_TUNNEL_SITE_MAX || hdr.version != AE_TUNNEL_VERSION ||
        (hdr.flags & ~AE_TUNNEL_FLAGS_KNOWN) != 0 || !addr_ok(&hdr.client, hdr.client_len) ||
        !addr_ok(&hdr.local, hdr.local_len) || dg != f + AE_TUNNEL_HDR_LEN ||
        dlen != len - AE_TUNNEL_OVERHEAD || !ae_tunnel_keys_has(keys, hdr.key_id))
        abort();

    /* Round trip. */
    uint8_t *out = malloc(len);
    int n;
    if (out == NULL)
        abort();
    if (hdr.flags & AE_TUNNEL_FLAG_REPLY)
        n = ae_tunnel_encode_reply(
            keys, hdr.site, hdr.timestamp_ms, &hdr.client.sa, &hdr.local.sa,
            (uint8_t)((hdr.flags & AE_TUNNEL_ECN_MASK) >> AE_TUNNEL_ECN_SHIFT), dg, dlen, out, len);
    else
        n = ae_tunnel_encode(keys, hdr.site, hdr.timestamp_ms, &hdr.client.sa, &hdr.local.sa, dg,
                             dlen, out, len);
    if (n < 0 || (size_t)n != len)
        abort();
    if (hdr.key_id == ae_tunnel_keys_id(keys)) {
        if (memcmp(out, f, len) != 0)
            abort();
    } else {
        ae_tunnel_hdr h2;
        const uint8_t *dg2;
        size_t dlen2;
        if (ae_tunnel_decode(keys, out, len, now, FZ_WINDOW, &h2, &dg2, &dlen2) != 0 ||
            !same_hdr(&hdr, &h2) || h2.key_id != ae_tunnel_keys_id(keys) || dlen2 != dlen ||
            memcmp(dg2, dg, dlen) != 0)
            abort();
    }
    free(out);

    /* Any single-bit change, and a cut, is refused. */
    uint64_t bit = fz_hash(data, size) % (len * 8);
    f[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    if (ae_tunnel_decode(keys, f, len, now, FZ_WINDOW, &hdr, &dg, &dlen) == 0)
        abort();
    f[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    if (ae_tunnel_decode(keys, f, len - 1, now, FZ_WINDOW, &hdr, &dg, &dlen) == 0)
        abort();
    free(f);
    return 0;
}
