#!/usr/bin/env bash
# Runs libFuzzer harnesses of tests/fuzz/ (docs/fuzzing.md).
#
#   tests/fuzz/run.sh [-b BUILD_DIR] [SECONDS] [NAME...]
#
# BUILD_DIR: a build configured with CC=clang -DAE_FUZZ=ON (default: build-fuzz/ at the
# repository root, or $AE_FUZZ_BUILD); it is not built here (cmake --build DIR --target fuzz).
# SECONDS: run time of each harness (default 60). NAME: harnesses to run (default all: every
# tests/fuzz/fuzz_NAME.c), one after the other.
#
# Each harness runs over a copy of its seed corpus tests/fuzz/corpus/NAME/ (the repository's is
# never modified) in a work directory under $TMPDIR, which holds the grown corpus, the log and
# any crash / leak / timeout artifact. The directory is printed; it is removed after a clean
# run when AE_FUZZ_CLEAN=1 (the ctest cases set it), and kept otherwise. Extra libFuzzer
# options: AE_FUZZ_OPTS (e.g. "-jobs=2" or "-only_ascii=1"). Exit status 0 when every harness
# ran clean.
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${AE_FUZZ_BUILD:-$SRC/build-fuzz}
if [ "${1:-}" = "-b" ]; then
    BUILD=$2
    shift 2
fi
SECS=60
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    SECS=$1
    shift
fi
NAMES=("$@")
if [ ${#NAMES[@]} -eq 0 ]; then
    for f in "$SRC"/tests/fuzz/fuzz_*.c; do
        n=$(basename "$f" .c)
        NAMES+=("${n#fuzz_}")
    done
fi

rc=0
for name in "${NAMES[@]}"; do
    bin=$BUILD/tests/fuzz/fuzz_$name
    if [ ! -x "$bin" ]; then
        echo "fuzz.$name: $bin not built (cmake --build $BUILD --target fuzz)" >&2
        rc=1
        continue
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/ae-fuzz-$name.XXXXXX")
    mkdir -p "$work/corpus" "$work/artifacts"
    if [ -d "$SRC/tests/fuzz/corpus/$name" ]; then
        cp -r "$SRC/tests/fuzz/corpus/$name/." "$work/corpus/"
    fi
    opts=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1
        -artifact_prefix="$work/artifacts/")
    if [ -f "$SRC/tests/fuzz/dict/$name.dict" ]; then
        opts+=(-dict="$SRC/tests/fuzz/dict/$name.dict")
    fi
    # shellcheck disable=SC2086 # AE_FUZZ_OPTS is a list of options
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$bin" "${opts[@]}" ${AE_FUZZ_OPTS:-} "$work/corpus" >"$work/log" 2>&1
    st=$?
    # The last status line: "#N DONE cov: C ft: F corp: ... exec/s: E ..."
    line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$work/log" | tail -n1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
    eps=$(sed -n 's/.* exec\/s: \([0-9]*\).*/\1/p' <<<"$line")
    if [ $st -eq 0 ] && [ -z "$(ls -A "$work/artifacts")" ]; then
        echo "fuzz.$name: ok, ${SECS}s, ${execs:-?} runs, ${eps:-?} exec/s, cov ${cov:-?}"
        if [ "${AE_FUZZ_CLEAN:-0}" = 1 ]; then
            rm -rf "$work"
        else
            echo "fuzz.$name: corpus and log in $work"
        fi
    else
        echo "fuzz.$name: FAILED (exit $st); log and artifacts in $work" >&2
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$work/log" | head -n 5 >&2
        ls "$work/artifacts" >&2
        tail -n 40 "$work/log" >&2
        rc=1
    fi
done
exit $rc
