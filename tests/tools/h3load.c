/*
 * ae-h3load: a small HTTP/3 load client on libcurl-gnutls (curl 8.x with ngtcp2 + nghttp3).
 *
 *   ae-h3load [-k] [-N] [-c CONNECTIONS] [-m STREAMS] [-d SECONDS] [-n MAX_REQUESTS]
 *             [-t TIMEOUT] [-u BYTES] URL
 *
 * Keeps CONNECTIONS x STREAMS GET transfers of URL in flight for SECONDS (default 1 x 1, 5 s),
 * over HTTP/3 only, and prints the totals when the last one finished:
 *
 *   requests <n> bytes <n> errors <n> non2xx <n> seconds <s> connections <n> cpu <s> sent <n>
 *
 * requests: transfers that completed with a response (any status); bytes: response body bytes;
 * errors: transfers that failed (curl error, including the per-transfer TIMEOUT, default 30 s);
 * non2xx: completed with a status outside 200..299; seconds: start to the last completion;
 * connections: QUIC connections curl opened; cpu: this process's user+system CPU seconds;
 * sent: request body bytes of the completed transfers.
 *
 *   -c  connections (1..1024). Without -N the transfers are multiplexed on the connections
 *       (CURLPIPE_MULTIPLEX, CURLMOPT_MAX_HOST_CONNECTIONS = c,
 *       CURLMOPT_MAX_CONCURRENT_STREAMS = m; with -c 1 CURLOPT_PIPEWAIT so every stream waits
 *       for the one connection instead of opening more).
 *   -m  concurrent streams per connection (1..1000).
 *   -N  a new QUIC connection per request (CURLOPT_FRESH_CONNECT + CURLOPT_FORBID_REUSE, and no
 *       TLS session cache, so every request costs a full handshake); c x m connections in flight.
 *   -d  duration in seconds (1..3600): no new transfer starts after it; the ones in flight get
 *       up to TIMEOUT more seconds, then they are aborted and counted as errors.
 *   -n  stop starting transfers after this many (default: no limit but the duration).
 *   -k  do not verify the server certificate.
 *   -u  POST a body of BYTES (1..1 GiB, a fixed pattern, with Content-Length) instead of GET.
 *
 * Exit status: 0 when at least one request completed and none failed, 1 otherwise, 2 on usage
 * errors, 77 when this libcurl has no HTTP/3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

typedef struct {
    CURL *h;
    unsigned long long *bytes;
} xfer;

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    (void)p;
    *(unsigned long long *)arg += sz * n;
    return sz * n;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void usage(void)
{
    fprintf(stderr, "usage: ae-h3load [-k] [-N] [-c CONNECTIONS] [-m STREAMS] [-d SECONDS] "
                    "[-n MAX_REQUESTS] [-t TIMEOUT] [-u BYTES] URL\n");
}

int main(int argc, char **argv)
{
    long conns = 1, streams = 1, duration = 5, timeout = 30;
    long long max_requests = -1, started = 0, upload = 0;
    char *body = NULL;
    int insecure = 0, fresh = 0, opt, running = 0, inflight = 0;
    unsigned long long requests = 0, errors = 0, non2xx = 0, bytes = 0, nconns = 0, sent = 0;
    double t0, deadline, hard_deadline, t_end;
    const char *url;
    xfer *xs;
    CURLM *m;
    long n;

    while ((opt = getopt(argc, argv, "kNc:m:d:n:t:u:h")) != -1) {
        switch (opt) {
        case 'k':
            insecure = 1;
            break;
        case 'N':
            fresh = 1;
            break;
        case 'c':
            conns = strtol(optarg, NULL, 10);
            break;
        case 'm':
            streams = strtol(optarg, NULL, 10);
            break;
        case 'd':
            duration = strtol(optarg, NULL, 10);
            break;
        case 'n':
            max_requests = strtoll(optarg, NULL, 10);
            break;
        case 't':
            timeout = strtol(optarg, NULL, 10);
            break;
        case 'u':
            upload = strtoll(optarg, NULL, 10);
            if (upload < 1 || upload > (1LL << 30)) {
                usage();
                return 2;
            }
            break;
        default:
            usage();
            return 2;
        }
    }
    if (optind != argc - 1 || conns < 1 || conns > 1024 || streams < 1 || streams > 1000 ||
        conns * streams > 10000 || duration < 1 || duration > 3600 || timeout < 1 ||
        timeout > 600 || max_requests == 0 || max_requests < -1) {
        usage();
        return 2;
    }
    url = argv[optind];
    if (upload > 0) {
        body = malloc((size_t)upload); /* one body for every transfer: curl only reads it */
        if (body == NULL) {
            perror("malloc");
            return 1;
        }
        for (long long i = 0; i < upload; i++)
            body[i] = (char)('a' + i % 26);
    }
    if (!(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP3)) {
        fprintf(stderr, "ae-h3load: this libcurl has no HTTP/3\n");
        return 77;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    m = curl_multi_init();
    n = conns * streams;
    if (fresh) {
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, n);
    } else {
        curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, conns);
        curl_multi_setopt(m, CURLMOPT_MAX_CONCURRENT_STREAMS, streams);
    }
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, n + 1);

    xs = calloc((size_t)n, sizeof(*xs));
    if (xs == NULL) {
        perror("calloc");
        return 1;
    }
    t0 = now();
    deadline = t0 + (double)duration;
    hard_deadline = deadline + (double)timeout;
    for (long i = 0; i < n; i++) {
        xfer *x = &xs[i];
        x->h = curl_easy_init();
        x->bytes = &bytes;
        curl_easy_setopt(x->h, CURLOPT_URL, url);
        curl_easy_setopt(x->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_3ONLY);
        curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(x->h, CURLOPT_WRITEDATA, &bytes);
        curl_easy_setopt(x->h, CURLOPT_TIMEOUT, timeout);
        curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
        curl_easy_setopt(x->h, CURLOPT_NOSIGNAL, 1L);
        if (body != NULL) {
            curl_easy_setopt(x->h, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(x->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)upload);
        }
        if (fresh) {
            curl_easy_setopt(x->h, CURLOPT_FRESH_CONNECT, 1L);
            curl_easy_setopt(x->h, CURLOPT_FORBID_REUSE, 1L);
            curl_easy_setopt(x->h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
        } else if (conns == 1) {
            curl_easy_setopt(x->h, CURLOPT_PIPEWAIT, 1L);
        }
        if (insecure) {
            curl_easy_setopt(x->h, CURLOPT_SSL_VERIFYPEER, 0L);
            curl_easy_setopt(x->h, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        if (max_requests < 0 || started < max_requests) {
            curl_multi_add_handle(m, x->h);
            started++;
            inflight++;
        }
    }

    while (inflight > 0) {
        CURLMsg *msg;
        int left;
        double t;

        if (curl_multi_perform(m, &running) != CURLM_OK) {
            fprintf(stderr, "ae-h3load: curl_multi_perform failed\n");
            break;
        }
        t = now();
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            CURL *h;
            long status = 0, nc = 0;
            if (msg->msg != CURLMSG_DONE)
                continue;
            h = msg->easy_handle;
            curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &nc);
            nconns += (unsigned long long)nc;
            if (msg->data.result != CURLE_OK) {
                errors++;
            } else {
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
                requests++;
                sent += (unsigned long long)upload;
                if (status < 200 || status > 299)
                    non2xx++;
            }
            curl_multi_remove_handle(m, h);
            inflight--;
            if (t < deadline && (max_requests < 0 || started < max_requests)) {
                curl_multi_add_handle(m, h);
                started++;
                inflight++;
            }
        }
        if (inflight == 0)
            break;
        if (t >= hard_deadline) {
            fprintf(stderr, "ae-h3load: %d transfer(s) still running after the grace period\n",
                    inflight);
            errors += (unsigned long long)inflight;
            break;
        }
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    t_end = now();

    printf("requests %llu bytes %llu errors %llu non2xx %llu seconds %.3f connections %llu "
           "cpu %.3f sent %llu\n",
           requests, bytes, errors, non2xx, t_end - t0, nconns, cpu_seconds(), sent);
    for (long i = 0; i < n; i++) {
        curl_multi_remove_handle(m, xs[i].h);
        curl_easy_cleanup(xs[i].h);
    }
    free(xs);
    free(body);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    return (requests > 0 && errors == 0) ? 0 : 1;
}
