"""Server-Sent Events: GET /v1/events (doc/api.md "Events")."""

import json
import socket
import time
import unittest

from gpuqtest import Daemon, GpuqTest, Worker, scaled, wait_until

CONFIG = """\
[server]
drain_timeout = 5
max_parked = 3

[class chatbot]
priority = 10

[class transcription]
weight = 70

[class summarization]
weight = 30
"""


class EventStream:
    """An open /v1/events stream on a raw socket (http.client cannot go on
    reading after a socket timeout), read with bounded waits."""

    def __init__(self, d, query="", timeout=5.0):
        timeout = scaled(timeout)
        self.sock = socket.create_connection(("127.0.0.1", d.port),
                                             timeout=timeout)
        self.sock.sendall(("GET /v1/events%s HTTP/1.1\r\nHost: 127.0.0.1"
                           "\r\nAccept: text/event-stream\r\n\r\n"
                           % query).encode())
        self.raw = b""       # undecoded bytes after the headers
        self.body = b""      # decoded body bytes not yet parsed
        self.eof = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            if not self._fill(deadline):
                raise AssertionError("no reply headers from /v1/events "
                                     "within %.1fs: %r" % (timeout,
                                                           self.raw))
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding",
                                                     "").lower()
        self.length = self.headers.get("content-length")

    def _fill(self, deadline):
        """Reads more raw bytes; False at EOF or when deadline passes."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(min(left, 0.5))
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return True
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.raw += data
        return True

    def _decode(self):
        if not self.chunked:
            self.body += self.raw
            self.raw = b""
            return
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self.raw = rest[size + 2:]
            if size == 0:
                self.eof = True
                return

    def read_all(self, timeout=5.0):
        """The whole body of a non-stream reply (an error)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            self._decode()
            if self.length is not None and \
                    len(self.body) >= int(self.length):
                break
            if not self._fill(deadline):
                self._decode()
                break
        return self.body

    def events(self, until, timeout=10.0):
        """Reads events until until(list of events so far) is true or
        timeout passes; returns the data objects of `job` events."""
        out = []
        deadline = time.monotonic() + scaled(timeout)
        ev_type, data = None, []
        while True:
            self._decode()
            while b"\n" in self.body:
                line, self.body = self.body.split(b"\n", 1)
                line = line.decode("utf-8").rstrip("\r")
                if line == "":
                    if data and ev_type in (None, "job"):
                        out.append(json.loads("\n".join(data)))
                        if until(out):
                            return out
                    ev_type, data = None, []
                elif line.startswith(":"):
                    continue
                elif line.startswith("event:"):
                    ev_type = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
            if not self._fill(deadline):
                return out

    def close(self):
        self.sock.close()


class EventsTest(GpuqTest):

    def test_job_events_in_order_with_class_filter(self):
        with Daemon(CONFIG) as d:
            st = EventStream(d, "?class=transcription")
            try:
                self.assertEqual(st.status, 200)
                self.assertIn("text/event-stream",
                              st.headers.get("content-type", ""))
                other = d.submit("summarization")
                job = d.submit("transcription", payload=1)
                w = Worker(d, ["transcription"], wait=1)
                w.start()
                try:
                    w.wait_completed(1, timeout=5)
                finally:
                    w.stop()
                evs = st.events(lambda evs: any(
                    e["id"] == job["id"] and e["state"] == "succeeded"
                    for e in evs))
            finally:
                st.close()
            mine = [e for e in evs if e["id"] == job["id"]]
            self.assertEqual([e["state"] for e in mine],
                             ["queued", "running", "succeeded"], evs)
            self.assertFalse([e for e in evs if e["id"] == other["id"]],
                             "class filter let another class through")
            for e in evs:
                self.assertEqual(e["class"], "transcription")
            run = mine[1]
            self.assertEqual(run["attempts"], 1)
            self.assertEqual(run["slot"], 0)
            for e in mine:
                self.assertTime(e["at"])

    def test_job_filter(self):
        with Daemon(CONFIG) as d:
            b = d.submit("transcription", payload="b")
            a = d.submit("transcription", payload="a")
            st = EventStream(d, "?job=" + a["id"])
            try:
                self.assertEqual(st.status, 200)
                w = Worker(d, ["transcription"], wait=1)
                w.start()
                try:
                    done = w.wait_completed(2, timeout=5)
                finally:
                    w.stop()
                self.assertEqual([c[0] for c in done], [b["id"], a["id"]])
                evs = st.events(lambda evs: any(
                    e["state"] == "succeeded" for e in evs))
            finally:
                st.close()
            self.assertEqual({e["id"] for e in evs}, {a["id"]}, evs)
            self.assertEqual([e["state"] for e in evs],
                             ["running", "succeeded"])

    def test_every_stream_sees_cancel(self):
        with Daemon(CONFIG) as d:
            s1 = EventStream(d)
            s2 = EventStream(d, "?class=chatbot")
            try:
                job = d.submit("chatbot")
                d.request("POST", "/v1/jobs/%s/cancel" % job["id"])
                for st in (s1, s2):
                    evs = st.events(lambda evs: any(
                        e["state"] == "cancelled" for e in evs))
                    self.assertEqual([e["state"] for e in evs],
                                     ["queued", "cancelled"])
            finally:
                s1.close()
                s2.close()

    def test_streams_limited_by_max_parked(self):
        with Daemon(CONFIG) as d:
            streams = [EventStream(d) for _ in range(3)]
            try:
                for st in streams:
                    self.assertEqual(st.status, 200)
                extra = EventStream(d)
                try:
                    self.assertEqual(extra.status, 503, extra.headers)
                    body = json.loads(extra.read_all().decode())
                finally:
                    extra.close()
                self.assertError((503, body), 503, "busy")
                # A parked lease poll counts too.
                self.assertError(d.request("POST", "/v1/leases",
                                           {"classes": ["chatbot"],
                                            "wait": 5}), 503, "busy")
            finally:
                for st in streams:
                    st.close()

            # Closed streams give their places back.
            def opens():
                st = EventStream(d)
                ok = st.status == 200
                st.close()
                return ok
            wait_until(opens, 3, interval=0.2,
                       what="a stream after the others closed")

    def test_drain_ends_streams(self):
        with Daemon(CONFIG) as d:
            st = EventStream(d)
            try:
                self.assertEqual(st.status, 200)
                status, _, body = d.request("POST", "/v1/admin/drain", {})
                self.assertEqual(status, 202, body)
                st.events(lambda evs: False, timeout=5)
                self.assertTrue(st.eof, "the stream did not end on drain")
            finally:
                st.close()
            self.assertEqual(d.wait_exit(timeout=5), 0)


if __name__ == "__main__":
    unittest.main()
