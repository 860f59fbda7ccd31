/*
 * Unit tests of state/redis.c: URL parsing, and the client against a real redis-server started
 * by the test on a free 127.0.0.1 port (no persistence), killed by PID at the end of each test.
 * Covers round trips (binary safe), error replies, AUTH (password and ACL user), SELECT,
 * pub/sub, reconnect after a server restart, command and handshake timeouts, AE_ERR_AGAIN
 * while disconnected and ae_redis_free() with pending commands.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/base.h"
#include "state/redis.h"

#define REDIS_SERVER "/usr/bin/redis-server"

/* ---- URL parsing ---- */

typedef struct {
    const char *url;
    const char *host;
    int port;
    const char *unix_path;
    const char *user;
    const char *password;
    int db;
} url_case;

static void check_str(const char *got, const char *want, const char *url)
{
    if (!want) {
        if (got)
            fail_msg("%s: got \"%s\", want NULL", url, got);
        return;
    }
    if (!got || strcmp(got, want) != 0)
        fail_msg("%s: got \"%s\", want \"%s\"", url, got ? got : "(null)", want);
}

static void test_url_good(void **state)
{
    static const url_case cases[] = {
        {"redis://127.0.0.1:6380", "127.0.0.1", 6380, NULL, NULL, NULL, 0},
        {"redis://localhost", "localhost", 6379, NULL, NULL, NULL, 0},
        {"redis://localhost/", "localhost", 6379, NULL, NULL, NULL, 0},
        {"redis://redis.example-1.internal:7000/15", "redis.example-1.internal", 7000, NULL, NULL,
         NULL, 15},
        {"redis://:secret@10.0.0.1:6379/2", "10.0.0.1", 6379, NULL, NULL, "secret", 2},
        {"redis://edge:pw@h:1", "h", 1, NULL, "edge", "pw", 0},
        {"redis://u%40x:p%3Aw%2F%40%25@h:65535/2147483647", "h", 65535, NULL, "u@x", "p:w/@%",
         2147483647},
        {"redis://:p@ss@h", "h", 6379, NULL, NULL, "p@ss", 0}, /* last '@' ends userinfo */
        {"redis://[::1]:6390/1", "::1", 6390, NULL, NULL, NULL, 1},
        {"redis://:pw@[2001:db8::5]", "2001:db8::5", 6379, NULL, NULL, "pw", 0},
        {"REDIS://H:2", "H", 2, NULL, NULL, NULL, 0},
        {"rediss://:pw@redis.internal:6380/1", "redis.internal", 6380, NULL, NULL, "pw", 1},
        {"REDISS://[::1]", "::1", 6379, NULL, NULL, NULL, 0},
        {"unix:///run/redis/redis.sock", NULL, 0, "/run/redis/redis.sock", NULL, NULL, 0},
        {"unix:///tmp/r.sock?db=4", NULL, 0, "/tmp/r.sock", NULL, NULL, 4},
    };

    for (size_t i = 0; i < AE_ARRAY_LEN(cases); i++) {
        const url_case *c = &cases[i];
        ae_redis_target t;
        char err[256];
        int rv = ae_redis_url_parse(c->url, &t, err, sizeof(err));

        if (rv != 0)
            fail_msg("%s: unexpected error %d: %s", c->url, rv, err);
        check_str(t.host, c->host, c->url);
        check_str(t.unix_path, c->unix_path, c->url);
        check_str(t.user, c->user, c->url);
        check_str(t.password, c->password, c->url);
        if (c->host)
            assert_int_equal(t.port, c->port);
        assert_int_equal(t.tls, strncasecmp(c->url, "rediss://", 9) == 0);
        assert_int_equal(t.db, c->db);
        ae_redis_target_free(&t);
        assert_null(t.host);
        assert_null(t.password);
    }
}

static void test_url_bad(void **state)
{
    static const char *const bad[] = {
        "",
        "http://h:1",
        "redis://",
        "redis://:6379",
        "redis://h:",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:99999999999",
        "redis://h:-1",
        "redis://h:12a",
        "redis://h:1/x",
        "redis://h:1/-1",
        "redis://h:1/2147483648",
        "redis://h:1/3/4",
        "redis://h:1/3?x=1",
        "redis://h:1?db=3",
        "redis://h:1#frag",
        "redis://h h:1",
        "redis://[::1:6379",
        "redis://[nothex]:1",
        "redis://[::1]x",
        "redis://hunter2sekret@h:1", /* userinfo without ':' */
        "redis://user:@h:1",         /* empty password */
        "redis://:sekret%2@h",       /* truncated escape */
        "redis://:sekret%zz@h",      /* bad escape */
        "redis://:sek%00ret@h",      /* NUL */
        "redis://u%4:sekret@h",
        "unix://",
        "unix://relative/path",
        "unix:///tmp/x?db=",
        "unix:///tmp/x?db=a",
        "unix:///tmp/x?foo=1",
        "unix:///tmp/x?db=1&x=2",
        "unix:///"
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
        "890123456789012345678901234567890",
    };

    for (size_t i = 0; i < AE_ARRAY_LEN(bad); i++) {
        ae_redis_target t;
        char err[256];
        int rv = ae_redis_url_parse(bad[i], &t, err, sizeof(err));

        if (rv != AE_ERR_PARSE)
            fail_msg("\"%s\": got %d, want AE_ERR_PARSE", bad[i], rv);
        assert_true(strlen(err) > 0);
        assert_null(strstr(err, "sekret"));
        assert_null(t.host);
        assert_null(t.unix_path);
        assert_null(t.password);
        assert_null(t.user);
    }
    ae_redis_target t;
    assert_int_equal(ae_redis_url_parse(NULL, &t, NULL, 0), AE_ERR_PARSE);
}

static void test_describe(void **state)
{
    ae_redis_target t;
    char buf[128];

    assert_int_equal(ae_redis_url_parse("redis://u:sekret@h:7/3", &t, NULL, 0), 0);
    assert_string_equal(ae_redis_target_describe(&t, buf, sizeof(buf)), "h:7/3");
    ae_redis_target_free(&t);
    assert_int_equal(ae_redis_url_parse("redis://[::1]:7", &t, NULL, 0), 0);
    assert_string_equal(ae_redis_target_describe(&t, buf, sizeof(buf)), "[::1]:7/0");
    ae_redis_target_free(&t);
    assert_int_equal(ae_redis_url_parse("unix:///a/b?db=2", &t, NULL, 0), 0);
    assert_string_equal(ae_redis_target_describe(&t, buf, sizeof(buf)), "unix:/a/b?db=2");
    ae_redis_target_free(&t);
}

static void test_sentinel_parse(void **state)
{
    static const struct {
        const char *in, *host;
        int port;
    } good[] = {{"127.0.0.1:26379", "127.0.0.1", 26379},
                {"[::1]:5", "::1", 5},
                {"sentinel-1.example.net:1", "sentinel-1.example.net", 1},
                {"s_2:65535", "s_2", 65535}};
    static const char *const bad[] = {"",        "127.0.0.1", ":26379", "h:",       "h:0",
                                      "h:65536", "h:12x",     "::1:5",  "[::1]5:1", "[]:5",
                                      "h h:5",   "h/x:5",     "h:-1",   "[::1:5",   "h:99999999"};
    struct ae_redis_sentinel sn;
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(ae_redis_sentinel_parse(good[i].in, &sn), 0);
        assert_string_equal(sn.host, good[i].host);
        assert_int_equal(sn.port, good[i].port);
        free(sn.host);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ae_redis_sentinel_parse(bad[i], &sn) == 0)
            fail_msg("accepted sentinel address '%s'", bad[i]);
        assert_null(sn.host);
    }
}

/* ---- a real redis-server ---- */

typedef struct {
    pid_t pid;
    int port;
    char dir[64];
    char sock[128];
} server;

static server g_srv;
static int g_listen_fd = -1;
/* Connections that fill a listener's accept queue (closed by the teardown). */
static int g_fill[16];
static int g_nfill;

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int tcp_probe(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

    close(fd);
    return ok;
}

/* Starts redis-server on s->port (picked when 0), with extra args (NULL-terminated). */
static void server_start(server *s, const char *extra, const char *extra2)
{
    char portbuf[16], logbuf[160];
    uint64_t deadline;

    if (!s->dir[0]) {
        snprintf(s->dir, sizeof(s->dir), "/tmp/ae_redis_XXXXXX");
        assert_non_null(mkdtemp(s->dir));
        snprintf(s->sock, sizeof(s->sock), "%s/redis.sock", s->dir);
    }
    if (!s->port)
        s->port = free_port();
    snprintf(portbuf, sizeof(portbuf), "%d", s->port);
    snprintf(logbuf, sizeof(logbuf), "%s/redis.log", s->dir);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        const char *argv[32];
        int n = 0;
        argv[n++] = REDIS_SERVER;
        argv[n++] = "--port";
        argv[n++] = portbuf;
        argv[n++] = "--bind";
        argv[n++] = "127.0.0.1";
        argv[n++] = "--save";
        argv[n++] = "";
        argv[n++] = "--appendonly";
        argv[n++] = "no";
        argv[n++] = "--dir";
        argv[n++] = s->dir;
        argv[n++] = "--logfile";
        argv[n++] = logbuf;
        argv[n++] = "--unixsocket";
        argv[n++] = s->sock;
        argv[n++] = "--unixsocketperm";
        argv[n++] = "700";
        if (extra) {
            argv[n++] = extra;
            argv[n++] = extra2;
        }
        argv[n] = NULL;
        execv(REDIS_SERVER, (char *const *)argv);
        _exit(127);
    }
    deadline = ae_now_ms() + 5000;
    while (!tcp_probe(s->port)) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            fail_msg("redis-server exited (port %d)", s->port);
        }
        if (ae_now_ms() > deadline)
            fail_msg("redis-server did not start on port %d", s->port);
        usleep(10000);
    }
    /* The unix socket is created right after the TCP listener; wait for it too. */
    while (access(s->sock, F_OK) != 0 && ae_now_ms() < deadline)
        usleep(5000);
}

static void server_kill(server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static int teardown_server(void **state)
{
    char path[200];

    server_kill(&g_srv);
    if (g_srv.dir[0]) {
        snprintf(path, sizeof(path), "%s/redis.log", g_srv.dir);
        unlink(path);
        unlink(g_srv.sock);
        rmdir(g_srv.dir);
    }
    memset(&g_srv, 0, sizeof(g_srv));
    if (g_listen_fd >= 0)
        close(g_listen_fd);
    g_listen_fd = -1;
    while (g_nfill > 0)
        close(g_fill[--g_nfill]);
    return 0;
}

/* ---- client helpers ---- */

typedef struct {
    int up, down, last; /* on_state calls */
    int nmsg;
    char msg[64];
    size_t msglen;
} client_ctx;

typedef struct {
    int calls;
    int type;
    long long integer;
    char str[128];
    size_t len;
    char err[64];
} result;

static void on_state(ae_redis *r, int connected, void *arg)
{
    client_ctx *c = arg;

    c->last = connected;
    if (connected)
        c->up++;
    else
        c->down++;
}

static void on_message(ae_redis *r, const char *msg, size_t len, void *arg)
{
    client_ctx *c = arg;

    c->nmsg++;
    c->msglen = len < sizeof(c->msg) ? len : sizeof(c->msg);
    memcpy(c->msg, msg, c->msglen);
}

static void reply_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    result *res = arg;

    res->calls++;
    if (!reply) {
        res->type = -1;
        snprintf(res->err, sizeof(res->err), "%s", err ? err : "(null)");
        return;
    }
    assert_null(err);
    res->type = reply->type;
    res->integer = reply->integer;
    if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS ||
        reply->type == REDIS_REPLY_ERROR) {
        res->len = reply->len < sizeof(res->str) ? reply->len : sizeof(res->str);
        memcpy(res->str, reply->str, res->len);
    }
}

static int never_called_cb_calls;
static void never_called_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    never_called_cb_calls++;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
}

static struct ev_loop *g_loop;
static ev_timer g_tick;

static int setup_loop(void **state)
{
    g_loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(g_loop);
    /* A periodic wake-up so the bounded waits below never block in ev_run. */
    ev_timer_init(&g_tick, tick_cb, 0.01, 0.01);
    ev_timer_start(g_loop, &g_tick);
    return 0;
}

static int teardown_all(void **state)
{
    teardown_server(state);
    ev_timer_stop(g_loop, &g_tick);
    ev_loop_destroy(g_loop);
    g_loop = NULL;
    return 0;
}

#define WAIT_UNTIL(cond, ms)                                                                       \
    do {                                                                                           \
        uint64_t dl_ = ae_now_ms() + (ms);                                                         \
        while (!(cond) && ae_now_ms() < dl_)                                                       \
            ev_run(g_loop, EVRUN_ONCE);                                                            \
    } while (0)

/* Runs the loop for ms whatever happens. */
static void spin(uint64_t ms)
{
    uint64_t dl = ae_now_ms() + ms;

    while (ae_now_ms() < dl)
        ev_run(g_loop, EVRUN_ONCE);
}

static ae_redis *client_new_opts(const char *url, ae_redis_opts *o)
{
    ae_redis_target t;
    ae_redis *r = NULL;
    char err[256];

    if (ae_redis_url_parse(url, &t, err, sizeof(err)) != 0)
        fail_msg("%s: %s", url, err);
    o->target = &t;
    assert_int_equal(ae_redis_new(g_loop, o, &r), 0);
    ae_redis_target_free(&t); /* the client holds a copy */
    assert_non_null(r);
    return r;
}

static ae_redis *client_new(const char *url, client_ctx *ctx)
{
    ae_redis_opts o = {
        .backoff_min_ms = 20, .backoff_max_ms = 200, .on_state = on_state, .arg = ctx};
    return client_new_opts(url, &o);
}

static char *url_for(char *buf, size_t len, const char *userinfo, int port, int db)
{
    snprintf(buf, len, "redis://%s127.0.0.1:%d/%d", userinfo, port, db);
    return buf;
}

/* Sends a command and waits for its reply; returns the result. */
static void cmd(ae_redis *r, result *res, int argc, const char **argv, const size_t *argvlen)
{
    memset(res, 0, sizeof(*res));
    assert_int_equal(ae_redis_command(r, reply_cb, res, argc, argv, argvlen), 0);
    assert_int_equal(res->calls, 0); /* never from inside ae_redis_command */
    WAIT_UNTIL(res->calls > 0, 3000);
    assert_int_equal(res->calls, 1);
}

static void cmd_ok(ae_redis *r, int argc, const char **argv)
{
    result res;

    cmd(r, &res, argc, argv, NULL);
    if (res.type != REDIS_REPLY_STATUS)
        fail_msg("%s: reply type %d (%.*s%s)", argv[0], res.type, (int)res.len, res.str, res.err);
}

static void wait_connected(ae_redis *r)
{
    WAIT_UNTIL(ae_redis_connected(r), 3000);
    assert_true(ae_redis_connected(r));
}

/* ---- client tests ---- */

static void test_roundtrip(void **state)
{
    client_ctx ctx = {0};
    ae_redis_stats st;
    result res;
    char url[128];
    static const char val[] = {'a', '\0', 'b', '\xff', '\0'};
    const char *set[] = {"SET", "ae:bin", val};
    const size_t setlen[] = {3, 6, sizeof(val)};
    const char *get[] = {"GET", "ae:bin"};

    server_start(&g_srv, NULL, NULL);
    ae_redis *r = client_new(url_for(url, sizeof(url), "", g_srv.port, 0), &ctx);
    assert_false(ae_redis_connected(r));
    wait_connected(r);
    assert_int_equal(ctx.up, 1);
    assert_int_equal(ctx.down, 0);

    cmd(r, &res, 3, set, setlen);
    assert_int_equal(res.type, REDIS_REPLY_STATUS);
    cmd(r, &res, 2, get, NULL);
    assert_int_equal(res.type, REDIS_REPLY_STRING);
    assert_int_equal(res.len, sizeof(val));
    assert_memory_equal(res.str, val, sizeof(val));

    ae_redis_get_stats(r, &st);
    assert_int_equal(st.commands, 2);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.timeouts, 0);
    ae_redis_free(r);

    /* The same over the unix socket, with a db. */
    char uurl[200];
    snprintf(uurl, sizeof(uurl), "unix://%s?db=2", g_srv.sock);
    memset(&ctx, 0, sizeof(ctx));
    r = client_new(uurl, &ctx);
    wait_connected(r);
    const char *get2[] = {"GET", "ae:bin"};
    cmd(r, &res, 2, get2, NULL);
    assert_int_equal(res.type, REDIS_REPLY_NIL); /* db 2, not db 0 */
    cmd(r, &res, 3, set, setlen);
    cmd(r, &res, 2, get2, NULL);
    assert_int_equal(res.type, REDIS_REPLY_STRING);
    assert_memory_equal(res.str, val, sizeof(val));
    ae_redis_free(r);
}

static void test_error_reply(void **state)
{
    client_ctx ctx = {0};
    ae_redis_stats st;
    result res;
    char url[128];

    server_start(&g_srv, NULL, NULL);
    ae_redis *r = client_new(url_for(url, sizeof(url), "", g_srv.port, 0), &ctx);
    wait_connected(r);
    cmd_ok(r, 3, (const char *[]){"SET", "ae:s", "abc"});
    cmd(r, &res, 2, (const char *[]){"INCR", "ae:s"}, NULL);
    assert_int_equal(res.type, REDIS_REPLY_ERROR);
    assert_true(res.len > 0 && memcmp(res.str, "ERR", 3) == 0);
    ae_redis_get_stats(r, &st);
    assert_int_equal(st.errors, 1);
    /* The connection is still fine. */
    cmd(r, &res, 2, (const char *[]){"INCR", "ae:n"}, NULL);
    assert_int_equal(res.type, REDIS_REPLY_INTEGER);
    assert_int_equal(res.integer, 1);
    /* Mode-changing commands are refused (they would break the reply order). */
    assert_int_equal(
        ae_redis_command(r, reply_cb, &res, 2, (const char *[]){"subscribe", "x"}, NULL),
        AE_ERR_INVAL);
    assert_true(ae_redis_connected(r));
    ae_redis_free(r);
}

/* Redirects stderr (log lines) to a temp file; returns the saved stderr fd. */
static int capture_stderr(char *path, size_t len)
{
    int fd, saved;

    snprintf(path, len, "/tmp/ae_redis_log_XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    saved = dup(2);
    dup2(fd, 2);
    close(fd);
    return saved;
}

static char *restore_stderr(int saved, const char *path)
{
    static char buf[16384];
    FILE *f;
    size_t n;

    dup2(saved, 2);
    close(saved);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    return buf;
}

static int count_lines_with(const char *text, const char *needle)
{
    int n = 0;

    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)len, l);
        if (strstr(line, needle))
            n++;
        l += len + (e ? 1 : 0);
    }
    return n;
}

static void test_auth(void **state)
{
    client_ctx ctx = {0}, bad = {0}, none = {0};
    ae_redis_stats st;
    char url[128], logpath[64];
    int saved_level = ae_log_level_cur;

    server_start(&g_srv, "--requirepass", "s3cret-pw");
    ae_redis *r = client_new(url_for(url, sizeof(url), ":s3cret-pw@", g_srv.port, 0), &ctx);
    wait_connected(r);
    cmd_ok(r, 3, (const char *[]){"SET", "k", "v"});

    ae_log_level_cur = AE_LOG_INFO;
    int saved = capture_stderr(logpath, sizeof(logpath));
    ae_redis *rb = client_new(url_for(url, sizeof(url), ":badpw-9x@", g_srv.port, 0), &bad);
    ae_redis *rn = client_new(url_for(url, sizeof(url), "", g_srv.port, 0), &none);
    spin(800);
    ae_redis_get_stats(rb, &st);
    int again = ae_redis_command(rb, never_called_cb, NULL, 1, (const char *[]){"PING"}, NULL);
    int connected = ae_redis_connected(rb) || ae_redis_connected(rn);
    ae_redis_stats stn;
    ae_redis_get_stats(rn, &stn);
    ae_redis_free(rb);
    ae_redis_free(rn);
    char *log = restore_stderr(saved, logpath);
    ae_log_level_cur = saved_level;

    assert_false(connected);
    assert_int_equal(bad.up, 0);
    assert_int_equal(none.up, 0);
    assert_int_equal(again, AE_ERR_AGAIN);
    assert_true(st.errors >= 3); /* retried with backoff (20..200 ms) */
    assert_int_equal(st.connects, 0);
    assert_true(stn.errors >= 3); /* no password: PING gets NOAUTH */
    /* Logged, but once for the repeated identical failure, and never the password. */
    if (count_lines_with(log, "AUTH failed") != 1)
        fail_msg("want one AUTH failure line, log:\n%s", log);
    assert_int_equal(count_lines_with(log, "PING failed: NOAUTH"), 1);
    assert_null(strstr(log, "badpw-9x"));
    assert_null(strstr(log, "s3cret-pw"));

    assert_true(ae_redis_connected(r));
    ae_redis_free(r);
}

static void test_acl_user(void **state)
{
    client_ctx ctx = {0}, uctx = {0}, bctx = {0};
    result res;
    char url[128];

    server_start(&g_srv, NULL, NULL);
    ae_redis *admin = client_new(url_for(url, sizeof(url), "", g_srv.port, 0), &ctx);
    wait_connected(admin);
    cmd_ok(admin, 6, (const char *[]){"ACL", "SETUSER", "edge@1", "on", ">p:w/@%", "+@all"});
    cmd_ok(admin, 4, (const char *[]){"ACL", "SETUSER", "edge@1", "~*"});

    ae_redis *u =
        client_new(url_for(url, sizeof(url), "edge%401:p%3Aw%2F%40%25@", g_srv.port, 0), &uctx);
    wait_connected(u);
    cmd(u, &res, 2, (const char *[]){"ACL", "WHOAMI"}, NULL);
    assert_int_equal(res.type, REDIS_REPLY_STRING);
    assert_int_equal(res.len, 6);
    assert_memory_equal(res.str, "edge@1", 6);

    ae_redis *b = client_new(url_for(url, sizeof(url), "edge%401:wrong@", g_srv.port, 0), &bctx);
    spin(300);
    ae_redis_stats st;
    ae_redis_get_stats(b, &st);
    assert_false(ae_redis_connected(b));
    assert_int_equal(bctx.up, 0);
    assert_true(st.errors >= 1);
    ae_redis_free(b);
    ae_redis_free(u);
    ae_redis_free(admin);
}

static void test_select(void **state)
{
    client_ctx c3 = {0}, c0 = {0}, c3b = {0};
    result res;
    char url[128];

    server_start(&g_srv, NULL, NULL);
    ae_redis *r3 = client_new(url_for(url, sizeof(url), "", g_srv.port, 3), &c3);
    ae_redis *r0 = client_new(url_for(url, sizeof(url), "", g_srv.port, 0), &c0);
    ae_redis *r3b = client_new(url_for(url, sizeof(url), "", g_srv.port, 3), &c3b);
    wait_connected(r3);
    wait_connected(r0);
    wait_connected(r3b);
    cmd_ok(r3, 3, (const char *[]){"SET", "ae:db", "three"});
    cmd(r0, &res, 2, (const char *[]){"GET", "ae:db"}, NULL);
    assert_int_equal(res.type, REDIS_REPLY_NIL);
    cmd(r3b, &res, 2, (const char *[]){"GET", "ae:db"}, NULL);
    assert_int_equal(res.type, REDIS_REPLY_STRING);
    assert_int_equal(res.len, 5);
    assert_memory_equal(res.str, "three", 5);
    cmd(r0, &res, 1, (const char *[]){"DBSIZE"}, NULL);
    assert_int_equal(res.integer, 0);
    ae_redis_free(r3);
    ae_redis_free(r0);
    ae_redis_free(r3b);
}

static void publish(ae_redis *r, const char *payload, size_t len, long long want_receivers)
{
    result res;
    const char *argv[] = {"PUBLISH", "ae:chan", payload};
    const size_t argvlen[] = {7, 7, len};

    cmd(r, &res, 3, argv, argvlen);
    assert_int_equal(res.type, REDIS_REPLY_INTEGER);
    assert_int_equal(res.integer, want_receivers);
}

static void test_pubsub_reconnect(void **state)
{
    client_ctx ctx = {0};
    ae_redis_stats st;
    char url[128];
    ae_redis_opts o = {.backoff_min_ms = 20,
                       .backoff_max_ms = 100,
                       .subscribe_channel = "ae:chan",
                       .on_state = on_state,
                       .on_message = on_message,
                       .arg = &ctx};

    server_start(&g_srv, "--requirepass", "pw"); /* the subscriber authenticates too */
    ae_redis *r = client_new_opts(url_for(url, sizeof(url), ":pw@", g_srv.port, 5), &o);
    WAIT_UNTIL(ae_redis_connected(r) && ae_redis_subscribed(r), 3000);
    assert_true(ae_redis_connected(r) && ae_redis_subscribed(r));

    publish(r, "one\0x", 5, 1);
    WAIT_UNTIL(ctx.nmsg == 1, 2000);
    assert_int_equal(ctx.nmsg, 1);
    assert_int_equal(ctx.msglen, 5);
    assert_memory_equal(ctx.msg, "one\0x", 5);

    /* Server dies: both connections go down. */
    server_kill(&g_srv);
    WAIT_UNTIL(ctx.down == 1 && !ae_redis_subscribed(r), 3000);
    assert_int_equal(ctx.down, 1);
    assert_int_equal(ctx.last, 0);
    assert_false(ae_redis_connected(r));
    assert_false(ae_redis_subscribed(r));
    assert_int_equal(ae_redis_command(r, never_called_cb, NULL, 1, (const char *[]){"PING"}, NULL),
                     AE_ERR_AGAIN);
    spin(150); /* a few failed reconnects */
    ae_redis_get_stats(r, &st);
    assert_int_equal(st.disconnects, 2);
    assert_true(st.errors >= 2);

    /* Back on the same port: reconnect and re-subscribe. */
    server_start(&g_srv, "--requirepass", "pw");
    WAIT_UNTIL(ae_redis_connected(r) && ae_redis_subscribed(r), 3000);
    assert_true(ae_redis_connected(r));
    assert_true(ae_redis_subscribed(r));
    assert_int_equal(ctx.up, 2);
    assert_int_equal(ctx.last, 1);
    publish(r, "two", 3, 1);
    WAIT_UNTIL(ctx.nmsg == 2, 2000);
    assert_int_equal(ctx.nmsg, 2);
    assert_int_equal(ctx.msglen, 3);
    assert_memory_equal(ctx.msg, "two", 3);
    ae_redis_get_stats(r, &st);
    assert_int_equal(st.messages, 2);
    assert_int_equal(st.connects, 4); /* command + subscriber, twice */
    ae_redis_free(r);
}

static void test_command_timeout(void **state)
{
    client_ctx ctx = {0};
    ae_redis_stats st;
    result r1 = {0}, r2 = {0}, r3;
    char url[128];
    ae_redis_opts o = {.command_timeout_ms = 300,
                       .backoff_min_ms = 20,
                       .backoff_max_ms = 100,
                       .on_state = on_state,
                       .arg = &ctx};

    server_start(&g_srv, NULL, NULL);
    ae_redis *r = client_new_opts(url_for(url, sizeof(url), "", g_srv.port, 0), &o);
    wait_connected(r);
    /* BLPOP with no timeout blocks this connection: neither command is answered. */
    uint64_t t0 = ae_now_ms();
    assert_int_equal(
        ae_redis_command(r, reply_cb, &r1, 3, (const char *[]){"BLPOP", "ae:none", "0"}, NULL), 0);
    assert_int_equal(ae_redis_command(r, reply_cb, &r2, 1, (const char *[]){"PING"}, NULL), 0);
    WAIT_UNTIL(r1.calls && r2.calls, 3000);
    uint64_t took = ae_now_ms() - t0;
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r1.type, -1);
    assert_string_equal(r1.err, "timeout");
    assert_string_equal(r2.err, "timeout");
    assert_true(took >= 290 && took < 1500);
    assert_int_equal(ctx.down, 1);
    ae_redis_get_stats(r, &st);
    assert_int_equal(st.timeouts, 1);

    /* Reconnected; the client works again. */
    WAIT_UNTIL(ctx.up == 2, 3000);
    assert_int_equal(ctx.up, 2);
    cmd(r, &r3, 1, (const char *[]){"PING"}, NULL);
    assert_int_equal(r3.type, REDIS_REPLY_STATUS);
    spin(100);
    assert_int_equal(r1.calls, 1); /* still exactly once */
    assert_int_equal(r2.calls, 1);
    ae_redis_get_stats(r, &st);
    assert_int_equal(st.timeouts, 1);
    ae_redis_free(r);
}

/* A listener that never accepts: the kernel completes TCP connects, nobody answers. */
static int mute_listener(int backlog)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, backlog), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    g_listen_fd = fd;
    return ntohs(a.sin_port);
}

static void test_handshake_timeout(void **state)
{
    client_ctx ctx = {0};
    ae_redis_stats st;
    char url[128];
    ae_redis_opts o = {.connect_timeout_ms = 150,
                       .backoff_min_ms = 20,
                       .backoff_max_ms = 50,
                       .on_state = on_state,
                       .arg = &ctx};
    int port = mute_listener(64);

    ae_redis *r = client_new_opts(url_for(url, sizeof(url), "", port, 0), &o);
    spin(700);
    ae_redis_get_stats(r, &st);
    assert_false(ae_redis_connected(r));
    assert_int_equal(ctx.up + ctx.down, 0);
    assert_true(st.timeouts >= 2);
    assert_int_equal(st.connects, 0);
    assert_int_equal(ae_redis_command(r, never_called_cb, NULL, 1, (const char *[]){"PING"}, NULL),
                     AE_ERR_AGAIN);
    ae_redis_free(r);
}

/* A listener whose accept queue is full: further SYNs are dropped, connect() hangs. Returns
 * the port, or 0 when the kernel did not behave so (the test is then skipped). */
static int full_listener(void)
{
    int port = mute_listener(0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};

    while (g_nfill < (int)AE_ARRAY_LEN(g_fill)) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        assert_true(fd >= 0);
        g_fill[g_nfill++] = fd;
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            continue;
        assert_int_equal(errno, EINPROGRESS);
        if (poll(&pfd, 1, 200) == 0)
            return port; /* this one hangs: the queue is full */
    }
    return 0;
}

static void test_connect_timeout(void **state)
{
    client_ctx ctx = {0};
    ae_redis_stats st;
    char url[128], logpath[64];
    ae_redis_opts o = {.connect_timeout_ms = 150,
                       .backoff_min_ms = 20,
                       .backoff_max_ms = 50,
                       .on_state = on_state,
                       .arg = &ctx};
    int port = full_listener();
    int saved_level = ae_log_level_cur;

    if (!port)
        skip();
    ae_log_level_cur = AE_LOG_INFO;
    int saved = capture_stderr(logpath, sizeof(logpath));
    ae_redis *r = client_new_opts(url_for(url, sizeof(url), "", port, 0), &o);
    spin(500);
    ae_redis_get_stats(r, &st);
    int connected = ae_redis_connected(r);
    ae_redis_free(r);
    char *log = restore_stderr(saved, logpath);
    ae_log_level_cur = saved_level;

    assert_false(connected);
    assert_int_equal(ctx.up + ctx.down, 0);
    assert_true(st.timeouts >= 2);
    if (count_lines_with(log, "connect timeout after 150 ms") != 1)
        fail_msg("want one connect timeout line, log:\n%s", log);
}

static void test_disconnected_again(void **state)
{
    client_ctx ctx = {0};
    ae_redis_stats st;
    char url[128];
    int port = free_port(); /* nobody listens there */

    ae_redis *r = client_new(url_for(url, sizeof(url), "", port, 0), &ctx);
    assert_int_equal(ae_redis_command(r, never_called_cb, NULL, 1, (const char *[]){"PING"}, NULL),
                     AE_ERR_AGAIN);
    spin(200);
    ae_redis_get_stats(r, &st);
    assert_true(st.errors >= 2); /* refused, retried */
    assert_int_equal(st.commands, 0);
    assert_int_equal(ctx.up + ctx.down, 0);
    assert_int_equal(ae_redis_command(r, never_called_cb, NULL, 1, (const char *[]){"PING"}, NULL),
                     AE_ERR_AGAIN);
    ae_redis_free(r);

    /* unix socket that does not exist */
    memset(&ctx, 0, sizeof(ctx));
    r = client_new("unix:///nonexistent/ae-redis.sock", &ctx);
    spin(100);
    ae_redis_get_stats(r, &st);
    assert_true(st.errors >= 2);
    assert_false(ae_redis_connected(r));
    ae_redis_free(r);
    assert_int_equal(never_called_cb_calls, 0);
}

static void test_free_pending(void **state)
{
    client_ctx ctx = {0};
    char url[128];
    ae_redis_opts o = {.command_timeout_ms = 200, .on_state = on_state, .arg = &ctx};

    server_start(&g_srv, NULL, NULL);
    ae_redis *r = client_new_opts(url_for(url, sizeof(url), "", g_srv.port, 0), &o);
    wait_connected(r);
    never_called_cb_calls = 0;
    assert_int_equal(ae_redis_command(r, never_called_cb, NULL, 3,
                                      (const char *[]){"BLPOP", "ae:none", "0"}, NULL),
                     0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(
            ae_redis_command(r, never_called_cb, NULL, 1, (const char *[]){"PING"}, NULL), 0);
    spin(50); /* sent, unanswered */
    ae_redis_free(r);
    spin(400); /* past the command timeout */
    assert_int_equal(never_called_cb_calls, 0);
    assert_int_equal(ctx.down, 0); /* no state callback on free either */

    /* Free right after creation (connect in progress) and with a subscriber. */
    ae_redis_opts o2 = {.subscribe_channel = "c", .on_message = on_message, .arg = &ctx};
    r = client_new_opts(url_for(url, sizeof(url), "", g_srv.port, 0), &o2);
    ae_redis_free(r);
    r = client_new_opts(url_for(url, sizeof(url), "", g_srv.port, 0), &o2);
    WAIT_UNTIL(ae_redis_subscribed(r), 3000);
    assert_true(ae_redis_subscribed(r));
    ae_redis_free(r);
    ae_redis_free(NULL);
    spin(50);
}

static void test_new_invalid(void **state)
{
    ae_redis_target t;
    ae_redis *r = (ae_redis *)0x1;
    ae_redis_opts o = {.subscribe_channel = "c"}; /* on_message missing */

    assert_int_equal(ae_redis_url_parse("redis://127.0.0.1:1", &t, NULL, 0), 0);
    o.target = &t;
    assert_int_equal(ae_redis_new(g_loop, &o, &r), AE_ERR_INVAL);
    assert_null(r);
    o.target = NULL;
    assert_int_equal(ae_redis_new(g_loop, &o, &r), AE_ERR_INVAL);
    ae_redis_target_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_good),
        cmocka_unit_test(test_url_bad),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_sentinel_parse),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_error_reply, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_auth, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_acl_user, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_select, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_pubsub_reconnect, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_command_timeout, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_handshake_timeout, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_disconnected_again, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_free_pending, setup_loop, teardown_all),
        cmocka_unit_test_setup_teardown(test_new_invalid, setup_loop, teardown_all),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
