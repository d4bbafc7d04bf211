#!/usr/bin/env python3
"""load - the load campaign (issue #5, "hardening"): many parked
connections, a deep queue, and a long soak, against the real gpuqd over
its public HTTP API on 127.0.0.1.

    make load-campaign ARGS="--phase parked,queued,soak --soak-seconds 600"
    GPUQD=$PWD/bin/gpuqd GPUQ=$PWD/bin/gpuq python3 tests/campaigns/load.py --quick

Phases (--phase, comma-separated; default all three, in this order):

parked   A daemon with max_parked = 25000 and 256 slots.  N parked lease
         long-polls (POST /v1/leases, wait 300, on class "parked", which
         has no jobs) and N event streams (GET /v1/events?class=sse) are
         opened with non-blocking sockets, one selector thread per
         process: the lease polls in this process, the streams in a
         child process (this file with --_sse-holder), because one
         process may hold only RLIMIT_NOFILE descriptors.  N is --parked
         (10000), lowered when the hard RLIMIT_NOFILE cannot hold 2N
         connections plus the daemon's own descriptors (reported).
         Figures: daemon RSS and fds at baseline, with the polls, with
         both, after closing; bytes per connection; /healthz and
         /v1/status latency while all are parked.  Liveness: after the
         request timeout has passed (35 s) every stream has had its
         pings; 5 jobs of class "sse" reach every stream (fan-out time);
         then N jobs of class "parked" are granted to the N parked polls,
         each completed on its own connection (grant count, rate).
         Everything is closed; fds must return to baseline.  Then
         --parked-rounds (3) in all: the connections are opened and
         closed again, and RSS after closing must stop growing (the
         last round adds at most 2 MiB; freed memory stays in malloc's
         heap, so RSS itself does not return to baseline).  Last, on a second
         daemon started with RLIMIT_NOFILE 256: connections beyond its
         fd limit (its CPU and log lines while accept() fails, and that
         every one is served once descriptors free up).
queued   --queued N (1000000) jobs submitted over HTTP (--conns keep-alive
         connections, one request in flight on each) to a daemon with
         [server] synchronous = off (the fill only measures the daemon's
         CPU path; the setting is reported).  Figures: submit rate, RSS
         and bytes per queued job, latency of GET /v1/status, /metrics,
         GET /v1/jobs?state=queued, GET /v1/jobs/{id} at depth, the
         submit + lease + complete cycle at depth (the queue stays at N),
         SIGTERM-to-exit and start-to-healthy times with N queued, and
         the count after the restart (must be exactly N, by the API and
         by the store).
soak     --soak-seconds S (600) of sustained load with synchronous = full
         (the default): --soak-threads (4) threads each submit a job,
         lease one and complete it, in a loop; an event stream reads
         every event; a poller reads /v1/status and a recent job every
         second.  retention = 60 s, so finished jobs fall due for purge
         during the soak (gpuqd purges every retention/4, 1 to 60 s; a
         soak of 120 s or more checks that the store keeps only about
         the last 90 s of finished jobs).  RSS, fds and store size are sampled
         every 10 s.  Figures: throughput, RSS after the warm-up
         (--warmup, 60 s) and at the end, the least-squares slope of RSS
         after the warm-up (KiB/min), fds, store growth.  Passes when RSS
         grows < 5 MiB after the warm-up, the slope is < 300 KiB/min,
         the fds are flat and nothing failed.

--quick: a smoke run (parked 500, queued 20000, soak 60 s, warm-up 20 s).

Figures are printed as "figure: load.PHASE.NAME = VALUE UNIT"; the last
line says "campaign load: passed" or "FAILED"; the exit status is
non-zero when an invariant broke.  Python 3 standard library only.
"""

import argparse
import errno
import http.client
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import common
from common import Report, open_fds, raise_nofile, rss_kib

gpuqtest = common.gpuqtest

HOST = "127.0.0.1"


# --- small helpers ----------------------------------------------------------

def pct(xs, q):
    """The q-quantile (0..1) of xs by rank; None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_s(pid):
    """User + system CPU seconds of process pid (all threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in
                       iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def lsq_slope(points):
    """Least-squares slope of [(x, y), ...]; 0 with fewer than 2."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def request_bytes(method, path, body=None):
    data = b""
    head = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, HOST)
    if body is not None:
        data = json.dumps(body, separators=(",", ":")).encode()
        head += "Content-Type: application/json\r\n"
    if body is not None or method in ("POST", "PUT", "PATCH"):
        head += "Content-Length: %d\r\n" % len(data)
    return head.encode() + b"\r\n" + data


def take_response(buf):
    """Removes one complete HTTP response from the front of bytearray buf
    and returns (status, headers dict, body bytes), or None if it is not
    all there yet.  Handles Content-Length, chunked and bodiless replies
    (not read-until-close ones)."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return None
    lines = bytes(buf[:i]).decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ValueError("bad status line %r" % lines[0])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    start = i + 4
    if status in (204, 304) or 100 <= status < 200:
        del buf[:start]
        return status, hdrs, b""
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        pos, body = start, bytearray()
        while True:
            j = buf.find(b"\r\n", pos)
            if j < 0:
                return None
            size = int(bytes(buf[pos:j]).split(b";")[0], 16)
            if len(buf) < j + 2 + size + 2:
                return None
            body += buf[j + 2:j + 2 + size]
            pos = j + 2 + size + 2
            if size == 0:
                del buf[:pos]
                return status, hdrs, bytes(body)
    n = int(hdrs.get("content-length", "0"))
    if len(buf) < start + n:
        return None
    body = bytes(buf[start:start + n])
    del buf[:start + n]
    return status, hdrs, body


class KeepAlive:
    """A blocking keep-alive HTTP/1.1 connection (http.client) that
    reconnects once if the server closed it while idle."""

    def __init__(self, port, timeout=30):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, timeout=None):
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    HOST, self.port, timeout=timeout or self.timeout)
            try:
                hdrs = {}
                if data is not None:
                    hdrs["Content-Type"] = "application/json"
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                raw = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                return resp.status, raw
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError, http.client.CannotSendRequest,
                    http.client.BadStatusLine):
                self.close()
                if attempt:
                    raise

    def json(self, method, path, body=None, timeout=None):
        status, raw = self.request(method, path, body, timeout)
        return status, gpuqtest.parse_json(raw)

    def timed(self, method, path, body=None):
        t0 = time.perf_counter()
        status, raw = self.request(method, path, body)
        return status, raw, time.perf_counter() - t0

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def metric(port, name):
    """The value of an unlabelled /metrics family, or None."""
    status, _, raw = gpuqtest.http_request(port, "GET", "/metrics",
                                           timeout=30)
    if status != 200:
        return None
    m = re.search(r"^%s (\S+)$" % re.escape(name), raw.decode(), re.M)
    return float(m.group(1)) if m else None


def lat_figs(rep, prefix, xs):
    """Reports p50/p99/max of latencies xs (seconds) in ms."""
    if not xs:
        rep.check(False, "%s: no samples" % prefix)
        return
    rep.figure(prefix + ".p50", pct(xs, 0.5) * 1e3, "ms")
    rep.figure(prefix + ".p99", pct(xs, 0.99) * 1e3, "ms")
    rep.figure(prefix + ".max", max(xs) * 1e3, "ms")


# --- a selector loop of non-blocking HTTP connections -------------------------

class Conn:
    """One non-blocking client connection.  on_resp(conn, status, hdrs,
    body) is called per complete response; on_data(conn, bytes) instead,
    when set, gets the raw bytes (event streams)."""

    __slots__ = ("sock", "out", "inb", "connected", "closed", "tag",
                 "on_resp", "on_data", "on_close", "peer_closed", "mask",
                 "error")

    def __init__(self, tag=None, on_resp=None, on_data=None, on_close=None):
        self.sock = None
        self.out = bytearray()
        self.inb = bytearray()
        self.connected = False
        self.closed = False
        self.peer_closed = False
        self.error = None
        self.tag = tag
        self.on_resp = on_resp
        self.on_data = on_data
        self.on_close = on_close
        self.mask = 0


class Loop:
    """Drives Conns with one selector in one thread."""

    def __init__(self, port):
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.connecting = 0
        self.nopen = 0
        self.extra = {}   # fd -> callback(mask) for non-Conn files

    def open(self, conn, first=b""):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock = s
        conn.out += first
        rc = s.connect_ex((HOST, self.port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(rc, os.strerror(rc))
        self.connecting += 1
        self.nopen += 1
        conn.mask = selectors.EVENT_WRITE | selectors.EVENT_READ
        self.sel.register(s, conn.mask, conn)
        return conn

    def send(self, conn, data):
        if conn.closed:
            return
        conn.out += data
        self._want(conn)

    def _want(self, conn):
        mask = selectors.EVENT_READ
        if conn.out or not conn.connected:
            mask |= selectors.EVENT_WRITE
        if mask != conn.mask:
            conn.mask = mask
            self.sel.modify(conn.sock, mask, conn)

    def close(self, conn, reset=False):
        if conn.closed:
            return
        if not conn.connected:
            self.connecting -= 1
        conn.closed = True
        self.nopen -= 1
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if reset:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.sock.close()
        if conn.on_close:
            conn.on_close(conn)

    def close_all(self):
        for key in list(self.sel.get_map().values()):
            if isinstance(key.data, Conn):
                self.close(key.data)
        self.sel.close()

    def poll(self, timeout):
        for key, mask in self.sel.select(timeout):
            if key.data is None or not isinstance(key.data, Conn):
                self.extra[key.fd](mask)
                continue
            conn = key.data
            if conn.closed:
                continue
            if mask & selectors.EVENT_WRITE:
                if not conn.connected:
                    err = conn.sock.getsockopt(socket.SOL_SOCKET,
                                               socket.SO_ERROR)
                    if err:
                        conn.error = os.strerror(err)
                        self.close(conn)
                        continue
                    conn.connected = True
                    self.connecting -= 1
                if conn.out:
                    try:
                        n = conn.sock.send(conn.out)
                        del conn.out[:n]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as e:
                        conn.error = str(e)
                        self.close(conn)
                        continue
                self._want(conn)
            if mask & selectors.EVENT_READ:
                try:
                    data = conn.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    conn.error = str(e)
                    self.close(conn)
                    continue
                if not data:
                    conn.peer_closed = True
                    self.close(conn)
                    continue
                if conn.on_data:
                    conn.on_data(conn, data)
                    continue
                conn.inb += data
                while True:
                    try:
                        r = take_response(conn.inb)
                    except ValueError as e:
                        conn.error = str(e)
                        self.close(conn)
                        break
                    if r is None:
                        break
                    if conn.on_resp:
                        conn.on_resp(conn, *r)

    def run(self, until, timeout, tick=None):
        """Polls until until() is true (returns True) or timeout seconds
        pass (returns False).  tick() is called between polls."""
        deadline = time.monotonic() + timeout
        while True:
            if until():
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            if tick:
                tick()
            self.poll(min(0.05, deadline - now))

    def open_many(self, n, make, window=64, timeout=300):
        """Opens n connections (make(i) -> (Conn, first bytes)), keeping
        at most window connects in flight.  Returns the Conns."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            while len(out) < n and self.connecting < window:
                c, first = make(len(out))
                out.append(self.open(c, first))
            self.poll(0.01)
        self.run(lambda: self.connecting == 0, 30)
        return out


class Pump:
    """conns keep-alive connections each sending the next request of
    next_req() (None: no more) as soon as the previous reply is in;
    on_resp(status, body) for each reply."""

    def __init__(self, loop, conns, next_req, on_resp):
        self.loop = loop
        self.next_req = next_req
        self.on_resp_cb = on_resp
        self.inflight = 0
        self.errors = []
        self.conns = []
        for i in range(conns):
            c = Conn(tag=i, on_resp=self._resp, on_close=self._closed)
            req = next_req()
            if req is None:
                break
            self.inflight += 1
            self.conns.append(loop.open(c, req))

    def _resp(self, conn, status, hdrs, body):
        self.inflight -= 1
        self.on_resp_cb(status, body)
        req = self.next_req()
        if req is not None:
            self.inflight += 1
            self.loop.send(conn, req)

    def _closed(self, conn):
        if self.inflight > 0 and not conn.tag == "done":
            self.errors.append("connection closed: %s" % (conn.error or
                                                          "by peer"))
            self.inflight -= 1

    def done(self):
        return self.inflight == 0

    def close(self):
        for c in self.conns:
            c.tag = "done"
            self.loop.close(c)


# --- the event-stream holder (a child process) --------------------------------

def sse_holder(port, n, path):
    """Child mode: holds n event streams on path and answers commands on
    stdin with one JSON line each on stdout:
      stats             counts so far
      expect ID,ID,...  the job ids every stream must see
      wait-all S        waits up to S s until every open stream saw them
      close             closes every stream (FIN) and exits."""
    raise_nofile(n + 64)
    loop = Loop(port)
    subs = []
    expected = set()
    st = {"ok": 0, "refused": 0, "other": 0}

    class Sub:
        __slots__ = ("status", "raw", "msgs", "events", "pings", "ids",
                     "hello")

    def on_data(conn, data):
        s = conn.tag
        s.raw += data
        if s.status is None:
            i = s.raw.find(b"\r\n\r\n")
            if i < 0:
                return
            try:
                s.status = int(bytes(s.raw[:i]).split(b" ", 2)[1])
            except (IndexError, ValueError):
                s.status = -1
            del s.raw[:i + 4]
            if s.status == 200:
                st["ok"] += 1
            elif s.status == 503:
                st["refused"] += 1
            else:
                st["other"] += 1
        if s.status != 200:
            s.raw.clear()
            return
        # The body is chunked: decode the complete chunks into msgs.
        while True:
            j = s.raw.find(b"\r\n")
            if j < 0:
                break
            try:
                size = int(bytes(s.raw[:j]).split(b";")[0], 16)
            except ValueError:
                conn.error = "bad chunk"
                s.raw.clear()
                break
            if len(s.raw) < j + 2 + size + 2:
                break
            s.msgs += s.raw[j + 2:j + 2 + size]
            del s.raw[:j + 4 + size]
        # Every complete SSE message ends with a blank line.
        while True:
            k = s.msgs.find(b"\n\n")
            if k < 0:
                break
            msg = bytes(s.msgs[:k])
            del s.msgs[:k + 2]
            if msg.startswith(b"event: job\n"):
                s.events += 1
                m = re.search(rb'"id":"(j[0-9]+)"', msg)
                if m:
                    s.ids.add(m.group(1).decode())
            elif msg == b": ping":
                s.pings += 1
            elif msg == b": gpuq events":
                s.hello = True

    def make(i):
        s = Sub()
        s.status, s.raw, s.msgs, s.events, s.pings = (None, bytearray(),
                                                      bytearray(), 0, 0)
        s.ids, s.hello = set(), False
        return (Conn(tag=s, on_data=on_data),
                request_bytes("GET", path))

    def stats():
        live = [c for c in subs if not c.closed]
        ev = [c.tag.events for c in live]
        pings = [c.tag.pings for c in live]
        return {"opened": len(subs), "open": len(live),
                "closed_by_peer": sum(1 for c in subs if c.peer_closed),
                "errors": sum(1 for c in subs if c.error),
                "ok": st["ok"], "refused": st["refused"],
                "other": st["other"],
                "hello": sum(1 for c in live if c.tag.hello),
                "events_min": min(ev) if ev else 0,
                "events_total": sum(ev),
                "pings_min": min(pings) if pings else 0,
                "with_all": sum(1 for c in live
                                if expected <= c.tag.ids)}

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    t0 = time.monotonic()
    subs = loop.open_many(n, make)
    loop.run(lambda: st["ok"] + st["refused"] + st["other"] >= n, 120)
    r = stats()
    r["open_s"] = time.monotonic() - t0
    reply(r)
    cmdbuf = bytearray()
    cmds = []

    def on_stdin(mask):
        data = os.read(0, 4096)
        if not data:
            cmds.append("close")
        cmdbuf.extend(data)
        while b"\n" in cmdbuf:
            line, _, rest = bytes(cmdbuf).partition(b"\n")
            cmdbuf[:] = rest
            cmds.append(line.decode().strip())

    loop.sel.register(0, selectors.EVENT_READ, None)
    loop.extra[0] = on_stdin
    while True:
        loop.poll(0.05)
        while cmds:
            cmd = cmds.pop(0)
            if cmd == "stats":
                reply(stats())
            elif cmd.startswith("expect "):
                expected = set(x for x in cmd.split(" ", 1)[1].split(",")
                               if x)
                reply({"expect": len(expected)})
            elif cmd.startswith("wait-all "):
                limit = float(cmd.split()[1])
                t1 = time.monotonic()
                ok = loop.run(
                    lambda: all(expected <= c.tag.ids
                                for c in subs if not c.closed), limit)
                r = stats()
                r["all"] = ok
                r["wait_s"] = time.monotonic() - t1
                reply(r)
            elif cmd == "close":
                for c in subs:
                    loop.close(c)
                reply({"closed": len(subs)})
                return 0


class Holder:
    """The parent's end of an sse_holder child."""

    def __init__(self, port, n, path):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--_sse-holder",
             str(port), str(n), path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)

    def read(self, timeout):
        import select
        p = select.poll()    # select() is limited to fds below 1024
        p.register(self.proc.stdout, select.POLLIN)
        if not p.poll(timeout * 1000):
            raise AssertionError("sse holder: no answer in %.0f s" % timeout)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("sse holder exited (status %s)"
                                 % self.proc.poll())
        return json.loads(line)

    def cmd(self, text, timeout=60):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def close(self):
        if self.proc.poll() is None:
            try:
                r = self.cmd("close", 60)
            except (AssertionError, OSError, ValueError):
                r = None
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            return r
        return None


# --- phase 1: parked ------------------------------------------------------------

PARKED_CONFIG = """\
[server]
max_parked = 25000
drain_timeout = 5

[gpu]
slots = 256

[class parked]
max_queue = 200000
lease_ttl = 600

[class sse]
max_queue = 1000
"""


def settle(fn, timeout, what):
    """Waits (bounded) until fn() is true; returns whether it became so."""
    try:
        gpuqtest.wait_until(fn, timeout, 0.2, what)
        return True
    except AssertionError:
        return False


def phase_parked(rep, args):
    loops = []
    try:
        _parked(rep, args, loops)
    finally:
        for lp in loops:   # after a failure too: 10^4 sockets
            lp.close_all()
    if not args.skip_fdlimit:
        fdlimit_check(rep, args)


def _parked(rep, args, loops):
    want = args.parked
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = raise_nofile(max(2 * want + 512, 4096))
    rep.figure("load.parked.rlimit_nofile", soft, "fds")
    with gpuqtest.Daemon(PARKED_CONFIG) as d:
        pid, port = d.proc.pid, d.port
        ka = KeepAlive(port)
        for _ in range(20):
            ka.request("GET", "/healthz")
            ka.request("GET", "/v1/status")
        time.sleep(0.5)
        base_rss, base_fds = rss_kib(pid), open_fds(pid)
        # The daemon also needs its own descriptors (store, listener,
        # the keep-alive connections here): 2N + those + a margin must fit.
        n = min(want, (soft - base_fds - 40) // 2)
        rep.figure("load.parked.per_kind", n, "connections")
        if n < want:
            rep.log("RLIMIT_NOFILE %d (hard %s) holds 2 x %d connections, "
                    "not 2 x %d", soft, hard, n, want)
        rep.figure("load.parked.rss_base", base_rss, "KiB")
        rep.figure("load.parked.fds_base", base_fds, "fds")
        loop = Loop(port)
        loops.append(loop)

        # -- N parked lease polls ------------------------------------------
        leases = {"granted": 0, "completed": 0, "204": 0, "refused": 0,
                  "other": [], "complete_bad": []}

        def lease_resp(conn, status, hdrs, body):
            if conn.tag.get("lease") is None:
                if status == 200:
                    b = json.loads(body)
                    conn.tag["lease"] = b
                    leases["granted"] += 1
                    loop.send(conn, request_bytes(
                        "POST", "/v1/leases/%s/complete" % b["lease_id"],
                        {"token": b["token"], "result": {"ok": 1}}))
                elif status == 204:
                    leases["204"] += 1
                elif status == 503:
                    leases["refused"] += 1
                else:
                    leases["other"].append((status, body[:200]))
            else:
                if status == 200:
                    leases["completed"] += 1
                else:
                    leases["complete_bad"].append((status, body[:200]))

        def make_lease(i):
            return (Conn(tag={"i": i}, on_resp=lease_resp),
                    request_bytes("POST", "/v1/leases",
                                  {"classes": ["parked"], "wait": 300,
                                   "worker": "p%d" % i}))

        t0 = time.monotonic()
        polls = loop.open_many(n, make_lease)
        ok = settle(lambda: (loop.poll(0), metric(port, "gpuq_parked_requests")
                             == n)[1], 120, "%d parked lease polls" % n)
        rep.check(ok, "parked: %d lease polls not all parked (metric %s; "
                  "refused %d, other %r)"
                  % (n, metric(port, "gpuq_parked_requests"),
                     leases["refused"], leases["other"][:3]))
        rep.figure("load.parked.lease_open_s", time.monotonic() - t0, "s")
        time.sleep(1)
        rss_l, fds_l = rss_kib(pid), open_fds(pid)
        rep.figure("load.parked.rss_with_polls", rss_l, "KiB")
        rep.figure("load.parked.bytes_per_lease_poll",
                   (rss_l - base_rss) * 1024 / max(n, 1), "B")

        # -- N event streams, held by a child process ------------------------
        t0 = time.monotonic()
        holder = Holder(port, n, "/v1/events?class=sse")
        try:
            h = holder.read(300)
            rep.log("streams: %r", h)
            rep.check(h["ok"] == n and h["hello"] == n,
                      "parked: %d event streams asked, %d answered 200 "
                      "with the hello comment %d, refused %d, other %d"
                      % (n, h["ok"], h["hello"], h["refused"], h["other"]))
            ok = settle(lambda: (loop.poll(0),
                                 metric(port, "gpuq_parked_requests")
                                 == 2 * n)[1], 60, "all parked")
            rep.check(ok, "parked: gpuq_parked_requests is %s, not %d"
                      % (metric(port, "gpuq_parked_requests"), 2 * n))
            rep.figure("load.parked.sse_open_s", time.monotonic() - t0, "s")
            time.sleep(1)
            rss_all, fds_all = rss_kib(pid), open_fds(pid)
            t_all = time.monotonic()
            rep.figure("load.parked.rss_all_parked", rss_all, "KiB")
            rep.figure("load.parked.fds_all_parked", fds_all, "fds")
            rep.figure("load.parked.bytes_per_sse_stream",
                       (rss_all - rss_l) * 1024 / max(n, 1), "B")
            rep.figure("load.parked.bytes_per_connection",
                       (rss_all - base_rss) * 1024 / max(2 * n, 1), "B")

            # -- latency while all are parked --------------------------------
            cpu0 = cpu_s(pid)
            lat_ka, lat_fresh, lat_status = [], [], []
            for _ in range(200):
                st, _, dt = ka.timed("GET", "/healthz")
                rep.check(st == 200, "parked: /healthz %d" % st)
                lat_ka.append(dt)
            for _ in range(100):
                t1 = time.perf_counter()
                st, _, _ = gpuqtest.http_request(port, "GET", "/healthz")
                lat_fresh.append(time.perf_counter() - t1)
                rep.check(st == 200, "parked: /healthz (new conn) %d" % st)
            for _ in range(50):
                st, _, dt = ka.timed("GET", "/v1/status")
                lat_status.append(dt)
            lat_figs(rep, "load.parked.healthz_keepalive", lat_ka)
            lat_figs(rep, "load.parked.healthz_new_conn", lat_fresh)
            lat_figs(rep, "load.parked.status", lat_status)
            _, body = ka.json("GET", "/v1/status")
            waiting = {c["name"]: c["workers_waiting"]
                       for c in body["classes"]}
            rep.check(waiting.get("parked") == n,
                      "parked: workers_waiting %r, expected %d"
                      % (waiting, n))

            # -- hold past request_timeout (30 s) and two pings (15 s) -------
            hold = 35 if not args.quick else 16
            left = t_all + hold - time.monotonic()
            if left > 0:
                rep.log("holding %.0f s (request_timeout, pings)", left)
                loop.run(lambda: False, left)
            rep.figure("load.parked.idle_cpu_per_s",
                       (cpu_s(pid) - cpu0) / (time.monotonic() - t_all),
                       "s/s")
            h = holder.cmd("stats")
            rep.log("streams after %d s: %r", hold, h)
            rep.check(h["open"] == n and h["closed_by_peer"] == 0,
                      "parked: %d of %d streams open after %d s (%d closed "
                      "by the daemon)" % (h["open"], n, hold,
                                          h["closed_by_peer"]))
            rep.check(h["pings_min"] >= (2 if hold >= 30 else 1),
                      "parked: some stream got only %d pings in %d s"
                      % (h["pings_min"], hold))
            rep.check(metric(port, "gpuq_parked_requests") == 2 * n,
                      "parked: not all still parked after %d s" % hold)
            rep.check(all(not c.closed for c in polls),
                      "parked: %d lease polls closed while parked"
                      % sum(1 for c in polls if c.closed))

            # -- fan-out: 5 jobs of class sse reach every stream -------------
            t1 = time.monotonic()
            ids = []
            for i in range(5):
                st, b = ka.json("POST", "/v1/jobs",
                                {"class": "sse", "payload": {"i": i}})
                rep.check(st == 201, "parked: submit sse %d" % st)
                ids.append(b["id"])
            t_sub = time.monotonic() - t1
            holder.cmd("expect " + ",".join(ids))
            h = holder.cmd("wait-all 60", 90)
            fan = time.monotonic() - t1
            rep.check(h["all"] and h["with_all"] == n,
                      "parked: only %d of %d streams saw all 5 events"
                      % (h["with_all"], n))
            rep.figure("load.parked.fanout_submits_s", t_sub, "s")
            rep.figure("load.parked.fanout_5_events_s", fan, "s")
            rep.figure("load.parked.fanout_deliveries_per_s",
                       5 * n / max(fan, 1e-9), "events/s")

            # -- grants: N jobs to the N parked polls ------------------------
            cpu0 = cpu_s(pid)
            t1 = time.monotonic()
            sub = iter(range(n))

            def next_submit():
                i = next(sub, None)
                if i is None:
                    return None
                return request_bytes("POST", "/v1/jobs",
                                     {"class": "parked",
                                      "payload": {"i": i}})

            bad_submits = []
            pump = Pump(loop, 16, next_submit,
                        lambda st, b: st == 201 or bad_submits.append(st))
            ok = loop.run(lambda: leases["completed"] + len(
                leases["complete_bad"]) >= n and pump.done(), 240)
            dt = time.monotonic() - t1
            pump.close()
            rep.check(ok and not bad_submits,
                      "parked: %d grants, %d completes of %d in %.0f s "
                      "(bad submits %r)" % (leases["granted"],
                                            leases["completed"], n, dt,
                                            bad_submits[:5]))
            rep.check(leases["granted"] == n and leases["completed"] == n
                      and not leases["complete_bad"]
                      and not leases["other"] and leases["204"] == 0,
                      "parked: grants %d, completes %d of %d; 204s %d, "
                      "other %r, bad completes %r"
                      % (leases["granted"], leases["completed"], n,
                         leases["204"], leases["other"][:3],
                         leases["complete_bad"][:3]))
            granted = sum(1 for c in polls if c.tag.get("lease"))
            rep.figure("load.parked.polls_granted", granted, "polls")
            rep.figure("load.parked.grant_complete_s", dt, "s")
            rep.figure("load.parked.grants_per_s", granted / max(dt, 1e-9),
                       "grants/s")
            rep.figure("load.parked.grant_cpu", cpu_s(pid) - cpu0, "s")
            rep.figure("load.parked.rss_after_grants", rss_kib(pid), "KiB")
        finally:
            h = holder.close()
        rep.log("streams closed: %r", h)
        for c in polls:
            loop.close(c)
        ok = settle(lambda: metric(port, "gpuq_parked_requests") == 0 and
                    open_fds(pid) <= base_fds + 2, 60,
                    "parked requests and fds back to baseline")
        time.sleep(1)
        rss_after, fds_after = rss_kib(pid), open_fds(pid)
        rep.figure("load.parked.rss_after_close", rss_after, "KiB")
        rep.figure("load.parked.fds_after_close", fds_after, "fds")
        rep.check(ok and fds_after <= base_fds + 2,
                  "parked: fds %d after closing, baseline %d (parked %s)"
                  % (fds_after, base_fds,
                     metric(port, "gpuq_parked_requests")))
        # Freed memory stays in malloc's heap (glibc rarely returns it to
        # the kernel) and SQLite's caches fill as the store grows, so RSS
        # after closing is no leak test by itself.  The test is repeating:
        # more rounds open and close every connection again (no grants);
        # RSS after closing must stop growing (what a leak cannot do).
        rep.figure("load.parked.rss_retained_after_close",
                   rss_after - base_rss, "KiB")
        closed = [rss_after]
        for rnd in range(2, args.parked_rounds + 1):
            t1 = time.monotonic()
            polls = loop.open_many(n, make_lease)
            holder = Holder(port, n, "/v1/events?class=sse")
            try:
                h = holder.read(300)
                ok = settle(lambda: (loop.poll(0), metric(
                    port, "gpuq_parked_requests") == 2 * n)[1], 120,
                    "round %d all parked" % rnd)
                rep.check(ok and h["ok"] == n,
                          "parked round %d: parked %s, streams ok %d"
                          % (rnd, metric(port, "gpuq_parked_requests"),
                             h["ok"]))
                time.sleep(1)
                rep.figure("load.parked.round%d_rss_all_parked" % rnd,
                           rss_kib(pid), "KiB")
            finally:
                holder.close()
            for c in polls:
                loop.close(c)
            settle(lambda: metric(port, "gpuq_parked_requests") == 0 and
                   open_fds(pid) <= base_fds + 2, 60,
                   "round %d closed" % rnd)
            time.sleep(1)
            closed.append(rss_kib(pid))
            rep.figure("load.parked.round%d_rss_after_close" % rnd,
                       closed[-1], "KiB")
            rep.figure("load.parked.round%d_s" % rnd,
                       time.monotonic() - t1, "s")
            rep.check(open_fds(pid) <= base_fds + 2,
                      "parked: round %d left %d fds (baseline %d)"
                      % (rnd, open_fds(pid), base_fds))
        if len(closed) >= 3:
            # 2 MiB for 2N connections (100 B each at N = 10^4).
            step = closed[-1] - closed[-2]
            rep.figure("load.parked.rss_growth_last_round", step, "KiB")
            rep.check(step <= 2048,
                      "parked: RSS after closing still grows: %s KiB by "
                      "round" % closed)
        ka.close()
        rep.check(d.alive(), "parked: gpuqd died")


def proc_nofile(pid):
    """The soft RLIMIT_NOFILE of process pid (from /proc), or None."""
    try:
        with open("/proc/%d/limits" % pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        return None
    return None


def fdlimit_check(rep, args):
    """Connections beyond the daemon's RLIMIT_NOFILE, on a daemon started
    with RLIMIT_NOFILE 256 (soft and hard): accept() fails with EMFILE while they wait
    in the listen backlog.  Measures the daemon's CPU and log lines while
    that lasts, and checks that every one is served once descriptors
    free up."""
    # gpuqd may raise its soft limit to the hard one, so both are set,
    # by a shell that then execs it (same pid).
    d = gpuqtest.Daemon(PARKED_CONFIG)
    wrap = os.path.join(d.tmp, "gpuqd-nofile-256")
    with open(wrap, "w") as f:
        f.write('#!/bin/sh\nulimit -n 256 || exit 99\nexec "%s" "$@"\n'
                % gpuqtest.GPUQD)
    os.chmod(wrap, 0o755)
    real, gpuqtest.GPUQD = gpuqtest.GPUQD, wrap
    try:
        d.__enter__()
    finally:
        gpuqtest.GPUQD = real
    try:
        _fdlimit(rep, d)
    except BaseException:
        d.__exit__(*sys.exc_info())
        raise
    d.__exit__(None, None, None)


def _fdlimit(rep, d):
    loop = Loop(d.port)
    try:
        _fdlimit2(rep, d, loop)
    finally:
        loop.close_all()


def _fdlimit2(rep, d, loop):
    pid = d.proc.pid
    ka = KeepAlive(d.port)
    ka.request("GET", "/healthz")
    time.sleep(0.2)
    limit = proc_nofile(pid)
    free = limit - open_fds(pid)
    extra_n = free + 20
    log0, lines0 = file_size(d.log), count_lines(d.log)
    answered = []
    recovering = [False]

    answered_conns = []

    def resp(conn, status, hdrs, body):
        answered.append(status)
        answered_conns.append(conn)
        # While the limit is measured the answered ones stay open (the
        # daemon keeps their descriptors); then they are closed.
        if recovering[0]:
            loop.close(conn)

    t0 = time.monotonic()
    extras = loop.open_many(
        extra_n, lambda i: (Conn(tag=i, on_resp=resp),
                            request_bytes("GET", "/healthz")), window=32)
    loop.run(lambda: len(answered) >= free, 5)
    loop.run(lambda: False, 0.5)
    full_fds = open_fds(pid)
    lat = []
    t1 = time.monotonic()
    cpu1, lines1 = cpu_s(pid), count_lines(d.log)
    while time.monotonic() - t1 < 3.0:
        st, _, dt = ka.timed("GET", "/healthz")
        lat.append(dt)
        loop.run(lambda: False, 0.05)
    el = time.monotonic() - t1
    cpu_rate = (cpu_s(pid) - cpu1) / el
    lines_rate = (count_lines(d.log) - lines1) / el
    rep.figure("load.parked.fdlimit_daemon_limit", limit, "fds")
    rep.figure("load.parked.fdlimit_daemon_fds_full", full_fds, "fds")
    rep.figure("load.parked.fdlimit_extra_connections", extra_n, "conns")
    rep.figure("load.parked.fdlimit_answered_while_full", len(answered),
               "conns")
    rep.figure("load.parked.fdlimit_daemon_cpu", cpu_rate, "s/s")
    rep.figure("load.parked.fdlimit_log_lines_per_s", lines_rate, "lines/s")
    lat_figs(rep, "load.parked.fdlimit_healthz_keepalive", lat)
    # Recovery: close the answered ones; every extra must be answered.
    recovering[0] = True
    t2 = time.monotonic()
    k = len(answered)
    for c in answered_conns:
        loop.close(c)
    ok = loop.run(lambda: len(answered) >= extra_n or
                  any(c.closed and c.error for c in extras), 60)
    rep.figure("load.parked.fdlimit_answered", len(answered), "conns")
    rep.figure("load.parked.fdlimit_recover_s", time.monotonic() - t2, "s")
    rep.figure("load.parked.fdlimit_log_bytes",
               file_size(d.log) - log0, "B")
    rep.check(ok and len(answered) == extra_n and
              all(s == 200 for s in answered),
              "parked: %d of %d connections beyond the fd limit answered "
              "(statuses %r, errors %r)"
              % (len(answered), extra_n, sorted(set(answered)),
                 [c.error for c in extras if c.error][:3]))
    rep.check(d.alive(), "parked: gpuqd died at the fd limit")
    rep.check(cpu_rate < 0.5 and lines_rate < 100,
              "parked: at the fd limit gpuqd used %.2f s of CPU per s and "
              "logged %.0f lines per s" % (cpu_rate, lines_rate))
    for c in extras:
        loop.close(c)
    ka.close()
    rep.log("fd limit: %d extra, %d answered while full, cpu %.2f s/s, "
            "%.0f log lines/s, %d log lines in all", extra_n, k, cpu_rate,
            lines_rate, count_lines(d.log) - lines0)


# --- phase 2: queued ----------------------------------------------------------

QUEUED_CONFIG = """\
[server]
synchronous = off
drain_timeout = 5

[gpu]
slots = 1

[class deep]
max_queue = %d
lease_ttl = 600
"""


def phase_queued(rep, args):
    n = args.queued
    rep.figure("load.queued.target", n, "jobs")
    rep.figure("load.queued.synchronous", "off")
    with gpuqtest.Daemon(QUEUED_CONFIG % (n + 100000)) as d:
        pid, port = d.proc.pid, d.port
        ka = KeepAlive(port, timeout=120)
        for _ in range(20):
            ka.request("GET", "/healthz")
            ka.request("GET", "/v1/status")
        time.sleep(0.5)
        empty_rss = rss_kib(pid)
        rep.figure("load.queued.rss_empty", empty_rss, "KiB")

        # -- fill ----------------------------------------------------------
        loop = Loop(port)
        sent = [0]
        got = {"201": 0, "bad": []}
        payload_tpl = b'{"class":"deep","payload":{"n":%d}}'

        def next_req():
            if sent[0] >= n:
                return None
            sent[0] += 1
            body = payload_tpl % sent[0]
            return (b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body)) + body

        def on_resp(st, body):
            if st == 201:
                got["201"] += 1
            else:
                got["bad"].append((st, body[:200]))

        t0 = time.monotonic()
        cpu0 = cpu_s(pid)
        pump = Pump(loop, args.conns, next_req, on_resp)
        last = [t0, 0]
        rates = []

        def tick():
            now = time.monotonic()
            if now - last[0] >= 10:
                r = (got["201"] - last[1]) / (now - last[0])
                rates.append(r)
                rep.log("queued: %d/%d submitted, %.0f jobs/s, RSS %d KiB",
                        got["201"], n, r, rss_kib(pid))
                last[:] = [now, got["201"]]

        ok = loop.run(lambda: pump.done() or len(got["bad"]) > 100,
                      args.fill_timeout, tick)
        fill_s = time.monotonic() - t0
        fill_cpu = cpu_s(pid) - cpu0
        pump.close()
        rep.check(ok and got["201"] == n and not got["bad"]
                  and not pump.errors,
                  "queued: %d of %d submits got 201 in %.0f s (bad %r, "
                  "errors %r)" % (got["201"], n, fill_s, got["bad"][:3],
                                  pump.errors[:3]))
        n_ok = got["201"]
        rep.figure("load.queued.submitted", n_ok, "jobs")
        rep.figure("load.queued.fill_s", fill_s, "s")
        rep.figure("load.queued.fill_rate", n_ok / max(fill_s, 1e-9),
                   "jobs/s")
        if rates:
            rep.figure("load.queued.fill_rate_first_10s", rates[0], "jobs/s")
            rep.figure("load.queued.fill_rate_last_10s", rates[-1],
                       "jobs/s")
        rep.figure("load.queued.fill_conns", args.conns, "conns")
        rep.figure("load.queued.fill_daemon_cpu_per_job",
                   fill_cpu / max(n_ok, 1) * 1e6, "us")
        # The checkpoint thread copies the fill's WAL into the database
        # after it: let it finish (the daemon idle for a second), so the
        # read latencies below are the daemon's, not the checkpoint's.
        t1 = time.monotonic()
        while time.monotonic() - t1 < 120:
            c0 = cpu_s(pid)
            time.sleep(1)
            if cpu_s(pid) - c0 < 0.05:
                break
        rep.figure("load.queued.settle_after_fill_s", time.monotonic() - t1,
                   "s")
        db = common.store_path(d.data)
        rep.figure("load.queued.wal_mib_after_fill",
                   file_size(db + "-wal") / 1048576, "MiB")
        rss_depth = rss_kib(pid)
        rep.figure("load.queued.rss_at_depth", rss_depth, "KiB")
        rep.figure("load.queued.bytes_per_job",
                   (rss_depth - empty_rss) * 1024 / max(n_ok, 1), "B")

        # -- reads at depth -------------------------------------------------
        def lat_of(path, k, name, check=None):
            xs = []
            for _ in range(k):
                st, raw, dt = ka.timed("GET", path)
                rep.check(st == 200, "queued: GET %s -> %d" % (path, st))
                xs.append(dt)
            lat_figs(rep, "load.queued." + name, xs)
            return raw

        raw = lat_of("/v1/status", 50, "status")
        body = json.loads(raw)
        q = [c["queued"] for c in body["classes"] if c["name"] == "deep"]
        rep.check(q == [n_ok], "queued: status says %r queued, expected %d"
                  % (q, n_ok))
        lat_of("/metrics", 50, "metrics")
        lat_of("/v1/jobs?state=queued&limit=100", 50, "list_queued")
        lat_of("/v1/jobs/j%d" % max(1, n_ok // 2), 20, "get_middle_job")
        raw = lat_of("/v1/jobs/j%d" % max(1, n_ok), 20, "get_last_job")
        pos = (gpuqtest.parse_json(raw) or {}).get("position")
        rep.check(pos == n_ok, "queued: the last job's position is %r, "
                  "expected %d" % (pos, n_ok))

        # -- the cycle at depth: submit + lease + complete --------------------
        lat_s, lat_l, lat_c = [], [], []
        cycles = args.cycles
        for i in range(cycles + 20):
            st, _, ds = ka.timed("POST", "/v1/jobs",
                                 {"class": "deep", "payload": {"c": i}})
            st2, raw, dl = ka.timed("POST", "/v1/leases",
                                    {"classes": ["deep"], "wait": 5,
                                     "worker": "cycle"})
            if st != 201 or st2 != 200:
                rep.check(False, "queued: cycle %d: submit %d lease %d"
                          % (i, st, st2))
                break
            g = json.loads(raw)
            st3, _, dc = ka.timed("POST", "/v1/leases/%s/complete"
                                  % g["lease_id"],
                                  {"token": g["token"], "result": {}})
            rep.check(st3 == 200, "queued: complete %d" % st3)
            if i >= 20:
                lat_s.append(ds)
                lat_l.append(dl)
                lat_c.append(dc)
        lat_figs(rep, "load.queued.cycle_submit", lat_s)
        lat_figs(rep, "load.queued.cycle_lease", lat_l)
        lat_figs(rep, "load.queued.cycle_complete", lat_c)
        lat_figs(rep, "load.queued.cycle_total",
                 [a + b + c for a, b, c in zip(lat_s, lat_l, lat_c)])
        ka.close()

        # -- restart with N queued ---------------------------------------------
        rep.figure("load.queued.store_mib",
                   (file_size(db) + file_size(db + "-wal")) / 1048576, "MiB")
        t0 = time.monotonic()
        d.stop(timeout=120)
        rep.figure("load.queued.sigterm_to_exit_s", time.monotonic() - t0,
                   "s")
        gpuqtest.START_TIMEOUT = 300.0
        t0 = time.monotonic()
        d.start()
        restart_s = time.monotonic() - t0
        rep.figure("load.queued.start_to_healthy_s", restart_s, "s")
        rep.check(restart_s <= 10.0,
                  "queued: restart with %d queued took %.1f s" % (n_ok,
                                                                  restart_s))
        pid, port = d.proc.pid, d.port
        ka = KeepAlive(port, timeout=120)
        st, body = ka.json("GET", "/v1/status")
        q = [c["queued"] for c in body["classes"] if c["name"] == "deep"]
        rep.figure("load.queued.after_restart_api", q[0] if q else -1,
                   "jobs")
        rep.check(q == [n_ok] and n_ok == n,
                  "queued: %r queued after restart, expected exactly %d"
                  % (q, n))
        rows = common.store_rows(d.data,
                                 "SELECT count(*) FROM jobs WHERE state = 0")
        rep.figure("load.queued.after_restart_store", rows[0][0], "jobs")
        rep.check(rows[0][0] == n, "queued: the store holds %d queued, "
                  "expected %d" % (rows[0][0], n))
        time.sleep(1)
        rss_r = rss_kib(pid)
        rep.figure("load.queued.rss_after_restart", rss_r, "KiB")
        rep.figure("load.queued.bytes_per_job_after_restart",
                   (rss_r - empty_rss) * 1024 / max(n_ok, 1), "B")
        lat_xs = []
        for _ in range(10):
            st, _, dt = ka.timed("GET", "/v1/status")
            lat_xs.append(dt)
        lat_figs(rep, "load.queued.status_after_restart", lat_xs)
        ka.close()
        t0 = time.monotonic()
        d.stop(timeout=120)
        rep.figure("load.queued.final_stop_s", time.monotonic() - t0, "s")


# --- phase 3: soak ------------------------------------------------------------

SOAK_CONFIG = """\
[server]
retention = 60
drain_timeout = 5

[gpu]
slots = %d

[class soak]
max_queue = 100000
lease_ttl = 60
"""


def phase_soak(rep, args):
    secs = args.soak_seconds
    warm = min(args.warmup, secs / 3)
    threads_n = args.soak_threads
    rep.figure("load.soak.seconds", secs, "s")
    rep.figure("load.soak.threads", threads_n, "threads")
    rep.figure("load.soak.synchronous", "full")
    with gpuqtest.Daemon(SOAK_CONFIG % threads_n) as d:
        pid, port = d.proc.pid, d.port
        db = common.store_path(d.data)
        stop = threading.Event()
        stop_sse = threading.Event()
        counts = [0] * threads_n
        errors = []
        last_id = [None]

        def cycler(k):
            c = KeepAlive(port)
            i = 0
            while not stop.is_set():
                try:
                    st, b = c.json("POST", "/v1/jobs",
                                   {"class": "soak",
                                    "payload": {"t": k, "i": i},
                                    "metadata": {"k": str(k)}})
                    if st != 201:
                        errors.append(("submit", st, b))
                        time.sleep(0.1)
                        continue
                    last_id[0] = b["id"]
                    st, b = c.json("POST", "/v1/leases",
                                   {"classes": ["soak"], "wait": 5,
                                    "worker": "w%d" % k})
                    if st == 204:
                        continue
                    if st != 200:
                        errors.append(("lease", st, b))
                        time.sleep(0.1)
                        continue
                    st, b = c.json("POST", "/v1/leases/%s/complete"
                                   % b["lease_id"],
                                   {"token": b["token"],
                                    "result": {"ok": True, "i": i}})
                    if st != 200:
                        errors.append(("complete", st, b))
                        continue
                    counts[k] += 1
                    i += 1
                except (OSError, http.client.HTTPException) as e:
                    errors.append(("exception", repr(e)))
                    time.sleep(0.1)
            c.close()

        sse = {"events": 0, "bytes": 0, "error": None}
        sse_ready = threading.Event()

        def sse_reader():
            try:
                s = socket.create_connection((HOST, port), timeout=30)
                s.sendall(request_bytes("GET", "/v1/events"))
                s.settimeout(1.0)
                tail = b""
                while not stop_sse.is_set():
                    try:
                        data = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        sse["error"] = "closed by the daemon"
                        break
                    sse["bytes"] += len(data)
                    if b": gpuq events" in data:
                        sse_ready.set()
                    buf = tail + data
                    sse["events"] += buf.count(b"event: job\n")
                    tail = buf[-10:]   # shorter than a match
                s.close()
            except OSError as e:
                sse["error"] = repr(e)

        polls = {"n": 0, "bad": []}

        def poller():
            c = KeepAlive(port)
            while not stop.wait(1.0):
                try:
                    st, _ = c.request("GET", "/v1/status")
                    if st != 200:
                        polls["bad"].append(("status", st))
                    if last_id[0]:
                        st, _ = c.request("GET", "/v1/jobs/" + last_id[0])
                        if st != 200:
                            polls["bad"].append(("job", st))
                    polls["n"] += 1
                except (OSError, http.client.HTTPException) as e:
                    polls["bad"].append(repr(e))
            c.close()

        ths = [threading.Thread(target=cycler, args=(k,), daemon=True)
               for k in range(threads_n)]
        ths.append(threading.Thread(target=sse_reader, daemon=True))
        ths.append(threading.Thread(target=poller, daemon=True))
        ths[threads_n].start()     # the stream first: it must see every job
        rep.check(sse_ready.wait(10), "soak: the event stream did not start")
        t0 = time.monotonic()
        cpu0 = cpu_s(pid)
        for t in ths:
            if not t.is_alive() and t is not ths[threads_n]:
                t.start()
        samples = []   # (t, rss KiB, fds, done, db bytes, wal bytes)
        next_t = t0
        while True:
            now = time.monotonic()
            if now >= next_t:
                s = (now - t0, rss_kib(pid), open_fds(pid), sum(counts),
                     file_size(db), file_size(db + "-wal"))
                samples.append(s)
                rep.log("soak: t=%4.0fs RSS %6d KiB fds %3d done %8d db "
                        "%.1f MiB wal %.1f MiB", s[0], s[1], s[2], s[3],
                        s[4] / 1048576, s[5] / 1048576)
                next_t += 10
            if now - t0 >= secs or not d.alive():
                break
            time.sleep(min(1.0, max(0.0, next_t - time.monotonic())))
        stop.set()
        for t in ths[:threads_n]:
            t.join(20)
        el = time.monotonic() - t0
        done = sum(counts)
        time.sleep(2)          # the stream catches up with the last jobs
        stop_sse.set()
        for t in ths[threads_n:]:
            t.join(20)
        cpu = cpu_s(pid) - cpu0
        s_end = (el, rss_kib(pid), open_fds(pid), done, file_size(db),
                 file_size(db + "-wal"))
        samples.append(s_end)
        rep.check(d.alive(), "soak: gpuqd died")
        after = [s for s in samples if s[0] >= warm]
        if not after:
            after = samples[-2:]
        w = after[0]
        rep.figure("load.soak.duration", el, "s")
        rep.figure("load.soak.warmup", w[0], "s")
        rep.figure("load.soak.jobs_completed", done, "jobs")
        rep.figure("load.soak.throughput", done / el, "jobs/s")
        rep.figure("load.soak.throughput_after_warmup",
                   (done - w[3]) / max(el - w[0], 1e-9), "jobs/s")
        rep.figure("load.soak.daemon_cpu_per_job", cpu / max(done, 1) * 1e6,
                   "us")
        rep.figure("load.soak.rss_start", samples[0][1], "KiB")
        rep.figure("load.soak.rss_after_warmup", w[1], "KiB")
        rep.figure("load.soak.rss_end", s_end[1], "KiB")
        rep.figure("load.soak.rss_max_after_warmup",
                   max(s[1] for s in after), "KiB")
        growth = s_end[1] - w[1]
        slope = lsq_slope([(s[0] / 60.0, s[1]) for s in after])
        rep.figure("load.soak.rss_growth_after_warmup", growth, "KiB")
        rep.figure("load.soak.rss_slope", slope, "KiB/min")
        rep.figure("load.soak.rss_samples", len(after), "samples")
        fds = [s[2] for s in after if s is not s_end]
        rep.figure("load.soak.fds_after_stop", s_end[2], "fds")
        rep.figure("load.soak.fds_min", min(fds), "fds")
        rep.figure("load.soak.fds_max", max(fds), "fds")
        store_growth = (s_end[4] + s_end[5]) - (w[4] + w[5])
        rep.figure("load.soak.store_mib_end",
                   (s_end[4] + s_end[5]) / 1048576, "MiB")
        rep.figure("load.soak.wal_mib_max",
                   max(s[5] for s in samples) / 1048576, "MiB")
        rep.figure("load.soak.store_bytes_per_job_after_warmup",
                   store_growth / max(done - w[3], 1), "B")
        rows = common.store_rows(d.data, "SELECT count(*), "
                                 "sum(state >= 2) FROM jobs")
        rep.figure("load.soak.jobs_rows_at_end", rows[0][0], "rows")
        ev_rows = common.store_rows(d.data, "SELECT count(*) FROM "
                                    "job_events")[0][0]
        rep.figure("load.soak.event_rows_at_end", ev_rows, "rows")
        finished = rows[0][1] or 0
        purged = done - finished
        rep.figure("load.soak.purged_during_soak", purged, "jobs")
        rep.figure("load.soak.finished_rows_at_end", finished, "rows")
        # retention = 60 s, purged every 15 s: what finished in the last
        # 60 + 15 s (+ 15 s of slack) may be stored, no more.
        bound = int((done - w[3]) / max(el - w[0], 1e-9) * 90) + 100
        if secs >= 120:
            rep.check(purged > 0 and finished <= bound,
                      "soak: %d finished jobs stored at the end (%d purged); "
                      "retention 60 s at this rate allows about %d"
                      % (finished, purged, bound))
        rep.figure("load.soak.sse_events", sse["events"], "events")
        rep.figure("load.soak.status_polls", polls["n"], "polls")
        rep.check(not errors, "soak: %d request errors, first %r"
                  % (len(errors), errors[:3]))
        rep.check(not polls["bad"], "soak: poller errors %r"
                  % polls["bad"][:3])
        rep.check(sse["error"] is None, "soak: event stream: %s"
                  % sse["error"])
        # Every completed job was queued, running and succeeded.
        rep.check(sse["events"] >= 3 * done,
                  "soak: the event stream got %d events for %d jobs"
                  % (sse["events"], done))
        rep.check(done > 0, "soak: nothing completed")
        rep.check(growth < 5 * 1024,
                  "soak: RSS grew %d KiB after the warm-up" % growth)
        rep.check(slope < 300,
                  "soak: RSS slope %.0f KiB/min after the warm-up" % slope)
        rep.check(max(fds) - min(fds) <= 4,
                  "soak: fds went from %d to %d" % (min(fds), max(fds)))


# --- main ---------------------------------------------------------------------

PHASES = ("parked", "queued", "soak")


def main(argv):
    if len(argv) >= 2 and argv[1] == "--_sse-holder":
        return sse_holder(int(argv[2]), int(argv[3]), argv[4])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", default=",".join(PHASES),
                    help="comma-separated: parked,queued,soak")
    ap.add_argument("--quick", action="store_true", help="a smoke run")
    ap.add_argument("--parked", type=int, default=None,
                    help="lease polls and event streams, each (10000)")
    ap.add_argument("--queued", type=int, default=None,
                    help="jobs to queue (1000000)")
    ap.add_argument("--conns", type=int, default=32,
                    help="connections submitting the queue (32)")
    ap.add_argument("--cycles", type=int, default=None,
                    help="submit+lease+complete cycles at depth (500)")
    ap.add_argument("--fill-timeout", type=float, default=1800,
                    help="seconds allowed to fill the queue (1800)")
    ap.add_argument("--soak-seconds", type=float, default=None,
                    help="length of the soak (600)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="soak warm-up excluded from the RSS trend (60)")
    ap.add_argument("--soak-threads", type=int, default=4,
                    help="submit+lease+complete threads (4)")
    ap.add_argument("--parked-rounds", type=int, default=3,
                    help="times the parked connections are opened and "
                    "closed (3; the last two are compared)")
    ap.add_argument("--skip-fdlimit", action="store_true",
                    help="leave out the fd-limit check of the parked phase")
    args = ap.parse_args(argv[1:])
    q = args.quick
    if args.parked is None:
        args.parked = 500 if q else 10000
    if args.queued is None:
        args.queued = 20000 if q else 1000000
    if args.cycles is None:
        args.cycles = 100 if q else 500
    if args.soak_seconds is None:
        args.soak_seconds = 60 if q else 600
    if args.warmup is None:
        args.warmup = 20 if q else 60
    phases = [p.strip() for p in args.phase.split(",") if p.strip()]
    for p in phases:
        if p not in PHASES:
            ap.error("unknown phase %r (parked, queued, soak)" % p)
    rep = Report("load")
    rep.log("gpuqd %s; phases %s; nice %d; %s", gpuqtest.GPUQD,
            ",".join(phases), os.nice(0), " ".join(argv[1:]) or "defaults")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for p in PHASES:
        if p not in phases:
            continue
        t0 = time.monotonic()
        rep.log("phase %s", p)
        try:
            {"parked": phase_parked, "queued": phase_queued,
             "soak": phase_soak}[p](rep, args)
        except Exception as e:  # noqa: BLE001 - reported, next phase
            import traceback
            traceback.print_exc()
            rep.check(False, "%s: %s: %s" % (p, type(e).__name__, e))
        rep.figure("load.%s.phase_s" % p, time.monotonic() - t0, "s")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
