"""The synchronous client against the real gpuqd: jobs, locks, leases,
status and errors."""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpuq_support import DaemonCase, wait_until  # noqa: E402

import gpuq  # noqa: E402


class JobTest(DaemonCase):

    def setUp(self):
        self.gq = gpuq.Client(self.url, timeout=10)

    def test_submit_and_get(self):
        j = self.gq.submit("jobs", {"n": 1}, metadata={"m": "x"},
                           priority=5)
        self.assertRegex(j["id"], r"^j\d+$")
        self.assertEqual(j["class"], "jobs")
        self.assertEqual(j["state"], "queued")
        self.assertEqual(j["payload"], {"n": 1})
        self.assertEqual(j["metadata"], {"m": "x"})
        self.assertEqual(j["priority"], 5)
        got = self.gq.get(j["id"])
        self.assertEqual(got["id"], j["id"])
        self.assertEqual(got["history"][0]["state"], "queued")
        self.assertEqual(self.gq.get(j)["id"], j["id"])   # a job object
        self.gq.cancel(j)

    def test_idempotency_key_and_depends_on(self):
        a = self.gq.submit("jobs", idempotency_key="client-idem-1")
        b = self.gq.submit("jobs", idempotency_key="client-idem-1")
        self.assertEqual(a["id"], b["id"])
        c = self.gq.submit("jobs", depends_on=[a, b["id"]],
                           callback_url="http://127.0.0.1:9/hook")
        self.assertEqual(set(c["depends_on"]), {a["id"]})
        self.assertEqual(c["reason"], "deps")
        self.assertEqual(c["callback_url"], "http://127.0.0.1:9/hook")
        self.gq.cancel(c)
        self.gq.cancel(a)

    def test_list_pages(self):
        ids = [self.gq.submit("jobs", metadata={"list": i})["id"]
               for i in range(5)]
        got = [j["id"] for j in self.gq.list(cls="jobs", state="queued",
                                             page_size=2)]
        for i in ids:
            self.assertIn(i, got)
        self.assertEqual(got, sorted(got, key=lambda s: int(s[1:])))
        self.assertEqual(len(list(self.gq.list(cls="jobs", limit=3,
                                               page_size=2))), 3)
        page = self.gq.list_page(cls="jobs", limit=2)
        self.assertEqual(len(page["jobs"]), 2)
        self.assertIsNotNone(page["next"])
        after = [j["id"] for j in self.gq.list(cls="jobs",
                                               after=ids[2])]
        self.assertNotIn(ids[2], after)
        self.assertIn(ids[3], after)
        for i in ids:
            self.gq.cancel(i)

    def test_cancel_requeue(self):
        j = self.gq.submit("jobs")
        self.assertEqual(self.gq.cancel(j)["state"], "cancelled")
        with self.assertRaises(gpuq.BadState) as cm:
            self.gq.cancel(j)
        self.assertEqual(cm.exception.status, 409)
        self.assertIsInstance(cm.exception, gpuq.Conflict)
        r = self.gq.requeue(j)
        self.assertEqual(r["state"], "queued")
        self.assertEqual(r["attempts"], 0)
        with self.assertRaises(gpuq.BadState):
            self.gq.requeue(j)
        self.gq.cancel(j)

    def test_wait(self):
        j = self.gq.submit("jobs")
        t0 = time.monotonic()
        with self.assertRaises(gpuq.Timeout) as cm:
            self.gq.wait(j, timeout=0.5)
        self.assertGreaterEqual(time.monotonic() - t0, 0.45)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertIsNone(cm.exception.status)
        threading.Timer(0.3, self.gq.cancel, (j["id"],)).start()
        t0 = time.monotonic()
        done = self.gq.wait(j["id"], timeout=5)
        self.assertEqual(done["state"], "cancelled")
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(self.gq.get(j, wait=1)["state"], "cancelled")

    def test_errors(self):
        with self.assertRaises(gpuq.UnknownClass) as cm:
            self.gq.submit("no-such-class")
        e = cm.exception
        self.assertIsInstance(e, ValueError)
        self.assertIsInstance(e, gpuq.NotFound)
        self.assertEqual((e.status, e.code, e.field),
                         (404, "unknown_class", "class"))
        with self.assertRaises(gpuq.InvalidRequest) as cm:
            self.gq.submit("jobs", priority=5000)
        self.assertEqual(cm.exception.field, "priority")
        with self.assertRaises(gpuq.NotFound) as cm:
            self.gq.get("j999999")
        self.assertNotIsInstance(cm.exception, gpuq.UnknownClass)
        self.assertEqual(cm.exception.code, "not_found")
        with self.assertRaises(ValueError):
            self.gq.submit_transcription_job()        # neither path nor audio
        with self.assertRaises(TypeError):
            self.gq.submit_summarization_job(text="x", colour="red")

    def test_queue_full(self):
        j = self.gq.submit("tiny")
        try:
            with self.assertRaises(gpuq.QueueFull) as cm:
                self.gq.submit("tiny")
            self.assertEqual(cm.exception.status, 429)
            self.assertIsInstance(cm.exception.retry_after, float)
            self.assertGreater(cm.exception.retry_after, 0)
        finally:
            self.gq.cancel(j)

    def test_status(self):
        st = self.gq.get_status()
        self.assertIsInstance(st["version"], str)
        self.assertIsInstance(st["uptime_s"], int)
        self.assertFalse(st["draining"])
        self.assertEqual(len(st["slots"]), 1)
        names = [c["name"] for c in st["classes"]]
        for n in ("chatbot", "transcription", "summarization", "jobs"):
            self.assertIn(n, names)
        for c in st["classes"]:
            for k in ("priority", "weight", "queued", "running", "share",
                      "target_share", "executor"):
                self.assertIn(k, c)
        self.assertEqual(self.gq.status()["version"], st["version"])
        self.assertTrue(self.gq.healthy())

    def test_events(self):
        threading.Timer(0.3, self.gq.submit, ("jobs",),
                        {"metadata": {"ev": 1}}).start()
        gen = self.gq.events(cls="jobs")
        ev = next(gen)
        gen.close()
        self.assertEqual(ev["class"], "jobs")
        self.assertEqual(ev["state"], "queued")
        self.gq.cancel(ev["id"])

    def test_connection_refused(self):
        with self.assertRaises(OSError):
            gpuq.Client("http://127.0.0.1:1", timeout=2).status()
        self.assertFalse(isinstance(gpuq.Error(1, "x", "y"), OSError))

    def test_token_header(self):
        # The daemon ignores the header today; it must not break requests.
        gq = gpuq.Client(self.url, token="secret-token", timeout=10)
        self.assertIn("version", gq.status())


class LockTest(DaemonCase):

    def setUp(self):
        self.gq = gpuq.Client(self.url, timeout=10)

    def test_granted_and_released(self):
        with self.gq.acquire_lock("locks", job_id="m-7",
                                  metadata={"who": "t"}, holder="app",
                                  wait=5) as lk:
            self.assertTrue(lk.lock_id.startswith(lk.job_id + "."))
            self.assertIsInstance(lk.token, int)
            j = self.gq.get(lk.job_id)
            self.assertEqual(j["kind"], "lock")
            self.assertEqual(j["state"], "running")
            self.assertEqual(j["holder"], "app")
            self.assertEqual(j["metadata"], {"who": "t", "job_id": "m-7"})
            slot = self.gq.status()["slots"][0]
            self.assertEqual(slot["job"], lk.job_id)
        self.assertEqual(lk.released["state"], "succeeded")
        self.assertEqual(self.gq.get(lk.job_id)["state"], "succeeded")
        self.assertIsNone(self.gq.status()["slots"][0]["job"])

    def test_heartbeats_keep_it_beyond_ttl(self):
        with self.gq.lock("short", wait=5) as lk:
            self.assertEqual(lk.ttl, 1)
            time.sleep(2.5)
            self.assertEqual(self.gq.get(lk.job_id)["state"], "running")
            self.assertFalse(lk.lost)
        self.assertEqual(self.gq.get(lk.job_id)["state"], "succeeded")

    def test_released_when_the_body_raises(self):
        lk = self.gq.lock("locks", wait=5)
        with self.assertRaises(ZeroDivisionError):
            with lk:
                1 / 0
        self.assertEqual(self.gq.get(lk.job_id)["state"], "succeeded")

    def test_unknown_class(self):
        with self.assertRaises(ValueError):
            with self.gq.acquire_lock("no-such-class", wait=1):
                self.fail("granted a lock of an unknown class")

    def test_second_waits_for_first(self):
        first = self.gq.lock("locks", wait=5).acquire()
        got = {}

        def second():
            with self.gq.lock("locks", wait=10) as lk:
                got["at"] = time.monotonic()
                got["job"] = lk.job_id
        t = threading.Thread(target=second, daemon=True)
        t.start()
        # The second lock job is queued behind the first.
        waiting = wait_until(lambda: [j for j in self.gq.list(
            cls="locks", state="queued") if j["kind"] == "lock"], 5,
            what="a queued lock")
        time.sleep(0.5)
        self.assertNotIn("at", got)
        released = time.monotonic()
        first.release()
        t.join(10)
        self.assertFalse(t.is_alive())
        self.assertGreaterEqual(got["at"], released)
        self.assertLess(got["at"] - released, 2.0)
        self.assertEqual(got["job"], waiting[0]["id"])
        self.assertEqual(self.gq.get(got["job"])["state"], "succeeded")

    def test_wait_runs_out(self):
        with self.gq.lock("locks", wait=5):
            t0 = time.monotonic()
            with self.assertRaises(gpuq.Timeout) as cm:
                self.gq.lock("locks", wait=0.5).acquire()
            self.assertEqual(cm.exception.status, 408)
            self.assertLess(time.monotonic() - t0, 3.0)

    def test_lost_lock_raises_on_exit(self):
        with self.assertRaises(gpuq.StaleToken):
            with self.gq.lock("short", wait=5) as lk:
                self.gq.cancel(lk.job_id)
                wait_until(lambda: lk.lost, 5, what="the lock to be lost")
        self.assertEqual(self.gq.get(lk.job_id)["state"], "cancelled")


class LeaseTest(DaemonCase):

    def setUp(self):
        self.gq = gpuq.Client(self.url, timeout=10)

    def test_lease_complete(self):
        j = self.gq.submit("work", {"in": 1})
        lease = self.gq.lease("work", wait=5, worker="w1")
        self.assertIsInstance(lease, gpuq.Lease)
        self.assertEqual(lease.job_id, j["id"])
        self.assertEqual(lease.payload, {"in": 1})
        hb = lease.heartbeat()
        self.assertIn("ttl", hb)
        self.assertFalse(lease.should_yield)
        done = lease.complete({"out": 2})
        self.assertEqual(done["state"], "succeeded")
        self.assertEqual(self.gq.get(j)["result"], {"out": 2})
        self.assertEqual(self.gq.get(j)["holder"], "w1")
        with self.assertRaises(gpuq.StaleToken):
            lease.heartbeat()

    def test_nothing_to_lease(self):
        t0 = time.monotonic()
        self.assertIsNone(self.gq.lease(["work"], wait=0.3))
        self.assertLess(time.monotonic() - t0, 3.0)
        with self.assertRaises(gpuq.UnknownClass):
            self.gq.lease("no-such-class", wait=0)

    def test_fail_and_yield(self):
        j = self.gq.submit("work")
        lease = self.gq.lease("work", wait=5)
        self.assertEqual(lease.yield_({"step": 1})["state"], "queued")
        self.assertEqual(self.gq.get(j)["progress"], {"step": 1})
        lease = self.gq.lease("work", wait=5)
        self.assertEqual(lease.job_id, j["id"])
        r = lease.fail({"code": "bad_input", "message": "no"},
                       retryable=False)
        self.assertEqual(r["state"], "failed")
        self.assertEqual(self.gq.get(j)["error"]["code"], "bad_input")

    def test_context_manager_fails_on_exception(self):
        j = self.gq.submit("work")
        with self.assertRaises(KeyError):
            with self.gq.lease("work", wait=5) as lease:
                self.assertEqual(lease.job_id, j["id"])
                raise KeyError("boom")
        got = self.gq.get(j)
        self.assertIn(got["state"], ("queued", "running"))   # retried
        self.assertEqual(got["error"]["code"], "KeyError")
        lease = self.gq.lease("work", wait=5)
        lease.complete()

    def test_heartbeats_keep_lease(self):
        j = self.gq.submit("short")
        with self.gq.lease("short", wait=5) as lease:
            self.assertEqual(lease.ttl, 1)
            time.sleep(2.5)
            self.assertEqual(self.gq.get(j)["state"], "running")
            lease.complete("ok")
        self.assertEqual(self.gq.get(j)["result"], "ok")

    def test_work_loop(self):
        a = self.gq.submit("work", {"x": 2})
        b = self.gq.submit("work", {"x": "bad"})

        def handler(job):
            return {"y": job["payload"]["x"] * 2 + 0}
        n = self.gq.work("work", handler, worker="loop", wait=2, max_jobs=2)
        self.assertEqual(n, 2)
        self.assertEqual(self.gq.get(a)["result"], {"y": 4})
        # "bad" * 2 + 0 raises TypeError: failed, retried after backoff.
        got = self.gq.get(b)
        self.assertEqual(got["error"]["code"], "TypeError")
        lease = self.gq.lease("work", wait=5)
        self.assertEqual(lease.job_id, b["id"])
        lease.fail("still bad", retryable=False)


class UnitTest(unittest.TestCase):
    """Parts that need no daemon."""

    def test_url(self):
        gq = gpuq.Client("127.0.0.1:9999/prefix/")
        self.assertEqual(gq.endpoint.port, 9999)
        self.assertEqual(gq.endpoint.path("/v1/jobs"), "/prefix/v1/jobs")
        with self.assertRaises(ValueError):
            gpuq.Client("ftp://x")
        old = os.environ.get("GPUQ_URL")
        os.environ["GPUQ_URL"] = "http://127.0.0.1:1234"
        try:
            self.assertEqual(gpuq.Client().url, "http://127.0.0.1:1234")
        finally:
            if old is None:
                del os.environ["GPUQ_URL"]
            else:
                os.environ["GPUQ_URL"] = old

    def test_error_mapping(self):
        from gpuq.errors import error_from_reply
        e = error_from_reply(429, {"retry-after": "3"}, {"error": {
            "code": "queue_full", "message": "full"}})
        self.assertIsInstance(e, gpuq.QueueFull)
        self.assertEqual(e.retry_after, 3.0)
        self.assertIsInstance(error_from_reply(503, {}, {"error": {
            "code": "draining", "message": "d"}}), gpuq.Unavailable)
        self.assertIsInstance(error_from_reply(401, {}, None),
                              gpuq.Unauthorized)
        self.assertIsInstance(error_from_reply(502, {}, {"error": {
            "code": "busy", "message": "x"}}, job_reply=True),
            gpuq.JobFailed)
        e = error_from_reply(500, {}, "oops")
        self.assertEqual((type(e), e.message), (gpuq.Error, "oops"))
        self.assertIn("unknown_class", str(error_from_reply(404, {}, {
            "error": {"code": "unknown_class", "message": "m",
                      "field": "class"}})))

    def test_sse_and_payloads(self):
        from gpuq import _common as c
        p = c.SSEParser()
        evs = [p.feed(x) for x in ("event: token\n", "data: {\"a\":1}\n",
                                   ": ping\n", "\n")]
        self.assertEqual(evs[-1], ("token", '{"a":1}'))
        self.assertEqual(c.transcription_payload(None, b"RIFF", "en", None),
                         {"audio": "UklGRg==", "language": "en"})
        self.assertEqual(c.summarization_payload(None, {"id": "j4"}, None,
                                                 10),
                         {"from_job": "j4", "max_words": 10})
        with self.assertRaises(ValueError):
            c.summarization_payload("t", "j1", None, None)


if __name__ == "__main__":
    unittest.main()
