/*
 * libFuzzer harness for the config loader ae_conf_load_string (conf/): YAML (libyaml) -> node
 * tree -> key table -> validated snapshot, the path every config file and SIGHUP reload takes.
 *
 * The input is the YAML document. Checked beyond "no crash" and no leak (the snapshot and every
 * error path free what they allocated):
 *   - a refused document leaves *out NULL and an error message that is one non-empty line,
 *     NUL-terminated within the buffer, naming the document;
 *   - an accepted one has an empty error message, at least one worker, and every listener's
 *     upstream resolved (upstream_index names the upstream of that name).
 * The seed corpus is conf/examples/ and small documents for each section.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "tests/fuzz/fuzz_common.h"

#define NAME "fuzz.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) /* far above any real config; keeps iterations fast */
        return 0;
    char *yaml = (char *)fz_copy(data, size, 0);
    char err[512];
    ae_conf *c = (ae_conf *)&err; /* must be overwritten */

    memset(err, 0x55, sizeof(err));
    int rc = ae_conf_load_string(NAME, yaml, size, &c, err, sizeof(err));
    free(yaml);
    if (rc != 0) {
        size_t n = strnlen(err, sizeof(err));
        if (c != NULL || n == 0 || n == sizeof(err) || memchr(err, '\n', n) != NULL ||
            strncmp(err, NAME, strlen(NAME)) != 0)
            abort();
        return 0;
    }
    if (c == NULL || err[0] != 0 || c->workers < 1)
        abort();
    for (size_t i = 0; i < c->nlisteners; i++) {
        const ae_conf_listener *l = &c->listeners[i];
        if (l->upstream == NULL || l->upstream_index >= c->nupstreams ||
            strcmp(c->upstreams[l->upstream_index].name, l->upstream) != 0 ||
            ae_conf_find_upstream(c, l->upstream) != &c->upstreams[l->upstream_index])
            abort();
    }
    ae_conf_free(c);
    return 0;
}
