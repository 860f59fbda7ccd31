/*
 * libFuzzer harness for the admin endpoint's request parser and router ae_admin_parse_request /
 * ae_admin_route (proxy/site/admin.c): what any local client sends to the admin port.
 *
 * The input is what the client sent so far. Checked beyond "no crash" (the buffer is an
 * exact-size copy, as the connection's read buffer is not NUL-terminated at the head's end):
 *   - an accepted head ends with CRLF CRLF at head_len <= len; method (upper-case letters), path
 *     (starts with '/') and query lie inside it; the minor version is a digit;
 *   - the answer does not depend on what follows the head: buf[0, head_len) parses the same;
 *     every shorter prefix of an accepted head is "incomplete" (AE_ERR_AGAIN), at one length
 *     picked by a hash of the input; and a prefix refused as malformed stays refused with more
 *     data (the server closes on the first AE_ERR_PARSE);
 *   - the router answers a known route, AE_ERR_NOTFOUND, or AE_ERR_INVAL with the method to allow.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/base.h"
#include "proxy/site/admin.h"
#include "tests/fuzz/fuzz_common.h"

static int same_req(const ae_admin_request *a, const ae_admin_request *b)
{
    return a->method == b->method && a->method_len == b->method_len && a->path == b->path &&
           a->path_len == b->path_len && a->query == b->query && a->query_len == b->query_len &&
           a->minor == b->minor && a->head_len == b->head_len;
}

static int inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && p + n <= buf + len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * AE_ADMIN_REQ_MAX)
        return 0;
    char *buf = (char *)fz_copy(data, size, 0);
    ae_admin_request req, r2;
    int rc = ae_admin_parse_request(buf, size, &req);
    size_t k = size > 0 ? fz_hash(data, size) % size : 0;

    if (rc == AE_ERR_PARSE || rc == AE_ERR_AGAIN) {
        /* A prefix refused as malformed: the whole is refused too. */
        if (size > 0 && ae_admin_parse_request(buf, k, &r2) == AE_ERR_PARSE && rc != AE_ERR_PARSE)
            abort();
        free(buf);
        return 0;
    }
    if (rc != 0)
        abort();
    size_t h = req.head_len;
    if (h < 4 || h > size || memcmp(buf + h - 4, "\r\n\r\n", 4) != 0 || req.method_len == 0 ||
        !inside(req.method, req.method_len, buf, h) || !inside(req.path, req.path_len, buf, h) ||
        req.path_len == 0 || req.path[0] != '/' || req.minor < 0 || req.minor > 9 ||
        (req.query != NULL && !inside(req.query, req.query_len, buf, h)))
        abort();
    for (size_t i = 0; i < req.method_len; i++)
        if (req.method[i] < 'A' || req.method[i] > 'Z')
            abort();
    if (ae_admin_parse_request(buf, h, &r2) != 0 || !same_req(&req, &r2))
        abort();
    if (ae_admin_parse_request(buf, k % h, &r2) != AE_ERR_AGAIN)
        abort();

    /* The access checks on what the head carried: spans inside the head; a Host the check
     * accepts names a loopback name or literal (never a DNS name other than localhost); an
     * Origin is accepted exactly when its host part is; a token never matches a different
     * Authorization value. */
    if ((req.host != NULL && !inside(req.host, req.host_len, buf, h)) ||
        (req.origin != NULL && !inside(req.origin, req.origin_len, buf, h)) ||
        (req.authorization != NULL && !inside(req.authorization, req.authorization_len, buf, h)))
        abort();
    if (req.host != NULL && ae_admin_host_ok(req.host, req.host_len, NULL)) {
        char hb[300];
        size_t hl = req.host_len < sizeof(hb) - 1 ? req.host_len : sizeof(hb) - 1;
        memcpy(hb, req.host, hl);
        hb[hl] = 0;
        if (strncasecmp(hb, "localhost", 9) != 0 && strncmp(hb, "127.", 4) != 0 && hb[0] != '[')
            abort();
        char *names[1] = {(char *)"localhost"};
        if (!ae_admin_host_in(req.host, req.host_len, names, 1) && hb[0] == 'l')
            abort();
    }
    if (req.origin != NULL && ae_admin_origin_ok(req.origin, req.origin_len, NULL)) {
        size_t skip = req.origin_len > 7 && req.origin[4] == ':' ? 7 : 8;
        if (req.origin_len <= skip ||
            !ae_admin_host_ok(req.origin + skip, req.origin_len - skip, NULL))
            abort();
    }
    if (req.authorization != NULL &&
        ae_admin_token_ok(req.authorization, req.authorization_len, "0123456789abcdef") &&
        (req.authorization_len != 23 || memcmp(req.authorization + 7, "0123456789abcdef", 16) != 0))
        abort();

    const char *allow = NULL;
    int route = ae_admin_route(&req, &allow);
    if (route == AE_ERR_INVAL) {
        if (allow == NULL || allow[0] == 0)
            abort();
    } else if (route != AE_ERR_NOTFOUND && (route < AE_ADMIN_METRICS || route > AE_ADMIN_UNDRAIN)) {
        abort();
    }
    free(buf);
    return 0;
}
