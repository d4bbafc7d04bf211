"""test_exec_transcribe - the transcription executor against the fake
whisper-server: chunking (one grant per chunk, times shifted, the whole
duration covered), the multipart request, audio path checks, resuming
after kill -9, a chat granted between chunks, retries after a 500, cancel,
and the whisper.cpp / OpenAI upload drop-ins.

    cd tests/integration && GPUQD=../../bin/gpuqd python3 -m unittest -v \
        test_exec_transcribe
"""

import json
import os
import socket
import time
import unittest

from execfix import (ExecTest, Stream, backend, fake_infer, grants,
                     history, write_wav)
from gpuqtest import TERMINAL, VALGRIND, wait_until

HOLD = 0.3          # max_hold of the transcription class here
SPEED = 0.1         # the fake's seconds of work per second of audio
CHUNK_S = HOLD / SPEED  # audio per chunk once the speed is measured


def durations(reqs):
    return [r["audio"]["duration"] for r in reqs]


class TranscribeTest(ExecTest):

    def daemon(self, **changes):
        changes.setdefault("class_transcription", {"max_hold": HOLD})
        return super().daemon(**changes)

    def cancel_all(self, d):
        for j in d.jobs():
            if j["state"] not in TERMINAL:
                d.request("POST", "/v1/jobs/%s/cancel" % j["id"])

    def assert_covers(self, result, seconds, offsets=()):
        """The stitched segments run from 0 to seconds without gaps or
        overlaps, strictly in order, and a chunk starts at each offset."""
        segs = result["segments"]
        self.assertGreater(len(segs), 0)
        self.assertAlmostEqual(segs[0]["start"], 0.0, places=2)
        self.assertAlmostEqual(segs[-1]["end"], seconds, delta=0.02)
        self.assertAlmostEqual(result["duration"], seconds, delta=0.02)
        for a, b in zip(segs, segs[1:]):
            self.assertLess(a["start"], b["start"], segs)
            self.assertAlmostEqual(a["end"], b["start"], delta=0.011,
                                   msg="gap or overlap: %r %r" % (a, b))
        for s in segs:
            self.assertGreater(s["end"], s["start"], s)
        starts = [s["start"] for s in segs]
        for off in offsets:
            self.assertTrue(any(abs(off - st) < 0.011 for st in starts),
                            "no segment starts at chunk offset %.3f: %r"
                            % (off, starts))
        words = " ".join("".join(s["text"] for s in segs).split())
        self.assertEqual(" ".join(result["text"].split()), words)

    # -- chunking ---------------------------------------------------------

    @unittest.skipIf(VALGRIND, "timing: asserts the backend speed gpuqd "
                     "measures (0.1 s per audio second, within 0.05 s) and "
                     "grant lengths, which valgrind's slowdown inflates")
    def test_chunks_are_grants(self):
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=SPEED)
            n0 = self.warm_whisper(d)
            self.assertAlmostEqual(backend(d, "whisper")["s_per_audio_s"],
                                   SPEED, delta=0.05)
            path = self.wav("long.wav", 12.0)
            j = d.submit("transcription", payload={
                "audio_path": path, "language": "en",
                "prompt": "gpuq glossary"})
            job = self.finished(d, j["id"], timeout=15)
            reqs = self.fake.requests("/inference")[n0:]
            gs = grants(job)
            self.assertGreaterEqual(len(gs), 3, gs)
            self.assertEqual(len(reqs), len(gs))
            self.assertEqual([g[2] for g in gs],
                             ["yield"] * (len(gs) - 1) + ["succeeded"])
            tokens = [h[2]["token"] for h in history(job)
                      if h[1] == "running"]
            self.assertEqual(len(set(tokens)), len(tokens), tokens)
            self.assertEqual(job["attempts"], 1)    # yields don't count
            for r in reqs:
                self.assertEqual(r["status"], 200)
                files = [f for f in r["fields"] if f["name"] == "file"]
                self.assertEqual(len(files), 1, r["fields"])
                self.assertTrue(files[0]["filename"].endswith(".wav"))
                self.assertEqual(r["form"]["response_format"],
                                 "verbose_json")
                self.assertEqual(r["form"].get("language"), "en")
                self.assertEqual(r["form"].get("prompt"), "gpuq glossary")
                self.assertEqual((r["audio"]["rate"], r["audio"]["channels"],
                                  r["audio"]["bits"]), (16000, 1, 16))
                self.assertTrue(r["headers"]["Content-Type"].startswith(
                    "multipart/form-data"))
                # Sized by the measured speed to fit max_hold.
                self.assertLessEqual(r["audio"]["duration"], CHUNK_S + 0.2)
                self.assertGreaterEqual(r["audio"]["duration"], 1.0)
            d_ = durations(reqs)
            self.assertAlmostEqual(sum(d_), 12.0, delta=0.01)
            offsets = [sum(d_[:k]) for k in range(len(d_))]
            res = job["result"]
            self.assertEqual(res["language"], "english")
            self.assert_covers(res, 12.0, offsets)
            self.assertIn("whisper model always says", res["text"])
            # The progress of the last yield.
            p = job["progress"]
            self.assertEqual(p["chunks_done"], len(gs) - 1)
            self.assertAlmostEqual(p["offset_s"], offsets[-1], delta=0.01)
            self.assertEqual(p["offset"], round(offsets[-1] * 16000))
            for g in gs:
                self.assertLess(g[1] - g[0], HOLD + 0.25, gs)

    def test_job_stream_only_done(self):
        with self.daemon() as d:
            j = d.submit("transcription", payload={
                "audio_path": self.wav("s.wav", 2.0)})
            s = Stream(d.port, "GET", "/v1/jobs/%s/stream" % j["id"])
            events = list(s.sse())
            s.close()
            self.assertEqual([e[0] for e in events], ["done"], events)
            self.assertEqual(json.loads(events[0][1])["state"], "succeeded")

    def test_resampled_stereo(self):
        with self.daemon() as d:
            path = self.wav("cd.wav", 4.0, rate=44100, channels=2)
            j = d.submit("transcription", payload={"audio_path": path})
            job = self.finished(d, j["id"])
            reqs = self.fake.requests("/inference")
            self.assertEqual(len(reqs), 1)
            a = reqs[0]["audio"]
            self.assertEqual((a["rate"], a["channels"], a["bits"]),
                             (16000, 1, 16))
            self.assertAlmostEqual(a["duration"], 4.0, delta=0.01)
            self.assert_covers(job["result"], 4.0)

    # -- paths --------------------------------------------------------------

    def test_audio_path_checks(self):
        outside = os.path.join(self.tmp, "elsewhere")
        os.mkdir(outside)
        out_wav = os.path.join(outside, "out.wav")
        write_wav(out_wav, 1.0)
        sibling = self.root + "2"             # same prefix as the root
        os.mkdir(sibling)
        write_wav(os.path.join(sibling, "s.wav"), 1.0)
        os.symlink(out_wav, os.path.join(self.root, "link.wav"))
        os.symlink(outside, os.path.join(self.root, "dirlink"))
        os.mkdir(os.path.join(self.root, "sub"))
        ok = self.wav("ok.wav", 1.0)
        bad = [
            self.root + "/../elsewhere/out.wav",
            self.root + "/sub/../../elsewhere/out.wav",
            out_wav,
            os.path.join(self.root, "link.wav"),
            os.path.join(self.root, "dirlink", "out.wav"),
            os.path.join(sibling, "s.wav"),
            os.path.join(self.root, "missing.wav"),
            os.path.join(self.root, "sub"),
            self.root,
            "ok.wav",
            "",
            "/etc/passwd",
            123,
            None,
        ]
        with self.daemon() as d:
            for p in bad:
                st, _, body = d.request("POST", "/v1/jobs", {
                    "class": "transcription", "payload": {"audio_path": p}})
                self.assertError((st, body), 400, "invalid",
                                 "payload.audio_path", msg=repr(p))
                if isinstance(p, str) and "link" in p:
                    # Names the given path, never where the link led.
                    self.assertNotIn("elsewhere", body["error"]["message"])
            # A NUL in a string: refused by the JSON parser already.
            st, _, body = d.request("POST", "/v1/jobs", {
                "class": "transcription",
                "payload": {"audio_path": ok + "\u0000.txt"}})
            self.assertError((st, body), 400, "invalid")
            for payload in (None, "x", {}):
                st, _, body = d.request("POST", "/v1/jobs", {
                    "class": "transcription", "payload": payload})
                self.assertEqual(st, 400, (payload, body))
                self.assertTrue(body["error"]["field"].startswith(
                    "payload"), body)
            self.assertEqual(d.jobs(), [])
            # The good path works, and nothing else reached the backend.
            j = d.submit("transcription", payload={"audio_path": ok})
            self.finished(d, j["id"])
            reqs = self.fake.requests("/inference")
            self.assertEqual(len(reqs), 1)
            self.assertAlmostEqual(reqs[0]["audio"]["duration"], 1.0,
                                   delta=0.01)

    def test_path_checked_again_at_run_time(self):
        # A file swapped for a symlink out of the roots after the submit
        # is not read: the job fails instead.
        outside = os.path.join(self.tmp, "secret.wav")
        write_wav(outside, 1.0)
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=0.3)
            busy = d.submit("transcription", payload={
                "audio_path": self.wav("first.wav", 3.0)})
            path = self.wav("later.wav", 1.0)
            j = d.submit("transcription", payload={"audio_path": path})
            self.assertEqual(d.job(j["id"])["state"], "queued")
            os.unlink(path)
            os.symlink(outside, path)
            self.wait_job(d, j["id"], TERMINAL, 10)
            job = d.job(j["id"])
            self.assertIn(job["state"], ("failed", "dead"), job)
            self.finished(d, busy["id"])
            self.assertEqual(len(self.fake.requests("/inference")), 1)

    # -- restart --------------------------------------------------------------

    def test_kill9_resumes_from_stored_progress(self):
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=SPEED)
            n0 = self.warm_whisper(d)
            path = self.wav("long.wav", 12.0)
            j = d.submit("transcription", payload={"audio_path": path})

            def mid():
                job = d.job(j["id"])
                p = job["progress"] or {}
                return job if job["state"] == "running" and \
                    p.get("chunks_done", 0) >= 2 else None
            before = wait_until(mid, 10, 0.01, "two chunks stored")
            time.sleep(0.05)
            d.kill9()
            pre = self.fake.requests("/inference")[n0:]
            before_s = before["progress"]["offset_s"]
            self.assertGreater(before_s, 0)
            d.start()
            job = self.finished(d, j["id"], timeout=15)
            post = self.fake.requests("/inference")[n0 + len(pre):]
            done = [r for r in pre if r["status"] == 200 and r["completed"]]
            cum = [sum(durations(done)[:k]) for k in range(len(done) + 1)]
            resumed_at = 12.0 - sum(durations(post))
            self.assertGreater(len(post), 0)
            self.assertGreaterEqual(resumed_at, before_s - 0.01,
                                    "restarted before the stored offset")
            self.assertTrue(any(abs(resumed_at - c) < 0.01 for c in cum),
                            "resumed at %.3f, not at a chunk boundary %r"
                            % (resumed_at, cum))
            self.assertGreater(resumed_at, 0.5, "started over from 0")
            # The chunk in flight at the kill was abandoned by gpuqd.
            self.assertTrue(any(r["client_disconnected"] for r in pre)
                            or len(done) == len(pre), pre)
            self.assert_covers(job["result"], 12.0,
                               [c for c in cum if c <= resumed_at + 0.01])
            restarts = [h for h in history(job) if h[2] and
                        "daemon_restart" in json.dumps(h[2])]
            self.assertTrue(restarts or job["attempts"] >= 1)

    # -- a chat between chunks -------------------------------------------

    def test_chat_granted_within_one_chunk(self):
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=SPEED, tokens=4)
            self.warm_whisper(d)
            path = self.wav("long.wav", 12.0)
            tids = [d.submit("transcription",
                             payload={"audio_path": path})["id"]
                    for _ in range(3)]
            wait_until(lambda: (d.job(tids[0])["progress"] or {})
                       .get("chunks_done", 0) >= 1, 10, 0.01,
                       "a chunk done")
            time.sleep(0.1)     # somewhere inside the next chunk
            c = self.chat(d, "urgent")
            cj = self.finished(d, c["id"], timeout=5)
            ch = history(cj)
            t_sub = ch[0][0]
            t_run = [h[0] for h in ch if h[1] == "running"][0]
            self.cancel_all(d)
            tg = []
            for t in tids:
                tg.extend(g for g in grants(d.job(t)))
            during = [g for g in tg if g[0] <= t_sub and
                      (g[1] is None or g[1] > t_sub)]
            self.assertEqual(len(during), 1,
                             "one chunk should be running at the submit: "
                             "%r, submit %.3f" % (tg, t_sub))
            g = during[0]
            # Granted as that chunk ended (ms timestamps), before any
            # other transcription chunk started.
            self.assertGreaterEqual(t_run, g[1] - 0.002)
            self.assertLessEqual(t_run - g[1], 0.05,
                                 "chat granted %.3fs after the chunk ended"
                                 % (t_run - g[1]))
            self.assertFalse([x for x in tg if t_sub < x[0] < t_run],
                             "a transcription chunk was granted first")
            self.assertLessEqual(t_run - t_sub, HOLD + 0.15)
            self.assertLessEqual(cj["wait_ms"], (HOLD + 0.15) * 1000)

    # -- errors -------------------------------------------------------------

    def test_500_retried_with_backoff_progress_kept(self):
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=SPEED)
            n0 = self.warm_whisper(d)
            # The first chunk goes through, the second gets a 500.
            self.fake.script(faults=[
                {"path": "/inference", "kind": "slow", "delay_s": 0,
                 "count": 1},
                {"path": "/inference", "kind": "500", "count": 1}])
            path = self.wav("long.wav", 12.0)
            j = d.submit("transcription", payload={"audio_path": path})
            job = self.finished(d, j["id"], timeout=15)
            reqs = self.fake.requests("/inference")[n0:]
            self.assertEqual([r["status"] for r in reqs[:3]],
                             [200, 500, 200])
            # The failed chunk was sent again, from the stored offset (the
            # fake did not parse the 500's body: compare sizes).
            self.assertAlmostEqual(reqs[1]["body_len"], reqs[2]["body_len"],
                                   delta=64)
            ok = [r for r in reqs if r["status"] == 200]
            self.assertAlmostEqual(sum(durations(ok)), 12.0, delta=0.01)
            self.assert_covers(job["result"], 12.0)
            h = history(job)
            k = [i for i, x in enumerate(h)
                 if x[1] == "queued" and x[2] == {"retryable": True}]
            self.assertEqual(len(k), 1, h)
            i = k[0]
            self.assertEqual(h[i + 1][1], "running")
            self.assertGreaterEqual(h[i + 1][0] - h[i][0], 0.02,
                                    "no backoff before the retry")
            self.assertEqual(job["attempts"], 2)

    def test_500_repeated_fails(self):
        # The same chunk answered with the same 500 twice: a bad request
        # in disguise, not retried again (failed, not dead).
        with self.daemon() as d:
            self.fake.script(faults=[{"path": "/inference", "kind": "500",
                                      "count": -1}])
            j = d.submit("transcription", payload={
                "audio_path": self.wav("a.wav", 2.0)})
            self.wait_job(d, j["id"], TERMINAL, 10)
            job = d.job(j["id"])
            self.assertEqual(job["state"], "failed", job)
            self.assertEqual(job["error"]["code"], "backend_5xx")
            self.assertEqual(job["attempts"], 2)
            self.assertEqual(len(self.fake.requests("/inference")), 2)

    def test_cancel_running_chunk(self):
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=0.5)
            j = d.submit("transcription", payload={
                "audio_path": self.wav("a.wav", 6.0)})
            wait_until(lambda: self.fake.busy()["busy"] > 0, 5,
                       what="the chunk to reach the fake")
            st, _, body = d.request("POST", "/v1/jobs/%s/cancel" % j["id"])
            self.assertEqual(st, 200, body)
            self.assertEqual(body["state"], "cancelled")
            wait_until(lambda: self.fake.requests("/inference")[0]
                       ["client_disconnected"], 3,
                       what="the whisper call to be aborted")
            self.assertEqual(backend(d, "whisper")["inflight"], 0)
            self.fake.script(per_audio_second_s=0)
            j2 = d.submit("transcription", payload={
                "audio_path": self.wav("b.wav", 1.0)})
            self.finished(d, j2["id"])

    # -- drop-ins -----------------------------------------------------------

    def upload(self, d, path, route, fields, timeout=15):
        with open(path, "rb") as f:
            data = f.read()
        ctype, body = fake_infer.encode_multipart(
            [("file", data, "a.wav", "audio/wav")] + list(fields))
        return d.request_raw("POST", route, body,
                             headers={"Content-Type": ctype},
                             timeout=timeout)

    def test_whisper_dropin(self):
        with self.daemon() as d:
            path = self.wav("up.wav", 3.0)
            st, h, raw = self.upload(d, path, "/inference",
                                     [("response_format", "verbose_json"),
                                      ("language", "en")])
            if st == 404:
                self.skipTest("no /inference drop-in in this gpuqd")
            self.assertEqual(st, 200, raw)
            body = json.loads(raw)
            self.assertEqual(body["task"], "transcribe")
            self.assertAlmostEqual(body["duration"], 3.0, delta=0.02)
            self.assert_covers(body, 3.0)
            st, h, raw = self.upload(d, path, "/inference",
                                     [("response_format", "text")])
            self.assertEqual(st, 200, raw)
            self.assertTrue(h["content-type"].startswith("text/plain"), h)
            self.assertIn(b"whisper model always says", raw)
            st, h, raw = self.upload(d, path, "/inference", [])
            self.assertEqual(st, 200, raw)
            self.assertIn("whisper model", json.loads(raw)["text"])
            st, h, raw = self.upload(d, path, "/inference",
                                     [("response_format", "srt")])
            self.assertEqual(st, 400, raw)
            # Each went through the queue as a transcription job; no
            # upload is left behind.
            jobs = d.jobs("class=transcription")
            self.assertEqual(len(jobs), 3, jobs)
            self.assertTrue(all(j["state"] == "succeeded" for j in jobs))
            up = os.path.join(d.data, "uploads")
            self.assertEqual(os.listdir(up) if os.path.isdir(up) else [],
                             [])
            for r in self.fake.requests("/inference"):
                self.assertEqual(r["form"]["response_format"],
                                 "verbose_json")

    def test_openai_transcriptions_dropin(self):
        with self.daemon() as d:
            path = self.wav("up.wav", 2.0)
            st, h, raw = self.upload(d, path, "/v1/audio/transcriptions",
                                     [("model", "whisper-1"),
                                      ("response_format", "json")])
            if st == 404:
                self.skipTest("no /v1/audio/transcriptions in this gpuqd")
            self.assertEqual(st, 200, raw)
            self.assertIn("whisper model", json.loads(raw)["text"])
            st, _, raw = d.request_raw("POST", "/v1/audio/transcriptions",
                                       b"not multipart", headers={
                                           "Content-Type": "text/plain"})
            self.assertEqual(st, 400, raw)

    def test_dropin_hang_up_cancels(self):
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=0.5)
            with open(self.wav("up.wav", 4.0), "rb") as f:
                data = f.read()
            ctype, body = fake_infer.encode_multipart(
                [("file", data, "a.wav", "audio/wav")])
            sk = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            sk.sendall(("POST /inference HTTP/1.1\r\nHost: x\r\n"
                        "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                        % (ctype, len(body))).encode() + body)
            wait_until(lambda: self.fake.busy()["busy"] > 0, 5,
                       what="the chunk to reach the fake")
            sk.close()
            job = wait_until(lambda: [j for j in d.jobs() if j["state"]
                                      in TERMINAL], 3,
                             what="the job to end")[0]
            self.assertEqual(job["state"], "cancelled")
            wait_until(lambda: self.fake.requests("/inference")[0]
                       ["client_disconnected"], 3,
                       what="the whisper call to be aborted")
            up = os.path.join(d.data, "uploads")
            try:
                wait_until(lambda: not os.path.isdir(up) or
                           os.listdir(up) == [], 2)
            except AssertionError:
                self.fail("the upload of a cancelled drop-in job is left "
                          "behind: %r" % os.listdir(up))

    def test_dropin_job_runs_on_after_restart(self):
        # api.md: drop-in requests are lost with their connections, but
        # their jobs still run to the end (and the upload is deleted).
        with self.daemon() as d:
            self.fake.script(per_audio_second_s=0.3)
            with open(self.wav("up.wav", 3.0), "rb") as f:
                data = f.read()
            ctype, body = fake_infer.encode_multipart(
                [("file", data, "a.wav", "audio/wav")])
            sk = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            sk.sendall(("POST /inference HTTP/1.1\r\nHost: x\r\n"
                        "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                        % (ctype, len(body))).encode() + body)
            wait_until(lambda: self.fake.busy()["busy"] > 0, 5,
                       what="the chunk to reach the fake")
            d.kill9()
            sk.close()
            up = os.path.join(d.data, "uploads")
            self.assertEqual(len(os.listdir(up)), 1)
            d.start()
            job = wait_until(lambda: [j for j in d.jobs() if j["state"]
                                      in TERMINAL], 10,
                             what="the job to end")[0]
            self.assertEqual(job["state"], "succeeded", job)
            self.assertEqual(len(self.fake.requests("/inference")), 2)
            wait_until(lambda: os.listdir(up) == [], 2,
                       what="the upload to be removed")


if __name__ == "__main__":
    unittest.main()
