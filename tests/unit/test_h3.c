/*
 * HTTP/3 request validation (RFC 9114 §4.2, §4.3.1, §4.4): ae_h3_check_field() and
 * ae_h3_check_request() from proxy/h3/h3.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "proxy/h3/h3.h"

static int field(const char *name, const char *value)
{
    return ae_h3_check_field((const uint8_t *)name, strlen(name), (const uint8_t *)value,
                             strlen(value));
}

static int field_n(const char *name, const char *value, size_t vlen)
{
    return ae_h3_check_field((const uint8_t *)name, strlen(name), (const uint8_t *)value, vlen);
}

static void test_field_ok(void **state)
{
    (void)state;
    assert_int_equal(field("accept", "*/*"), AE_H3_OK);
    assert_int_equal(field("x-forwarded-for", "1.2.3.4"), AE_H3_OK);
    assert_int_equal(field("content-length", "12"), AE_H3_OK);
    assert_int_equal(field("x-a.b_c~d|e!f#g$h%i&j'k*l+m^n`o", ""), AE_H3_OK);
    assert_int_equal(field("te", "trailers"), AE_H3_OK);
    assert_int_equal(field("host", "example.com"), AE_H3_OK);
    assert_int_equal(field(":method", "GET"), AE_H3_OK);
    assert_int_equal(field(":scheme", "https"), AE_H3_OK);
    assert_int_equal(field(":authority", "example.com:443"), AE_H3_OK);
    assert_int_equal(field(":path", "/a?b=c"), AE_H3_OK);
    assert_int_equal(field(":protocol", "websocket"), AE_H3_OK); /* request-level refuses it */
    assert_int_equal(field("x-utf8", "caf\xc3\xa9"), AE_H3_OK);  /* obs-text is not forbidden */
    assert_int_equal(field("x-tab", "a\tb"), AE_H3_OK);
}

static void test_field_names(void **state)
{
    (void)state;
    assert_int_equal(field("", "x"), AE_H3_MALFORMED);
    assert_int_equal(field("Accept", "*/*"), AE_H3_MALFORMED); /* upper case */
    assert_int_equal(field("x-Upper", "1"), AE_H3_MALFORMED);
    assert_int_equal(field("HOST", "a"), AE_H3_MALFORMED);
    assert_int_equal(field("x y", "1"), AE_H3_MALFORMED); /* not a token */
    assert_int_equal(field("x:y", "1"), AE_H3_MALFORMED);
    assert_int_equal(field("x\"y", "1"), AE_H3_MALFORMED);
    assert_int_equal(field("x\x7f", "1"), AE_H3_MALFORMED);
    assert_int_equal(field("x\xc3\xa9", "1"), AE_H3_MALFORMED);
    assert_int_equal(ae_h3_check_field((const uint8_t *)"a\0b", 3, (const uint8_t *)"v", 1),
                     AE_H3_MALFORMED);
    /* unknown or response pseudo-headers in a request */
    assert_int_equal(field(":status", "200"), AE_H3_MALFORMED);
    assert_int_equal(field(":foo", "bar"), AE_H3_MALFORMED);
    assert_int_equal(field(":", "bar"), AE_H3_MALFORMED);
    assert_int_equal(field(":Method", "GET"), AE_H3_MALFORMED);
}

static void test_field_connection_specific(void **state)
{
    (void)state;
    assert_int_equal(field("connection", "keep-alive"), AE_H3_MALFORMED);
    assert_int_equal(field("connection", "close"), AE_H3_MALFORMED);
    assert_int_equal(field("keep-alive", "timeout=5"), AE_H3_MALFORMED);
    assert_int_equal(field("proxy-connection", "keep-alive"), AE_H3_MALFORMED);
    assert_int_equal(field("transfer-encoding", "chunked"), AE_H3_MALFORMED);
    assert_int_equal(field("upgrade", "websocket"), AE_H3_MALFORMED);
    assert_int_equal(field("te", "gzip"), AE_H3_MALFORMED);
    assert_int_equal(field("te", "trailers, gzip"), AE_H3_MALFORMED);
    assert_int_equal(field("te", ""), AE_H3_MALFORMED);
    assert_int_equal(field("te", "TRAILERS"), AE_H3_OK);
    /* names that merely contain those words are fine */
    assert_int_equal(field("x-connection", "close"), AE_H3_OK);
    assert_int_equal(field("upgrade-insecure-requests", "1"), AE_H3_OK);
    assert_int_equal(field("tea", "gzip"), AE_H3_OK);
}

static void test_field_values(void **state)
{
    (void)state;
    assert_int_equal(field("x-a", "a\rb"), AE_H3_MALFORMED);
    assert_int_equal(field("x-a", "a\nb"), AE_H3_MALFORMED);
    assert_int_equal(field("x-a", "a\r\nX-Injected: 1"), AE_H3_MALFORMED);
    assert_int_equal(field_n("x-a", "a\0b", 3), AE_H3_MALFORMED);
    assert_int_equal(field_n("x-a", "\0", 1), AE_H3_MALFORMED);
    assert_int_equal(field(":path", "/a\r\nHost: evil"), AE_H3_MALFORMED);
    assert_int_equal(field(":authority", "a\nb"), AE_H3_MALFORMED);
    assert_int_equal(field_n(":method", "GET\0", 4), AE_H3_MALFORMED);
}

static ae_h3_req_info good(void)
{
    ae_h3_req_info r;
    memset(&r, 0, sizeof(r));
    r.method = "GET";
    r.scheme = "https";
    r.path = "/index.html";
    r.authority = "example.com";
    r.section_size = 200;
    return r;
}

static void test_request_ok(void **state)
{
    (void)state;
    ae_h3_req_info r = good();
    assert_int_equal(ae_h3_check_request(&r), AE_H3_OK);
    r.method = "OPTIONS";
    r.path = "*";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_OK);
    r = good();
    r.method = "PROPFIND";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_OK);
    r.section_size = AE_H3_HEAD_MAX; /* the limit itself is allowed */
    assert_int_equal(ae_h3_check_request(&r), AE_H3_OK);
}

static void test_request_missing(void **state)
{
    (void)state;
    ae_h3_req_info r = good();
    r.method = NULL;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.scheme = NULL;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.path = NULL;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.authority = NULL; /* neither :authority nor Host */
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.path = ""; /* §4.3.1: :path must not be empty for http(s) */
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.method = "";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.authority = "";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
}

static void test_request_malformed(void **state)
{
    (void)state;
    ae_h3_req_info r = good();
    r.bad_field = 1;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.dup_pseudo = 1;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.late_pseudo = 1;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.has_protocol = 1; /* extended CONNECT not enabled */
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    /* what would break the HTTP/1.1 request line or Host */
    r = good();
    r.method = "GET /x HTTP/1.1\r\n";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.method = "G(T";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.path = "/a b";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.path = "index.html"; /* not origin-form */
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.path = "*"; /* only with OPTIONS */
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.authority = "a b";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r = good();
    r.path = "/\x7f";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
}

static void test_request_too_big(void **state)
{
    (void)state;
    ae_h3_req_info r = good();
    r.section_size = AE_H3_HEAD_MAX + 1;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_TOO_BIG);
    /* a section cut short by the limit is reported as too big, not as incomplete */
    r.method = NULL;
    r.path = NULL;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_TOO_BIG);
}

static void test_request_connect(void **state)
{
    (void)state;
    ae_h3_req_info r;
    memset(&r, 0, sizeof(r));
    r.method = "CONNECT";
    r.authority = "example.com:443";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_CONNECT);
    r.scheme = "https"; /* §4.4: CONNECT carries neither :scheme nor :path */
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r.scheme = NULL;
    r.path = "/";
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r.path = NULL;
    r.authority = NULL;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
    r.authority = "example.com:443";
    r.has_protocol = 1;
    assert_int_equal(ae_h3_check_request(&r), AE_H3_MALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_ok),
        cmocka_unit_test(test_field_names),
        cmocka_unit_test(test_field_connection_specific),
        cmocka_unit_test(test_field_values),
        cmocka_unit_test(test_request_ok),
        cmocka_unit_test(test_request_missing),
        cmocka_unit_test(test_request_malformed),
        cmocka_unit_test(test_request_too_big),
        cmocka_unit_test(test_request_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
