/*
 * YAML text -> node tree with positions, using libyaml's event API.
 *
 * The event API (rather than yaml_parser_load) lets us see anchors and aliases and refuse them,
 * and keep the key path of the node being read so that syntax errors name the nearest key.
 */
#include "conf_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

static int verr(conf_ctx *c, int rv, ae_conf_pos pos, const char *key, const char *fmt, va_list ap)
{
    int n;

    if (c->errlen == 0)
        return rv;
    n = snprintf(c->err, c->errlen, "%s:%u:%u: %s: ", c->name, (unsigned)pos.line,
                 (unsigned)pos.col, key && *key ? key : "-");
    if (n >= 0 && (size_t)n < c->errlen)
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    /* One line of text: values quoted from the file may hold any byte (YAML escapes). */
    for (char *p = c->err; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return rv;
}

int ae_conf_err(conf_ctx *c, int rv, ae_conf_pos pos, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(c, rv, pos, c->path, fmt, ap);
    va_end(ap);
    return rv;
}

int ae_conf_errk(conf_ctx *c, int rv, ae_conf_pos pos, const char *key, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(c, rv, pos, key, fmt, ap);
    va_end(ap);
    return rv;
}

/* Appends sep then text to the path, truncating silently: the path only decorates messages. */
static size_t path_append(conf_ctx *c, const char *sep, const char *text)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "%s%s", sep, text);

    if (n < 0)
        n = 0;
    c->plen += (size_t)n;
    if (c->plen >= sizeof(c->path))
        c->plen = sizeof(c->path) - 1;
    return old;
}

size_t ae_conf_path_key(conf_ctx *c, const char *key)
{
    return path_append(c, c->plen ? "." : "", key);
}

size_t ae_conf_path_index(conf_ctx *c, size_t i)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "[%zu]", i);
    return path_append(c, "", buf);
}

void ae_conf_path_pop(conf_ctx *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

void ae_conf_node_free(cnode *n)
{
    size_t i;

    if (n == NULL)
        return;
    for (i = 0; i < n->nkids; i++)
        ae_conf_node_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    free(n);
}

const cnode *ae_conf_node_get(const cnode *m, const char *key)
{
    size_t i;

    if (m == NULL || m->kind != CN_MAP)
        return NULL;
    for (i = 0; i + 1 < m->nkids; i += 2)
        if (strcmp(m->kids[i]->str, key) == 0)
            return m->kids[i + 1];
    return NULL;
}

int ae_conf_node_is_null(const cnode *n)
{
    return n->kind == CN_SCALAR && n->plain &&
           (n->str[0] == '\0' || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
            strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0);
}

static ae_conf_pos mark_pos(yaml_mark_t m)
{
    ae_conf_pos p;

    p.line = (uint32_t)m.line + 1;
    p.col = (uint32_t)m.column + 1;
    return p;
}

typedef struct {
    conf_ctx *c;
    yaml_parser_t parser;
    const char *input;
    size_t len;
} reader;

/* Reader errors (bad encoding, control characters) come with a byte offset, not a mark. */
static ae_conf_pos offset_pos(const reader *r, size_t off)
{
    ae_conf_pos p = {1, 1};
    size_t i;

    for (i = 0; i < off && i < r->len; i++) {
        if (r->input[i] == '\n') {
            p.line++;
            p.col = 1;
        } else if (((unsigned char)r->input[i] & 0xc0) != 0x80) {
            p.col++; /* count characters, as libyaml's marks do */
        }
    }
    return p;
}

/* Fetches the next event, turning a libyaml failure into our error line. */
static int next_event(reader *r, yaml_event_t *ev)
{
    yaml_parser_t *p = &r->parser;

    if (yaml_parser_parse(p, ev))
        return 0;
    if (p->error == YAML_MEMORY_ERROR)
        return ae_conf_err(r->c, AE_ERR_NOMEM, mark_pos(p->problem_mark), "out of memory");
    if (p->error == YAML_READER_ERROR)
        return ae_conf_errk(r->c, AE_ERR_PARSE, offset_pos(r, p->problem_offset), "-", "%s",
                            p->problem ? p->problem : "invalid input");
    if (p->context != NULL)
        return ae_conf_err(r->c, AE_ERR_PARSE, mark_pos(p->problem_mark), "%s (%s at line %zu)",
                           p->problem ? p->problem : "syntax error", p->context,
                           p->context_mark.line + 1);
    return ae_conf_err(r->c, AE_ERR_PARSE, mark_pos(p->problem_mark), "%s",
                       p->problem ? p->problem : "syntax error");
}

static int add_kid(cnode *n, cnode *kid)
{
    /* grow at powers of two */
    if ((n->nkids & (n->nkids - 1)) == 0) {
        size_t cap = n->nkids ? n->nkids * 2 : 4;
        cnode **k = realloc(n->kids, cap * sizeof(*k));
        if (k == NULL)
            return AE_ERR_NOMEM;
        n->kids = k;
    }
    n->kids[n->nkids++] = kid;
    return 0;
}

static int read_node(reader *r, yaml_event_t *ev, int depth, cnode **out);

/* Reads the items of a sequence or the pairs of a mapping until the matching end event. */
static int read_children(reader *r, cnode *n, int depth)
{
    yaml_event_t ev;
    yaml_event_type_t end = n->kind == CN_MAP ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
    cnode *kid;
    size_t old, i;
    int rv;

    for (;;) {
        if ((rv = next_event(r, &ev)) != 0)
            return rv;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            return 0;
        }
        if (n->kind == CN_SEQ) {
            old = ae_conf_path_index(r->c, n->nkids);
            rv = read_node(r, &ev, depth + 1, &kid);
            if (rv == 0 && (rv = add_kid(n, kid)) != 0)
                ae_conf_node_free(kid);
            if (rv != 0)
                return rv;
            ae_conf_path_pop(r->c, old);
            continue;
        }
        /* mapping: a scalar key, then its value */
        if (ev.type != YAML_SCALAR_EVENT) {
            ae_conf_pos pos = mark_pos(ev.start_mark);
            yaml_event_delete(&ev);
            return ae_conf_err(r->c, AE_ERR_PARSE, pos, "mapping keys must be plain strings");
        }
        if ((rv = read_node(r, &ev, depth + 1, &kid)) != 0)
            return rv;
        for (i = 0; i < n->nkids; i += 2) {
            if (strcmp(n->kids[i]->str, kid->str) == 0) {
                old = ae_conf_path_key(r->c, kid->str);
                rv = ae_conf_err(r->c, AE_ERR_PARSE, kid->pos, "duplicate key (first at line %u)",
                                 (unsigned)n->kids[i]->pos.line);
                ae_conf_node_free(kid);
                return rv;
            }
        }
        if ((rv = add_kid(n, kid)) != 0) {
            ae_conf_node_free(kid);
            return rv;
        }
        old = ae_conf_path_key(r->c, kid->str);
        if ((rv = next_event(r, &ev)) != 0)
            return rv;
        if ((rv = read_node(r, &ev, depth + 1, &kid)) != 0)
            return rv;
        if ((rv = add_kid(n, kid)) != 0) {
            ae_conf_node_free(kid);
            return rv;
        }
        ae_conf_path_pop(r->c, old);
    }
}

/* Builds the node that starts with ev (consumed). */
static int read_node(reader *r, yaml_event_t *ev, int depth, cnode **out)
{
    ae_conf_pos pos = mark_pos(ev->start_mark);
    yaml_char_t *anchor = NULL;
    cnode *n;
    int rv;

    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        yaml_event_delete(ev);
        return ae_conf_err(r->c, AE_ERR_PARSE, pos, "YAML aliases (*name) are not supported");
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        break;
    default:
        yaml_event_delete(ev);
        return ae_conf_err(r->c, AE_ERR_PARSE, pos, "unexpected YAML event");
    }
    if (anchor != NULL) {
        yaml_event_delete(ev);
        return ae_conf_err(r->c, AE_ERR_PARSE, pos, "YAML anchors (&name) are not supported");
    }
    if (depth > AE_CONF_MAX_DEPTH) {
        yaml_event_delete(ev);
        return ae_conf_err(r->c, AE_ERR_PARSE, pos, "nesting too deep");
    }
    n = calloc(1, sizeof(*n));
    if (n == NULL) {
        yaml_event_delete(ev);
        return ae_conf_err(r->c, AE_ERR_NOMEM, pos, "out of memory");
    }
    n->pos = pos;
    if (ev->type == YAML_SCALAR_EVENT) {
        size_t len = ev->data.scalar.length;

        n->kind = CN_SCALAR;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (memchr(ev->data.scalar.value, '\0', len) != NULL) {
            yaml_event_delete(ev);
            free(n);
            return ae_conf_err(r->c, AE_ERR_PARSE, pos, "NUL byte in value");
        }
        n->str = malloc(len + 1);
        if (n->str == NULL) {
            yaml_event_delete(ev);
            free(n);
            return ae_conf_err(r->c, AE_ERR_NOMEM, pos, "out of memory");
        }
        memcpy(n->str, ev->data.scalar.value, len);
        n->str[len] = '\0';
        yaml_event_delete(ev);
        *out = n;
        return 0;
    }
    n->kind = ev->type == YAML_MAPPING_START_EVENT ? CN_MAP : CN_SEQ;
    yaml_event_delete(ev);
    if ((rv = read_children(r, n, depth)) != 0) {
        ae_conf_node_free(n);
        return rv == AE_ERR_NOMEM ? ae_conf_err(r->c, rv, pos, "out of memory") : rv;
    }
    *out = n;
    return 0;
}

/* Expects the next event to be of type t (stream/document framing). */
static int expect(reader *r, yaml_event_type_t t, yaml_event_t *ev)
{
    int rv;

    if ((rv = next_event(r, ev)) != 0)
        return rv;
    if (ev->type != t) {
        ae_conf_pos pos = mark_pos(ev->start_mark);
        yaml_event_delete(ev);
        return ae_conf_err(r->c, AE_ERR_PARSE, pos, "unexpected YAML structure");
    }
    return 0;
}

int ae_conf_yaml_read(conf_ctx *c, const char *yaml, size_t len, cnode **root)
{
    reader r;
    yaml_event_t ev;
    cnode *n = NULL;
    int rv;

    *root = NULL;
    r.c = c;
    r.input = yaml;
    r.len = len;
    if (!yaml_parser_initialize(&r.parser)) {
        ae_conf_pos pos = {0, 0};
        return ae_conf_err(c, AE_ERR_NOMEM, pos, "out of memory");
    }
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)yaml, len);
    if ((rv = expect(&r, YAML_STREAM_START_EVENT, &ev)) != 0)
        goto out;
    yaml_event_delete(&ev);
    if ((rv = next_event(&r, &ev)) != 0)
        goto out;
    if (ev.type == YAML_STREAM_END_EVENT) { /* nothing but comments and blanks */
        yaml_event_delete(&ev);
        goto out;
    }
    if (ev.type != YAML_DOCUMENT_START_EVENT) {
        ae_conf_pos pos = mark_pos(ev.start_mark);
        yaml_event_delete(&ev);
        rv = ae_conf_err(c, AE_ERR_PARSE, pos, "unexpected YAML structure");
        goto out;
    }
    yaml_event_delete(&ev);
    if ((rv = next_event(&r, &ev)) != 0)
        goto out;
    if ((rv = read_node(&r, &ev, 0, &n)) != 0)
        goto out;
    if ((rv = expect(&r, YAML_DOCUMENT_END_EVENT, &ev)) != 0)
        goto out;
    yaml_event_delete(&ev);
    if ((rv = next_event(&r, &ev)) != 0)
        goto out;
    if (ev.type != YAML_STREAM_END_EVENT) {
        ae_conf_pos pos = mark_pos(ev.start_mark);
        yaml_event_delete(&ev);
        rv = ae_conf_err(c, AE_ERR_PARSE, pos, "only one YAML document is allowed");
        goto out;
    }
    yaml_event_delete(&ev);
    if (ae_conf_node_is_null(n)) { /* a lone "---" */
        ae_conf_node_free(n);
        n = NULL;
    }
out:
    yaml_parser_delete(&r.parser);
    if (rv != 0) {
        ae_conf_node_free(n);
        return rv;
    }
    *root = n;
    return 0;
}
