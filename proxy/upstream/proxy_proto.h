/* PROXY protocol v1 / v2 header encoder (proxy_proto.c), for upstream connections. */
#ifndef AE_PROXY_PROTO_H
#define AE_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/conf.h"

#define AE_PP_MAX_LEN 536 /* v1 max 107; v2 16 + 216 (unix) + TLVs we add */

/* Encodes a PROXY header for a connection from src to dst (the address the client reached)
 * into buf. v2 adds PP2_TYPE_ALPN and PP2_TYPE_AUTHORITY TLVs when alpn/authority are non-empty
 * (either may be NULL). Returns the length, or AE_ERR_INVAL (mixed families / unsupported
 * family for v1 writes "PROXY UNKNOWN"), AE_ERR_TOOBIG when len is too small. */
int ae_pp_encode(ae_proxy_proto version, const struct sockaddr *src, const struct sockaddr *dst,
                 const char *alpn, const char *authority, uint8_t *buf, size_t len);

#endif
