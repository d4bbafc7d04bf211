"""test_fake_infer - checks the fake inference server against the recorded
exchanges in ../shared/protocols/ (or the copy in tests/fake/recordings/)
and checks its scripting, faults and request log.

    cd tests/fake && /usr/bin/python3 -m unittest -v test_fake_infer

Python 3 standard library only; 127.0.0.1 only; every wait is bounded and
the whole file runs in a few seconds.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fake_infer as F  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "protocols")
COPY = os.path.join(HERE, "recordings")
PROTOCOLS = os.environ.get("GPUQ_PROTOCOLS") or (
    SHARED if os.path.isdir(SHARED) else COPY)

IO_TIMEOUT = 5.0


# ---------------------------------------------------------------------------
# Raw HTTP, so that header order and chunk framing can be seen.

class Response:
    def __init__(self, status, headers, body, chunks):
        self.status = status        # the status line, e.g. "HTTP/1.1 200 OK"
        self.headers = headers      # [(name, value)] in wire order
        self.body = body            # bytes, de-chunked
        self.chunks = chunks        # [bytes] per HTTP chunk, or None

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def names(self):
        return [k for k, _ in self.headers]

    def code(self):
        return int(self.status.split()[1])

    def json(self):
        return json.loads(self.body)

    def wire(self):
        """Status line, headers and body as one response with
        Content-Length would carry them."""
        head = "\r\n".join([self.status] + ["%s: %s" % kv
                                            for kv in self.headers])
        return (head + "\r\n\r\n").encode("latin-1") + self.body


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def until(self, sep):
        while sep not in self.buf:
            self.fill()
        out, self.buf = self.buf.split(sep, 1)
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k, v[1:] if v.startswith(" ") else v))
    return lines[0], headers


def read_response(sock, on_chunk=None):
    """Reads one response from sock; on_chunk(bytes) sees each chunk as it
    arrives."""
    r = _Reader(sock)
    status, headers = parse_head(r.until(b"\r\n\r\n"))
    hd = {k.lower(): v for k, v in headers}
    if "content-length" in hd:
        return Response(status, headers, r.exactly(int(hd["content-length"])),
                        None)
    chunks = []
    while True:
        size = int(r.until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            r.until(b"\r\n")
            return Response(status, headers, b"".join(chunks), chunks)
        data = r.exactly(size)
        if r.exactly(2) != b"\r\n":
            raise ValueError("bad chunk framing")
        chunks.append(data)
        if on_chunk:
            on_chunk(data)


def request_bytes(method, path, body=b"", headers=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    lines += ["%s: %s" % kv for kv in headers]
    if body or method == "POST":
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(port, method, path, body=b"", headers=(), timeout=IO_TIMEOUT):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(request_bytes(method, path, body, headers))
        return read_response(s)
    finally:
        s.close()


def post_json(port, path, obj, headers=()):
    return exchange(port, "POST", path, json.dumps(obj),
                    (("Content-Type", "application/json"),) + tuple(headers))


def whisper_post(port, fields, path="/inference"):
    ctype, body = F.encode_multipart(fields)
    return exchange(port, "POST", path, body, (("Content-Type", ctype),))


def wav_fields(seconds, fmt=None, **kw):
    fields = [("file", F.make_wav(seconds, **kw), "clip.wav", "audio/wav")]
    if fmt:
        fields.append(("response_format", fmt))
    return fields


def load_recording(name):
    with open(os.path.join(PROTOCOLS, name), "rb") as f:
        raw = f.read()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    n = dict((k.lower(), v) for k, v in headers).get("content-length")
    if n is not None:
        body = body[:int(n)]
    return Response(status, headers, body, None)


def shape(x):
    """The structure of a JSON value: key order and value types, with
    lists reduced to the shape of their first element."""
    if isinstance(x, dict):
        return [(k, shape(v)) for k, v in x.items()]
    if isinstance(x, list):
        return ["list", shape(x[0]) if x else None]
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int"
    return type(x).__name__


def sse_events(body):
    """The data payloads of an event-stream body."""
    out = []
    for block in body.decode("utf-8").split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            out.append(block[len("data: "):])
    return out


def finished(fs, path=None):
    """The first logged request (to path) that has ended, waiting for it a
    little; fails the test if none ends."""
    log = wait_until(lambda: [e for e in fs.requests(path) if e["t_end"]])
    if not log:
        raise AssertionError("no request to %s ended: %r"
                             % (path, fs.requests(path)))
    return log[0]


def wait_until(fn, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


class FakeCase(unittest.TestCase):
    """Each test gets fresh servers, one per flavor it touches (self.w,
    self.l, self.o), started on first use."""

    def setUp(self):
        self.servers = {}

    def tearDown(self):
        for fs in self.servers.values():
            fs.stop()

    def server(self, flavor):
        if flavor not in self.servers:
            self.servers[flavor] = F.FakeServer(flavor=flavor).start()
        return self.servers[flavor]

    w = property(lambda self: self.server("whisper"))
    l = property(lambda self: self.server("llama"))  # noqa: E741
    o = property(lambda self: self.server("ollama"))


# ---------------------------------------------------------------------------

@unittest.skipUnless(os.path.isdir(PROTOCOLS), "no recordings")
class RecordingTest(FakeCase):
    """Every recorded exchange, replayed against the fake."""

    def assertSameHead(self, got, rec, skip=("Content-Length",)):
        self.assertEqual(got.status, rec.status)
        self.assertEqual(got.names(), rec.names())
        for (k, v), (_, rv) in zip(got.headers, rec.headers):
            if k not in skip:
                self.assertEqual(v, rv, k)
        if got.header("Content-Length") is not None:
            self.assertEqual(int(got.header("Content-Length")),
                             len(got.body))

    def test_whisper_health_exact(self):
        got = exchange(self.w.port, "GET", "/health")
        self.assertEqual(got.wire(), load_recording(
            "whisper-health.http").wire())

    def test_llama_health_exact(self):
        got = exchange(self.l.port, "GET", "/health")
        self.assertEqual(got.wire(), load_recording(
            "llama-health.http").wire())

    def test_whisper_json_exact(self):
        got = whisper_post(self.w.port, wav_fields(30.0, "json"))
        self.assertEqual(got.wire(), load_recording(
            "whisper-inference-json.http").wire())
        # Default format is json too.
        got = whisper_post(self.w.port, wav_fields(30.0))
        self.assertEqual(got.wire(), load_recording(
            "whisper-inference-json.http").wire())

    def test_whisper_text_exact(self):
        got = whisper_post(self.w.port, wav_fields(30.0, "text"))
        self.assertEqual(got.wire(), load_recording(
            "whisper-inference-text.http").wire())

    def test_whisper_nofile_exact(self):
        got = whisper_post(self.w.port, [("response_format", "json")])
        self.assertEqual(got.wire(), load_recording(
            "whisper-inference-nofile.http").wire())
        got = exchange(self.w.port, "POST", "/inference", b"")
        self.assertEqual(got.wire(), load_recording(
            "whisper-inference-nofile.http").wire())

    def test_whisper_notaudio_exact(self):
        got = whisper_post(self.w.port, [("file", b"hello, not audio",
                                          "a.txt", "text/plain")])
        self.assertEqual(got.wire(), load_recording(
            "whisper-inference-notaudio.http").wire())

    def test_whisper_verbose_json_shape(self):
        rec = load_recording("whisper-inference-verbose_json.http")
        got = whisper_post(self.w.port, wav_fields(30.0, "verbose_json"))
        self.assertSameHead(got, rec)
        g, r = got.json(), rec.json()
        self.assertEqual(list(g), list(r))
        self.assertEqual(shape(g), shape(r))
        self.assertEqual(shape(g["segments"][-1]), shape(r["segments"][0]))
        self.assertEqual(g["duration"], 30.0)
        self.assertEqual(g["task"], "transcribe")
        self.assertEqual(g["language"], "english")
        self.assertEqual(len(g["segments"]), 6)
        self.assertEqual(g["text"], "".join(s["text"] + "\n"
                                            for s in g["segments"]))
        # The first segment is the recorded one, times and all.
        self.assertEqual(g["segments"][0]["text"], r["segments"][0]["text"])
        self.assertEqual(g["segments"][0]["tokens"],
                         r["segments"][0]["tokens"])
        self.assertEqual(g["segments"][1]["text"], r["segments"][1]["text"])

    def test_llama_models(self):
        rec = load_recording("llama-models.http")
        got = exchange(self.l.port, "GET", "/v1/models")
        self.assertSameHead(got, rec, skip=())
        g, r = got.json(), rec.json()
        self.assertIsInstance(g["data"][0]["created"], int)
        g["data"][0]["created"] = r["data"][0]["created"]
        self.assertEqual(F.dumps(g).encode(), rec.body)

    def test_llama_chat_shape(self):
        rec = load_recording("llama-chat.http")
        got = post_json(self.l.port, "/v1/chat/completions", {
            "model": "tiny-random-llama", "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say something."}]})
        self.assertSameHead(got, rec)
        g, r = got.json(), rec.json()
        self.assertEqual(shape(g), shape(r))
        self.assertEqual(g["choices"][0]["finish_reason"], "length")
        self.assertEqual(g["choices"][0]["message"]["content"],
                         F.fake_text(16))
        self.assertEqual(g["usage"]["completion_tokens"], 16)
        self.assertEqual(g["timings"]["predicted_n"], 16)
        self.assertEqual(g["usage"]["total_tokens"],
                         16 + g["usage"]["prompt_tokens"])
        self.assertEqual(g["timings"]["prompt_n"],
                         g["usage"]["prompt_tokens"])
        self.assertRegex(g["id"], r"^chatcmpl-[A-Za-z0-9]{32}$")

    def test_llama_chat_stream_structure(self):
        rec = load_recording("llama-chat-stream.http")
        s = socket.create_connection(("127.0.0.1", self.l.port),
                                     timeout=IO_TIMEOUT)
        try:
            s.sendall(request_bytes("POST", "/v1/chat/completions",
                                    json.dumps({
                                        "model": "tiny-random-llama",
                                        "max_tokens": 6, "stream": True,
                                        "messages": [{"role": "user",
                                                      "content": "Hi"}]})))
            got = read_response(s)
        finally:
            s.close()
        self.assertSameHead(got, rec)
        gev, rev = sse_events(got.body), sse_events(rec.body)
        self.assertEqual(len(gev), len(rev))
        self.assertEqual(gev[-1], "[DONE]")
        # One HTTP chunk per event, as llama-server flushes them.
        self.assertEqual(len(got.chunks), len(gev))
        self.assertTrue(all(c.endswith(b"\n\n") for c in got.chunks))
        g = [json.loads(e) for e in gev[:-1]]
        r = [json.loads(e) for e in rev[:-1]]
        for a, b in zip(g, r):
            self.assertEqual(shape(a), shape(b))
        self.assertEqual(len(g[-1]), len(r[-1]))
        self.assertEqual(list(g[-1]), list(r[-1]))
        self.assertEqual(g[-1]["choices"][0]["finish_reason"], "length")
        self.assertEqual(g[-1]["usage"]["completion_tokens"], 6)
        self.assertEqual(g[-1]["timings"]["predicted_n"], 6)
        self.assertEqual(len({e["id"] for e in g}), 1)
        self.assertNotIn("role", g[0]["choices"][0]["delta"])
        self.assertEqual([e["choices"][0]["delta"]["content"]
                          for e in g[:-1]],
                         [e["choices"][0]["delta"]["content"]
                          for e in r[:-1]])

    def test_llama_badjson_exact(self):
        # 40 bytes that end where a value should start: the recording's
        # "line 1, column 41 ... unexpected end of input".
        body = '{"model":"tiny-random-llama","messages":'
        self.assertEqual(len(body), 40)
        got = exchange(self.l.port, "POST", "/v1/chat/completions", body)
        self.assertEqual(got.wire(), load_recording(
            "llama-chat-badjson.http").wire())
        # Other bad JSON has the same shape.
        got = exchange(self.l.port, "POST", "/v1/chat/completions", "{x")
        self.assertEqual(got.code(), 500)
        self.assertEqual(shape(got.json()), shape(load_recording(
            "llama-chat-badjson.http").json()))
        self.assertEqual(got.json()["error"]["type"], "server_error")

    def test_llama_nomessages_exact(self):
        got = post_json(self.l.port, "/v1/chat/completions",
                        {"model": "tiny-random-llama"})
        self.assertEqual(got.wire(), load_recording(
            "llama-chat-nomessages.http").wire())

    def test_recordings_copy_is_current(self):
        if not os.path.isdir(SHARED):
            self.skipTest("no ../shared/protocols")
        for name in sorted(os.listdir(SHARED)):
            with open(os.path.join(SHARED, name), "rb") as a, \
                    open(os.path.join(COPY, name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)


# ---------------------------------------------------------------------------

class WhisperTest(FakeCase):

    def test_segments_follow_the_clip(self):
        got = whisper_post(self.w.port, wav_fields(12.0, "verbose_json"))
        g = got.json()
        self.assertEqual(g["duration"], 12.0)
        segs = g["segments"]
        self.assertEqual([(s["id"], s["start"], s["end"]) for s in segs],
                         [(0, 0.0, 5.0), (1, 5.0, 10.0), (2, 10.0, 12.0)])
        for s in segs:
            self.assertGreaterEqual(s["words"][0]["start"], s["start"])
            self.assertLessEqual(s["words"][-1]["end"], s["end"])

    def test_duration_from_header(self):
        # 2.5 s of 8-bit stereo at 44.1 kHz, with a LIST chunk before data.
        wav = F.make_wav(2.5, rate=44100, channels=2, bits=8,
                         extra_chunks=[(b"LIST", b"INFOabc")])
        self.assertEqual(F.parse_wav(wav)["duration"], 2.5)
        got = whisper_post(self.w.port, [("file", wav, "x.wav"),
                                         ("response_format", "verbose_json")])
        g = got.json()
        self.assertEqual(g["duration"], 2.5)
        self.assertEqual(len(g["segments"]), 1)
        self.assertEqual(g["segments"][0]["end"], 2.5)
        e = self.w.requests("/inference")[-1]
        self.assertEqual(e["audio"]["channels"], 2)
        self.assertEqual(e["audio"]["rate"], 44100)
        self.assertEqual({f["name"]: f["size"] for f in e["fields"]},
                         {"file": len(wav), "response_format": 12})
        self.assertEqual(e["form"], {"response_format": "verbose_json"})

    def test_json_lines_per_window(self):
        g = whisper_post(self.w.port, wav_fields(61.0, "json")).json()
        self.assertEqual(g["text"], (F.WHISPER_SENTENCE + "\n") * 3)

    def test_language_and_temperature(self):
        g = whisper_post(self.w.port, wav_fields(1.0, "verbose_json") + [
            ("language", "de"), ("temperature", "0.2"),
            ("prompt", "Hallo")]).json()
        self.assertEqual(g["language"], "german")
        self.assertEqual(g["language_probabilities"], {"de": 1.0})
        # whisper keeps it in a C float.
        self.assertEqual(g["segments"][0]["temperature"],
                         0.20000000298023224)
        form = self.w.requests("/inference")[-1]["form"]
        self.assertEqual(form["prompt"], "Hallo")

    def test_srt_vtt(self):
        got = whisper_post(self.w.port, wav_fields(7.0, "srt"))
        self.assertEqual(got.header("Content-Type"), "application/x-subrip")
        self.assertTrue(got.body.startswith(
            b"1\n00:00:00,000 --> 00:00:05,000\n This"))
        self.assertIn(b"2\n00:00:05,000 --> 00:00:07,000\n in", got.body)
        got = whisper_post(self.w.port, wav_fields(7.0, "vtt"))
        self.assertEqual(got.header("Content-Type"), "text/vtt")
        self.assertTrue(got.body.startswith(
            b"WEBVTT\n\n00:00:00.000 --> 00:00:05.000\n"))

    def test_truncated_wav_and_bad_multipart(self):
        wav = F.make_wav(1.0)
        # A streamed WAV whose data chunk claims more than is there.
        got = whisper_post(self.w.port, [("file", wav[:-16000], "x.wav"),
                                         ("response_format",
                                          "verbose_json")])
        self.assertEqual(got.json()["duration"], 0.5)
        got = exchange(self.w.port, "POST", "/inference",
                       b"--b\r\nContent-Disposition: form-data; name=\"file\""
                       b"\r\n\r\nRIFF",
                       (("Content-Type", "multipart/form-data; boundary=b"),))
        self.assertEqual(got.code(), 400)
        self.assertEqual(got.body, b"Invalid request")

    def test_multipart_parser(self):
        body = (b"preamble\r\n--\"q b\"\r\n"
                b"Content-Disposition: form-data; name=\"a\\\"b\"; "
                b"filename=\"f.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
                b"xy\r\nz\r\n--q b\r\n"
                b"content-disposition: form-data; name=language\r\n\r\n"
                b"en\r\n--q b--\r\n")
        # A quoted boundary may hold a space.
        parts = F.parse_multipart(body.replace(b"--\"q b\"", b"--q b"),
                                  'multipart/form-data; boundary="q b"')
        self.assertEqual([(p["name"], p["filename"], p["data"])
                          for p in parts],
                         [('a"b', "f.wav", b"xy\r\nz"),
                          ("language", None, b"en")])
        with self.assertRaises(F.MultipartError):
            F.parse_multipart(b"--x\r\n\r\nno end", "multipart/form-data; "
                              "boundary=x")
        with self.assertRaises(F.MultipartError):
            F.parse_multipart(b"", "application/json")

    def test_load_is_404_and_logged(self):
        got = exchange(self.w.port, "POST", "/load", b"x")
        self.assertEqual(got.code(), 404)
        self.assertEqual(got.body, b"File Not Found")
        self.assertEqual(got.header("Server"), "whisper.cpp")
        self.assertEqual(len(self.w.requests("/load")), 1)
        self.assertEqual(self.l.requests("/load"), [])
        got = exchange(self.l.port, "POST", "/load", b"x")
        self.assertEqual(got.json()["error"]["type"], "not_found_error")

    def test_processing_time_scales_with_audio(self):
        self.w.script(per_audio_second_s=0.1, delay_s=0.05)
        t0 = time.monotonic()
        whisper_post(self.w.port, wav_fields(3.0))
        self.assertGreaterEqual(time.monotonic() - t0, 0.34)
        e = self.w.requests("/inference")[-1]
        self.assertGreaterEqual(e["t_end"] - e["t_start"], 0.34)
        self.assertTrue(e["completed"])

    def test_serial_like_the_real_server(self):
        self.w.script(per_audio_second_s=0.3)

        def run_two():
            ts = [threading.Thread(target=whisper_post,
                                   args=(self.w.port, wav_fields(1.0)))
                  for _ in range(2)]
            t0 = time.monotonic()
            for t in ts:
                t.start()
            for t in ts:
                t.join(IO_TIMEOUT)
            return time.monotonic() - t0

        self.assertGreaterEqual(run_two(), 0.59)
        self.assertEqual(self.w.busy()["max_busy"], 2)
        self.w.script(whisper_serial=False)
        self.assertLess(run_two(), 0.55)


# ---------------------------------------------------------------------------

class LlamaTest(FakeCase):

    def chat(self, port=None, **kw):
        req = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        req.update(kw)
        return post_json(port or self.l.port, "/v1/chat/completions", req)

    def test_script_length_caps_reply(self):
        self.l.script(tokens=4)
        g = self.chat(max_tokens=10).json()
        self.assertEqual(g["choices"][0]["finish_reason"], "stop")
        self.assertEqual(g["usage"]["completion_tokens"], 4)
        self.assertEqual(g["choices"][0]["message"]["content"],
                         F.fake_text(4))
        self.assertEqual(g["model"], "m")
        g = self.chat(max_tokens=2, stream=True)
        ev = [json.loads(e) for e in sse_events(g.body)[:-1]]
        self.assertEqual(len(ev), 3)
        self.assertEqual(ev[-1]["choices"][0]["finish_reason"], "length")
        g = self.chat(stream=True)
        ev = [json.loads(e) for e in sse_events(g.body)[:-1]]
        self.assertEqual(ev[-1]["usage"]["completion_tokens"], 4)
        self.assertEqual(ev[-1]["choices"][0]["finish_reason"], "stop")

    def test_prompt_tokens_scripted(self):
        self.l.script(prompt_tokens=61, tokens=0)
        g = self.chat().json()
        self.assertEqual(g["usage"], {"completion_tokens": 0,
                                      "prompt_tokens": 61,
                                      "total_tokens": 61})
        self.assertIsNone(g["timings"]["predicted_per_second"])

    def test_token_delay(self):
        self.l.script(tokens=6, token_delay_s=0.05, delay_s=0.1)
        arrivals = []
        s = socket.create_connection(("127.0.0.1", self.l.port),
                                     timeout=IO_TIMEOUT)
        try:
            t0 = time.monotonic()
            s.sendall(request_bytes("POST", "/v1/chat/completions",
                                    json.dumps({"messages": [],
                                                "stream": True})))
            got = read_response(s, lambda c: arrivals.append(
                time.monotonic() - t0))
        finally:
            s.close()
        self.assertEqual(got.code(), 200)
        self.assertEqual(len(arrivals), 8)
        self.assertGreaterEqual(arrivals[0], 0.14)
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:6])]
        for g in gaps:
            self.assertGreater(g, 0.03)
            self.assertLess(g, 0.5)
        t = json.loads(sse_events(got.body)[-2])["timings"]
        self.assertGreaterEqual(t["predicted_ms"], 290)
        self.assertGreaterEqual(t["prompt_ms"], 95)

    def test_loading(self):
        self.l.script(loading=True)
        for method, path in (("GET", "/health"), ("GET", "/v1/models"),
                             ("POST", "/v1/chat/completions")):
            got = exchange(self.l.port, method, path, b"{}")
            self.assertEqual(got.status, "HTTP/1.1 503 Service Unavailable")
            self.assertEqual(got.body, b'{"error":{"code":503,"message":'
                             b'"Loading model","type":"unavailable_error"}}')
        self.l.script(loading=False, loading_s=0.3)
        self.assertEqual(exchange(self.l.port, "GET", "/health").code(), 503)
        self.assertTrue(wait_until(lambda: exchange(
            self.l.port, "GET", "/health").code() == 200))

    def test_origin_echo_keepalive_and_close(self):
        got = exchange(self.l.port, "GET", "/health",
                       headers=(("Origin", "http://a.example"),))
        self.assertEqual(got.header("Access-Control-Allow-Origin"),
                         "http://a.example")
        got = exchange(self.l.port, "GET", "/health",
                       headers=(("Connection", "close"),))
        self.assertEqual(got.names()[0], "Connection")
        self.assertEqual(got.header("Connection"), "close")
        self.assertIsNone(got.header("Keep-Alive"))
        c = http.client.HTTPConnection("127.0.0.1", self.l.port,
                                       timeout=IO_TIMEOUT)
        for _ in range(3):
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        c.close()
        ports = {e["headers"].get("Host") for e in self.l.requests("/health")}
        self.assertTrue(ports)

    def test_slots(self):
        self.l.script(delay_s=0.15, slots=1)
        ts = [threading.Thread(target=self.chat) for _ in range(3)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        self.assertTrue(wait_until(lambda: self.l.busy()["busy"] == 3))
        for t in ts:
            t.join(IO_TIMEOUT)
        self.assertGreaterEqual(time.monotonic() - t0, 0.44)
        self.assertEqual(self.l.busy(), {"busy": 0, "max_busy": 3,
                                         "refused": 0})

    def test_busy_counts_work_only(self):
        self.l.script(delay_s=0.3)
        ts = [threading.Thread(target=self.chat) for _ in range(4)]
        for t in ts:
            t.start()
        self.assertTrue(wait_until(lambda: self.l.busy()["busy"] == 4))
        exchange(self.l.port, "GET", "/health")
        got = exchange(self.l.port, "GET", "/_fake/busy").json()
        self.assertEqual(got["busy"], 4)
        for t in ts:
            t.join(IO_TIMEOUT)
        self.assertEqual(self.l.busy()["busy"], 0)
        self.assertEqual(self.l.busy()["max_busy"], 4)

    def test_stream_disconnect_is_noticed(self):
        self.l.script(tokens=50, token_delay_s=0.05)
        s = socket.create_connection(("127.0.0.1", self.l.port),
                                     timeout=IO_TIMEOUT)
        s.sendall(request_bytes("POST", "/v1/chat/completions",
                                json.dumps({"messages": [],
                                            "stream": True})))
        r = _Reader(s)
        r.until(b"\r\n\r\n")
        r.until(b"\n\n")
        s.close()
        e = finished(self.l)
        self.assertTrue(e["client_disconnected"])
        self.assertFalse(e["completed"])
        self.assertLess(e["events_sent"], 20)
        self.assertEqual(self.l.busy()["busy"], 0)


# ---------------------------------------------------------------------------

class OllamaTest(FakeCase):

    def test_stream_ndjson(self):
        self.o.script(tokens=5)
        got = post_json(self.o.port, "/api/chat", {
            "model": "llama3.2", "messages": [{"role": "user",
                                               "content": "hi"}]})
        self.assertEqual(got.names(), ["Content-Type", "Date",
                                       "Transfer-Encoding"])
        self.assertEqual(got.header("Content-Type"), "application/x-ndjson")
        lines = got.body.decode().split("\n")
        self.assertEqual(lines[-1], "")
        objs = [json.loads(x) for x in lines[:-1]]
        self.assertEqual(len(objs), 6)
        self.assertEqual(len(got.chunks), 6)
        self.assertEqual("".join(o["message"]["content"] for o in objs),
                         F.fake_text(5))
        self.assertEqual(list(objs[0]), ["model", "created_at", "message",
                                         "done"])
        last = objs[-1]
        self.assertEqual(list(last), [
            "model", "created_at", "message", "done_reason", "done",
            "total_duration", "load_duration", "prompt_eval_count",
            "prompt_eval_duration", "eval_count", "eval_duration"])
        self.assertTrue(last["done"])
        self.assertEqual(last["done_reason"], "stop")
        self.assertEqual(last["eval_count"], 5)
        self.assertEqual(last["model"], "llama3.2")

    def test_non_stream_and_num_predict(self):
        self.o.script(tokens=5, token_delay_s=0.02)
        got = post_json(self.o.port, "/api/chat", {
            "model": "m", "stream": False, "options": {"num_predict": 3},
            "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(got.header("Content-Type"),
                         "application/json; charset=utf-8")
        g = got.json()
        self.assertEqual(g["message"], {"role": "assistant",
                                        "content": F.fake_text(3)})
        self.assertEqual(g["done_reason"], "length")
        self.assertEqual(g["eval_count"], 3)
        self.assertGreaterEqual(g["eval_duration"], 55e6)
        self.assertGreaterEqual(g["total_duration"], g["eval_duration"])

    def test_errors_tags_ps(self):
        got = post_json(self.o.port, "/api/chat", {"messages": []})
        self.assertEqual((got.code(), got.json()),
                         (400, {"error": "model is required"}))
        got = exchange(self.o.port, "POST", "/api/chat", b"{")
        self.assertEqual(got.code(), 400)
        tags = exchange(self.o.port, "GET", "/api/tags").json()
        self.assertEqual(tags["models"][0]["name"], "tiny-random-llama:latest")
        self.assertEqual(exchange(self.o.port, "GET", "/api/ps").json(),
                         {"models": []})
        post_json(self.o.port, "/api/chat", {"model": "m", "messages": []})
        ps = exchange(self.o.port, "GET", "/api/ps").json()
        self.assertEqual([m["name"] for m in ps["models"]], ["m:latest"])
        self.assertEqual(exchange(self.o.port, "GET", "/").body,
                         b"Ollama is running")
        self.assertEqual(exchange(self.o.port, "GET", "/health").code(), 404)


# ---------------------------------------------------------------------------

class FaultTest(FakeCase):

    def chat(self, **kw):
        req = {"messages": [{"role": "user", "content": "x"}]}
        req.update(kw)
        return post_json(self.l.port, "/v1/chat/completions", req)

    def test_500_count(self):
        self.l.script(faults=[{"path": "/v1/chat/completions",
                               "kind": "500", "count": 2}])
        self.assertEqual(exchange(self.l.port, "GET", "/health").code(), 200)
        for _ in range(2):
            got = self.chat()
            self.assertEqual(got.status,
                             "HTTP/1.1 500 Internal Server Error")
            self.assertEqual(got.json()["error"]["type"], "server_error")
            self.assertEqual(got.header("Server"), "llama.cpp")
        self.assertEqual(self.chat().code(), 200)
        log = self.l.requests("/v1/chat/completions")
        self.assertEqual([e["fault"] for e in log], ["500", "500", None])
        self.w.script(faults=[{"path": "/inference", "kind": "500"}])
        got = whisper_post(self.w.port, wav_fields(1.0))
        self.assertEqual((got.code(), got.body),
                         (500, b'{"error":"failed to process audio"}'))

    def test_forever_and_method(self):
        self.l.script(faults=[{"kind": "503", "count": -1,
                               "method": "POST"}])
        for _ in range(3):
            self.assertEqual(self.chat().code(), 503)
        self.assertEqual(exchange(self.l.port, "GET", "/health").code(), 200)
        self.assertEqual(self.l.get_script()["faults"][0]["count"], -1)

    def test_reset(self):
        self.w.script(faults=[{"path": "/inference", "kind": "reset"}])
        with self.assertRaises(ConnectionResetError):
            whisper_post(self.w.port, wav_fields(1.0))
        e = self.w.requests("/inference")[0]
        self.assertFalse(e["completed"])
        self.assertEqual(e["fault"], "reset")
        self.assertEqual(whisper_post(self.w.port, wav_fields(1.0)).code(),
                         200)

    def test_reset_mid_stream(self):
        self.l.script(faults=[{"kind": "reset_mid_stream", "after": 3}])
        seen = []
        s = socket.create_connection(("127.0.0.1", self.l.port),
                                     timeout=IO_TIMEOUT)
        try:
            s.sendall(request_bytes("POST", "/v1/chat/completions",
                                    json.dumps({"messages": [],
                                                "stream": True})))
            with self.assertRaises((ConnectionResetError, EOFError)):
                read_response(s, seen.append)
        finally:
            s.close()
        self.assertLessEqual(len(seen), 3)
        self.l.script(faults=[{"kind": "reset_mid_stream"}])
        with self.assertRaises((ConnectionResetError, EOFError)):
            self.chat()

    def test_malformed_json(self):
        self.l.script(faults=[{"kind": "malformed_json", "count": 2}])
        got = self.chat()
        self.assertEqual(got.code(), 200)
        self.assertEqual(int(got.header("Content-Length")), len(got.body))
        with self.assertRaises(ValueError):
            got.json()
        got = self.chat(stream=True)
        ev = sse_events(got.body)
        json.loads(ev[0])
        with self.assertRaises(ValueError):
            json.loads(ev[1])
        json.loads(ev[2])

    def test_hang_and_disconnect(self):
        self.l.script(faults=[{"kind": "hang"}])
        c = http.client.HTTPConnection("127.0.0.1", self.l.port, timeout=0.3)
        c.request("POST", "/v1/chat/completions", "{}")
        with self.assertRaises(socket.timeout):
            c.getresponse()
        c.close()
        e = finished(self.l)
        self.assertTrue(e["client_disconnected"])
        self.assertFalse(e["completed"])
        self.assertIsNone(e["status"])

    def test_slow_and_trickle(self):
        self.l.script(faults=[{"kind": "slow", "delay_s": 0.3}])
        t0 = time.monotonic()
        self.assertEqual(self.chat().code(), 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.l.script(faults=[{"kind": "trickle", "delay_s": 0.01,
                               "chunk_bytes": 200}])
        t0 = time.monotonic()
        got = self.chat()
        self.assertEqual(got.code(), 200)
        got.json()
        self.assertGreaterEqual(time.monotonic() - t0,
                                0.01 * (len(got.body) // 200))

    def test_close(self):
        self.l.script(faults=[{"kind": "close"}])
        with self.assertRaises(EOFError):
            self.chat()
        self.assertEqual(self.chat().code(), 200)

    def test_refuse_next(self):
        self.l.script(faults=[{"kind": "refuse_next", "count": 1}])
        with self.assertRaises((ConnectionResetError, EOFError,
                                BrokenPipeError)):
            exchange(self.l.port, "GET", "/health")
        self.assertEqual(exchange(self.l.port, "GET", "/health").code(), 200)
        self.assertEqual(self.l.busy()["refused"], 1)

    def test_down(self):
        got = post_json(self.l.port, "/_fake/down", {"seconds": 0.4})
        self.assertEqual(got.json(), {"down_s": 0.4})
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.l.port), timeout=1)
        self.assertTrue(wait_until(lambda: self._health_ok(self.l.port)))

    def _health_ok(self, port):
        try:
            return exchange(port, "GET", "/health").code() == 200
        except OSError:
            return False

    def test_whisper_disconnect_aborts_work(self):
        self.w.script(per_audio_second_s=1.0)
        ctype, body = F.encode_multipart(wav_fields(5.0))
        s = socket.create_connection(("127.0.0.1", self.w.port),
                                     timeout=IO_TIMEOUT)
        s.sendall(request_bytes("POST", "/inference", body,
                                (("Content-Type", ctype),)))
        time.sleep(0.2)
        s.close()
        e = finished(self.w, "/inference")
        self.assertTrue(e["client_disconnected"])
        self.assertFalse(e["completed"])
        self.assertLess(e["t_end"] - e["t_start"], 2.0)
        self.assertEqual(self.w.busy()["busy"], 0)


# ---------------------------------------------------------------------------

class ControlTest(FakeCase):

    def test_script_over_http(self):
        port = self.l.port
        got = post_json(port, "/_fake/script", {"tokens": 3, "faults": [
            {"path": "/health", "kind": "500"}]})
        self.assertEqual(got.code(), 200)
        self.assertEqual(got.json()["tokens"], 3)
        self.assertEqual(got.json()["faults"][0]["count"], 1)
        self.assertEqual(exchange(port, "GET", "/_fake/script")
                         .json()["tokens"], 3)
        self.assertEqual(exchange(port, "GET", "/health").code(), 500)
        for bad in ({"tokenz": 1}, {"faults": [{"kind": "boom"}]},
                    {"tokens": -1}, {"faults": [{"kind": "500", "x": 1}]}):
            got = post_json(port, "/_fake/script", bad)
            self.assertEqual(got.code(), 400, bad)
            self.assertIn("error", got.json())
        self.assertEqual(exchange(port, "GET", "/_fake/nope").code(), 404)

    def test_requests_and_reset(self):
        port = self.l.port
        post_json(port, "/v1/chat/completions", {"messages": [],
                                                 "max_tokens": 1},
                  headers=(("X-Test", "1"),))
        exchange(port, "GET", "/health")
        log = exchange(port, "GET", "/_fake/requests").json()
        self.assertEqual([e["path"] for e in log],
                         ["/v1/chat/completions", "/health"])
        e = log[0]
        self.assertEqual(e["body_json"], {"messages": [], "max_tokens": 1})
        self.assertEqual(e["headers"]["X-Test"], "1")
        self.assertEqual(e["method"], "POST")
        self.assertTrue(e["completed"])
        self.assertFalse(e["client_disconnected"])
        self.assertEqual(e["status"], 200)
        self.assertLessEqual(e["t_start"], e["t_end"])
        self.assertEqual(e["tokens"], 1)
        only = exchange(port, "GET", "/_fake/requests?path=/health").json()
        self.assertEqual(len(only), 1)
        post_json(port, "/_fake/script", {"tokens": 2})
        got = exchange(port, "POST", "/_fake/reset").json()
        self.assertEqual(got["tokens"], 16)
        self.assertEqual(exchange(port, "GET", "/_fake/requests").json(), [])
        self.assertEqual(exchange(port, "GET", "/_fake/busy").json(),
                         {"busy": 0, "max_busy": 0, "refused": 0})

    def test_expect_continue_and_chunked_upload(self):
        ctype, body = F.encode_multipart(wav_fields(1.0))
        s = socket.create_connection(("127.0.0.1", self.w.port),
                                     timeout=IO_TIMEOUT)
        try:
            head = request_bytes("POST", "/inference", b"x", (
                ("Content-Type", ctype), ("Expect", "100-continue")))
            head = head[:-1].replace(b"Content-Length: 1",
                                     b"Content-Length: %d" % len(body))
            s.sendall(head)
            r = _Reader(s)
            self.assertEqual(r.until(b"\r\n\r\n"), b"HTTP/1.1 100 Continue")
            s.sendall(body)
            status, _ = parse_head(r.until(b"\r\n\r\n"))
            self.assertEqual(status, "HTTP/1.1 200 OK")
        finally:
            s.close()
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 5000]),
                                              body[i:i + 5000])
                           for i in range(0, len(body), 5000)) + b"0\r\n\r\n"
        s = socket.create_connection(("127.0.0.1", self.w.port),
                                     timeout=IO_TIMEOUT)
        try:
            s.sendall(b"POST /inference HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: " + ctype.encode() +
                      b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
            self.assertEqual(read_response(s).code(), 200)
        finally:
            s.close()

    def test_process_mode(self):
        with tempfile.TemporaryDirectory() as d:
            pf = os.path.join(d, "port")
            p = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "fake_infer.py"),
                 "--port", "0", "--port-file", pf, "--flavor", "whisper"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                self.assertTrue(wait_until(lambda: os.path.exists(pf), 10))
                with open(pf) as f:
                    addr = f.read().strip()
                host, port = addr.rsplit(":", 1)
                self.assertEqual(host, "127.0.0.1")
                got = exchange(int(port), "GET", "/health")
                self.assertEqual(got.header("Server"), "whisper.cpp")
                post_json(int(port), "/_fake/script", {"delay_s": 0.1})
                p.send_signal(signal.SIGTERM)
                self.assertEqual(p.wait(5), 0)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                p.stdout.close()
                p.stderr.close()


if __name__ == "__main__":
    unittest.main()
