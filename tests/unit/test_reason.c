/*
 * Close reasons: every enum value has a name, the names are the ones logs and metric labels
 * have always shown, handshake failures take tls/'s names, HTTP/3 streams closed with their
 * connection take quic's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "proxy/core/metrics.h"
#include "proxy/core/reason.h"

static void test_tcp_names(void **state)
{
    (void)state;
    for (int r = 0; r < AE_TCLOSE__COUNT; r++) {
        const char *n = ae_tcp_close_name((ae_tcp_close)r);
        assert_non_null(n);
        assert_string_not_equal(n, "?");
        if (r != AE_TCLOSE_NONE)
            assert_true(n[0] != '\0');
    }
    assert_string_equal(ae_tcp_close_name(AE_TCLOSE_NONE), "");
    assert_string_equal(ae_tcp_close_name(AE_TCLOSE_DONE), "done");
    assert_string_equal(ae_tcp_close_name(AE_TCLOSE_UPSTREAM_WRITE_ERROR), "upstream_write_error");
    assert_string_equal(ae_tcp_close_name(AE_TCLOSE_TLS_ALLOC), "tls_alloc");
    assert_string_equal(ae_tcp_close_name(AE_TCLOSE__COUNT), "?");
}

static void test_tcp_handshake_failures(void **state)
{
    (void)state;
    for (int r = 0; r < AE_TLS_FAIL__COUNT; r++)
        assert_string_equal(ae_tcp_close_name(ae_tcp_close_hs_fail((ae_tls_fail_reason)r)),
                            ae_tls_fail_reason_names[r]);
    assert_string_equal(ae_tcp_close_name(ae_tcp_close_hs_fail(AE_TLS_FAIL_SNI)), "sni");
}

static void test_quic_names(void **state)
{
    (void)state;
    for (int r = 0; r < AE_QCLOSE__COUNT; r++) {
        assert_non_null(ae_quic_close_names[r]);
        assert_true(ae_quic_close_names[r][0] != '\0');
    }
    assert_string_equal(ae_quic_close_names[AE_QCLOSE_PEER_CLOSED], "peer_closed");
    assert_string_equal(ae_quic_close_names[AE_QCLOSE_SHUTDOWN], "shutdown");
}

static void test_quic_causes(void **state)
{
    static const char *const want[] = {"idle_timeout", "peer_closed", "local_close",
                                       "shutdown",     "error",       "no_handshake"};
    (void)state;
    assert_int_equal(AE_QCAUSE__COUNT, sizeof(want) / sizeof(want[0]));
    assert_int_equal(AE_M_QUIC_CLOSE_LAST - AE_M_QUIC_CLOSE_B0 + 1, AE_QCAUSE__COUNT);
    for (int r = 0; r < AE_QCAUSE__COUNT; r++)
        assert_string_equal(ae_quic_close_cause_names[r], want[r]);
}

static void test_h3_names(void **state)
{
    /* The reason= values of HTTP/3 access log lines, as they were when they were strings. */
    static const char *const want[] = {"done",
                                       "done",
                                       "client_reset",
                                       "reset",
                                       "malformed",
                                       "header_too_big",
                                       "connect_not_supported",
                                       "too_early",
                                       "submit_failed",
                                       "nomem",
                                       "no_upstream",
                                       "upstream_connect",
                                       "upstream_connect_timeout",
                                       "upstream_socket",
                                       "upstream_timeout",
                                       "upstream_closed",
                                       "upstream_read_error",
                                       "upstream_head_too_big",
                                       "upstream_bad_response",
                                       "upstream_bad_body",
                                       "upstream_truncated",
                                       "rate_limited"};
    (void)state;
    assert_int_equal(AE_H3CLOSE_CONN_B0, sizeof(want) / sizeof(want[0]));
    for (int r = 0; r < AE_H3CLOSE_CONN_B0; r++)
        assert_string_equal(ae_h3_close_name((ae_h3_close)r), want[r]);
    for (int r = 0; r < AE_H3CLOSE__COUNT; r++) {
        const char *n = ae_h3_close_name((ae_h3_close)r);
        assert_non_null(n);
        assert_true(n[0] != '\0');
        assert_string_not_equal(n, "?");
    }
    assert_string_equal(ae_h3_close_name(AE_H3CLOSE__COUNT), "?");
}

static void test_h3_connection_reasons(void **state)
{
    (void)state;
    for (int r = 0; r < AE_QCLOSE__COUNT; r++)
        assert_string_equal(ae_h3_close_name(ae_h3_close_conn((ae_quic_close)r)),
                            ae_quic_close_names[r]);
    assert_string_equal(ae_h3_close_name(ae_h3_close_conn(AE_QCLOSE_IDLE_TIMEOUT)), "idle_timeout");
    assert_string_equal(ae_h3_close_name(ae_h3_close_conn(AE_QCLOSE_PEER_CLOSED)), "peer_closed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_names),  cmocka_unit_test(test_tcp_handshake_failures),
        cmocka_unit_test(test_quic_names), cmocka_unit_test(test_quic_causes),
        cmocka_unit_test(test_h3_names),   cmocka_unit_test(test_h3_connection_reasons),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
