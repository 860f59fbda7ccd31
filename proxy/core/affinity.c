/* Upstream affinity helpers: see affinity.h. */
#include "proxy/core/affinity.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy/core/hrw.h"

const char *const ae_aff_result_names[AE_AFF__COUNT] = {
    [AE_AFF_HIT] = "hit",
    [AE_AFF_MOVED] = "moved",
    [AE_AFF_COOKIE] = "cookie",
    [AE_AFF_COOKIE_INVALID] = "cookie_invalid",
    [AE_AFF_COOKIE_DOWN] = "cookie_down",
    [AE_AFF_NO_KEY] = "no_key",
};
_Static_assert(sizeof(ae_aff_result_names) / sizeof(ae_aff_result_names[0]) == AE_AFF__COUNT,
               "one name per affinity result");

/* ae_hrw_hash of the first `bits` bits of a (the rest of the last byte zeroed). */
static uint64_t prefix_hash(const uint8_t *a, unsigned bits)
{
    uint8_t buf[16];
    size_t n = (bits + 7) / 8;
    memcpy(buf, a, n);
    if (bits % 8 != 0)
        buf[n - 1] &= (uint8_t)(0xff << (8 - bits % 8));
    return ae_hrw_hash(buf, n);
}

uint64_t ae_aff_addr_key(const struct sockaddr *sa, unsigned v4_prefix, unsigned v6_prefix)
{
    if (v4_prefix == 0 || v4_prefix > 32)
        v4_prefix = 32;
    if (v6_prefix == 0 || v6_prefix > 128)
        v6_prefix = 128;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        /* An IPv4-mapped address hashes as the IPv4 address it carries. */
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
            return prefix_hash(s6->sin6_addr.s6_addr + 12, v4_prefix);
        return prefix_hash(s6->sin6_addr.s6_addr, v6_prefix);
    }
    if (sa->sa_family == AF_INET)
        return prefix_hash((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, v4_prefix);
    return 0;
}

static int ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

int ae_cookie_find(const uint8_t *f, size_t len, const char *name, size_t nlen, const uint8_t **val,
                   size_t *vlen)
{
    size_t i = 0;
    while (i < len) {
        size_t start = i, end, eq = SIZE_MAX;
        while (i < len && f[i] != ';') {
            if (f[i] == '=' && eq == SIZE_MAX)
                eq = i;
            i++;
        }
        end = i++; /* past the ';' */
        if (eq == SIZE_MAX)
            continue;
        size_t ns = start, ne = eq, vs = eq + 1, ve = end;
        while (ns < ne && ows(f[ns]))
            ns++;
        while (ne > ns && ows(f[ne - 1]))
            ne--;
        if (ne - ns != nlen || nlen == 0 || memcmp(f + ns, name, nlen) != 0)
            continue;
        while (vs < ve && ows(f[vs]))
            vs++;
        while (ve > vs && ows(f[ve - 1]))
            ve--;
        if (ve - vs >= 2 && f[vs] == '"' && f[ve - 1] == '"') {
            vs++;
            ve--;
        }
        *val = f + vs;
        *vlen = ve - vs;
        return 1;
    }
    return 0;
}
