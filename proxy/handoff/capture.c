/*
 * Orphan capture: TUN device + tc ingress BPF program (see capture.h, orphan.bpf.c).
 */
#include "proxy/handoff/capture.h"

#include "conf/base.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* The compiled orphan.bpf.c, embedded by the build (xxd -i). */
extern unsigned char orphan_bpf_o[];
extern unsigned int orphan_bpf_o_len;

/* Listener map key; must match struct lkey in orphan.bpf.c. */
struct cap_lkey {
    uint8_t family; /* AF_INET (2) or AF_INET6 (10) */
    uint8_t pad;
    uint16_t port; /* network order */
    uint8_t addr[16];
};

/* tc fallback: our filter's identity on the clsact ingress hook. */
#define CAP_TC_HANDLE 0xae10
#define CAP_TC_PRIO   0xae10

/* BPF_TCX_INGRESS from newer UAPI (linux 6.6); libbpf 1.1's headers lack it. Looked up in the
 * running kernel's BTF when available. */
#define CAP_TCX_INGRESS_DEFAULT 46

#define CAP_MAX_IF 16

struct ae_capture {
    struct bpf_object *obj;
    void *elf; /* aligned copy of the embedded object */
    int prog_fd;
    int listeners_fd;
    int counters_fd;
    int tun_fd;
    int tun_ifindex;
    int tcx; /* 1: links, 0: tc filters */
    size_t nif;
    int ifindex[CAP_MAX_IF];
    int link_fd[CAP_MAX_IF];
    int tc_attached[CAP_MAX_IF];
    char warning[256];
};

/* ---- libbpf messages: keep the last warning for error strings, print nothing ---- */

static __thread char cap_libbpf_msg[256];

static int cap_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    if (level == LIBBPF_DEBUG)
        return 0;
    int n = vsnprintf(cap_libbpf_msg, sizeof(cap_libbpf_msg), fmt, ap);
    if (n > 0) {
        size_t len = strlen(cap_libbpf_msg);
        while (len > 0 && (cap_libbpf_msg[len - 1] == '\n' || cap_libbpf_msg[len - 1] == ' '))
            cap_libbpf_msg[--len] = '\0';
    }
    return 0;
}

static int cap_fail(char *err, size_t errlen, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int cap_fail(char *err, size_t errlen, int rv, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rv;
}

static const char *cap_perm_hint(int e)
{
    return (e == EPERM || e == EACCES) ? " (no CAP_NET_ADMIN/CAP_BPF?)" : "";
}

/* ---- sysctl helpers ---- */

static int cap_sysctl_write(const char *path, const char *val)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, val, strlen(val));
    close(fd);
    return n == (ssize_t)strlen(val) ? 0 : -1;
}

static int cap_sysctl_read_int(const char *path, int *v)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int rc = fscanf(f, "%d", v) == 1 ? 0 : -1;
    fclose(f);
    return rc;
}

/* ---- TUN device ---- */

static int cap_tun_open(ae_capture *c, const char *name, char *err, size_t errlen)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), "/sys/class/net/%s", name);
    int exists = stat(path, &st) == 0;
    if (exists) {
        snprintf(path, sizeof(path), "/sys/class/net/%s/tun_flags", name);
        if (stat(path, &st) != 0)
            return cap_fail(err, errlen, AE_ERR_INVAL, "device %s exists and is not a tun device",
                            name);
    }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return cap_fail(err, errlen, AE_ERR_IO, "open /dev/net/tun: %s%s", strerror(errno),
                        cap_perm_hint(errno));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        if (exists && e == EBUSY)
            return cap_fail(err, errlen, AE_ERR_IO, "tun device %s is in use by another process",
                            name);
        if (exists && e == EINVAL)
            return cap_fail(err, errlen, AE_ERR_INVAL,
                            "device %s exists with other tun flags (tap or packet info)", name);
        return cap_fail(err, errlen, AE_ERR_IO, "create tun device %s: %s%s", name, strerror(e),
                        cap_perm_hint(e));
    }
    /* A persistent leftover that we attached to becomes ours: gone when the fd closes. */
    if (exists)
        (void)ioctl(fd, TUNSETPERSIST, 0);
    c->tun_fd = fd;

    /* Injected packets carry the client's source address: no reverse-path check on the tun.
     * IPv6: enabled, but no link-local address (addr_gen_mode 1), so the kernel sends nothing of
     * its own (router solicitations, MLD) into the device. Set before the device goes up. */
    snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/rp_filter", name);
    if (cap_sysctl_write(path, "0") < 0)
        return cap_fail(err, errlen, AE_ERR_IO, "set %s: %s", path + 10, strerror(errno));
    snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/addr_gen_mode", name);
    (void)cap_sysctl_write(path, "1");
    snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
    (void)cap_sysctl_write(path, "0"); /* absent when IPv6 is off: fine */
    int all = 0;
    if (cap_sysctl_read_int("/proc/sys/net/ipv4/conf/all/rp_filter", &all) == 0 && all == 1)
        snprintf(c->warning, sizeof(c->warning),
                 "net.ipv4.conf.all.rp_filter=1 (strict): injected IPv4 segments will be dropped; "
                 "set it to 0 or 2 (loose)");

    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return cap_fail(err, errlen, AE_ERR_IO, "socket: %s", strerror(errno));
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int e = errno;
    if (rc == 0)
        rc = ioctl(s, SIOCGIFINDEX, &ifr);
    close(s);
    if (rc < 0)
        return cap_fail(err, errlen, AE_ERR_IO, "bring up %s: %s", name, strerror(e));
    c->tun_ifindex = ifr.ifr_ifindex;

    return 0;
}

/* ---- listeners ---- */

static int cap_key(const ae_capture_listener *l, struct cap_lkey *k)
{
    memset(k, 0, sizeof(*k));
    if (l->family == AF_INET) {
        k->family = AF_INET;
        memcpy(k->addr, l->addr, 4);
    } else if (l->family == AF_INET6) {
        k->family = AF_INET6;
        memcpy(k->addr, l->addr, 16);
    } else {
        return -1;
    }
    k->port = htons(l->port);
    return 0;
}

int ae_capture_set_listeners(ae_capture *c, const ae_capture_listener *ls, size_t n)
{
    if (!c || (n > 0 && !ls) || n > AE_CAPTURE_MAX_LISTENERS)
        return AE_ERR_INVAL;
    struct cap_lkey *keys = calloc(n ? n : 1, sizeof(*keys));
    if (!keys)
        return AE_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (cap_key(&ls[i], &keys[i]) < 0) {
            free(keys);
            return AE_ERR_INVAL;
        }
    }
    uint8_t one = 1;
    for (size_t i = 0; i < n; i++) {
        if (bpf_map_update_elem(c->listeners_fd, &keys[i], &one, BPF_ANY) < 0) {
            free(keys);
            return AE_ERR_IO;
        }
    }
    /* Remove stale keys: collect first (deleting while iterating restarts the walk). */
    struct cap_lkey cur, next, stale[64];
    int rv = 0;
    for (;;) {
        size_t ns = 0;
        int first = 1;
        while (ns < 64 && bpf_map_get_next_key(c->listeners_fd, first ? NULL : &cur, &next) == 0) {
            first = 0;
            cur = next;
            int keep = 0;
            for (size_t i = 0; i < n && !keep; i++)
                keep = memcmp(&keys[i], &next, sizeof(next)) == 0;
            if (!keep)
                stale[ns++] = next;
        }
        if (ns == 0)
            break;
        for (size_t i = 0; i < ns; i++) {
            if (bpf_map_delete_elem(c->listeners_fd, &stale[i]) < 0 && errno != ENOENT)
                rv = AE_ERR_IO;
        }
        if (rv)
            break;
    }
    free(keys);
    return rv;
}

/* ---- attach ---- */

static int cap_tcx_ingress_type(void)
{
    int type = CAP_TCX_INGRESS_DEFAULT;
    struct btf *btf = btf__load_vmlinux_btf();
    if (!btf || libbpf_get_error(btf))
        return type;
    int id = btf__find_by_name_kind(btf, "bpf_attach_type", BTF_KIND_ENUM);
    if (id > 0) {
        const struct btf_type *t = btf__type_by_id(btf, id);
        const struct btf_enum *e = btf_enum(t);
        for (int i = 0; i < btf_vlen(t); i++, e++) {
            if (strcmp(btf__name_by_offset(btf, e->name_off), "BPF_TCX_INGRESS") == 0) {
                type = (int)e->val;
                break;
            }
        }
    }
    btf__free(btf);
    return type;
}

static void cap_tc_detach_one(int ifindex)
{
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
    DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = CAP_TC_HANDLE, .priority = CAP_TC_PRIO);
    (void)bpf_tc_detach(&hook, &opts);
}

static int cap_tc_attach_one(ae_capture *c, size_t i, char *err, size_t errlen, const char *ifname,
                             const char *why)
{
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = c->ifindex[i],
                        .attach_point = BPF_TC_INGRESS);
    int rc = bpf_tc_hook_create(&hook);
    if (rc < 0 && rc != -EEXIST)
        return cap_fail(err, errlen, AE_ERR_IO, "%s and tc clsact on %s failed: %s%s", why, ifname,
                        strerror(-rc), cap_perm_hint(-rc));
    DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = CAP_TC_HANDLE, .priority = CAP_TC_PRIO,
                        .prog_fd = c->prog_fd, .flags = BPF_TC_F_REPLACE);
    rc = bpf_tc_attach(&hook, &opts);
    if (rc < 0)
        return cap_fail(err, errlen, AE_ERR_IO, "%s and tc attach on %s failed: %s%s", why, ifname,
                        strerror(-rc), cap_perm_hint(-rc));
    c->tc_attached[i] = 1;
    return 0;
}

static int cap_attach(ae_capture *c, const char *const *ifnames, char *err, size_t errlen)
{
    int tcx_type = cap_tcx_ingress_type();
    char why[160] = "";
    /* AE_CAPTURE_FORCE_TC=1: test hook for the tc fallback on kernels with tcx. */
    const char *force = getenv("AE_CAPTURE_FORCE_TC");
    c->tcx = !(force && force[0] == '1');
    if (!c->tcx)
        snprintf(why, sizeof(why), "tcx disabled by AE_CAPTURE_FORCE_TC");
    for (size_t i = 0; i < c->nif; i++) {
        /* A filter left behind by a tc-mode run killed with SIGKILL: remove it either way. */
        cap_tc_detach_one(c->ifindex[i]);
        if (c->tcx) {
            int fd =
                bpf_link_create(c->prog_fd, c->ifindex[i], (enum bpf_attach_type)tcx_type, NULL);
            if (fd >= 0) {
                c->link_fd[i] = fd;
                continue;
            }
            int e = -fd;
            if (e == EPERM || e == EACCES)
                return cap_fail(err, errlen, AE_ERR_IO,
                                "attach to %s: %s (no CAP_NET_ADMIN/CAP_BPF?)", ifnames[i],
                                strerror(e));
            if (i > 0)
                return cap_fail(err, errlen, AE_ERR_IO, "tcx attach to %s: %s", ifnames[i],
                                strerror(e));
            snprintf(why, sizeof(why), "kernel has no tcx (%s)", strerror(e));
            c->tcx = 0;
        }
        int rc = cap_tc_attach_one(c, i, err, errlen, ifnames[i], why);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- open / close ---- */

int ae_capture_open(const char *tun_name, const char *const *ifnames, size_t nif,
                    const ae_capture_listener *ls, size_t nls, ae_capture **out, char *err,
                    size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return cap_fail(err, errlen, AE_ERR_INVAL, "no output pointer");
    *out = NULL;
    if (!tun_name || !*tun_name || strlen(tun_name) >= IFNAMSIZ)
        return cap_fail(err, errlen, AE_ERR_INVAL, "bad tun device name");
    if (!ifnames || nif == 0 || nif > CAP_MAX_IF)
        return cap_fail(err, errlen, AE_ERR_INVAL, "need 1..%d interfaces", CAP_MAX_IF);
    if (nls > AE_CAPTURE_MAX_LISTENERS || (nls && !ls))
        return cap_fail(err, errlen, AE_ERR_INVAL, "bad listener list (max %d)",
                        AE_CAPTURE_MAX_LISTENERS);

    ae_capture *c = calloc(1, sizeof(*c));
    if (!c)
        return cap_fail(err, errlen, AE_ERR_NOMEM, "out of memory");
    c->tun_fd = -1;
    c->prog_fd = -1;
    c->nif = nif;
    for (size_t i = 0; i < nif; i++) {
        c->link_fd[i] = -1;
        c->ifindex[i] = (int)if_nametoindex(ifnames[i]);
        if (c->ifindex[i] == 0) {
            int rv = cap_fail(err, errlen, AE_ERR_INVAL, "no interface %s", ifnames[i]);
            c->nif = 0;
            ae_capture_close(c);
            return rv;
        }
    }

    libbpf_set_print(cap_libbpf_print);
    cap_libbpf_msg[0] = '\0';
    int rv = cap_tun_open(c, tun_name, err, errlen);
    if (rv < 0)
        goto fail;

    /* Copy to an aligned buffer: libelf reads the ELF headers in place. */
    void *elf = malloc(orphan_bpf_o_len);
    if (!elf) {
        rv = cap_fail(err, errlen, AE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(elf, orphan_bpf_o, orphan_bpf_o_len);
    c->elf = elf; /* kept until close: libbpf may refer to it until the object is loaded */
    DECLARE_LIBBPF_OPTS(bpf_object_open_opts, oopts, .object_name = "ae_orphan");
    c->obj = bpf_object__open_mem(elf, orphan_bpf_o_len, &oopts);
    if (!c->obj || libbpf_get_error(c->obj)) {
        c->obj = NULL;
        rv = cap_fail(err, errlen, AE_ERR_IO, "open BPF object: %s", cap_libbpf_msg);
        goto fail;
    }
    int lrc = bpf_object__load(c->obj);
    if (lrc < 0) {
        rv = cap_fail(err, errlen, AE_ERR_IO, "load BPF program: %s%s%s%s", strerror(-lrc),
                      cap_perm_hint(-lrc), cap_libbpf_msg[0] ? ": " : "", cap_libbpf_msg);
        goto fail;
    }
    struct bpf_program *prog = bpf_object__find_program_by_name(c->obj, "ae_orphan");
    struct bpf_map *lm = bpf_object__find_map_by_name(c->obj, "listeners");
    struct bpf_map *cm = bpf_object__find_map_by_name(c->obj, "counters");
    struct bpf_map *cfgm = bpf_object__find_map_by_name(c->obj, "cfg");
    if (!prog || !lm || !cm || !cfgm) {
        rv = cap_fail(err, errlen, AE_ERR_IO, "BPF object lacks program or maps");
        goto fail;
    }
    c->prog_fd = bpf_program__fd(prog);
    c->listeners_fd = bpf_map__fd(lm);
    c->counters_fd = bpf_map__fd(cm);
    uint32_t zero = 0, tun = (uint32_t)c->tun_ifindex;
    if (bpf_map_update_elem(bpf_map__fd(cfgm), &zero, &tun, BPF_ANY) < 0) {
        rv = cap_fail(err, errlen, AE_ERR_IO, "set cfg map: %s", strerror(errno));
        goto fail;
    }
    rv = ae_capture_set_listeners(c, ls, nls);
    if (rv < 0) {
        rv = cap_fail(err, errlen, rv, "fill listener map: %s",
                      rv == AE_ERR_INVAL ? "bad family" : strerror(errno));
        goto fail;
    }
    rv = cap_attach(c, ifnames, err, errlen);
    if (rv < 0)
        goto fail;
    *out = c;
    return 0;
fail:
    ae_capture_close(c);
    return rv;
}

int ae_capture_tun_fd(const ae_capture *c)
{
    return c ? c->tun_fd : -1;
}

int ae_capture_tun_ifindex(const ae_capture *c)
{
    return c ? c->tun_ifindex : 0;
}

const char *ae_capture_mode(const ae_capture *c)
{
    return c && c->tcx ? "tcx" : "tc";
}

const char *ae_capture_warning(const ae_capture *c)
{
    return c ? c->warning : "";
}

void ae_capture_counts_get(const ae_capture *c, ae_capture_counts *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return;
    uint64_t *vals = calloc((size_t)ncpu, sizeof(uint64_t));
    if (!vals)
        return;
    uint64_t sums[3] = {0, 0, 0};
    for (uint32_t k = 0; k < 3; k++) {
        if (bpf_map_lookup_elem(c->counters_fd, &k, vals) < 0)
            continue;
        for (int i = 0; i < ncpu; i++)
            sums[k] += vals[i];
    }
    free(vals);
    out->seen = sums[0];
    out->orphans = sums[1];
    out->syncookies = sums[2];
}

void ae_capture_close(ae_capture *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nif; i++) {
        if (c->link_fd[i] >= 0)
            close(c->link_fd[i]); /* unpinned tcx link: detached on last close */
        if (c->tc_attached[i])
            cap_tc_detach_one(c->ifindex[i]);
    }
    if (c->obj)
        bpf_object__close(c->obj);
    if (c->tun_fd >= 0)
        close(c->tun_fd);
    free(c->elf);
    free(c);
}
