/*
 * A growable text buffer for the admin documents (sb.h).
 */
#include "proxy/site/sb.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/base.h"

int ae_sb_reserve(ae_sb *b, size_t extra)
{
    size_t cap;
    char *np;

    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    cap = b->cap > 0 ? b->cap : 1024;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    np = realloc(b->p, cap);
    if (np == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

void ae_sb_add(ae_sb *b, const char *s, size_t n)
{
    if (ae_sb_reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void ae_sb_puts(ae_sb *b, const char *s)
{
    ae_sb_add(b, s, strlen(s));
}

void ae_sb_printf(ae_sb *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if (ae_sb_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Prometheus label value: backslash, double quote and line feed are escaped. With help, only
 * backslash and line feed (the HELP line rules). */
void ae_sb_prom_esc(ae_sb *b, const char *s, int help)
{
    for (; s != NULL && *s != '\0'; s++) {
        if (*s == '\\')
            ae_sb_add(b, "\\\\", 2);
        else if (*s == '\n')
            ae_sb_add(b, "\\n", 2);
        else if (*s == '"' && !help)
            ae_sb_add(b, "\\\"", 2);
        else
            ae_sb_add(b, s, 1);
    }
}

/* A JSON string literal, quotes included. Bytes >= 0x80 pass through (UTF-8 in, UTF-8 out). */
void ae_sb_json_str(ae_sb *b, const char *s)
{
    ae_sb_add(b, "\"", 1);
    for (; s != NULL && *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        switch (ch) {
        case '"':
            ae_sb_add(b, "\\\"", 2);
            break;
        case '\\':
            ae_sb_add(b, "\\\\", 2);
            break;
        case '\n':
            ae_sb_add(b, "\\n", 2);
            break;
        case '\r':
            ae_sb_add(b, "\\r", 2);
            break;
        case '\t':
            ae_sb_add(b, "\\t", 2);
            break;
        default:
            if (ch < 0x20 || ch == 0x7f)
                ae_sb_printf(b, "\\u%04x", ch);
            else
                ae_sb_add(b, s, 1);
        }
    }
    ae_sb_add(b, "\"", 1);
}

int ae_sb_finish(ae_sb *b, char **out, size_t *outlen)
{
    if (b->oom || ae_sb_reserve(b, 0) != 0) {
        free(b->p);
        *out = NULL;
        *outlen = 0;
        return AE_ERR_NOMEM;
    }
    *out = b->p;
    *outlen = b->len;
    return 0;
}
