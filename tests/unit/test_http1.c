/*
 * HTTP/1.1 response parsing (proxy/upstream/http1.c): the head parser and the body decoder,
 * every malformed case refused with its reason, and the chunked decoder fed in any split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "proxy/upstream/http1.h"

/* ---- head helpers ---- */

#define MAXF 16

static char hbuf[65536];
static ae_h1_field hf[MAXF];
static ae_h1_head hh;

/* Parses a copy of the head text s (which ends with its empty line) for a GET request. */
static int head_ex(const char *s, size_t len, int is_head, const char *drop, size_t maxf)
{
    assert_true(len <= sizeof(hbuf));
    memcpy(hbuf, s, len);
    ae_h1_req req = {.is_head = is_head, .drop_field = drop};
    return ae_h1_parse_head(hbuf, len, &req, &hh, hf, maxf);
}

static int head(const char *s)
{
    return head_ex(s, strlen(s), 0, NULL, MAXF);
}

/* A response with one extra field line fl (raw, without CRLF) of length fllen. */
static int head_field(const char *fl, size_t fllen)
{
    char b[2048];
    static const char pre[] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n";
    assert_true(sizeof(pre) - 1 + fllen + 4 <= sizeof(b));
    memcpy(b, pre, sizeof(pre) - 1);
    memcpy(b + sizeof(pre) - 1, fl, fllen);
    memcpy(b + sizeof(pre) - 1 + fllen, "\r\n\r\n", 4);
    return head_ex(b, sizeof(pre) - 1 + fllen + 4, 0, NULL, MAXF);
}

static int status_line(const char *sl, size_t len)
{
    char b[256];
    assert_true(len + 4 <= sizeof(b));
    memcpy(b, sl, len);
    memcpy(b + len, "\r\n\r\n", 4);
    return head_ex(b, len + 4, 0, NULL, MAXF);
}

#define STATUS_LINE(lit) status_line(lit, sizeof(lit) - 1)
#define FIELD(lit)       head_field(lit, sizeof(lit) - 1)
#define HEADL(lit)       head_ex(lit, sizeof(lit) - 1, 0, NULL, MAXF)

/* The value of the relayed field `name`, "" when it has no value, NULL when it is absent. */
static const char *fval(const char *name)
{
    static char v[1024];
    for (size_t i = 0; i < hh.nfields; i++) {
        if (hf[i].namelen == strlen(name) && memcmp(hf[i].name, name, hf[i].namelen) == 0) {
            snprintf(v, sizeof(v), "%.*s", (int)hf[i].valuelen, hf[i].value);
            return v;
        }
    }
    return NULL;
}

/* ---- head: status line ---- */

static void test_status_line_ok(void **state)
{
    (void)state;
    assert_int_equal(head("HTTP/1.1 200 OK\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.status, 200);
    assert_int_equal(hh.version, 11);
    assert_int_equal(hh.interim, 0);
    assert_int_equal(hh.nfields, 0);
    /* no reason phrase, with or without the space before it */
    assert_int_equal(STATUS_LINE("HTTP/1.1 404"), AE_H1_OK);
    assert_int_equal(hh.status, 404);
    assert_int_equal(STATUS_LINE("HTTP/1.1 404 "), AE_H1_OK);
    assert_int_equal(STATUS_LINE("HTTP/1.1 503 Service  Unavailable\t(x) caf\xc3\xa9"), AE_H1_OK);
    assert_int_equal(hh.status, 503);
    assert_int_equal(STATUS_LINE("HTTP/1.0 200 OK"), AE_H1_OK);
    assert_int_equal(hh.version, 10);
    assert_int_equal(STATUS_LINE("HTTP/1.2 200 OK"), AE_H1_OK); /* a later 1.x: as 1.1 */
    assert_int_equal(hh.version, 11);
    assert_int_equal(STATUS_LINE("HTTP/1.1 100"), AE_H1_OK);
    assert_int_equal(STATUS_LINE("HTTP/1.1 599 x"), AE_H1_OK);
    assert_int_equal(hh.status, 599);
}

static void test_status_line_bad(void **state)
{
    (void)state;
    assert_int_equal(STATUS_LINE(""), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 20"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 20 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 2000 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 2x0 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 +20 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1  200 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1\t200 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 200\tOK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 099 Low"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 000"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 600 High"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 999"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/2.0 200 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.x 200 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1 200 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("http/1.1 200 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("ICY 200 OK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE(" HTTP/1.1 200 OK"), AE_H1_ERR_STATUS_LINE);
    /* control characters in the reason phrase: NUL, bare CR, bare LF, others */
    assert_int_equal(STATUS_LINE("HTTP/1.1 200 O\0K"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 200 O\rK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 200 O\nK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 200 O\x1bK"), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(STATUS_LINE("HTTP/1.1 200 OK\x7f"), AE_H1_ERR_STATUS_LINE);
    /* no CRLF at all */
    assert_int_equal(head_ex("HTTP/1.1 200 OK", 15, 0, NULL, MAXF), AE_H1_ERR_STATUS_LINE);
    assert_int_equal(head_ex("", 0, 0, NULL, MAXF), AE_H1_ERR_STATUS_LINE);
}

/* ---- head: 1xx ---- */

static void test_interim(void **state)
{
    (void)state;
    assert_int_equal(head("HTTP/1.1 100 Continue\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.status, 100);
    assert_int_equal(hh.interim, 1);
    assert_int_equal(head("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
                          "Content-Length: 5\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.interim, 1);
    assert_int_equal(hh.nfields, 0); /* interim fields are not relayed */
    assert_int_equal(hh.status, 103);
    /* framing fields do not apply to 1xx ... */
    assert_int_equal(head("HTTP/1.1 102 Processing\r\nTransfer-Encoding: gzip\r\n"
                          "Content-Length: x\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.interim, 1);
    /* ... but the field syntax does */
    assert_int_equal(HEADL("HTTP/1.1 100 Continue\r\nX: a\0b\r\n\r\n"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(head("HTTP/1.1 100 Continue\r\n folded\r\n\r\n"), AE_H1_ERR_OBS_FOLD);
    assert_int_equal(head("HTTP/1.1 100 Continue\r\nnocolon\r\n\r\n"), AE_H1_ERR_HEADER_SYNTAX);
    /* 101: no upgrades through HTTP/3 */
    assert_int_equal(head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n\r\n"),
                     AE_H1_ERR_UPGRADE);
    assert_int_equal(STATUS_LINE("HTTP/1.0 101"), AE_H1_ERR_UPGRADE);
}

/* ---- head: body framing ---- */

static void test_body_modes(void **state)
{
    (void)state;
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_LENGTH);
    assert_int_equal(hh.content_length, 10);
    assert_int_equal(hh.keep_alive, 1);
    assert_string_equal(fval("content-length"), "10");
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_int_equal(hh.content_length, 0);
    assert_int_equal(hh.keep_alive, 1);
    assert_int_equal(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_CHUNKED);
    assert_int_equal(hh.content_length, -1);
    assert_int_equal(hh.keep_alive, 1);
    assert_null(fval("transfer-encoding"));
    assert_int_equal(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED \r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_CHUNKED);
    /* neither: until the server closes, which also ends the connection */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nX: y\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_CLOSE);
    assert_int_equal(hh.content_length, -1);
    assert_int_equal(hh.keep_alive, 0);
    /* HEAD, 204, 304: no body whatever the fields say; the fields are relayed */
    const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    assert_int_equal(head_ex(h, strlen(h), 1, NULL, MAXF), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_int_equal(hh.content_length, 10);
    assert_int_equal(hh.keep_alive, 1);
    assert_string_equal(fval("content-length"), "10");
    h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(head_ex(h, strlen(h), 1, NULL, MAXF), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    h = "HTTP/1.1 200 OK\r\n\r\n";
    assert_int_equal(head_ex(h, strlen(h), 1, NULL, MAXF), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_int_equal(hh.keep_alive, 1);
    assert_int_equal(head("HTTP/1.1 204 No Content\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_int_equal(hh.keep_alive, 1);
    assert_int_equal(head("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_int_equal(head("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_string_equal(fval("content-length"), "99");
    /* other statuses do have bodies */
    assert_int_equal(head("HTTP/1.1 205 Reset Content\r\nContent-Length: 3\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_LENGTH);
    assert_int_equal(head("HTTP/1.1 500 Oops\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_CLOSE);
}

static void test_cl_and_te(void **state)
{
    (void)state;
    /* RFC 9112 §6.3: chunked wins, the length is not passed on, the connection is not kept */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n"
                          "Transfer-Encoding: chunked\r\nX-B: 2\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_CHUNKED);
    assert_int_equal(hh.content_length, -1);
    assert_int_equal(hh.keep_alive, 0);
    assert_int_equal(hh.nfields, 2);
    assert_null(fval("content-length"));
    assert_string_equal(fval("x-a"), "1");
    assert_string_equal(fval("x-b"), "2");
    assert_int_equal(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          "content-length: 5\r\nContent-Length: 5\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_CHUNKED);
    assert_int_equal(hh.nfields, 0);
    /* still checked: a bad or conflicting length is an error even next to chunked */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          "Content-Length: x\r\n\r\n"),
                     AE_H1_ERR_CL_INVALID);
    assert_int_equal(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          "Content-Length: 1\r\nContent-Length: 2\r\n\r\n"),
                     AE_H1_ERR_CL_CONFLICT);
}

static void test_content_length(void **state)
{
    (void)state;
    /* the same value twice: accepted, relayed as received */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.content_length, 7);
    assert_int_equal(hh.nfields, 2);
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"),
                     AE_H1_ERR_CL_CONFLICT);
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n"),
                     AE_H1_ERR_CL_CONFLICT);
    assert_int_equal(FIELD("Content-Length:  \t42 \t"), AE_H1_ERR_CL_CONFLICT); /* vs 1 */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length:  \t42 \t\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.content_length, 42);
    assert_string_equal(fval("content-length"), "42");
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 0009\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.content_length, 9);
    assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.content_length, INT64_MAX);
    static const char *const bad[] = {
        "",
        "x",
        "-1",
        "+5",
        "-0",
        "1 2",
        "1,1",
        "5, 5",
        "0x10",
        "1.0",
        "1e3",
        "\xd9\xa1", /* Arabic-Indic one */
        "9223372036854775808",
        "99999999999999999999",
        "18446744073709551616",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char h[128];
        snprintf(h, sizeof(h), "HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n", bad[i]);
        if (head(h) != AE_H1_ERR_CL_INVALID)
            fail_msg("Content-Length \"%s\" accepted", bad[i]);
    }
}

static void test_transfer_encoding(void **state)
{
    (void)state;
    static const char *const bad[] = {"gzip", "gzip, chunked", "chunked, gzip",    "identity",
                                      "",     "chunked;q=1",   "chunked, chunked", "chunkedx"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char h[128];
        snprintf(h, sizeof(h), "HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n", bad[i]);
        if (head(h) != AE_H1_ERR_TE_UNSUPPORTED)
            fail_msg("Transfer-Encoding \"%s\" accepted", bad[i]);
    }
    /* chunked is applied once only: a second field is a second coding */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"),
                     AE_H1_ERR_TE_UNSUPPORTED);
    /* HTTP/1.0 with chunked: decoded as chunked, never kept */
    assert_int_equal(head("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_CHUNKED);
    assert_int_equal(hh.keep_alive, 0);
}

static void test_keep_alive(void **state)
{
    (void)state;
    struct {
        const char *head;
        int keep;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: CLOSE\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive, close\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: x-foo,close\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: x\r\nConnection: close\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: closed\r\n\r\n", 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Connection: close\r\n\r\n", 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nKeep-Alive: timeout=5\r\n\r\n", 1},
        /* HTTP/1.0: never kept, even with Connection: keep-alive */
        {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 0},
        {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", 0},
        {"HTTP/1.0 204 No Content\r\n\r\n", 0},
        /* close-delimited bodies end the connection */
        {"HTTP/1.1 200 OK\r\n\r\n", 0},
        {"HTTP/1.1 304 Not Modified\r\n\r\n", 1},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(head(cases[i].head), AE_H1_OK);
        if (hh.keep_alive != cases[i].keep)
            fail_msg("case %zu: keep_alive %d, want %d", i, hh.keep_alive, cases[i].keep);
    }
}

/* ---- head: fields ---- */

static void test_fields_relayed(void **state)
{
    (void)state;
    assert_int_equal(head("HTTP/1.1 200 OK\r\n"
                          "Content-Type: text/plain\r\n"
                          "Connection: keep-alive, X-Custom\r\n"
                          "Keep-Alive: timeout=5\r\n"
                          "Proxy-Connection: keep-alive\r\n"
                          "X-Empty:\r\n"
                          "Upgrade: h2c\r\n"
                          "TE: trailers\r\n"
                          "Set-Cookie: a=1\r\n"
                          "set-cookie: b=2\r\n"
                          "X-Spaces: \t  inner  value \t \r\n"
                          "X-Obs-Text: caf\xc3\xa9\r\n"
                          "X-Ctl: a\x01"
                          "b\tc\r\n"
                          "X-Anyedge-Site: upstream's\r\n"
                          "X-Weird_Name.~!#$%&'*+^`|: 1\r\n"
                          "Content-Length: 2\r\n"
                          "\r\n"),
                     AE_H1_OK);
    static const char *const want[][2] = {
        {"content-type", "text/plain"},
        {"x-empty", ""},
        {"set-cookie", "a=1"},
        {"set-cookie", "b=2"},
        {"x-spaces", "inner  value"},
        {"x-obs-text", "caf\xc3\xa9"},
        {"x-ctl", "a\x01"
                  "b\tc"},
        {"x-anyedge-site", "upstream's"},
        {"x-weird_name.~!#$%&'*+^`|", "1"},
        {"content-length", "2"},
    };
    assert_int_equal(hh.nfields, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < hh.nfields; i++) {
        assert_int_equal(hf[i].namelen, strlen(want[i][0]));
        assert_memory_equal(hf[i].name, want[i][0], hf[i].namelen);
        assert_int_equal(hf[i].valuelen, strlen(want[i][1]));
        assert_memory_equal(hf[i].value, want[i][1], hf[i].valuelen);
    }
    /* names are lower-cased in the caller's buffer */
    assert_non_null(memmem(hbuf, sizeof(hbuf), "\r\ncontent-type: text/plain", 26));
    assert_int_equal(hh.keep_alive, 1);
}

static void test_drop_field(void **state)
{
    (void)state;
    const char *h = "HTTP/1.1 200 OK\r\nX-Anyedge-Site: theirs\r\nX-A: 1\r\n"
                    "x-anyedge-site: again\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(head_ex(h, strlen(h), 0, "x-anyedge-site", MAXF), AE_H1_OK);
    assert_int_equal(hh.nfields, 2);
    assert_null(fval("x-anyedge-site"));
    assert_string_equal(fval("x-a"), "1");
    assert_int_equal(head_ex(h, strlen(h), 0, "X-ANYEDGE-SITE", MAXF), AE_H1_OK);
    assert_int_equal(hh.nfields, 2);
    /* a dropped field still counts for framing */
    h = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
    assert_int_equal(head_ex(h, strlen(h), 0, "content-length", MAXF), AE_H1_OK);
    assert_int_equal(hh.nfields, 0);
    assert_int_equal(hh.body, AE_H1_BODY_LENGTH);
}

static void test_field_syntax(void **state)
{
    (void)state;
    /* obsolete line folding, also before the first field */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n"), AE_H1_ERR_OBS_FOLD);
    assert_int_equal(head("HTTP/1.1 200 OK\r\nX-A: 1\r\n\t2\r\n\r\n"), AE_H1_ERR_OBS_FOLD);
    assert_int_equal(head("HTTP/1.1 200 OK\r\n X-A: 1\r\n\r\n"), AE_H1_ERR_OBS_FOLD);
    assert_int_equal(FIELD("no colon"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X-A"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD(": empty name"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD(":"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X-A : space before colon"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X-A\t: tab before colon"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X A: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X(A): 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X\"A: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X@A: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X/A: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X\x7f: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("caf\xc3\xa9: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X\0A: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X\rA: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X\nA: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD(":status: 200"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(FIELD("X-A:: 1"), AE_H1_OK); /* the value is ": 1" */
    assert_string_equal(fval("x-a"), ": 1");
    /* the head must end with its empty line, and nothing after it */
    assert_int_equal(head("HTTP/1.1 200 OK\r\nX-A: 1\r\n"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(head("HTTP/1.1 200 OK\r\nX-A: 1"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(head("HTTP/1.1 200 OK\r\n"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(head("HTTP/1.1 200 OK\r\n\r\nX"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(head("HTTP/1.1 200 OK\r\n\r\n\r\n"), AE_H1_ERR_HEADER_SYNTAX);
    assert_int_equal(head("HTTP/1.1 200 OK\r\nX-A: 1\n\n"), AE_H1_ERR_HEADER_SYNTAX);
}

static void test_field_value_nul_cr_lf(void **state)
{
    (void)state;
    /* RFC 9110 §5.5: never NUL, CR or LF in a value (a bare CR or LF would split the field
     * differently for different parsers) */
    assert_int_equal(FIELD("X-A: a\0b"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("X-A: \0"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("X-A: a\rb"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("X-A: a\nb"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("X-A: a\n"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("X-A: a\r"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("X-A:\r"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("X-A:\n Injected: 1"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("Set-Cookie: a=1\rSet-Cookie: evil=1"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("Content-Length: 1\n"), AE_H1_ERR_FIELD_VALUE);
    assert_int_equal(FIELD("Transfer-Encoding: chunked\r"), AE_H1_ERR_FIELD_VALUE);
    /* a dropped field is checked as well */
    assert_int_equal(FIELD("Connection: close\nX: 1"), AE_H1_ERR_FIELD_VALUE);
    /* other controls are kept (RFC 9110 §5.5 allows it), HTAB is plain whitespace */
    assert_int_equal(FIELD("X-A: a\x01\x1f\x7f"
                           "b"),
                     AE_H1_OK);
    assert_int_equal(FIELD("X-A: a\tb"), AE_H1_OK);
}

static void test_too_many_fields(void **state)
{
    (void)state;
    static char h[16384];
    size_t n = (size_t)snprintf(h, sizeof(h), "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < MAXF; i++)
        n += (size_t)snprintf(h + n, sizeof(h) - n, "X-%d: %d\r\n", i, i);
    memcpy(h + n, "\r\n", 3);
    assert_int_equal(head(h), AE_H1_OK); /* exactly MAXF */
    assert_int_equal(hh.nfields, MAXF);
    assert_int_equal(head_ex(h, strlen(h), 0, NULL, MAXF - 1), AE_H1_ERR_TOO_MANY_FIELDS);
    assert_int_equal(head_ex(h, strlen(h), 0, NULL, 0), AE_H1_ERR_TOO_MANY_FIELDS);
    /* fields that are not relayed do not count */
    n = (size_t)snprintf(h, sizeof(h), "HTTP/1.1 200 OK\r\nX-A: 1\r\n");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(h + n, sizeof(h) - n, "Connection: keep-alive\r\nX-Site: %d\r\n", i);
    memcpy(h + n, "\r\n", 3);
    assert_int_equal(head_ex(h, strlen(h), 0, "x-site", 1), AE_H1_OK);
    assert_int_equal(hh.nfields, 1);
    /* interim heads relay nothing, so any number of fields */
    n = (size_t)snprintf(h, sizeof(h), "HTTP/1.1 103 Early Hints\r\n");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(h + n, sizeof(h) - n, "Link: </%d>\r\n", i);
    memcpy(h + n, "\r\n", 3);
    assert_int_equal(head_ex(h, strlen(h), 0, NULL, 1), AE_H1_OK);
    assert_int_equal(hh.interim, 1);
    /* a Content-Length counts until chunked takes it out (as before the parser was split) */
    const char *t = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: 1\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(head_ex(t, strlen(t), 0, NULL, 1), AE_H1_ERR_TOO_MANY_FIELDS);
    assert_int_equal(head_ex(t, strlen(t), 0, NULL, 2), AE_H1_OK);
    assert_int_equal(hh.nfields, 1);
}

static void test_head_len(void **state)
{
    (void)state;
    assert_int_equal(ae_h1_head_len("", 0), 0);
    assert_int_equal(ae_h1_head_len("HTTP/1.1 200 OK\r\n", 17), 0);
    assert_int_equal(ae_h1_head_len("HTTP/1.1 200 OK\r\n\r", 18), 0);
    assert_int_equal(ae_h1_head_len("HTTP/1.1 200 OK\r\n\r\n", 19), 19);
    assert_int_equal(ae_h1_head_len("HTTP/1.1 200 OK\r\n\r\nbody\r\n\r\n", 27), 19);
    assert_int_equal(ae_h1_head_len("HTTP/1.1 200 OK\n\n", 17), 0);
}

/* RFC 9110 §7.6.1: fields the Connection header names are hop-by-hop too. */
static void test_connection_nominated(void **state)
{
    (void)state;
    assert_int_equal(HEADL("HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\n"
                           "x-secret: 1\r\nX-Other: 2\r\nConnection: x-more\r\nX-More: 3\r\n"
                           "Content-Length: 0\r\n\r\n"),
                     AE_H1_OK);
    assert_null(fval("x-secret"));
    assert_null(fval("x-more"));
    assert_null(fval("connection"));
    assert_string_equal(fval("x-other"), "2");
    assert_true(hh.keep_alive);
    /* close is an option, not a field name; the connection is not kept */
    assert_int_equal(HEADL("HTTP/1.1 200 OK\r\nConnection: close\r\nClose: x\r\n"
                           "Content-Length: 0\r\n\r\n"),
                     AE_H1_OK);
    assert_string_equal(fval("close"), "x");
    assert_false(hh.keep_alive);
    /* 16 names fit, 17 do not */
    assert_int_equal(HEADL("HTTP/1.1 200 OK\r\nConnection: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p\r\n"
                           "Content-Length: 0\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(HEADL("HTTP/1.1 200 OK\r\nConnection: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\r\n"
                           "Content-Length: 0\r\n\r\n"),
                     AE_H1_ERR_CONN_OPTIONS);
    assert_int_equal(HEADL("HTTP/1.1 200 OK\r\nConnection: a,b,c,d,e,f,g,h\r\n"
                           "Connection: i,j,k,l,m,n,o,p,q\r\nContent-Length: 0\r\n\r\n"),
                     AE_H1_ERR_CONN_OPTIONS);
}

/* A 204 never relays Content-Length (RFC 9110 §8.6); 204/304 framed like a body: not reused. */
static void test_bodyless_status_framing(void **state)
{
    (void)state;
    assert_int_equal(HEADL("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_null(fval("content-length"));
    assert_string_equal(fval("x-a"), "1");
    assert_false(hh.keep_alive);
    assert_int_equal(HEADL("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"), AE_H1_OK);
    assert_null(fval("content-length"));
    assert_true(hh.keep_alive);
    assert_int_equal(HEADL("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_false(hh.keep_alive);
    /* 304: the representation's length is relayed, the connection kept */
    assert_int_equal(HEADL("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"), AE_H1_OK);
    assert_string_equal(fval("content-length"), "5");
    assert_int_equal(hh.body, AE_H1_BODY_NONE);
    assert_true(hh.keep_alive);
    assert_int_equal(HEADL("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     AE_H1_OK);
    assert_false(hh.keep_alive);
    /* Content-Length is exactly 1*DIGIT, one value */
    assert_int_equal(HEADL("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"), AE_H1_ERR_CL_INVALID);
    assert_int_equal(HEADL("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
                     AE_H1_ERR_CL_INVALID);
    assert_int_equal(HEADL("HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n"), AE_H1_ERR_CL_INVALID);
}

static void test_err_names(void **state)
{
    (void)state;
    assert_string_equal(ae_h1_strerror(AE_H1_OK), "ok");
    assert_string_equal(ae_h1_strerror(AE_H1_ERR_CL_CONFLICT), "cl_conflict");
    assert_string_equal(ae_h1_strerror(AE_H1_ERR_INCOMPLETE), "incomplete");
    assert_string_equal(ae_h1_strerror(1), "?");
    assert_string_equal(ae_h1_strerror(-AE_H1_NERRS), "?");
    for (int i = 0; i < AE_H1_NERRS; i++) {
        const char *a = ae_h1_strerror(-i);
        assert_string_not_equal(a, "?");
        for (int j = 0; j < i; j++)
            assert_string_not_equal(a, ae_h1_strerror(-j));
    }
}

/* ---- body helpers ---- */

static uint8_t out[1 << 20];
static size_t outlen;

/* A small deterministic PRNG (xorshift64*), so the random tests repeat exactly. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

/* Feeds in[0, len) to b in pieces: `step` bytes each, 0 for random sizes 1..step_max (all at
 * once when both are 0). The data goes to out[0, outlen). Returns AE_H1_OK with *used the bytes
 * consumed, or the error (*used then depends on the split). */
static int feed(ae_h1_body *b, const uint8_t *in, size_t len, size_t step, size_t step_max,
                size_t *used)
{
    size_t off = 0;
    outlen = 0;
    while (off < len) {
        size_t piece = step ? step : step_max ? 1 + (size_t)(rnd() % step_max) : len;
        if (piece > len - off)
            piece = len - off;
        size_t pend = off + piece;
        while (off < pend) {
            const uint8_t *d;
            size_t dl;
            ssize_t n = ae_h1_body_decode(b, in + off, pend - off, &d, &dl);
            if (n < 0) {
                *used = off;
                return (int)n;
            }
            assert_true((size_t)n <= pend - off);
            assert_true(dl <= (size_t)n);
            if (dl > 0) {
                assert_ptr_equal(d + dl, in + off + (size_t)n); /* the last consumed bytes */
                assert_true(outlen + dl <= sizeof(out));
                memcpy(out + outlen, d, dl);
                outlen += dl;
            }
            off += (size_t)n;
            if (n == 0) {
                assert_true(ae_h1_body_done(b)); /* only a complete body stops consuming */
                *used = off;
                return AE_H1_OK;
            }
        }
    }
    *used = off;
    return AE_H1_OK;
}

static int chunked(const char *s, size_t len, size_t *used)
{
    static ae_h1_body b;
    ae_h1_body_init(&b, AE_H1_BODY_CHUNKED, 0);
    int rc = feed(&b, (const uint8_t *)s, len, 0, 0, used);
    if (rc == AE_H1_OK && !ae_h1_body_done(&b))
        rc = ae_h1_body_eof(&b);
    return rc;
}

/* Decodes a whole chunked body given as a literal: AE_H1_OK only when it is complete. */
#define CHUNKED(lit) chunked(lit, sizeof(lit) - 1, &used)

/* ---- body: Content-Length, close-delimited, none ---- */

static void test_body_length(void **state)
{
    (void)state;
    ae_h1_body b;
    size_t used;
    ae_h1_body_init(&b, AE_H1_BODY_LENGTH, 10);
    assert_int_equal(ae_h1_body_done(&b), 0);
    assert_int_equal(ae_h1_body_eof(&b), AE_H1_ERR_INCOMPLETE);
    assert_int_equal(feed(&b, (const uint8_t *)"01234", 5, 0, 0, &used), AE_H1_OK);
    assert_int_equal(used, 5);
    assert_int_equal(ae_h1_body_done(&b), 0);
    assert_int_equal(ae_h1_body_eof(&b), AE_H1_ERR_INCOMPLETE); /* short body */
    assert_int_equal(feed(&b, (const uint8_t *)"56789HTTP/1.1", 13, 0, 0, &used), AE_H1_OK);
    assert_int_equal(used, 5); /* the rest is not the body's */
    assert_int_equal(outlen, 5);
    assert_memory_equal(out, "56789", 5);
    assert_int_equal(ae_h1_body_done(&b), 1);
    assert_int_equal(ae_h1_body_eof(&b), AE_H1_OK);
    const uint8_t *d;
    size_t dl;
    assert_int_equal(ae_h1_body_decode(&b, (const uint8_t *)"x", 1, &d, &dl), 0);
    assert_int_equal(dl, 0);
    /* byte by byte */
    ae_h1_body_init(&b, AE_H1_BODY_LENGTH, 3);
    assert_int_equal(feed(&b, (const uint8_t *)"abcd", 4, 1, 0, &used), AE_H1_OK);
    assert_int_equal(used, 3);
    assert_memory_equal(out, "abc", 3);
}

static void test_body_close_and_none(void **state)
{
    (void)state;
    ae_h1_body b;
    size_t used;
    ae_h1_body_init(&b, AE_H1_BODY_CLOSE, 123);
    assert_int_equal(feed(&b, (const uint8_t *)"0\r\n\r\nanything", 13, 0, 0, &used), AE_H1_OK);
    assert_int_equal(used, 13);
    assert_int_equal(outlen, 13);
    assert_int_equal(ae_h1_body_done(&b), 0);       /* never before the connection ends */
    assert_int_equal(ae_h1_body_eof(&b), AE_H1_OK); /* which ends it */
    ae_h1_body_init(&b, AE_H1_BODY_NONE, 123);
    assert_int_equal(ae_h1_body_done(&b), 1);
    assert_int_equal(ae_h1_body_eof(&b), AE_H1_OK);
    const uint8_t *d;
    size_t dl;
    assert_int_equal(ae_h1_body_decode(&b, (const uint8_t *)"x", 1, &d, &dl), 0);
    assert_int_equal(dl, 0);
}

/* ---- body: chunked ---- */

static void test_chunked_ok(void **state)
{
    (void)state;
    size_t used;
    assert_int_equal(CHUNKED("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), AE_H1_OK);
    assert_int_equal(outlen, 11);
    assert_memory_equal(out, "hello world", 11);
    assert_int_equal(CHUNKED("0\r\n\r\n"), AE_H1_OK);
    assert_int_equal(outlen, 0);
    /* hex either case, leading zeros */
    assert_int_equal(CHUNKED("A\r\n0123456789\r\nb\r\n0123456789a\r\n00000000000000000000001\r\n"
                             "z\r\n000\r\n\r\n"),
                     AE_H1_OK);
    assert_int_equal(outlen, 22);
    /* bytes after the body are not consumed */
    static const char two[] = "1\r\nx\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
    assert_int_equal(chunked(two, sizeof(two) - 1, &used), AE_H1_OK);
    assert_int_equal(used, 11);
    /* chunk data may hold anything, framing bytes included */
    static const char bin[] = "6\r\n\r\n0\r\n\0\r\n0\r\n\r\n";
    assert_int_equal(chunked(bin, sizeof(bin) - 1, &used), AE_H1_OK);
    assert_int_equal(outlen, 6);
    assert_memory_equal(out, "\r\n0\r\n\0", 6);
}

static void test_chunked_extensions(void **state)
{
    (void)state;
    size_t used;
    /* RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ), ignored */
    assert_int_equal(CHUNKED("5;name=value\r\nhello\r\n0;last\r\n\r\n"), AE_H1_OK);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(CHUNKED("5 ; a = \"q;x\\\"y\" ; b\r\nhello\r\n0\r\n\r\n"), AE_H1_OK);
    assert_int_equal(CHUNKED("5\t;x\r\nhello\r\n0\r\n\r\n"), AE_H1_OK);
    assert_int_equal(CHUNKED("5 \t \r\nhello\r\n0 \r\n\r\n"), AE_H1_OK);
    assert_int_equal(CHUNKED("5;\xc3\xa9\r\nhello\r\n0\r\n\r\n"), AE_H1_OK); /* obs-text */
    assert_int_equal(outlen, 5);
    /* control characters in an extension: NUL, bare LF, bare CR, others */
    assert_int_equal(CHUNKED("5;a\0b\r\nhello\r\n0\r\n\r\n"), AE_H1_ERR_CHUNK_EXT);
    assert_int_equal(CHUNKED("5;a\nb\r\nhello\r\n0\r\n\r\n"), AE_H1_ERR_CHUNK_EXT);
    assert_int_equal(CHUNKED("5;a\rb\r\nhello\r\n0\r\n\r\n"), AE_H1_ERR_CHUNK_EXT);
    assert_int_equal(CHUNKED("5;a\x1b\r\nhello\r\n0\r\n\r\n"), AE_H1_ERR_CHUNK_EXT);
    assert_int_equal(CHUNKED("5\rX"), AE_H1_ERR_CHUNK_EXT);
    assert_int_equal(CHUNKED("5\r\r\n"), AE_H1_ERR_CHUNK_EXT);
}

static void test_chunked_bad_size(void **state)
{
    (void)state;
    size_t used;
    assert_int_equal(CHUNKED("\r\nhello\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED(";ext\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("g\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("-5\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("+5\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED(" 5\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("0x5\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("5x\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("5 x\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("5 5\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("5,\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(CHUNKED("5\n"), AE_H1_ERR_CHUNK_SIZE); /* bare LF ends no line */
    assert_int_equal(CHUNKED("\xd9\xa5\r\n"), AE_H1_ERR_CHUNK_SIZE);
    /* a bad size after good chunks */
    assert_int_equal(CHUNKED("1\r\nx\r\nq\r\n"), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(outlen, 1);
}

static void test_chunked_overflow(void **state)
{
    (void)state;
    size_t used;
    /* sizes from 2^60 are refused as they are read (no digit may be added at 2^56 or more) */
    assert_int_equal(CHUNKED("1000000000000000\r\n"), AE_H1_ERR_CHUNK_OVERFLOW);
    assert_int_equal(CHUNKED("ffffffffffffffff\r\n"), AE_H1_ERR_CHUNK_OVERFLOW);
    assert_int_equal(CHUNKED("8000000000000000\r\n"), AE_H1_ERR_CHUNK_OVERFLOW);  /* 2^63 */
    assert_int_equal(CHUNKED("10000000000000000\r\n"), AE_H1_ERR_CHUNK_OVERFLOW); /* 2^64 */
    assert_int_equal(CHUNKED("100000000000000000000\r\n"), AE_H1_ERR_CHUNK_OVERFLOW);
    /* 2^60 - 1 is a size (the body is then cut short), and so are many leading zeros */
    ae_h1_body b;
    ae_h1_body_init(&b, AE_H1_BODY_CHUNKED, 0);
    assert_int_equal(feed(&b, (const uint8_t *)"fffffffffffffff\r\nab", 19, 0, 0, &used), AE_H1_OK);
    assert_int_equal(b.state, AE_H1_CH_DATA);
    assert_true(b.left == (1ull << 60) - 1 - 2);
    assert_int_equal(ae_h1_body_eof(&b), AE_H1_ERR_INCOMPLETE);
    assert_int_equal(CHUNKED("0000000000000000000000000000000000000001\r\nx\r\n0\r\n\r\n"),
                     AE_H1_OK);
}

static void test_chunked_crlf(void **state)
{
    (void)state;
    size_t used;
    /* chunk data must be followed by exactly CRLF */
    assert_int_equal(CHUNKED("5\r\nhelloX\r\n0\r\n\r\n"), AE_H1_ERR_CHUNK_CRLF);
    assert_int_equal(outlen, 5);
    assert_int_equal(CHUNKED("5\r\nhello\n0\r\n\r\n"), AE_H1_ERR_CHUNK_CRLF);
    assert_int_equal(CHUNKED("5\r\nhello\rX"), AE_H1_ERR_CHUNK_CRLF);
    assert_int_equal(CHUNKED("5\r\nhello\r\r\n"), AE_H1_ERR_CHUNK_CRLF);
    assert_int_equal(CHUNKED("5\r\nhello0\r\n\r\n"), AE_H1_ERR_CHUNK_CRLF);
    assert_int_equal(CHUNKED("5\r\nhello world\r\n0\r\n\r\n"), AE_H1_ERR_CHUNK_CRLF); /* long */
    assert_int_equal(CHUNKED("5\r\nhell\r\n0\r\n\r\n"), AE_H1_ERR_CHUNK_CRLF);        /* short */
}

static void test_chunked_trailers(void **state)
{
    (void)state;
    size_t used;
    /* trailer fields are dropped */
    assert_int_equal(CHUNKED("3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other: two\r\n\r\n"), AE_H1_OK);
    assert_int_equal(outlen, 3);
    assert_int_equal(CHUNKED("0\r\nX: \x01\x7f\xff\r\n\r\n"), AE_H1_OK);
    /* NUL, bare CR, bare LF in the trailer section */
    assert_int_equal(CHUNKED("0\r\nX: a\0\r\n\r\n"), AE_H1_ERR_TRAILER);
    assert_int_equal(CHUNKED("0\r\nX: a\nY: b\r\n\r\n"), AE_H1_ERR_TRAILER);
    assert_int_equal(CHUNKED("0\r\nX: a\rY: b\r\n\r\n"), AE_H1_ERR_TRAILER);
    assert_int_equal(CHUNKED("0\r\n\n"), AE_H1_ERR_TRAILER);
    assert_int_equal(CHUNKED("0\r\n\rX"), AE_H1_ERR_TRAILER);
}

static void test_chunked_line_max(void **state)
{
    (void)state;
    static char b[4096];
    size_t used;
    /* a chunk-size line of AE_H1_LINE_MAX bytes, CRLF not counted */
    memset(b, 'e', sizeof(b));
    memcpy(b, "1;", 2);
    memcpy(b + AE_H1_LINE_MAX, "\r\nx\r\n0\r\n\r\n", 10);
    assert_int_equal(chunked(b, AE_H1_LINE_MAX + 10, &used), AE_H1_OK);
    assert_int_equal(used, AE_H1_LINE_MAX + 10);
    b[AE_H1_LINE_MAX] = 'e';
    memcpy(b + AE_H1_LINE_MAX + 1, "\r\nx\r\n0\r\n\r\n", 10);
    assert_int_equal(chunked(b, AE_H1_LINE_MAX + 11, &used), AE_H1_ERR_CHUNK_LINE);
    /* no end of line at all */
    memset(b + 2, 'e', sizeof(b) - 2);
    assert_int_equal(chunked(b, sizeof(b), &used), AE_H1_ERR_CHUNK_LINE);
    /* leading zeros count too */
    memset(b, '0', sizeof(b));
    assert_int_equal(chunked(b, sizeof(b), &used), AE_H1_ERR_CHUNK_LINE);
    /* trailer lines */
    memset(b, 't', sizeof(b));
    memcpy(b, "0\r\nX:", 5);
    memcpy(b + 3 + AE_H1_LINE_MAX, "\r\n\r\n", 4);
    assert_int_equal(chunked(b, 3 + AE_H1_LINE_MAX + 4, &used), AE_H1_OK);
    memcpy(b + 3 + AE_H1_LINE_MAX, "t\r\n\r\n", 5);
    assert_int_equal(chunked(b, 3 + AE_H1_LINE_MAX + 5, &used), AE_H1_ERR_CHUNK_LINE);
    /* lines are counted one by one: many short trailer lines are fine */
    size_t n = (size_t)snprintf(b, sizeof(b), "0\r\n");
    while (n + 20 < sizeof(b))
        n += (size_t)snprintf(b + n, sizeof(b) - n, "X-T: 0123456789\r\n");
    memcpy(b + n, "\r\n", 2);
    assert_int_equal(chunked(b, n + 2, &used), AE_H1_OK);
}

static void test_chunked_short(void **state)
{
    (void)state;
    size_t used;
    /* the connection ends before the body: every point of the framing */
    static const char *const cut[] = {
        "",
        "5",
        "5;ext",
        "5\r",
        "5\r\n",
        "5\r\nhel",
        "5\r\nhello",
        "5\r\nhello\r",
        "5\r\nhello\r\n",
        "5\r\nhello\r\n0",
        "0\r\n",
        "0\r\n\r",
        "0\r\nX-T: 1",
        "0\r\nX-T: 1\r\n",
        "0\r\nX-T: 1\r\n\r",
    };
    for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++)
        if (chunked(cut[i], strlen(cut[i]), &used) != AE_H1_ERR_INCOMPLETE)
            fail_msg("\"%s\" then EOF: not reported incomplete", cut[i]);
    /* after a framing error, the error sticks */
    ae_h1_body b;
    ae_h1_body_init(&b, AE_H1_BODY_CHUNKED, 0);
    const uint8_t *d;
    size_t dl;
    assert_int_equal(ae_h1_body_decode(&b, (const uint8_t *)"z", 1, &d, &dl), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(b.state, AE_H1_CH_ERROR);
    assert_int_equal(ae_h1_body_decode(&b, (const uint8_t *)"0\r\n\r\n", 5, &d, &dl),
                     AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(ae_h1_body_eof(&b), AE_H1_ERR_CHUNK_SIZE);
    assert_int_equal(ae_h1_body_done(&b), 0);
}

/* A chunked body of random chunks (sizes, hex case, extensions, trailers) carrying random
 * data; the data goes to *plain. Returns its length. */
static size_t make_chunked(uint8_t *enc, size_t cap, uint8_t *plain, size_t *plainlen)
{
    size_t n = 0, p = 0;
    int chunks = (int)(rnd() % 12);
    for (int i = 0; i < chunks; i++) {
        size_t sz = 1 + (size_t)(rnd() % (rnd() % 4 == 0 ? 5000 : 40));
        int zeros = (int)(rnd() % 3);
        if (rnd() % 2) /* hex digits in either case, maybe leading zeros */
            n += (size_t)snprintf((char *)enc + n, cap - n, "%.*s%zx", zeros, "00", sz);
        else
            n += (size_t)snprintf((char *)enc + n, cap - n, "%.*s%zX", zeros, "00", sz);
        switch (rnd() % 4) {
        case 0:
            n += (size_t)snprintf((char *)enc + n, cap - n, ";ext=%u", (unsigned)rnd() % 100);
            break;
        case 1:
            n += (size_t)snprintf((char *)enc + n, cap - n, " ; a=\"b;c\"; d");
            break;
        default:
            break;
        }
        n += (size_t)snprintf((char *)enc + n, cap - n, "\r\n");
        assert_true(n + sz + 2 < cap);
        for (size_t k = 0; k < sz; k++) {
            /* data full of framing-looking bytes */
            static const uint8_t alpha[] = "0123456789abcdef\r\n;\t \0xyz";
            uint8_t c = alpha[rnd() % (sizeof(alpha) - 1)];
            enc[n++] = c;
            plain[p++] = c;
        }
        memcpy(enc + n, "\r\n", 2);
        n += 2;
    }
    n += (size_t)snprintf((char *)enc + n, cap - n, "0%s\r\n", rnd() % 2 ? ";end" : "");
    int trailers = (int)(rnd() % 3);
    for (int i = 0; i < trailers; i++)
        n += (size_t)snprintf((char *)enc + n, cap - n, "X-T%d: %u\r\n", i, (unsigned)rnd());
    memcpy(enc + n, "\r\n", 2);
    n += 2;
    *plainlen = p;
    return n;
}

static void test_chunked_bytewise(void **state)
{
    (void)state;
    static uint8_t enc[1 << 17], plain[1 << 17], once[1 << 17];
    size_t plainlen, used;
    rng = 42;
    for (int iter = 0; iter < 50; iter++) {
        size_t n = make_chunked(enc, sizeof(enc), plain, &plainlen);
        ae_h1_body b;
        ae_h1_body_init(&b, AE_H1_BODY_CHUNKED, 0);
        assert_int_equal(feed(&b, enc, n, 0, 0, &used), AE_H1_OK);
        assert_int_equal(used, n);
        assert_true(ae_h1_body_done(&b));
        assert_int_equal(outlen, plainlen);
        assert_memory_equal(out, plain, plainlen);
        memcpy(once, out, outlen);
        ae_h1_body_init(&b, AE_H1_BODY_CHUNKED, 0);
        assert_int_equal(feed(&b, enc, n, 1, 0, &used), AE_H1_OK);
        assert_int_equal(used, n);
        assert_true(ae_h1_body_done(&b));
        assert_int_equal(outlen, plainlen);
        assert_memory_equal(out, once, plainlen);
    }
}

/* Random splits give the same result as one piece: for valid bodies, and for corrupted ones
 * (a random byte changed, inserted or removed) the same error with the same data before it.
 * Fixed seed: the same inputs on every run. */
static void test_chunked_random_splits(void **state)
{
    (void)state;
    static uint8_t enc[1 << 17], plain[1 << 17], once[1 << 17];
    size_t plainlen;
    rng = 0x5eed;
    for (int iter = 0; iter < 400; iter++) {
        size_t n = make_chunked(enc, sizeof(enc) - 1, plain, &plainlen);
        int corrupt = iter % 2;
        if (corrupt && n > 0) {
            size_t at = (size_t)(rnd() % n);
            switch (rnd() % 3) {
            case 0:
                enc[at] = (uint8_t)rnd();
                break;
            case 1:
                memmove(enc + at + 1, enc + at, n - at);
                enc[at] = (uint8_t)rnd();
                n++;
                break;
            default:
                memmove(enc + at, enc + at + 1, n - at - 1);
                n--;
                break;
            }
        }
        ae_h1_body b;
        size_t used_once, used;
        ae_h1_body_init(&b, AE_H1_BODY_CHUNKED, 0);
        int rc_once = feed(&b, enc, n, 0, 0, &used_once);
        int done_once = ae_h1_body_done(&b);
        size_t len_once = outlen;
        memcpy(once, out, outlen);
        if (!corrupt) {
            assert_int_equal(rc_once, AE_H1_OK);
            assert_true(done_once);
            assert_int_equal(len_once, plainlen);
            assert_memory_equal(once, plain, plainlen);
        }
        for (int k = 0; k < 4; k++) {
            size_t max = k == 0 ? 2 : k == 1 ? 7 : k == 2 ? 64 : 3000;
            ae_h1_body_init(&b, AE_H1_BODY_CHUNKED, 0);
            int rc = feed(&b, enc, n, 0, max, &used);
            if (rc != rc_once || (rc == AE_H1_OK && used != used_once) || outlen != len_once ||
                ae_h1_body_done(&b) != done_once)
                fail_msg("iteration %d, split max %zu: rc %d/%d used %zu/%zu data %zu/%zu", iter,
                         max, rc, rc_once, used, used_once, outlen, len_once);
            assert_memory_equal(out, once, len_once);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_line_ok),
        cmocka_unit_test(test_status_line_bad),
        cmocka_unit_test(test_interim),
        cmocka_unit_test(test_body_modes),
        cmocka_unit_test(test_cl_and_te),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_transfer_encoding),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_fields_relayed),
        cmocka_unit_test(test_drop_field),
        cmocka_unit_test(test_field_syntax),
        cmocka_unit_test(test_field_value_nul_cr_lf),
        cmocka_unit_test(test_too_many_fields),
        cmocka_unit_test(test_head_len),
        cmocka_unit_test(test_err_names),
        cmocka_unit_test(test_connection_nominated),
        cmocka_unit_test(test_bodyless_status_framing),
        cmocka_unit_test(test_body_length),
        cmocka_unit_test(test_body_close_and_none),
        cmocka_unit_test(test_chunked_ok),
        cmocka_unit_test(test_chunked_extensions),
        cmocka_unit_test(test_chunked_bad_size),
        cmocka_unit_test(test_chunked_overflow),
        cmocka_unit_test(test_chunked_crlf),
        cmocka_unit_test(test_chunked_trailers),
        cmocka_unit_test(test_chunked_line_max),
        cmocka_unit_test(test_chunked_short),
        cmocka_unit_test(test_chunked_bytewise),
        cmocka_unit_test(test_chunked_random_splits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
