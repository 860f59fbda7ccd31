/*
 * Config loader: node tree -> ae_conf, driven by the key table in conf_keys.c.
 *
 * Order of work: read the YAML into a node tree (conf_yaml.c), apply every default from the
 * table, overlay the values found in the file (one generic routine per key type), then run the
 * few checks that span several keys (validate()). The tree stays alive until the end so that
 * those checks can point at the exact line and column of the value at fault.
 */
#include "conf_int.h"
#include "conf/hashkey.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    conf_ctx c;
    char *dir; /* directory of the config file for relative paths, NULL for the cwd */
} loader;

static const ae_conf_pos no_pos = {0, 0};

static void *at(void *base, size_t off)
{
    return (char *)base + off;
}

static void store32(void *base, size_t off, uint32_t v)
{
    memcpy(at(base, off), &v, sizeof(v));
}

/* ---- durations and sizes ---- */

/* Parses digits followed by an optional unit suffix found in units[] (longest first), with
 * the multipliers in mults[]; the unit "" must be last. Fails on overflow of uint32. */
static int parse_scaled(const char *s, const char *const *units, const uint64_t *mults,
                        uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (s == NULL || *s < '0' || *s > '9')
        return AE_ERR_PARSE;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return AE_ERR_PARSE;
    }
    for (i = 0; units[i] != NULL; i++) {
        if (strcmp(s, units[i]) == 0) {
            v *= mults[i];
            if (v > UINT32_MAX)
                return AE_ERR_PARSE;
            *out = v;
            return 0;
        }
    }
    return AE_ERR_PARSE;
}

int ae_conf_parse_duration_ms(const char *s, uint32_t *out_ms)
{
    static const char *const units[] = {"ms", "s", "m", "h", "d", "", NULL};
    static const uint64_t mults[] = {1, 1000, 60000, 3600000, 86400000, 1000};
    uint64_t v;

    if (parse_scaled(s, units, mults, &v) != 0)
        return AE_ERR_PARSE;
    *out_ms = (uint32_t)v;
    return 0;
}

int ae_conf_parse_size(const char *s, uint32_t *out)
{
    static const char *const units[] = {"k", "K", "m", "M", "g", "G", "", NULL};
    static const uint64_t mults[] = {1 << 10, 1 << 10, 1 << 20, 1 << 20, 1 << 30, 1 << 30, 1};
    uint64_t v;

    if (parse_scaled(s, units, mults, &v) != 0)
        return AE_ERR_PARSE;
    *out = (uint32_t)v;
    return 0;
}

void ae_conf_fmt_duration(uint64_t ms, char *buf, size_t len)
{
    static const char *const units[] = {"d", "h", "m", "s"};
    static const uint64_t mults[] = {86400000, 3600000, 60000, 1000};
    size_t i;

    for (i = 0; i < AE_ARRAY_LEN(units); i++) {
        if (ms != 0 && ms % mults[i] == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(ms / mults[i]), units[i]);
            return;
        }
    }
    snprintf(buf, len, "%llums", (unsigned long long)ms);
}

void ae_conf_fmt_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"g", "m", "k"};
    static const uint64_t mults[] = {1 << 30, 1 << 20, 1 << 10};
    size_t i;

    for (i = 0; i < AE_ARRAY_LEN(units); i++) {
        if (bytes != 0 && bytes % mults[i] == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(bytes / mults[i]), units[i]);
            return;
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long)bytes);
}

/* ---- freeing (table-driven too) ---- */

static void free_object(const ae_key *tbl, void *base, int skip_staged)
{
    const ae_key *k;
    size_t i, n;

    for (k = tbl; k->name != NULL; k++) {
        if (skip_staged && (k->flags & AE_KF_STAGED))
            continue;
        switch (k->type) {
        case AE_KT_STR:
            free(*(char **)at(base, k->off));
            *(char **)at(base, k->off) = NULL;
            break;
        case AE_KT_STRLIST: {
            char **v = *(char ***)at(base, k->off);
            n = *(size_t *)at(base, k->count_off);
            for (i = 0; i < n; i++)
                free(v[i]);
            free(v);
            *(char ***)at(base, k->off) = NULL;
            *(size_t *)at(base, k->count_off) = 0;
            break;
        }
        case AE_KT_ADDRLIST:
            free(*(void **)at(base, k->off));
            *(void **)at(base, k->off) = NULL;
            *(size_t *)at(base, k->count_off) = 0;
            break;
        case AE_KT_SECTION:
            free_object(k->sub, base, skip_staged);
            break;
        case AE_KT_LIST:
        case AE_KT_MAP: {
            char *v = *(char **)at(base, k->off);
            n = *(size_t *)at(base, k->count_off);
            for (i = 0; i < n; i++) {
                free_object(k->sub, v + i * k->elem_size, 0);
                if (k->type == AE_KT_MAP)
                    free(*(char **)(v + i * k->elem_size + k->name_off));
            }
            free(v);
            *(char **)at(base, k->off) = NULL;
            *(size_t *)at(base, k->count_off) = 0;
            break;
        }
        default:
            break;
        }
    }
}

void ae_conf_free(ae_conf *conf)
{
    if (conf == NULL)
        return;
    /* Staged fields live beyond ae_conf; validation always moves them out before a snapshot is
     * handed out, so skipping them keeps this safe for any ae_conf. */
    free_object(ae_conf_keys, conf, 1);
    if (conf->admin.token != NULL) {
        ae_memzero(conf->admin.token, strlen(conf->admin.token));
        free(conf->admin.token);
    }
    free(conf->path);
    free(conf);
}

static void build_free(ae_conf_build *b)
{
    if (b == NULL)
        return;
    free(b->tls_cert);
    free(b->tls_key);
    b->tls_cert = b->tls_key = NULL;
    ae_conf_free(&b->pub);
}

/* ---- scalar conversion ---- */

static const char *enum_list(const ae_key_enum *e, char *buf, size_t len)
{
    size_t n = 0;

    buf[0] = '\0';
    for (; e->name != NULL && n < len; e++) {
        int w = snprintf(buf + n, len - n, "%s%s", n ? ", " : "", e->name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return buf;
}

/* Converts the text of a numeric-like key (uint, bool, duration, size, enum) to the 32-bit
 * value stored in the struct. pos is where the text came from, for the error. */
static int to_u32(loader *L, const ae_key *k, const char *s, ae_conf_pos pos, uint32_t *out)
{
    static const char *const no_units[] = {"", NULL};
    static const uint64_t unit_mults[] = {1};
    char a[32], b[32], list[256];
    uint64_t big;
    uint32_t v;
    const ae_key_enum *e;

    switch (k->type) {
    case AE_KT_UINT:
        if (parse_scaled(s, no_units, unit_mults, &big) != 0)
            return ae_conf_err(&L->c, AE_ERR_PARSE, pos, "invalid number '%s'", s);
        v = (uint32_t)big;
        if (v < k->min || v > k->max)
            return ae_conf_err(&L->c, AE_ERR_PARSE, pos, "value %s out of range %llu..%llu", s,
                               (unsigned long long)k->min, (unsigned long long)k->max);
        *out = v;
        return 0;
    case AE_KT_BOOL:
        if (strcmp(s, "on") == 0 || strcmp(s, "true") == 0) {
            *out = k->tval ? (uint32_t)k->tval : 1;
            return 0;
        }
        if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0) {
            *out = 0;
            return 0;
        }
        return ae_conf_err(&L->c, AE_ERR_PARSE, pos,
                           "invalid value '%s' (expected one of: on, off, true, false)", s);
    case AE_KT_DURATION:
        if (ae_conf_parse_duration_ms(s, &v) != 0)
            return ae_conf_err(&L->c, AE_ERR_PARSE, pos,
                               "invalid duration '%s' (expected e.g. 250ms, 2s, 5m, 12h, 1d)", s);
        if (v < k->min || v > k->max) {
            ae_conf_fmt_duration(k->min, a, sizeof(a));
            ae_conf_fmt_duration(k->max, b, sizeof(b));
            return ae_conf_err(&L->c, AE_ERR_PARSE, pos, "value %s out of range %s..%s", s, a, b);
        }
        *out = v / (k->scale ? k->scale : 1);
        return 0;
    case AE_KT_SIZE:
        if (ae_conf_parse_size(s, &v) != 0)
            return ae_conf_err(&L->c, AE_ERR_PARSE, pos,
                               "invalid size '%s' (expected e.g. 4096, 64k, 1m)", s);
        if (v < k->min || v > k->max) {
            ae_conf_fmt_size(k->min, a, sizeof(a));
            ae_conf_fmt_size(k->max, b, sizeof(b));
            return ae_conf_err(&L->c, AE_ERR_PARSE, pos, "value %s out of range %s..%s", s, a, b);
        }
        *out = v;
        return 0;
    case AE_KT_ENUM:
        for (e = k->enums; e->name != NULL; e++) {
            if (strcmp(s, e->name) == 0) {
                *out = (uint32_t)e->value;
                return 0;
            }
        }
        return ae_conf_err(&L->c, AE_ERR_PARSE, pos, "invalid value '%s' (expected one of: %s)", s,
                           enum_list(k->enums, list, sizeof(list)));
    default:
        return ae_conf_err(&L->c, AE_ERR_INVAL, pos, "internal error: bad key type");
    }
}

/* Validates a string value and returns a copy (a path resolved against the config's
 * directory when the key is a path). */
static int to_str(loader *L, const ae_key *k, const char *s, ae_conf_pos pos, char **out)
{
    size_t len = strlen(s);
    const char *msg;
    char *v;

    if (len < k->min || len > k->max) {
        if (len == 0)
            return ae_conf_err(&L->c, AE_ERR_PARSE, pos, "empty value");
        return ae_conf_err(&L->c, AE_ERR_PARSE, pos, "length %zu out of range %llu..%llu bytes",
                           len, (unsigned long long)k->min, (unsigned long long)k->max);
    }
    if (k->check != NULL && (msg = k->check(s)) != NULL)
        return ae_conf_err(&L->c, AE_ERR_PARSE, pos, "%s", msg);
    if ((k->flags & AE_KF_PATH) && L->dir != NULL && s[0] != '/') {
        size_t dl = strlen(L->dir);
        v = malloc(dl + 1 + len + 1);
        if (v != NULL) {
            memcpy(v, L->dir, dl);
            v[dl] = '/';
            memcpy(v + dl + 1, s, len + 1);
        }
    } else {
        v = strdup(s);
    }
    if (v == NULL)
        return ae_conf_err(&L->c, AE_ERR_NOMEM, pos, "out of memory");
    *out = v;
    return 0;
}

static int to_addr(loader *L, const ae_key *k, const char *s, ae_conf_pos pos, ae_addr *out)
{
    if (ae_addr_parse(s, out, (k->flags & AE_KF_PORT0) != 0) != 0)
        return ae_conf_err(&L->c, AE_ERR_PARSE, pos,
                           "invalid address '%s' (expected IPv4:port or [IPv6]:port)", s);
    return 0;
}

/* ---- defaults ---- */

static int set_strlist_default(loader *L, const ae_key *k, void *base)
{
    const char *p = k->def, *comma;
    char **v;
    size_t n = 1, i = 0;

    for (comma = p; (comma = strchr(comma, ',')) != NULL; comma++)
        n++;
    v = calloc(n, sizeof(*v));
    if (v == NULL)
        return ae_conf_err(&L->c, AE_ERR_NOMEM, no_pos, "out of memory");
    *(char ***)at(base, k->off) = v;
    for (i = 0; i < n; i++) {
        comma = strchr(p, ',');
        v[i] = comma ? strndup(p, (size_t)(comma - p)) : strdup(p);
        if (v[i] == NULL)
            return ae_conf_err(&L->c, AE_ERR_NOMEM, no_pos, "out of memory");
        *(size_t *)at(base, k->count_off) = i + 1;
        p = comma ? comma + 1 : p;
    }
    return 0;
}

/* Stores every default of tbl into base (recursing into sections). Defaults are written as
 * the file would write them and go through the same conversions, so a bad default in the
 * table fails loudly in every test. */
static int apply_defaults(loader *L, const ae_key *tbl, void *base)
{
    const ae_key *k;
    uint32_t v;
    int rv;

    for (k = tbl; k->name != NULL; k++) {
        if (k->type == AE_KT_SECTION) {
            if ((rv = apply_defaults(L, k->sub, base)) != 0)
                return rv;
            continue;
        }
        if (k->def == NULL)
            continue;
        switch (k->type) {
        case AE_KT_STR:
            rv = to_str(L, k, k->def, no_pos, (char **)at(base, k->off));
            break;
        case AE_KT_ADDR:
            rv = to_addr(L, k, k->def, no_pos, (ae_addr *)at(base, k->off));
            break;
        case AE_KT_STRLIST:
            rv = set_strlist_default(L, k, base);
            break;
        default:
            rv = to_u32(L, k, k->def, no_pos, &v);
            if (rv == 0)
                store32(base, k->off, v);
            break;
        }
        if (rv != 0)
            return rv;
    }
    return 0;
}

/* ---- values from the file ---- */

static int load_object(loader *L, const ae_key *tbl, void *base, const cnode *m);

static int expect_kind(loader *L, const cnode *n, cnode_kind kind)
{
    static const char *const what[] = {"a scalar", "a mapping", "a list"};

    if (n->kind == kind)
        return 0;
    return ae_conf_err(&L->c, AE_ERR_PARSE, n->pos, "expected %s", what[kind]);
}

static int load_strlist(loader *L, const ae_key *k, void *base, const cnode *n)
{
    char **v;
    size_t i, old;
    int rv;

    free_object((const ae_key[]){*k, {0}}, base, 0); /* drop the default */
    if (n->nkids == 0)
        return 0;
    if ((v = calloc(n->nkids, sizeof(*v))) == NULL)
        return ae_conf_err(&L->c, AE_ERR_NOMEM, n->pos, "out of memory");
    *(char ***)at(base, k->off) = v;
    for (i = 0; i < n->nkids; i++) {
        old = ae_conf_path_index(&L->c, i);
        if ((rv = expect_kind(L, n->kids[i], CN_SCALAR)) != 0 ||
            (rv = to_str(L, k, n->kids[i]->str, n->kids[i]->pos, &v[i])) != 0)
            return rv;
        *(size_t *)at(base, k->count_off) = i + 1;
        ae_conf_path_pop(&L->c, old);
    }
    return 0;
}

static int load_addrlist(loader *L, const ae_key *k, void *base, const cnode *n)
{
    ae_conf_server *v;
    size_t i, j, old;
    int rv;

    if (n->nkids < k->min)
        return ae_conf_err(&L->c, AE_ERR_PARSE, n->pos, "at least %llu item%s required",
                           (unsigned long long)k->min, k->min == 1 ? " is" : "s are");
    if (n->nkids > k->max)
        return ae_conf_err(&L->c, AE_ERR_PARSE, n->pos, "at most %llu items allowed",
                           (unsigned long long)k->max);
    if ((v = calloc(n->nkids, sizeof(*v))) == NULL)
        return ae_conf_err(&L->c, AE_ERR_NOMEM, n->pos, "out of memory");
    *(ae_conf_server **)at(base, k->off) = v;
    *(size_t *)at(base, k->count_off) = n->nkids;
    for (i = 0; i < n->nkids; i++) {
        const cnode *item = n->kids[i];

        old = ae_conf_path_index(&L->c, i);
        if ((rv = expect_kind(L, item, CN_SCALAR)) != 0 ||
            (rv = to_addr(L, k, item->str, item->pos, &v[i].addr)) != 0)
            return rv;
        v[i].pos = item->pos;
        for (j = 0; (k->flags & AE_KF_UNIQUE) && j < i; j++)
            if (ae_addr_equal(&v[i].addr, &v[j].addr))
                return ae_conf_err(&L->c, AE_ERR_PARSE, item->pos,
                                   "duplicate address %s (also at line %u)", v[i].addr.text,
                                   (unsigned)v[j].pos.line);
        ae_conf_path_pop(&L->c, old);
    }
    return 0;
}

/* A list (items are n->kids) or a map (pairs are n->kids) of objects. */
static int load_objects(loader *L, const ae_key *k, void *base, const cnode *n)
{
    int is_map = k->type == AE_KT_MAP;
    size_t count = is_map ? n->nkids / 2 : n->nkids, i, old;
    const cnode *item, *name;
    const char *msg = NULL;
    char *v, *elem;
    int rv;

    if (count == 0)
        return 0;
    if ((v = calloc(count, k->elem_size)) == NULL)
        return ae_conf_err(&L->c, AE_ERR_NOMEM, n->pos, "out of memory");
    *(char **)at(base, k->off) = v;
    for (i = 0; i < count; i++) {
        elem = v + i * k->elem_size;
        /* counted before filling so that an error part-way frees what was stored */
        *(size_t *)at(base, k->count_off) = i + 1;
        if (is_map) {
            name = n->kids[2 * i];
            item = n->kids[2 * i + 1];
            old = ae_conf_path_key(&L->c, name->str);
            if (name->str[0] == '\0' || (k->check && (msg = k->check(name->str)) != NULL))
                return ae_conf_err(&L->c, AE_ERR_PARSE, name->pos, "%s",
                                   name->str[0] ? msg : "empty name");
            if ((*(char **)(elem + k->name_off) = strdup(name->str)) == NULL)
                return ae_conf_err(&L->c, AE_ERR_NOMEM, name->pos, "out of memory");
        } else {
            name = item = n->kids[i];
            old = ae_conf_path_index(&L->c, i);
        }
        if (k->pos_off != SIZE_MAX)
            memcpy(elem + k->pos_off, is_map ? &name->pos : &item->pos, sizeof(ae_conf_pos));
        if ((rv = apply_defaults(L, k->sub, elem)) != 0)
            return rv;
        /* an empty element ("name:" with no value) only satisfies a table without required keys */
        if (!ae_conf_node_is_null(item) || !is_map) {
            if ((rv = load_object(L, k->sub, elem, item)) != 0)
                return rv;
        } else {
            cnode empty = {.kind = CN_MAP, .pos = item->pos};
            if ((rv = load_object(L, k->sub, elem, &empty)) != 0)
                return rv;
        }
        ae_conf_path_pop(&L->c, old);
    }
    return 0;
}

static int load_value(loader *L, const ae_key *k, void *base, const cnode *n)
{
    uint32_t v;
    int rv;

    if (ae_conf_node_is_null(n)) {
        /* "key:" with nothing: an empty section/list, or an error for a scalar */
        switch (k->type) {
        case AE_KT_SECTION:
        case AE_KT_LIST:
        case AE_KT_MAP:
            return 0;
        case AE_KT_STRLIST:
        case AE_KT_ADDRLIST: {
            cnode empty = {.kind = CN_SEQ, .pos = n->pos};
            return k->type == AE_KT_STRLIST ? load_strlist(L, k, base, &empty)
                                            : load_addrlist(L, k, base, &empty);
        }
        default:
            return ae_conf_err(&L->c, AE_ERR_PARSE, n->pos, "missing value");
        }
    }
    switch (k->type) {
    case AE_KT_SECTION:
        return load_object(L, k->sub, base, n);
    case AE_KT_LIST:
    case AE_KT_MAP:
        if ((rv = expect_kind(L, n, k->type == AE_KT_LIST ? CN_SEQ : CN_MAP)) != 0)
            return rv;
        return load_objects(L, k, base, n);
    case AE_KT_STRLIST:
        if ((rv = expect_kind(L, n, CN_SEQ)) != 0)
            return rv;
        return load_strlist(L, k, base, n);
    case AE_KT_ADDRLIST:
        if ((rv = expect_kind(L, n, CN_SEQ)) != 0)
            return rv;
        return load_addrlist(L, k, base, n);
    default:
        break;
    }
    if ((rv = expect_kind(L, n, CN_SCALAR)) != 0)
        return rv;
    if (k->flags & AE_KF_POS)
        memcpy(at(base, k->pos_off), &n->pos, sizeof(ae_conf_pos));
    switch (k->type) {
    case AE_KT_STR: {
        char *s;
        if ((rv = to_str(L, k, n->str, n->pos, &s)) != 0)
            return rv;
        free(*(char **)at(base, k->off));
        *(char **)at(base, k->off) = s;
        return 0;
    }
    case AE_KT_ADDR:
        return to_addr(L, k, n->str, n->pos, (ae_addr *)at(base, k->off));
    default:
        if ((rv = to_u32(L, k, n->str, n->pos, &v)) != 0)
            return rv;
        store32(base, k->off, v);
        return 0;
    }
}

static int load_object(loader *L, const ae_key *tbl, void *base, const cnode *m)
{
    const ae_key *k;
    size_t i, old;
    int rv;

    if ((rv = expect_kind(L, m, CN_MAP)) != 0)
        return rv;
    for (i = 0; i + 1 < m->nkids; i += 2) {
        const cnode *key = m->kids[i];

        for (k = tbl; k->name != NULL && strcmp(k->name, key->str) != 0; k++)
            ;
        old = ae_conf_path_key(&L->c, key->str);
        if (k->name == NULL)
            return ae_conf_err(&L->c, AE_ERR_PARSE, key->pos, "unknown key");
        if ((rv = load_value(L, k, base, m->kids[i + 1])) != 0)
            return rv;
        ae_conf_path_pop(&L->c, old);
    }
    for (k = tbl; k->name != NULL; k++)
        if ((k->flags & AE_KF_REQUIRED) && ae_conf_node_get(m, k->name) == NULL)
            return ae_conf_err(&L->c, AE_ERR_PARSE, m->pos, "missing required key '%s'", k->name);
    return 0;
}

/* ---- checks spanning several keys ---- */

/* Position of key in mapping m, else of m itself, else of fallback. */
static ae_conf_pos pos_of(const cnode *m, const char *key, const cnode *fallback)
{
    const cnode *n = ae_conf_node_get(m, key);

    if (n != NULL)
        return n->pos;
    if (m != NULL)
        return m->pos;
    return fallback ? fallback->pos : no_pos;
}

/* tls.cert/tls.key become certs[0]. */
static int check_tls(loader *L, ae_conf_build *b, const cnode *root)
{
    ae_conf *c = &b->pub;
    const cnode *tls = ae_conf_node_get(root, "tls");
    ae_conf_cert *certs;

    /* Name each entry for TLS error messages (tls/context.c prints "<where>.cert"). */
    for (size_t i = 0; i < c->tls.ncerts; i++)
        snprintf(c->tls.certs[i].where, sizeof(c->tls.certs[i].where), "tls.certs[%zu]", i);
    if ((b->tls_cert == NULL) != (b->tls_key == NULL))
        return ae_conf_errk(&L->c, AE_ERR_PARSE, tls->pos, "tls", "missing required key '%s'",
                            b->tls_cert ? "key" : "cert");
    if (b->tls_cert != NULL) {
        certs = realloc(c->tls.certs, (c->tls.ncerts + 1) * sizeof(*certs));
        if (certs == NULL)
            return ae_conf_errk(&L->c, AE_ERR_NOMEM, tls->pos, "tls", "out of memory");
        memmove(certs + 1, certs, c->tls.ncerts * sizeof(*certs));
        certs[0].cert = b->tls_cert;
        certs[0].key = b->tls_key;
        certs[0].cert_pos = b->tls_cert_pos;
        certs[0].key_pos = b->tls_key_pos;
        snprintf(certs[0].where, sizeof(certs[0].where), "tls");
        b->tls_cert = b->tls_key = NULL;
        c->tls.certs = certs;
        c->tls.ncerts++;
    }
    if (c->tls.ncerts == 0 && c->nlisteners > 0)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, tls ? tls->pos : pos_of(root, "listeners", NULL),
                            "tls",
                            "a certificate is required when listeners are configured "
                            "(set tls.cert and tls.key, or tls.certs)");
    return 0;
}

static int check_listeners(loader *L, ae_conf *c, const cnode *root)
{
    const cnode *list = ae_conf_node_get(root, "listeners");
    char key[96];
    size_t i, j;

    for (i = 0; i < c->nlisteners; i++) {
        ae_conf_listener *l = &c->listeners[i];
        const cnode *ln = list->kids[i];
        const ae_conf_upstream *u;

        for (j = 0; j < i; j++) {
            if (strcmp(c->listeners[j].name, l->name) == 0) {
                snprintf(key, sizeof(key), "listeners[%zu].name", i);
                return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(ln, "name", NULL), key,
                                    "duplicate listener name '%s'", l->name);
            }
        }
        for (j = 0; j < i; j++) {
            if (c->listeners[j].protocol == l->protocol &&
                ae_addr_equal(&c->listeners[j].addr, &l->addr)) {
                snprintf(key, sizeof(key), "listeners[%zu].address", i);
                return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(ln, "address", NULL), key,
                                    "duplicate listener address %s (also used by listener '%s')",
                                    l->addr.text, c->listeners[j].name);
            }
        }
        if ((u = ae_conf_find_upstream(c, l->upstream)) == NULL) {
            snprintf(key, sizeof(key), "listeners[%zu].upstream", i);
            return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(ln, "upstream", NULL), key,
                                "upstream '%s' is not defined", l->upstream);
        }
        l->upstream_index = (size_t)(u - c->upstreams);
        /* A TCP listener relays bytes: it never sees a header or a cookie. */
        if (l->protocol == AE_LPROTO_TCP && u->balance == AE_BAL_HASH &&
            (u->hash.kind != AE_HASH_CLIENT_IP || u->affinity_cookie != NULL)) {
            snprintf(key, sizeof(key), "listeners[%zu].upstream", i);
            return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(ln, "upstream", NULL), key,
                                "upstream '%s' has %s%s: a TCP listener relays bytes, sees no "
                                "header or cookie, and can only hash client_ip",
                                l->upstream,
                                u->affinity_cookie != NULL ? "affinity_cookie" : "hash_key ",
                                u->affinity_cookie != NULL ? "" : u->hash_key);
        }
    }
    return 0;
}

/* balance: hash: hash_key (conf/hashkey.h) and affinity_cookie. */
static int check_hash_key(loader *L, ae_conf_upstream *u, const cnode *m)
{
    char key[128], why[160];
    int rv;

    snprintf(key, sizeof(key), "upstreams.%s.hash_key", u->name);
    if (u->hash_key != NULL && u->balance != AE_BAL_HASH)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(m, "hash_key", NULL), key,
                            "needs balance: hash");
    rv = ae_hash_key_parse(u->hash_key, &u->hash, why, sizeof(why));
    if (rv != 0)
        return ae_conf_errk(&L->c, rv, pos_of(m, "hash_key", NULL), key, "%s", why);
    if (u->affinity_cookie == NULL)
        return 0;
    snprintf(key, sizeof(key), "upstreams.%s.affinity_cookie", u->name);
    if (u->balance != AE_BAL_HASH)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(m, "affinity_cookie", NULL), key,
                            "needs balance: hash");
    if (!ae_cookie_name_ok(u->affinity_cookie, strlen(u->affinity_cookie)))
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(m, "affinity_cookie", NULL), key,
                            "'%s': a cookie name is 1..%d token characters", u->affinity_cookie,
                            AE_HASH_NAME_MAX);
    if (u->hash.kind == AE_HASH_COOKIE && strcmp(u->hash.name, u->affinity_cookie) == 0)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(m, "affinity_cookie", NULL), key,
                            "'%s' is also the hash_key cookie: the proxy's sealed cookie cannot "
                            "be the client's key",
                            u->affinity_cookie);
    return 0;
}

static int check_upstreams(loader *L, ae_conf *c, const cnode *root)
{
    const cnode *map = ae_conf_node_get(root, "upstreams");
    char key[128], a[32], b[32];
    size_t i;

    for (i = 0; i < c->nupstreams; i++) {
        ae_conf_upstream *u = &c->upstreams[i];
        const cnode *h = ae_conf_node_get(map->kids[2 * i + 1], "health");
        int rv = check_hash_key(L, u, map->kids[2 * i + 1]);

        if (rv != 0)
            return rv;

        if (h == NULL)
            continue; /* no checks: kind stays AE_HC_NONE */
        snprintf(key, sizeof(key), "upstreams.%s.health", u->name);
        if (u->health.kind == AE_HC_TCP && u->health.http_path != NULL) {
            snprintf(key, sizeof(key), "upstreams.%s.health.http", u->name);
            return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(h, "http", NULL), key,
                                "'tcp' and 'http' are mutually exclusive");
        }
        if (u->health.http_path != NULL)
            u->health.kind = AE_HC_HTTP;
        if (u->health.kind == AE_HC_NONE)
            return ae_conf_errk(&L->c, AE_ERR_PARSE, h->pos, key,
                                "health checks need 'tcp: on' or 'http: PATH' "
                                "(remove the block to disable them)");
        if (u->health.timeout_ms > u->health.interval_ms) {
            ae_conf_fmt_duration(u->health.timeout_ms, a, sizeof(a));
            ae_conf_fmt_duration(u->health.interval_ms, b, sizeof(b));
            snprintf(key, sizeof(key), "upstreams.%s.health.timeout", u->name);
            return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(h, "timeout", NULL), key,
                                "timeout %s must not exceed interval %s", a, b);
        }
    }
    return 0;
}

/* anycast: what each mode needs, the prefix as an address and length. */
static int check_anycast(loader *L, ae_conf *c, const cnode *root)
{
    const cnode *sec = ae_conf_node_get(root, "anycast");
    ae_conf_pos pos = sec != NULL ? sec->pos : no_pos;

    if (c->anycast.prefix != NULL) {
        char addr[64];
        unsigned char buf[16];
        const char *slash = strchr(c->anycast.prefix, '/');
        size_t alen = (size_t)(slash - c->anycast.prefix);
        char *end;
        long len;
        int v6 = strchr(c->anycast.prefix, ':') != NULL;

        if (alen >= sizeof(addr))
            alen = sizeof(addr) - 1;
        memcpy(addr, c->anycast.prefix, alen);
        addr[alen] = '\0';
        errno = 0;
        len = strtol(slash + 1, &end, 10);
        if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, buf) != 1 || *end != '\0' || len < 0 ||
            len > (v6 ? 128 : 32) || !(slash[1] >= '0' && slash[1] <= '9'))
            return ae_conf_errk(&L->c, AE_ERR_PARSE, c->anycast.prefix_pos, "anycast.prefix",
                                "'%s' is not an IPv4 or IPv6 prefix (ADDRESS/LENGTH)",
                                c->anycast.prefix);
    }
    if (c->anycast.mode != AE_ANYCAST_OFF && c->anycast.prefix == NULL)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos, "anycast",
                            "missing required key 'prefix' (mode is not off)");
    if (c->anycast.mode == AE_ANYCAST_COMMAND &&
        (c->anycast.announce == NULL || c->anycast.withdraw == NULL))
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos, "anycast",
                            "missing required key '%s' (mode: command)",
                            c->anycast.announce == NULL ? "announce" : "withdraw");
    if (c->anycast.require_redis && c->state.redis == NULL)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(sec, "require_redis", root),
                            "anycast.require_redis", "needs state.redis");
    return 0;
}

static int check_tcp_handoff(loader *L, ae_conf *c, const cnode *root)
{
    const cnode *sec = ae_conf_node_get(root, "tcp_handoff");
    ae_conf_pos pos = sec != NULL ? sec->pos : no_pos;
    if (!c->tcp_handoff.enabled)
        return 0;
    if (c->site.forward.len == 0)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos, "tcp_handoff",
                            "needs site.forward (the hand-off endpoint is its port + 1)");
    if (((const struct sockaddr_in *)&c->site.forward.sa)->sin_port == htons(65535))
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos, "tcp_handoff",
                            "site.forward port 65535 leaves no port for the hand-off endpoint");
    if (c->tcp_handoff.ninterfaces == 0)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos, "tcp_handoff",
                            "missing required key 'interfaces' (enabled is on)");
    return 0;
}

static int check_quic(loader *L, ae_conf *c, const cnode *root)
{
    const cnode *sec = ae_conf_node_get(root, "quic");
    if (c->quic.max_udp_payload != 0 && c->quic.max_udp_payload < 1200)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos_of(sec, "max_udp_payload", root),
                            "quic.max_udp_payload",
                            "must be 0 (auto) or 1200..2048 (RFC 9000 §18.2)");
    if (c->quic.early_data_shared == AE_EARLY_SHARED_OFF)
        return 0;
    ae_conf_pos pos = pos_of(sec, "early_data_shared", root);
    if (!c->quic.early_data)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos, "quic.early_data_shared",
                            "needs quic.early_data: on");
    if (c->state.redis == NULL)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, pos, "quic.early_data_shared",
                            "needs state.redis (the shared record lives there)");
    return 0;
}

/* state.tls: presence and position for the state module's checks (state/sync.c loads the files
 * and checks the URL scheme); cert and key come together. */
static int check_state_tls(loader *L, ae_conf *c, const cnode *root)
{
    const cnode *sec = ae_conf_node_get(ae_conf_node_get(root, "state"), "tls");
    if (sec == NULL)
        return 0;
    c->state.tls.set = 1;
    c->state.tls.pos = sec->pos;
    if ((c->state.tls.cert == NULL) != (c->state.tls.key == NULL))
        return ae_conf_errk(&L->c, AE_ERR_PARSE, sec->pos, "state.tls",
                            "cert and key go together (a client certificate needs its key)");
    if (c->state.redis == NULL)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, sec->pos, "state.tls", "needs state.redis");
    return 0;
}

/* state.sentinels: with master_name, on a TCP state.redis; sentinel_user needs its password. */
static int check_state_sentinel(loader *L, ae_conf *c, const cnode *root)
{
    const cnode *st = ae_conf_node_get(root, "state");
    const cnode *sn = ae_conf_node_get(st, "sentinels");
    const cnode *mn = ae_conf_node_get(st, "master_name");
    if (sn == NULL && mn == NULL && ae_conf_node_get(st, "sentinel_password") == NULL &&
        ae_conf_node_get(st, "sentinel_user") == NULL)
        return 0;
    const cnode *at = sn ? sn : mn ? mn : st;
    if (sn == NULL || c->state.nsentinels == 0)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, at->pos, "state.sentinels",
                            "master_name and sentinel_* need a list of sentinels");
    if (mn == NULL)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, sn->pos, "state.master_name",
                            "state.sentinels needs master_name");
    if (c->state.redis == NULL || strncmp(c->state.redis, "unix:", 5) == 0)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, sn->pos, "state.sentinels",
                            "needs a redis:// or rediss:// state.redis (for its password, db "
                            "and TLS)");
    if (c->state.sentinel_user != NULL && c->state.sentinel_password == NULL)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, sn->pos, "state.sentinel_user",
                            "needs sentinel_password");
    return 0;
}

/* admin.token_file: read the token now, so a bad file fails the load (and a reload). */
static int check_admin(loader *L, ae_conf *c)
{
    char buf[1100];
    struct stat st;
    size_t n;
    FILE *f;

    if (c->admin.token_file == NULL)
        return 0;
    f = fopen(c->admin.token_file, "re");
    if (f == NULL)
        return ae_conf_errk(&L->c, AE_ERR_PARSE, c->admin.token_pos, "admin.token_file",
                            "cannot read %s: %s", c->admin.token_file, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || (st.st_mode & 077) != 0) {
        fclose(f);
        return ae_conf_errk(&L->c, AE_ERR_PARSE, c->admin.token_pos, "admin.token_file",
                            "%s must not be accessible by group or others (chmod 600)",
                            c->admin.token_file);
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
            n = 0; /* not printable: reported below */
    if (n < 16 || n > 1024) {
        ae_memzero(buf, sizeof(buf));
        return ae_conf_errk(&L->c, AE_ERR_PARSE, c->admin.token_pos, "admin.token_file",
                            "%s must hold one token of 16..1024 printable characters (no spaces)",
                            c->admin.token_file);
    }
    c->admin.token = strdup(buf);
    ae_memzero(buf, sizeof(buf));
    if (c->admin.token == NULL)
        return ae_conf_errk(&L->c, AE_ERR_NOMEM, c->admin.token_pos, "admin.token_file",
                            "out of memory");
    return 0;
}

static int validate(loader *L, ae_conf_build *b, const cnode *root)
{
    ae_conf *c = &b->pub;
    int rv;

    if ((rv = check_tls(L, b, root)) != 0 || (rv = check_upstreams(L, c, root)) != 0 ||
        (rv = check_listeners(L, c, root)) != 0 || (rv = check_anycast(L, c, root)) != 0 ||
        (rv = check_tcp_handoff(L, c, root)) != 0 || (rv = check_quic(L, c, root)) != 0 ||
        (rv = check_state_tls(L, c, root)) != 0 || (rv = check_state_sentinel(L, c, root)) != 0 ||
        (rv = check_admin(L, c)) != 0)
        return rv;
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n < 1 ? 1 : n > 256 ? 256 : (uint32_t)n;
    }
    /* sin_port and sin6_port share their offset, by design of the socket API */
    c->admin.enabled = ((const struct sockaddr_in *)&c->admin.addr.sa)->sin_port != 0;
    return 0;
}

/* ---- entry points ---- */

const ae_conf_upstream *ae_conf_find_upstream(const ae_conf *conf, const char *name)
{
    size_t i;

    for (i = 0; conf != NULL && name != NULL && i < conf->nupstreams; i++)
        if (strcmp(conf->upstreams[i].name, name) == 0)
            return &conf->upstreams[i];
    return NULL;
}

int ae_conf_load_string(const char *name, const char *yaml, size_t len, ae_conf **out, char *err,
                        size_t errlen)
{
    loader L;
    ae_conf_build *b = NULL;
    cnode *root = NULL;
    const char *slash;
    ae_conf_pos first = {1, 1};
    int rv;

    memset(&L, 0, sizeof(L));
    L.c.name = name ? name : "<config>";
    L.c.err = err;
    L.c.errlen = errlen;
    if (errlen > 0)
        err[0] = '\0';
    *out = NULL;
    if (len > AE_CONF_MAX_SIZE)
        return ae_conf_err(&L.c, AE_ERR_PARSE, first, "file too large (more than %d bytes)",
                           AE_CONF_MAX_SIZE);
    slash = strrchr(L.c.name, '/');
    if (slash != NULL) {
        /* "/x.yaml" lives in "/", whose prefix for joining is the empty string */
        L.dir = strndup(L.c.name, (size_t)(slash - L.c.name));
        if (L.dir == NULL)
            return ae_conf_err(&L.c, AE_ERR_NOMEM, first, "out of memory");
    }
    if ((rv = ae_conf_yaml_read(&L.c, yaml, len, &root)) != 0)
        goto fail;
    if (root == NULL) {
        rv = ae_conf_err(&L.c, AE_ERR_PARSE, first, "empty configuration (no keys)");
        goto fail;
    }
    if ((b = calloc(1, sizeof(*b))) == NULL) {
        rv = ae_conf_err(&L.c, AE_ERR_NOMEM, first, "out of memory");
        goto fail;
    }
    if ((b->pub.path = strdup(L.c.name)) == NULL) {
        rv = ae_conf_err(&L.c, AE_ERR_NOMEM, first, "out of memory");
        goto fail;
    }
    if ((rv = apply_defaults(&L, ae_conf_keys, b)) != 0 ||
        (rv = load_object(&L, ae_conf_keys, b, root)) != 0 || (rv = validate(&L, b, root)) != 0)
        goto fail;
    ae_conf_node_free(root);
    free(L.dir);
    *out = &b->pub;
    return 0;

fail:
    build_free(b);
    ae_conf_node_free(root);
    free(L.dir);
    return rv;
}

int ae_conf_load(const char *path, ae_conf **out, char *err, size_t errlen)
{
    char *buf;
    size_t n = 0;
    ssize_t r;
    int fd, rv, e;

    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        e = errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        errno = e;
        return AE_ERR_IO;
    }
    /* one byte more than allowed, to tell "exactly the limit" from "too large" */
    if ((buf = malloc(AE_CONF_MAX_SIZE + 1)) == NULL) {
        close(fd);
        snprintf(err, errlen, "%s: out of memory", path);
        return AE_ERR_NOMEM;
    }
    while (n < AE_CONF_MAX_SIZE + 1) {
        r = read(fd, buf + n, AE_CONF_MAX_SIZE + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            e = errno;
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
            close(fd);
            free(buf);
            errno = e;
            return AE_ERR_IO;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    rv = ae_conf_load_string(path, buf, n, out, err, errlen);
    free(buf);
    return rv;
}
