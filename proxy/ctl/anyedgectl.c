/*
 * anyedgectl: command-line client of anyedge's admin endpoint.
 *
 *   anyedgectl [-a ADDR | -c CONFIG] [-t SECONDS] status|metrics|sites|whereis CID|reload|keys
 * rotate anyedgectl [-a ADDR | -c CONFIG] [-t SECONDS] drain|undrain
 *
 * The admin endpoint is -a ADDR or -s SOCKET; with -c CONFIG, the config's admin.socket when set
 * (and present), else its admin.address; else the default 127.0.0.1:9901. The token of the POST
 * routes comes from -T FILE, or from the config's admin.token_file with -c. Exit status: 0 on a 2xx
 * answer, 1 on any other answer (its body is printed to stderr), 2 on usage errors, 3 when the
 * endpoint cannot be reached.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/conf.h"

#define CTL_DEFAULT_ADDR "127.0.0.1:9901"
#define CTL_MAX_RESPONSE (16u << 20)

static void usage(FILE *f)
{
    fprintf(f,
            "usage: anyedgectl [-a ADDR | -s SOCKET | -c CONFIG] [-T TOKEN_FILE] [-t SECONDS] "
            "COMMAND\n"
            "commands:\n"
            "  status        print the /status JSON document\n"
            "  metrics       print the Prometheus metrics\n"
            "  sites         list the sites registered in Redis and their liveness (JSON)\n"
            "  whereis CID   owner site and worker of a QUIC connection ID (hex), and whether "
            "it is alive\n"
            "  whereis tcp CLIENT LOCAL   whether a TCP 4-tuple (ADDR:PORT each) is a connection "
            "of this site, and where the TCP hand-off sends it\n"
            "  reload        reload the configuration (as SIGHUP does), print the result\n"
            "  keys rotate   rotate the session-ticket key ring now\n"
            "  drain         withdraw the anycast route and drain the site (keeps running)\n"
            "  undrain       end the drain: announce again once healthy\n"
            "options:\n"
            "  -a ADDR       admin endpoint, e.g. 127.0.0.1:9901 or [::1]:9901\n"
            "  -s SOCKET     admin endpoint on a Unix socket (admin.socket)\n"
            "  -c CONFIG     take the endpoint from this config (admin.socket when set, else\n"
            "                admin.address) and the token from its admin.token_file\n"
            "  -T FILE       send the token in FILE (admin.token_file) as a bearer token\n"
            "  -t SECONDS    overall timeout (default 10)\n");
}

/* Waits for fd to become ready for events within the deadline; 0, or -1 with errno. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - (int64_t)ae_now_ms();
        struct pollfd p = {.fd = fd, .events = events};
        int n;

        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        n = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* Sends the request and reads the whole response (the server closes after it) into a malloc'd
 * buffer. Returns 0, or -1 with a message in err. */
static int exchange(const ae_addr *addr, const char *req, int64_t deadline_ms, char **out,
                    size_t *outlen, char *err, size_t errlen)
{
    int fd, soerr = 0;
    socklen_t sl = sizeof(soerr);
    size_t off = 0, len = strlen(req), cap = 4096, n = 0;
    char *buf = NULL;

    fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)&addr->sa, addr->len) != 0) {
        if (errno != EINPROGRESS)
            goto sys_fail;
        if (wait_fd(fd, POLLOUT, deadline_ms) != 0)
            goto sys_fail;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            goto sys_fail;
        if (soerr != 0) {
            errno = soerr;
            goto sys_fail;
        }
    }
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            goto sys_fail;
        if (wait_fd(fd, POLLOUT, deadline_ms) != 0)
            goto sys_fail;
    }
    buf = malloc(cap);
    if (buf == NULL)
        goto sys_fail;
    for (;;) {
        ssize_t r;

        if (n + 1 >= cap) {
            char *nb;
            if (cap >= CTL_MAX_RESPONSE) {
                snprintf(err, errlen, "response from %s larger than %u bytes", addr->text,
                         CTL_MAX_RESPONSE);
                goto fail;
            }
            nb = realloc(buf, cap * 2);
            if (nb == NULL)
                goto sys_fail;
            buf = nb;
            cap *= 2;
        }
        r = recv(fd, buf + n, cap - n - 1, 0);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r == 0)
            break;
        if (errno != EAGAIN && errno != EINTR)
            goto sys_fail;
        if (wait_fd(fd, POLLIN, deadline_ms) != 0)
            goto sys_fail;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 0;

sys_fail:
    snprintf(err, errlen, "%s: %s", addr->text, strerror(errno));
fail:
    free(buf);
    close(fd);
    return -1;
}

/* Splits a response into status code and body. Returns the code, or -1 if malformed. */
static int parse_response(char *resp, size_t len, const char **body)
{
    char *end = strstr(resp, "\r\n\r\n");
    int code;

    if (len < 12 || strncmp(resp, "HTTP/1.", 7) != 0 || resp[8] != ' ' || end == NULL)
        return -1;
    if (sscanf(resp + 9, "%3d", &code) != 1 || code < 100 || code > 599)
        return -1;
    *body = end + 4;
    return code;
}

/* The route of the command in argv[0, argc): *method and *path (static storage). Returns 0, or
 * 2 after printing what is wrong. */
static int command(int argc, char **argv, const char **method, const char **path)
{
    static char whereis[256];
    static const struct {
        const char *a0, *a1, *method, *path;
    } simple[] = {
        {"status", NULL, "GET", "/status"},         {"metrics", NULL, "GET", "/metrics"},
        {"sites", NULL, "GET", "/sites"},           {"reload", NULL, "POST", "/reload"},
        {"drain", NULL, "POST", "/drain"},          {"undrain", NULL, "POST", "/undrain"},
        {"keys", "rotate", "POST", "/keys/rotate"},
    };

    for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
        if (argc == (simple[i].a1 != NULL ? 2 : 1) && strcmp(argv[0], simple[i].a0) == 0 &&
            (simple[i].a1 == NULL || strcmp(argv[1], simple[i].a1) == 0)) {
            *method = simple[i].method;
            *path = simple[i].path;
            return 0;
        }
    }
    *method = "GET";
    *path = whereis;
    if (argc == 4 && strcmp(argv[0], "whereis") == 0 && strcmp(argv[1], "tcp") == 0) {
        size_t n2 = strlen(argv[2]), n3 = strlen(argv[3]);
        if (n2 == 0 || n2 > 64 || n3 == 0 || n3 > 64 ||
            strspn(argv[2], "0123456789abcdefABCDEF.:[]") != n2 ||
            strspn(argv[3], "0123456789abcdefABCDEF.:[]") != n3) {
            fprintf(stderr, "anyedgectl: whereis tcp: expected CLIENT_ADDR:PORT LOCAL_ADDR:PORT\n");
            return 2;
        }
        snprintf(whereis, sizeof(whereis), "/whereis?tcp=%s,%s", argv[2], argv[3]);
        return 0;
    }
    if (argc == 2 && strcmp(argv[0], "whereis") == 0) {
        size_t n = strlen(argv[1]);
        if (n == 0 || n > 64 || strspn(argv[1], "0123456789abcdefABCDEF") != n) {
            fprintf(stderr, "anyedgectl: whereis: CID must be hex\n");
            return 2;
        }
        snprintf(whereis, sizeof(whereis), "/whereis?cid=%s", argv[1]);
        return 0;
    }
    usage(stderr);
    return 2;
}

/* Where to send the request and with what token. */
typedef struct {
    ae_addr addr; /* TCP address, or the Unix socket (sockaddr_un in addr.sa) */
    int is_unix;
    char token[1100]; /* "" when none */
} ctl_target;

/* Reads a token file into t->token (trailing newline and blanks dropped). 0, or 2. */
static int read_token(const char *path, ctl_target *t)
{
    FILE *f = fopen(path, "re");
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "anyedgectl: -T %s: %s\n", path, strerror(errno));
        return 2;
    }
    n = fread(t->token, 1, sizeof(t->token) - 1, f);
    fclose(f);
    while (n > 0 && (t->token[n - 1] == '\n' || t->token[n - 1] == '\r' || t->token[n - 1] == ' '))
        n--;
    t->token[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t->token[i] <= 0x20 || (unsigned char)t->token[i] >= 0x7f) {
            fprintf(stderr, "anyedgectl: -T %s: the token holds spaces or control characters\n",
                    path);
            return 2;
        }
    return 0;
}

/* The endpoint from -a, -s or -c (one of them; none: the default address) and the token from
 * -T or the config. Returns 0, or 2 after printing what is wrong. */
static int target(const char *addr_s, const char *sock_s, const char *conf_path,
                  const char *token_path, ctl_target *t)
{
    char err[512], sock[108] = "";

    memset(t, 0, sizeof(*t));
    if ((addr_s != NULL) + (conf_path != NULL) + (sock_s != NULL) > 1) {
        fprintf(stderr, "anyedgectl: give one of -a, -s and -c\n");
        return 2;
    }
    if (sock_s != NULL && strlen(sock_s) >= sizeof(sock)) {
        fprintf(stderr, "anyedgectl: -s %s: path too long\n", sock_s);
        return 2;
    }
    if (sock_s != NULL)
        snprintf(sock, sizeof(sock), "%s", sock_s);
    if (conf_path != NULL) {
        ae_conf *conf = NULL;
        struct stat st;
        if (ae_conf_load(conf_path, &conf, err, sizeof(err)) != 0) {
            fprintf(stderr, "anyedgectl: %s\n", err);
            return 2;
        }
        if (conf->admin.socket != NULL && stat(conf->admin.socket, &st) == 0 &&
            S_ISSOCK(st.st_mode)) {
            snprintf(sock, sizeof(sock), "%s", conf->admin.socket);
        } else if (!conf->admin.enabled) {
            fprintf(stderr, "anyedgectl: %s: the admin endpoint is disabled (admin.address)%s\n",
                    conf_path, conf->admin.socket != NULL ? " and admin.socket is not there" : "");
            ae_conf_free(conf);
            return 2;
        }
        t->addr = conf->admin.addr;
        if (conf->admin.token != NULL)
            snprintf(t->token, sizeof(t->token), "%s", conf->admin.token);
        ae_conf_free(conf);
    } else if (sock[0] == '\0' &&
               ae_addr_parse(addr_s != NULL ? addr_s : CTL_DEFAULT_ADDR, &t->addr, 0) != 0) {
        fprintf(stderr, "anyedgectl: -a %s: expected IPv4:port or [IPv6]:port\n", addr_s);
        return 2;
    }
    if (sock[0] != '\0') {
        struct sockaddr_un *sun = (struct sockaddr_un *)&t->addr.sa;
        memset(&t->addr, 0, sizeof(t->addr));
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, sock, strlen(sock) + 1);
        t->addr.len = sizeof(*sun);
        snprintf(t->addr.text, sizeof(t->addr.text), "%.*s", (int)sizeof(t->addr.text) - 1, sock);
        t->is_unix = 1;
    }
    return token_path != NULL ? read_token(token_path, t) : 0;
}

int main(int argc, char **argv)
{
    const char *addr_s = NULL, *conf_path = NULL, *sock_s = NULL, *token_path = NULL, *method,
               *path, *body = "";
    char err[512], req[2048], auth[1200] = "", *resp = NULL;
    double timeout_s = 10.0;
    size_t resp_len = 0;
    ctl_target t;
    int opt, code;

    while ((opt = getopt(argc, argv, "a:c:s:T:t:h")) != -1) {
        switch (opt) {
        case 'a':
            addr_s = optarg;
            break;
        case 's':
            sock_s = optarg;
            break;
        case 'T':
            token_path = optarg;
            break;
        case 'c':
            conf_path = optarg;
            break;
        case 't': {
            char *e;
            timeout_s = strtod(optarg, &e);
            if (*e != '\0' || !(timeout_s > 0 && timeout_s <= 3600)) {
                fprintf(stderr, "anyedgectl: -t: expected seconds in (0, 3600]\n");
                return 2;
            }
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (command(argc - optind, argv + optind, &method, &path) != 0 ||
        target(addr_s, sock_s, conf_path, token_path, &t) != 0)
        return 2;
    if (t.token[0] != '\0')
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", t.token);
    /* Over the Unix socket Host is only a formality; over TCP it must name the address. */
    snprintf(req, sizeof(req),
             "%s %s HTTP/1.1\r\nHost: %s\r\n%sUser-Agent: anyedgectl/%s\r\nContent-Length: "
             "0\r\nConnection: close\r\n\r\n",
             method, path, t.is_unix ? "localhost" : t.addr.text, auth, AE_VERSION);
    if (exchange(&t.addr, req, (int64_t)ae_now_ms() + (int64_t)(timeout_s * 1000), &resp, &resp_len,
                 err, sizeof(err)) != 0) {
        fprintf(stderr, "anyedgectl: cannot reach the admin endpoint at %s\n", err);
        return 3;
    }
    code = parse_response(resp, resp_len, &body);
    if (code < 0) {
        fprintf(stderr, "anyedgectl: malformed response from %s\n", t.addr.text);
        free(resp);
        return 3;
    }
    if (code >= 200 && code < 300) {
        fputs(body, stdout);
        free(resp);
        return 0;
    }
    fprintf(stderr, "anyedgectl: %s %s: HTTP %d\n%s", method, path, code, body);
    free(resp);
    return 1;
}
