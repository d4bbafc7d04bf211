"""The application's helpers against gpuqd's built-in executors, with the
fake inference server as whisper-server and llama-server:
submit_transcription_job, submit_summarization_job, chat, job streams."""

import asyncio
import io
import math
import os
import struct
import sys
import unittest
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpuq_support import ExecCase  # noqa: E402

import gpuq  # noqa: E402
from gpuq.aio import AsyncClient  # noqa: E402

import fake_infer  # noqa: E402  (tests/fake, on the path)

MSGS = [{"role": "user", "content": "Hello"}]


def wav_bytes(seconds=2.0, rate=16000):
    """A 16-bit mono WAV of a 440 Hz tone, made with the wave module."""
    frames = int(seconds * rate)
    data = struct.pack("<%dh" % frames, *(
        int(8000 * math.sin(2 * math.pi * 440 * i / rate))
        for i in range(frames)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
    return buf.getvalue()


class ExecTest(ExecCase):

    def setUp(self):
        super().setUp()
        self.gq = gpuq.Client(self.url, timeout=10)

    def test_transcription_from_bytes_then_summary(self):
        t = self.gq.submit_transcription_job(audio_bytes=wav_bytes(2.0),
                                             language="en",
                                             metadata={"meeting": "m-7"})
        self.assertEqual(t["class"], "transcription")
        self.assertEqual(t["metadata"], {"meeting": "m-7"})
        s = self.gq.submit_summarization_job(from_job=t, max_words=20,
                                             instructions="Briefly.")
        self.assertEqual(s["payload"]["from_job"], t["id"])
        self.assertEqual(s.get("depends_on"), [t["id"]])
        tj = self.gq.wait(t, timeout=15)
        self.assertEqual(tj["state"], "succeeded", tj)
        self.assertIn("whisper model", tj["result"]["text"])
        self.assertIsInstance(tj["result"]["segments"], list)
        sj = self.gq.wait(s, timeout=15)
        self.assertEqual(sj["state"], "succeeded", sj)
        self.assertEqual(sj["result"]["summary"], fake_infer.fake_text(16))
        form = self.fake.requests("/inference")[0]["form"]
        self.assertEqual(form.get("language"), "en")

    def test_transcription_from_path(self):
        path = os.path.join(self.root, "a.wav")
        with open(path, "wb") as f:
            f.write(wav_bytes(1.0))
        t = self.gq.submit_transcription_job(audio_path=path,
                                             prompt="names: Ada")
        self.assertEqual(t["payload"]["audio_path"], path)
        self.assertEqual(self.gq.wait(t, timeout=15)["state"], "succeeded")
        with self.assertRaises(gpuq.InvalidRequest) as cm:
            self.gq.submit_transcription_job(audio_path="/etc/passwd")
        self.assertEqual(cm.exception.field, "payload.audio_path")

    def test_summarization_of_text(self):
        s = self.gq.submit_summarization_job(text="A long meeting. " * 20)
        done = self.gq.wait(s["id"], timeout=15)
        self.assertEqual(done["result"]["summary"], fake_infer.fake_text(16))

    def test_chat_stream_yields_tokens_in_order(self):
        self.fake.script(tokens=8, token_delay_s=0.02)
        stream = self.gq.chat(MSGS, max_tokens=20)
        self.assertIsInstance(stream, gpuq.ChatStream)
        pieces = list(stream)
        self.assertEqual(pieces, [fake_infer.fake_token(i)
                                  for i in range(8)])
        self.assertEqual(stream.text, fake_infer.fake_text(8))
        self.assertEqual(stream.finish_reason, "stop")
        self.assertRegex(stream.job_id, r"^j\d+$")
        job = self.gq.get(stream.job_id)
        self.assertEqual(job["class"], "chatbot")
        self.assertEqual(job["state"], "succeeded")
        sent = self.fake.requests("/v1/chat/completions")[-1]["body_json"]
        self.assertEqual(sent["messages"], MSGS)
        self.assertEqual(sent["max_tokens"], 20)

    def test_chat_whole_text_and_class(self):
        self.fake.script(tokens=5)
        text = self.gq.chat(MSGS, stream=False, cls="chatbot",
                            temperature=0.1)
        self.assertEqual(text, fake_infer.fake_text(5))
        with self.assertRaises(gpuq.UnknownClass):
            list(self.gq.chat(MSGS, cls="no-such-class"))
        with self.assertRaises(gpuq.InvalidRequest) as cm:
            self.gq.chat(MSGS, stream=False, cls="transcription")
        self.assertEqual(cm.exception.field, "model")

    def test_chat_failure(self):
        self.fake.script(faults=[{"kind": "500",
                                  "path": "/v1/chat/completions"}])
        with self.assertRaises(gpuq.JobFailed) as cm:
            list(self.gq.chat(MSGS))
        self.assertEqual(cm.exception.code, "backend_5xx")
        self.fake.script(faults=[{"kind": "500",
                                  "path": "/v1/chat/completions"}])
        with self.assertRaises(gpuq.JobFailed) as cm:
            self.gq.chat(MSGS, stream=False)
        self.assertEqual(cm.exception.status, 502)

    def test_chat_hang_up_cancels(self):
        self.fake.script(tokens=200, token_delay_s=0.05)
        with self.gq.chat(MSGS) as stream:
            first = next(iter(stream))
            self.assertEqual(first, fake_infer.fake_token(0))
        job = self.gq.wait(stream.job_id, timeout=10)
        self.assertEqual(job["state"], "cancelled")

    def test_job_stream(self):
        self.fake.script(tokens=6, token_delay_s=0.02)
        j = self.gq.submit("chatbot", {"messages": MSGS})
        s = self.gq.stream(j)
        self.assertEqual("".join(s), fake_infer.fake_text(6))
        self.assertEqual(s.job["state"], "succeeded")
        self.assertEqual(s.job["id"], j["id"])

    def test_status_backends(self):
        st = self.gq.get_status()
        names = {b["name"] for b in st["backends"]}
        self.assertEqual(names, {"whisper", "llm"})
        ex = {c["name"]: c["executor"] for c in st["classes"]}
        self.assertEqual(ex["chatbot"], "chat")
        self.assertEqual(ex["transcription"], "transcribe")
        self.assertEqual(ex["summarization"], "summarize")


class AsyncExecTest(ExecCase, unittest.IsolatedAsyncioTestCase):

    def setUp(self):
        super().setUp()
        self.gq = AsyncClient(self.url, timeout=10)

    async def test_chat_stream(self):
        self.fake.script(tokens=8, token_delay_s=0.02)
        pieces = []
        async with self.gq.chat(MSGS) as stream:
            async for p in stream:
                pieces.append(p)
        self.assertEqual(pieces, [fake_infer.fake_token(i)
                                  for i in range(8)])
        self.assertEqual(stream.finish_reason, "stop")
        self.assertEqual((await self.gq.get(stream.job_id))["state"],
                         "succeeded")

    async def test_chat_await(self):
        self.fake.script(tokens=4)
        self.assertEqual(await self.gq.chat(MSGS, stream=False),
                         fake_infer.fake_text(4))
        self.assertEqual(await self.gq.chat(MSGS), fake_infer.fake_text(4))
        with self.assertRaises(gpuq.UnknownClass):
            await self.gq.chat(MSGS, cls="no-such-class")

    async def test_chat_hang_up_cancels(self):
        self.fake.script(tokens=200, token_delay_s=0.05)
        async with self.gq.chat(MSGS) as stream:
            async for p in stream:
                break
        job = await self.gq.wait(stream.job_id, timeout=10)
        self.assertEqual(job["state"], "cancelled")

    async def test_transcription_and_summary(self):
        t = await self.gq.submit_transcription_job(audio_bytes=wav_bytes())
        s = await self.gq.submit_summarization_job(from_job=t["id"])
        tj, sj = await asyncio.gather(self.gq.wait(t, timeout=15),
                                      self.gq.wait(s, timeout=15))
        self.assertIn("whisper model", tj["result"]["text"])
        self.assertEqual(sj["result"]["summary"], fake_infer.fake_text(16))

    async def test_job_stream(self):
        self.fake.script(tokens=6, token_delay_s=0.02)
        j = await self.gq.submit("chatbot", {"messages": MSGS})
        s = self.gq.stream(j)
        self.assertEqual("".join([p async for p in s]),
                         fake_infer.fake_text(6))
        self.assertEqual(s.job["state"], "succeeded")


if __name__ == "__main__":
    unittest.main()
