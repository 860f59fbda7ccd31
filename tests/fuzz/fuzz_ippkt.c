/*
 * libFuzzer harness for the IP/TCP packet checks ae_ippkt_parse and the TCP checksum helpers
 * (proxy/handoff/ippkt.c): packets read from the hand-off's TUN device and received in SEGMENT
 * frames from other sites.
 *
 * The input is the packet. Checked beyond "no crash" (the parser never reads past the buffer,
 * which is an exact-size copy):
 *   - an accepted packet is IPv4 or IPv6 (the version nibble agrees), its TCP header lies inside
 *     the packet (l4_off + l4_len == len, l4_len >= 20 and >= the data offset), and the
 *     addresses, ports and flags are the packet's octets;
 *   - the checksum state is one of OK / PARTIAL / BAD, and after ae_ippkt_tcp_csum_fill it is OK
 *     while the parse result is unchanged;
 *   - every reason code has a name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include "proxy/handoff/ippkt.h"
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *pkt = fz_copy(data, size, 0);
    ae_ippkt p, p2;
    int rc = ae_ippkt_parse(pkt, size, &p);
    if (ae_ippkt_reason_name(rc)[0] == '?')
        abort();
    if (rc != 0) {
        free(pkt);
        return 0;
    }
    const uint8_t *t = pkt + p.l4_off;
    if (p.l4_off + p.l4_len != size || p.l4_len < 20 || (size_t)(t[12] >> 4) * 4 > p.l4_len ||
        p.sport != (t[0] << 8 | t[1]) || p.dport != (t[2] << 8 | t[3]) || p.tcp_flags != t[13])
        abort();
    if (p.family == AF_INET) {
        if (pkt[0] >> 4 != 4 || p.l4_off != (size_t)(pkt[0] & 15) * 4 ||
            memcmp(p.src, pkt + 12, 4) != 0 || memcmp(p.dst, pkt + 16, 4) != 0)
            abort();
    } else if (p.family == AF_INET6) {
        if (pkt[0] >> 4 != 6 || p.l4_off != 40 || memcmp(p.src, pkt + 8, 16) != 0 ||
            memcmp(p.dst, pkt + 24, 16) != 0)
            abort();
    } else {
        abort();
    }
    int st = ae_ippkt_tcp_csum_state(pkt, &p);
    if (st != AE_CSUM_OK && st != AE_CSUM_PARTIAL && st != AE_CSUM_BAD)
        abort();
    ae_ippkt_tcp_csum_fill(pkt, &p);
    if (ae_ippkt_tcp_csum_state(pkt, &p) != AE_CSUM_OK || ae_ippkt_parse(pkt, size, &p2) != 0 ||
        memcmp(&p, &p2, sizeof(p)) != 0)
        abort();
    free(pkt);
    return 0;
}
