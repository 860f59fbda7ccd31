/* Exact TCP socket lookups through sock_diag (see sockdiag.h). */
#include "proxy/handoff/sockdiag.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "conf/base.h"

struct ae_sockdiag {
    int fd;
    uint32_t seq;
    uint8_t buf[8192];
};

int ae_sockdiag_open(ae_sockdiag **out, char *err, size_t errlen)
{
    ae_sockdiag *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return AE_ERR_NOMEM;
    }
    d->fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (d->fd < 0) {
        snprintf(err, errlen, "sock_diag netlink socket: %s", strerror(errno));
        free(d);
        return AE_ERR_IO;
    }
    /* The kernel answers within sendmsg; the timeout only bounds a kernel that would not. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    setsockopt(d->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    *out = d;
    return 0;
}

void ae_sockdiag_close(ae_sockdiag *d)
{
    if (d == NULL)
        return;
    close(d->fd);
    free(d);
}

int ae_sockdiag_holds(ae_sockdiag *d, const ae_flowkey *k)
{
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof(req));
    req.nh.nlmsg_len = sizeof(req);
    req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.nh.nlmsg_flags = NLM_F_REQUEST;
    req.nh.nlmsg_seq = ++d->seq;
    req.r.sdiag_family = k->family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = ~0u;
    req.r.id.idiag_sport = htons(k->lport); /* the socket's view: local is the source */
    req.r.id.idiag_dport = htons(k->cport);
    memcpy(req.r.id.idiag_src, k->laddr, k->family == AF_INET ? 4 : 16);
    memcpy(req.r.id.idiag_dst, k->caddr, k->family == AF_INET ? 4 : 16);
    req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    ssize_t n;
    do
        n = sendto(d->fd, &req, sizeof(req), 0, (struct sockaddr *)&kernel, sizeof(kernel));
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    for (;;) {
        do
            n = recv(d->fd, d->buf, sizeof(d->buf), 0);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            return -1;
        int len = (int)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)d->buf; NLMSG_OK(h, len);
             h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_seq != d->seq)
                continue; /* the late answer of an earlier, timed-out request */
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                return h->nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error == -ENOENT ? 0 : -1;
            }
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
                h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                return -1;
            const struct inet_diag_msg *m = NLMSG_DATA(h);
            return m->idiag_state != TCP_LISTEN ? 1 : 0;
        }
    }
}
