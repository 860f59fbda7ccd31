/*
 * libFuzzer harness for the HTTP/3 request header checks ae_h3_check_field and
 * ae_h3_check_request (proxy/h3/h3.c, RFC 9114 §4.2 and §4.3.1). Uses only their public
 * declarations in proxy/h3/h3.h; the harness collects the request's pseudo-headers itself, the
 * way the nghttp3 header callback does.
 *
 * The input is a header section: fields of [name length (1)][value length (1)][name][value].
 * Checked beyond "no crash":
 *   - ae_h3_check_field agrees with an independent statement of the rules (non-empty name; no
 *     NUL, CR or LF in the value; a pseudo-header is one of :method, :scheme, :authority, :path,
 *     :protocol; other names are lower-case tokens and not connection-specific; te only
 *     "trailers");
 *   - ae_h3_check_request never accepts a section with a bad field, a repeated or late
 *     pseudo-header, or one over AE_H3_HEAD_MAX; an accepted request has a method, a scheme, an
 *     authority and a path that starts with '/' (or is "*" for OPTIONS); CONNECT is never
 *     accepted as a request.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/h3/h3.h"
#include "tests/fuzz/fuzz_common.h"

#define MAXF 64

static int lit(const uint8_t *n, size_t nl, const char *s)
{
    return nl == strlen(s) && memcmp(n, s, nl) == 0;
}

/* The rules, stated independently of h3.c. */
static int field_ok(const uint8_t *n, size_t nl, const uint8_t *v, size_t vl)
{
    static const char tchar_extra[] = "!#$%&'*+-.^_`|~";
    if (nl == 0 || memchr(v, 0, vl) != NULL || memchr(v, '\r', vl) != NULL ||
        memchr(v, '\n', vl) != NULL)
        return 0;
    if (n[0] == ':')
        return lit(n, nl, ":method") || lit(n, nl, ":scheme") || lit(n, nl, ":authority") ||
               lit(n, nl, ":path") || lit(n, nl, ":protocol");
    for (size_t i = 0; i < nl; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') ||
              (n[i] != 0 && memchr(tchar_extra, n[i], sizeof(tchar_extra) - 1) != NULL)))
            return 0;
    if (lit(n, nl, "connection") || lit(n, nl, "keep-alive") || lit(n, nl, "proxy-connection") ||
        lit(n, nl, "transfer-encoding") || lit(n, nl, "upgrade"))
        return 0;
    return !lit(n, nl, "te") || (vl == 8 && strncasecmp((const char *)v, "trailers", 8) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *vals[MAXF];
    size_t nv = 0, off = 0;
    int regular = 0;
    ae_h3_req_info ri;
    const char *host = NULL;

    memset(&ri, 0, sizeof(ri));
    while (off + 2 <= size && nv < MAXF) {
        size_t nl = data[off], vl = data[off + 1];
        off += 2;
        if (nl + vl > size - off)
            break;
        uint8_t *name = fz_copy(data + off, nl, 0);
        char *value = (char *)fz_copy(data + off + nl, vl, 1);
        off += nl + vl;
        vals[nv++] = value;
        ri.section_size += nl + vl + 32;

        int ok = ae_h3_check_field(name, nl, (uint8_t *)value, vl);
        if ((ok == AE_H3_OK) != field_ok(name, nl, (uint8_t *)value, vl) ||
            (ok != AE_H3_OK && ok != AE_H3_MALFORMED))
            abort();
        if (ok != AE_H3_OK) {
            ri.bad_field = 1;
        } else if (name[0] == ':') {
            const char **slot = lit(name, nl, ":method")      ? &ri.method
                                : lit(name, nl, ":scheme")    ? &ri.scheme
                                : lit(name, nl, ":path")      ? &ri.path
                                : lit(name, nl, ":authority") ? &ri.authority
                                                              : NULL;
            if (regular)
                ri.late_pseudo = 1;
            if (slot == NULL)
                ri.has_protocol = 1;
            else if (*slot != NULL)
                ri.dup_pseudo = 1;
            else
                *slot = value;
        } else {
            regular = 1;
            if (lit(name, nl, "host") && host == NULL)
                host = value;
        }
        free(name);
    }
    if (ri.authority == NULL)
        ri.authority = host;
    if (off < size) /* a trailing count scales the section, to reach the size limit */
        ri.section_size += (size_t)data[off] * 1024;

    int rc = ae_h3_check_request(&ri);
    if (rc != AE_H3_OK && rc != AE_H3_MALFORMED && rc != AE_H3_TOO_BIG && rc != AE_H3_CONNECT)
        abort();
    if ((ri.section_size > AE_H3_HEAD_MAX) != (rc == AE_H3_TOO_BIG))
        abort();
    if (rc == AE_H3_OK &&
        (ri.bad_field || ri.dup_pseudo || ri.late_pseudo || ri.has_protocol || ri.method == NULL ||
         ri.method[0] == 0 || strcmp(ri.method, "CONNECT") == 0 || ri.scheme == NULL ||
         ri.scheme[0] == 0 || ri.authority == NULL || ri.authority[0] == 0 || ri.path == NULL ||
         !(ri.path[0] == '/' || (strcmp(ri.path, "*") == 0 && strcmp(ri.method, "OPTIONS") == 0))))
        abort();
    if (rc == AE_H3_CONNECT && (ri.method == NULL || strcmp(ri.method, "CONNECT") != 0))
        abort();
    for (size_t i = 0; i < nv; i++)
        free(vals[i]);
    return 0;
}
