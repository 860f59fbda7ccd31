/*
 * A growable text buffer (sb.c) for the admin endpoint's documents: Prometheus text, JSON.
 * On allocation failure it stops growing and sets oom, which callers check once at the end
 * (ae_sb_finish) instead of after every append. Main thread; no locking.
 */
#ifndef AE_SITE_SB_H
#define AE_SITE_SB_H

#include <stddef.h>

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} ae_sb;

/* Room for extra more bytes (and the NUL); -1 (oom set) when it cannot grow. */
int ae_sb_reserve(ae_sb *b, size_t extra);
void ae_sb_add(ae_sb *b, const char *s, size_t n);
void ae_sb_puts(ae_sb *b, const char *s);
void ae_sb_printf(ae_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prometheus label value: backslash, double quote and line feed are escaped. With help, only
 * backslash and line feed (the HELP line rules). */
void ae_sb_prom_esc(ae_sb *b, const char *s, int help);
/* A JSON string literal, quotes included. Bytes >= 0x80 pass through (UTF-8 in, UTF-8 out). */
void ae_sb_json_str(ae_sb *b, const char *s);
/* Hands the text over (*out malloc'd, NUL-terminated) and returns 0, or frees it and returns
 * AE_ERR_NOMEM when an append failed. */
int ae_sb_finish(ae_sb *b, char **out, size_t *outlen);

#endif
