/*
 * Numeric socket addresses: "1.2.3.4:80" and "[2001:db8::1]:443".
 *
 * Host names are refused on purpose: resolving them would make config loading block on DNS
 * and make the meaning of a config depend on the resolver at load time.
 */
#include "conf.h"

#include <arpa/inet.h>
#include <string.h>

/* Parses a decimal port with no sign, no leading junk and nothing after it. */
static int parse_port(const char *s, int allow_port0, uint16_t *out)
{
    uint32_t v = 0;
    size_t i;

    if (*s == '\0')
        return AE_ERR_PARSE;
    for (i = 0; s[i] != '\0'; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 5)
            return AE_ERR_PARSE;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535 || (v == 0 && !allow_port0))
        return AE_ERR_PARSE;
    *out = (uint16_t)v;
    return 0;
}

int ae_addr_parse(const char *s, ae_addr *out, int allow_port0)
{
    char host[INET6_ADDRSTRLEN];
    const char *end, *port;
    ae_addr a;
    uint16_t p;
    size_t hlen;

    if (s == NULL || out == NULL)
        return AE_ERR_PARSE;
    memset(&a, 0, sizeof(a));
    if (s[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.sa;

        end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return AE_ERR_PARSE;
        hlen = (size_t)(end - s - 1);
        if (hlen == 0 || hlen >= sizeof(host))
            return AE_ERR_PARSE;
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        port = end + 2;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return AE_ERR_PARSE;
        if (parse_port(port, allow_port0, &p) != 0)
            return AE_ERR_PARSE;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(p);
        a.len = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.sa;

        /* exactly one ':' — a bare IPv6 literal must use brackets */
        end = strchr(s, ':');
        if (end == NULL || strchr(end + 1, ':') != NULL)
            return AE_ERR_PARSE;
        hlen = (size_t)(end - s);
        if (hlen == 0 || hlen >= sizeof(host))
            return AE_ERR_PARSE;
        memcpy(host, s, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return AE_ERR_PARSE;
        if (parse_port(end + 1, allow_port0, &p) != 0)
            return AE_ERR_PARSE;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(p);
        a.len = sizeof(*sin);
    }
    ae_addr_format((const struct sockaddr *)&a.sa, a.text, sizeof(a.text));
    *out = a;
    return 0;
}

char *ae_addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];

    if (len == 0)
        return buf;
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
    return buf;
}

int ae_addr_equal(const ae_addr *a, const ae_addr *b)
{
    const struct sockaddr *x = (const struct sockaddr *)&a->sa;
    const struct sockaddr *y = (const struct sockaddr *)&b->sa;

    if (x->sa_family != y->sa_family)
        return 0;
    if (x->sa_family == AF_INET) {
        const struct sockaddr_in *p = (const struct sockaddr_in *)x;
        const struct sockaddr_in *q = (const struct sockaddr_in *)y;
        return p->sin_port == q->sin_port && p->sin_addr.s_addr == q->sin_addr.s_addr;
    }
    if (x->sa_family == AF_INET6) {
        const struct sockaddr_in6 *p = (const struct sockaddr_in6 *)x;
        const struct sockaddr_in6 *q = (const struct sockaddr_in6 *)y;
        return p->sin6_port == q->sin6_port &&
               memcmp(&p->sin6_addr, &q->sin6_addr, sizeof(p->sin6_addr)) == 0;
    }
    return 0;
}
