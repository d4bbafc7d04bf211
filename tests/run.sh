#!/bin/sh
# run.sh - runs gpuq's tests and prints one summary line.
#
#   tests/run.sh [--unit|--integration] BUILD_DIR BIN_DIR
#
# Unit tests: every executable BUILD_DIR/tests/test_*, each in its own
# process under `timeout 120`; cmocka's "[  PASSED  ] N test(s)." and
# "[  FAILED  ] N test(s)" lines give the per-test counts (a binary that
# prints neither counts as one test).  Integration tests: the Python
# suite in tests/integration against BIN_DIR/gpuqd and BIN_DIR/gpuq.
# The last line is always "tests: N passed, M failed"; the exit status is
# non-zero if anything failed.
set -u

mode=all
case "${1:-}" in
--unit) mode=unit; shift ;;
--integration) mode=integration; shift ;;
-h|--help)
    echo "usage: tests/run.sh [--unit|--integration] BUILD_DIR BIN_DIR"
    exit 0 ;;
esac
if [ $# -ne 2 ]; then
    echo "usage: tests/run.sh [--unit|--integration] BUILD_DIR BIN_DIR" >&2
    exit 2
fi
build=$1
bin=$2
root=$(cd "$(dirname "$0")/.." && pwd)
case "$build" in /*) ;; *) build="$PWD/$build" ;; esac
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac

passed=0
failed=0
failures=""
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpuq-run.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# Counts of a cmocka binary's output: "PASSED FAILED" (0 0 if none).
cmocka_counts() {
    awk '
        /^\[  PASSED  \] [0-9]+ test/ { p += $4 }
        /^\[  FAILED  \] [0-9]+ test/ { f += $4 }
        END { printf "%d %d\n", p, f }' "$1"
}

if [ "$mode" != integration ]; then
    found=0
    for t in "$build"/tests/test_*; do
        [ -f "$t" ] && [ -x "$t" ] || continue
        found=1
        name=$(basename "$t")
        echo "== unit: $name"
        (cd "$root" && timeout 120 "$t") >"$tmp/out" 2>&1
        rc=$?
        cat "$tmp/out"
        set -- $(cmocka_counts "$tmp/out")
        p=$1 f=$2
        if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
            # Not cmocka's output: the binary is one test.
            if [ "$rc" -eq 0 ]; then p=1; else f=1; fi
        elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            f=1 # crashed or timed out after its passes were printed
        fi
        [ "$rc" -eq 124 ] && echo "== unit: $name timed out after 120s"
        passed=$((passed + p))
        failed=$((failed + f))
        [ "$f" -gt 0 ] && failures="$failures unit:$name"
        echo "== unit: $name: $p passed, $f failed (exit $rc)"
    done
    [ "$found" -eq 1 ] || echo "== unit: no test binaries in $build/tests"
fi

if [ "$mode" != unit ]; then
    py=python3
    [ -x /usr/bin/python3 ] && py=/usr/bin/python3
    # tests/fake checks the fake inference server against the recorded
    # exchanges; tests/integration drives the real daemon.
    # clients/python/tests checks the Python client against the daemon.
    for suite in fake integration client; do
    dir=tests/$suite top=tests/$suite
    [ "$suite" = client ] && dir=clients/python/tests top=clients/python
    echo "== $suite: $py -m unittest (gpuqd: $bin/gpuqd)"
    (cd "$root" &&
        GPUQD="$bin/gpuqd" GPUQ="$bin/gpuq" PYTHONDONTWRITEBYTECODE=1 \
            "$py" -m unittest discover -s "$dir" \
            -t "$top" -v) >"$tmp/py" 2>&1
    rc=$?
    cat "$tmp/py"
    # unittest ends with "Ran N tests in ..." and "OK (skipped=S)" or
    # "FAILED (failures=F, errors=E, skipped=S, ...)".  F and E count
    # failing subtests one by one, so the failed tests are counted from
    # the "FAIL: test (id) [subtest]" headers instead, once per test.
    set -- $(awk '
        /^Ran [0-9]+ tests? in / { ran = $2 }
        /^(FAIL|ERROR): / {
            t = $0; sub(/^[A-Z]+: /, "", t); sub(/\) .*$/, ")", t)
            if (!(t in seen)) { seen[t] = 1; nbad++ }
        }
        /^(OK|FAILED)( \(|$)/ {
            s = $0; sub(/^[A-Z]+ *\(?/, "", s); sub(/\)$/, "", s)
            n = split(s, kv, /, */)
            for (i = 1; i <= n; i++) {
                split(kv[i], a, "=")
                c[a[1]] = a[2] + 0
            }
        }
        END {
            printf "%d %d %d\n", ran, nbad + c["unexpected successes"],
                c["skipped"]
        }' "$tmp/py")
    ran=$1 bad=$2 skipped=$3
    ok=$((ran - bad - skipped))
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
        bad=1 # the suite itself broke (import error, crash, no summary)
        ok=$((ok < 0 ? 0 : ok))
    fi
    passed=$((passed + ok))
    failed=$((failed + bad))
    [ "$bad" -gt 0 ] && failures="$failures $suite"
    echo "== $suite: $ok passed, $bad failed, $skipped skipped"
    done
fi

if [ "$mode" != unit ]; then
    # The dashboard in a real browser (tests/browser/run.sh: chromium and
    # playwright-core, installed when missing); node's summary gives the
    # counts ("# pass N", "# fail N").
    echo "== browser: tests/browser/run.sh (gpuqd: $bin/gpuqd)"
    "$root/tests/browser/run.sh" "$bin" >"$tmp/browser" 2>&1
    rc=$?
    cat "$tmp/browser"
    set -- $(awk '/^# pass [0-9]+$/ { p = $3 } /^# fail [0-9]+$/ { f = $3 }
                  END { printf "%d %d\n", p, f }' "$tmp/browser")
    ok=$1 bad=$2
    [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
    passed=$((passed + ok))
    failed=$((failed + bad))
    [ "$bad" -gt 0 ] && failures="$failures browser"
    echo "== browser: $ok passed, $bad failed"
fi

[ -n "$failures" ] && echo "failed:$failures"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
