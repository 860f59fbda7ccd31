/*
 * Orphan TCP segment capture and injection for TCP hand-off (issue #10).
 *
 * ae_capture_open() creates a TUN device (IFF_TUN | IFF_NO_PI, not persistent: it disappears when
 * its fd closes, also when the process is killed), loads a tc ingress BPF program (built from
 * orphan.bpf.c and embedded in this library) and attaches it to the ingress of each interface.
 * For each TCP segment to a configured listener (address, port) the program asks the kernel for
 * a socket: a non-SYN segment that matches no connection (no socket, or only the listener, and
 * it is not a valid SYN-cookie ACK) is an orphan: it is redirected to the TUN device instead of
 * reaching the local TCP (so no RST goes out). Everything else is left alone (one hash lookup for
 * listener traffic, none for the rest).
 *
 * The TUN fd (nonblocking): read() returns one orphan per call, a bare IPv4 or IPv6 packet (no
 * link header, no packet-info header). The kernel completes CHECKSUM_PARTIAL checksums and
 * segments GSO packets on their way into the device (the TUN device has no checksum/TSO offload
 * enabled), so what is read carries a complete, valid TCP checksum and is at most the sender's
 * segment size (observed: GSO bursts over veth read as MTU-sized packets). A packet that was
 * not GSO but larger than the TUN MTU (jumbo ingress) is not checked against that MTU: read with
 * a 64 KiB buffer. Ignore anything that is not TCP (nothing else is expected: the device has no
 * addresses, no IPv6 link-local, no routes).
 * write() of a bare IP packet with a valid TCP checksum injects it into the local stack (as if
 * received on the TUN device; works without any address on it; rp_filter is set to 0 for it):
 * it reaches the existing socket, or for a tuple without one, the kernel answers with a RST
 * (which is how an orphan is given "back" to the kernel).
 * The orphans counter counts packets at tc ingress: a GSO burst counts once but reads as several
 * packets.
 *
 * Attachment: tcx links (kernel >= 6.6; removed by the kernel when the process exits, however it
 * exits), otherwise tc clsact + cls_bpf with a fixed handle/priority (0xae10 / 0xae10, see
 * capture.c); a filter with that handle/priority left by a killed process is replaced on the
 * next open (until then, orphans on that interface are dropped: no RST). ae_capture_close()
 * removes everything (the clsact qdisc itself stays: other filters may use it). One capture per
 * network namespace and interface: a second open with the same TUN name fails (device busy)
 * before touching any interface.
 *
 * Requires CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN). Interfaces must carry Ethernet frames.
 * All functions are for one thread (the engine's); libbpf's own messages are kept out of stderr.
 */
#ifndef AE_HANDOFF_CAPTURE_H
#define AE_HANDOFF_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ae_capture ae_capture;

typedef struct {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network order; IPv4 in the first 4 bytes; all zero = any address */
    uint16_t port;    /* host order */
} ae_capture_listener;

typedef struct {
    uint64_t seen;       /* TCP segments to a listener (address, port), SYNs included */
    uint64_t orphans;    /* redirected to the TUN device */
    uint64_t syncookies; /* ACKs to a listener accepted as valid SYN cookies (left to the kernel) */
} ae_capture_counts;

/* Maximum listener entries (BPF hash map size). */
#define AE_CAPTURE_MAX_LISTENERS 1024

/* Creates the TUN device `tun_name` (an existing tun device of that name that no process holds,
 * e.g. a persistent leftover, is taken over and made non-persistent; any other device of that
 * name is an error), loads the program, fills the listener map, attaches to the ingress of each
 * interface. Returns 0, or a negative AE_ERR_* (conf/base.h) with a one-line human reason in
 * err[0, errlen): AE_ERR_INVAL (bad arguments, unknown interface), AE_ERR_IO (no privileges,
 * no kernel support, a system call failed), AE_ERR_NOMEM. */
int ae_capture_open(const char *tun_name, const char *const *ifnames, size_t nif,
                    const ae_capture_listener *ls, size_t nls, ae_capture **out, char *err,
                    size_t errlen);

/* The TUN fd, nonblocking: read = orphans, write = inject. */
int ae_capture_tun_fd(const ae_capture *c);

/* Replaces the listener map contents (config reload). New entries are added before stale ones
 * are removed, so a listener present in both sets is never missed. 0, AE_ERR_INVAL (too many,
 * bad family) or AE_ERR_IO. */
int ae_capture_set_listeners(ae_capture *c, const ae_capture_listener *ls, size_t n);

/* Sums the per-CPU counters. */
void ae_capture_counts_get(const ae_capture *c, ae_capture_counts *out);

/* "tcx" or "tc". */
const char *ae_capture_mode(const ae_capture *c);

/* Diagnostics found at open, "" when none; e.g. net.ipv4.conf.all.rp_filter = 1 (strict), which
 * makes the kernel drop injected IPv4 packets (the effective value is max(all, dev)). */
const char *ae_capture_warning(const ae_capture *c);

/* The TUN device's ifindex. */
int ae_capture_tun_ifindex(const ae_capture *c);

/* Detaches the program, closes the TUN fd (the device disappears), frees c. Accepts NULL. */
void ae_capture_close(ae_capture *c);

#endif
