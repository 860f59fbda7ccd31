/*
 * IP packets carrying TCP segments, as the TCP hand-off sees them (issue #10): read from the
 * TUN device (orphans), received in SEGMENT frames from other sites, written into the TUN
 * device. A pure parser: no allocation, no state; every malformed packet is refused with a
 * reason, never read past its length.
 *
 * Accepted: IPv4 (any IHL 5..15, no fragment) or IPv6 (next header TCP directly: packets with
 * extension headers are refused, which TCP over anycast does not send in practice) whose total
 * length is exactly the buffer's, carrying a TCP header (data offset 5..15) that fits.
 */
#ifndef AE_HANDOFF_IPPKT_H
#define AE_HANDOFF_IPPKT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int family;      /* AF_INET or AF_INET6 */
    uint8_t src[16]; /* network order; IPv4 in the first 4 octets */
    uint8_t dst[16];
    uint16_t sport, dport; /* host order */
    uint8_t tcp_flags;     /* TH_FIN, TH_SYN, ... */
    size_t l4_off;         /* TCP header offset in the packet */
    size_t l4_len;         /* TCP header + payload */
} ae_ippkt;

enum {
    AE_IPPKT_ERR_SHORT = -1,    /* shorter than an IP header */
    AE_IPPKT_ERR_VERSION = -2,  /* not IPv4 or IPv6, or IHL < 5 */
    AE_IPPKT_ERR_LENGTH = -3,   /* total length does not match the buffer */
    AE_IPPKT_ERR_PROTO = -4,    /* not TCP (or IPv6 extension headers) */
    AE_IPPKT_ERR_FRAGMENT = -5, /* an IPv4 fragment */
    AE_IPPKT_ERR_TCP = -6,      /* TCP header truncated or data offset < 5 */
};

/* TCP checksum states. */
enum { AE_CSUM_OK = 0, AE_CSUM_PARTIAL = 1, AE_CSUM_BAD = 2 };

/* 0 with *p filled, or an AE_IPPKT_ERR_* reason. */
int ae_ippkt_parse(const uint8_t *pkt, size_t len, ae_ippkt *p);
/* Whether the TCP checksum of a parsed packet is valid (OK), holds only the pseudo-header sum
 * as a sender's checksum offload leaves it (PARTIAL), or neither (BAD). */
int ae_ippkt_tcp_csum_state(const uint8_t *pkt, const ae_ippkt *p);
/* Computes and stores the full TCP checksum. */
void ae_ippkt_tcp_csum_fill(uint8_t *pkt, const ae_ippkt *p);
/* A short label for a reason code ("short", "version", ...), "ok" for 0, "?" otherwise. */
const char *ae_ippkt_reason_name(int rc);

#endif
