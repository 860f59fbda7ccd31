/*
 * libFuzzer harness for QUIC connection ID decoding ae_cid_decode (state/cid.c): the CID of
 * every datagram that reaches a site, before any other check.
 *
 * The input is a CID as received (any length). The keys come from the fixed ring
 * (fuzz_common.h). Checked beyond "no crash":
 *   - a decoded CID is AE_CID_LEN octets long, its first octet carries the length bits and an
 *     epoch the keys have, and its site is 1..4095;
 *   - the answer does not depend on the worker out-parameter (decoded with and without it);
 *   - round trip: a CID encoded for the site and worker taken from the input's first octets (when
 *     the site is valid) decodes to them, under the keys' current epoch.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/base.h"
#include "state/cid.h"
#include "tests/fuzz/fuzz_common.h"

static ae_cid_keys *keys;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (keys == NULL) {
        ae_ring r;
        fz_ring(&r);
        if (ae_cid_keys_from_ring(&r, &keys) != 0)
            abort();
    }
    uint8_t *cid = fz_copy(data, size, 0);
    uint16_t site = 0, site2 = 0;
    uint8_t worker = 0;
    int rc = ae_cid_decode(keys, cid, size, &site, &worker);
    if (ae_cid_decode(keys, cid, size, &site2, NULL) != rc || (rc == 0 && site2 != site))
        abort();
    if (rc == 0 &&
        (size != AE_CID_LEN || (cid[0] & 0x1f) != AE_CID_LEN - 1 ||
         !ae_cid_keys_has_epoch(keys, cid[0] >> 5) || site == 0 || site > AE_CID_SITE_MAX))
        abort();
    if (rc != 0 && rc != AE_ERR_PARSE)
        abort();
    free(cid);

    if (size >= 3) {
        uint16_t s = (uint16_t)((data[0] << 8 | data[1]) & 0xfff);
        uint8_t out[AE_CID_LEN];
        rc = ae_cid_encode(keys, s, data[2], out);
        if (s == 0) {
            if (rc != AE_ERR_INVAL)
                abort();
        } else if (rc != 0 || out[0] >> 5 != ae_cid_keys_epoch(keys) ||
                   ae_cid_decode(keys, out, sizeof(out), &site, &worker) != 0 || site != s ||
                   worker != data[2]) {
            abort();
        }
    }
    return 0;
}
