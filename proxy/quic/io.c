/*
 * QUIC endpoint packet I/O: the UDP socket options of a QUIC listener, sending (one datagram
 * or a UDP GSO batch, with the PKTINFO source and ECN codepoint as control messages) and the
 * recvmmsg read loop, which hands each datagram (a descriptor with its local address and ECN
 * codepoint, proxy/core/dgram.h) to ae_quic_input() like any other datagram source and writes the
 * touched connections at the end of the batch (ae_quic_flush). Connections live in quic.c.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy/quic/quic_int.h"

/* ---- socket ---- */

int ae_quic_socket_setup(int fd, int family)
{
    int one = 1, buf = 4 * 1024 * 1024;
    /* Bigger socket buffers absorb bursts of a whole congestion window (best effort). */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    /* UDP GRO: datagrams of one flow that the sender batched with GSO (and, on a NIC with UDP
     * GRO, consecutive ones of a flow) arrive as one read; ae_quic_read_cb splits them. Best
     * effort: without it every datagram is its own read, as before. */
    setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one));
    if (family == AF_INET6) {
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) != 0)
            return -1;
        /* ECN: read the codepoint of received datagrams (ngtcp2 validates and reports it). */
        setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &one, sizeof(one));
        int pmtu = IPV6_PMTUDISC_PROBE;
        setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof(pmtu));
    } else {
        if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) != 0)
            return -1;
        setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof(one));
        /* DF set, route MTU ignored: ngtcp2's PMTUD probes decide the packet size. */
        int pmtu = IP_PMTUDISC_PROBE;
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu));
    }
    return 0;
}

/* ---- sending ---- */

/* Sends len bytes from `from` (the address the client targeted; NULL = the socket's) to `to`:
 * one datagram, or with len > gso several of gso bytes (the last may be shorter) in one
 * sendmsg with UDP GSO. Without kernel GSO the batch goes out one datagram at a time, and the
 * endpoint stops batching. Returns 0, AE_ERR_AGAIN when the socket buffer is full (nothing or
 * only a prefix was sent: the caller keeps the whole batch; QUIC tolerates the duplicates),
 * AE_ERR_IO on other errors. */
int ae_quic_send_batch(ae_qep *ep, const struct sockaddr *to, socklen_t tolen,
                       const struct sockaddr *from, const uint8_t *data, size_t len, size_t gso,
                       uint8_t ecn)
{
    struct iovec iov = {(void *)data, len};
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(uint16_t)) +
                 CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {
        .msg_name = (void *)to, .msg_namelen = tolen, .msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *cm;
    size_t segs = gso > 0 && len > gso ? (len + gso - 1) / gso : 1;

    memset(&ctl, 0, sizeof(ctl));
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    cm = CMSG_FIRSTHDR(&mh);
    size_t used = 0;
    if (ep->wildcard && from != NULL && from->sa_family == ep->family) {
        if (ep->family == AF_INET) {
            struct in_pktinfo pi = {0};
            cm->cmsg_level = IPPROTO_IP;
            cm->cmsg_type = IP_PKTINFO;
            cm->cmsg_len = CMSG_LEN(sizeof(pi));
            pi.ipi_spec_dst = ((const struct sockaddr_in *)from)->sin_addr;
            memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
            used += CMSG_SPACE(sizeof(pi));
        } else {
            struct in6_pktinfo pi = {0};
            cm->cmsg_level = IPPROTO_IPV6;
            cm->cmsg_type = IPV6_PKTINFO;
            cm->cmsg_len = CMSG_LEN(sizeof(pi));
            pi.ipi6_addr = ((const struct sockaddr_in6 *)from)->sin6_addr;
            memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
            used += CMSG_SPACE(sizeof(pi));
        }
        cm = CMSG_NXTHDR(&mh, cm);
    }
    if (segs > 1 && !ep->no_gso) {
        uint16_t seg = (uint16_t)gso;
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(seg));
        memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
        used += CMSG_SPACE(sizeof(seg));
        cm = CMSG_NXTHDR(&mh, cm);
    }
    if (ecn != 0) {
        /* The ECN codepoint ngtcp2 chose for these packets (ECT(0) while validating). */
        int tos = ecn;
        cm->cmsg_level = ep->family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
        cm->cmsg_type = ep->family == AF_INET6 ? IPV6_TCLASS : IP_TOS;
        cm->cmsg_len = CMSG_LEN(sizeof(tos));
        memcpy(CMSG_DATA(cm), &tos, sizeof(tos));
        used += CMSG_SPACE(sizeof(tos));
    }
    mh.msg_controllen = used;
    if (used == 0)
        mh.msg_control = NULL;
    if (segs > 1 && ep->no_gso) {
        /* One datagram per segment. */
        for (size_t off = 0; off < len; off += gso) {
            int rv = ae_quic_send_batch(ep, to, tolen, from, data + off,
                                        len - off < gso ? len - off : gso, 0, ecn);
            if (rv != 0)
                return rv;
        }
        return 0;
    }
    for (;;) {
        ssize_t n = sendmsg(ep->fd, &mh, MSG_DONTWAIT);
        if (n >= 0) {
            ae_count(&ep->w->counters, AE_M_QUIC_PKTS_OUT, segs);
            ae_count(&ep->w->counters, AE_M_QUIC_BYTES_OUT, len);
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
            return AE_ERR_AGAIN;
        if (segs > 1 && (errno == EIO || errno == EINVAL || errno == EOPNOTSUPP)) {
            /* No UDP GSO here (or not for this device): fall back for good. */
            AE_WARN("quic: UDP GSO unavailable (%s): sending one datagram per packet",
                    strerror(errno));
            ep->no_gso = 1;
            return ae_quic_send_batch(ep, to, tolen, from, data, len, gso, ecn);
        }
        ae_count(&ep->w->counters, AE_M_QUIC_SEND_ERRORS, 1);
        return AE_ERR_IO;
    }
}

int ae_quic_send_reply(ae_qep *ep, const struct sockaddr *to, socklen_t tolen,
                       const struct sockaddr *from, uint8_t ecn, const uint8_t *data, size_t len)
{
    return ae_quic_send_batch(ep, to, tolen, from, data, len, 0, ecn);
}

/* ---- receiving ---- */

/* EV_READ on the listener socket: up to 4 recvmmsg batches, then the deferred writes. */
void ae_quic_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    ae_wlistener *l = io->data;
    ae_qep *ep = l->qep;
    ae_qworker *qw = ep->w->quic;
    struct mmsghdr msgs[AE_QUIC_RX_BATCH];
    struct iovec iov[AE_QUIC_RX_BATCH];
    struct sockaddr_storage from[AE_QUIC_RX_BATCH];
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + 64];
        struct cmsghdr align;
    } ctl[AE_QUIC_RX_BATCH];
    ep->in_batch = 1;
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < AE_QUIC_RX_BATCH; i++) {
            iov[i].iov_base = qw->rx[i];
            iov[i].iov_len = AE_QUIC_RX_SLOT;
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctl[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
        }
        int n = recvmmsg(ep->fd, msgs, AE_QUIC_RX_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            struct msghdr *mh = &msgs[i].msg_hdr;
            size_t total = msgs[i].msg_len, seg = total;
            ae_count(&ep->w->counters, AE_M_QUIC_BYTES_IN, total);
            if (mh->msg_flags & MSG_TRUNC) {
                ae_count(&ep->w->counters, AE_M_QUIC_PKTS_IN, 1);
                ae_count(&ep->w->counters, AE_M_QUIC_PKTS_DROPPED, 1);
                continue;
            }
            /* Local address: the bound one, or the destination the client used (PKTINFO). */
            struct sockaddr_storage local = ep->bound;
            ae_dgram dg = {.data = qw->rx[i],
                           .len = msgs[i].msg_len,
                           .peer = (struct sockaddr *)&from[i],
                           .peerlen = mh->msg_namelen,
                           .local = (struct sockaddr *)&local,
                           .locallen = ep->boundlen,
                           .origin = AE_DGRAM_DIRECT};
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
                if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO &&
                    cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
                    /* Coalesced: datagrams of gso bytes each, the last may be shorter. */
                    int gso;
                    memcpy(&gso, CMSG_DATA(cm), sizeof(gso));
                    if (gso > 0 && (size_t)gso < total)
                        seg = (size_t)gso;
                    continue;
                }
                if ((cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_TOS &&
                     cm->cmsg_len >= CMSG_LEN(1)) ||
                    (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_TCLASS &&
                     cm->cmsg_len >= CMSG_LEN(sizeof(int)))) {
                    /* IP_TOS carries one byte, IPV6_TCLASS an int: the low two bits are ECN. */
                    uint8_t tos;
                    if (cm->cmsg_level == IPPROTO_IP) {
                        tos = *(const uint8_t *)CMSG_DATA(cm);
                    } else {
                        int tc;
                        memcpy(&tc, CMSG_DATA(cm), sizeof(tc));
                        tos = (uint8_t)tc;
                    }
                    dg.ecn = tos & 0x3;
                    continue;
                }
                if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO &&
                    ep->family == AF_INET) {
                    struct in_pktinfo pi;
                    memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
                    ((struct sockaddr_in *)&local)->sin_addr = pi.ipi_addr;
                } else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO &&
                           ep->family == AF_INET6) {
                    struct in6_pktinfo pi;
                    memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
                    ((struct sockaddr_in6 *)&local)->sin6_addr = pi.ipi6_addr;
                }
            }
            /* Each datagram on its own, as if read alone (same peer, local address, ECN). */
            size_t ndg = total > seg ? (total + seg - 1) / seg : 1;
            ae_count(&ep->w->counters, AE_M_QUIC_PKTS_IN, ndg);
            if (ndg > 1)
                ae_count(&ep->w->counters, AE_M_QUIC_GRO_PKTS, ndg);
            size_t off = 0;
            do { /* once for an empty datagram (seg 0), which ae_quic_input drops */
                dg.data = qw->rx[i] + off;
                dg.len = total - off < seg ? total - off : seg;
                if (dg.len > AE_QUIC_RX_BUF) /* above our max_udp_payload_size */
                    ae_count(&ep->w->counters, AE_M_QUIC_PKTS_DROPPED, 1);
                else
                    ae_quic_input(ep, &dg);
                off += seg;
            } while (off < total);
        }
        if (n < AE_QUIC_RX_BATCH)
            break;
    }
    /* End of the batch: write every connection it touched, once. */
    ae_quic_flush(ep);
}
