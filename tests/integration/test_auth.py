"""test_auth - access control (doc/api.md "Access control", doc/config.md
[token NAME], [auth], [server] allow_remote and unix_socket): API tokens
keep an unauthorised client out (401 without or with a bad token, 403
for a role or class the token lacks, nothing changed either way), each
role gets its routes, /healthz stays open, a listen address beyond
loopback is refused without tokens, and the Unix-socket listener has
its mode and the same rules.  Every request goes to 127.0.0.1 or the
Unix socket; a daemon bound to 0.0.0.0 is only started and stopped.

    cd tests/integration && GPUQD=../../bin/gpuqd python3 -m unittest -v \
        test_auth
"""

import http.client
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

from gpuqtest import (BASE_CONFIG, GPUQD, Daemon, GpuqTest, parse_json,
                      scaled, wait_until)

ADMIN = "admin-secret-0123456789"
WORKER = "worker-secret-0123456789"
SUBMIT = "submit-secret-0123456789"
CHAT = "chat-only-secret-0123456789"           # submit, chatbot only
TWORK = "transcription-worker-secret-0123"     # worker, transcription only

TOKENS = """
[token ops]
secret = %s
role = admin

[token gpu-box]
secret = %s
role = worker

[token app]
secret = %s
role = submit

[token chat-app]
secret = %s
role = submit
classes = chatbot

[token whisper-box]
secret = %s
role = worker
classes = transcription
""" % (ADMIN, WORKER, SUBMIT, CHAT, TWORK)

CONFIG = BASE_CONFIG + TOKENS


def bearer(secret):
    return {"Authorization": "Bearer " + secret}


def call(d, method, path, body=None, token=None, headers=None, timeout=10):
    """(status, headers, parsed body) of one request with a token."""
    h = dict(headers or {})
    if token is not None:
        h.update(bearer(token))
    return d.request(method, path, body, headers=h, timeout=timeout)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def read(path):
    """The text of path, or None when it does not exist."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def unix_request(path, method, url, token=None):
    conn = UnixHTTPConnection(path)
    try:
        conn.request(method, url, headers=bearer(token) if token else {})
        resp = conn.getresponse()
        return resp.status, parse_json(resp.read())
    finally:
        conn.close()


class AuthTest(GpuqTest):

    def assert401(self, reply, invalid):
        """A 401 with its WWW-Authenticate (error="invalid_token" when a
        token was sent)."""
        self.assertError(reply, 401, "unauthorized", field="Authorization")
        got = reply[1].get("www-authenticate", "")
        self.assertTrue(got.startswith('Bearer realm="gpuq"'), got)
        self.assertEqual('error="invalid_token"' in got, invalid, got)

    def assert403(self, reply, *words, field=Ellipsis):
        self.assertError(reply, 403, "forbidden", field=field)
        for w in words:
            self.assertIn(w, reply[2]["error"]["message"])

    def jobs(self, d):
        st, _, body = call(d, "GET", "/v1/jobs?limit=1000", token=ADMIN)
        self.assertEqual(st, 200, body)
        return body["jobs"]

    # -- who gets in -----------------------------------------------------

    def test_no_token_is_401_and_changes_nothing(self):
        with Daemon(CONFIG) as d:
            for method, path, body in [
                    ("GET", "/v1/status", None),
                    ("GET", "/v1/jobs", None),
                    ("POST", "/v1/jobs", {"class": "chatbot"}),
                    ("POST", "/v1/leases", {"classes": ["chatbot"]}),
                    ("POST", "/v1/locks", {"class": "chatbot"}),
                    ("GET", "/v1/events", None),
                    ("GET", "/metrics", None),
                    ("POST", "/v1/admin/drain", {}),
                    ("POST", "/v1/chat/completions", {"messages": []})]:
                self.assert401(call(d, method, path, body), invalid=False)
            self.assertEqual(self.jobs(d), [])
            self.assertTrue(d.alive())

    def test_bad_tokens_are_401(self):
        with Daemon(CONFIG) as d:
            # Near misses of every kind: the constant-time comparison must
            # still tell them apart from the real ones.
            bad = ["wrong", ADMIN[:-1], ADMIN + "x", "x" + ADMIN[1:],
                   ADMIN[:-1] + "Y", ADMIN.upper(), "a" * 4096,
                   ADMIN + " " + ADMIN]
            for secret in bad:
                self.assert401(call(d, "GET", "/v1/status", token=secret),
                               invalid=True)
            for header in ["Basic " + ADMIN, "Bearer", "Bearer ", ADMIN,
                           "Token " + ADMIN, "Bearer\u00a0x"]:
                self.assert401(call(d, "GET", "/v1/status",
                                    headers={"Authorization": header}),
                               invalid=True)
            # The scheme is case-insensitive; blanks around are fine.
            for header in ["bearer " + ADMIN, "BEARER  " + ADMIN + "  "]:
                st, _, body = call(d, "GET", "/v1/status",
                                   headers={"Authorization": header})
                self.assertEqual(st, 200, body)
            # Each token answers as itself.
            for secret in (ADMIN, WORKER, SUBMIT, CHAT, TWORK):
                st, _, body = call(d, "GET", "/v1/status", token=secret)
                self.assertEqual(st, 200, body)
            st, _, raw = d.request_raw("GET", "/metrics",
                                       headers=bearer(SUBMIT))
            self.assertEqual(st, 200)
            refused = re.search(r'^gpuq_auth_refused_total'
                                r'\{code="unauthorized"\} (\d+)$',
                                raw.decode(), re.M)
            self.assertIsNotNone(refused)
            self.assertEqual(int(refused.group(1)), len(bad) + 6)

    def test_healthz_and_dashboard_are_open(self):
        with Daemon(CONFIG) as d:
            st, _, body = d.request("GET", "/healthz")
            self.assertEqual((st, body), (200, {"status": "ok"}))
            # A browser cannot send a token when it opens the page: the
            # dashboard's files are served to anyone (or 404 where the
            # build has none), its API calls need a token.
            st, _, _ = d.request_raw("GET", "/")
            self.assertIn(st, (200, 404))
            self.assert401(call(d, "GET", "/v1/status"), invalid=False)
            # Unknown routes and methods answer as before, token or not.
            self.assertError(call(d, "GET", "/v1/nosuch"), 404, "not_found")
            self.assertEqual(call(d, "PUT", "/v1/status")[0], 405)

    # -- roles -----------------------------------------------------------

    def test_roles(self):
        with Daemon(CONFIG) as d:
            st, _, job = call(d, "POST", "/v1/jobs",
                              {"class": "transcription"}, token=SUBMIT)
            self.assertEqual(st, 201, job)
            # submit: no leases, no admin.
            self.assert403(call(d, "POST", "/v1/leases",
                                {"classes": ["transcription"]},
                                token=SUBMIT),
                           "app", "submit", "worker", field=None)
            self.assert403(call(d, "POST", "/v1/admin/drain", {},
                                token=SUBMIT), "admin")
            # worker: leases, and everything submit may do.
            st, _, g = call(d, "POST", "/v1/leases",
                            {"classes": ["transcription"], "wait": 5},
                            token=WORKER, timeout=15)
            self.assertEqual(st, 200, g)
            self.assertEqual(g["job"]["id"], job["id"])
            st, _, body = call(d, "POST",
                               "/v1/leases/%s/heartbeat" % g["lease_id"],
                               {"token": g["token"]}, token=WORKER)
            self.assertEqual(st, 200, body)
            self.assert403(call(d, "POST",
                                "/v1/leases/%s/complete" % g["lease_id"],
                                {"token": g["token"]}, token=SUBMIT),
                           "worker")
            st, _, body = call(d, "POST",
                               "/v1/leases/%s/complete" % g["lease_id"],
                               {"token": g["token"], "result": 1},
                               token=WORKER)
            self.assertEqual(st, 200, body)
            self.assertEqual(body["state"], "succeeded")
            self.assert403(call(d, "POST", "/v1/admin/drain", {},
                                token=WORKER), "gpu-box", "admin")
            self.assertTrue(d.alive())
            # admin: the drain, and the daemon goes.
            st, _, body = call(d, "POST", "/v1/admin/drain", {"deadline": 1},
                               token=ADMIN)
            self.assertEqual((st, body), (202, {"draining": True}))
            self.assertEqual(d.wait_exit(), 0)

    # -- classes -----------------------------------------------------------

    def test_class_restrictions(self):
        with Daemon(CONFIG) as d:
            st, _, other = call(d, "POST", "/v1/jobs",
                                {"class": "transcription"}, token=ADMIN)
            self.assertEqual(st, 201, other)
            oid = other["id"]
            # Submitting to another class: 403 naming the class.
            self.assert403(call(d, "POST", "/v1/jobs",
                                {"class": "transcription"}, token=CHAT),
                           "chat-app", "transcription", field="class")
            self.assert403(call(d, "POST", "/v1/locks",
                                {"class": "summarization"}, token=CHAT),
                           "summarization", field="class")
            st, _, mine = call(d, "POST", "/v1/jobs", {"class": "chatbot"},
                               token=CHAT)
            self.assertEqual(st, 201, mine)
            # Another class's job, by id: no reading, cancelling, waiting
            # on, depending on or following it.
            for method, path in [("GET", "/v1/jobs/" + oid),
                                 ("POST", "/v1/jobs/%s/cancel" % oid),
                                 ("POST", "/v1/jobs/%s/requeue" % oid),
                                 ("GET", "/v1/jobs/%s/stream" % oid)]:
                self.assert403(call(d, method, path, token=CHAT),
                               "transcription")
            self.assert403(call(d, "POST", "/v1/jobs",
                                {"class": "chatbot", "depends_on": [oid]},
                                token=CHAT),
                           "transcription", field="depends_on")
            self.assert403(call(d, "GET", "/v1/events?job=" + oid,
                                token=CHAT), "transcription", field="job")
            self.assert403(call(d, "GET", "/v1/events?class=transcription",
                                token=CHAT), "transcription", field="class")
            self.assert403(call(d, "GET", "/v1/jobs?class=transcription",
                                token=CHAT), "transcription", field="class")
            # Its own class works; a list without a class is its class.
            st, _, body = call(d, "GET", "/v1/jobs/" + mine["id"],
                               token=CHAT)
            self.assertEqual(st, 200, body)
            st, _, body = call(d, "GET", "/v1/jobs", token=CHAT)
            self.assertEqual(st, 200, body)
            self.assertEqual([j["id"] for j in body["jobs"]], [mine["id"]])
            st, _, body = call(d, "POST",
                               "/v1/jobs/%s/cancel" % mine["id"],
                               token=CHAT)
            self.assertEqual((st, body["state"]), (200, "cancelled"))
            # Nothing of the other class changed.
            st, _, body = call(d, "GET", "/v1/jobs/" + oid, token=ADMIN)
            self.assertEqual(body["state"], "queued")
            self.assertEqual(body["attempts"], 0)
            # A class-restricted worker leases its classes only.
            self.assert403(call(d, "POST", "/v1/leases",
                                {"classes": ["transcription", "chatbot"]},
                                token=TWORK),
                           "whisper-box", "chatbot", field="classes")
            st, _, g = call(d, "POST", "/v1/leases",
                            {"classes": ["transcription"], "wait": 5},
                            token=TWORK, timeout=15)
            self.assertEqual(st, 200, g)
            self.assertEqual(g["job"]["id"], oid)
            st, _, body = call(d, "POST",
                               "/v1/leases/%s/complete" % g["lease_id"],
                               {"token": g["token"]}, token=TWORK)
            self.assertEqual(st, 200, body)

    def test_status_hides_other_classes_holders(self):
        with Daemon(CONFIG) as d:
            call(d, "POST", "/v1/jobs",
                 {"class": "transcription", "metadata": {"who": "x"}},
                 token=ADMIN)
            st, _, g = call(d, "POST", "/v1/leases",
                            {"classes": ["transcription"], "wait": 5,
                             "worker": "box-7"}, token=WORKER, timeout=15)
            self.assertEqual(st, 200, g)
            slot = call(d, "GET", "/v1/status", token=ADMIN)[2]["slots"][0]
            self.assertEqual((slot["holder"], slot["metadata"]),
                             ("box-7", {"who": "x"}))
            slot = call(d, "GET", "/v1/status", token=CHAT)[2]["slots"][0]
            self.assertEqual(slot["job"], g["job"]["id"])
            self.assertIsNone(slot["holder"])
            self.assertIsNone(slot["metadata"])

    # -- a token file ------------------------------------------------------

    def test_token_file(self):
        tmp = tempfile.mkdtemp(prefix="gpuqauth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "tokens")
        with open(path, "w") as f:
            f.write("# name role secret [classes]\n"
                    "cli admin cli-secret-0123456789\n"
                    "sum submit sum-secret-0123456789 summarization\n")
        os.chmod(path, 0o600)
        with Daemon(BASE_CONFIG + "\n[auth]\ntoken_file = %s\n" % path) as d:
            self.assert401(call(d, "GET", "/v1/status"), invalid=False)
            st, _, body = call(d, "POST", "/v1/jobs",
                               {"class": "summarization"},
                               token="sum-secret-0123456789")
            self.assertEqual(st, 201, body)
            self.assert403(call(d, "POST", "/v1/jobs", {"class": "chatbot"},
                                token="sum-secret-0123456789"), "chatbot")
            st, _, body = call(d, "GET", "/v1/status",
                               token="cli-secret-0123456789")
            self.assertEqual(st, 200, body)

    # -- binding beyond loopback ------------------------------------------

    def start_remote(self, config_text):
        """Starts gpuqd on 0.0.0.0 port 0; returns (process, data dir,
        log path).  Nothing is sent to a non-loopback address."""
        tmp = tempfile.mkdtemp(prefix="gpuqauth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        data = os.path.join(tmp, "data")
        cmd = [GPUQD, "--data", data, "--listen", "0.0.0.0:0"]
        if config_text is not None:
            conf = os.path.join(tmp, "gpuqd.conf")
            with open(conf, "w") as f:
                f.write(config_text)
            cmd += ["--config", conf]
        log = os.path.join(tmp, "log")
        with open(log, "wb") as logf:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=logf, cwd=tmp)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p, data, log

    def test_remote_listen_refused_without_tokens(self):
        for conf in (None, BASE_CONFIG, BASE_CONFIG.replace(
                "[server]\n", "[server]\nallow_remote = false\n", 1)):
            p, data, log = self.start_remote(conf)
            self.assertEqual(p.wait(timeout=scaled(10)), 1)
            text = read(log)
            self.assertIn("listen 0.0.0.0:0 is not a loopback address and "
                          "no API token is configured", text)
            self.assertIn("allow_remote = true", text)
            self.assertFalse(os.path.exists(os.path.join(data,
                                                         "gpuqd.addr")))

    def test_remote_listen_allowed_with_tokens_or_allow_remote(self):
        for conf in (CONFIG, BASE_CONFIG.replace(
                "[server]\n", "[server]\nallow_remote = true\n", 1)):
            p, data, log = self.start_remote(conf)
            addr = os.path.join(data, "gpuqd.addr")
            text = wait_until(lambda: p.poll() is None and read(addr), 10,
                              what="gpuqd.addr")
            self.assertRegex(text, r"^0\.0\.0\.0:[0-9]+\n$")
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=scaled(15)), 0)

    def test_check_config_reports_remote_listen(self):
        tmp = tempfile.mkdtemp(prefix="gpuqauth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        conf = os.path.join(tmp, "gpuqd.conf")
        with open(conf, "w") as f:
            f.write("[server]\nlisten = [::]:7707\n")
        p = subprocess.run([GPUQD, "--check-config", conf],
                           capture_output=True, text=True,
                           timeout=scaled(10))
        self.assertEqual(p.returncode, 1)
        self.assertIn("listen [::]:7707 is not a loopback address", p.stderr)
        with open(conf, "w") as f:
            f.write("[server]\nlisten = [::]:7707\n" + TOKENS)
        p = subprocess.run([GPUQD, "--check-config", conf],
                           capture_output=True, text=True,
                           timeout=scaled(10))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("5 API tokens", p.stdout)

    # -- the Unix socket ---------------------------------------------------

    def sock_dir(self):
        d = tempfile.mkdtemp(prefix="gqs-")   # short: sun_path is 108
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def test_unix_socket(self):
        path = os.path.join(self.sock_dir(), "gpuq.sock")
        conf = CONFIG.replace(
            "[server]\n",
            "[server]\nunix_socket = %s\nunix_socket_mode = 0640\n" % path, 1)
        with Daemon(conf) as d:
            st = os.lstat(path)
            self.assertTrue(stat.S_ISSOCK(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
            self.assertEqual(unix_request(path, "GET", "/healthz"),
                             (200, {"status": "ok"}))
            # The same rules as over TCP.
            st_, body = unix_request(path, "GET", "/v1/status")
            self.assertEqual((st_, body["error"]["code"]),
                             (401, "unauthorized"))
            st_, body = unix_request(path, "GET", "/v1/status", SUBMIT)
            self.assertEqual(st_, 200, body)
            st_, body = unix_request(path, "POST", "/v1/admin/drain",
                                     SUBMIT)
            self.assertEqual(st_, 403, body)
            # TCP goes on as well.
            self.assertEqual(call(d, "GET", "/v1/status", token=ADMIN)[0],
                             200)
        self.assertFalse(os.path.exists(path), "socket file left behind")

    def test_unix_socket_stale_and_occupied(self):
        dirname = self.sock_dir()
        path = os.path.join(dirname, "gpuq.sock")
        conf = BASE_CONFIG.replace(
            "[server]\n", "[server]\nunix_socket = %s\n" % path, 1)
        # A socket file nobody listens on (a crash): replaced.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
        with Daemon(conf) as d:
            self.assertEqual(stat.S_IMODE(os.lstat(path).st_mode), 0o660)
            self.assertEqual(unix_request(path, "GET", "/v1/status")[0],
                             200)
            # A second daemon on the same socket: refused, and the first
            # keeps its socket.
            other = Daemon(conf)
            try:
                with self.assertRaises(Exception):
                    other.start()
                with open(other.log) as f:
                    self.assertIn("another process listens on it", f.read())
            finally:
                other._force_kill()
                other._cleanup(keep=False)
            self.assertEqual(unix_request(path, "GET", "/healthz")[0], 200)
            self.assertTrue(d.alive())
        # Not a socket: left alone, and gpuqd does not start.
        with open(path, "w") as f:
            f.write("precious")
        other = Daemon(conf)
        try:
            with self.assertRaises(Exception):
                other.start()
            with open(other.log) as f:
                self.assertIn("exists and is not a socket", f.read())
        finally:
            other._force_kill()
            other._cleanup(keep=False)
        with open(path) as f:
            self.assertEqual(f.read(), "precious")


if __name__ == "__main__":
    unittest.main()
