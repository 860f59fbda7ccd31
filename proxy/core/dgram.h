/*
 * One received QUIC datagram and what is known about it, passed down the receive path: from
 * its source (quic_io.c's recvmmsg loop; forward.c's worker inbox and tunnel input) through
 * ae_quic_input() and the forwarding hook to the connection. Every fact about the datagram
 * travels here, never in "current datagram" fields set before a call and reset after it
 * (HAProxy's struct quic_dgram).
 *
 * Ownership: the descriptor and everything it points to are borrowed for the duration of the
 * call they are passed to; nobody keeps a pointer to them (copy what must outlive the call).
 */
#ifndef AE_DGRAM_H
#define AE_DGRAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* How the datagram reached the worker handling it. */
typedef enum {
    AE_DGRAM_DIRECT = 0, /* read from the QUIC listener's own socket */
    AE_DGRAM_HANDOFF,    /* read from a QUIC socket by another worker of this site, handed over */
    AE_DGRAM_TUNNEL,     /* came in a tunnel frame from site `site` (read by this worker or
                            handed over by another one) */
} ae_dgram_origin;

typedef struct ae_dgram {
    const uint8_t *data;
    size_t len;
    const struct sockaddr *peer; /* the client: source address and port */
    socklen_t peerlen;
    const struct sockaddr *local; /* the address the client sent to (PKTINFO or the bound one) */
    socklen_t locallen;
    uint8_t ecn;            /* ECN codepoint (IP_TOS / IPV6_TCLASS & 3); 0 unless read directly */
    ae_dgram_origin origin; /* AE_DGRAM_TUNNEL: never forwarded again */
    uint16_t site;          /* AE_DGRAM_TUNNEL: the site whose frame carried it; otherwise 0 */
} ae_dgram;

#endif
