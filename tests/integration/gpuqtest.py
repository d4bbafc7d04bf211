"""gpuqtest - the integration-test harness: the real gpuqd on 127.0.0.1
port 0 with a fresh data directory, spoken to only over its public HTTP
API (doc/api.md).  Python 3 standard library only.

    with Daemon(CONFIG) as d:
        status, headers, body = d.request("POST", "/v1/jobs", {...})

Every wait here is bounded.  The daemon's stdout and stderr go to
DATA/gpuqd.log, which is printed when a test fails inside the `with`.
Set GPUQ_KEEP=1 to keep the data directories of failed tests.
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GPUQD = os.environ.get("GPUQD") or os.path.join(REPO, "bin", "gpuqd")
GPUQ = os.environ.get("GPUQ") or os.path.join(REPO, "bin", "gpuq")

# Under `make valgrind` every gpuqd and gpuq runs 20-50 times slower.
# GPUQ_TIME_SCALE (default 1) multiplies the harness's own bounds: the
# start and stop timeouts, wait_until's (so wait_state's), HTTP socket
# timeouts and the Background and Worker waits.  A longer bound never
# makes a correct test fail, it only makes a failing one slower to say
# so; durations that a test asserts are not scaled (such tests skip
# under GPUQ_VALGRIND instead, see VALGRIND).
TIME_SCALE = max(1.0, float(os.environ.get("GPUQ_TIME_SCALE") or 1))
# True under `make valgrind` (tests/valgrind/run.sh): tests whose
# assertion is a duration skip with unittest.skipIf(VALGRIND, ...).
VALGRIND = bool(os.environ.get("GPUQ_VALGRIND"))


def scaled(seconds):
    """A harness bound of `seconds`, times GPUQ_TIME_SCALE."""
    return seconds * TIME_SCALE


START_TIMEOUT = scaled(10.0)   # seconds for gpuqd to write its address file
STOP_TIMEOUT = scaled(15.0)    # seconds for gpuqd to exit after SIGTERM

STATES = ("queued", "running", "succeeded", "failed", "cancelled",
          "expired", "dead")
TERMINAL = ("succeeded", "failed", "cancelled", "expired", "dead")
REASONS = ("gpu_busy", "priority", "share", "cap", "backoff", "deps",
           "draining", "no_worker", "backend")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ID_RE = re.compile(r"^j[0-9]+$")

# The configuration most tests use: the brief's three classes with short
# retry delays, plus a short drain so a stray holder cannot stall stop().
BASE_CONFIG = """\
[server]
drain_timeout = 5

[gpu]
slots = 1

[class chatbot]
priority = 10
lease_ttl = 1

[class transcription]
priority = 0
weight = 70
max_consecutive = 2
max_attempts = 3
backoff_base = 0.05
backoff_max = 0.2

[class summarization]
priority = 0
weight = 30
max_consecutive = 1
"""


def idnum(job_id):
    """The number of a public job id ("j42" -> 42)."""
    return int(job_id[1:])


def wait_until(fn, timeout=5.0, interval=0.05, what="condition"):
    """Calls fn until it returns something truthy and returns that; raises
    AssertionError after timeout seconds (times GPUQ_TIME_SCALE)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s "
                                 "(last value: %r)" % (timeout, what, last))
        time.sleep(interval)


def encode_body(body):
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def http_request(port, method, path, body=None, headers=None, timeout=10):
    """One request on a fresh connection.  Returns (status, headers with
    lower-case names, raw body bytes).  A server that answers before it
    has read the whole body (e.g. 413) is tolerated: a failed send still
    reads the reply.  timeout is scaled by GPUQ_TIME_SCALE."""
    data = encode_body(body)
    conn = http.client.HTTPConnection("127.0.0.1", port,
                                      timeout=scaled(timeout))
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
            hdrs["Content-Length"] = str(len(data))
        elif method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Length"] = "0"
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        if data:
            try:
                conn.send(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
        resp = conn.getresponse()
        raw = resp.read()
        return (resp.status, {k.lower(): v for k, v in resp.getheaders()},
                raw)
    finally:
        conn.close()


def parse_json(raw):
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


class DaemonError(Exception):
    pass


class Daemon:
    """A gpuqd process with its own temporary data directory.

    config_text: INI text written to DATA/../gpuqd.conf and passed with
    --config (None: no --config).  args: extra command-line arguments."""

    def __init__(self, config_text=None, args=()):
        self.tmp = tempfile.mkdtemp(prefix="gpuqtest-")
        self.data = os.path.join(self.tmp, "data")
        os.mkdir(self.data)
        self.config = None
        if config_text is not None:
            self.config = os.path.join(self.tmp, "gpuqd.conf")
            with open(self.config, "w") as f:
                f.write(config_text)
        self.args = list(args)
        self.log = os.path.join(self.data, "gpuqd.log")
        self.proc = None
        self.port = None
        self.url = None
        self.starts = 0
        self._exit_expected = False
        self.rc = None

    # -- process control ---------------------------------------------------

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.dump_log()
            self._force_kill()
            self._cleanup(keep=True)
            raise
        return self

    def __exit__(self, et, ev, tb):
        failed = et is not None
        try:
            if not failed:
                if self.proc is not None and self.proc.poll() is not None \
                        and not self._exit_expected:
                    failed = True
                    raise AssertionError(
                        "gpuqd exited unexpectedly with status %s"
                        % self.proc.returncode)
                if self.proc is not None and self.proc.poll() is None:
                    try:
                        self.stop()
                    except BaseException:
                        failed = True
                        raise
        finally:
            if failed:
                self.dump_log()
            self._force_kill()
            self._cleanup(keep=failed)
        return False

    def start(self):
        """Starts gpuqd on the data directory and waits (bounded) for it
        to write DATA/gpuqd.addr and answer /healthz."""
        if self.proc is not None and self.proc.poll() is None:
            raise DaemonError("gpuqd is already running")
        if not os.access(GPUQD, os.X_OK):
            raise DaemonError("no gpuqd binary at %s (set GPUQD)" % GPUQD)
        addr_file = os.path.join(self.data, "gpuqd.addr")
        try:
            os.unlink(addr_file)
        except FileNotFoundError:
            pass
        cmd = [GPUQD, "--data", self.data, "--listen", "127.0.0.1:0"]
        if self.config:
            cmd += ["--config", self.config]
        cmd += self.args
        self.starts += 1
        logf = open(self.log, "ab")
        logf.write(("=== start %d: %s\n" % (self.starts, " ".join(cmd)))
                   .encode())
        logf.flush()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf,
                                         cwd=self.tmp)
        finally:
            logf.close()
        self._exit_expected = False
        self.rc = None
        self.port = None
        self.url = None
        deadline = time.monotonic() + START_TIMEOUT
        prev = None
        while True:
            if self.proc.poll() is not None:
                raise DaemonError("gpuqd exited with status %s during "
                                  "start-up" % self.proc.returncode)
            if time.monotonic() > deadline:
                raise DaemonError("gpuqd did not write %s and answer "
                                  "within %.0fs" % (addr_file,
                                                    START_TIMEOUT))
            text = None
            try:
                with open(addr_file) as f:
                    text = f.read()
            except FileNotFoundError:
                pass
            m = re.match(r"^127\.0\.0\.1:([0-9]+)\s*$", text or "")
            # The same complete text twice in a row: not a partial write.
            if m and text == prev and self._answers(int(m.group(1))):
                self.port = int(m.group(1))
                self.url = "http://127.0.0.1:%d" % self.port
                return
            prev = text
            time.sleep(0.02)

    def _answers(self, port):
        try:
            status, _, _ = http_request(port, "GET", "/healthz", timeout=2)
            return status in (200, 503)
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """SIGKILLs gpuqd and reaps it."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self._exit_expected = True
        self.proc.wait(timeout=STOP_TIMEOUT)
        self.rc = self.proc.returncode

    def terminate(self):
        """Sends SIGTERM without waiting (see wait_exit)."""
        self._exit_expected = True
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout=None):
        """Waits for gpuqd to exit by itself; returns its exit status.
        Raises AssertionError (after killing it) if it does not.
        timeout: seconds, scaled (None: STOP_TIMEOUT)."""
        timeout = STOP_TIMEOUT if timeout is None else scaled(timeout)
        self._exit_expected = True
        try:
            self.rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._force_kill()
            raise AssertionError("gpuqd did not exit within %.1fs"
                                 % timeout)
        return self.rc

    def stop(self, timeout=None):
        """SIGTERM, wait, and assert a zero exit status."""
        if not self.alive():
            self._exit_expected = True
            self.rc = self.proc.returncode
        else:
            self.terminate()
            self.wait_exit(timeout)
        if self.rc != 0:
            raise AssertionError("gpuqd exited with status %s after "
                                 "SIGTERM, expected 0" % self.rc)

    def restart(self):
        """Starts gpuqd again on the same data directory (a new port).
        A running daemon is stopped first with SIGTERM."""
        if self.alive():
            self.stop()
        self.start()

    def _force_kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=scaled(5))
            except subprocess.TimeoutExpired:
                pass

    def _cleanup(self, keep):
        if keep and os.environ.get("GPUQ_KEEP"):
            sys.stderr.write("gpuqtest: kept %s\n" % self.tmp)
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    def dump_log(self):
        try:
            with open(self.log, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = "(no log)"
        if len(text) > 20000:
            text = "...\n" + text[-20000:]
        sys.stderr.write("\n----- gpuqd log (%s) -----\n%s\n----- end of "
                         "gpuqd log -----\n" % (self.log, text))

    # -- HTTP ----------------------------------------------------------------

    def request_raw(self, method, path, body=None, headers=None,
                    timeout=10):
        """(status, headers, raw body bytes)."""
        if self.port is None:
            raise DaemonError("gpuqd is not running")
        return http_request(self.port, method, path, body, headers, timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        """(status, headers with lower-case names, parsed JSON or None).
        body: bytes and str are sent as they are, anything else as JSON."""
        status, hdrs, raw = self.request_raw(method, path, body, headers,
                                             timeout)
        return status, hdrs, parse_json(raw)

    # -- conveniences -------------------------------------------------------

    def submit(self, cls, expect=201, **fields):
        fields["class"] = cls
        status, _, body = self.request("POST", "/v1/jobs", fields)
        if status != expect:
            raise AssertionError("submit %r: status %d, expected %d: %r"
                                 % (fields, status, expect, body))
        return body

    def job(self, job_id):
        status, _, body = self.request("GET", "/v1/jobs/" + job_id)
        if status != 200:
            raise AssertionError("GET job %s: status %d: %r"
                                 % (job_id, status, body))
        return body

    def jobs(self, query=""):
        """Every job matching the query string, following `next`."""
        out = []
        after = None
        for _ in range(1000):
            q = query
            if after:
                q = (q + "&" if q else "") + "after=" + after
            q = (q + "&" if q else "") + "limit=1000"
            status, _, body = self.request("GET", "/v1/jobs?" + q)
            if status != 200:
                raise AssertionError("GET /v1/jobs?%s: status %d: %r"
                                     % (q, status, body))
            out.extend(body["jobs"])
            after = body.get("next")
            if not after or not body["jobs"]:
                return out
        raise AssertionError("GET /v1/jobs paging did not end")

    def snapshot(self):
        """What an error must not change: every job's id, state and
        attempts."""
        return [(j["id"], j["state"], j["attempts"]) for j in self.jobs()]

    def lease(self, classes, wait=5, worker="w", timeout=None):
        """(status, body) of POST /v1/leases."""
        status, _, body = self.request(
            "POST", "/v1/leases",
            {"classes": list(classes), "wait": wait, "worker": worker},
            timeout=timeout or wait + 10)
        return status, body

    def grant(self, classes, wait=5, worker="w"):
        """A lease that must be granted; returns the 200 body."""
        status, body = self.lease(classes, wait, worker)
        if status != 200:
            raise AssertionError("lease %r: status %d, expected 200: %r"
                                 % (classes, status, body))
        return body

    def lease_op(self, lease, op, token=None, **fields):
        """POST /v1/leases/{id}/{op}; lease is a grant body or an id."""
        if isinstance(lease, dict):
            lid = lease["lease_id"]
            if token is None:
                token = lease["token"]
        else:
            lid = lease
        if token is not None:
            fields["token"] = token
        status, _, body = self.request(
            "POST", "/v1/leases/%s/%s" % (lid, op), fields)
        return status, body

    def status(self):
        status, _, body = self.request("GET", "/v1/status")
        if status != 200:
            raise AssertionError("GET /v1/status: %d %r" % (status, body))
        return body

    def lock(self, cls, wait=5, holder="h", **fields):
        """(status, body) of POST /v1/locks."""
        fields.update({"class": cls, "wait": wait, "holder": holder})
        status, _, body = self.request("POST", "/v1/locks", fields,
                                       timeout=wait + 10)
        return status, body

    def release(self, lock, token=None):
        if token is None:
            token = lock["token"]
        status, _, body = self.request(
            "DELETE", "/v1/locks/%s?token=%s" % (lock["lock_id"], token))
        return status, body

    def wait_state(self, job_id, states, timeout=5.0):
        """Polls the job until its state is one of states; returns it."""
        if isinstance(states, str):
            states = (states,)
        return wait_until(
            lambda: (lambda j: j if j["state"] in states else None)(
                self.job(job_id)),
            timeout, what="job %s to reach %s" % (job_id, "/".join(states)))


class Background(threading.Thread):
    """Runs fn() in a thread and keeps its result or exception."""

    def __init__(self, fn, *args, **kw):
        super().__init__(daemon=True)
        self.fn, self.args, self.kw = fn, args, kw
        self.result = None
        self.exc = None
        self.started_at = None
        self.finished_at = None
        self.start()

    def run(self):
        self.started_at = time.monotonic()
        try:
            self.result = self.fn(*self.args, **self.kw)
        except BaseException as e:  # reported by get()
            self.exc = e
        self.finished_at = time.monotonic()

    def get(self, timeout=15.0):
        timeout = scaled(timeout)
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("background call did not finish in %.1fs"
                                 % timeout)
        if self.exc is not None:
            raise self.exc
        return self.result


class Worker(threading.Thread):
    """A worker that long-polls POST /v1/leases and records every grant.

    handle(worker, grant) decides what to do with a grant; the default
    sleeps `hold` seconds and completes the job with result(job) (by
    default its payload).  stop() ends the loop after the current poll."""

    def __init__(self, daemon, classes, name="worker", wait=1, hold=0.0,
                 result=None, handle=None, max_grants=None):
        super().__init__(daemon=True)
        self.d = daemon
        self.classes = list(classes)
        self.name_ = name
        self.wait = wait
        self.hold = hold
        self.result_fn = result or (lambda job: job.get("payload"))
        self.handle = handle or Worker.complete
        self.max_grants = max_grants
        self.grants = []       # 200 bodies, in order
        self.grant_times = []  # time.monotonic() of each
        self.completed = []    # (job id, token, status, body)
        self.errors = []       # unexpected statuses and exceptions
        self.cond = threading.Condition()
        self._halt = threading.Event()

    def complete(self, grant):
        if self.hold:
            time.sleep(self.hold)
        status, body = self.d.lease_op(
            grant, "complete", result=self.result_fn(grant["job"]))
        with self.cond:
            self.completed.append((grant["job"]["id"], grant["token"],
                                   status, body))
            self.cond.notify_all()

    def run(self):
        failures = 0
        while not self._halt.is_set():
            if self.max_grants is not None and \
                    len(self.grants) >= self.max_grants:
                break
            try:
                status, body = self.d.lease(self.classes, self.wait,
                                            self.name_)
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                failures += 1
                if failures > 3:
                    break
                time.sleep(0.1)
                continue
            if status == 200:
                with self.cond:
                    self.grants.append(body)
                    self.grant_times.append(time.monotonic())
                    self.cond.notify_all()
                try:
                    self.handle(self, body)
                except (OSError, http.client.HTTPException) as e:
                    self.errors.append(repr(e))
            elif status != 204:
                self.errors.append((status, body))
                time.sleep(0.1)

    def wait_grants(self, n, timeout=5.0):
        """Waits until at least n grants were recorded; returns them."""
        timeout = scaled(timeout)
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.grants) >= n, timeout)
            if not ok:
                raise AssertionError("worker %s: %d grants after %.1fs, "
                                     "expected %d"
                                     % (self.name_, len(self.grants),
                                        timeout, n))
            return list(self.grants)

    def wait_completed(self, n, timeout=5.0):
        timeout = scaled(timeout)
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.completed) >= n,
                                    timeout)
            if not ok:
                raise AssertionError("worker %s: %d completions after "
                                     "%.1fs, expected %d"
                                     % (self.name_, len(self.completed),
                                        timeout, n))
            return list(self.completed)

    def stop(self, timeout=None):
        self._halt.set()
        self.join(scaled(timeout if timeout is not None
                         else self.wait + 12))


class GpuqTest(unittest.TestCase):
    """Assertions shared by the integration tests."""

    maxDiff = None

    def assertError(self, reply, status, code, field=Ellipsis, msg=None):
        """reply is (status, headers, body) or (status, body).  field:
        Ellipsis = not checked, None = must be absent or null, else the
        exact field name."""
        got_status, body = reply[0], reply[-1]
        where = " (%s)" % msg if msg else ""
        self.assertEqual(got_status, status,
                         "status%s; body %r" % (where, body))
        self.assertIsInstance(body, dict, "error body%s" % where)
        self.assertIn("error", body, "error body%s" % where)
        err = body["error"]
        self.assertEqual(err.get("code"), code, "error.code%s: %r"
                         % (where, body))
        self.assertIsInstance(err.get("message"), str,
                              "error.message%s: %r" % (where, body))
        if field is None:
            self.assertIsNone(err.get("field"), "error.field%s: %r"
                              % (where, body))
        elif field is not Ellipsis:
            self.assertEqual(err.get("field"), field, "error.field%s: %r"
                             % (where, body))

    def assertTime(self, value, msg=None):
        self.assertIsInstance(value, str, msg)
        self.assertRegex(value, TIME_RE, msg)

    def assertIncreasing(self, seq, msg=None):
        for a, b in zip(seq, seq[1:]):
            self.assertLess(a, b, "%s: not strictly increasing: %r"
                            % (msg or "sequence", seq))
