"""Durability: kill -9 and restart, crash under load, fencing across
restarts, drain and SIGTERM (doc/api.md "Conventions", "POST
/v1/admin/drain")."""

import http.client
import random
import threading
import time
import unittest

from gpuqtest import (VALGRIND, Background, Daemon, GpuqTest, Worker,
                      idnum, scaled, wait_until)

# drain_timeout bounds the drain tests' held jobs: scaled with the
# harness's timeouts, so that a slow daemon (make valgrind) does not end
# its drain before a test completes the job it holds.
CONFIG = """\
[server]
drain_timeout = %g

[gpu]
slots = 1

[class chatbot]
priority = 10
lease_ttl = 1

[class transcription]
weight = 70
max_consecutive = 2
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

[class once]
lease_ttl = 1
max_attempts = 1
""" % scaled(10)


class RestartTest(GpuqTest):

    def test_kill9_keeps_acknowledged_jobs_in_order(self):
        with Daemon(CONFIG) as d:
            acked = []
            for i in range(20):
                cls = "transcription" if i % 2 else "summarization"
                job = d.submit(cls, payload={"i": i},
                               metadata={"n": str(i)},
                               idempotency_key="k%d" % i, priority=i % 3)
                acked.append(job)
            # A finished job is stored too.
            done = d.submit("chatbot", payload="done")
            g = d.grant(["chatbot"])
            self.assertEqual(g["job"]["id"], done["id"])
            self.assertEqual(d.lease_op(g, "complete", result="ok")[0], 200)
            before = {j["id"]: j for j in d.jobs()}
            positions = {j["id"]: d.job(j["id"])["position"]
                         for j in acked}
            d.kill9()
            d.restart()
            after = d.jobs()
            self.assertEqual([j["id"] for j in after],
                             [j["id"] for j in acked] + [done["id"]])
            for j in after:
                b = before[j["id"]]
                for k in ("class", "state", "priority", "payload",
                          "metadata", "idempotency_key", "created_at",
                          "result"):
                    self.assertEqual(j[k], b[k], "%s.%s" % (j["id"], k))
            for j in acked:
                self.assertEqual(d.job(j["id"])["position"],
                                 positions[j["id"]], j["id"])
            # Keys survive: a repeat is the same job.
            st, _, again = d.request("POST", "/v1/jobs",
                                     {"class": "transcription",
                                      "payload": {"i": 3},
                                      "idempotency_key": "k3"})
            self.assertEqual(st, 200, again)
            self.assertEqual(again["id"], acked[3]["id"])
            # Ids never repeat.
            new = d.submit("transcription")
            self.assertGreater(idnum(new["id"]), idnum(done["id"]))
            # The queue order survived: grants follow it.
            g = d.grant(["summarization"])
            self.assertEqual(g["job"]["id"],
                             sorted((j for j in acked
                                     if j["class"] == "summarization"),
                                    key=lambda j: (-j["priority"],
                                                   idnum(j["id"])))[0]["id"])
            self.assertEqual(d.lease_op(g, "complete")[0], 200)

    def test_running_job_after_kill9(self):
        with Daemon(CONFIG) as d:
            q = d.submit("quick")
            o = d.submit("once")
            gq = d.grant(["quick"])
            self.assertEqual(d.lease_op(gq, "complete")[0], 200)
            q2 = d.submit("quick")
            gq = d.grant(["quick"])
            self.assertEqual(gq["job"]["id"], q2["id"])
            d.kill9()
            d.restart()
            # "A job that was running when the daemon died has its attempt
            # counted and goes back to queued" (doc/api.md "Restart").
            got = d.wait_state(q2["id"], "queued", timeout=6)
            self.assertEqual(got["attempts"], 1)
            self.assertEqual(got["error"]["code"], "daemon_restart")
            self.assertEqual(d.job(q["id"])["state"], "succeeded")
            self.assertEqual(d.job(o["id"])["state"], "queued")
            self.assertError(d.lease_op(gq, "complete"), 409, "stale_token")
            g2 = d.grant(["quick"])
            self.assertEqual(g2["job"]["id"], q2["id"])
            self.assertGreater(g2["token"], gq["token"])
            self.assertEqual(g2["job"]["attempts"], 2)
            self.assertEqual(d.lease_op(g2, "complete")[0], 200)
            # With one attempt only, a lost grant makes the job dead.
            go = d.grant(["once"])
            self.assertEqual(go["job"]["id"], o["id"])
            d.kill9()
            d.restart()
            got = d.wait_state(o["id"], ("dead", "failed", "queued"),
                               timeout=6)
            self.assertEqual(got["state"], "dead")
            self.assertEqual(got["attempts"], 1)
            d.submit("quick")
            g3 = d.grant(["quick"])
            self.assertGreater(g3["token"], go["token"])
            self.assertEqual(d.lease_op(g3, "complete")[0], 200)

    @unittest.skipIf(VALGRIND, "timing: the 3 s backoff must outlast a "
                     "kill -9 and restart, which take longer than that "
                     "under valgrind")
    def test_deadline_and_backoff_survive_restart(self):
        conf = CONFIG + ("\n[class slowretry]\n"
                         "backoff_base = 3\nbackoff_max = 3\n")
        with Daemon(conf) as d:
            t0 = time.monotonic()
            exp = d.submit("summarization", queue_timeout=2)
            r = d.submit("slowretry")
            g = d.grant(["slowretry"])
            st, body = d.lease_op(g, "fail", error="flaky")
            self.assertEqual(st, 200, body)
            self.assertEqual(body["state"], "queued")
            ready_at = body["ready_at"]
            self.assertTime(ready_at)
            d.kill9()
            d.restart()
            got = d.job(r["id"])
            self.assertEqual(got["reason"], "backoff")
            self.assertEqual(got["ready_at"], ready_at)
            self.assertEqual(d.lease(["slowretry"], wait=0)[0], 204,
                             "backoff forgotten on restart")
            d.wait_state(exp["id"], "expired", timeout=5)
            self.assertLess(time.monotonic() - t0, 6.0)
            # backoff 3 s times [0.5, 1]: granted again 1.5..3 s after.
            g2 = d.grant(["slowretry"], wait=6)
            self.assertEqual(g2["job"]["id"], r["id"])
            self.assertEqual(d.lease_op(g2, "complete")[0], 200)

    def test_locks_after_kill9(self):
        with Daemon(CONFIG) as d:
            st, held = d.lock("transcription", wait=2, holder="h1")
            self.assertEqual(st, 200, held)
            waiter = Background(d.lock, "transcription", 10, "h2")
            lw = wait_until(lambda: [j for j in d.jobs("state=queued")
                                     if j["kind"] == "lock"], 3,
                            what="the lock waiter")[0]
            queued = d.submit("summarization")
            d.kill9()
            waiter.join(15)
            self.assertFalse(waiter.is_alive())
            d.restart()
            # "Lock jobs cannot outlive their caller: a lock that was held
            # ends failed, one that waited ends cancelled."
            self.assertEqual(d.job(held["job_id"])["state"], "failed")
            self.assertEqual(d.job(lw["id"])["state"], "cancelled")
            self.assertEqual(d.job(queued["id"])["state"], "queued")
            self.assertError(d.release(held), 409, "stale_token")
            self.assertIsNone(d.status()["slots"][0]["job"])
            st, lk = d.lock("transcription", wait=2)
            self.assertEqual(st, 200, lk)
            self.assertGreater(lk["token"], held["token"])
            self.assertEqual(d.release(lk)[0], 200)

    def test_crash_under_load(self):
        with Daemon(CONFIG) as d:
            lock = threading.Lock()
            acked = {}          # id -> idempotency key
            stop = threading.Event()
            errors = []

            def submitter(n):
                i = 0
                while not stop.is_set() and i < 2000:
                    key = "s%d-%d" % (n, i)
                    i += 1
                    cls = ("transcription", "summarization")[i % 2]
                    try:
                        st, _, body = d.request(
                            "POST", "/v1/jobs",
                            {"class": cls, "payload": key,
                             "idempotency_key": key}, timeout=5)
                    except (OSError, http.client.HTTPException):
                        return
                    if st == 201:
                        with lock:
                            acked[body["id"]] = key
                    else:
                        errors.append((st, body))
                        return

            w = Worker(d, ["transcription", "summarization"], name="cw",
                       wait=1, result=lambda job: {"done": job["payload"]})
            w.start()
            subs = [threading.Thread(target=submitter, args=(n,),
                                     daemon=True) for n in range(3)]
            for t in subs:
                t.start()
            delay = random.uniform(0.8, 1.6)
            time.sleep(delay)
            d.kill9()
            stop.set()
            for t in subs:
                t.join(10)
            w.stop()
            self.assertEqual(errors, [])
            self.assertGreater(len(acked), 5, "too few submissions")
            grants = list(w.grants)
            done_ok = [(jid, tok) for jid, tok, st, _ in w.completed
                       if st == 200]
            self.assertGreater(len(grants), 0, "the worker got nothing")
            max_token = max(g["token"] for g in grants)

            d.restart()
            jobs = {j["id"]: j for j in d.jobs()}
            missing = sorted(set(acked) - set(jobs), key=idnum)
            self.assertEqual(missing, [], "acknowledged jobs lost (killed "
                             "%.2fs in, %d acknowledged)"
                             % (delay, len(acked)))
            ids = [j["id"] for j in d.jobs()]
            self.assertEqual(len(ids), len(set(ids)), "duplicate ids")
            for jid, key in acked.items():
                self.assertEqual(jobs[jid]["payload"], key)
            for jid, tok in done_ok:
                self.assertEqual(jobs[jid]["state"], "succeeded", jid)
                self.assertEqual(jobs[jid]["result"],
                                 {"done": jobs[jid]["payload"]})
            # Every job's grants carry growing tokens, and a completion
            # acknowledged to the worker used the last grant's token.
            granted = {g["job"]["id"] for g in grants}
            for jid in sorted(granted, key=idnum):
                hist = d.job(jid)["history"]
                toks = [h["detail"]["token"] for h in hist
                        if h["state"] == "running"]
                self.assertIncreasing(toks, "tokens of %s" % jid)
                states = [h["state"] for h in hist]
                for i, s in enumerate(states[:-1]):
                    if s == "running":
                        self.assertNotEqual(states[i + 1], "running",
                                            "%s granted twice: %r"
                                            % (jid, states))
            for jid, tok in done_ok:
                hist = d.job(jid)["history"]
                toks = [h["detail"]["token"] for h in hist
                        if h["state"] == "running"]
                self.assertEqual(toks[-1], tok, jid)
            # Keys survive the crash.
            jid, key = sorted(acked.items(), key=lambda kv: idnum(kv[0]))[-1]
            st, _, body = d.request("POST", "/v1/jobs",
                                    {"class": "transcription",
                                     "idempotency_key": key})
            self.assertEqual(st, 200, body)
            self.assertEqual(body["id"], jid)
            # Fencing tokens after the restart are above every one before.
            w2 = Worker(d, ["transcription", "summarization"], name="w2",
                        wait=1)
            w2.start()
            try:
                g = w2.wait_grants(1, timeout=10)[0]
            finally:
                w2.stop()
            self.assertGreater(g["token"], max_token)
            self.assertGreater(idnum(d.submit("chatbot")["id"]),
                               max(idnum(j) for j in jobs))


class DrainTest(GpuqTest):

    def test_admin_drain_waits_for_holder(self):
        with Daemon(CONFIG) as d:
            a = d.submit("transcription", payload="a")
            b = d.submit("transcription", payload="b")
            c = d.submit("summarization", payload="c")
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], a["id"])
            parked = Background(d.lease, ["chatbot"], 10, "idle")
            waiting = Background(d.request, "GET",
                                 "/v1/jobs/%s?wait=10" % b["id"],
                                 timeout=20)
            time.sleep(0.3)
            status, _, body = d.request("POST", "/v1/admin/drain", {})
            self.assertEqual(status, 202, body)
            self.assertEqual(body, {"draining": True})
            # Parked lease polls fail at once; ?wait= polls get the job.
            self.assertError(parked.get(timeout=5), 503, "draining")
            self.assertLess(parked.finished_at - parked.started_at, 5.0)
            st, _, wjob = waiting.get(timeout=5)
            self.assertEqual(st, 200, wjob)
            self.assertEqual(wjob["state"], "queued")
            self.assertLess(waiting.finished_at - waiting.started_at, 5.0)
            # Submits are still accepted and stored while draining.
            late = d.submit("summarization", payload="late")
            status, _, body = d.request("GET", "/healthz")
            self.assertEqual((status, body), (503, {"status": "draining"}))
            self.assertIs(d.status()["draining"], True)
            self.assertError(d.request("POST", "/v1/leases",
                                       {"classes": ["transcription"],
                                        "wait": 1}), 503, "draining")
            time.sleep(0.5)
            self.assertTrue(d.alive(), "exited while a job was held")
            self.assertEqual(d.lease_op(g, "heartbeat")[0], 200)
            self.assertEqual(d.lease_op(g, "complete", result="r")[0], 200)
            self.assertEqual(d.wait_exit(timeout=8), 0)
            d.restart()
            self.assertEqual(d.job(a["id"])["state"], "succeeded")
            self.assertEqual([(j["id"], j["state"]) for j in d.jobs()],
                             [(a["id"], "succeeded"), (b["id"], "queued"),
                              (c["id"], "queued"), (late["id"], "queued")])
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], b["id"])
            self.assertEqual(d.lease_op(g, "complete")[0], 200)

    def test_sigterm_drains(self):
        with Daemon(CONFIG) as d:
            a = d.submit("transcription")
            b = d.submit("transcription")
            g = d.grant(["transcription"])
            waiter = Background(d.lock, "chatbot", 10, "lw")
            lw = wait_until(lambda: [j for j in d.jobs("state=queued")
                                     if j["kind"] == "lock"], 3,
                            what="the lock waiter")[0]
            d.terminate()
            self.assertError(waiter.get(timeout=5), 503, "draining")
            self.assertLess(waiter.finished_at - waiter.started_at, 5.0)
            time.sleep(0.5)
            self.assertTrue(d.alive(), "exited while a job was held")
            self.assertEqual(d.lease_op(g, "complete")[0], 200)
            self.assertEqual(d.wait_exit(timeout=8), 0)
            d.restart()
            self.assertEqual(d.job(a["id"])["state"], "succeeded")
            self.assertEqual(d.job(b["id"])["state"], "queued")
            self.assertEqual(d.job(lw["id"])["state"], "cancelled")

    def test_drain_deadline(self):
        with Daemon(CONFIG) as d:
            a = d.submit("transcription")
            b = d.submit("transcription")
            d.grant(["transcription"])
            t0 = time.monotonic()
            status, _, body = d.request("POST", "/v1/admin/drain",
                                        {"deadline": 1})
            self.assertEqual(status, 202, body)
            self.assertEqual(d.wait_exit(timeout=8), 0)
            elapsed = time.monotonic() - t0
            self.assertGreaterEqual(elapsed, 0.8, "did not wait for holder")
            self.assertLess(elapsed, 5.0)
            # "Grants still live at the deadline come back queued at the
            # next start (their attempt counted)."
            d.restart()
            got = d.job(a["id"])
            self.assertEqual(got["state"], "queued")
            self.assertEqual(got["attempts"], 1)
            self.assertEqual(d.job(b["id"])["state"], "queued")
            self.assertEqual(d.job(a["id"])["position"], 1)

    def test_drain_idle_exits_at_once(self):
        with Daemon(CONFIG) as d:
            job = d.submit("summarization")
            t0 = time.monotonic()
            status, _, body = d.request("POST", "/v1/admin/drain", {})
            self.assertEqual(status, 202, body)
            self.assertEqual(d.wait_exit(timeout=5), 0)
            self.assertLess(time.monotonic() - t0, 3.0)
            d.restart()
            self.assertEqual(d.job(job["id"])["state"], "queued")
            d.stop()


if __name__ == "__main__":
    unittest.main()
