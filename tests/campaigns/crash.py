#!/usr/bin/env python3
"""crash - the crash campaign (issue #5, doc/RELIABILITY.md).

One gpuqd on one data directory for the whole run, with two fake
inference servers (tests/fake/fake_infer.py: a whisper-server for a
chunked transcription class, a llama-server for a chat class), external
workers on two worker classes and a GPU-lock client, all driven at once by
load threads that keep their own books.  The main thread SIGKILLs gpuqd at
uniformly random moments (--kills, default 50), reads the store the dead
daemon left (a copy of gpuq.db and its WAL), restarts it on the same data
directory and checks, after every kill and at the end:

  - every acknowledged submit (a 2xx) is stored, with its class, payload
    and idempotency key; a submit whose reply was lost is retried with
    its key and resolves to one job;
  - every acknowledged completion is stored with the result sent, and no
    stored result ever changes afterwards (no overwrite);
  - fencing: grant tokens in the store's history grow strictly in commit
    order (so no two grants share one), the stored fence is never below
    a token handed out and never goes back, every grant a client got is
    in the history, and every token granted after a restart is above the
    fence the killed daemon left;
  - no two live grants: per job, a grant ends before the next begins;
    per GPU slot (one slot here), the stored grant intervals do not
    overlap, and neither do the intervals that clients proved live (a
    grant received .. a completion or release acknowledged); a completion
    with a stale token is refused;
  - a grant live at a kill ends with the restart's requeue, never lives
    on;
  - chunked transcription: the fake's log of /inference windows (frames),
    replayed against the progress stored at each kill, shows that a
    restart resumes at the stored offset (at most the chunk in flight is
    sent again, never one that was stored), and every transcription ends
    with a transcript covering its whole file without gaps.

Then a fault phase (gpuqd runs with --fault-injection): rounds of
POST /v1/admin/fault {"kind": "full"|"io", "after": N} under the same
load, then "none": refused requests must be 507 store_full / 503
store_failure JSON errors, gpuqd stays up (or exits cleanly and is
restarted) and keeps reading requests, nothing acknowledged is lost, and
work proceeds after "none" (a chat submitted then succeeds within 15 s,
so no slot is left held by a grant nobody runs).
Finally the load stops, the queue drains, gpuqd drains (exit 0) and the
store is checked once more: every acknowledged job is terminal.

    make crash-campaign [ARGS="--kills 50 --seed 1"]
    GPUQD=build/bin/gpuqd python3 tests/campaigns/crash.py --quick

Python 3 standard library only; 127.0.0.1 only; every wait is bounded.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

from common import Report, store_rows  # also puts tests/integration first

import execfix  # noqa: E402
import gpuqtest  # noqa: E402

RATE = 16000                 # gpuqd's audio rate (samples per second)
STATE_NAMES = ("queued", "running", "succeeded", "failed", "cancelled",
               "expired", "dead")
TERMINAL = set(gpuqtest.TERMINAL)
STORE_CODES = {507: ("store_full",), 503: ("store_failure",)}


def idnum(jid):
    return int(jid[1:])


def loads(text):
    return None if text is None else json.loads(text)


class Lost(Exception):
    """A request whose reply never came (connection refused or reset,
    timeout): its outcome is unknown."""

    def __init__(self, epoch, why=None):
        super().__init__("lost in epoch %d: %r" % (epoch, why))
        self.epoch = epoch


# ---------------------------------------------------------------------------
# Where gpuqd is now, shared by the load threads.

class Target:
    """The current daemon life (epoch) and its port.  The main thread
    sets a new epoch after each restart; a thread whose request was lost
    waits for the next one."""

    def __init__(self):
        self.cv = threading.Condition()
        self.epoch = -1
        self.port = None
        self.stop = threading.Event()      # the load stops
        self.ports = set()

    def set(self, epoch, port):
        with self.cv:
            self.epoch, self.port = epoch, port
            self.ports.add(port)
            self.cv.notify_all()

    def down(self):
        with self.cv:
            self.port = None

    def wait_change(self, epoch, timeout=1.0):
        with self.cv:
            self.cv.wait_for(lambda: self.epoch != epoch and
                             self.port is not None, timeout)

    def call(self, method, path, body=None, timeout=10):
        """(epoch, status, parsed JSON body); raises Lost."""
        with self.cv:
            epoch, port = self.epoch, self.port
        if port is None:
            self.wait_change(epoch, 0.5)
            raise Lost(epoch, "down")
        try:
            st, _, raw = gpuqtest.http_request(port, method, path, body,
                                               timeout=timeout)
        except (OSError, http.client.HTTPException) as e:
            raise Lost(epoch, e)
        return epoch, st, gpuqtest.parse_json(raw)


# ---------------------------------------------------------------------------
# The books the load threads keep.

class Books:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}          # job id -> {cls, payload, key, epoch, how}
        self.keys = {}           # idempotency key -> job id
        self.unknown_submits = 0
        self.resolved_existing = 0   # unknown, then 200 for the key
        self.resolved_new = 0        # unknown, then 201: was not stored
        self.grants = []         # {job, token, lease, cls, epoch, t, ...}
        self.completions = []    # acknowledged: {job, token, result, epoch}
        self.stale = 0           # 409 on complete/fail/yield/release
        self.late_ok = []        # overstayed a ttl-1 lease, still 200
        self.unknown_ends = []   # (grant, op) whose reply was lost
        self.intervals = []      # (t_from, t_to, what) proven live
        self.locks = []          # {job, token, lock, epoch, t, released}
        self.refused = {}        # (status, code) -> count
        self.unexpected = []     # (what, status, body)
        self.tx_jobs = {}        # job id -> (path, frames, prompt)
        self.faulting = False    # the fault phase is on

    def note_refused(self, what, st, body):
        code = ((body or {}).get("error") or {}).get("code") \
            if isinstance(body, dict) else None
        with self.lock:
            k = (st, code, what)
            self.refused[k] = self.refused.get(k, 0) + 1
            if code not in STORE_CODES.get(st, ()) or not self.faulting:
                self.unexpected.append((what, st, body))

    def note_unexpected(self, what, st, body):
        with self.lock:
            self.unexpected.append((what, st, body))


def is_store_refusal(st):
    return st in (503, 507)


# ---------------------------------------------------------------------------
# Load threads.

class Load(threading.Thread):
    def __init__(self, name, tgt, books, seed):
        super().__init__(daemon=True, name=name)
        self.tgt, self.b = tgt, books
        self.rng = random.Random(seed)
        self.errors = []

    def run(self):
        try:
            self.loop()
        except Exception:  # reported as a violation by main
            self.errors.append("%s: %s" % (self.name,
                                           traceback.format_exc()))

    def sleep(self, a, b=None):
        self.tgt.stop.wait(a if b is None else self.rng.uniform(a, b))

    def submit(self, cls, payload, key, priority=0):
        """Submits until the answer is known (or the load stops); returns
        the job id, or None.  A lost reply is retried with the same
        idempotency key: 200 then means it had been stored."""
        body = {"class": cls, "payload": payload, "idempotency_key": key,
                "priority": priority}
        unknown = False
        while not self.tgt.stop.is_set():
            try:
                epoch, st, reply = self.tgt.call("POST", "/v1/jobs", body)
            except Lost as e:
                if not unknown:
                    unknown = True
                    with self.b.lock:
                        self.b.unknown_submits += 1
                self.tgt.wait_change(e.epoch)
                continue
            if st in (200, 201):
                jid = reply["id"]
                with self.b.lock:
                    if unknown:
                        if st == 200:
                            self.b.resolved_existing += 1
                        else:
                            self.b.resolved_new += 1
                    if key in self.b.keys and self.b.keys[key] != jid:
                        self.b.unexpected.append(
                            ("submit %s: key gave a second id" % key, st,
                             reply))
                    if st == 200 and not unknown and key not in self.b.keys:
                        self.b.unexpected.append(
                            ("submit %s: 200 for a new key" % key, st,
                             reply))
                    self.b.keys[key] = jid
                    self.b.acked[jid] = {"cls": cls, "payload": payload,
                                         "key": key, "epoch": epoch,
                                         "status": st}
                if reply.get("payload") != payload:
                    self.b.note_unexpected("submit %s: payload echoed "
                                           "differently" % key, st, reply)
                return jid
            if st == 429:
                self.sleep(0.3, 0.6)
                continue
            if is_store_refusal(st):
                self.b.note_refused("submit", st, reply)
                self.sleep(0.05, 0.2)
                continue
            self.b.note_unexpected("submit %s" % key, st, reply)
            self.sleep(0.2)
        return None


class Submitter(Load):
    """Worker-class jobs, a few per second."""

    def __init__(self, n, *a):
        super().__init__("submitter%d" % n, *a)
        self.n = n

    def loop(self):
        k = 0
        while not self.tgt.stop.is_set():
            k += 1
            cls = self.rng.choice(("work", "work", "fast"))
            payload = {"s": self.n, "k": k,
                       "pad": "x" * self.rng.randint(0, 300)}
            self.submit(cls, payload, "sub%d-%d" % (self.n, k),
                        priority=self.rng.randint(-3, 3))
            self.sleep(0.2, 0.6)


class Chatter(Load):
    """Chat jobs through POST /v1/jobs (run by gpuqd on the fake llama)."""

    def loop(self):
        k = 0
        while not self.tgt.stop.is_set():
            k += 1
            payload = {"messages": [{"role": "user",
                                     "content": "crash chat %d" % k}],
                       "max_tokens": self.rng.randint(2, 8)}
            self.submit("chatbot", payload, "chat-%d" % k)
            self.sleep(0.3, 0.9)


class Transcriber(Load):
    """Keeps up to two transcriptions (chunked, on the fake whisper)
    going; each has its own prompt, which names it in the fake's log."""

    def __init__(self, files, *a):
        super().__init__("transcriber", *a)
        self.files = files

    def loop(self):
        k = 0
        open_jobs = []
        while not self.tgt.stop.is_set():
            still = []
            for jid in open_jobs:
                try:
                    _, st, j = self.tgt.call("GET", "/v1/jobs/" + jid)
                except Lost:
                    still.append(jid)
                    continue
                if st == 200 and j["state"] in TERMINAL:
                    continue
                still.append(jid)
            open_jobs = still
            if len(open_jobs) < 2:
                k += 1
                path, frames = self.rng.choice(self.files)
                prompt = "tx-%d" % k
                payload = {"audio_path": path, "prompt": prompt}
                jid = self.submit("transcription", payload, "tx-%d" % k)
                if jid:
                    with self.b.lock:
                        self.b.tx_jobs[jid] = (path, frames, prompt)
                    open_jobs.append(jid)
            self.sleep(0.3)


class WorkerT(Load):
    """An external worker on the worker classes: long-polls, then mostly
    completes (with a result unique to the grant), sometimes heartbeats,
    fails (retryable), yields, or overstays a 1 s lease without a
    heartbeat and tries to complete late."""

    def __init__(self, n, *a):
        super().__init__("worker%d" % n, *a)
        self.wname = "w%d" % n

    def op(self, g, op, **fields):
        """(status, body) of a lease op; raises Lost."""
        fields["token"] = g["token"]
        _, st, body = self.tgt.call(
            "POST", "/v1/leases/%s/%s" % (g["lease"], op), fields)
        return st, body

    def loop(self):
        while not self.tgt.stop.is_set():
            try:
                epoch, st, body = self.tgt.call(
                    "POST", "/v1/leases",
                    {"classes": ["work", "fast"], "wait": 1,
                     "worker": self.wname}, timeout=8)
            except Lost as e:
                self.tgt.wait_change(e.epoch)
                continue
            if st == 204:
                continue
            if st != 200:
                if is_store_refusal(st):
                    self.b.note_refused("lease", st, body)
                else:
                    self.b.note_unexpected("lease", st, body)
                self.sleep(0.1)
                continue
            g = {"job": body["job"]["id"], "token": body["token"],
                 "lease": body["lease_id"], "cls": body["job"]["class"],
                 "epoch": epoch, "t": time.time(), "end": None,
                 "slot": body["job"].get("slot"),
                 "faulting": self.b.faulting}
            with self.b.lock:
                self.b.grants.append(g)
            self.handle(g)

    def handle(self, g):
        r = self.rng.random()
        if g["cls"] == "fast" and r < 0.25:
            how = "overstay"
        elif r < 0.14:
            how = "fail"
        elif r < 0.20:
            how = "yield"
        else:
            how = "complete"
        try:
            if how == "overstay":
                # A zombie: no heartbeat past the 1 s ttl, then wait for
                # the job to be granted to someone else and complete
                # with the dead lease's token while the new one lives.
                self.sleep(1.05)
                end = time.monotonic() + 2.0
                while time.monotonic() < end and \
                        not self.tgt.stop.is_set():
                    _, st, j = self.tgt.call("GET", "/v1/jobs/" + g["job"])
                    if st != 200 or j["state"] in TERMINAL or \
                            (j["state"] == "running" and
                             j.get("lease_id") != g["lease"]):
                        break
                    time.sleep(0.01)
                if time.time() - g["t"] < 1.05:
                    how = "complete"   # cut short: the load stops
            else:
                self.sleep(0, 0.15)
                if self.rng.random() < 0.4:
                    st, body = self.op(g, "heartbeat")
                    if is_store_refusal(st):
                        # Answered with the turn's batch, which failed.
                        self.b.note_refused("heartbeat", st, body)
                    elif st not in (200, 409):
                        self.b.note_unexpected("heartbeat", st, body)
                    self.sleep(0, 0.1)
        except Lost:
            pass
        if how in ("complete", "overstay"):
            fields = {"result": {"w": self.wname, "tok": g["token"],
                                 "job": g["job"],
                                 "r": self.rng.randint(0, 1 << 30)}}
            op = "complete"
        elif how == "fail":
            fields = {"error": {"code": "flaky", "message": "crash"},
                      "retryable": True}
            op = "fail"
        else:
            fields = {"progress": {"step": self.rng.randint(1, 99)}}
            op = "yield"
        for attempt in range(8):
            t_sent = time.time()
            try:
                st, body = self.op(g, op, **fields)
            except Lost as e:
                g["end"] = "unknown"
                # Sent again once gpuqd answers: a grant of an earlier
                # life must be refused (409), whatever became of it.
                self.tgt.wait_change(e.epoch, 5.0)
                try:
                    epoch2, st2, body2 = self.tgt.call(
                        "POST", "/v1/leases/%s/%s" % (g["lease"], op),
                        dict(fields, token=g["token"]))
                except Lost:
                    epoch2, st2, body2 = None, None, None
                with self.b.lock:
                    self.b.unknown_ends.append((g, op, fields, epoch2, st2))
                    if st2 == 200 and epoch2 != g["epoch"]:
                        self.b.unexpected.append(
                            ("%s %s again with token %d of epoch %d, in "
                             "epoch %d" % (op, g["job"], g["token"],
                                           g["epoch"], epoch2), st2, body2))
                    elif st2 == 200 and op == "complete":
                        self.b.completions.append(
                            {"job": g["job"], "token": g["token"],
                             "result": fields["result"],
                             "epoch": g["epoch"], "overstay": False})
                return
            if st == 200:
                g["end"] = op
                with self.b.lock:
                    self.b.intervals.append((g["t"], t_sent,
                                             "%s %s tok %d" % (
                                                 op, g["job"], g["token"])))
                    if op == "complete":
                        self.b.completions.append(
                            {"job": g["job"], "token": g["token"],
                             "result": fields["result"],
                             "epoch": g["epoch"], "overstay":
                             how == "overstay"})
                        if how == "overstay":
                            self.b.late_ok.append(
                                (g["t"], t_sent, g["job"], g["token"],
                                 self.b.faulting or g.get("faulting")))
                    if body.get("id") != g["job"] or \
                            (op == "complete" and
                             body.get("result") != fields["result"]):
                        self.b.unexpected.append(
                            ("%s %s: reply" % (op, g["job"]), st, body))
                return
            if st == 409:
                g["end"] = "stale"
                with self.b.lock:
                    self.b.stale += 1
                return
            if is_store_refusal(st):
                # Nothing was changed: the grant is still live.
                self.b.note_refused(op, st, body)
                self.sleep(0.1, 0.3)
                try:
                    self.op(g, "heartbeat")
                except Lost:
                    pass
                continue
            self.b.note_unexpected(op, st, body)
            return
        g["end"] = "gave_up"


class Locker(Load):
    """A GPU-lock client: lock, hold briefly (a heartbeat now and then),
    release."""

    def loop(self):
        while not self.tgt.stop.is_set():
            try:
                epoch, st, body = self.tgt.call(
                    "POST", "/v1/locks",
                    {"class": "lockq", "holder": "L", "wait": 2},
                    timeout=8)
            except Lost as e:
                self.tgt.wait_change(e.epoch)
                continue
            if st == 408:
                continue
            if st != 200:
                if is_store_refusal(st):
                    self.b.note_refused("lock", st, body)
                else:
                    self.b.note_unexpected("lock", st, body)
                self.sleep(0.1)
                continue
            lk = {"job": body["job_id"], "token": body["token"],
                  "lock": body["lock_id"], "epoch": epoch, "t": time.time(),
                  "released": None}
            with self.b.lock:
                self.b.locks.append(lk)
                self.b.grants.append({"job": lk["job"], "token": lk["token"],
                                      "lease": lk["lock"], "cls": "lockq",
                                      "epoch": epoch, "t": lk["t"],
                                      "end": None, "slot": None})
            try:
                self.sleep(0.02, 0.2)
                if self.rng.random() < 0.3:
                    self.tgt.call("POST", "/v1/locks/%s/heartbeat"
                                  % lk["lock"], {"token": lk["token"]})
                for attempt in range(8):
                    t_sent = time.time()
                    _, st, body = self.tgt.call(
                        "DELETE", "/v1/locks/%s?token=%d"
                        % (lk["lock"], lk["token"]))
                    if st == 200:
                        lk["released"] = "ok"
                        with self.b.lock:
                            self.b.intervals.append(
                                (lk["t"], t_sent, "lock %s tok %d"
                                 % (lk["job"], lk["token"])))
                        break
                    if st == 409:
                        lk["released"] = "stale"
                        with self.b.lock:
                            self.b.stale += 1
                        break
                    if is_store_refusal(st):
                        self.b.note_refused("release", st, body)
                        self.sleep(0.1, 0.3)
                        continue
                    self.b.note_unexpected("release", st, body)
                    break
            except Lost:
                lk["released"] = "unknown"
            self.sleep(0.1, 0.5)


# ---------------------------------------------------------------------------
# The campaign.

class Campaign:
    def __init__(self, args):
        self.a = args
        self.rep = Report("crash")
        self.rng = random.Random(args.seed)
        self.tgt = Target()
        self.b = Books()
        self.threads = []
        self.epoch = 0
        self.kills = 0
        self.random_kills = 0
        self.healthy_ms = []
        self.snaps = []          # per kill: {t, fence, max_seq, tx, running}
        self.results_seen = {}   # job id -> result text, once succeeded
        self.fence_seen = 0
        self.fault_rounds = 0
        self.t_fault0 = self.t_fault1 = float("inf")
        self.fault_exits = 0
        self.canaries = 0
        self.unexpected_exits = 0
        self.api_checks = 0

    def log(self, *a):
        self.rep.log(*a)

    def check(self, ok, what):
        return self.rep.check(ok, what)

    # -- set-up -----------------------------------------------------------

    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix="gpuq-crash-")
        self.root = os.path.join(self.tmp, "audio")
        os.mkdir(self.root)
        self.files = []
        for name, secs in (("a17.wav", 17.0), ("a26.wav", 26.5),
                           ("a38.wav", 38.0)):
            path = os.path.join(self.root, name)
            frames = execfix.write_wav(path, secs)
            self.files.append((path, frames))
        self.whisper = execfix.FakeInfer(
            "whisper", script={"per_audio_second_s": 0.04,
                               "delay_s": 0.01}).start()
        self.llm = execfix.FakeInfer(
            "llama", script={"tokens": 8, "token_delay_s": 0.005,
                             "delay_s": 0.02}).start()
        s = execfix.exec_sections(self.llm.port, self.root,
                                  whisper_port=self.whisper.port)
        s.pop("class summarization")
        s["server"] = {"drain_timeout": "5"}
        s["gpu"] = {"slots": "1"}
        s["class chatbot"].update({"max_attempts": "20",
                                   "backoff_base": "0.05",
                                   "backoff_max": "0.2"})
        s["class transcription"].update({"max_hold": "0.15",
                                         "weight": "30",
                                         "max_attempts": "500"})
        common_cls = {"priority": "0", "max_attempts": "500",
                      "backoff_base": "0.05", "backoff_max": "0.2"}
        s["class work"] = dict(common_cls, weight="40", lease_ttl="2",
                               max_consecutive="3")
        s["class fast"] = dict(common_cls, weight="20", lease_ttl="1")
        s["class lockq"] = dict(common_cls, weight="10", lease_ttl="2")
        self.config = execfix.ini(s)
        self.d = gpuqtest.Daemon(self.config, args=["--fault-injection"])
        self.log("data directory %s", self.d.data)
        self.start_daemon()

    def start_daemon(self):
        t0 = time.monotonic()
        self.d.start()
        ms = (time.monotonic() - t0) * 1000
        if self.d.port in self.tgt.ports:
            self.log("note: port %d used by an earlier life", self.d.port)
        self.tgt.set(self.epoch, self.d.port)
        return ms

    def start_load(self):
        seed = self.rng.randrange(1 << 30)
        mk = []
        for n in range(2):
            mk.append(Submitter(n, self.tgt, self.b, seed + n))
        mk.append(Chatter("chatter", self.tgt, self.b, seed + 10))
        mk.append(Transcriber(self.files, self.tgt, self.b, seed + 11))
        for n in range(3):
            mk.append(WorkerT(n, self.tgt, self.b, seed + 20 + n))
        for n in range(2):
            mk.append(Locker("locker%d" % n, self.tgt, self.b,
                             seed + 30 + n))
        for t in mk:
            t.start()
        self.threads = mk

    # -- the store --------------------------------------------------------

    def snapshot_dir(self):
        """A copy of the store files as the dead daemon left them (the
        daemon's own files are not touched before its restart)."""
        snap = os.path.join(self.tmp, "snap")
        shutil.rmtree(snap, ignore_errors=True)
        os.mkdir(snap)
        for suffix in ("", "-wal"):
            src = os.path.join(self.d.data, "gpuq.db" + suffix)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(snap, "gpuq.db" + suffix))
        return snap

    def check_store(self, tag, data_dir):
        """Every store-level invariant, on a quiescent store (the daemon
        is dead or has exited).  Returns what the chunk replay and later
        checks need."""
        with self.b.lock:
            acked = dict(self.b.acked)
            completions = list(self.b.completions)
            grants = list(self.b.grants)
            locks = list(self.b.locks)
        rows = store_rows(data_dir,
                          "SELECT seq, cls, state, kind, attempts, token,"
                          " payload, result, progress, idem_key FROM jobs")
        events = store_rows(data_dir,
                            "SELECT id, seq, t_us, state, detail FROM"
                            " job_events ORDER BY id")
        fr = store_rows(data_dir, "SELECT val FROM meta WHERE key = 'fence'")
        fence = fr[0][0] if fr else 0
        jobs = {}
        for (seq, cls, state, kind, att, tok, payload, result, progress,
             key) in rows:
            jobs["j%d" % seq] = {
                "cls": cls, "state": STATE_NAMES[state], "kind": kind,
                "attempts": att, "token": tok, "payload": loads(payload),
                "result": result, "progress": loads(progress), "key": key}
        bad = 0

        def chk(ok, what):
            nonlocal bad
            if not self.check(ok, "%s: %s" % (tag, what)):
                bad += 1
            return ok

        # Acknowledged jobs, with what was sent.
        for jid, a in acked.items():
            j = jobs.get(jid)
            if not chk(j is not None, "acknowledged job %s (key %s) is "
                       "not stored" % (jid, a["key"])):
                continue
            chk(j["cls"] == a["cls"] and j["payload"] == a["payload"] and
                j["key"] == a["key"], "job %s stored as %r/%r/%r, "
                "acknowledged as %r/%r/%r" % (jid, j["cls"], j["payload"],
                                              j["key"], a["cls"],
                                              a["payload"], a["key"]))
        # Results: acknowledged ones stored, none ever changed.
        done_by = {}
        for c in completions:
            j = jobs.get(c["job"])
            chk(c["job"] not in done_by, "job %s completed twice: tokens "
                "%s and %s" % (c["job"], done_by.get(c["job"]), c["token"]))
            done_by[c["job"]] = c["token"]
            if chk(j is not None, "completed job %s not stored" % c["job"]):
                chk(j["state"] == "succeeded" and
                    loads(j["result"]) == c["result"],
                    "job %s: completion with token %d acknowledged with "
                    "%r, stored %s %r" % (c["job"], c["token"], c["result"],
                                          j["state"], j["result"]))
        for jid, j in jobs.items():
            if j["state"] != "succeeded":
                continue
            old = self.results_seen.get(jid)
            if old is None:
                self.results_seen[jid] = j["result"]
            else:
                chk(old == j["result"], "result of %s changed from %.200s "
                    "to %.200s" % (jid, old, j["result"]))
        # Fencing, and one live grant at a time.
        last_tok = 0
        running_toks = {}        # job -> set of tokens granted
        per_job = {}             # job -> [(state, t_us, detail)]
        for eid, seq, t_us, state, detail in events:
            jid = "j%d" % seq
            det = loads(detail) if detail else None
            per_job.setdefault(jid, []).append((state, t_us, det))
            if state == "running":
                tok = (det or {}).get("token")
                chk(isinstance(tok, int) and tok > last_tok,
                    "grant of %s (event %d) has token %r after %d: tokens "
                    "went backwards or repeat" % (jid, eid, tok, last_tok))
                if isinstance(tok, int):
                    last_tok = max(last_tok, tok)
                    running_toks.setdefault(jid, set()).add(tok)
        max_tok = last_tok
        for j in jobs.values():
            max_tok = max(max_tok, j["token"])
        chk(fence >= max_tok, "stored fence %d below a granted token %d"
            % (fence, max_tok))
        chk(fence >= self.fence_seen, "stored fence went back from %d to %d"
            % (self.fence_seen, fence))
        self.fence_seen = max(self.fence_seen, fence)
        if grants:
            top = max(g["token"] for g in grants)
            chk(fence >= top, "stored fence %d below the token %d a client "
                "got" % (fence, top))
        for g in grants:
            chk(g["token"] in running_toks.get(g["job"], ()),
                "grant %s token %d (epoch %d) answered but not in the "
                "history" % (g["job"], g["token"], g["epoch"]))
        intervals = []
        for jid, evs in per_job.items():
            for i, (state, t_us, det) in enumerate(evs):
                if state != "running":
                    continue
                if i + 1 < len(evs):
                    chk(evs[i + 1][0] != "running", "%s granted twice "
                        "without an end between: %r" % (
                            jid, [e[0] for e in evs]))
                    end = evs[i + 1][1]
                else:
                    end = None
                    chk(jobs.get(jid, {}).get("state") == "running",
                        "%s: last event is a grant but the job is %s"
                        % (jid, jobs.get(jid, {}).get("state")))
                intervals.append((t_us, end, (det or {}).get("slot"), jid,
                                  (det or {}).get("token")))
        by_slot = {}
        for iv in intervals:
            by_slot.setdefault(iv[2], []).append(iv)
        for slot, ivs in by_slot.items():
            ivs.sort(key=lambda iv: (iv[0], iv[4] or 0))
            last = None          # the interval that ends last so far
            for iv in ivs:
                if last is not None:
                    chk(last[1] is not None and iv[0] >= last[1],
                        "slot %s: grant %s tok %s [%s..%s] overlaps %s tok %s"
                        " from %s" % (slot, last[3], last[4], last[0],
                                      last[1], iv[3], iv[4], iv[0]))
                if last is None or (last[1] is not None and
                                    (iv[1] is None or iv[1] > last[1])):
                    last = iv
        # Locks released with 200 succeeded.
        for lk in locks:
            j = jobs.get(lk["job"])
            if chk(j is not None, "lock job %s not stored" % lk["job"]) and \
                    lk["released"] == "ok":
                chk(j["state"] == "succeeded", "lock %s released (200) but "
                    "stored %s" % (lk["job"], j["state"]))
        tx = {jid: (j["state"], j["progress"]) for jid, j in jobs.items()
              if j["cls"] == "transcription"}
        running = {jid: j["token"] for jid, j in jobs.items()
                   if j["state"] == "running"}
        max_seq = max((idnum(k) for k in jobs), default=0)
        return {"fence": fence, "max_seq": max_seq, "tx": tx,
                "running": running, "jobs": jobs, "per_job": per_job,
                "bad": bad}

    # -- checks through the API -------------------------------------------

    def check_api(self, tag, snap=None):
        """While the load runs: every job acknowledged so far is listed
        with its payload; no result differs from the one first seen; no
        grant that was live at the kill survived it."""
        with self.b.lock:
            acked = dict(self.b.acked)
        try:
            listed = {j["id"]: j for j in self.d.jobs()}
        except (AssertionError, OSError, http.client.HTTPException) as e:
            self.check(False, "%s: GET /v1/jobs failed: %r" % (tag, e))
            return
        self.api_checks += 1
        for jid, a in acked.items():
            j = listed.get(jid)
            if self.check(j is not None, "%s: acknowledged %s not listed"
                          % (tag, jid)):
                self.check(j["payload"] == a["payload"], "%s: %s payload %r"
                           % (tag, jid, j["payload"]))
        for jid, res in list(self.results_seen.items()):
            j = listed.get(jid)
            if self.check(j is not None, "%s: succeeded %s not listed"
                          % (tag, jid)):
                self.check(j["state"] == "succeeded" and
                           j["result"] == loads(res),
                           "%s: %s was succeeded with %.200s, now %s %.200r"
                           % (tag, jid, res, j["state"], j["result"]))
        if snap:
            for jid, tok in snap["running"].items():
                j = listed.get(jid)
                if j is None:
                    continue
                live = j.get("lease_id")
                self.check(not (j["state"] == "running" and live and
                                int(live.split(".")[1]) <= tok),
                           "%s: %s still holds the grant (token %d) it had "
                           "at the kill: %r" % (tag, jid, tok, live))

    # -- phases -----------------------------------------------------------

    def watch(self, seconds):
        """Sleeps, noticing a daemon that died by itself."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self.d.alive():
                return False
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        return True

    def kill_and_restart(self, tag, resync=False):
        t_kill = time.time()
        self.d.kill9()
        self.tgt.down()
        self.kills += 1
        snap = self.check_store(tag, self.snapshot_dir())
        snap["t"] = t_kill
        snap["resync"] = resync
        snap["epoch"] = self.epoch
        self.snaps.append(snap)
        self.epoch += 1
        ms = self.start_daemon()
        self.healthy_ms.append(ms)
        # Lighter than a store check, while the load runs again.
        self.check_api("%s restart" % tag, snap)
        return snap, ms

    def crash_phase(self):
        for k in range(self.a.kills):
            delay = self.rng.uniform(self.a.min_delay, self.a.max_delay)
            if not self.watch(delay):
                self.unexpected_exits += 1
                self.check(False, "gpuqd exited by itself (status %s) "
                           "before kill %d" % (self.d.proc.returncode,
                                               k + 1))
            snap, ms = self.kill_and_restart("kill %d" % (k + 1))
            self.random_kills += 1
            with self.b.lock:
                na, ng = len(self.b.acked), len(self.b.grants)
            self.log("kill %d after %.2fs: fence %d, %d jobs acked, %d "
                     "grants seen, healthy in %.0f ms", k + 1, delay,
                     snap["fence"], na, ng, ms)

    def fault(self, kind, after=None):
        body = {"kind": kind}
        if after is not None:
            body["after"] = after
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                st, _, reply = self.d.request("POST", "/v1/admin/fault",
                                              body, timeout=5)
            except (OSError, http.client.HTTPException, gpuqtest.DaemonError):
                if not self.d.alive():
                    return False
                time.sleep(0.1)
                continue
            return self.check(st in (200, 202, 204), "fault %s: %d %r"
                              % (kind, st, reply))
        return False

    def canary(self, tag):
        """After "none", GPU work goes on: a chat submitted now (the top
        tier) is acknowledged and succeeds within 15 s."""
        key = "canary-" + tag
        payload = {"messages": [{"role": "user", "content": key}],
                   "max_tokens": 2}
        deadline = time.monotonic() + 15
        jid = None
        while time.monotonic() < deadline and jid is None:
            try:
                st, _, body = self.d.request(
                    "POST", "/v1/jobs", {"class": "chatbot",
                                         "payload": payload,
                                         "idempotency_key": key})
            except (OSError, http.client.HTTPException):
                st = None
            if st in (200, 201):
                jid = body["id"]
                with self.b.lock:
                    self.b.keys[key] = jid
                    self.b.acked[jid] = {"cls": "chatbot",
                                         "payload": payload, "key": key,
                                         "epoch": self.epoch, "status": st}
            else:
                time.sleep(0.2)
        if not self.check(jid is not None, "%s: no submit acknowledged "
                          "within 15 s after the fault was lifted" % tag):
            return False
        left = max(1, int(deadline - time.monotonic()) + 1)
        try:
            st, _, job = self.d.request("GET", "/v1/jobs/%s?wait=%d"
                                        % (jid, left), timeout=left + 5)
        except (OSError, http.client.HTTPException) as e:
            st, job = None, repr(e)
        ok = st == 200 and job["state"] == "succeeded"
        if ok:
            self.canaries += 1
            return True
        status = None
        try:
            status = self.d.status()["slots"]
        except (AssertionError, OSError, http.client.HTTPException):
            pass
        return self.check(False, "%s: a chat submitted after the fault "
                          "was lifted did not succeed within 15 s: %s %.300r;"
                          " slots %r" % (tag, st, job, status))

    def fault_phase(self):
        self.b.faulting = True
        self.t_fault0 = time.time()
        for r in range(self.a.fault_rounds):
            tag = "fault %d" % (r + 1)
            self.watch(self.rng.uniform(0.3, 1.0))
            kind = ("full", "io")[r % 2]
            after = self.rng.randint(0, 40)
            if self.d.alive() and self.fault(kind, after):
                self.fault_rounds += 1
                self.log("%s: %s after %d writes", tag, kind, after)
            alive = self.watch(self.rng.uniform(0.5, 1.5))
            if alive and not self.fault("none") and self.d.alive():
                self.check(False, "%s: gpuqd did not answer POST "
                           "/v1/admin/fault none within 15 s (kept "
                           "failing its commits without reading "
                           "requests?); killed" % tag)
                self.d.kill9()
            if not self.d.alive():
                rc = self.d.proc.wait(timeout=10)
                self.fault_exits += 1
                self.log("%s: gpuqd exited with status %s", tag, rc)
                self.check(rc is not None and (rc >= 0 or rc == -9),
                           "%s: gpuqd died of signal %d under a store fault"
                           % (tag, -rc))
                self.tgt.down()
                self.epoch += 1
                self.healthy_ms.append(self.start_daemon())
            self.watch(0.3)
            self.canary("r%d" % (r + 1))
            self.check_api(tag)
        self.b.faulting = False
        self.t_fault1 = time.time()
        # One more kill, to read the store after the faults; chunk replay
        # starts afresh from what it holds.
        self.kill_and_restart("after faults", resync=True)

    def drain_phase(self):
        self.tgt.stop.set()
        self.log("load stopped; waiting for the queue to empty")
        for t in self.threads:
            if isinstance(t, (Submitter, Chatter, Transcriber)):
                t.join(30)
        # Workers and the lock client stopped with the rest: run a worker
        # pool again until every acknowledged job is terminal.
        stop2 = threading.Event()
        drainers = []

        def drainer(n):
            while not stop2.is_set():
                try:
                    st, body = self.d.lease(["work", "fast"], wait=1,
                                            worker="drain%d" % n)
                except (OSError, http.client.HTTPException):
                    time.sleep(0.1)
                    continue
                if st == 200:
                    res = {"w": "drain%d" % n, "tok": body["token"],
                           "job": body["job"]["id"]}
                    with self.b.lock:
                        self.b.grants.append(
                            {"job": body["job"]["id"],
                             "token": body["token"],
                             "lease": body["lease_id"],
                             "cls": body["job"]["class"],
                             "epoch": self.epoch, "t": time.time(),
                             "end": None, "slot": None})
                    st2, b2 = self.d.lease_op(body, "complete", result=res)
                    if st2 == 200:
                        with self.b.lock:
                            self.b.completions.append(
                                {"job": body["job"]["id"],
                                 "token": body["token"], "result": res,
                                 "epoch": self.epoch, "overstay": False})
        for t in self.threads:
            t.join(15)
            if t.is_alive():
                self.check(False, "load thread %s did not stop" % t.name)
        for n in range(2):
            th = threading.Thread(target=drainer, args=(n,), daemon=True)
            th.start()
            drainers.append(th)
        deadline = time.monotonic() + self.a.drain_wait
        left = None
        while time.monotonic() < deadline:
            with self.b.lock:
                acked = set(self.b.acked)
            jobs = {j["id"]: j for j in self.d.jobs()}
            left = sorted((jid for jid in acked
                           if jobs[jid]["state"] not in TERMINAL), key=idnum)
            if not left:
                break
            time.sleep(1.0)
        stop2.set()
        for th in drainers:
            th.join(10)
        if left:
            jobs = {j["id"]: j for j in self.d.jobs()}
            self.check(False, "%d acknowledged jobs not terminal after the "
                       "load stopped: %s" % (
                           len(left), ", ".join(
                               "%s %s %s" % (jid, jobs[jid]["state"],
                                             jobs[jid].get("reason"))
                               for jid in left[:10])))
        st, _, body = self.d.request("POST", "/v1/admin/drain", {})
        self.check(st == 202, "drain: %d %r" % (st, body))
        rc = self.d.wait_exit(timeout=20)
        self.check(rc == 0, "gpuqd exited with %s after the drain" % rc)
        self.tgt.down()

    # -- final checks -----------------------------------------------------

    def final_checks(self):
        snap = self.check_store("final", self.d.data)
        jobs = snap["jobs"]
        per_job = snap["per_job"]
        with self.b.lock:
            acked = dict(self.b.acked)
            grants = list(self.b.grants)
            intervals = list(self.b.intervals)
            unknown_ends = list(self.b.unknown_ends)
        states = {}
        for jid, a in acked.items():
            j = jobs.get(jid)
            if j is None:
                continue
            states[(a["cls"], j["state"])] = \
                states.get((a["cls"], j["state"]), 0) + 1
            self.check(j["state"] in TERMINAL, "final: acknowledged %s is "
                       "%s" % (jid, j["state"]))
            if a["cls"] in ("work", "fast"):
                self.check(j["state"] == "succeeded", "final: %s %s is %s"
                           % (a["cls"], jid, j["state"]))
        self.log("final states: %s", ", ".join(
            "%s %s %d" % (c, s, n) for (c, s), n in sorted(states.items())))
        # A completion acknowledged used the job's last grant.
        for c in self.b.completions:
            toks = [d["token"] for s, _, d in per_job.get(c["job"], [])
                    if s == "running"]
            self.check(toks and toks[-1] == c["token"],
                       "final: %s completed with token %d, its grants %r"
                       % (c["job"], c["token"], toks))
        # A completion whose reply was lost, sent again after the restart
        # with the token of the dead daemon's grant, must not succeed.
        # (Done here, with gpuqd stopped: only the history can tell.)
        for g, op, fields, epoch, st in unknown_ends:
            evs = per_job.get(g["job"], [])
            toks = [d["token"] for s, _, d in evs if s == "running"]
            self.check(g["token"] in toks, "final: lost %s of %s: token %d "
                       "not in history" % (op, g["job"], g["token"]))
        # Grants live at a kill ended at the restart, with a requeue (or
        # the end of a lock).
        restarts_checked = 0
        for snap_k in self.snaps:
            for jid, tok in snap_k["running"].items():
                evs = per_job.get(jid, [])
                idx = [i for i, (s, _, d) in enumerate(evs)
                       if s == "running" and d.get("token") == tok]
                if not self.check(idx, "final: %s grant %d (live at a kill) "
                                  "not in history" % (jid, tok)):
                    continue
                i = idx[0]
                nxt = evs[i + 1] if i + 1 < len(evs) else None
                self.check(nxt is not None and (nxt[2] or {}).get("restart"),
                           "final: %s grant %d live at a kill ended by %r, "
                           "not by the restart" % (jid, tok, nxt))
                restarts_checked += 1
        self.restarts_checked = restarts_checked
        # Tokens after each restart are above the fence the dead daemon
        # left; ids acknowledged after it are above every stored id.
        for k, s in enumerate(self.snaps):
            later = [g["token"] for g in grants if g["epoch"] > s["epoch"]]
            if later:
                self.check(min(later) > s["fence"], "final: a grant after "
                           "kill %d has token %d, not above the fence %d"
                           % (k + 1, min(later), s["fence"]))
            new_ids = [idnum(jid) for jid, a in acked.items()
                       if a["epoch"] > s["epoch"] and a["status"] == 201]
            if new_ids:
                self.check(min(new_ids) > s["max_seq"], "final: job id j%d "
                           "created after kill %d is not above j%d"
                           % (min(new_ids), k + 1, s["max_seq"]))
        # Intervals clients proved live never overlap (one GPU slot).
        iv = sorted(intervals)
        for a, b in zip(iv, iv[1:]):
            self.check(b[0] >= a[1] - 0.0005, "final: two grants live at "
                       "once: %s [%.3f..%.3f] and %s [%.3f..%.3f]"
                       % (a[2], a[0], a[1], b[2], b[0], b[1]))
        self.check_transcripts(jobs)
        return snap

    def check_transcripts(self, jobs):
        """Replays the fake whisper's log of windows per job against the
        progress stored at each kill."""
        reqs = self.whisper.requests("/inference")
        by_prompt = {}
        for r in reqs:
            p = (r.get("form") or {}).get("prompt")
            by_prompt.setdefault(p, []).append(r)
        self.resumptions = 0
        self.tx_done = 0
        self.tx_chunks = 0
        self.tx_resent = 0
        self.tx_aborted = 0
        for jid, (path, frames, prompt) in sorted(self.b.tx_jobs.items(),
                                                   key=lambda kv:
                                                   idnum(kv[0])):
            evs = [(r["t_start"], 0, r) for r in by_prompt.get(prompt, [])]
            evs += [(s["t"], 1, s) for s in self.snaps]
            evs.sort(key=lambda e: (e[0], e[1]))
            pos = 0             # where the next window starts
            pending = None      # start of the last window sent and answered
            chunks = 0
            ok = True
            for t, kind, e in evs:
                if kind == 0 and self.t_fault0 <= t < self.t_fault1:
                    # Store faults may make gpuqd send a window again
                    # without a kill; the snapshot after the fault phase
                    # resynchronises.
                    continue
                if kind == 0:
                    f = (e.get("audio") or {}).get("frames", 0)
                    good = e.get("status") == 200 and e.get("completed")
                    self.tx_chunks += 1
                    if good:
                        pending = (pos, chunks)
                        pos += f
                        chunks += 1
                    else:
                        pending = None
                        self.tx_aborted += 1
                    if not self.check(pos <= frames, "%s: windows sent add "
                                      "up to %d frames, over the file's %d "
                                      "(a stored window sent again)"
                                      % (jid, pos, frames)):
                        ok = False
                        break
                    continue
                st = e["tx"].get(jid)
                if st is None:
                    self.check(pos == 0, "%s: windows sent before it was "
                               "stored" % jid)
                    continue
                state, prog = st
                stored = (prog or {}).get("offset", 0) or 0
                sdone = (prog or {}).get("chunks_done", 0) or 0
                if e["resync"]:
                    pos, chunks, pending = stored, sdone, None
                    if state == "succeeded":
                        pos = frames
                    continue
                if state == "succeeded":
                    self.check(pos == frames, "%s: succeeded at kill with "
                               "windows up to %d of %d frames"
                               % (jid, pos, frames))
                    pending = None
                    continue
                if state in TERMINAL:
                    continue
                if pos > 0 or stored > 0:
                    self.resumptions += 1
                if stored == pos:
                    pending = None
                    self.check(prog is None or sdone == chunks,
                               "%s: %d chunks done stored, %d replayed"
                               % (jid, sdone, chunks))
                elif pending is not None and stored == pending[0]:
                    # The last window was answered, not yet stored: it is
                    # the chunk in flight and is done again.
                    self.tx_resent += 1
                    pos, chunks = pending
                    pending = None
                else:
                    self.check(False, "%s: at a kill the store has offset %d "
                               "(%d chunks), the windows sent end at %d, the "
                               "last one starts at %s: more than the chunk in "
                               "flight lost, or a window skipped"
                               % (jid, stored, sdone, pos,
                                  pending and pending[0]))
                    ok = False
                    break
            j = jobs.get(jid)
            if j is None or not ok:
                continue
            if j["state"] != "succeeded":
                self.check(j["state"] in TERMINAL,
                           "%s transcription %s at the end" % (jid,
                                                               j["state"]))
                continue
            self.tx_done += 1
            self.check(pos == frames, "%s: succeeded, but windows sent end "
                       "at %d of %d frames" % (jid, pos, frames))
            res = loads(j["result"])
            segs = res.get("segments") or []
            total = frames / RATE
            good = bool(segs) and abs(segs[0]["start"]) < 0.011 and \
                abs(segs[-1]["end"] - total) < 0.02 and \
                abs(res.get("duration", 0) - total) < 0.02
            for a, b in zip(segs, segs[1:]):
                if abs(a["end"] - b["start"]) > 0.011 or \
                        b["start"] <= a["start"]:
                    good = False
            words = " ".join("".join(s["text"] for s in segs).split())
            good = good and " ".join(res.get("text", "").split()) == words
            self.check(good, "%s: transcript does not cover 0..%.3f s "
                       "without gaps: %.300r" % (jid, total, res))

    # -- the whole run ----------------------------------------------------

    def run(self):
        print("crash campaign: seed %d, %d kills, delays %.1f..%.1f s, %d "
              "fault rounds" % (self.a.seed, self.a.kills, self.a.min_delay,
                                self.a.max_delay, self.a.fault_rounds),
              flush=True)
        try:
            self.setup()
            self.phases()
            self.verdicts()
            self.report()
        finally:
            self.tgt.stop.set()
            self.teardown()
        return self.rep.finish()

    def phases(self):
        try:
            self.start_load()
            self.crash_phase()
            self.fault_phase()
            self.drain_phase()
            self.final_checks()
            # One more start: the API shows what the store holds.
            self.epoch += 1
            self.start_daemon()
            listed = {j["id"]: j for j in self.d.jobs()}
            for jid, res in self.results_seen.items():
                j = listed.get(jid)
                self.check(j is not None and j["result"] == loads(res),
                           "after the last start: %s result differs" % jid)
            self.d.stop()
        except Exception:
            self.check(False, "the campaign stopped: %s"
                       % traceback.format_exc())
        finally:
            self.tgt.stop.set()

    def verdicts(self):
        """What the load threads saw."""
        for t in self.threads:
            for e in t.errors:
                self.check(False, "load thread failed: %s" % e)
        # A store failure rebuilds gpuqd's memory from the store, where
        # lease expiry times are not kept: a live grant gets a fresh ttl
        # then, so a late completion in the fault phase is allowed (it is
        # still the only live grant).
        late = [x for x in self.b.late_ok if not x[4]]
        self.check(not late, "completions accepted from workers that let "
                   "a 1 s lease lapse, without a store fault: %r" % late)
        for what, st, body in self.b.unexpected:
            self.check(False, "unexpected answer to %s: %s %.300r"
                       % (what, st, body))

    def report(self):
        b = self.b
        f = self.rep.figure
        f("crash.seed", self.a.seed)
        f("crash.kills", self.random_kills)
        f("crash.kills_total", self.kills)
        if self.healthy_ms:
            f("crash.restart_to_healthy_p50",
              execfix.percentile(self.healthy_ms, 0.5), "ms")
            f("crash.restart_to_healthy_max", max(self.healthy_ms), "ms")
        f("crash.jobs_acknowledged", len(b.acked))
        f("crash.submits_unknown", b.unknown_submits)
        f("crash.unknown_resolved_stored", b.resolved_existing)
        f("crash.unknown_resolved_not_stored", b.resolved_new)
        f("crash.grants_observed", len(b.grants))
        f("crash.completions_acknowledged", len(b.completions))
        f("crash.stale_tokens_refused", b.stale)
        f("crash.late_completions_accepted", len(b.late_ok))
        f("crash.live_grants_at_kill_checked",
          getattr(self, "restarts_checked", 0))
        f("crash.transcriptions_completed", getattr(self, "tx_done", 0))
        f("crash.transcription_windows", getattr(self, "tx_chunks", 0))
        f("crash.chunk_resumptions_checked", getattr(self, "resumptions", 0))
        f("crash.windows_cut_off", getattr(self, "tx_aborted", 0))
        f("crash.windows_answered_not_stored",
          getattr(self, "tx_resent", 0))
        f("crash.lost_replies_to_complete_fail_yield", len(b.unknown_ends))
        f("crash.lost_ends_refused_after_restart",
          sum(1 for e in b.unknown_ends if e[4] == 409))
        f("crash.faults_injected", self.fault_rounds)
        if b.refused:
            self.log("refused: %s", ", ".join(
                "%s %d %s x%d" % (w, s, c, n)
                for (s, c, w), n in sorted(b.refused.items(),
                                           key=lambda kv: str(kv[0]))))
        f("crash.refused_507", sum(n for (s, _, _), n in b.refused.items()
                                   if s == 507))
        f("crash.refused_503", sum(n for (s, _, _), n in b.refused.items()
                                   if s == 503))
        f("crash.chats_after_faults_ok", self.canaries)
        f("crash.fault_exits", self.fault_exits)
        f("crash.api_checks", self.api_checks)
        f("crash.violations", len(self.rep.violations))

    def teardown(self):
        """Stops what the campaign started; keeps the directories when an
        invariant broke (or with --keep)."""
        d = getattr(self, "d", None)
        if d is not None and d.alive():
            d._force_kill()
        for fake in (getattr(self, "whisper", None),
                     getattr(self, "llm", None)):
            if fake:
                fake.stop()
        keep = self.a.keep or bool(self.rep.violations)
        try:
            if d is not None and self.rep.violations:
                d.dump_log()
            if keep:
                print("kept %s and %s" % (d.tmp if d else None,
                                          getattr(self, "tmp", None)),
                      flush=True)
        finally:
            if not keep:
                if d is not None:
                    shutil.rmtree(d.tmp, ignore_errors=True)
                if getattr(self, "tmp", None):
                    shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--min-delay", type=float, default=0.2)
    ap.add_argument("--max-delay", type=float, default=2.5)
    ap.add_argument("--fault-rounds", type=int, default=8)
    ap.add_argument("--drain-wait", type=float, default=120.0,
                    help="seconds for the queue to empty at the end")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 5 kills, 2 fault rounds")
    ap.add_argument("--keep", action="store_true",
                    help="keep the data directory")
    a = ap.parse_args(argv)
    if a.quick:
        a.kills, a.fault_rounds = 5, 2
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    # SIGTERM and SIGHUP unwind like Ctrl-C: gpuqd and the fakes stop.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    return Campaign(a).run()


if __name__ == "__main__":
    sys.exit(main())
