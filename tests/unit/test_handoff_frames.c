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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_answer_roundtrip),
        cmocka_unit_test(test_segment_roundtrip),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_replay_basic),
        cmocka_unit_test(test_replay_edges),
        cmocka_unit_test(test_replay_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
