/*
 * docs/config.md, generated from the key table so that the reference cannot drift from the
 * parser. tests/unit/test_conf.c fails when the committed file differs from this output.
 */
#include "conf_int.h"

#include <string.h>

const char ae_conf_doc_example[] =
    "site:\n"
    "  id: 1\n"
    "  name: lon1\n"
    "workers: 4\n"
    "tls:\n"
    "  cert: certs/edge.pem          # relative to this file's directory\n"
    "  key: certs/edge.key\n"
    "  certs:\n"
    "    - { cert: certs/api.pem, key: certs/api.key }\n"
    "  ciphers: \"ECDHE+AESGCM:ECDHE+CHACHA20\"\n"
    "  ciphersuites: \"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256\"\n"
    "  alpn: [h2, http/1.1]\n"
    "  ticket_rotation: 12h\n"
    "  min_version: \"1.2\"\n"
    "listeners:\n"
    "  - name: api-tcp\n"
    "    protocol: tcp\n"
    "    address: \"192.0.2.10:443\"\n"
    "    upstream: api\n"
    "    proxy_protocol: v2\n"
    "    backlog: 4096\n"
    "  - name: api-quic\n"
    "    protocol: quic\n"
    "    address: \"192.0.2.10:443\"\n"
    "    upstream: api\n"
    "  - name: web-v6\n"
    "    address: \"[2001:db8::10]:443\"\n"
    "    upstream: web\n"
    "upstreams:\n"
    "  api:\n"
    "    balance: least_conn\n"
    "    servers: [\"10.0.9.2:8080\", \"10.0.9.3:8080\"]\n"
    "    connect_timeout: 2s\n"
    "    health: { http: /healthz, interval: 2s, timeout: 1s, rise: 2, fall: 3 }\n"
    "  web:\n"
    "    servers: [\"[2001:db8::20]:80\"]\n"
    "    health: { tcp: on, interval: 5s }\n"
    "anycast:\n"
    "  mode: command\n"
    "  prefix: 192.0.2.10/32\n"
    "  announce: \"birdc -s /run/bird/bird.ctl enable anycast4\"\n"
    "  withdraw: \"birdc -s /run/bird/bird.ctl disable anycast4\"\n"
    "  rise: 3\n"
    "  fall: 3\n"
    "admin:\n"
    "  address: \"127.0.0.1:9901\"\n"
    "log:\n"
    "  level: info\n"
    "  format: json\n"
    "  access: on\n"
    "timeouts:\n"
    "  client_idle: 60s\n"
    "  upstream_idle: 60s\n"
    "  handshake: 10s\n"
    "  drain: 30s\n"
    "tune:\n"
    "  buffer_size: 64k\n"
    "  max_connections: 100000\n";

static const char *type_name(const ae_key *k)
{
    switch (k->type) {
    case AE_KT_UINT:
        return "integer";
    case AE_KT_BOOL:
        return "bool";
    case AE_KT_STR:
        return (k->flags & AE_KF_PATH) ? "path" : "string";
    case AE_KT_DURATION:
        return "duration";
    case AE_KT_SIZE:
        return "size";
    case AE_KT_ENUM:
        return "enum";
    case AE_KT_ADDR:
        return "address";
    case AE_KT_STRLIST:
        return "list of strings";
    case AE_KT_ADDRLIST:
        return "list of addresses";
    case AE_KT_SECTION:
        return "mapping";
    case AE_KT_LIST:
        return "list of mappings";
    case AE_KT_MAP:
        return "map of name to mapping";
    }
    return "?";
}

static void write_default(FILE *f, const ae_key *k)
{
    const char *p;

    if (k->def == NULL) {
        fputs((k->flags & AE_KF_REQUIRED) ? "**required**" : "", f);
        return;
    }
    if (k->type != AE_KT_STRLIST) {
        fprintf(f, "`%s`", k->def);
        return;
    }
    fputs("`[", f);
    for (p = k->def;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        fprintf(f, "%s\"%.*s\"", p == k->def ? "" : ", ", (int)n, p);
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    fputs("]`", f);
}

static void write_range(FILE *f, const ae_key *k)
{
    char a[32], b[32];
    const ae_key_enum *e;

    switch (k->type) {
    case AE_KT_UINT:
        fprintf(f, "%llu..%llu", (unsigned long long)k->min, (unsigned long long)k->max);
        break;
    case AE_KT_DURATION:
        ae_conf_fmt_duration(k->min, a, sizeof(a));
        ae_conf_fmt_duration(k->max, b, sizeof(b));
        fprintf(f, "%s..%s", a, b);
        break;
    case AE_KT_SIZE:
        ae_conf_fmt_size(k->min, a, sizeof(a));
        ae_conf_fmt_size(k->max, b, sizeof(b));
        fprintf(f, "%s..%s", a, b);
        break;
    case AE_KT_ENUM:
        for (e = k->enums; e->name != NULL; e++)
            fprintf(f, "%s`%s`", e == k->enums ? "" : ", ", e->name);
        break;
    case AE_KT_BOOL:
        fputs("`on`, `off`", f);
        break;
    case AE_KT_STR:
    case AE_KT_STRLIST:
        if (k->max >= 4095) /* the generic limit is noise in the table */
            break;
        fprintf(f, "%llu..%llu bytes", (unsigned long long)k->min, (unsigned long long)k->max);
        break;
    case AE_KT_ADDR:
        fputs((k->flags & AE_KF_PORT0) ? "port 0..65535" : "port 1..65535", f);
        break;
    case AE_KT_ADDRLIST:
        fprintf(f, "%llu..%llu items", (unsigned long long)k->min, (unsigned long long)k->max);
        break;
    default:
        break;
    }
}

/* One Markdown table for the keys of tbl (named prefix.key), then one section for each nested
 * table, depth first, in table order. */
static void write_table(FILE *f, const char *prefix, const char *help, const ae_key *tbl)
{
    const ae_key *k;
    char sub[128];

    if (prefix[0] != '\0')
        fprintf(f, "## `%s`\n\n%s\n\n", prefix, help);
    else
        fprintf(f, "## Top level\n\n%s\n\n", help);
    fputs("| Key | Type | Default | Range / values | Description |\n", f);
    fputs("|-----|------|---------|----------------|-------------|\n", f);
    for (k = tbl; k->name != NULL; k++) {
        fprintf(f, "| `%s%s%s%s` | %s | ", prefix, prefix[0] ? "." : "", k->name,
                k->type == AE_KT_LIST  ? "[]"
                : k->type == AE_KT_MAP ? ".<name>"
                                       : "",
                type_name(k));
        write_default(f, k);
        fputs(" | ", f);
        write_range(f, k);
        fprintf(f, " | %s |\n", k->help);
    }
    fputs("\n", f);
    for (k = tbl; k->name != NULL; k++) {
        if (k->sub == NULL)
            continue;
        snprintf(sub, sizeof(sub), "%s%s%s%s", prefix, prefix[0] ? "." : "", k->name,
                 k->type == AE_KT_LIST  ? "[]"
                 : k->type == AE_KT_MAP ? ".<name>"
                                        : "");
        write_table(f, sub, k->help, k->sub);
    }
}

void ae_conf_write_doc(FILE *f)
{
    fputs("# anyedge configuration reference\n"
          "\n"
          "<!-- Generated by `anyedge --config-doc` from the key table in conf/conf_keys.c.\n"
          "     Do not edit: change the table and regenerate. -->\n"
          "\n"
          "anyedge reads one YAML file (`anyedge -c FILE`; `anyedge -t -c FILE` only checks it).\n"
          "Every key is optional unless marked **required**; unknown keys are errors, so typos\n"
          "never go unnoticed. Errors are reported on one line as `FILE:LINE:COLUMN: KEY: "
          "message`,\n"
          "where KEY is the full path of the value, e.g. `listeners[1].address` or\n"
          "`upstreams.api.health.rise`.\n"
          "\n"
          "Value syntax:\n"
          "\n"
          "- **duration**: a whole number with a unit, `250ms`, `2s`, `5m`, `12h`, `1d`; a bare\n"
          "  number is seconds.\n"
          "- **size**: bytes, or a whole number with a binary unit: `4096`, `64k`, `1m`, `1g`.\n"
          "- **bool**: `on`, `off`, `true` or `false`.\n"
          "- **address**: numeric only, `IPv4:port` or `[IPv6]:port` (no host names, so loading\n"
          "  never waits for DNS).\n"
          "- **path**: an absolute path, or a path relative to the directory that holds the\n"
          "  config file (not to the current directory).\n"
          "- **enum**: exactly one of the listed words.\n"
          "\n"
          "YAML anchors and aliases (`&a`, `*a`) and multiple documents are not supported.\n"
          "\n",
          f);
    write_table(f, "", "Keys of the top-level mapping.", ae_conf_keys);
    fputs("## Full example\n\n```yaml\n", f);
    fputs(ae_conf_doc_example, f);
    fputs("```\n", f);
}
