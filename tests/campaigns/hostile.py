#!/usr/bin/env python3
"""hostile - the hostile-input campaign (issue #5, doc/RELIABILITY.md).

One gpuqd with API tokens, built-in executors whose backends are not
there, a worker class with a live lease and a held lock, and an audio
root holding a real WAV file, a symlink that leads out of it and one to
/etc.  It is seeded with jobs; then every hostile request of the table
below is sent over a raw socket (http.client cannot send malformed
requests), and for each:

- the answer is a 4xx or 503 with a JSON error body naming the field
  where there is one (libevent's own plain replies are allowed where
  the case says so), or the connection is closed;
- the store is unchanged (common.store_digest: every table);
- /healthz still answers, and the daemon is alive.

Then the connection storms, on the same daemon:

- slowloris: connections that send their headers (or body) one byte per
  second are closed after request_timeout, while other requests are
  still served;
- 10,000 idle connections (fewer with --quick): /healthz latency and RSS
  while they are open; fds and RSS after;
- the daemon's file descriptors limited (RLIMIT_NOFILE lowered on the
  running daemon): accept() fails with EMFILE; the daemon must not spin
  (CPU time measured) and must recover once connections close;
- event streams that never read (tiny SO_RCVBUF), twice: with the
  configured request_timeout the daemon closes them when their output
  makes no progress for that long; with request_timeout raised to 120 s
  (a SIGHUP reload) it must drop them at their 1 MiB backlog
  (gpuq_connections_closed_total{reason="slow_reader"}); either way RSS
  stays bounded.

For the idle storm, request_timeout is raised to 120 s by a reload too
(opening 10,000 connections from Python takes longer than 6 s); without
--quick the storm is run twice, and the second must not grow RSS.  RSS
and fds are compared between the start (after seeding) and the end
(after the daemon's 10 s malloc_trim check): fds back to the start,
RSS within +32 MiB (the bounds are reported, not enforced, under ASan).
Figures are printed as "figure: NAME = VALUE UNIT" lines.  About 2
minutes; --quick about 70 s.

    python3 tests/campaigns/hostile.py [--quick] [--list] [--only SUBSTR]
        [--skip-storms] [--conns N] [--verbose]

Python 3 standard library only; 127.0.0.1 only; every wait is bounded.
"""

import argparse
import collections
import json
import os
import resource
import select
import socket
import struct
import sys
import tempfile
import threading
import time
import wave

import common
from common import Report, open_fds, raise_nofile, rss_kib, store_digest

import gpuqtest
from gpuqtest import Daemon

ADMIN = "hostile-admin-0123456789abcdef"
APP = "hostile-app-0123456789abcdef00"       # submit, summarization only
WORKER = "hostile-worker-0123456789abcdef"    # worker, every class

REQUEST_TIMEOUT = 6      # [server] request_timeout of the daemon
MAX_BODY = 262144
MAX_PAYLOAD = 4096
MAX_PARKED = 200
RSS_BOUND_KIB = 32 * 1024   # end RSS within this of the start
# Under AddressSanitizer freed memory sits in quarantine: the memory
# bounds are reported, not enforced.
SANITIZED = "ASAN_OPTIONS" in os.environ
FD_SLACK = 2                # end fds within this of the start

CONFIG = """\
[server]
request_timeout = {rt}
max_body = {mb}
max_payload = {mp}
max_parked = {mpk}
drain_timeout = 2

[gpu]
slots = 2

[backend whisper]
type = whisper-cpp
url = http://127.0.0.1:{dead}
health_interval = 3600

[backend llm]
type = openai
url = http://127.0.0.1:{dead}
health_interval = 3600

[class chatbot]
priority = 10
executor = chat
backend = llm
max_attempts = 1

[class transcription]
weight = 70
executor = transcribe
backend = whisper
audio_roots = {root}

[class summarization]
weight = 30
executor = summarize
backend = llm

[class batch]
lease_ttl = 3600

[class locks]
lease_ttl = 3600

[models]
known-model = chatbot

[token admin]
secret = {admin}
role = admin

[token app]
secret = {app}
role = submit
classes = summarization

[token worker]
secret = {worker}
role = worker
"""


# ---------------------------------------------------------------------------
# Raw HTTP.

class Reply:
    """What came back on a raw connection: status (None if nothing did),
    headers (lower-case names), body bytes, and whether the peer closed
    the connection (closed) or nothing at all came within the time
    (timed_out)."""

    def __init__(self):
        self.status = None
        self.headers = {}
        self.body = b""
        self.closed = False
        self.timed_out = False
        self.raw = b""
        self.rest = b""

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    def __repr__(self):
        if self.status is None:
            return "<%s>" % ("timed out" if self.timed_out else "closed")
        body = self.body[:200]
        return "<%d %r%s>" % (self.status, body,
                              " closed" if self.closed else "")


def _recv(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout()
    sock.settimeout(left)
    return sock.recv(65536)


def read_reply(sock, timeout, buf=b"", head=False):
    """Reads one HTTP reply from sock (bytes already read in buf)."""
    r = Reply()
    deadline = time.monotonic() + timeout
    try:
        while b"\r\n\r\n" not in buf:
            data = _recv(sock, deadline)
            if not data:
                r.closed = True
                break
            buf += data
        if b"\r\n\r\n" not in buf:
            r.raw = buf
            if buf:
                # Something that is not a whole HTTP head: say so.
                r.status = -1
                r.body = buf
            return r
        head_raw, buf = buf.split(b"\r\n\r\n", 1)
        lines = head_raw.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            r.status = int(parts[1])
        except (IndexError, ValueError):
            r.status = -1
        for line in lines[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                r.headers[k.strip().lower().decode("latin-1")] = \
                    v.strip().decode("latin-1")
        if head or r.status in (204, 304) or 100 <= r.status < 200:
            r.rest = buf
            return r
        if "content-length" in r.headers:
            n = int(r.headers["content-length"])
            while len(buf) < n:
                data = _recv(sock, deadline)
                if not data:
                    r.closed = True
                    break
                buf += data
            r.body, r.rest = buf[:n], buf[n:]
        elif r.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in buf:
                    data = _recv(sock, deadline)
                    if not data:
                        r.closed = True
                        r.body = body
                        return r
                    buf += data
                size_line, buf = buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    data = _recv(sock, deadline)
                    if not data:
                        r.closed = True
                        r.body = body + buf
                        return r
                    buf += data
                body += buf[:size]
                buf = buf[size + 2:]
                if size == 0:
                    break
            r.body, r.rest = body, buf
        else:
            while True:
                data = _recv(sock, deadline)
                if not data:
                    r.closed = True
                    break
                buf += data
            r.body = buf
    except socket.timeout:
        if r.status is None:
            r.timed_out = True
    except (ConnectionResetError, BrokenPipeError):
        r.closed = True
    return r


def connect(port, rcvbuf=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def exchange(port, data, timeout=10, head=False, after_send=None):
    """Sends data (bytes, or a list of pieces sent apart) on a fresh
    connection and reads one reply."""
    s = connect(port, timeout=timeout)
    try:
        pieces = data if isinstance(data, list) else [data]
        for piece in pieces:
            try:
                s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        if after_send:
            after_send(s)
        return read_reply(s, timeout, head=head)
    finally:
        s.close()


def http(method, path, body=None, token=ADMIN, headers=(), cl=True,
         version=b"HTTP/1.1"):
    """A request as bytes.  body: bytes, str, or anything else as JSON."""
    if body is not None and not isinstance(body, bytes):
        body = body.encode("utf-8") if isinstance(body, str) \
            else json.dumps(body).encode("utf-8")
    if isinstance(method, str):
        method = method.encode()
    if isinstance(path, str):
        path = path.encode()
    lines = [method + b" " + path + b" " + version,
             b"Host: 127.0.0.1", b"Connection: close"]
    if token:
        lines.append(b"Authorization: Bearer " + token.encode())
    for h in headers:
        lines.append(h if isinstance(h, bytes) else h.encode("latin-1"))
    if body is not None and cl:
        lines.append(b"Content-Length: %d" % len(body))
    elif body is None and cl and method in (b"POST", b"PUT", b"PATCH"):
        lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def multipart(fields, boundary="gpuqhostileboundary"):
    """(content type, body) of a multipart/form-data body; fields is a
    list of (name, value bytes, filename or None)."""
    out = b""
    for name, value, filename in fields:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'form-data; name="%s"' % name
        if filename:
            disp += '; filename="%s"' % filename
        out += b"Content-Disposition: " + disp.encode() + b"\r\n"
        if filename:
            out += b"Content-Type: audio/wav\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return "multipart/form-data; boundary=" + boundary, out


def write_wav(path, seconds=1.0, rate=16000):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(struct.pack("<%dh" % n, *([0] * n)))


def wav_bytes(seconds=0.5):
    fd, path = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        write_wav(path, seconds)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def dead_port():
    """A loopback port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_parts(pid):
    """(anonymous, file-backed) resident KiB of process pid."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out.get("RssAnon", 0), out.get("RssFile", 0)


def check_memory(rep, ok, what):
    """A memory bound: a violation unless ok (a note under ASan)."""
    if SANITIZED and not ok:
        print("note (ASan, not enforced): %s" % what, flush=True)
        return True
    return rep.check(ok, what)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def healthz_ms(port, timeout=5):
    """Latency of GET /healthz on a fresh connection in ms, or None."""
    t0 = time.monotonic()
    try:
        r = exchange(port, http("GET", "/healthz", token=None),
                     timeout=timeout)
    except OSError:
        return None
    if r.status != 200:
        return None
    return (time.monotonic() - t0) * 1000.0


def metric(port, name, **labels):
    r = exchange(port, http("GET", "/metrics"))
    if r.status != 200:
        return None
    want = name
    if labels:
        want += "{" + ",".join('%s="%s"' % kv for kv in
                               sorted(labels.items())) + "}"
    for line in r.body.decode("utf-8", "replace").splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


# ---------------------------------------------------------------------------
# The world the cases run against.

class World:
    """The daemon, its seeded jobs and the audio root."""

    def __init__(self, rep):
        self.rep = rep
        self.tmp = tempfile.mkdtemp(prefix="gpuq-hostile-")
        self.root = os.path.join(self.tmp, "audio")
        self.outside = os.path.join(self.tmp, "outside")
        os.mkdir(self.root)
        os.mkdir(self.outside)
        os.mkdir(os.path.join(self.root, "sub"))
        write_wav(os.path.join(self.root, "ok.wav"))
        write_wav(os.path.join(self.outside, "secret.wav"))
        os.symlink(os.path.join(self.outside, "secret.wav"),
                   os.path.join(self.root, "escape.wav"))
        os.symlink("/etc", os.path.join(self.root, "etc"))
        os.symlink("../outside", os.path.join(self.root, "up"))
        self.config = CONFIG.format(
            rt=REQUEST_TIMEOUT, mb=MAX_BODY, mp=MAX_PAYLOAD, mpk=MAX_PARKED,
            dead=dead_port(), root=self.root, admin=ADMIN, app=APP,
            worker=WORKER)
        self.d = Daemon(self.config)
        self.ids = {}

    def start(self):
        self.d.__enter__()
        self.port = self.d.port
        self.pid = self.d.proc.pid
        self.seed()

    def stop(self, failed):
        try:
            if failed:
                self.d.__exit__(AssertionError, AssertionError("failed"),
                                None)
            else:
                self.d.__exit__(None, None, None)
        finally:
            import shutil
            shutil.rmtree(self.tmp, ignore_errors=True)

    def call(self, method, path, body=None, token=ADMIN, timeout=10):
        r = exchange(self.port, http(method, path, body, token=token),
                     timeout=timeout)
        return r.status, r.json()

    def seed(self):
        """Jobs the cases can aim at: queued, a live lease, a held lock,
        a cancelled job, a job waiting for a dependency."""
        ids = self.ids
        st, b = self.call("POST", "/v1/jobs", {
            "class": "batch", "payload": {"n": 1}, "metadata": {"m": "1"},
            "idempotency_key": "seed-1", "priority": 5})
        assert st == 201, (st, b)
        ids["queued"] = b["id"]
        st, b = self.call("POST", "/v1/jobs", {"class": "batch",
                                               "payload": {"n": 2}})
        ids["leased_job"] = b["id"]
        st, b = self.call("POST", "/v1/leases", {
            "classes": ["batch"], "wait": 5, "worker": "w"}, token=WORKER)
        assert st == 200, (st, b)
        ids["lease"], ids["lease_token"] = b["lease_id"], b["token"]
        assert b["job"]["id"] in (ids["queued"], ids["leased_job"]), b
        if b["job"]["id"] == ids["queued"]:
            ids["queued"], ids["leased_job"] = ids["leased_job"], \
                ids["queued"]
        st, b = self.call("POST", "/v1/locks", {
            "class": "locks", "holder": "h", "wait": 5})
        assert st == 200, (st, b)
        ids["lock"], ids["lock_token"] = b["lock_id"], b["token"]
        st, b = self.call("POST", "/v1/jobs", {"class": "batch"})
        ids["cancelled"] = b["id"]
        st, b = self.call("POST", "/v1/jobs/%s/cancel" % ids["cancelled"])
        assert st == 200, (st, b)
        st, b = self.call("POST", "/v1/jobs", {
            "class": "batch", "depends_on": [ids["queued"]]})
        assert st == 201, (st, b)
        ids["waiting"] = b["id"]
        for i in range(3):
            st, b = self.call("POST", "/v1/jobs", {
                "class": "batch", "payload": {"i": i}})
            assert st == 201, (st, b)
        # Nothing of this is in flight any more: let the last group
        # commit land before the first digest.
        time.sleep(0.3)


# ---------------------------------------------------------------------------
# The table of hostile requests.

Case = collections.namedtuple(
    "Case", "name group data want field lib timeout head check")
# want: the statuses accepted (None: the connection closed with no
# reply; -1: bytes that are no HTTP reply, never accepted).  field:
# Ellipsis = not checked, None = must be absent, else error.field.  lib:
# libevent's own non-JSON error pages are accepted.  check: extra
# callable(reply) -> problem string or None.

ANY = Ellipsis


def case(name, group, data, want, field=ANY, lib=False, timeout=10,
         head=False, check=None):
    if isinstance(want, int) or want is None:
        want = (want,)
    return Case(name, group, data, tuple(want), field, lib, timeout, head,
                check)


def build_cases(w):
    """Every hostile request, each with what must come back."""
    ids = w.ids
    root = w.root
    lease, ltok = ids["lease"], ids["lease_token"]
    lock, ktok = ids["lock"], ids["lock_token"]
    queued = ids["queued"]
    C = []
    add = C.append

    def submit(name, body, want, field=ANY, **kw):
        add(case(name, "submit", http("POST", "/v1/jobs", body), want,
                 field, **kw))

    tc = b'{"class": "batch", '
    # -- POST /v1/jobs: shapes, types, numbers ----------------------------
    submit("submit: empty body", b"", 400, "class")
    submit("submit: JSON array", b'[{"class":"batch"}]', 400, None)
    submit("submit: JSON string", b'"batch"', 400, None)
    submit("submit: JSON null", b"null", 400, None)
    submit("submit: JSON number", b"42", 400, None)
    submit("submit: truncated JSON", b'{"class": "batch"', 400, None)
    submit("submit: class missing", {"payload": 1}, 400, "class")
    submit("submit: class is a number", {"class": 5}, 400, "class")
    submit("submit: class is an object", {"class": {"a": 1}}, 400, "class")
    submit("submit: class empty", {"class": ""}, (400, 404), "class")
    submit("submit: unknown class", {"class": "nope"}, 404, "class")
    submit("submit: class path traversal", {"class": "../batch"}, 404,
           "class")
    submit("submit: class 100 kB", {"class": "c" * 100000}, (400, 404),
           "class")
    submit("submit: class over max_body", {"class": "c" * (MAX_BODY + 1)},
           413, "body")
    submit("submit: unknown field", {"class": "batch", "bogus": 1}, 400,
           "bogus")
    submit("submit: priority string", {"class": "batch", "priority": "5"},
           400, "priority")
    submit("submit: priority float", tc + b'"priority": 1.5}', 400,
           "priority")
    submit("submit: priority 1001", tc + b'"priority": 1001}', 400,
           "priority")
    submit("submit: priority -1001", tc + b'"priority": -1001}', 400,
           "priority")
    submit("submit: priority 2^63 (int64 overflow)",
           tc + b'"priority": 9223372036854775808}', 400)
    submit("submit: priority -2^63-1",
           tc + b'"priority": -9223372036854775809}', 400)
    submit("submit: priority 10^30", tc + b'"priority": '
           + b"1" + b"0" * 30 + b"}", 400)
    submit("submit: priority 1e309", tc + b'"priority": 1e309}', 400)
    submit("submit: priority NaN", tc + b'"priority": NaN}', 400)
    submit("submit: priority Infinity", tc + b'"priority": -Infinity}', 400)
    submit("submit: queue_timeout negative",
           tc + b'"queue_timeout": -1}', 400, "queue_timeout")
    submit("submit: queue_timeout 1e308",
           tc + b'"queue_timeout": 1e308}', 400, "queue_timeout")
    submit("submit: queue_timeout -0.0 string",
           tc + b'"queue_timeout": "-0.0"}', 400, "queue_timeout")
    submit("submit: metadata array", tc + b'"metadata": [1]}', 400,
           "metadata")
    submit("submit: idempotency_key 201 bytes",
           {"class": "batch", "idempotency_key": "k" * 201}, 400,
           "idempotency_key")
    submit("submit: idempotency_key with NUL",
           tc + b'"idempotency_key": "a\\u0000b"}', 400)
    submit("submit: callback_url file://",
           {"class": "batch", "callback_url": "file:///etc/passwd"}, 400,
           "callback_url")
    submit("submit: callback_url 2 kB",
           {"class": "batch", "callback_url": "http://x/" + "a" * 2000},
           400, "callback_url")
    submit("submit: depends_on j0", {"class": "batch", "depends_on": ["j0"]},
           400, "depends_on")
    submit("submit: depends_on j-1",
           {"class": "batch", "depends_on": ["j-1"]}, 400, "depends_on")
    submit("submit: depends_on j99999999999999999999",
           {"class": "batch", "depends_on": ["j99999999999999999999"]},
           400, "depends_on")
    submit("submit: depends_on ../",
           {"class": "batch", "depends_on": ["../"]}, 400, "depends_on")
    submit("submit: depends_on 65 entries",
           {"class": "batch", "depends_on": [queued] * 65}, 400,
           "depends_on")
    submit("submit: depends_on not an array",
           {"class": "batch", "depends_on": queued}, 400, "depends_on")
    # -- JSON structure ----------------------------------------------------
    submit("submit: 10^5 nested [", tc + b'"payload": ' + b"[" * 100000
           + b"]" * 100000 + b"}", 400)
    submit("submit: 10^5 nested [ unclosed", b"[" * 100000, 400)
    submit("submit: 10^5 nested [ over max_body", b"[" * (MAX_BODY + 1),
           413, "body")
    submit("submit: 10^4 nested objects", tc + b'"payload": '
           + b'{"a":' * 10000 + b"1" + b"}" * 10000 + b"}", 400)
    submit("submit: invalid UTF-8 in a string",
           tc + b'"payload": "\xff\xfe"}', 400)
    submit("submit: invalid UTF-8 in a key",
           b'{"class": "batch", "payload": {"\xc3\x28": 1}}', 400)
    submit("submit: overlong UTF-8 /", tc + b'"payload": "\xc0\xaf"}', 400)
    submit("submit: UTF-16 surrogate in UTF-8",
           tc + b'"payload": "\xed\xa0\x80"}', 400)
    submit("submit: lone surrogate escape",
           tc + b'"payload": "\\ud800"}', 400)
    submit("submit: NUL escape in class", b'{"class": "batch\\u0000x"}', 400)
    submit("submit: raw NUL byte", b'{"class": "batch"\x00}', 400)
    submit("submit: duplicate keys",
           b'{"class": "batch", "class": "summarization"}', 400)
    submit("submit: duplicate nested keys",
           tc + b'"payload": {"a": 1, "a": 2}}', 400)
    submit("submit: payload over max_payload",
           {"class": "batch", "payload": "x" * (MAX_PAYLOAD + 10)}, 413,
           "payload")
    submit("submit: body over max_body (Content-Length)",
           {"class": "batch", "metadata": {"p": "x" * (MAX_BODY + 100)}},
           413)
    submit("submit: 1 MB string in a key",
           b'{"' + b"k" * 1000000 + b'": 1}', 413, lib=True)
    # Oversized bodies beyond libevent's own limit: it answers 413 (not
    # JSON) from the Content-Length alone and closes.
    add(case("submit: Content-Length 200 MB (not sent)", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Content-Length: 200000000"]) + b"{", (413, None),
             lib=True))
    # -- transfer framing --------------------------------------------------
    big = json.dumps({"class": "batch",
                      "metadata": {"p": "x" * (MAX_BODY * 3 // 2)}}).encode()
    add(case("chunked body over max_body", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Transfer-Encoding: chunked"])
             + b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 4096]),
                                           big[i:i + 4096])
                        for i in range(0, len(big), 4096)) + b"0\r\n\r\n",
             413))
    add(case("chunked: bad chunk size", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Transfer-Encoding: chunked"]) + b"zz\r\nab\r\n",
             (400, 413, None), lib=True))
    add(case("chunked: chunk size 2^64-1", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Transfer-Encoding: chunked"])
             + b"ffffffffffffffff\r\nab\r\n", (400, 413, None), lib=True))
    add(case("chunked: negative chunk size", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Transfer-Encoding: chunked"]) + b"-5\r\nab\r\n",
             (400, 413, None), lib=True))
    add(case("chunked: valid JSON with no last chunk", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Transfer-Encoding: chunked"])
             + b"11\r\n{\"class\": \"nope\"}\r\n", (None,),
             timeout=REQUEST_TIMEOUT + 4))
    add(case("Content-Length negative", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Content-Length: -1"]) + b"{}", (400, None),
             lib=True))
    add(case("Content-Length not a number", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Content-Length: abc"]) + b"{}", (400, None),
             lib=True))
    add(case("Content-Length 2^64+1", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Content-Length: 18446744073709551617"]) + b"{}",
             (400, 413, None), lib=True))
    add(case("two different Content-Lengths", "body",
             http("POST", "/v1/jobs", b'{"class": "nope"}',
                  headers=["Content-Length: 3"]),
             (400, 404, None), lib=True))
    add(case("Content-Length larger than the body (lying)", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Content-Length: 1000"]) + b'{"class": "batch"}',
             (None,), timeout=REQUEST_TIMEOUT + 4))
    add(case("Content-Length smaller than the body", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Content-Length: 5"])
             + b'{"class": "batch"}', (400,), None))
    add(case("Transfer-Encoding and Content-Length", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Content-Length: 4",
                           "Transfer-Encoding: chunked"])
             + b"4\r\n{\"cl\r\n0\r\n\r\n", (400, None), lib=True))
    # -- request line and headers -----------------------------------------
    add(case("header of 20 kB", "head",
             http("GET", "/healthz", headers=["X-Big: " + "a" * 20000]),
             (400, 413, 431, None), lib=True))
    add(case("2000 headers", "head",
             http("GET", "/healthz",
                  headers=["X-H%d: v" % i for i in range(2000)]),
             (400, 413, 431, None), lib=True))
    add(case("URL of 100 kB", "head",
             http("GET", "/v1/jobs/" + "a" * 100000),
             (400, 413, 414, None), lib=True))
    add(case("URL of 8 kB", "head", http("GET", "/v1/jobs/" + "a" * 8000),
             404, None))
    # libevent answers 501 (its page) to methods it does not know, as
    # RFC 9110 says; the router answers 405 to those it knows.
    add(case("unknown method FOO", "head", http("FOO", "/v1/jobs"),
             (400, 405, 501, None), lib=True))
    add(case("lower-case method", "head", http("get", "/v1/jobs"),
             (400, 405, 501, None), lib=True))
    add(case("TRACE", "head", http("TRACE", "/v1/jobs"),
             (405, 501, None), lib=True))
    add(case("CONNECT", "head", http("CONNECT", "127.0.0.1:22"),
             (400, 404, 405, 501, None), lib=True))
    add(case("PATCH /v1/jobs", "head", http("PATCH", "/v1/jobs", {}), 405))
    add(case("PUT /v1/jobs/{id}", "head",
             http("PUT", "/v1/jobs/" + queued, {}), 405))
    add(case("HTTP/0.9 request", "head", b"GET /v1/status\r\n",
             (400, None), lib=True, timeout=REQUEST_TIMEOUT + 4))
    add(case("HTTP/2 preface", "head",
             b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 20,
             (400, 404, 405, 505, None), lib=True))
    add(case("HTTP/9.9", "head",
             http("GET", "/v1/status", version=b"HTTP/9.9"),
             (400, 505, None), lib=True))
    add(case("binary garbage", "head",
             bytes((i * 37 + 11) % 256 for i in range(2048)) + b"\r\n\r\n",
             (400, None), lib=True))
    add(case("TLS ClientHello", "head",
             bytes.fromhex("16030100a5010000a10303") + os.urandom(32)
             + b"\x00" * 100 + b"\r\n\r\n", (400, None), lib=True))
    add(case("empty lines only", "head", b"\r\n\r\n\r\n\r\n",
             (400, None), lib=True, timeout=REQUEST_TIMEOUT + 4))
    add(case("header without colon", "head",
             b"GET /v1/status HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
             (400, None), lib=True))
    add(case("NUL in the token", "head",
             b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
             + ADMIN[:8].encode() + b"\x00" + ADMIN[8:].encode()
             + b"\r\nConnection: close\r\n\r\n", (400, 401, None),
             lib=True))
    add(case("request line without a path", "head",
             b"GET HTTP/1.1\r\nHost: x\r\n\r\n", (400, 404, None), lib=True))
    add(case("pipelined garbage after a valid request", "head",
             http("GET", "/healthz", token=None).replace(
                 b"Connection: close\r\n", b"")
             + b"\x16\x03\x01garbage garbage\r\n\r\n", (200,),
             check=lambda r: None if r.status == 200 else "first reply"))
    add(case("Expect: 100-continue with 200 MB", "body",
             http("POST", "/v1/jobs", cl=False,
                  headers=["Content-Length: 200000000",
                           "Expect: 100-continue"]), (413, 417, None),
             lib=True))
    # -- paths and queries --------------------------------------------------
    get = lambda name, path, want, field=ANY, **kw: add(case(  # noqa: E731
        name, "path", http("GET", path), want, field, **kw))
    get("bad percent-encoding in a path", "/v1/jobs/%zz", 404, None)
    get("percent-encoded NUL in a path", "/v1/jobs/j1%00", 404, None)
    get("percent-encoded ../ in a path",
        "/v1/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404, None)
    get("bad percent-encoding in a query", "/v1/jobs?class=%zz", (400, 404))
    get("query of 1500 parameters and a bad limit",
        "/v1/jobs?" + "&".join("a%d=1" % i for i in range(1500))
        + "&limit=-1", 400, "limit")
    get("list: limit -1", "/v1/jobs?limit=-1", 400, "limit")
    get("list: limit 10^20", "/v1/jobs?limit=100000000000000000000", 400,
        "limit")
    get("list: limit abc", "/v1/jobs?limit=abc", 400, "limit")
    get("list: limit 1e309", "/v1/jobs?limit=1e309", 400, "limit")
    get("list: after ../", "/v1/jobs?after=../../", 400, "after")
    get("list: state bogus", "/v1/jobs?state=bogus", 400, "state")
    get("list: class unknown", "/v1/jobs?class=nope", 404, "class")
    get("get: wait 1e309", "/v1/jobs/%s?wait=1e309" % queued, 400, "wait")
    get("get: wait -1", "/v1/jobs/%s?wait=-1" % queued, 400, "wait")
    get("get: wait nan", "/v1/jobs/%s?wait=nan" % queued, 400, "wait")
    get("get: wait 301", "/v1/jobs/%s?wait=301" % queued, 400, "wait")
    for jid in ("j0", "j-1", "j99999999999999999999", "..", "j1.5", "J1",
                "j%31", "j1%20"):
        get("get: job id %s" % jid, "/v1/jobs/" + jid, 404, None)
    get("dashboard: ../ in /ui/", "/ui/../../../etc/passwd", 404)
    get("dashboard: %2e%2e in /ui/", "/ui/%2e%2e/%2e%2e/etc/passwd", 404)
    get("whisper /load does not exist", "/load", 404)
    add(case("HEAD of an unknown job", "path", http("HEAD", "/v1/jobs/j0"),
             404, head=True))
    add(case("cancel: j18446744073709551616", "jobs",
             http("POST", "/v1/jobs/j18446744073709551616/cancel"), 404))
    add(case("cancel: a cancelled job", "jobs",
             http("POST", "/v1/jobs/%s/cancel" % ids["cancelled"]), 409))
    add(case("requeue: a queued job", "jobs",
             http("POST", "/v1/jobs/%s/requeue" % queued), 409))
    add(case("requeue: a running job", "jobs",
             http("POST", "/v1/jobs/%s/requeue" % ids["leased_job"]), 409))
    add(case("events: unknown class", "jobs",
             http("GET", "/v1/events?class=nope"), 404, "class"))
    add(case("events: unknown job", "jobs",
             http("GET", "/v1/events?job=j99999999"), 404))
    add(case("events: job id j-1", "jobs", http("GET", "/v1/events?job=j-1"),
             (400, 404)))
    add(case("stream: unknown job", "jobs",
             http("GET", "/v1/jobs/j99999999/stream"), 404))
    # -- leases --------------------------------------------------------------
    def lp(name, path, body, want, field=ANY, tok=WORKER, **kw):
        add(case(name, "lease", http("POST", path, body, token=tok), want,
                 field, **kw))
    lp("lease: classes not an array", "/v1/leases", {"classes": "batch"},
       400, "classes")
    lp("lease: classes empty", "/v1/leases", {"classes": []}, 400, "classes")
    lp("lease: classes [1]", "/v1/leases", {"classes": [1]}, 400, "classes")
    lp("lease: unknown class", "/v1/leases", {"classes": ["nope"]}, 404,
       "classes")
    lp("lease: wait 301", "/v1/leases", {"classes": ["batch"], "wait": 301},
       400, "wait")
    lp("lease: wait -1", "/v1/leases", {"classes": ["batch"], "wait": -1},
       400, "wait")
    lp("lease: wait 1e309", "/v1/leases",
       b'{"classes": ["batch"], "wait": 1e309}', 400)
    lp("lease: worker 1000 bytes", "/v1/leases",
       {"classes": ["batch"], "worker": "w" * 1000}, 400, "worker")
    hb = "/v1/leases/%s/heartbeat" % lease
    lp("heartbeat: wrong token", hb, {"token": ltok + 1}, 409, "token")
    lp("heartbeat: token 0", hb, {"token": 0}, 409, "token")
    lp("heartbeat: token -1", hb, {"token": -1}, 400, "token")
    lp("heartbeat: token string", hb, {"token": str(ltok)}, 400, "token")
    lp("heartbeat: token float", hb, b'{"token": %d.0}' % ltok, 400, "token")
    lp("heartbeat: token missing", hb, {}, 400, "token")
    lp("heartbeat: token 2^64", hb, b'{"token": 18446744073709551616}', 400)
    lp("heartbeat: unknown field", hb, {"token": ltok, "x": 1}, 400, "x")
    seq = lease.split(".")[0]
    lp("heartbeat: lease id with another token", "/v1/leases/%s.%d/heartbeat"
       % (seq, ltok + 7), {"token": ltok + 7}, (404, 409))
    lp("heartbeat: lease id j1.-1", "/v1/leases/j1.-1/heartbeat",
       {"token": 1}, 404)
    lp("heartbeat: lease id x.y", "/v1/leases/x.y/heartbeat", {"token": 1},
       404)
    lp("heartbeat: lease id j99999999999999999999.1",
       "/v1/leases/j99999999999999999999.1/heartbeat", {"token": 1}, 404)
    lp("complete: wrong token", "/v1/leases/%s/complete" % lease,
       {"token": ltok + 1, "result": {"x": 1}}, 409, "token")
    lp("fail: wrong token", "/v1/leases/%s/fail" % lease,
       {"token": ltok + 1, "error": "x"}, 409, "token")
    lp("fail: retryable not a bool", "/v1/leases/%s/fail" % lease,
       {"token": ltok, "retryable": "yes"}, 400, "retryable")
    lp("yield: wrong token", "/v1/leases/%s/yield" % lease,
       {"token": ltok + 1}, 409, "token")
    lp("complete: body over max_body", "/v1/leases/%s/complete" % lease,
       {"token": ltok, "result": "r" * (MAX_BODY + 10)}, 413, "body")
    # -- locks ---------------------------------------------------------------
    lk = lambda name, body, want, field=ANY: add(case(  # noqa: E731
        name, "lock", http("POST", "/v1/locks", body), want, field))
    lk("lock: unknown class", {"class": "nope"}, 404, "class")
    lk("lock: wait 3601", {"class": "locks", "wait": 3601}, 400, "wait")
    lk("lock: holder not a string", {"class": "locks", "holder": 5}, 400,
       "holder")
    lk("lock: metadata string", {"class": "locks", "metadata": "m"}, 400,
       "metadata")
    add(case("unlock: wrong token", "lock",
             http("DELETE", "/v1/locks/%s?token=%d" % (lock, ktok + 1)),
             409, "token"))
    add(case("unlock: token abc", "lock",
             http("DELETE", "/v1/locks/%s?token=abc" % lock), 400, "token"))
    add(case("unlock: no token", "lock",
             http("DELETE", "/v1/locks/%s" % lock), 400, "token"))
    add(case("unlock: token 10^20", "lock",
             http("DELETE", "/v1/locks/%s?token=100000000000000000000"
                  % lock), 409, "token"))
    add(case("unlock: token -1", "lock",
             http("DELETE", "/v1/locks/%s?token=-1" % lock), 400, "token"))
    add(case("lock heartbeat: wrong token", "lock",
             http("POST", "/v1/locks/%s/heartbeat" % lock,
                  {"token": ktok + 1}), 409, "token"))
    add(case("lock heartbeat: a lease's id", "lock",
             http("POST", "/v1/locks/%s/heartbeat" % lease,
                  {"token": ltok + 1}), (404, 409)))
    # -- access control ------------------------------------------------------
    add(case("auth: no token", "auth", http("GET", "/v1/status", token=None),
             401, "Authorization"))
    add(case("auth: Bearer and nothing", "auth",
             http("GET", "/v1/status", token=None,
                  headers=["Authorization: Bearer"]), 401, "Authorization"))
    add(case("auth: Basic", "auth",
             http("GET", "/v1/status", token=None,
                  headers=["Authorization: Basic YWRtaW46YWRtaW4="]), 401,
             "Authorization"))
    add(case("auth: wrong token", "auth",
             http("GET", "/v1/status", token="x" * 30), 401,
             "Authorization"))
    add(case("auth: token of 10 kB", "auth",
             http("GET", "/v1/status", token="x" * 10000), 401,
             "Authorization"))
    add(case("auth: token prefix of a real one", "auth",
             http("GET", "/v1/status", token=ADMIN[:-1]), 401,
             "Authorization"))
    add(case("auth: token with trailing junk", "auth",
             http("GET", "/v1/status", token=ADMIN + "x"), 401,
             "Authorization"))
    add(case("auth: submit token on another class", "auth",
             http("POST", "/v1/jobs", {"class": "batch"}, token=APP), 403,
             "class"))
    add(case("auth: submit token leasing", "auth",
             http("POST", "/v1/leases", {"classes": ["summarization"]},
                  token=APP), 403))
    add(case("auth: submit token draining", "auth",
             http("POST", "/v1/admin/drain", {}, token=APP), 403))
    add(case("auth: submit token on a job of another class", "auth",
             http("POST", "/v1/jobs/%s/cancel" % queued, token=APP), 403))
    add(case("admin: drain deadline string", "auth",
             http("POST", "/v1/admin/drain", {"deadline": "x"}), 400,
             "deadline"))
    add(case("admin: drain deadline -1", "auth",
             http("POST", "/v1/admin/drain", {"deadline": -1}), 400,
             "deadline"))
    add(case("admin: fault without --fault-injection", "auth",
             http("POST", "/v1/admin/fault", {"kind": "full"}), 404))
    # -- audio paths -------------------------------------------------------
    def ap(name, path, want=400, field="payload.audio_path"):
        add(case(name, "audio",
                 http("POST", "/v1/jobs", {"class": "transcription",
                                           "payload": {"audio_path": path}}),
                 want, field))
    ap("audio_path relative", "ok.wav")
    ap("audio_path ../../etc/passwd", "../../etc/passwd")
    ap("audio_path ROOT/../../etc/passwd", root + "/../../etc/passwd")
    ap("audio_path ROOT/sub/../../outside", root + "/sub/../../outside/"
       "secret.wav")
    ap("audio_path absolute outside roots", "/etc/passwd")
    ap("audio_path symlink escape (file)", root + "/escape.wav")
    ap("audio_path symlink escape (dir to /etc)", root + "/etc/passwd")
    ap("audio_path symlink escape (dir ../outside)", root + "/up/secret.wav")
    ap("audio_path /proc/self/environ", "/proc/self/environ")
    ap("audio_path /proc/self/fd/0", "/proc/self/fd/0")
    ap("audio_path /proc/self/root + ROOT",
       "/proc/self/root" + root + "/escape.wav")
    ap("audio_path /dev/zero", "/dev/zero")
    ap("audio_path the root itself (a directory)", root)
    ap("audio_path missing file in the root", root + "/missing.wav")
    ap("audio_path 10 kB", root + "/" + "a" * 10000)
    ap("audio_path number", 7)
    ap("audio_path missing", None)
    add(case("audio_path with NUL", "audio",
             http("POST", "/v1/jobs",
                  b'{"class": "transcription", "payload": {"audio_path": "'
                  + root.encode() + b'/ok.wav\\u0000.txt"}}'), 400))
    add(case("transcription: upload field", "audio",
             http("POST", "/v1/jobs", {"class": "transcription", "payload": {
                 "upload": "../../etc/passwd"}}), 400, "payload.upload"))
    add(case("transcription: language 100 bytes", "audio",
             http("POST", "/v1/jobs", {"class": "transcription", "payload": {
                 "audio_path": root + "/ok.wav", "language": "x" * 100}}),
             400, "payload.language"))
    add(case("transcription: payload an array", "audio",
             http("POST", "/v1/jobs", {"class": "transcription",
                                       "payload": [root + "/ok.wav"]}),
             400, "payload"))
    # -- summarize / chat payloads ----------------------------------------
    sm = lambda name, payload, field: add(case(  # noqa: E731
        name, "payload", http("POST", "/v1/jobs", {
            "class": "summarization", "payload": payload}), 400, field))
    sm("summarize: text and from_job", {"text": "t", "from_job": queued},
       "payload.text")
    sm("summarize: from_job j999999", {"from_job": "j999999"},
       "payload.from_job")
    sm("summarize: max_words 0", {"text": "t", "max_words": 0},
       "payload.max_words")
    sm("summarize: max_words 2^63", {"text": "t",
                                     "max_words": 2 ** 63 - 1},
       "payload.max_words")
    sm("summarize: instructions 5000 bytes", {"text": "t",
                                             "instructions": "i" * 5000},
       "payload.instructions")
    add(case("chat job: messages empty", "payload",
             http("POST", "/v1/jobs", {"class": "chatbot",
                                       "payload": {"messages": []}}),
             400, "payload.messages"))
    # -- drop-in endpoints ---------------------------------------------------
    oc = lambda name, body, want, field=ANY, headers=(): add(case(  # noqa
        name, "dropin", http("POST", "/v1/chat/completions", body,
                             headers=headers), want, field))
    oc("openai chat: no messages", {"model": "known-model"}, 400,
       "messages")
    oc("openai chat: messages a string", {"messages": "hi"}, 400,
       "messages")
    oc("openai chat: message without role", {"messages": [{"content": 1}]},
       400, "messages")
    oc("openai chat: max_tokens -1",
       {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
       400, "max_tokens")
    oc("openai chat: max_tokens 1e309",
       b'{"messages": [{"role": "user", "content": "x"}], '
       b'"max_tokens": 1e309}', 400)
    oc("openai chat: unknown X-Gpuq-Class",
       {"messages": [{"role": "user", "content": "x"}]}, 404,
       "X-Gpuq-Class", headers=["X-Gpuq-Class: nope"])
    oc("openai chat: X-Gpuq-Class not a chat class",
       {"messages": [{"role": "user", "content": "x"}]}, 400, "model",
       headers=["X-Gpuq-Class: batch"])
    oc("openai chat: body not an object", b"[1,2]", 400)
    add(case("ollama chat: messages empty", "dropin",
             http("POST", "/api/chat", {"model": "m", "messages": []}), 400,
             "messages"))
    add(case("ollama chat: num_predict a string", "dropin",
             http("POST", "/api/chat", {
                 "model": "m", "options": {"num_predict": "x"},
                 "messages": [{"role": "user", "content": "x"}]}),
             400, "max_tokens"))
    wavb = wav_bytes(0.2)

    def mp(name, ctype, body, want, field=ANY, path="/inference",
           headers=(), lib=False):
        hs = list(headers)
        if ctype is not None:
            hs.append("Content-Type: " + ctype)
        add(case(name, "dropin", http("POST", path, body, headers=hs), want,
                 field, lib=lib))

    mp("inference: no Content-Type", None, b"abc", 400, "body")
    mp("inference: multipart without boundary", "multipart/form-data",
       b"--x\r\n\r\n", 400, "body")
    mp("inference: JSON instead of multipart", "application/json",
       b'{"file": "x"}', 400, "body")
    ct, body = multipart([("response_format", b"json", None)])
    mp("inference: no file part", ct, body, 400, "file")
    ct, body = multipart([("file", b"", "a.wav")])
    mp("inference: empty file part", ct, body, 400, "file")
    ct, body = multipart([("file", wavb, "a.wav"),
                          ("response_format", b"srt", None)])
    mp("inference: response_format srt", ct, body, 400, "response_format")
    mp("transcriptions: response_format srt", ct, body, 400,
       "response_format", path="/v1/audio/transcriptions")
    ct, body = multipart([("file", wavb, "a.wav")])
    mp("inference: unknown X-Gpuq-Class", ct, body, 404, "X-Gpuq-Class",
       headers=["X-Gpuq-Class: nope"])
    mp("inference: X-Gpuq-Class not transcribe", ct, body, 400,
       headers=["X-Gpuq-Class: summarization"])
    mp("transcriptions: truncated multipart", ct, body[:-40], 400, "body",
       path="/v1/audio/transcriptions")
    ct2, body2 = multipart([("f%d" % i, b"v", None) for i in range(100)]
                           + [("file", wavb, "a.wav"),
                              ("response_format", b"srt", None)])
    mp("transcriptions: 100 fields", ct2, body2, 400, ANY,
       path="/v1/audio/transcriptions")
    ct3, body3 = multipart([("file", wavb, "a.wav"),
                            ("response_format", b"vtt", None)],
                           boundary="b" * 300)
    mp("inference: boundary of 300 bytes", ct3, body3, 400)
    mp("inference: part without headers", "multipart/form-data; boundary=x",
       b"--x\r\nno headers here--x--\r\n", 400, "body")
    add(case("inference: 70 MB upload (Content-Length only)", "dropin",
             http("POST", "/inference", cl=False,
                  headers=["Content-Type: multipart/form-data; boundary=x",
                           "Content-Length: 70000000"]) + b"--x\r\n",
             (413, None), lib=True))
    return C


# ---------------------------------------------------------------------------
# Running the table.

def judge(c, r):
    """A problem with reply r to case c, or None."""
    if r.status is None:
        if None in c.want:
            return None
        return "connection %s with no reply; wanted %s" % (
            "timed out" if r.timed_out else "closed", c.want)
    if r.status == -1:
        return "not an HTTP reply: %r" % r.raw[:120]
    if r.status not in c.want:
        return "status %d, wanted %s: %r" % (r.status, c.want, r.body[:300])
    if c.check:
        problem = c.check(r)
        if problem:
            return problem
    if r.status < 400:
        return None
    if c.head:
        return None
    body = r.json()
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        if c.lib:
            return None
        return "status %d without a JSON error: %r" % (r.status,
                                                         r.body[:200])
    err = body["error"]
    if not isinstance(err.get("code"), str) or \
            not isinstance(err.get("message"), str):
        return "error without code and message: %r" % body
    if c.field is None:
        if err.get("field") is not None:
            return "error.field %r, wanted none" % err.get("field")
    elif c.field is not Ellipsis and err.get("field") != c.field:
        return "error.field %r, wanted %r (%s)" % (err.get("field"),
                                                  c.field, err["message"])
    return None


def run_cases(w, rep, cases, verbose):
    port = w.port
    by_status = collections.Counter()
    rss_peak = rss_kib(w.pid)
    digest = store_digest(w.d.data)
    failed = 0
    t0 = time.monotonic()
    for i, c in enumerate(cases):
        try:
            r = exchange(port, c.data, timeout=c.timeout, head=c.head)
        except OSError as e:
            r = Reply()
            r.closed = True
            problem = None if None in c.want else "send failed: %r" % e
        else:
            problem = judge(c, r)
        key = "closed" if r.status is None else str(r.status)
        by_status[key] += 1
        if verbose or problem:
            rep.log("case %3d %-55s -> %s%s", i + 1, c.name[:55], key,
                    "" if r.status is None else
                    " %s" % (r.json() or {}).get("error", r.body[:80]))
        ok = rep.check(problem is None, "case %r: %s" % (c.name, problem))
        if not w.d.alive():
            rep.check(False, "gpuqd died after case %r" % c.name)
            raise SystemExit(rep.finish())
        after = store_digest(w.d.data)
        if not rep.check(after == digest,
                         "case %r changed the store" % c.name):
            diff_store(rep, digest, after)
            digest = after
        hz = healthz_ms(port)
        rep.check(hz is not None, "/healthz did not answer after case %r"
                  % c.name)
        rss = rss_kib(w.pid) or 0
        rss_peak = max(rss_peak, rss)
        if not ok:
            failed += 1
    dt = time.monotonic() - t0
    rep.figure("hostile.cases", len(cases))
    rep.figure("hostile.cases_failed", failed)
    for k in sorted(by_status):
        rep.figure("hostile.answered_%s" % k, by_status[k], "cases")
    rep.figure("hostile.cases_duration", dt, "s")
    rep.figure("hostile.cases_rss_peak", rss_peak / 1024.0, "MiB")
    return by_status


def diff_store(rep, before, after):
    names = ("jobs", "job_events", "callbacks", "meta")
    for name, b, a in zip(names, before, after):
        if a != b:
            added = [r for r in a if r not in b]
            gone = [r for r in b if r not in a]
            rep.log("  store table %s: +%.600s -%.600s", name,
                    repr(added[:3]), repr(gone[:3]))


# ---------------------------------------------------------------------------
# Connection storms.

def phase_slowloris(w, rep, n):
    """n connections sending their request one byte per second (half
    of them the headers, half a declared body): each must be closed
    about request_timeout after its first byte while /healthz answers."""
    port = w.port
    head = http("POST", "/v1/jobs", cl=False,
                headers=["X-Padding: " + "p" * 200])
    body_req = http("POST", "/v1/jobs", cl=False,
                    headers=["Content-Length: 500"])
    socks = []
    for i in range(n):
        s = connect(port)
        s.setblocking(False)
        if i % 2 == 0:
            data = head                 # headers dribbled
        else:
            s.sendall(body_req)         # headers whole, body dribbled
            data = b"{" + b" " * 498 + b"}"
        socks.append([s, data, 0, time.monotonic(), None])
    t0 = time.monotonic()
    lat = []
    deadline = t0 + REQUEST_TIMEOUT * 3 + 5
    while time.monotonic() < deadline:
        open_ = 0
        for e in socks:
            s, data, pos, start, closed = e
            if closed is not None:
                continue
            open_ += 1
            try:
                if s.recv(4096) == b"":
                    e[4] = time.monotonic() - start
                    continue
            except BlockingIOError:
                pass
            except OSError:
                e[4] = time.monotonic() - start
                continue
            if pos < len(data):
                try:
                    s.send(data[pos:pos + 1])
                    e[2] = pos + 1
                except BlockingIOError:
                    pass
                except OSError:
                    e[4] = time.monotonic() - start
        if open_ == 0:
            break
        ms = healthz_ms(port, timeout=3)
        lat.append(ms if ms is not None else 3000.0)
        rep.check(ms is not None, "/healthz failed during slowloris")
        time.sleep(max(0.0, 1.0 - (ms or 0) / 1000.0))
    times = [e[4] for e in socks if e[4] is not None]
    if os.environ.get("HOSTILE_DEBUG"):
        print([(i % 2, e[2], e[4]) for i, e in enumerate(socks)])
    for e in socks:
        e[0].close()
    rep.check(len(times) == n, "slowloris: %d of %d connections were not "
              "closed within %.0fs" % (n - len(times), n,
                                       REQUEST_TIMEOUT * 3 + 5))
    if times:
        rep.check(max(times) <= REQUEST_TIMEOUT + 2.5,
                  "slowloris: a connection lived %.1fs (request_timeout %ds)"
                  % (max(times), REQUEST_TIMEOUT))
        rep.check(min(times) >= REQUEST_TIMEOUT - 0.5,
                  "slowloris: a connection was closed after %.1fs, before "
                  "request_timeout" % min(times))
    rep.figure("slowloris.connections", n)
    rep.figure("slowloris.request_timeout", REQUEST_TIMEOUT, "s")
    if times:
        rep.figure("slowloris.closed_after_min", min(times), "s")
        rep.figure("slowloris.closed_after_max", max(times), "s")
    rep.figure("slowloris.healthz_p50", percentile(lat, 0.5), "ms")
    rep.figure("slowloris.healthz_max", max(lat) if lat else float("nan"),
               "ms")
    cut = metric(port, "gpuq_connections_closed_total",
                 reason="request_timeout")
    rep.figure("slowloris.closed_metric", int(cut or 0), "connections")


def phase_idle(w, rep, n, tag="idle"):
    """n idle TCP connections at once (request_timeout raised to 120 s
    by a reload, so that none times out while they are being opened):
    /healthz latency and RSS while they are open, fds and RSS after they
    are closed.  (That the daemon closes idle connections by itself
    after request_timeout is in the table: "chunked: valid JSON with no
    last chunk" and the lying Content-Length.)"""
    port, pid = w.port, w.pid
    raise_nofile(n + 1000)
    reload_timeout(w, rep, 120)
    fds0, rss0 = open_fds(pid), rss_kib(pid)
    socks = []
    lat = []
    peak_fds = rss_open = None
    t0 = time.monotonic()
    try:
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
            except OSError as e:
                s.close()
                rep.check(False, "%s: connection %d failed: %r"
                          % (tag, i, e))
                break
            socks.append(s)
        t_open = time.monotonic() - t0
        gpuqtest.wait_until(lambda: open_fds(pid) >= fds0 + len(socks) - 5,
                            timeout=30, interval=0.1,
                            what="the daemon to accept them all")
        peak_fds = open_fds(pid)
        for _ in range(50):
            ms = healthz_ms(port, timeout=5)
            lat.append(ms if ms is not None else 5000.0)
            rep.check(ms is not None, tag + ": " + "/healthz failed with %d "
                      "connections open" % len(socks))
        r = exchange(port, http("GET", "/v1/status"))
        rep.check(r.status == 200, tag + ": " + "/v1/status: %r" % r)
        rss_open = rss_kib(pid)
    finally:
        for s in socks:
            s.close()
        try:
            gpuqtest.wait_until(lambda: open_fds(pid) <= fds0 + FD_SLACK,
                                timeout=30, interval=0.2,
                                what="the daemon to close them")
        finally:
            reload_timeout(w, rep, REQUEST_TIMEOUT)
    t_gone = time.monotonic() - t0 - t_open
    rep.figure(tag + ".connections", len(socks))
    rep.figure(tag + ".open_time", t_open, "s")
    rep.figure(tag + ".daemon_fds_peak", peak_fds)
    rep.figure(tag + ".healthz_p50", percentile(lat, 0.5), "ms")
    rep.figure(tag + ".healthz_p99", percentile(lat, 0.99), "ms")
    rep.figure(tag + ".rss_before", rss0 / 1024.0, "MiB")
    rep.figure(tag + ".rss_open", rss_open / 1024.0, "MiB")
    rep.figure(tag + ".rss_per_connection",
               (rss_open - rss0) / max(1, len(socks)), "KiB")
    rep.figure(tag + ".fds_back_after", t_gone, "s")
    rep.figure(tag + ".rss_after", rss_kib(pid) / 1024.0, "MiB")
    rep.figure(tag + ".fds_after", open_fds(pid))
    rep.check(max(lat) < 1000, tag + ": " + "/healthz took %.0f ms with %d "
              "connections open" % (max(lat), len(socks)))
    rep.check(peak_fds >= fds0 + n - 5, tag + ": " + "the daemon held %d fds, "
              "wanted %d" % (peak_fds, fds0 + n))


def phase_emfile(w, rep, hold):
    """The daemon's RLIMIT_NOFILE lowered to 256 while it runs; hold
    connections are opened (more than it can take): it must not spin,
    must answer again once they close, and must count the pauses."""
    port, pid = w.port, w.pid
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, old[1]))
    socks = []
    try:
        pauses0 = metric(port, "gpuq_accept_pauses_total") or 0
        for _ in range(hold):
            # Beyond the limit and the listen backlog, connect() waits.
            try:
                socks.append(socket.create_connection(("127.0.0.1", port),
                                                      timeout=2))
            except OSError:
                break
        rep.check(len(socks) >= 256, "emfile: only %d connections made"
                  % len(socks))
        hold = len(socks)
        time.sleep(1.0)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(3.0)
        cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        fds_full = open_fds(pid)
        # A new connection waits in the backlog: no answer yet.
        waiting = healthz_ms(port, timeout=1.0)
        for s in socks[:hold - 50]:
            s.close()
        socks = socks[hold - 50:]
        t1 = time.monotonic()
        ms = None
        while time.monotonic() - t1 < 5 and ms is None:
            ms = healthz_ms(port, timeout=2)
        recover = time.monotonic() - t1
        pauses = (metric(port, "gpuq_accept_pauses_total") or 0) - pauses0
    finally:
        for s in socks:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    rep.figure("emfile.fd_limit", 256)
    rep.figure("emfile.connections", hold)
    rep.figure("emfile.daemon_fds", fds_full)
    rep.figure("emfile.cpu_while_full", cpu * 100.0, "% of a core")
    rep.figure("emfile.healthz_while_full",
               "none (waits)" if waiting is None else "%.1f ms" % waiting)
    rep.figure("emfile.recovered_after", recover, "s")
    rep.figure("emfile.accept_pauses", int(pauses))
    rep.check(cpu < 0.10, "emfile: the daemon used %.0f%% of a core while "
              "out of descriptors" % (cpu * 100))
    rep.check(ms is not None, "emfile: no /healthz within 5 s after "
              "connections closed")
    rep.check(pauses >= 1, "emfile: gpuq_accept_pauses_total did not grow")
    time.sleep(0.5)
    rep.check(healthz_ms(port) is not None, "emfile: /healthz after")


def reload_timeout(w, rep, seconds):
    """Rewrites the daemon's request_timeout and reloads it (SIGHUP);
    waits for the reload to be applied."""
    with open(w.d.config) as f:
        text = f.read()
    import re
    text = re.sub(r"(?m)^request_timeout = .*$",
                  "request_timeout = %g" % seconds, text)
    with open(w.d.config, "w") as f:
        f.write(text)
    with open(w.d.log, "rb") as f:
        before = f.read().count(b"applied")
    os.kill(w.pid, 1)

    def applied():
        with open(w.d.log, "rb") as f:
            return f.read().count(b"applied") > before
    gpuqtest.wait_until(applied, timeout=10, what="the reload")


def phase_sse(w, rep, nsub, nevents, mode, threads=32):
    """nsub event streams (and 4 job streams) that never read, with a
    tiny receive buffer; about nevents events made by submit+cancel.

    mode "timeout": with request_timeout as configured, a stream whose
    writes make no progress for request_timeout is closed by libevent.
    mode "cap": with request_timeout raised to 120 s (a reload), the
    streams must be closed when over SSE_BACKLOG (1 MiB) waits unsent.
    Either way the daemon must not buffer without bound."""
    port, pid = w.port, w.pid
    tag = "sse_" + mode
    if mode == "cap":
        reload_timeout(w, rep, 120)
    dropped0 = metric(port, "gpuq_connections_closed_total",
                      reason="slow_reader") or 0
    rss0 = rss_kib(pid)
    subs = []
    try:
        for i in range(nsub):
            s = connect(port, rcvbuf=1024)
            s.sendall(http("GET", "/v1/events").replace(
                b"Connection: close\r\n", b""))
            subs.append(s)
        for _ in range(4):
            s = connect(port, rcvbuf=1024)
            s.sendall(http("GET", "/v1/jobs/%s/stream" % w.ids["queued"]))
            subs.append(s)
        time.sleep(0.5)
        parked = metric(port, "gpuq_parked_requests")
        rep.check(parked is not None and parked >= nsub,
                  "%s: %s parked, wanted >= %d" % (tag, parked, nsub))
        peak = [rss0]
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(pid) or 0)
                time.sleep(0.05)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        per = max(1, nevents // 2 // threads)
        errors = []

        def producer(k):
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            hdr = {"Authorization": "Bearer " + ADMIN,
                   "Content-Type": "application/json"}
            try:
                for i in range(per):
                    conn.request("POST", "/v1/jobs", json.dumps(
                        {"class": "batch", "metadata": {"k": str(k)}}), hdr)
                    r = conn.getresponse()
                    b = json.loads(r.read())
                    if r.status != 201:
                        errors.append((r.status, b))
                        return
                    conn.request("POST", "/v1/jobs/%s/cancel" % b["id"],
                                 None, {"Authorization": "Bearer " + ADMIN,
                                        "Content-Length": "0"})
                    r = conn.getresponse()
                    r.read()
            except Exception as e:  # reported below
                errors.append(repr(e))
            finally:
                conn.close()

        t0 = time.monotonic()
        ps = [threading.Thread(target=producer, args=(k,))
              for k in range(threads)]
        for p in ps:
            p.start()
        for p in ps:
            p.join(300)
        dt = time.monotonic() - t0
        time.sleep(0.5)
        rss_peak = peak[0]
        # The daemon must have let go of them: its parked count, and
        # each stream read to its end (the kernel still sends what the
        # daemon had written before it closed the socket).
        def gone():
            n = metric(port, "gpuq_parked_requests")
            return n is not None and n <= parked - nsub
        try:
            gpuqtest.wait_until(gone, timeout=REQUEST_TIMEOUT + 4,
                                interval=0.2, what="the streams to go")
        except AssertionError:
            pass
        parked_after = metric(port, "gpuq_parked_requests")
        got, closed = drain_all(subs[:nsub], 20.0)
        stop.set()
        th.join()
    finally:
        for s in subs:
            s.close()
        if mode == "cap":
            reload_timeout(w, rep, REQUEST_TIMEOUT)
    dropped = (metric(port, "gpuq_connections_closed_total",
                      reason="slow_reader") or 0) - dropped0
    rep.check(not errors, "%s: producers failed: %r" % (tag, errors[:3]))
    rep.figure(tag + ".subscribers", nsub)
    rep.figure(tag + ".events_made", 2 * per * threads)
    rep.figure(tag + ".events_rate", 2 * per * threads / dt, "events/s")
    rep.figure(tag + ".rss_before", rss0 / 1024.0, "MiB")
    rep.figure(tag + ".rss_peak", rss_peak / 1024.0, "MiB")
    rep.figure(tag + ".rss_after", rss_kib(pid) / 1024.0, "MiB")
    rep.figure(tag + ".dropped_by_cap", int(dropped))
    rep.figure(tag + ".closed_seen", closed)
    rep.figure(tag + ".bytes_read_max_per_stream", max(got) / 1024.0, "KiB")
    bound = nsub * (1024 + 256) + 32 * 1024
    check_memory(rep, rss_peak - rss0 <= bound,
                 "%s: RSS grew %.1f MiB with %d unread streams (bound "
                 "%.1f MiB)" % (tag, (rss_peak - rss0) / 1024.0, nsub,
                                bound / 1024.0))
    rep.figure(tag + ".parked_before_after", "%d %d" % (parked,
                                                       parked_after))
    rep.check(parked_after is not None and parked_after <= parked - nsub,
              "%s: %s parked after, %d before: the unread streams were "
              "not dropped" % (tag, parked_after, parked))
    rep.check(closed == nsub, "%s: %d of %d unread streams ended (EOF) "
              "when read" % (tag, closed, nsub))
    if mode == "cap":
        rep.check(dropped >= nsub, "%s: %d streams dropped for their "
                  "backlog, wanted %d" % (tag, dropped, nsub))


def drain_all(socks, timeout):
    """Reads every socket to EOF, together, for at most timeout seconds:
    ([bytes read from each], how many reached EOF)."""
    got = {s: 0 for s in socks}
    live = set(socks)
    for s in socks:
        s.setblocking(False)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        r, _, _ = select.select(list(live), [], [], 0.5)
        for s in r:
            try:
                data = s.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                live.discard(s)
            else:
                got[s] += len(data)
    return [got[s] for s in socks], len(socks) - len(live)


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer connections and events (about a minute)")
    ap.add_argument("--list", action="store_true", help="list the cases")
    ap.add_argument("--only", default=None,
                    help="run only the cases whose name has SUBSTR")
    ap.add_argument("--skip-storms", action="store_true",
                    help="the table only")
    ap.add_argument("--conns", type=int, default=None,
                    help="idle connections (default 10000, quick 2000)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    rep = Report("hostile")
    w = World(rep)
    failed = True
    try:
        if args.list:
            w.ids = {"lease": "j2.1", "lease_token": 1, "lock": "j3.2",
                     "lock_token": 2, "queued": "j1", "cancelled": "j4",
                     "leased_job": "j2", "waiting": "j5"}
            for i, c in enumerate(build_cases(w)):
                print("%3d  %-8s %s" % (i + 1, c.group, c.name))
            failed = False
            return 0
        raise_nofile(20000)
        w.start()
        rep.log("gpuqd pid %d on port %d; seeded %s", w.pid, w.port,
                ", ".join("%s=%s" % kv for kv in sorted(w.ids.items())))
        time.sleep(0.5)
        fds0, rss0 = open_fds(w.pid), rss_kib(w.pid)
        rep.figure("hostile.fds_start", fds0)
        rep.figure("hostile.rss_start", rss0 / 1024.0, "MiB")
        anon, filed = rss_parts(w.pid)
        rep.figure("hostile.rss_start_anon_file", "%.1f %.1f" % (
            anon / 1024.0, filed / 1024.0), "MiB")
        peak = [rss0]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_kib(w.pid) or 0)
                time.sleep(0.1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cases = build_cases(w)
        if args.only:
            cases = [c for c in cases if args.only in c.name]
        run_cases(w, rep, cases, args.verbose)
        if not args.skip_storms and not args.only:
            quick = args.quick
            rep.log("slowloris")
            phase_slowloris(w, rep, 10 if quick else 40)
            rep.log("idle connections")
            n = args.conns or (2000 if quick else 10000)
            phase_idle(w, rep, n)
            if not quick:
                # The memory the first storm left is reused, not added to.
                after1 = rss_kib(w.pid)
                rep.log("idle connections, again")
                phase_idle(w, rep, n, "idle2")
                check_memory(rep, rss_kib(w.pid) - after1 <= 8 * 1024,
                             "idle: RSS grew %.1f MiB more in a second "
                             "storm" % ((rss_kib(w.pid) - after1) / 1024.0))
            rep.log("out of file descriptors")
            phase_emfile(w, rep, 300)
            rep.log("event streams that never read: write timeout")
            phase_sse(w, rep, 16 if quick else 48, 2000 if quick else 6000,
                      "timeout")
            rep.log("event streams that never read: backlog cap")
            phase_sse(w, rep, 16 if quick else 48,
                      16000 if quick else 24000, "cap")
        # gpuqd gives free heap back every 10 s (http.c, trim_cb).
        time.sleep(11.0 if not args.skip_storms and not args.only else 1.0)
        sampling.set()
        sampler.join()
        rep.figure("hostile.rss_peak", peak[0] / 1024.0, "MiB")
        fds1, rss1 = open_fds(w.pid), rss_kib(w.pid)
        rep.figure("hostile.fds_end", fds1)
        rep.figure("hostile.rss_end", rss1 / 1024.0, "MiB")
        rep.figure("hostile.rss_growth", (rss1 - rss0) / 1024.0, "MiB")
        anon, filed = rss_parts(w.pid)
        rep.figure("hostile.rss_end_anon_file", "%.1f %.1f" % (
            anon / 1024.0, filed / 1024.0), "MiB")
        rep.check(fds1 <= fds0 + FD_SLACK, "fds: %d at the end, %d at the "
                  "start" % (fds1, fds0))
        check_memory(rep, rss1 - rss0 <= RSS_BOUND_KIB,
                     "RSS grew %.1f MiB (bound %.0f MiB)"
                     % ((rss1 - rss0) / 1024.0, RSS_BOUND_KIB / 1024.0))
        rep.check(w.d.alive(), "gpuqd is not running at the end")
        failed = bool(rep.violations)
    except Exception as e:  # a broken phase: a violation, with its trace
        import traceback
        traceback.print_exc()
        rep.check(False, "the campaign stopped: %r" % e)
    finally:
        w.stop(failed)
    if args.list:
        return 0
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
