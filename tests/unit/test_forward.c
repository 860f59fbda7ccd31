/*
 * Unit tests for the forwarding decision (proxy/forward/forward.c): a table of cases (this worker,
 * another worker, another live site, dead / unknown / draining / no forward address,
 * undecodable, Initial, Handshake, from the tunnel) and the peer table built from the registry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/forward/forward.h"

#define SELF_SITE 1
#define SELF_W    0
#define NWORKERS  2

typedef enum { PKT_SHORT, PKT_INITIAL, PKT_HANDSHAKE, PKT_0RTT, PKT_INITIAL_V2 } pkt_kind;

/* A datagram of kind k whose DCID is cid (17 octets). */
static size_t make_pkt(pkt_kind k, const uint8_t *cid, uint8_t *out)
{
    size_t n = 0;
    if (k == PKT_SHORT) {
        out[n++] = 0x40;
    } else {
        static const uint8_t v1[] = {0, 0, 0, 1}, v2[] = {0x6b, 0x33, 0x43, 0xcf};
        int type = k == PKT_INITIAL ? 0 : k == PKT_0RTT ? 1 : k == PKT_HANDSHAKE ? 2 : 1;
        out[n++] = (uint8_t)(0xc0 | type << 4);
        memcpy(out + n, k == PKT_INITIAL_V2 ? v2 : v1, 4);
        n += 4;
        out[n++] = AE_CID_LEN;
    }
    memcpy(out + n, cid, AE_CID_LEN);
    n += AE_CID_LEN;
    memset(out + n, 0xab, 40);
    return n + 40;
}

static ae_fwd_peers *peers_fixture(void)
{
    /* site 2 live, 3 dead (heartbeat stale), 4 draining past its deadline, 5 live without a
     * forward address, 6 draining within its deadline; site 7 unknown. */
    ae_fwd_peers *p = ae_fwd_peers_new(5);
    static const struct {
        uint16_t site;
        uint8_t live, draining, addr;
    } t[] = {{2, 1, 0, 1}, {3, 0, 0, 1}, {4, 1, 1, 1}, {5, 1, 0, 0}, {6, 1, 0, 1}};
    assert_non_null(p);
    for (size_t i = 0; i < 5; i++) {
        p->p[i].site = t[i].site;
        p->p[i].live = t[i].live;
        p->p[i].draining = t[i].draining;
        if (t[i].addr) {
            p->p[i].addr.in.sin_family = AF_INET;
            p->p[i].addr.in.sin_port = htons(4434);
            p->p[i].addr.in.sin_addr.s_addr = htonl(0x0a4d1702u + (uint32_t)i);
            p->p[i].addrlen = sizeof(struct sockaddr_in);
        }
    }
    return p;
}

static void test_decision_table(void **state)
{
    static const struct {
        const char *what;
        pkt_kind kind;
        int site; /* owner site encoded in the CID; 0 = random bytes (undecodable) */
        int worker;
        int from_tunnel;
        ae_fwd_action want;
    } cases[] = {
        {"self, this worker", PKT_SHORT, SELF_SITE, SELF_W, 0, AE_FWD_RESET_SELF},
        {"self, other worker", PKT_SHORT, SELF_SITE, 1, 0, AE_FWD_HANDOFF},
        {"self, no such worker", PKT_SHORT, SELF_SITE, 9, 0, AE_FWD_RESET_SELF},
        {"other site live", PKT_SHORT, 2, 0, 0, AE_FWD_FORWARD},
        {"other site dead (stale heartbeat)", PKT_SHORT, 3, 0, 0, AE_FWD_RESET_DEAD},
        {"other site draining past deadline", PKT_SHORT, 4, 1, 0, AE_FWD_RESET_DEAD},
        {"other site without forward address", PKT_SHORT, 5, 0, 0, AE_FWD_RESET_DEAD},
        {"other site draining within deadline", PKT_SHORT, 6, 0, 0, AE_FWD_FORWARD},
        {"unknown site", PKT_SHORT, 7, 0, 0, AE_FWD_RESET_DEAD},
        {"undecodable", PKT_SHORT, 0, 0, 0, AE_FWD_DROP},
        {"Initial for another site: never forwarded", PKT_INITIAL, 2, 0, 0, AE_FWD_LOCAL},
        {"Initial v2 for another site", PKT_INITIAL_V2, 2, 0, 0, AE_FWD_LOCAL},
        {"Initial, undecodable DCID", PKT_INITIAL, 0, 0, 0, AE_FWD_LOCAL},
        {"Handshake for another live site", PKT_HANDSHAKE, 2, 0, 0, AE_FWD_FORWARD},
        {"0-RTT for another live site", PKT_0RTT, 2, 1, 0, AE_FWD_FORWARD},
        {"Handshake for a dead site: drop, no reset", PKT_HANDSHAKE, 3, 0, 0, AE_FWD_DROP},
        {"Handshake, other worker", PKT_HANDSHAKE, SELF_SITE, 1, 0, AE_FWD_HANDOFF},
        {"Handshake, this worker", PKT_HANDSHAKE, SELF_SITE, SELF_W, 0, AE_FWD_LOCAL},
        {"0-RTT with a client-chosen DCID", PKT_0RTT, 0, 0, 0, AE_FWD_LOCAL},
        {"from the tunnel, other worker", PKT_SHORT, SELF_SITE, 1, 1, AE_FWD_HANDOFF},
        {"from the tunnel, this worker", PKT_SHORT, SELF_SITE, SELF_W, 1, AE_FWD_RESET_SELF},
        {"from the tunnel, names another site", PKT_SHORT, 2, 0, 1, AE_FWD_DROP},
    };
    ae_ring r;
    ae_cid_keys *k = NULL;
    ae_fwd_peers *peers = peers_fixture();
    (void)state;

    assert_int_equal(ae_ring_init(&r, 1000), 0);
    assert_int_equal(ae_cid_keys_from_ring(&r, &k), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t cid[AE_CID_LEN], pkt[128];
        uint16_t site = 0;
        uint8_t worker = 0;
        if (cases[i].site == 0) {
            /* A DCID whose plaintext padding bits are not zero: undecodable. */
            memset(cid, 0x5a, sizeof(cid));
            cid[0] = (uint8_t)(ae_cid_keys_epoch(k) << 5 | (AE_CID_LEN - 1));
            uint16_t s;
            while (ae_cid_decode(k, cid, sizeof(cid), &s, NULL) == 0)
                cid[5]++;
        } else {
            assert_int_equal(
                ae_cid_encode(k, (uint16_t)cases[i].site, (uint8_t)cases[i].worker, cid), 0);
        }
        size_t n = make_pkt(cases[i].kind, cid, pkt);
        ae_fwd_ctx ctx = {.self_site = SELF_SITE,
                          .self_worker = SELF_W,
                          .nworkers = NWORKERS,
                          .peers = peers,
                          .from_tunnel = cases[i].from_tunnel};
        ae_fwd_action a = ae_fwd_decide(k, &ctx, pkt, n, cid, sizeof(cid), &site, &worker);
        if (a != cases[i].want)
            fail_msg("%s: got %s, want %s", cases[i].what, ae_fwd_action_name(a),
                     ae_fwd_action_name(cases[i].want));
        if (cases[i].site != 0 && a != AE_FWD_LOCAL) {
            assert_int_equal(site, cases[i].site);
            assert_int_equal(worker, cases[i].worker);
        }
    }
    /* No peer table yet (registry not read): another site's owner may live, so no reset
     * (RFC 9000 §21.11): dropped. */
    {
        uint8_t cid[AE_CID_LEN], pkt[128];
        uint16_t site;
        uint8_t worker;
        ae_fwd_ctx ctx = {.self_site = SELF_SITE, .self_worker = 0, .nworkers = 1};
        assert_int_equal(ae_cid_encode(k, 2, 0, cid), 0);
        size_t n = make_pkt(PKT_SHORT, cid, pkt);
        assert_int_equal(ae_fwd_decide(k, &ctx, pkt, n, cid, sizeof(cid), &site, &worker),
                         AE_FWD_DROP);
        /* No CID keys yet: short headers are dropped, long ones left alone. */
        assert_int_equal(ae_fwd_decide(NULL, &ctx, pkt, n, cid, sizeof(cid), &site, &worker),
                         AE_FWD_DROP);
        assert_int_equal(ae_fwd_decide(k, &ctx, pkt, 0, cid, sizeof(cid), &site, &worker),
                         AE_FWD_DROP);
    }
    ae_cid_keys_free(k);
    ae_fwd_peers_unref(peers);
}

static void test_peers_build(void **state)
{
    ae_site_info s[6];
    uint64_t *seen = calloc(AE_CID_SITE_MAX + 1, sizeof(*seen));
    const uint64_t now = 1000000, hb = 1000, drain = 30000;
    (void)state;

    assert_non_null(seen);
    memset(s, 0, sizeof(s));
    /* listed out of order on purpose */
    s[0] = (ae_site_info){.id = 3, .live = 1, .heartbeat_ms = now - 500};
    snprintf(s[0].forward, sizeof(s[0].forward), "10.77.23.2:4434");
    snprintf(s[0].state, sizeof(s[0].state), "active");
    s[1] = (ae_site_info){.id = 1, .live = 1, .self = 1, .heartbeat_ms = now};
    snprintf(s[1].forward, sizeof(s[1].forward), "10.77.21.2:4434");
    s[2] = (ae_site_info){.id = 2, .live = 1, .heartbeat_ms = now - 3500}; /* stale */
    snprintf(s[2].forward, sizeof(s[2].forward), "10.77.22.2:4434");
    s[3] = (ae_site_info){.id = 4, .live = 0, .heartbeat_ms = now - 100}; /* record gone */
    s[4] = (ae_site_info){.id = 5, .live = 1, .heartbeat_ms = now};
    snprintf(s[4].forward, sizeof(s[4].forward), "[2001:db8::5]:4434");
    snprintf(s[4].state, sizeof(s[4].state), "draining");
    s[5] = (ae_site_info){.id = 6, .live = 1, .heartbeat_ms = now};
    snprintf(s[5].forward, sizeof(s[5].forward), "not an address");

    ae_fwd_peers *p = ae_fwd_peers_build(s, 6, 1, now, hb, drain, seen);
    assert_non_null(p);
    assert_int_equal(p->n, 5); /* self left out */
    for (size_t i = 1; i < p->n; i++)
        assert_true(p->p[i - 1].site < p->p[i].site);
    assert_null(ae_fwd_peers_find(p, 1));
    const ae_fwd_peer *e = ae_fwd_peers_find(p, 3);
    assert_non_null(e);
    assert_true(e->live);
    assert_int_equal(e->addrlen, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(e->addr.in.sin_port), 4434);
    assert_false(ae_fwd_peers_find(p, 2)->live);
    assert_false(ae_fwd_peers_find(p, 4)->live);
    e = ae_fwd_peers_find(p, 5);
    assert_true(e->live);
    assert_false(e->draining); /* just started draining: still forwarded to */
    assert_int_equal(e->addr.sa.sa_family, AF_INET6);
    assert_int_equal(ae_fwd_peers_find(p, 6)->addrlen, 0);
    assert_int_equal(seen[5], now);
    ae_fwd_peers_unref(p);

    /* Past the drain deadline: draining. */
    p = ae_fwd_peers_build(s, 6, 1, now + drain + 1, hb, drain, seen);
    s[4].heartbeat_ms = now + drain;
    ae_fwd_peers_unref(p);
    p = ae_fwd_peers_build(s, 6, 1, now + drain + 1, hb, drain, seen);
    assert_true(ae_fwd_peers_find(p, 5)->draining);
    ae_fwd_peers_unref(p);
    /* Back to active: the draining mark is forgotten. */
    snprintf(s[4].state, sizeof(s[4].state), "active");
    p = ae_fwd_peers_build(s, 6, 1, now + drain + 2, hb, drain, seen);
    assert_false(ae_fwd_peers_find(p, 5)->draining);
    assert_int_equal(seen[5], 0);
    ae_fwd_peers_unref(p);
    free(seen);
}

static void test_drop_names(void **state)
{
    (void)state;
    assert_string_equal(ae_fwd_drop_name(-AE_TUN_ERR_MAC - 1), "mac");
    assert_string_equal(ae_fwd_drop_name(-AE_TUN_ERR_STALE - 1), "stale");
    assert_string_equal(ae_fwd_drop_name(AE_FWD_DROP_NOEP), "no_endpoint");
    assert_string_equal(ae_fwd_drop_name(AE_FWD_DROP_LOOP), "loop");
    assert_int_equal(AE_M_TUN_DROP_LAST - AE_M_TUN_DROP_B0 + 1, AE_FWD_NDROPS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decision_table),
        cmocka_unit_test(test_peers_build),
        cmocka_unit_test(test_drop_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
