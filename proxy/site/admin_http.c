/*
 * The admin endpoint's HTTP, pure (admin_http.h): request head parser, router, and the Host,
 * Origin and token checks. No I/O, no state: unit-tested (tests/unit/test_admin.c).
 */
#include "proxy/site/admin_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Records the value of the headers the endpoint checks (name[0, nlen), value [v, vend)); a
 * repeated one is an error (-1). */
static int note_header(ae_admin_request *req, const char *name, size_t nlen, const char *v,
                       const char *vend)
{
    const char **dst;
    size_t *dlen;

    if (nlen == 4 && strncasecmp(name, "host", 4) == 0) {
        dst = &req->host;
        dlen = &req->host_len;
    } else if (nlen == 6 && strncasecmp(name, "origin", 6) == 0) {
        dst = &req->origin;
        dlen = &req->origin_len;
    } else if (nlen == 13 && strncasecmp(name, "authorization", 13) == 0) {
        dst = &req->authorization;
        dlen = &req->authorization_len;
    } else {
        return 0;
    }
    if (*dst != NULL)
        return -1;
    while (v < vend && (*v == ' ' || *v == '\t'))
        v++;
    while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
        vend--;
    *dst = v;
    *dlen = (size_t)(vend - v);
    return 0;
}

/* Host-header checks: no DNS names, only loopback and the connection's own address. */
static int host_part(const char *h, size_t n, char *out, size_t outlen)
{
    size_t hl;
    if (n > 0 && h[0] == '[') {
        const char *e = memchr(h, ']', n);
        if (e == NULL)
            return -1;
        hl = (size_t)(e - h - 1);
        if (hl == 0 || hl >= outlen)
            return -1;
        memcpy(out, h + 1, hl);
        out[hl] = '\0';
        h = e + 1;
        n -= hl + 2;
    } else {
        const char *c = memchr(h, ':', n);
        hl = c != NULL ? (size_t)(c - h) : n;
        if (hl == 0 || hl >= outlen)
            return -1;
        memcpy(out, h, hl);
        out[hl] = '\0';
        h += hl;
        n -= hl;
    }
    if (n == 0)
        return 0;
    if (h[0] != ':' || n < 2 || n > 6)
        return -1;
    for (size_t i = 1; i < n; i++)
        if (h[i] < '0' || h[i] > '9')
            return -1;
    return 0;
}

int ae_admin_host_ok(const char *host, size_t n, const struct sockaddr *local)
{
    char hp[64];
    struct in_addr a4;
    struct in6_addr a6;

    if (host == NULL || host_part(host, n, hp, sizeof(hp)) != 0)
        return 0;
    if (strcasecmp(hp, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, hp, &a4) == 1) {
        if ((ntohl(a4.s_addr) >> 24) == 127)
            return 1;
        return local != NULL && local->sa_family == AF_INET &&
               ((const struct sockaddr_in *)local)->sin_addr.s_addr == a4.s_addr;
    }
    if (host[0] == '[' && inet_pton(AF_INET6, hp, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return 1;
        return local != NULL && local->sa_family == AF_INET6 &&
               memcmp(&((const struct sockaddr_in6 *)local)->sin6_addr, &a6, sizeof(a6)) == 0;
    }
    return 0;
}

int ae_admin_host_in(const char *host, size_t n, char *const *names, size_t nnames)
{
    char hp[256];

    if (nnames == 0 || n == 0 || host[0] == '[' || host_part(host, n, hp, sizeof(hp)) != 0)
        return 0;
    for (size_t i = 0; i < nnames; i++)
        if (strcasecmp(hp, names[i]) == 0)
            return 1;
    return 0;
}

int ae_admin_origin_ok(const char *origin, size_t n, const struct sockaddr *local)
{
    if (origin == NULL)
        return 0;
    if (n > 7 && strncasecmp(origin, "http://", 7) == 0)
        return ae_admin_host_ok(origin + 7, n - 7, local);
    if (n > 8 && strncasecmp(origin, "https://", 8) == 0)
        return ae_admin_host_ok(origin + 8, n - 8, local);
    return 0;
}

int ae_admin_token_ok(const char *auth, size_t n, const char *token)
{
    size_t tl = strlen(token);
    unsigned diff = 0;

    if (auth == NULL || n != 7 + tl || strncasecmp(auth, "bearer ", 7) != 0)
        return 0;
    for (size_t i = 0; i < tl; i++)
        diff |= (unsigned char)(auth[7 + i] ^ token[i]);
    return diff == 0;
}

int ae_admin_parse_request(const char *buf, size_t len, ae_admin_request *req)
{
    const char *p = buf, *end = buf + len, *nl, *sp;
    size_t i;

    memset(req, 0, sizeof(*req));
    nl = memchr(p, '\n', len);
    /* Reject what can be rejected before the line is complete, so junk fails fast. */
    for (i = 0; i < (nl != NULL ? (size_t)(nl - p) : len); i++) {
        unsigned char ch = (unsigned char)p[i];

        if (ch == '\0' || (ch < 0x20 && ch != '\r') || ch >= 0x7f)
            return AE_ERR_PARSE;
    }
    if (nl == NULL)
        return AE_ERR_AGAIN;
    if (nl == p || nl[-1] != '\r')
        return AE_ERR_PARSE;

    /* method SP */
    for (sp = p; sp < nl && *sp >= 'A' && *sp <= 'Z'; sp++)
        ;
    if (sp == p || sp - p > 16 || *sp != ' ')
        return AE_ERR_PARSE;
    req->method = p;
    req->method_len = (size_t)(sp - p);
    /* origin-form target SP */
    p = sp + 1;
    if (*p != '/')
        return AE_ERR_PARSE;
    for (sp = p; sp<nl && * sp> 0x20 && *sp < 0x7f; sp++)
        ;
    if (*sp != ' ')
        return AE_ERR_PARSE;
    req->path = p;
    req->path_len = (size_t)(sp - p);
    for (i = 0; i < req->path_len; i++) {
        if (p[i] == '?' || p[i] == '#') {
            size_t tlen = req->path_len, j;
            req->path_len = i;
            if (p[i] == '?') {
                for (j = i + 1; j < tlen && p[j] != '#'; j++)
                    ;
                req->query = p + i + 1;
                req->query_len = j - i - 1;
            }
            break;
        }
    }
    /* HTTP/1.x CR LF */
    p = sp + 1;
    if (nl - p != 9 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9')
        return AE_ERR_PARSE;
    req->minor = p[7] - '0';

    /* Header lines: "name: value" CRLF, no obsolete folding, up to the empty line. */
    for (p = nl + 1;;) {
        const char *colon;

        if (p >= end)
            return AE_ERR_AGAIN;
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return memchr(p, '\0', (size_t)(end - p)) != NULL ? AE_ERR_PARSE : AE_ERR_AGAIN;
        if (nl == p || nl[-1] != '\r')
            return AE_ERR_PARSE;
        if (nl - 1 == p) {
            req->head_len = (size_t)(nl + 1 - buf);
            return 0;
        }
        for (colon = p; colon < nl - 1 && is_tchar((unsigned char)*colon); colon++)
            ;
        if (colon == p || *colon != ':')
            return AE_ERR_PARSE;
        for (sp = colon + 1; sp < nl - 1; sp++) {
            unsigned char ch = (unsigned char)*sp;

            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return AE_ERR_PARSE;
        }
        if (note_header(req, p, (size_t)(colon - p), colon + 1, nl - 1) != 0)
            return AE_ERR_PARSE;
        p = nl + 1;
    }
}

static const struct {
    const char *path;
    const char *method;
    ae_admin_route_id id;
} routes[] = {
    {"/metrics", "GET", AE_ADMIN_METRICS}, {"/status", "GET", AE_ADMIN_STATUS},
    {"/reload", "POST", AE_ADMIN_RELOAD},  {"/keys/rotate", "POST", AE_ADMIN_KEYS_ROTATE},
    {"/sites", "GET", AE_ADMIN_SITES},     {"/whereis", "GET", AE_ADMIN_WHEREIS},
    {"/drain", "POST", AE_ADMIN_DRAIN},    {"/undrain", "POST", AE_ADMIN_UNDRAIN},
};

static int span_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

int ae_admin_route(const ae_admin_request *req, const char **allow)
{
    size_t i;

    *allow = NULL;
    for (i = 0; i < AE_ARRAY_LEN(routes); i++) {
        if (!span_eq(req->path, req->path_len, routes[i].path))
            continue;
        if (span_eq(req->method, req->method_len, routes[i].method))
            return (int)routes[i].id;
        *allow = routes[i].method;
        return AE_ERR_INVAL;
    }
    return AE_ERR_NOTFOUND;
}
