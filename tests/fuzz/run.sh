#!/bin/sh
# run.sh - runs gpuq's libFuzzer targets one after another, each for a
# bounded time, and fails if any of them crashes (tests/fuzz/README).
#
#   tests/fuzz/run.sh FUZZ_DIR SECONDS NAME...
#
# FUZZ_DIR holds the targets built by `make fuzz` (FUZZ_DIR/fuzz_NAME).
# Each runs on FUZZ_DIR/corpus/NAME, a copy of tests/fuzz/NAME and
# tests/fuzz/regress/NAME that keeps what earlier runs found (libFuzzer
# writes new inputs there, never into tests/fuzz); crash reproducers go
# to FUZZ_DIR/artifacts/NAME-*.  FUZZ_ARGS adds libFuzzer flags.
set -u

if [ $# -lt 3 ]; then
    echo "usage: tests/fuzz/run.sh FUZZ_DIR SECONDS NAME..." >&2
    exit 2
fi
dir=$1
secs=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
cd "$root" || exit 2

# Per target: the longest input, the time one input may take, memory.
flags_for() {
    case "$1" in
    http) echo "-max_len=16384 -timeout=20 -rss_limit_mb=4096" ;;
    config) echo "-max_len=8192 -timeout=10 -rss_limit_mb=2048" ;;
    audio) echo "-max_len=32768 -timeout=20 -rss_limit_mb=2048" ;;
    parse) echo "-max_len=16384 -timeout=10 -rss_limit_mb=2048" ;;
    *) echo "-timeout=10" ;;
    esac
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$dir/artifacts" || exit 2
failed=""
for name in "$@"; do
    bin="$dir/fuzz_$name"
    corpus="$dir/corpus/$name"
    mkdir -p "$corpus" || exit 2
    for src in "tests/fuzz/$name" "tests/fuzz/regress/$name"; do
        [ -d "$src" ] && find "$src" -maxdepth 1 -type f ! -name '.*' \
            -exec cp -f {} "$corpus/" \;
    done
    dict=""
    [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
    echo "== fuzz: $name for ${secs}s"
    # shellcheck disable=SC2046,SC2086
    "$bin" $(flags_for "$name") $dict -max_total_time="$secs" \
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/$name-" \
        ${FUZZ_ARGS:-} "$corpus"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "== fuzz: $name FAILED (exit $rc); reproducer in" \
            "$dir/artifacts/ (see tests/fuzz/README)"
        failed="$failed $name"
    else
        echo "== fuzz: $name ok"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed"
    exit 1
fi
echo "fuzz: all targets ran ${secs}s without a crash"
