/*
 * ae-h3get: a small HTTP/3 test client on libcurl-gnutls (curl 8.x with ngtcp2 + nghttp3).
 *
 *   ae-h3get [-k] [-n COUNT] [-d FILE] [-o FILE] [-i FILE] [-H 'Name: value'] [-r RATE] [-S]
 *            URL
 *
 * Fetches URL COUNT times (default 1) over HTTP/3 only, all transfers multiplexed on one QUIC
 * connection (curl multi, CURLPIPE_MULTIPLEX). -d sends FILE as a POST body. -o writes the
 * body of the first transfer to FILE (default: discard), -i its response header lines (as curl
 * hands them over: the status line, then one "name: value" line per field). -r caps each
 * transfer's receive rate at RATE bytes per second (CURLOPT_MAX_RECV_SPEED_LARGE), e.g. to make a
 * download last through a series of reloads. Prints one line per
 * transfer:
 *   "<index> <http status> <body bytes> <sha256 hex>"
 * and, with -S, a last line "connections <n>" (QUIC connections curl opened). Exit 0 when every
 * transfer completed with a response, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#define MAX_XFERS 1000

typedef struct {
    CURL *h;
    EVP_MD_CTX *md;
    size_t bytes;
    FILE *out;
    FILE *hdr; /* -i: the response header lines (first transfer) */
    int done;
    CURLcode rc;
} xfer;

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    xfer *x = arg;
    size_t len = sz * n;
    EVP_DigestUpdate(x->md, p, len);
    x->bytes += len;
    if (x->out != NULL && fwrite(p, 1, len, x->out) != len)
        return 0;
    return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    xfer *x = arg;
    size_t len = sz * n;
    if (x->hdr != NULL && fwrite(p, 1, len, x->hdr) != len)
        return 0;
    return len;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
        goto out;
    buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    *len = (size_t)n;
out:
    if (f != NULL)
        fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    const char *data_file = NULL, *out_file = NULL, *hdr_file = NULL;
    struct curl_slist *hdrs = NULL;
    int insecure = 0, count = 1, stats = 0, opt, running = 0, failed = 0;
    char *body = NULL;
    size_t body_len = 0;
    long conns = 0;
    curl_off_t rate = 0;
    xfer *xs;
    CURLM *m;

    while ((opt = getopt(argc, argv, "kn:d:o:i:H:r:S")) != -1) {
        switch (opt) {
        case 'k':
            insecure = 1;
            break;
        case 'n':
            count = atoi(optarg);
            break;
        case 'd':
            data_file = optarg;
            break;
        case 'o':
            out_file = optarg;
            break;
        case 'i':
            hdr_file = optarg;
            break;
        case 'H':
            hdrs = curl_slist_append(hdrs, optarg);
            break;
        case 'r':
            rate = (curl_off_t)strtoll(optarg, NULL, 10);
            break;
        case 'S':
            stats = 1;
            break;
        default:
            fprintf(stderr,
                    "usage: ae-h3get [-k] [-n COUNT] [-d FILE] [-o FILE] [-i FILE] [-H HDR] "
                    "[-r RATE] [-S] URL\n");
            return 2;
        }
    }
    if (optind != argc - 1 || count < 1 || count > MAX_XFERS) {
        fprintf(stderr, "ae-h3get: one URL and 1 <= COUNT <= %d\n", MAX_XFERS);
        return 2;
    }
    if (!(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP3)) {
        fprintf(stderr, "ae-h3get: this libcurl has no HTTP/3\n");
        return 77;
    }
    if (data_file != NULL && (body = read_file(data_file, &body_len)) == NULL) {
        perror(data_file);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
    xs = calloc((size_t)count, sizeof(*xs));
    for (int i = 0; i < count; i++) {
        xfer *x = &xs[i];
        x->h = curl_easy_init();
        x->md = EVP_MD_CTX_new();
        EVP_DigestInit_ex(x->md, EVP_sha256(), NULL);
        if (i == 0 && out_file != NULL && (x->out = fopen(out_file, "wb")) == NULL) {
            perror(out_file);
            return 2;
        }
        if (i == 0 && hdr_file != NULL && (x->hdr = fopen(hdr_file, "wb")) == NULL) {
            perror(hdr_file);
            return 2;
        }
        curl_easy_setopt(x->h, CURLOPT_URL, argv[optind]);
        curl_easy_setopt(x->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_3ONLY);
        curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(x->h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(x->h, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(x->h, CURLOPT_PIPEWAIT, 1L);
        curl_easy_setopt(x->h, CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
        if (rate > 0)
            curl_easy_setopt(x->h, CURLOPT_MAX_RECV_SPEED_LARGE, rate);
        if (hdrs != NULL)
            curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, hdrs);
        if (insecure) {
            curl_easy_setopt(x->h, CURLOPT_SSL_VERIFYPEER, 0L);
            curl_easy_setopt(x->h, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        if (body != NULL) {
            curl_easy_setopt(x->h, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(x->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        }
        curl_multi_add_handle(m, x->h);
    }
    do {
        CURLMsg *msg;
        int left;
        if (curl_multi_perform(m, &running) != CURLM_OK)
            break;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            xfer *x;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            x->done = 1;
            x->rc = msg->data.result;
        }
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    } while (running > 0);

    for (int i = 0; i < count; i++) {
        xfer *x = &xs[i];
        unsigned char dg[32];
        unsigned int dl = 0;
        char hex[65];
        long status = 0, nc = 0;

        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(x->h, CURLINFO_NUM_CONNECTS, &nc);
        conns += nc;
        EVP_DigestFinal_ex(x->md, dg, &dl);
        for (unsigned j = 0; j < dl; j++)
            snprintf(hex + 2 * j, 3, "%02x", dg[j]);
        if (!x->done || x->rc != CURLE_OK || status == 0) {
            fprintf(stderr, "ae-h3get: transfer %d: %s\n", i,
                    x->done ? curl_easy_strerror(x->rc) : "not finished");
            failed = 1;
        }
        printf("%d %ld %zu %s\n", i, status, x->bytes, hex);
        if (x->out != NULL)
            fclose(x->out);
        if (x->hdr != NULL)
            fclose(x->hdr);
        EVP_MD_CTX_free(x->md);
        curl_multi_remove_handle(m, x->h);
        curl_easy_cleanup(x->h);
    }
    if (stats)
        printf("connections %ld\n", conns);
    free(xs);
    free(body);
    curl_slist_free_all(hdrs);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    return failed;
}
