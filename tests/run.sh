#!/bin/sh
# run.sh - runs gpuq's tests and prints one summary line.
#
#   tests/run.sh [--unit|--integration] [--jobs N] BUILD_DIR BIN_DIR
#
# Unit tests: every executable BUILD_DIR/tests/test_*, each in its own
# process under `timeout 120`; cmocka's "[  PASSED  ] N test(s)." and
# "[  FAILED  ] N test(s)" lines give the per-test counts (a binary that
# prints neither counts as one test).  Integration tests: the Python
# suite in tests/integration against BIN_DIR/gpuqd and BIN_DIR/gpuq.
# --jobs N (default 1) runs the Python suites N at a time, tests/
# integration one module per job (for `make valgrind`, whose daemons are
# slow); the reports are printed in a fixed order when all have ended,
# and the browser test runs alone afterwards.
# The last line is always "tests: N passed, M failed"; the exit status is
# non-zero if anything failed.
set -u

usage="usage: tests/run.sh [--unit|--integration] [--jobs N] BUILD_DIR BIN_DIR"
root=$(cd "$(dirname "$0")/.." && pwd)
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3

# One Python test job: NAME is fake, integration, client, or
# integration.MODULE (one module of tests/integration); unittest's output
# goes to OUT.  Returns unittest's exit status.
py_job() {
    name=$1 out=$2
    case "$name" in
    fake) set -- discover -s tests/fake -t tests/fake ;;
    integration) set -- discover -s tests/integration -t tests/integration ;;
    client) set -- discover -s clients/python/tests -t clients/python ;;
    integration.*) set -- "${name#integration.}" ;;
    esac
    case "$name" in
    integration.*) cd "$root/tests/integration" ;;
    *) cd "$root" ;;
    esac
    GPUQD="$bin/gpuqd" GPUQ="$bin/gpuq" PYTHONDONTWRITEBYTECODE=1 \
        "$py" -m unittest "$@" -v >"$out" 2>&1
}

# Internal: the --jobs pool (xargs) runs one job per process this way.
if [ "${1:-}" = --py-job ]; then
    [ $# -eq 4 ] || exit 2
    bin=$4
    py_job "$2" "$3/$2.out"
    echo $? >"$3/$2.rc"
    exit 0
fi

mode=all
jobs=1
while [ $# -gt 0 ]; do
    case "$1" in
    --unit) mode=unit; shift ;;
    --integration) mode=integration; shift ;;
    --jobs)
        case "${2:-}" in
        [1-9]|[1-9][0-9]) jobs=$2 ;;
        *) echo "$usage" >&2; exit 2 ;;
        esac
        shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) break ;;
    esac
done
if [ $# -ne 2 ]; then
    echo "$usage" >&2
    exit 2
fi
build=$1
bin=$2
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

# The counts of a Python job's output (file $2, exit status $3), added
# to the totals under the name $1.
py_counts() {
    # unittest ends with "Ran N tests in ..." and "OK (skipped=S)" or
    # "FAILED (failures=F, errors=E, skipped=S, ...)".  F and E count
    # failing subtests one by one, so the failed tests are counted from
    # the "FAIL: test (id) [subtest]" headers instead, once per test.
    set -- "$1" "$3" $(awk '
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
        }' "$2")
    name=$1 rc=$2 ran=$3 bad=$4 skipped=$5
    ok=$((ran - bad - skipped))
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
        bad=1 # the suite itself broke (import error, crash, no summary)
        ok=$((ok < 0 ? 0 : ok))
    fi
    passed=$((passed + ok))
    failed=$((failed + bad))
    [ "$bad" -gt 0 ] && failures="$failures $name"
    echo "== $name: $ok passed, $bad failed, $skipped skipped"
}

if [ "$mode" != unit ]; then
    # tests/fake checks the fake inference server against the recorded
    # exchanges; tests/integration drives the real daemon.
    # clients/python/tests checks the Python client against the daemon.
    if [ "$jobs" -eq 1 ]; then
        for suite in fake integration client; do
            echo "== $suite: $py -m unittest (gpuqd: $bin/gpuqd)"
            (py_job "$suite" "$tmp/py")
            rc=$?
            cat "$tmp/py"
            py_counts "$suite" "$tmp/py" "$rc"
        done
    else
        # The biggest modules first, so that the pool ends together;
        # the reports come out in name order whatever the timing.
        names="$( (cd "$root/tests/integration" && ls -S test_*.py) |
            sed 's/^/integration./; s/\.py$//')"
        echo "== python: $jobs jobs at a time (gpuqd: $bin/gpuqd)"
        printf '%s\n' $names client fake |
            xargs -P "$jobs" -I{} "$root/tests/run.sh" --py-job {} \
                "$tmp" "$bin"
        for name in fake $(printf '%s\n' $names | sort) client; do
            echo "== $name: $py -m unittest"
            rc=2 # no status: the job did not run to its end
            [ -f "$tmp/$name.rc" ] && rc=$(cat "$tmp/$name.rc")
            [ -f "$tmp/$name.out" ] || : >"$tmp/$name.out"
            cat "$tmp/$name.out"
            py_counts "$name" "$tmp/$name.out" "$rc"
        done
    fi
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
