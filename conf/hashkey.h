/*
 * The `hash_key` and `affinity_cookie` values of an upstream pool with `balance: hash`: their
 * syntax, parsed into an ae_hash_spec (hashkey.c). Pure functions, no allocation; used by the
 * config validation (conf.c) and by the affinity fuzz harness.
 *
 *   client_ip            the client's address: IPv4 /32, IPv6 /64 (the defaults)
 *   client_ip/V4         IPv4 /V4 (8..32), IPv6 /64
 *   client_ip/V4,V6      IPv4 /V4, IPv6 /V6 (16..128)
 *   header:NAME          the first value of request header NAME (lower-case token, HTTP/3)
 *   cookie:NAME          the value of the first cookie NAME (a cookie-name token, RFC 6265)
 *
 * header and cookie keys fall back to the client's address (/32, /64) when a request lacks
 * them. docs/architecture.md, "Upstream affinity", says why these defaults.
 */
#ifndef AE_CONF_HASHKEY_H
#define AE_CONF_HASHKEY_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

/* Default prefix lengths of client_ip (and of the fallback of header/cookie keys). */
#define AE_HASH_V4_PREFIX_DEFAULT 32
#define AE_HASH_V6_PREFIX_DEFAULT 64

/* Parses hash_key text s (NUL-terminated) into out. Returns 0, or AE_ERR_PARSE with a reason
 * (without the key name) in err; out is then the client_ip default. */
int ae_hash_key_parse(const char *s, ae_hash_spec *out, char *err, size_t errlen);

/* 1 when s[0, n) is a valid cookie name (1..AE_HASH_NAME_MAX token characters), else 0. */
int ae_cookie_name_ok(const char *s, size_t n);

#endif
