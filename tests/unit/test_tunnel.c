/*
 * Unit tests for inter-site tunnel frames: round trips, every refusal reason, truncation, key
 * rotation, the MAC against an independent HMAC (OpenSSL), no allocation on the data path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "conf/base.h"
#include "state/ring.h"
#include "state/tunnel.h"

#define NOW    1795635712000ull
#define WINDOW 5000ull
#define BUFCAP (AE_TUNNEL_OVERHEAD + 2048)

/* ---- OpenSSL allocation counter (installed before any OpenSSL call, in main) ---- */

static long ossl_allocs;

static void *count_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    ossl_allocs++;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    ossl_allocs++;
    return realloc(p, n);
}

static void count_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

/* ---- helpers ---- */

static ae_tunnel_keys *keys_of(const ae_ring *r)
{
    ae_tunnel_keys *k = NULL;
    assert_int_equal(ae_tunnel_keys_from_ring(r, &k), 0);
    assert_non_null(k);
    return k;
}

static struct sockaddr_in v4(const char *ip, uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return a;
}

static struct sockaddr_in6 v6(const char *ip, uint16_t port)
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
    return a;
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

/* A valid IPv4 frame of a dlen-byte datagram made at ts with ring r's current key. */
static size_t make_frame(const ae_tunnel_keys *k, uint64_t ts, size_t dlen, uint8_t *out)
{
    struct sockaddr_in c = v4("192.0.2.10", 50000), l = v4("203.0.113.1", 443);
    uint8_t dg[2048];
    int n;

    fill(dg, dlen, 3);
    n = ae_tunnel_encode(k, 17, ts, (struct sockaddr *)&c, (struct sockaddr *)&l, dg, dlen, out,
                         BUFCAP);
    assert_int_equal(n, (int)(AE_TUNNEL_OVERHEAD + dlen));
    return (size_t)n;
}

static int decode(const ae_tunnel_keys *k, const uint8_t *f, size_t len, uint64_t now)
{
    ae_tunnel_hdr h;
    const uint8_t *dg = NULL;
    size_t dlen = 0;
    return ae_tunnel_decode(k, f, len, now, WINDOW, &h, &dg, &dlen);
}

/* Independent MAC: OpenSSL HMAC-SHA256 with the ring key's derived tunnel key, truncated. */
static void openssl_mac(const ae_ring_key *rk, const uint8_t *msg, size_t len, uint8_t *tag)
{
    uint8_t key[AE_TUNNEL_KEY_LEN], full[32];
    size_t outlen = 0;

    assert_int_equal(ae_ring_derive(rk, "tunnel", key, sizeof(key)), 0);
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizeof(key), msg, len, full,
                              sizeof(full), &outlen));
    assert_int_equal(outlen, 32);
    memcpy(tag, full, AE_TUNNEL_MAC_LEN);
}

/* Re-signs a frame edited in place (as a ring holder would). */
static void resign(const ae_ring_key *rk, uint8_t *f, size_t len)
{
    openssl_mac(rk, f, len - AE_TUNNEL_MAC_LEN, f + len - AE_TUNNEL_MAC_LEN);
}

/* ---- tests ---- */

static void check_roundtrip(const ae_ring *r, const struct sockaddr *c, socklen_t clen,
                            const struct sockaddr *l, socklen_t llen, size_t dlen)
{
    ae_tunnel_keys *k = keys_of(r);
    uint8_t frame[BUFCAP], dg[2048], tag[AE_TUNNEL_MAC_LEN];
    ae_tunnel_hdr h;
    const uint8_t *out = NULL;
    size_t outlen = 0;
    int n;

    fill(dg, dlen, (uint8_t)dlen);
    n = ae_tunnel_encode(k, 4095, NOW, c, l, dg, dlen, frame, sizeof(frame));
    assert_int_equal(n, (int)(AE_TUNNEL_OVERHEAD + dlen));
    assert_memory_equal(frame, "AEt1", 4);
    assert_int_equal(frame[4], 1);
    assert_int_equal(ae_tunnel_decode(k, frame, (size_t)n, NOW, WINDOW, &h, &out, &outlen), 0);
    assert_int_equal(h.version, AE_TUNNEL_VERSION);
    assert_int_equal(h.site, 4095);
    assert_int_equal(h.key_id, ae_ring_find(r, AE_RING_CURRENT)->id);
    assert_int_equal(h.key_id, ae_tunnel_keys_id(k));
    assert_int_equal(h.timestamp_ms, NOW);
    assert_int_equal(h.client_len, clen);
    assert_memory_equal(&h.client, c, clen);
    assert_int_equal(h.local_len, llen);
    assert_memory_equal(&h.local, l, llen);
    assert_ptr_equal(out, frame + AE_TUNNEL_HDR_LEN);
    assert_int_equal(outlen, dlen);
    assert_memory_equal(out, dg, dlen);
    /* The MAC is standard HMAC-SHA256 (truncated): another implementation agrees. */
    openssl_mac(ae_ring_find(r, AE_RING_CURRENT), frame, (size_t)n - AE_TUNNEL_MAC_LEN, tag);
    assert_memory_equal(tag, frame + n - AE_TUNNEL_MAC_LEN, AE_TUNNEL_MAC_LEN);
    ae_tunnel_keys_free(k);
}

static void test_roundtrip_ipv4(void **state)
{
    struct sockaddr_in c = v4("192.0.2.10", 50000), l = v4("203.0.113.1", 443);
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    check_roundtrip(&r, (struct sockaddr *)&c, sizeof(c), (struct sockaddr *)&l, sizeof(l), 1200);
    check_roundtrip(&r, (struct sockaddr *)&c, sizeof(c), (struct sockaddr *)&l, sizeof(l), 1);
    c = v4("255.255.255.255", 65535);
    l = v4("0.0.0.0", 1);
    check_roundtrip(&r, (struct sockaddr *)&c, sizeof(c), (struct sockaddr *)&l, sizeof(l), 1500);
}

static void test_roundtrip_ipv6(void **state)
{
    struct sockaddr_in6 c = v6("2001:db8::1234:5678", 61000), l = v6("2001:db8:ffff::1", 443);
    struct sockaddr_in c4 = v4("198.51.100.7", 4433);
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    check_roundtrip(&r, (struct sockaddr *)&c, sizeof(c), (struct sockaddr *)&l, sizeof(l), 1350);
    /* Mixed families, and an IPv4-mapped address given as IPv6 stays IPv6. */
    check_roundtrip(&r, (struct sockaddr *)&c4, sizeof(c4), (struct sockaddr *)&l, sizeof(l), 40);
    c = v6("::ffff:192.0.2.1", 1);
    check_roundtrip(&r, (struct sockaddr *)&c, sizeof(c), (struct sockaddr *)&c4, sizeof(c4), 40);
}

/* Reply frames (site.return: tunnel): the reply bit and the ECN codepoint survive, the addresses
 * are the reply's destination (client) and source (local); forward frames carry neither. */
static void test_reply(void **state)
{
    struct sockaddr_in c = v4("192.0.2.10", 50000), l = v4("203.0.113.1", 443);
    uint8_t frame[BUFCAP], dg[1400];
    const uint8_t *out;
    ae_tunnel_hdr h;
    size_t dlen;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    ae_tunnel_keys *k = keys_of(&r);
    fill(dg, sizeof(dg), 9);
    for (unsigned ecn = 0; ecn < 4; ecn++) {
        int n = ae_tunnel_encode_reply(k, 4095, NOW, (struct sockaddr *)&c, (struct sockaddr *)&l,
                                       (uint8_t)(ecn | 0xfc), dg, sizeof(dg), frame, sizeof(frame));
        assert_int_equal(n, (int)(AE_TUNNEL_OVERHEAD + sizeof(dg)));
        assert_int_equal(frame[5], AE_TUNNEL_FLAG_REPLY | ecn << AE_TUNNEL_ECN_SHIFT | 0x05);
        assert_int_equal(ae_tunnel_decode(k, frame, (size_t)n, NOW, WINDOW, &h, &out, &dlen), 0);
        assert_true(h.flags & AE_TUNNEL_FLAG_REPLY);
        assert_int_equal((h.flags & AE_TUNNEL_ECN_MASK) >> AE_TUNNEL_ECN_SHIFT, ecn);
        assert_int_equal(h.site, 4095);
        assert_memory_equal(&h.client.in, &c, sizeof(c));
        assert_memory_equal(&h.local.in, &l, sizeof(l));
        assert_int_equal(dlen, sizeof(dg));
        assert_memory_equal(out, dg, sizeof(dg));
    }
    int n = ae_tunnel_encode(k, 1, NOW, (struct sockaddr *)&c, (struct sockaddr *)&l, dg, 10, frame,
                             sizeof(frame));
    assert_int_equal(ae_tunnel_decode(k, frame, (size_t)n, NOW, WINDOW, &h, &out, &dlen), 0);
    assert_int_equal(h.flags & (AE_TUNNEL_FLAG_REPLY | AE_TUNNEL_ECN_MASK), 0);
    ae_tunnel_keys_free(k);
}

static void test_encode_in_place(void **state)
{
    struct sockaddr_in c = v4("192.0.2.10", 50000), l = v4("203.0.113.1", 443);
    uint8_t frame[BUFCAP], dg[1200];
    const uint8_t *out;
    size_t outlen;
    ae_tunnel_hdr h;
    ae_tunnel_keys *k;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    /* A datagram received straight into the frame buffer after the header. */
    fill(dg, sizeof(dg), 9);
    memcpy(frame + AE_TUNNEL_HDR_LEN, dg, sizeof(dg));
    assert_int_equal(ae_tunnel_encode(k, 1, NOW, (struct sockaddr *)&c, (struct sockaddr *)&l,
                                      frame + AE_TUNNEL_HDR_LEN, sizeof(dg), frame, sizeof(frame)),
                     AE_TUNNEL_OVERHEAD + sizeof(dg));
    assert_int_equal(
        ae_tunnel_decode(k, frame, AE_TUNNEL_OVERHEAD + sizeof(dg), NOW, 0, &h, &out, &outlen), 0);
    assert_int_equal(outlen, sizeof(dg));
    assert_memory_equal(out, dg, sizeof(dg));
    ae_tunnel_keys_free(k);
}

static void test_encode_errors(void **state)
{
    struct sockaddr_in c = v4("192.0.2.10", 50000), l = v4("203.0.113.1", 443), p0;
    struct sockaddr_in6 p06 = v6("2001:db8::1", 0);
    struct sockaddr un;
    static uint8_t big[AE_TUNNEL_DGRAM_MAX + 1],
        frame[AE_TUNNEL_OVERHEAD + AE_TUNNEL_DGRAM_MAX + 1];
    const struct sockaddr *cs = (struct sockaddr *)&c, *ls = (struct sockaddr *)&l;
    ae_tunnel_keys *k;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    p0 = v4("192.0.2.10", 0);
    memset(&un, 0, sizeof(un));
    un.sa_family = AF_UNIX;
    assert_int_equal(ae_tunnel_encode(k, 0, NOW, cs, ls, big, 10, frame, sizeof(frame)),
                     AE_ERR_INVAL);
    assert_int_equal(ae_tunnel_encode(k, 4096, NOW, cs, ls, big, 10, frame, sizeof(frame)),
                     AE_ERR_INVAL);
    assert_int_equal(ae_tunnel_encode(k, 1, NOW, cs, ls, big, 0, frame, sizeof(frame)),
                     AE_ERR_INVAL);
    assert_int_equal(ae_tunnel_encode(k, 1, NOW, cs, ls, big, sizeof(big), frame, sizeof(frame)),
                     AE_ERR_INVAL);
    assert_int_equal(
        ae_tunnel_encode(k, 1, NOW, cs, ls, big, AE_TUNNEL_DGRAM_MAX, frame, sizeof(frame)),
        AE_TUNNEL_OVERHEAD + AE_TUNNEL_DGRAM_MAX);
    assert_int_equal(ae_tunnel_encode(k, 1, NOW, cs, ls, big, 100, frame, AE_TUNNEL_OVERHEAD + 99),
                     AE_ERR_TOOBIG);
    assert_int_equal(ae_tunnel_encode(k, 1, NOW, cs, ls, big, 100, frame, AE_TUNNEL_OVERHEAD + 100),
                     AE_TUNNEL_OVERHEAD + 100);
    assert_int_equal(
        ae_tunnel_encode(k, 1, NOW, (struct sockaddr *)&p0, ls, big, 10, frame, sizeof(frame)),
        AE_ERR_INVAL);
    assert_int_equal(
        ae_tunnel_encode(k, 1, NOW, cs, (struct sockaddr *)&p06, big, 10, frame, sizeof(frame)),
        AE_ERR_INVAL);
    assert_int_equal(ae_tunnel_encode(k, 1, NOW, &un, ls, big, 10, frame, sizeof(frame)),
                     AE_ERR_INVAL);
    assert_int_equal(ae_tunnel_encode(k, 1, NOW, NULL, ls, big, 10, frame, sizeof(frame)),
                     AE_ERR_INVAL);
    ae_tunnel_keys_free(k);
}

/* Every single-bit flip is refused, with the reason of the field it hit. */
static void test_bit_flips(void **state)
{
    uint8_t frame[BUFCAP];
    ae_tunnel_keys *k;
    ae_ring r;
    size_t n;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    n = make_frame(k, NOW, 300, frame);
    assert_int_equal(decode(k, frame, n, NOW), 0);
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            int want, got;

            if (i < 4)
                want = AE_TUN_ERR_MAGIC;
            else if (i == 4)
                want = AE_TUN_ERR_VERSION;
            else if (i >= 8 && i < 16)
                want = AE_TUN_ERR_KEY; /* ids 1 and 2 are loaded; no single flip of 1 gives 2 */
            else if (i == 60 || i == 61)
                want = AE_TUN_ERR_SHORT; /* length field no longer matches */
            else
                want = AE_TUN_ERR_MAC; /* flags, site, timestamp, addresses, datagram, MAC */
            frame[i] ^= (uint8_t)(1u << bit);
            got = decode(k, frame, n, NOW);
            if (got != want)
                fail_msg("flip of octet %zu bit %d: got %s, want %s", i, bit,
                         ae_tunnel_reason_name(got), ae_tunnel_reason_name(want));
            frame[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(decode(k, frame, n, NOW), 0);
    ae_tunnel_keys_free(k);
}

static void test_magic_version(void **state)
{
    uint8_t frame[BUFCAP];
    ae_tunnel_keys *k;
    ae_ring r;
    size_t n;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    n = make_frame(k, NOW, 100, frame);
    memcpy(frame, "AEt2", 4);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_MAGIC);
    memcpy(frame, "GET ", 4);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_MAGIC);
    memcpy(frame, "AEt1", 4);
    /* Version 2 is refused even when correctly signed (a newer peer), as is 0. */
    frame[4] = 2;
    resign(ae_ring_find(&r, AE_RING_CURRENT), frame, n);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_VERSION);
    frame[4] = 0;
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_VERSION);
    frame[4] = 1;
    resign(ae_ring_find(&r, AE_RING_CURRENT), frame, n);
    assert_int_equal(decode(k, frame, n, NOW), 0);
    ae_tunnel_keys_free(k);
}

static void test_unknown_key(void **state)
{
    uint8_t frame[BUFCAP];
    ae_tunnel_keys *k, *other;
    ae_ring r, o;
    size_t n;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    /* Another ring with the same key ids (every new ring starts at 1, 2): the id is known, the
     * MAC does not match. */
    assert_int_equal(ae_ring_init(&o, NOW), 0);
    other = keys_of(&o);
    n = make_frame(other, NOW, 100, frame);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_MAC);
    ae_tunnel_keys_free(other);
    /* Another ring whose ids we do not hold. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(ae_ring_rotate(&o, &o, NOW), 0);
    other = keys_of(&o);
    assert_int_equal(ae_tunnel_keys_has(k, ae_tunnel_keys_id(other)), 0);
    n = make_frame(other, NOW, 100, frame);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_KEY);
    assert_int_equal(decode(other, frame, n, NOW), 0);
    ae_tunnel_keys_free(other);
    ae_tunnel_keys_free(k);
}

static void test_window(void **state)
{
    uint8_t frame[BUFCAP];
    ae_tunnel_keys *k;
    ae_tunnel_hdr h;
    const uint8_t *dg;
    size_t dlen, n;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    n = make_frame(k, NOW, 100, frame);
    assert_int_equal(decode(k, frame, n, NOW), 0);
    assert_int_equal(decode(k, frame, n, NOW + WINDOW), 0);
    assert_int_equal(decode(k, frame, n, NOW - WINDOW), 0);
    assert_int_equal(decode(k, frame, n, NOW + WINDOW + 1), AE_TUN_ERR_STALE);
    assert_int_equal(decode(k, frame, n, NOW - WINDOW - 1), AE_TUN_ERR_STALE);
    /* A replay within the window is delivered again (QUIC drops the duplicate packet number);
     * no per-frame state. */
    assert_int_equal(decode(k, frame, n, NOW + 1), 0);
    assert_int_equal(decode(k, frame, n, NOW + 1), 0);
    /* Window 0: only the same millisecond. */
    assert_int_equal(ae_tunnel_decode(k, frame, n, NOW, 0, &h, &dg, &dlen), 0);
    assert_int_equal(ae_tunnel_decode(k, frame, n, NOW + 1, 0, &h, &dg, &dlen), AE_TUN_ERR_STALE);
    /* No wrap-around at the ends of the clock. */
    n = make_frame(k, 0, 100, frame);
    assert_int_equal(decode(k, frame, n, WINDOW), 0);
    assert_int_equal(decode(k, frame, n, WINDOW + 1), AE_TUN_ERR_STALE);
    assert_int_equal(decode(k, frame, n, UINT64_MAX), AE_TUN_ERR_STALE);
    n = make_frame(k, UINT64_MAX, 100, frame);
    assert_int_equal(decode(k, frame, n, UINT64_MAX - WINDOW), 0);
    assert_int_equal(decode(k, frame, n, 0), AE_TUN_ERR_STALE);
    assert_int_equal(ae_tunnel_decode(k, frame, n, 0, UINT64_MAX, &h, &dg, &dlen), 0);
    ae_tunnel_keys_free(k);
}

/* Site and address checks apply to authenticated frames: edit, re-sign, decode. */
static void test_site_addr(void **state)
{
    static const uint8_t flags_bad[] = {0x00,        0x03,        0x04 | 0x00,
                                        0x04 | 0x03, 0x01 | 0x00, 0x01 | 0x0c};
    uint8_t frame[BUFCAP], orig[BUFCAP];
    const ae_ring_key *rk;
    ae_tunnel_hdr h;
    const uint8_t *dg;
    ae_tunnel_keys *k;
    size_t n, dlen;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    rk = ae_ring_find(&r, AE_RING_CURRENT);
    k = keys_of(&r);
    n = make_frame(k, NOW, 100, orig);
    assert_int_equal(orig[5], 0x05); /* IPv4 client, IPv4 local */

    /* Site 0 and 4096.. 65535. */
    memcpy(frame, orig, n);
    frame[6] = 0;
    frame[7] = 0;
    resign(rk, frame, n);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_SITE);
    frame[6] = 0x10;
    resign(rk, frame, n);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_SITE);
    frame[6] = 0xff;
    frame[7] = 0xff;
    resign(rk, frame, n);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_SITE);
    frame[6] = 0x0f;
    resign(rk, frame, n);
    assert_int_equal(decode(k, frame, n, NOW), 0);

    /* Family codes 0 and 3, for the client and for the local address. */
    for (size_t i = 0; i < sizeof(flags_bad); i++) {
        memcpy(frame, orig, n);
        frame[5] = flags_bad[i];
        resign(rk, frame, n);
        assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_ADDR);
    }
    /* Flags: bit 4 (reply) with any ECN codepoint is accepted; bit 7 (reserved) and ECN bits
     * without the reply bit are refused. */
    for (unsigned hi = 0; hi < 16; hi++) {
        memcpy(frame, orig, n);
        frame[5] = (uint8_t)(hi << 4 | 0x05);
        resign(rk, frame, n);
        int ok = (hi & 0x8) == 0 && ((hi & 0x6) == 0 || (hi & 0x1) != 0);
        assert_int_equal(decode(k, frame, n, NOW), ok ? 0 : AE_TUN_ERR_FLAGS);
        if (ok) {
            assert_int_equal(ae_tunnel_decode(k, frame, n, NOW, WINDOW, &h, &dg, &dlen), 0);
            assert_int_equal(h.flags, frame[5]);
        }
    }
    /* ... but only on authenticated content: unsigned, a flag change is a MAC failure. */
    memcpy(frame, orig, n);
    frame[5] |= 0x80;
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_MAC);
    /* IPv4 without the ::ffff: prefix. */
    memcpy(frame, orig, n);
    frame[24 + 10] = 0;
    resign(rk, frame, n);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_ADDR);
    memcpy(frame, orig, n);
    frame[42] = 1;
    resign(rk, frame, n);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_ADDR);
    /* ... which is fine as IPv6 (the same 16 octets read as an IPv6 address). */
    frame[5] = 0x09;
    resign(rk, frame, n);
    assert_int_equal(ae_tunnel_decode(k, frame, n, NOW, WINDOW, &h, &dg, &dlen), 0);
    assert_int_equal(h.local.sa.sa_family, AF_INET6);
    assert_int_equal(h.local_len, sizeof(struct sockaddr_in6));
    /* Port 0, client and local. */
    memcpy(frame, orig, n);
    frame[40] = frame[41] = 0;
    resign(rk, frame, n);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_ADDR);
    memcpy(frame, orig, n);
    frame[58] = frame[59] = 0;
    resign(rk, frame, n);
    assert_int_equal(decode(k, frame, n, NOW), AE_TUN_ERR_ADDR);
    ae_tunnel_keys_free(k);
}

/* Every prefix of a frame is refused (never 0, never a crash; ASan sees over-reads since each
 * prefix is copied into an allocation of exactly its length), as are longer frames and a length
 * field that disagrees with the frame. */
static void test_truncation(void **state)
{
    static const size_t sizes[] = {1, 2, 100, 1200};
    uint8_t frame[BUFCAP + 1];
    ae_tunnel_keys *k;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = make_frame(k, NOW, sizes[s], frame);

        for (size_t len = 0; len < n; len++) {
            uint8_t *copy = malloc(len > 0 ? len : 1);
            int rc;

            assert_non_null(copy);
            memcpy(copy, frame, len);
            rc = decode(k, copy, len, NOW);
            if (rc != AE_TUN_ERR_SHORT)
                fail_msg("frame of %zu cut to %zu: %s", n, len, ae_tunnel_reason_name(rc));
            free(copy);
        }
        frame[n] = 0;
        assert_int_equal(decode(k, frame, n + 1, NOW), AE_TUN_ERR_SHORT);
        assert_int_equal(decode(k, frame, n, NOW), 0);
    }
    /* Datagram length 0, with the frame cut to match. */
    {
        size_t n = make_frame(k, NOW, 1, frame);
        frame[60] = frame[61] = 0;
        assert_int_equal(decode(k, frame, n - 1, NOW), AE_TUN_ERR_SHORT);
    }
    ae_tunnel_keys_free(k);
}

/* Random input behind a valid magic and version never decodes. */
static void test_random(void **state)
{
    uint8_t frame[300];
    ae_tunnel_keys *k;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(i % (int)sizeof(frame)) + 1;
        int rc;

        assert_int_equal(RAND_bytes(frame, (int)len), 1);
        if (i % 2 == 0 && len > 5) {
            memcpy(frame, "AEt1", 4);
            frame[4] = 1;
        }
        if (i % 4 == 0 && len > AE_TUNNEL_OVERHEAD) {
            frame[60] = (uint8_t)((len - AE_TUNNEL_OVERHEAD) >> 8);
            frame[61] = (uint8_t)(len - AE_TUNNEL_OVERHEAD);
            frame[8] = frame[9] = frame[10] = frame[11] = frame[12] = frame[13] = frame[14] = 0;
            frame[15] = 1;
        }
        rc = decode(k, frame, len, NOW);
        assert_true(rc < 0 && rc >= -AE_TUN_NREASONS);
        if (i % 4 == 0 && len > AE_TUNNEL_OVERHEAD)
            assert_int_equal(rc, AE_TUN_ERR_MAC);
    }
    ae_tunnel_keys_free(k);
}

static void test_rotation(void **state)
{
    uint8_t frame[BUFCAP], newer[BUFCAP];
    ae_tunnel_keys *k0, *k1, *k2, *k3;
    ae_ring r0, r1, r2, r3;
    size_t n, nn;
    (void)state;

    assert_int_equal(ae_ring_init(&r0, NOW), 0);
    assert_int_equal(ae_ring_rotate(&r0, &r1, NOW), 0);
    assert_int_equal(ae_ring_rotate(&r1, &r2, NOW), 0);
    assert_int_equal(ae_ring_rotate(&r2, &r3, NOW), 0);
    k0 = keys_of(&r0);
    k1 = keys_of(&r1);
    k2 = keys_of(&r2);
    k3 = keys_of(&r3);
    assert_int_equal(ae_tunnel_keys_id(k0), ae_ring_find(&r0, AE_RING_CURRENT)->id);
    assert_int_equal(ae_tunnel_keys_id(k1), ae_ring_find(&r1, AE_RING_CURRENT)->id);

    n = make_frame(k0, NOW, 500, frame);
    assert_int_equal(decode(k0, frame, n, NOW), 0);
    assert_int_equal(decode(k1, frame, n, NOW), 0);              /* previous */
    assert_int_equal(decode(k2, frame, n, NOW), AE_TUN_ERR_KEY); /* retired */
    assert_int_equal(decode(k3, frame, n, NOW), AE_TUN_ERR_KEY); /* three rotations later */
    /* A site one rotation ahead: its current is our next. */
    nn = make_frame(k1, NOW, 500, newer);
    assert_int_equal(decode(k0, newer, nn, NOW), 0);
    assert_int_equal(decode(k1, newer, nn, NOW), 0);
    assert_int_equal(decode(k2, newer, nn, NOW), 0);
    assert_int_equal(decode(k3, newer, nn, NOW), AE_TUN_ERR_KEY);
    ae_tunnel_keys_free(k0);
    ae_tunnel_keys_free(k1);
    ae_tunnel_keys_free(k2);
    ae_tunnel_keys_free(k3);
}

static void test_keys(void **state)
{
    ae_tunnel_keys *k = (ae_tunnel_keys *)1;
    ae_ring r, empty;
    (void)state;

    memset(&empty, 0, sizeof(empty));
    assert_int_equal(ae_tunnel_keys_from_ring(&empty, &k), AE_ERR_INVAL);
    assert_null(k);
    assert_int_equal(ae_ring_init(&r, NOW), 0);
    assert_int_equal(ae_ring_rotate(&r, &r, NOW), 0); /* next 3, current 2, previous 1 */
    k = keys_of(&r);
    assert_int_equal(ae_tunnel_keys_id(k), 2);
    assert_true(ae_tunnel_keys_has(k, 1));
    assert_true(ae_tunnel_keys_has(k, 2));
    assert_true(ae_tunnel_keys_has(k, 3));
    assert_false(ae_tunnel_keys_has(k, 0));
    assert_false(ae_tunnel_keys_has(k, 4));
    ae_tunnel_keys_free(k);
    ae_tunnel_keys_free(NULL);
}

static void test_reason_names(void **state)
{
    static const struct {
        int rc;
        const char *name;
    } want[] = {
        {0, "ok"},
        {AE_TUN_ERR_SHORT, "short"},
        {AE_TUN_ERR_MAGIC, "magic"},
        {AE_TUN_ERR_VERSION, "version"},
        {AE_TUN_ERR_KEY, "key"},
        {AE_TUN_ERR_MAC, "mac"},
        {AE_TUN_ERR_STALE, "stale"},
        {AE_TUN_ERR_SITE, "site"},
        {AE_TUN_ERR_ADDR, "addr"},
        {AE_TUN_ERR_FLAGS, "flags"},
    };
    (void)state;

    assert_int_equal(sizeof(want) / sizeof(want[0]), AE_TUN_NREASONS + 1);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(want[i].rc, -(int)i);
        assert_string_equal(ae_tunnel_reason_name(want[i].rc), want[i].name);
    }
    assert_string_equal(ae_tunnel_reason_name(1), "?");
    assert_string_equal(ae_tunnel_reason_name(-AE_TUN_NREASONS - 1), "?");
}

/* Encode and decode make no OpenSSL allocation (nettle's HMAC never allocates; our code calls no
 * allocator on this path either). */
static void test_no_allocation(void **state)
{
    struct sockaddr_in6 c = v6("2001:db8::1", 1234), l = v6("2001:db8::2", 443);
    uint8_t frame[BUFCAP], dg[1200];
    const uint8_t *out;
    ae_tunnel_hdr h;
    ae_tunnel_keys *k;
    size_t outlen;
    ae_ring r;
    long before;
    int n = 0;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    k = keys_of(&r);
    fill(dg, sizeof(dg), 1);
    before = ossl_allocs;
    for (int i = 0; i < 100; i++) {
        n = ae_tunnel_encode(k, 7, NOW, (struct sockaddr *)&c, (struct sockaddr *)&l, dg,
                             sizeof(dg), frame, sizeof(frame));
        assert_int_equal(ae_tunnel_decode(k, frame, (size_t)n, NOW, WINDOW, &h, &out, &outlen), 0);
        frame[100] ^= 1;
        assert_int_equal(ae_tunnel_decode(k, frame, (size_t)n, NOW, WINDOW, &h, &out, &outlen),
                         AE_TUN_ERR_MAC);
    }
    assert_int_equal(ossl_allocs, before);
    /* The counter does see OpenSSL allocations (building keys runs HKDF). */
    ae_tunnel_keys_free(k);
    k = keys_of(&r);
    assert_true(ossl_allocs > before);
    ae_tunnel_keys_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_ipv4), cmocka_unit_test(test_roundtrip_ipv6),
        cmocka_unit_test(test_reply),          cmocka_unit_test(test_encode_in_place),
        cmocka_unit_test(test_encode_errors),  cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_magic_version),  cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_window),         cmocka_unit_test(test_site_addr),
        cmocka_unit_test(test_truncation),     cmocka_unit_test(test_random),
        cmocka_unit_test(test_rotation),       cmocka_unit_test(test_keys),
        cmocka_unit_test(test_reason_names),   cmocka_unit_test(test_no_allocation),
    };

    if (CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) != 1)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
