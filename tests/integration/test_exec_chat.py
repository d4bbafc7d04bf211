"""test_exec_chat - the chat executor against the fake inference server:
the drop-in endpoints (/v1/chat/completions, /api/chat), token streams of
jobs, the first-token metric, cancels and hang-ups that abort the backend
call, backend errors and the circuit breaker.

    cd tests/integration && GPUQD=../../bin/gpuqd python3 -m unittest -v \
        test_exec_chat
"""

import json
import socket
import time
import unittest

from execfix import (ExecTest, FakeInfer, Stream, backend, chat_requests,
                     fake_infer, metric, metrics)
from gpuqtest import REASONS, TERMINAL, VALGRIND, wait_until

TEXT16 = fake_infer.fake_text(16)

# A chat class that retries (the brief's chatbot has max_attempts = 1) and
# a chat class whose backend speaks Ollama's /api/chat.
EXTRA = {
    "class_chatretry": {"priority": 10, "executor": "chat",
                        "backend": "llm", "max_attempts": 3,
                        "backoff_base": 0.05, "backoff_max": 0.1},
    "backend_ollama": {"type": "ollama", "url": None, "model": "tiny:1b"},
    "class_ochat": {"priority": 10, "executor": "chat",
                    "backend": "ollama", "max_attempts": 1},
    # A worker class nobody leases: a submit to it only wakes the
    # scheduler (test_backend_down_breaker).
    "class_kick": {"priority": -10},
}


def msgs(text):
    return [{"role": "user", "content": text}]


class ChatTest(ExecTest):

    def setUp(self):
        super().setUp()
        # Ollama's health check is GET /, which only the ollama flavor
        # answers.
        self.ofake = FakeInfer("ollama").start()
        self.addCleanup(self.ofake.stop)

    def daemon(self, **changes):
        extra = {k: dict(v) for k, v in EXTRA.items()}
        extra["backend_ollama"]["url"] = self.ofake.url
        extra.update(changes)
        return super().daemon(**extra)

    def the_job(self, d, cls="chatbot"):
        jobs = d.jobs("class=" + cls)
        self.assertEqual(len(jobs), 1, jobs)
        return jobs[0]

    # -- drop-ins ----------------------------------------------------------

    def test_openai_dropin_not_streamed(self):
        with self.daemon() as d:
            st, h, body = d.request("POST", "/v1/chat/completions", {
                "model": "tiny", "messages": msgs("hello plain"),
                "temperature": 0.5}, timeout=10)
            self.assertEqual(st, 200, body)
            self.assertTrue(h["content-type"].startswith(
                "application/json"), h)
            self.assertEqual(body["object"], "chat.completion")
            self.assertTrue(body["id"].startswith("chatcmpl-"), body)
            self.assertIsInstance(body["created"], int)
            self.assertEqual(body["model"], "tiny")
            ch = body["choices"][0]
            self.assertEqual(ch["index"], 0)
            self.assertEqual(ch["message"], {"role": "assistant",
                                             "content": TEXT16})
            self.assertEqual(ch["finish_reason"], "stop")
            u = body["usage"]
            self.assertEqual(u["completion_tokens"], 16)
            self.assertGreater(u["prompt_tokens"], 0)
            self.assertEqual(u["total_tokens"],
                             u["prompt_tokens"] + u["completion_tokens"])
            # What the backend got: the request, streamed, for its model.
            reqs = chat_requests(self.fake, "hello plain")
            self.assertEqual(len(reqs), 1, reqs)
            sent = reqs[0]["body_json"]
            self.assertIs(sent["stream"], True)
            self.assertEqual(sent["model"], "tiny")
            self.assertEqual(sent["messages"], msgs("hello plain"))
            self.assertEqual(sent["temperature"], 0.5)
            # It went through the queue as a job of the first chat class.
            job = self.the_job(d)
            self.assertEqual(job["state"], "succeeded")
            self.assertEqual(job["result"]["choices"][0]["message"]
                             ["content"], TEXT16)
            self.assertEqual(job["holder"], "llm")

            # max_tokens reaches the backend; finish_reason says length.
            st, _, body = d.request("POST", "/v1/chat/completions", {
                "model": "tiny", "messages": msgs("short one"),
                "max_tokens": 4})
            self.assertEqual(st, 200, body)
            self.assertEqual(body["choices"][0]["message"]["content"],
                             fake_infer.fake_text(4))
            self.assertEqual(body["choices"][0]["finish_reason"], "length")
            self.assertEqual(chat_requests(self.fake, "short one")[0]
                             ["body_json"]["max_tokens"], 4)

            # A bad request is refused before anything is queued.
            st, _, body = d.request("POST", "/v1/chat/completions",
                                    {"model": "tiny", "messages": []})
            self.assertError((st, body), 400, "invalid", "messages")
            st, _, body = d.request(
                "POST", "/v1/chat/completions",
                {"model": "tiny", "messages": msgs("x")},
                headers={"X-Gpuq-Class": "nope"})
            self.assertError((st, body), 404, "unknown_class")
            st, _, body = d.request(
                "POST", "/v1/chat/completions",
                {"model": "tiny", "messages": msgs("x")},
                headers={"X-Gpuq-Class": "transcription"})
            self.assertEqual(st, 400, body)
            self.assertEqual(len(d.jobs()), 2)

    def test_openai_dropin_streamed(self):
        with self.daemon() as d:
            s = Stream(d.port, "POST", "/v1/chat/completions", {
                "model": "tiny", "stream": True,
                "messages": msgs("hello stream")})
            self.assertEqual(s.status, 200)
            self.assertTrue(s.headers["content-type"].startswith(
                "text/event-stream"), s.headers)
            events = list(s.sse())
            s.close()
            self.assertEqual(events[-1][1], "[DONE]")
            chunks = [json.loads(e[1]) for e in events[:-1]]
            self.assertGreaterEqual(len(chunks), 2)
            text = "".join(c["choices"][0]["delta"].get("content", "")
                           for c in chunks)
            self.assertEqual(text, TEXT16)
            for c in chunks:
                self.assertEqual(c["object"], "chat.completion.chunk")
                self.assertEqual(c["id"], chunks[0]["id"])
                self.assertEqual(c["model"], "tiny")
            self.assertEqual(chunks[-1]["choices"][0]["finish_reason"],
                             "stop")
            self.assertEqual(chunks[-1]["choices"][0]["delta"], {})
            for c in chunks[:-1]:
                self.assertIsNone(c["choices"][0]["finish_reason"])
            self.assertEqual(self.the_job(d)["state"], "succeeded")

    def test_ollama_dropin(self):
        with self.daemon() as d:
            s = Stream(d.port, "POST", "/api/chat", {
                "model": "tiny", "messages": msgs("hello ollama"),
                "options": {"num_predict": 5, "temperature": 0.2}})
            self.assertEqual(s.status, 200)
            self.assertTrue(s.headers["content-type"].startswith(
                "application/x-ndjson"), s.headers)
            objs = [o for o, _ in s.ndjson()]
            s.close()
            self.assertGreaterEqual(len(objs), 2)
            self.assertTrue(all(o["done"] is False for o in objs[:-1]))
            last = objs[-1]
            self.assertIs(last["done"], True)
            self.assertEqual(last["done_reason"], "length")
            self.assertEqual(last["eval_count"], 5)
            self.assertEqual(last["message"]["content"], "")
            self.assertEqual("".join(o["message"]["content"]
                                     for o in objs[:-1]),
                             fake_infer.fake_text(5))
            for o in objs:
                self.assertEqual(o["model"], "tiny")
                self.assertEqual(o["message"]["role"], "assistant")
            sent = chat_requests(self.fake, "hello ollama")[0]["body_json"]
            self.assertEqual(sent["max_tokens"], 5)
            self.assertEqual(sent["temperature"], 0.2)

            st, h, body = d.request("POST", "/api/chat", {
                "model": "tiny", "messages": msgs("ollama whole"),
                "stream": False})
            self.assertEqual(st, 200, body)
            self.assertIs(body["done"], True)
            self.assertEqual(body["message"], {"role": "assistant",
                                               "content": TEXT16})
            self.assertEqual(body["done_reason"], "stop")

    def test_ollama_backend(self):
        # The chat executor speaking Ollama's NDJSON to its backend.
        with self.daemon() as d:
            self.ofake.script(tokens=6)
            j = d.submit("ochat", payload={"messages": msgs("to ollama"),
                                           "max_tokens": 6, "seed": 3})
            job = self.finished(d, j["id"])
            self.assertEqual(job["result"]["object"], "chat.completion")
            self.assertEqual(job["result"]["choices"][0]["message"]
                             ["content"], fake_infer.fake_text(6))
            self.assertEqual(job["result"]["usage"]["completion_tokens"], 6)
            reqs = self.ofake.requests("/api/chat")
            self.assertEqual(len(reqs), 1, reqs)
            sent = reqs[0]["body_json"]
            self.assertEqual(sent["model"], "tiny:1b")
            self.assertIs(sent["stream"], True)
            self.assertEqual(sent["messages"], msgs("to ollama"))
            self.assertEqual(sent["options"]["num_predict"], 6)
            self.assertEqual(sent["options"]["seed"], 3)

    # -- job streams and the first-token metric ------------------------------

    def test_job_stream_tokens_then_done(self):
        with self.daemon() as d:
            self.fake.script(token_delay_s=0.03, tokens=12)
            j = self.chat(d, "stream my job")
            s = Stream(d.port, "GET", "/v1/jobs/%s/stream" % j["id"])
            self.assertEqual(s.status, 200)
            self.assertTrue(s.headers["content-type"].startswith(
                "text/event-stream"))
            events = list(s.sse())
            s.close()
            self.assertEqual(events[-1][0], "done", events)
            done = json.loads(events[-1][1])
            tokens = events[:-1]
            self.assertTrue(all(e[0] == "token" for e in tokens), events)
            texts = [json.loads(e[1])["text"] for e in tokens]
            self.assertEqual("".join(texts), fake_infer.fake_text(12))
            # Streamed as they come, not in one piece at the end.
            self.assertGreaterEqual(len(texts), 6, texts)
            self.assertLess(tokens[0][2], events[-1][2] - 0.1)
            # A listener that joined late got the text so far at once;
            # every later event is one token, in order.
            k = len(texts) - 1
            self.assertEqual(texts[-1], fake_infer.fake_token(11))
            self.assertEqual(texts[k - 1], fake_infer.fake_token(10))
            self.assertEqual(done["id"], j["id"])
            self.assertEqual(done["state"], "succeeded")
            self.assertEqual(done["result"]["choices"][0]["message"]
                             ["content"], fake_infer.fake_text(12))

            # The stream of a finished job: the whole text, then done.
            s = Stream(d.port, "GET", "/v1/jobs/%s/stream" % j["id"])
            events = list(s.sse())
            s.close()
            self.assertEqual([e[0] for e in events], ["token", "done"])
            self.assertEqual(json.loads(events[0][1])["text"],
                             fake_infer.fake_text(12))

            st, _, body = d.request("GET", "/v1/jobs/j999/stream")
            self.assertError((st, body), 404, "not_found")

    def test_job_stream_hang_up_does_not_cancel(self):
        with self.daemon() as d:
            self.fake.script(token_delay_s=0.02, tokens=30)
            j = self.chat(d, "keep going")
            s = Stream(d.port, "GET", "/v1/jobs/%s/stream" % j["id"])
            self.assertEqual(next(s.sse())[0], "token")
            s.hang_up()
            job = self.finished(d, j["id"])
            self.assertEqual(job["result"]["choices"][0]["message"]
                             ["content"], fake_infer.fake_text(30))

    def test_streamed_dropins_report_failures(self):
        with self.daemon() as d:
            fault = [{"path": "/v1/chat/completions", "kind": "500"}]
            self.fake.script(faults=fault)
            s = Stream(d.port, "POST", "/v1/chat/completions", {
                "model": "tiny", "stream": True, "messages": msgs("f1")})
            self.assertEqual(s.status, 200)
            events = [e[1] for e in s.sse()]
            s.close()
            self.assertEqual(events[-1], "[DONE]")
            err = json.loads(events[-2])["error"]
            self.assertEqual(err["code"], "backend_5xx", events)
            self.assertIsInstance(err["message"], str)
            self.fake.script(faults=fault)
            s = Stream(d.port, "POST", "/api/chat", {
                "model": "tiny", "messages": msgs("f2")})
            self.assertEqual(s.status, 200)
            objs = [o for o, _ in s.ndjson()]
            s.close()
            self.assertIsInstance(objs[-1].get("error"), str, objs)
            self.fake.script(faults=fault)
            st, _, body = d.request("POST", "/api/chat", {
                "model": "tiny", "messages": msgs("f3"), "stream": False})
            self.assertEqual(st, 502, body)
            self.assertIsInstance(body.get("error"), str, body)

    def test_first_token_metric(self):
        with self.daemon() as d:
            self.fake.script(delay_s=0.2)
            t0 = time.monotonic()
            for i in range(2):
                self.finished(d, self.chat(d, "metric %d" % i)["id"])
            elapsed = time.monotonic() - t0
            ms = metrics(d)
            n = metric(ms, "gpuq_chat_first_token_seconds_count",
                       **{"class": "chatbot"})
            total = metric(ms, "gpuq_chat_first_token_seconds_sum",
                           **{"class": "chatbot"})
            self.assertEqual(n, 2, sorted(k for k in ms if "first" in k[0]))
            # Each waited for the fake's 0.2 s prompt delay.
            self.assertGreaterEqual(total, 0.4)
            self.assertLessEqual(total, elapsed)
            self.assertEqual(metric(ms, "gpuq_grants_total",
                                    **{"class": "chatbot"}), 2)

    # -- cancels and hang-ups abort the backend call --------------------------

    def assert_aborted(self, marker):
        """The fake saw the client (gpuqd) hang up on the call."""
        def gone():
            r = chat_requests(self.fake, marker)
            return r and r[-1]["client_disconnected"] and \
                r[-1]["t_end"] is not None
        wait_until(gone, 3.0, what="the backend call for %r to be "
                   "aborted" % marker)

    def assert_slot_free(self, d):
        wait_until(lambda: all(s["job"] is None for s in d.status()["slots"])
                   and backend(d, "llm")["inflight"] == 0, 3.0,
                   what="the slot and the backend to be free")
        self.fake.script(token_delay_s=0, delay_s=0)
        j = self.chat(d, "after the abort")
        self.finished(d, j["id"], timeout=5)

    def test_cancel_mid_stream(self):
        with self.daemon() as d:
            self.fake.script(token_delay_s=0.1, tokens=100)
            j = self.chat(d, "cancel me")
            s = Stream(d.port, "GET", "/v1/jobs/%s/stream" % j["id"])
            it = s.sse()
            first = next(it)
            self.assertEqual(first[0], "token")
            st, _, body = d.request("POST", "/v1/jobs/%s/cancel" % j["id"])
            self.assertEqual(st, 200, body)
            self.assertEqual(body["state"], "cancelled")
            rest = list(it)
            s.close()
            self.assertEqual(rest[-1][0], "done", rest)
            self.assertEqual(json.loads(rest[-1][1])["state"], "cancelled")
            self.assert_aborted("cancel me")
            self.assertEqual(d.job(j["id"])["state"], "cancelled")
            self.assert_slot_free(d)

    def test_hang_up_streaming_dropin(self):
        with self.daemon() as d:
            self.fake.script(token_delay_s=0.1, tokens=100)
            s = Stream(d.port, "POST", "/v1/chat/completions", {
                "model": "tiny", "stream": True,
                "messages": msgs("hang up on me")})
            ev = next(s.sse())
            self.assertIn("chat.completion.chunk", ev[1])
            s.hang_up()
            job = self.the_job(d)
            self.wait_job(d, job["id"], TERMINAL, 3.0)
            self.assertEqual(d.job(job["id"])["state"], "cancelled")
            self.assert_aborted("hang up on me")
            self.assert_slot_free(d)

    def test_hang_up_plain_dropin_and_queued(self):
        with self.daemon() as d:
            # Running: the call waits out the fake's prompt delay.
            self.fake.script(delay_s=5)
            # (a plain reply only starts at the end: send, then hang up)
            body = json.dumps({"model": "tiny", "stream": False,
                               "messages": msgs("plain hang up")}).encode()
            sk = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            sk.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n"
                       b"Host: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
            job = wait_until(lambda: [j for j in d.jobs("class=chatbot")
                                      if j["state"] == "running"], 3.0,
                             what="the chat to run")[0]
            # Queued behind it: a second drop-in whose client goes too.
            sk2 = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            body2 = body.replace(b"plain hang up", b"queued hang up")
            sk2.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n"
                        b"Host: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body2) + body2)
            queued = wait_until(lambda: [j for j in d.jobs("class=chatbot")
                                         if j["state"] == "queued"], 3.0,
                                what="the second chat to queue")[0]
            sk2.close()
            self.wait_job(d, queued["id"], TERMINAL, 3.0)
            self.assertEqual(d.job(queued["id"])["state"], "cancelled")
            sk.close()
            self.wait_job(d, job["id"], TERMINAL, 3.0)
            self.assertEqual(d.job(job["id"])["state"], "cancelled")
            self.assert_aborted("plain hang up")
            self.assertEqual(chat_requests(self.fake, "queued hang up"), [])
            self.assert_slot_free(d)

    # -- backend errors ---------------------------------------------------

    def test_500_once_no_retry(self):
        with self.daemon() as d:
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "500", "count": 1}])
            j = self.chat(d, "five hundred")
            self.wait_job(d, j["id"], TERMINAL)
            job = d.job(j["id"])
            # Retryable, but chatbot has max_attempts = 1: dead (api.md:
            # "with none left the job is dead").
            self.assertIn(job["state"], ("dead", "failed"), job)
            self.assertEqual(job["error"]["code"], "backend_5xx", job)
            self.assertEqual(job["attempts"], 1)
            self.assertEqual(len(chat_requests(self.fake, "five hundred")),
                             1)
            # The drop-in answers 502 with the error.
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "500", "count": 1}])
            st, _, body = d.request("POST", "/v1/chat/completions", {
                "model": "tiny", "messages": msgs("five hundred again")})
            self.assertEqual(st, 502, body)
            self.assertEqual(body["error"]["code"], "backend_5xx", body)

    def test_500_once_retried(self):
        with self.daemon() as d:
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "500", "count": 1}])
            j = d.submit("chatretry", payload={"messages": msgs("retry")})
            job = self.finished(d, j["id"])
            self.assertEqual(job["attempts"], 2)
            self.assertEqual(job["result"]["choices"][0]["message"]
                             ["content"], TEXT16)
            states = [(h["state"], h["detail"]) for h in job["history"]]
            self.assertIn(("queued", {"retryable": True}), states)
            self.assertEqual(len(chat_requests(self.fake, "retry")), 2)

    def test_500_repeated_identically_not_retried(self):
        with self.daemon() as d:
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "500", "count": 10}])
            j = d.submit("chatretry", payload={"messages": msgs("again")})
            job = self.finished(d, j["id"], state="failed")
            self.assertEqual(job["error"]["code"], "backend_5xx")
            self.assertEqual(job["attempts"], 2)
            self.assertEqual(len(chat_requests(self.fake, "again")), 2)

    def test_503_repeated_is_retried(self):
        # Only a 500 can be a client mistake in disguise; a 503 ("Loading
        # model", Ollama's "server busy") that repeats byte for byte
        # still says "later" (regression: the rule took any 5xx).
        with self.daemon() as d:
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "503", "count": 2}])
            j = d.submit("chatretry", payload={"messages": msgs("loading")})
            job = self.finished(d, j["id"])
            self.assertEqual(job["attempts"], 3, job)
            self.assertEqual(len(chat_requests(self.fake, "loading")), 3)

    def test_500_of_another_request_still_retryable(self):
        # "A 500 that repeats byte for byte for the same request" is not
        # retried; one job's 500 must not make another job's 500 final.
        with self.daemon() as d:
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "500", "count": 1}])
            a = self.chat(d, "first request")
            self.wait_job(d, a["id"], TERMINAL)
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "500", "count": 1}])
            b = d.submit("chatretry",
                         payload={"messages": msgs("second request")})
            self.wait_job(d, b["id"], TERMINAL)
            job = d.job(b["id"])
            self.assertEqual(job["state"], "succeeded",
                             "a 500 to a different request was taken for "
                             "a repeat: %r" % job)

    def test_malformed_stream(self):
        with self.daemon() as d:
            # The second event is cut short, after a token was streamed.
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "malformed_json"}])
            j = self.chat(d, "malformed")
            job = self.finished(d, j["id"], state="failed")
            self.assertEqual(job["error"]["code"], "backend_bad_reply")
            self.assertIsInstance(job["error"]["message"], str)
            # The first event cut: nothing was streamed, so it is retried.
            self.fake.script(faults=[{"path": "/v1/chat/completions",
                                      "kind": "malformed_json",
                                      "after": 0}])
            j = d.submit("chatretry", payload={"messages": msgs("cut 0")})
            job = self.finished(d, j["id"])
            self.assertEqual(job["attempts"], 2)

    @unittest.skipIf(VALGRIND, "timing: the breaker's 1 s cool-down must "
                     "not end before the test has checked the open state; "
                     "under valgrind the checks take longer than that")
    def test_backend_down_breaker(self):
        with self.daemon() as d:
            self.fake.kill()
            t0 = time.monotonic()
            ids = [self.chat(d, "down %d" % i)["id"] for i in range(3)]
            for jid in ids:
                job = self.finished(d, jid, state="dead", timeout=3)
                self.assertEqual(job["error"]["code"],
                                 "backend_unreachable", job)
                self.assertEqual(job["history"][-1]["detail"],
                                 {"retryable": True})
            b = backend(d, "llm")
            self.assertEqual(b["state"], "open", b)
            self.assertGreaterEqual(b["errors_retryable"], 3)
            self.assertTrue(b["last_error"])
            self.assertEqual(metric(metrics(d), "gpuq_backend_up",
                                    backend="llm"), 0)
            # While open nothing is sent: the next chat waits queued.
            probe = self.chat(d, "probe")
            time.sleep(0.2)
            job = d.job(probe["id"])
            self.assertEqual(job["state"], "queued", job)
            self.assertEqual(job["reason"], "backend", job)
            # The fake is back (with a prompt delay, to see the probe).
            self.fake = self.fake.revive({"delay_s": 0.6})
            self.addCleanup(self.fake.stop)
            self.assertLess(time.monotonic() - t0, 0.95,
                            "too slow to test the breaker's cool-down")
            # After the cool-down (1 s) one probe goes: half-open.  (No
            # timer wakes the scheduler when the cool-down ends, see
            # test_breaker_waits_without_requests: a submit does here.)
            time.sleep(max(0, t0 + 1.1 - time.monotonic()))
            d.submit("kick")
            time.sleep(max(0, t0 + 1.35 - time.monotonic()))
            b = backend(d, "llm")
            self.assertEqual(b["state"], "half_open", b)
            self.assertEqual(d.job(probe["id"])["state"], "running")
            self.finished(d, probe["id"], timeout=3)
            b = backend(d, "llm")
            self.assertEqual(b["state"], "closed", b)
            self.assertEqual(metric(metrics(d), "gpuq_backend_up",
                                    backend="llm"), 1)
            self.assertEqual(len(chat_requests(self.fake, "probe")), 1)

    @unittest.skipIf(VALGRIND, "timing: the chat must have run 2 s after "
                     "the backend went down (1 s cool-down); and gpuqd's "
                     "first health check, slow under valgrind, must end "
                     "before the fake is killed")
    def test_breaker_waits_without_requests(self):
        # As above, but nobody talks to gpuqd while the breaker cools
        # down: the queued chat must still run once the cool-down is over.
        with self.daemon() as d:
            self.fake.kill()
            t0 = time.monotonic()
            ids = [self.chat(d, "quiet %d" % i)["id"] for i in range(3)]
            for jid in ids:
                self.finished(d, jid, state="dead", timeout=3)
            self.assertEqual(backend(d, "llm")["state"], "open")
            probe = self.chat(d, "quiet probe")
            self.fake = self.fake.revive()
            self.addCleanup(self.fake.stop)
            time.sleep(max(0, t0 + 2.0 - time.monotonic()))
            job = d.job(probe["id"])
            self.assertEqual(job["state"], "succeeded",
                             "queued chat did not run after the breaker's "
                             "cool-down without another request: %r"
                             % job)


if __name__ == "__main__":
    unittest.main()
