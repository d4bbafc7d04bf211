"""test_service - gpuqd as a service: configuration reload on SIGHUP
(classes, weights, caps, backends; nothing dropped; a bad file changes
nothing), --check-config, sd_notify (READY, STATUS, WATCHDOG, RELOADING,
STOPPING), and `make install` with its man pages and systemd unit
(doc/operations.md).

    cd tests/integration && GPUQD=../../bin/gpuqd python3 -m unittest -v \
        test_service
"""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from gpuqtest import (GPUQD, REPO, VALGRIND, Background, Daemon, GpuqTest,
                      Worker, scaled, wait_until)
from execfix import ExecTest, backend, exec_sections, ini

CONFIG = """\
[server]
drain_timeout = 5

[gpu]
slots = 1

[class chatbot]
priority = 10
lease_ttl = 30

[class transcription]
weight = 70
max_consecutive = 2
max_attempts = 3
backoff_base = 0.05
backoff_max = 0.2

[class summarization]
weight = 30
max_consecutive = 1
"""

# The same classes in another order, with new weights and caps, one class
# more and a smaller queue for summarization.
CONFIG2 = """\
[server]
drain_timeout = 5

[gpu]
slots = 1

[class summarization]
weight = 40
max_consecutive = 3
max_queue = 4

[class translation]
weight = 20

[class transcription]
weight = 60
max_consecutive = 1
max_attempts = 3
backoff_base = 0.05
backoff_max = 0.2

[class chatbot]
priority = 10
lease_ttl = 30
"""


def classes(d):
    """{name: class object} of /v1/status."""
    return {c["name"]: c for c in d.status()["classes"]}


def log_text(d):
    with open(d.log, "rb") as f:
        return f.read().decode("utf-8", "replace")


def hup(d, config_text=None, expect=None, timeout=5.0):
    """Writes the file (if given), sends SIGHUP and waits until the log
    shows the reload's end: "applied", or "not applied" when expect is
    "error".  Returns the log text added by this reload."""
    if config_text is not None:
        with open(d.config, "w") as f:
            f.write(config_text)
    before = len(log_text(d))
    d.proc.send_signal(signal.SIGHUP)
    word = "was not applied" if expect == "error" else " applied ("

    def done():
        t = log_text(d)[before:]
        return t if word in t else None
    return wait_until(done, timeout, what="the reload in the log")


def ids(d):
    return {j["id"]: j for j in d.jobs()}


class ReloadTest(GpuqTest):

    def test_reload_applies_without_dropping_a_job(self):
        with Daemon(CONFIG) as d:
            queued = []
            for i in range(4):
                queued.append(d.submit("transcription",
                                       payload={"n": i})["id"])
                queued.append(d.submit("summarization",
                                       payload={"n": i})["id"])
            lease = d.grant(["transcription"])
            running = lease["job"]["id"]
            d.submit("chatbot", payload={"later": True})
            before = ids(d)

            text = hup(d, CONFIG2)
            self.assertIn("class transcription: weight 70 -> 60, "
                          "max_consecutive 2 -> 1", text)
            self.assertIn("class translation added", text)

            cl = classes(d)
            self.assertEqual([c["name"] for c in d.status()["classes"]],
                             ["summarization", "translation",
                              "transcription", "chatbot"])
            self.assertEqual(cl["transcription"]["weight"], 60)
            self.assertEqual(cl["transcription"]["max_consecutive"], 1)
            self.assertEqual(cl["summarization"]["weight"], 40)
            self.assertEqual(cl["summarization"]["max_consecutive"], 3)
            self.assertEqual(cl["translation"]["weight"], 20)
            self.assertAlmostEqual(cl["transcription"]["target_share"],
                                   0.5)
            # Nothing lost or changed: every id, state and attempt count.
            after = ids(d)
            self.assertEqual(set(after), set(before))
            for jid, j in before.items():
                self.assertEqual((after[jid]["state"],
                                  after[jid]["attempts"]),
                                 (j["state"], j["attempts"]), jid)
            self.assertEqual(cl["transcription"]["queued"], 3)
            self.assertEqual(cl["transcription"]["running"], 1)
            self.assertEqual(cl["summarization"]["queued"], 4)
            self.assertEqual(cl["chatbot"]["queued"], 1)
            slots = d.status()["slots"]
            self.assertEqual(slots[0]["job"], running)
            self.assertEqual(slots[0]["class"], "transcription")

            # The held lease lives on: heartbeat and completion with its
            # token.
            status, body = d.lease_op(lease, "heartbeat")
            self.assertEqual(status, 200, body)
            status, body = d.lease_op(lease, "complete", result={"ok": 1})
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "succeeded")

            # The new class takes submits; the new cap holds (4 queued).
            t = d.submit("translation", payload={"x": 1})
            self.assertEqual(t["state"], "queued")
            self.assertError(d.request("POST", "/v1/jobs", {
                "class": "summarization", "payload": {}}), 429,
                "queue_full")

            # Everything still runs to the end, the chatbot first.
            first = d.grant(["chatbot", "transcription", "summarization",
                             "translation"])
            self.assertEqual(first["job"]["class"], "chatbot")
            d.lease_op(first, "complete")
            w = Worker(d, ["transcription", "summarization",
                           "translation"], wait=1)
            w.start()
            try:
                wait_until(lambda: all(
                    j["state"] == "succeeded" for j in d.jobs()), 10,
                    what="every job to succeed")
            finally:
                w.stop()
                w.join(5)
            self.assertEqual(w.errors, [])

    def test_reload_changes_the_order_of_grants(self):
        # Shares by grants, so the order does not depend on timing.
        # Weights 70:30 with caps 2/1 give T S T T S T; after the reload
        # (weights 70:3000, caps 1/3; the fairness state starts afresh,
        # ties go in file order) T S S S T S S S.
        before = """\
[scheduler]
share_by = grants
[class transcription]
weight = 70
max_consecutive = 2
[class summarization]
weight = 30
max_consecutive = 1
"""
        after = before.replace("max_consecutive = 2", "max_consecutive = 1")
        after = after.replace("weight = 30\nmax_consecutive = 1",
                              "weight = 3000\nmax_consecutive = 3")
        with Daemon(before) as d:
            for i in range(12):
                d.submit("transcription", payload={"n": i})
                d.submit("summarization", payload={"n": i})

            def grants(n):
                order = []
                for _ in range(n):
                    g = d.grant(["transcription", "summarization"])
                    order.append(g["job"]["class"][0].upper())
                    d.lease_op(g, "complete")
                return "".join(order)
            self.assertEqual(grants(6), "TSTTST")
            hup(d, after)
            cl = classes(d)
            self.assertEqual(cl["summarization"]["max_consecutive"], 3)
            self.assertEqual(cl["summarization"]["weight"], 3000)
            self.assertEqual(cl["transcription"]["max_consecutive"], 1)
            self.assertEqual(grants(8), "TSSSTSSS")

    def test_invalid_file_changes_nothing(self):
        with Daemon(CONFIG) as d:
            for i in range(3):
                d.submit("transcription", payload={"n": i})
            lease = d.grant(["transcription"])
            snap = d.snapshot()
            st = d.status()
            bad = CONFIG.replace("weight = 70", "weight = -1") + \
                "[bogus]\nx = 1\n"
            text = hup(d, bad, expect="error")
            self.assertRegex(text, r"gpuqd.conf:\d+: weight must be > 0")
            self.assertIn("unknown section [bogus]", text)
            self.assertTrue(d.alive())
            self.assertEqual(d.snapshot(), snap)
            st2 = d.status()
            for a, b in zip(st["classes"], st2["classes"]):
                for k in ("name", "priority", "weight", "max_consecutive",
                          "queued", "running"):
                    self.assertEqual(a[k], b[k], k)
            # A file that cannot be read is just as harmless.
            os.unlink(d.config)
            text = hup(d, None, expect="error")
            self.assertIn("cannot open", text)
            self.assertTrue(d.alive())
            status, body = d.lease_op(lease, "complete")
            self.assertEqual(status, 200, body)
            d.submit("transcription", payload={})
            self.assertEqual(classes(d)["transcription"]["weight"], 70)

    def test_restart_only_settings_warn(self):
        with Daemon(CONFIG) as d:
            text = hup(d, CONFIG.replace("slots = 1", "slots = 2").replace(
                "[server]\n", "[server]\nsynchronous = off\n"))
            self.assertIn("[gpu] slots 1 -> 2 needs a restart; keeping 1",
                          text)
            self.assertIn("synchronous full -> off needs a restart", text)
            self.assertEqual(len(d.status()["slots"]), 1)
            # --data and --listen still apply over the file: no warning.
            self.assertNotIn("listen", text)
            self.assertNotIn("data_dir", text)

    def test_removed_class(self):
        with Daemon(CONFIG) as d:
            q = [d.submit("transcription", payload={"n": i})["id"]
                 for i in range(3)]
            lease = d.grant(["transcription"])
            self.assertEqual(lease["job"]["id"], q[0])
            s = d.submit("summarization", payload={})["id"]
            # A worker parked on transcription only is told; one that
            # also takes summarization keeps waiting.
            lone = Background(d.lease, ["transcription"], 10, "lone")
            both = Background(d.lease, ["transcription", "chatbot"], 10,
                              "both")
            wait_until(lambda: classes(d)["transcription"]
                       ["workers_waiting"] == 2, what="two parked workers")
            no_tx = CONFIG.replace(
                "[class transcription]\nweight = 70\nmax_consecutive = 2\n"
                "max_attempts = 3\nbackoff_base = 0.05\nbackoff_max = 0.2\n",
                "")
            self.assertNotIn("transcription", no_tx)
            text = hup(d, no_tx)
            self.assertIn("class transcription removed; its running grants "
                          "end first", text)
            self.assertIn("2 queued jobs of class transcription stay "
                          "stored", text)
            status, body = lone.get()
            self.assertEqual(status, 404, body)
            self.assertEqual(body["error"]["code"], "unknown_class")
            # Submits and requeues of the class are refused.
            self.assertError(d.request("POST", "/v1/jobs", {
                "class": "transcription", "payload": {}}), 404,
                "unknown_class")
            # Its queued jobs stay stored as they were.
            for jid in q[1:]:
                self.assertEqual(d.job(jid)["state"], "queued")
            # The running grant is still there, under its class.
            self.assertEqual(d.status()["slots"][0]["job"], q[0])
            self.assertIn("transcription", classes(d))
            status, body = d.lease_op(lease, "heartbeat")
            self.assertEqual(status, 200, body)
            status, body = d.lease_op(lease, "complete", result={"r": 1})
            self.assertEqual((status, body["state"]), (200, "succeeded"))
            # Its last grant ended: the class is gone from the status.
            wait_until(lambda: "transcription" not in classes(d),
                       what="the removed class to go")
            self.assertIn("removed class transcription: its last grant "
                          "has ended", log_text(d))
            g = d.grant(["summarization"])
            self.assertEqual(g["job"]["id"], s)
            d.lease_op(g, "complete")
            # The other parked worker is still served, on chatbot.
            c = d.submit("chatbot", payload={})["id"]
            status, body = both.get()
            self.assertEqual((status, body["job"]["id"]), (200, c), body)
            d.lease_op(body, "complete")

            # The class comes back: its stored jobs are loaded and run.
            text = hup(d, CONFIG)
            self.assertIn("class transcription added", text)
            self.assertIn("2 stored jobs of the added classes loaded", text)
            self.assertEqual(classes(d)["transcription"]["queued"], 2)
            got = []
            for _ in range(2):
                g = d.grant(["transcription"])
                got.append(g["job"]["id"])
                d.lease_op(g, "complete")
            self.assertEqual(got, q[1:])

    def test_removed_class_running_grant_that_fails(self):
        # A grant of a removed class that fails (retryable) is stored
        # queued, not scheduled; the class goes once it has ended.
        with Daemon(CONFIG) as d:
            j = d.submit("transcription", payload={})["id"]
            lease = d.grant(["transcription"])
            hup(d, CONFIG.replace("[class transcription]", "[class tx2]"))
            status, body = d.lease_op(lease, "fail", retryable=True,
                                      error="oops")
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "queued")
            wait_until(lambda: "transcription" not in classes(d),
                       what="the removed class to go")
            self.assertEqual(d.job(j)["state"], "queued")
            self.assertEqual(d.job(j)["attempts"], 1)
            self.assertIn("tx2", classes(d))
            # A restart leaves it stored too (an unknown class).
            d.restart()
            self.assertEqual(d.job(j)["state"], "queued")

    def test_store_failure_after_removing_a_class(self):
        # A failed commit rebuilds memory from the store: the running
        # grant of a removed class is attached again, its stored queued
        # jobs are not scheduled, and the class still goes once the
        # grant ends.
        with Daemon(CONFIG, args=["--fault-injection"]) as d:
            q = [d.submit("transcription", payload={})["id"]
                 for _ in range(2)]
            lease = d.grant(["transcription"])
            hup(d, CONFIG.replace("[class transcription]", "[class tx2]"))
            status, _, body = d.request("POST", "/v1/admin/fault",
                                        {"kind": "io", "after": 0})
            self.assertIn(status, (200, 202, 204), body)
            self.assertError(d.request("POST", "/v1/jobs", {
                "class": "chatbot", "payload": {}}), 503, "store_failure")
            status, _, body = d.request("POST", "/v1/admin/fault",
                                        {"kind": "none"})
            self.assertIn(status, (200, 202, 204), body)
            cl = classes(d)
            self.assertEqual((cl["transcription"]["running"],
                              cl["transcription"]["queued"]), (1, 0))
            self.assertEqual(d.status()["slots"][0]["job"], q[0])
            status, body = d.lease_op(lease, "complete")
            self.assertEqual(status, 200, body)
            wait_until(lambda: "transcription" not in classes(d),
                       what="the removed class to go")
            self.assertEqual(d.job(q[1])["state"], "queued")
            c = d.submit("chatbot", payload={})["id"]
            g = d.grant(["chatbot", "tx2"])
            self.assertEqual(g["job"]["id"], c)
            self.assertEqual(d.lease_op(g, "complete")[0], 200)

    def test_removed_class_lock_waiter_is_cancelled(self):
        with Daemon(CONFIG) as d:
            status, held = d.lock("chatbot", wait=5)
            self.assertEqual(status, 200, held)
            waiter = Background(d.lock, "transcription", 20, "w")
            wait_until(lambda: classes(d)["transcription"]["queued"] == 1,
                       what="the lock waiter")
            lock_job = [j for j in d.jobs() if j["class"] ==
                        "transcription"][0]["id"]
            hup(d, CONFIG.replace("[class transcription]", "[class tx2]"))
            status, body = waiter.get()
            self.assertEqual(status, 404, body)
            self.assertEqual(body["error"]["code"], "unknown_class")
            job = d.job(lock_job)
            self.assertEqual(job["state"], "cancelled")
            self.assertEqual(job["error"]["code"], "class_removed")
            # The held lock is untouched.
            status, body = d.release(held)
            self.assertEqual(status, 200, body)

    def test_waiters_of_a_kept_class_follow_its_new_index(self):
        # Classes change places: a parked worker, a queued lock and an
        # event stream filtered by class follow the class, not the index.
        with Daemon(CONFIG) as d:
            status, held = d.lock("chatbot", wait=5)
            self.assertEqual(status, 200, held)
            lw = Background(d.lock, "summarization", 20, "lw")
            ww = Background(d.lease, ["transcription"], 15, "ww")
            wait_until(lambda: classes(d)["summarization"]["queued"] == 1
                       and classes(d)["transcription"]
                       ["workers_waiting"] == 1, what="the waiters")
            hup(d, CONFIG2)
            cl = classes(d)
            self.assertEqual(cl["transcription"]["workers_waiting"], 1)
            self.assertEqual(cl["summarization"]["workers_waiting"], 0)
            self.assertEqual(cl["translation"]["workers_waiting"], 0)
            self.assertEqual(cl["summarization"]["queued"], 1)
            # The lock waiter gets its lock when the held one is released.
            self.assertEqual(d.release(held)[0], 200)
            status, lock = lw.get()
            self.assertEqual(status, 200, lock)
            self.assertEqual(d.status()["slots"][0]["class"],
                             "summarization")
            self.assertEqual(d.release(lock)[0], 200)
            # Translation took transcription's old index: its job must
            # not go to the transcription worker.
            d.submit("translation", payload={})
            time.sleep(0.3)
            self.assertTrue(ww.is_alive())
            t = d.submit("transcription", payload={})["id"]
            status, body = ww.get()
            self.assertEqual((status, body["job"]["id"]), (200, t), body)
            d.lease_op(body, "complete")

    def test_backoff_and_deadlines_survive(self):
        with Daemon(CONFIG.replace("backoff_base = 0.05",
                                   "backoff_base = 2")
                    .replace("backoff_max = 0.2", "backoff_max = 2")) as d:
            j = d.submit("transcription", payload={})["id"]
            g = d.grant(["transcription"])
            d.lease_op(g, "fail", retryable=True)
            e = d.submit("summarization", payload={},
                         queue_timeout=1.0)["id"]
            self.assertEqual(classes(d)["transcription"]["backoff"], 1)
            hup(d, CONFIG2.replace("backoff_base = 0.05",
                                   "backoff_base = 2")
                .replace("backoff_max = 0.2", "backoff_max = 2"))
            self.assertEqual(classes(d)["transcription"]["backoff"], 1)
            self.assertEqual(d.job(j)["state"], "queued")
            # The deadline still fires; the backoff still ends.
            d.wait_state(e, "expired", timeout=5)
            g = d.grant(["transcription"], wait=5)
            self.assertEqual(g["job"]["id"], j)
            self.assertEqual(g["job"]["attempts"], 2)
            d.lease_op(g, "complete")

    def test_dependencies_stay_blocked(self):
        with Daemon(CONFIG) as d:
            a = d.submit("transcription", payload={})["id"]
            b = d.submit("summarization", payload={},
                         depends_on=[a])["id"]
            hup(d, CONFIG2)
            self.assertEqual(d.job(b)["state"], "queued")
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], a)
            d.lease_op(g, "complete")
            g = d.grant(["summarization"])
            self.assertEqual(g["job"]["id"], b)
            d.lease_op(g, "complete")

    def test_metrics_follow_their_class(self):
        with Daemon(CONFIG) as d:
            for _ in range(3):
                d.submit("summarization", payload={})
            d.submit("transcription", payload={})
            hup(d, CONFIG2)
            _, _, raw = d.request_raw("GET", "/metrics")
            text = raw.decode()
            self.assertIn('gpuq_jobs_submitted_total{class="summarization"}'
                          ' 3', text)
            self.assertIn('gpuq_jobs_submitted_total{class="transcription"}'
                          ' 1', text)
            self.assertIn('gpuq_jobs_submitted_total{class="translation"}'
                          ' 0', text)

    def test_reload_without_config_file(self):
        with Daemon(None) as d:
            before = len(log_text(d))
            d.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "nothing to reload" in log_text(d)[before:],
                       what="the log line")
            self.assertTrue(d.alive())
            d.submit("transcription", payload={})

    def test_reloads_under_load(self):
        # Workers lease and complete while the file changes (orders,
        # weights, a class removed and added back) again and again: in the
        # end every job succeeded exactly once.
        many = CONFIG2.replace("max_queue = 4\n", "")
        variants = [CONFIG, many,
                    many.replace("[class translation]\nweight = 20\n", ""),
                    CONFIG.replace("weight = 70", "weight = 5")]
        with Daemon(CONFIG) as d:
            rnd = random.Random(7)
            names = ["transcription", "summarization", "chatbot"]
            submitted = []
            workers = [Worker(d, names, name="w%d" % i, wait=1, hold=0.01)
                       for i in range(3)]
            for w in workers:
                w.start()
            try:
                for round_ in range(12):
                    for _ in range(10):
                        submitted.append(d.submit(
                            rnd.choice(names), payload={})["id"])
                    hup(d, variants[round_ % len(variants)])
                wait_until(lambda: all(j["state"] == "succeeded"
                                       for j in d.jobs()), 20,
                           what="every job to succeed")
            finally:
                for w in workers:
                    w.stop()
                for w in workers:
                    w.join(5)
            done = [c[0] for w in workers for c in w.completed
                    if c[2] == 200]
            self.assertEqual(sorted(done), sorted(submitted))
            for w in workers:
                self.assertEqual(w.errors, [])
            for c in d.status()["classes"]:
                self.assertEqual((c["queued"], c["running"]), (0, 0), c)


ADMIN = "admin-secret-0123456789"
TX = "tx-only-secret-0123456789"
NEW = "new-token-secret-0123456789"


def tokens(tx_classes, extra=""):
    return """
[token ops]
secret = %s
role = admin

[token tx-app]
secret = %s
role = submit
classes = %s
%s""" % (ADMIN, TX, tx_classes, extra)


class ReloadTokensTest(GpuqTest):
    """API tokens name classes by index into the classes of the file that
    defined them: a reload that moves the classes moves the tokens'
    rights with them, and new tokens replace the old at once."""

    def submit_as(self, d, secret, cls):
        status, _, body = d.request(
            "POST", "/v1/jobs", {"class": cls, "payload": {}},
            headers={"Authorization": "Bearer " + secret})
        return status

    def test_tokens_follow_their_classes(self):
        with Daemon(CONFIG + tokens("transcription")) as d:
            self.assertEqual(self.submit_as(d, TX, "transcription"), 201)
            self.assertEqual(self.submit_as(d, TX, "summarization"), 403)
            # Classes change places (translation takes transcription's
            # old index): the token still means transcription.
            text = hup(d, CONFIG2 + tokens("transcription"))
            self.assertNotIn("API tokens changed", text)
            self.assertEqual(self.submit_as(d, TX, "transcription"), 201)
            self.assertEqual(self.submit_as(d, TX, "translation"), 403)
            self.assertEqual(self.submit_as(d, TX, "summarization"), 403)
            # New tokens replace the old.
            text = hup(d, CONFIG2 + tokens(
                "summarization",
                "\n[token new]\nsecret = %s\nrole = submit\n" % NEW))
            self.assertIn("API tokens changed (now 3)", text)
            self.assertNotIn(TX, text)
            self.assertEqual(self.submit_as(d, TX, "summarization"), 201)
            self.assertEqual(self.submit_as(d, TX, "transcription"), 403)
            self.assertEqual(self.submit_as(d, NEW, "translation"), 201)
            # A file that fails its check keeps the tokens as they are.
            hup(d, CONFIG2 + tokens("nosuchclass"), expect="error")
            self.assertEqual(self.submit_as(d, NEW, "translation"), 201)
            self.assertEqual(self.submit_as(d, "x" * 20, "translation"),
                             401)
            # The restart-only [server] keys warn.
            text = hup(d, CONFIG2.replace(
                "[server]\n", "[server]\nunix_socket = %s/s.sock\n"
                % d.tmp) + tokens("summarization"))
            self.assertIn("unix_socket '' -> '%s/s.sock' needs a restart"
                          % d.tmp, text)
            self.assertFalse(os.path.exists(os.path.join(d.tmp, "s.sock")))
            status, _, body = d.request(
                "GET", "/v1/status",
                headers={"Authorization": "Bearer " + ADMIN})
            self.assertEqual(status, 200, body)


class ReloadExecTest(ExecTest):
    """Reloads with built-in executors: runs in flight keep going, and a
    backend keeps its live state by name."""

    def test_running_chat_survives_backend_change(self):
        with self.daemon() as d:
            self.fake.script(token_delay_s=0.1, tokens=12)
            j = self.chat(d, "hello")["id"]
            d.wait_state(j, "running")
            s = exec_sections(self.fake.port, self.root)
            s["backend llm"]["timeout"] = "20"
            s["backend llm"]["max_concurrency"] = "2"
            s["class summarization"]["weight"] = "10"
            cfg = ini(s)
            with open(d.config, "w") as f:
                f.write(cfg)
            text = hup(d)
            self.assertIn("backend llm: timeout 300 -> 20, "
                          "max_concurrency 1 -> 2", text)
            self.assertEqual(backend(d, "llm")["max_concurrency"], 2)
            self.assertEqual(backend(d, "llm")["inflight"], 1)
            job = self.finished(d, j)
            self.assertEqual(job["attempts"], 1)
            self.assertEqual(backend(d, "llm")["inflight"], 0)

    def test_removed_backend_runs_to_the_end(self):
        with self.daemon() as d:
            self.fake.script(token_delay_s=0.1, tokens=10)
            j = self.chat(d, "hello")["id"]
            d.wait_state(j, "running")
            # The chat class moves to a new backend; llm goes.
            s = exec_sections(self.fake.port, self.root)
            s["backend llm2"] = dict(s.pop("backend llm"))
            s["class chatbot"]["backend"] = "llm2"
            s["class summarization"]["backend"] = "llm2"
            with open(d.config, "w") as f:
                f.write(ini(s))
            text = hup(d)
            self.assertIn("backend llm removed; its calls in flight end "
                          "first", text)
            self.assertIn("backend llm2 added", text)
            names = [b["name"] for b in d.status()["backends"]]
            self.assertEqual(names, ["whisper", "llm2", "llm"])
            self.finished(d, j)
            wait_until(lambda: [b["name"] for b in d.status()["backends"]]
                       == ["whisper", "llm2"], what="llm to go")
            # New chats go to llm2.
            self.fake.script(token_delay_s=0.0)
            j2 = self.chat(d, "again")["id"]
            job = self.finished(d, j2)
            self.assertEqual(job["holder"], "llm2")

    def test_batched_grant_riders_survive(self):
        # max_concurrency 3: three chats share one grant (two riders,
        # which have no slot of their own and are re-attached by riding).
        with self.daemon(backend_llm={"max_concurrency": 3},
                         class_lk={"priority": 0}) as d:
            self.fake.script(token_delay_s=0.1, tokens=10)
            st, lk = d.lock("lk", wait=5)
            self.assertEqual(st, 200, lk)
            js = [self.chat(d, "m%d" % i)["id"] for i in range(3)]
            self.assertEqual(d.release(lk)[0], 200)
            wait_until(lambda: classes(d)["chatbot"]["running"] == 3,
                       what="three chats running")
            s = exec_sections(self.fake.port, self.root)
            s["backend llm"]["max_concurrency"] = "3"
            s["class lk"] = {"priority": "0"}
            s["class transcription"]["weight"] = "50"
            with open(d.config, "w") as f:
                f.write(ini(s))
            hup(d)
            self.assertEqual(classes(d)["chatbot"]["running"], 3)
            self.assertEqual(backend(d, "llm")["inflight"], 3)
            for j in js:
                self.finished(d, j)
            wait_until(lambda: d.status()["slots"][0]["job"] is None,
                       what="the slot to free")
            cl = classes(d)
            self.assertEqual((cl["chatbot"]["running"],
                              cl["chatbot"]["queued"]), (0, 0))
            # The slot is free for others.
            st, lk = d.lock("lk", wait=5)
            self.assertEqual(st, 200, lk)
            self.assertEqual(d.release(lk)[0], 200)


class NotifyTest(GpuqTest):
    """sd_notify through a NOTIFY_SOCKET of our own."""

    def test_ready_status_watchdog_reload_stopping(self):
        tmp = tempfile.mkdtemp(prefix="gpuqnotify-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self.addCleanup(sock.close)
        msgs = []
        lock = threading.Lock()

        def reader():
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    data = sock.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                with lock:
                    msgs.append((time.monotonic(), data.decode()))
        stop = threading.Event()
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        self.addCleanup(t.join, 2)
        self.addCleanup(stop.set)

        def seen(pred):
            with lock:
                return [m for m in msgs if pred(m[1])]
        old = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET",
                                              "WATCHDOG_USEC",
                                              "WATCHDOG_PID")}
        os.environ["NOTIFY_SOCKET"] = path
        os.environ["WATCHDOG_USEC"] = "400000"
        os.environ.pop("WATCHDOG_PID", None)
        try:
            d = Daemon(CONFIG).__enter__()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        try:
            ready = wait_until(lambda: seen(lambda m: "READY=1" in m),
                               what="READY=1")
            self.assertRegex(ready[0][1],
                             r"STATUS=serving: 0 queued, 0 waiting for "
                             r"dependencies, 0 running, 0 of 1 slots busy")
            # Pings at half the interval (0.2 s).
            wait_until(lambda: len(seen(lambda m: m == "WATCHDOG=1")) >= 4,
                       3, what="watchdog pings")
            pings = [m[0] for m in seen(lambda m: m == "WATCHDOG=1")]
            gaps = sorted(b - a for a, b in zip(pings, pings[1:]))
            self.assertTrue(0.1 < gaps[len(gaps) // 2] < 0.35, gaps)
            # STATUS follows the queue.
            d.submit("transcription", payload={})
            wait_until(lambda: seen(lambda m: m.startswith(
                "STATUS=serving: 1 queued")), 3, what="STATUS update")
            with lock:
                n = len(msgs)
            hup(d, CONFIG2)

            def since():
                with lock:
                    return [m for _, m in msgs[n:]]
            wait_until(lambda: any("READY=1" in m for m in since()),
                       what="READY=1 after the reload")
            rel = since()
            ri = next(i for i, m in enumerate(rel) if "RELOADING=1" in m)
            self.assertRegex(rel[ri], r"MONOTONIC_USEC=\d+")
            self.assertTrue(any("READY=1" in m for m in rel[ri + 1:]), rel)
            d.stop()
            self.assertTrue(seen(lambda m: "STOPPING=1" in m))
        finally:
            d.__exit__(None, None, None)


class CheckConfigTest(GpuqTest):

    def run_check(self, text):
        tmp = tempfile.mkdtemp(prefix="gpuqcheck-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "gpuq.conf")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([GPUQD, "--check-config", path],
                           capture_output=True, text=True,
                           timeout=scaled(10))
        return p, path

    def test_good_file(self):
        p, path = self.run_check(CONFIG2)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith(
            "%s: ok (4 classes, 1 slots" % path), p.stdout)

    def test_bad_file(self):
        text = CONFIG.replace("slots = 1", "slots = 0") + \
            "[class x]\nweight = nope\n"
        p, path = self.run_check(text)
        lines = text.splitlines()
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, "")
        self.assertIn("%s:%d: slots must be from 1 to 256, got 0"
                      % (path, lines.index("slots = 0") + 1), p.stderr)
        self.assertIn("%s:%d: weight" % (path, len(lines)), p.stderr)

    def test_example_config_is_valid(self):
        example = os.path.join(REPO, "contrib", "gpuq.conf.example")
        p = subprocess.run([GPUQD, "--check-config", example],
                           capture_output=True, text=True,
                           timeout=scaled(10))
        self.assertEqual(p.returncode, 0, p.stderr)


def make_env():
    """The environment without a calling make's variables (make asan
    passes B=build/asan ... down through MAKEFLAGS)."""
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


@unittest.skipIf(VALGRIND, "builds and installs the default tree (build/, "
                 "bin/) and runs no process under valgrind; make test "
                 "covers it")
class InstallTest(GpuqTest):

    """`make install` of the default build (build/, bin/): under `make
    asan` that builds it first, rather than mixing flags in build/asan."""

    @classmethod
    def setUpClass(cls):
        cls.dest = tempfile.mkdtemp(prefix="gpuqinstall-")
        cls.make = ["make", "-s", "-j4", "-C", REPO, "DESTDIR=" + cls.dest,
                    "PREFIX=/usr"]
        cls.out = subprocess.run(cls.make + ["install"], capture_output=True,
                                 text=True, timeout=600, env=make_env())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dest, True)
        # `make install PREFIX=/usr` wrote build/gpuq.pc for /usr: write
        # it back for the default prefix.
        if os.path.exists(os.path.join(REPO, "build", "gpuq.pc")):
            subprocess.run(["make", "-s", "-C", REPO, "build/gpuq.pc"],
                           capture_output=True, timeout=120, env=make_env())

    def path(self, p):
        return os.path.join(self.dest, p.lstrip("/"))

    def test_files_land_where_expected(self):
        self.assertEqual(self.out.returncode, 0,
                         self.out.stdout + self.out.stderr)
        for p, mode in (("/usr/bin/gpuqd", 0o755), ("/usr/bin/gpuq", 0o755),
                        ("/usr/share/man/man8/gpuqd.8", 0o644),
                        ("/usr/share/man/man1/gpuq.1", 0o644),
                        ("/usr/share/man/man5/gpuq.conf.5", 0o644),
                        ("/usr/lib/systemd/system/gpuqd.service", 0o644),
                        ("/usr/lib/sysusers.d/gpuq.conf", 0o644),
                        ("/etc/gpuq/gpuq.conf.example", 0o644),
                        ("/etc/gpuq/gpuq.conf", 0o644)):
            st = os.stat(self.path(p))
            self.assertEqual(st.st_mode & 0o777, mode, p)
        if os.path.exists(os.path.join(REPO, "include", "gpuq.h")):
            self.assertTrue(os.path.exists(self.path(
                "/usr/include/gpuq.h")))
        # The installed daemon runs, and checks the installed file.
        p = subprocess.run([self.path("/usr/bin/gpuqd"), "--check-config",
                            self.path("/etc/gpuq/gpuq.conf")],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_unit_points_at_the_prefix(self):
        with open(self.path("/usr/lib/systemd/system/gpuqd.service")) as f:
            unit = f.read()
        keys = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
        self.assertEqual(keys["Type"], "notify")
        self.assertEqual(keys["ExecStart"], "/usr/bin/gpuqd --config "
                         "/etc/gpuq/gpuq.conf --data /var/lib/gpuq")
        self.assertIn("-HUP $MAINPID", unit)
        for k in ("WatchdogSec", "ProtectSystem", "PrivateTmp",
                  "NoNewPrivileges", "StateDirectory", "User",
                  "CapabilityBoundingSet", "RestrictAddressFamilies",
                  "SystemCallFilter"):
            self.assertIn(k, keys)
        self.assertNotIn("/usr/local", unit)

    @unittest.skipUnless(shutil.which("systemd-analyze"),
                         "no systemd-analyze")
    def test_unit_verifies(self):
        # The unit names /usr/bin/gpuqd; verify a copy that names the
        # binary under DESTDIR, so the check does not depend on an
        # install on this machine.
        with open(self.path("/usr/lib/systemd/system/gpuqd.service")) as f:
            unit = f.read().replace("/usr/bin/gpuqd",
                                    self.path("/usr/bin/gpuqd"))
        tmp = tempfile.mkdtemp(prefix="gpuqunit-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "gpuqd.service")
        with open(path, "w") as f:
            f.write(unit)
        # MANPATH: the Documentation= pages are checked with man(1).
        p = subprocess.run(["systemd-analyze", "verify", path],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MANPATH=self.path(
                               "/usr/share/man")))
        # Only complaints about this unit count (not about the host's),
        # and not a missing man(1).
        mine = [l for l in (p.stdout + p.stderr).splitlines()
                if "gpuqd.service" in l and not (
                    "Command 'man " in l and not shutil.which("man"))]
        self.assertEqual(mine, [])

    def test_man_pages_render(self):
        pages = ["/usr/share/man/man8/gpuqd.8", "/usr/share/man/man1/gpuq.1",
                 "/usr/share/man/man5/gpuq.conf.5"]
        if shutil.which("groff"):
            cmd = ["groff", "-man", "-Tutf8", "-ww", "-z"]
        elif shutil.which("man"):
            cmd = ["man", "-l"]
        else:
            self.skipTest("neither groff nor man")
        for p in pages:
            r = subprocess.run(cmd + [self.path(p)], capture_output=True,
                               text=True, timeout=30,
                               env=dict(os.environ, MANWIDTH="80",
                                        MAN_KEEP_FORMATTING="0"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stderr.strip(), "", p)
        if shutil.which("man"):
            r = subprocess.run(["man", "-l", self.path(pages[0])],
                               capture_output=True, text=True, timeout=30,
                               env=dict(os.environ, MANWIDTH="80",
                                        PAGER="cat"))
            self.assertIn("SIGHUP", r.stdout)

    def test_uninstall_keeps_config_and_data(self):
        dest = tempfile.mkdtemp(prefix="gpuqinstall2-")
        self.addCleanup(shutil.rmtree, dest, True)
        make = [a if not a.startswith("DESTDIR=") else "DESTDIR=" + dest
                for a in self.make]
        r = subprocess.run(make + ["install"], capture_output=True,
                           text=True, timeout=600, env=make_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        conf = os.path.join(dest, "etc/gpuq/gpuq.conf")
        with open(conf, "a") as f:
            f.write("; edited\n")
        r = subprocess.run(make + ["uninstall"], capture_output=True,
                           text=True, timeout=60, env=make_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        left = []
        for root, _, files in os.walk(dest):
            left += [os.path.relpath(os.path.join(root, f), dest)
                     for f in files]
        self.assertEqual(left, ["etc/gpuq/gpuq.conf"])


if __name__ == "__main__":
    unittest.main()
