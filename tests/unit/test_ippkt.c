/*
 * Unit tests for the hand-off's IP/TCP packet checks (proxy/handoff/ippkt.h): IPv4 with and
 * without options, IPv6, every refusal reason, TCP checksum states (valid, partial as checksum
 * offload leaves it, bad) against an independent checksum, and truncation at every length.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "proxy/handoff/ippkt.h"

/* ---- an independent packet builder ---- */

static uint32_t add16(const uint8_t *d, size_t n, uint32_t s)
{
    for (size_t i = 0; i < n; i++)
        s += (i % 2 == 0) ? (uint32_t)d[i] << 8 : d[i];
    return s;
}

static uint16_t finish(uint32_t s)
{
    while (s > 0xffff)
        s = (s >> 16) + (s & 0xffff);
    return (uint16_t)~s;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Writes a TCP header (data offset doff words) + payload at t; returns its length. */
static size_t tcp_at(uint8_t *t, uint16_t sport, uint16_t dport, uint8_t flags, unsigned doff,
                     size_t plen)
{
    memset(t, 0, doff * 4);
    put16(t, sport);
    put16(t + 2, dport);
    t[12] = (uint8_t)(doff << 4);
    t[13] = flags;
    put16(t + 14, 65535);
    for (size_t i = 0; i < plen; i++)
        t[doff * 4 + i] = (uint8_t)(i * 13 + 1);
    return doff * 4 + plen;
}

/* The full checksum over the pseudo header (src/dst of alen octets) and the segment. */
static uint16_t tcp_sum(const uint8_t *src, const uint8_t *dst, size_t alen, uint8_t *t,
                        size_t tlen)
{
    uint8_t ph[4] = {0, 6, (uint8_t)(tlen >> 8), (uint8_t)tlen};
    uint32_t s = add16(src, alen, 0);
    s = add16(dst, alen, s);
    s = add16(ph, 4, s);
    t[16] = t[17] = 0;
    return finish(add16(t, tlen, s));
}

/* IPv4 packet: ihl words of header, TCP with valid checksums. Returns the length. */
static size_t pkt4(uint8_t *p, unsigned ihl, uint8_t flags, size_t plen)
{
    memset(p, 0, ihl * 4);
    p[0] = (uint8_t)(0x40 | ihl);
    p[8] = 64;
    p[9] = 6;
    inet_pton(AF_INET, "10.77.1.2", p + 12);
    inet_pton(AF_INET, "192.0.2.10", p + 16);
    size_t tl = tcp_at(p + ihl * 4, 40000, 443, flags, 5, plen);
    put16(p + 2, (uint16_t)(ihl * 4 + tl));
    put16(p + 6, 0x4000); /* DF */
    put16(p + ihl * 4 + 16, tcp_sum(p + 12, p + 16, 4, p + ihl * 4, tl));
    put16(p + 10, finish(add16(p, ihl * 4, 0)));
    return ihl * 4 + tl;
}

static size_t pkt6(uint8_t *p, uint8_t flags, size_t plen)
{
    memset(p, 0, 40);
    p[0] = 0x60;
    p[6] = 6;
    p[7] = 64;
    inet_pton(AF_INET6, "2001:db8::2", p + 8);
    inet_pton(AF_INET6, "2001:db8:a::10", p + 24);
    size_t tl = tcp_at(p + 40, 50000, 8443, flags, 8, plen);
    put16(p + 4, (uint16_t)tl);
    put16(p + 40 + 16, tcp_sum(p + 8, p + 24, 16, p + 40, tl));
    return 40 + tl;
}

/* ---- tests ---- */

static void test_ipv4(void **state)
{
    uint8_t p[2048];
    ae_ippkt k;
    (void)state;
    for (unsigned ihl = 5; ihl <= 15; ihl += 1) {
        size_t n = pkt4(p, ihl, TH_ACK | TH_PUSH, 100);
        assert_int_equal(ae_ippkt_parse(p, n, &k), 0);
        assert_int_equal(k.family, AF_INET);
        assert_int_equal(k.sport, 40000);
        assert_int_equal(k.dport, 443);
        assert_int_equal(k.tcp_flags, TH_ACK | TH_PUSH);
        assert_int_equal(k.l4_off, ihl * 4);
        assert_int_equal(k.l4_off + k.l4_len, n);
        assert_memory_equal(k.src, p + 12, 4);
        assert_memory_equal(k.dst, p + 16, 4);
        assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_OK);
    }
}

static void test_ipv6(void **state)
{
    uint8_t p[2048];
    ae_ippkt k;
    (void)state;
    size_t n = pkt6(p, TH_SYN | TH_ACK, 1000);
    assert_int_equal(ae_ippkt_parse(p, n, &k), 0);
    assert_int_equal(k.family, AF_INET6);
    assert_int_equal(k.sport, 50000);
    assert_int_equal(k.dport, 8443);
    assert_int_equal(k.tcp_flags, TH_SYN | TH_ACK);
    assert_int_equal(k.l4_off, 40);
    assert_int_equal(k.l4_len, n - 40);
    assert_memory_equal(k.src, p + 8, 16);
    assert_memory_equal(k.dst, p + 24, 16);
    assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_OK);
}

static void test_refusals(void **state)
{
    uint8_t p[2048], q[2048];
    ae_ippkt k;
    (void)state;
    size_t n = pkt4(p, 5, TH_ACK, 10);

    assert_int_equal(ae_ippkt_parse(p, 19, &k), AE_IPPKT_ERR_SHORT);
    assert_int_equal(ae_ippkt_parse(p, 0, &k), AE_IPPKT_ERR_SHORT);
    memcpy(q, p, n);
    q[0] = 0x55; /* version 5 */
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_VERSION);
    q[0] = 0x44; /* IHL 4 */
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_VERSION);
    /* total length not the buffer's, both ways; IHL beyond the buffer */
    assert_int_equal(ae_ippkt_parse(p, n - 1, &k), AE_IPPKT_ERR_LENGTH);
    memcpy(q, p, n);
    q[n] = 0;
    assert_int_equal(ae_ippkt_parse(q, n + 1, &k), AE_IPPKT_ERR_LENGTH);
    memcpy(q, p, n);
    q[0] = 0x4f;
    assert_int_equal(ae_ippkt_parse(q, 40, &k), AE_IPPKT_ERR_LENGTH);
    /* UDP */
    memcpy(q, p, n);
    q[9] = 17;
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_PROTO);
    /* fragments: MF, an offset */
    memcpy(q, p, n);
    put16(q + 6, 0x2000);
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_FRAGMENT);
    put16(q + 6, 0x0001);
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_FRAGMENT);
    put16(q + 6, 0x4000); /* DF alone is fine */
    assert_int_equal(ae_ippkt_parse(q, n, &k), 0);
    /* TCP data offset < 5, and beyond the packet; a TCP header cut short */
    memcpy(q, p, n);
    q[20 + 12] = 4 << 4;
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_TCP);
    q[20 + 12] = 15 << 4; /* 60 > 30 octets of segment */
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_TCP);
    memcpy(q, p, n);
    put16(q + 2, 30);
    assert_int_equal(ae_ippkt_parse(q, 30, &k), AE_IPPKT_ERR_TCP);
    /* IPv6: next header not TCP (an extension header), payload length off */
    size_t m = pkt6(p, TH_ACK, 10);
    memcpy(q, p, m);
    q[6] = 0; /* hop-by-hop */
    assert_int_equal(ae_ippkt_parse(q, m, &k), AE_IPPKT_ERR_PROTO);
    q[6] = 17;
    assert_int_equal(ae_ippkt_parse(q, m, &k), AE_IPPKT_ERR_PROTO);
    assert_int_equal(ae_ippkt_parse(p, m - 1, &k), AE_IPPKT_ERR_LENGTH);
    assert_int_equal(ae_ippkt_parse(p, 39, &k), AE_IPPKT_ERR_SHORT);
    memcpy(q, p, m);
    put16(q + 4, 10);
    assert_int_equal(ae_ippkt_parse(q, 50, &k), AE_IPPKT_ERR_TCP);
}

static void test_checksum_states(void **state)
{
    uint8_t p[2048];
    ae_ippkt k;
    (void)state;
    /* odd and even payload sizes, both families */
    for (size_t plen = 0; plen < 40; plen += 7) {
        for (int fam = 0; fam < 2; fam++) {
            size_t n = fam ? pkt6(p, TH_ACK, plen) : pkt4(p, 5, TH_ACK, plen);
            assert_int_equal(ae_ippkt_parse(p, n, &k), 0);
            uint8_t *t = p + k.l4_off;
            uint16_t good = (uint16_t)(t[16] << 8 | t[17]);
            assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_OK);

            /* Partial, as offload leaves it: the folded pseudo-header sum, not complemented. */
            size_t alen = fam ? 16 : 4;
            const uint8_t *src = fam ? p + 8 : p + 12, *dst = fam ? p + 24 : p + 16;
            uint8_t ph[4] = {0, 6, (uint8_t)(k.l4_len >> 8), (uint8_t)k.l4_len};
            uint16_t partial =
                (uint16_t)~finish(add16(ph, 4, add16(dst, alen, add16(src, alen, 0))));
            put16(t + 16, partial);
            assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_PARTIAL);
            ae_ippkt_tcp_csum_fill(p, &k);
            assert_int_equal(t[16] << 8 | t[17], good);
            assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_OK);

            /* Bad: a flipped payload (or header) bit. */
            t[plen > 0 ? 20 + (fam ? 12 : 0) : 15] ^= 0x04;
            assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_BAD);
        }
    }
}

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(ae_ippkt_reason_name(0), "ok");
    assert_string_equal(ae_ippkt_reason_name(AE_IPPKT_ERR_SHORT), "short");
    assert_string_equal(ae_ippkt_reason_name(AE_IPPKT_ERR_FRAGMENT), "fragment");
    assert_string_equal(ae_ippkt_reason_name(AE_IPPKT_ERR_TCP), "tcp");
    assert_string_equal(ae_ippkt_reason_name(-7), "?");
    assert_string_equal(ae_ippkt_reason_name(1), "?");
}

/* Random packets cut at every length: never a read past the end (ASan), and a parse either
 * fails or describes exactly the buffer. */
static void test_truncation_random(void **state)
{
    uint8_t p[2048];
    ae_ippkt k;
    (void)state;
    srand(11);
    for (int round = 0; round < 200; round++) {
        size_t plen = (size_t)(rand() % 300);
        size_t n = (round % 3 == 0) ? pkt6(p, (uint8_t)rand(), plen)
                                    : pkt4(p, 5 + (unsigned)(rand() % 11), (uint8_t)rand(), plen);
        if (round % 5 == 0) /* and some random bytes in the header */
            p[rand() % 60] = (uint8_t)rand();
        for (size_t len = 0; len <= n; len++) {
            uint8_t *b = malloc(len ? len : 1); /* exact size: ASan sees any overread */
            assert_non_null(b);
            memcpy(b, p, len);
            int rc = ae_ippkt_parse(b, len, &k);
            if (rc == 0) {
                assert_int_equal(k.l4_off + k.l4_len, len);
                assert_true(k.l4_len >= 20);
                (void)ae_ippkt_tcp_csum_state(b, &k);
            } else {
                assert_true(rc < 0 && rc >= -6);
            }
            free(b);
        }
    }
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* The folded (not complemented) ones' complement sum, as the independent builder sees it. */
static uint16_t fold16(uint32_t s)
{
    return (uint16_t)~finish(s);
}

/* More refusals and acceptances at the boundaries. */
static void test_boundaries(void **state)
{
    uint8_t p[2048], q[2048];
    ae_ippkt k;
    (void)state;

    /* version nibbles other than 4 and 6, with a plausible length */
    size_t n = pkt4(p, 5, TH_ACK, 10);
    const uint8_t versions[] = {0x05, 0x15, 0x55, 0x75, 0xf5};
    for (size_t i = 0; i < sizeof(versions); i++) {
        memcpy(q, p, n);
        q[0] = versions[i];
        assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_VERSION);
    }
    for (uint8_t ihl = 0; ihl < 5; ihl++) {
        memcpy(q, p, n);
        q[0] = (uint8_t)(0x40 | ihl);
        assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_VERSION);
    }
    /* IPv4: total length shorter than the header it declares (IHL 6, 22 octets) */
    n = pkt4(p, 6, TH_ACK, 0);
    memcpy(q, p, n);
    put16(q + 2, 22);
    assert_int_equal(ae_ippkt_parse(q, 22, &k), AE_IPPKT_ERR_LENGTH);
    /* IPv4: other protocols; a fragment with DF and MF; the last fragment (offset only) */
    n = pkt4(p, 5, TH_ACK, 10);
    const uint8_t protos[] = {0, 1, 17, 41, 132, 255};
    for (size_t i = 0; i < sizeof(protos); i++) {
        memcpy(q, p, n);
        q[9] = protos[i];
        assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_PROTO);
    }
    memcpy(q, p, n);
    put16(q + 6, 0x6000);
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_FRAGMENT);
    put16(q + 6, 0x1fff);
    assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_FRAGMENT);
    put16(q + 6, 0x8000); /* the reserved bit is no fragment */
    assert_int_equal(ae_ippkt_parse(q, n, &k), 0);
    /* the largest headers: IHL 15 and data offset 15, no payload, fit exactly */
    pkt4(p, 15, TH_SYN, 0);
    p[60 + 12] = 15 << 4;
    memset(p + 60 + 20, 1, 40); /* NOP options */
    put16(p + 2, 120);
    assert_int_equal(ae_ippkt_parse(p, 120, &k), 0);
    assert_int_equal(k.l4_off, 60);
    assert_int_equal(k.l4_len, 60);
    p[60 + 12] = 0; /* data offset 0 */
    assert_int_equal(ae_ippkt_parse(p, 120, &k), AE_IPPKT_ERR_TCP);

    /* IPv6: a buffer longer than the payload length, extension headers, the fixed header
     * alone; traffic class and flow label do not matter */
    n = pkt6(p, TH_ACK, 10);
    memcpy(q, p, n);
    q[n] = 0;
    assert_int_equal(ae_ippkt_parse(q, n + 1, &k), AE_IPPKT_ERR_LENGTH);
    const uint8_t nexts[] = {0, 17, 43, 44, 50, 59, 60};
    for (size_t i = 0; i < sizeof(nexts); i++) {
        memcpy(q, p, n);
        q[6] = nexts[i];
        assert_int_equal(ae_ippkt_parse(q, n, &k), AE_IPPKT_ERR_PROTO);
    }
    memcpy(q, p, n);
    put16(q + 4, 0);
    assert_int_equal(ae_ippkt_parse(q, 40, &k), AE_IPPKT_ERR_TCP);
    memcpy(q, p, n);
    q[0] = 0x6f;
    q[1] = q[2] = q[3] = 0xff;
    assert_int_equal(ae_ippkt_parse(q, n, &k), 0);
    assert_int_equal(k.family, AF_INET6);
    /* an IPv6 packet of 20..39 octets is short, not a length mismatch */
    for (size_t len = 20; len < 40; len++)
        assert_int_equal(ae_ippkt_parse(p, len, &k), AE_IPPKT_ERR_SHORT);
    for (size_t len = 0; len < 20; len++)
        assert_int_equal(ae_ippkt_parse(p, len, &k), AE_IPPKT_ERR_SHORT);
    assert_int_equal(ae_ippkt_parse(NULL, 0, &k), AE_IPPKT_ERR_SHORT); /* reads nothing */
}

/* The ones' complement corner: 0x0000 and 0xffff are the same number. */
static void test_checksum_zero(void **state)
{
    uint8_t p[256];
    ae_ippkt k;
    (void)state;

    /* A pseudo-header sum of 0xffff: offload may leave 0xffff or 0x0000 in the field. */
    size_t n = pkt4(p, 5, TH_ACK, 33);
    put16(p + 14, 0);
    uint32_t s = add16(p + 12, 8, 0);
    uint8_t ph[4] = {0, 6, (uint8_t)((n - 20) >> 8), (uint8_t)(n - 20)};
    put16(p + 14, (uint16_t)(0xffff - fold16(add16(ph, 4, s))));
    assert_int_equal(fold16(add16(ph, 4, add16(p + 12, 8, 0))), 0xffff);
    uint16_t good = tcp_sum(p + 12, p + 16, 4, p + 20, n - 20);
    assert_int_equal(ae_ippkt_parse(p, n, &k), 0);
    const uint16_t partials[] = {0xffff, 0x0000};
    for (size_t i = 0; i < 2; i++) {
        put16(p + 20 + 16, partials[i]);
        assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_PARTIAL);
        ae_ippkt_tcp_csum_fill(p, &k);
        assert_int_equal(get16(p + 20 + 16), good);
        assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_OK);
    }

    /* A segment whose checksum is 0x0000 (TCP sends it as is): both forms are valid. */
    n = pkt6(p, TH_ACK, 20);
    uint8_t *t = p + 40;
    put16(t + 32, 0);
    tcp_sum(p + 8, p + 24, 16, t, n - 40); /* zeroes the field */
    uint8_t ph6[4] = {0, 6, (uint8_t)((n - 40) >> 8), (uint8_t)(n - 40)};
    uint32_t rest = add16(t, n - 40, add16(ph6, 4, add16(p + 24, 16, add16(p + 8, 16, 0))));
    put16(t + 32, (uint16_t)(0xffff - fold16(rest)));
    assert_int_equal(tcp_sum(p + 8, p + 24, 16, t, n - 40), 0);
    assert_int_equal(ae_ippkt_parse(p, n, &k), 0);
    assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_OK);
    put16(t + 16, 0xffff);
    assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_OK);
    ae_ippkt_tcp_csum_fill(p, &k);
    assert_int_equal(get16(t + 16), 0);

    /* fill repairs any bad checksum */
    n = pkt4(p, 7, TH_FIN, 51);
    assert_int_equal(ae_ippkt_parse(p, n, &k), 0);
    good = get16(p + 28 + 16);
    put16(p + 28 + 16, (uint16_t)(good ^ 0x0101));
    assert_int_equal(ae_ippkt_tcp_csum_state(p, &k), AE_CSUM_BAD);
    ae_ippkt_tcp_csum_fill(p, &k);
    assert_int_equal(get16(p + 28 + 16), good);
}

/* What parse must say for template p (valid, ihl header words, or IPv6 when ihl is 0) cut to
 * len octets with its length field made to match: an independent statement of the rules. */
static int expect_cut(const uint8_t *p, unsigned ihl, size_t len)
{
    size_t hl = ihl ? ihl * 4 : 40;
    if (len < 20 || (!ihl && len < 40))
        return AE_IPPKT_ERR_SHORT;
    if (hl > len)
        return AE_IPPKT_ERR_LENGTH;
    if (len - hl < 20)
        return AE_IPPKT_ERR_TCP;
    size_t doff = (size_t)(p[hl + 12] >> 4) * 4;
    return doff < 20 || doff > len - hl ? AE_IPPKT_ERR_TCP : 0;
}

/* Truncation with the length field kept consistent, so that the cut reaches the TCP checks;
 * exact-size buffers (ASan); then buffers of random octets. */
static void test_truncation_consistent(void **state)
{
    uint8_t p[2048];
    ae_ippkt k;
    (void)state;
    srand(12345);
    for (int round = 0; round < 200; round++) {
        size_t plen = (size_t)(rand() % 200);
        unsigned ihl = (round % 3 == 0) ? 0 : 5 + (unsigned)(rand() % 11);
        uint8_t flags = (uint8_t)rand();
        size_t n = ihl ? pkt4(p, ihl, flags, plen) : pkt6(p, flags, plen);
        uint8_t *tcp = p + (ihl ? ihl * 4 : 40);
        if (round % 4 == 1) /* a data offset that may not fit */
            tcp[12] = (uint8_t)((rand() & 0xf) << 4);
        for (size_t len = 0; len <= n; len++) {
            uint8_t *b = malloc(len ? len : 1);
            assert_non_null(b);
            memcpy(b, p, len);
            if (ihl && len >= 4)
                put16(b + 2, (uint16_t)len);
            else if (!ihl && len >= 6)
                put16(b + 4, (uint16_t)(len >= 40 ? len - 40 : 0));
            int want = expect_cut(p, ihl, len), rc = ae_ippkt_parse(b, len, &k);
            assert_int_equal(rc, want);
            if (rc == 0) {
                assert_int_equal(k.family, ihl ? AF_INET : AF_INET6);
                assert_int_equal(k.l4_off, ihl ? ihl * 4 : 40);
                assert_int_equal(k.l4_off + k.l4_len, len);
                assert_int_equal(k.sport, ihl ? 40000 : 50000);
                assert_int_equal(k.tcp_flags, flags);
                assert_memory_equal(k.src, ihl ? p + 12 : p + 8, ihl ? 4 : 16);
                (void)ae_ippkt_tcp_csum_state(b, &k);
                ae_ippkt_tcp_csum_fill(b, &k);
                assert_int_equal(ae_ippkt_tcp_csum_state(b, &k), AE_CSUM_OK);
                uint8_t *bt = b + k.l4_off;
                uint16_t c = get16(bt + 16);
                assert_int_equal(ihl ? tcp_sum(b + 12, b + 16, 4, bt, k.l4_len)
                                     : tcp_sum(b + 8, b + 24, 16, bt, k.l4_len),
                                 c);
            }
            free(b);
        }
    }
    /* random octets, with a version nibble of 4 or 6 half of the time */
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)(rand() % 128);
        uint8_t *b = malloc(len ? len : 1);
        assert_non_null(b);
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)rand();
        if (len > 0 && round % 2)
            b[0] = (uint8_t)((round % 4 == 1 ? 0x40 : 0x60) | (b[0] & 0x0f));
        if (len >= 6 && round % 8 == 1)
            put16(b + 2, (uint16_t)len);
        if (len >= 6 && round % 8 == 3)
            put16(b + 4, (uint16_t)(len >= 40 ? len - 40 : 0));
        int rc = ae_ippkt_parse(b, len, &k);
        if (rc == 0) {
            assert_int_equal(k.l4_off + k.l4_len, len);
            assert_true(k.l4_len >= 20);
            (void)ae_ippkt_tcp_csum_state(b, &k);
        } else {
            assert_true(rc < 0 && rc >= AE_IPPKT_ERR_TCP);
            assert_string_not_equal(ae_ippkt_reason_name(rc), "?");
        }
        free(b);
    }
}

static void test_reason_names_all(void **state)
{
    static const char *const want[] = {"ok",    "short",    "version", "length",
                                       "proto", "fragment", "tcp"};
    (void)state;
    for (int i = 0; i <= 6; i++)
        assert_string_equal(ae_ippkt_reason_name(-i), want[i]);
    assert_int_equal(AE_IPPKT_ERR_TCP, -6);
    assert_string_equal(ae_ippkt_reason_name(-1000), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_checksum_states),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_truncation_random),
        cmocka_unit_test(test_boundaries),
        cmocka_unit_test(test_checksum_zero),
        cmocka_unit_test(test_truncation_consistent),
        cmocka_unit_test(test_reason_names_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
