# shellcheck shell=bash disable=SC2034 # variables set here are used by the sourcing scripts
# Shared helpers of the benchmark scripts (sourced by tests/bench/run.sh, h3.sh, forward.sh).
#
# Defines functions only (and CLK_TCK); nothing runs at source time. Conventions:
#   BENCH_TAG   log prefix: log/die print "[BENCH_TAG] ..." on stderr (set before sourcing or
#               before the first log; default "bench").
#   T, PIDS     bench_tmpdir makes the temp dir $T and the list PIDS of every long-running
#               process the script starts; the EXIT trap ends each of them by PID, prints the
#               tail of $T/*.log when the script fails, removes $T. A function
#               bench_cleanup_hook, when the script defines one, runs after the processes ended.
#   ROUNDS DURATION WARMUP AE_BIN SCENARIOS TARGETS OUT PIN
#               the common options (bench_parse_args), with the script's own defaults.

BENCH_TAG=${BENCH_TAG:-bench}

log() { printf '[%s] %s\n' "$BENCH_TAG" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$BENCH_TAG" "$*" >&2
    exit 1
}

# bench_usage: the script's header comment (from its second line up to the first line that is
# not a comment), without the leading "# ".
bench_usage() {
    awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[-1]}"
}

# bench_parse_args "$@": the options every benchmark script takes (-r -d -w -b -s -t -o
# --no-pin -h); usage on stderr and exit 2 for anything else.
bench_parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
        -r) ROUNDS=$2; shift 2 ;;
        -d) DURATION=$2; shift 2 ;;
        -w) WARMUP=$2; shift 2 ;;
        -b) AE_BIN=$2; shift 2 ;;
        -s) SCENARIOS=$2; shift 2 ;;
        -t) TARGETS=$2; shift 2 ;;
        -o) OUT=$2; shift 2 ;;
        --no-pin) PIN=off; shift ;;
        -h | --help) bench_usage; exit 0 ;;
        *) bench_usage >&2; exit 2 ;;
        esac
    done
}

# bench_check_times: ROUNDS 1..20, DURATION 1..60 and WARMUP 0..30, or die.
bench_check_times() {
    if ! [[ "$ROUNDS" =~ ^[0-9]+$ ]] || [ "$ROUNDS" -lt 1 ] || [ "$ROUNDS" -gt 20 ]; then
        die "rounds must be 1..20"
    fi
    if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 1 ] || [ "$DURATION" -gt 60 ]; then
        die "duration must be 1..60 seconds"
    fi
    if ! [[ "$WARMUP" =~ ^[0-9]+$ ]] || [ "$WARMUP" -gt 30 ]; then
        die "warmup must be 0..30 seconds"
    fi
}

# bench_check_words KIND WORDS ALLOWED...: dies "unknown KIND W" for a word W of WORDS that is not
# one of ALLOWED.
bench_check_words() {
    local kind=$1 words=$2 w a ok
    shift 2
    for w in $words; do
        ok=0
        for a in "$@"; do
            [ "$w" = "$a" ] && ok=1
        done
        [ "$ok" = 1 ] || die "unknown $kind $w"
    done
}

# bench_tmpdir NAME: T=a new temp dir ${TMPDIR:-/tmp}/NAME.XXXXXX, PIDS=(), and the traps: EXIT
# runs bench_cleanup, INT and TERM exit with status 130.
bench_tmpdir() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=() # every long-running process we started, ended by PID on exit
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
bench_cleanup() {
    local rc=$? p f
    trap - EXIT
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    if declare -F bench_cleanup_hook >/dev/null; then
        bench_cleanup_hook || true
    fi
    if [ "$rc" -ne 0 ]; then
        for f in "$T"/*.log; do
            [ -s "$f" ] || continue
            printf -- '--- %s (last 20 lines)\n' "$f" >&2
            tail -n 20 "$f" >&2
        done
    fi
    rm -rf "$T"
    exit "$rc"
}

# bench_pin DESC: CPU placement. With PIN != off, >= 2 CPUs and a working taskset:
# SUT_CPU=(taskset -c 0) for the system under test, LOAD_CPU=(taskset -c 1) for the load side
# and PIN_DESC=DESC; otherwise both empty and PIN_DESC="not pinned".
bench_pin() {
    SUT_CPU=()
    LOAD_CPU=()
    if [ "$PIN" != off ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ] &&
        taskset -c 0 true 2>/dev/null && taskset -c 1 true 2>/dev/null; then
        SUT_CPU=(taskset -c 0)
        LOAD_CPU=(taskset -c 1)
        PIN_DESC=$1
    else
        PIN_DESC="not pinned"
    fi
}

# free_ports TCP_N [UDP_N]: TCP_N TCP ports then UDP_N (default 0) UDP ports on 127.0.0.1, all
# distinct and free right now.
free_ports() {
    python3 - "$1" "${2:-0}" <<'EOF'
import socket, sys
socks = []
for kind, n in ((socket.SOCK_STREAM, int(sys.argv[1])), (socket.SOCK_DGRAM, int(sys.argv[2]))):
    for _ in range(n):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# wait_port PORT [SECONDS]: a TCP port on 127.0.0.1 accepts connections.
wait_port() {
    local port=$1 secs=${2:-10}
    for _ in $(seq $((secs * 20))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# bench_cert: a self-signed ECDSA P-256 certificate for localhost / 127.0.0.1 in $T/cert.pem,
# its key in $T/key.pem.
bench_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null || die "openssl req failed"
}

# bench_start_origin [PREFIX...]: ae-origin ($ORIGIN, id "bench") on 127.0.0.1:$ORIGIN_PORT, run
# through PREFIX (e.g. taskset -c 1), output in $T/origin.log; sets ORIGIN_PID, waits for it.
bench_start_origin() {
    "$@" "$ORIGIN" -l "127.0.0.1:$ORIGIN_PORT" -i bench -q >"$T/origin.log" 2>&1 &
    PIDS+=($!)
    ORIGIN_PID=$!
    wait_port "$ORIGIN_PORT" || die "ae-origin did not start"
}

# bench_metrics PORT NAME...: the samples NAME... of the /metrics on 127.0.0.1:PORT (an anyedge
# admin port), space-separated, in the order given (0 when absent).
bench_metrics() {
    local port=$1
    shift
    curl -s --max-time 5 "http://127.0.0.1:$port/metrics" 2>/dev/null |
        awk -v keys="$*" 'BEGIN { n = split(keys, k, " ") }
            { v[$1] = $2 }
            END { for (i = 1; i <= n; i++) printf "%s%d", (i > 1 ? " " : ""), (k[i] in v ? v[k[i]] : 0) }'
}

CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID...: sum of utime+stime (clock ticks) of the given processes, all threads.
cpu_ticks() {
    local p total=0 v
    for p in "$@"; do
        # Fields after "pid (comm) ": state is $1, utime $12, stime $13.
        v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
        total=$((total + ${v:-0}))
    done
    printf '%s' "$total"
}

# busy_ticks: clock ticks all CPUs spent outside idle/iowait since boot (/proc/stat).
busy_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# children PID: PIDs whose parent is PID.
children() {
    local f
    for f in /proc/[0-9]*/stat; do
        awk -v pp="$1" '{ sub(/^.*\) /, ""); if ($2 == pp) { split(FILENAME, a, "/"); print a[3] } }' \
            "$f" 2>/dev/null || true
    done
}

# bench_rounds: one_run ROUND SCENARIO TARGET (the script's function) for every round, scenario
# of $SCENARIOS and target of $TARGETS, the targets' order rotating each round (round 1: as
# given, round 2: from the second, ...); FAILED=1 when a run fails. Sets ELAPSED (seconds).
bench_rounds() {
    local start nt round i s t rot targets_arr
    start=$(date +%s)
    nt=$(wc -w <<<"$TARGETS")
    log "$ROUNDS round(s) x $(wc -w <<<"$SCENARIOS") scenario(s) x $nt target(s), ${DURATION}s each (+${WARMUP}s warm-up)"
    read -r -a targets_arr <<<"$TARGETS"
    for round in $(seq "$ROUNDS"); do
        rot=()
        for i in $(seq 0 $((nt - 1))); do
            rot+=("${targets_arr[$(((i + round - 1) % nt))]}")
        done
        for s in $SCENARIOS; do
            for t in "${rot[@]}"; do
                one_run "$round" "$s" "$t" || FAILED=1
            done
        done
    done
    ELAPSED=$(($(date +%s) - start))
}

# bench_report_init NAME_PREFIX: STAMP (UTC), OUT (unless -o gave one:
# tests/bench/results/NAME_PREFIX<stamp>.md), CPU_MODEL, AE_VER and AE_GIT for the report.
bench_report_init() {
    STAMP=$(date -u +%Y%m%dT%H%M%SZ)
    if [ -z "$OUT" ]; then
        mkdir -p "$ROOT/tests/bench/results"
        OUT=$ROOT/tests/bench/results/$1$STAMP.md
    fi
    CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    AE_VER=$("$ANYEDGE" --version 2>/dev/null | head -n1 || true)
    AE_GIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
}

# bench_finish: prints the report $OUT, exits 1 when a run failed (FAILED != 0), else 0.
bench_finish() {
    cat "$OUT"
    log "report saved to $OUT"
    if [ "$FAILED" -ne 0 ]; then
        log "some runs failed (see above)"
        exit 1
    fi
    exit 0
}

# bench_base_setup DEST: the anyedge_base target: copies $AE_BASE_BIN/anyedge (a baseline build
# directory) to DEST and sets AE_BASE_DESC, how the report names it (unless already set): the
# build directory and its commit when that is a build of a git checkout (CMakeCache's source
# directory).
bench_base_setup() {
    local src
    [ -x "${AE_BASE_BIN:-}/anyedge" ] ||
        die "anyedge_base needs AE_BASE_BIN, a build directory holding the baseline anyedge"
    cp "$AE_BASE_BIN/anyedge" "$1" || die "cannot copy $AE_BASE_BIN/anyedge to $1"
    if [ -z "${AE_BASE_DESC:-}" ]; then
        src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$AE_BASE_BIN/CMakeCache.txt" 2>/dev/null || true)
        AE_BASE_DESC="$AE_BASE_BIN/anyedge"
        if [ -n "$src" ] && git -C "$src" rev-parse --short HEAD >/dev/null 2>&1; then
            AE_BASE_DESC="$AE_BASE_DESC (commit $(git -C "$src" rev-parse --short HEAD))"
        fi
    fi
}
