"""common - what the reliability campaigns (tests/campaigns/*.py,
doc/RELIABILITY.md) share: the integration harness on the path, resource
limits, process memory, the store read directly, and the report.

Each campaign prints its figures as lines

    figure: NAME = VALUE UNIT

and one last line "campaign NAME: passed" or "campaign NAME: FAILED (N
violations)"; its exit status is non-zero when any invariant broke.
Python 3 standard library only; 127.0.0.1 only; every wait is bounded.
"""

import os
import resource
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import gpuqtest  # noqa: E402,F401  (Daemon, http_request, wait_until)


def raise_nofile(want):
    """Raises this process's open-file limit (and so its children's) to
    want, or to the hard limit if that is lower; returns the soft limit
    now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    return soft


def rss_kib(pid):
    """Resident set size of process pid in KiB (VmRSS), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid):
    """Number of open file descriptors of process pid, or None."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def store_path(data_dir):
    return os.path.join(data_dir, "gpuq.db")


def store_rows(data_dir, sql, args=()):
    """Runs a read-only query on the daemon's SQLite store (which may be
    open in gpuqd: WAL lets a reader in) and returns all rows."""
    uri = "file:%s?mode=ro" % store_path(data_dir)
    con = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def store_digest(data_dir):
    """A summary of everything the store holds that a request could
    change: (jobs, job events, callbacks, meta) as sorted tuples."""
    out = []
    for table in ("jobs", "job_events", "callbacks", "meta"):
        rows = store_rows(data_dir, "SELECT * FROM %s" % table)
        out.append(sorted(tuple(map(repr, r)) for r in rows))
    return out


class Report:
    """Collects figures and invariant violations and prints them."""

    def __init__(self, name):
        self.name = name
        self.figures = []
        self.violations = []
        self.t0 = time.monotonic()

    def figure(self, name, value, unit=""):
        if isinstance(value, float):
            value = "%.3f" % value
        line = "figure: %s = %s%s" % (name, value, " " + unit if unit else "")
        self.figures.append(line)
        print(line, flush=True)

    def check(self, ok, what):
        """Records a violation unless ok; returns ok."""
        if not ok:
            self.violations.append(what)
            print("VIOLATION: %s" % what, flush=True)
        return ok

    def log(self, fmt, *args):
        print("[%7.1fs] %s" % (time.monotonic() - self.t0,
                               fmt % args if args else fmt), flush=True)

    def finish(self):
        """Prints the verdict and returns the exit status."""
        self.figure("%s.duration" % self.name,
                    time.monotonic() - self.t0, "s")
        if self.violations:
            print("campaign %s: FAILED (%d violations)"
                  % (self.name, len(self.violations)), flush=True)
            return 1
        print("campaign %s: passed" % self.name, flush=True)
        return 0
