/*
 * anyedge: session-aware anycast edge proxy.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/site/server.h"
#include "state/state.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: anyedge -c FILE      run with the config FILE\n"
               "       anyedge -t -c FILE   check the config FILE (syntax, values, certificates)\n"
               "       anyedge --config-doc print the config reference (Markdown)\n"
               "       anyedge -V           print the version\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
        {"config-doc", no_argument, NULL, 'D'},   {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int test = 0, ch;
    while ((ch = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'V':
            printf("anyedge %s\n", AE_VERSION);
            return 0;
        case 'D':
            ae_conf_write_doc(stdout);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (test) {
        char err[1024];
        ae_conf *conf = NULL;
        int rv = ae_conf_load(path, &conf, err, sizeof(err));
        if (rv == 0 && conf->nlisteners > 0)
            rv = ae_tls_check_conf(conf, err, sizeof(err));
        if (rv == 0)
            rv = ae_state_check_conf(conf, err, sizeof(err));
        ae_conf_free(conf);
        if (rv != 0) {
            fprintf(stderr, "anyedge: %s\n", err);
            return 1;
        }
        printf("anyedge: configuration file %s is valid\n", path);
        return 0;
    }
    return ae_server_run(path);
}
