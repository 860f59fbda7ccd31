/*
 * Session-ticket key ring: states through rotations, and real TLS resumptions (TLS 1.2 and
 * 1.3) through ae_tls_conn over a socketpair, showing which key state opens a ticket.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls/tls.h"
#include "unit_tls.h"

/* ---- ring states ---- */

static void assert_keys_differ(const ae_ticket_key *a, const ae_ticket_key *b)
{
    assert_memory_not_equal(a->name, b->name, AE_TICKET_NAME_LEN);
    assert_memory_not_equal(a->aes, b->aes, AE_TICKET_KEY_LEN);
    assert_memory_not_equal(a->hmac, b->hmac, AE_TICKET_KEY_LEN);
}

static void test_new(void **state)
{
    ae_keyring *r = NULL;
    ae_ticket_key k[4];
    ae_keyring_stats st;
    uint64_t before = ae_wall_ms();

    (void)state;
    assert_int_equal(ae_keyring_new(&r), 0);
    assert_non_null(r);
    memset(k, 0xee, sizeof(k));
    assert_int_equal(ae_keyring_snapshot(r, k, AE_ARRAY_LEN(k)), 2);
    /* newest first: next, then current */
    assert_int_equal(k[0].state, AE_KEY_NEXT);
    assert_int_equal(k[0].id, 2);
    assert_int_equal(k[1].state, AE_KEY_CURRENT);
    assert_int_equal(k[1].id, 1);
    assert_true(k[0].created_ms >= k[1].created_ms);
    assert_true(k[1].created_ms + 60000 >= before && k[0].created_ms <= ae_wall_ms());
    assert_keys_differ(&k[0], &k[1]);
    /* aes and hmac of one key differ too (all random) */
    assert_memory_not_equal(k[0].aes, k[0].hmac, AE_TICKET_KEY_LEN);
    /* untouched beyond the count */
    assert_int_equal(k[2].id, 0xeeeeeeeeeeeeeeeeULL);
    assert_int_equal(ae_keyring_generation(r), 2);

    /* max limits the copy, keeping the newest */
    memset(k, 0, sizeof(k));
    assert_int_equal(ae_keyring_snapshot(r, k, 1), 1);
    assert_int_equal(k[0].id, 2);
    assert_int_equal(k[1].id, 0);
    assert_int_equal(ae_keyring_snapshot(r, k, 0), 0);

    memset(&st, 0xff, sizeof(st));
    ae_keyring_get_stats(r, &st);
    assert_int_equal(st.decrypt_current, 0);
    assert_int_equal(st.decrypt_previous, 0);
    assert_int_equal(st.decrypt_next, 0);
    assert_int_equal(st.decrypt_unknown, 0);
    assert_int_equal(st.encrypt, 0);
    ae_keyring_free(r);
    ae_keyring_free(NULL);
}

static void test_rotate(void **state)
{
    ae_keyring *r = NULL;
    ae_ticket_key before[3], k[4];
    size_t n, i;
    int round;

    (void)state;
    assert_int_equal(ae_keyring_new(&r), 0);
    n = ae_keyring_snapshot(r, before, 3);
    assert_int_equal(n, 2);

    for (round = 1; round <= 5; round++) {
        assert_int_equal(ae_keyring_rotate(r), 0);
        assert_int_equal(ae_keyring_generation(r), 2 + (uint64_t)round);
        memset(k, 0, sizeof(k));
        n = ae_keyring_snapshot(r, k, AE_ARRAY_LEN(k));
        /* next, current, previous: never more than three */
        assert_int_equal(n, 3);
        for (i = 0; i < n; i++) {
            assert_int_equal(k[i].state, (ae_key_state)i);
            assert_int_equal(k[i].id, 2 + (uint64_t)round - i);
        }
        assert_int_equal(k[3].id, 0);
        /* each key moved one state on, bytes unchanged: old next is current, old current
         * is previous; the old previous (if any) is gone */
        assert_memory_equal(&k[1].name, &before[0].name, AE_TICKET_NAME_LEN);
        assert_memory_equal(&k[1].aes, &before[0].aes, AE_TICKET_KEY_LEN);
        assert_memory_equal(&k[1].hmac, &before[0].hmac, AE_TICKET_KEY_LEN);
        assert_int_equal(k[1].created_ms, before[0].created_ms);
        assert_memory_equal(&k[2].name, &before[1].name, AE_TICKET_NAME_LEN);
        assert_memory_equal(&k[2].aes, &before[1].aes, AE_TICKET_KEY_LEN);
        /* the fresh next key differs from every key seen before */
        for (i = 0; i < 3; i++)
            if (round > 1 || i < 2)
                assert_keys_differ(&k[0], &before[i]);
        assert_keys_differ(&k[0], &k[1]);
        assert_keys_differ(&k[0], &k[2]);
        assert_keys_differ(&k[1], &k[2]);
        memcpy(before, k, sizeof(before));
    }
    ae_keyring_free(r);
}

/* ---- TLS resumption through ae_tls_conn ---- */

typedef struct {
    char dir[256];
    ae_conf *conf;
    ae_keyring *ring;
    ae_tls_ctx *tls;
    SSL_CTX *cctx;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    char err[512];

    assert_non_null(f);
    ut_tmpdir(f->dir, sizeof(f->dir));
    ut_make_cert(f->dir, "edge.pem", "edge.key", "edge.test", 0);
    f->conf = ut_load_conf(f->dir, "tls:\n"
                                   "  cert: edge.pem\n"
                                   "  key: edge.key\n"
                                   "  alpn: [h2, http/1.1]\n"
                                   "listeners:\n"
                                   "  - {name: l, address: \"127.0.0.1:8443\", upstream: u}\n"
                                   "upstreams:\n"
                                   "  u: {servers: [\"127.0.0.1:80\"]}\n");
    assert_int_equal(ae_keyring_new(&f->ring), 0);
    if (ae_tls_ctx_new(f->conf, f->ring, &f->tls, err, sizeof(err)) != 0)
        fail_msg("ae_tls_ctx_new: %s", err);
    f->cctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(f->cctx);
    SSL_CTX_set_verify(f->cctx, SSL_VERIFY_NONE, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    SSL_CTX_free(f->cctx);
    ae_tls_ctx_free(f->tls);
    ae_keyring_free(f->ring);
    ae_conf_free(f->conf);
    ut_rmdir(f->dir);
    free(f);
    return 0;
}

typedef struct {
    int resumed;         /* client's view */
    int server_resumed;  /* ae_tls_conn_resumed() */
    SSL_SESSION *ticket; /* session the client holds afterwards (caller frees) */
    char alpn[32], sni[64], version[16];
} conn_result;

static void set_nonblock(int fd)
{
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* Runs one client connection against an ae_tls_conn over a socketpair: handshake (presenting
 * sess when not NULL), the server sends "hello", the client reads it (which processes TLS 1.3
 * tickets), then both close. */
static conn_result run_conn(fixture *f, int max_version, SSL_SESSION *sess)
{
    conn_result res;
    int sv[2], cdone = 0, sdone = 0, i;
    ae_tls_conn *srv = NULL;
    ae_tls_fail_reason reason = AE_TLS_FAIL__COUNT;
    SSL *cli;
    char buf[16];
    size_t got = 0;
    ssize_t w = 0;

    memset(&res, 0, sizeof(res));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    set_nonblock(sv[0]);
    set_nonblock(sv[1]);
    assert_int_equal(ae_tls_conn_new(f->tls, sv[1], &srv), 0);
    cli = SSL_new(f->cctx);
    assert_non_null(cli);
    assert_int_equal(SSL_set_max_proto_version(cli, max_version), 1);
    assert_int_equal(SSL_set_fd(cli, sv[0]), 1);
    assert_int_equal(SSL_set_tlsext_host_name(cli, "edge.test"), 1);
    assert_int_equal(SSL_set_alpn_protos(cli, (const unsigned char *)"\x08http/1.1", 9), 0);
    if (sess != NULL)
        assert_int_equal(SSL_set_session(cli, sess), 1);
    SSL_set_connect_state(cli);

    for (i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone) {
            int ret = SSL_do_handshake(cli);
            if (ret == 1)
                cdone = 1;
            else {
                int e = SSL_get_error(cli, ret);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    fail_msg("client handshake error %d", e);
            }
        }
        if (!sdone) {
            int rv = ae_tls_conn_handshake(srv, &reason);
            if (rv == 0)
                sdone = 1;
            else if (rv != AE_TLS_WANT_READ && rv != AE_TLS_WANT_WRITE)
                fail_msg("server handshake %d, reason %d", rv, (int)reason);
        }
    }
    assert_true(cdone && sdone);
    assert_int_equal(reason, AE_TLS_FAIL__COUNT); /* untouched on success */

    /* server -> client application data */
    for (i = 0; i < 100 && (w <= 0 || got < 5); i++) {
        if (w <= 0) {
            w = ae_tls_conn_write(srv, "hello", 5);
            if (w <= 0 && w != AE_TLS_WANT_READ && w != AE_TLS_WANT_WRITE)
                fail_msg("server write %zd", w);
        }
        if (got < 5) {
            size_t n = 0;
            if (SSL_read_ex(cli, buf + got, sizeof(buf) - got, &n) == 1)
                got += n;
            else {
                int e = SSL_get_error(cli, 0);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    fail_msg("client read error %d", e);
            }
        }
    }
    assert_int_equal(w, 5);
    assert_int_equal(got, 5);
    assert_memory_equal(buf, "hello", 5);

    /* client -> server too, so both directions work */
    assert_int_equal(SSL_write(cli, "ping", 4), 4);
    for (i = 0; i < 100; i++) {
        ssize_t n = ae_tls_conn_read(srv, buf, sizeof(buf));
        if (n > 0) {
            assert_int_equal(n, 4);
            assert_memory_equal(buf, "ping", 4);
            break;
        }
        assert_true(n == AE_TLS_WANT_READ || n == AE_TLS_WANT_WRITE);
    }
    assert_true(i < 100);

    res.resumed = SSL_session_reused(cli);
    res.server_resumed = ae_tls_conn_resumed(srv);
    snprintf(res.alpn, sizeof(res.alpn), "%s", ae_tls_conn_alpn(srv));
    snprintf(res.sni, sizeof(res.sni), "%s", ae_tls_conn_sni(srv));
    snprintf(res.version, sizeof(res.version), "%s", ae_tls_conn_version(srv));
    res.ticket = SSL_get1_session(cli);
    assert_non_null(res.ticket);
    assert_int_equal(SSL_SESSION_is_resumable(res.ticket), 1);
    assert_int_equal(SSL_SESSION_has_ticket(res.ticket), 1);

    /* clean close: the client's session stays resumable only after its close_notify */
    assert_true(SSL_shutdown(cli) >= 0);
    assert_int_equal(ae_tls_conn_shutdown(srv), 0);
    /* the server sees the client's close_notify as a clean close */
    for (i = 0; i < 100; i++) {
        ssize_t n = ae_tls_conn_read(srv, buf, sizeof(buf));
        if (n == AE_ERR_CLOSED)
            break;
        assert_true(n == AE_TLS_WANT_READ || n == AE_TLS_WANT_WRITE);
    }
    assert_true(i < 100);
    SSL_free(cli);
    ae_tls_conn_free(srv);
    close(sv[0]);
    close(sv[1]);
    return res;
}

static void expect_stats(ae_keyring *r, uint64_t cur, uint64_t prev, uint64_t next,
                         uint64_t unknown, uint64_t enc)
{
    ae_keyring_stats st;

    ae_keyring_get_stats(r, &st);
    if (st.decrypt_current != cur || st.decrypt_previous != prev || st.decrypt_next != next ||
        st.decrypt_unknown != unknown || st.encrypt != enc)
        fail_msg("stats current=%llu previous=%llu next=%llu unknown=%llu encrypt=%llu, "
                 "want %llu %llu %llu %llu %llu",
                 (unsigned long long)st.decrypt_current, (unsigned long long)st.decrypt_previous,
                 (unsigned long long)st.decrypt_next, (unsigned long long)st.decrypt_unknown,
                 (unsigned long long)st.encrypt, (unsigned long long)cur, (unsigned long long)prev,
                 (unsigned long long)next, (unsigned long long)unknown, (unsigned long long)enc);
}

static void check_facts(const conn_result *r, const char *version, int resumed)
{
    assert_int_equal(r->resumed, resumed);
    assert_int_equal(r->server_resumed, resumed);
    assert_string_equal(r->version, version);
    assert_string_equal(r->alpn, "http/1.1");
    assert_string_equal(r->sni, "edge.test");
}

/*
 * The walk through the ring, for either TLS version:
 *   full handshake -> ticket T1 under key 1 (current)
 *   resume T1                        -> current key
 *   rotate; resume T1                -> previous key: resumes, ticket renewed
 *   rotate twice (key 1 retired); T1 -> full handshake, counted unknown
 * Both versions issue one ticket on a full handshake and on a renewal (a ticket opened by
 * the previous key). On a resumption with the current key TLS 1.2 issues none (the client
 * keeps its ticket) and TLS 1.3 issues a fresh one: 1.3 tickets are single-use (RFC 8446 C.4).
 */
static void resume_walk(fixture *f, int version)
{
    const char *vname = version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2";
    conn_result r1, r2, r3, r4;
    ae_ticket_key k[3];
    const uint64_t t13 = version == TLS1_3_VERSION;

    r1 = run_conn(f, version, NULL);
    check_facts(&r1, vname, 0);
    expect_stats(f->ring, 0, 0, 0, 0, 1);

    r2 = run_conn(f, version, r1.ticket);
    check_facts(&r2, vname, 1);
    expect_stats(f->ring, 1, 0, 0, 0, 1 + t13);

    /* key 1 becomes previous: still opens T1, and the ticket is renewed */
    assert_int_equal(ae_keyring_rotate(f->ring), 0);
    assert_int_equal(ae_keyring_snapshot(f->ring, k, 3), 3);
    assert_int_equal(k[2].id, 1);
    assert_int_equal(k[2].state, AE_KEY_PREVIOUS);
    r3 = run_conn(f, version, r1.ticket);
    check_facts(&r3, vname, 1);
    expect_stats(f->ring, 1, 1, 0, 0, 2 + t13);

    /* the renewed ticket (under key 2, now current) opens with the current key */
    r4 = run_conn(f, version, r3.ticket);
    check_facts(&r4, vname, 1);
    expect_stats(f->ring, 2, 1, 0, 0, 2 + 2 * t13);
    SSL_SESSION_free(r4.ticket);

    /* two more rotations: keys 1 and 2 (T1's and T3's) are retired, 3 is previous */
    assert_int_equal(ae_keyring_rotate(f->ring), 0);
    assert_int_equal(ae_keyring_rotate(f->ring), 0);
    assert_int_equal(ae_keyring_snapshot(f->ring, k, 3), 3);
    assert_int_equal(k[2].id, 3);
    r4 = run_conn(f, version, r1.ticket);
    check_facts(&r4, vname, 0);
    expect_stats(f->ring, 2, 1, 0, 1, 3 + 2 * t13);
    SSL_SESSION_free(r4.ticket);

    /* T3 was issued under key 2, which is retired now as well */
    r4 = run_conn(f, version, r3.ticket);
    check_facts(&r4, vname, 0);
    expect_stats(f->ring, 2, 1, 0, 2, 4 + 2 * t13);

    SSL_SESSION_free(r1.ticket);
    SSL_SESSION_free(r2.ticket);
    SSL_SESSION_free(r3.ticket);
    SSL_SESSION_free(r4.ticket);
}

static void test_resume_tls13(void **state)
{
    resume_walk(*state, TLS1_3_VERSION);
}

static void test_resume_tls12(void **state)
{
    resume_walk(*state, TLS1_2_VERSION);
}

/* A ticket from another ring (another process or site without shared keys) is unknown here:
 * full handshake, counted, no error. */
static void test_foreign_ticket(void **state)
{
    fixture *f = *state;
    ae_keyring *other;
    ae_tls_ctx *otls;
    char err[512];
    conn_result r1, r2;

    assert_int_equal(ae_keyring_new(&other), 0);
    if (ae_tls_ctx_new(f->conf, other, &otls, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    /* ticket from a context using the other ring */
    {
        ae_tls_ctx *mine = f->tls;
        f->tls = otls;
        r1 = run_conn(f, TLS1_3_VERSION, NULL);
        f->tls = mine;
    }
    r2 = run_conn(f, TLS1_3_VERSION, r1.ticket);
    check_facts(&r2, "TLSv1.3", 0);
    expect_stats(f->ring, 0, 0, 0, 1, 1);
    SSL_SESSION_free(r1.ticket);
    SSL_SESSION_free(r2.ticket);
    ae_tls_ctx_free(otls);
    ae_keyring_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_rotate),
        cmocka_unit_test_setup_teardown(test_resume_tls13, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_tls12, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_ticket, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
