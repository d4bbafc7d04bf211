"""Hostile input (issue #5): a representative part of the hostile
campaign's table (tests/campaigns/hostile.py, run in full by `make
hostile-campaign`), and the daemon's defences against clients that abuse
connections (doc/api.md "Limits"):

- a request must arrive whole within request_timeout of its first byte
  (slowloris), while keep-alive clients and long-polls are left alone;
- out of file descriptors, gpuqd pauses accepting instead of spinning,
  and recovers; it raises its soft RLIMIT_NOFILE at start;
- event streams that are not read are dropped at their backlog;
- /v1/events?job= for no job is 404.
"""

import http.client
import json
import os
import resource
import socket
import sys
import threading
import time
import unittest

import gpuqtest
from gpuqtest import Daemon, GpuqTest

# Tests whose assertions are durations, CPU time or memory skip where
# every process is many times slower or its memory is not its own.
VALGRIND = getattr(gpuqtest, "VALGRIND", False)
ASAN = "ASAN_OPTIONS" in os.environ
TIMING = unittest.skipIf(VALGRIND, "durations under valgrind")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "campaigns"))
import common  # noqa: E402
import hostile  # noqa: E402
from hostile import exchange, healthz_ms, metric  # noqa: E402
from hostile import http as hreq  # noqa: E402

# Cases of the campaign's table run here (by name); none of them waits
# for a timeout.
SUBSET = [
    "submit: empty body",
    "submit: JSON array",
    "submit: unknown class",
    "submit: priority 2^63 (int64 overflow)",
    "submit: priority 1e309",
    "submit: queue_timeout 1e308",
    "submit: 10^5 nested [",
    "submit: invalid UTF-8 in a key",
    "submit: NUL escape in class",
    "submit: body over max_body (Content-Length)",
    "submit: Content-Length 200 MB (not sent)",
    "chunked body over max_body",
    "chunked: bad chunk size",
    "Content-Length negative",
    "header of 20 kB",
    "URL of 100 kB",
    "binary garbage",
    "pipelined garbage after a valid request",
    "get: job id j99999999999999999999",
    "list: limit 10^20",
    "events: unknown job",
    "heartbeat: wrong token",
    "unlock: wrong token",
    "auth: token prefix of a real one",
    "auth: submit token on another class",
    "audio_path ../../etc/passwd",
    "audio_path symlink escape (file)",
    "audio_path symlink escape (dir to /etc)",
    "audio_path /proc/self/environ",
    "inference: multipart without boundary",
    "inference: no file part",
    "openai chat: unknown X-Gpuq-Class",
]


class TableTest(GpuqTest):

    def test_subset_of_the_campaign(self):
        rep = common.Report("hostile-subset")
        w = hostile.World(rep)
        failed = True
        try:
            w.start()
            cases = {c.name: c for c in hostile.build_cases(w)}
            self.assertGreaterEqual(len(cases), 60)
            digest = common.store_digest(w.d.data)
            for name in SUBSET:
                with self.subTest(name):
                    c = cases[name]
                    r = exchange(w.port, c.data, timeout=c.timeout,
                                 head=c.head)
                    self.assertIsNone(hostile.judge(c, r), repr(r))
                    self.assertTrue(w.d.alive())
                    self.assertEqual(common.store_digest(w.d.data), digest,
                                     "%s changed the store" % name)
                    self.assertIsNotNone(healthz_ms(w.port))
            failed = False
        finally:
            w.stop(failed)


SLOW_CONFIG = """\
[server]
request_timeout = 1.5
drain_timeout = 2

[class batch]
"""


def dribble(port, first, data, every, limit):
    """Sends first, then data one byte every `every` seconds; returns
    the seconds until the daemon closed the connection (None: it did
    not within limit)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setblocking(False)
    t0 = time.monotonic()
    try:
        if first:
            s.sendall(first)
        pos = 0
        while time.monotonic() - t0 < limit:
            try:
                if s.recv(4096) == b"":
                    return time.monotonic() - t0
            except BlockingIOError:
                pass
            except OSError:
                return time.monotonic() - t0
            if pos < len(data):
                try:
                    s.send(data[pos:pos + 1])
                    pos += 1
                except BlockingIOError:
                    pass
                except OSError:
                    return time.monotonic() - t0
            time.sleep(every)
        return None
    finally:
        s.close()


class SlowClientTest(GpuqTest):

    @TIMING
    def test_slowloris_is_closed_after_request_timeout(self):
        with Daemon(SLOW_CONFIG) as d:
            head = hreq("POST", "/v1/jobs", token=None, cl=False,
                        headers=["X-Pad: " + "p" * 300])
            body = b'{"class": "batch"' + b" " * 300 + b"}"
            req = hreq("POST", "/v1/jobs", token=None, cl=False,
                       headers=["Content-Length: %d" % len(body)])
            out = {}
            ts = [threading.Thread(target=lambda k=k, a=a: out.__setitem__(
                k, dribble(d.port, a[0], a[1], 0.2, 6.0)))
                for k, a in (("headers", (b"", head)),
                             ("body", (req, body)),
                             ("idle", (b"", b"")))]
            for t in ts:
                t.start()
            # Others are served meanwhile.
            for _ in range(5):
                self.assertIsNotNone(healthz_ms(d.port))
                time.sleep(0.2)
            for t in ts:
                t.join(10)
            for k in ("headers", "body"):
                self.assertIsNotNone(out[k], "%s: not closed" % k)
                self.assertGreaterEqual(out[k], 1.4, k)
                self.assertLessEqual(out[k], 2.6, k)
            # An idle connection: evhttp's own timeout, now with the
            # fraction of request_timeout honoured.
            self.assertIsNotNone(out["idle"])
            self.assertGreaterEqual(out["idle"], 1.3)
            self.assertLessEqual(out["idle"], 2.5)
            # A request whose last byte comes after the deadline is not
            # served: 408 or nothing, and no job.
            body = b'{"class": "batch"}'
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            try:
                s.sendall(hreq("POST", "/v1/jobs", token=None, cl=False,
                               headers=["Content-Length: %d" % len(body)]))
                for b in body[:-1]:
                    s.sendall(bytes([b]))
                    time.sleep(0.07)
                time.sleep(0.5)
                s.sendall(body[-1:])
                r = hostile.read_reply(s, 5)
            finally:
                s.close()
            self.assertIn(r.status, (408, None), r)
            self.assertEqual(metric(d.port, "gpuq_connections_closed_total",
                                    reason="request_timeout"), 3)
            self.assertEqual(d.jobs(), [])
            with open(d.log) as f:
                log = f.read()
            self.assertEqual(log.count("did not arrive within "
                                       "request_timeout"), 1, log)

    @TIMING
    def test_keepalive_and_long_polls_are_not_cut(self):
        with Daemon(SLOW_CONFIG) as d:
            conn = http.client.HTTPConnection("127.0.0.1", d.port,
                                              timeout=10)
            try:
                # Requests on one connection over more than
                # request_timeout, idle gaps between them.
                conn.request("GET", "/healthz")
                self.assertEqual(conn.getresponse().read(),
                                 b'{"status":"ok"}\n')
                sock = conn.sock
                for _ in range(5):
                    time.sleep(0.5)
                    conn.request("GET", "/healthz")
                    r = conn.getresponse()
                    r.read()
                    self.assertEqual(r.status, 200)
                    self.assertIs(conn.sock, sock, "reconnected")
                # A long-poll longer than request_timeout, then the
                # same connection again.
                t0 = time.monotonic()
                conn.request("POST", "/v1/leases", json.dumps(
                    {"classes": ["batch"], "wait": 2.5}),
                    {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 204)
                self.assertGreaterEqual(time.monotonic() - t0, 2.4)
                conn.request("GET", "/healthz")
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                self.assertIs(conn.sock, sock, "reconnected")
            finally:
                conn.close()
            # A request sent in pieces, whole within request_timeout.
            body = json.dumps({"class": "batch"}).encode()
            data = hreq("POST", "/v1/jobs", body, token=None)
            r = exchange(d.port, [data[:20], data[20:60], data[60:]])
            self.assertEqual(r.status, 201, r)
            self.assertEqual(metric(d.port, "gpuq_connections_closed_total",
                                    reason="request_timeout"), 0)

    def test_metric_families(self):
        with Daemon(SLOW_CONFIG) as d:
            r = exchange(d.port, hreq("GET", "/metrics", token=None))
            text = r.body.decode()
            for fam in ("gpuq_connections_closed_total",
                        "gpuq_accept_pauses_total"):
                self.assertIn("# TYPE %s counter\n" % fam, text)
                self.assertIn("# HELP %s " % fam, text)
            self.assertIn('gpuq_connections_closed_total{reason='
                          '"slow_reader"} 0\n', text)
            self.assertIn("gpuq_accept_pauses_total 0\n", text)


class FileLimitTest(GpuqTest):

    @TIMING
    def test_out_of_descriptors_pauses_and_recovers(self):
        with Daemon(SLOW_CONFIG.replace("1.5", "30")) as d:
            pid = d.proc.pid
            old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, old[1]))
            socks = []
            try:
                for _ in range(100):
                    try:
                        socks.append(socket.create_connection(
                            ("127.0.0.1", d.port), timeout=1))
                    except OSError:
                        break
                self.assertGreaterEqual(len(socks), 64)
                time.sleep(0.5)
                self.assertEqual(common.open_fds(pid), 64)
                c0, t0 = hostile.cpu_seconds(pid), time.monotonic()
                time.sleep(1.5)
                cpu = (hostile.cpu_seconds(pid) - c0) / (time.monotonic()
                                                         - t0)
                self.assertLess(cpu, 0.15, "the daemon spins")
                for s in socks:
                    s.close()
                socks = []
                ms = None
                t1 = time.monotonic()
                while ms is None and time.monotonic() - t1 < 5:
                    ms = healthz_ms(d.port, timeout=2)
                self.assertIsNotNone(ms, "no /healthz after closing")
            finally:
                for s in socks:
                    s.close()
                resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
            self.assertGreaterEqual(metric(d.port,
                                           "gpuq_accept_pauses_total"), 1)
            with open(d.log) as f:
                log = f.read()
            n = log.count("not accepting connections for 100 ms")
            self.assertGreaterEqual(n, 1, log)
            self.assertLessEqual(n, 2, "not rate-limited")
            self.assertNotIn("Error from accept", log)

    @unittest.skipIf(VALGRIND, "valgrind keeps the process's "
                     "RLIMIT_NOFILE for itself (the client's setrlimit is "
                     "emulated): prlimit from outside sees valgrind's")
    def test_soft_limit_raised_at_start(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard <= 256:
            self.skipTest("hard limit %d" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        try:
            d = Daemon(SLOW_CONFIG)
            d.__enter__()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            got = resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE)
            want = hard if hard != resource.RLIM_INFINITY else 1 << 20
            self.assertEqual(got[0], min(want, 1 << 20), got)
        finally:
            d.__exit__(None, None, None)


LONG = "e" * 63   # long class name: bigger events

READER_CONFIG = """\
[server]
request_timeout = 60
drain_timeout = 2
max_parked = 64

[gpu]
slots = 1

[class %s]
lease_ttl = 600
""" % LONG


class SlowReaderTest(GpuqTest):

    @TIMING
    def test_unread_event_streams_are_dropped(self):
        with Daemon(READER_CONFIG) as d:
            pid = d.proc.pid
            st, body = d.lock(LONG, wait=5)
            self.assertEqual(st, 200, body)   # the one slot: held
            unread = []
            for _ in range(2):
                s = hostile.connect(d.port, rcvbuf=1024)
                s.sendall(hreq("GET", "/v1/events", token=None))
                unread.append(s)
            # A stream that is read keeps going.
            reader = hostile.connect(d.port)
            reader.sendall(hreq("GET", "/v1/events", token=None))
            got = [0]
            stop = threading.Event()

            def read():
                reader.settimeout(0.5)
                while not stop.is_set():
                    try:
                        data = reader.recv(1 << 16)
                    except socket.timeout:
                        continue
                    if not data:
                        break
                    got[0] += len(data)
            rt = threading.Thread(target=read, daemon=True)
            rt.start()
            time.sleep(0.3)
            rss0 = common.rss_kib(pid)
            done = threading.Event()
            errors = []

            def produce():
                conn = http.client.HTTPConnection("127.0.0.1", d.port,
                                                  timeout=10)
                body = json.dumps({"class": LONG, "wait": 0})
                try:
                    while not done.is_set():
                        # Queued, then expired at once: two events.
                        conn.request("POST", "/v1/locks", body,
                                     {"Content-Type": "application/json"})
                        r = conn.getresponse()
                        r.read()
                        if r.status != 408:
                            errors.append(r.status)
                            return
                except (OSError, http.client.HTTPException) as e:
                    errors.append(repr(e))
                finally:
                    conn.close()
            ps = [threading.Thread(target=produce) for _ in range(12)]
            for p in ps:
                p.start()
            peak = rss0
            try:
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline:
                    peak = max(peak, common.rss_kib(pid))
                    n = metric(d.port, "gpuq_connections_closed_total",
                               reason="slow_reader")
                    if n is not None and n >= 2:
                        break
                    time.sleep(0.2)
            finally:
                done.set()
                for p in ps:
                    p.join(15)
            self.assertEqual(errors, [])
            self.assertEqual(metric(d.port, "gpuq_connections_closed_total",
                                    reason="slow_reader"), 2)
            # Each dropped at about 1 MiB of gpuqd's memory.
            if not ASAN:
                self.assertLess(peak - rss0, 16 * 1024,
                                "RSS grew %d KiB" % (peak - rss0))
            # The reader was not dropped, and got the events.
            self.assertEqual(metric(d.port, "gpuq_parked_requests"), 1)
            stop.set()
            rt.join(5)
            self.assertGreater(got[0], 100000)
            lengths, eofs = hostile.drain_all(unread, 20)
            self.assertEqual(eofs, 2, lengths)
            for s in unread + [reader]:
                s.close()

    def test_events_for_no_job_is_404(self):
        with Daemon(READER_CONFIG) as d:
            job = d.submit(LONG)
            for q in ("j999999", "j0", "j99999999999999999999"):
                with self.subTest(q):
                    r = exchange(d.port, hreq("GET", "/v1/events?job=" + q,
                                              token=None))
                    self.assertIn(r.status, (400, 404), r)
                    self.assertEqual(r.json()["error"]["field"], "job")
            s = hostile.connect(d.port)
            try:
                s.sendall(hreq("GET", "/v1/events?job=" + job["id"],
                               token=None))
                r = hostile.read_reply(s, 5, head=True)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.headers.get("content-type"),
                                 "text/event-stream")
            finally:
                s.close()


if __name__ == "__main__":
    unittest.main()
