/*
 * Shared state in Redis: ring sync and rotation, site registry. See state/state.h.
 *
 * Every Redis interaction that must be atomic across sites is one Lua script (EVAL), so a site
 * that dies or stalls half-way can never leave a half-written ring:
 *  - PUBLISH_IF_NEWER writes a ring only when Redis has none, an unreadable one, or an older
 *    generation (first start, Redis restarted empty, restored from an old snapshot);
 *  - ROTATE_CAS writes the rotated ring only while this site still holds the lock (fencing
 *    token) and the ring is still the generation the rotation started from, so two sites
 *    racing produce exactly one new key;
 *  - HEARTBEAT refreshes the site record unless another instance holds the site id.
 */
#include "state/state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "conf/base.h"

#define SITE_TTL_BEATS  5
#define SITE_PRUNE_MS   (24ull * 3600 * 1000) /* sites silent this long leave the index */
#define LOG_EVERY_MS    10000
#define MAX_SITES       256
#define SITE_RECORD_MAX 512

static const char script_publish_if_newer[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur then\n"
    "  local g = tonumber(string.match(cur, '\\ngeneration (%d+)\\n'))\n"
    "  if g and g >= tonumber(ARGV[2]) then return 0 end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "redis.call('PUBLISH', ARGV[3], ARGV[2])\n"
    "return 1\n";

static const char script_rotate_cas[] =
    "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "local ok = cur and string.match(cur, '\\ngeneration (%d+)\\n') == ARGV[2]\n"
    "if not ok then redis.call('DEL', KEYS[2]) return -1 end\n"
    "redis.call('SET', KEYS[1], ARGV[3])\n"
    "redis.call('DEL', KEYS[2])\n"
    "redis.call('PUBLISH', ARGV[5], ARGV[4])\n"
    "return 1\n";

static const char script_heartbeat[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur and not string.find(cur, ARGV[1], 1, true) then return cur end\n"
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])\n"
    "return 1\n";

/* Leaves the registry: deletes the site record when it is still this instance's. */
static const char script_leave[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if not cur or not string.find(cur, ARGV[1], 1, true) then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return 1\n";

static const char script_list_sites[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])\n"
    "local ids = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')\n"
    "local out = {}\n"
    "for i = 1, #ids, 2 do\n"
    "  out[#out + 1] = ids[i]\n"
    "  out[#out + 1] = ids[i + 1]\n"
    "  out[#out + 1] = redis.call('GET', ARGV[1] .. ids[i]) or ''\n"
    "end\n"
    "return out\n";

struct ae_state {
    struct ev_loop *loop;
    ae_redis *redis;
    ae_redis_target target;
    ae_redis_tls *tls; /* rediss:// only */
    ae_state_hooks hooks;

    uint32_t site_id;
    char site_name[64];
    char forward[64];
    char instance[33]; /* random hex: tells this process from another with the same site id */
    uint64_t started_ms;
    int draining;

    uint8_t kek[AE_RING_KEK_LEN];
    int have_kek;
    uint64_t rotation_ms, sync_ms, hb_ms;
    uint32_t connect_timeout_ms, command_timeout_ms;

    ae_ring ring;
    int have_ring;
    int syncing, rotating, force_rotate;
    char token[80];        /* fencing token of the rotation in progress: counter:instance */
    uint64_t rot_base_gen; /* ring generation the rotation in progress started from */
    uint64_t last_rot_warn_ms, last_ring_err_ms, last_conflict_ms;
    char last_ring_err[128];       /* last ring error logged: only repeats of it are rate limited */
    uint64_t ring_changed_mono_ms; /* monotonic time this site last saw the ring change; 0 never */

    ev_timer sync_timer, hb_timer;
    ae_state_info info;
    ae_site_info sites[MAX_SITES];
    size_t nsites;

    char k_ring[96], k_lock[96], k_fence[96], k_events[96], k_site[96], k_sites[96], k_site_pfx[96];
};

static int rate_ok(uint64_t *last, uint64_t every_ms)
{
    uint64_t now = ae_now_ms();
    if (*last != 0 && now - *last < every_ms)
        return 0;
    *last = now;
    return 1;
}

static int is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

/* Ring errors: a repeat of the last one is logged once per LOG_EVERY_MS, a different one at once
 * (cleared when a ring reads fine, so a new incident is always logged). */
static int ring_err_log_ok(ae_state *s, const char *msg)
{
    if (strncmp(msg, s->last_ring_err, sizeof(s->last_ring_err) - 1) != 0) {
        size_t n = strnlen(msg, sizeof(s->last_ring_err) - 1); /* a prefix identifies it */
        memcpy(s->last_ring_err, msg, n);
        s->last_ring_err[n] = '\0';
        s->last_ring_err_ms = ae_now_ms();
        return 1;
    }
    return rate_ok(&s->last_ring_err_ms, LOG_EVERY_MS);
}

static const char *reply_err(const redisReply *r, const char *err)
{
    if (r == NULL)
        return err != NULL ? err : "no reply";
    if (r->type == REDIS_REPLY_ERROR)
        return r->str;
    return "unexpected reply type";
}

static void set_ring(ae_state *s, const ae_ring *r, const char *why)
{
    if (s->have_ring)
        s->ring_changed_mono_ms = ae_now_ms();
    s->ring = *r;
    s->have_ring = 1;
    s->info.ring_generation = r->generation;
    const ae_ring_key *cur = ae_ring_find(r, AE_RING_CURRENT);
    AE_INFO("state: shared ring generation %" PRIu64 " %s (current key id %" PRIu64 ")",
            r->generation, why, cur != NULL ? cur->id : 0);
    if (s->hooks.ring_changed != NULL)
        s->hooks.ring_changed(&s->ring, s->hooks.arg);
}

/* ---- site records ---- */

static void site_record(ae_state *s, char *buf, size_t len)
{
    snprintf(buf, len,
             "id=%u name=%s forward=%s state=%s version=%s started_ms=%" PRIu64
             " heartbeat_ms=%" PRIu64 " instance=%s",
             s->site_id, s->site_name, s->forward, s->draining ? "draining" : "active", AE_VERSION,
             s->started_ms, ae_wall_ms(), s->instance);
}

/* Copies the value of field name from a record "k=v k=v ..." into out; 0 or -1. */
static int record_field(const char *rec, size_t len, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name), i = 0;

    while (i < len) {
        size_t start = i;
        while (i < len && rec[i] != ' ')
            i++;
        if (i - start > nl && memcmp(rec + start, name, nl) == 0 && rec[start + nl] == '=') {
            size_t vlen = i - start - nl - 1;
            if (vlen >= outlen)
                vlen = outlen - 1;
            memcpy(out, rec + start + nl + 1, vlen);
            out[vlen] = '\0';
            return 0;
        }
        i++;
    }
    return -1;
}

static uint64_t record_u64(const char *rec, size_t len, const char *name)
{
    char v[24];
    char *end;
    unsigned long long x;
    if (record_field(rec, len, name, v, sizeof(v)) != 0)
        return 0;
    x = strtoull(v, &end, 10);
    return *end == '\0' ? (uint64_t)x : 0;
}

/* ---- ring sync ---- */

static void sync_now(ae_state *s);
static void maybe_rotate(ae_state *s);

static void publish_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    ae_state *s = arg;
    (void)r;
    s->syncing = 0;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        s->info.redis.errors++;
        AE_WARN("state: publishing the ring failed: %s", reply_err(reply, err));
        return;
    }
    if (reply->integer == 1 && s->have_ring) {
        s->info.republished++;
        AE_WARN("state: Redis had no usable ring: re-published cached generation %" PRIu64,
                s->ring.generation);
    }
    /* Read back what is there now: ours. When the script refused (Redis holds a generation
     * >= ours, possibly one we cannot read), do not re-read at once: an unreadable ring would
     * loop GET -> publish -> GET without pause; the writer's PUBLISH or the sync timer reads it. */
    if (reply->integer == 1)
        sync_now(s);
}

static void publish_ring(ae_state *s, const ae_ring *ring)
{
    char *enc = NULL, gen[24];
    size_t enclen = 0;
    const char *argv[7];
    size_t argvlen[7];

    if (ae_ring_encode(ring, s->have_kek ? s->kek : NULL, &enc, &enclen) != 0) {
        AE_ERROR("state: cannot encode the ring");
        s->syncing = 0;
        return;
    }
    snprintf(gen, sizeof(gen), "%" PRIu64, ring->generation);
    argv[0] = "EVAL";
    argv[1] = script_publish_if_newer;
    argv[2] = "1";
    argv[3] = s->k_ring;
    argv[4] = enc;
    argv[5] = gen;
    argv[6] = s->k_events;
    for (int i = 0; i < 7; i++)
        argvlen[i] = i == 4 ? enclen : strlen(argv[i]);
    if (ae_redis_command(s->redis, publish_cb, s, 7, argv, argvlen) != 0)
        s->syncing = 0;
    OPENSSL_cleanse(enc, enclen);
    free(enc);
}

/* The same keys (ids and secrets, in the same states). */
static int ring_same(const ae_ring *a, const ae_ring *b)
{
    if (a->nkeys != b->nkeys)
        return 0;
    for (size_t i = 0; i < a->nkeys; i++)
        if (a->keys[i].id != b->keys[i].id || a->keys[i].state != b->keys[i].state ||
            CRYPTO_memcmp(a->keys[i].secret, b->keys[i].secret, AE_RING_SECRET_LEN) != 0)
            return 0;
    return 1;
}

static void get_ring_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    ae_state *s = arg;
    char derr[256];
    ae_ring got;
    (void)r;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        s->syncing = 0;
        if (reply != NULL) {
            s->info.ring_errors++;
            if (ring_err_log_ok(s, reply->str))
                AE_ERROR("state: cannot read %s: %s (keeping cached ring generation %" PRIu64 ")",
                         s->k_ring, reply->str, s->ring.generation);
        }
        return;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        if (s->have_ring) {
            publish_ring(s, &s->ring);
        } else {
            ae_ring fresh;
            if (ae_ring_init(&fresh, ae_wall_ms()) != 0) {
                s->syncing = 0;
                return;
            }
            AE_INFO("state: no shared ring in Redis yet: creating one");
            publish_ring(s, &fresh);
            OPENSSL_cleanse(&fresh, sizeof(fresh));
        }
        return;
    }
    if (reply->type != REDIS_REPLY_STRING) {
        s->syncing = 0;
        s->info.ring_errors++;
        if (ring_err_log_ok(s, "unexpected reply type"))
            AE_ERROR("state: %s holds an unexpected reply type %d", s->k_ring, reply->type);
        return;
    }
    if (ae_ring_decode(reply->str, reply->len, s->have_kek ? s->kek : NULL, &got, derr,
                       sizeof(derr)) != 0) {
        s->info.ring_errors++;
        if (ring_err_log_ok(s, derr))
            AE_ERROR("state: invalid ring in Redis (%s): %s; keeping cached generation %" PRIu64,
                     s->k_ring, derr, s->ring.generation);
        /* Repair only when safe: the script overwrites an unreadable ring or an older
         * generation, never a newer one (possibly written by a newer anyedge). */
        if (s->have_ring)
            publish_ring(s, &s->ring);
        else
            s->syncing = 0;
        return;
    }
    s->syncing = 0;
    s->info.last_sync_ms = ae_wall_ms();
    s->last_ring_err[0] = '\0';
    if (!s->have_ring || got.generation > s->ring.generation) {
        set_ring(s, &got, "adopted from Redis");
    } else if (got.generation == s->ring.generation && !ring_same(&got, &s->ring)) {
        /* Two rings of one generation: a rotation acknowledged by a master that failed before
         * replicating it, and another rotation made on the new master. Redis's wins everywhere
         * (the lost one added only a next key, not yet used to encrypt if this happens within
         * a sync interval), so every site ends up with the same keys. */
        s->info.ring_conflicts++;
        AE_WARN("state: Redis holds ring generation %" PRIu64 " with other keys than the cached "
                "one (a rotation lost in a failover): adopting Redis's",
                got.generation);
        set_ring(s, &got, "adopted from Redis (conflict resolved)");
    } else if (got.generation < s->ring.generation) {
        /* Never adopted (a replayed old ring would bring back retired keys): counted, and the
         * newer cached ring goes back to Redis. */
        s->info.ring_errors++;
        AE_WARN("state: Redis holds ring generation %" PRIu64 ", older than the cached %" PRIu64
                " (restored from a snapshot, or replayed?): refused, re-publishing",
                got.generation, s->ring.generation);
        s->syncing = 1;
        publish_ring(s, &s->ring);
    }
    OPENSSL_cleanse(&got, sizeof(got));
    if (!s->syncing)
        maybe_rotate(s);
}

static void sync_now(ae_state *s)
{
    const char *argv[2] = {"GET", s->k_ring};
    size_t argvlen[2] = {3, strlen(s->k_ring)};

    if (s->syncing || !ae_redis_connected(s->redis))
        return;
    if (ae_redis_command(s->redis, get_ring_cb, s, 2, argv, argvlen) == 0)
        s->syncing = 1;
}

/* ---- rotation ---- */

static void rotation_done(ae_state *s)
{
    s->rotating = 0;
    s->force_rotate = 0;
}

/* The rotated ring travels with its compare-and-set command. */
typedef struct {
    ae_state *s;
    ae_ring next;
} rot_ctx;

static void cas_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    rot_ctx *rc = arg;
    ae_state *s = rc->s;
    (void)r;

    rotation_done(s);
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        s->info.redis.errors++;
        AE_WARN("state: rotation failed: %s", reply_err(reply, err));
    } else if (reply->integer == 1) {
        s->info.rotations++;
        set_ring(s, &rc->next, "rotated by this site");
    } else {
        s->info.rotations_lost++;
        AE_INFO("state: rotation not applied (%s); reading the ring",
                reply->integer == 0 ? "lock lost" : "another site rotated first");
        sync_now(s);
    }
    OPENSSL_cleanse(rc, sizeof(*rc));
    free(rc);
}

static void lock_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    ae_state *s = arg;
    char *enc = NULL, gen_old[24], gen_new[24];
    size_t enclen = 0;
    rot_ctx *rc;
    const char *argv[10];
    size_t argvlen[10];
    (void)r;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        AE_WARN("state: rotation lock failed: %s", reply_err(reply, err));
        rotation_done(s);
        return;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        s->info.rotations_lost++;
        AE_INFO("state: another site holds the rotation lock; it rotates");
        rotation_done(s);
        return;
    }
    rc = calloc(1, sizeof(*rc));
    if (rc == NULL || ae_ring_rotate(&s->ring, &rc->next, ae_wall_ms()) != 0 ||
        ae_ring_encode(&rc->next, s->have_kek ? s->kek : NULL, &enc, &enclen) != 0) {
        AE_ERROR("state: cannot build the rotated ring");
        free(rc);
        rotation_done(s);
        return;
    }
    rc->s = s;
    /* Compare against the generation the rotation was asked from: if a sync adopted another
     * site's rotation meanwhile, the compare-and-set fails (and drops the lock) instead of
     * rotating a second time. */
    snprintf(gen_old, sizeof(gen_old), "%" PRIu64, s->rot_base_gen);
    snprintf(gen_new, sizeof(gen_new), "%" PRIu64, rc->next.generation);
    argv[0] = "EVAL";
    argv[1] = script_rotate_cas;
    argv[2] = "2";
    argv[3] = s->k_ring;
    argv[4] = s->k_lock;
    argv[5] = s->token;
    argv[6] = gen_old;
    argv[7] = enc;
    argv[8] = gen_new;
    argv[9] = s->k_events;
    for (int i = 0; i < 10; i++)
        argvlen[i] = i == 7 ? enclen : strlen(argv[i]);
    if (ae_redis_command(s->redis, cas_cb, rc, 10, argv, argvlen) != 0) {
        free(rc);
        rotation_done(s);
    }
    OPENSSL_cleanse(enc, enclen);
    free(enc);
}

static void fence_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    ae_state *s = arg;
    char px[24];
    const char *argv[6];
    size_t argvlen[6];
    (void)r;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        AE_WARN("state: rotation fencing token failed: %s", reply_err(reply, err));
        rotation_done(s);
        return;
    }
    /* The counter alone could repeat after a failover that lost an INCR (replication is
     * asynchronous); with the instance id two sites never hold the same token. */
    snprintf(s->token, sizeof(s->token), "%lld:%s", reply->integer, s->instance);
    /* The lock outlives a few command timeouts, no more: a site that dies holding it delays
     * the next rotation by that long only. */
    snprintf(px, sizeof(px), "%u", 5 * s->command_timeout_ms + 1000);
    argv[0] = "SET";
    argv[1] = s->k_lock;
    argv[2] = s->token;
    argv[3] = "NX";
    argv[4] = "PX";
    argv[5] = px;
    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    if (ae_redis_command(s->redis, lock_cb, s, 6, argv, argvlen) != 0)
        rotation_done(s);
}

static int rotation_due(const ae_state *s)
{
    uint64_t now = ae_wall_ms();
    return s->have_ring && now >= s->ring.rotated_ms && now - s->ring.rotated_ms >= s->rotation_ms;
}

static void maybe_rotate(ae_state *s)
{
    const char *argv[2] = {"INCR", s->k_fence};
    size_t argvlen[2] = {4, strlen(s->k_fence)};

    if (s->rotating || s->syncing || !s->have_ring || !(s->force_rotate || rotation_due(s)))
        return;
    if (!ae_redis_connected(s->redis)) {
        s->force_rotate = 0;
        return;
    }
    s->rotating = 1;
    s->rot_base_gen = s->ring.generation;
    if (ae_redis_command(s->redis, fence_cb, s, 2, argv, argvlen) != 0)
        rotation_done(s);
}

int ae_state_rotate(ae_state *s, char *err, size_t errlen)
{
    const ae_ring_key *next;

    if (!ae_redis_connected(s->redis)) {
        snprintf(err, errlen, "Redis is not connected: shared keys cannot rotate now");
        return AE_ERR_AGAIN;
    }
    if (!s->have_ring || s->rotating || s->syncing) {
        snprintf(err, errlen, "a ring sync or rotation is in progress; try again");
        return AE_ERR_AGAIN;
    }
    /* Requests at several sites "at once" must give one rotation: one that arrives after
     * another site's rotation already reached us (within a sync interval) is absorbed by it. */
    if (s->ring_changed_mono_ms != 0 && ae_now_ms() - s->ring_changed_mono_ms < s->sync_ms) {
        AE_INFO("state: rotation request absorbed: the ring rotated %" PRIu64
                " ms ago (generation %" PRIu64 "), less than state.sync_interval",
                ae_now_ms() - s->ring_changed_mono_ms, s->ring.generation);
        return 0;
    }
    next = ae_ring_find(&s->ring, AE_RING_NEXT);
    if (next != NULL && ae_wall_ms() - next->created_ms < s->sync_ms)
        AE_WARN("state: forced rotation: the next key was published %" PRIu64
                " ms ago, less than state.sync_interval; a site that missed the notification "
                "gives its clients a full handshake until it syncs",
                ae_wall_ms() - next->created_ms);
    s->force_rotate = 1;
    maybe_rotate(s);
    return 0;
}

/* ---- site registry ---- */

static void parse_sites(ae_state *s, const redisReply *reply)
{
    size_t n = 0;

    for (size_t i = 0; i + 2 < reply->elements && n < MAX_SITES; i += 3) {
        const redisReply *id = reply->element[i], *score, *rec;
        ae_site_info *si;
        char *end;
        unsigned long v;

        score = reply->element[i + 1];
        rec = reply->element[i + 2];
        if (!is_str(id) || !is_str(score) || !is_str(rec))
            continue;
        v = strtoul(id->str, &end, 10);
        if (*end != '\0' || v == 0 || v > 4095)
            continue;
        si = &s->sites[n];
        memset(si, 0, sizeof(*si));
        si->id = (uint32_t)v;
        si->live = rec->len > 0;
        si->heartbeat_ms = strtoull(score->str, NULL, 10);
        if (si->live) {
            char inst[40];
            record_field(rec->str, rec->len, "name", si->name, sizeof(si->name));
            record_field(rec->str, rec->len, "forward", si->forward, sizeof(si->forward));
            record_field(rec->str, rec->len, "state", si->state, sizeof(si->state));
            record_field(rec->str, rec->len, "version", si->version, sizeof(si->version));
            si->started_ms = record_u64(rec->str, rec->len, "started_ms");
            if (record_field(rec->str, rec->len, "instance", inst, sizeof(inst)) == 0)
                si->self = strcmp(inst, s->instance) == 0;
        } else {
            snprintf(si->state, sizeof(si->state), "gone");
        }
        n++;
    }
    s->nsites = n;
}

static void list_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    ae_state *s = arg;
    (void)r;
    (void)err;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY)
        parse_sites(s, reply);
}

static void heartbeat_cb(ae_redis *r, redisReply *reply, const char *err, void *arg)
{
    ae_state *s = arg;
    char prune[24];
    const char *argv[6];
    size_t argvlen[6];
    (void)r;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        AE_DEBUG("state: heartbeat failed: %s", reply_err(reply, err));
        return;
    }
    if (reply->type == REDIS_REPLY_STRING) {
        s->info.site_conflicts++;
        if (rate_ok(&s->last_conflict_ms, LOG_EVERY_MS))
            AE_ERROR("state: site id %u is registered by another live instance (%.*s); two sites "
                     "must not share an id: fix site.id",
                     s->site_id, (int)(reply->len < 200 ? reply->len : 200), reply->str);
    }
    snprintf(prune, sizeof(prune), "%" PRIu64, (uint64_t)(ae_wall_ms() - SITE_PRUNE_MS));
    argv[0] = "EVAL";
    argv[1] = script_list_sites;
    argv[2] = "1";
    argv[3] = s->k_sites;
    argv[4] = s->k_site_pfx;
    argv[5] = prune;
    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    ae_redis_command(s->redis, list_cb, s, 6, argv, argvlen);
}

static void heartbeat(ae_state *s)
{
    char rec[SITE_RECORD_MAX], marker[48], px[24], id[16], now[24];
    const char *argv[10];
    size_t argvlen[10];

    if (!ae_redis_connected(s->redis))
        return;
    site_record(s, rec, sizeof(rec));
    snprintf(marker, sizeof(marker), " instance=%s", s->instance);
    snprintf(px, sizeof(px), "%" PRIu64, SITE_TTL_BEATS * s->hb_ms);
    snprintf(id, sizeof(id), "%u", s->site_id);
    snprintf(now, sizeof(now), "%" PRIu64, ae_wall_ms());
    argv[0] = "EVAL";
    argv[1] = script_heartbeat;
    argv[2] = "2";
    argv[3] = s->k_site;
    argv[4] = s->k_sites;
    argv[5] = marker;
    argv[6] = rec;
    argv[7] = px;
    argv[8] = id;
    argv[9] = now;
    for (int i = 0; i < 10; i++)
        argvlen[i] = strlen(argv[i]);
    ae_redis_command(s->redis, heartbeat_cb, s, 10, argv, argvlen);
}

/* ---- timers and connection events ---- */

static void sync_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ae_state *s = t->data;
    (void)loop;
    (void)revents;
    if (!ae_redis_connected(s->redis)) {
        if (rotation_due(s) && rate_ok(&s->last_rot_warn_ms, 60000))
            AE_WARN("state: key rotation is due but Redis is unavailable: paused; the cached "
                    "ring generation %" PRIu64 " keeps serving",
                    s->ring.generation);
        return;
    }
    sync_now(s);
}

static void hb_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    heartbeat(t->data);
}

static void on_redis_state(ae_redis *r, int connected, void *arg)
{
    ae_state *s = arg;
    (void)r;
    if (connected) {
        AE_INFO("state: Redis connected; syncing the ring and registering site %u", s->site_id);
        s->syncing = 0;
        s->rotating = 0;
        heartbeat(s);
        sync_now(s);
    } else {
        AE_WARN("state: Redis connection lost; serving with cached ring generation %" PRIu64
                ", rotation paused",
                s->ring.generation);
        s->syncing = 0;
        s->rotating = 0;
        s->force_rotate = 0;
    }
}

static void on_redis_message(ae_redis *r, const char *msg, size_t len, void *arg)
{
    ae_state *s = arg;
    (void)r;
    AE_DEBUG("state: ring event %.*s", (int)(len < 32 ? len : 32), msg);
    sync_now(s);
}

/* ---- startup (blocking, bounded) ---- */

static struct timeval ms_tv(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static redisContext *blocking_connect(ae_state *s, char *err, size_t errlen)
{
    redisContext *c;
    redisReply *rep;
    char where[160];

    if (s->target.nsentinels > 0 &&
        ae_redis_sentinel_resolve(&s->target, s->tls, s->connect_timeout_ms, err, errlen) != 0)
        return NULL;
    ae_redis_target_describe(&s->target, where, sizeof(where));
    c = s->target.unix_path != NULL
            ? redisConnectUnixWithTimeout(s->target.unix_path, ms_tv(s->connect_timeout_ms))
            : redisConnectWithTimeout(s->target.host, s->target.port, ms_tv(s->connect_timeout_ms));
    if (c == NULL || c->err) {
        snprintf(err, errlen, "%s: %s", where, c != NULL ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, ms_tv(s->command_timeout_ms));
    if (s->tls != NULL) {
        /* Blocking handshake, bounded by the timeout just set. */
        char e[300];
        if (ae_redis_tls_start(s->tls, c, s->target.host, e, sizeof(e)) != 0) {
            snprintf(err, errlen, "%s: %s", where, e);
            redisFree(c);
            return NULL;
        }
    }
    if (s->target.password != NULL) {
        rep = s->target.user != NULL
                  ? redisCommand(c, "AUTH %s %s", s->target.user, s->target.password)
                  : redisCommand(c, "AUTH %s", s->target.password);
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "%s: AUTH failed: %s", where, rep != NULL ? rep->str : c->errstr);
            freeReplyObject(rep);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(rep);
    }
    if (s->target.db != 0) {
        rep = redisCommand(c, "SELECT %d", s->target.db);
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "%s: SELECT %d failed: %s", where, s->target.db,
                     rep != NULL ? rep->str : c->errstr);
            freeReplyObject(rep);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(rep);
    }
    if (s->target.nsentinels > 0) {
        rep = redisCommand(c, "ROLE");
        if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements == 0 ||
            rep->element[0]->type != REDIS_REPLY_STRING ||
            strcmp(rep->element[0]->str, "master") != 0) {
            snprintf(err, errlen, "%s (master %s by the sentinels): ROLE is not master", where,
                     s->target.master_name);
            freeReplyObject(rep);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(rep);
    }
    return c;
}

/* Claims the site id and reads the ring. Returns 0, AE_ERR_INVAL on a site id conflict
 * (err set), AE_ERR_IO when Redis is unusable now (err set). */
static int startup_sync(ae_state *s, char *err, size_t errlen)
{
    redisContext *c = blocking_connect(s, err, errlen);
    redisReply *rep;
    char rec[SITE_RECORD_MAX], derr[256];

    if (c == NULL)
        return AE_ERR_IO;
    rep = redisCommand(c, "GET %s", s->k_site);
    if (rep == NULL) {
        snprintf(err, errlen, "GET %s: %s", s->k_site, c->errstr);
        redisFree(c);
        return AE_ERR_IO;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        char inst[40] = "", name[64] = "?";
        uint64_t hb = record_u64(rep->str, rep->len, "heartbeat_ms"), now = ae_wall_ms();
        record_field(rep->str, rep->len, "instance", inst, sizeof(inst));
        record_field(rep->str, rep->len, "name", name, sizeof(name));
        if (strcmp(inst, s->instance) != 0 && hb + SITE_TTL_BEATS * s->hb_ms > now) {
            snprintf(err, errlen,
                     "site id %u is already registered by a live instance (name %s, last "
                     "heartbeat %" PRIu64 " ms ago): every site needs its own site.id",
                     s->site_id, name, now > hb ? now - hb : 0);
            freeReplyObject(rep);
            redisFree(c);
            return AE_ERR_INVAL;
        }
    }
    freeReplyObject(rep);
    site_record(s, rec, sizeof(rec));
    rep = redisCommand(c, "SET %s %s PX %" PRIu64, s->k_site, rec, SITE_TTL_BEATS * s->hb_ms);
    freeReplyObject(rep);

    rep = redisCommand(c, "GET %s", s->k_ring);
    if (rep != NULL && rep->type == REDIS_REPLY_NIL) {
        ae_ring fresh;
        char *enc = NULL;
        size_t enclen = 0;
        freeReplyObject(rep);
        rep = NULL;
        if (ae_ring_init(&fresh, ae_wall_ms()) == 0 &&
            ae_ring_encode(&fresh, s->have_kek ? s->kek : NULL, &enc, &enclen) == 0) {
            rep = redisCommand(c, "EVAL %s 1 %s %b 1 %s", script_publish_if_newer, s->k_ring, enc,
                               enclen, s->k_events);
            freeReplyObject(rep);
            AE_INFO("state: no shared ring in Redis: created generation 1");
        }
        OPENSSL_cleanse(&fresh, sizeof(fresh));
        if (enc != NULL)
            OPENSSL_cleanse(enc, enclen);
        free(enc);
        rep = redisCommand(c, "GET %s", s->k_ring);
    }
    if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
        ae_ring got;
        if (ae_ring_decode(rep->str, rep->len, s->have_kek ? s->kek : NULL, &got, derr,
                           sizeof(derr)) == 0) {
            s->ring = got;
            s->have_ring = 1;
            s->info.ring_generation = got.generation;
            s->info.last_sync_ms = ae_wall_ms();
            OPENSSL_cleanse(&got, sizeof(got));
        } else {
            s->info.ring_errors++;
            AE_ERROR("state: invalid ring in Redis (%s): %s", s->k_ring, derr);
        }
    } else {
        s->info.ring_errors++;
        AE_ERROR("state: cannot read %s: %s", s->k_ring,
                 rep != NULL && rep->type == REDIS_REPLY_ERROR ? rep->str
                 : rep == NULL                                 ? c->errstr
                                                               : "unexpected type");
    }
    freeReplyObject(rep);
    redisFree(c);
    return 0;
}

/* ---- public ---- */

static int conf_err(char *err, size_t errlen, const ae_conf *conf, ae_conf_pos pos, const char *key,
                    const char *msg)
{
    snprintf(err, errlen, "%s:%u:%u: %s: %s", conf->path != NULL ? conf->path : "-", pos.line,
             pos.col, key, msg);
    return AE_ERR_PARSE;
}

int ae_state_check_conf(const ae_conf *conf, char *err, size_t errlen)
{
    ae_redis_target t;
    char e[256];
    uint8_t kek[AE_RING_KEK_LEN];

    if (conf->state.redis == NULL) {
        if (conf->state.kek_file != NULL)
            return conf_err(err, errlen, conf, conf->state.kek_pos, "state.kek_file",
                            "needs state.redis");
        return 0;
    }
    ae_redis_tls *tls;
    if (ae_redis_target_from_conf(conf, &t, e, sizeof(e)) != 0)
        return conf_err(err, errlen, conf, conf->state.redis_pos, "state", e);
    int trv = ae_redis_tls_from_conf(conf, &t, &tls, e, sizeof(e));
    ae_redis_target_free(&t);
    ae_redis_tls_free(tls);
    if (trv != 0)
        return conf_err(err, errlen, conf,
                        conf->state.tls.set ? conf->state.tls.pos : conf->state.redis_pos,
                        "state.tls", e);
    if ((uint64_t)conf->state.sync_interval_ms * 2 > (uint64_t)conf->tls.ticket_rotation_s * 1000)
        return conf_err(err, errlen, conf, conf->state.redis_pos, "state.sync_interval",
                        "must be at most half of tls.ticket_rotation (a key is published one "
                        "sync interval before use)");
    if (conf->state.kek_file != NULL) {
        int rv = ae_ring_load_kek(conf->state.kek_file, kek, e, sizeof(e));
        OPENSSL_cleanse(kek, sizeof(kek));
        if (rv != 0)
            return conf_err(err, errlen, conf, conf->state.kek_pos, "state.kek_file", e);
    }
    return 0;
}

int ae_state_new(struct ev_loop *loop, const ae_conf *conf, uint64_t rotation_ms,
                 const ae_state_hooks *hooks, ae_state **out, char *err, size_t errlen)
{
    ae_state *s;
    ae_redis_opts o;
    uint8_t rnd[16];
    const char *p = conf->state.prefix;
    char e[1024], where[160];
    int rv;

    *out = NULL;
    if ((rv = ae_state_check_conf(conf, err, errlen)) != 0)
        return rv;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "state: out of memory");
        return AE_ERR_NOMEM;
    }
    s->loop = loop;
    if (hooks != NULL)
        s->hooks = *hooks;
    s->site_id = conf->site.id;
    snprintf(s->site_name, sizeof(s->site_name), "%s", conf->site.name);
    snprintf(s->forward, sizeof(s->forward), "%s",
             conf->site.forward.len > 0 ? conf->site.forward.text : "-");
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        free(s);
        snprintf(err, errlen, "state: no randomness");
        return AE_ERR_TLS;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(s->instance + 2 * i, 3, "%02x", rnd[i]);
    s->started_ms = ae_wall_ms();
    s->rotation_ms = rotation_ms;
    s->sync_ms = conf->state.sync_interval_ms;
    s->hb_ms = conf->state.heartbeat_ms;
    s->connect_timeout_ms = conf->state.connect_timeout_ms;
    s->command_timeout_ms = conf->state.command_timeout_ms;
    snprintf(s->k_ring, sizeof(s->k_ring), "%sring", p);
    snprintf(s->k_lock, sizeof(s->k_lock), "%sring:lock", p);
    snprintf(s->k_fence, sizeof(s->k_fence), "%sring:fence", p);
    snprintf(s->k_events, sizeof(s->k_events), "%sring:events", p);
    snprintf(s->k_site, sizeof(s->k_site), "%ssite:%u", p, s->site_id);
    snprintf(s->k_site_pfx, sizeof(s->k_site_pfx), "%ssite:", p);
    snprintf(s->k_sites, sizeof(s->k_sites), "%ssites", p);
    if (conf->state.kek_file != NULL) {
        if (ae_ring_load_kek(conf->state.kek_file, s->kek, e, sizeof(e)) != 0) {
            snprintf(err, errlen, "state.kek_file: %s", e);
            free(s);
            return AE_ERR_IO;
        }
        s->have_kek = 1;
    }
    if (ae_redis_target_from_conf(conf, &s->target, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "%s", e);
        ae_state_free(s);
        return AE_ERR_PARSE;
    }
    if (ae_redis_tls_from_conf(conf, &s->target, &s->tls, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "state.tls: %s", e);
        ae_state_free(s);
        return AE_ERR_TLS;
    }
    if (s->tls != NULL && !conf->state.tls.verify && conf->state.tls.set)
        AE_WARN("state: state.tls.verify is off: the Redis server is not authenticated");
    rv = startup_sync(s, e, sizeof(e));
    ae_redis_target_describe(&s->target, where, sizeof(where)); /* the master, with sentinels */
    if (rv == AE_ERR_INVAL) {
        snprintf(err, errlen, "state: %s", e);
        ae_state_free(s);
        return rv;
    }
    if (rv != 0)
        AE_WARN("state: Redis at %s unavailable at start (%s): serving with a local key ring "
                "until it is back",
                where, e);
    else
        AE_INFO("state: Redis at %s: site %u registered, shared ring generation %" PRIu64, where,
                s->site_id, s->ring.generation);

    memset(&o, 0, sizeof(o));
    o.target = &s->target;
    o.tls = s->tls;
    o.connect_timeout_ms = s->connect_timeout_ms;
    o.command_timeout_ms = s->command_timeout_ms;
    o.subscribe_channel = s->k_events;
    o.on_state = on_redis_state;
    o.on_message = on_redis_message;
    o.arg = s;
    if (ae_redis_new(loop, &o, &s->redis) != 0) {
        snprintf(err, errlen, "state: cannot create the Redis client");
        ae_state_free(s);
        return AE_ERR_NOMEM;
    }
    ev_timer_init(&s->sync_timer, sync_timer_cb, s->sync_ms / 1000.0, s->sync_ms / 1000.0);
    s->sync_timer.data = s;
    ev_timer_start(loop, &s->sync_timer);
    ev_timer_init(&s->hb_timer, hb_timer_cb, s->hb_ms / 1000.0, s->hb_ms / 1000.0);
    s->hb_timer.data = s;
    ev_timer_start(loop, &s->hb_timer);
    *out = s;
    return 0;
}

void ae_state_leave(ae_state *s)
{
    char err[256], needle[64];
    redisContext *c;
    redisReply *rep;

    if (s == NULL || !ae_redis_connected(s->redis))
        return;
    c = blocking_connect(s, err, sizeof(err));
    if (c == NULL) {
        AE_WARN("state: cannot leave the site registry (%s); peers notice in %u heartbeats", err,
                SITE_TTL_BEATS);
        return;
    }
    snprintf(needle, sizeof(needle), " instance=%s", s->instance);
    rep = redisCommand(c, "EVAL %s 1 %s %s", script_leave, s->k_site, needle);
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1)
        AE_INFO("state: left the site registry (site %u)", s->site_id);
    else if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
        AE_WARN("state: cannot leave the site registry: %s; peers notice in %u heartbeats",
                rep != NULL ? rep->str : c->errstr, SITE_TTL_BEATS);
    freeReplyObject(rep);
    redisFree(c);
}

void ae_state_free(ae_state *s)
{
    if (s == NULL)
        return;
    if (s->loop != NULL) {
        ev_timer_stop(s->loop, &s->sync_timer);
        ev_timer_stop(s->loop, &s->hb_timer);
    }
    ae_redis_free(s->redis);
    ae_redis_tls_free(s->tls); /* after the client that uses it */
    ae_redis_target_free(&s->target);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

const ae_ring *ae_state_ring(const ae_state *s)
{
    return s->have_ring ? &s->ring : NULL;
}

void ae_state_set_rotation(ae_state *s, uint64_t rotation_ms)
{
    s->rotation_ms = rotation_ms;
}

void ae_state_set_draining(ae_state *s)
{
    s->draining = 1;
    heartbeat(s);
}

void ae_state_clear_draining(ae_state *s)
{
    s->draining = 0;
    heartbeat(s);
}

void ae_state_get_info(const ae_state *s, ae_state_info *out)
{
    uint64_t extra_errors = s->info.redis.errors; /* script/ring failures counted here */
    *out = s->info;
    ae_redis_get_stats(s->redis, &out->redis);
    out->redis.errors += extra_errors;
    out->connected = ae_redis_connected(s->redis);
    out->subscribed = ae_redis_subscribed(s->redis);
    out->have_ring = s->have_ring;
    out->ring_nkeys = s->have_ring ? s->ring.nkeys : 0;
    for (size_t i = 0; i < out->ring_nkeys && i < 3; i++) {
        static const char label[] = "anyedge ring key fingerprint";
        uint8_t in[sizeof(label) + AE_RING_SECRET_LEN], md[32];
        memcpy(in, label, sizeof(label));
        memcpy(in + sizeof(label), s->ring.keys[i].secret, AE_RING_SECRET_LEN);
        out->ring_key_ids[i] = s->ring.keys[i].id;
        out->ring_key_fp[i] = 0;
        if (EVP_Digest(in, sizeof(in), md, NULL, EVP_sha256(), NULL) == 1)
            out->ring_key_fp[i] =
                (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 | (uint32_t)md[2] << 8 | md[3];
        OPENSSL_cleanse(in, sizeof(in));
    }
}

size_t ae_state_sites(const ae_state *s, ae_site_info *out, size_t max)
{
    size_t n = s->nsites < max ? s->nsites : max;
    memcpy(out, s->sites, n * sizeof(*out));
    return n;
}
