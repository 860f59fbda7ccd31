/*
 * Unit tests for the TCP hand-off frames ("AEh1", state/tunnel.h) and the anti-replay window
 * (state/replay.h): round trips of each type, every refusal reason, encoder checks, rotation,
 * the MAC against an independent HMAC (OpenSSL) with the "tcp-handoff" key, and the window's
 * edges.
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
#include <openssl/evp.h>

#include "conf/base.h"
#include "state/replay.h"
#include "state/ring.h"
#include "state/tunnel.h"

#define NOW    1795635712000ull
#define WINDOW 5000ull
#define BUFCAP (AE_HOFF_OVERHEAD + 2048)

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

/* Re-signs a frame edited in place with the ring key's "label" key (OpenSSL HMAC). */
static void resign(const ae_ring_key *rk, const char *label, uint8_t *f, size_t len)
{
    uint8_t key[32], full[32];
    size_t outlen = 0;
    assert_int_equal(ae_ring_derive(rk, label, key, sizeof(key)), 0);
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizeof(key), f,
                              len - AE_TUNNEL_MAC_LEN, full, sizeof(full), &outlen));
    memcpy(f + len - AE_TUNNEL_MAC_LEN, full, AE_TUNNEL_MAC_LEN);
}

static int decode(const ae_tunnel_keys *k, const uint8_t *f, size_t n, uint64_t now,
                  ae_hoff_frame *out)
{
    return ae_hoff_decode(k, f, n, now, WINDOW, out);
}

static size_t query4(const ae_tunnel_keys *k, uint8_t *frame)
{
    struct sockaddr_in c = v4("10.77.1.2", 40000), l = v4("192.0.2.10", 443);
    int n = ae_hoff_encode_query(k, 3, NOW, 77, 0x1122334455667788ull, (struct sockaddr *)&c,
                                 (struct sockaddr *)&l, frame, BUFCAP);
    assert_int_equal(n, AE_HOFF_OVERHEAD + AE_HOFF_QUERY_LEN);
    return (size_t)n;
}

/* ---- frames ---- */

static void test_query_answer_roundtrip(void **state)
{
    uint8_t frame[BUFCAP];
    ae_hoff_frame f;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    ae_tunnel_keys *k = keys_of(&r);
    size_t n = query4(k, frame);
    assert_memory_equal(frame, "AEh1", 4);
    assert_int_equal(decode(k, frame, n, NOW, &f), 0);
    assert_int_equal(f.type, AE_HOFF_QUERY);
    assert_int_equal(f.site, 3);
    assert_int_equal(f.seq, 77);
    assert_int_equal(f.qid, 0x1122334455667788ull);
    assert_int_equal(f.timestamp_ms, NOW);
    assert_int_equal(f.key_id, ae_tunnel_keys_id(k));
    assert_int_equal(f.tuple.client.sa.sa_family, AF_INET);
    assert_int_equal(ntohs(f.tuple.client.in.sin_port), 40000);
    assert_int_equal(ntohs(f.tuple.local.in.sin_port), 443);
    assert_int_equal(f.tuple.local.in.sin_addr.s_addr, inet_addr("192.0.2.10"));

    /* IPv6 answers, both verdicts. */
    struct sockaddr_in6 c6 = v6("2001:db8::2", 50000), l6 = v6("2001:db8:a::10", 443);
    for (uint8_t verdict = 0; verdict <= 1; verdict++) {
        int m = ae_hoff_encode_answer(k, 4095, NOW, 78, 9, (struct sockaddr *)&c6,
                                      (struct sockaddr *)&l6, verdict, frame, BUFCAP);
        assert_int_equal(m, AE_HOFF_OVERHEAD + AE_HOFF_ANSWER_LEN);
        assert_int_equal(decode(k, frame, (size_t)m, NOW, &f), 0);
        assert_int_equal(f.type, AE_HOFF_ANSWER);
        assert_int_equal(f.site, 4095);
        assert_int_equal(f.verdict, verdict);
        assert_int_equal(f.qid, 9);
        assert_int_equal(f.tuple.client.sa.sa_family, AF_INET6);
        assert_memory_equal(&f.tuple.client.in6.sin6_addr, &c6.sin6_addr, 16);
        assert_memory_equal(&f.tuple.local.in6.sin6_addr, &l6.sin6_addr, 16);
        assert_int_equal(f.tuple.client_len, sizeof(struct sockaddr_in6));
    }
    ae_tunnel_keys_free(k);
}

static void test_segment_roundtrip(void **state)
{
    uint8_t frame[BUFCAP], pkt[1500];
    ae_hoff_frame f;
    ae_ring r;
    (void)state;

    for (size_t i = 0; i < sizeof(pkt); i++)
        pkt[i] = (uint8_t)(i * 7);
    assert_int_equal(ae_ring_init(&r, NOW), 0);
    ae_tunnel_keys *k = keys_of(&r);
    int n = ae_hoff_encode_segment(k, 1, NOW, 5, pkt, sizeof(pkt), frame, BUFCAP);
    assert_int_equal(n, AE_HOFF_OVERHEAD + sizeof(pkt));
    assert_int_equal(decode(k, frame, (size_t)n, NOW, &f), 0);
    assert_int_equal(f.type, AE_HOFF_SEGMENT);
    assert_int_equal(f.pkt_len, sizeof(pkt));
    assert_ptr_equal(f.pkt, frame + AE_HOFF_HDR_LEN);
    assert_memory_equal(f.pkt, pkt, sizeof(pkt));

    /* In place: the packet already sits where the body goes. */
    uint8_t frame2[BUFCAP];
    memcpy(frame2 + AE_HOFF_HDR_LEN, pkt, sizeof(pkt));
    int m =
        ae_hoff_encode_segment(k, 1, NOW, 5, frame2 + AE_HOFF_HDR_LEN, sizeof(pkt), frame2, BUFCAP);
    assert_int_equal(m, n);
    assert_memory_equal(frame2, frame, (size_t)n);

    /* Smallest and largest packets. */
    static uint8_t big[AE_HOFF_OVERHEAD + AE_HOFF_SEGMENT_MAX];
    static uint8_t bigpkt[AE_HOFF_SEGMENT_MAX];
    m = ae_hoff_encode_segment(k, 1, NOW, 6, bigpkt, sizeof(bigpkt), big, sizeof(big));
    assert_int_equal(m, sizeof(big));
    assert_int_equal(decode(k, big, (size_t)m, NOW, &f), 0);
    assert_int_equal(f.pkt_len, AE_HOFF_SEGMENT_MAX);
    m = ae_hoff_encode_segment(k, 1, NOW, 7, pkt, AE_HOFF_SEGMENT_MIN, frame, BUFCAP);
    assert_int_equal(decode(k, frame, (size_t)m, NOW, &f), 0);
    ae_tunnel_keys_free(k);
}

static void test_encode_errors(void **state)
{
    uint8_t frame[BUFCAP], pkt[100] = {0};
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    ae_tunnel_keys *k = keys_of(&r);
    struct sockaddr_in c = v4("10.0.0.1", 1000), l = v4("10.0.0.2", 443), z = v4("10.0.0.3", 0);
    struct sockaddr_in6 l6 = v6("::1", 443);
    struct sockaddr *cs = (struct sockaddr *)&c, *ls = (struct sockaddr *)&l;
    assert_int_equal(ae_hoff_encode_query(k, 0, NOW, 1, 1, cs, ls, frame, BUFCAP), AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_query(k, 4096, NOW, 1, 1, cs, ls, frame, BUFCAP), AE_ERR_INVAL);
    assert_int_equal(
        ae_hoff_encode_query(k, 1, NOW, 1, 1, cs, (struct sockaddr *)&l6, frame, BUFCAP),
        AE_ERR_INVAL); /* mixed families */
    assert_int_equal(
        ae_hoff_encode_query(k, 1, NOW, 1, 1, cs, (struct sockaddr *)&z, frame, BUFCAP),
        AE_ERR_INVAL); /* port 0 */
    assert_int_equal(ae_hoff_encode_query(k, 1, NOW, 1, 1, NULL, ls, frame, BUFCAP), AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_answer(k, 1, NOW, 1, 1, cs, ls, 2, frame, BUFCAP),
                     AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_query(k, 1, NOW, 1, 1, cs, ls, frame,
                                          AE_HOFF_OVERHEAD + AE_HOFF_QUERY_LEN - 1),
                     AE_ERR_TOOBIG);
    assert_int_equal(ae_hoff_encode_segment(k, 1, NOW, 1, pkt, 19, frame, BUFCAP), AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_segment(k, 1, NOW, 1, pkt, 65536, frame, BUFCAP), AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_segment(k, 0, NOW, 1, pkt, 40, frame, BUFCAP), AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_segment(k, 1, NOW, 1, pkt, 100, frame, AE_HOFF_OVERHEAD + 99),
                     AE_ERR_TOOBIG);
    ae_tunnel_keys_free(k);
}

static void test_refusals(void **state)
{
    uint8_t frame[BUFCAP], f2[BUFCAP];
    ae_hoff_frame f;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    const ae_ring_key *rk = ae_ring_find(&r, AE_RING_CURRENT);
    ae_tunnel_keys *k = keys_of(&r);
    size_t n = query4(k, frame);

    /* MAGIC, VERSION: before anything else, also on short input. */
    memcpy(f2, frame, n);
    memcpy(f2, "AEt1", 4);
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_MAGIC);
    assert_int_equal(decode(k, f2, 4, NOW, &f), AE_TUN_ERR_MAGIC);
    memcpy(f2, frame, n);
    f2[4] = 2;
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_VERSION);
    assert_int_equal(decode(k, f2, 5, NOW, &f), AE_TUN_ERR_VERSION);

    /* SHORT: every truncation, and one byte too many. */
    for (size_t len = 0; len < n; len++) {
        int rc = decode(k, frame, len, NOW, &f);
        assert_int_equal(rc, AE_TUN_ERR_SHORT);
    }
    memcpy(f2, frame, n);
    f2[n] = 0;
    assert_int_equal(decode(k, f2, n + 1, NOW, &f), AE_TUN_ERR_SHORT);

    /* MAC: any flipped bit of header, body or tag (except magic/version, named as such). */
    for (size_t i = 6; i < n; i++) {
        memcpy(f2, frame, n);
        f2[i] ^= 0x10;
        int rc = decode(k, f2, n, NOW, &f);
        if (i >= 32 && i < 34) /* body length: the frame no longer adds up */
            assert_int_equal(rc, AE_TUN_ERR_SHORT);
        else if (i >= 8 && i < 16) /* key id: no such key */
            assert_int_equal(rc, AE_TUN_ERR_KEY);
        else
            assert_int_equal(rc, AE_TUN_ERR_MAC);
    }
    /* A frame MAC'd with the QUIC tunnel key is no hand-off frame. */
    memcpy(f2, frame, n);
    resign(rk, AE_TUNNEL_KEY_LABEL, f2, n);
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_MAC);
    /* The independent MAC with the hand-off key agrees. */
    resign(rk, AE_HOFF_KEY_LABEL, f2, n);
    assert_memory_equal(f2, frame, n);

    /* STALE both ways; the window's edges are accepted. */
    assert_int_equal(decode(k, frame, n, NOW + WINDOW, &f), 0);
    assert_int_equal(decode(k, frame, n, NOW - WINDOW, &f), 0);
    assert_int_equal(decode(k, frame, n, NOW + WINDOW + 1, &f), AE_TUN_ERR_STALE);
    assert_int_equal(decode(k, frame, n, NOW - WINDOW - 1, &f), AE_TUN_ERR_STALE);

    /* SITE 0 and 4096 (authentic). */
    const uint16_t sites[] = {0, 4096, 0xffff};
    for (size_t i = 0; i < 3; i++) {
        memcpy(f2, frame, n);
        f2[6] = (uint8_t)(sites[i] >> 8);
        f2[7] = (uint8_t)sites[i];
        resign(rk, AE_HOFF_KEY_LABEL, f2, n);
        assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_SITE);
    }

    /* TYPE: 0, 4, 9, 255. */
    const uint8_t types[] = {0, 4, 9, 255};
    for (size_t i = 0; i < 4; i++) {
        memcpy(f2, frame, n);
        f2[5] = types[i];
        resign(rk, AE_HOFF_KEY_LABEL, f2, n);
        assert_int_equal(decode(k, f2, n, NOW, &f), AE_HOFF_ERR_TYPE);
    }

    /* BODY: a query one byte short, an answer of query size, a verdict of 2, a 19-byte
     * segment: re-made with a consistent length and MAC. */
    struct {
        uint8_t type;
        size_t blen;
        uint8_t last;
    } bodies[] = {{AE_HOFF_QUERY, 43, 0}, /* a query or answer of the wrong size, a verdict > 1 */
                  {AE_HOFF_QUERY, 45, 0},   {AE_HOFF_ANSWER, 44, 0}, {AE_HOFF_ANSWER, 45, 2},
                  {AE_HOFF_SEGMENT, 19, 0}, {AE_HOFF_SEGMENT, 0, 0}};
    for (size_t i = 0; i < AE_ARRAY_LEN(bodies); i++) {
        size_t m = AE_HOFF_OVERHEAD + bodies[i].blen;
        memcpy(f2, frame, AE_HOFF_HDR_LEN + 44);
        f2[5] = bodies[i].type;
        f2[32] = (uint8_t)(bodies[i].blen >> 8);
        f2[33] = (uint8_t)bodies[i].blen;
        if (bodies[i].blen == 45)
            f2[AE_HOFF_HDR_LEN + 44] = bodies[i].last;
        resign(rk, AE_HOFF_KEY_LABEL, f2, m);
        assert_int_equal(decode(k, f2, m, NOW, &f), AE_HOFF_ERR_BODY);
    }

    /* ADDR: mixed families (client IPv4-mapped, local IPv6), port 0. */
    memcpy(f2, frame, n);
    memset(f2 + AE_HOFF_HDR_LEN + 8 + 18, 0x20, 16); /* local address: not v4-mapped */
    resign(rk, AE_HOFF_KEY_LABEL, f2, n);
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_ADDR);
    memcpy(f2, frame, n);
    f2[AE_HOFF_HDR_LEN + 8 + 16] = f2[AE_HOFF_HDR_LEN + 8 + 17] = 0; /* client port 0 */
    resign(rk, AE_HOFF_KEY_LABEL, f2, n);
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_ADDR);
    ae_tunnel_keys_free(k);
}

static void test_rotation(void **state)
{
    uint8_t frame[BUFCAP];
    ae_hoff_frame f;
    ae_ring r, o;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    ae_tunnel_keys *old = keys_of(&r);
    size_t n = query4(old, frame);
    /* One rotation later the old current key is "previous": still accepted. */
    assert_int_equal(ae_ring_rotate(&r, &r, NOW), 0);
    ae_tunnel_keys *k = keys_of(&r);
    assert_true(ae_tunnel_keys_id(k) != ae_tunnel_keys_id(old));
    assert_int_equal(decode(k, frame, n, NOW, &f), 0);
    /* Far enough later it is gone. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(ae_ring_rotate(&r, &r, NOW), 0);
    ae_tunnel_keys_free(k);
    k = keys_of(&r);
    assert_int_equal(decode(k, frame, n, NOW, &f), AE_TUN_ERR_KEY);
    /* Another ring with the same ids: the MAC does not match. */
    assert_int_equal(ae_ring_init(&o, NOW), 0);
    ae_tunnel_keys *other = keys_of(&o);
    n = query4(other, frame);
    assert_int_equal(decode(old, frame, n, NOW, &f), AE_TUN_ERR_MAC);
    ae_tunnel_keys_free(other);
    ae_tunnel_keys_free(old);
    ae_tunnel_keys_free(k);
}

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(ae_hoff_reason_name(0), "ok");
    assert_string_equal(ae_hoff_reason_name(AE_TUN_ERR_MAC), "mac");
    assert_string_equal(ae_hoff_reason_name(AE_TUN_ERR_FLAGS), "flags");
    assert_string_equal(ae_hoff_reason_name(AE_HOFF_ERR_TYPE), "type");
    assert_string_equal(ae_hoff_reason_name(AE_HOFF_ERR_BODY), "body");
    assert_string_equal(ae_hoff_reason_name(-AE_HOFF_NREASONS - 1), "?");
    assert_string_equal(ae_hoff_reason_name(1), "?");
    for (int i = 1; i <= AE_HOFF_NREASONS; i++)
        assert_string_not_equal(ae_hoff_reason_name(-i), "?");
}

/* Query over IPv6 and answer over IPv4 (the other halves of the round trips above), every
 * field, including the extremes of seq, qid and site. */
static void test_tuple_families(void **state)
{
    uint8_t frame[BUFCAP];
    ae_hoff_frame f;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    ae_tunnel_keys *k = keys_of(&r);
    struct sockaddr_in6 c6 = v6("2001:db8:1:2:3:4:5:6", 1), l6 = v6("fe80::1", 65535);
    int n = ae_hoff_encode_query(k, 1, NOW, UINT64_MAX, 0, (struct sockaddr *)&c6,
                                 (struct sockaddr *)&l6, frame, BUFCAP);
    assert_int_equal(n, AE_HOFF_OVERHEAD + AE_HOFF_QUERY_LEN);
    assert_int_equal(frame[5], AE_HOFF_QUERY);
    assert_int_equal(decode(k, frame, (size_t)n, NOW, &f), 0);
    assert_int_equal(f.type, AE_HOFF_QUERY);
    assert_int_equal(f.site, 1);
    assert_true(f.seq == UINT64_MAX);
    assert_int_equal(f.qid, 0);
    assert_int_equal(f.verdict, 0);
    assert_null(f.pkt);
    assert_int_equal(f.pkt_len, 0);
    assert_int_equal(f.tuple.client.sa.sa_family, AF_INET6);
    assert_int_equal(f.tuple.local.sa.sa_family, AF_INET6);
    assert_int_equal(f.tuple.client_len, sizeof(struct sockaddr_in6));
    assert_int_equal(f.tuple.local_len, sizeof(struct sockaddr_in6));
    assert_memory_equal(&f.tuple.client.in6.sin6_addr, &c6.sin6_addr, 16);
    assert_memory_equal(&f.tuple.local.in6.sin6_addr, &l6.sin6_addr, 16);
    assert_int_equal(ntohs(f.tuple.client.in6.sin6_port), 1);
    assert_int_equal(ntohs(f.tuple.local.in6.sin6_port), 65535);

    struct sockaddr_in c = v4("203.0.113.9", 61000), l = v4("198.51.100.1", 80);
    for (uint8_t verdict = 0; verdict <= 1; verdict++) {
        n = ae_hoff_encode_answer(k, 2048, NOW - 1, 0, UINT64_MAX, (struct sockaddr *)&c,
                                  (struct sockaddr *)&l, verdict, frame, BUFCAP);
        assert_int_equal(n, AE_HOFF_OVERHEAD + AE_HOFF_ANSWER_LEN);
        assert_int_equal(frame[5], AE_HOFF_ANSWER);
        /* the wire form: IPv4-mapped addresses, ports in network order, the verdict last */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        assert_memory_equal(frame + AE_HOFF_HDR_LEN + 8, mapped, 12);
        assert_memory_equal(frame + AE_HOFF_HDR_LEN + 8 + 18, mapped, 12);
        assert_int_equal(frame[AE_HOFF_HDR_LEN + 44], verdict);
        assert_int_equal(decode(k, frame, (size_t)n, NOW, &f), 0);
        assert_int_equal(f.type, AE_HOFF_ANSWER);
        assert_int_equal(f.site, 2048);
        assert_int_equal(f.seq, 0);
        assert_true(f.qid == UINT64_MAX);
        assert_int_equal(f.verdict, verdict);
        assert_int_equal(f.timestamp_ms, NOW - 1);
        assert_int_equal(f.tuple.client.sa.sa_family, AF_INET);
        assert_int_equal(f.tuple.local.sa.sa_family, AF_INET);
        assert_int_equal(f.tuple.client_len, sizeof(struct sockaddr_in));
        assert_int_equal(f.tuple.local_len, sizeof(struct sockaddr_in));
        assert_int_equal(f.tuple.client.in.sin_addr.s_addr, c.sin_addr.s_addr);
        assert_int_equal(f.tuple.local.in.sin_addr.s_addr, l.sin_addr.s_addr);
        assert_int_equal(f.tuple.client.in.sin_port, c.sin_port);
        assert_int_equal(f.tuple.local.in.sin_port, l.sin_port);
    }

    /* An IPv4-mapped IPv6 tuple is IPv4 on the wire, so it decodes as AF_INET (as documented). */
    struct sockaddr_in6 m1 = v6("::ffff:10.1.2.3", 1234), m2 = v6("::ffff:10.9.9.9", 443);
    n = ae_hoff_encode_query(k, 7, NOW, 1, 1, (struct sockaddr *)&m1, (struct sockaddr *)&m2, frame,
                             BUFCAP);
    assert_int_equal(decode(k, frame, (size_t)n, NOW, &f), 0);
    assert_int_equal(f.tuple.client.sa.sa_family, AF_INET);
    assert_int_equal(f.tuple.client.in.sin_addr.s_addr, inet_addr("10.1.2.3"));
    assert_int_equal(f.tuple.local.in.sin_addr.s_addr, inet_addr("10.9.9.9"));
    ae_tunnel_keys_free(k);
}

/* More encoder refusals: every encoder and bound, and the exact capacity accepted. */
static void test_encode_bounds(void **state)
{
    static uint8_t frame[AE_HOFF_OVERHEAD + AE_HOFF_SEGMENT_MAX + 1];
    static uint8_t pkt[AE_HOFF_SEGMENT_MAX + 1];
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    ae_tunnel_keys *k = keys_of(&r);
    struct sockaddr_in c = v4("10.0.0.1", 1000), l = v4("10.0.0.2", 443);
    struct sockaddr_in6 c6 = v6("2001:db8::1", 1000), z6 = v6("2001:db8::2", 0);
    struct sockaddr_un_like {
        sa_family_t family;
        char path[108];
    } unx = {AF_UNIX, "/tmp/x"};
    struct sockaddr *cs = (struct sockaddr *)&c, *ls = (struct sockaddr *)&l;
    const size_t qcap = AE_HOFF_OVERHEAD + AE_HOFF_QUERY_LEN;
    const size_t acap = AE_HOFF_OVERHEAD + AE_HOFF_ANSWER_LEN;

    /* answer: site, families, verdicts 2 and 255, capacity */
    assert_int_equal(ae_hoff_encode_answer(k, 0, NOW, 1, 1, cs, ls, 1, frame, acap), AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_answer(k, 4096, NOW, 1, 1, cs, ls, 1, frame, acap),
                     AE_ERR_INVAL);
    assert_int_equal(
        ae_hoff_encode_answer(k, 1, NOW, 1, 1, (struct sockaddr *)&c6, ls, 1, frame, acap),
        AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_answer(k, 1, NOW, 1, 1, cs, ls, 255, frame, acap),
                     AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_answer(k, 1, NOW, 1, 1, cs, ls, 1, frame, acap - 1),
                     AE_ERR_TOOBIG);
    assert_int_equal(ae_hoff_encode_answer(k, 1, NOW, 1, 1, cs, ls, 1, frame, acap), (int)acap);
    /* query: IPv6 client with IPv4 local, IPv6 port 0, a non-IP family, a NULL local */
    assert_int_equal(ae_hoff_encode_query(k, 1, NOW, 1, 1, (struct sockaddr *)&c6, ls, frame, qcap),
                     AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_query(k, 1, NOW, 1, 1, (struct sockaddr *)&c6,
                                          (struct sockaddr *)&z6, frame, qcap),
                     AE_ERR_INVAL);
    assert_int_equal(
        ae_hoff_encode_query(k, 1, NOW, 1, 1, (struct sockaddr *)&unx, ls, frame, qcap),
        AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_query(k, 1, NOW, 1, 1, cs, NULL, frame, qcap), AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_query(k, 4095, NOW, 1, 1, cs, ls, frame, qcap), (int)qcap);
    assert_int_equal(ae_hoff_encode_query(k, 1, NOW, 1, 1, cs, ls, frame, 0), AE_ERR_TOOBIG);
    /* segment: site 4096, sizes 0 / 19 / 20 / 65535 / 65536, capacity */
    assert_int_equal(ae_hoff_encode_segment(k, 4096, NOW, 1, pkt, 40, frame, sizeof(frame)),
                     AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_segment(k, 1, NOW, 1, pkt, 0, frame, sizeof(frame)),
                     AE_ERR_INVAL);
    assert_int_equal(
        ae_hoff_encode_segment(k, 1, NOW, 1, pkt, AE_HOFF_SEGMENT_MIN - 1, frame, sizeof(frame)),
        AE_ERR_INVAL);
    assert_int_equal(
        ae_hoff_encode_segment(k, 1, NOW, 1, pkt, AE_HOFF_SEGMENT_MAX + 1, frame, sizeof(frame)),
        AE_ERR_INVAL);
    assert_int_equal(ae_hoff_encode_segment(k, 1, NOW, 1, pkt, AE_HOFF_SEGMENT_MIN, frame,
                                            AE_HOFF_OVERHEAD + AE_HOFF_SEGMENT_MIN - 1),
                     AE_ERR_TOOBIG);
    assert_int_equal(ae_hoff_encode_segment(k, 1, NOW, 1, pkt, AE_HOFF_SEGMENT_MIN, frame,
                                            AE_HOFF_OVERHEAD + AE_HOFF_SEGMENT_MIN),
                     AE_HOFF_OVERHEAD + AE_HOFF_SEGMENT_MIN);
    assert_int_equal(ae_hoff_encode_segment(k, 1, NOW, 1, pkt, AE_HOFF_SEGMENT_MAX, frame,
                                            AE_HOFF_OVERHEAD + AE_HOFF_SEGMENT_MAX - 1),
                     AE_ERR_TOOBIG);
    ae_tunnel_keys_free(k);
}

/* KEY with an id the ring never had (no re-MAC needed: the key is looked up first); the two
 * frame kinds never take each other's place; more ADDR cases; the time window's extremes. */
static void test_refusals_more(void **state)
{
    uint8_t frame[BUFCAP], f2[BUFCAP];
    ae_hoff_frame f;
    ae_tunnel_hdr th;
    const uint8_t *dg;
    size_t dlen;
    ae_ring r;
    (void)state;

    assert_int_equal(ae_ring_init(&r, NOW), 0);
    const ae_ring_key *rk = ae_ring_find(&r, AE_RING_CURRENT);
    ae_tunnel_keys *k = keys_of(&r);
    size_t n = query4(k, frame);

    const uint64_t ids[] = {0, 3, 0x8000000000000001ull, UINT64_MAX};
    for (size_t i = 0; i < AE_ARRAY_LEN(ids); i++) {
        memcpy(f2, frame, n);
        for (int b = 0; b < 8; b++)
            f2[8 + b] = (uint8_t)(ids[i] >> (56 - 8 * b));
        assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_KEY);
        resign(rk, AE_HOFF_KEY_LABEL, f2, n); /* even authentic: no such key */
        assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_KEY);
    }

    /* A QUIC tunnel frame is not a hand-off frame, and a hand-off frame not a tunnel frame. */
    struct sockaddr_in c = v4("10.77.1.2", 40000), l = v4("192.0.2.10", 443);
    uint8_t dgram[44] = {0};
    int t = ae_tunnel_encode(k, 3, NOW, (struct sockaddr *)&c, (struct sockaddr *)&l, dgram,
                             sizeof(dgram), f2, sizeof(f2));
    assert_int_equal(t, AE_TUNNEL_OVERHEAD + sizeof(dgram));
    assert_int_equal(decode(k, f2, (size_t)t, NOW, &f), AE_TUN_ERR_MAGIC);
    assert_int_equal(ae_tunnel_decode(k, frame, n, NOW, WINDOW, &th, &dg, &dlen), AE_TUN_ERR_MAGIC);
    /* The same hand-off frame, authentic under the tunnel key: the MAC keys differ. */
    memcpy(f2, frame, n);
    resign(rk, AE_TUNNEL_KEY_LABEL, f2, n);
    assert_memory_not_equal(f2 + n - AE_TUNNEL_MAC_LEN, frame + n - AE_TUNNEL_MAC_LEN,
                            AE_TUNNEL_MAC_LEN);
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_MAC);

    /* ADDR, the other way round (IPv6 client, IPv4-mapped local), local port 0, an IPv4
     * address behind a near miss of the mapped prefix, and in an answer. */
    struct sockaddr_in6 c6 = v6("2001:db8::2", 50000), l6 = v6("2001:db8:a::10", 443);
    int m = ae_hoff_encode_query(k, 3, NOW, 1, 2, (struct sockaddr *)&c6, (struct sockaddr *)&l6,
                                 frame, BUFCAP);
    assert_int_equal(m, AE_HOFF_OVERHEAD + AE_HOFF_QUERY_LEN);
    memcpy(f2, frame, (size_t)m);
    memset(f2 + AE_HOFF_HDR_LEN + 8 + 18, 0, 10);
    f2[AE_HOFF_HDR_LEN + 8 + 18 + 10] = f2[AE_HOFF_HDR_LEN + 8 + 18 + 11] = 0xff;
    resign(rk, AE_HOFF_KEY_LABEL, f2, (size_t)m);
    assert_int_equal(decode(k, f2, (size_t)m, NOW, &f), AE_TUN_ERR_ADDR);
    memcpy(f2, frame, (size_t)m);
    f2[AE_HOFF_HDR_LEN + 8 + 18 + 16] = f2[AE_HOFF_HDR_LEN + 8 + 18 + 17] = 0; /* local port */
    resign(rk, AE_HOFF_KEY_LABEL, f2, (size_t)m);
    assert_int_equal(decode(k, f2, (size_t)m, NOW, &f), AE_TUN_ERR_ADDR);
    n = query4(k, frame);
    memcpy(f2, frame, n);
    f2[AE_HOFF_HDR_LEN + 8 + 11] = 0xfe; /* client ::fffe:a.b.c.d: IPv6, local still IPv4 */
    resign(rk, AE_HOFF_KEY_LABEL, f2, n);
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_ADDR);
    m = ae_hoff_encode_answer(k, 3, NOW, 1, 2, (struct sockaddr *)&c, (struct sockaddr *)&l, 1,
                              frame, BUFCAP);
    memcpy(f2, frame, (size_t)m);
    f2[AE_HOFF_HDR_LEN + 8 + 16] = f2[AE_HOFF_HDR_LEN + 8 + 17] = 0; /* client port */
    resign(rk, AE_HOFF_KEY_LABEL, f2, (size_t)m);
    assert_int_equal(decode(k, f2, (size_t)m, NOW, &f), AE_TUN_ERR_ADDR);
    /* ...whereas SEGMENT bodies are opaque: any 20 octets pass. */
    uint8_t junk[20];
    memset(junk, 0xa5, sizeof(junk));
    m = ae_hoff_encode_segment(k, 3, NOW, 1, junk, sizeof(junk), frame, BUFCAP);
    assert_int_equal(decode(k, frame, (size_t)m, NOW, &f), 0);

    /* The time window: 0 accepts only the same millisecond; no wrap-around at the extremes. */
    n = query4(k, frame);
    assert_int_equal(ae_hoff_decode(k, frame, n, NOW, 0, &f), 0);
    assert_int_equal(ae_hoff_decode(k, frame, n, NOW + 1, 0, &f), AE_TUN_ERR_STALE);
    assert_int_equal(ae_hoff_decode(k, frame, n, NOW - 1, 0, &f), AE_TUN_ERR_STALE);
    assert_int_equal(ae_hoff_decode(k, frame, n, 0, WINDOW, &f), AE_TUN_ERR_STALE);
    assert_int_equal(ae_hoff_decode(k, frame, n, UINT64_MAX, WINDOW, &f), AE_TUN_ERR_STALE);
    assert_int_equal(ae_hoff_decode(k, frame, n, 0, UINT64_MAX, &f), 0);
    memcpy(f2, frame, n);
    memset(f2 + 16, 0xff, 8); /* timestamp UINT64_MAX */
    resign(rk, AE_HOFF_KEY_LABEL, f2, n);
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_STALE);
    assert_int_equal(decode(k, f2, n, UINT64_MAX, &f), 0);
    /* STALE comes before SITE and TYPE: all three wrong reads as STALE. */
    f2[5] = 9;
    f2[6] = f2[7] = 0;
    resign(rk, AE_HOFF_KEY_LABEL, f2, n);
    assert_int_equal(decode(k, f2, n, NOW, &f), AE_TUN_ERR_STALE);
    /* ...and SITE before TYPE. */
    assert_int_equal(decode(k, f2, n, UINT64_MAX, &f), AE_TUN_ERR_SITE);
    ae_tunnel_keys_free(k);
}

/* A site one rotation ahead: its current key is our next, and ours is its previous. */
static void test_rotation_ahead(void **state)
{
    uint8_t frame[BUFCAP];
    ae_hoff_frame f;
    ae_ring r0, r1, r2;
    (void)state;

    assert_int_equal(ae_ring_init(&r0, NOW), 0);
    assert_int_equal(ae_ring_rotate(&r0, &r1, NOW), 0);
    assert_int_equal(ae_ring_rotate(&r1, &r2, NOW), 0);
    ae_tunnel_keys *k0 = keys_of(&r0), *k1 = keys_of(&r1), *k2 = keys_of(&r2);

    size_t n = query4(k1, frame);
    assert_int_equal(decode(k0, frame, n, NOW, &f), 0); /* next */
    assert_int_equal(f.key_id, ae_tunnel_keys_id(k1));
    assert_int_equal(decode(k1, frame, n, NOW, &f), 0); /* current */
    assert_int_equal(decode(k2, frame, n, NOW, &f), 0); /* previous */
    n = query4(k2, frame);
    assert_int_equal(decode(k0, frame, n, NOW, &f), AE_TUN_ERR_KEY); /* two ahead */
    n = query4(k0, frame);
    assert_int_equal(decode(k2, frame, n, NOW, &f), AE_TUN_ERR_KEY); /* two behind */
    ae_tunnel_keys_free(k0);
    ae_tunnel_keys_free(k1);
    ae_tunnel_keys_free(k2);
}

static void test_reason_names_all(void **state)
{
    static const char *const want[] = {"ok",    "short", "magic", "version", "key",  "mac",
                                       "stale", "site",  "addr",  "flags",   "type", "body"};
    (void)state;
    assert_int_equal(AE_ARRAY_LEN(want), AE_HOFF_NREASONS + 1);
    for (int i = 0; i <= AE_HOFF_NREASONS; i++)
        assert_string_equal(ae_hoff_reason_name(-i), want[i]);
    assert_string_equal(ae_hoff_reason_name(-12), "?");
    assert_string_equal(ae_hoff_reason_name(-1000), "?");
    assert_string_equal(ae_hoff_reason_name(2), "?");
    /* The QUIC tunnel's names stop before the hand-off's own. */
    assert_string_equal(ae_tunnel_reason_name(AE_HOFF_ERR_TYPE), "?");
}

/* ---- anti-replay window ---- */

static void test_replay_basic(void **state)
{
    ae_replay w;
    (void)state;
    memset(&w, 0, sizeof(w));
    assert_int_equal(ae_replay_check(&w, 0), 0); /* zeroed struct, first number 0 */
    assert_int_equal(ae_replay_check(&w, 0), -1);
    assert_int_equal(ae_replay_check(&w, 5), 0);
    assert_int_equal(ae_replay_check(&w, 3), 0); /* late, inside the window: once */
    assert_int_equal(ae_replay_check(&w, 3), -1);
    assert_int_equal(ae_replay_check(&w, 5), -1);
    assert_int_equal(ae_replay_check(&w, 4), 0);
    assert_int_equal(ae_replay_check(&w, 6), 0);
}

static void test_replay_edges(void **state)
{
    ae_replay w;
    (void)state;
    memset(&w, 0, sizeof(w));
    const uint64_t top = 1000000000000ull;
    assert_int_equal(ae_replay_check(&w, top), 0);
    assert_int_equal(ae_replay_check(&w, top - (AE_REPLAY_WINDOW - 1)), 0);
    assert_int_equal(ae_replay_check(&w, top - (AE_REPLAY_WINDOW - 1)), -1);
    assert_int_equal(ae_replay_check(&w, top - AE_REPLAY_WINDOW), -1); /* too old */
    assert_int_equal(ae_replay_check(&w, 1), -1);
    /* Moving forward recycles bits: a number seen a window ago must not block its successor
     * in the same bit position. */
    assert_int_equal(ae_replay_check(&w, top + AE_REPLAY_WINDOW - 1), 0);
    assert_int_equal(ae_replay_check(&w, top + 1), 0);
    assert_int_equal(ae_replay_check(&w, top), -1); /* now too old */
    /* A large jump clears everything. */
    assert_int_equal(ae_replay_check(&w, top + 100 * AE_REPLAY_WINDOW), 0);
    assert_int_equal(ae_replay_check(&w, top + 100 * AE_REPLAY_WINDOW - 1), 0);
    assert_int_equal(ae_replay_check(&w, top + 100 * AE_REPLAY_WINDOW - 1), -1);
}

/* Against a model: a set of every number seen, numbers drawn around a moving top. */
static void test_replay_model(void **state)
{
    ae_replay w;
    static uint8_t seen[1 << 20];
    (void)state;
    memset(&w, 0, sizeof(w));
    memset(seen, 0, sizeof(seen));
    uint64_t top = 0;
    int init = 0;
    srand(7);
    for (int i = 0; i < 200000; i++) {
        uint64_t base = top > 2000 ? top - 2000 : 0;
        uint64_t n = base + (uint64_t)(rand() % 2100);
        assert_true(n < sizeof(seen));
        int want;
        if (!init || n > top)
            want = 0;
        else if (top - n >= AE_REPLAY_WINDOW || seen[n])
            want = -1;
        else
            want = 0;
        assert_int_equal(ae_replay_check(&w, n), want);
        if (want == 0) {
            seen[n] = 1;
            if (!init || n > top)
                top = n;
            init = 1;
        }
    }
}

/* The forward step exactly at the window: a step of WINDOW - 1 keeps what the window still
 * covers, a step of WINDOW forgets it all; numbers near UINT64_MAX. */
static void test_replay_steps(void **state)
{
    ae_replay w;
    (void)state;
    const uint64_t t = 5000;

    memset(&w, 0, sizeof(w));
    assert_int_equal(ae_replay_check(&w, t), 0);
    assert_int_equal(ae_replay_check(&w, t - 1), 0);
    assert_int_equal(ae_replay_check(&w, t + AE_REPLAY_WINDOW - 1), 0);
    assert_int_equal(ae_replay_check(&w, t), -1);     /* top - 1023: still seen */
    assert_int_equal(ae_replay_check(&w, t - 1), -1); /* top - 1024: too old */
    assert_int_equal(ae_replay_check(&w, t + 1), 0);  /* unseen, inside */

    memset(&w, 0, sizeof(w));
    assert_int_equal(ae_replay_check(&w, t), 0);
    assert_int_equal(ae_replay_check(&w, t + AE_REPLAY_WINDOW), 0);
    assert_int_equal(ae_replay_check(&w, t), -1); /* exactly a window behind */
    assert_int_equal(ae_replay_check(&w, t + 1), 0);
    assert_int_equal(ae_replay_check(&w, t + 1), -1);

    /* Every number of a full window, in reverse, then each again. */
    memset(&w, 0, sizeof(w));
    for (uint64_t i = 0; i < AE_REPLAY_WINDOW; i++)
        assert_int_equal(ae_replay_check(&w, t + AE_REPLAY_WINDOW - 1 - i), 0);
    for (uint64_t i = 0; i < AE_REPLAY_WINDOW; i++)
        assert_int_equal(ae_replay_check(&w, t + i), -1);

    /* The top of the number space. */
    memset(&w, 0, sizeof(w));
    assert_int_equal(ae_replay_check(&w, UINT64_MAX - 10), 0);
    assert_int_equal(ae_replay_check(&w, UINT64_MAX), 0);
    assert_int_equal(ae_replay_check(&w, UINT64_MAX), -1);
    assert_int_equal(ae_replay_check(&w, UINT64_MAX - 10), -1);
    assert_int_equal(ae_replay_check(&w, UINT64_MAX - 9), 0);
    assert_int_equal(ae_replay_check(&w, UINT64_MAX - (AE_REPLAY_WINDOW - 1)), 0);
    assert_int_equal(ae_replay_check(&w, UINT64_MAX - AE_REPLAY_WINDOW), -1);
    assert_int_equal(ae_replay_check(&w, 0), -1);

    /* A zeroed struct starting above 0: numbers below the first, inside the window, are new. */
    memset(&w, 0, sizeof(w));
    assert_int_equal(ae_replay_check(&w, 10), 0);
    assert_int_equal(ae_replay_check(&w, 0), 0);
    assert_int_equal(ae_replay_check(&w, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_answer_roundtrip),
        cmocka_unit_test(test_segment_roundtrip),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_tuple_families),
        cmocka_unit_test(test_encode_bounds),
        cmocka_unit_test(test_refusals_more),
        cmocka_unit_test(test_rotation_ahead),
        cmocka_unit_test(test_reason_names_all),
        cmocka_unit_test(test_replay_basic),
        cmocka_unit_test(test_replay_edges),
        cmocka_unit_test(test_replay_model),
        cmocka_unit_test(test_replay_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
