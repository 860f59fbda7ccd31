/*
 * HTTP/3 (RFC 9114, nghttp3) to HTTP/1.1 upstream: one qstream per request stream. This file is
 * the HTTP/3 side (session, request streams, responses handed to nghttp3); the upstream client
 * (connections, keep-alive pool, HTTP/1.1 request serialization, response parsing) is
 * upstream.c.
 *
 * Life cycle of a request stream (ae_h3_req_state, proxy/h3/states.h; moved by req_set_state()
 * only): HEADERS while the header section arrives; FORWARDED once it passed the checks and went
 * to the upstream client; RESPONDING from the response HEADERS while body bytes come;
 * RESPONDED once the whole response is queued (also straight from HEADERS or FORWARDED for an
 * answer of the proxy: 431, 501, 425, 502, 503, 504); RESET when either side reset it;
 * CLOSED when detached (stream closed, connection gone), freed by the worker's gc.
 *
 * Request: the header section is checked (RFC 9114 §4) and collected, hop-by-hop fields
 * dropped, for the HTTP/1.1 head upstream.c sends. The request body follows with
 * Content-Length when the client gave one, chunked otherwise. Request body bytes are credited
 * back to the client's flow-control window only once they were written to the upstream socket,
 * so a slow upstream throttles the client.
 *
 * Response: the body is queued in worker buffers that nghttp3 reads without copying. Bytes stay
 * queued until the client acknowledges them; acks let the upstream side read again.
 *
 * Errors: no usable server 503, connect failures 502, connect or response timeout 504; once
 * the response has started, an upstream failure resets the stream (H3_INTERNAL_ERROR).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/h3/h3_int.h"

/* ---- helpers ---- */

static void req_set_state(qstream *s, ae_h3_req_state to)
{
    ae_h3_req_set_state(&s->w->counters, s->c->id, s->sid, &s->state, to);
}

static void set_app_error(h3conn *c, int liberr)
{
    ae_quic_conn_set_app_error(c->qc, nghttp3_err_infer_quic_app_error_code(liberr));
}

static void access_log(qstream *s)
{
    h3conn *c = s->c;
    if (!c->rt->conf->log.access)
        return;
    char client[64], dur[32], in[32], out[32], st[16], sid[24];
    ae_addr_format((struct sockaddr *)&c->remote, client, sizeof(client));
    snprintf(dur, sizeof(dur), "%.3f", (ev_now(s->w->loop) - s->started) * 1000.0);
    snprintf(in, sizeof(in), "%llu", (unsigned long long)s->bytes_in);
    snprintf(out, sizeof(out), "%llu", (unsigned long long)s->bytes_out);
    snprintf(st, sizeof(st), "%d", s->status);
    snprintf(sid, sizeof(sid), "%lld", (long long)s->sid);
    ae_log_access(c->id, "listener", c->lis->name, "proto", "h3", "client", client, "sni",
                  ae_quic_conn_sni(c->qc), "stream", sid, "method", s->method ? s->method : "-",
                  "authority", s->authority ? s->authority : "-", "path", s->path ? s->path : "-",
                  "status", s->status ? st : "-", "upstream",
                  s->up.server_idx >= 0 ? c->pool->servers[s->up.server_idx]->addr.text : "-",
                  "bytes_in", in, "bytes_out", out, "duration_ms", dur, "reason",
                  ae_h3_close_name(s->reason),
                  /* last: why the upstream's response was refused, when it was */
                  s->up.h1err != 0 ? "upstream_error" : NULL, ae_h1_strerror(s->up.h1err),
                  (const char *)NULL);
}

/* CLOSED: s is detached (upstream client DONE, logged, off the connection's list, queued for
 * gc). reason: for the access log unless one was decided before. */
static void stream_detach(qstream *s, ae_h3_close reason, int unbind)
{
    if (s->state == AE_H3_REQ_CLOSED)
        return;
    if (s->reason == AE_H3CLOSE_NONE)
        s->reason = reason;
    ae_h3_close_upstream(s);
    access_log(s);
    req_set_state(s, AE_H3_REQ_CLOSED);
    h3conn *c = s->c;
    if (unbind && c->h3 != NULL)
        nghttp3_conn_set_stream_user_data(c->h3, s->sid, NULL);
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->dead_next = c->hw->dead_streams;
    c->hw->dead_streams = s;
}

/* Frees the streams queued on hw->dead_streams. */
static void gc_streams(ae_h3_worker *hw)
{
    while (hw->dead_streams != NULL) {
        qstream *s = hw->dead_streams;
        hw->dead_streams = s->dead_next;
        ae_h3_free_chain(s->w, &s->dn_head, &s->dn_tail);
        ae_worker_buf_put(s->w, s->up.rin);
        free(s->method);
        free(s->path);
        free(s->authority);
        free(s->scheme);
        free(s->xff);
        free(s->hdrs);
        free(s->cookies);
        free(s);
    }
}

/* Detaches every stream of c (connection going away; reason for the access log of the streams
 * whose response was not sent in full). */
static void close_all(h3conn *c, ae_h3_close reason)
{
    while (c->streams != NULL) {
        qstream *s = c->streams;
        /* A response sent in full is "done" even if the client closed before acking it all. */
        int full = s->state == AE_H3_REQ_RESPONDED && s->dn_handed == s->dn_in;
        stream_detach(s, full ? AE_H3CLOSE_DONE : reason, 1);
    }
}

static void count_status(qstream *s)
{
    int k = s->status / 100;
    if (k >= 2 && k <= 5)
        ae_count(&s->w->counters, (ae_metric)(AE_M_H3_REQ_2XX + (k - 2)), 1);
}

/* RESET (by us or the client): the upstream client ends (DONE). */
static void enter_reset(qstream *s, ae_h3_close reason)
{
    req_set_state(s, AE_H3_REQ_RESET);
    s->reason = reason;
    ae_count(&s->w->counters, AE_M_H3_REQ_RESET, 1);
    ae_h3_close_upstream(s);
}

void ae_h3_qstream_reset(qstream *s, uint64_t code, ae_h3_close reason)
{
    if (!ae_h3_live(s))
        return;
    enter_reset(s, reason);
    ngtcp2_conn_shutdown_stream(s->c->conn, 0, s->sid, code);
    ae_quic_conn_kick(s->c->qc);
}

/* ---- response ---- */

static nghttp3_ssize read_data(nghttp3_conn *h3, int64_t sid, nghttp3_vec *vec, size_t veccnt,
                               uint32_t *pflags, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL) {
        *pflags |= NGHTTP3_DATA_FLAG_EOF;
        return 0;
    }
    size_t n = 0;
    uint64_t base = s->dn_base;
    for (ae_buf *b = s->dn_head; b != NULL && n < veccnt; base += b->len, b = b->next) {
        if (s->dn_handed >= base + b->len)
            continue;
        size_t start = (size_t)(s->dn_handed - base), avail = b->len - start;
        vec[n].base = b->data + start;
        vec[n].len = avail;
        s->dn_handed += avail;
        s->bytes_out += avail;
        n++;
    }
    if (s->dn_handed == s->dn_in) {
        if (s->state == AE_H3_REQ_RESPONDED)
            *pflags |= NGHTTP3_DATA_FLAG_EOF;
        else if (n == 0) {
            s->h3_blocked = 1;
            return NGHTTP3_ERR_WOULDBLOCK;
        }
    }
    return (nghttp3_ssize)n;
}

uint8_t *ae_h3_dn_room(qstream *s, size_t *room)
{
    ae_buf *b = s->dn_tail;
    if (b == NULL || b->len == b->cap) {
        b = ae_worker_buf_get(s->w, s->c->rt->conf->tune.buffer_size);
        if (b == NULL)
            return NULL;
        if (s->dn_tail)
            s->dn_tail->next = b;
        else {
            s->dn_head = b;
            s->dn_base = s->dn_in;
        }
        s->dn_tail = b;
    }
    *room = b->cap - b->len;
    return b->data + b->len;
}

void ae_h3_dn_commit(qstream *s, size_t n)
{
    s->dn_tail->len += (uint32_t)n;
    s->dn_in += n;
    if (s->h3_blocked && s->c->h3 != NULL) {
        s->h3_blocked = 0;
        nghttp3_conn_resume_stream(s->c->h3, s->sid);
    }
}

int ae_h3_dn_append(qstream *s, const uint8_t *p, size_t len)
{
    while (len > 0) {
        size_t room;
        uint8_t *d = ae_h3_dn_room(s, &room);
        if (d == NULL)
            return AE_ERR_NOMEM;
        size_t n = len < room ? len : room;
        memcpy(d, p, n);
        ae_h3_dn_commit(s, n);
        p += n;
        len -= n;
    }
    return 0;
}

/* Submits the response HEADERS (nva[0, n); the caller moved s to RESPONDING or RESPONDED),
 * with a body to follow when body != 0. Returns 0, or nghttp3's error (s was reset). */
static int submit(qstream *s, nghttp3_nv *nva, size_t n, int body)
{
    static const nghttp3_data_reader dr = {read_data};
    count_status(s);
    const ae_conf *conf = s->c->rt->conf;
    nghttp3_nv all[AE_H3_MAX_RESP_FIELDS + 1];
    if (conf->quic.site_header != NULL && n < AE_ARRAY_LEN(all)) {
        memcpy(all, nva, n * sizeof(*nva));
        all[n++] = (nghttp3_nv){(uint8_t *)conf->quic.site_header, (uint8_t *)conf->site.name,
                                strlen(conf->quic.site_header), strlen(conf->site.name),
                                NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE};
        nva = all;
    }
    int rv = nghttp3_conn_submit_response(s->c->h3, s->sid, nva, n, body ? &dr : NULL);
    if (rv != 0) {
        ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_SUBMIT_FAILED);
        return rv;
    }
    ae_quic_conn_kick(s->c->qc);
    return 0;
}

int ae_h3_respond(qstream *s, int status, nghttp3_nv *nva, size_t n, int body)
{
    s->status = status;
    req_set_state(s, body ? AE_H3_REQ_RESPONDING : AE_H3_REQ_RESPONDED);
    return submit(s, nva, n, body);
}

void ae_h3_response_end(qstream *s)
{
    if (s->state == AE_H3_REQ_RESPONDING)
        req_set_state(s, AE_H3_REQ_RESPONDED);
    if (s->h3_blocked && s->c->h3 != NULL) {
        s->h3_blocked = 0;
        nghttp3_conn_resume_stream(s->c->h3, s->sid);
    }
    if (!s->req_fin) /* the rest of the request body is not needed any more */
        ngtcp2_conn_shutdown_stream_read(s->c->conn, 0, s->sid, NGHTTP3_H3_NO_ERROR);
    ae_quic_conn_kick(s->c->qc);
}

/* A response made by the proxy (errors). Once a response started, only a reset is left. */
void ae_h3_respond_error(qstream *s, int status, ae_h3_close reason)
{
    if (!ae_h3_live(s))
        return;
    ae_h3_close_upstream(s);
    if (s->state == AE_H3_REQ_RESPONDING || s->state == AE_H3_REQ_RESPONDED) {
        ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, reason);
        return;
    }
    static const char *const texts[] = {
        "502 bad gateway\n", "503 no upstream available\n", "504 gateway timeout\n",
        "431 request header fields too large\n", "501 not implemented\n"};
    const char *body = status == 503   ? texts[1]
                       : status == 504 ? texts[2]
                       : status == 502 ? texts[0]
                       : status == 431 ? texts[3]
                       : status == 501 ? texts[4]
                       : status == 425 ? "425 too early\n"
                       : status == 429 ? "429 too many requests\n"
                                       : "error\n";
    char st[8], cl[24];
    snprintf(st, sizeof(st), "%d", status);
    snprintf(cl, sizeof(cl), "%zu", strlen(body));
    s->status = status;
    s->reason = reason;
    if (ae_h3_dn_append(s, (const uint8_t *)body, strlen(body)) != 0) {
        ae_h3_qstream_reset(s, NGHTTP3_H3_INTERNAL_ERROR, AE_H3CLOSE_NOMEM);
        return;
    }
    req_set_state(s, AE_H3_REQ_RESPONDED);
    nghttp3_nv nva[] = {
        AE_H3_NV(":status", st, strlen(st)), AE_H3_NV("content-type", "text/plain", 10),
        AE_H3_NV("content-length", cl, strlen(cl)), AE_H3_NV("retry-after", "1", 1)};
    submit(s, nva, AE_ARRAY_LEN(nva) - (status == 429 ? 0 : 1), 1);
}

/* ---- request ---- */

static int buf_append(char **b, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        while (c < *len + n)
            c *= 2;
        char *h = realloc(*b, c);
        if (h == NULL)
            return AE_ERR_NOMEM;
        *b = h;
        *cap = c;
    }
    memcpy(*b + *len, p, n);
    *len += n;
    return 0;
}

static int hdr_append(qstream *s, const char *p, size_t n)
{
    return buf_append(&s->hdrs, &s->hdrs_len, &s->hdrs_cap, p, n);
}

static int ows_byte(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Adds the crumbs of one `cookie` field line to s->cookies, "; " between them; the crumb named
 * `skip` (the pool's affinity cookie: the proxy's own, not the origin's) is left out. */
static int cookie_append(qstream *s, const uint8_t *v, size_t len, const char *skip)
{
    size_t i = 0, sl = skip ? strlen(skip) : 0;
    while (i < len) {
        size_t a = i, e;
        while (i < len && v[i] != ';')
            i++;
        e = i++;
        while (a < e && ows_byte(v[a]))
            a++;
        while (e > a && ows_byte(v[e - 1]))
            e--;
        if (a == e)
            continue;
        if (sl > 0 && e - a > sl && v[a + sl] == '=' && memcmp(v + a, skip, sl) == 0)
            continue;
        if ((s->cookies_len > 0 &&
             buf_append(&s->cookies, &s->cookies_len, &s->cookies_cap, "; ", 2) != 0) ||
            buf_append(&s->cookies, &s->cookies_len, &s->cookies_cap, (const char *)v + a, e - a) !=
                0)
            return AE_ERR_NOMEM;
    }
    return 0;
}

static qstream *stream_get(h3conn *c, int64_t sid, void *sud)
{
    qstream *s = sud;
    if (s != NULL)
        return s;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->c = c;
    s->w = c->w;
    s->sid = sid;
    s->req_cl = -1;
    s->early = c->rx_early;
    s->started = ev_now(c->w->loop);
    ae_h3_req_state_init(&s->w->counters, &s->state);
    ae_h3_up_init(s);
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    nghttp3_conn_set_stream_user_data(c->h3, sid, s);
    return s;
}

static int h3_begin_headers(nghttp3_conn *h3, int64_t sid, void *cud, void *sud)
{
    return stream_get(cud, sid, sud) ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int set_str(char **dst, const uint8_t *p, size_t n)
{
    *dst = strndup((const char *)p, n);
    return *dst ? 0 : -1;
}

/* A pseudo-header: duplicates make the request malformed (the first value stays). */
static int set_pseudo(qstream *s, char **dst, const uint8_t *p, size_t n)
{
    if (*dst != NULL) {
        s->dup_pseudo = 1;
        return 0;
    }
    return set_str(dst, p, n);
}

static int h3_recv_header(nghttp3_conn *h3, int64_t sid, int32_t token, nghttp3_rcbuf *name,
                          nghttp3_rcbuf *value, uint8_t flags, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL || s->state != AE_H3_REQ_HEADERS)
        return 0;
    nghttp3_vec n = nghttp3_rcbuf_get_buf(name), v = nghttp3_rcbuf_get_buf(value);
    s->head_bytes += n.len + v.len + 32;
    if (s->head_bytes > AE_H3_HEAD_MAX) /* 431 at the end of the section */
        return 0;
    /* nghttp3 validated names and values already (RFC 9114 §4.2); check again with our own
     * rules: a CR, LF or NUL would split the HTTP/1.1 request. */
    if (ae_h3_check_field(n.base, n.len, v.base, v.len) != AE_H3_OK) {
        s->bad_field = 1;
        return 0;
    }
    if (n.base[0] == ':') {
        if (s->seen_regular)
            s->late_pseudo = 1;
    } else {
        s->seen_regular = 1;
        if (s->c->pool->conf->balance == AE_BAL_HASH)
            ae_h3_aff_field(s, n.base, n.len, v.base, v.len);
    }
    int rv = 0;
    switch (token) {
    case NGHTTP3_QPACK_TOKEN__METHOD:
        rv = set_pseudo(s, &s->method, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN__PATH:
        rv = set_pseudo(s, &s->path, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN__AUTHORITY:
        if (s->authority != NULL && s->host_auth) { /* Host came first: :authority wins */
            free(s->authority);
            s->authority = NULL;
            s->host_auth = 0;
        }
        rv = set_pseudo(s, &s->authority, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN__SCHEME:
        rv = set_pseudo(s, &s->scheme, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN__PROTOCOL:
        s->has_protocol = 1;
        break;
    case NGHTTP3_QPACK_TOKEN_HOST:
        if (s->authority == NULL) {
            rv = set_str(&s->authority, v.base, v.len);
            s->host_auth = 1;
        }
        break;
    case NGHTTP3_QPACK_TOKEN_CONTENT_LENGTH: {
        char buf[24];
        if (v.len == 0 || v.len >= sizeof(buf))
            return NGHTTP3_ERR_CALLBACK_FAILURE;
        memcpy(buf, v.base, v.len);
        buf[v.len] = 0;
        s->req_cl = strtoll(buf, NULL, 10); /* nghttp3 checked the syntax */
        break;
    }
    case NGHTTP3_QPACK_TOKEN_COOKIE:
        rv = cookie_append(
            s, v.base, v.len,
            s->c->pool->conf->balance == AE_BAL_HASH ? s->c->pool->conf->affinity_cookie : NULL);
        break;
    case NGHTTP3_QPACK_TOKEN_X_FORWARDED_FOR:
        if (s->xff == NULL)
            rv = set_str(&s->xff, v.base, v.len);
        break;
    case NGHTTP3_QPACK_TOKEN_TE:
    case NGHTTP3_QPACK_TOKEN_CONNECTION:
    case NGHTTP3_QPACK_TOKEN_KEEP_ALIVE:
    case NGHTTP3_QPACK_TOKEN_PROXY_CONNECTION:
    case NGHTTP3_QPACK_TOKEN_TRANSFER_ENCODING:
    case NGHTTP3_QPACK_TOKEN_UPGRADE:
        break;
    default:
        if (n.len > 0 && n.base[0] == ':')
            break;
        if (n.len == 17 && memcmp(n.base, "x-forwarded-proto", 17) == 0)
            break;
        if (n.len == 10 && memcmp(n.base, "early-data", 10) == 0) {
            s->early_hdr = 1; /* re-emitted once by ae_h3_queue_head */
            break;
        }
        rv = hdr_append(s, (const char *)n.base, n.len) | hdr_append(s, ": ", 2) |
             hdr_append(s, (const char *)v.base, v.len) | hdr_append(s, "\r\n", 2);
        break;
    }
    return rv == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int h3_end_headers(nghttp3_conn *h3, int64_t sid, int fin, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL || s->state != AE_H3_REQ_HEADERS)
        return 0;
    s->req_fin = fin != 0;
    if (s->cookies_len > 0) {
        if (hdr_append(s, "cookie: ", 8) | hdr_append(s, s->cookies, s->cookies_len) |
            hdr_append(s, "\r\n", 2))
            return NGHTTP3_ERR_CALLBACK_FAILURE;
        free(s->cookies);
        s->cookies = NULL;
        s->cookies_len = s->cookies_cap = 0;
    }
    ae_h3_req_info ri = {.method = s->method,
                         .scheme = s->scheme,
                         .path = s->path,
                         .authority = s->authority,
                         .section_size = s->head_bytes,
                         .bad_field = s->bad_field,
                         .dup_pseudo = s->dup_pseudo,
                         .late_pseudo = s->late_pseudo,
                         .has_protocol = s->has_protocol};
    switch (ae_h3_check_request(&ri)) {
    case AE_H3_OK:
        break;
    case AE_H3_TOO_BIG:
        ae_h3_respond_error(s, 431, AE_H3CLOSE_HEADER_TOO_BIG);
        return 0;
    case AE_H3_CONNECT:
        ae_h3_respond_error(s, 501, AE_H3CLOSE_CONNECT_NOT_SUPPORTED);
        return 0;
    default:
        ae_h3_qstream_reset(s, NGHTTP3_H3_MESSAGE_ERROR, AE_H3CLOSE_MALFORMED);
        return 0;
    }
    if (s->w->srclim != NULL &&
        ae_srclimit_h3_request(s->w->srclim, (const struct sockaddr *)&s->c->remote,
                               (uint64_t)(ev_now(s->w->loop) * 1e9)) != AE_SRC_OK) {
        ae_count(&s->w->counters, (ae_metric)(AE_M_SRC_B0 + AE_SRC_H3_RATE), 1);
        ae_worker_overload(s->w, AE_OVL_SOURCE, 0);
        ae_h3_respond_error(s, 429, AE_H3CLOSE_RATE_LIMITED);
        return 0;
    }
    s->is_head = strcmp(s->method, "HEAD") == 0;
    s->early |= s->c->rx_early;
    if (s->early) {
        /* RFC 8470 §5: a request that may be replayed goes upstream only when its method is
         * safe (or the operator said so); otherwise 425 and the client retries after the
         * handshake. */
        if (!s->c->rt->conf->quic.early_data_unsafe && strcmp(s->method, "GET") != 0 &&
            !s->is_head && strcmp(s->method, "OPTIONS") != 0) {
            ae_count(&s->w->counters, AE_M_H3_TOO_EARLY, 1);
            ae_h3_respond_error(s, 425, AE_H3CLOSE_TOO_EARLY);
            return 0;
        }
        ae_count(&s->w->counters, AE_M_H3_EARLY_FORWARDED, 1);
    }
    /* quic.early_data_shared: hold: a 0-RTT request waits (queued, no upstream yet) until
     * the handshake completes or the shared record says first use (op_early_release). */
    int hold = s->early && ae_quic_conn_early_held(s->c->qc);
    if (hold)
        ae_count(&s->w->counters, AE_M_H3_EARLY_HELD, 1);
    req_set_state(s, AE_H3_REQ_FORWARDED);
    return ae_h3_up_start(s, hold) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int h3_recv_data(nghttp3_conn *h3, int64_t sid, const uint8_t *data, size_t len, void *cud,
                        void *sud)
{
    qstream *s = sud;
    h3conn *c = cud;
    if (s == NULL || !ae_h3_live(s) || !ae_h3_up_takes_body(s)) {
        /* nobody wants it: credit it at once */
        ngtcp2_conn_extend_max_stream_offset(c->conn, sid, len);
        ngtcp2_conn_extend_max_offset(c->conn, len);
        return 0;
    }
    if (ae_h3_up_body(s, data, len) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    s->bytes_in += len;
    s->pending_consume += len;
    ae_h3_pump_later(s);
    return 0;
}

static int h3_end_stream(nghttp3_conn *h3, int64_t sid, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL || !ae_h3_live(s))
        return 0;
    s->req_fin = 1;
    if (!ae_h3_up_takes_body(s))
        return 0;
    if (ae_h3_up_body_end(s) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    ae_h3_pump(s);
    return 0;
}

void ae_h3_credit(qstream *s, uint64_t n)
{
    if (n > s->pending_consume)
        n = s->pending_consume;
    if (n == 0)
        return;
    s->pending_consume -= n;
    ngtcp2_conn_extend_max_stream_offset(s->c->conn, s->sid, n);
    ngtcp2_conn_extend_max_offset(s->c->conn, n);
}

static int h3_deferred_consume(nghttp3_conn *h3, int64_t sid, size_t n, void *cud, void *sud)
{
    h3conn *c = cud;
    ngtcp2_conn_extend_max_stream_offset(c->conn, sid, n);
    ngtcp2_conn_extend_max_offset(c->conn, n);
    return 0;
}

static int h3_acked_stream_data(nghttp3_conn *h3, int64_t sid, uint64_t n, void *cud, void *sud)
{
    qstream *s = sud;
    if (s == NULL)
        return 0;
    s->dn_acked += n;
    while (s->dn_head != NULL && s->dn_base + s->dn_head->len <= s->dn_acked) {
        ae_buf *b = s->dn_head;
        s->dn_base += b->len;
        s->dn_head = b->next;
        if (s->dn_head == NULL)
            s->dn_tail = NULL;
        ae_worker_buf_put(s->w, b);
    }
    ae_h3_up_acked(s);
    return 0;
}

static int h3_stream_close(nghttp3_conn *h3, int64_t sid, uint64_t code, void *cud, void *sud)
{
    h3conn *c = cud;
    qstream *s = sud;
    if (ngtcp2_is_bidi_stream(sid))
        ngtcp2_conn_extend_max_streams_bidi(c->conn, 1);
    if (s != NULL) {
        if (s->state != AE_H3_REQ_RESPONDED && s->reason == AE_H3CLOSE_NONE)
            s->reason = AE_H3CLOSE_CLIENT_RESET;
        stream_detach(s, AE_H3CLOSE_DONE, 0);
    }
    return 0;
}

static int h3_stop_sending(nghttp3_conn *h3, int64_t sid, uint64_t code, void *cud, void *sud)
{
    h3conn *c = cud;
    ngtcp2_conn_shutdown_stream_read(c->conn, 0, sid, code);
    return 0;
}

static int h3_reset_stream(nghttp3_conn *h3, int64_t sid, uint64_t code, void *cud, void *sud)
{
    h3conn *c = cud;
    qstream *s = sud;
    if (s != NULL && ae_h3_live(s))
        enter_reset(s, code == NGHTTP3_H3_MESSAGE_ERROR ? AE_H3CLOSE_MALFORMED : AE_H3CLOSE_RESET);
    ngtcp2_conn_shutdown_stream_write(c->conn, 0, sid, code);
    return 0;
}

/* ---- the QUIC application ops (proxy/quic/quic.h): quic calls these ---- */

static int op_setup(void *wctx, ae_qconn *qc, void **app)
{
    static const nghttp3_callbacks cbs = {
        .acked_stream_data = h3_acked_stream_data,
        .stream_close = h3_stream_close,
        .recv_data = h3_recv_data,
        .deferred_consume = h3_deferred_consume,
        .begin_headers = h3_begin_headers,
        .recv_header = h3_recv_header,
        .end_headers = h3_end_headers,
        .stop_sending = h3_stop_sending,
        .end_stream = h3_end_stream,
        .reset_stream = h3_reset_stream,
    };
    h3conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    socklen_t rlen;
    const struct sockaddr *remote = ae_quic_conn_remote(qc, &rlen);
    c->qc = qc;
    c->conn = ae_quic_conn_ngtcp2(qc);
    c->hw = wctx;
    c->w = ae_quic_conn_worker(qc);
    c->id = ae_quic_conn_id(qc);
    c->rt = ae_quic_conn_runtime(qc);
    c->lis = ae_quic_conn_listener(qc);
    c->pool = ae_quic_conn_pool(qc);
    memcpy(&c->remote, remote, rlen);
    c->remotelen = rlen;
    nghttp3_settings settings;
    nghttp3_settings_default(&settings);
    settings.qpack_max_dtable_capacity = 4096;
    settings.qpack_blocked_streams = 100;
    settings.max_field_section_size = AE_H3_HEAD_MAX;
    if (nghttp3_conn_server_new(&c->h3, &cbs, &settings, NULL, c) != 0) {
        free(c);
        return -1;
    }
    const ngtcp2_transport_params *p = ngtcp2_conn_get_local_transport_params(c->conn);
    nghttp3_conn_set_max_client_streams_bidi(c->h3, p->initial_max_streams_bidi);
    int64_t ctrl, enc, dec;
    if (ngtcp2_conn_open_uni_stream(c->conn, &ctrl, NULL) != 0 ||
        nghttp3_conn_bind_control_stream(c->h3, ctrl) != 0 ||
        ngtcp2_conn_open_uni_stream(c->conn, &enc, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(c->conn, &dec, NULL) != 0 ||
        nghttp3_conn_bind_qpack_streams(c->h3, enc, dec) != 0) {
        nghttp3_conn_del(c->h3);
        free(c);
        return -1;
    }
    *app = c;
    return 0;
}

static int op_recv_stream_data(void *app, uint32_t flags, int64_t sid, const uint8_t *data,
                               size_t len)
{
    h3conn *c = app;
    /* The 0-RTT flag is for the streams nghttp3's callbacks create or complete in this read. */
    c->rx_early = (flags & NGTCP2_STREAM_DATA_FLAG_0RTT) != 0;
    nghttp3_ssize n =
        nghttp3_conn_read_stream(c->h3, sid, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    c->rx_early = 0;
    if (n < 0) {
        set_app_error(c, (int)n);
        return -1;
    }
    ngtcp2_conn_extend_max_stream_offset(c->conn, sid, (uint64_t)n);
    ngtcp2_conn_extend_max_offset(c->conn, (uint64_t)n);
    return 0;
}

static int op_acked_stream_data(void *app, int64_t sid, uint64_t len)
{
    h3conn *c = app;
    int rv = nghttp3_conn_add_ack_offset(c->h3, sid, len);
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

static int op_stream_close(void *app, uint32_t flags, int64_t sid, uint64_t code)
{
    h3conn *c = app;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        code = NGHTTP3_H3_NO_ERROR;
    int rv = nghttp3_conn_close_stream(c->h3, sid, code);
    if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
        if (ngtcp2_is_bidi_stream(sid))
            ngtcp2_conn_extend_max_streams_bidi(c->conn, 1);
        return 0;
    }
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

static int op_stream_reset(void *app, int64_t sid)
{
    h3conn *c = app;
    int rv = nghttp3_conn_shutdown_stream_read(c->h3, sid);
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

static int op_extend_max_stream_data(void *app, int64_t sid)
{
    h3conn *c = app;
    int rv = nghttp3_conn_unblock_stream(c->h3, sid);
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

static void op_extend_max_streams_bidi(void *app, uint64_t max_streams)
{
    h3conn *c = app;
    nghttp3_conn_set_max_client_streams_bidi(c->h3, max_streams);
}

static int op_write_stream(void *app, int64_t *sid, int *fin, ngtcp2_vec *vec, size_t veccnt)
{
    h3conn *c = app;
    _Static_assert(sizeof(ngtcp2_vec) == sizeof(nghttp3_vec), "one iovec layout");
    nghttp3_ssize n = nghttp3_conn_writev_stream(c->h3, sid, fin, (nghttp3_vec *)vec, veccnt);
    if (n < 0) {
        set_app_error(c, (int)n);
        return -1;
    }
    return (int)n;
}

static void op_stream_blocked(void *app, int64_t sid)
{
    h3conn *c = app;
    nghttp3_conn_block_stream(c->h3, sid);
}

static void op_stream_shut_wr(void *app, int64_t sid)
{
    h3conn *c = app;
    nghttp3_conn_shutdown_stream_write(c->h3, sid);
}

static int op_add_write_offset(void *app, int64_t sid, size_t n)
{
    h3conn *c = app;
    int rv = nghttp3_conn_add_write_offset(c->h3, sid, n);
    if (rv != 0) {
        set_app_error(c, rv);
        return -1;
    }
    return 0;
}

/* Graceful drain (RFC 9114 §5.2): step 0 sends a GOAWAY notice (no new requests), step 1 the
 * final GOAWAY naming the last stream processed. */
static void op_early_release(void *app)
{
    h3conn *c = app;
    qstream *next;
    for (qstream *s = c->streams; s != NULL; s = next) {
        next = s->next; /* a failed connect answers s, which may detach it */
        ae_h3_up_release(s);
    }
}

static void op_goaway(void *app, int step)
{
    h3conn *c = app;
    int rv = step == 0 ? nghttp3_conn_submit_shutdown_notice(c->h3) : nghttp3_conn_shutdown(c->h3);
    if (rv != 0)
        AE_CDEBUG(c->id, "h3: GOAWAY: %s", nghttp3_strerror(rv));
    ae_quic_conn_kick(c->qc);
}

static size_t op_nstreams(void *app)
{
    h3conn *c = app;
    size_t n = 0;
    for (qstream *s = c->streams; s != NULL; s = s->next)
        n++;
    return n;
}

static void op_close(void *app, ae_quic_close reason)
{
    close_all(app, ae_h3_close_conn(reason));
}

static void op_free(void *app)
{
    h3conn *c = app;
    nghttp3_conn_del(c->h3);
    free(c);
}

static void op_gc(void *wctx)
{
    gc_streams(wctx);
}

static void op_release(void *wctx)
{
    ae_h3_worker_free(wctx);
}

const ae_quic_app_ops ae_h3_app_ops = {
    .no_error = NGHTTP3_H3_NO_ERROR,
    .setup = op_setup,
    .recv_stream_data = op_recv_stream_data,
    .acked_stream_data = op_acked_stream_data,
    .stream_close = op_stream_close,
    .stream_reset = op_stream_reset,
    .extend_max_stream_data = op_extend_max_stream_data,
    .extend_max_streams_bidi = op_extend_max_streams_bidi,
    .write_stream = op_write_stream,
    .stream_blocked = op_stream_blocked,
    .stream_shut_wr = op_stream_shut_wr,
    .add_write_offset = op_add_write_offset,
    .early_release = op_early_release,
    .goaway = op_goaway,
    .nstreams = op_nstreams,
    .close = op_close,
    .free = op_free,
    .gc = op_gc,
    .release = op_release,
};

/* ---- per-worker state ---- */

ae_h3_worker *ae_h3_worker_new(ae_worker *w)
{
    ae_h3_worker *hw = calloc(1, sizeof(*hw));
    if (hw != NULL)
        hw->w = w;
    return hw;
}

void ae_h3_worker_free(ae_h3_worker *hw)
{
    if (hw == NULL)
        return;
    gc_streams(hw);
    ae_h3_upool_free(hw);
    free(hw);
}

/* ---- RFC 9114 request validation ---- */

static int is_tchar_lower(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int name_is(const uint8_t *name, size_t nlen, const char *lit)
{
    return nlen == strlen(lit) && memcmp(name, lit, nlen) == 0;
}

int ae_h3_check_field(const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
    if (nlen == 0)
        return AE_H3_MALFORMED;
    for (size_t i = 0; i < vlen; i++) /* §4.2: never NUL, CR or LF in a value */
        if (value[i] == 0 || value[i] == '\r' || value[i] == '\n')
            return AE_H3_MALFORMED;
    if (name[0] == ':') /* §4.3.1: only the request pseudo-headers we know */
        return name_is(name, nlen, ":method") || name_is(name, nlen, ":scheme") ||
                       name_is(name, nlen, ":authority") || name_is(name, nlen, ":path") ||
                       name_is(name, nlen, ":protocol")
                   ? AE_H3_OK
                   : AE_H3_MALFORMED;
    for (size_t i = 0; i < nlen; i++) /* §4.2: lower-case tokens only */
        if (!is_tchar_lower(name[i]))
            return AE_H3_MALFORMED;
    /* §4.2: connection-specific fields are malformed in HTTP/3 */
    if (name_is(name, nlen, "connection") || name_is(name, nlen, "keep-alive") ||
        name_is(name, nlen, "proxy-connection") || name_is(name, nlen, "transfer-encoding") ||
        name_is(name, nlen, "upgrade"))
        return AE_H3_MALFORMED;
    if (name_is(name, nlen, "te") &&
        !(vlen == 8 && strncasecmp((const char *)value, "trailers", 8) == 0))
        return AE_H3_MALFORMED;
    return AE_H3_OK;
}

/* Characters of a request-target or authority we put on the HTTP/1.1 request line / Host:
 * visible ASCII only (no space, control or DEL byte). */
static int visible(const char *p)
{
    for (; *p; p++)
        if ((uint8_t)*p <= ' ' || (uint8_t)*p >= 0x7f)
            return 0;
    return 1;
}

int ae_h3_check_request(const ae_h3_req_info *r)
{
    if (r->section_size > AE_H3_HEAD_MAX)
        return AE_H3_TOO_BIG;
    if (r->bad_field || r->dup_pseudo || r->late_pseudo || r->method == NULL || r->method[0] == 0)
        return AE_H3_MALFORMED;
    for (const char *m = r->method; *m; m++)
        if (!is_tchar_lower((uint8_t)*m) && !(*m >= 'A' && *m <= 'Z'))
            return AE_H3_MALFORMED;
    if (strcmp(r->method, "CONNECT") == 0) {
        /* §4.4: :scheme and :path omitted, :authority present; extended CONNECT (:protocol)
         * needs SETTINGS_ENABLE_CONNECT_PROTOCOL, which we do not send. */
        if (r->scheme != NULL || r->path != NULL || r->authority == NULL || r->has_protocol)
            return AE_H3_MALFORMED;
        return AE_H3_CONNECT;
    }
    if (r->has_protocol || r->scheme == NULL || r->path == NULL || r->scheme[0] == 0 ||
        r->path[0] == 0)
        return AE_H3_MALFORMED;
    /* §4.3.1: http and https URIs need an authority (:authority or Host). */
    if (r->authority == NULL || r->authority[0] == 0 || !visible(r->authority))
        return AE_H3_MALFORMED;
    if (!visible(r->path) ||
        !(r->path[0] == '/' || (strcmp(r->path, "*") == 0 && strcmp(r->method, "OPTIONS") == 0)))
        return AE_H3_MALFORMED;
    return AE_H3_OK;
}
