/* hash_key / affinity_cookie syntax: see hashkey.h. */
#include "conf/hashkey.h"

#include <stdio.h>
#include <string.h>

/* RFC 9110 tchar. */
static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

int ae_cookie_name_ok(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > AE_HASH_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A decimal prefix length in [min, max] from *p, advancing it. 0 or -1. */
static int prefix_len(const char **p, unsigned min, unsigned max, uint8_t *out)
{
    unsigned v = 0;
    size_t n = 0;
    while (**p >= '0' && **p <= '9' && n < 3) {
        v = v * 10 + (unsigned)(**p - '0');
        (*p)++;
        n++;
    }
    if (n == 0 || v < min || v > max)
        return -1;
    *out = (uint8_t)v;
    return 0;
}

int ae_hash_key_parse(const char *s, ae_hash_spec *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->kind = AE_HASH_CLIENT_IP;
    out->v4_prefix = AE_HASH_V4_PREFIX_DEFAULT;
    out->v6_prefix = AE_HASH_V6_PREFIX_DEFAULT;
    if (s == NULL)
        return 0;
    if (strncmp(s, "client_ip", 9) == 0 && (s[9] == '\0' || s[9] == '/')) {
        const char *p = s + 9;
        if (*p == '\0')
            return 0;
        p++;
        if (prefix_len(&p, 8, 32, &out->v4_prefix) != 0) {
            snprintf(err, errlen, "'%s': the IPv4 prefix length must be 8..32", s);
            goto fail;
        }
        if (*p == ',') {
            p++;
            if (prefix_len(&p, 16, 128, &out->v6_prefix) != 0) {
                snprintf(err, errlen, "'%s': the IPv6 prefix length must be 16..128", s);
                goto fail;
            }
        }
        if (*p != '\0') {
            snprintf(err, errlen, "'%s': expected client_ip, client_ip/V4 or client_ip/V4,V6", s);
            goto fail;
        }
        return 0;
    }
    const char *name = NULL;
    if (strncmp(s, "header:", 7) == 0) {
        name = s + 7;
        size_t n = strlen(name);
        if (n == 0 || n > AE_HASH_NAME_MAX) {
            snprintf(err, errlen, "'%s': the header name must be 1..%d characters", s,
                     AE_HASH_NAME_MAX);
            goto fail;
        }
        for (size_t i = 0; i < n; i++)
            if (!is_tchar((unsigned char)name[i]) || (name[i] >= 'A' && name[i] <= 'Z')) {
                snprintf(err, errlen,
                         "'%s': the header name must be lower-case token characters (as HTTP/3 "
                         "sends it)",
                         s);
                goto fail;
            }
        if (strcmp(name, "cookie") == 0) {
            snprintf(err, errlen, "'%s': use cookie:NAME to hash one cookie", s);
            goto fail;
        }
        out->kind = AE_HASH_HEADER;
    } else if (strncmp(s, "cookie:", 7) == 0) {
        name = s + 7;
        if (!ae_cookie_name_ok(name, strlen(name))) {
            snprintf(err, errlen, "'%s': the cookie name must be 1..%d token characters", s,
                     AE_HASH_NAME_MAX);
            goto fail;
        }
        out->kind = AE_HASH_COOKIE;
    } else {
        snprintf(err, errlen, "'%s' is not client_ip[/V4[,V6]], header:NAME or cookie:NAME", s);
        goto fail;
    }
    memcpy(out->name, name, strlen(name) + 1);
    out->name_len = strlen(name);
    return 0;
fail:
    memset(out, 0, sizeof(*out));
    out->kind = AE_HASH_CLIENT_IP;
    out->v4_prefix = AE_HASH_V4_PREFIX_DEFAULT;
    out->v6_prefix = AE_HASH_V6_PREFIX_DEFAULT;
    return AE_ERR_PARSE;
}
