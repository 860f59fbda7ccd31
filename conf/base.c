/*
 * Error strings, clocks and the log writer.
 *
 * Every log line is built in a stack buffer and handed to the kernel with a single write(2) on
 * stderr, so lines from different threads never interleave and logging never allocates.
 */
#include "base.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile int ae_log_level_cur = AE_LOG_INFO;
volatile int ae_log_format_cur = AE_LOG_TEXT;
uint32_t ae_log_site_id = 1;
char ae_log_site_name[64] = "anyedge";
_Thread_local int ae_log_worker = -1;

const char *ae_strerror(int rv)
{
    switch (rv) {
    case AE_OK:
        return "success";
    case AE_ERR_NOMEM:
        return "out of memory";
    case AE_ERR_INVAL:
        return "invalid argument";
    case AE_ERR_PARSE:
        return "parse error";
    case AE_ERR_IO:
        return "I/O error";
    case AE_ERR_TLS:
        return "TLS error";
    case AE_ERR_NOTFOUND:
        return "not found";
    case AE_ERR_AGAIN:
        return "try again";
    case AE_ERR_PROTO:
        return "protocol error";
    case AE_ERR_TOOBIG:
        return "too big";
    case AE_ERR_CLOSED:
        return "closed by peer";
    default:
        return "unknown error";
    }
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ae_now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

uint64_t ae_now_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000000u;
}

uint64_t ae_wall_ms(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000000u;
}

/* ---- line builder ---- */

#define LINE_CAP 4096
/* Room kept free at the end of the buffer for the truncation mark and the line terminator
 * ("...", a closing quote and brace, '\n'). */
#define LINE_RESERVE 16

typedef struct {
    char b[LINE_CAP];
    size_t n;
    int trunc;  /* something did not fit; nothing more is appended */
    int in_str; /* a JSON string is open (only meaningful when trunc) */
} line_buf;

/* Appends len bytes as one unit: either all of them fit or none is written. Splitting units
 * would cut escape sequences and UTF-8 characters in half. */
static void put(line_buf *lb, const char *s, size_t len)
{
    if (lb->trunc)
        return;
    if (lb->n + len > LINE_CAP - LINE_RESERVE) {
        lb->trunc = 1;
        return;
    }
    memcpy(lb->b + lb->n, s, len);
    lb->n += len;
}

static void puts_(line_buf *lb, const char *s)
{
    put(lb, s, strlen(s));
}

static void putf(line_buf *lb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(line_buf *lb, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    put(lb, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if the bytes are not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len, i;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* overlong forms, surrogates and values past U+10FFFF */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Appends s as the inside of a JSON string. Invalid UTF-8 bytes become \u00XX so the line is
 * always valid JSON. */
static void put_json_str(line_buf *lb, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, l;
    char esc[8];

    while (i < n && !lb->trunc) {
        unsigned char c = p[i];

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(lb, esc, 2);
            i++;
        } else if (c == '\n') {
            put(lb, "\\n", 2);
            i++;
        } else if (c == '\r') {
            put(lb, "\\r", 2);
            i++;
        } else if (c == '\t') {
            put(lb, "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            put(lb, esc, 6);
            i++;
        } else if ((l = utf8_len(p + i, n - i)) == 0) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            put(lb, esc, 6);
            i++;
        } else {
            put(lb, s + i, l);
            i += l;
        }
    }
}

/* Appends s for a text line: printable bytes as they are, control bytes escaped so that one
 * entry is always one line. */
static void put_text_str(line_buf *lb, const char *s, int quoted)
{
    char esc[8];

    for (; *s && !lb->trunc; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '\n') {
            put(lb, "\\n", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            put(lb, esc, 4);
        } else if (quoted && (c == '"' || c == '\\')) {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(lb, esc, 2);
        } else {
            put(lb, s, 1);
        }
    }
}

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const level_json[] = {"error", "warn", "info", "debug"};

static void put_header(line_buf *lb, ae_log_level lvl, uint64_t conn, int json)
{
    char ts[40];
    uint64_t now = ae_wall_ms();
    time_t sec = (time_t)(now / 1000);
    struct tm tm;
    int worker = ae_log_worker;
    unsigned li = (unsigned)lvl < AE_ARRAY_LEN(level_names) ? (unsigned)lvl : AE_LOG_DEBUG;

    gmtime_r(&sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    if (json) {
        putf(lb, "{\"ts\":\"%s.%03uZ\",\"level\":\"%s\",\"site\":%u,\"site_name\":\"", ts,
             (unsigned)(now % 1000), level_json[li], (unsigned)ae_log_site_id);
        put_json_str(lb, ae_log_site_name);
        puts_(lb, "\"");
        if (worker >= 0)
            putf(lb, ",\"worker\":%d", worker);
        if (conn != 0)
            putf(lb, ",\"conn\":%llu", (unsigned long long)conn);
    } else {
        putf(lb, "%s.%03uZ %s site=%u(", ts, (unsigned)(now % 1000), level_names[li],
             (unsigned)ae_log_site_id);
        put_text_str(lb, ae_log_site_name, 0);
        puts_(lb, ")");
        if (worker >= 0)
            putf(lb, " worker=%d", worker);
        if (conn != 0)
            putf(lb, " conn=%llu", (unsigned long long)conn);
        puts_(lb, " ");
    }
}

/* Terminates the line (closing an open JSON string and object) and writes it. */
static void flush_line(line_buf *lb, int json)
{
    ssize_t r;

    if (lb->trunc) {
        memcpy(lb->b + lb->n, "...", 3);
        lb->n += 3;
        if (json && lb->in_str)
            lb->b[lb->n++] = '"';
    }
    if (json)
        lb->b[lb->n++] = '}';
    lb->b[lb->n++] = '\n';
    do {
        r = write(2, lb->b, lb->n);
    } while (r < 0 && errno == EINTR);
}

void ae_log_write(ae_log_level lvl, uint64_t conn, const char *fmt, ...)
{
    line_buf lb;
    char msg[LINE_CAP];
    va_list ap;
    int json = ae_log_format_cur == AE_LOG_JSON;
    int saved = errno;

    lb.n = 0;
    lb.trunc = 0;
    lb.in_str = 0;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);

    put_header(&lb, lvl, conn, json);
    if (json) {
        puts_(&lb, ",\"msg\":\"");
        lb.in_str = 1;
        put_json_str(&lb, msg);
        if (!lb.trunc) {
            put(&lb, "\"", 1);
            lb.in_str = 0;
        }
    } else {
        put_text_str(&lb, msg, 0);
    }
    flush_line(&lb, json);
    errno = saved;
}

/* A text value needs quotes when it would not read back as one token. */
static int needs_quotes(const char *v)
{
    if (*v == '\0')
        return 1;
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            return 1;
    }
    return 0;
}

void ae_log_access(uint64_t conn, const char *first_key, ...)
{
    line_buf lb;
    va_list ap;
    const char *k, *v;
    int json = ae_log_format_cur == AE_LOG_JSON;
    int saved = errno;

    lb.n = 0;
    lb.trunc = 0;
    lb.in_str = 0;
    put_header(&lb, AE_LOG_INFO, conn, json);
    if (json)
        puts_(&lb, ",\"type\":\"access\"");
    else
        puts_(&lb, "ACCESS");

    va_start(ap, first_key);
    for (k = first_key; k != NULL && !lb.trunc; k = va_arg(ap, const char *)) {
        v = va_arg(ap, const char *);
        if (json) {
            /* key, colon and opening quote as one unit, so a cut never leaves "key": dangling */
            line_buf kb;
            kb.n = 0;
            kb.trunc = 0;
            put(&kb, ",\"", 2);
            put_json_str(&kb, k);
            put(&kb, v ? "\":\"" : "\":null", v ? 3 : 6);
            put(&lb, kb.b, kb.n);
            if (lb.trunc || v == NULL)
                continue;
            lb.in_str = 1;
            put_json_str(&lb, v);
            if (!lb.trunc) {
                put(&lb, "\"", 1);
                lb.in_str = 0;
            }
        } else {
            put(&lb, " ", 1);
            put_text_str(&lb, k, 0);
            put(&lb, "=", 1);
            if (v == NULL) {
                put(&lb, "-", 1);
            } else if (needs_quotes(v)) {
                put(&lb, "\"", 1);
                put_text_str(&lb, v, 1);
                put(&lb, "\"", 1);
            } else {
                put_text_str(&lb, v, 0);
            }
        }
    }
    va_end(ap);
    flush_line(&lb, json);
    errno = saved;
}

int ae_hex_digit(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

void ae_memzero(void *p, size_t n)
{
    explicit_bzero(p, n);
}
