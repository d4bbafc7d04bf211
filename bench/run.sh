#!/bin/sh
# run.sh - runs gpuq's benchmarks in order and prints their results.
#
#   bench/run.sh BUILD_DIR BIN_DIR        (what `make bench` runs)
#
# Every benchmark is bounded (counts, durations and a timeout here); the
# whole run takes about two minutes on two cores.  Environment:
#   BENCH_DIR    where the data directories go (default BUILD_DIR/bench-data;
#                it must be on the disk you want to measure: fsync costs
#                are the point of most of these figures)
#   BENCH_QUICK  1 = short settings (10^5 jobs at most, 3 s runs) for a
#                smoke test; the figures are then not the documented ones
# The figures in doc/BENCHMARKS.md come from a plain `make bench`.
set -u
B=${1:-build}
BIN=${2:-bin}
DIR=${BENCH_DIR:-$B/bench-data}
QUICK=${BENCH_QUICK:-0}
mkdir -p "$DIR" || exit 1

if [ "$QUICK" = 1 ]; then
    HANDOFF="--iters 500 --warmup 50"
    TPUT="--seconds 3 --warmup 1"
    RESTART="--max 100000 --cycles 200"
else
    HANDOFF="--iters 2000 --warmup 200"
    TPUT="--seconds 10 --warmup 1"
    # 10^6 queued jobs: about 40 s here (filling the store is most of it).
    RESTART="--max 1000000 --cycles 500"
fi

echo "== machine =="
echo "nproc: $(nproc)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel: $(uname -sr)"
echo "data dir: $DIR on $(df -PT "$DIR" | awk 'NR == 2 {print $1 " (" $2 ")"}')"
bs="not installed"
[ -x /usr/bin/beanstalkd ] && bs=$(/usr/bin/beanstalkd -v 2>&1)
echo "sqlite: $(pkg-config --modversion sqlite3 2>/dev/null || echo '?')," \
    "libevent: $(pkg-config --modversion libevent 2>/dev/null || echo '?')," \
    "beanstalkd: ${bs#beanstalkd }"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

status=0
# run NAME TIMEOUT ARGS...: one benchmark binary, if it was built.
run() {
    name=$1
    limit=$2
    shift 2
    if [ ! -x "$B/bench/$name" ]; then
        echo "($name: $B/bench/$name not built; skipped)"
        echo
        return
    fi
    start=$(date +%s)
    timeout -k 10 "$limit" "$B/bench/$name" "$@"
    rc=$?
    if [ $rc -eq 124 ]; then
        echo "$name: FAILED (still running after ${limit}s; stopped)"
        status=1
    elif [ $rc -ne 0 ]; then
        echo "$name: FAILED (exit $rc)"
        status=1
    fi
    echo "($name took $(($(date +%s) - start)) s)"
    echo
}

# shellcheck disable=SC2086
run handoff 180 --gpuqd "$BIN/gpuqd" --dir "$DIR" $HANDOFF
# shellcheck disable=SC2086
run throughput 240 --gpuqd "$BIN/gpuqd" --dir "$DIR" --conns 50 $TPUT
# shellcheck disable=SC2086
run restart 300 --gpuqd "$BIN/gpuqd" --dir "$DIR" $RESTART
run sched_bench 120

# Issue 3: chat wait with chunking on vs off, against the fake server.
echo "== chatwait (python3 bench/chatwait.py) =="
start=$(date +%s)
if ! timeout -k 10 240 python3 bench/chatwait.py --gpuqd "$BIN/gpuqd"; then
    echo "chatwait: FAILED"
    status=1
fi
echo "(chatwait took $(($(date +%s) - start)) s)"
echo

rmdir "$DIR" 2>/dev/null
exit $status
