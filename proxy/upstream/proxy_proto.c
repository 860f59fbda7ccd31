/*
 * PROXY protocol header encoder (HAProxy doc/proxy-protocol.txt, versions 1 and 2).
 *
 * Pure: no I/O, no logging, no allocation, so it can be unit tested and fuzzed on its own.
 */
#include "proxy/upstream/proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t pp2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define PP2_VER_PROXY      0x21 /* version 2, command PROXY */
#define PP2_FAM_UNSPEC     0x00
#define PP2_FAM_TCP4       0x11
#define PP2_FAM_TCP6       0x21
#define PP2_TYPE_ALPN      0x01
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_HDR_LEN        16
#define PP1_UNKNOWN        "PROXY UNKNOWN\r\n"

/* One endpoint reduced to what the header carries. family is AF_INET, AF_INET6 or AF_UNSPEC
 * (absent or unsupported). */
typedef struct {
    int family;
    uint8_t addr[16]; /* 4 or 16 bytes, network order */
    uint16_t port;    /* host order */
} pp_endpoint;

/* IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, from dual-stack sockets) are IPv4 clients: the
 * receiver should see them as TCP4, exactly as if we had listened on an IPv4 socket. */
static void endpoint_from(const struct sockaddr *sa, pp_endpoint *ep)
{
    memset(ep, 0, sizeof(*ep));
    ep->family = AF_UNSPEC;
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        ep->family = AF_INET;
        memcpy(ep->addr, &sin->sin_addr, 4);
        ep->port = ntohs(sin->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        ep->port = ntohs(sin6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            ep->family = AF_INET;
            memcpy(ep->addr, &sin6->sin6_addr.s6_addr[12], 4);
        } else {
            ep->family = AF_INET6;
            memcpy(ep->addr, &sin6->sin6_addr, 16);
        }
    }
}

static int encode_v1(const pp_endpoint *s, const pp_endpoint *d, uint8_t *buf, size_t len)
{
    char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
    /* The longest v1 line is 107 bytes with CRLF; one more for snprintf's NUL. */
    char line[112];
    int n;

    if (s->family != d->family || s->family == AF_UNSPEC) {
        n = (int)strlen(PP1_UNKNOWN);
        memcpy(line, PP1_UNKNOWN, (size_t)n);
    } else {
        if (inet_ntop(s->family, s->addr, sa, sizeof(sa)) == NULL ||
            inet_ntop(d->family, d->addr, da, sizeof(da)) == NULL)
            return AE_ERR_INVAL;
        n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
                     s->family == AF_INET ? "TCP4" : "TCP6", sa, da, (unsigned)s->port,
                     (unsigned)d->port);
        if (n < 0 || (size_t)n >= sizeof(line))
            return AE_ERR_INVAL;
    }
    if ((size_t)n > len)
        return AE_ERR_TOOBIG;
    memcpy(buf, line, (size_t)n);
    return n;
}

static size_t put_tlv(uint8_t *p, uint8_t type, const char *val, size_t vlen)
{
    p[0] = type;
    p[1] = (uint8_t)(vlen >> 8);
    p[2] = (uint8_t)(vlen & 0xff);
    memcpy(p + 3, val, vlen);
    return 3 + vlen;
}

static int encode_v2(const pp_endpoint *s, const pp_endpoint *d, const char *alpn,
                     const char *authority, uint8_t *buf, size_t len)
{
    size_t alen = alpn != NULL ? strlen(alpn) : 0;
    size_t hlen = authority != NULL ? strlen(authority) : 0;
    size_t addrlen, body, total, off;
    uint8_t fam;

    /* TLV lengths are 16-bit and so is the header's length field. */
    if (alen > 0xffff || hlen > 0xffff)
        return AE_ERR_TOOBIG;
    if (s->family == d->family && s->family == AF_INET) {
        fam = PP2_FAM_TCP4;
        addrlen = 12;
    } else if (s->family == d->family && s->family == AF_INET6) {
        fam = PP2_FAM_TCP6;
        addrlen = 36;
    } else {
        /* Mixed or unknown families: AF_UNSPEC with the PROXY command; the receiver ignores
         * the (empty) address block but still reads the TLVs. */
        fam = PP2_FAM_UNSPEC;
        addrlen = 0;
    }
    body = addrlen + (alen > 0 ? 3 + alen : 0) + (hlen > 0 ? 3 + hlen : 0);
    if (body > 0xffff)
        return AE_ERR_TOOBIG;
    total = PP2_HDR_LEN + body;
    if (total > len)
        return AE_ERR_TOOBIG;

    memcpy(buf, pp2_sig, sizeof(pp2_sig));
    buf[12] = PP2_VER_PROXY;
    buf[13] = fam;
    buf[14] = (uint8_t)(body >> 8);
    buf[15] = (uint8_t)(body & 0xff);
    off = PP2_HDR_LEN;
    if (addrlen > 0) {
        size_t alsz = fam == PP2_FAM_TCP4 ? 4 : 16;

        memcpy(buf + off, s->addr, alsz);
        off += alsz;
        memcpy(buf + off, d->addr, alsz);
        off += alsz;
        buf[off++] = (uint8_t)(s->port >> 8);
        buf[off++] = (uint8_t)(s->port & 0xff);
        buf[off++] = (uint8_t)(d->port >> 8);
        buf[off++] = (uint8_t)(d->port & 0xff);
    }
    if (alen > 0)
        off += put_tlv(buf + off, PP2_TYPE_ALPN, alpn, alen);
    if (hlen > 0)
        off += put_tlv(buf + off, PP2_TYPE_AUTHORITY, authority, hlen);
    return (int)off;
}

int ae_pp_encode(ae_proxy_proto version, const struct sockaddr *src, const struct sockaddr *dst,
                 const char *alpn, const char *authority, uint8_t *buf, size_t len)
{
    pp_endpoint s, d;

    if (buf == NULL)
        return AE_ERR_INVAL;
    endpoint_from(src, &s);
    endpoint_from(dst, &d);
    switch (version) {
    case AE_PP_V1:
        return encode_v1(&s, &d, buf, len);
    case AE_PP_V2:
        return encode_v2(&s, &d, alpn, authority, buf, len);
    default:
        return AE_ERR_INVAL;
    }
}
