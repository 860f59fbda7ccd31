/*
 * libFuzzer harness for the Redis URL parser ae_redis_url_parse (state/redis.c):
 * "redis://[[user]:pass@]host:port[/db]", the same with "rediss://" (TLS), and
 * "unix:///path[?db=N]", with %XX decoding of user and password.
 *
 * The input is the URL (up to its first NUL), also parsed as a sentinel's "host:port"
 * (ae_redis_sentinel_parse, state/sentinel.c). Checked beyond "no crash" and no leak (the
 * target is freed on both paths):
 *   - an accepted URL names exactly one of a host (port 1..65535) or a socket path, and a db
 *     >= 0; ae_redis_target_describe() output is NUL-terminated and does not depend on the
 *     user or password (the same target without them describes identically);
 *   - a refused one leaves the target empty (all NULL) and a one-line reason that does not hold
 *     the text between "redis://...:" and "@" (when that is 6 or more characters long and has
 *     a character none of the fixed reasons uses).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "state/redis.h"
#include "tests/fuzz/fuzz_common.h"

/* The raw password of a redis:// URL (between the first ':' of the userinfo and the last '@'
 * before the path), or NULL. */
static char *raw_password(const char *url)
{
    size_t skip = strncasecmp(url, "redis://", 8) == 0    ? 8
                  : strncasecmp(url, "rediss://", 9) == 0 ? 9
                                                          : 0;
    if (skip == 0)
        return NULL;
    const char *p = url + skip, *end = p + strcspn(p, "/"), *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at == NULL)
        return NULL;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon == NULL || at - colon - 1 < 6)
        return NULL;
    /* The reasons are fixed texts ("bad %-escape in password"...): a password made only of
     * the characters they use could match one by chance. Only a password with a character no
     * reason contains is a fair test of "the reason does not echo the input". */
    int marked = 0;
    for (const char *q = colon + 1; q < at; q++)
        if ((unsigned char)*q >= 0x80 || strchr("~#!$&*+;<>^`{|}", *q) != NULL)
            marked = 1;
    if (!marked)
        return NULL;
    return strndup(colon + 1, (size_t)(at - colon - 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024)
        return 0;
    char *url = (char *)fz_copy(data, size, 1);
    char err[256], desc[512], desc2[512];
    ae_redis_target t;

    /* The same bytes as a sentinel's host:port (state.sentinels): accepted means a non-empty
     * host of name/address characters (':' only inside brackets) and a port 1..65535. */
    struct ae_redis_sentinel sn;
    if (ae_redis_sentinel_parse(url, &sn) == 0) {
        size_t hl = strlen(sn.host);
        if (hl == 0 || sn.port < 1 || sn.port > 65535 ||
            (strchr(sn.host, ':') != NULL && url[0] != '[') ||
            strspn(sn.host, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-._:") !=
                hl)
            abort();
        free(sn.host);
    } else if (sn.host != NULL) {
        abort();
    }

    memset(err, 0x55, sizeof(err));
    int rc = ae_redis_url_parse(url, &t, err, sizeof(err));
    if (rc != 0) {
        char *pw = raw_password(url);
        if (t.host != NULL || t.unix_path != NULL || t.user != NULL || t.password != NULL ||
            memchr(err, 0, sizeof(err)) == NULL || strchr(err, '\n') != NULL ||
            (pw != NULL && strstr(err, pw) != NULL))
            abort();
        free(pw);
        free(url);
        return 0;
    }
    if ((t.host == NULL) == (t.unix_path == NULL) || t.db < 0 ||
        t.tls != (strncasecmp(url, "rediss://", 9) == 0) ||
        (t.host != NULL && (t.port < 1 || t.port > 65535)))
        abort();
    ae_redis_target_describe(&t, desc, sizeof(desc));
    if (memchr(desc, 0, sizeof(desc)) == NULL)
        abort();
    /* The description must not depend on the password or the user at all: the same target
     * without them describes identically. (A substring test gives false alarms when the
     * password happens to equal a piece of "host:port".) */
    char *pw = t.password, *user = t.user;
    t.password = NULL;
    t.user = NULL;
    ae_redis_target_describe(&t, desc2, sizeof(desc2));
    t.password = pw;
    t.user = user;
    if (strcmp(desc, desc2) != 0)
        abort();
    ae_redis_target_free(&t);
    free(url);
    return 0;
}
