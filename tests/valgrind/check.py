#!/usr/bin/env python3
"""check.py - reads the valgrind memcheck logs that `make valgrind` left
(one per gpuqd or gpuq process, written by tests/valgrind/vg.sh) and fails
if any shows a memory error or a leak.

    tests/valgrind/check.py LOG_DIR

A log fails when its ERROR SUMMARY counts errors, when its LEAK SUMMARY
shows definitely or indirectly lost bytes, or when it holds an error
report at all (a process killed with SIGKILL, as the durability tests do,
never prints its summaries, but the errors it made before are in the log).
A process that ends on a fatal signal (SIGSEGV, SIGABRT, ...) fails too;
one ended by SIGTERM or SIGINT's default action (a CLI the tests
interrupt) does not.  Each distinct report is printed once, with its
stack and the logs it occurs in.  Python 3 standard library only.
Exit status: 0 clean, 1 reports found, 2 usage or no logs.
"""

import os
import re
import sys

PREFIX = re.compile(r"^==(\d+)== ?(.*)$")
FRAME = re.compile(r"^\s+(at|by) 0x[0-9A-Fa-f]+: ")
ADDR = re.compile(r"0x[0-9A-Fa-f]+")
SUMMARY = re.compile(r"^ERROR SUMMARY: ([0-9,]+) errors? from")
LOST = re.compile(r"^\s*(definitely|indirectly) lost: ([0-9,]+) bytes")
SIGNAL = re.compile(r"^Process terminating with default action of "
                    r"signal (\d+)")
BENIGN_SIGNALS = (2, 15)   # SIGINT, SIGTERM: the tests interrupt a CLI


def num(s):
    return int(s.replace(",", ""))


def blocks(lines):
    """The log's paragraphs (valgrind separates reports by an empty
    line), each a list of lines without the ==PID== prefix."""
    out, cur = [], []
    for line in lines:
        if line.strip() == "":
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(line)
    if cur:
        out.append(cur)
    return out


def check_log(path):
    """(command, finished, problems): problems is a list of (kind, block
    lines) and summary lines."""
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read().splitlines()
    lines, other = [], []
    for line in raw:
        m = PREFIX.match(line)
        if m:
            lines.append(m.group(2))
        elif line.strip():
            other.append(line)   # valgrind's own messages, if any
    command = next((l[len("Command: "):] for l in lines
                    if l.startswith("Command: ")), "?")
    finished = False
    problems = []
    lost = {}
    for line in lines:
        m = SUMMARY.match(line)
        if m:
            finished = True
            if num(m.group(1)) > 0:
                problems.append(("summary", [line]))
        m = LOST.match(line)
        if m:
            lost[m.group(1)] = num(m.group(2))
    for kind, n in sorted(lost.items()):
        if n > 0:
            problems.append(("summary", ["%s lost: %d bytes" % (kind, n)]))
    for b in blocks(lines):
        if not any(FRAME.match(l) for l in b):
            continue   # headers, summaries, warnings without a stack
        m = SIGNAL.match(b[0])
        if m and int(m.group(1)) in BENIGN_SIGNALS:
            continue
        problems.append(("report", b))
    for line in other:
        if "impossible" in line or "Valgrind" in line:
            problems.append(("valgrind", [line]))
    return command, finished, problems


def key(block):
    """What makes two reports the same: the text with addresses, sizes
    and record numbers taken out."""
    return tuple(re.sub(r"[0-9,]+", "N", ADDR.sub("0x", l)) for l in block)


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        sys.stderr.write("usage: tests/valgrind/check.py LOG_DIR\n")
        return 2
    logdir = argv[1]
    logs = sorted(f for f in os.listdir(logdir) if f.endswith(".log"))
    if not logs:
        sys.stderr.write("valgrind: no logs in %s (was anything run under "
                         "tests/valgrind/vg.sh?)\n" % logdir)
        return 2
    finished = 0
    per_name = {}
    bad_logs = []
    reports = {}   # key -> (block, [log names])
    for name in logs:
        prog = name.split(".", 1)[0]
        per_name[prog] = per_name.get(prog, 0) + 1
        command, done, problems = check_log(os.path.join(logdir, name))
        finished += done
        if not problems:
            continue
        bad_logs.append((name, command))
        for kind, block in problems:
            if kind == "summary":
                continue   # the reports themselves are printed below
            k = key(block)
            if k not in reports:
                reports[k] = (block, [])
            reports[k][1].append(name)
    for (block, where) in reports.values():
        print("==== %s" % block[0])
        for line in block[1:]:
            print("    " + line)
        print("  in %d log(s): %s%s" % (
            len(where), " ".join(where[:5]),
            " ..." if len(where) > 5 else ""))
        print()
    for name, command in bad_logs:
        print("valgrind: FAILED %s/%s: %s" % (logdir, name, command))
    counts = ", ".join("%d %s" % (n, p) for p, n in sorted(per_name.items()))
    print("valgrind: %d processes checked (%s); %d ran to exit with a leak "
          "check, %d ended without one (SIGKILL); %d with errors or leaks, "
          "%d distinct reports"
          % (len(logs), counts, finished, len(logs) - finished,
             len(bad_logs), len(reports)))
    return 1 if bad_logs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
