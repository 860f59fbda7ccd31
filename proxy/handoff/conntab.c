/* Table of this process's TCP connections by 4-tuple (see conntab.h). */
#include "proxy/handoff/conntab.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/base.h"

#define NBUCKETS 65536 /* chains stay short up to a few hundred thousand connections */
#define NLOCKS   64

struct ae_conntab_entry {
    ae_conntab_entry *next;
    ae_flowkey key;
    uint32_t hash;
    int worker;
    uint64_t conn_id;
    uint64_t inserted_ms;
    uint64_t closed_ms; /* 0 = open */
};

struct ae_conntab {
    pthread_mutex_t locks[NLOCKS];
    ae_conntab_entry *buckets[NBUCKETS];
};

static void put_sa(const struct sockaddr *sa, uint8_t *family, uint8_t addr[16], uint16_t *port,
                   int *ok)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        *family = AF_INET;
        memcpy(addr, &in->sin_addr, 4);
        *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            *family = AF_INET;
            memcpy(addr, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            *family = AF_INET6;
            memcpy(addr, &in6->sin6_addr, 16);
        }
        *port = ntohs(in6->sin6_port);
    } else {
        *ok = 0;
    }
}

int ae_flowkey_from_sa(ae_flowkey *k, const struct sockaddr *client, const struct sockaddr *local)
{
    uint8_t fc = 0, fl = 0;
    int ok = 1;
    memset(k, 0, sizeof(*k));
    put_sa(client, &fc, k->caddr, &k->cport, &ok);
    put_sa(local, &fl, k->laddr, &k->lport, &ok);
    if (!ok || fc != fl || k->cport == 0 || k->lport == 0)
        return AE_ERR_INVAL;
    k->family = fc;
    return 0;
}

char *ae_flowkey_format(const ae_flowkey *k, char *buf, size_t len)
{
    char c[INET6_ADDRSTRLEN], l[INET6_ADDRSTRLEN];
    int af = k->family == AF_INET6 ? AF_INET6 : AF_INET;
    inet_ntop(af, k->caddr, c, sizeof(c));
    inet_ntop(af, k->laddr, l, sizeof(l));
    if (af == AF_INET6)
        snprintf(buf, len, "[%s]:%u>[%s]:%u", c, k->cport, l, k->lport);
    else
        snprintf(buf, len, "%s:%u>%s:%u", c, k->cport, l, k->lport);
    return buf;
}

/* FNV-1a over the canonical bytes: the table is keyed by clients' tuples, but a client can only
 * choose its own port, and a long chain costs it nothing but its own lookups. */
uint32_t ae_flowkey_hash(const ae_flowkey *k)
{
    const uint8_t *p = (const uint8_t *)k;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof(*k); i++)
        h = (h ^ p[i]) * 16777619u;
    return h ^ (h >> 16);
}

int ae_conntab_new(ae_conntab **out)
{
    ae_conntab *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return AE_ERR_NOMEM;
    for (size_t i = 0; i < NLOCKS; i++)
        pthread_mutex_init(&t->locks[i], NULL);
    *out = t;
    return 0;
}

void ae_conntab_free(ae_conntab *t)
{
    if (t == NULL)
        return;
    for (size_t b = 0; b < NBUCKETS; b++) {
        ae_conntab_entry *e = t->buckets[b];
        while (e != NULL) {
            ae_conntab_entry *n = e->next;
            free(e);
            e = n;
        }
    }
    for (size_t i = 0; i < NLOCKS; i++)
        pthread_mutex_destroy(&t->locks[i]);
    free(t);
}

ae_conntab_entry *ae_conntab_insert(ae_conntab *t, const struct sockaddr *client,
                                    const struct sockaddr *local, int worker, uint64_t conn_id,
                                    uint64_t now_ms)
{
    ae_conntab_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    if (ae_flowkey_from_sa(&e->key, client, local) != 0) {
        free(e);
        return NULL;
    }
    e->hash = ae_flowkey_hash(&e->key);
    e->worker = worker;
    e->conn_id = conn_id;
    e->inserted_ms = now_ms;
    size_t b = e->hash % NBUCKETS;
    pthread_mutex_t *m = &t->locks[b % NLOCKS];
    pthread_mutex_lock(m);
    e->next = t->buckets[b];
    t->buckets[b] = e;
    pthread_mutex_unlock(m);
    return e;
}

void ae_conntab_remove(ae_conntab *t, ae_conntab_entry *e, uint64_t now_ms)
{
    if (t == NULL || e == NULL)
        return;
    pthread_mutex_t *m = &t->locks[(e->hash % NBUCKETS) % NLOCKS];
    pthread_mutex_lock(m);
    e->closed_ms = now_ms ? now_ms : 1;
    pthread_mutex_unlock(m);
}

int ae_conntab_lookup(ae_conntab *t, const ae_flowkey *k, uint64_t now_ms, ae_conntab_info *info)
{
    uint32_t h = ae_flowkey_hash(k);
    size_t b = h % NBUCKETS;
    int found = 0;
    pthread_mutex_t *m = &t->locks[b % NLOCKS];
    pthread_mutex_lock(m);
    /* Newest first: a tuple reused after a close finds the open connection. */
    for (ae_conntab_entry *e = t->buckets[b]; e != NULL; e = e->next) {
        if (e->hash != h || memcmp(&e->key, k, sizeof(*k)) != 0)
            continue;
        if (e->closed_ms != 0 && now_ms > e->closed_ms + AE_CONNTAB_GRACE_MS)
            continue;
        found = 1;
        if (info != NULL) {
            info->worker = e->worker;
            info->conn_id = e->conn_id;
            info->closed = e->closed_ms != 0;
            info->age_ms = now_ms > e->inserted_ms ? now_ms - e->inserted_ms : 0;
        }
        break;
    }
    pthread_mutex_unlock(m);
    return found;
}

size_t ae_conntab_sweep(ae_conntab *t, uint64_t now_ms)
{
    size_t open = 0;
    for (size_t l = 0; l < NLOCKS; l++) {
        pthread_mutex_lock(&t->locks[l]);
        for (size_t b = l; b < NBUCKETS; b += NLOCKS) {
            ae_conntab_entry **pp = &t->buckets[b];
            while (*pp != NULL) {
                ae_conntab_entry *e = *pp;
                if (e->closed_ms != 0 && now_ms > e->closed_ms + AE_CONNTAB_GRACE_MS) {
                    *pp = e->next;
                    free(e);
                    continue;
                }
                if (e->closed_ms == 0)
                    open++;
                pp = &e->next;
            }
        }
        pthread_mutex_unlock(&t->locks[l]);
    }
    return open;
}
