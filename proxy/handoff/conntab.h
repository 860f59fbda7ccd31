/*
 * The table of this process's TCP client connections, by 4-tuple (issue #10).
 *
 * The TCP hand-off injects a segment another site forwarded into the local stack only when its
 * 4-tuple is a connection this anyedge holds: never a tuple it does not hold (that would let a
 * peer, or a forger with the ring, poke at other sockets of the host) and never a SYN. The
 * workers insert each accepted connection and remove it when it closes; the hand-off thread
 * looks tuples up for queries ("is this flow mine?") and for every segment it injects.
 *
 * A removed connection stays visible for a grace period (AE_CONNTAB_GRACE_MS): after anyedge
 * closes a socket the kernel still finishes the TCP close (our FIN, the client's ACK and FIN),
 * and those segments of a moved flow must reach it too. ae_conntab_sweep frees entries whose
 * grace period has passed.
 *
 * Threads: insert / remove from any worker, lookup and sweep from any thread; one mutex per
 * bucket stripe. Memory: one small allocation per connection (at accept, never per packet).
 */
#ifndef AE_HANDOFF_CONNTAB_H
#define AE_HANDOFF_CONNTAB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define AE_CONNTAB_GRACE_MS 60000

/* A TCP 4-tuple in a canonical form (zeroed padding, so it hashes and compares as bytes).
 * Addresses in network order, IPv4 in the first 4 bytes; ports in host order. */
typedef struct {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t pad;
    uint16_t cport, lport;
    uint16_t pad2;
    uint8_t caddr[16], laddr[16];
} ae_flowkey;

/* Builds a key from the client's and the local sockaddr (AF_INET / AF_INET6; an IPv4-mapped
 * IPv6 address of a dual-stack socket is stored as IPv4). 0, or AE_ERR_INVAL. */
int ae_flowkey_from_sa(ae_flowkey *k, const struct sockaddr *client, const struct sockaddr *local);
/* "1.2.3.4:5>6.7.8.9:443" or "[::1]:5>[::1]:443" into buf (64 bytes are enough). */
char *ae_flowkey_format(const ae_flowkey *k, char *buf, size_t len);
uint32_t ae_flowkey_hash(const ae_flowkey *k);

typedef struct ae_conntab ae_conntab;
typedef struct ae_conntab_entry ae_conntab_entry;

/* What a lookup found. */
typedef struct {
    int worker;
    uint64_t conn_id;
    int closed;      /* 1: the connection is closed, within its grace period */
    uint64_t age_ms; /* since insert */
} ae_conntab_info;

int ae_conntab_new(ae_conntab **out);
void ae_conntab_free(ae_conntab *t); /* accepts NULL; no other thread may use it any more */

/* Inserts a connection (worker, conn_id for logs and whereis). Returns the entry to pass to
 * remove, or NULL (no memory, bad address: the connection just is not handed off). */
ae_conntab_entry *ae_conntab_insert(ae_conntab *t, const struct sockaddr *client,
                                    const struct sockaddr *local, int worker, uint64_t conn_id,
                                    uint64_t now_ms);
/* Marks the connection closed (kept AE_CONNTAB_GRACE_MS). Accepts NULL. */
void ae_conntab_remove(ae_conntab *t, ae_conntab_entry *e, uint64_t now_ms);
/* 1 when k is a connection of this process (open, or closed within the grace period), with
 * *info filled when info is not NULL; else 0. */
int ae_conntab_lookup(ae_conntab *t, const ae_flowkey *k, uint64_t now_ms, ae_conntab_info *info);
/* Frees closed entries older than the grace period. Returns the number of open connections. */
size_t ae_conntab_sweep(ae_conntab *t, uint64_t now_ms);

#endif
