#!/bin/sh
# vg.sh - runs one of gpuq's programs under valgrind memcheck, for
# `make valgrind` (tests/valgrind/run.sh).
#
#   tests/valgrind/vg.sh NAME ARGS...     (NAME: gpuqd or gpuq)
#
# bin/gpuqd and bin/gpuq call this, so that the test harnesses, which take
# the daemon from $GPUQD and the CLI from $GPUQ (the browser test from
# BIN_DIR/gpuqd), run them under valgrind unchanged.  Environment:
#   GPUQ_VG_REAL  the directory of the real binaries (required)
#   GPUQ_VG_LOGS  where the logs go, one per process (required):
#                 NAME.PID.NANOSECONDS.log, checked by check.py
# The process keeps this script's pid (exec), so signals sent by the tests
# reach valgrind, which passes them on to the program.  Errors, and
# definitely or indirectly lost memory at exit, make the exit status 97
# (a test that expects 0 then fails too); tests/valgrind/check.py reads
# the logs afterwards and names each report.
set -eu
name=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
: "${GPUQ_VG_REAL:?set GPUQ_VG_REAL to the directory of gpuqd and gpuq}"
: "${GPUQ_VG_LOGS:?set GPUQ_VG_LOGS to the valgrind log directory}"
mkdir -p "$GPUQ_VG_LOGS"
# Unique even when pids wrap around ($$ is the pid valgrind will have).
log="$GPUQ_VG_LOGS/$name.$$.$(date +%s%N).log"
exec valgrind --tool=memcheck \
    --leak-check=full \
    --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect \
    --track-origins=yes \
    --num-callers=40 \
    --child-silent-after-fork=yes \
    --error-exitcode=97 \
    --suppressions="$here/gpuq.supp" \
    --log-file="$log" \
    "$GPUQ_VG_REAL/$name" "$@"
