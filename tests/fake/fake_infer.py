#!/usr/bin/python3
"""fake_infer - a scripted fake inference server for gpuq's backend tests.

It speaks, byte for byte, the wire formats recorded in ../shared/protocols/
(whisper.cpp's whisper-server, llama.cpp's llama-server) plus Ollama's
/api/chat as its documentation describes it, all on one port:

    whisper.cpp  GET /health, POST /inference (multipart, WAV only)
    llama.cpp    GET /health, GET /v1/models, POST /v1/chat/completions
    Ollama       POST /api/chat, GET /api/tags, GET /api/ps, GET /

Only GET /health, GET / and the 404 answer depend on --flavor.  Tests
script its timing and its faults and read back what it was sent through a
small JSON control API under /_fake/ (doc/fake-server.md), in the manner of
curl's tests/server/sws.c.

    python3 tests/fake/fake_infer.py --port 0 --port-file PATH [--flavor F]

writes "127.0.0.1:PORT" to PATH once listening and exits on SIGTERM.  From
Python: `with FakeServer(flavor="whisper") as fs: fs.url ...`.

Python 3 standard library only (Debian 12's /usr/bin/python3, 3.11).
"""

import argparse
import copy
import datetime
import email.utils
import http
import json
import math
import os
import random
import select
import signal
import socket
import socketserver
import string
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
DEFAULT_MODEL = "tiny-random-llama"
FLAVORS = ("whisper", "llama", "ollama")

# cpp-httplib's defaults, which both recorded servers use: it closes an
# idle keep-alive connection after 5 s and any connection after 100
# requests, and says so in every response.
KEEPALIVE_TIMEOUT_S = 5
KEEPALIVE_MAX = 100
KEEPALIVE_VALUE = "timeout=%d, max=%d" % (KEEPALIVE_TIMEOUT_S, KEEPALIVE_MAX)

MAX_BODY = 512 * 1024 * 1024    # bytes of request body we agree to hold
MAX_LOG = 100000                # request-log entries kept (oldest dropped)
POLL_S = 0.02                   # how often waits look for a hang-up

# ---------------------------------------------------------------------------
# Canned model output, taken from the recordings.

# The sentence the recorded tiny whisper model says in every 30 s window.
WHISPER_SENTENCE = (" This tiny random whisper model always says these same"
                    " words in every window, so scheduler tests can check"
                    " the format.")

# whisper-inference-verbose_json.http's two segments: text, token ids, and
# words as (word, start, end) in centiseconds from the segment's start; the
# second number is the segment's length in centiseconds.
WHISPER_SEGMENTS = (
    (" This tiny random whisper model always says these same words",
     (639, 5870, 4974, 26018, 2316, 1009, 1619, 613, 912, 2283),
     ((" This", 0, 7), (" tiny", 7, 12), (" random", 14, 25),
      (" whisper", 25, 38), (" model", 38, 47), (" always", 47, 58),
      (" says", 58, 63), (" these", 65, 74), (" same", 74, 81),
      (" words", 81, 83)),
     90, 4.880308359868217e-31),
    (" in every window, so scheduler tests can check the format.",
     (294, 633, 4910, 11, 370, 7567, 81, 6921, 393, 1520, 264, 7877, 13),
     ((" in", 0, 3), (" every", 3, 12), (" window", 12, 19), (",", 23, 26),
      (" so", 26, 29), (" schedule", 29, 44), ("r", 44, 44),
      (" tests", 46, 54), (" can", 54, 59), (" check", 59, 68),
      (" the", 68, 72), (" format", 73, 84), (".", 84, 110)),
     110, 0.0),
)
WHISPER_SEGMENT_CS = 500        # one fake segment per 5 s of audio
WHISPER_WINDOW_S = 30.0         # json/text: one line per 30 s window

WHISPER_LANGS = {
    "en": "english", "de": "german", "fr": "french", "es": "spanish",
    "it": "italian", "pt": "portuguese", "nl": "dutch", "ru": "russian",
    "zh": "chinese", "ja": "japanese", "ko": "korean", "pl": "polish",
}

# llama-chat-stream.http's token pieces, then more in the same spirit; the
# fake's reply is these pieces in turn (fake_token(i)).
LLAMA_TOKENS = ("port", " read", " _", " sta", "nig", " dr", " J", "nee",
                " the", "fa", " bud", "oo", "ut", " line", "out", "tell")


def fake_token(i):
    """The text of the i-th token (from 0) the fake generates."""
    return LLAMA_TOKENS[i % len(LLAMA_TOKENS)]


def fake_text(n):
    """The whole reply of n tokens, as the non-streaming routes give it."""
    return "".join(fake_token(i) for i in range(n))


# ---------------------------------------------------------------------------
# Helpers that tests may import too.

def make_wav(seconds, rate=16000, channels=1, bits=16, extra_chunks=()):
    """A silent PCM WAV file of `seconds` seconds, as bytes.  extra_chunks
    is a sequence of (4-byte id, bytes) placed between "fmt " and "data",
    as real files sometimes carry ("LIST" metadata)."""
    block = channels * ((bits + 7) // 8)
    frames = int(round(seconds * rate))
    data = bytes(frames * block)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block,
                      bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    for cid, payload in extra_chunks:
        chunks += cid + struct.pack("<I", len(payload)) + payload
        if len(payload) & 1:
            chunks += b"\0"
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def parse_wav(data):
    """The format of a RIFF/WAVE file as a dict (rate, channels, bits,
    frames, duration in seconds), or None if data is not one.  A data chunk
    that claims more bytes than are present (streamed WAVs say 0xFFFFFFFF)
    counts what is there."""
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    fmt = None
    nbytes = None
    while pos + 8 <= len(data):
        cid = data[pos:pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        start = pos + 8
        if cid == b"fmt ":
            if size < 16 or start + 16 > len(data):
                return None
            fmt = struct.unpack_from("<HHIIHH", data, start)
        elif cid == b"data":
            nbytes = min(size, len(data) - start)
            break
        pos = start + size + (size & 1)
    if fmt is None or nbytes is None:
        return None
    _, channels, rate, _, _, bits = fmt
    if channels == 0 or rate == 0 or bits == 0:
        return None
    frames = nbytes // (channels * ((bits + 7) // 8))
    return {"rate": rate, "channels": channels, "bits": bits,
            "frames": frames, "duration": frames / rate}


def encode_multipart(fields, boundary=None):
    """multipart/form-data for fields, a sequence of (name, value) or
    (name, value, filename[, content_type]); value is str or bytes.
    Returns (content_type_header_value, body_bytes)."""
    boundary = boundary or "----fakeinfer" + "".join(
        random.choice(string.ascii_letters + string.digits)
        for _ in range(16))
    out = []
    for f in fields:
        name, value = f[0], f[1]
        filename = f[2] if len(f) > 2 else None
        ctype = f[3] if len(f) > 3 else None
        if isinstance(value, str):
            value = value.encode("utf-8")
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
            ctype = ctype or "application/octet-stream"
        head = "--%s\r\nContent-Disposition: %s\r\n" % (boundary, disp)
        if ctype:
            head += "Content-Type: %s\r\n" % ctype
        out.append(head.encode("utf-8") + b"\r\n" + value + b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode("ascii"))
    return "multipart/form-data; boundary=" + boundary, b"".join(out)


def _header_params(value):
    """Splits a header value like `form-data; name="a\\"b"; x=y` into its
    first token and a dict of parameters (lower-case names); quoted values
    lose their quotes and backslash escapes."""
    params = {}
    i, n = 0, len(value)
    first_end = value.find(";")
    first = (value if first_end < 0 else value[:first_end]).strip().lower()
    i = n if first_end < 0 else first_end + 1
    while i < n:
        while i < n and value[i] in " \t;":
            i += 1
        eq = value.find("=", i)
        if eq < 0:
            break
        name = value[i:eq].strip().lower()
        i = eq + 1
        if i < n and value[i] == '"':
            i += 1
            buf = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(value[i])
                i += 1
            i += 1
            params[name] = "".join(buf)
        else:
            end = value.find(";", i)
            end = n if end < 0 else end
            params[name] = value[i:end].strip()
            i = end
    return first, params


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


def parse_multipart(body, content_type):
    """The parts of a multipart/form-data body, in order, as dicts with
    name, filename (None if absent), content_type (None if absent) and
    data (bytes).  Raises MultipartError on a malformed body.  (The cgi
    module that used to do this is deprecated and gone in Python 3.13.)"""
    kind, params = _header_params(content_type or "")
    boundary = params.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise MultipartError("not multipart/form-data with a boundary")
    delim = b"--" + boundary.encode("latin-1")
    pos = body.find(delim)
    if pos < 0:
        raise MultipartError("no opening boundary")
    parts = []
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise MultipartError("bad boundary line")
        pos = eol + 2
        headers = {}
        while True:
            eol = body.find(b"\r\n", pos)
            if eol < 0:
                raise MultipartError("unterminated part headers")
            line = body[pos:eol].decode("utf-8", "replace")
            pos = eol + 2
            if not line:
                break
            name, sep, value = line.partition(":")
            if not sep:
                raise MultipartError("bad part header")
            headers[name.strip().lower()] = value.strip()
        end = body.find(b"\r\n" + delim, pos)
        if end < 0:
            raise MultipartError("no closing boundary")
        disp, dparams = _header_params(headers.get("content-disposition",
                                                   ""))
        if disp != "form-data" or "name" not in dparams:
            raise MultipartError("part without form-data name")
        parts.append({"name": dparams["name"],
                      "filename": dparams.get("filename"),
                      "content_type": headers.get("content-type"),
                      "data": body[pos:end]})
        pos = end + 2


# ---------------------------------------------------------------------------
# JSON as the real servers write it.

def dumps(obj):
    """Compact JSON with raw UTF-8, as nlohmann::json's dump() writes it
    (both C++ servers): no spaces, key order kept, shortest float repr."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def go_dumps(obj):
    """JSON as Go's encoding/json writes it (Ollama): compact, and <, >, &,
    U+2028 and U+2029 escaped."""
    s = dumps(obj)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, esc)
    return s


def f32(x):
    """x rounded to a C float, as whisper.cpp keeps durations and
    temperatures before widening them to double in its JSON."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def llama_error(code, message, etype):
    """llama-server's error body (llama-chat-badjson.http)."""
    return dumps({"error": {"code": code, "message": message,
                            "type": etype}})


def nlohmann_parse_error(text, err):
    """The message nlohmann::json gives for text that json.loads rejected
    with err, close enough to llama-chat-badjson.http's to compare."""
    pre = "[json.exception.parse_error.101] parse error at line %d, " \
          "column %d: " % (err.lineno, err.colno)
    if not text.strip():
        return ("[json.exception.parse_error.101] parse error at line 1, "
                "column 1: attempting to parse an empty input; check that "
                "your input string or stream contains the expected JSON")
    if err.msg == "Expecting value" and err.pos >= len(text.rstrip()):
        return pre + ("syntax error while parsing value - unexpected end "
                      "of input; expected '[', '{', or a literal")
    return pre + "syntax error while parsing value - " + err.msg.lower()


def estimate_prompt_tokens(messages):
    """A stand-in for the chat template plus tokenizer: about four bytes a
    token, four tokens of template per message, two more for the prompt."""
    n = 2
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        n += 4
        if isinstance(content, str):
            n += max(1, (len(content.encode("utf-8")) + 3) // 4)
    return n


def random_id(n=32):
    return "".join(random.choice(string.ascii_letters + string.digits)
                   for _ in range(n))


def iso_now():
    """A timestamp like Ollama's created_at (RFC 3339, UTC)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------
# The script: what tests can set through POST /_fake/script.

DEFAULT_SCRIPT = {
    "delay_s": 0.0,             # before a work route replies (prompt time)
    "token_delay_s": 0.0,       # per generated token (chat routes)
    "tokens": 16,               # reply length in tokens (chat routes)
    "per_audio_second_s": 0.0,  # whisper processing time per audio second
    "prompt_tokens": None,      # override the prompt-token estimate
    "loading": False,           # llama routes answer 503 "Loading model"
    "loading_s": 0.0,           # ... for this many seconds from now
    "slots": 0,                 # llama/ollama chats at once (0: no limit)
    "whisper_serial": True,     # whisper serves one inference at a time
    "faults": [],               # see FAULT_KINDS
}

# kind -> what happens to the request that draws it.
FAULT_KINDS = {
    "500": "reply 500 in the route's own error format",
    "503": "reply 503 in the route's own format (llama: Loading model)",
    "reset": "read the request, then reset the connection (RST)",
    "reset_mid_stream": "send the head and part of the body, then RST",
    "malformed_json": "200 with the body (or one stream event) cut short",
    "hang": "read the request, never reply (until the client hangs up)",
    "slow": "wait the fault's delay_s (default 2) more before replying",
    "trickle": "send the body a few bytes at a time (delay_s, chunk_bytes)",
    "close": "read the request, then close the connection cleanly",
    "refuse_next": "reset the next `count` connections before reading",
}
FAULT_KEYS = ("path", "method", "kind", "count", "delay_s", "after",
              "chunk_bytes")


def _check_script(update):
    """Raises ValueError if update is not a valid (partial) script."""
    if not isinstance(update, dict):
        raise ValueError("script must be a JSON object")
    for key, value in update.items():
        if key not in DEFAULT_SCRIPT:
            raise ValueError("unknown script key: %s" % key)
        if key == "faults":
            if not isinstance(value, list):
                raise ValueError("faults must be a list")
            for f in value:
                if not isinstance(f, dict) or f.get("kind") not in \
                        FAULT_KINDS:
                    raise ValueError("bad fault %r; kinds: %s"
                                     % (f, ", ".join(FAULT_KINDS)))
                for k in f:
                    if k not in FAULT_KEYS:
                        raise ValueError("unknown fault key: %s" % k)
        elif key in ("loading", "whisper_serial"):
            if not isinstance(value, bool):
                raise ValueError("%s must be true or false" % key)
        elif key == "prompt_tokens":
            if value is not None and not isinstance(value, int):
                raise ValueError("prompt_tokens must be an integer")
        elif key in ("tokens", "slots"):
            if not isinstance(value, int) or value < 0:
                raise ValueError("%s must be a non-negative integer" % key)
        elif not isinstance(value, (int, float)) or value < 0:
            raise ValueError("%s must be a non-negative number" % key)


# ---------------------------------------------------------------------------
# The server.

class _Abort(Exception):
    """Unwinds a request that cannot be answered any more: the client hung
    up (client_gone), the fake reset the connection, or the fake stops."""

    def __init__(self, client_gone, why):
        super().__init__(why)
        self.client_gone = client_gone


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind asks the resolver for our FQDN, which can
        # take seconds on a machine without DNS; we know who we are.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        # A client that hangs up is routine here; a bug in the fake is not.
        if self.fake.verbose or not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FakeServer:
    """One fake inference server on 127.0.0.1.  start() binds and serves in
    background threads; stop() closes every connection and returns once the
    listener is closed.  The methods script(), requests(), reset(), busy()
    and down() do what the control API's routes do, without HTTP."""

    def __init__(self, port=0, flavor="llama", model=DEFAULT_MODEL,
                 script=None, verbose=False):
        if flavor not in FLAVORS:
            raise ValueError("flavor must be one of %s" % (FLAVORS,))
        self.flavor = flavor    # /health, GET / and 404 speak this dialect
        self.model = model      # the model name the fake reports
        self.verbose = verbose
        self.host = HOST
        self.port = port
        self._lock = threading.RLock()
        self._whisper_lock = threading.Lock()
        self._slot_cond = threading.Condition(self._lock)
        self._slots_used = 0
        self._stopping = threading.Event()
        self._conns = set()
        self._httpd = None
        self._thread = None
        self._down_until = 0.0
        self._ollama_loaded = {}    # model -> expiry (epoch seconds)
        self._reset_locked()
        if script:
            self.script(**script)

    # -- lifecycle ----------------------------------------------------------

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self._serve()
        return self

    def _serve(self):
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="fake_infer-accept", daemon=True)
        self._thread.start()

    def stop(self):
        self._stopping.set()
        with self._lock:
            httpd, self._httpd = self._httpd, None
            conns = list(self._conns)
        if httpd is not None:
            if self._thread is not None and self._thread.is_alive():
                httpd.shutdown()
            httpd.server_close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def down(self, seconds):
        """Closes the listening socket for `seconds`, so connecting fails
        with ECONNREFUSED, then listens on the same port again.
        Connections already open are not touched."""
        with self._lock:
            httpd = self._httpd
            if httpd is None or self._down_until:
                return
            self._down_until = time.time() + seconds
        httpd.shutdown()
        httpd.socket.close()
        t = threading.Timer(seconds, self._come_up)
        t.daemon = True
        t.start()

    def _come_up(self):
        with self._lock:
            httpd = self._httpd
            self._down_until = 0.0
        if httpd is None or self._stopping.is_set():
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(httpd.request_queue_size)
        httpd.socket = s
        self._serve()

    # -- control ------------------------------------------------------------

    def script(self, **update):
        """Merges update into the script (faults replaces the fault list)
        and returns the script now in force.  Raises ValueError on an
        unknown key or a bad value."""
        _check_script(update)
        with self._lock:
            for key, value in update.items():
                if key == "faults":
                    value = [dict(f) for f in value]
                    for f in value:
                        f.setdefault("count", 1)
                if key == "loading_s":
                    self._loading_until = time.time() + value
                if key == "loading" and not value:
                    self._loading_until = 0.0
                self._script[key] = value
            return self.get_script()

    def get_script(self):
        with self._lock:
            s = copy.deepcopy(self._script)
            s["loading"] = self._is_loading()
            return s

    def _reset_locked(self):
        with self._lock:
            self._script = copy.deepcopy(DEFAULT_SCRIPT)
            self._loading_until = 0.0
            self._log = []
            self._seq = 0
            self._busy = 0
            self._max_busy = 0
            self._refused = 0

    def reset(self):
        """Clears the script (back to the defaults), the request log and
        the busy high-water mark."""
        self._reset_locked()

    def requests(self, path=None):
        """The request log (copies), oldest first; only `path` if given."""
        with self._lock:
            return [copy.deepcopy(e) for e in self._log
                    if path is None or e["path"] == path]

    def busy(self):
        """{"busy": work requests in progress now, "max_busy": the most at
        once since the last reset, "refused": connections reset by
        refuse_next}."""
        with self._lock:
            return {"busy": self._busy, "max_busy": self._max_busy,
                    "refused": self._refused}

    # -- used by the handler ------------------------------------------------

    def _is_loading(self):
        return bool(self._script["loading"]) or \
            time.time() < self._loading_until

    def _conn_add(self, sock):
        with self._lock:
            self._conns.add(sock)

    def _conn_remove(self, sock):
        with self._lock:
            self._conns.discard(sock)

    def _take_refuse(self):
        with self._lock:
            for f in self._script["faults"]:
                if f["kind"] == "refuse_next" and f["count"] != 0:
                    if f["count"] > 0:
                        f["count"] -= 1
                    self._refused += 1
                    return True
        return False

    def _take_fault(self, method, path):
        """The first scripted fault that matches, its count used up by
        one; None if none matches."""
        with self._lock:
            for f in self._script["faults"]:
                if f["kind"] == "refuse_next" or f["count"] == 0:
                    continue
                if f.get("path", "*") not in ("*", path):
                    continue
                if f.get("method", method) != method:
                    continue
                if f["count"] > 0:
                    f["count"] -= 1
                return dict(f)
        return None

    def _log_start(self, entry):
        with self._lock:
            self._seq += 1
            entry["id"] = self._seq
            self._log.append(entry)
            if len(self._log) > MAX_LOG:
                del self._log[:len(self._log) - MAX_LOG]
        return entry

    def _update(self, entry, **kw):
        with self._lock:
            entry.update(kw)

    def _busy_enter(self):
        with self._lock:
            self._busy += 1
            self._max_busy = max(self._max_busy, self._busy)

    def _busy_exit(self):
        with self._lock:
            self._busy -= 1


class _Route:
    def __init__(self, method, path, fn, style, work):
        self.method = method    # HTTP method
        self.path = path        # exact path, no query
        self.fn = fn            # _Handler method name
        self.style = style      # header dialect; None: the server's flavor
        self.work = work        # counts as busy, gets delays


# The routes, as a table (STYLE rule 9).  Any path not here gets the
# flavor's 404 and is still logged, which is how tests see that whisper's
# POST /load was never called.
ROUTES = [
    _Route("GET", "/health", "h_health", None, False),
    _Route("GET", "/", "h_root", None, False),
    _Route("POST", "/inference", "h_whisper_inference", "whisper", True),
    _Route("GET", "/v1/models", "h_llama_models", "llama", False),
    _Route("GET", "/models", "h_llama_models", "llama", False),
    _Route("POST", "/v1/chat/completions", "h_llama_chat", "llama", True),
    _Route("POST", "/chat/completions", "h_llama_chat", "llama", True),
    _Route("POST", "/api/chat", "h_ollama_chat", "ollama", True),
    _Route("GET", "/api/tags", "h_ollama_tags", "ollama", False),
    _Route("GET", "/api/ps", "h_ollama_ps", "ollama", False),
    _Route("GET", "/api/version", "h_ollama_version", "ollama", False),
]
ROUTE_INDEX = {(r.method, r.path): r for r in ROUTES}

CONTROL_ROUTES = {
    ("GET", "/_fake/script"): "c_get_script",
    ("POST", "/_fake/script"): "c_script",
    ("GET", "/_fake/requests"): "c_requests",
    ("POST", "/_fake/reset"): "c_reset",
    ("GET", "/_fake/busy"): "c_busy",
    ("POST", "/_fake/down"): "c_down",
}


class _Request:
    def __init__(self, method, path, query, headers, body, style):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.style = style


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = KEEPALIVE_TIMEOUT_S       # idle keep-alive limit, as httplib
    disable_nagle_algorithm = True      # stream tokens as they come

    # -- connection ---------------------------------------------------------

    def setup(self):
        super().setup()
        self.fake = self.server.fake
        self.fake._conn_add(self.connection)
        self._nreq = 0

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.fake._conn_remove(self.connection)

    def handle(self):
        if self.fake._take_refuse():
            self._rst()
            return
        try:
            super().handle()
        except (OSError, _Abort):
            pass

    def log_message(self, fmt, *args):
        if self.fake.verbose:
            sys.stderr.write("fake_infer: %s\n" % (fmt % args))

    def _rst(self):
        """Resets the connection: SO_LINGER 0 makes close() send RST, and
        closing rfile first drops makefile's hold on the socket so that
        close() really closes it."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()
        except OSError:
            pass
        self.connection.close()

    def _peer_gone(self):
        """True if the client has closed its end (EOF or reset)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            return self.connection.recv(
                1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return True

    def _wait(self, seconds):
        """Sleeps `seconds` (forever if None) while watching the socket, as
        whisper-server's abort callback does: raises _Abort if the client
        hangs up or the fake stops."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if self.fake._stopping.is_set():
                raise _Abort(False, "server stopping")
            if self._peer_gone():
                raise _Abort(True, "client disconnected")
            left = POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return
            try:
                r, _, _ = select.select([self.connection], [], [],
                                       min(left, POLL_S))
            except (OSError, ValueError):
                raise _Abort(True, "client disconnected")
            if r and not self._peer_gone():
                # A pipelined request is waiting; nothing to watch for now.
                time.sleep(min(left, POLL_S))

    # -- dispatch -----------------------------------------------------------

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def _read_body(self):
        """The request body (Content-Length or chunked); raises _Abort if
        the client goes away first, ValueError if it is malformed."""
        te = self.headers.get("Transfer-Encoding", "").lower()
        try:
            if "chunked" in te:
                out = bytearray()
                while True:
                    line = self.rfile.readline(1024)
                    if not line:
                        raise _Abort(True, "EOF in chunked body")
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline(1024) not in \
                                (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    if len(out) + size > MAX_BODY:
                        raise ValueError("body too large")
                    out += self.rfile.read(size)
                    self.rfile.readline(1024)
            n = int(self.headers.get("Content-Length") or 0)
            if n < 0 or n > MAX_BODY:
                raise ValueError("bad Content-Length")
            body = self.rfile.read(n) if n else b""
            if len(body) != n:
                raise _Abort(True, "EOF in body")
            return body
        except (OSError, TimeoutError) as e:
            raise _Abort(True, str(e))

    def _dispatch(self):
        fake = self.fake
        self._nreq += 1
        if self._nreq >= KEEPALIVE_MAX:
            self.close_connection = True
        t_start = time.time()
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, url.query
        self._fault = None
        self._events = 0
        self._entry = None
        self._work = False
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send_full(400, "text/plain", b"Bad Request", "control")
            return
        if path.startswith("/_fake/"):
            self._control(path, query, body)
            return
        route = ROUTE_INDEX.get((self.command, path))
        style = (route.style if route else None) or fake.flavor
        entry = {"id": None, "method": self.command, "path": path,
                 "query": query, "headers": dict(self.headers.items()),
                 "body_len": len(body), "t_start": t_start, "t_end": None,
                 "status": None, "completed": False,
                 "client_disconnected": False, "fault": None}
        ctype = self.headers.get("Content-Type", "")
        if body and not ctype.lower().startswith("multipart/"):
            try:
                entry["body_json"] = json.loads(body.decode("utf-8"))
            except ValueError:
                entry["body_text"] = body[:4096].decode("utf-8", "replace")
        self._entry = fake._log_start(entry)
        req = _Request(self.command, path, query, self.headers, body, style)
        self._work = route is not None and route.work
        if self._work:
            fake._busy_enter()
        try:
            fault = fake._take_fault(self.command, path)
            if fault is not None:
                self._fault = fault
                fake._update(entry, fault=fault["kind"])
            if not self._pre_fault(req):
                if route is None:
                    self._not_found(style)
                elif style == "llama" and fake._is_loading():
                    self._send_full(503, "application/json; charset=utf-8",
                                    llama_error(503, "Loading model",
                                                "unavailable_error"),
                                    "llama")
                else:
                    getattr(self, route.fn)(req)
        except _Abort as a:
            self.close_connection = True
            fake._update(entry, client_disconnected=a.client_gone,
                         completed=False)
        finally:
            self._done()

    def _done(self):
        """Marks the request finished: called before the response's last
        bytes go out, so that a client that has read the whole response
        finds the log and the busy count already up to date."""
        if self._entry is not None and self._entry["t_end"] is None:
            self.fake._update(self._entry, t_end=time.time())
        if self._work:
            self._work = False
            self.fake._busy_exit()

    def _pre_fault(self, req):
        """Acts out a fault that replaces the reply; True if it did."""
        f = self._fault
        if f is None:
            return False
        kind = f["kind"]
        if kind == "reset":
            self._rst()
            raise _Abort(False, "reset by fault")
        if kind == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if kind == "hang":
            self._wait(None)
        if kind == "slow":
            self._wait(f.get("delay_s", 2.0))
            return False
        if kind == "500":
            self._error_reply(500, req.style)
            return True
        if kind == "503":
            self._error_reply(503, req.style)
            return True
        return False

    def _error_reply(self, status, style):
        if style == "whisper":
            msg = "failed to process audio" if status == 500 else \
                "server busy"
            self._send_full(status, "application/json",
                            dumps({"error": msg}), style)
        elif style == "llama":
            if status == 503:
                body = llama_error(503, "Loading model", "unavailable_error")
            else:
                body = llama_error(500, "fake fault: internal error",
                                   "server_error")
            self._send_full(status, "application/json; charset=utf-8", body,
                            style)
        else:
            msg = "fake fault: internal error" if status == 500 else \
                "server busy, please try again.  maximum pending requests " \
                "exceeded"
            self._send_full(status, "application/json; charset=utf-8",
                            go_dumps({"error": msg}), style)

    def _not_found(self, style):
        if style == "whisper":
            self._send_full(404, "text/plain", b"File Not Found", style)
        elif style == "llama":
            self._send_full(404, "application/json; charset=utf-8",
                            llama_error(404, "File Not Found",
                                        "not_found_error"), style)
        else:
            self._send_full(404, "text/plain", b"404 page not found", style)

    # -- writing ------------------------------------------------------------

    def _head(self, status, style, ctype, length=None):
        """Status line and headers in the order the recorded server sends
        them; length None means chunked."""
        phrase = http.HTTPStatus(status).phrase
        conn = ("Connection", "close") if self.close_connection else \
            ("Keep-Alive", KEEPALIVE_VALUE)
        size = ("Transfer-Encoding", "chunked") if length is None else \
            ("Content-Length", str(length))
        if style == "whisper":
            h = [conn, ("Content-Type", ctype), ("Server", "whisper.cpp"),
                 size, ("Access-Control-Allow-Origin", "*"),
                 ("Access-Control-Allow-Headers",
                  "content-type, authorization")]
        elif style == "llama":
            # llama-server echoes the request's Origin; curl sends none.
            h = [conn, ("Content-Type", ctype), ("Server", "llama.cpp"),
                 size, ("Access-Control-Allow-Origin",
                        self.headers.get("Origin", ""))]
        elif style == "ollama":
            # Go's net/http: handler headers, then Date, Content-Length,
            # Connection, Transfer-Encoding.
            h = [("Content-Type", ctype),
                 ("Date", email.utils.formatdate(usegmt=True))]
            if length is not None:
                h.append(size)
            if self.close_connection:
                h.append(("Connection", "close"))
            if length is None:
                h.append(size)
        else:
            h = [("Content-Type", ctype), size]
            if self.close_connection:
                h.append(("Connection", "close"))
        lines = ["HTTP/1.1 %d %s" % (status, phrase)]
        lines += ["%s: %s" % kv for kv in h]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _write(self, data):
        try:
            self.wfile.write(data)
        except (OSError, ValueError, TimeoutError) as e:
            raise _Abort(True, "write failed: %s" % e)

    def _fault_kind(self):
        return self._fault["kind"] if self._fault else None

    def _send_full(self, status, ctype, body, style):
        """Sends a whole response with Content-Length, acting out the
        body faults (malformed_json, reset_mid_stream, trickle)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        kind = self._fault_kind() if style != "control" else None
        if kind == "malformed_json" and status < 400:
            body = body[:max(1, len(body) // 2)]
        head = self._head(status, style, ctype, len(body))
        if self._entry is not None:
            self.fake._update(self._entry, status=status)
        if kind == "reset_mid_stream":
            self._write(head + body[:len(body) // 2])
            self._rst()
            raise _Abort(False, "reset mid-body by fault")
        if kind == "trickle":
            self._write(head)
            step = max(1, int(self._fault.get("chunk_bytes", 8)))
            for i in range(0, len(body) - step, step):
                self._wait(self._fault.get("delay_s", 0.05))
                self._write(body[i:i + step])
            self._wait(self._fault.get("delay_s", 0.05))
            head, body = b"", body[(len(body) - 1) // step * step:]
        self._last_write(head + body)

    def _last_write(self, data):
        if self._entry is not None:
            self.fake._update(self._entry, completed=True)
        self._done()
        self._write(data)

    def _stream_begin(self, ctype, style):
        if self._entry is not None:
            self.fake._update(self._entry, status=200)
        self._write(self._head(200, style, ctype, None))

    def _stream_event(self, prefix, payload, suffix):
        """Sends one event (prefix + JSON payload + suffix) as one HTTP
        chunk, as both servers flush one chunk per token.  Events count
        from 0; the fault's `after` (default 2 for resets, 1 otherwise)
        picks the event that is cut or reset before."""
        kind = self._fault_kind()
        after = self._fault.get("after") if self._fault else None
        if kind == "reset_mid_stream" and self._events >= (
                2 if after is None else after):
            self._rst()
            raise _Abort(False, "reset mid-stream by fault")
        if kind == "malformed_json" and self._events == (
                1 if after is None else after):
            payload = payload[:max(1, len(payload) // 2)]
        if kind == "trickle":
            self._wait(self._fault.get("delay_s", 0.05))
        data = (prefix + payload + suffix).encode("utf-8")
        self._write(b"%x\r\n" % len(data) + data + b"\r\n")
        self._events += 1
        self.fake._update(self._entry, events_sent=self._events)

    def _stream_end(self):
        self._last_write(b"0\r\n\r\n")

    # -- control API --------------------------------------------------------

    def _control(self, path, query, body):
        name = CONTROL_ROUTES.get((self.command, path))
        if name is None:
            return self._control_reply(404, {"error": "no such control "
                                             "route: %s %s"
                                             % (self.command, path)})
        try:
            arg = json.loads(body.decode("utf-8")) if body.strip() else {}
            result = getattr(self, name)(arg, urllib.parse.parse_qs(query))
        except ValueError as e:
            return self._control_reply(400, {"error": str(e)})
        self._control_reply(200, result)

    def _control_reply(self, status, obj):
        self._send_full(status, "application/json", dumps(obj), "control")

    def c_get_script(self, arg, q):
        return self.fake.get_script()

    def c_script(self, arg, q):
        _check_script(arg)
        return self.fake.script(**arg)

    def c_requests(self, arg, q):
        return self.fake.requests(q.get("path", [None])[0])

    def c_reset(self, arg, q):
        self.fake.reset()
        return self.fake.get_script()

    def c_busy(self, arg, q):
        return self.fake.busy()

    def c_down(self, arg, q):
        seconds = arg.get("seconds", 1.0) if isinstance(arg, dict) else None
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("seconds must be a non-negative number")
        self.close_connection = True
        self.fake.down(seconds)
        return {"down_s": seconds}

    # -- shared routes ------------------------------------------------------

    def h_health(self, req):
        if req.style == "whisper":
            if self.fake._is_loading():
                # Not recorded: whisper-server only loads during /load.
                return self._send_full(503, "application/json",
                                       '{"status":"loading model"}',
                                       "whisper")
            return self._send_full(200, "application/json",
                                   '{"status":"ok"}', "whisper")
        if req.style == "llama":
            return self._send_full(200, "application/json; charset=utf-8",
                                   '{"status":"ok"}', "llama")
        return self._not_found(req.style)

    def h_root(self, req):
        if req.style == "ollama":
            return self._send_full(200, "text/plain; charset=utf-8",
                                   "Ollama is running", "ollama")
        if req.style == "whisper":
            return self._send_full(
                200, "text/html",
                "<html><head><title>Whisper.cpp Server</title></head>"
                "<body><h1>Whisper.cpp Server (fake)</h1></body></html>",
                "whisper")
        return self._not_found(req.style)

    # -- whisper.cpp --------------------------------------------------------

    def _invalid(self):
        # whisper-server's error handler turns every 400 into this.
        self._send_full(400, "text/plain", b"Invalid request", "whisper")

    def h_whisper_inference(self, req):
        fake, entry = self.fake, self._entry
        try:
            parts = parse_multipart(req.body,
                                    req.headers.get("Content-Type", ""))
        except MultipartError:
            parts = []
        fields = [{"name": p["name"], "filename": p["filename"],
                   "content_type": p["content_type"], "size": len(p["data"])}
                  for p in parts]
        form = {p["name"]: p["data"].decode("utf-8", "replace")
                for p in parts if p["filename"] is None
                and len(p["data"]) <= 4096}
        fake._update(entry, fields=fields, form=form)
        audio = next((p for p in parts if p["name"] == "file"), None)
        if audio is None:
            return self._invalid()
        wav = parse_wav(audio["data"])
        if wav is None:
            return self._invalid()
        fake._update(entry, audio=wav)
        with fake._lock:
            script = copy.deepcopy(fake._script)
        serial = script["whisper_serial"]
        if serial:
            # One inference at a time, and not in arrival order: a
            # polling acquire, like the real server's mutex, is not fair.
            while not fake._whisper_lock.acquire(timeout=POLL_S):
                self._wait(0)
        try:
            self._wait(script["delay_s"] +
                       script["per_audio_second_s"] * wav["duration"])
        finally:
            if serial:
                fake._whisper_lock.release()
        fmt = form.get("response_format", "json")
        try:
            temperature = f32(float(form.get("temperature", "0.0")))
        except ValueError:
            temperature = 0.0
        language = form.get("language", "en")
        segs = whisper_segments(wav["duration"], temperature)
        if fmt == "text":
            self._send_full(200, "text/html; charset=utf-8",
                            whisper_window_text(wav["duration"]), "whisper")
        elif fmt == "srt":
            self._send_full(200, "application/x-subrip",
                            whisper_srt(segs), "whisper")
        elif fmt == "vtt":
            self._send_full(200, "text/vtt", whisper_vtt(segs), "whisper")
        elif fmt == "verbose_json":
            code = "en" if language == "auto" else language
            name = WHISPER_LANGS.get(code, code)
            body = dumps({
                "task": "translate" if form.get("translate") == "true"
                        else "transcribe",
                "language": name,
                "duration": f32(wav["duration"]),
                "text": "".join(s["text"] + "\n" for s in segs),
                "segments": segs,
                "detected_language": name,
                "detected_language_probability": 1.0,
                "language_probabilities": {code: 1.0},
            })
            self._send_full(200, "application/json", body, "whisper")
        else:
            self._send_full(200, "application/json",
                            dumps({"text": whisper_window_text(
                                wav["duration"])}), "whisper")

    # -- llama.cpp ----------------------------------------------------------

    def h_llama_models(self, req):
        body = dumps({"object": "list", "data": [{
            "id": self.fake.model, "object": "model",
            "created": int(time.time()), "owned_by": "llamacpp",
            "meta": {"vocab_type": 1, "n_vocab": 1652, "n_ctx_train": 4096,
                     "n_embd": 64, "n_params": 318272, "size": 1273088}}]})
        self._send_full(200, "application/json; charset=utf-8", body,
                        "llama")

    def _llama_fail(self, message, etype="server_error"):
        # llama-server answers client mistakes with 500 (see README).
        self._send_full(500, "application/json; charset=utf-8",
                        llama_error(500, message, etype), "llama")

    def _take_slot(self, slots):
        fake = self.fake
        with fake._slot_cond:
            while slots and fake._slots_used >= slots:
                fake._slot_cond.wait(POLL_S)
                self._wait(0)
            fake._slots_used += 1

    def _give_slot(self):
        fake = self.fake
        with fake._slot_cond:
            fake._slots_used -= 1
            fake._slot_cond.notify()

    def h_llama_chat(self, req):
        fake = self.fake
        text = req.body.decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            return self._llama_fail(nlohmann_parse_error(text, e))
        if not isinstance(data, dict):
            kind = {list: "array", str: "string", bool: "boolean",
                    int: "number", float: "number"}.get(type(data), "null")
            return self._llama_fail("[json.exception.type_error.304] cannot "
                                    "use at() with " + kind)
        if "messages" not in data:
            return self._llama_fail("[json.exception.out_of_range.403] key "
                                    "'messages' not found")
        messages = data["messages"]
        if not isinstance(messages, list):
            return self._llama_fail("Expected 'messages' to be an array")
        with fake._lock:
            script = copy.deepcopy(fake._script)
        limit = data.get("max_tokens", data.get("max_completion_tokens",
                                                data.get("n_predict")))
        n = script["tokens"]
        finish = "stop"
        if isinstance(limit, int) and limit >= 0 and limit <= n:
            n, finish = limit, "length"
        prompt_n = script["prompt_tokens"]
        if prompt_n is None:
            prompt_n = estimate_prompt_tokens(messages)
        model = data.get("model")
        model = model if isinstance(model, str) and model else fake.model
        cid = "chatcmpl-" + random_id()
        created = int(time.time())
        stream = data.get("stream") is True
        fake._update(self._entry, tokens=n)
        if stream:
            # httplib sends the head before the first token is ready.
            self._stream_begin("text/event-stream", "llama")
        self._take_slot(script["slots"])
        try:
            t0 = time.monotonic()
            self._wait(script["delay_s"])
            t1 = time.monotonic()
            for i in range(n):
                self._wait(script["token_delay_s"])
                if stream:
                    self._stream_event("data: ", dumps({
                        "choices": [{"finish_reason": None, "index": 0,
                                     "delta": {"content": fake_token(i)}}],
                        "created": created, "id": cid, "model": model,
                        "system_fingerprint": "b0-unknown",
                        "object": "chat.completion.chunk"}), "\n\n")
            t2 = time.monotonic()
        finally:
            self._give_slot()
        usage = {"completion_tokens": n, "prompt_tokens": prompt_n,
                 "total_tokens": n + prompt_n}
        timings = llama_timings(
            prompt_n, (t1 - t0) * 1e3 if script["delay_s"] else None,
            n, (t2 - t1) * 1e3 if script["token_delay_s"] else None)
        if stream:
            self._stream_event("data: ", dumps({
                "choices": [{"finish_reason": finish, "index": 0,
                             "delta": {}}],
                "created": created, "id": cid, "model": model,
                "system_fingerprint": "b0-unknown",
                "object": "chat.completion.chunk",
                "usage": usage, "timings": timings}), "\n\n")
            self._stream_event("data: ", "[DONE]", "\n\n")
            return self._stream_end()
        body = dumps({
            "choices": [{"finish_reason": finish, "index": 0,
                         "message": {"role": "assistant",
                                     "content": fake_text(n)}}],
            "created": created, "model": model,
            "system_fingerprint": "b0-unknown", "object": "chat.completion",
            "usage": usage, "id": cid, "timings": timings})
        self._send_full(200, "application/json; charset=utf-8", body,
                        "llama")

    # -- Ollama -------------------------------------------------------------

    def _ollama_fail(self, status, message):
        self._send_full(status, "application/json; charset=utf-8",
                        go_dumps({"error": message}), "ollama")

    def _ollama_name(self, model):
        return model if ":" in model else model + ":latest"

    def _ollama_model(self, name):
        return {"name": name, "model": name,
                "modified_at": "2025-01-01T00:00:00Z", "size": 1273088,
                "digest": "f" * 64,
                "details": {"parent_model": "", "format": "gguf",
                            "family": "llama", "families": ["llama"],
                            "parameter_size": "318.27K",
                            "quantization_level": "F32"}}

    def h_ollama_tags(self, req):
        name = self._ollama_name(self.fake.model)
        self._send_full(200, "application/json; charset=utf-8",
                        go_dumps({"models": [self._ollama_model(name)]}),
                        "ollama")

    def h_ollama_ps(self, req):
        now = time.time()
        models = []
        with self.fake._lock:
            loaded = sorted(self.fake._ollama_loaded.items())
        for name, expires in loaded:
            if expires <= now:
                continue
            m = self._ollama_model(name)
            del m["modified_at"]
            m["expires_at"] = datetime.datetime.fromtimestamp(
                expires, datetime.timezone.utc).isoformat(
                timespec="microseconds").replace("+00:00", "Z")
            m["size_vram"] = m["size"]
            models.append(m)
        self._send_full(200, "application/json; charset=utf-8",
                        go_dumps({"models": models}), "ollama")

    def h_ollama_version(self, req):
        self._send_full(200, "application/json; charset=utf-8",
                        go_dumps({"version": "0.0.0-fake"}), "ollama")

    def h_ollama_chat(self, req):
        fake = self.fake
        t0 = time.monotonic()
        if not req.body.strip():
            return self._ollama_fail(400, "missing request body")
        try:
            data = json.loads(req.body.decode("utf-8", "replace"))
        except json.JSONDecodeError as e:
            return self._ollama_fail(400, "invalid character: " + e.msg)
        if not isinstance(data, dict):
            return self._ollama_fail(400, "json: cannot unmarshal into Go "
                                     "value of type api.ChatRequest")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            return self._ollama_fail(400, "model is required")
        name = self._ollama_name(model)
        keep_alive = data.get("keep_alive", "5m")
        with fake._lock:
            if keep_alive in (0, "0", "0s"):
                fake._ollama_loaded.pop(name, None)
            else:
                fake._ollama_loaded[name] = time.time() + 300
            script = copy.deepcopy(fake._script)
        messages = data.get("messages") or []
        if not messages:
            # An empty chat only loads (or, with keep_alive 0, unloads).
            return self._send_full(
                200, "application/json; charset=utf-8",
                go_dumps({"model": model, "created_at": iso_now(),
                          "message": {"role": "assistant", "content": ""},
                          "done_reason": "unload" if keep_alive in
                          (0, "0", "0s") else "load", "done": True}),
                "ollama")
        options = data.get("options") or {}
        limit = options.get("num_predict") if isinstance(options, dict) \
            else None
        n = script["tokens"]
        finish = "stop"
        if isinstance(limit, int) and 0 <= limit <= n:
            n, finish = limit, "length"
        prompt_n = script["prompt_tokens"]
        if prompt_n is None:
            prompt_n = estimate_prompt_tokens(messages)
        stream = data.get("stream", True) is not False
        fake._update(self._entry, tokens=n)
        self._take_slot(script["slots"])
        try:
            self._wait(script["delay_s"])
            t1 = time.monotonic()
            for i in range(n):
                self._wait(script["token_delay_s"])
                if stream:
                    if i == 0:
                        # Go sends the head with the first write.
                        self._stream_begin("application/x-ndjson", "ollama")
                    self._stream_event("", go_dumps({
                        "model": model, "created_at": iso_now(),
                        "message": {"role": "assistant",
                                    "content": fake_token(i)},
                        "done": False}), "\n")
            t2 = time.monotonic()
        finally:
            self._give_slot()
        final = {"model": model, "created_at": iso_now(),
                 "message": {"role": "assistant",
                             "content": "" if stream else fake_text(n)},
                 "done_reason": finish, "done": True,
                 "total_duration": int((time.monotonic() - t0) * 1e9),
                 "load_duration": 1000000,
                 "prompt_eval_count": prompt_n,
                 "prompt_eval_duration": max(1, int((t1 - t0) * 1e9)),
                 "eval_count": n,
                 "eval_duration": max(1, int((t2 - t1) * 1e9))}
        if not stream:
            return self._send_full(200, "application/json; charset=utf-8",
                                   go_dumps(final), "ollama")
        if n == 0:
            self._stream_begin("application/x-ndjson", "ollama")
        self._stream_event("", go_dumps(final), "\n")
        self._stream_end()


# ---------------------------------------------------------------------------
# Output builders.

def whisper_window_text(duration):
    """json/text output: the recorded sentence once per started 30 s
    window, each on its own line."""
    return (WHISPER_SENTENCE + "\n") * int(math.ceil(duration /
                                                     WHISPER_WINDOW_S))


def whisper_segments(duration, temperature):
    """verbose_json segments: one per started 5 s of audio, alternating
    the two recorded segments' texts, with times (seconds from the clip's
    start, in centiseconds as whisper counts them) and word times scaled
    into each segment."""
    total_cs = int(round(duration * 100))
    segs = []
    k = 0
    while k * WHISPER_SEGMENT_CS < total_cs:
        t0 = k * WHISPER_SEGMENT_CS
        t1 = min(t0 + WHISPER_SEGMENT_CS, total_cs)
        text, tokens, words, span, nsp = WHISPER_SEGMENTS[k % 2]
        scale = (t1 - t0) / span
        segs.append({
            "id": k, "text": text, "start": t0 * 0.01, "end": t1 * 0.01,
            "tokens": list(tokens),
            "words": [{"word": w, "start": (t0 + int(round(a * scale)))
                       * 0.01, "end": (t0 + int(round(b * scale))) * 0.01,
                       "t_dtw": -1, "probability": 1.0}
                      for w, a, b in words],
            "temperature": temperature, "avg_logprob": 0.0,
            "no_speech_prob": nsp})
        k += 1
    return segs


def _timestamp(t, sep):
    ms = int(round(t * 1000))
    return "%02d:%02d:%02d%s%03d" % (ms // 3600000, ms // 60000 % 60,
                                     ms // 1000 % 60, sep, ms % 1000)


def whisper_srt(segs):
    return "".join("%d\n%s --> %s\n%s\n\n" % (
        s["id"] + 1, _timestamp(s["start"], ","), _timestamp(s["end"], ","),
        s["text"]) for s in segs)


def whisper_vtt(segs):
    return "WEBVTT\n\n" + "".join("%s --> %s\n%s\n\n" % (
        _timestamp(s["start"], "."), _timestamp(s["end"], "."), s["text"])
        for s in segs)


def llama_timings(prompt_n, prompt_ms, predicted_n, predicted_ms):
    """llama-server's timings object from the measured milliseconds, or,
    where they are None (no wait scripted), from llama-chat.http's speeds.
    Milliseconds have microsecond resolution as the real ones do.  A rate
    over zero tokens is null, as nlohmann writes the NaN the real server
    divides its way into."""
    if prompt_ms is None:
        prompt_ms = prompt_n * 0.04334426229508197
    if predicted_ms is None:
        predicted_ms = predicted_n * 0.1581875
    prompt_ms = max(round(prompt_ms, 3), 0.001)
    predicted_ms = max(round(predicted_ms, 3), 0.001)
    return {"prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n
            else None,
            "prompt_per_second": 1e3 / prompt_ms * prompt_n if prompt_n
            else None,
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n
            if predicted_n else None,
            "predicted_per_second": 1e3 / predicted_ms * predicted_n
            if predicted_n else None}


# ---------------------------------------------------------------------------
# Command line.

def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Scripted fake whisper.cpp / llama.cpp / Ollama server "
                    "(doc/fake-server.md).")
    ap.add_argument("--port", type=int, default=0,
                    help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--port-file",
                    help='write "127.0.0.1:PORT" here once listening')
    ap.add_argument("--flavor", choices=FLAVORS, default="llama",
                    help="dialect of /health, / and 404 (default llama)")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help="model name to report (default %s)" % DEFAULT_MODEL)
    ap.add_argument("--script", help="initial script, as JSON")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="log requests and errors to stderr")
    args = ap.parse_args(argv)
    script = json.loads(args.script) if args.script else None
    fs = FakeServer(port=args.port, flavor=args.flavor, model=args.model,
                    script=script, verbose=args.verbose)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fs.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(fs.address + "\n")
        os.replace(tmp, args.port_file)
    if args.verbose:
        sys.stderr.write("fake_infer: listening on %s (flavor %s)\n"
                         % (fs.address, fs.flavor))
    while not stop.wait(0.2):
        pass
    fs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
