/*
 * Tunnel frames between sites (see state/tunnel.h for the layout, the MAC and the threading
 * rules).
 */
#include "state/tunnel.h"

#include <stdlib.h>
#include <string.h>

#include <nettle/hmac.h>
#include <nettle/memops.h>
#include <openssl/crypto.h>

#include "conf/base.h"

/* Field offsets. */
#define OFF_MAGIC   0
#define OFF_VERSION 4
#define OFF_FLAGS   5
#define OFF_SITE    6
#define OFF_KEY     8
#define OFF_TS      16
#define OFF_CLIENT  24
#define OFF_LOCAL   42
#define OFF_LEN     60
#define ADDR_LEN    18 /* 16 address + 2 port */

#define FLAG_CLIENT_SHIFT 0
#define FLAG_LOCAL_SHIFT  2
#define FLAG_FAMILY_MASK  3

typedef struct {
    uint64_t id;
    struct hmac_sha256_ctx hmac; /* keyed; never updated in place */
    struct hmac_sha256_ctx hoff; /* the same for hand-off frames ("tcp-handoff") */
} tun_key;

struct ae_tunnel_keys {
    size_t nkeys;
    size_t enc; /* index of the current key */
    tun_key keys[AE_RING_MAX_KEYS];
};

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void ae_tunnel_keys_free(ae_tunnel_keys *k)
{
    if (k == NULL)
        return;
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

int ae_tunnel_keys_from_ring(const ae_ring *ring, ae_tunnel_keys **out)
{
    const ae_ring_key *cur = ae_ring_find(ring, AE_RING_CURRENT);
    ae_tunnel_keys *k;

    *out = NULL;
    if (cur == NULL)
        return AE_ERR_INVAL;
    k = calloc(1, sizeof(*k));
    if (k == NULL)
        return AE_ERR_NOMEM;
    for (size_t i = 0; i < ring->nkeys && i < AE_RING_MAX_KEYS; i++) {
        const ae_ring_key *rk = &ring->keys[i];
        uint8_t key[AE_TUNNEL_KEY_LEN];
        int rv = ae_ring_derive(rk, AE_TUNNEL_KEY_LABEL, key, sizeof(key));

        if (rv != 0) {
            ae_tunnel_keys_free(k);
            return rv;
        }
        hmac_sha256_set_key(&k->keys[k->nkeys].hmac, sizeof(key), key);
        rv = ae_ring_derive(rk, AE_HOFF_KEY_LABEL, key, sizeof(key));
        if (rv != 0) {
            OPENSSL_cleanse(key, sizeof(key));
            ae_tunnel_keys_free(k);
            return rv;
        }
        hmac_sha256_set_key(&k->keys[k->nkeys].hoff, sizeof(key), key);
        OPENSSL_cleanse(key, sizeof(key));
        k->keys[k->nkeys].id = rk->id;
        if (rk == cur)
            k->enc = k->nkeys;
        k->nkeys++;
    }
    *out = k;
    return 0;
}

uint64_t ae_tunnel_keys_id(const ae_tunnel_keys *k)
{
    return k->keys[k->enc].id;
}

static const tun_key *find_key(const ae_tunnel_keys *k, uint64_t id)
{
    for (size_t i = 0; i < k->nkeys; i++)
        if (k->keys[i].id == id)
            return &k->keys[i];
    return NULL;
}

int ae_tunnel_keys_has(const ae_tunnel_keys *k, uint64_t key_id)
{
    return find_key(k, key_id) != NULL;
}

/* The truncated HMAC of msg[0, len): the keyed state is copied to the stack, so the keys object
 * stays read-only (shareable between threads) and nothing is allocated. */
static void keyed_mac(const struct hmac_sha256_ctx *keyed, const uint8_t *msg, size_t len,
                      uint8_t tag[AE_TUNNEL_MAC_LEN])
{
    struct hmac_sha256_ctx ctx;

    memcpy(&ctx, keyed, sizeof(ctx));
    hmac_sha256_update(&ctx, len, msg);
    hmac_sha256_digest(&ctx, AE_TUNNEL_MAC_LEN, tag);
    OPENSSL_cleanse(&ctx, sizeof(ctx));
}

static void frame_mac(const tun_key *key, const uint8_t *msg, size_t len,
                      uint8_t tag[AE_TUNNEL_MAC_LEN])
{
    keyed_mac(&key->hmac, msg, len, tag);
}

/* ---- big-endian helpers ---- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- addresses ---- */

/* Writes sa as 16 address + 2 port octets; returns its flags family value, or -1. */
static int put_addr(uint8_t *p, const struct sockaddr *sa)
{
    if (sa == NULL)
        return -1;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof(in));
        if (in.sin_port == 0)
            return -1;
        memcpy(p, v4mapped_prefix, sizeof(v4mapped_prefix));
        memcpy(p + 12, &in.sin_addr, 4);
        memcpy(p + 16, &in.sin_port, 2); /* already network order */
        return AE_TUNNEL_FAMILY_IPV4;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        if (in6.sin6_port == 0)
            return -1;
        memcpy(p, &in6.sin6_addr, 16);
        memcpy(p + 16, &in6.sin6_port, 2);
        return AE_TUNNEL_FAMILY_IPV6;
    }
    return -1;
}

/* Reads 16 address + 2 port octets of the given flags family into a; 0 or -1. */
static int get_addr(const uint8_t *p, int family, ae_tunnel_addr *a, socklen_t *alen)
{
    memset(a, 0, sizeof(*a));
    if (p[16] == 0 && p[17] == 0)
        return -1; /* port 0 */
    if (family == AE_TUNNEL_FAMILY_IPV4) {
        if (memcmp(p, v4mapped_prefix, sizeof(v4mapped_prefix)) != 0)
            return -1;
        a->in.sin_family = AF_INET;
        memcpy(&a->in.sin_addr, p + 12, 4);
        memcpy(&a->in.sin_port, p + 16, 2);
        *alen = sizeof(a->in);
        return 0;
    }
    if (family == AE_TUNNEL_FAMILY_IPV6) {
        a->in6.sin6_family = AF_INET6;
        memcpy(&a->in6.sin6_addr, p, 16);
        memcpy(&a->in6.sin6_port, p + 16, 2);
        *alen = sizeof(a->in6);
        return 0;
    }
    return -1;
}

/* ---- frames ---- */

static int encode(const ae_tunnel_keys *k, uint16_t site_id, uint64_t now_ms, uint8_t flags,
                  const struct sockaddr *client, const struct sockaddr *local,
                  const uint8_t *datagram, size_t len, uint8_t *out, size_t cap)
{
    const tun_key *key = &k->keys[k->enc];
    int cfam, lfam;

    if (site_id == 0 || site_id > AE_TUNNEL_SITE_MAX || len == 0 || len > AE_TUNNEL_DGRAM_MAX)
        return AE_ERR_INVAL;
    if (cap < AE_TUNNEL_OVERHEAD + len)
        return AE_ERR_TOOBIG;
    cfam = put_addr(out + OFF_CLIENT, client);
    lfam = put_addr(out + OFF_LOCAL, local);
    if (cfam < 0 || lfam < 0)
        return AE_ERR_INVAL;
    memcpy(out + OFF_MAGIC, AE_TUNNEL_MAGIC, 4);
    out[OFF_VERSION] = AE_TUNNEL_VERSION;
    out[OFF_FLAGS] = (uint8_t)(flags | cfam << FLAG_CLIENT_SHIFT | lfam << FLAG_LOCAL_SHIFT);
    put16(out + OFF_SITE, site_id);
    put64(out + OFF_KEY, key->id);
    put64(out + OFF_TS, now_ms);
    put16(out + OFF_LEN, (uint16_t)len);
    /* memmove: the caller may have read the datagram into out + AE_TUNNEL_HDR_LEN already. */
    memmove(out + AE_TUNNEL_HDR_LEN, datagram, len);
    frame_mac(key, out, AE_TUNNEL_HDR_LEN + len, out + AE_TUNNEL_HDR_LEN + len);
    return (int)(AE_TUNNEL_OVERHEAD + len);
}

int ae_tunnel_encode(const ae_tunnel_keys *k, uint16_t site_id, uint64_t now_ms,
                     const struct sockaddr *client, const struct sockaddr *local,
                     const uint8_t *datagram, size_t len, uint8_t *out, size_t cap)
{
    return encode(k, site_id, now_ms, 0, client, local, datagram, len, out, cap);
}

int ae_tunnel_encode_reply(const ae_tunnel_keys *k, uint16_t site_id, uint64_t now_ms,
                           const struct sockaddr *client, const struct sockaddr *local, uint8_t ecn,
                           const uint8_t *datagram, size_t len, uint8_t *out, size_t cap)
{
    uint8_t flags = (uint8_t)(AE_TUNNEL_FLAG_REPLY | (ecn & 3) << AE_TUNNEL_ECN_SHIFT);
    return encode(k, site_id, now_ms, flags, client, local, datagram, len, out, cap);
}

int ae_tunnel_decode(const ae_tunnel_keys *k, const uint8_t *frame, size_t len, uint64_t now_ms,
                     uint64_t window_ms, ae_tunnel_hdr *hdr, const uint8_t **datagram,
                     size_t *datagram_len)
{
    uint8_t tag[AE_TUNNEL_MAC_LEN];
    const tun_key *key;
    size_t dlen;
    uint64_t ts;
    int mac_ok;

    /* Magic and version first (when present) so that a stray packet or a frame of another
     * version is named as such rather than as a length problem. */
    if (len >= 4 && memcmp(frame + OFF_MAGIC, AE_TUNNEL_MAGIC, 4) != 0)
        return AE_TUN_ERR_MAGIC;
    if (len > OFF_VERSION && frame[OFF_VERSION] != AE_TUNNEL_VERSION)
        return AE_TUN_ERR_VERSION;
    if (len < AE_TUNNEL_OVERHEAD)
        return AE_TUN_ERR_SHORT;
    dlen = get16(frame + OFF_LEN);
    if (dlen == 0 || len != AE_TUNNEL_OVERHEAD + dlen)
        return AE_TUN_ERR_SHORT;
    key = find_key(k, get64(frame + OFF_KEY));
    if (key == NULL)
        return AE_TUN_ERR_KEY;
    frame_mac(key, frame, AE_TUNNEL_HDR_LEN + dlen, tag);
    mac_ok = memeql_sec(tag, frame + AE_TUNNEL_HDR_LEN + dlen, AE_TUNNEL_MAC_LEN);
    if (!mac_ok)
        return AE_TUN_ERR_MAC;

    /* Authenticated from here on. */
    ts = get64(frame + OFF_TS);
    if ((ts > now_ms && ts - now_ms > window_ms) || (ts < now_ms && now_ms - ts > window_ms))
        return AE_TUN_ERR_STALE;
    hdr->version = frame[OFF_VERSION];
    hdr->flags = frame[OFF_FLAGS];
    if ((hdr->flags & ~AE_TUNNEL_FLAGS_KNOWN) != 0 ||
        ((hdr->flags & AE_TUNNEL_ECN_MASK) != 0 && !(hdr->flags & AE_TUNNEL_FLAG_REPLY)))
        return AE_TUN_ERR_FLAGS;
    hdr->site = get16(frame + OFF_SITE);
    if (hdr->site == 0 || hdr->site > AE_TUNNEL_SITE_MAX)
        return AE_TUN_ERR_SITE;
    if (get_addr(frame + OFF_CLIENT, hdr->flags >> FLAG_CLIENT_SHIFT & FLAG_FAMILY_MASK,
                 &hdr->client, &hdr->client_len) != 0 ||
        get_addr(frame + OFF_LOCAL, hdr->flags >> FLAG_LOCAL_SHIFT & FLAG_FAMILY_MASK, &hdr->local,
                 &hdr->local_len) != 0)
        return AE_TUN_ERR_ADDR;
    hdr->key_id = key->id;
    hdr->timestamp_ms = ts;
    *datagram = frame + AE_TUNNEL_HDR_LEN;
    *datagram_len = dlen;
    return 0;
}

const char *ae_tunnel_reason_name(int rc)
{
    static const char *const names[AE_TUN_NREASONS + 1] = {
        "ok", "short", "magic", "version", "key", "mac", "stale", "site", "addr", "flags",
    };
    return rc <= 0 && rc >= -AE_TUN_NREASONS ? names[-rc] : "?";
}

/* ---- TCP hand-off frames ---- */

#define HO_OFF_TYPE 5
#define HO_OFF_SITE 6
#define HO_OFF_KEY  8
#define HO_OFF_TS   16
#define HO_OFF_SEQ  24
#define HO_OFF_LEN  32

/* Header + MAC around a body already at out + AE_HOFF_HDR_LEN. */
static int hoff_seal(const ae_tunnel_keys *k, uint8_t type, uint16_t site, uint64_t now_ms,
                     uint64_t seq, size_t blen, uint8_t *out)
{
    const tun_key *key = &k->keys[k->enc];

    memcpy(out, AE_HOFF_MAGIC, 4);
    out[4] = AE_HOFF_VERSION;
    out[HO_OFF_TYPE] = type;
    put16(out + HO_OFF_SITE, site);
    put64(out + HO_OFF_KEY, key->id);
    put64(out + HO_OFF_TS, now_ms);
    put64(out + HO_OFF_SEQ, seq);
    put16(out + HO_OFF_LEN, (uint16_t)blen);
    keyed_mac(&key->hoff, out, AE_HOFF_HDR_LEN + blen, out + AE_HOFF_HDR_LEN + blen);
    return (int)(AE_HOFF_OVERHEAD + blen);
}

static int hoff_tuple_frame(const ae_tunnel_keys *k, uint8_t type, uint16_t site, uint64_t now_ms,
                            uint64_t seq, uint64_t qid, const struct sockaddr *client,
                            const struct sockaddr *local, uint8_t verdict, uint8_t *out, size_t cap)
{
    size_t blen = type == AE_HOFF_ANSWER ? AE_HOFF_ANSWER_LEN : AE_HOFF_QUERY_LEN;
    uint8_t *b = out + AE_HOFF_HDR_LEN;

    if (site == 0 || site > AE_TUNNEL_SITE_MAX || verdict > 1)
        return AE_ERR_INVAL;
    if (cap < AE_HOFF_OVERHEAD + blen)
        return AE_ERR_TOOBIG;
    int cf = put_addr(b + 8, client), lf = put_addr(b + 8 + ADDR_LEN, local);
    if (cf < 0 || lf < 0 || cf != lf)
        return AE_ERR_INVAL;
    put64(b, qid);
    if (type == AE_HOFF_ANSWER)
        b[AE_HOFF_QUERY_LEN] = verdict;
    return hoff_seal(k, type, site, now_ms, seq, blen, out);
}

int ae_hoff_encode_query(const ae_tunnel_keys *k, uint16_t site, uint64_t now_ms, uint64_t seq,
                         uint64_t qid, const struct sockaddr *client, const struct sockaddr *local,
                         uint8_t *out, size_t cap)
{
    return hoff_tuple_frame(k, AE_HOFF_QUERY, site, now_ms, seq, qid, client, local, 0, out, cap);
}

int ae_hoff_encode_answer(const ae_tunnel_keys *k, uint16_t site, uint64_t now_ms, uint64_t seq,
                          uint64_t qid, const struct sockaddr *client, const struct sockaddr *local,
                          uint8_t verdict, uint8_t *out, size_t cap)
{
    return hoff_tuple_frame(k, AE_HOFF_ANSWER, site, now_ms, seq, qid, client, local, verdict, out,
                            cap);
}

int ae_hoff_encode_segment(const ae_tunnel_keys *k, uint16_t site, uint64_t now_ms, uint64_t seq,
                           const uint8_t *pkt, size_t len, uint8_t *out, size_t cap)
{
    if (site == 0 || site > AE_TUNNEL_SITE_MAX || len < AE_HOFF_SEGMENT_MIN ||
        len > AE_HOFF_SEGMENT_MAX)
        return AE_ERR_INVAL;
    if (cap < AE_HOFF_OVERHEAD + len)
        return AE_ERR_TOOBIG;
    memmove(out + AE_HOFF_HDR_LEN, pkt, len);
    return hoff_seal(k, AE_HOFF_SEGMENT, site, now_ms, seq, len, out);
}

/* The family of an 18-octet address field: IPv4-mapped is IPv4. */
static int addr_family(const uint8_t *p)
{
    return memcmp(p, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0 ? AE_TUNNEL_FAMILY_IPV4
                                                                    : AE_TUNNEL_FAMILY_IPV6;
}

int ae_hoff_decode(const ae_tunnel_keys *k, const uint8_t *frame, size_t len, uint64_t now_ms,
                   uint64_t window_ms, ae_hoff_frame *f)
{
    uint8_t tag[AE_TUNNEL_MAC_LEN];
    const tun_key *key;
    size_t blen;
    uint64_t ts;

    if (len >= 4 && memcmp(frame, AE_HOFF_MAGIC, 4) != 0)
        return AE_TUN_ERR_MAGIC;
    if (len > 4 && frame[4] != AE_HOFF_VERSION)
        return AE_TUN_ERR_VERSION;
    if (len < AE_HOFF_OVERHEAD)
        return AE_TUN_ERR_SHORT;
    blen = get16(frame + HO_OFF_LEN);
    if (len != AE_HOFF_OVERHEAD + blen)
        return AE_TUN_ERR_SHORT;
    key = find_key(k, get64(frame + HO_OFF_KEY));
    if (key == NULL)
        return AE_TUN_ERR_KEY;
    keyed_mac(&key->hoff, frame, AE_HOFF_HDR_LEN + blen, tag);
    if (!memeql_sec(tag, frame + AE_HOFF_HDR_LEN + blen, AE_TUNNEL_MAC_LEN))
        return AE_TUN_ERR_MAC;

    /* Authenticated from here on. */
    ts = get64(frame + HO_OFF_TS);
    if ((ts > now_ms && ts - now_ms > window_ms) || (ts < now_ms && now_ms - ts > window_ms))
        return AE_TUN_ERR_STALE;
    memset(f, 0, sizeof(*f));
    f->type = frame[HO_OFF_TYPE];
    f->site = get16(frame + HO_OFF_SITE);
    if (f->site == 0 || f->site > AE_TUNNEL_SITE_MAX)
        return AE_TUN_ERR_SITE;
    f->key_id = key->id;
    f->timestamp_ms = ts;
    f->seq = get64(frame + HO_OFF_SEQ);
    const uint8_t *b = frame + AE_HOFF_HDR_LEN;
    switch (f->type) {
    case AE_HOFF_QUERY:
    case AE_HOFF_ANSWER: {
        size_t want = f->type == AE_HOFF_QUERY ? AE_HOFF_QUERY_LEN : AE_HOFF_ANSWER_LEN;
        if (blen != want)
            return AE_HOFF_ERR_BODY;
        if (f->type == AE_HOFF_ANSWER) {
            f->verdict = b[AE_HOFF_QUERY_LEN];
            if (f->verdict > 1)
                return AE_HOFF_ERR_BODY;
        }
        f->qid = get64(b);
        int fam = addr_family(b + 8);
        if (addr_family(b + 8 + ADDR_LEN) != fam ||
            get_addr(b + 8, fam, &f->tuple.client, &f->tuple.client_len) != 0 ||
            get_addr(b + 8 + ADDR_LEN, fam, &f->tuple.local, &f->tuple.local_len) != 0)
            return AE_TUN_ERR_ADDR;
        return 0;
    }
    case AE_HOFF_SEGMENT:
        if (blen < AE_HOFF_SEGMENT_MIN)
            return AE_HOFF_ERR_BODY;
        f->pkt = b;
        f->pkt_len = blen;
        return 0;
    default:
        return AE_HOFF_ERR_TYPE;
    }
}

const char *ae_hoff_reason_name(int rc)
{
    if (rc == AE_HOFF_ERR_TYPE)
        return "type";
    if (rc == AE_HOFF_ERR_BODY)
        return "body";
    return ae_tunnel_reason_name(rc);
}
