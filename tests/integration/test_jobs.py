"""Jobs: submit, validation, get, list, cancel, requeue, wait, expiry
(doc/api.md "Jobs" and "Conventions")."""

import json
import time
import unittest

from gpuqtest import Background, Daemon, GpuqTest, ID_RE, REASONS, idnum

CONFIG = """\
[server]
max_body = 65536
max_payload = 4096
drain_timeout = 5

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

[class tiny]
max_queue = 2
"""


class SubmitTest(GpuqTest):

    def test_submit_returns_201_with_fields(self):
        with Daemon(CONFIG) as d:
            body = {"class": "transcription",
                    "payload": {"audio_path": "/srv/a.wav", "n": [1, 2]},
                    "metadata": {"meeting_id": "m-7"},
                    "priority": 5, "idempotency_key": "upload-7"}
            status, _, job = d.request("POST", "/v1/jobs", body)
            self.assertEqual(status, 201, job)
            self.assertRegex(job["id"], ID_RE)
            self.assertEqual(job["class"], "transcription")
            self.assertEqual(job["kind"], "job")
            self.assertEqual(job["state"], "queued")
            self.assertEqual(job["priority"], 5)
            self.assertEqual(job["payload"], body["payload"])
            self.assertEqual(job["metadata"], {"meeting_id": "m-7"})
            self.assertEqual(job["idempotency_key"], "upload-7")
            self.assertEqual(job["attempts"], 0)
            self.assertEqual(job["max_attempts"], 3)
            for k in ("result", "error", "progress", "holder",
                      "started_at", "ended_at", "finished_at"):
                self.assertIn(k, job)
                self.assertIsNone(job[k], k)
            self.assertIsNone(job.get("lease_id"))  # running jobs only
            self.assertIn(job["reason"], REASONS)
            self.assertEqual(job["position"], 1)
            self.assertTime(job["created_at"])
            self.assertIsInstance(job["wait_ms"], int)
            self.assertGreaterEqual(job["wait_ms"], 0)
            self.assertEqual(job["run_ms"], 0)
            # GET shows the same job.
            got = d.job(job["id"])
            for k in ("id", "class", "kind", "state", "priority", "payload",
                      "metadata", "idempotency_key", "attempts",
                      "created_at"):
                self.assertEqual(got[k], job[k], k)

    def test_defaults_and_priority_bounds(self):
        with Daemon(CONFIG) as d:
            job = d.submit("summarization")
            self.assertEqual(job["priority"], 0)
            self.assertEqual(job["attempts"], 0)
            self.assertEqual(job["kind"], "job")
            self.assertEqual(d.submit("summarization",
                                      priority=1000)["priority"], 1000)
            self.assertEqual(d.submit("summarization",
                                      priority=-1000)["priority"], -1000)
            # A key of exactly 200 bytes is allowed.
            d.submit("summarization", idempotency_key="k" * 200)
            # Any JSON is a payload.
            for p in (None, 0, "s", [1, {"a": None}], {"\u00e9": "\u2603"}):
                self.assertEqual(d.submit("summarization",
                                          payload=p)["payload"], p)

    def test_ids_grow(self):
        with Daemon(CONFIG) as d:
            ids = [d.submit("transcription")["id"] for _ in range(5)]
            self.assertIncreasing([idnum(i) for i in ids], "job ids")

    def test_idempotent_repeat(self):
        with Daemon(CONFIG) as d:
            body = {"class": "transcription", "payload": {"a": 1},
                    "idempotency_key": "upload-9"}
            s1, _, j1 = d.request("POST", "/v1/jobs", body)
            self.assertEqual(s1, 201, j1)
            before = d.snapshot()
            s2, _, j2 = d.request("POST", "/v1/jobs", body)
            self.assertEqual(s2, 200, j2)
            self.assertEqual(j2["id"], j1["id"])
            self.assertEqual(j2["payload"], {"a": 1})
            self.assertEqual(d.snapshot(), before)
            # Still the same job once it has changed state.
            d.request("POST", "/v1/jobs/%s/cancel" % j1["id"])
            s3, _, j3 = d.request("POST", "/v1/jobs", body)
            self.assertEqual(s3, 200, j3)
            self.assertEqual(j3["id"], j1["id"])
            self.assertEqual(j3["state"], "cancelled")
            # Another key is another job.
            body["idempotency_key"] = "upload-10"
            s4, _, j4 = d.request("POST", "/v1/jobs", body)
            self.assertEqual(s4, 201, j4)
            self.assertNotEqual(j4["id"], j1["id"])

    def test_bad_input_changes_nothing(self):
        tc = '"class": "transcription"'
        cases = [
            # (what, raw body, status, code, field; Ellipsis = unchecked,
            # None = absent)
            ("missing class", b'{}', 400, "invalid", "class"),
            ("missing class 2", b'{"payload": 1}', 400, "invalid", "class"),
            ("class not string", b'{"class": 5}', 400, "invalid", "class"),
            ("class null", b'{"class": null}', 400, "invalid", "class"),
            ("unknown class", b'{"class": "nope"}', 404, "unknown_class",
             "class"),
            ("priority string", ('{%s, "priority": "5"}' % tc).encode(),
             400, "invalid", "priority"),
            ("priority float", ('{%s, "priority": 1.5}' % tc).encode(),
             400, "invalid", "priority"),
            ("priority bool", ('{%s, "priority": true}' % tc).encode(),
             400, "invalid", "priority"),
            ("priority too big", ('{%s, "priority": 1001}' % tc).encode(),
             400, "invalid", "priority"),
            ("priority too small",
             ('{%s, "priority": -1001}' % tc).encode(),
             400, "invalid", "priority"),
            ("metadata array", ('{%s, "metadata": [1]}' % tc).encode(),
             400, "invalid", "metadata"),
            ("metadata string", ('{%s, "metadata": "m"}' % tc).encode(),
             400, "invalid", "metadata"),
            ("idempotency_key too long",
             ('{%s, "idempotency_key": "%s"}' % (tc, "k" * 201)).encode(),
             400, "invalid", "idempotency_key"),
            ("idempotency_key too many bytes",
             ('{%s, "idempotency_key": "%s"}'
              % (tc, "\u00e9" * 101)).encode("utf-8"),
             400, "invalid", "idempotency_key"),
            ("idempotency_key not string",
             ('{%s, "idempotency_key": 7}' % tc).encode(),
             400, "invalid", "idempotency_key"),
            ("queue_timeout negative",
             ('{%s, "queue_timeout": -1}' % tc).encode(),
             400, "invalid", "queue_timeout"),
            ("queue_timeout string",
             ('{%s, "queue_timeout": "10"}' % tc).encode(),
             400, "invalid", "queue_timeout"),
            # An empty body reads as {} (so class is missing) or as no
            # JSON at all; either way a 400.
            ("empty body", b'', 400, "invalid", Ellipsis),
            ("not JSON", b'class=transcription', 400, "invalid", None),
            ("truncated JSON", ('{%s' % tc).encode(), 400, "invalid", None),
            ("JSON array", ('[{%s}]' % tc).encode(), 400, "invalid", None),
            ("JSON string", b'"transcription"', 400, "invalid", None),
            ("duplicate keys",
             b'{"class": "transcription", "class": "summarization"}',
             400, "invalid", Ellipsis),
            ("duplicate nested keys",
             ('{%s, "payload": {"a": 1, "a": 2}}' % tc).encode(),
             400, "invalid", Ellipsis),
            ("invalid UTF-8",
             ('{%s, "payload": "' % tc).encode() + b'\xff\xfe"}',
             400, "invalid", Ellipsis),
            ("overlong UTF-8",
             ('{%s, "payload": "' % tc).encode() + b'\xc0\xaf"}',
             400, "invalid", Ellipsis),
            ("payload over max_payload",
             json.dumps({"class": "transcription",
                         "payload": "x" * 5000}).encode(),
             413, "too_large", "payload"),
            ("body over max_body",
             json.dumps({"class": "transcription", "payload": 1,
                         "metadata": {"pad": "x" * 70000}}).encode(),
             413, "too_large", Ellipsis),
        ]
        with Daemon(CONFIG) as d:
            d.submit("transcription", payload={"keep": 1})
            d.submit("summarization", idempotency_key="dup")
            before = d.snapshot()
            for what, raw, status, code, field in cases:
                with self.subTest(what):
                    reply = d.request("POST", "/v1/jobs", raw)
                    self.assertError(reply, status, code, field, what)
                    self.assertEqual(d.snapshot(), before,
                                     "%s changed the jobs" % what)
            # The daemon is still well after all that.
            d.submit("transcription")

    def test_queue_full_429(self):
        with Daemon(CONFIG) as d:
            d.submit("tiny")
            d.submit("tiny")
            before = d.snapshot()
            reply = d.request("POST", "/v1/jobs", {"class": "tiny"})
            self.assertError(reply, 429, "queue_full")
            retry = reply[1].get("retry-after")
            self.assertIsNotNone(retry, "Retry-After header: %r" % reply[1])
            self.assertGreaterEqual(int(retry), 0)
            self.assertEqual(d.snapshot(), before)
            # Other classes are not affected.
            d.submit("transcription")
            # A cancelled job frees its place.
            first = before[0][0]
            self.assertEqual(
                d.request("POST", "/v1/jobs/%s/cancel" % first)[0], 200)
            d.submit("tiny")


class GetListTest(GpuqTest):

    def test_get_unknown_and_malformed(self):
        with Daemon(CONFIG) as d:
            d.submit("transcription")
            for path in ("/v1/jobs/j999999", "/v1/jobs/j0", "/v1/jobs/abc",
                         "/v1/jobs/j", "/v1/jobs/j1x", "/v1/jobs/-1",
                         "/v1/jobs/J1", "/v1/jobs/j99999999999999999999999"):
                with self.subTest(path):
                    self.assertError(d.request("GET", path), 404,
                                     "not_found")
            for op in ("cancel", "requeue"):
                self.assertError(d.request("POST", "/v1/jobs/j999999/" + op),
                                 404, "not_found", msg=op)

    def test_unknown_route_and_method(self):
        with Daemon(CONFIG) as d:
            for method, path in (("GET", "/v1/nope"), ("GET", "/nope"),
                                 ("POST", "/v1/jobs/j1/explode"),
                                 ("GET", "/v2/jobs")):
                with self.subTest(path):
                    self.assertError(d.request(method, path), 404,
                                     "not_found")
            self.assertError(d.request("DELETE", "/v1/jobs"), 405,
                             "method_not_allowed")
            self.assertError(d.request("PUT", "/v1/jobs"), 405,
                             "method_not_allowed")

    def test_list_filters(self):
        with Daemon(CONFIG) as d:
            t = [d.submit("transcription")["id"] for _ in range(3)]
            s = [d.submit("summarization")["id"] for _ in range(2)]
            self.assertEqual(
                d.request("POST", "/v1/jobs/%s/cancel" % t[1])[0], 200)
            status, _, body = d.request("GET", "/v1/jobs")
            self.assertEqual(status, 200, body)
            self.assertEqual([j["id"] for j in body["jobs"]],
                             [t[0], t[1], t[2], s[0], s[1]])
            self.assertIsNone(body["next"])

            def ids(q):
                status, _, body = d.request("GET", "/v1/jobs?" + q)
                self.assertEqual(status, 200, (q, body))
                return [j["id"] for j in body["jobs"]]
            self.assertEqual(ids("class=transcription"), t)
            self.assertEqual(ids("class=summarization"), s)
            self.assertEqual(ids("state=cancelled"), [t[1]])
            self.assertEqual(ids("state=queued"), [t[0], t[2]] + s)
            self.assertEqual(ids("class=transcription&state=queued"),
                             [t[0], t[2]])
            self.assertEqual(ids("class=summarization&state=cancelled"), [])
            self.assertEqual(ids("state=succeeded"), [])

    def test_list_paging(self):
        with Daemon(CONFIG) as d:
            all_ids = [d.submit("transcription" if i % 2 else
                                "summarization")["id"] for i in range(7)]
            got = []
            after = None
            pages = 0
            while True:
                q = "/v1/jobs?limit=3" + ("&after=" + after if after else "")
                status, _, body = d.request("GET", q)
                self.assertEqual(status, 200, body)
                self.assertLessEqual(len(body["jobs"]), 3)
                got.extend(j["id"] for j in body["jobs"])
                pages += 1
                self.assertLess(pages, 10, "paging does not end")
                after = body["next"]
                if len(body["jobs"]) < 3:
                    self.assertIsNone(after, "short page with a next")
                if after is None:
                    break
            self.assertEqual(got, all_ids)
            # A filtered list pages too.
            status, _, body = d.request(
                "GET", "/v1/jobs?class=transcription&limit=2")
            self.assertEqual(status, 200)
            self.assertEqual([j["id"] for j in body["jobs"]],
                             all_ids[1:4:2])
            self.assertIsNotNone(body["next"])
            status, _, body2 = d.request(
                "GET", "/v1/jobs?class=transcription&limit=2&after="
                + body["next"])
            self.assertEqual(status, 200)
            self.assertEqual([j["id"] for j in body2["jobs"]],
                             [all_ids[5]])

    def test_list_validation(self):
        with Daemon(CONFIG) as d:
            d.submit("transcription")
            for q, field in (("limit=0", "limit"), ("limit=1001", "limit"),
                             ("limit=abc", "limit"), ("limit=-5", "limit"),
                             ("state=bogus", "state")):
                with self.subTest(q):
                    self.assertError(d.request("GET", "/v1/jobs?" + q),
                                     400, "invalid", field)
            for q in ("limit=1", "limit=1000"):
                self.assertEqual(d.request("GET", "/v1/jobs?" + q)[0], 200)

    def test_reason_and_position_while_queued(self):
        with Daemon(CONFIG) as d:
            a = d.submit("summarization")
            b = d.submit("summarization")
            c = d.submit("summarization")
            # No worker waits for summarization: that is why a waits.
            ja = d.job(a["id"])
            self.assertEqual(ja["reason"], "no_worker")
            self.assertEqual([d.job(j["id"])["position"] for j in (a, b, c)],
                             [1, 2, 3])
            for j in (b, c):
                self.assertIn(d.job(j["id"])["reason"], REASONS)
            # A higher job priority goes ahead within the class.
            p = d.submit("summarization", priority=5)
            self.assertEqual(d.job(p["id"])["position"], 1)
            self.assertEqual([d.job(j["id"])["position"] for j in (a, b, c)],
                             [2, 3, 4])
            # A job that is no longer queued has no reason or position.
            d.request("POST", "/v1/jobs/%s/cancel" % a["id"])
            ja = d.job(a["id"])
            self.assertIsNone(ja.get("reason"))
            self.assertIsNone(ja.get("position"))
            self.assertEqual(d.job(b["id"])["position"], 2)

    def test_history(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription", payload={"x": 1})
            got = d.job(job["id"])
            self.assertIsInstance(got["history"], list)
            self.assertGreaterEqual(len(got["history"]), 1)
            self.assertEqual(got["history"][0]["state"], "queued")
            self.assertTime(got["history"][0]["at"])
            g = d.grant(["transcription"], worker="w1")
            self.assertEqual(g["job"]["id"], job["id"])
            status, done = d.lease_op(g, "complete", result={"ok": True})
            self.assertEqual(status, 200, done)
            got = d.job(job["id"])
            states = [h["state"] for h in got["history"]]
            self.assertEqual(states, ["queued", "running", "succeeded"])
            run = got["history"][1]
            self.assertEqual(run["detail"]["token"], g["token"])
            self.assertEqual(run["detail"]["slot"], 0)
            ats = [h["at"] for h in got["history"]]
            for at in ats:
                self.assertTime(at)
            self.assertEqual(ats, sorted(ats))
            self.assertEqual(got["holder"], "w1")
            self.assertEqual(got["result"], {"ok": True})
            self.assertTime(got["started_at"])
            self.assertTime(got["ended_at"])
            self.assertTime(got["finished_at"])


class CancelRequeueTest(GpuqTest):

    def test_cancel_queued_then_terminal(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription")
            other = d.submit("transcription")
            status, _, body = d.request("POST",
                                        "/v1/jobs/%s/cancel" % job["id"])
            self.assertEqual(status, 200, body)
            self.assertEqual(body["id"], job["id"])
            self.assertEqual(body["state"], "cancelled")
            self.assertTime(body["finished_at"])
            got = d.job(job["id"])
            self.assertEqual(got["state"], "cancelled")
            self.assertEqual(got["history"][-1]["state"], "cancelled")
            self.assertEqual(d.job(other["id"])["position"], 1)
            before = d.snapshot()
            self.assertError(
                d.request("POST", "/v1/jobs/%s/cancel" % job["id"]),
                409, "bad_state")
            self.assertEqual(d.snapshot(), before)
            # The cancelled job is never granted.
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], other["id"])
            self.assertEqual(d.lease_op(g, "complete")[0], 200)

    def test_requeue(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription")
            self.assertError(
                d.request("POST", "/v1/jobs/%s/requeue" % job["id"]),
                409, "bad_state", msg="requeue queued")
            d.request("POST", "/v1/jobs/%s/cancel" % job["id"])
            status, _, body = d.request("POST",
                                        "/v1/jobs/%s/requeue" % job["id"])
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "queued")
            self.assertEqual(body["attempts"], 0)
            self.assertEqual(d.job(job["id"])["state"], "queued")
            # A failed job with attempts comes back with none.
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], job["id"])
            status, body = d.lease_op(g, "fail", retryable=False,
                                      error={"code": "bad", "message": "x"})
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "failed")
            self.assertEqual(body["attempts"], 1)
            status, _, body = d.request("POST",
                                        "/v1/jobs/%s/requeue" % job["id"])
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "queued")
            self.assertEqual(body["attempts"], 0)
            g2 = d.grant(["transcription"])
            self.assertEqual(g2["job"]["id"], job["id"])
            self.assertGreater(g2["token"], g["token"])
            self.assertEqual(g2["job"]["attempts"], 1)
            # A running or succeeded job cannot be requeued.
            self.assertError(
                d.request("POST", "/v1/jobs/%s/requeue" % job["id"]),
                409, "bad_state", msg="requeue running")
            self.assertEqual(d.lease_op(g2, "complete")[0], 200)
            self.assertError(
                d.request("POST", "/v1/jobs/%s/requeue" % job["id"]),
                409, "bad_state", msg="requeue succeeded")


class WaitExpiryTest(GpuqTest):

    def test_wait_returns_when_job_finishes(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription", payload="p")

            def finish():
                time.sleep(0.5)
                g = d.grant(["transcription"])
                return d.lease_op(g, "complete", result="r")
            bg = Background(finish)
            t0 = time.monotonic()
            status, _, body = d.request(
                "GET", "/v1/jobs/%s?wait=8" % job["id"], timeout=15)
            elapsed = time.monotonic() - t0
            self.assertEqual(status, 200, body)
            self.assertEqual(bg.get()[0], 200)
            self.assertEqual(body["state"], "succeeded")
            self.assertEqual(body["result"], "r")
            self.assertLess(elapsed, 5.0, "wait did not return early")
            self.assertGreaterEqual(elapsed, 0.3, "wait returned at once")

    def test_wait_times_out_with_job_as_is(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription")
            t0 = time.monotonic()
            status, _, body = d.request(
                "GET", "/v1/jobs/%s?wait=1" % job["id"], timeout=10)
            elapsed = time.monotonic() - t0
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "queued")
            self.assertGreaterEqual(elapsed, 0.9)
            self.assertLess(elapsed, 4.0)
            # A terminal job is returned at once.
            d.request("POST", "/v1/jobs/%s/cancel" % job["id"])
            t0 = time.monotonic()
            status, _, body = d.request(
                "GET", "/v1/jobs/%s?wait=5" % job["id"], timeout=10)
            self.assertEqual(status, 200)
            self.assertEqual(body["state"], "cancelled")
            self.assertLess(time.monotonic() - t0, 2.0)
            for q in ("wait=301", "wait=-1", "wait=abc"):
                with self.subTest(q):
                    self.assertError(
                        d.request("GET", "/v1/jobs/%s?%s" % (job["id"], q)),
                        400, "invalid", "wait")

    def test_queue_timeout_expires(self):
        with Daemon(CONFIG) as d:
            job = d.submit("transcription", queue_timeout=1)
            keep = d.submit("transcription")
            self.assertEqual(d.job(job["id"])["state"], "queued")
            t0 = time.monotonic()
            got = d.wait_state(job["id"], "expired", timeout=5)
            self.assertGreater(time.monotonic() - t0, 0.5)
            self.assertTime(got["finished_at"])
            self.assertEqual(got["history"][-1]["state"], "expired")
            self.assertEqual(d.job(keep["id"])["state"], "queued")
            self.assertEqual(d.job(keep["id"])["position"], 1)
            # An expired job is never granted; the other one is.
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], keep["id"])
            self.assertEqual(d.lease_op(g, "complete")[0], 200)


if __name__ == "__main__":
    unittest.main()
