/*
 * Unit tests of conf/: the YAML loader, every error it reports (exact text), the value
 * parsers, and that docs/config.md matches the key table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/conf.h"
#include "conf/conf_int.h"
#include "conf/hashkey.h"

static ae_conf *load_ok_named(const char *name, const char *yaml)
{
    ae_conf *c = NULL;
    char err[512];
    int rv = ae_conf_load_string(name, yaml, strlen(yaml), &c, err, sizeof(err));

    if (rv != 0)
        fail_msg("unexpected error %d: %s", rv, err);
    assert_non_null(c);
    return c;
}

static ae_conf *load_ok(const char *yaml)
{
    return load_ok_named("t.yaml", yaml);
}

static void expect_err(const char *yaml, const char *want)
{
    ae_conf *c = (ae_conf *)0x1;
    char err[512];
    int rv = ae_conf_load_string("t.yaml", yaml, strlen(yaml), &c, err, sizeof(err));

    assert_int_equal(rv, AE_ERR_PARSE);
    assert_null(c);
    assert_string_equal(err, want);
}

/* A valid base that error tests append one faulty line or block to. */
#define BASE                                                                                       \
    "tls: {cert: a.pem, key: a.key}\n"                                                             \
    "upstreams:\n"                                                                                 \
    "  u: {servers: [\"127.0.0.1:80\"]}\n"

/* ---- valid configs ---- */

static const char full_yaml[] =
    "site:\n"
    "  id: 42\n"
    "  name: lon1\n"
    "workers: 3\n"
    "tls:\n"
    "  cert: certs/edge.pem\n"
    "  key: /abs/edge.key\n"
    "  certs:\n"
    "    - cert: certs/api.pem\n"
    "      key: certs/api.key\n"
    "  ciphers: \"ECDHE+AESGCM\"\n"
    "  ciphersuites: TLS_AES_128_GCM_SHA256\n"
    "  alpn: [h2, http/1.1]\n"
    "  ticket_rotation: 6h\n"
    "  min_version: \"1.3\"\n"
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
    "    proxy_protocol: v1\n"
    "  - { name: web, address: \"[2001:db8::1]:8443\", upstream: web }\n"
    "upstreams:\n"
    "  web:\n"
    "    servers: [\"[::1]:80\"]\n"
    "    health: { tcp: on }\n"
    "  api:\n"
    "    balance: least_conn\n"
    "    servers:\n"
    "      - \"10.0.9.2:8080\"\n"
    "      - \"10.0.9.3:8080\"\n"
    "    connect_timeout: 250ms\n"
    "    health:\n"
    "      http: /healthz\n"
    "      interval: 5s\n"
    "      timeout: 5s\n"
    "      rise: 4\n"
    "      fall: 7\n"
    "admin:\n"
    "  address: \"[::1]:9000\"\n"
    "log:\n"
    "  level: debug\n"
    "  format: json\n"
    "  access: off\n"
    "timeouts:\n"
    "  client_idle: 2m\n"
    "  upstream_idle: 90\n"
    "  handshake: 1500ms\n"
    "  drain: 1d\n"
    "tune:\n"
    "  buffer_size: 1m\n"
    "  max_connections: 5000\n";

static void test_full(void **state)
{
    ae_conf *c = load_ok_named("/etc/anyedge/edge.yaml", full_yaml);
    const ae_conf_upstream *u;

    (void)state;
    assert_string_equal(c->path, "/etc/anyedge/edge.yaml");
    assert_int_equal(c->site.id, 42);
    assert_string_equal(c->site.name, "lon1");
    assert_int_equal(c->workers, 3);

    assert_int_equal(c->tls.ncerts, 2);
    assert_string_equal(c->tls.certs[0].cert, "/etc/anyedge/certs/edge.pem");
    assert_string_equal(c->tls.certs[0].key, "/abs/edge.key");
    assert_int_equal(c->tls.certs[0].cert_pos.line, 6);
    assert_int_equal(c->tls.certs[0].cert_pos.col, 9);
    assert_int_equal(c->tls.certs[0].key_pos.line, 7);
    assert_string_equal(c->tls.certs[1].cert, "/etc/anyedge/certs/api.pem");
    assert_string_equal(c->tls.certs[1].key, "/etc/anyedge/certs/api.key");
    assert_int_equal(c->tls.certs[1].cert_pos.line, 9);
    assert_int_equal(c->tls.certs[1].cert_pos.col, 13);
    assert_int_equal(c->tls.certs[1].key_pos.line, 10);
    assert_string_equal(c->tls.ciphers, "ECDHE+AESGCM");
    assert_string_equal(c->tls.ciphersuites, "TLS_AES_128_GCM_SHA256");
    assert_int_equal(c->tls.nalpn, 2);
    assert_string_equal(c->tls.alpn[0], "h2");
    assert_string_equal(c->tls.alpn[1], "http/1.1");
    assert_int_equal(c->tls.ticket_rotation_s, 6 * 3600);
    assert_int_equal(c->tls.min_version, 0x0304);

    assert_int_equal(c->nlisteners, 3);
    assert_string_equal(c->listeners[0].name, "api-tcp");
    assert_int_equal(c->listeners[0].protocol, AE_LPROTO_TCP);
    assert_string_equal(c->listeners[0].addr.text, "192.0.2.10:443");
    assert_string_equal(c->listeners[0].upstream, "api");
    assert_int_equal(c->listeners[0].upstream_index, 1);
    assert_int_equal(c->listeners[0].proxy_protocol, AE_PP_V2);
    assert_int_equal(c->listeners[0].backlog, 4096);
    assert_int_equal(c->listeners[0].pos.line, 17);
    assert_int_equal(c->listeners[0].pos.col, 5);
    assert_string_equal(c->listeners[1].name, "api-quic");
    assert_int_equal(c->listeners[1].protocol, AE_LPROTO_QUIC);
    assert_int_equal(c->listeners[1].proxy_protocol, AE_PP_V1);
    assert_int_equal(c->listeners[1].backlog, 1024);
    assert_string_equal(c->listeners[2].name, "web");
    assert_string_equal(c->listeners[2].addr.text, "[2001:db8::1]:8443");
    assert_int_equal(c->listeners[2].protocol, AE_LPROTO_TCP);
    assert_int_equal(c->listeners[2].proxy_protocol, AE_PP_NONE);
    assert_int_equal(c->listeners[2].upstream_index, 0);

    assert_int_equal(c->nupstreams, 2);
    u = &c->upstreams[0];
    assert_string_equal(u->name, "web");
    assert_int_equal(u->pos.line, 30);
    assert_int_equal(u->pos.col, 3);
    assert_int_equal(u->balance, AE_BAL_ROUND_ROBIN);
    assert_int_equal(u->nservers, 1);
    assert_string_equal(u->servers[0].addr.text, "[::1]:80");
    assert_int_equal(u->connect_timeout_ms, 3000);
    assert_int_equal(u->health.kind, AE_HC_TCP);
    assert_null(u->health.http_path);
    assert_int_equal(u->health.interval_ms, 2000);
    assert_int_equal(u->health.timeout_ms, 1000);
    assert_int_equal(u->health.rise, 2);
    assert_int_equal(u->health.fall, 3);
    u = &c->upstreams[1];
    assert_string_equal(u->name, "api");
    assert_ptr_equal(ae_conf_find_upstream(c, "api"), u);
    assert_null(ae_conf_find_upstream(c, "nope"));
    assert_int_equal(u->balance, AE_BAL_LEAST_CONN);
    assert_int_equal(u->nservers, 2);
    assert_string_equal(u->servers[0].addr.text, "10.0.9.2:8080");
    assert_string_equal(u->servers[1].addr.text, "10.0.9.3:8080");
    assert_int_equal(u->servers[1].pos.line, 37);
    assert_int_equal(u->servers[1].pos.col, 9);
    assert_int_equal(u->connect_timeout_ms, 250);
    assert_int_equal(u->health.kind, AE_HC_HTTP);
    assert_string_equal(u->health.http_path, "/healthz");
    assert_int_equal(u->health.interval_ms, 5000);
    assert_int_equal(u->health.timeout_ms, 5000);
    assert_int_equal(u->health.rise, 4);
    assert_int_equal(u->health.fall, 7);

    assert_string_equal(c->admin.addr.text, "[::1]:9000");
    assert_int_equal(c->admin.enabled, 1);
    assert_int_equal(c->log.level, AE_LOG_DEBUG);
    assert_int_equal(c->log.format, AE_LOG_JSON);
    assert_int_equal(c->log.access, 0);
    assert_int_equal(c->timeouts.client_idle_ms, 120000);
    assert_int_equal(c->timeouts.upstream_idle_ms, 90000);
    assert_int_equal(c->timeouts.handshake_ms, 1500);
    assert_int_equal(c->timeouts.drain_ms, 86400000);
    assert_int_equal(c->tune.buffer_size, 1 << 20);
    assert_int_equal(c->tune.max_connections, 5000);
    ae_conf_free(c);
}

static void test_defaults(void **state)
{
    ae_conf *c = load_ok("site: {}\n");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    (void)state;
    assert_string_equal(c->path, "t.yaml");
    assert_int_equal(c->site.id, 1);
    assert_string_equal(c->site.name, "anyedge");
    assert_int_equal(c->workers, ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
    assert_int_equal(c->tls.ncerts, 0);
    assert_null(c->tls.certs);
    assert_null(c->tls.ciphers);
    assert_null(c->tls.ciphersuites);
    assert_int_equal(c->tls.nalpn, 1);
    assert_string_equal(c->tls.alpn[0], "http/1.1");
    assert_int_equal(c->tls.ticket_rotation_s, 12 * 3600);
    assert_int_equal(c->tls.min_version, 0x0303);
    assert_int_equal(c->nlisteners, 0);
    assert_int_equal(c->nupstreams, 0);
    assert_string_equal(c->admin.addr.text, "127.0.0.1:9901");
    assert_int_equal(c->admin.enabled, 1);
    assert_int_equal(c->log.level, AE_LOG_INFO);
    assert_int_equal(c->log.format, AE_LOG_TEXT);
    assert_int_equal(c->log.access, 1);
    assert_int_equal(c->timeouts.client_idle_ms, 60000);
    assert_int_equal(c->timeouts.upstream_idle_ms, 60000);
    assert_int_equal(c->timeouts.handshake_ms, 10000);
    assert_int_equal(c->timeouts.drain_ms, 30000);
    assert_int_equal(c->tune.buffer_size, 65536);
    assert_int_equal(c->tune.max_connections, 100000);
    ae_conf_free(c);

    /* defaults inside list and map elements; no health block means no checks */
    c = load_ok(BASE "listeners:\n  - {name: a, address: \"127.0.0.1:1\", upstream: u}\n");
    assert_int_equal(c->listeners[0].protocol, AE_LPROTO_TCP);
    assert_int_equal(c->listeners[0].proxy_protocol, AE_PP_NONE);
    assert_int_equal(c->listeners[0].backlog, 1024);
    assert_int_equal(c->upstreams[0].balance, AE_BAL_ROUND_ROBIN);
    assert_int_equal(c->upstreams[0].connect_timeout_ms, 3000);
    assert_int_equal(c->upstreams[0].health.kind, AE_HC_NONE);
    assert_int_equal(c->upstreams[0].health.interval_ms, 2000);
    assert_int_equal(c->upstreams[0].health.timeout_ms, 1000);
    assert_int_equal(c->upstreams[0].health.rise, 2);
    assert_int_equal(c->upstreams[0].health.fall, 3);
    ae_conf_free(c);

    /* explicit empty values, admin disabled by port 0, alpn emptied, tls.certs only */
    c = load_ok("site:\nlog:\ntls:\n  alpn: []\n  certs: [{cert: x, key: y}]\n"
                "admin: {address: \"0.0.0.0:0\"}\nworkers: 2\n");
    assert_int_equal(c->site.id, 1);
    assert_int_equal(c->tls.nalpn, 0);
    assert_int_equal(c->tls.ncerts, 1);
    assert_string_equal(c->tls.certs[0].cert, "x");
    assert_int_equal(c->admin.enabled, 0);
    assert_int_equal(c->workers, 2);
    ae_conf_free(c);

    ae_conf_free(NULL);
}

static void test_relative_paths(void **state)
{
    static const char y[] = "tls: {cert: c/e.pem, key: /k/e.key}\n";
    ae_conf *c;

    (void)state;
    c = load_ok_named("edge.yaml", y); /* no directory: relative to the cwd, as written */
    assert_string_equal(c->tls.certs[0].cert, "c/e.pem");
    assert_string_equal(c->tls.certs[0].key, "/k/e.key");
    ae_conf_free(c);
    c = load_ok_named("conf/edge.yaml", y);
    assert_string_equal(c->tls.certs[0].cert, "conf/c/e.pem");
    ae_conf_free(c);
    c = load_ok_named("/edge.yaml", y);
    assert_string_equal(c->tls.certs[0].cert, "/c/e.pem");
    ae_conf_free(c);
}

static void test_load_file(void **state)
{
    char dir[] = "/tmp/ae_test_conf_XXXXXX", path[128], err[512];
    ae_conf *c = (ae_conf *)0x1;
    FILE *f;
    char *big;
    int rv;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/edge.yaml", dir);

    rv = ae_conf_load(path, &c, err, sizeof(err));
    assert_int_equal(rv, AE_ERR_IO);
    assert_null(c);
    assert_non_null(strstr(err, "edge.yaml: cannot open: No such file or directory"));

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("tls:\n  cert: demo/e.pem\n  key: demo/e.key\n", f);
    fclose(f);
    rv = ae_conf_load(path, &c, err, sizeof(err));
    assert_int_equal(rv, 0);
    assert_string_equal(c->path, path);
    snprintf(err, sizeof(err), "%s/demo/e.pem", dir);
    assert_string_equal(c->tls.certs[0].cert, err);
    ae_conf_free(c);

    /* one byte over the cap */
    big = malloc(AE_CONF_MAX_SIZE + 1);
    assert_non_null(big);
    memset(big, '#', AE_CONF_MAX_SIZE + 1);
    f = fopen(path, "w");
    assert_non_null(f);
    fwrite(big, 1, AE_CONF_MAX_SIZE + 1, f);
    fclose(f);
    rv = ae_conf_load(path, &c, err, sizeof(err));
    assert_int_equal(rv, AE_ERR_PARSE);
    assert_non_null(strstr(err, "edge.yaml:1:1: -: file too large (more than 1048576 bytes)"));
    free(big);

    rv = ae_conf_load(dir, &c, err, sizeof(err));
    assert_int_equal(rv, AE_ERR_IO);
    assert_non_null(strstr(err, ": cannot read: Is a directory"));

    unlink(path);
    rmdir(dir);
}

/* ---- errors, exact text ---- */

static void test_err_structure(void **state)
{
    (void)state;
    expect_err("", "t.yaml:1:1: -: empty configuration (no keys)");
    expect_err("# only a comment\n\n", "t.yaml:1:1: -: empty configuration (no keys)");
    expect_err("---\n", "t.yaml:1:1: -: empty configuration (no keys)");
    expect_err("- a\n", "t.yaml:1:1: -: expected a mapping");
    expect_err("foo: 1\n", "t.yaml:1:1: foo: unknown key");
    expect_err("site:\n  idd: 3\n", "t.yaml:2:3: site.idd: unknown key");
    expect_err(BASE "upstreams2: {}\n", "t.yaml:4:1: upstreams2: unknown key");
    expect_err("upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n    health: {tcp: on, rize: 2}\n",
               "t.yaml:4:23: upstreams.u.health.rize: unknown key");
    expect_err("site: 3\n", "t.yaml:1:7: site: expected a mapping");
    expect_err("listeners: {a: 1}\n", "t.yaml:1:12: listeners: expected a list");
    expect_err("upstreams: [a]\n", "t.yaml:1:12: upstreams: expected a mapping");
    expect_err("site: {id: [1]}\n", "t.yaml:1:12: site.id: expected a scalar");
    expect_err("tls: {alpn: h2}\n", "t.yaml:1:13: tls.alpn: expected a list");
    expect_err("tls: {alpn: [[h2]]}\n", "t.yaml:1:14: tls.alpn[0]: expected a scalar");
    expect_err("listeners: [a]\n", "t.yaml:1:13: listeners[0]: expected a mapping");
    expect_err("site: {id: }\n", "t.yaml:1:12: site.id: missing value");
    expect_err("site:\n  id: 1\n  id: 2\n", "t.yaml:3:3: site.id: duplicate key (first at line 2)");
    expect_err("upstreams:\n  a: {servers: [\"1.1.1.1:1\"]}\n  a: {servers: [\"1.1.1.1:2\"]}\n",
               "t.yaml:3:3: upstreams.a: duplicate key (first at line 2)");
    expect_err("{[a]: 1}\n", "t.yaml:1:2: -: mapping keys must be plain strings");
}

static void test_err_yaml(void **state)
{
    (void)state;
    expect_err("site: {id: 1\n",
               "t.yaml:2:1: site: did not find expected ',' or '}' (while parsing a flow mapping "
               "at line 1)");
    expect_err("site:\n  id: 1\n  name: [a\n",
               "t.yaml:4:1: site.name: did not find expected ',' or ']' (while parsing a flow "
               "sequence at line 3)");
    expect_err("a: b\n c: d\n", "t.yaml:2:3: -: mapping values are not allowed in this context");
    expect_err("\tsite: 1\n", "t.yaml:1:1: -: found character that cannot start any token "
                              "(while scanning for the next token at line 1)");
    expect_err("site:\n  name: \"a\x01\"\n", "t.yaml:2:11: -: control characters are not allowed");
    expect_err("site: {name: \"\xff\"}\n", "t.yaml:1:15: -: invalid leading UTF-8 octet");
    expect_err("site: {name: \"a\\0b\"}\n", "t.yaml:1:14: site.name: NUL byte in value");
    expect_err("site: &s {id: 1}\n", "t.yaml:1:7: site: YAML anchors (&name) are not supported");
    expect_err("site: {id: 1}\nlog: *s\n",
               "t.yaml:2:6: log: YAML aliases (*name) are not supported");
    expect_err("site: {}\n---\nsite: {}\n", "t.yaml:2:1: -: only one YAML document is allowed");
}

static void test_err_values(void **state)
{
    char y[600], want[600];

    (void)state;
    expect_err("site: {id: 0}\n", "t.yaml:1:12: site.id: value 0 out of range 1..4095");
    expect_err("site: {id: 4096}\n", "t.yaml:1:12: site.id: value 4096 out of range 1..4095");
    expect_err("workers: 257\n", "t.yaml:1:10: workers: value 257 out of range 0..256");
    expect_err("workers: -1\n", "t.yaml:1:10: workers: invalid number '-1'");
    expect_err("workers: 99999999999\n", "t.yaml:1:10: workers: invalid number '99999999999'");
    expect_err("workers: 1.5\n", "t.yaml:1:10: workers: invalid number '1.5'");
    expect_err("site: {name: \"a b\"}\n",
               "t.yaml:1:14: site.name: invalid name (use letters, digits, '-', '_' and '.')");
    expect_err("site: {name: \"\"}\n", "t.yaml:1:14: site.name: empty value");
    expect_err("log: {access: yes}\n",
               "t.yaml:1:15: log.access: invalid value 'yes' (expected one of: on, off, true, "
               "false)");
    expect_err("log: {level: verbose}\n",
               "t.yaml:1:14: log.level: invalid value 'verbose' (expected one of: error, warn, "
               "info, debug)");
    expect_err("tls: {min_version: \"1.1\"}\n",
               "t.yaml:1:20: tls.min_version: invalid value '1.1' (expected one of: 1.2, 1.3)");
    expect_err(BASE "listeners:\n  - {name: a, address: \"127.0.0.1:1\", upstream: u, "
                    "proxy_protocol: x}\n",
               "t.yaml:5:68: listeners[0].proxy_protocol: invalid value 'x' (expected one of: "
               "none, v1, v2)");
    expect_err("timeouts: {drain: 5x}\n",
               "t.yaml:1:19: timeouts.drain: invalid duration '5x' (expected e.g. 250ms, 2s, 5m, "
               "12h, 1d)");
    expect_err("timeouts: {drain: 50ms}\n",
               "t.yaml:1:19: timeouts.drain: value 50ms out of range 100ms..1d");
    expect_err("tls: {ticket_rotation: 8d}\n",
               "t.yaml:1:24: tls.ticket_rotation: value 8d out of range 1m..7d");
    expect_err("tune: {buffer_size: 1k}\n",
               "t.yaml:1:21: tune.buffer_size: value 1k out of range 4k..16m");
    expect_err("tune: {buffer_size: 64kb}\n",
               "t.yaml:1:21: tune.buffer_size: invalid size '64kb' (expected e.g. 4096, 64k, 1m)");
    expect_err("tune: {max_connections: 0}\n",
               "t.yaml:1:25: tune.max_connections: value 0 out of range 1..10000000");
    expect_err("admin: {address: \"localhost:80\"}\n",
               "t.yaml:1:18: admin.address: invalid address 'localhost:80' (expected IPv4:port or "
               "[IPv6]:port)");
    expect_err(BASE "listeners:\n  - {name: a, address: \"127.0.0.1:0\", upstream: u}\n",
               "t.yaml:5:24: listeners[0].address: invalid address '127.0.0.1:0' (expected "
               "IPv4:port or [IPv6]:port)");
    expect_err("tls: {alpn: [h2, \"\"]}\n", "t.yaml:1:18: tls.alpn[1]: empty value");
    snprintf(y, sizeof(y), "tls: {alpn: [%0256d]}\n", 0);
    expect_err(y, "t.yaml:1:14: tls.alpn[0]: length 256 out of range 1..255 bytes");
    snprintf(y, sizeof(y), "tls: {alpn: [%0255d]}\n", 0);
    ae_conf_free(load_ok(y));
    snprintf(y, sizeof(y), "site: {name: %064d}\n", 0);
    snprintf(want, sizeof(want), "t.yaml:1:14: site.name: length 64 out of range 1..63 bytes");
    expect_err(y, want);
    expect_err("upstreams:\n  \"a b\": {servers: [\"1.1.1.1:1\"]}\n",
               "t.yaml:2:3: upstreams.a b: invalid name (use letters, digits, '-', '_' and '.')");
}

static void test_err_required(void **state)
{
    (void)state;
    expect_err(BASE "listeners:\n  - name: a\n    upstream: u\n",
               "t.yaml:5:5: listeners[0]: missing required key 'address'");
    expect_err(BASE "listeners:\n  - {address: \"127.0.0.1:1\", upstream: u}\n",
               "t.yaml:5:5: listeners[0]: missing required key 'name'");
    expect_err("upstreams:\n  api:\n", "t.yaml:2:7: upstreams.api: missing required key 'servers'");
    expect_err("upstreams:\n  api: {balance: least_conn}\n",
               "t.yaml:2:8: upstreams.api: missing required key 'servers'");
    expect_err("upstreams:\n  api: {servers: []}\n",
               "t.yaml:2:18: upstreams.api.servers: at least 1 item is required");
    expect_err("tls: {certs: [{cert: a}]}\n",
               "t.yaml:1:15: tls.certs[0]: missing required key 'key'");
    expect_err("tls:\n  cert: a.pem\n", "t.yaml:2:3: tls: missing required key 'key'");
    expect_err("tls:\n  key: a.key\n", "t.yaml:2:3: tls: missing required key 'cert'");
    expect_err("upstreams:\n  u: {servers: [\"127.0.0.1:80\"]}\n"
               "listeners:\n  - {name: a, address: \"127.0.0.1:1\", upstream: u}\n",
               "t.yaml:4:3: tls: a certificate is required when listeners are configured (set "
               "tls.cert and tls.key, or tls.certs)");
    expect_err("tls: {alpn: [h2]}\nupstreams:\n  u: {servers: [\"127.0.0.1:80\"]}\n"
               "listeners:\n  - {name: a, address: \"127.0.0.1:1\", upstream: u}\n",
               "t.yaml:1:6: tls: a certificate is required when listeners are configured (set "
               "tls.cert and tls.key, or tls.certs)");
}

static void test_err_cross(void **state)
{
    (void)state;
    expect_err(BASE "listeners:\n"
                    "  - {name: a, address: \"127.0.0.1:8443\", upstream: u}\n"
                    "  - {name: b, address: \"127.0.0.1:8443\", protocol: quic, upstream: u}\n"
                    "  - {name: c, address: \"127.0.0.1:8443\", upstream: u}\n",
               "t.yaml:7:24: listeners[2].address: duplicate listener address 127.0.0.1:8443 "
               "(also used by listener 'a')");
    expect_err(BASE "listeners:\n"
                    "  - {name: a, address: \"[::1]:8443\", upstream: u}\n"
                    "  - {name: b, address: \"[0::1]:8443\", upstream: u}\n",
               "t.yaml:6:24: listeners[1].address: duplicate listener address [::1]:8443 "
               "(also used by listener 'a')");
    expect_err(BASE "listeners:\n"
                    "  - {name: a, address: \"127.0.0.1:1\", upstream: u}\n"
                    "  - {name: a, address: \"127.0.0.1:2\", upstream: u}\n",
               "t.yaml:6:12: listeners[1].name: duplicate listener name 'a'");
    expect_err(BASE "listeners:\n  - name: a\n    address: \"127.0.0.1:1\"\n    upstream: x\n",
               "t.yaml:7:15: listeners[0].upstream: upstream 'x' is not defined");
    expect_err(
        "upstreams:\n  u:\n    servers: [\"10.0.0.1:80\", \"10.0.0.2:80\", \"10.0.0.1:80\"]\n",
        "t.yaml:3:45: upstreams.u.servers[2]: duplicate address 10.0.0.1:80 (also at line "
        "3)");
    expect_err("upstreams:\n  u:\n    servers: [\"10.0.0.1:80\", x]\n",
               "t.yaml:3:30: upstreams.u.servers[1]: invalid address 'x' (expected IPv4:port or "
               "[IPv6]:port)");
    expect_err("upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n    health: {tcp: on, http: /x}\n",
               "t.yaml:4:29: upstreams.u.health.http: 'tcp' and 'http' are mutually exclusive");
    expect_err("upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n    health: {interval: 3s}\n",
               "t.yaml:4:13: upstreams.u.health: health checks need 'tcp: on' or 'http: PATH' "
               "(remove the block to disable them)");
    expect_err("upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n    health:\n",
               "t.yaml:4:12: upstreams.u.health: health checks need 'tcp: on' or 'http: PATH' "
               "(remove the block to disable them)");
    expect_err("upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n    health: {http: healthz}\n",
               "t.yaml:4:20: upstreams.u.health.http: path must start with '/'");
    expect_err("upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n"
               "    health: {tcp: on, timeout: 3s}\n",
               "t.yaml:4:32: upstreams.u.health.timeout: timeout 3s must not exceed interval 2s");
    expect_err("upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n"
               "    health: {tcp: on, interval: 500ms}\n",
               "t.yaml:4:13: upstreams.u.health.timeout: timeout 1s must not exceed interval "
               "500ms");
    expect_err("upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n    health: {rise: 0, tcp: on}\n",
               "t.yaml:4:20: upstreams.u.health.rise: value 0 out of range 1..100");
}

static void test_err_misc(void **state)
{
    char err[64], big[8];
    ae_conf *c = (ae_conf *)0x1;
    int rv;

    (void)state;
    /* too large a string, and a tiny error buffer that must stay terminated */
    rv = ae_conf_load_string("t.yaml", "x", AE_CONF_MAX_SIZE + 1, &c, err, sizeof(err));
    assert_int_equal(rv, AE_ERR_PARSE);
    assert_null(c);
    assert_string_equal(err, "t.yaml:1:1: -: file too large (more than 1048576 bytes)");
    rv = ae_conf_load_string("t.yaml", "foo: 1", 6, &c, big, sizeof(big));
    assert_int_equal(rv, AE_ERR_PARSE);
    assert_string_equal(big, "t.yaml:");
    rv = ae_conf_load_string("t.yaml", "foo: 1", 6, &c, NULL, 0);
    assert_int_equal(rv, AE_ERR_PARSE);
    /* deep nesting is refused, not recursed into */
    {
        char deep[200];
        size_t i;
        for (i = 0; i < 60; i++)
            deep[i] = '[';
        deep[60] = '\0';
        rv = ae_conf_load_string("t.yaml", deep, strlen(deep), &c, err, sizeof(err));
        assert_int_equal(rv, AE_ERR_PARSE);
    }
}

/* Values are quoted in messages, but a message stays one line of printable text: a YAML
 * escape or a folded line break in a bad value must not put a newline or a terminal escape
 * into `anyedge -t` output or the reload log line (found by tests/fuzz/fuzz_conf.c). */
static void test_err_control_chars(void **state)
{
    (void)state;
    expect_err(BASE "listeners:\n  - {name: l, address: \"1.2.3.4:8\\n\\e[31m\", upstream: u}\n",
               "t.yaml:5:24: listeners[0].address: invalid address '1.2.3.4:8??[31m' (expected "
               "IPv4:port or [IPv6]:port)");
    expect_err(BASE "listeners:\n  - name: l\n    upstream: u\n    address: \"1.2.3.4:8\n\n  x\"\n",
               "t.yaml:7:14: listeners[0].address: invalid address '1.2.3.4:8?x' (expected "
               "IPv4:port or [IPv6]:port)");
}

/* ---- value parsers ---- */

/* quic.early_data_max_age (the QUIC ticket lifetime) and quic.early_data_records. */
static void test_quic_early_data(void **state)
{
    (void)state;
    ae_conf *c = load_ok("site: {}\n");
    assert_int_equal(c->quic.early_data, 0);
    assert_int_equal(c->quic.early_data_max_age_ms, 3600000);
    assert_int_equal(c->quic.early_data_records, 1u << 20);
    ae_conf_free(c);
    c = load_ok("quic: {early_data: on, early_data_max_age: 7d, early_data_records: 16}\n");
    assert_int_equal(c->quic.early_data_max_age_ms, 7u * 86400000u);
    assert_int_equal(c->quic.early_data_records, 16);
    ae_conf_free(c);
    /* the deprecated window still loads */
    c = load_ok("quic: {early_data: on, early_data_window: 10s, early_data_max_age: 10s}\n");
    assert_int_equal(c->quic.early_data_max_age_ms, 10000);
    ae_conf_free(c);
    expect_err("quic: {early_data_max_age: 9s}\n",
               "t.yaml:1:28: quic.early_data_max_age: value 9s out of range 10s..7d");
    expect_err("quic: {early_data_max_age: 8d}\n",
               "t.yaml:1:28: quic.early_data_max_age: value 8d out of range 10s..7d");
    expect_err("quic: {early_data_records: 15}\n",
               "t.yaml:1:28: quic.early_data_records: value 15 out of range 16..67108864");
    expect_err("quic: {early_data_records: 67108865}\n",
               "t.yaml:1:28: quic.early_data_records: value 67108865 out of range 16..67108864");
}

static void test_duration(void **state)
{
    static const struct {
        const char *s;
        uint32_t ms;
    } ok[] = {
        {"0", 0},
        {"250ms", 250},
        {"2s", 2000},
        {"5m", 300000},
        {"12h", 43200000},
        {"1d", 86400000},
        {"7", 7000},
        {"4294967295ms", 4294967295u},
        {"49d", 4233600000u},
        {"0ms", 0},
    };
    static const char *const bad[] = {
        "",     "s",    "-1s",  "+1s",  "1.5s",         "1 s", " 1s",      "1s ",
        "1S",   "1sec", "1ms5", "0x10", "4294967296ms", "50d", "4294968s", "99999999999999999999",
        "1mss",
    };
    uint32_t v;
    size_t i;

    (void)state;
    for (i = 0; i < AE_ARRAY_LEN(ok); i++) {
        v = 12345;
        assert_int_equal(ae_conf_parse_duration_ms(ok[i].s, &v), 0);
        assert_int_equal(v, ok[i].ms);
    }
    for (i = 0; i < AE_ARRAY_LEN(bad); i++) {
        v = 12345;
        if (ae_conf_parse_duration_ms(bad[i], &v) != AE_ERR_PARSE)
            fail_msg("duration '%s' accepted", bad[i]);
        assert_int_equal(v, 12345);
    }
    assert_int_equal(ae_conf_parse_duration_ms(NULL, &v), AE_ERR_PARSE);
}

static void test_size(void **state)
{
    static const struct {
        const char *s;
        uint32_t v;
    } ok[] = {
        {"0", 0},        {"4096", 4096},    {"64k", 65536},   {"64K", 65536},
        {"1m", 1 << 20}, {"16M", 16 << 20}, {"3g", 3u << 30}, {"4294967295", 4294967295u},
    };
    static const char *const bad[] = {"",    "k",  "-1",         "1.5k", "1kb",
                                      "1 k", "4g", "4294967296", "1t",   "k1"};
    uint32_t v;
    size_t i;

    (void)state;
    for (i = 0; i < AE_ARRAY_LEN(ok); i++) {
        assert_int_equal(ae_conf_parse_size(ok[i].s, &v), 0);
        assert_int_equal(v, ok[i].v);
    }
    for (i = 0; i < AE_ARRAY_LEN(bad); i++)
        if (ae_conf_parse_size(bad[i], &v) != AE_ERR_PARSE)
            fail_msg("size '%s' accepted", bad[i]);
}

static void test_addr(void **state)
{
    static const struct {
        const char *s, *text;
    } ok[] = {
        {"127.0.0.1:8443", "127.0.0.1:8443"},
        {"0.0.0.0:1", "0.0.0.0:1"},
        {"255.255.255.255:65535", "255.255.255.255:65535"},
        {"[::1]:80", "[::1]:80"},
        {"[::]:443", "[::]:443"},
        {"[2001:DB8:0:0::1]:443", "[2001:db8::1]:443"},
        {"[::ffff:1.2.3.4]:5", "[::ffff:1.2.3.4]:5"},
    };
    static const char *const bad[] = {
        "",
        "127.0.0.1",
        "127.0.0.1:",
        ":80",
        "127.0.0.1:65536",
        "127.0.0.1:0",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:80x",
        "127.0.0.1:80 ",
        " 127.0.0.1:80",
        "1.2.3:80",
        "01.2.3.4:80",
        "256.1.1.1:80",
        "localhost:80",
        "::1:80",
        "[::1]",
        "[::1]:",
        "[::1]80",
        "[::1]:80]",
        "[]:80",
        "[1.2.3.4]:80",
        "[fe80::1%eth0]:80",
        "[::1]:123456",
        "1.2.3.4:000080",
    };
    ae_addr a, b;
    char buf[64];
    size_t i;

    (void)state;
    for (i = 0; i < AE_ARRAY_LEN(ok); i++) {
        if (ae_addr_parse(ok[i].s, &a, 0) != 0)
            fail_msg("address '%s' refused", ok[i].s);
        assert_string_equal(a.text, ok[i].text);
        assert_string_equal(ae_addr_format((struct sockaddr *)&a.sa, buf, sizeof(buf)), ok[i].text);
        assert_int_equal(ae_addr_parse(a.text, &b, 0), 0);
        assert_true(ae_addr_equal(&a, &b));
    }
    for (i = 0; i < AE_ARRAY_LEN(bad); i++)
        if (ae_addr_parse(bad[i], &a, 0) != AE_ERR_PARSE)
            fail_msg("address '%s' accepted", bad[i]);

    assert_int_equal(ae_addr_parse("127.0.0.1:0", &a, 1), 0);
    assert_string_equal(a.text, "127.0.0.1:0");
    assert_int_equal(a.len, sizeof(struct sockaddr_in));
    assert_int_equal(ae_addr_parse("[::1]:0", &a, 1), 0);
    assert_int_equal(a.len, sizeof(struct sockaddr_in6));

    assert_int_equal(ae_addr_parse("127.0.0.1:80", &a, 0), 0);
    assert_int_equal(ae_addr_parse("127.0.0.1:81", &b, 0), 0);
    assert_false(ae_addr_equal(&a, &b));
    assert_int_equal(ae_addr_parse("127.0.0.2:80", &b, 0), 0);
    assert_false(ae_addr_equal(&a, &b));
    assert_int_equal(ae_addr_parse("[::ffff:127.0.0.1]:80", &b, 0), 0);
    assert_false(ae_addr_equal(&a, &b));
}

/* ---- docs and examples ---- */

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void test_doc_current(void **state)
{
    const char *src = getenv("AE_SRCDIR");
    char path[4096], *want = NULL, *got;
    size_t wlen = 0, glen = 0;
    FILE *f;

    (void)state;
    f = open_memstream(&got, &glen);
    assert_non_null(f);
    ae_conf_write_doc(f);
    fclose(f);
    assert_non_null(strstr(got, "| `upstreams.<name>.health.rise` | integer | `2` | 1..100 |"));
    assert_non_null(strstr(got, "| `listeners[].address` | address | **required** |"));

    if (src == NULL) {
        free(got);
        skip();
    }
    snprintf(path, sizeof(path), "%s/docs/config.md", src);
    want = read_all(path, &wlen);
    if (want == NULL)
        fail_msg("cannot read %s", path);
    if (wlen != glen || memcmp(want, got, glen) != 0)
        fail_msg("docs/config.md is stale: regenerate it with `anyedge --config-doc > "
                 "docs/config.md`");
    free(want);
    free(got);
}

static void test_examples(void **state)
{
    static const char *const files[] = {"conf/examples/full.yaml", "conf/examples/standalone.yaml"};
    const char *src = getenv("AE_SRCDIR");
    char path[4096], err[512];
    ae_conf *c;
    size_t i;

    (void)state;
    /* the example embedded in docs/config.md */
    c = load_ok(ae_conf_doc_example);
    assert_int_equal(c->nlisteners, 3);
    ae_conf_free(c);

    if (src == NULL)
        skip();
    for (i = 0; i < AE_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", src, files[i]);
        if (ae_conf_load(path, &c, err, sizeof(err)) != 0)
            fail_msg("%s", err);
        if (i == 1) {
            snprintf(path, sizeof(path), "%s/conf/examples/demo/edge.pem", src);
            assert_string_equal(c->tls.certs[0].cert, path);
            assert_int_equal(c->workers, 1);
            assert_int_equal(c->upstreams[0].health.kind, AE_HC_HTTP);
            assert_string_equal(c->listeners[0].addr.text, "127.0.0.1:8443");
        }
        ae_conf_free(c);
    }
}

/* balance: hash: hash_key and affinity_cookie (conf/hashkey.h), their errors with positions. */
static void test_hash_key(void **state)
{
    (void)state;
    ae_conf *c =
        load_ok("tls: {cert: a.pem, key: a.key}\n"
                "listeners:\n"
                "  - {name: h, protocol: quic, address: \"127.0.0.1:1\", upstream: a}\n"
                "  - {name: t, address: \"127.0.0.1:2\", upstream: d}\n"
                "upstreams:\n"
                "  a: {balance: hash, hash_key: \"cookie:sid\", affinity_cookie: aff,"
                " servers: [\"1.1.1.1:1\"]}\n"
                "  b: {balance: hash, hash_key: \"header:x-api-key\", servers: [\"1.1.1.1:1\"]}\n"
                "  d: {balance: hash, hash_key: \"client_ip/24,56\", servers: [\"1.1.1.1:1\"]}\n"
                "  e: {balance: hash, servers: [\"1.1.1.1:1\"]}\n");
    assert_int_equal(c->upstreams[0].hash.kind, AE_HASH_COOKIE);
    assert_string_equal(c->upstreams[0].hash.name, "sid");
    assert_int_equal(c->upstreams[0].hash.name_len, 3);
    assert_string_equal(c->upstreams[0].affinity_cookie, "aff");
    assert_int_equal(c->upstreams[1].hash.kind, AE_HASH_HEADER);
    assert_string_equal(c->upstreams[1].hash.name, "x-api-key");
    assert_int_equal(c->upstreams[2].hash.kind, AE_HASH_CLIENT_IP);
    assert_int_equal(c->upstreams[2].hash.v4_prefix, 24);
    assert_int_equal(c->upstreams[2].hash.v6_prefix, 56);
    assert_int_equal(c->upstreams[3].hash.kind, AE_HASH_CLIENT_IP);
    assert_int_equal(c->upstreams[3].hash.v4_prefix, 32);
    assert_int_equal(c->upstreams[3].hash.v6_prefix, 64);
    assert_null(c->upstreams[3].affinity_cookie);
    ae_conf_free(c);

#define UP1(extra) "upstreams:\n  u:\n    servers: [\"1.1.1.1:1\"]\n" extra
    expect_err(UP1("    hash_key: client_ip\n"),
               "t.yaml:4:15: upstreams.u.hash_key: needs balance: hash");
    expect_err(UP1("    affinity_cookie: a\n"),
               "t.yaml:4:22: upstreams.u.affinity_cookie: needs balance: hash");
    expect_err(UP1("    balance: hash\n    hash_key: \"header:X-Key\"\n"),
               "t.yaml:5:15: upstreams.u.hash_key: 'header:X-Key': the header name must be "
               "lower-case token characters (as HTTP/3 sends it)");
    expect_err(UP1("    balance: hash\n    hash_key: \"header:cookie\"\n"),
               "t.yaml:5:15: upstreams.u.hash_key: 'header:cookie': use cookie:NAME to hash one "
               "cookie");
    expect_err(UP1("    balance: hash\n    hash_key: \"cookie:a;b\"\n"),
               "t.yaml:5:15: upstreams.u.hash_key: 'cookie:a;b': the cookie name must be 1..63 "
               "token characters");
    expect_err(UP1("    balance: hash\n    hash_key: \"client_ip/7\"\n"),
               "t.yaml:5:15: upstreams.u.hash_key: 'client_ip/7': the IPv4 prefix length must be "
               "8..32");
    expect_err(UP1("    balance: hash\n    hash_key: \"client_ip/24,129\"\n"),
               "t.yaml:5:15: upstreams.u.hash_key: 'client_ip/24,129': the IPv6 prefix length "
               "must be 16..128");
    expect_err(UP1("    balance: hash\n    hash_key: \"client_ip/24,56x\"\n"),
               "t.yaml:5:15: upstreams.u.hash_key: 'client_ip/24,56x': expected client_ip, "
               "client_ip/V4 or client_ip/V4,V6");
    expect_err(UP1("    balance: hash\n    hash_key: \"client_ipv6\"\n"),
               "t.yaml:5:15: upstreams.u.hash_key: 'client_ipv6' is not client_ip[/V4[,V6]], "
               "header:NAME or cookie:NAME");
    expect_err(UP1("    balance: hash\n    affinity_cookie: \"a=b\"\n"),
               "t.yaml:5:22: upstreams.u.affinity_cookie: 'a=b': a cookie name is 1..63 token "
               "characters");
    expect_err(UP1("    balance: hash\n    hash_key: \"cookie:s\"\n    affinity_cookie: s\n"),
               "t.yaml:6:22: upstreams.u.affinity_cookie: 's' is also the hash_key cookie: the "
               "proxy's sealed cookie cannot be the client's key");
    expect_err("tls: {cert: a.pem, key: a.key}\n"
               "listeners:\n  - {name: t, address: \"127.0.0.1:2\", upstream: u}\n" UP1(
                   "    balance: hash\n    affinity_cookie: s\n"),
               "t.yaml:3:49: listeners[0].upstream: upstream 'u' has affinity_cookie: a TCP "
               "listener relays bytes, sees no header or cookie, and can only hash client_ip");
    expect_err("tls: {cert: a.pem, key: a.key}\n"
               "listeners:\n  - {name: t, address: \"127.0.0.1:2\", upstream: u}\n" UP1(
                   "    balance: hash\n    hash_key: \"header:x-u\"\n"),
               "t.yaml:3:49: listeners[0].upstream: upstream 'u' has hash_key header:x-u: a TCP "
               "listener relays bytes, sees no header or cookie, and can only hash client_ip");
#undef UP1
}

/* The pure parser alone: every accepted form, and the state it leaves on errors. */
static void test_hash_key_parse(void **state)
{
    ae_hash_spec h;
    char err[160];
    (void)state;
    assert_int_equal(ae_hash_key_parse(NULL, &h, err, sizeof(err)), 0);
    assert_int_equal(h.kind, AE_HASH_CLIENT_IP);
    assert_int_equal(ae_hash_key_parse("client_ip/8", &h, err, sizeof(err)), 0);
    assert_int_equal(h.v4_prefix, 8);
    assert_int_equal(h.v6_prefix, 64);
    assert_int_equal(ae_hash_key_parse("client_ip/32,128", &h, err, sizeof(err)), 0);
    assert_int_equal(h.v6_prefix, 128);
    assert_int_equal(ae_hash_key_parse("client_ip/", &h, err, sizeof(err)), AE_ERR_PARSE);
    assert_int_equal(ae_hash_key_parse("client_ip/24,", &h, err, sizeof(err)), AE_ERR_PARSE);
    assert_int_equal(ae_hash_key_parse("client_ip/0024", &h, err, sizeof(err)), AE_ERR_PARSE);
    assert_int_equal(ae_hash_key_parse("header:", &h, err, sizeof(err)), AE_ERR_PARSE);
    assert_int_equal(h.kind, AE_HASH_CLIENT_IP); /* errors leave the default */
    assert_int_equal(h.v4_prefix, 32);
    assert_int_equal(ae_hash_key_parse("cookie:", &h, err, sizeof(err)), AE_ERR_PARSE);
    assert_int_equal(ae_hash_key_parse("cookie:Session_ID", &h, err, sizeof(err)), 0);
    assert_string_equal(h.name, "Session_ID");
    char big[80] = "header:";
    memset(big + 7, 'a', 64);
    big[71] = '\0';
    assert_int_equal(ae_hash_key_parse(big, &h, err, sizeof(err)), AE_ERR_PARSE);
    big[70] = '\0'; /* 63 characters */
    assert_int_equal(ae_hash_key_parse(big, &h, err, sizeof(err)), 0);
    assert_int_equal(h.name_len, 63);
    assert_true(ae_cookie_name_ok("a", 1));
    assert_false(ae_cookie_name_ok("", 0));
    assert_false(ae_cookie_name_ok("a b", 3));
    assert_false(ae_cookie_name_ok("a\"", 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_err_structure),
        cmocka_unit_test(test_err_yaml),
        cmocka_unit_test(test_err_values),
        cmocka_unit_test(test_err_required),
        cmocka_unit_test(test_err_cross),
        cmocka_unit_test(test_err_misc),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_doc_current),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_err_control_chars),
        cmocka_unit_test(test_quic_early_data),
        cmocka_unit_test(test_hash_key),
        cmocka_unit_test(test_hash_key_parse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
