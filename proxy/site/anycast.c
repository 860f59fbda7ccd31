/*
 * Anycast route control and site drain, on the main thread's loop.
 *
 * Every anycast.interval the site's health is sampled (every listener's pool has a usable
 * server, listeners open, not draining, Redis connected if required) and fed to a pure state
 * machine with rise/fall hysteresis (ae_anycast_fsm_*). Its decisions are applied by
 *  - mode command: `/bin/sh -c <announce|withdraw>` spawned with posix_spawn in its own process
 *    group, stdin /dev/null, stdout+stderr into a pipe watched by an ev_io and logged line by
 *    line, reaped by an ev_child, killed (SIGTERM, SIGKILL 2 s later, whole group) at
 *    anycast.command_timeout; a failure is retried with exponential backoff. The loop never
 *    waits for a command.
 *  - mode exabgp: one `announce route P next-hop self` / `withdraw route P next-hop self` line
 *    written to stdout (non-blocking; a full pipe is a failed attempt, retried).
 * Site drain (anyedgectl drain, POST /drain, SIGUSR2) withdraws at once, marks the site
 * draining in the registry, has the workers send HTTP/3 GOAWAY, and becomes `drained` after the
 * drain timeout; the process keeps serving and accepting. Undrain re-announces after `rise`
 * healthy samples.
 */
#include "proxy/site/anycast.h"

#include "proxy/forward/forward.h"
#include "proxy/core/metrics.h"
#include "proxy/core/runtime.h"
#include "proxy/site/server.h"
#include "state/state.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define AC_KILL_GRACE_S 2.0         /* SIGTERM -> SIGKILL */
#define AC_LINE_MAX     1024        /* longer output lines are logged in pieces */
#define AC_LOG_MAX      (64 * 1024) /* output logged per command; the rest is discarded */
#define AC_BACKOFF_MAX  60000u
#define AC_FINISH_EXTRA 5.0 /* seconds beyond 2 x command_timeout allowed at exit */

const char *const ae_anycast_state_names[AE_ANYCAST_S__COUNT] = {"withdrawn", "announced",
                                                                 "draining", "drained"};

/* ---- the state machine (pure) ---- */

void ae_anycast_fsm_init(ae_anycast_fsm *f, uint32_t rise, uint32_t fall, int require_redis)
{
    memset(f, 0, sizeof(*f));
    f->rise = rise > 0 ? rise : 1;
    f->fall = fall > 0 ? fall : 1;
    f->require_redis = require_redis;
    f->running = -1;
    f->last_target = -1;
}

int ae_anycast_fsm_healthy(const ae_anycast_fsm *f, const ae_anycast_input *in)
{
    return in->pools_ok && in->listeners_ok && !in->draining && !in->registry_wait &&
           (!f->require_redis || in->redis_ok);
}

static void inc_sat(uint32_t *v)
{
    if (*v < UINT32_MAX)
        (*v)++;
}

int ae_anycast_fsm_sample(ae_anycast_fsm *f, const ae_anycast_input *in)
{
    int before = f->want;

    f->healthy = ae_anycast_fsm_healthy(f, in);
    if (f->healthy) {
        f->bad_streak = 0;
        inc_sat(&f->ok_streak);
        if (!f->want && f->ok_streak >= f->rise)
            f->want = 1;
    } else {
        f->ok_streak = 0;
        inc_sat(&f->bad_streak);
        /* Draining is an operator's decision, not a flap: no hysteresis. */
        if (f->want && (in->draining || f->bad_streak >= f->fall))
            f->want = 0;
    }
    return f->want != before;
}

uint64_t ae_anycast_backoff_ms(uint32_t failures)
{
    uint64_t ms = 1000;

    while (failures > 1 && ms < AC_BACKOFF_MAX) {
        ms *= 2;
        failures--;
    }
    return ms < AC_BACKOFF_MAX ? ms : AC_BACKOFF_MAX;
}

ae_anycast_action ae_anycast_fsm_next(ae_anycast_fsm *f, uint64_t now_ms)
{
    if (f->running >= 0)
        return AE_ANYCAST_ACT_NONE;
    if (f->have == f->want && !f->dirty) {
        f->failures = 0;
        f->retry_at_ms = 0;
        return AE_ANYCAST_ACT_NONE;
    }
    /* The backoff delays a retry of the same route only: a new decision goes out at once. */
    if (f->failures > 0 && f->last_target == f->want && now_ms < f->retry_at_ms)
        return AE_ANYCAST_ACT_NONE;
    f->running = f->want;
    return f->want ? AE_ANYCAST_ACT_ANNOUNCE : AE_ANYCAST_ACT_WITHDRAW;
}

void ae_anycast_fsm_done(ae_anycast_fsm *f, ae_anycast_result r, uint64_t now_ms)
{
    int target = f->running;

    if (target < 0)
        return;
    f->running = -1;
    if (r == AE_ANYCAST_OK) {
        f->have = target;
        f->dirty = 0;
        f->failures = 0;
        f->retry_at_ms = 0;
        f->last_target = -1;
        return;
    }
    /* A half-done command may have changed the route: make sure of it next time. */
    f->dirty = 1;
    if (r == AE_ANYCAST_FAILED) {
        if (f->last_target != target)
            f->failures = 0;
        inc_sat(&f->failures);
        f->retry_at_ms = now_ms + ae_anycast_backoff_ms(f->failures);
    }
    f->last_target = target;
}

int ae_anycast_fsm_obsolete(const ae_anycast_fsm *f)
{
    return f->running >= 0 && f->running != f->want;
}

/* ---- the runtime ---- */

typedef struct {
    pid_t pid;  /* 0: none */
    int target; /* 1 announce, 0 withdraw */
    int fd;     /* read end of the output pipe, -1 when closed */
    ev_io io;
    ev_child child;
    ev_timer timer; /* timeout, then the SIGKILL grace */
    int timed_out, cancelled, killed;
    uint64_t started_ms; /* monotonic */
    char line[AC_LINE_MAX + 1];
    size_t linelen, logged;
} ac_cmd;

#define AE_ANYCAST_REDIS_GRACE_MS 5000

struct ae_anycast {
    struct ev_loop *loop;
    ae_server_main *srv;
    ae_anycast_mode mode; /* fixed at start */
    char prefix[64];      /* fixed at start */
    char *announce, *withdraw;
    uint32_t command_timeout_ms, interval_ms, drain_timeout_ms;
    ae_anycast_fsm fsm;
    ev_timer tick, drain_timer, finish_timer;
    ac_cmd cmd;
    ae_site_drain site;
    int shutting, finishing, finish_expired;
    ae_anycast_state state;
    char reason[160];
    uint64_t last_transition_ms, drain_started_ms;
    uint64_t created_ms; /* monotonic: the start-up grace for the first Redis connection */
    struct {
        const char *action, *result;
        int exit_status;
        uint64_t at_ms, duration_ms;
    } last;
    uint64_t transitions[AE_ANYCAST_S__COUNT];
    uint64_t commands, command_failures;
};

static const char *action_name(int target)
{
    return target ? "announce" : "withdraw";
}

/* Pure-ish: reads the server's runtime, listeners and Redis state. */
static void sample_input(ae_anycast *a, ae_anycast_input *in)
{
    ae_runtime *rt = ae_server_runtime(a->srv);
    struct ae_state *st = ae_server_state(a->srv);
    uint64_t now = ae_now_ms();

    memset(in, 0, sizeof(*in));
    a->reason[0] = '\0';
    in->listeners_ok = ae_server_listening(a->srv);
    in->draining = a->site != AE_SITE_ACTIVE || a->shutting;
    in->pools_ok = rt != NULL && rt->conf->nlisteners > 0;
    for (size_t i = 0; in->pools_ok && i < rt->conf->nlisteners; i++) {
        const ae_conf_listener *l = &rt->conf->listeners[i];
        ae_pool *pool = &rt->pools[l->upstream_index];
        int any = 0;

        for (size_t k = 0; k < pool->nservers && !any; k++)
            any = ae_upstream_usable(pool, pool->servers[k], now);
        if (!any) {
            in->pools_ok = 0;
            snprintf(a->reason, sizeof(a->reason),
                     "upstream '%s' of listener '%s' has no healthy server", pool->conf->name,
                     l->name);
        }
    }
    if (rt != NULL && rt->conf->nlisteners == 0)
        snprintf(a->reason, sizeof(a->reason), "no listeners configured");
    if (st != NULL) {
        ae_state_info si;
        ae_state_get_info(st, &si);
        in->redis_ok = si.connected;
        /* Announcing before the forwarding table exists would reset the flows ECMP re-hashes
         * to this site (QUIC forwarding, TCP hand-off). Without Redis there is no table to wait
         * for; at start-up, before the first connection, wait for one for a bounded time (a
         * site that starts while Redis is down still announces, after the grace). */
        int starting =
            si.last_sync_ms == 0 && ae_now_ms() - a->created_ms < AE_ANYCAST_REDIS_GRACE_MS;
        in->registry_wait = (si.connected || starting) && ae_server_peers(a->srv) == NULL;
    }
    if (!in->listeners_ok)
        snprintf(a->reason, sizeof(a->reason), "listeners closed (shutting down)");
    else if (a->fsm.require_redis && !in->redis_ok && a->reason[0] == '\0')
        snprintf(a->reason, sizeof(a->reason), "redis unreachable (anycast.require_redis)");
    else if (in->registry_wait && a->reason[0] == '\0')
        snprintf(a->reason, sizeof(a->reason), "waiting for the site registry (forwarding table)");
    if (in->draining)
        snprintf(a->reason, sizeof(a->reason), "%s",
                 a->shutting                  ? "shutting down"
                 : a->site == AE_SITE_DRAINED ? "drained"
                                              : "draining");
}

static ae_anycast_state combined_state(const ae_anycast *a)
{
    if (a->site == AE_SITE_DRAINED)
        return AE_ANYCAST_S_DRAINED;
    if (a->site == AE_SITE_DRAINING || a->shutting)
        return AE_ANYCAST_S_DRAINING;
    return a->fsm.have == 1 ? AE_ANYCAST_S_ANNOUNCED : AE_ANYCAST_S_WITHDRAWN;
}

static void update_state(ae_anycast *a)
{
    ae_anycast_state st = combined_state(a);

    if (st == a->state)
        return;
    AE_INFO("anycast: state %s -> %s%s", ae_anycast_state_names[a->state],
            ae_anycast_state_names[st],
            a->mode == AE_ANYCAST_OFF ? " (mode off: no route control)" : "");
    a->state = st;
    a->transitions[st]++;
    a->last_transition_ms = ae_wall_ms();
}

static void kick(ae_anycast *a);

static void record_result(ae_anycast *a, int target, const char *result, int exit_status,
                          uint64_t started_ms)
{
    uint64_t now = ae_now_ms();

    a->last.action = action_name(target);
    a->last.result = result;
    a->last.exit_status = exit_status;
    a->last.at_ms = ae_wall_ms();
    a->last.duration_ms = now > started_ms ? now - started_ms : 0;
    a->commands++;
}

/* A command (or line) finished with result r. */
static void finished(ae_anycast *a, int target, ae_anycast_result r)
{
    ae_anycast_fsm_done(&a->fsm, r, ae_now_ms());
    if (r == AE_ANYCAST_FAILED) {
        a->command_failures++;
        AE_WARN("anycast: %s %s failed (%u in a row); retrying in %llu ms", action_name(target),
                a->prefix, (unsigned)a->fsm.failures,
                (unsigned long long)ae_anycast_backoff_ms(a->fsm.failures));
    }
    update_state(a);
    if (a->finishing) {
        if (r == AE_ANYCAST_FAILED) {
            ev_break(a->loop, EVBREAK_ALL);
            return;
        }
        a->fsm.failures = 0; /* at exit: one attempt per decision, no backoff */
    }
    kick(a);
    if (a->finishing && a->fsm.running < 0)
        ev_break(a->loop, EVBREAK_ALL);
}

/* ---- command output ---- */

static void log_line(ac_cmd *c, const char *what)
{
    for (size_t i = 0; i < c->linelen; i++)
        if ((unsigned char)c->line[i] < 0x20 || c->line[i] == 0x7f)
            c->line[i] = '?';
    c->line[c->linelen] = '\0';
    if (c->logged < AC_LOG_MAX)
        AE_INFO("anycast: %s[%d]: %s", what, (int)c->pid, c->line);
    else if (c->logged - c->linelen < AC_LOG_MAX)
        AE_WARN("anycast: %s[%d]: more than %d bytes of output; the rest is not logged", what,
                (int)c->pid, AC_LOG_MAX);
    c->linelen = 0;
}

static void cmd_close_pipe(ae_anycast *a)
{
    ac_cmd *c = &a->cmd;

    if (c->fd < 0)
        return;
    ev_io_stop(a->loop, &c->io);
    close(c->fd);
    c->fd = -1;
    if (c->linelen > 0)
        log_line(c, action_name(c->target));
}

/* Reads what the pipe holds; closes it at EOF or on error. */
static void cmd_read(ae_anycast *a)
{
    ac_cmd *c = &a->cmd;
    char buf[4096];

    while (c->fd >= 0) {
        ssize_t r = read(c->fd, buf, sizeof(buf));

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0) {
            cmd_close_pipe(a);
            return;
        }
        for (ssize_t i = 0; i < r; i++) {
            c->logged++;
            if (buf[i] == '\n') {
                log_line(c, action_name(c->target));
                continue;
            }
            c->line[c->linelen++] = buf[i];
            if (c->linelen == AC_LINE_MAX)
                log_line(c, action_name(c->target));
        }
    }
}

static void cmd_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    cmd_read(w->data);
}

static void cmd_signal(ae_anycast *a, int sig)
{
    if (a->cmd.pid > 0)
        kill(-a->cmd.pid, sig); /* its process group: sh and what it started */
}

static void cmd_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ae_anycast *a = w->data;
    ac_cmd *c = &a->cmd;

    if (c->pid <= 0)
        return;
    if (!c->timed_out && !c->cancelled) {
        c->timed_out = 1;
        AE_WARN("anycast: %s[%d] still running after %u ms: terminating it", action_name(c->target),
                (int)c->pid, (unsigned)a->command_timeout_ms);
        cmd_signal(a, SIGTERM);
    } else {
        c->killed = 1;
        AE_WARN("anycast: %s[%d] ignored SIGTERM: killing it", action_name(c->target), (int)c->pid);
        cmd_signal(a, SIGKILL);
        return;
    }
    ev_timer_set(&c->timer, AC_KILL_GRACE_S, 0.);
    ev_timer_start(loop, &c->timer);
}

static void cmd_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    ae_anycast *a = w->data;
    ac_cmd *c = &a->cmd;
    int st = w->rstatus, target = c->target, exit_status = -1;
    ae_anycast_result r;
    const char *result;
    char how[64];

    ev_child_stop(loop, w);
    ev_timer_stop(loop, &c->timer);
    cmd_read(a); /* what is left in the pipe */
    cmd_close_pipe(a);
    if (WIFEXITED(st)) {
        exit_status = WEXITSTATUS(st);
        snprintf(how, sizeof(how), "exit status %d", exit_status);
    } else if (WIFSIGNALED(st)) {
        snprintf(how, sizeof(how), "signal %d", WTERMSIG(st));
    } else {
        snprintf(how, sizeof(how), "status 0x%x", (unsigned)st);
    }
    if (c->cancelled) {
        r = AE_ANYCAST_CANCELLED;
        result = "cancelled";
    } else if (c->timed_out) {
        r = AE_ANYCAST_FAILED;
        result = "timeout";
    } else if (exit_status == 0) {
        r = AE_ANYCAST_OK;
        result = "ok";
    } else {
        r = AE_ANYCAST_FAILED;
        result = "failed";
    }
    record_result(a, target, result, exit_status, c->started_ms);
    if (r == AE_ANYCAST_OK)
        AE_INFO("anycast: %s %s done in %llu ms", action_name(target), a->prefix,
                (unsigned long long)a->last.duration_ms);
    else
        AE_WARN("anycast: %s[%d] %s: %s after %llu ms", action_name(target), (int)c->pid, result,
                how, (unsigned long long)a->last.duration_ms);
    c->pid = 0;
    finished(a, target, r);
}

/* environ plus the ANYEDGE_* variables; the strings live in vars. */
static char **build_env(char vars[4][160], const ae_anycast *a, int target)
{
    size_t n = 0, k = 0;
    char **env;
    ae_runtime *rt = ae_server_runtime(a->srv);

    while (environ != NULL && environ[n] != NULL)
        n++;
    env = calloc(n + 5, sizeof(*env));
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "ANYEDGE_", 8) != 0)
            env[k++] = environ[i];
    snprintf(vars[0], 160, "ANYEDGE_ACTION=%s", action_name(target));
    snprintf(vars[1], 160, "ANYEDGE_PREFIX=%s", a->prefix);
    snprintf(vars[2], 160, "ANYEDGE_SITE_ID=%u", rt != NULL ? (unsigned)rt->conf->site.id : 0);
    snprintf(vars[3], 160, "ANYEDGE_SITE_NAME=%s", rt != NULL ? rt->conf->site.name : "");
    for (int i = 0; i < 4; i++)
        env[k++] = vars[i];
    env[k] = NULL;
    return env;
}

static int cmd_spawn(ae_anycast *a, int target)
{
    ac_cmd *c = &a->cmd;
    const char *cmdline = target ? a->announce : a->withdraw;
    char *argv[] = {"/bin/sh", "-c", (char *)cmdline, NULL};
    char vars[4][160], **env;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    int p[2], rv;
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) != 0) {
        AE_ERROR("anycast: %s: pipe: %s", action_name(target), strerror(errno));
        return -1;
    }
    env = build_env(vars, a, target);
    if (env == NULL) {
        close(p[0]);
        close(p[1]);
        AE_ERROR("anycast: %s: out of memory", action_name(target));
        return -1;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    posix_spawnattr_init(&at);
    /* The child must not inherit our blocked or ignored signals (SIGPIPE is ignored here). */
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setpgroup(&at, 0); /* own group: a timeout kills everything it started */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    rv = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free(env);
    close(p[1]);
    if (rv != 0) {
        close(p[0]);
        AE_ERROR("anycast: %s: cannot start /bin/sh: %s", action_name(target), strerror(rv));
        return -1;
    }
    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
    memset(c, 0, sizeof(*c));
    c->pid = pid;
    c->target = target;
    c->fd = p[0];
    c->started_ms = ae_now_ms();
    ev_io_init(&c->io, cmd_io_cb, c->fd, EV_READ);
    c->io.data = a;
    ev_io_start(a->loop, &c->io);
    ev_child_init(&c->child, cmd_child_cb, pid, 0);
    c->child.data = a;
    ev_child_start(a->loop, &c->child);
    ev_timer_init(&c->timer, cmd_timer_cb, a->command_timeout_ms / 1000.0, 0.);
    c->timer.data = a;
    ev_timer_start(a->loop, &c->timer);
    AE_INFO("anycast: %s %s: started [%d]: %s", action_name(target), a->prefix, (int)pid, cmdline);
    return 0;
}

/* mode exabgp: one API line on stdout. Never blocks: stdout is non-blocking in this mode, and
 * a line is far below PIPE_BUF, so it is written whole or not at all. */
static ae_anycast_result exabgp_write(ae_anycast *a, int target)
{
    char line[160];
    int n =
        snprintf(line, sizeof(line), "%s route %s next-hop self\n", action_name(target), a->prefix);
    ssize_t w;

    do {
        w = write(STDOUT_FILENO, line, (size_t)n);
    } while (w < 0 && errno == EINTR);
    if (w == n) {
        AE_INFO("anycast: exabgp: %.*s", n - 1, line);
        return AE_ANYCAST_OK;
    }
    AE_WARN("anycast: exabgp: cannot write '%.*s' to stdout: %s", n - 1, line,
            w < 0 ? strerror(errno) : "short write");
    return AE_ANYCAST_FAILED;
}

/* Starts what the state machine asks for, cancels a command that became obsolete. */
static void kick(ae_anycast *a)
{
    ae_anycast_action act;
    uint64_t started;

    if (a->mode == AE_ANYCAST_OFF)
        return;
    if (ae_anycast_fsm_obsolete(&a->fsm) && a->cmd.pid > 0 && !a->cmd.cancelled &&
        !a->cmd.timed_out) {
        AE_INFO("anycast: %s[%d] no longer wanted: terminating it", action_name(a->cmd.target),
                (int)a->cmd.pid);
        a->cmd.cancelled = 1;
        cmd_signal(a, SIGTERM);
        ev_timer_stop(a->loop, &a->cmd.timer);
        ev_timer_set(&a->cmd.timer, AC_KILL_GRACE_S, 0.);
        ev_timer_start(a->loop, &a->cmd.timer);
        return;
    }
    act = ae_anycast_fsm_next(&a->fsm, ae_now_ms());
    if (act == AE_ANYCAST_ACT_NONE)
        return;
    int target = act == AE_ANYCAST_ACT_ANNOUNCE;
    started = ae_now_ms();
    if (a->mode == AE_ANYCAST_EXABGP) {
        ae_anycast_result r = exabgp_write(a, target);
        record_result(a, target, r == AE_ANYCAST_OK ? "ok" : "error", -1, started);
        finished(a, target, r);
        return;
    }
    if (cmd_spawn(a, target) != 0) {
        record_result(a, target, "error", -1, started);
        finished(a, target, AE_ANYCAST_FAILED);
    }
}

static void evaluate(ae_anycast *a)
{
    ae_anycast_input in;
    int was_healthy = a->fsm.healthy;

    sample_input(a, &in);
    if (ae_anycast_fsm_sample(&a->fsm, &in)) {
        if (a->fsm.want)
            AE_INFO("anycast: healthy for %u evaluations: announcing %s", (unsigned)a->fsm.rise,
                    a->prefix[0] != '\0' ? a->prefix : "(mode off)");
        else
            AE_WARN("anycast: %s: withdrawing %s", a->reason,
                    a->prefix[0] != '\0' ? a->prefix : "(mode off)");
    } else if (was_healthy && !a->fsm.healthy && a->fsm.want) {
        AE_INFO("anycast: unhealthy (%s): %u of %u evaluations before the route is withdrawn",
                a->reason, (unsigned)a->fsm.bad_streak, (unsigned)a->fsm.fall);
    }
    kick(a);
    update_state(a);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    evaluate(w->data);
}

static void drain_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ae_anycast *a = w->data;
    ae_counters_snapshot c;

    if (a->site != AE_SITE_DRAINING)
        return;
    a->site = AE_SITE_DRAINED;
    ae_server_counters(a->srv, &c);
    AE_INFO("anycast: site drained after %u ms (%lld TCP connections, %llu QUIC connections still "
            "open; they keep being served)",
            (unsigned)a->drain_timeout_ms, (long long)c.active,
            (unsigned long long)(c.v[AE_M_QUIC_CONN_OPENED] - c.v[AE_M_QUIC_CONN_CLOSED]));
    update_state(a);
}

static void finish_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ae_anycast *a = w->data;
    AE_WARN("anycast: giving up on the route commands at exit");
    a->finish_expired = 1;
    ev_break(loop, EVBREAK_ALL);
}

static void apply_conf(ae_anycast *a, const ae_conf *conf)
{
    char *an = conf->anycast.announce ? strdup(conf->anycast.announce) : NULL;
    char *wd = conf->anycast.withdraw ? strdup(conf->anycast.withdraw) : NULL;

    if ((conf->anycast.announce && an == NULL) || (conf->anycast.withdraw && wd == NULL)) {
        free(an);
        free(wd);
        AE_ERROR("anycast: out of memory: keeping the previous commands");
    } else {
        free(a->announce);
        free(a->withdraw);
        a->announce = an;
        a->withdraw = wd;
    }
    a->command_timeout_ms = conf->anycast.command_timeout_ms;
    a->interval_ms = conf->anycast.interval_ms;
    a->drain_timeout_ms =
        conf->anycast.drain_timeout_ms ? conf->anycast.drain_timeout_ms : conf->timeouts.drain_ms;
    a->fsm.rise = conf->anycast.rise > 0 ? conf->anycast.rise : 1;
    a->fsm.fall = conf->anycast.fall > 0 ? conf->anycast.fall : 1;
    a->fsm.require_redis = conf->anycast.require_redis;
}

int ae_anycast_new(struct ev_loop *loop, ae_server_main *srv, ae_anycast **out)
{
    ae_anycast *a = calloc(1, sizeof(*a));
    const ae_conf *conf = ae_server_runtime(srv)->conf;

    *out = NULL;
    if (a == NULL)
        return AE_ERR_NOMEM;
    a->loop = loop;
    a->srv = srv;
    a->created_ms = ae_now_ms();
    a->mode = conf->anycast.mode;
    snprintf(a->prefix, sizeof(a->prefix), "%s",
             conf->anycast.prefix != NULL ? conf->anycast.prefix : "");
    a->cmd.fd = -1;
    ae_anycast_fsm_init(&a->fsm, conf->anycast.rise, conf->anycast.fall,
                        conf->anycast.require_redis);
    apply_conf(a, conf);
    a->state = AE_ANYCAST_S_WITHDRAWN;
    a->last_transition_ms = ae_wall_ms();
    ev_timer_init(&a->drain_timer, drain_timer_cb, 0., 0.);
    a->drain_timer.data = a;
    ev_timer_init(&a->finish_timer, finish_timer_cb, 0., 0.);
    a->finish_timer.data = a;
    ev_timer_init(&a->tick, tick_cb, a->interval_ms / 1000.0, a->interval_ms / 1000.0);
    a->tick.data = a;
    if (a->mode == AE_ANYCAST_EXABGP) {
        /* stdout belongs to ExaBGP's API: nothing else writes there (logs go to stderr). */
        int fl = fcntl(STDOUT_FILENO, F_GETFL);
        if (fl >= 0)
            fcntl(STDOUT_FILENO, F_SETFL, fl | O_NONBLOCK);
    }
    if (a->mode != AE_ANYCAST_OFF) {
        ev_timer_start(loop, &a->tick);
        AE_INFO("anycast: %s mode for %s: announce after %u healthy evaluations (every %u ms), "
                "withdraw after %u unhealthy",
                a->mode == AE_ANYCAST_EXABGP ? "exabgp" : "command", a->prefix,
                (unsigned)a->fsm.rise, (unsigned)a->interval_ms, (unsigned)a->fsm.fall);
    }
    *out = a;
    return 0;
}

void ae_anycast_set_conf(ae_anycast *a, const ae_conf *conf)
{
    if (a == NULL)
        return;
    if (conf->anycast.mode != a->mode ||
        strcmp(conf->anycast.prefix != NULL ? conf->anycast.prefix : "", a->prefix) != 0)
        AE_WARN("reload: anycast.mode / anycast.prefix changes need a restart; keeping %s %s",
                a->mode == AE_ANYCAST_OFF      ? "off"
                : a->mode == AE_ANYCAST_EXABGP ? "exabgp"
                                               : "command",
                a->prefix);
    apply_conf(a, conf);
    if (ev_is_active(&a->tick) && a->tick.repeat != a->interval_ms / 1000.0) {
        ev_timer_stop(a->loop, &a->tick);
        ev_timer_set(&a->tick, a->interval_ms / 1000.0, a->interval_ms / 1000.0);
        ev_timer_start(a->loop, &a->tick);
    }
}

int ae_anycast_drain(ae_anycast *a, const char *why, char *err, size_t errlen)
{
    struct ae_state *st = ae_server_state(a->srv);

    if (a->shutting) {
        snprintf(err, errlen, "shutting down");
        return 0; /* already leaving: drain holds */
    }
    if (a->site != AE_SITE_ACTIVE) {
        AE_INFO("%s: site already %s", why, a->site == AE_SITE_DRAINED ? "drained" : "draining");
        return 0;
    }
    a->site = AE_SITE_DRAINING;
    a->drain_started_ms = ae_wall_ms();
    AE_INFO("%s: draining the site: withdrawing %s, HTTP/3 GOAWAY, registry 'draining'; "
            "connections keep being served; drained in %u ms",
            why, a->prefix[0] != '\0' ? a->prefix : "(no route control)",
            (unsigned)a->drain_timeout_ms);
    if (st != NULL)
        ae_state_set_draining(st);
    ae_server_site_drain(a->srv, 1);
    ev_timer_stop(a->loop, &a->drain_timer);
    ev_timer_set(&a->drain_timer, a->drain_timeout_ms / 1000.0, 0.);
    ev_timer_start(a->loop, &a->drain_timer);
    evaluate(a); /* withdraw now, not at the next tick */
    return 0;
}

int ae_anycast_undrain(ae_anycast *a, const char *why, char *err, size_t errlen)
{
    struct ae_state *st = ae_server_state(a->srv);

    if (a->shutting) {
        snprintf(err, errlen, "shutting down: undrain refused");
        return AE_ERR_INVAL;
    }
    if (a->site == AE_SITE_ACTIVE) {
        AE_INFO("%s: site is not draining", why);
        return 0;
    }
    a->site = AE_SITE_ACTIVE;
    a->drain_started_ms = 0;
    ev_timer_stop(a->loop, &a->drain_timer);
    if (st != NULL)
        ae_state_clear_draining(st);
    ae_server_site_drain(a->srv, 0);
    AE_INFO("%s: site active again; %s", why,
            a->mode == AE_ANYCAST_OFF ? "no route control (mode off)"
                                      : "announcing after the rise healthy evaluations");
    update_state(a);
    return 0;
}

void ae_anycast_shutdown(ae_anycast *a)
{
    if (a == NULL || a->shutting)
        return;
    a->shutting = 1;
    ev_timer_stop(a->loop, &a->drain_timer);
    evaluate(a);
}

void ae_anycast_finish(ae_anycast *a)
{
    if (a == NULL || a->mode == AE_ANYCAST_OFF)
        return;
    a->shutting = 1;
    a->finishing = 1;
    ev_timer_stop(a->loop, &a->tick);
    ev_timer_stop(a->loop, &a->drain_timer);
    a->fsm.failures = 0; /* a pending retry goes out now */
    evaluate(a);
    if (a->fsm.running < 0)
        return;
    AE_INFO("anycast: waiting for the %s command before exiting", action_name(a->cmd.target));
    ev_timer_set(&a->finish_timer, 2.0 * a->command_timeout_ms / 1000.0 + AC_FINISH_EXTRA, 0.);
    ev_timer_start(a->loop, &a->finish_timer);
    /* One event at a time until the command is done or the time is up: other watchers of the
     * main loop (workers exiting) may call ev_break meanwhile, which must not end the wait. */
    while (a->fsm.running >= 0 && !a->finish_expired)
        ev_run(a->loop, EVRUN_ONCE);
    ev_timer_stop(a->loop, &a->finish_timer);
}

void ae_anycast_get_info(const ae_anycast *a, ae_anycast_info *out)
{
    memset(out, 0, sizeof(*out));
    if (a == NULL)
        return;
    out->mode = a->mode;
    snprintf(out->prefix, sizeof(out->prefix), "%s", a->prefix);
    out->state = a->state;
    out->site = a->site;
    out->fsm = a->fsm;
    snprintf(out->reason, sizeof(out->reason), "%s", a->fsm.healthy ? "" : a->reason);
    out->last_transition_ms = a->last_transition_ms;
    out->drain_started_ms = a->drain_started_ms;
    out->drain_timeout_ms = a->drain_timeout_ms;
    out->running = a->cmd.pid > 0 ? action_name(a->cmd.target) : NULL;
    out->running_pid = a->cmd.pid > 0 ? (int)a->cmd.pid : 0;
    out->last.action = a->last.action;
    out->last.result = a->last.result;
    out->last.exit_status = a->last.exit_status;
    out->last.at_ms = a->last.at_ms;
    out->last.duration_ms = a->last.duration_ms;
    memcpy(out->transitions, a->transitions, sizeof(out->transitions));
    out->commands = a->commands;
    out->command_failures = a->command_failures;
}

void ae_anycast_free(ae_anycast *a)
{
    if (a == NULL)
        return;
    ev_timer_stop(a->loop, &a->tick);
    ev_timer_stop(a->loop, &a->drain_timer);
    ev_timer_stop(a->loop, &a->finish_timer);
    if (a->cmd.pid > 0) {
        AE_WARN("anycast: killing %s[%d] at exit", action_name(a->cmd.target), (int)a->cmd.pid);
        cmd_signal(a, SIGKILL);
        ev_child_stop(a->loop, &a->cmd.child);
        ev_timer_stop(a->loop, &a->cmd.timer);
        waitpid(a->cmd.pid, NULL, 0);
        a->cmd.pid = 0;
    }
    cmd_close_pipe(a);
    free(a->announce);
    free(a->withdraw);
    free(a);
}
