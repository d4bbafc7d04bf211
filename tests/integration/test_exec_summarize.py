"""test_exec_summarize - the summarization executor against the fake LLM
(map-reduce, one grant per call), from_job (waits for a transcription,
then summarizes its text; fails when it fails) and generic depends_on.

    cd tests/integration && GPUQD=../../bin/gpuqd python3 -m unittest -v \
        test_exec_summarize
"""

import os
import unittest

from execfix import (ExecTest, chat_requests, fake_infer, grants, history,
                     user_prompt)

TEXT16 = fake_infer.fake_text(16)
# context_tokens = 256 (the least allowed): pieces of at most this many
# bytes (summarize.c's piece_bytes).
PIECE_MAX = 256 * 4 * 9 // 10


def long_text(nbytes):
    out = []
    k = 0
    while sum(len(s) for s in out) < nbytes:
        k += 1
        out.append("Sentence %d says that the queue granted job %d in "
                   "order. " % (k, k))
        if k % 7 == 0:
            out.append("\n\n")
    return "".join(out).strip()


class SummarizeTest(ExecTest):

    def daemon(self, **changes):
        changes.setdefault("backend_llm", {"context_tokens": 256})
        changes.setdefault("class_batch", {"priority": 0})  # a worker class
        return super().daemon(**changes)

    def test_short_text(self):
        with self.daemon() as d:
            text = "The meeting decided to ship gpuq on Friday."
            j = d.submit("summarization", payload={
                "text": text, "instructions": "Summarize in French.",
                "max_words": 20})
            job = self.finished(d, j["id"])
            self.assertEqual(job["result"], {"summary": TEXT16,
                                             "parts": [TEXT16]})
            self.assertEqual(len(grants(job)), 1)
            reqs = chat_requests(self.fake)
            self.assertEqual(len(reqs), 1)
            sent = reqs[0]["body_json"]
            self.assertIs(sent["stream"], False)
            self.assertEqual(sent["model"], "tiny")
            self.assertIsInstance(sent["max_tokens"], int)
            self.assertGreaterEqual(sent["max_tokens"], 16)
            self.assertEqual(sent["messages"][0]["role"], "system")
            prompt = user_prompt(reqs[0])
            self.assertIn("Summarize in French.", prompt)
            self.assertIn("at most 20 words", prompt)
            self.assertIn(text, prompt)

    def test_long_text_map_reduce(self):
        with self.daemon() as d:
            text = long_text(5000)
            j = d.submit("summarization", payload={"text": text})
            job = self.finished(d, j["id"], timeout=15)
            reqs = chat_requests(self.fake)
            prompts = [user_prompt(r) for r in reqs]
            level0 = [p for p in prompts if "This is part" in p]
            n = len(level0)
            self.assertGreaterEqual(n, 5, prompts)
            for k, p in enumerate(level0):
                self.assertIn("part %d of %d" % (k + 1, n), p)
            pieces = [p.split("\n\n", 1)[1] for p in level0]
            self.assertEqual("".join(pieces), text)
            for p in pieces:
                self.assertLessEqual(len(p.encode()), PIECE_MAX)
            rest = prompts[n:]
            self.assertGreaterEqual(len(rest), 1)
            for p in rest:
                self.assertIn("Combine these partial summaries", p)
                self.assertIn(TEXT16, p)
            self.assertEqual(job["result"]["parts"], [TEXT16] * n)
            self.assertEqual(job["result"]["summary"], TEXT16)
            # Every call was its own grant.
            gs = grants(job)
            self.assertEqual(len(gs), len(reqs))
            self.assertEqual([g[2] for g in gs],
                             ["yield"] * (len(gs) - 1) + ["succeeded"])
            self.assertEqual(job["attempts"], 1)

    def test_from_job_waits_for_transcription(self):
        with self.daemon(class_transcription={"max_hold": 0.3}) as d:
            self.fake.script(per_audio_second_s=0.1)
            t = d.submit("transcription", payload={
                "audio_path": self.wav("meeting.wav", 12.0)})
            s = d.submit("summarization", payload={
                "from_job": t["id"], "instructions": "Bullet points."})
            self.assertEqual(s["state"], "queued")
            self.assertEqual(s["reason"], "deps")
            self.assertEqual(s.get("depends_on"), [t["id"]])
            self.wait_job(d, t["id"], "running")
            js = d.job(s["id"])
            self.assertEqual((js["state"], js["reason"]), ("queued", "deps"))
            tj = self.finished(d, t["id"], timeout=15)
            self.assertGreaterEqual(len(grants(tj)), 2)
            sj = self.finished(d, s["id"])
            runs = [h[0] for h in history(sj) if h[1] == "running"]
            self.assertGreaterEqual(runs[0], history(tj)[-1][0] - 0.001)
            reqs = chat_requests(self.fake)
            self.assertEqual(len(reqs), 1)
            prompt = user_prompt(reqs[0])
            self.assertIn("Bullet points.", prompt)
            self.assertIn("whisper model always says these same words",
                          prompt)
            self.assertIn(" ".join(tj["result"]["text"].split()[:12]),
                          " ".join(prompt.split()))
            self.assertEqual(sj["result"]["summary"], TEXT16)

    def test_from_job_that_fails(self):
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=0.5)
            busy = d.submit("transcription", payload={
                "audio_path": self.wav("busy.wav", 2.0)})
            bad = os.path.join(self.root, "bad.wav")
            with open(bad, "wb") as f:
                f.write(b"this is not audio at all" * 100)
            t = d.submit("transcription", payload={"audio_path": bad})
            s = d.submit("summarization", payload={"from_job": t["id"]})
            self.assertEqual(d.job(s["id"])["reason"], "deps")
            tj = self.finished(d, t["id"], state="failed", timeout=10)
            self.assertEqual(tj["error"]["code"], "audio_invalid", tj)
            sj = self.finished(d, s["id"], state="failed")
            self.assertEqual(sj["error"]["code"], "dependency_failed")
            self.assertIn(t["id"], sj["error"]["message"])
            # A dependency cancelled while queued.
            t2 = d.submit("transcription", payload={
                "audio_path": self.wav("c.wav", 1.0)})
            s2 = d.submit("summarization", payload={"from_job": t2["id"]})
            st, _, _ = d.request("POST", "/v1/jobs/%s/cancel" % t2["id"])
            self.assertEqual(st, 200)
            sj2 = self.finished(d, s2["id"], state="failed")
            self.assertEqual(sj2["error"]["code"], "dependency_failed")
            # A dependency that failed before the submit.
            s3 = d.submit("summarization", payload={"from_job": t["id"]})
            sj3 = self.finished(d, s3["id"], state="failed")
            self.assertEqual(sj3["error"]["code"], "dependency_failed")
            self.finished(d, busy["id"])
            self.assertEqual(chat_requests(self.fake), [])

    def test_depends_on_generic(self):
        with self.daemon() as d:
            a = d.submit("batch", payload={"n": "a"})
            b = d.submit("batch", payload={"n": "b"}, depends_on=[a["id"]])
            self.assertEqual((b["state"], b["reason"]), ("queued", "deps"))
            self.assertEqual(b["depends_on"], [a["id"]])
            g = d.grant(["batch"], wait=2)
            self.assertEqual(g["job"]["id"], a["id"])
            st, _ = d.lease(["batch"], wait=0.3)
            self.assertEqual(st, 204, "b was granted before a finished")
            c = d.submit("summarization", payload={"text": "short text"},
                         depends_on=[b["id"]])
            self.assertEqual(c["reason"], "deps")
            st, _ = d.lease_op(g, "complete", result={"ok": 1})
            self.assertEqual(st, 200)
            self.assertNotEqual(d.job(b["id"])["reason"], "deps")
            g2 = d.grant(["batch"], wait=2)
            self.assertEqual(g2["job"]["id"], b["id"])
            self.assertEqual(d.job(c["id"])["reason"], "deps")
            d.lease_op(g2, "complete", result={"ok": 2})
            self.finished(d, c["id"])

            # Two dependencies: it waits for both.
            p = d.submit("batch", payload={"n": "p"})
            q = d.submit("batch", payload={"n": "q"})
            z = d.submit("summarization", payload={"text": "zz"},
                         depends_on=[p["id"], q["id"]])
            gp = d.grant(["batch"], wait=2)
            d.lease_op(gp, "complete")
            self.assertEqual(d.job(z["id"])["reason"], "deps")
            gq = d.grant(["batch"], wait=2)
            d.lease_op(gq, "complete")
            self.finished(d, z["id"])

            # A dependency that fails for good fails its dependents,
            # transitively.
            x = d.submit("batch")
            y = d.submit("batch", depends_on=[x["id"]])
            w = d.submit("summarization", payload={"text": "w"},
                         depends_on=[y["id"]])
            gx = d.grant(["batch"], wait=2)
            st, _ = d.lease_op(gx, "fail", error="boom", retryable=False)
            self.assertEqual(st, 200)
            for jid in (y["id"], w["id"]):
                job = self.finished(d, jid, state="failed")
                self.assertEqual(job["error"]["code"], "dependency_failed")

    def test_deps_survive_restart(self):
        with self.daemon() as d:
            a = d.submit("batch")
            b = d.submit("batch", depends_on=[a["id"]])
            d.restart()
            self.assertEqual(d.job(b["id"])["reason"], "deps")
            g = d.grant(["batch"], wait=2)
            self.assertEqual(g["job"]["id"], a["id"])
            d.lease_op(g, "complete")
            g2 = d.grant(["batch"], wait=2)
            self.assertEqual(g2["job"]["id"], b["id"])
            d.lease_op(g2, "complete")

    def test_bad_dependencies(self):
        with self.daemon() as d:
            cases = [
                ({"payload": {"from_job": "j999"}}, "payload.from_job"),
                ({"payload": {"from_job": "x"}}, "payload.from_job"),
                ({"payload": {"from_job": 5}}, "payload.from_job"),
                ({"payload": {"text": "t"}, "depends_on": ["j999"]},
                 "depends_on"),
                ({"payload": {"text": "t"}, "depends_on": "j1"},
                 "depends_on"),
                ({"payload": {"text": "t"}, "depends_on": [1]},
                 "depends_on"),
                ({"payload": {"text": "t", "from_job": "j1"}}, None),
                ({"payload": {}}, None),
                ({"payload": {"text": ""}}, "payload.text"),
                ({"payload": {"text": "t", "max_words": 0}},
                 "payload.max_words"),
            ]
            for body, field in cases:
                body = dict(body, **{"class": "summarization"})
                st, _, reply = d.request("POST", "/v1/jobs", body)
                self.assertError((st, reply), 400, "invalid",
                                 field if field else Ellipsis,
                                 msg=repr(body))
            self.assertEqual(d.jobs(), [])
            self.assertEqual(chat_requests(self.fake), [])


if __name__ == "__main__":
    unittest.main()
