#!/usr/bin/env python3
"""mkseeds.py - writes the seed corpora of gpuq's fuzz targets.

    python3 tests/fuzz/mkseeds.py      (from anywhere; writes in tests/fuzz)

The seeds are committed; this script says how they were made and makes
them again after a change of the API or of a format.  It rewrites
tests/fuzz/{http,config,audio,parse}/ and tests/fuzz/files/ and never
touches tests/fuzz/regress/ (crash reproducers are kept by hand).  Its
output is the same on every run.  FLAC, OGG and MP3 seeds are encoded
by libsndfile through ctypes when libsndfile.so.1 is there (it is,
wherever gpuq builds); the others need only the standard library.
"""
import base64
import ctypes
import ctypes.util
import glob
import json
import math
import os
import re
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# A file under the transcribe class's audio root (fuzz_http.c).
AUDIO_PATH = "/proc/self/cwd/tests/fuzz/files/a.wav"


def reset(name):
    d = os.path.join(HERE, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def put(d, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- audio --------------------------------------------------------------

def tone(n, rate, ch=1, freq=440.0, silence=0.25):
    """n frames of a sine with a quiet stretch in the middle, as floats."""
    out = []
    q0, q1 = int(n * (0.5 - silence / 2)), int(n * (0.5 + silence / 2))
    for i in range(n):
        v = 0.0 if q0 <= i < q1 else 0.6 * math.sin(2 * math.pi * freq * i
                                                    / rate)
        out.append([v * (1 - 0.3 * c) for c in range(ch)])
    return out


def wav(frames, rate, ch, bits, fmt=1, extensible=False, lie=None):
    """A RIFF WAVE file: fmt 1 PCM (8 unsigned, 16/24/32 signed), 3 float
    (32/64), 6 A-law, 7 mu-law (8 bit).  lie replaces header fields."""
    lie = lie or {}
    data = bytearray()
    for fr in frames:
        for v in fr:
            if fmt == 3:
                data += struct.pack("<f" if bits == 32 else "<d", v)
            elif fmt in (6, 7):
                data.append(int((v + 1) * 127.5) & 0xFF)
            elif bits == 8:
                data.append(int((v + 1) * 127.5) & 0xFF)
            else:
                m = (1 << (bits - 1)) - 1
                data += int(v * m).to_bytes(bits // 8, "little", signed=True)
    block = ch * bits // 8
    if extensible:
        guid = struct.pack("<H", fmt) + \
            b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmtc = struct.pack("<HHIIHHHHI", 0xFFFE, ch, rate, rate * block,
                           block, bits, 22, bits, (1 << ch) - 1) + guid
    else:
        fmtc = struct.pack("<HHIIHH", lie.get("fmt", fmt),
                           lie.get("channels", ch), lie.get("rate", rate),
                           lie.get("byte_rate", rate * block),
                           lie.get("block", block), lie.get("bits", bits))
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmtc)) + fmtc
    if fmt in (3, 6, 7) and not extensible:
        body += b"fact" + struct.pack("<II", 4, len(frames))
    body += b"data" + struct.pack("<I", lie.get("data_size", len(data))) + \
        bytes(data)
    return b"RIFF" + struct.pack("<I", lie.get("riff_size", len(body))) + body


def sndfile_encode(frames, rate, ch, major, sub):
    """Audio in another container, encoded by libsndfile; None if it is
    not there or cannot write that format."""
    name = ctypes.util.find_library("sndfile")
    if name is None:
        return None
    lib = ctypes.CDLL(name)

    class Info(ctypes.Structure):
        _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int),
                    ("channels", ctypes.c_int), ("format", ctypes.c_int),
                    ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]
    lib.sf_open.restype = ctypes.c_void_p
    lib.sf_open.argtypes = [ctypes.c_char_p, ctypes.c_int,
                            ctypes.POINTER(Info)]
    lib.sf_writef_float.argtypes = [ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_float),
                                    ctypes.c_int64]
    lib.sf_close.argtypes = [ctypes.c_void_p]
    info = Info(0, rate, ch, major | sub, 0, 0)
    path = os.path.join(HERE, ".mkseeds.tmp")
    sf = lib.sf_open(path.encode(), 0x20, ctypes.byref(info))  # SFM_WRITE
    if not sf:
        return None
    flat = [v for fr in frames for v in fr]
    buf = (ctypes.c_float * len(flat))(*flat)
    lib.sf_writef_float(sf, buf, len(frames))
    lib.sf_close(sf)
    with open(path, "rb") as f:
        out = f.read()
    os.unlink(path)
    return out


def audio_seeds():
    d = reset("audio")
    s = tone(8000, 16000)
    put(d, "pcm16-mono-16k.wav", wav(s, 16000, 1, 16))
    put(d, "pcm16-stereo-44k.wav", wav(tone(2205, 44100, 2), 44100, 2, 16))
    put(d, "pcm8-mono-8k.wav", wav(tone(2000, 8000), 8000, 1, 8))
    put(d, "pcm24-mono-48k.wav", wav(tone(2400, 48000), 48000, 1, 24))
    put(d, "pcm32-stereo-22k.wav", wav(tone(1100, 22050, 2), 22050, 2, 32))
    put(d, "float32-mono-16k.wav", wav(tone(1600, 16000), 16000, 1, 32, 3))
    put(d, "float64-stereo-32k.wav", wav(tone(800, 32000, 2), 32000, 2, 64,
                                         3))
    put(d, "float32-loud.wav", wav([[1e30], [-1e30], [float("inf")],
                                    [float("nan")], [3.0]] * 200, 16000, 1,
                                   32, 3))
    put(d, "alaw-8k.wav", wav(tone(800, 8000), 8000, 1, 8, 6))
    put(d, "ulaw-8k.wav", wav(tone(800, 8000), 8000, 1, 8, 7))
    put(d, "extensible-6ch.wav", wav(tone(400, 48000, 6), 48000, 6, 16,
                                     extensible=True))
    put(d, "silence.wav", wav([[0.0]] * 4000, 16000, 1, 16))
    put(d, "empty-data.wav", wav([], 16000, 1, 16))
    full = wav(s, 16000, 1, 16)
    put(d, "truncated-header.wav", full[:30])
    put(d, "truncated-data.wav", full[:1000])
    put(d, "lie-data-size.wav", wav(tone(500, 16000), 16000, 1, 16,
                                    lie={"data_size": 0x7FFFFFF0}))
    put(d, "lie-riff-size.wav", wav(tone(500, 16000), 16000, 1, 16,
                                    lie={"riff_size": 4}))
    put(d, "lie-channels.wav", wav(tone(500, 16000), 16000, 1, 16,
                                   lie={"channels": 0}))
    put(d, "lie-many-channels.wav", wav(tone(500, 16000), 16000, 1, 16,
                                        lie={"channels": 1000}))
    put(d, "lie-rate-zero.wav", wav(tone(500, 16000), 16000, 1, 16,
                                    lie={"rate": 0, "byte_rate": 0}))
    put(d, "lie-rate-huge.wav", wav(tone(500, 16000), 16000, 1, 16,
                                    lie={"rate": 4000000000}))
    put(d, "lie-rate-tiny.wav", wav(tone(500, 16000), 16000, 1, 16,
                                    lie={"rate": 1, "byte_rate": 2}))
    put(d, "lie-bits.wav", wav(tone(500, 16000), 16000, 1, 16,
                               lie={"bits": 13}))
    put(d, "lie-block.wav", wav(tone(500, 16000), 16000, 1, 16,
                                lie={"block": 0}))
    put(d, "long-4k.wav", wav([[0.1]] * 18000, 4000, 1, 8))  # 4.5 s > 1 s
    put(d, "not-audio.txt", "this is not audio at all\n")
    for name, major, sub in (("flac", 0x170000, 0x0002),
                             ("ogg-vorbis", 0x200000, 0x0060),
                             ("ogg-opus", 0x200000, 0x0064),
                             ("mp3", 0x230000, 0x0082)):
        data = sndfile_encode(tone(4000, 16000), 16000, 1, major, sub)
        if data:
            put(d, name + "." + name.split("-")[0], data)
            put(d, name + "-truncated." + name.split("-")[0],
                data[:len(data) // 2])
    # gq_audio_path_check: paths below the harness's directory.
    for i, p in enumerate(["/rec/a.wav", "/rec/sub/b.wav", "/rec/link-in",
                           "/rec/../out.wav", "/rec/link-out", "/rec/loop",
                           "/rec/sub", "/rec/link-dir/b.wav",
                           "/rec/./sub/../a.wav", "/missing/x.wav",
                           "/rec/nope.wav", "//rec//a.wav",
                           "/../../../../etc/passwd"]):
        put(d, "path-%02d" % i, p)
    return s


# --- files the other seeds name -----------------------------------------

def files(samples):
    d = reset("files")
    put(d, "a.wav", wav(samples, 16000, 1, 16))
    put(d, "secret", "fuzz-token-secret-from-a-file-0123\n")
    put(d, "tokens", "# NAME ROLE SECRET [CLASSES]\n"
        "ops admin fuzz-token-admin-secret-000000\n"
        "w1 worker fuzz-token-worker-secret-00000 transcription,chatbot\n"
        "\n"
        "bad nobody short\n")


# --- HTTP ------------------------------------------------------------------

def req(method, path, body=None, headers=(), version="HTTP/1.1"):
    h = ["%s %s %s" % (method, path, version), "Host: 127.0.0.1"]
    if isinstance(body, (dict, list)):
        body = json.dumps(body, separators=(",", ":"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    h += list(headers)
    if body is not None:
        if not any(x.lower().startswith("content-type:") for x in headers):
            h.append("Content-Type: application/json")
        h.append("Content-Length: %d" % len(body))
    return ("\r\n".join(h) + "\r\n\r\n").encode("ascii") + (body or b"")


def multipart(fields, boundary="----gpuqfuzz0123456789"):
    out = b""
    for f in fields:
        name, value = f[0], f[1]
        if isinstance(value, str):
            value = value.encode("utf-8")
        disp = 'form-data; name="%s"' % name
        if len(f) > 2:
            disp += '; filename="%s"' % f[2]
        out += ("--%s\r\nContent-Disposition: %s\r\n" % (boundary, disp)
                ).encode("ascii")
        if len(f) > 2:
            out += b"Content-Type: audio/wav\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += ("--%s--\r\n" % boundary).encode("ascii")
    return "Content-Type: multipart/form-data; boundary=" + boundary, out


def http_seeds(samples):
    d = reset("http")
    a_wav = wav(samples[:4000], 16000, 1, 16)
    msgs = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello \u00e9t\u00e9"}]
    s = {}
    # Jobs, one per class and executor.
    s["jobs-submit-chatbot"] = req("POST", "/v1/jobs", {
        "class": "chatbot", "payload": {"prompt": "hi"},
        "metadata": {"user": "u1"}, "priority": 5,
        "idempotency_key": "k1", "queue_timeout": 30})
    s["jobs-submit-transcription"] = req("POST", "/v1/jobs", {
        "class": "transcription", "payload": {"audio_path": "/srv/a.wav"},
        "metadata": {"meeting_id": "m-7"}})
    s["jobs-submit-summarization"] = req("POST", "/v1/jobs", {
        "class": "summarization", "payload": {"text": "long text"},
        "depends_on": ["j1"], "callback_url": "http://127.0.0.1:9/cb",
        "priority": -3})
    s["jobs-submit-chat"] = req("POST", "/v1/jobs", {
        "class": "chat", "payload": {"messages": msgs, "max_tokens": 16,
                                     "model": "fuzz-model"}})
    s["jobs-submit-transcribe-path"] = req("POST", "/v1/jobs", {
        "class": "transcribe", "payload": {"audio_path": AUDIO_PATH,
                                           "language": "en",
                                           "prompt": "names"}})
    s["jobs-submit-transcribe-audio"] = req("POST", "/v1/jobs", {
        "class": "transcribe",
        "payload": {"audio": base64.b64encode(a_wav).decode("ascii")}})
    s["jobs-submit-summarize"] = req("POST", "/v1/jobs", {
        "class": "summarize", "payload": {"text": "a b c " * 20,
                                          "instructions": "one line",
                                          "max_words": 50}})
    s["jobs-submit-summarize-from"] = req("POST", "/v1/jobs", {
        "class": "summarize", "payload": {"from_job": "j2"},
        "callback_url": "https://127.0.0.1:9/x"})
    s["jobs-submit-bad"] = req("POST", "/v1/jobs", {
        "class": "transcribe", "payload": {"audio_path": "/etc/passwd",
                                           "upload": "x"},
        "extra": True})
    s["jobs-get"] = req("GET", "/v1/jobs/j1")
    s["jobs-get-wait"] = req("GET", "/v1/jobs/j2?wait=0.05")
    s["jobs-list"] = req("GET", "/v1/jobs?class=chatbot&state=queued"
                         "&limit=10&after=j1")
    s["jobs-cancel"] = req("POST", "/v1/jobs/j1/cancel")
    s["jobs-requeue"] = req("POST", "/v1/jobs/j1/requeue")
    s["jobs-stream"] = req("GET", "/v1/jobs/j4/stream")
    s["events"] = req("GET", "/v1/events?class=chatbot&job=j1")
    # Worker leases.
    s["leases-take"] = req("POST", "/v1/leases", {
        "classes": ["transcription", "summarization"], "wait": 0,
        "worker": "w1"})
    s["leases-heartbeat"] = req("POST", "/v1/leases/j2.2/heartbeat",
                                {"token": 2})
    s["leases-complete"] = req("POST", "/v1/leases/j2.2/complete", {
        "token": 2, "result": {"text": "done"}})
    s["leases-fail"] = req("POST", "/v1/leases/j2.2/fail", {
        "token": 2, "error": {"code": "oom", "message": "out of memory"},
        "retryable": False})
    s["leases-yield"] = req("POST", "/v1/leases/j2.2/yield", {
        "token": 2, "progress": {"offset": 10}})
    # GPU locks.
    s["locks-take"] = req("POST", "/v1/locks", {
        "class": "chatbot", "holder": "app", "wait": 0, "priority": 1,
        "metadata": {"pid": 1}})
    s["locks-heartbeat"] = req("POST", "/v1/locks/j3.3/heartbeat",
                               {"token": 3})
    s["locks-release"] = req("DELETE", "/v1/locks/j3.3?token=3")
    # Operations.
    s["status"] = req("GET", "/v1/status")
    s["healthz"] = req("GET", "/healthz")
    s["metrics"] = req("GET", "/metrics")
    s["admin-drain"] = req("POST", "/v1/admin/drain", {"deadline": 0})
    s["admin-fault"] = req("POST", "/v1/admin/fault",
                           {"kind": "full", "after": 0}) + \
        req("POST", "/v1/jobs", {"class": "chatbot"})
    s["admin-fault-io"] = req("POST", "/v1/admin/fault",
                              {"kind": "io", "after": 1}) + \
        req("POST", "/v1/jobs", {"class": "chatbot"}) + \
        req("POST", "/v1/jobs", {"class": "chatbot"})
    # Drop-ins.
    s["dropin-openai"] = req("POST", "/v1/chat/completions", {
        "model": "fuzz-model", "messages": msgs, "max_tokens": 8})
    s["dropin-openai-stream"] = req("POST", "/v1/chat/completions", {
        "model": "gemma3:12b", "messages": msgs, "stream": True},
        headers=["X-Gpuq-Class: chat"])
    s["dropin-ollama"] = req("POST", "/api/chat", {
        "model": "gemma3:12b", "messages": msgs, "stream": False,
        "options": {"temperature": 0.2, "top_p": 0.9, "seed": 7,
                    "num_predict": 32}})
    s["dropin-ollama-stream"] = req("POST", "/api/chat", {
        "model": "other", "messages": msgs})
    ct, body = multipart([("file", a_wav, "a.wav"),
                          ("response_format", "verbose_json"),
                          ("language", "en"), ("prompt", "names"),
                          ("temperature", "0.0")])
    s["dropin-inference"] = req("POST", "/inference", body, headers=[ct])
    ct, body = multipart([("model", "whisper-1"), ("file", a_wav, "a.wav"),
                          ("response_format", "text")])
    s["dropin-openai-transcriptions"] = req(
        "POST", "/v1/audio/transcriptions", body,
        headers=[ct, "X-Gpuq-Class: transcribe"])
    # The dashboard.
    s["ui-index"] = req("GET", "/")
    s["ui-js"] = req("GET", "/ui/app.js")
    s["ui-css-etag"] = req("HEAD", "/ui/app.css",
                           headers=['If-None-Match: "0000000000000000"'])
    # A worker's whole exchange, pipelined on one connection.
    s["seq-worker"] = (
        req("POST", "/v1/jobs", {"class": "summarization",
                                 "payload": {"n": 1}}) +
        req("POST", "/v1/leases", {"classes": ["summarization"]}) +
        req("POST", "/v1/leases/j1.1/heartbeat", {"token": 1}) +
        req("POST", "/v1/leases/j1.1/complete", {"token": 1,
                                                 "result": [1, 2]}) +
        req("GET", "/v1/jobs/j1"))
    s["seq-lock"] = (
        req("POST", "/v1/locks", {"class": "transcription", "wait": 0}) +
        req("GET", "/v1/status") +
        req("DELETE", "/v1/locks/j1.1?token=1"))
    # HTTP itself.
    s["http10"] = req("GET", "/healthz", version="HTTP/1.0")
    s["http-chunked"] = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"10\r\n{\"class\":\"chatb\r\n6\r\not\"}  \r\n0\r\n\r\n")
    s["http-expect"] = req("POST", "/v1/jobs", {"class": "chatbot"},
                           headers=["Expect: 100-continue"])
    s["http-405"] = req("PUT", "/v1/jobs/j1") + req("OPTIONS", "/v1/status")
    s["http-404"] = req("GET", "/nope/a/b/c/d/e/f/g") + req("GET", "/load")
    s["http-auth"] = req("GET", "/v1/status",
                         headers=["Authorization: Bearer abcdefghij"])
    s["http-bad-json"] = req("POST", "/v1/leases", '{"classes": [')
    s["http-bad-line"] = b"GET\r\n\r\n"
    # The fake backend's reply, after the separator (fuzz_http.c).
    sep = b"\n--gpuq-fuzz-backend--\n"
    rec = os.path.join(ROOT, "tests", "fake", "recordings")

    def recording(name):
        """A recorded reply as the server sent it: the recordings keep a
        chunked body decoded, so it goes back into one chunk."""
        with open(os.path.join(rec, name), "rb") as f:
            data = f.read()
        head, _, body = data.partition(b"\r\n\r\n")
        if b"Transfer-Encoding: chunked" in head:
            body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        return head + b"\r\n\r\n" + body
    s["backend-chat-500"] = s["dropin-openai"] + sep + \
        recording("llama-chat-badjson.http")
    def reply(ctype, body, chunks=None):
        """A backend's 200: close-delimited, or chunked when chunks is a
        list of pieces."""
        if chunks is None:
            return (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype +
                    b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype +
                b"\r\nTransfer-Encoding: chunked\r\n\r\n" +
                b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) +
                b"0\r\n\r\n")
    s["backend-chat-stream-error"] = s["dropin-openai-stream"] + sep + reply(
        b"text/event-stream", None,
        [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
         b'error: {"message":"slot busy"}\n'])
    s["backend-ollama-error"] = s["dropin-ollama-stream"] + sep + reply(
        b"application/x-ndjson", None,
        [b'{"message":{"content":"a"},"done":false}\n',
         b'{"error":"model unloaded"}\n'])
    s["backend-whisper-bad"] = s["dropin-inference"] + sep + reply(
        b"application/json", b'{"segments":[{"text":1,"start":0}]}')
    s["backend-whisper-400"] = s["dropin-openai-transcriptions"] + sep + \
        recording("whisper-inference-notaudio.http")
    s["backend-summarize"] = s["jobs-submit-summarize"] + sep + reply(
        b"application/json", b'{"message":{"role":"assistant","content":'
        b'"short"},"done":true,"eval_count":3}')
    s["backend-callback"] = req("POST", "/v1/jobs", {
        "class": "chat", "payload": {"messages": msgs},
        "callback_url": "http://127.0.0.1:9/hook"}) + sep + \
        recording("llama-chat-stream.http")
    for name, data in s.items():
        put(d, name + ".http", data)


# --- configuration ----------------------------------------------------

def config_seeds():
    d = reset("config")
    docs = []
    for path in ("doc/config.md", "doc/operations.md", "doc/executors.md",
                 "README.md"):
        try:
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                docs += re.findall(r"```ini\n(.*?)```", f.read(), re.S)
        except OSError:
            pass
    for i, text in enumerate(docs):
        put(d, "doc-%02d.ini" % i, text)
    ex = os.path.join(ROOT, "contrib", "gpuq.conf.example")
    if os.path.exists(ex):
        shutil.copy(ex, os.path.join(d, "contrib-example.ini"))
    put(d, "empty.ini", "")
    put(d, "tokens.ini", """; API tokens
[server]
listen = 0.0.0.0:7707
unix_socket = /tmp/gpuq-fuzz.sock
unix_socket_mode = 0660

[auth]
token_file = tests/fuzz/files/tokens

[token app]
secret = fuzz-token-app-secret-000000000
role = submit
classes = chatbot, transcription

[token filed]
secret_file = tests/fuzz/files/secret
role = worker
""")
    put(d, "executors.ini", """[server]
data_dir = /var/lib/gpuq
synchronous = normal
max_body = 1048576
request_timeout = 2.5
retention = 3600
allow_remote = no

[gpu]
slots = 2

[scheduler]
share_by = grants

[callbacks]
secret = 0123456789abcdef
attempts = 3

[backend whisper]
type = whisper-cpp
url = http://127.0.0.1:8080
timeout = 300
breaker_failures = 3
breaker_cooldown = 5
health_interval = 2

[backend llm]
type = openai
url = https://[::1]:8081
model = gemma3:12b
max_concurrency = 4
context_tokens = 8192

[backend ollama]
type = ollama
url = http://localhost:11434

[class chatbot]
priority = 10
executor = chat
backend = llm
max_hold = 0.5

[class transcription]
weight = 70
max_consecutive = 2
executor = transcribe
backend = whisper
audio_roots = /srv/audio:/tmp,/var/tmp

[class summarization]
weight = 30
executor = summarize
backend = ollama
backoff_base = 0.5
backoff_max = 60

[models]
gemma3:12b = chatbot
llama3.2:latest = chatbot
""")
    put(d, "errors.ini", "\xef\xbb\xbf[server]\r\nlisten = nowhere\r\n"
        "bogus = 1\n[class a]\nweight = -1\n[class a]\n[backend b]\n"
        "type = nope\n[class c]\nexecutor = chat\nbackend = missing\n"
        "[models]\nno-equals\nm = nosuchclass\n[unknown]\nkey\n"
        "[token t]\nrole = admin\n[token\nkey = value ; comment\n"
        "= novalue\n")
    put(d, "nul.ini", b"[server]\nlisten = 127.0.0.1:1\x00\n")
    put(d, "long-line.ini", "[server]\ndata_dir = " + "d" * 3000 + "\n")
    many = "".join("[class c%d]\nweight = %d\n" % (i, i + 1)
                   for i in range(70))
    put(d, "many-classes.ini", many)
    put(d, "many-tokens.ini", "".join(
        "[token t%d]\nrole = submit\nsecret = secret-number-%020d\n" % (i, i)
        for i in range(66)))


# --- backend replies (fuzz_parse) -------------------------------------------

def parse_seeds():
    d = reset("parse")
    fx = os.path.join(ROOT, "tests", "fixtures")

    def fixture(name):
        with open(os.path.join(fx, name), "rb") as f:
            return f.read()
    for name in sorted(os.listdir(fx)):
        body = fixture(name)
        base = name.rsplit(".", 1)[0]
        if name.startswith("whisper-"):
            put(d, "w-" + base, b"w" + body)
            put(d, "e-" + base, b"e" + body)
        elif name == "llama-chat-stream.body":
            put(d, "s-" + base, b"s\x07" + body)
            put(d, "s1-" + base, b"s\x00" + body)
        elif name == "ollama-chat-stream.ndjson":
            put(d, "n-" + base, b"n\x05" + body)
            put(d, "l-" + base, b"l" + body.splitlines()[-1])
        elif name.startswith("llama-"):
            put(d, "o-" + base, b"o" + body)
            put(d, "e-" + base, b"e" + body)
    put(d, "s-error-line", b"s\x10: ping\r\nevent: x\r\nretry: 5\r\n"
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n"
        b"error: {\"message\":\"slot unavailable\"}\n")
    put(d, "s-vllm-usage", b"s\x20\xef\xbb\xbfdata: {\"choices\":[],"
        b"\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n"
        b"data: [DONE]\n")
    put(d, "n-error", b"n\x03{\"error\":\"model not found\"}")
    put(d, "n-generate", b"n\x40{\"response\":\"x\",\"done\":false}\n"
        b"{\"response\":\"\",\"done\":true,\"done_reason\":\"stop\","
        b"\"prompt_eval_count\":3,\"eval_count\":4,"
        b"\"prompt_eval_duration\":1000000,\"eval_duration\":2000000}")
    put(d, "w-invalid-utf8", b"w{\"text\":\" caf\xc3\",\"segments\":["
        b"{\"text\":\"\xe2\x82\",\"start\":0.5,\"end\":1e300}],"
        b"\"language\":\"fr\",\"duration\":2.0}")
    put(d, "w-error", b"w{\"error\":{\"message\":\"bad\\u0007 audio\"}}")
    put(d, "e-detail", b"e  {\"detail\":\"  too\\n many\\t requests  \"}  ")
    put(d, "e-plain-long", b"e" + "\u00e9t\u00e9 ".encode() * 100)
    put(d, "e-invalid", b"e\xff\xfe\x01abc\xe2\x82")
    ct, body = multipart([("file", b"RIFF....", "a.wav"),
                          ("response_format", "json"), ("", "x")])
    put(d, "m-basic", b"m" + ct.split(": ", 1)[1].encode() + b"\n" + body)
    put(d, "m-quoted", b"m multipart/form-data; charset=x; "
        b"BOUNDARY=\"b b\"\n--b b\r\ncontent-disposition: form-data; "
        b"name=\"a\"; filename=\"\"\r\n\r\n1\r\n--b b--")
    put(d, "m-unclosed", b"mmultipart/form-data; boundary=z\n--z\r\n"
        b"Content-Disposition: form-data; name=file\r\n\r\ndata")


def main():
    samples = audio_seeds()
    files(samples)
    http_seeds(samples)
    config_seeds()
    parse_seeds()


if __name__ == "__main__":
    main()
