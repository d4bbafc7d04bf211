"""Group commit: the changes of one event-loop turn share one transaction
(one fsync), and no reply that acknowledges a change leaves before it is
committed."""

import json
import re
import socket
import unittest

from gpuqtest import BASE_CONFIG, Daemon, GpuqTest


def metric(d, name):
    status, _, raw = d.request_raw("GET", "/metrics")
    m = re.search(r"^%s (\d+)$" % re.escape(name), raw.decode(), re.M)
    return int(m.group(1))


def read_reply(sock):
    """Reads one HTTP/1.1 reply with a Content-Length body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError("connection closed early")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    status = int(head.split()[1])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(4096)
    return status, json.loads(body)


class GroupCommitTest(GpuqTest):

    def test_one_commit_for_many_submits_in_a_turn(self):
        n = 40
        with Daemon(BASE_CONFIG) as d:
            before = metric(d, "gpuq_store_commits_total")
            socks = [socket.create_connection(("127.0.0.1", d.port), 5)
                     for _ in range(n)]
            body = json.dumps({"class": "transcription"}).encode()
            req = (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            # Every request is on the wire before the daemon reads any, so
            # the loop sees them in few turns.
            for s in socks:
                s.sendall(req)
            replies = [read_reply(s) for s in socks]
            for s in socks:
                s.close()
            self.assertEqual([st for st, _ in replies], [201] * n)
            commits = metric(d, "gpuq_store_commits_total") - before
            # The metrics scrape itself commits nothing.
            self.assertGreaterEqual(commits, 1)
            self.assertLess(commits, n // 2,
                            "%d commits for %d submits" % (commits, n))
            ids = sorted(int(j["id"][1:]) for _, j in replies)
            self.assertEqual(len(set(ids)), n)
            # Acknowledged means stored: all survive a kill -9.
            d.kill9()
            d.restart()
            stored = {j["id"] for j in d.jobs()}
            self.assertTrue({j["id"] for _, j in replies} <= stored)


if __name__ == "__main__":
    unittest.main()
