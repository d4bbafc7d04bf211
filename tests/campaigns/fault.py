#!/usr/bin/env python3
"""fault - the fault campaign (issue #5, "hardening"; make fault-campaign).

Backends that refuse, hang, reset mid-stream, return garbage or 5xx;
workers and lock holders that vanish mid-lease; clients that hang up
mid-stream or while they wait.  Each scenario runs against a fresh gpuqd
(and a fresh fake inference server, tests/fake/fake_infer.py, or a tiny
scripted server of our own for what the fake cannot say) with short
times:

    backend timeout T = 1.0 s   (the call timeout)
    lease_ttl       L = 1.0 s   (worker and lock classes)
    backoff_base 0.1 s, backoff_max 0.2 s, max_attempts 3 (or 1, 2)

and checks, with one figure per scenario,

  * the slot is free again within the stated time.  What is measured
    (`slot_free_s`): the time from the fault (the subject's grant, the
    fake's reset, the client's hang-up, the worker's last heartbeat or
    kill) to the moment a *probe* gets the GPU.  The probe is a lock of
    the lowest-priority class, parked before the subject is granted: a
    "gate" lock holds the slot until both wait, the subject (a higher
    tier) is granted first, and the probe is granted the moment the slot
    is free and nothing of a higher tier is ready, i.e. when the
    subject's grant ends (a retried subject waits out its backoff, so it
    is not ready).  The probe's grant time is the daemon's own record
    (its history, wall clock), so a slow fsync of the grant's commit does
    not count; the reply's lag after it is shown ("probe's reply +X s")
    and checked against COMMIT_TOL.  Bounds: "at once" AT_ONCE (0.2 s), a
    call timeout T + TOL, a lease ttl L + TOL (and, where the reference
    is the daemon's own grant or the last heartbeat, not before
    L - EARLY: a lease that ends early is a bug too);
  * retries follow the policy (doc/executors.md, doc/api.md): retryable
    failures are retried after backoff_base * 2^(n-1) (capped at
    backoff_max, times [0.5, 1]) until max_attempts, then `dead`;
    non-retryable ones (4xx, chat failures after the first token, a
    second identical 500, a worker's exit 65) end `failed` at once;
    every backend call falls inside a grant, one per grant plus
    libcurl's own transparent re-sends on dead keep-alive connections
    (counted and reported as `libcurl_resends`, see sc_reset_once);
  * nothing is lost: every job ends in the expected terminal state, and
    the store (read directly) agrees with the API on every job's state
    and attempts.

    GPUQD=... GPUQ=... python3 tests/campaigns/fault.py [--only a,b] [--list]
        [--tol-scale X]

Python 3 standard library only; 127.0.0.1 only; every wait is bounded.
"""

import argparse
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from common import Report, store_rows  # (puts tests/integration on the path)
from gpuqtest import GPUQ, STATES, TERMINAL, Daemon, wait_until
from execfix import FakeInfer, fake_infer, wall, write_wav

T = 1.0            # backend call timeout (s)
L = 1.0            # lease_ttl of the worker and lock classes (s)
BASE = 0.1         # backoff_base (s)
BMAX = 0.2         # backoff_max (s)
AT_ONCE = 0.2      # "at once" on a shared 2-core machine
TOL = 0.35         # slack over a timer (timeout, ttl)
EARLY = 0.1        # how much earlier than its timer a slot may free
COMMIT_TOL = 1.0   # a grant's reply after its commit (fsync; disk stalls)
COOLDOWN = 2.0     # breaker_cooldown in the breaker scenario
GAP_TOL = 0.3      # slack over a backoff upper bound
# Backend calls one grant may make: its own, plus libcurl's transparent
# re-send on each pooled keep-alive connection that dies before the reply
# starts (here: the two health checks' connections, both backends being
# the same fake) -- see sc_reset_once.
MAX_CALLS_PER_GRANT = 3

rep = Report("fault")
RESENDS = 0        # libcurl's transparent re-sends seen, all scenarios


# ---------------------------------------------------------------------------
# Configuration.

def sections(fport, root, mport=None):
    s = {
        "server": {"drain_timeout": "2"},
        "gpu": {"slots": "1"},
        "backend llm": {
            "type": "openai", "url": "http://127.0.0.1:%d" % fport,
            "model": "tiny", "timeout": str(T), "max_concurrency": "1",
            "breaker_failures": "100", "breaker_cooldown": "1",
            "health_interval": "600"},
        "backend whisper": {
            "type": "whisper-cpp", "url": "http://127.0.0.1:%d" % fport,
            "timeout": str(T), "breaker_failures": "100",
            "health_interval": "600"},
        # holds the slot while the subject and the probe line up
        "class gate": {"priority": "20", "lease_ttl": "30"},
        "class chat": {
            "priority": "10", "executor": "chat", "backend": "llm",
            "max_attempts": "3", "backoff_base": str(BASE),
            "backoff_max": str(BMAX)},
        "class chat1": {
            "priority": "10", "executor": "chat", "backend": "llm",
            "max_attempts": "1"},
        "class transcription": {
            "priority": "0", "executor": "transcribe", "backend": "whisper",
            "max_attempts": "3", "backoff_base": str(BASE),
            "backoff_max": str(BMAX), "audio_roots": root,
            "max_hold": "2"},
        "class summarization": {
            "priority": "0", "executor": "summarize", "backend": "llm",
            "max_attempts": "3", "backoff_base": str(BASE),
            "backoff_max": str(BMAX)},
        "class work": {
            "priority": "0", "lease_ttl": str(L), "max_attempts": "2",
            "backoff_base": str(BASE), "backoff_max": str(BMAX)},
        "class lk": {"priority": "0", "lease_ttl": str(L)},
        # the lowest tier: granted only when the slot is really free
        "class probe": {"priority": "-10", "lease_ttl": "30"},
    }
    if mport is not None:
        s["backend mini"] = {
            "type": "openai", "url": "http://127.0.0.1:%d" % mport,
            "model": "tiny", "timeout": str(T), "max_concurrency": "1",
            "breaker_failures": "100", "health_interval": "600"}
        s["class chatmini"] = {
            "priority": "10", "executor": "chat", "backend": "mini",
            "max_attempts": "3", "backoff_base": str(BASE),
            "backoff_max": str(BMAX)}
    return s


def render(s):
    out = []
    for name, keys in s.items():
        out.append("[%s]" % name)
        out.extend("%s = %s" % kv for kv in keys.items())
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# A tiny scripted OpenAI-style server, for what the fake cannot say: a 4xx,
# a 429, bytes that are not HTTP at all.

SSE_OK = (b'data: {"choices":[{"index":0,"delta":{"content":"ok"},'
          b'"finish_reason":null}]}\n\n'
          b'data: {"choices":[{"index":0,"delta":{},'
          b'"finish_reason":"stop"}]}\n\n'
          b'data: [DONE]\n\n')


class MiniBackend:
    """Answers GET /health with 200; each POST takes the next scripted
    answer: (status, body) or ("raw", bytes); none left: a good SSE
    reply."""

    def __init__(self):
        self.script = []
        self.posts = 0
        self.lock = threading.Lock()
        mini = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, ctype, body):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, "application/json", b'{"status":"ok"}')

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                with mini.lock:
                    mini.posts += 1
                    step = mini.script.pop(0) if mini.script else None
                if step is None:
                    self._send(200, "text/event-stream", SSE_OK)
                elif step[0] == "raw":
                    self.wfile.write(step[1])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self._send(step[0], "application/json",
                               json.dumps(step[1]).encode())

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.srv = S(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


# ---------------------------------------------------------------------------
# Helpers.

def spans(job):
    """[(start, end, end state, end detail)] of each grant in a job's
    history (end None while running)."""
    out, cur = [], None
    for h in job["history"]:
        if h["state"] == "running":
            cur = wall(h["at"])
        elif cur is not None:
            out.append((cur, wall(h["at"]), h["state"], h["detail"]))
            cur = None
    if cur is not None:
        out.append((cur, None, "running", None))
    return out


def backoff_gaps(job):
    """[(attempt n, gap s)]: the time from the end of grant n (requeued)
    to the start of grant n+1."""
    out, n, t_end = [], 0, None
    for h in job["history"]:
        if h["state"] == "running":
            if t_end is not None:
                out.append((n, wall(h["at"]) - t_end))
            n += 1
            t_end = None
        elif h["state"] == "queued" and n > 0:
            t_end = wall(h["at"])
    return out


class Probe:
    """A lock of the lowest class, parked now; released at once when
    granted.  wait() returns when the daemon granted it (its history's
    "running" time, on the daemon's clock: the moment the slot went to
    the probe); t_reply is when the grant's reply arrived, after the
    grant's group commit (fsync), which on a loaded disk can lag."""

    def __init__(self, d):
        self.d = d
        self.t = None
        self.t_grant = None
        self.status = None
        self.body = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: any(j["state"] == "queued"
                               for j in d.jobs("class=probe")) or
                   self.status is not None, 5, 0.01, "the probe to wait")
        self.early = self.status is not None   # granted at once

    def _run(self):
        try:
            st, _, body = self.d.request(
                "POST", "/v1/locks", {"class": "probe", "wait": 60,
                                      "holder": "probe"}, timeout=70)
            self.t = time.time()
            self.status, self.body = st, body
            if st == 200:
                self.d.release(body)
        except (OSError, http.client.HTTPException) as e:
            self.status = repr(e)

    def wait(self, timeout=20):
        self.thread.join(timeout)
        if self.thread.is_alive() or self.status != 200:
            raise AssertionError("probe not granted within %ss: %r %r"
                                 % (timeout, self.status, self.body))
        j = self.d.job(self.body["job_id"])
        self.t_grant = spans(j)[0][0]
        return self.t_grant


class Env:
    """One scenario's world: the fake (or none), the daemon, the audio
    root, the gate, the probe."""

    def __init__(self, name, d, fake, mini, root):
        self.name, self.d, self.fake, self.mini = name, d, fake, mini
        self.root = root
        self.gate_lock = None
        self.expect = {}          # job id -> terminal state(s)
        self.resends = 0          # libcurl's own re-sends seen
        self.cur_probe = None

    # -- the gate and the probe ------------------------------------------

    def gate(self):
        st, body = self.d.lock("gate", wait=5, holder="gate")
        if st != 200:
            raise AssertionError("gate lock: %r %r" % (st, body))
        self.gate_lock = body
        self.expect[body["job_id"]] = "succeeded"

    def open_gate(self):
        st, body = self.d.release(self.gate_lock)
        if st != 200:
            raise AssertionError("gate release: %r %r" % (st, body))

    def probe(self):
        """A probe parked behind the gate (granted at once would mean the
        gate was not holding the slot: the measurement would be void)."""
        p = Probe(self.d)
        rep.check(not p.early, "%s: the probe was granted before the "
                  "subject" % self.name)
        self.cur_probe = p
        return p

    # -- jobs ------------------------------------------------------------

    def submit(self, cls, payload, expect):
        j = self.d.submit(cls, payload=payload)
        self.expect[j["id"]] = expect
        return j["id"]

    def chat(self, text, cls="chat", expect="succeeded", **extra):
        p = {"messages": [{"role": "user", "content": text}]}
        p.update(extra)
        return self.submit(cls, p, expect)

    def wav(self, name, seconds):
        path = os.path.join(self.root, name)
        write_wav(path, seconds)
        return path

    def running(self, jid, timeout=5):
        return self.d.wait_state(jid, ("running",) + TERMINAL, timeout)

    def final(self, jid, timeout=10):
        self.d.wait_state(jid, TERMINAL, timeout)
        return self.d.job(jid)

    def workers_waiting(self, cls):
        for c in self.d.status()["classes"]:
            if c["name"] == cls:
                return c["workers_waiting"]
        return None

    # -- checks ----------------------------------------------------------

    def slot_free(self, value, hi, lo=None, what="slot_free_s"):
        """Reports the figure and checks lo <= value <= hi; for a value
        measured by the probe, also that the probe's reply followed its
        grant within COMMIT_TOL."""
        p, extra = self.cur_probe, ""
        if what == "slot_free_s" and p is not None and \
                p.t_grant is not None:
            lag = p.t - p.t_grant
            extra = "; probe's reply +%.3f s" % lag
            rep.check(lag <= COMMIT_TOL, "%s: the probe's grant reply came "
                      "%.3f s after the grant" % (self.name, lag))
            self.cur_probe = None
        rep.figure("fault.%s.%s" % (self.name, what), value,
                   "s (bound %.2f%s%s)" % (hi, "" if lo is None
                                           else ", at least %.2f" % lo,
                                           extra))
        rep.check(value <= hi, "%s: %s = %.3f s over its bound %.2f s"
                  % (self.name, what, value, hi))
        if lo is not None:
            rep.check(value >= lo, "%s: %s = %.3f s, earlier than %.2f s"
                      % (self.name, what, value, lo))

    def expect_job(self, jid, state, attempts=None, code=None,
                   call_count=None, entries=None):
        """Checks a terminal job: state, attempts, error code, and (calls
        given) that the backend saw one call per attempt."""
        j = self.final(jid)
        ok = rep.check(j["state"] == state, "%s: job %s is %s, expected %s"
                       " (error %r)" % (self.name, jid, j["state"], state,
                                        j.get("error")))
        if attempts is not None:
            ok &= rep.check(j["attempts"] == attempts,
                            "%s: job %s made %d attempts, expected %d"
                            % (self.name, jid, j["attempts"], attempts))
        if code is not None:
            got = (j.get("error") or {}).get("code")
            ok &= rep.check(got == code, "%s: job %s error %r, expected %r"
                            % (self.name, jid, got, code))
        if call_count is not None:
            ok &= rep.check(call_count == j["attempts"],
                            "%s: the backend saw %d calls for %d attempts"
                            % (self.name, call_count, j["attempts"]))
        if entries is not None:
            self.check_calls(j, entries)
        return j

    def check_calls(self, j, entries, figure=True):
        """Every backend call lies inside one of the job's grants, and
        every grant made one call, plus the re-sends libcurl makes by
        itself when a reused keep-alive connection dies before any byte
        of the reply (Curl_retry_request): at most one per pooled
        connection, then one on a fresh connection
        (MAX_CALLS_PER_GRANT)."""
        sp = spans(j)
        per, outside = [0] * len(sp), 0
        for e in entries:
            t = e["t_start"]
            for i, (a, b, _, _) in enumerate(sp):
                if a - 0.01 <= t <= (b if b is not None else 1e18) + 0.01:
                    per[i] += 1
                    break
            else:
                outside += 1
        resends = sum(per) - len(per)
        if figure:
            rep.figure("fault.%s.calls" % self.name,
                       "%d for %d attempts" % (sum(per) + outside, len(sp)),
                       "(libcurl re-sends: %d)" % resends)
        rep.check(outside == 0, "%s: %d backend calls outside the job's "
                  "grants" % (self.name, outside))
        # (a grant that ran into the call timeout may have sent a request
        # that a stalled backend never read: no call logged)
        timed_out = [b is not None and b - a >= T - EARLY
                     for a, b, _, _ in sp]
        rep.check(all((1 if not to else 0) <= n <= MAX_CALLS_PER_GRANT
                      for n, to in zip(per, timed_out)),
                  "%s: backend calls per grant %r (at most %d); grants "
                  "%r; calls at %r; last error %r"
                  % (self.name, per, MAX_CALLS_PER_GRANT,
                     [(round(a, 3), b and round(b, 3)) for a, b, _, _ in sp],
                     [round(e["t_start"], 3) for e in entries],
                     j.get("error")))
        self.resends += resends
        return per

    def check_backoff(self, j, base=None, bmax=None, upper=True,
                      figure=True):
        """Each requeue waited backoff_base * 2^(n-1) (capped) times a
        factor in [0.5, 1] before the next grant."""
        base = BASE if base is None else base
        bmax = BMAX if bmax is None else bmax
        gaps = backoff_gaps(j)
        for n, gap in gaps:
            b = min(base * 2 ** (n - 1), bmax)
            rep.check(gap >= 0.5 * b - 0.002,
                      "%s: retry after attempt %d came %.3f s after the "
                      "failure, before the backoff's least %.3f s"
                      % (self.name, n, gap, 0.5 * b))
            rep.check(not upper or gap <= b + GAP_TOL,
                      "%s: retry after attempt %d came %.3f s after the "
                      "failure; the backoff is at most %.3f s"
                      % (self.name, n, gap, b))
        if gaps and figure:
            rep.figure("fault.%s.backoff_s" % self.name,
                       ",".join("%.3f" % g for _, g in gaps), "s")
        return gaps

    def audit(self):
        """Nothing is lost: every job is terminal, in the expected state,
        and the store agrees with the API."""
        jobs = {j["id"]: j for j in self.d.jobs()}
        for jid, want in self.expect.items():
            if jid not in jobs:
                rep.check(False, "%s: job %s is lost" % (self.name, jid))
                continue
            wants = (want,) if isinstance(want, str) else want
            rep.check(jobs[jid]["state"] in wants,
                      "%s: job %s ended %s, expected %s"
                      % (self.name, jid, jobs[jid]["state"], "/".join(wants)))
        rows = {"j%d" % seq: (st, att) for seq, st, att in store_rows(
            self.d.data, "SELECT seq, state, attempts FROM jobs")}
        for jid, j in jobs.items():
            rep.check(j["state"] in TERMINAL,
                      "%s: job %s (%s) left %s" % (self.name, jid,
                                                    j["class"], j["state"]))
            if j["class"] == "probe":
                rep.check(j["state"] == "succeeded",
                          "%s: probe %s ended %s" % (self.name, jid,
                                                     j["state"]))
            row = rows.get(jid)
            rep.check(row is not None and STATES[row[0]] == j["state"]
                      and row[1] == j["attempts"],
                      "%s: store has %r for job %s, the API %s/%d"
                      % (self.name, row, jid, j["state"], j["attempts"]))
        rep.check(len(rows) == len(jobs), "%s: store has %d jobs, the API "
                  "%d" % (self.name, len(rows), len(jobs)))


def calls(fake, path, marker=None):
    out = []
    for e in fake.requests(path):
        if marker is None or marker in json.dumps(e.get("body_json")):
            out.append(e)
    return out


def raw_post(port, path, body, ctype="application/json", headers=()):
    """Sends a request on a raw socket and returns the socket (the client
    that will hang up)."""
    sk = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
            "Content-Length: %d\r\n" % (path, ctype, len(body)))
    for k, v in headers:
        head += "%s: %s\r\n" % (k, v)
    sk.sendall(head.encode() + b"\r\n" + body)
    return sk


def hang_up(sk):
    try:
        sk.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sk.close()
    return time.time()


class RawStream:
    """A request on a raw socket whose reply is read as it comes (gpuqd
    sends a stream's head only with its first piece, so a client cannot
    wait for the head while the job is queued)."""

    def __init__(self, port, method, path, body=None, headers=()):
        self.sk = socket.create_connection(("127.0.0.1", port), timeout=10)
        data = json.dumps(body).encode() if body is not None else b""
        head = "%s %s HTTP/1.1\r\nHost: x\r\n" % (method, path)
        if body is not None:
            head += ("Content-Type: application/json\r\n"
                     "Content-Length: %d\r\n" % len(data))
        for k, v in headers:
            head += "%s: %s\r\n" % (k, v)
        self.sk.sendall(head.encode() + b"\r\n" + data)
        self.buf = b""

    def read_until(self, needle, timeout=10):
        """Reads until needle is in the reply; returns the reply so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r in the reply after %ss: %r"
                                     % (needle, timeout, self.buf[-300:]))
            self.sk.settimeout(left)
            chunk = self.sk.recv(65536)
            if not chunk:
                raise AssertionError("the reply ended without %r: %r"
                                     % (needle, self.buf[-300:]))
            self.buf += chunk
        return self.buf

    def hang_up(self):
        return hang_up(self.sk)


def lease_body(d, cls, wait=10, worker="w"):
    st, body = d.lease([cls], wait=wait, worker=worker)
    if st != 200:
        raise AssertionError("lease %s: %r %r" % (cls, st, body))
    return body


class Leaser(threading.Thread):
    """A long-poll for one lease, in the background."""

    def __init__(self, d, cls, wait=10, worker="w"):
        super().__init__(daemon=True)
        self.d, self.cls, self.wait_s, self.worker = d, cls, wait, worker
        self.body, self.t, self.exc = None, None, None
        self.start()

    def run(self):
        try:
            self.body = lease_body(self.d, self.cls, self.wait_s, self.worker)
            self.t = time.time()
        except BaseException as e:
            self.exc = e

    def get(self, timeout=15):
        self.join(timeout)
        if self.is_alive() or self.exc:
            raise AssertionError("lease: %r" % (self.exc,))
        return self.body


def parked_worker(env, cls="work", worker="w"):
    """A lease long-poll that is waiting in the daemon."""
    lz = Leaser(env.d, cls, worker=worker)
    wait_until(lambda: env.workers_waiting(cls) == 1, 5, 0.01,
               "the worker to wait")
    return lz


def kill_pidfile(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------
# Scenarios: backends.

def backend_fault(env, fault, text, want_state, want_attempts, want_code,
                  bound, lo=None, ref="grant", path="/v1/chat/completions",
                  cls="chat", script=None, backoff=True):
    """The common shape: gate, probe, one subject with the fake scripted
    to fail; the slot must be free within bound of the reference."""
    if script:
        env.fake.script(**script)
    env.fake.script(faults=fault)
    env.gate()
    probe = env.probe()
    jid = env.chat(text, cls=cls, expect=want_state)
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid, timeout=15)
    if ref == "grant":
        t_ref = spans(j)[0][0]
    else:  # the fake's end of the first call (a reset: its RST)
        first = calls(env.fake, path, text)[0]
        t_ref = first["t_end"] or first["t_start"]
    env.slot_free(t_free - t_ref, bound, lo)
    j = env.expect_job(jid, want_state, want_attempts, want_code,
                       entries=calls(env.fake, path, text))
    if backoff:
        env.check_backoff(j)
    return j


def sc_refuse(env):
    """The backend's port refuses connections (the server died after its
    health check): every attempt fails at once (backend_unreachable,
    retryable), retried with backoff, dead after max_attempts = 3."""
    wait_until(lambda: len(env.fake.requests("/health")) >= 2, 5, 0.02,
               "the health checks")
    env.fake.kill()
    env.gate()
    probe = env.probe()
    jid = env.chat("refused", expect="dead")
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid)
    env.slot_free(t_free - spans(j)[0][0], AT_ONCE)
    j = env.expect_job(jid, "dead", 3, "backend_unreachable")
    holds = [e - s for s, e, _, _ in spans(j)]
    rep.figure("fault.refuse.hold_max_s", max(holds), "s (bound %.2f)"
               % AT_ONCE)
    rep.check(max(holds) <= AT_ONCE, "refuse: an attempt held the slot "
              "%.3f s" % max(holds))
    env.check_backoff(j)


def sc_hang(env):
    """The backend reads the request and never answers: the call times out
    at T (backend_unreachable, retryable), the hung call is dropped, the
    retry succeeds."""
    backend_fault(env, [{"path": "/v1/chat/completions", "kind": "hang"}],
                  "hang once", "succeeded", 2, None, T + TOL, T - EARLY)
    wait_until(lambda: calls(env.fake, "/v1/chat/completions", "hang once")
               [0]["client_disconnected"], 3, 0.05,
               "the hung call to be dropped")


def sc_slow_trickle_chat(env):
    """The stream trickles (0.2 s per event, 16 tokens: 3.4 s > T): the
    call times out at T after tokens were streamed, so it is not retried
    (failed, backend_unreachable)."""
    backend_fault(env, [{"path": "/v1/chat/completions", "kind": "trickle",
                         "delay_s": 0.2}],
                  "trickle", "failed", 1, "backend_unreachable",
                  T + TOL, T - EARLY)


def sc_slow_within_timeout(env):
    """A slow but live stream (18 events, 0.03 s apart: about 0.55 s < T)
    is not cut: it succeeds at its first attempt and holds the slot only
    as long as it streams."""
    env.fake.script(token_delay_s=0.03)
    env.gate()
    probe = env.probe()
    jid = env.chat("slow but alive")
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid)
    call = calls(env.fake, "/v1/chat/completions", "slow but alive")[0]
    natural = call["t_end"] - call["t_start"]
    env.slot_free(t_free - spans(j)[0][0], natural + AT_ONCE)
    env.expect_job(jid, "succeeded", 1, None, entries=calls(
        env.fake, "/v1/chat/completions", "slow but alive"))
    rep.check(j["result"]["choices"][0]["message"]["content"] ==
              fake_infer.fake_text(16), "slow_within_timeout: the text "
              "was not whole")


def sc_reset_before_reply(env):
    """The backend resets every connection after reading the request:
    retryable (backend_unreachable), retried with backoff, dead after 3
    attempts; the slot is free at once after each."""
    backend_fault(env, [{"path": "/v1/chat/completions", "kind": "reset",
                         "count": -1}],
                  "reset always", "dead", 3, "backend_unreachable", AT_ONCE)


def sc_reset_once(env):
    """One reset after the request was read, on the keep-alive connection
    the health check left: libcurl re-sends the request at once on a
    fresh connection, inside the same grant (no attempt counted, no
    backoff), and it succeeds.  Reported as `resends`; the job itself
    follows the policy (succeeded, 1 attempt)."""
    backend_fault(env, [{"path": "/v1/chat/completions", "kind": "reset"}],
                  "reset once", "succeeded", None, None, AT_ONCE)


def sc_reset_mid_stream(env):
    """RST after 2 stream events (tokens already streamed): the slot is
    free at once after the reset; not retried (chat after the first
    token): failed."""
    backend_fault(env, [{"path": "/v1/chat/completions",
                         "kind": "reset_mid_stream"}],
                  "reset mid", "failed", 1, "backend_unreachable",
                  AT_ONCE, ref="fake", script={"token_delay_s": 0.05})


def sc_close_no_reply_dead(env):
    """The backend closes every connection without answering (empty
    reply): retryable, backoff 0.05-0.1 s then 0.1-0.2 s, dead after 3
    attempts."""
    backend_fault(env, [{"path": "/v1/chat/completions", "kind": "close",
                         "count": -1}],
                  "closed", "dead", 3, "backend_unreachable", AT_ONCE)


def sc_garbage_first_event(env):
    """The first stream event is cut garbage (nothing streamed yet):
    backend_bad_reply, retried, succeeds."""
    backend_fault(env, [{"path": "/v1/chat/completions",
                         "kind": "malformed_json", "after": 0}],
                  "garbage first", "succeeded", 2, None, AT_ONCE)


def sc_garbage_mid_stream(env):
    """The second stream event is garbage, after a token: not retried
    (failed, backend_bad_reply)."""
    backend_fault(env, [{"path": "/v1/chat/completions",
                         "kind": "malformed_json"}],
                  "garbage mid", "failed", 1, "backend_bad_reply", AT_ONCE)


def sc_500_once(env):
    """One 500: retried after backoff, succeeds at attempt 2."""
    backend_fault(env, [{"path": "/v1/chat/completions", "kind": "500"}],
                  "five hundred once", "succeeded", 2, None, AT_ONCE)


def sc_500_repeated(env):
    """500 with the same body every time: the second identical 500 is
    final (gq_backend_repeated_500): failed after 2 attempts, not dead
    after 3."""
    backend_fault(env, [{"path": "/v1/chat/completions", "kind": "500",
                         "count": -1}],
                  "five hundred again", "failed", 2, "backend_5xx", AT_ONCE)


def sc_503_loading(env):
    """llama-server answers 503 "Loading model" twice (the same body both
    times): 503 says "later", so the repeated-500 rule must not make it
    final: retried with backoff, succeeds at attempt 3."""
    backend_fault(env, [{"path": "/v1/chat/completions", "kind": "503",
                         "count": 2}],
                  "loading", "succeeded", 3, None, AT_ONCE)


def sc_4xx_fatal(env):
    """A 400 (the request is wrong): fatal, failed at once, one call."""
    env.mini.script = [(400, {"error": {"message": "bad request"}})]
    env.gate()
    probe = env.probe()
    jid = env.chat("four hundred", cls="chatmini", expect="failed")
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid)
    env.slot_free(t_free - spans(j)[0][0], AT_ONCE)
    env.expect_job(jid, "failed", 1, "backend_4xx",
                   call_count=env.mini.posts)


def sc_429_retried(env):
    """429 twice (rate limited): retryable 4xx, retried with backoff,
    succeeds at attempt 3."""
    env.mini.script = [(429, {"error": {"message": "slow down"}}),
                       (429, {"error": {"message": "slow down more"}})]
    env.gate()
    probe = env.probe()
    jid = env.chat("rate limited", cls="chatmini")
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid)
    env.slot_free(t_free - spans(j)[0][0], AT_ONCE)
    j = env.expect_job(jid, "succeeded", 3, None, call_count=env.mini.posts)
    env.check_backoff(j)


def sc_not_http(env):
    """The backend answers bytes that are not HTTP (another service on the
    port): doc/executors.md classes this "anything else": fatal, failed at
    once after one call."""
    env.mini.script = [("raw", b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")]
    env.gate()
    probe = env.probe()
    jid = env.chat("not http", cls="chatmini", expect="failed")
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid)
    env.slot_free(t_free - spans(j)[0][0], AT_ONCE)
    env.expect_job(jid, "failed", 1, "backend_unreachable",
                   call_count=env.mini.posts)


def sc_breaker(env):
    """Backend down with breaker_failures = 2, cooldown 2 s: two chats die,
    the circuit opens, the third waits (reason backend) while the slot
    goes to others at once; once the server is back, the probe call after
    the cool-down runs it."""
    wait_until(lambda: len(env.fake.requests("/health")) >= 2, 5, 0.02,
               "the health checks")
    port = env.fake.port
    env.fake.kill()
    a = env.chat("down a", cls="chat1", expect="dead")
    b = env.chat("down b", cls="chat1", expect="dead")
    env.expect_job(a, "dead", 1, "backend_unreachable")
    env.expect_job(b, "dead", 1, "backend_unreachable")
    t_open = wall(env.d.job(b)["history"][-1]["at"])
    st = [x for x in env.d.status()["backends"] if x["name"] == "llm"][0]
    rep.check(st["state"] == "open", "breaker: circuit %s after 2 failures"
              % st["state"])
    c = env.chat("after the breaker", cls="chat1")
    time.sleep(0.1)
    j = env.d.job(c)
    rep.check(j["state"] == "queued" and j["reason"] == "backend",
              "breaker: the chat is %s/%s while the circuit is open"
              % (j["state"], j.get("reason")))
    t0 = time.time()
    st, body = env.d.lock("probe", wait=5, holder="probe")
    t_free = time.time()
    rep.check(st == 200, "breaker: probe lock %s %r" % (st, body))
    if st == 200:
        env.d.release(body)
    env.slot_free(t_free - t0, AT_ONCE, what="slot_free_while_open_s")
    env.fake = FakeInfer("llama", None, port).start()
    t_up = time.time()
    env.own.append(env.fake)
    rep.check(t_up < t_open + COOLDOWN - 0.1, "breaker: the fake took "
              "%.2f s to restart: too slow to test the cool-down"
              % (t_up - t_open))
    env.final(c)
    j = env.expect_job(c, "succeeded", 1, None, entries=calls(
        env.fake, "/v1/chat/completions", "after the breaker"))
    rec = spans(j)[0][0] - t_open
    rep.figure("fault.breaker.probe_after_open_s", rec,
               "s (bound %.2f, at least %.2f; server back after %.2f s)"
               % (COOLDOWN + TOL, COOLDOWN - EARLY, t_up - t_open))
    rep.check(COOLDOWN - EARLY <= rec <= COOLDOWN + TOL, "breaker: the "
              "probe call went %.3f s after the circuit opened (cool-down "
              "%.1f s)" % (rec, COOLDOWN))


def sc_whisper_hang_dead(env):
    """whisper-server hangs on every chunk: each attempt is cut at T and
    the slot freed; dead after 3 attempts; every hung call dropped."""
    env.fake.script(faults=[{"path": "/inference", "kind": "hang",
                             "count": -1}])
    env.gate()
    probe = env.probe()
    jid = env.submit("transcription",
                     {"audio_path": env.wav("hang.wav", 2.0)}, "dead")
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid, timeout=15)
    env.slot_free(t_free - spans(j)[0][0], T + TOL, T - EARLY)
    holds = [e - s for s, e, _, _ in spans(j)]
    rep.figure("fault.whisper_hang_dead.hold_max_s", max(holds),
               "s (bound %.2f)" % (T + TOL))
    rep.check(max(holds) <= T + TOL, "whisper_hang_dead: an attempt held "
              "the slot %.3f s" % max(holds))
    j = env.expect_job(jid, "dead", 3, "backend_unreachable",
                       entries=env.fake.requests("/inference"))
    env.check_backoff(j)
    wait_until(lambda: all(r["client_disconnected"] for r in
                           env.fake.requests("/inference")), 3, 0.05,
               "every hung whisper call to be dropped")


def whisper_fault(env, fault, name, want_state, want_attempts, bound, lo=None,
                  code=None):
    env.fake.script(faults=fault)
    env.gate()
    probe = env.probe()
    jid = env.submit("transcription",
                     {"audio_path": env.wav(name + ".wav", 2.0)}, want_state)
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid, timeout=15)
    env.slot_free(t_free - spans(j)[0][0], bound, lo)
    j = env.expect_job(jid, want_state, want_attempts, code,
                       entries=env.fake.requests("/inference"))
    env.check_backoff(j)
    if want_state == "succeeded" and j["state"] == "succeeded":
        rep.check(abs(j["result"]["duration"] - 2.0) < 0.05 and
                  j["result"]["segments"], "%s: the transcript is not "
                  "whole: %r" % (name, j["result"]))


def sc_whisper_slow(env):
    """whisper-server takes 3 s (> T) once: timed out at T, retried,
    succeeds."""
    whisper_fault(env, [{"path": "/inference", "kind": "slow",
                         "delay_s": 3}], "whisper_slow", "succeeded", 2,
                  T + TOL, T - EARLY)


def sc_whisper_reset_mid_body(env):
    """whisper-server sends half its reply, then RST: retried, succeeds."""
    whisper_fault(env, [{"path": "/inference",
                         "kind": "reset_mid_stream"}],
                  "whisper_reset", "succeeded", 2, AT_ONCE)


def sc_whisper_garbage(env):
    """whisper-server answers 200 with half a JSON body: backend_bad_reply,
    retried, succeeds."""
    whisper_fault(env, [{"path": "/inference", "kind": "malformed_json"}],
                  "whisper_garbage", "succeeded", 2, AT_ONCE)


def sc_whisper_503(env):
    """whisper-server answers 503 twice (busy): retried, succeeds at 3."""
    whisper_fault(env, [{"path": "/inference", "kind": "503", "count": 2}],
                  "whisper_503", "succeeded", 3, AT_ONCE)


def sc_whisper_killed_mid_chunk(env):
    """whisper-server is killed mid-chunk and restarted on its port (the
    class here: backoff 1 s, 3 attempts): the chunk fails at once
    (backend_unreachable, retryable), the slot is free at once, and the
    first retry after the server is back succeeds."""
    env.fake.script(per_audio_second_s=1.0)
    env.gate()
    probe = env.probe()
    jid = env.submit("transcription",
                     {"audio_path": env.wav("killed.wav", 2.0)}, "succeeded")
    env.open_gate()
    wait_until(lambda: env.fake.busy()["busy"] > 0, 5, 0.01,
               "the chunk to reach whisper")
    port = env.fake.port
    t_kill = time.time()
    env.fake.kill()
    t_free = probe.wait()
    env.slot_free(t_free - t_kill, AT_ONCE)
    env.fake = FakeInfer("llama", None, port).start()
    t_up = time.time()
    env.own.append(env.fake)
    j = env.expect_job(jid, "succeeded")
    # the retry after the backoff (0.5-1 s) normally finds the server
    # back; on a loaded machine its restart can take longer, and a retry
    # that started before it listened is refused (one more attempt)
    sp = spans(j)
    rep.figure("fault.whisper_killed_mid_chunk.attempts", j["attempts"],
               "(server back %.2f s after the kill)" % (t_up - t_kill))
    for a, e, st, det in sp[:-1]:
        rep.check(st == "queued" and det == {"retryable": True},
                  "whisper_killed_mid_chunk: a grant ended %s %r"
                  % (st, det))
    for a, e, st, det in sp[1:-1]:
        rep.check(a < t_up, "whisper_killed_mid_chunk: a retry at +%.3f s "
                  "failed though the server was back at +%.3f s"
                  % (a - t_kill, t_up - t_kill))
    env.check_backoff(j, 1.0, 1.0)
    rep.check(abs(j["result"]["duration"] - 2.0) < 0.05,
              "whisper_killed_mid_chunk: transcript %r" % j["result"])


def sc_summary_trickle(env):
    """A non-streamed summarization reply trickles 8 bytes per 0.1 s (far
    over T): cut at T, retryable, retried, succeeds."""
    env.fake.script(faults=[{"path": "/v1/chat/completions",
                             "kind": "trickle", "delay_s": 0.1}])
    env.gate()
    probe = env.probe()
    jid = env.submit("summarization", {"text": "A short text to sum up."},
                     "succeeded")
    env.open_gate()
    t_free = probe.wait()
    j = env.final(jid, timeout=15)
    env.slot_free(t_free - spans(j)[0][0], T + TOL, T - EARLY)
    j = env.expect_job(jid, "succeeded", 2, None,
                       entries=env.fake.requests("/v1/chat/completions"))
    env.check_backoff(j)


def sc_mixed_batch(env):
    """16 summarizations while the backend misbehaves in turn (4 x 500,
    3 x close, 3 x garbage 200, 2 x hang, then healthy): nothing is lost
    -- every job ends, succeeded, or dead after 3 attempts, or failed on a
    repeated identical 500 -- no grant holds the slot past T, and the
    backend saw one call per attempt (plus libcurl's re-sends)."""
    n = 16
    env.fake.script(faults=[
        {"path": "/v1/chat/completions", "kind": "500", "count": 4},
        {"path": "/v1/chat/completions", "kind": "close", "count": 3},
        {"path": "/v1/chat/completions", "kind": "malformed_json",
         "count": 3},
        {"path": "/v1/chat/completions", "kind": "hang", "count": 2}])
    t0 = time.time()
    ids = [env.submit("summarization", {"text": "Batch text %d." % i},
                      ("succeeded", "dead", "failed")) for i in range(n)]
    jobs = [env.final(jid, timeout=30) for jid in ids]
    t_all = time.time() - t0
    holds, states, resends = [], {}, 0
    entries = env.fake.requests("/v1/chat/completions")
    for j in jobs:
        states[j["state"]] = states.get(j["state"], 0) + 1
        holds += [e - a for a, e, _, _ in spans(j)]
        code = (j.get("error") or {}).get("code")
        if j["state"] == "dead":
            rep.check(j["attempts"] == 3, "mixed_batch: %s dead after %d "
                      "attempts" % (j["id"], j["attempts"]))
        elif j["state"] == "failed":
            rep.check(code == "backend_5xx" and j["attempts"] >= 2,
                      "mixed_batch: %s failed (%s) after %d attempts"
                      % (j["id"], code, j["attempts"]))
        # (a retry also waits for the slot here: no upper bound)
        env.check_backoff(j, upper=False, figure=False)
    sp = sorted((a, e, j["id"]) for j in jobs for a, e, _, _ in spans(j))
    for (a1, e1, i1), (a2, e2, i2) in zip(sp, sp[1:]):
        rep.check(a2 >= e1 - 0.002, "mixed_batch: grants of %s and %s "
                  "overlap on one slot" % (i1, i2))
    per_job = {}
    for e in entries:
        txt = json.dumps(e.get("body_json"))
        for j in jobs:
            if j["payload"]["text"] in txt:
                per_job.setdefault(j["id"], []).append(e)
    ncalls = natt = 0
    for j in jobs:
        before = env.resends
        env.check_calls(j, per_job.get(j["id"], []), figure=False)
        resends += env.resends - before
        ncalls += len(per_job.get(j["id"], []))
        natt += j["attempts"]
    rep.check(ncalls == len(entries), "mixed_batch: %d backend calls, %d "
              "of them matched to jobs" % (len(entries), ncalls))
    rep.figure("fault.mixed_batch.calls", "%d for %d attempts" %
               (len(entries), natt), "(libcurl re-sends: %d)" % resends)
    rep.figure("fault.mixed_batch.states", ",".join(
        "%s=%d" % kv for kv in sorted(states.items())),
        "(%d jobs, %.1f s)" % (n, t_all))
    rep.figure("fault.mixed_batch.hold_max_s", max(holds),
               "s (bound %.2f)" % (T + TOL))
    rep.check(max(holds) <= T + TOL, "mixed_batch: a grant held the slot "
              "%.3f s" % max(holds))
    rep.check(sum(states.values()) == n and states.get("succeeded", 0) >= 8,
              "mixed_batch: states %r" % states)


# ---------------------------------------------------------------------------
# Scenarios: workers and lock holders that vanish.

def sc_worker_silent(env):
    """A worker leases and goes silent (no heartbeat): the lease expires at
    L, the job is requeued (lease_expired, attempt counted) and the next
    worker completes it."""
    env.gate()
    probe = env.probe()
    jid = env.submit("work", {"n": 1}, "succeeded")
    lz = parked_worker(env)
    env.open_gate()
    g = lz.get()
    t_free = probe.wait()
    # from the grant as the daemon recorded it (its expiry counts from
    # there; the client gets the reply only after the commit)
    env.slot_free(t_free - spans(env.d.job(jid))[0][0], L + TOL, L - EARLY)
    g2 = lease_body(env.d, "work")
    st, _ = env.d.lease_op(g2, "complete", result={"ok": 1})
    rep.check(st == 200, "worker_silent: complete: %s" % st)
    st, _ = env.d.lease_op(g, "complete", result={"late": 1})
    rep.check(st == 409, "worker_silent: the expired lease's token "
              "completed the job (%s)" % st)
    j = env.expect_job(jid, "succeeded", 2, None)
    rep.check(j["result"] == {"ok": 1}, "worker_silent: result %r"
              % j["result"])
    env.check_backoff(j)


def sc_worker_heartbeats_then_silent(env):
    """A worker heartbeats 3 times (every L/3), then goes silent: the lease
    lives until its last heartbeat + L, no longer and no shorter."""
    env.gate()
    probe = env.probe()
    jid = env.submit("work", {"n": 2}, "succeeded")
    lz = parked_worker(env)
    env.open_gate()
    g = lz.get()
    t_sent = t_hb = None
    for _ in range(3):
        time.sleep(L / 3)
        t_sent = time.time()
        st, body = env.d.lease_op(g, "heartbeat")
        rep.check(st == 200, "heartbeat: %s %r" % (st, body))
        t_hb = time.time()
    t_free = probe.wait()
    # measured from the last heartbeat's request; its reply must not come
    # later than L - EARLY before the expiry
    env.slot_free(t_free - t_sent, L + TOL)
    rep.check(t_free - t_hb >= L - EARLY, "worker_heartbeats_then_silent: "
              "the lease ended %.3f s after the last heartbeat's reply"
              % (t_free - t_hb))
    rep.figure("fault.worker_heartbeats_then_silent.lease_lived_s",
               t_free - lz.t, "s (3 heartbeats at L/3, then L)")
    g2 = lease_body(env.d, "work")
    env.d.lease_op(g2, "complete", result=2)
    j = env.expect_job(jid, "succeeded", 2, None)
    q = [h["detail"] for h in j["history"] if h["state"] == "queued"
         and h["detail"]]
    rep.check(q == [{"error": "lease_expired"}], "worker_heartbeats_then_"
              "silent: requeue details %r" % q)


def sc_worker_vanish_dead(env):
    """Two workers in a row vanish (max_attempts = 2): dead,
    lease_expired, each lease held for L."""
    env.gate()
    probe = env.probe()
    jid = env.submit("work", {"n": 3}, "dead")
    lz = parked_worker(env)
    env.open_gate()
    lz.get()
    t_free = probe.wait()
    env.slot_free(t_free - spans(env.d.job(jid))[0][0], L + TOL, L - EARLY)
    lease_body(env.d, "work", worker="w2")
    j = env.expect_job(jid, "dead", 2, "lease_expired")
    holds = [e - s for s, e, _, _ in spans(j)]
    rep.figure("fault.worker_vanish_dead.holds_s",
               ",".join("%.3f" % h for h in holds),
               "s (bound %.2f each)" % (L + TOL))
    rep.check(all(L - EARLY <= h <= L + TOL for h in holds),
              "worker_vanish_dead: lease holds %r" % holds)
    env.check_backoff(j)


def cli_heartbeated(lived):
    """gpuq heartbeats every L/3 and was killed about 0.6 s after its
    grant: the grant must have outlived L (at least one heartbeat)."""
    rep.check(lived >= L + L / 3 - EARLY, "the killed gpuq's grant lived "
              "%.3f s: no heartbeat extended it" % lived)


def sc_worker_cli_sigkill(env):
    """`gpuq worker` is SIGKILLed while its command runs: it heartbeated
    every L/3, so the lease expires within L of the kill (and lived past
    L: it was heartbeated); the job is requeued and another worker
    finishes it."""
    pidf = os.path.join(env.root, "cmd.pid")
    env.gate()
    probe = env.probe()
    jid = env.submit("work", {"n": 4}, "succeeded")
    proc = subprocess.Popen(
        [GPUQ, "--url", env.d.url, "worker", "--class", "work", "--once",
         "--wait", "10", "--", "sh", "-c",
         "echo $$ > %s; exec sleep 30" % pidf],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    env.procs.append(proc)
    env.pidfiles.append(pidf)
    try:
        wait_until(lambda: env.workers_waiting("work") == 1, 5, 0.01,
                   "gpuq worker to poll")
        env.open_gate()
        env.running(jid)
        wait_until(lambda: os.path.exists(pidf), 5, 0.01, "the command")
        time.sleep(0.6)          # past a heartbeat or two
        proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        proc.wait(5)
        t_free = probe.wait()
    finally:
        kill_pidfile(pidf)
    env.slot_free(t_free - t_kill, L + TOL)
    cli_heartbeated(t_free - spans(env.d.job(jid))[0][0])
    g2 = lease_body(env.d, "work")
    env.d.lease_op(g2, "complete", result=4)
    j = env.expect_job(jid, "succeeded", 2, None)
    env.check_backoff(j)


def sc_worker_cmd_killed(env):
    """The worker's command is SIGKILLed: `gpuq worker` reports fail
    (signal_9, retryable) at once, the slot is free at once, the job is
    retried and another worker finishes it."""
    pidf = os.path.join(env.root, "cmd.pid")
    env.gate()
    probe = env.probe()
    jid = env.submit("work", {"n": 5}, "succeeded")
    proc = subprocess.Popen(
        [GPUQ, "--url", env.d.url, "worker", "--class", "work", "--once",
         "--wait", "10", "--", "sh", "-c",
         "echo $$ > %s; exec sleep 30" % pidf],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    env.procs.append(proc)
    env.pidfiles.append(pidf)
    wait_until(lambda: env.workers_waiting("work") == 1, 5, 0.01,
               "gpuq worker to poll")
    env.open_gate()
    wait_until(lambda: os.path.exists(pidf) and os.path.getsize(pidf), 5,
               0.01, "the command")
    time.sleep(0.1)
    kill_pidfile(pidf)
    t_kill = time.time()
    t_free = probe.wait()
    env.slot_free(t_free - t_kill, AT_ONCE)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    g2 = lease_body(env.d, "work")
    env.d.lease_op(g2, "complete", result=5)
    j = env.expect_job(jid, "succeeded", 2, None)
    q = [h for h in j["history"] if h["state"] == "queued" and h["detail"]]
    rep.check(q and q[0]["detail"] == {"retryable": True},
              "worker_cmd_killed: requeue detail %r" % q)
    env.check_backoff(j)


def sc_worker_cmd_dataerr(env):
    """The worker's command exits 65 (EX_DATAERR): a non-retryable failure;
    the job fails at once (1 attempt), the slot is free at once."""
    env.gate()
    probe = env.probe()
    jid = env.submit("work", {"n": 7}, "failed")
    proc = subprocess.Popen(
        [GPUQ, "--url", env.d.url, "worker", "--class", "work", "--once",
         "--wait", "10", "--", "sh", "-c", "sleep 0.2; exit 65"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    env.procs.append(proc)
    wait_until(lambda: env.workers_waiting("work") == 1, 5, 0.01,
               "gpuq worker to poll")
    env.open_gate()
    t_free = probe.wait()
    j = env.expect_job(jid, "failed", 1, "exit_65")
    t_cmd_end = spans(j)[0][0] + 0.2
    env.slot_free(t_free - t_cmd_end, AT_ONCE)
    rep.check(j["history"][-1]["detail"] == {"retryable": False},
              "worker_cmd_dataerr: end detail %r" % j["history"][-1])
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def sc_lock_holder_silent(env):
    """A lock holder takes the GPU and disappears (no heartbeat, no
    release): the lock ends at L (failed, lease_expired)."""
    env.gate()
    probe = env.probe()
    out = {}

    def take():
        out["r"] = env.d.lock("lk", wait=10, holder="ghost")
        out["t"] = time.time()
    th = threading.Thread(target=take, daemon=True)
    th.start()
    wait_until(lambda: any(j["state"] == "queued"
                           for j in env.d.jobs("class=lk")), 5, 0.01,
               "the lock to wait")
    env.open_gate()
    th.join(10)
    st, body = out["r"]
    env.expect[body["job_id"]] = "failed"
    t_free = probe.wait()
    env.slot_free(t_free - spans(env.d.job(body["job_id"]))[0][0],
                  L + TOL, L - EARLY)
    env.expect_job(body["job_id"], "failed", 1, "lease_expired")
    st, _ = env.d.release(body)
    rep.check(st == 409, "lock_holder_silent: an expired lock released "
              "with %s" % st)


def sc_lock_cli_sigkill(env):
    """`gpuq lock` is SIGKILLed while its command runs: it heartbeated
    every L/3, so the lock ends within L of the kill."""
    pidf = os.path.join(env.root, "lock.pid")
    env.gate()
    probe = env.probe()
    proc = subprocess.Popen(
        [GPUQ, "--url", env.d.url, "lock", "lk", "--wait", "10", "--",
         "sh", "-c", "echo $$ > %s; exec sleep 30" % pidf],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    env.procs.append(proc)
    env.pidfiles.append(pidf)
    try:
        wait_until(lambda: env.d.jobs("class=lk"), 5, 0.01,
                   "gpuq lock to wait")
        env.open_gate()
        wait_until(lambda: os.path.exists(pidf) and os.path.getsize(pidf),
                   5, 0.01, "the command")
        time.sleep(0.6)
        proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        proc.wait(5)
        t_free = probe.wait()
    finally:
        kill_pidfile(pidf)
    env.slot_free(t_free - t_kill, L + TOL)
    lk = env.d.jobs("class=lk")[0]
    cli_heartbeated(t_free - spans(env.d.job(lk["id"]))[0][0])
    env.expect[lk["id"]] = "failed"
    env.expect_job(lk["id"], "failed", 1, "lease_expired")


def sc_lock_cli_cmd_fails(env):
    """`gpuq lock`'s command exits 3: the lock is released at once (the
    lock job succeeded) and gpuq exits 3."""
    env.gate()
    probe = env.probe()
    proc = subprocess.Popen(
        [GPUQ, "--url", env.d.url, "lock", "lk", "--wait", "10", "--",
         "sh", "-c", "sleep 0.3; exit 3"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    env.procs.append(proc)
    wait_until(lambda: env.d.jobs("class=lk"), 5, 0.01, "gpuq lock to wait")
    env.open_gate()
    rc = proc.wait(10)
    t_exit = time.time()
    t_free = probe.wait()
    # gpuq exits after its DELETE: measured from the lock's grant + 0.3 s
    lk = env.d.jobs("class=lk")[0]
    env.expect[lk["id"]] = "succeeded"
    j = env.expect_job(lk["id"], "succeeded", 1, None)
    t_cmd_end = spans(j)[0][0] + 0.3
    env.slot_free(t_free - t_cmd_end, AT_ONCE)
    rep.check(rc == 3, "lock_cli_cmd_fails: gpuq exited %s, not 3" % rc)
    rep.check(t_free <= t_exit + AT_ONCE, "lock_cli_cmd_fails: the slot "
              "was free %.3f s after gpuq exited" % (t_free - t_exit))


# ---------------------------------------------------------------------------
# Scenarios: clients that hang up.

def dropin_stream_hangup(env, path, body, needle, marker):
    env.fake.script(token_delay_s=0.1, tokens=100)
    env.gate()
    probe = env.probe()
    s = RawStream(env.d.port, "POST", path, body,
                  headers=[("X-Gpuq-Class", "chat1")])
    jid = wait_until(lambda: env.d.jobs("class=chat1"), 5, 0.01,
                     "the drop-in job")[0]["id"]
    env.expect[jid] = "cancelled"
    env.open_gate()
    s.read_until(needle)
    t_hang = s.hang_up()
    t_free = probe.wait()
    env.slot_free(t_free - t_hang, AT_ONCE)
    env.expect_job(jid, "cancelled", 1)
    wait_until(lambda: calls(env.fake, "/v1/chat/completions", marker)[0]
               ["client_disconnected"], 3, 0.05,
               "the backend call to be aborted")


def sc_dropin_stream_hangup(env):
    """An OpenAI streaming client (SSE) hangs up mid-answer: the job is
    cancelled, the backend call aborted, the slot free at once."""
    dropin_stream_hangup(env, "/v1/chat/completions", {
        "model": "tiny", "stream": True,
        "messages": [{"role": "user", "content": "hang up on me"}]},
        b"chat.completion.chunk", "hang up on me")


def sc_ollama_dropin_hangup(env):
    """An Ollama /api/chat client (NDJSON) hangs up mid-answer: cancelled,
    call aborted, slot free at once."""
    dropin_stream_hangup(env, "/api/chat", {
        "model": "tiny",
        "messages": [{"role": "user", "content": "ollama hang up"}]},
        b'"done":false', "ollama hang up")


def sc_dropin_plain_hangup(env):
    """A non-streamed chat client hangs up while its job runs (the backend
    still in its prompt phase): cancelled, slot free at once; a second
    client that hangs up while queued is cancelled at once and never
    reaches the backend."""
    env.fake.script(delay_s=5)
    env.gate()
    probe = env.probe()
    body = json.dumps({"model": "tiny", "stream": False, "messages": [
        {"role": "user", "content": "plain hang up"}]}).encode()
    sk = raw_post(env.d.port, "/v1/chat/completions", body,
                  headers=[("X-Gpuq-Class", "chat1")])
    jid = wait_until(lambda: env.d.jobs("class=chat1"), 5, 0.01,
                     "the drop-in job")[0]["id"]
    env.expect[jid] = "cancelled"
    sk2 = raw_post(env.d.port, "/v1/chat/completions",
                   body.replace(b"plain hang up", b"queued hang up"),
                   headers=[("X-Gpuq-Class", "chat1")])
    q = wait_until(lambda: [j for j in env.d.jobs("class=chat1")
                            if j["id"] != jid], 5, 0.01,
                   "the queued drop-in job")[0]["id"]
    env.expect[q] = "cancelled"
    t_q = hang_up(sk2)
    wait_until(lambda: env.d.job(q)["state"] == "cancelled", 3, 0.005,
               "the queued job to be cancelled")
    env.slot_free(time.time() - t_q, AT_ONCE, what="queued_cancel_s")
    env.open_gate()
    env.running(jid)
    wait_until(lambda: env.fake.busy()["busy"] > 0, 3, 0.02,
               "the call to reach the fake")
    t_hang = hang_up(sk)
    t_free = probe.wait()
    env.slot_free(t_free - t_hang, AT_ONCE)
    env.expect_job(jid, "cancelled", 1)
    rep.check(calls(env.fake, "/v1/chat/completions", "queued hang up")
              == [], "dropin_plain_hangup: the queued job reached the "
              "backend")
    env.expect_job(q, "cancelled", 0)


def sc_whisper_dropin_hangup(env):
    """A whisper.cpp /inference client hangs up while its chunk runs:
    cancelled, call aborted, slot free at once, upload deleted."""
    env.fake.script(per_audio_second_s=1.0)
    with open(env.wav("up.wav", 3.0), "rb") as f:
        data = f.read()
    ctype, body = fake_infer.encode_multipart(
        [("file", data, "a.wav", "audio/wav")])
    env.gate()
    probe = env.probe()
    sk = raw_post(env.d.port, "/inference", body, ctype)
    jid = wait_until(lambda: env.d.jobs("class=transcription"), 5, 0.01,
                     "the drop-in job")[0]["id"]
    env.expect[jid] = "cancelled"
    env.open_gate()
    wait_until(lambda: env.fake.busy()["busy"] > 0, 5, 0.02,
               "the chunk to reach the fake")
    t_hang = hang_up(sk)
    t_free = probe.wait()
    env.slot_free(t_free - t_hang, AT_ONCE)
    env.expect_job(jid, "cancelled", 1)
    up = os.path.join(env.d.data, "uploads")
    wait_until(lambda: not os.path.isdir(up) or os.listdir(up) == [], 2,
               0.05, "the upload to be deleted")


def sc_job_stream_hangup(env):
    """A GET /v1/jobs/{id}/stream listener hangs up mid-answer: that is not
    a cancel; the job streams on to the end, whole, and frees the slot at
    once when its call ends (not before)."""
    env.fake.script(token_delay_s=0.03, tokens=20)
    env.gate()
    probe = env.probe()
    jid = env.chat("listen then leave")
    s = RawStream(env.d.port, "GET", "/v1/jobs/%s/stream" % jid)
    time.sleep(0.05)
    env.open_gate()
    s.read_until(b"event: token")
    s.hang_up()
    t_free = probe.wait()
    j = env.final(jid)
    call = calls(env.fake, "/v1/chat/completions", "listen then leave")[0]
    rep.check(not call["client_disconnected"], "job_stream_hangup: the "
              "backend call was aborted")
    env.slot_free(t_free - call["t_end"], AT_ONCE,
                  -0.05, what="free_after_call_end_s")
    env.expect_job(jid, "succeeded", 1)
    rep.check(j["result"]["choices"][0]["message"]["content"] ==
              fake_infer.fake_text(20), "job_stream_hangup: text not whole")


def sc_lease_poll_hangup(env):
    """A worker's lease long-poll hangs up: the daemon forgets the waiter
    at once, and a job submitted then is not granted to the ghost (it
    waits, no_worker, attempts 0) until a live worker asks."""
    sk = raw_post(env.d.port, "/v1/leases", json.dumps(
        {"classes": ["work"], "wait": 30, "worker": "ghost"}).encode())
    wait_until(lambda: env.workers_waiting("work") == 1, 5, 0.01,
               "the poll to park")
    t_hang = hang_up(sk)
    wait_until(lambda: env.workers_waiting("work") == 0, 3, 0.005,
               "the poll to be forgotten")
    env.slot_free(time.time() - t_hang, AT_ONCE, what="waiter_gone_s")
    jid = env.submit("work", {"n": 6}, "succeeded")
    time.sleep(0.3)
    j = env.d.job(jid)
    rep.check(j["state"] == "queued" and j["attempts"] == 0 and
              j.get("reason") == "no_worker",
              "lease_poll_hangup: the job went to the gone worker: %s "
              "attempts %d reason %s" % (j["state"], j["attempts"],
                                         j.get("reason")))
    g = lease_body(env.d, "work")
    env.d.lease_op(g, "complete", result=6)
    env.expect_job(jid, "succeeded", 1)


def sc_lock_wait_hangup(env):
    """A lock waiter hangs up while queued: its lock job is cancelled at
    once and never granted; when the holder releases, the next live
    waiter gets the GPU at once."""
    env.gate()
    sk = raw_post(env.d.port, "/v1/locks", json.dumps(
        {"class": "lk", "wait": 30, "holder": "ghost"}).encode())
    ghost = wait_until(lambda: env.d.jobs("class=lk"), 5, 0.01,
                       "the lock to wait")[0]["id"]
    env.expect[ghost] = "cancelled"
    t_hang = hang_up(sk)
    wait_until(lambda: env.d.job(ghost)["state"] == "cancelled", 3, 0.005,
               "the waiting lock to be cancelled")
    env.slot_free(time.time() - t_hang, AT_ONCE, what="waiter_cancel_s")
    probe = env.probe()
    t_open = time.time()
    env.open_gate()
    t_free = probe.wait()
    env.slot_free(t_free - t_open, AT_ONCE)
    env.expect_job(ghost, "cancelled", 0)


# ---------------------------------------------------------------------------
# The table and the runner.

# name, function, needs: "fake" (a llama-flavor fake), "mini" (our server)
SCENARIOS = [
    ("refuse", sc_refuse, "fake"),
    ("hang", sc_hang, "fake"),
    ("slow_trickle_chat", sc_slow_trickle_chat, "fake"),
    ("slow_within_timeout", sc_slow_within_timeout, "fake"),
    ("reset_before_reply", sc_reset_before_reply, "fake"),
    ("reset_once", sc_reset_once, "fake"),
    ("reset_mid_stream", sc_reset_mid_stream, "fake"),
    ("close_no_reply_dead", sc_close_no_reply_dead, "fake"),
    ("garbage_first_event", sc_garbage_first_event, "fake"),
    ("garbage_mid_stream", sc_garbage_mid_stream, "fake"),
    ("500_once", sc_500_once, "fake"),
    ("500_repeated", sc_500_repeated, "fake"),
    ("503_loading", sc_503_loading, "fake"),
    ("4xx_fatal", sc_4xx_fatal, "mini"),
    ("429_retried", sc_429_retried, "mini"),
    ("not_http", sc_not_http, "mini"),
    ("breaker", sc_breaker, "fake",
     {"backend llm": {"breaker_failures": "2",
                      "breaker_cooldown": str(COOLDOWN)}}),
    ("whisper_hang_dead", sc_whisper_hang_dead, "fake"),
    ("whisper_slow", sc_whisper_slow, "fake"),
    ("whisper_reset_mid_body", sc_whisper_reset_mid_body, "fake"),
    ("whisper_garbage", sc_whisper_garbage, "fake"),
    ("whisper_503", sc_whisper_503, "fake"),
    ("whisper_killed_mid_chunk", sc_whisper_killed_mid_chunk, "fake",
     {"class transcription": {"backoff_base": "1", "backoff_max": "1"}}),
    ("summary_trickle", sc_summary_trickle, "fake"),
    ("mixed_batch", sc_mixed_batch, "fake"),
    ("worker_silent", sc_worker_silent, "fake"),
    ("worker_heartbeats_then_silent", sc_worker_heartbeats_then_silent,
     "fake"),
    ("worker_vanish_dead", sc_worker_vanish_dead, "fake"),
    ("worker_cli_sigkill", sc_worker_cli_sigkill, "fake"),
    ("worker_cmd_killed", sc_worker_cmd_killed, "fake"),
    ("worker_cmd_dataerr", sc_worker_cmd_dataerr, "fake"),
    ("lock_holder_silent", sc_lock_holder_silent, "fake"),
    ("lock_cli_sigkill", sc_lock_cli_sigkill, "fake"),
    ("lock_cli_cmd_fails", sc_lock_cli_cmd_fails, "fake"),
    ("dropin_stream_hangup", sc_dropin_stream_hangup, "fake"),
    ("ollama_dropin_hangup", sc_ollama_dropin_hangup, "fake"),
    ("dropin_plain_hangup", sc_dropin_plain_hangup, "fake"),
    ("whisper_dropin_hangup", sc_whisper_dropin_hangup, "fake"),
    ("job_stream_hangup", sc_job_stream_hangup, "fake"),
    ("lease_poll_hangup", sc_lease_poll_hangup, "fake"),
    ("lock_wait_hangup", sc_lock_wait_hangup, "fake"),
]


def run_one(name, fn, needs, changes):
    rep.log("scenario %s", name)
    n0 = len(rep.violations)
    tmp = tempfile.mkdtemp(prefix="gpuqfault-")
    root = os.path.join(tmp, "audio")
    os.mkdir(root)
    fake = FakeInfer("llama").start()
    mini = MiniBackend() if needs == "mini" else None
    env = None
    conf = sections(fake.port, root, mini.port if mini else None)
    for sec, keys in changes.items():
        conf.setdefault(sec, {}).update(keys)
    d = Daemon(render(conf))
    t0 = time.monotonic()
    try:
        d.start()
        env = Env(name, d, fake, mini, root)
        env.own, env.procs, env.pidfiles = [], [], []
        try:
            fn(env)
        except Exception as e:   # a scenario that cannot go on
            traceback.print_exc()
            rep.check(False, "%s: %s: %s" % (name, type(e).__name__, e))
        try:
            env.audit()
        except Exception as e:
            rep.check(False, "%s: audit: %s: %s" % (name, type(e).__name__,
                                                     e))
    finally:
        if env is not None:
            for p in env.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
            for pf in env.pidfiles:
                kill_pidfile(pf)
        if len(rep.violations) > n0:
            d.dump_log()
        try:
            if d.alive():
                d.stop()
        except AssertionError as e:
            rep.check(False, "%s: %s" % (name, e))
            d.dump_log()
        d._force_kill()
        d._cleanup(keep=len(rep.violations) > n0)
        for f in ([env.fake] + env.own if env else [fake]):
            f.stop()
        fake.stop()
        if mini:
            mini.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    global RESENDS
    RESENDS += env.resends if env else 0
    rep.log("scenario %s: %.1f s, %s", name, time.monotonic() - t0,
            "ok" if len(rep.violations) == n0 else
            "%d violations" % (len(rep.violations) - n0))


def main():
    global AT_ONCE, TOL, GAP_TOL, COMMIT_TOL
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--list", action="store_true", help="list scenarios")
    ap.add_argument("--tol-scale", type=float, default=1.0,
                    help="multiply the tolerances (a slow machine)")
    args = ap.parse_args()
    if args.list:
        for sc in SCENARIOS:
            print("%-30s %s" % (sc[0], " ".join(sc[1].__doc__.split())))
        return 0
    AT_ONCE *= args.tol_scale
    TOL *= args.tol_scale
    GAP_TOL *= args.tol_scale
    COMMIT_TOL *= args.tol_scale
    want = set(args.only.split(",")) if args.only else None
    if want:
        unknown = want - {sc[0] for sc in SCENARIOS}
        if unknown:
            print("unknown scenarios: %s" % ", ".join(sorted(unknown)))
            return 2
    n = 0
    for sc in SCENARIOS:
        name, fn, needs = sc[:3]
        if want and name not in want:
            continue
        run_one(name, fn, needs, sc[3] if len(sc) > 3 else {})
        n += 1
    rep.figure("fault.scenarios", n)
    rep.figure("fault.libcurl_resends", RESENDS,
               "(requests re-sent inside one grant; see reset_once)")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
