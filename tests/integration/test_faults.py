"""Store failures, injected with POST /v1/admin/fault under
--fault-injection (doc/api.md): a batch that cannot commit is answered
507 store_full / 503 store_failure and changes nothing; what was
acknowledged before stays."""

import os
import shutil
import tempfile
import time
import unittest

import execfix
from gpuqtest import BASE_CONFIG, Background, Daemon, GpuqTest, idnum


class FaultTest(GpuqTest):

    def fault(self, d, kind, after=None):
        body = {"kind": kind}
        if after is not None:
            body["after"] = after
        status, _, reply = d.request("POST", "/v1/admin/fault", body)
        self.assertIn(status, (200, 202, 204), reply)

    def test_fault_endpoint_needs_the_flag(self):
        with Daemon(BASE_CONFIG) as d:
            self.assertError(d.request("POST", "/v1/admin/fault",
                                       {"kind": "full"}), 404, "not_found")
            d.submit("transcription")

    def test_failed_submit_changes_nothing(self):
        with Daemon(BASE_CONFIG, args=["--fault-injection"]) as d:
            a = d.submit("transcription", payload="a")
            before = d.snapshot()
            for kind, status, code in (("full", 507, "store_full"),
                                       ("io", 503, "store_failure")):
                with self.subTest(kind):
                    self.fault(d, kind, after=0)
                    reply = d.request("POST", "/v1/jobs",
                                      {"class": "transcription",
                                       "payload": kind,
                                       "idempotency_key": "k-" + kind})
                    self.assertError(reply, status, code)
                    self.fault(d, "none")
                    self.assertEqual(d.snapshot(), before)
            # The keys of the failed submits were not kept either.
            c = d.submit("transcription", payload="c",
                         idempotency_key="k-full")
            self.assertGreater(idnum(c["id"]), idnum(a["id"]))
            self.assertEqual(d.job(c["id"])["payload"], "c")
            d.kill9()
            d.restart()
            self.assertEqual([(j["id"], j["payload"]) for j in d.jobs()],
                             [(a["id"], "a"), (c["id"], "c")])

    def test_failed_complete_keeps_the_grant(self):
        with Daemon(BASE_CONFIG, args=["--fault-injection"]) as d:
            job = d.submit("transcription")
            g = d.grant(["transcription"])
            self.fault(d, "io", after=0)
            self.assertError(d.lease_op(g, "complete", result=1), 503,
                             "store_failure")
            self.fault(d, "none")
            got = d.job(job["id"])
            self.assertEqual(got["state"], "running")
            self.assertIsNone(got["result"])
            # The grant is still live: its token still completes it.
            status, body = d.lease_op(g, "complete", result=2)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["result"], 2)
            d.kill9()
            d.restart()
            got = d.job(job["id"])
            self.assertEqual((got["state"], got["result"]), ("succeeded", 2))

    def test_failed_grant_is_not_granted(self):
        with Daemon(BASE_CONFIG, args=["--fault-injection"]) as d:
            job = d.submit("summarization")
            self.fault(d, "full", after=0)
            status, body = d.lease(["summarization"], wait=1)
            self.assertNotEqual(status, 200, "granted without a commit")
            self.fault(d, "none")
            got = d.job(job["id"])
            self.assertEqual(got["state"], "queued")
            self.assertEqual(got["attempts"], 0)
            g = d.grant(["summarization"], wait=5)
            self.assertEqual(g["job"]["id"], job["id"])
            self.assertEqual(g["job"]["attempts"], 1)
            self.assertEqual(d.lease_op(g, "complete")[0], 200)
            # Tokens handed out before a failure are never reused.
            d.kill9()
            d.restart()
            d.submit("summarization")
            g2 = d.grant(["summarization"])
            self.assertGreater(g2["token"], g["token"])
            self.assertEqual(d.lease_op(g2, "complete")[0], 200)

    def test_failing_store_does_not_spin(self):
        # Regression (crash campaign): a failed commit rebuilds memory
        # from the store; when the rebuild had a change of its own (here:
        # failing the queued lock waiter) the next turn ran at once,
        # failed the same way, and so on without ever polling: no request
        # was read, not even the one that lifts the fault.
        with Daemon(BASE_CONFIG, args=["--fault-injection"]) as d:
            status, held = d.lock("transcription", wait=2, holder="h1")
            self.assertEqual(status, 200, held)
            waiter = Background(d.lock, "transcription", 10, "h2")
            time.sleep(0.3)
            self.fault(d, "io", after=0)
            status, _, _ = d.request("POST", "/v1/jobs",
                                     {"class": "summarization"})
            self.assertEqual(status, 503)
            time.sleep(1.0)
            # Answered while the store still fails, and after.
            self.assertIn(d.request("GET", "/healthz", timeout=5)[0],
                          (200, 503))
            self.fault(d, "none")
            self.assertEqual(d.request("GET", "/healthz")[0], 200)
            waiter.get()
            with open(d.log) as f:
                rebuilds = f.read().count("rebuilding state")
            # Backing off from 10 ms, doubling: a dozen at most in 1.3 s
            # (it was about 1,600 a second).
            self.assertLess(rebuilds, 40, "the daemon spun")
            d.submit("summarization")

    def test_builtin_run_resumes_after_store_failure(self):
        # Regression (crash campaign): the rebuild after a failed commit
        # cancels built-in runs but reloaded their grants with the
        # class's lease_ttl, so the slot sat idle for minutes.  They now
        # expire as soon as the store works again and the job resumes
        # from its stored progress.
        root = tempfile.mkdtemp(prefix="gpuqfault-")
        self.addCleanup(shutil.rmtree, root, True)
        path = os.path.join(root, "x.wav")
        execfix.write_wav(path, 30.0)
        with execfix.FakeInfer("whisper",
                               script={"per_audio_second_s": 0.05}) as fk:
            cfg = execfix.exec_config(
                fk.port, root, class_transcription={"max_hold": 0.3,
                                                    "lease_ttl": 120},
                backend_whisper={"timeout": 10})
            with Daemon(cfg, args=["--fault-injection"]) as d:
                j = d.submit("transcription", payload={"audio_path": path})
                execfix.wait_until(
                    lambda: (d.job(j["id"])["progress"] or {})
                    .get("chunks_done", 0) >= 1, 15, what="a chunk")
                self.fault(d, "io", after=0)
                d.request("POST", "/v1/jobs", {"class": "summarization"})
                self.fault(d, "none")
                job = d.wait_state(j["id"], ("succeeded",), timeout=30)
                self.assertEqual(job["state"], "succeeded")


if __name__ == "__main__":
    unittest.main()
