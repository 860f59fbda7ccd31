/*
 * Does this host's kernel hold a TCP connection for a 4-tuple? (issue #10)
 *
 * The connection table (conntab.h) lists the connections anyedge has accepted. A connection the
 * kernel has not handed to a worker yet (handshake in progress: SYN_RECV, or waiting in the
 * accept queue) is not in it, yet its segments belong here: when the route moves during a
 * handshake, the client's final ACK or first data arrive at another site. The hand-off asks the
 * kernel in that case, with one exact-match sock_diag request (NETLINK_SOCK_DIAG,
 * SOCK_DIAG_BY_FAMILY, no dump): the kernel looks the tuple up in its established hash, which
 * holds request sockets too. A LISTEN socket (the lookup's fallback) does not count.
 *
 * Only on a conntab miss (rare): one netlink round trip, answered within the send. One object
 * per thread (the hand-off engine's).
 */
#ifndef AE_HANDOFF_SOCKDIAG_H
#define AE_HANDOFF_SOCKDIAG_H

#include "proxy/handoff/conntab.h"

typedef struct ae_sockdiag ae_sockdiag;

/* 0, or AE_ERR_IO with a reason in err. */
int ae_sockdiag_open(ae_sockdiag **out, char *err, size_t errlen);
void ae_sockdiag_close(ae_sockdiag *d); /* accepts NULL */
/* 1: the kernel has a non-listening TCP socket for k (client = remote, local = local);
 * 0: it has none; -1: the request failed (treated as none by callers). */
int ae_sockdiag_holds(ae_sockdiag *d, const ae_flowkey *k);

#endif
