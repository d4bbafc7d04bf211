#!/bin/sh
# run.sh - the integration tests with every gpuqd and gpuq under valgrind
# memcheck, then a check of every process's log (`make valgrind`).
#
#   tests/valgrind/run.sh BUILD_DIR BIN_DIR
#
# BIN_DIR holds the real gpuqd and gpuq (built without sanitizers).  The
# tests get tests/valgrind/bin as their BIN_DIR, whose gpuqd and gpuq run
# the real ones under valgrind (vg.sh); each process leaves its log in
# BUILD_DIR/logs, emptied first.  Environment:
#   GPUQ_TIME_SCALE  multiplies the harness's timeouts (default 10; see
#                    tests/integration/gpuqtest.py)
#   GPUQ_VG_JOBS     Python test jobs at a time (default 2: two cores)
# The exit status is non-zero if a test failed or check.py found an error
# or a leak; the last lines are the tests' and check.py's summaries.
set -u
if [ $# -ne 2 ]; then
    echo "usage: tests/valgrind/run.sh BUILD_DIR BIN_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$1
bin=$2
case "$build" in /*) ;; *) build="$PWD/$build" ;; esac
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
command -v valgrind >/dev/null 2>&1 || {
    echo "valgrind: not installed (scripts/deps.sh valgrind)" >&2
    exit 2
}
logs=$build/logs
rm -rf "$logs"
mkdir -p "$logs"

export GPUQ_VG_REAL="$bin" GPUQ_VG_LOGS="$logs" GPUQ_VALGRIND=1
export GPUQ_TIME_SCALE="${GPUQ_TIME_SCALE:-10}"
start=$(date +%s)
"$root/tests/run.sh" --integration --jobs "${GPUQ_VG_JOBS:-2}" \
    "$build" "$here/bin"
tests_rc=$?
echo "valgrind: tests took $(($(date +%s) - start)) s"
python3 "$here/check.py" "$logs"
check_rc=$?
[ "$tests_rc" -eq 0 ] && [ "$check_rc" -eq 0 ]
