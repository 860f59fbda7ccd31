/*
 * Test tool for proxy/handoff/capture.h: opens the capture on interfaces, prints one line per
 * packet read from the TUN fd, optionally writes each packet back (injection), prints the
 * counters and exits 0 on SIGTERM/SIGINT.
 *
 *   ae-capture-probe [--reinject] [--fix-csum] TUN IF[,IF...] ADDR:PORT|[ADDR6]:PORT|*:PORT ...
 *
 * Output lines (stdout, line-buffered):
 *   ready mode=tcx tun=NAME ifindex=N [warning=...]
 *   pkt len=L SRC:SPORT > DST:DPORT flags=FSRPAU csum=ok|bad [fixed] [injected]
 *   counts seen=N orphans=N syncookies=N read=N injected=N maxlen=N csum_bad=N
 */
#include "proxy/handoff/capture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)(p[n - 1] << 8);
    return s;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

/* TCP checksum over pseudo header + segment; with the checksum field in place, 0xffff = valid. */
static uint16_t tcp_sum(const uint8_t *src, const uint8_t *dst, size_t alen, const uint8_t *seg,
                        size_t slen)
{
    uint32_t s = sum16(src, alen, 0);
    s = sum16(dst, alen, s);
    s += 6 + (uint32_t)slen; /* IPPROTO_TCP + length (fits for our sizes) */
    return fold(sum16(seg, slen, s));
}

static int parse_listener(const char *arg, ae_capture_listener *l)
{
    memset(l, 0, sizeof(*l));
    const char *colon = strrchr(arg, ':');
    if (!colon)
        return -1;
    l->port = (uint16_t)atoi(colon + 1);
    char host[64];
    size_t hl = (size_t)(colon - arg);
    if (hl >= sizeof(host))
        return -1;
    memcpy(host, arg, hl);
    host[hl] = '\0';
    if (strcmp(host, "*") == 0) {
        l->family = AF_INET;
        return 0;
    }
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 2 || host[n - 1] != ']')
            return -1;
        host[n - 1] = '\0';
        l->family = AF_INET6;
        return inet_pton(AF_INET6, host + 1, l->addr) == 1 ? 0 : -1;
    }
    l->family = AF_INET;
    return inet_pton(AF_INET, host, l->addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    int reinject = 0, fixcsum = 0, ai = 1;
    for (; ai < argc && argv[ai][0] == '-'; ai++) {
        if (strcmp(argv[ai], "--reinject") == 0)
            reinject = 1;
        else if (strcmp(argv[ai], "--fix-csum") == 0)
            fixcsum = 1;
        else
            break;
    }
    if (argc - ai < 3) {
        fprintf(stderr, "usage: %s [--reinject] [--fix-csum] TUN IF[,IF...] ADDR:PORT...\n",
                argv[0]);
        return 2;
    }
    const char *tun = argv[ai++];
    char *ifs = strdup(argv[ai++]);
    const char *ifnames[16];
    size_t nif = 0;
    for (char *sp, *t = strtok_r(ifs, ",", &sp); t && nif < 16; t = strtok_r(NULL, ",", &sp))
        ifnames[nif++] = t;
    ae_capture_listener ls[64];
    size_t nls = 0;
    for (; ai < argc && nls < 64; ai++) {
        if (parse_listener(argv[ai], &ls[nls]) < 0) {
            fprintf(stderr, "bad listener %s\n", argv[ai]);
            return 2;
        }
        nls++;
        if (strncmp(argv[ai], "*:", 2) == 0 && nls < 64) { /* wildcard: both families */
            ls[nls] = ls[nls - 1];
            ls[nls].family = AF_INET6;
            nls++;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    ae_capture *c = NULL;
    char err[256];
    int rv = ae_capture_open(tun, ifnames, nif, ls, nls, &c, err, sizeof(err));
    if (rv < 0) {
        fprintf(stderr, "capture_open: %d: %s\n", rv, err);
        printf("error %s\n", err);
        return 1;
    }
    const char *w = ae_capture_warning(c);
    printf("ready mode=%s tun=%s ifindex=%d%s%s\n", ae_capture_mode(c), tun,
           ae_capture_tun_ifindex(c), w[0] ? " warning=" : "", w);

    int fd = ae_capture_tun_fd(c);
    uint8_t buf[65536];
    unsigned long nread = 0, ninj = 0, nbad = 0, maxlen = 0;
    while (!stop) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, 500);
        if (pr <= 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            perror("read");
            break;
        }
        nread++;
        if ((unsigned long)n > maxlen)
            maxlen = (unsigned long)n;
        char s[INET6_ADDRSTRLEN] = "?", d[INET6_ADDRSTRLEN] = "?";
        const uint8_t *seg = NULL, *sa_ = NULL, *da = NULL;
        size_t slen = 0, alen = 0;
        if (n >= 20 && (buf[0] >> 4) == 4) {
            size_t ihl = (size_t)(buf[0] & 15) * 4;
            size_t tot = (size_t)(buf[2] << 8 | buf[3]);
            if (tot <= (size_t)n && ihl + 20 <= tot) {
                seg = buf + ihl;
                slen = tot - ihl;
                sa_ = buf + 12;
                da = buf + 16;
                alen = 4;
                inet_ntop(AF_INET, sa_, s, sizeof(s));
                inet_ntop(AF_INET, da, d, sizeof(d));
            }
        } else if (n >= 40 && (buf[0] >> 4) == 6) {
            size_t pl = (size_t)(buf[4] << 8 | buf[5]);
            if (40 + pl <= (size_t)n && pl >= 20) {
                seg = buf + 40;
                slen = pl;
                sa_ = buf + 8;
                da = buf + 24;
                alen = 16;
                inet_ntop(AF_INET6, sa_, s, sizeof(s));
                inet_ntop(AF_INET6, da, d, sizeof(d));
            }
        }
        if (!seg) {
            printf("pkt len=%zd unparsed\n", n);
            continue;
        }
        char fl[7] = "";
        const char *names = "FSRPAU";
        size_t fi = 0;
        for (int b = 0; b < 6; b++)
            if (seg[13] & (1 << b))
                fl[fi++] = names[b];
        fl[fi] = '\0';
        int ok = tcp_sum(sa_, da, alen, seg, slen) == 0xffff;
        int fixed = 0;
        if (!ok) {
            nbad++;
            if (fixcsum) {
                uint8_t *cs = (uint8_t *)seg + 16;
                cs[0] = cs[1] = 0;
                uint16_t v = (uint16_t)~tcp_sum(sa_, da, alen, seg, slen);
                cs[0] = (uint8_t)(v >> 8);
                cs[1] = (uint8_t)v;
                fixed = 1;
            }
        }
        int injected = 0;
        if (reinject) {
            if (write(fd, buf, (size_t)n) == n) {
                injected = 1;
                ninj++;
            } else {
                perror("write");
            }
        }
        printf("pkt len=%zd %s:%u > %s:%u flags=%s csum=%s%s%s\n", n, s,
               (unsigned)(seg[0] << 8 | seg[1]), d, (unsigned)(seg[2] << 8 | seg[3]), fl,
               ok ? "ok" : "bad", fixed ? " fixed" : "", injected ? " injected" : "");
    }
    ae_capture_counts cn;
    ae_capture_counts_get(c, &cn);
    printf("counts seen=%llu orphans=%llu syncookies=%llu read=%lu injected=%lu maxlen=%lu "
           "csum_bad=%lu\n",
           (unsigned long long)cn.seen, (unsigned long long)cn.orphans,
           (unsigned long long)cn.syncookies, nread, ninj, maxlen, nbad);
    ae_capture_close(c);
    free(ifs);
    return 0;
}
