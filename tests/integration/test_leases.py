"""Worker leases: long-poll, complete, fail, yield, heartbeat, expiry and
fencing tokens (doc/api.md "Worker leases")."""

import time
import unittest

from gpuqtest import Background, Daemon, GpuqTest, Worker, idnum

CONFIG = """\
[server]
drain_timeout = 5

[gpu]
slots = 1

[class chatbot]
priority = 10
lease_ttl = 1

[class transcription]
weight = 70
max_consecutive = 2
max_attempts = 3
backoff_base = 0.05
backoff_max = 0.2

[class summarization]
weight = 30
max_consecutive = 1

[class quick]
lease_ttl = 1
max_attempts = 3
backoff_base = 0.05
backoff_max = 0.1

[class slowretry]
max_attempts = 3
backoff_base = 2
backoff_max = 2
"""

OPS = ("heartbeat", "complete", "fail", "yield")


class LeaseTest(GpuqTest):

    def test_grant_and_complete(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription", payload={"audio": "/a.wav"})
            status, g = d.lease(["summarization", "transcription"], wait=5,
                                worker="w1")
            self.assertEqual(status, 200, g)
            self.assertIsInstance(g["lease_id"], str)
            self.assertTrue(g["lease_id"].startswith(job["id"] + "."),
                            g["lease_id"])
            self.assertIsInstance(g["token"], int)
            self.assertGreater(g["token"], 0)
            self.assertEqual(g["ttl"], 120)
            # A whole number of seconds is a JSON integer (the doc's
            # example; gpuq rejects a grant whose ttl is not one).
            self.assertIsInstance(g["ttl"], int, "ttl %r" % g["ttl"])
            gj = g["job"]
            self.assertEqual(gj["id"], job["id"])
            self.assertEqual(gj["payload"], {"audio": "/a.wav"})
            self.assertEqual(gj["state"], "running")
            self.assertEqual(gj["attempts"], 1)
            self.assertEqual(gj["holder"], "w1")
            got = d.job(job["id"])
            self.assertEqual(got["state"], "running")
            self.assertEqual(got["lease_id"], g["lease_id"])
            self.assertEqual(got["holder"], "w1")
            self.assertTime(got["started_at"])
            self.assertIsNone(got.get("reason"))
            self.assertIsNone(got.get("position"))
            st = d.status()
            self.assertEqual(st["slots"][0]["job"], job["id"])
            self.assertEqual(st["slots"][0]["kind"], "job")
            self.assertEqual(st["slots"][0]["holder"], "w1")
            status, hb = d.lease_op(g, "heartbeat")
            self.assertEqual(status, 200, hb)
            self.assertEqual(hb["ttl"], 120)
            self.assertIsInstance(hb["ttl"], int, "ttl %r" % hb["ttl"])
            self.assertIs(hb["yield"], False)
            status, done = d.lease_op(g, "complete",
                                      result={"text": "hello"})
            self.assertEqual(status, 200, done)
            self.assertEqual(done["state"], "succeeded")
            self.assertEqual(done["result"], {"text": "hello"})
            got = d.job(job["id"])
            self.assertEqual(got["state"], "succeeded")
            self.assertEqual(got["result"], {"text": "hello"})
            self.assertIsNone(got.get("lease_id"))
            self.assertTime(got["finished_at"])
            self.assertIsNone(d.status()["slots"][0]["job"])

    def test_no_job_204_after_wait(self):
        with Daemon(CONFIG) as d:
            d.submit("summarization")   # not asked for
            t0 = time.monotonic()
            status, _, raw = d.request_raw(
                "POST", "/v1/leases", {"classes": ["transcription"]})
            self.assertEqual(status, 204, raw)
            self.assertEqual(raw, b"")
            self.assertLess(time.monotonic() - t0, 2.0, "wait 0 waited")
            t0 = time.monotonic()
            status, body = d.lease(["transcription"], wait=1)
            elapsed = time.monotonic() - t0
            self.assertEqual(status, 204, body)
            self.assertGreaterEqual(elapsed, 0.9)
            self.assertLess(elapsed, 4.0)

    def test_parked_poll_wakes_on_submit(self):
        with Daemon(CONFIG) as d:
            bg = Background(d.lease, ["transcription"], 10, "w1")
            time.sleep(0.3)
            t0 = time.monotonic()
            job = d.submit("transcription")
            status, g = bg.get()
            self.assertEqual(status, 200, g)
            self.assertEqual(g["job"]["id"], job["id"])
            self.assertLess(bg.finished_at - t0, 2.0, "slow wake-up")
            self.assertEqual(d.lease_op(g, "complete")[0], 200)

    def test_lease_validation(self):
        with Daemon(CONFIG) as d:
            d.submit("transcription")
            before = d.snapshot()
            st, _, body = d.request("POST", "/v1/leases",
                                    {"classes": ["transcription", "nosuch"],
                                     "wait": 0})
            self.assertError((st, body), 404, "unknown_class")
            err = body["error"]
            self.assertTrue(err.get("field") == "classes" or
                            "nosuch" in err.get("message", ""),
                            "unknown class not named: %r" % body)
            for what, b, field in (
                    ("no classes", {"wait": 0}, "classes"),
                    ("classes string", {"classes": "transcription"},
                     "classes"),
                    ("class not string", {"classes": [5]}, "classes"),
                    ("wait too big", {"classes": ["transcription"],
                                      "wait": 301}, "wait"),
                    ("wait negative", {"classes": ["transcription"],
                                       "wait": -1}, "wait"),
                    ("wait string", {"classes": ["transcription"],
                                     "wait": "1"}, "wait"),
                    ("worker not string", {"classes": ["transcription"],
                                           "worker": 5}, "worker")):
                with self.subTest(what):
                    self.assertError(d.request("POST", "/v1/leases", b),
                                     400, "invalid", field, what)
            self.assertError(d.request("POST", "/v1/leases", b"[1]"), 400,
                             "invalid")
            self.assertEqual(d.snapshot(), before)

    def test_stale_tokens_refused(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription")
            g = d.grant(["transcription"])
            for op in OPS:
                with self.subTest(op):
                    self.assertError(d.lease_op(g, op, token=g["token"] + 1),
                                     409, "stale_token", msg=op)
                    self.assertError(d.lease_op(g, op, token=0), 409,
                                     "stale_token", msg=op)
            self.assertError(
                d.request("POST", "/v1/leases/%s/heartbeat" % g["lease_id"],
                          {}), 400, "invalid", "token")
            self.assertError(
                d.request("POST", "/v1/leases/%s/heartbeat" % g["lease_id"],
                          {"token": "x"}), 400, "invalid", "token")
            got = d.job(job["id"])
            self.assertEqual(got["state"], "running")
            self.assertEqual(got["attempts"], 1)
            self.assertEqual(d.lease_op(g, "complete")[0], 200)
            for op in OPS:
                with self.subTest("after complete " + op):
                    self.assertError(d.lease_op(g, op), 409, "stale_token",
                                     msg=op)
            self.assertEqual(d.job(job["id"])["state"], "succeeded")
            # An unknown lease.
            st, body = d.lease_op("j999999.999999", "heartbeat", token=1)
            self.assertIn(st, (404, 409), body)

    def test_tokens_increase_across_grants_and_restarts(self):
        with Daemon(CONFIG) as d:
            tokens = []
            ids = []
            for round_ in range(3):
                for _ in range(3):
                    ids.append(d.submit("transcription")["id"])
                    g = d.grant(["transcription"])
                    self.assertEqual(g["job"]["id"], ids[-1])
                    tokens.append(g["token"])
                    self.assertEqual(d.lease_op(g, "complete")[0], 200)
                if round_ == 0:
                    d.stop()
                    d.restart()
                elif round_ == 1:
                    d.kill9()
                    d.restart()
            self.assertIncreasing(tokens, "fencing tokens")
            self.assertIncreasing([idnum(i) for i in ids], "job ids")

    def test_lease_expiry_requeues_and_fences(self):
        with Daemon(CONFIG) as d:
            job = d.submit("quick")
            g1 = d.grant(["quick"])
            self.assertEqual(g1["ttl"], 1)
            self.assertEqual(g1["job"]["attempts"], 1)
            t0 = time.monotonic()
            got = d.wait_state(job["id"], "queued", timeout=5)
            self.assertGreater(time.monotonic() - t0, 0.5, "expired early")
            self.assertEqual(got["attempts"], 1)
            self.assertEqual(got["error"]["code"], "lease_expired")
            self.assertIsNone(d.status()["slots"][0]["job"],
                              "slot not freed")
            self.assertError(d.lease_op(g1, "heartbeat"), 409,
                             "stale_token")
            g2 = d.grant(["quick"])
            self.assertEqual(g2["job"]["id"], job["id"])
            self.assertGreater(g2["token"], g1["token"])
            self.assertEqual(g2["job"]["attempts"], 2)
            for op in OPS:
                self.assertError(d.lease_op(g1, op), 409, "stale_token",
                                 msg=op)
            status, done = d.lease_op(g2, "complete", result=2)
            self.assertEqual(status, 200, done)
            self.assertEqual(done["state"], "succeeded")

    def test_expiry_of_last_attempt_is_dead(self):
        with Daemon(CONFIG) as d:
            job = d.submit("quick")
            tokens = []
            for attempt in range(1, 4):
                g = d.grant(["quick"])
                self.assertEqual(g["job"]["attempts"], attempt)
                tokens.append(g["token"])
                d.wait_state(job["id"], ("queued", "dead"), timeout=5)
            got = d.wait_state(job["id"], "dead", timeout=1)
            self.assertEqual(got["attempts"], 3)
            self.assertEqual(got["error"]["code"], "lease_expired")
            self.assertIncreasing(tokens)
            self.assertEqual(d.lease(["quick"], wait=0)[0], 204)

    def test_heartbeat_keeps_lease(self):
        with Daemon(CONFIG) as d:
            job = d.submit("quick")
            g = d.grant(["quick"])
            deadline = time.monotonic() + 2.2
            while time.monotonic() < deadline:
                status, hb = d.lease_op(g, "heartbeat")
                self.assertEqual(status, 200, hb)
                self.assertEqual(hb["ttl"], 1)
                time.sleep(0.3)
            got = d.job(job["id"])
            self.assertEqual(got["state"], "running")
            self.assertEqual(got["attempts"], 1)
            self.assertEqual(d.lease_op(g, "complete")[0], 200)


class FailYieldTest(GpuqTest):

    def test_fail_retryable_requeues_then_dead(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription")
            tokens = []
            for attempt in range(1, 4):
                g = d.grant(["transcription"], wait=5)
                self.assertEqual(g["job"]["id"], job["id"])
                self.assertEqual(g["job"]["attempts"], attempt)
                tokens.append(g["token"])
                status, body = d.lease_op(
                    g, "fail", error={"code": "oom", "message": "cuda oom"})
                self.assertEqual(status, 200, body)
                self.assertEqual(body["attempts"], attempt)
                self.assertEqual(body["error"],
                                 {"code": "oom", "message": "cuda oom"})
                self.assertEqual(body["state"],
                                 "queued" if attempt < 3 else "dead")
                self.assertError(d.lease_op(g, "complete"), 409,
                                 "stale_token")
            self.assertIncreasing(tokens)
            got = d.job(job["id"])
            self.assertEqual(got["state"], "dead")
            self.assertTime(got["finished_at"])
            self.assertEqual(d.lease(["transcription"], wait=0)[0], 204)

    def test_fail_backoff_delays_regrant(self):
        with Daemon(CONFIG) as d:
            job = d.submit("slowretry")
            g = d.grant(["slowretry"])
            t0 = time.monotonic()
            status, body = d.lease_op(g, "fail", error="flaky")
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "queued")
            self.assertTime(body["ready_at"])
            got = d.job(job["id"])
            self.assertEqual(got["reason"], "backoff")
            self.assertTime(got["ready_at"])
            self.assertEqual(d.lease(["slowretry"], wait=0)[0], 204,
                             "granted during backoff")
            g2 = d.grant(["slowretry"], wait=6)
            elapsed = time.monotonic() - t0
            self.assertEqual(g2["job"]["id"], job["id"])
            # backoff_base 2 * 2^0 times a factor in [0.5, 1]: 1..2 s.
            self.assertGreaterEqual(elapsed, 0.9)
            self.assertLess(elapsed, 4.0)
            self.assertEqual(g2["job"]["attempts"], 2)
            self.assertEqual(d.lease_op(g2, "complete")[0], 200)

    def test_fail_not_retryable_fails(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription")
            g = d.grant(["transcription"])
            status, body = d.lease_op(
                g, "fail", retryable=False,
                error={"code": "bad_input", "message": "not audio"})
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "failed")
            self.assertEqual(body["error"]["code"], "bad_input")
            got = d.job(job["id"])
            self.assertEqual(got["state"], "failed")
            self.assertEqual(got["error"],
                             {"code": "bad_input", "message": "not audio"})
            self.assertEqual(d.lease(["transcription"], wait=0)[0], 204)
            self.assertError(d.lease_op(g, "fail"), 409, "stale_token")

    def test_fail_validation(self):
        with Daemon(CONFIG) as d:
            d.submit("transcription")
            g = d.grant(["transcription"])
            self.assertError(d.lease_op(g, "fail", retryable="no"), 400,
                             "invalid", "retryable")
            self.assertError(d.lease_op(g, "fail", error=5), 400,
                             "invalid", "error")
            self.assertEqual(d.job(g["job"]["id"])["state"], "running")
            self.assertEqual(d.lease_op(g, "complete")[0], 200)

    def test_yield_keeps_place_and_progress(self):
        with Daemon(CONFIG) as d:
            a = d.submit("transcription", payload="a")
            b = d.submit("transcription", payload="b")
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], a["id"])
            status, body = d.lease_op(g, "yield", progress={"frac": 0.5})
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "queued")
            self.assertEqual(body["progress"], {"frac": 0.5})
            got = d.job(a["id"])
            self.assertEqual(got["state"], "queued")
            self.assertEqual(got["progress"], {"frac": 0.5})
            self.assertEqual(got["position"], 1)
            self.assertIsNone(got["error"])
            self.assertEqual(d.job(b["id"])["position"], 2)
            self.assertError(d.lease_op(g, "heartbeat"), 409, "stale_token")
            g2 = d.grant(["transcription"])
            self.assertEqual(g2["job"]["id"], a["id"], "yield lost its place")
            self.assertGreater(g2["token"], g["token"])
            self.assertEqual(g2["job"]["progress"], {"frac": 0.5})
            self.assertEqual(d.lease_op(g2, "complete")[0], 200)
            g3 = d.grant(["transcription"])
            self.assertEqual(g3["job"]["id"], b["id"])
            self.assertEqual(d.lease_op(g3, "complete")[0], 200)

    def test_heartbeat_asks_to_yield_for_higher_tier(self):
        with Daemon(CONFIG) as d:
            d.submit("transcription")
            g = d.grant(["transcription"])
            status, hb = d.lease_op(g, "heartbeat")
            self.assertEqual(status, 200, hb)
            self.assertIs(hb["yield"], False)
            # A chatbot job and a worker for it wait for the one slot.
            w = Worker(d, ["chatbot"], name="cw", wait=1)
            w.start()
            try:
                chat = d.submit("chatbot", payload="hi")
                hb = wait_until_yield(d, g)
                self.assertIs(hb["yield"], True)
                self.assertEqual(len(w.grants), 0, "granted while held")
                status, body = d.lease_op(g, "yield", progress=1)
                self.assertEqual(status, 200, body)
                grants = w.wait_grants(1, timeout=3)
                self.assertEqual(grants[0]["job"]["id"], chat["id"])
                w.wait_completed(1, timeout=3)
                self.assertEqual(d.job(chat["id"])["state"], "succeeded")
            finally:
                w.stop()
            # With no higher tier waiting, no yield is asked.
            g2 = d.grant(["transcription"])
            self.assertEqual(g2["job"]["id"], g["job"]["id"])
            self.assertIs(d.lease_op(g2, "heartbeat")[1]["yield"], False)
            self.assertEqual(d.lease_op(g2, "complete")[0], 200)

    def test_cancel_running_frees_slot(self):
        with Daemon(CONFIG) as d:
            a = d.submit("transcription")
            b = d.submit("transcription")
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], a["id"])
            status, _, body = d.request("POST",
                                        "/v1/jobs/%s/cancel" % a["id"])
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "cancelled")
            self.assertError(d.lease_op(g, "heartbeat"), 409, "stale_token")
            self.assertError(d.lease_op(g, "complete"), 409, "stale_token")
            t0 = time.monotonic()
            g2 = d.grant(["transcription"], wait=5)
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertEqual(g2["job"]["id"], b["id"])
            self.assertEqual(d.job(a["id"])["state"], "cancelled")
            self.assertEqual(d.lease_op(g2, "complete")[0], 200)


def wait_until_yield(d, g, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        status, hb = d.lease_op(g, "heartbeat")
        if status != 200:
            raise AssertionError("heartbeat: %d %r" % (status, hb))
        if hb["yield"] or time.monotonic() > deadline:
            return hb
        time.sleep(0.1)


if __name__ == "__main__":
    unittest.main()
