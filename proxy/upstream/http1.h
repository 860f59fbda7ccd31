/*
 * HTTP/1.1 responses from upstream servers (RFC 9112), as the HTTP/3 side relays them: a pure
 * parser of the response head and an incremental decoder of the message body. No I/O, no
 * allocation, no state outside the caller's structs; every malformed input is refused with an
 * AE_H1_ERR_* reason, never read past its length.
 *
 * The head parser works in place on the caller's buffer (field names are lower-cased there);
 * the fields it returns point into that buffer and live as long as it does. The body decoder is
 * fed the bytes that follow the head in pieces of any size and hands back spans of body data
 * (pointers into the piece it was given) until the body is complete.
 */
#ifndef AE_UPSTREAM_HTTP1_H
#define AE_UPSTREAM_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Why a head or a body was refused. One names table (ae_h1_strerror) is kept in step by
 * _Static_assert on AE_H1_NERRS. */
typedef enum {
    AE_H1_OK = 0,
    AE_H1_ERR_STATUS_LINE = -1,     /* not "HTTP/1.<digit> <3 digits>[ <reason>]", status outside
                                       100..599, or a control character in the reason phrase */
    AE_H1_ERR_UPGRADE = -2,         /* 101 Switching Protocols: no upgrades through HTTP/3 */
    AE_H1_ERR_HEADER_SYNTAX = -3,   /* a field line without ':', an empty name, a name that is not
                                       a token (space before the colon...), no empty line at the
                                       end of the head, or bytes after it */
    AE_H1_ERR_OBS_FOLD = -4,        /* a line starting with SP or HTAB (RFC 9112 §5.2) */
    AE_H1_ERR_FIELD_VALUE = -5,     /* NUL, CR or LF in a field value (RFC 9110 §5.5) */
    AE_H1_ERR_TOO_MANY_FIELDS = -6, /* more fields to relay than the caller has room for */
    AE_H1_ERR_TE_UNSUPPORTED = -7,  /* Transfer-Encoding other than one "chunked" */
    AE_H1_ERR_CL_INVALID = -8,      /* Content-Length not 1*DIGIT, or over INT64_MAX */
    AE_H1_ERR_CL_CONFLICT = -9,     /* two Content-Length values that differ */
    AE_H1_ERR_CHUNK_SIZE = -10,     /* chunk-size line without hex digits, or other than
                                       whitespace / ';' after them */
    AE_H1_ERR_CHUNK_OVERFLOW = -11, /* chunk size of 2^60 or more */
    AE_H1_ERR_CHUNK_EXT = -12,      /* control character (other than HTAB) in a chunk-size line,
                                       or CR not followed by LF */
    AE_H1_ERR_CHUNK_CRLF = -13,     /* chunk data not followed by CRLF */
    AE_H1_ERR_CHUNK_LINE = -14,     /* chunk-size or trailer line over AE_H1_LINE_MAX bytes */
    AE_H1_ERR_TRAILER = -15,        /* NUL, bare CR or bare LF in the trailer section */
    AE_H1_ERR_CONN_OPTIONS = -16,   /* Connection names more than AE_H1_CONN_OPTS_MAX fields */
    AE_H1_ERR_INCOMPLETE = -17,     /* the connection ended before the body did */
} ae_h1_err;
#define AE_H1_NERRS 18 /* AE_H1_OK and the errors */

/* Field names a response's Connection header may nominate (removed as hop-by-hop). */
#define AE_H1_CONN_OPTS_MAX 16

/* Longest chunk-size line or trailer line, CRLF not counted. */
#define AE_H1_LINE_MAX 1024

/* "ok" for AE_H1_OK, a short label ("status_line", "cl_conflict", ...) for an error, "?" for
 * anything else. */
const char *ae_h1_strerror(int rc);

/* ---- the response head ---- */

/* How the body that follows a head is delimited (RFC 9112 §6.3). */
typedef enum {
    AE_H1_BODY_NONE = 0, /* no body: HEAD request, 1xx, 204, 304, or Content-Length: 0 */
    AE_H1_BODY_LENGTH,   /* Content-Length bytes */
    AE_H1_BODY_CHUNKED,  /* Transfer-Encoding: chunked (wins over Content-Length) */
    AE_H1_BODY_CLOSE,    /* neither: the body ends when the server closes the connection */
} ae_h1_body_mode;

/* One field to relay: name lower-cased (a token), value without surrounding SP / HTAB. Both
 * point into the parsed buffer and are not NUL-terminated. */
typedef struct {
    const char *name;
    size_t namelen;
    const char *value;
    size_t valuelen;
} ae_h1_field;

/* What the request was, as far as the response's framing depends on it. */
typedef struct {
    int is_head;            /* a HEAD request: no body whatever the fields say */
    const char *drop_field; /* a field name to leave out (any case; NULL: none) */
} ae_h1_req;

typedef struct {
    int status;             /* 100..599 */
    int version;            /* 10 (HTTP/1.0) or 11 (HTTP/1.1, and 1.2..1.9 read as 1.1) */
    int interim;            /* 1xx other than 101: nothing below is set; skip this head, the
                               final response follows */
    ae_h1_body_mode body;   /* how the body is delimited */
    int64_t content_length; /* the Content-Length, or -1 when absent or overridden by chunked */
    int keep_alive;         /* the connection may carry another request after this response:
                               HTTP/1.1, no "Connection: close", body not close-delimited, and
                               not chunked with a Content-Length too (RFC 9112 §6.1) */
    size_t nfields;         /* fields written to the caller's array */
} ae_h1_head;

/* Length of the head at the start of buf[0, len) through its empty line (the first CRLF CRLF),
 * or 0 when it is not all there yet. */
size_t ae_h1_head_len(const char *buf, size_t len);

/* Parses the response head buf[0, len), which ends with its empty line (see ae_h1_head_len).
 * Field names are lower-cased in place. On AE_H1_OK, *h describes the response and, for a
 * final response, fields[0, h->nfields) are the fields to relay in their order, without the
 * hop-by-hop fields (Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade, TE,
 * and every field the Connection header names: RFC 9110 §7.6.1), without req->drop_field,
 * without Content-Length when the body is chunked, and without Content-Length in a 204 (RFC
 * 9110 §8.6: a server must not send one; an HTTP/3 client would check it against the empty
 * body). A 204 with Transfer-Encoding or a non-zero Content-Length, or a 304 with
 * Transfer-Encoding, is relayed without a body but its connection is not reused (keep_alive
 * 0): what follows the head on it cannot be trusted. (A 304 may carry the Content-Length of the
 * representation: relayed as is.) Field lines of
 * interim heads are checked but not returned. Returns AE_H1_OK or a negative AE_H1_ERR_* (then
 * *h and fields[] hold nothing meaningful). */
int ae_h1_parse_head(char *buf, size_t len, const ae_h1_req *req, ae_h1_head *h,
                     ae_h1_field *fields, size_t max_fields);

/* ---- the body ---- */

/* Where a chunked body's decoder is (RFC 9112 §7.1). */
typedef enum {
    AE_H1_CH_SIZE = 0,   /* in the hex digits of a chunk-size line (none read yet at entry) */
    AE_H1_CH_SIZE_WS,    /* after the digits: whitespace before ';' or the line end */
    AE_H1_CH_EXT,        /* in chunk extensions after ';' (ignored) until CR */
    AE_H1_CH_SIZE_LF,    /* the CR ending a chunk-size line was read: LF must follow */
    AE_H1_CH_DATA,       /* in chunk data, `left` bytes to go */
    AE_H1_CH_DATA_CR,    /* the chunk data ended: CR must follow */
    AE_H1_CH_DATA_LF,    /* and then LF */
    AE_H1_CH_TRAILER,    /* after the last chunk: in a trailer line (dropped), or at the start
                            of the empty line that ends the body when `line` is 0 */
    AE_H1_CH_TRAILER_LF, /* the CR ending a trailer line was read: LF must follow */
    AE_H1_CH_DONE,       /* the body is complete; bytes after it are not consumed */
    AE_H1_CH_ERROR,      /* a framing error was reported (err); it is reported again */
} ae_h1_chunk_state;

/* A body decoder. Zero-sized bodies (AE_H1_BODY_NONE) are complete from the start. */
typedef struct {
    ae_h1_body_mode mode;
    ae_h1_chunk_state state; /* AE_H1_BODY_CHUNKED only */
    uint64_t left;           /* LENGTH: bytes to go; CHUNKED: chunk bytes to go in CH_DATA,
                                the chunk size read so far in CH_SIZE */
    uint32_t line;           /* CHUNKED: bytes of the current chunk-size or trailer line */
    int err;                 /* CHUNKED: the AE_H1_ERR_* once state is CH_ERROR */
} ae_h1_body;

/* Sets up a decoder for a body of the given mode; length is the Content-Length for
 * AE_H1_BODY_LENGTH and ignored otherwise. */
void ae_h1_body_init(ae_h1_body *b, ae_h1_body_mode mode, uint64_t length);

/* Decodes from in[0, len): consumes framing bytes and stops after the first span of body data,
 * at the end of the body, or at the end of the input, whichever comes first. Returns the bytes
 * consumed and sets *data, *datalen to the body data among them (the last *datalen consumed
 * bytes; *datalen is 0 when there were none). The return value is 0 only when len is 0 or the
 * body is complete. Returns a negative AE_H1_ERR_CHUNK_* / AE_H1_ERR_TRAILER on a framing error
 * of a chunked body, then again on every later call. */
ssize_t ae_h1_body_decode(ae_h1_body *b, const uint8_t *in, size_t len, const uint8_t **data,
                          size_t *datalen);

/* 1 when the whole body has been decoded, else 0 (a close-delimited body is never complete
 * before the connection ends: see ae_h1_body_eof). */
int ae_h1_body_done(const ae_h1_body *b);

/* The server closed the connection: AE_H1_OK when that ends the body (it was complete, or is
 * close-delimited), AE_H1_ERR_INCOMPLETE when the body was cut short, or the framing error
 * already reported. */
int ae_h1_body_eof(const ae_h1_body *b);

#endif
