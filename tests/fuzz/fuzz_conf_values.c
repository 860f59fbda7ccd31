/*
 * libFuzzer harness for the config's scalar parsers (conf/): durations
 * (ae_conf_parse_duration_ms), sizes (ae_conf_parse_size) and socket addresses (ae_addr_parse,
 * with and without port 0), which also parse values outside the YAML file (anyedgectl, tests).
 *
 * The input's first byte picks the parser (bits 0-1) and allow_port0 (bit 2); the rest is the
 * string (up to its first NUL). Checked beyond "no crash":
 *   - duration and size: the value, formatted back by the config reference's own formatter
 *     (ae_conf_fmt_duration / ae_conf_fmt_size) or as plain digits, parses to the same value;
 *     an accepted string starts with a digit;
 *   - address: family AF_INET / AF_INET6 with the matching length, port non-zero unless
 *     allowed, and both its canonical text and ae_addr_format() parse back to an equal address.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/conf_int.h"
#include "tests/fuzz/fuzz_common.h"

static void check_scaled(const char *s, int is_size)
{
    uint32_t v, v2;
    char buf[64];
    int rc = is_size ? ae_conf_parse_size(s, &v) : ae_conf_parse_duration_ms(s, &v);
    if (rc != 0) {
        if (rc != AE_ERR_PARSE)
            abort();
        return;
    }
    if (s[0] < '0' || s[0] > '9')
        abort();
    if (is_size)
        ae_conf_fmt_size(v, buf, sizeof(buf));
    else
        ae_conf_fmt_duration(v, buf, sizeof(buf));
    rc = is_size ? ae_conf_parse_size(buf, &v2) : ae_conf_parse_duration_ms(buf, &v2);
    if (rc != 0 || v2 != v)
        abort();
    snprintf(buf, sizeof(buf), is_size ? "%u" : "%ums", v);
    rc = is_size ? ae_conf_parse_size(buf, &v2) : ae_conf_parse_duration_ms(buf, &v2);
    if (rc != 0 || v2 != v)
        abort();
}

static void check_addr(const char *s, int port0)
{
    ae_addr a, b;
    char buf[128];
    if (ae_addr_parse(s, &a, port0) != 0)
        return;
    uint16_t port;
    if (a.sa.ss_family == AF_INET && a.len == sizeof(struct sockaddr_in))
        port = ((const struct sockaddr_in *)&a.sa)->sin_port;
    else if (a.sa.ss_family == AF_INET6 && a.len == sizeof(struct sockaddr_in6))
        port = ((const struct sockaddr_in6 *)&a.sa)->sin6_port;
    else
        abort();
    if (port == 0 && !port0)
        abort();
    if (memchr(a.text, 0, sizeof(a.text)) == NULL || ae_addr_parse(a.text, &b, 1) != 0 ||
        !ae_addr_equal(&a, &b))
        abort();
    ae_addr_format((const struct sockaddr *)&a.sa, buf, sizeof(buf));
    if (ae_addr_parse(buf, &b, 1) != 0 || !ae_addr_equal(&a, &b) || strcmp(buf, a.text) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 256)
        return 0;
    char *s = (char *)fz_copy(data + 1, size - 1, 1);
    switch (data[0] & 3) {
    case 0:
        check_scaled(s, 0);
        break;
    case 1:
        check_scaled(s, 1);
        break;
    default:
        check_addr(s, (data[0] & 4) != 0);
        break;
    }
    free(s);
    return 0;
}
