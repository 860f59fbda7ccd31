/*
 * libFuzzer harness for the HTTP/1.1 response parser (proxy/upstream/http1.c).
 *
 * The input is a response as an upstream would send it: the head (through the first empty
 * line) goes to ae_h1_parse_head, the rest to the body decoder in pieces whose sizes come from
 * the input's first byte, and the result must not depend on the pieces: the body is decoded a
 * second time in one piece and the outcomes are compared. Checked beyond "no crash": an accepted
 * head has a final status 200..599, fields inside the head with non-empty names and values
 * without NUL, CR or LF; every error has a name; the body decoder consumes what it reports,
 * points its data into the input, and gives the same outcome for any split of the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/upstream/http1.h"

#define MAXF 127 /* as proxy/h3/upstream.c relays at most */

typedef struct {
    int rc;        /* AE_H1_OK or the error */
    int done;      /* the body is complete */
    size_t used;   /* bytes consumed (when rc is AE_H1_OK) */
    size_t outlen; /* body data bytes */
    uint64_t hash; /* FNV-1a over them */
} outcome;

static void decode(ae_h1_body_mode mode, uint64_t length, const uint8_t *in, size_t len,
                   size_t step, outcome *o)
{
    ae_h1_body b;
    ae_h1_body_init(&b, mode, length);
    memset(o, 0, sizeof(*o));
    o->hash = 1469598103934665603ull;
    size_t off = 0;
    while (off < len && !ae_h1_body_done(&b)) {
        size_t end = step == 0 || len - off < step ? len : off + step;
        while (off < end && !ae_h1_body_done(&b)) {
            const uint8_t *d;
            size_t dl;
            ssize_t n = ae_h1_body_decode(&b, in + off, end - off, &d, &dl);
            if (n < 0) {
                o->rc = (int)n;
                return;
            }
            if ((size_t)n > end - off || dl > (size_t)n || (n == 0 && !ae_h1_body_done(&b)))
                abort();
            if (dl > 0 && d + dl != in + off + (size_t)n)
                abort();
            for (size_t i = 0; i < dl; i++)
                o->hash = (o->hash ^ d[i]) * 1099511628211ull;
            o->outlen += dl;
            off += (size_t)n;
        }
    }
    o->used = off;
    o->done = ae_h1_body_done(&b);
    if (ae_h1_body_eof(&b) != AE_H1_OK && (o->done || mode == AE_H1_BODY_CLOSE))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = 1 + data[0] % 16;
    int is_head = data[0] & 0x80;
    data++;
    size--;
    size_t hl = ae_h1_head_len((const char *)data, size);
    ae_h1_body_mode mode = AE_H1_BODY_CHUNKED;
    uint64_t length = 0;
    if (hl > 0) {
        char *head = malloc(hl);
        if (head == NULL)
            return 0;
        memcpy(head, data, hl);
        ae_h1_field f[MAXF];
        ae_h1_head h;
        ae_h1_req req = {.is_head = is_head, .drop_field = "x-anyedge-site"};
        int rc = ae_h1_parse_head(head, hl, &req, &h, f, MAXF);
        if (rc == AE_H1_OK && !h.interim) {
            if (h.status < 200 || h.status > 599 || h.nfields > MAXF)
                abort();
            for (size_t i = 0; i < h.nfields; i++) {
                if (f[i].name < head || f[i].name + f[i].namelen > head + hl || f[i].value < head ||
                    f[i].value + f[i].valuelen > head + hl || f[i].namelen == 0)
                    abort();
                for (size_t k = 0; k < f[i].valuelen; k++)
                    if (f[i].value[k] == 0 || f[i].value[k] == '\r' || f[i].value[k] == '\n')
                        abort();
            }
            mode = h.body;
            length = h.body == AE_H1_BODY_LENGTH ? (uint64_t)h.content_length : 0;
        } else if (rc != AE_H1_OK && ae_h1_strerror(rc)[0] == '?')
            abort();
        free(head);
        data += hl;
        size -= hl;
    }
    outcome a, b;
    decode(mode, length, data, size, 0, &a);
    decode(mode, length, data, size, step, &b);
    if (a.rc != b.rc || a.done != b.done || a.outlen != b.outlen || a.hash != b.hash ||
        (a.rc == AE_H1_OK && a.used != b.used))
        abort();
    return 0;
}
