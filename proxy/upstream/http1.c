/*
 * HTTP/1.1 response head parser and body decoder (see proxy/upstream/http1.h).
 */
#include <string.h>
#include <strings.h>

#include "conf/base.h"
#include "proxy/upstream/http1.h"

static const char *const err_names[AE_H1_NERRS] = {
    [0] = "ok",
    [-AE_H1_ERR_STATUS_LINE] = "status_line",
    [-AE_H1_ERR_UPGRADE] = "upgrade",
    [-AE_H1_ERR_HEADER_SYNTAX] = "header_syntax",
    [-AE_H1_ERR_OBS_FOLD] = "obs_fold",
    [-AE_H1_ERR_FIELD_VALUE] = "field_value",
    [-AE_H1_ERR_TOO_MANY_FIELDS] = "too_many_fields",
    [-AE_H1_ERR_TE_UNSUPPORTED] = "te_unsupported",
    [-AE_H1_ERR_CL_INVALID] = "cl_invalid",
    [-AE_H1_ERR_CL_CONFLICT] = "cl_conflict",
    [-AE_H1_ERR_CHUNK_SIZE] = "chunk_size",
    [-AE_H1_ERR_CHUNK_OVERFLOW] = "chunk_overflow",
    [-AE_H1_ERR_CHUNK_EXT] = "chunk_ext",
    [-AE_H1_ERR_CHUNK_CRLF] = "chunk_crlf",
    [-AE_H1_ERR_CHUNK_LINE] = "chunk_line",
    [-AE_H1_ERR_TRAILER] = "trailer",
    [-AE_H1_ERR_CONN_OPTIONS] = "conn_options",
    [-AE_H1_ERR_INCOMPLETE] = "incomplete",
};
_Static_assert(AE_ARRAY_LEN(err_names) == AE_H1_NERRS, "one name per AE_H1_ERR_*");
_Static_assert(-AE_H1_ERR_INCOMPLETE == AE_H1_NERRS - 1, "AE_H1_ERR_INCOMPLETE is the last");

const char *ae_h1_strerror(int rc)
{
    if (rc > 0 || rc <= -AE_H1_NERRS || err_names[-rc] == NULL)
        return "?";
    return err_names[-rc];
}

/* ---- the response head ---- */

static int ieq(const char *a, size_t alen, const char *b)
{
    return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* RFC 9110 §5.6.2 tchar */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A control character other than HTAB (RFC 5234 CTL). */
static int is_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static char *find_crlf(char *p, char *end)
{
    return memmem(p, (size_t)(end - p), "\r\n", 2);
}

size_t ae_h1_head_len(const char *buf, size_t len)
{
    const char *e = memmem(buf, len, "\r\n\r\n", 4);
    return e == NULL ? 0 : (size_t)(e - buf) + 4;
}

/* The status line p[0, n) (CRLF excluded). */
static int parse_status_line(const char *p, size_t n, ae_h1_head *h)
{
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || !is_digit(p[7]) || p[8] != ' ')
        return AE_H1_ERR_STATUS_LINE;
    int status = 0;
    for (size_t i = 9; i < 12; i++) {
        if (!is_digit(p[i]))
            return AE_H1_ERR_STATUS_LINE;
        status = status * 10 + (p[i] - '0');
    }
    if (status < 100 || status > 599 || (n > 12 && p[12] != ' '))
        return AE_H1_ERR_STATUS_LINE;
    for (size_t i = 13; i < n; i++) /* reason-phrase: HTAB, SP, VCHAR, obs-text */
        if (is_ctl((unsigned char)p[i]))
            return AE_H1_ERR_STATUS_LINE;
    h->status = status;
    h->version = p[7] == '0' ? 10 : 11;
    return AE_H1_OK;
}

/* Content-Length = 1*DIGIT (RFC 9110 §8.6), within int64_t. */
static int parse_cl(const char *v, size_t n, int64_t *out)
{
    if (n == 0)
        return AE_H1_ERR_CL_INVALID;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(v[i]) || x > (INT64_MAX - (v[i] - '0')) / 10)
            return AE_H1_ERR_CL_INVALID;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return AE_H1_OK;
}

/* The options of a Connection header (RFC 9110 §7.6.1): a comma-separated list of field
 * names, "close" and "keep-alive" among them. */
typedef struct {
    int close, keep;
    size_t n;
    const char *name[AE_H1_CONN_OPTS_MAX];
    size_t len[AE_H1_CONN_OPTS_MAX];
} conn_opts;

/* Adds the options of a Connection value v[0, n). AE_H1_OK, or AE_H1_ERR_CONN_OPTIONS when it
 * names more fields than there is room for. */
static int connection_options(const char *v, size_t n, conn_opts *o)
{
    const char *e = v + n;
    for (const char *t = v; t < e;) {
        while (t < e && (*t == ',' || *t == ' ' || *t == '\t'))
            t++;
        const char *te = t;
        while (te < e && *te != ',' && *te != ' ' && *te != '\t')
            te++;
        size_t tl = (size_t)(te - t);
        if (ieq(t, tl, "close")) {
            o->close = 1;
        } else if (ieq(t, tl, "keep-alive")) {
            o->keep = 1;
        } else if (tl > 0) {
            if (o->n == AE_H1_CONN_OPTS_MAX)
                return AE_H1_ERR_CONN_OPTIONS;
            o->name[o->n] = t;
            o->len[o->n++] = tl;
        }
        t = te;
    }
    return AE_H1_OK;
}

static int conn_nominated(const conn_opts *o, const char *name, size_t len)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->len[i] == len && strncasecmp(o->name[i], name, len) == 0)
            return 1;
    return 0;
}

static int is_hop_by_hop(const char *n, size_t len)
{
    return ieq(n, len, "connection") || ieq(n, len, "keep-alive") ||
           ieq(n, len, "proxy-connection") || ieq(n, len, "transfer-encoding") ||
           ieq(n, len, "upgrade") || ieq(n, len, "te");
}

int ae_h1_parse_head(char *buf, size_t len, const ae_h1_req *req, ae_h1_head *h,
                     ae_h1_field *fields, size_t max_fields)
{
    char *end = buf + len, *p = buf;
    memset(h, 0, sizeof(*h));
    h->content_length = -1;
    char *eol = find_crlf(p, end);
    if (eol == NULL)
        return AE_H1_ERR_STATUS_LINE;
    int rv = parse_status_line(p, (size_t)(eol - p), h);
    if (rv != AE_H1_OK)
        return rv;
    if (h->status == 101)
        return AE_H1_ERR_UPGRADE;
    h->interim = h->status < 200;
    int te = 0;
    conn_opts co = {0};
    int64_t cl = -1;
    size_t nf = 0;
    for (p = eol + 2;; p = eol + 2) {
        if (p >= end || (eol = find_crlf(p, end)) == NULL)
            return AE_H1_ERR_HEADER_SYNTAX; /* no empty line */
        if (eol == p) {
            if (eol + 2 != end)
                return AE_H1_ERR_HEADER_SYNTAX;
            break;
        }
        if (*p == ' ' || *p == '\t')
            return AE_H1_ERR_OBS_FOLD; /* also whitespace before the first field (§2.2) */
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL || colon == p)
            return AE_H1_ERR_HEADER_SYNTAX;
        size_t nlen = (size_t)(colon - p);
        for (size_t i = 0; i < nlen; i++) {
            if (!is_tchar((unsigned char)p[i]))
                return AE_H1_ERR_HEADER_SYNTAX;
            if (p[i] >= 'A' && p[i] <= 'Z')
                p[i] = (char)(p[i] + 32); /* HTTP/3 field names are lower case */
        }
        char *v = colon + 1, *ve = eol;
        for (char *q = v; q < ve; q++) /* a bare CR or LF inside the line, or NUL */
            if (*q == 0 || *q == '\r' || *q == '\n')
                return AE_H1_ERR_FIELD_VALUE;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vlen = (size_t)(ve - v);
        if (h->interim)
            continue; /* not relayed, framing fields do not apply */
        if (ieq(p, nlen, "transfer-encoding")) {
            /* other codings are not relayed; chunked is applied once only (RFC 9112 §6.1) */
            if (te || !ieq(v, vlen, "chunked"))
                return AE_H1_ERR_TE_UNSUPPORTED;
            te = 1;
        } else if (ieq(p, nlen, "content-length")) {
            int64_t x;
            if ((rv = parse_cl(v, vlen, &x)) != AE_H1_OK)
                return rv;
            if (cl >= 0 && cl != x)
                return AE_H1_ERR_CL_CONFLICT;
            cl = x;
        } else if (ieq(p, nlen, "connection")) {
            if ((rv = connection_options(v, vlen, &co)) != AE_H1_OK)
                return rv;
        }
        if (is_hop_by_hop(p, nlen) || (req->drop_field != NULL && ieq(p, nlen, req->drop_field)))
            continue;
        if (nf == max_fields)
            return AE_H1_ERR_TOO_MANY_FIELDS;
        fields[nf++] = (ae_h1_field){p, nlen, v, vlen};
    }
    if (h->interim)
        return AE_H1_OK;
    /* Out: the fields the Connection header names; Content-Length when chunked wins (RFC 9112
     * §6.3: do not pass the length on) and in a 204 (RFC 9110 §8.6). */
    int drop_cl = (te && cl >= 0) || h->status == 204;
    if (co.n > 0 || drop_cl) {
        size_t k = 0;
        for (size_t i = 0; i < nf; i++)
            if (!conn_nominated(&co, fields[i].name, fields[i].namelen) &&
                !(drop_cl && ieq(fields[i].name, fields[i].namelen, "content-length")))
                fields[k++] = fields[i];
        nf = k;
    }
    if (req->is_head || h->status == 204 || h->status == 304)
        h->body = AE_H1_BODY_NONE;
    else if (te)
        h->body = AE_H1_BODY_CHUNKED;
    else if (cl >= 0)
        h->body = cl > 0 ? AE_H1_BODY_LENGTH : AE_H1_BODY_NONE;
    else
        h->body = AE_H1_BODY_CLOSE;
    h->content_length = te ? -1 : cl;
    /* HTTP/1.0 keeps the connection only with "Connection: keep-alive"; we do not rely on it.
     * A body framed by both Transfer-Encoding and Content-Length may be an attempt at response
     * splitting: relay it by its chunked framing, then close (RFC 9112 §6.1, §6.3). */
    int bodyless_framed = (h->status == 204 && (te || cl > 0)) || (h->status == 304 && te);
    h->keep_alive = h->version == 11 && !co.close && h->body != AE_H1_BODY_CLOSE &&
                    !(h->body == AE_H1_BODY_CHUNKED && cl >= 0) && !bodyless_framed;
    h->nfields = nf;
    return AE_H1_OK;
}

/* ---- the body ---- */

void ae_h1_body_init(ae_h1_body *b, ae_h1_body_mode mode, uint64_t length)
{
    memset(b, 0, sizeof(*b));
    b->mode = mode;
    b->state = AE_H1_CH_SIZE;
    b->left = mode == AE_H1_BODY_LENGTH ? length : 0;
}

int ae_h1_body_done(const ae_h1_body *b)
{
    switch (b->mode) {
    case AE_H1_BODY_NONE:
        return 1;
    case AE_H1_BODY_LENGTH:
        return b->left == 0;
    case AE_H1_BODY_CHUNKED:
        return b->state == AE_H1_CH_DONE;
    case AE_H1_BODY_CLOSE:
        break;
    }
    return 0;
}

int ae_h1_body_eof(const ae_h1_body *b)
{
    if (b->mode == AE_H1_BODY_CHUNKED && b->state == AE_H1_CH_ERROR)
        return b->err;
    return b->mode == AE_H1_BODY_CLOSE || ae_h1_body_done(b) ? AE_H1_OK : AE_H1_ERR_INCOMPLETE;
}

static ssize_t chunk_fail(ae_h1_body *b, int err)
{
    b->state = AE_H1_CH_ERROR;
    b->err = err;
    return err;
}

/* One byte of a chunk-size line or a trailer line: counts it against AE_H1_LINE_MAX. */
static int line_byte(ae_h1_body *b)
{
    return ++b->line > AE_H1_LINE_MAX ? AE_H1_ERR_CHUNK_LINE : AE_H1_OK;
}

static ssize_t chunked_decode(ae_h1_body *b, const uint8_t *in, size_t len, const uint8_t **data,
                              size_t *datalen)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = in[i];
        switch (b->state) {
        case AE_H1_CH_SIZE: {
            int d = ae_hex_digit(c);
            if (d < 0) {
                if (b->line == 0) /* no digit */
                    return chunk_fail(b, AE_H1_ERR_CHUNK_SIZE);
                b->state = AE_H1_CH_SIZE_WS;
                continue; /* the same byte, in the next state */
            }
            if (b->left >> 56) /* would reach 2^60 */
                return chunk_fail(b, AE_H1_ERR_CHUNK_OVERFLOW);
            b->left = b->left * 16 + (uint64_t)d;
            break;
        }
        case AE_H1_CH_SIZE_WS: /* chunk-size BWS ( ";" chunk-ext / CRLF ) */
            if (c == '\r') {
                b->state = AE_H1_CH_SIZE_LF;
                i++;
                continue; /* the CRLF is not counted in the line */
            }
            if (c == ';')
                b->state = AE_H1_CH_EXT;
            else if (c != ' ' && c != '\t')
                return chunk_fail(b, AE_H1_ERR_CHUNK_SIZE);
            break;
        case AE_H1_CH_EXT: /* names, values, quoted strings: not interpreted */
            if (c == '\r') {
                b->state = AE_H1_CH_SIZE_LF;
                i++;
                continue;
            }
            if (is_ctl(c))
                return chunk_fail(b, AE_H1_ERR_CHUNK_EXT);
            break;
        case AE_H1_CH_SIZE_LF:
            if (c != '\n')
                return chunk_fail(b, AE_H1_ERR_CHUNK_EXT);
            b->line = 0;
            i++;
            if (b->left == 0) {
                b->state = AE_H1_CH_TRAILER; /* the last chunk */
                continue;
            }
            b->state = AE_H1_CH_DATA;
            continue;
        case AE_H1_CH_DATA: {
            size_t n = len - i < b->left ? len - i : (size_t)b->left;
            b->left -= n;
            if (b->left == 0)
                b->state = AE_H1_CH_DATA_CR;
            *data = in + i;
            *datalen = n;
            return (ssize_t)(i + n);
        }
        case AE_H1_CH_DATA_CR:
            if (c != '\r')
                return chunk_fail(b, AE_H1_ERR_CHUNK_CRLF);
            b->state = AE_H1_CH_DATA_LF;
            i++;
            continue; /* not part of a line: not counted */
        case AE_H1_CH_DATA_LF:
            if (c != '\n')
                return chunk_fail(b, AE_H1_ERR_CHUNK_CRLF);
            b->state = AE_H1_CH_SIZE;
            b->left = 0;
            i++;
            continue;
        case AE_H1_CH_TRAILER: /* trailer fields are dropped */
            if (c == '\r') {
                b->state = AE_H1_CH_TRAILER_LF;
                i++;
                continue;
            }
            if (c == 0 || c == '\n')
                return chunk_fail(b, AE_H1_ERR_TRAILER);
            break;
        case AE_H1_CH_TRAILER_LF:
            if (c != '\n')
                return chunk_fail(b, AE_H1_ERR_TRAILER);
            i++;
            if (b->line == 0) {
                b->state = AE_H1_CH_DONE;
                return (ssize_t)i;
            }
            b->line = 0;
            b->state = AE_H1_CH_TRAILER;
            continue;
        case AE_H1_CH_DONE:
            return (ssize_t)i;
        case AE_H1_CH_ERROR:
            return b->err;
        }
        /* a byte of a chunk-size line or of a trailer line */
        if (line_byte(b) != AE_H1_OK)
            return chunk_fail(b, AE_H1_ERR_CHUNK_LINE);
        i++;
    }
    return (ssize_t)i;
}

ssize_t ae_h1_body_decode(ae_h1_body *b, const uint8_t *in, size_t len, const uint8_t **data,
                          size_t *datalen)
{
    *data = in;
    *datalen = 0;
    size_t n = len;
    switch (b->mode) {
    case AE_H1_BODY_NONE:
        return 0;
    case AE_H1_BODY_LENGTH:
        if (n > b->left)
            n = (size_t)b->left;
        b->left -= n;
        *datalen = n;
        return (ssize_t)n;
    case AE_H1_BODY_CLOSE:
        *datalen = n;
        return (ssize_t)n;
    case AE_H1_BODY_CHUNKED:
        break;
    }
    return chunked_decode(b, in, len, data, datalen);
}
