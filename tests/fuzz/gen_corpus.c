/*
 * Writes the seed corpora of tests/fuzz/corpus/ (docs/fuzzing.md): small valid inputs for each
 * harness, binary ones (tunnel and hand-off frames, CIDs, sealed rings, affinity cookies, packets)
 * made with the
 * project's own encoders and the fixed test keys of fuzz_common.h. Built with the harnesses;
 * run from the repository root after a format change, and commit the result:
 *
 *   build-fuzz/tests/fuzz/fuzz_gen_corpus tests/fuzz/corpus
 *
 * Rerunning changes the sealed rings and CIDs only (random nonces).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <sys/stat.h>

#include "conf/base.h"
#include "state/affcookie.h"
#include "state/cid.h"
#include "state/ring.h"
#include "state/tunnel.h"
#include "tests/fuzz/fuzz_common.h"

static const char *root;

static void put(const char *harness, const char *name, const void *data, size_t len)
{
    char path[512];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", root, harness);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", root, harness, name);
    if ((f = fopen(path, "wb")) == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void put_str(const char *harness, const char *name, const char *s)
{
    put(harness, name, s, strlen(s));
}

/* mode octet + data */
static void put_mode(const char *harness, const char *name, uint8_t mode, const void *data,
                     size_t len)
{
    uint8_t *b = malloc(len + 1);
    if (b == NULL)
        exit(1);
    b[0] = mode;
    memcpy(b + 1, data, len);
    put(harness, name, b, len + 1);
    free(b);
}

static struct sockaddr_in sin4(const char *ip, uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct sockaddr_in6 sin6(const char *ip, uint16_t port)
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

/* IPv4 (ihl words of header) or IPv6 packet with a TCP header of doff words and plen payload
 * octets; returns its length. */
static size_t tcp_packet(uint8_t *p, int v6, int ihl, int doff, size_t plen, uint8_t flags)
{
    size_t iphl = v6 ? 40 : (size_t)ihl * 4, tl = (size_t)doff * 4 + plen, len = iphl + tl;
    memset(p, 0, len);
    if (v6) {
        p[0] = 0x60;
        p[4] = (uint8_t)(tl >> 8);
        p[5] = (uint8_t)tl;
        p[6] = 6; /* TCP */
        p[7] = 64;
        inet_pton(AF_INET6, "2001:db8::1", p + 8);
        inet_pton(AF_INET6, "2001:db8::a", p + 24);
    } else {
        p[0] = (uint8_t)(0x40 | ihl);
        p[2] = (uint8_t)(len >> 8);
        p[3] = (uint8_t)len;
        p[6] = 0x40; /* DF */
        p[8] = 64;
        p[9] = 6;
        inet_pton(AF_INET, "198.51.100.7", p + 12);
        inet_pton(AF_INET, "192.0.2.10", p + 16);
        for (int i = 20; i < ihl * 4; i++)
            p[i] = 1; /* NOP options */
    }
    uint8_t *t = p + iphl;
    t[0] = 0xc3;
    t[1] = 0x50; /* 50000 */
    t[2] = 0x01;
    t[3] = 0xbb; /* 443 */
    t[7] = 1;
    t[12] = (uint8_t)(doff << 4);
    t[13] = flags;
    t[14] = 0xff;
    for (size_t i = 20; i < (size_t)doff * 4; i++)
        t[i] = 1;
    for (size_t i = 0; i < plen; i++)
        t[doff * 4 + i] = (uint8_t)('a' + i % 26);
    return len;
}

static void gen_frames(const ae_tunnel_keys *k)
{
    uint8_t out[2048], dg[1200], pkt[1500];
    struct sockaddr_in c4 = sin4("198.51.100.7", 50000), l4 = sin4("192.0.2.10", 443);
    struct sockaddr_in6 c6 = sin6("2001:db8::1", 50001), l6 = sin6("2001:db8::a", 443);
    int n;

    for (size_t i = 0; i < sizeof(dg); i++)
        dg[i] = (uint8_t)(i * 7);
    dg[0] = 0xc3; /* a QUIC long header */
    n = ae_tunnel_encode(k, 1, FZ_NOW, (struct sockaddr *)&c4, (struct sockaddr *)&l4, dg, 64, out,
                         sizeof(out));
    put_mode("tunnel", "forward-v4", 0, out, (size_t)n);
    put_mode("tunnel", "forward-v4-resealed", 3, out, (size_t)n);
    n = ae_tunnel_encode(k, 4095, FZ_NOW, (struct sockaddr *)&c6, (struct sockaddr *)&l6, dg,
                         sizeof(dg), out, sizeof(out));
    put_mode("tunnel", "forward-v6-1200", 0, out, (size_t)n);
    n = ae_tunnel_encode(k, 2, FZ_NOW, (struct sockaddr *)&c6, (struct sockaddr *)&l4, dg, 1, out,
                         sizeof(out));
    put_mode("tunnel", "forward-mixed-1", 0x35, out, (size_t)n);
    n = ae_tunnel_encode_reply(k, 3, FZ_NOW, (struct sockaddr *)&c4, (struct sockaddr *)&l4, 2, dg,
                               40, out, sizeof(out));
    put_mode("tunnel", "reply-v4-ect0", 0, out, (size_t)n);
    n = ae_tunnel_encode_reply(k, 3, FZ_NOW, (struct sockaddr *)&c6, (struct sockaddr *)&l6, 3, dg,
                               40, out, sizeof(out));
    put_mode("tunnel", "reply-v6-ce-resealed-prev", 5, out, (size_t)n);

    n = ae_hoff_encode_query(k, 1, FZ_NOW, 1000, 77, (struct sockaddr *)&c4, (struct sockaddr *)&l4,
                             out, sizeof(out));
    put_mode("hoff", "query-v4", 0, out, (size_t)n);
    n = ae_hoff_encode_query(k, 9, FZ_NOW, UINT64_MAX, 78, (struct sockaddr *)&c6,
                             (struct sockaddr *)&l6, out, sizeof(out));
    put_mode("hoff", "query-v6-resealed", 1, out, (size_t)n);
    n = ae_hoff_encode_answer(k, 2, FZ_NOW, 1001, 77, (struct sockaddr *)&c4,
                              (struct sockaddr *)&l4, 1, out, sizeof(out));
    put_mode("hoff", "answer-mine", 0, out, (size_t)n);
    n = ae_hoff_encode_answer(k, 2, FZ_NOW, 1002, 78, (struct sockaddr *)&c6,
                              (struct sockaddr *)&l6, 0, out, sizeof(out));
    put_mode("hoff", "answer-not-mine-resealed-next", 1, out, (size_t)n);
    size_t pl = tcp_packet(pkt, 0, 5, 5, 0, 0x10);
    n = ae_hoff_encode_segment(k, 1, FZ_NOW, 1003, pkt, pl, out, sizeof(out));
    put_mode("hoff", "segment-v4-ack", 0, out, (size_t)n);
    pl = tcp_packet(pkt, 1, 0, 8, 100, 0x18);
    n = ae_hoff_encode_segment(k, 1, FZ_NOW, 1004, pkt, pl, out, sizeof(out));
    put_mode("hoff", "segment-v6-data-resealed", 1, out, (size_t)n);

    pl = tcp_packet(pkt, 0, 5, 5, 0, 0x02);
    put("ippkt", "v4-syn", pkt, pl);
    pl = tcp_packet(pkt, 0, 6, 10, 10, 0x18);
    put("ippkt", "v4-options-data", pkt, pl);
    pl = tcp_packet(pkt, 1, 0, 5, 0, 0x11);
    put("ippkt", "v6-fin", pkt, pl);
    pl = tcp_packet(pkt, 1, 0, 15, 200, 0x18);
    put("ippkt", "v6-options-data", pkt, pl);
}

static void gen_rings(void)
{
    ae_ring r;
    char *s;
    size_t n;

    fz_ring(&r);
    if (ae_ring_encode(&r, NULL, &s, &n) != 0)
        exit(1);
    put_mode("ring", "plain-3", 0, s, n);
    free(s);
    if (ae_ring_encode(&r, fz_kek, &s, &n) != 0)
        exit(1);
    put_mode("ring", "sealed-3", 1, s, n);
    free(s);
    r.nkeys = 2; /* next and current: a new ring */
    if (ae_ring_encode(&r, NULL, &s, &n) != 0)
        exit(1);
    put_mode("ring", "plain-2", 0, s, n);
    free(s);
    if (ae_ring_encode(&r, fz_kek, &s, &n) != 0)
        exit(1);
    put_mode("ring", "sealed-2", 1, s, n);
    free(s);
    put_str("ring", "plain-unknown-lines",
            "\001anyedge-ring 1\ngeneration 1\nrotated_ms 0\nfuture x=1\n"
            "key id=1 state=current created_ms=0 extra=2 secret="
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
}

static void gen_cids(ae_cid_keys *k)
{
    uint8_t cid[AE_CID_LEN];
    static const struct {
        uint16_t site;
        uint8_t worker;
    } ids[] = {{1, 0}, {4095, 255}, {42, 3}};
    for (size_t i = 0; i < AE_ARRAY_LEN(ids); i++) {
        char name[32];
        if (ae_cid_encode(k, ids[i].site, ids[i].worker, cid) != 0)
            exit(1);
        snprintf(name, sizeof(name), "site%u-worker%u", ids[i].site, ids[i].worker);
        put("cid", name, cid, sizeof(cid));
    }
}

static void gen_text(void)
{
    put_str("http1", "200-length", "\001HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    put_str("http1", "200-chunked",
            "\003HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
            "5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n");
    put_str("http1", "100-then-204",
            "\002HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    put_str("http1", "head-304", "\201HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
    put_str("http1", "close-delimited", "\005HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nbody");

    put_str("admin", "get-metrics", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9901\r\n\r\n");
    put_str("admin", "post-reload",
            "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    put_str("admin", "whereis-query",
            "GET /whereis?cid=0123456789abcdef0123456789abcdef01&x=1#f HTTP/1.0\r\n\r\n");
    put_str("admin", "wrong-method", "DELETE /status HTTP/1.1\r\nUser-Agent: a\tb\r\n\r\nrest");

    static const uint8_t h3_get[] = "\007\003:methodGET\007\005:schemehttps\005\001:path/"
                                    "\012\013:authorityexample.com\006\003acceptx/y";
    put("h3", "get", h3_get, sizeof(h3_get) - 1);
    static const uint8_t h3_host[] = "\007\007:methodOPTIONS\007\004:schemehttp\005\001:path*"
                                     "\004\004hosta.bc\002\010teTrailers";
    put("h3", "options-host", h3_host, sizeof(h3_host) - 1);
    static const uint8_t h3_connect[] = "\007\007:methodCONNECT\012\007:authoritya.b:443";
    put("h3", "connect", h3_connect, sizeof(h3_connect) - 1);

    put_str("redis_url", "tcp", "redis://127.0.0.1:6379/2");
    put_str("redis_url", "auth", "redis://user:p%40ss%3Aword@[::1]:6380/0");
    put_str("redis_url", "name", "redis://:secretpw@redis.example:6379");
    put_str("redis_url", "unix", "unix:///run/redis/redis.sock?db=3");
    put_str("redis_url", "tls", "rediss://:secretpw@redis.example:6380/1");

    put_str("conf_values", "duration-ms", "\000250ms");
    put_str("conf_values", "duration-d", "\0041d");
    put_str("conf_values", "size-k", "\00164k");
    put_str("conf_values", "size", "\0014096");
    put_str("conf_values", "addr-v4", "\002127.0.0.1:8443");
    put_str("conf_values", "addr-v6-port0", "\006[2001:db8::1]:0");

    uint8_t seq[5 * 9];
    static const uint64_t nums[] = {1000, 1001, 999, 3000, 1000};
    for (size_t i = 0; i < AE_ARRAY_LEN(nums); i++) {
        seq[i * 9] = 0;
        fz_put64(seq + i * 9 + 1, nums[i]);
    }
    put("replay", "in-order-then-old", seq, sizeof(seq));
    for (size_t i = 0; i < AE_ARRAY_LEN(nums); i++) {
        seq[i * 9] = 1;
        fz_put64(seq + i * 9 + 1, 2048 + i * 300);
    }
    put("replay", "deltas", seq, sizeof(seq));
}

/* fuzz_affinity: mode 0 sealed cookies (the fixed ring), mode 4 "seal this id", mode 1 cookie
 * fields, mode 2 hash_key texts. */
static void gen_affinity(const ae_ring *r)
{
    ae_affcookie_keys *k;
    char v[AE_AFFCOOKIE_LEN + 1];
    if (ae_affcookie_keys_new(r, &k) != 0 || ae_affcookie_seal(k, "aeaff", 5, 42, v) != 0)
        exit(1);
    put_mode("affinity", "cookie-sealed", 0, v, AE_AFFCOOKIE_LEN);
    put_mode("affinity", "cookie-short", 0, v, 20);
    ae_affcookie_keys_free(k);
    static const uint8_t seal[9] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 'Q'};
    put_mode("affinity", "cookie-seal-and-change", 4, seal, sizeof(seal));
    put_str("affinity", "field", "\001\005aeaffa=1; aeaff=\"v\" ; b=c=d;;");
    put_str("affinity", "field-split", "\001\003sidtheme=dark;sid=abc");
    put_str("affinity", "key-client-ip", "\002client_ip/24,56");
    put_str("affinity", "key-header", "\002header:x-api-key");
    put_str("affinity", "key-cookie", "\002cookie:Session_ID");
    put_str("affinity", "key-bad-prefix", "\002client_ip/33");
}

int main(int argc, char **argv)
{
    ae_ring r;
    ae_tunnel_keys *tk;
    ae_cid_keys *ck;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    fz_ring(&r);
    if (ae_tunnel_keys_from_ring(&r, &tk) != 0 || ae_cid_keys_from_ring(&r, &ck) != 0)
        return 1;
    gen_frames(tk);
    gen_rings();
    gen_cids(ck);
    gen_text();
    gen_affinity(&r);
    ae_tunnel_keys_free(tk);
    ae_cid_keys_free(ck);
    return 0;
}
