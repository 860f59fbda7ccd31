/*
 * Internal to conf/: the key table, the YAML node tree and the helpers shared by the loader
 * (conf.c), the YAML reader (conf_yaml.c), the table (conf_keys.c) and the doc writer
 * (conf_doc.c).
 */
#ifndef AE_CONF_INT_H
#define AE_CONF_INT_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* Largest config file / string accepted. */
#define AE_CONF_MAX_SIZE (1024 * 1024)
/* Deepest nesting of mappings and lists accepted (ours is 4 deep; this stops stack abuse). */
#define AE_CONF_MAX_DEPTH 32

/* ---- YAML node tree (conf_yaml.c) ---- */

typedef enum { CN_SCALAR, CN_MAP, CN_SEQ } cnode_kind;

typedef struct cnode {
    cnode_kind kind;
    ae_conf_pos pos; /* 1-based start of the node */
    char *str;       /* CN_SCALAR: NUL-terminated value */
    int plain;       /* CN_SCALAR: unquoted (so "", "~" and "null" mean no value) */
    /* CN_MAP: kids[2i] is the i-th key (a scalar), kids[2i+1] its value.
     * CN_SEQ: kids[i] is the i-th item. */
    struct cnode **kids;
    size_t nkids;
} cnode;

/* Error context shared by the reader and the loader. */
typedef struct {
    const char *name; /* file name for messages */
    char *err;
    size_t errlen;
    char path[512]; /* key path of the node being read, e.g. "listeners[1].address" */
    size_t plen;
} conf_ctx;

/* Writes "NAME:LINE:COL: KEY: message" (KEY is ctx->path, or "-" when empty). Returns rv. */
int ae_conf_err(conf_ctx *c, int rv, ae_conf_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same with an explicit key. */
int ae_conf_errk(conf_ctx *c, int rv, ae_conf_pos pos, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Path helpers: push returns the previous length, to hand back to pop. */
size_t ae_conf_path_key(conf_ctx *c, const char *key);
size_t ae_conf_path_index(conf_ctx *c, size_t i);
void ae_conf_path_pop(conf_ctx *c, size_t old);

/* Reads a YAML document into a node tree (*root; NULL for an empty document). Rejects
 * anchors, aliases and multiple documents. Returns 0, AE_ERR_PARSE or AE_ERR_NOMEM. */
int ae_conf_yaml_read(conf_ctx *c, const char *yaml, size_t len, cnode **root);
void ae_conf_node_free(cnode *n);
/* The value stored under key in mapping m, or NULL (also when m is NULL or not a mapping). */
const cnode *ae_conf_node_get(const cnode *m, const char *key);
/* 1 when n is a plain "", "~" or "null" scalar. */
int ae_conf_node_is_null(const cnode *n);

/* ---- key table (conf_keys.c) ---- */

typedef enum {
    AE_KT_UINT,     /* uint32 field, bounds min..max */
    AE_KT_BOOL,     /* int field: on/off/true/false; `on` stores tval (1 when 0) */
    AE_KT_STR,      /* char * field, length min..max bytes */
    AE_KT_DURATION, /* uint32 field in ms (or ms/scale), bounds in ms */
    AE_KT_SIZE,     /* uint32 field in bytes, bounds in bytes */
    AE_KT_ENUM,     /* 4-byte enum field, values from enums[] */
    AE_KT_ADDR,     /* ae_addr field */
    AE_KT_STRLIST,  /* char ** at off, size_t count at count_off; each string min..max bytes */
    AE_KT_ADDRLIST, /* ae_conf_server * at off, count at count_off; min items, no duplicates */
    AE_KT_SECTION,  /* nested mapping of sub keys, stored in the same object (absolute offsets) */
    AE_KT_LIST,     /* list of mappings: elem_size objects at off, count at count_off */
    AE_KT_MAP,      /* mapping name -> object: like LIST, the name stored at name_off */
} ae_key_type;

enum {
    AE_KF_REQUIRED = 1, /* must be present */
    AE_KF_PATH = 2,     /* string is a file path, resolved against the config's directory */
    AE_KF_PORT0 = 4,    /* address may have port 0 */
    AE_KF_POS = 8,      /* store the value's position (ae_conf_pos) at pos_off */
    AE_KF_UNIQUE = 16,  /* list items must be distinct */
    AE_KF_STAGED = 32,  /* stored in ae_conf_build outside pub; moved into pub by validation */
};

typedef struct {
    const char *name;
    int value;
} ae_key_enum;

typedef struct ae_key {
    const char *name; /* local name; the table ends with a NULL name */
    ae_key_type type;
    unsigned flags;
    size_t off;       /* field offset from the object base */
    size_t count_off; /* lists and maps: offset of the size_t count */
    size_t pos_off;   /* AE_KF_POS scalars; lists/maps: offset of the element's pos */
    size_t name_off;  /* maps: offset of the element's char *name */
    size_t elem_size; /* lists and maps */
    const char *def;  /* default as written in the file (lists: comma-separated); NULL none */
    uint64_t min, max;
    uint32_t scale;                      /* durations: stored value = ms / scale (0 means 1) */
    int tval;                            /* booleans: value stored for `on` (0 means 1) */
    const ae_key_enum *enums;            /* NULL-name terminated */
    const struct ae_key *sub;            /* sections, lists, maps */
    const char *(*check)(const char *s); /* strings: extra check, returns a message or NULL */
    const char *help;
} ae_key;

/* The build-time config: the public snapshot plus values that are only staged during loading.
 * pub must stay first: the snapshot handed out is &build->pub. */
typedef struct {
    ae_conf pub;
    char *tls_cert, *tls_key;
    ae_conf_pos tls_cert_pos, tls_key_pos;
} ae_conf_build;

/* Root table (top-level keys of the file). */
extern const ae_key ae_conf_keys[];
/* The full example printed in docs/config.md; tests load it. */
extern const char ae_conf_doc_example[];

/* Formats a duration in ms / a size in bytes with the largest exact unit ("90s", "64k"). */
void ae_conf_fmt_duration(uint64_t ms, char *buf, size_t len);
void ae_conf_fmt_size(uint64_t bytes, char *buf, size_t len);

#endif
