/* IP/TCP packet checks for the TCP hand-off (see ippkt.h). */
#include "proxy/handoff/ippkt.h"

#include <string.h>
#include <sys/socket.h>

#define TCP_OFF_CHECK 16

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

int ae_ippkt_parse(const uint8_t *pkt, size_t len, ae_ippkt *p)
{
    size_t hl;

    memset(p, 0, sizeof(*p));
    if (len < 20)
        return AE_IPPKT_ERR_SHORT;
    switch (pkt[0] >> 4) {
    case 4:
        hl = (size_t)(pkt[0] & 0x0f) * 4;
        if (hl < 20)
            return AE_IPPKT_ERR_VERSION;
        if (hl > len || get16(pkt + 2) != len)
            return AE_IPPKT_ERR_LENGTH;
        if (pkt[9] != 6)
            return AE_IPPKT_ERR_PROTO;
        if ((get16(pkt + 6) & 0x3fff) != 0) /* MF or a fragment offset */
            return AE_IPPKT_ERR_FRAGMENT;
        p->family = AF_INET;
        memcpy(p->src, pkt + 12, 4);
        memcpy(p->dst, pkt + 16, 4);
        break;
    case 6:
        hl = 40;
        if (len < hl)
            return AE_IPPKT_ERR_SHORT;
        if ((size_t)get16(pkt + 4) + hl != len)
            return AE_IPPKT_ERR_LENGTH;
        if (pkt[6] != 6)
            return AE_IPPKT_ERR_PROTO;
        p->family = AF_INET6;
        memcpy(p->src, pkt + 8, 16);
        memcpy(p->dst, pkt + 24, 16);
        break;
    default:
        return AE_IPPKT_ERR_VERSION;
    }
    if (len - hl < 20)
        return AE_IPPKT_ERR_TCP;
    const uint8_t *t = pkt + hl;
    size_t doff = (size_t)(t[12] >> 4) * 4;
    if (doff < 20 || doff > len - hl)
        return AE_IPPKT_ERR_TCP;
    p->sport = get16(t);
    p->dport = get16(t + 2);
    p->tcp_flags = t[13];
    p->l4_off = hl;
    p->l4_len = len - hl;
    return 0;
}

/* Ones' complement sum of data (not folded, not complemented). */
static uint32_t sum16(const uint8_t *d, size_t n, uint32_t s)
{
    size_t i;
    for (i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(d[i] << 8 | d[i + 1]);
    if (i < n)
        s += (uint32_t)d[i] << 8;
    return s;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

static uint32_t pseudo_sum(const ae_ippkt *p)
{
    size_t alen = p->family == AF_INET ? 4 : 16;
    uint32_t s = sum16(p->src, alen, 0);
    s = sum16(p->dst, alen, s);
    s += 6; /* protocol */
    s += (uint32_t)(p->l4_len & 0xffff) + (uint32_t)(p->l4_len >> 16);
    return s;
}

int ae_ippkt_tcp_csum_state(const uint8_t *pkt, const ae_ippkt *p)
{
    const uint8_t *t = pkt + p->l4_off;
    uint32_t ps = pseudo_sum(p);
    if (fold(sum16(t, p->l4_len, ps)) == 0xffff)
        return AE_CSUM_OK;
    /* Offload leaves the folded pseudo-header sum in the field (0 and 0xffff are the same
     * number in ones' complement). */
    uint16_t field = get16(t + TCP_OFF_CHECK), want = fold(ps);
    if (field == want || (field == 0 && want == 0xffff) || (field == 0xffff && want == 0))
        return AE_CSUM_PARTIAL;
    return AE_CSUM_BAD;
}

void ae_ippkt_tcp_csum_fill(uint8_t *pkt, const ae_ippkt *p)
{
    uint8_t *t = pkt + p->l4_off;
    t[TCP_OFF_CHECK] = t[TCP_OFF_CHECK + 1] = 0;
    uint16_t c = (uint16_t)~fold(sum16(t, p->l4_len, pseudo_sum(p)));
    t[TCP_OFF_CHECK] = (uint8_t)(c >> 8);
    t[TCP_OFF_CHECK + 1] = (uint8_t)c;
}

const char *ae_ippkt_reason_name(int rc)
{
    static const char *const names[] = {"ok",    "short",    "version", "length",
                                        "proto", "fragment", "tcp"};
    return rc <= 0 && rc >= -6 ? names[-rc] : "?";
}
