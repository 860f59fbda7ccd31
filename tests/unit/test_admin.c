/*
 * Admin endpoint request parsing and routing: ae_admin_parse_request() and ae_admin_route().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "proxy/site/admin.h"

static int parse(const char *s, ae_admin_request *req)
{
    return ae_admin_parse_request(s, strlen(s), req);
}

static void expect_parse(const char *s, int want)
{
    ae_admin_request req;
    int rv = parse(s, &req);

    if (rv != want)
        fail_msg("parse of \"%s\": got %d, want %d", s, rv, want);
}

/* Parses s (must succeed) and checks the fields. */
static void expect_req(const char *s, const char *method, const char *path, int minor)
{
    ae_admin_request req;
    int rv = parse(s, &req);

    if (rv != 0)
        fail_msg("parse of \"%s\": got %d", s, rv);
    assert_int_equal(req.method_len, strlen(method));
    assert_memory_equal(req.method, method, req.method_len);
    assert_ptr_equal(req.method, s);
    assert_int_equal(req.path_len, strlen(path));
    assert_memory_equal(req.path, path, req.path_len);
    assert_int_equal(req.minor, minor);
    assert_int_equal(req.head_len, strlen(s));
}

/* Parses s and routes it: want is the route id or AE_ERR_*, allow the expected Allow method. */
static void expect_route(const char *s, int want, const char *allow)
{
    ae_admin_request req;
    const char *got_allow = "sentinel";

    assert_int_equal(parse(s, &req), 0);
    assert_int_equal(ae_admin_route(&req, &got_allow), want);
    if (allow == NULL)
        assert_null(got_allow);
    else {
        assert_non_null(got_allow);
        assert_string_equal(got_allow, allow);
    }
}

static void test_valid(void **state)
{
    (void)state;
    expect_req("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", "GET", "/metrics", 1);
    expect_req("GET /status HTTP/1.0\r\n\r\n", "GET", "/status", 0);
    expect_req("POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "POST", "/reload",
               1);
    expect_req("POST /keys/rotate HTTP/1.1\r\nUser-Agent: anyedgectl/0.1\r\n\r\n", "POST",
               "/keys/rotate", 1);
    /* header values may be empty, hold tabs, spaces and obs-text bytes */
    expect_req("GET /status HTTP/1.1\r\nX-Empty:\r\nX-Tab: a\tb c\r\nX-Obs: \xc3\xa9\r\n\r\n",
               "GET", "/status", 1);
    /* header names are tokens */
    expect_req("GET /status HTTP/1.1\r\nX-a.b_c~1!#$%&'*+^`|: v\r\n\r\n", "GET", "/status", 1);
    /* other methods parse (routing rejects them) */
    expect_req("DELETE /metrics HTTP/1.1\r\n\r\n", "DELETE", "/metrics", 1);
    expect_req("GET / HTTP/1.1\r\n\r\n", "GET", "/", 1);
}

static void test_query_stripped(void **state)
{
    (void)state;
    expect_req("GET /metrics?name[]=anyedge_accepted HTTP/1.1\r\n\r\n", "GET", "/metrics", 1);
    expect_req("GET /status?x=1&y=2 HTTP/1.0\r\n\r\n", "GET", "/status", 0);
    expect_req("GET /status#frag HTTP/1.1\r\n\r\n", "GET", "/status", 1);
    expect_req("GET /status? HTTP/1.1\r\n\r\n", "GET", "/status", 1);
    expect_req("GET /?x HTTP/1.1\r\n\r\n", "GET", "/", 1);
    expect_route("POST /keys/rotate?now=1 HTTP/1.1\r\n\r\n", AE_ADMIN_KEYS_ROTATE, NULL);
}

/* head_len stops at the empty line: a body or a pipelined request after it is not part of it. */
static void test_head_len(void **state)
{
    static const char head[] = "POST /reload HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
    char buf[256];
    ae_admin_request req;

    (void)state;
    snprintf(buf, sizeof(buf), "%s{}GET /status HTTP/1.1\r\n\r\n", head);
    assert_int_equal(parse(buf, &req), 0);
    assert_int_equal(req.head_len, strlen(head));
    assert_int_equal(req.minor, 1);
}

static void test_incomplete(void **state)
{
    static const char *const reqs[] = {
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
        "POST /keys/rotate?x=1 HTTP/1.0\r\n\r\n",
    };
    size_t r, i;

    (void)state;
    for (r = 0; r < AE_ARRAY_LEN(reqs); r++) {
        const char *s = reqs[r];
        size_t len = strlen(s);
        ae_admin_request req;

        /* the parser must not read past len: each prefix is a fresh exact-size allocation */
        for (i = 0; i < len; i++) {
            char *p = malloc(i + 1);
            int rv;

            assert_non_null(p);
            memcpy(p, s, i);
            rv = ae_admin_parse_request(p, i, &req);
            free(p);
            if (rv != AE_ERR_AGAIN)
                fail_msg("request %zu prefix of %zu bytes: got %d, want AGAIN", r, i, rv);
        }
        char *p = malloc(len);
        assert_non_null(p);
        memcpy(p, s, len);
        assert_int_equal(ae_admin_parse_request(p, len, &req), 0);
        assert_int_equal(req.head_len, len);
        free(p);
    }
    expect_parse("", AE_ERR_AGAIN);
    expect_parse("GET /status HTTP/1.1\r\n\r", AE_ERR_AGAIN);
    expect_parse("GET /status HTTP/1.1\r\nHost: x\r\n", AE_ERR_AGAIN);
}

static void test_bad_syntax(void **state)
{
    static const char *const bad[] = {
        /* bare LF: request line, header line, end of head */
        "GET /metrics HTTP/1.1\n\n",
        "GET /metrics HTTP/1.1\r\nHost: x\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\n",
        "\n",
        "\r\n",
        /* method: lower case, mixed, missing, digits, too long */
        "get /metrics HTTP/1.1\r\n\r\n",
        "Get /metrics HTTP/1.1\r\n\r\n",
        " /metrics HTTP/1.1\r\n\r\n",
        "G3T /metrics HTTP/1.1\r\n\r\n",
        "ABCDEFGHIJKLMNOPQ /metrics HTTP/1.1\r\n\r\n",
        /* spacing */
        "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics  HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1 \r\n\r\n",
        "GET\t/metrics HTTP/1.1\r\n\r\n",
        /* control bytes and non-ASCII in the request line */
        "GET /met\x01rics HTTP/1.1\r\n\r\n",
        "GET /met\x7frics HTTP/1.1\r\n\r\n",
        "GET /m\xc3\xa9trics HTTP/1.1\r\n\r\n",
        "GET /met\rrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\r\n\r\n",
        /* control bytes in a header */
        "GET /metrics HTTP/1.1\r\nHost: a\x01z\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: a\x7fz\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: a\rz\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHo\x01st: a\r\n\r\n",
        /* header folding (obs-fold) */
        "GET /metrics HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: a\r\n\tb\r\n\r\n",
        /* target forms other than origin-form */
        "GET http://localhost/metrics HTTP/1.1\r\n\r\n",
        "GET localhost:9901 HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        /* versions */
        "GET /metrics HTTP/2.0\r\n\r\n",
        "GET /metrics HTTP/1\r\n\r\n",
        "GET /metrics HTTP/1.x\r\n\r\n",
        "GET /metrics HTTP/1.10\r\n\r\n",
        "GET /metrics http/1.1\r\n\r\n",
        "GET /metrics\r\n\r\n",
        "GET /metrics \r\n\r\n",
        "GET\r\n\r\n",
        /* header lines */
        "GET /metrics HTTP/1.1\r\nHost\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost localhost\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost : localhost\r\n\r\n",
        "GET /metrics HTTP/1.1\r\n: localhost\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nX(y): z\r\n\r\n",
        "GET /metrics HTTP/1.1\r\n\r\r\n",
    };
    size_t i;

    (void)state;
    for (i = 0; i < AE_ARRAY_LEN(bad); i++)
        expect_parse(bad[i], AE_ERR_PARSE);
}

/* NUL bytes fail as soon as they are seen, complete line or not (strlen cannot carry them). */
static void test_nul(void **state)
{
    static const char line_nul[] = "GET /met\0rics HTTP/1.1\r\n\r\n";
    static const char line_nul_partial[] = "GET /met\0ri";
    static const char hdr_nul[] = "GET /metrics HTTP/1.1\r\nHost: a\0b\r\n\r\n";
    static const char hdr_nul_partial[] = "GET /metrics HTTP/1.1\r\nHost: a\0b";
    ae_admin_request req;

    (void)state;
    assert_int_equal(ae_admin_parse_request(line_nul, sizeof(line_nul) - 1, &req), AE_ERR_PARSE);
    assert_int_equal(ae_admin_parse_request(line_nul_partial, sizeof(line_nul_partial) - 1, &req),
                     AE_ERR_PARSE);
    assert_int_equal(ae_admin_parse_request(hdr_nul, sizeof(hdr_nul) - 1, &req), AE_ERR_PARSE);
    assert_int_equal(ae_admin_parse_request(hdr_nul_partial, sizeof(hdr_nul_partial) - 1, &req),
                     AE_ERR_PARSE);
    /* junk in an incomplete request line fails fast rather than waiting for the line end */
    expect_parse("\x16\x03\x01\x02", AE_ERR_PARSE);
}

static void test_route(void **state)
{
    (void)state;
    expect_route("GET /metrics HTTP/1.1\r\n\r\n", AE_ADMIN_METRICS, NULL);
    expect_route("GET /status HTTP/1.0\r\n\r\n", AE_ADMIN_STATUS, NULL);
    expect_route("POST /reload HTTP/1.1\r\n\r\n", AE_ADMIN_RELOAD, NULL);
    expect_route("POST /keys/rotate HTTP/1.1\r\n\r\n", AE_ADMIN_KEYS_ROTATE, NULL);
    expect_route("GET /metrics?x=1 HTTP/1.1\r\n\r\n", AE_ADMIN_METRICS, NULL);
    assert_int_equal(AE_ADMIN_METRICS, 0);
    assert_int_equal(AE_ADMIN_STATUS, 1);
    assert_int_equal(AE_ADMIN_RELOAD, 2);
    assert_int_equal(AE_ADMIN_KEYS_ROTATE, 3);
}

static void test_route_notfound(void **state)
{
    (void)state;
    expect_route("GET / HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
    expect_route("GET /metrics/ HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
    expect_route("GET /metricsx HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
    expect_route("GET /Metrics HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
    expect_route("GET /metric HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
    expect_route("POST /keys HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
    expect_route("POST /keys/rotate/ HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
    expect_route("GET //status HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
    expect_route("POST /nope HTTP/1.1\r\n\r\n", AE_ERR_NOTFOUND, NULL);
}

static void test_route_method(void **state)
{
    (void)state;
    expect_route("POST /metrics HTTP/1.1\r\n\r\n", AE_ERR_INVAL, "GET");
    expect_route("HEAD /metrics HTTP/1.1\r\n\r\n", AE_ERR_INVAL, "GET");
    expect_route("PUT /status HTTP/1.1\r\n\r\n", AE_ERR_INVAL, "GET");
    expect_route("GET /reload HTTP/1.1\r\n\r\n", AE_ERR_INVAL, "POST");
    expect_route("GET /keys/rotate?x HTTP/1.1\r\n\r\n", AE_ERR_INVAL, "POST");
    expect_route("POSTX /reload HTTP/1.1\r\n\r\n", AE_ERR_INVAL, "POST");
    expect_route("GE /metrics HTTP/1.1\r\n\r\n", AE_ERR_INVAL, "GET");
}

/* ae_admin_route() on hand-built requests: spans are lengths, not NUL-terminated strings. */
static void test_route_spans(void **state)
{
    static const char buf[] = "GETX/statusXX";
    ae_admin_request req;
    const char *allow = "sentinel";

    (void)state;
    memset(&req, 0, sizeof(req));
    req.method = buf;
    req.method_len = 3;
    req.path = buf + 4;
    req.path_len = 7;
    assert_int_equal(ae_admin_route(&req, &allow), AE_ADMIN_STATUS);
    assert_null(allow);
    req.path_len = 8;
    assert_int_equal(ae_admin_route(&req, &allow), AE_ERR_NOTFOUND);
    assert_null(allow);
    req.path_len = 7;
    req.method_len = 4;
    allow = NULL;
    assert_int_equal(ae_admin_route(&req, &allow), AE_ERR_INVAL);
    assert_string_equal(allow, "GET");
}

/* Host, Origin and Authorization are captured (trimmed); a repeated one is an error. */
static void test_headers(void **state)
{
    ae_admin_request req;
    const char *s = "GET / HTTP/1.1\r\nhOsT:  127.0.0.1:9901 \r\nOrigin: http://x\r\n"
                    "Authorization:\tBearer abc\r\nX-Other: 1\r\n\r\n";
    (void)state;
    assert_int_equal(parse(s, &req), 0);
    assert_int_equal(req.host_len, strlen("127.0.0.1:9901"));
    assert_memory_equal(req.host, "127.0.0.1:9901", req.host_len);
    assert_int_equal(req.origin_len, 8);
    assert_memory_equal(req.origin, "http://x", 8);
    assert_int_equal(req.authorization_len, 10);
    assert_memory_equal(req.authorization, "Bearer abc", 10);
    assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", &req), 0);
    assert_null(req.host);
    assert_null(req.origin);
    assert_null(req.authorization);
    expect_parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", AE_ERR_PARSE);
    expect_parse("GET / HTTP/1.1\r\nOrigin: a\r\norigin: a\r\n\r\n", AE_ERR_PARSE);
    expect_parse("GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: a\r\n\r\n", AE_ERR_PARSE);
}

static int host_ok(const char *h, const struct sockaddr *local)
{
    return ae_admin_host_ok(h, strlen(h), local);
}

static void test_host_ok(void **state)
{
    struct sockaddr_in l4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000005)};
    struct sockaddr_in6 l6 = {.sin6_family = AF_INET6};
    (void)state;
    l6.sin6_addr.s6_addr[0] = 0x20;
    l6.sin6_addr.s6_addr[1] = 0x01;
    l6.sin6_addr.s6_addr[15] = 0x05;
    static const char *const good[] = {"localhost",   "LocalHost:9901",    "127.0.0.1",
                                       "127.0.0.1:1", "127.255.0.9:65535", "[::1]",
                                       "[::1]:9901"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!host_ok(good[i], NULL))
            fail_msg("Host \"%s\" refused", good[i]);
    static const char *const bad[] = {"",
                                      "evil.example",
                                      "localhost.evil.example",
                                      "127.0.0.1.nip.io",
                                      "10.0.0.5",
                                      "128.0.0.1",
                                      "::1",
                                      "[::1",
                                      "[::2]",
                                      "127.0.0.1:",
                                      "127.0.0.1:99999x",
                                      "127.0.0.1:1234567",
                                      "localhost:80:80",
                                      "[]:1",
                                      "0x7f.0.0.1",
                                      "2130706433"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (host_ok(bad[i], NULL))
            fail_msg("Host \"%s\" accepted", bad[i]);
    /* the connection's own address, as a literal */
    assert_true(host_ok("10.0.0.5:9901", (struct sockaddr *)&l4));
    assert_false(host_ok("10.0.0.6", (struct sockaddr *)&l4));
    assert_true(host_ok("[2001::5]:9901", (struct sockaddr *)&l6));
    assert_false(host_ok("[2001::6]", (struct sockaddr *)&l6));
    assert_false(host_ok("10.0.0.5", (struct sockaddr *)&l6));
}

static void test_origin_ok(void **state)
{
    (void)state;
    assert_true(ae_admin_origin_ok("http://127.0.0.1:9901", 21, NULL));
    assert_true(ae_admin_origin_ok("https://localhost", 17, NULL));
    assert_false(ae_admin_origin_ok("null", 4, NULL));
    assert_false(ae_admin_origin_ok("http://evil.example", 19, NULL));
    assert_false(ae_admin_origin_ok("file://", 7, NULL));
    assert_false(ae_admin_origin_ok("http://", 7, NULL));
    assert_false(ae_admin_origin_ok("127.0.0.1", 9, NULL));
    assert_false(ae_admin_origin_ok(NULL, 0, NULL));
}

static void test_token_ok(void **state)
{
    const char *tok = "0123456789abcdef";
    (void)state;
    assert_true(ae_admin_token_ok("Bearer 0123456789abcdef", 23, tok));
    assert_true(ae_admin_token_ok("bEARER 0123456789abcdef", 23, tok));
    assert_false(ae_admin_token_ok("Bearer 0123456789abcdeF", 23, tok));
    assert_false(ae_admin_token_ok("Bearer 0123456789abcde", 22, tok));
    assert_false(ae_admin_token_ok("Bearer 0123456789abcdef0", 24, tok));
    assert_false(ae_admin_token_ok("Basic 0123456789abcdef", 22, tok));
    assert_false(ae_admin_token_ok("0123456789abcdef", 16, tok));
    assert_false(ae_admin_token_ok(NULL, 0, tok));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),        cmocka_unit_test(test_query_stripped),
        cmocka_unit_test(test_head_len),     cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_bad_syntax),   cmocka_unit_test(test_nul),
        cmocka_unit_test(test_route),        cmocka_unit_test(test_route_notfound),
        cmocka_unit_test(test_route_method), cmocka_unit_test(test_route_spans),
        cmocka_unit_test(test_headers),      cmocka_unit_test(test_host_ok),
        cmocka_unit_test(test_origin_ok),    cmocka_unit_test(test_token_ok),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
