"""execfix - helpers for the built-in executor tests (test_exec_*.py) and
bench/chatwait.py: the scripted fake inference server (tests/fake/
fake_infer.py) as a child process, gpuqd configurations with backends,
test WAV files, streamed replies (SSE / NDJSON), job histories and
/metrics.  Python 3 standard library only; 127.0.0.1 only; every wait is
bounded.

    with FakeInfer() as fake, Daemon(exec_config(fake.port, root)) as d:
        fake.script(per_audio_second_s=0.1)
        ...
        fake.requests("/inference")
"""

import datetime
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave

from gpuqtest import (REPO, Daemon, GpuqTest, http_request, parse_json,
                      scaled, wait_until)

FAKE = os.path.join(REPO, "tests", "fake", "fake_infer.py")
sys.path.insert(0, os.path.dirname(FAKE))
import fake_infer  # noqa: E402  (fake_text, fake_token, WHISPER_SENTENCE)

FAKE_START_TIMEOUT = 10.0


# ---------------------------------------------------------------------------
# The fake inference server, as a child process.

class FakeInfer:
    """tests/fake/fake_infer.py on 127.0.0.1 port 0, driven through its
    control API (/_fake/...).  stop() sends SIGTERM."""

    def __init__(self, flavor="llama", script=None, port=0):
        self.flavor = flavor
        self.initial = script
        self.tmp = None
        self.proc = None
        self.port = None
        self.want_port = port   # 0: any free port; else this one again

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="gpuqfake-")
        pf = os.path.join(self.tmp, "port")
        cmd = [sys.executable, FAKE, "--port", str(self.want_port),
               "--port-file", pf,
               "--flavor", self.flavor]
        if self.initial:
            cmd += ["--script", json.dumps(self.initial)]
        self.log = os.path.join(self.tmp, "fake.log")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf)
        deadline = time.monotonic() + FAKE_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("fake_infer exited with %s: %s"
                                   % (self.proc.returncode, self._log()))
            try:
                with open(pf) as f:
                    m = re.match(r"^127\.0\.0\.1:(\d+)\s*$", f.read())
                if m:
                    self.port = int(m.group(1))
                    return self
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake_infer did not start")
            time.sleep(0.02)

    def _log(self):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def ctl(self, method, path, body=None):
        status, _, raw = http_request(self.port, method, path, body,
                                      timeout=10)
        out = parse_json(raw)
        if status != 200:
            raise AssertionError("fake %s %s: %d %r" % (method, path,
                                                        status, raw))
        return out

    def script(self, **kw):
        """Merges kw into the script (faults replaces the fault list)."""
        return self.ctl("POST", "/_fake/script", kw)

    def reset(self):
        return self.ctl("POST", "/_fake/reset", {})

    def requests(self, path=None):
        """The request log, oldest first (only `path` if given)."""
        q = "/_fake/requests"
        if path:
            q += "?path=" + path
        return self.ctl("GET", q)

    def busy(self):
        return self.ctl("GET", "/_fake/busy")

    def down(self, seconds):
        """Refuses new connections for `seconds` (the listener is closed;
        open keep-alive connections, e.g. gpuqd's, still work)."""
        return self.ctl("POST", "/_fake/down", {"seconds": seconds})

    def kill(self):
        """Stops the fake at once: its port refuses connections and every
        open connection is closed (see revive)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def revive(self, script=None):
        """A new fake on the same port (after kill); returns it."""
        self.stop()
        return FakeInfer(self.flavor, script, self.port).start()


def chat_requests(fake, marker=None):
    """The fake's /v1/chat/completions requests, those whose messages
    mention marker if given."""
    out = []
    for e in fake.requests("/v1/chat/completions"):
        if marker is None or marker in json.dumps(e.get("body_json")):
            out.append(e)
    return out


def user_prompt(entry):
    """The last user message of a logged chat request."""
    msgs = (entry.get("body_json") or {}).get("messages") or []
    for m in reversed(msgs):
        if m.get("role") == "user":
            return m.get("content")
    return None


# ---------------------------------------------------------------------------
# Configuration.

def exec_sections(port, audio_root, whisper_port=None):
    """The brief's executor configuration as an ordered dict of sections
    (each a dict of keys); tests change it and render it with ini()."""
    return {
        "server": {"drain_timeout": "2"},
        "backend whisper": {
            "type": "whisper-cpp",
            "url": "http://127.0.0.1:%d" % (whisper_port or port),
            "timeout": "10"},
        "backend llm": {
            "type": "openai", "url": "http://127.0.0.1:%d" % port,
            "model": "tiny", "max_concurrency": "1",
            "breaker_failures": "3", "breaker_cooldown": "1"},
        "class chatbot": {
            "priority": "10", "executor": "chat", "backend": "llm",
            "max_attempts": "1"},
        "class transcription": {
            "priority": "0", "weight": "70", "max_consecutive": "2",
            "executor": "transcribe", "backend": "whisper",
            "max_hold": "0.5", "audio_roots": audio_root,
            "backoff_base": "0.05", "backoff_max": "0.2"},
        "class summarization": {
            "priority": "0", "weight": "30", "max_consecutive": "1",
            "executor": "summarize", "backend": "llm",
            "backoff_base": "0.05", "backoff_max": "0.2"},
    }


def ini(sections):
    out = []
    for name, keys in sections.items():
        out.append("[%s]" % name)
        out.extend("%s = %s" % kv for kv in keys.items())
        out.append("")
    return "\n".join(out)


def exec_config(port, audio_root, **changes):
    """ini(exec_sections(...)) with changes: section name with spaces as
    underscores ("class_chatbot") -> dict of keys to set (None deletes)."""
    s = exec_sections(port, audio_root)
    for name, keys in changes.items():
        sec = s.setdefault(name.replace("_", " ", 1), {})
        for k, v in keys.items():
            if v is None:
                sec.pop(k, None)
            else:
                sec[k] = str(v)
    return ini(s)


# ---------------------------------------------------------------------------
# Audio.

def write_wav(path, seconds, rate=16000, channels=1, tone=400.0,
              gap_every=2.0, gap_len=0.3):
    """A 16-bit PCM WAV of a sine tone with a silent gap of gap_len seconds
    at the end of every gap_every seconds (places to cut).  Returns the
    number of frames."""
    one = []
    for i in range(rate):
        one.append(int(9000 * math.sin(2 * math.pi * tone * i / rate)))
    frames = int(round(seconds * rate))
    samples = [0] * frames
    for i in range(frames):
        t = (i % int(gap_every * rate)) / rate
        if t < gap_every - gap_len:
            samples[i] = one[i % rate]
    if channels > 1:
        samples = [s for s in samples for _ in range(channels)]
    data = struct.pack("<%dh" % len(samples), *samples)
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
    return frames


# ---------------------------------------------------------------------------
# Streamed replies.

class Stream:
    """One request whose reply is read line by line as it arrives (SSE,
    NDJSON).  Each line is kept with its arrival time (monotonic)."""

    def __init__(self, port, method, path, body=None, headers=None,
                 timeout=15):
        self.t_sent = time.monotonic()
        self.conn = http.client.HTTPConnection("127.0.0.1", port,
                                               timeout=scaled(timeout))
        data = json.dumps(body).encode() if body is not None else None
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=hdrs)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.lines = []       # (monotonic time, str)

    def readline(self):
        """The next line without its end, or None at the end of the
        reply."""
        raw = self.resp.readline()
        if not raw:
            return None
        line = raw.decode("utf-8").rstrip("\r\n")
        self.lines.append((time.monotonic(), line))
        return line

    def sse(self):
        """Yields (event, data text, arrival time) of each SSE event."""
        event, data = None, []
        while True:
            line = self.readline()
            if line is None:
                return
            if line == "":
                if data or event:
                    yield event, "\n".join(data), self.lines[-1][0]
                event, data = None, []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))

    def ndjson(self):
        """Yields (object, arrival time) of each NDJSON line."""
        while True:
            line = self.readline()
            if line is None:
                return
            if line.strip():
                yield json.loads(line), self.lines[-1][0]

    def body(self):
        return self.resp.read()

    def hang_up(self):
        """Closes the connection at once (the client goes away)."""
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.close()

    def close(self):
        try:
            self.resp.close()
        except OSError:
            pass
        self.conn.close()


# ---------------------------------------------------------------------------
# Histories, metrics, status.

def wall(at):
    """Epoch seconds of an RFC 3339 "...Z" time with milliseconds."""
    return datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def history(job):
    """[(epoch seconds, state, detail)] of a job fetched with GET."""
    return [(wall(h["at"]), h["state"], h["detail"])
            for h in job["history"]]


def grants(job):
    """[(start, end, how the grant ended)] from a job's history, in order;
    the end is None for a grant still running."""
    out = []
    cur = None
    for t, state, detail in history(job):
        if state == "running":
            cur = t
        elif cur is not None:
            out.append((cur, t, state if not (detail or {}).get("yield")
                        else "yield"))
            cur = None
    if cur is not None:
        out.append((cur, None, "running"))
    return out


METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def metrics(d):
    """/metrics as {(name, frozenset of (label, value)): float}."""
    status, _, raw = d.request_raw("GET", "/metrics")
    if status != 200:
        raise AssertionError("GET /metrics: %d" % status)
    out = {}
    for line in raw.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_RE.match(line)
        if not m:
            raise AssertionError("bad metrics line %r" % line)
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())))


def hist_buckets(ms, name, **labels):
    """[(upper bound, cumulative count)] of a histogram, in order."""
    out = []
    for (n, lab), v in ms.items():
        d = dict(lab)
        if n != name + "_bucket":
            continue
        le = d.pop("le")
        if d != labels:
            continue
        out.append((float("inf") if le == "+Inf" else float(le), v))
    return sorted(out)


def hist_quantile(ms, name, q, **labels):
    """The upper bound of the bucket holding quantile q (None: empty)."""
    b = hist_buckets(ms, name, **labels)
    if not b or b[-1][1] == 0:
        return None
    want = max(1, math.ceil(q * b[-1][1]))
    for le, cum in b:
        if cum >= want:
            return le
    return b[-1][0]


def backend(d, name):
    for b in d.status()["backends"]:
        if b["name"] == name:
            return b
    raise AssertionError("no backend %s in /v1/status" % name)


def percentile(values, q):
    """Nearest-rank percentile of values (q in 0..1)."""
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(math.ceil(q * len(v))) - 1))
    return v[k]


# ---------------------------------------------------------------------------
# A base class with a fake and an audio directory per test.

class ExecTest(GpuqTest):
    """setUp starts a fake (self.fake) and makes an audio root
    (self.root); both go away after the test."""

    flavor = "llama"

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="gpuqexec-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.root = os.path.join(self.tmp, "audio")
        os.mkdir(self.root)
        self.fake = FakeInfer(self.flavor).start()
        self.addCleanup(self.fake.stop)

    def daemon(self, **changes):
        return Daemon(exec_config(self.fake.port, self.root, **changes))

    def wav(self, name, seconds, **kw):
        path = os.path.join(self.root, name)
        write_wav(path, seconds, **kw)
        return path

    def chat(self, d, text, expect=201, **fields):
        body = {"messages": [{"role": "user", "content": text}]}
        body.update(fields)
        return d.submit("chatbot", expect=expect, payload=body)

    def wait_job(self, d, jid, states, timeout=10.0):
        return d.wait_state(jid, states, timeout=timeout)

    def finished(self, d, jid, state="succeeded", timeout=10.0):
        """Waits for the job to end and asserts its state; returns the job
        with its history."""
        from gpuqtest import TERMINAL
        self.wait_job(d, jid, TERMINAL, timeout)
        j = d.job(jid)
        self.assertEqual(j["state"], state, "job %s: %r" % (jid, j))
        return j

    def warm_whisper(self, d, seconds=2.0):
        """Runs one short transcription so the daemon has measured the
        backend's speed (its first chunk is sized by a guess); returns
        the number of /inference requests it made."""
        path = self.wav("warm-%d.wav" % int(time.monotonic() * 1e6),
                        seconds)
        j = d.submit("transcription", payload={"audio_path": path})
        self.finished(d, j["id"])
        wait_until(lambda: backend(d, "whisper")["s_per_audio_s"] > 0,
                   2.0, what="a measured whisper speed")
        return len(self.fake.requests("/inference"))
