"""GPU locks: grant, wait, release, timeout, ttl, priority
(doc/api.md "GPU locks")."""

import json
import socket
import time
import unittest

from gpuqtest import Background, Daemon, GpuqTest, Worker, wait_until

CONFIG = """\
[server]
drain_timeout = 5

[gpu]
slots = 1

[class chatbot]
priority = 10

[class transcription]
weight = 70
max_consecutive = 2

[class summarization]
weight = 30
max_consecutive = 1

[class short]
lease_ttl = 1
"""


def lock_jobs(d, state=None):
    q = "state=" + state if state else ""
    return [j for j in d.jobs(q) if j["kind"] == "lock"]


class LockTest(GpuqTest):

    def assertGranted(self, reply):
        status, body = reply
        self.assertEqual(status, 200, body)
        for k in ("lock_id", "token", "ttl", "job_id"):
            self.assertIn(k, body)
        return body

    def test_lock_when_free_and_release(self):
        with Daemon(CONFIG) as d:
            t0 = time.monotonic()
            lk = self.assertGranted(d.lock("transcription", wait=5,
                                           holder="h1",
                                           metadata={"pid": 42}))
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertIsInstance(lk["token"], int)
            self.assertEqual(lk["ttl"], 120)
            self.assertIsInstance(lk["ttl"], int, "ttl %r" % lk["ttl"])
            self.assertTrue(lk["lock_id"].startswith(lk["job_id"] + "."))
            job = d.job(lk["job_id"])
            self.assertEqual(job["kind"], "lock")
            self.assertEqual(job["class"], "transcription")
            self.assertEqual(job["state"], "running")
            self.assertEqual(job["holder"], "h1")
            self.assertEqual(job["metadata"], {"pid": 42})
            self.assertEqual(job["lease_id"], lk["lock_id"])
            slot = d.status()["slots"][0]
            self.assertEqual(slot["job"], lk["job_id"])
            self.assertEqual(slot["kind"], "lock")
            self.assertEqual(slot["holder"], "h1")
            status, hb = d.request(
                "POST", "/v1/locks/%s/heartbeat" % lk["lock_id"],
                {"token": lk["token"]})[::2]
            self.assertEqual(status, 200, hb)
            self.assertEqual(hb["ttl"], 120)
            status, body = d.release(lk)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "succeeded")
            self.assertEqual(body["id"], lk["job_id"])
            self.assertIsNone(d.status()["slots"][0]["job"])
            # Released once is released: the token is no longer live.
            self.assertError(d.release(lk), 409, "stale_token")
            job = d.job(lk["job_id"])
            self.assertEqual(job["state"], "succeeded")
            self.assertEqual([h["state"] for h in job["history"]],
                             ["queued", "running", "succeeded"])
            self.assertEqual(job["history"][1]["detail"]["token"],
                             lk["token"])

    def test_second_lock_waits_then_granted_on_release(self):
        with Daemon(CONFIG) as d:
            lk1 = self.assertGranted(d.lock("transcription", holder="h1"))
            bg = Background(d.lock, "transcription", 10, "h2")
            waiting = wait_until(lambda: lock_jobs(d, "queued"), 3,
                                 what="a queued lock job")
            self.assertEqual(len(waiting), 1)
            self.assertEqual(waiting[0]["reason"], "gpu_busy")
            self.assertEqual(waiting[0]["position"], 1)
            time.sleep(0.3)
            self.assertTrue(bg.is_alive(), "second lock did not wait")
            t0 = time.monotonic()
            self.assertEqual(d.release(lk1)[0], 200)
            lk2 = self.assertGranted(bg.get(timeout=5))
            self.assertLess(bg.finished_at - t0, 1.0, "slow hand-off")
            self.assertEqual(lk2["job_id"], waiting[0]["id"])
            self.assertGreater(lk2["token"], lk1["token"])
            self.assertEqual(d.job(lk2["job_id"])["state"], "running")
            self.assertEqual(d.release(lk2)[0], 200)

    def test_wait_timeout_removes_waiter(self):
        with Daemon(CONFIG) as d:
            lk1 = self.assertGranted(d.lock("transcription", holder="h1"))
            t0 = time.monotonic()
            reply = d.lock("transcription", wait=1, holder="h2")
            elapsed = time.monotonic() - t0
            self.assertError(reply, 408, "timeout")
            self.assertGreaterEqual(elapsed, 0.9)
            self.assertLess(elapsed, 4.0)
            others = [j for j in lock_jobs(d) if j["id"] != lk1["job_id"]]
            self.assertEqual(len(others), 1, others)
            self.assertEqual(others[0]["state"], "expired")
            self.assertEqual(d.status()["slots"][0]["job"], lk1["job_id"])
            self.assertEqual(d.release(lk1)[0], 200)
            self.assertIsNone(d.status()["slots"][0]["job"],
                              "the timed-out waiter holds the GPU")
            self.assertEqual(d.job(others[0]["id"])["state"], "expired")
            lk3 = self.assertGranted(d.lock("transcription", wait=2))
            self.assertEqual(d.release(lk3)[0], 200)

    def test_wait_zero_is_a_try_lock(self):
        with Daemon(CONFIG) as d:
            lk1 = self.assertGranted(d.lock("transcription", wait=0))
            t0 = time.monotonic()
            self.assertError(d.lock("transcription", wait=0), 408,
                             "timeout")
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertEqual(d.release(lk1)[0], 200)

    def test_release_with_wrong_token(self):
        with Daemon(CONFIG) as d:
            lk = self.assertGranted(d.lock("transcription"))
            self.assertError(d.release(lk, token=lk["token"] + 1), 409,
                             "stale_token")
            self.assertError(d.release(lk, token=0), 409, "stale_token")
            self.assertEqual(d.job(lk["job_id"])["state"], "running")
            self.assertEqual(d.status()["slots"][0]["job"], lk["job_id"])
            self.assertError(
                d.request("DELETE", "/v1/locks/%s" % lk["lock_id"]),
                400, "invalid", "token")
            self.assertError(
                d.request("DELETE", "/v1/locks/%s?token=abc"
                          % lk["lock_id"]), 400, "invalid", "token")
            self.assertError(
                d.request("POST", "/v1/locks/%s/heartbeat" % lk["lock_id"],
                          {"token": lk["token"] + 1}), 409, "stale_token")
            self.assertEqual(d.job(lk["job_id"])["state"], "running")
            self.assertEqual(d.release(lk)[0], 200)

    def test_lock_ttl_expiry_frees_gpu(self):
        with Daemon(CONFIG) as d:
            lk = self.assertGranted(d.lock("short"))
            self.assertEqual(lk["ttl"], 1)
            t0 = time.monotonic()
            job = d.wait_state(lk["job_id"], ("failed", "succeeded",
                                              "expired", "dead"), timeout=5)
            self.assertGreater(time.monotonic() - t0, 0.5)
            self.assertEqual(job["state"], "failed")
            self.assertEqual(job["error"]["code"], "lease_expired")
            self.assertIsNone(d.status()["slots"][0]["job"])
            self.assertError(d.release(lk), 409, "stale_token")
            self.assertError(
                d.request("POST", "/v1/locks/%s/heartbeat" % lk["lock_id"],
                          {"token": lk["token"]}), 409, "stale_token")
            lk2 = self.assertGranted(d.lock("transcription", wait=2))
            self.assertEqual(d.release(lk2)[0], 200)

    def test_lock_heartbeat_keeps_it(self):
        with Daemon(CONFIG) as d:
            lk = self.assertGranted(d.lock("short"))
            deadline = time.monotonic() + 2.2
            while time.monotonic() < deadline:
                status, _, hb = d.request(
                    "POST", "/v1/locks/%s/heartbeat" % lk["lock_id"],
                    {"token": lk["token"]})
                self.assertEqual(status, 200, hb)
                time.sleep(0.3)
            self.assertEqual(d.job(lk["job_id"])["state"], "running")
            status, body = d.release(lk)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "succeeded")

    def test_high_tier_lock_goes_before_batch_jobs(self):
        with Daemon(CONFIG) as d:
            lk0 = self.assertGranted(d.lock("transcription", holder="h0"))
            t1 = d.submit("transcription")
            t2 = d.submit("transcription")
            w = Worker(d, ["transcription"], name="tw", wait=1, hold=0.1)
            w.start()
            try:
                bg = Background(d.lock, "chatbot", 10, "chat")
                wait_until(lambda: [j for j in lock_jobs(d, "queued")
                                    if j["class"] == "chatbot"], 3,
                           what="the chatbot lock to wait")
                self.assertEqual(d.job(t1["id"])["state"], "queued")
                self.assertEqual(d.release(lk0)[0], 200)
                lk = self.assertGranted(bg.get(timeout=5))
                self.assertEqual(d.job(lk["job_id"])["class"], "chatbot")
                time.sleep(0.2)
                self.assertEqual(w.grants, [], "batch job went first")
                self.assertEqual(d.job(t1["id"])["state"], "queued")
                self.assertEqual(d.job(t1["id"])["reason"], "gpu_busy")
                self.assertEqual(d.release(lk)[0], 200)
                grants = w.wait_grants(2, timeout=5)
                self.assertEqual([g["job"]["id"] for g in grants],
                                 [t1["id"], t2["id"]])
                w.wait_completed(2, timeout=3)
            finally:
                w.stop()

    def test_disconnected_waiter_is_cancelled(self):
        with Daemon(CONFIG) as d:
            lk = self.assertGranted(d.lock("transcription"))
            body = json.dumps({"class": "transcription", "wait": 10,
                               "holder": "gone"}).encode()
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            try:
                s.sendall(b"POST /v1/locks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
                waiting = wait_until(lambda: lock_jobs(d, "queued"), 3,
                                     what="the lock waiter")
            finally:
                s.close()
            job = d.wait_state(waiting[0]["id"], ("cancelled", "running",
                                                  "expired"), timeout=5)
            self.assertEqual(job["state"], "cancelled")
            self.assertEqual(d.release(lk)[0], 200)
            self.assertIsNone(d.status()["slots"][0]["job"],
                              "a disconnected waiter holds the GPU")

    def test_lock_validation(self):
        with Daemon(CONFIG) as d:
            before = d.snapshot()
            self.assertError(d.request("POST", "/v1/locks",
                                       {"class": "nosuch", "wait": 0}),
                             404, "unknown_class", "class")
            for what, b, field in (
                    ("no class", {"wait": 0}, "class"),
                    ("class not string", {"class": 1}, "class"),
                    ("wait negative", {"class": "chatbot", "wait": -1},
                     "wait"),
                    ("wait too big", {"class": "chatbot", "wait": 3601},
                     "wait"),
                    ("holder not string", {"class": "chatbot", "wait": 0,
                                           "holder": 3}, "holder"),
                    ("metadata not object", {"class": "chatbot", "wait": 0,
                                             "metadata": [1]}, "metadata"),
                    ("priority not int", {"class": "chatbot", "wait": 0,
                                          "priority": "x"}, "priority")):
                with self.subTest(what):
                    self.assertError(d.request("POST", "/v1/locks", b), 400,
                                     "invalid", field, what)
            self.assertEqual(d.snapshot(), before)
            status, _, body = d.request(
                "POST", "/v1/locks/j999.999/heartbeat", {"token": 999})
            self.assertIn(status, (404, 409), body)


if __name__ == "__main__":
    unittest.main()
