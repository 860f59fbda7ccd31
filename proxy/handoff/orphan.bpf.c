/* tc ingress program for TCP handoff (issue #10): takes "orphan" TCP segments away from the kernel.
 *
 * An orphan is a non-SYN TCP segment to a configured listener (address, port) for which this host
 * holds no connection: no socket at all, or only the listener (and the segment is not a valid SYN
 * cookie ACK). Orphans are counted and redirected to the egress of the TUN device whose ifindex is
 * cfg[0], so the kernel's TCP never sees them (no RST) and anyedge reads them from the TUN fd.
 * Everything else returns TC_ACT_OK untouched. Expects Ethernet framing (veth, physical NICs).
 *
 * Built with clang -target bpf in the normal build and embedded into ae_capture (capture.c). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET_    2
#define AF_INET6_   10
#define TCP_LISTEN_ 10

/* Listener key; must match struct cap_lkey in capture.c. IPv4 addresses in addr[0..3], rest 0;
 * an all-zero addr is the wildcard. port in network byte order. */
struct lkey {
    __u8 family; /* AF_INET_ or AF_INET6_ */
    __u8 pad;
    __u16 port;
    __u8 addr[16];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct lkey);
    __type(value, __u8);
} listeners SEC(".maps");

/* cfg[0] = TUN ifindex (0: capture disabled). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} cfg SEC(".maps");

enum { CNT_SEEN = 0, CNT_ORPHANS = 1, CNT_SYNCOOKIES = 2, CNT_MAX = 3 };

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, CNT_MAX);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
    __u64 *v = bpf_map_lookup_elem(&counters, &idx);
    if (v)
        *v += 1;
}

static __always_inline int is_listener(struct lkey *k)
{
    if (bpf_map_lookup_elem(&listeners, k))
        return 1;
    __builtin_memset(k->addr, 0, sizeof(k->addr));
    return bpf_map_lookup_elem(&listeners, k) != 0;
}

/* sk: result of bpf_skc_lookup_tcp (may be NULL). Returns the tc verdict; releases sk. */
static __always_inline int verdict(struct __sk_buff *skb, struct bpf_sock *sk, void *iph,
                                   __u32 iph_len, struct tcphdr *th)
{
    if (sk) {
        if (sk->state != TCP_LISTEN_) {
            bpf_sk_release(sk);
            return TC_ACT_OK; /* established, request sock, time-wait, ...: the kernel's */
        }
        long rc;
        if (iph_len == sizeof(struct iphdr))
            rc = bpf_tcp_check_syncookie(sk, iph, sizeof(struct iphdr), th, sizeof(struct tcphdr));
        else
            rc =
                bpf_tcp_check_syncookie(sk, iph, sizeof(struct ipv6hdr), th, sizeof(struct tcphdr));
        bpf_sk_release(sk);
        if (rc == 0) {
            count(CNT_SYNCOOKIES);
            return TC_ACT_OK;
        }
    }
    __u32 zero = 0;
    __u32 *tun = bpf_map_lookup_elem(&cfg, &zero);
    if (!tun || *tun == 0)
        return TC_ACT_OK;
    count(CNT_ORPHANS);
    return bpf_redirect(*tun, 0);
}

SEC("tc")
int ae_orphan(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return TC_ACT_OK;

    struct lkey k;
    struct bpf_sock_tuple t;
    __builtin_memset(&k, 0, sizeof(k));
    __builtin_memset(&t, 0, sizeof(t));

    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl < 5)
            return TC_ACT_OK;
        if (ip->frag_off & bpf_htons(0x3fff)) /* MF or offset: not a whole segment */
            return TC_ACT_OK;
        struct tcphdr *th = (void *)ip + ip->ihl * 4;
        if ((void *)(th + 1) > end)
            return TC_ACT_OK;
        k.family = AF_INET_;
        k.port = th->dest;
        __builtin_memcpy(k.addr, &ip->daddr, 4);
        if (!is_listener(&k))
            return TC_ACT_OK;
        count(CNT_SEEN);
        if (th->syn && !th->ack)
            return TC_ACT_OK; /* new connections are always local */
        t.ipv4.saddr = ip->saddr;
        t.ipv4.daddr = ip->daddr;
        t.ipv4.sport = th->source;
        t.ipv4.dport = th->dest;
        struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
        return verdict(skb, sk, ip, sizeof(struct iphdr), th);
    }
    if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
            return TC_ACT_OK; /* extension headers: pass */
        struct tcphdr *th = (void *)(ip6 + 1);
        if ((void *)(th + 1) > end)
            return TC_ACT_OK;
        k.family = AF_INET6_;
        k.port = th->dest;
        __builtin_memcpy(k.addr, &ip6->daddr, 16);
        if (!is_listener(&k))
            return TC_ACT_OK;
        count(CNT_SEEN);
        if (th->syn && !th->ack)
            return TC_ACT_OK;
        __builtin_memcpy(t.ipv6.saddr, &ip6->saddr, 16);
        __builtin_memcpy(t.ipv6.daddr, &ip6->daddr, 16);
        t.ipv6.sport = th->source;
        t.ipv6.dport = th->dest;
        struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
        return verdict(skb, sk, ip6, sizeof(struct ipv6hdr), th);
    }
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
