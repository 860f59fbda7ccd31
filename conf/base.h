/*
 * anyedge base definitions shared by every folder: error codes, logging, time.
 *
 * conf/ is the lowest layer of the program (everything reads the config), so the few
 * definitions every module needs live here rather than in a folder of their own.
 */
#ifndef AE_BASE_H
#define AE_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define AE_VERSION "0.1.0"

/* One negative error space for the whole program. 0 is success. */
enum {
    AE_OK = 0,
    AE_ERR_NOMEM = -1,    /* allocation failed */
    AE_ERR_INVAL = -2,    /* invalid argument or value */
    AE_ERR_PARSE = -3,    /* malformed input (config, header, frame) */
    AE_ERR_IO = -4,       /* system call failed; errno is meaningful */
    AE_ERR_TLS = -5,      /* TLS library error */
    AE_ERR_NOTFOUND = -6, /* lookup failed */
    AE_ERR_AGAIN = -7,    /* would block; retry later */
    AE_ERR_PROTO = -8,    /* peer violated a protocol */
    AE_ERR_TOOBIG = -9,   /* input larger than allowed */
    AE_ERR_CLOSED = -10,  /* peer closed */
};

/* Returns a static string describing rv (an AE_ERR_* value). */
const char *ae_strerror(int rv);

/* ---- time ---- */

/* Monotonic clock in milliseconds / nanoseconds. */
uint64_t ae_now_ms(void);
uint64_t ae_now_ns(void);
/* Wall clock in milliseconds since the epoch. */
uint64_t ae_wall_ms(void);

/* Value of a hexadecimal digit (either case), or -1. */
int ae_hex_digit(int ch);
/* Zeroes key material; never optimised away (explicit_bzero). */
void ae_memzero(void *p, size_t n);

/* ---- logging ---- */

typedef enum {
    AE_LOG_ERROR = 0,
    AE_LOG_WARN = 1,
    AE_LOG_INFO = 2,
    AE_LOG_DEBUG = 3,
} ae_log_level;

typedef enum {
    AE_LOG_TEXT = 0,
    AE_LOG_JSON = 1,
} ae_log_format;

/* Global log settings. Set by the main thread at start-up and on reload; read racily by
 * workers (a torn read of an int is impossible on our targets and a stale level is harmless). */
extern volatile int ae_log_level_cur;
extern volatile int ae_log_format_cur;
extern uint32_t ae_log_site_id;
extern char ae_log_site_name[64];

/* Per-thread worker id for log lines: -1 on the main thread. */
extern _Thread_local int ae_log_worker;

/* Writes one log line (one write(2) to stderr, so lines from threads never interleave).
 * conn is a connection id or 0. msg is a printf format. Never call directly: use the macros,
 * which test the level before evaluating arguments. */
void ae_log_write(ae_log_level lvl, uint64_t conn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes one access-log line: a JSON object or key=value text built from the pairs
 * (key, value, key, value, ..., NULL). Values are escaped as needed. */
void ae_log_access(uint64_t conn, const char *first_key, ...);

#define AE_LOG(lvl, conn, ...)                                                                     \
    do {                                                                                           \
        if ((int)(lvl) <= ae_log_level_cur)                                                        \
            ae_log_write((lvl), (conn), __VA_ARGS__);                                              \
    } while (0)
#define AE_ERROR(...)     AE_LOG(AE_LOG_ERROR, 0, __VA_ARGS__)
#define AE_WARN(...)      AE_LOG(AE_LOG_WARN, 0, __VA_ARGS__)
#define AE_INFO(...)      AE_LOG(AE_LOG_INFO, 0, __VA_ARGS__)
#define AE_DEBUG(...)     AE_LOG(AE_LOG_DEBUG, 0, __VA_ARGS__)
#define AE_CERROR(c, ...) AE_LOG(AE_LOG_ERROR, (c), __VA_ARGS__)
#define AE_CWARN(c, ...)  AE_LOG(AE_LOG_WARN, (c), __VA_ARGS__)
#define AE_CINFO(c, ...)  AE_LOG(AE_LOG_INFO, (c), __VA_ARGS__)
#define AE_CDEBUG(c, ...) AE_LOG(AE_LOG_DEBUG, (c), __VA_ARGS__)

#define AE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define AE_UNUSED(x)    ((void)(x))

#endif
