/*
 * The TLS-terminating TCP relay (tcp_relay.c): client (TLS) <-> upstream server (plain TCP).
 * One ae_tconn per client connection, owned by the worker that accepted it and kept on its
 * w->conns list; a closed connection moves to w->dead and is freed by ae_tconn_gc after the
 * callbacks of that loop iteration have returned. Worker thread only.
 */
#ifndef AE_TCP_RELAY_H
#define AE_TCP_RELAY_H

#include <sys/socket.h>

#include "proxy/core/metrics.h"
#include "proxy/core/worker.h"

/* Starts serving a connection accepted on l (TLS handshake first). Takes ownership of fd: it
 * is closed here when the connection is refused (tune.max_connections, out of memory). */
void ae_tconn_accept(ae_worker *w, ae_wlistener *l, int fd, const struct sockaddr *peer,
                     socklen_t peerlen);
/* Frees connections queued on w->dead. */
void ae_tconn_gc(ae_worker *w);
/* Closes every open connection now (end of drain, worker exit), counting each under why. */
void ae_tconn_close_all(ae_worker *w, ae_metric why);
/* Frees a closed connection's memory (used by gc). */
void ae_tconn_free(ae_tconn *c);

#endif
