"""What the synchronous and the asyncio clients share: the base URL,
request bodies, query strings, reply decoding and the SSE parser.  No
I/O here."""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple, Union)

from .errors import Error, JobFailed, error_from_reply

DEFAULT_URL = "http://127.0.0.1:7707"
USER_AGENT = "gpuq-python/0.1"

#: Job states after which nothing more happens to a job.
TERMINAL = frozenset(("succeeded", "failed", "cancelled", "expired",
                      "dead"))

#: A job object (doc/api.md, "The job object") or a job id.
JobRef = Union[str, Mapping[str, Any]]

_JOB_FIELDS = ("metadata", "priority", "idempotency_key", "queue_timeout",
               "depends_on", "callback_url")


class Endpoint:
    """A parsed base URL: scheme, host, port and a path prefix."""

    def __init__(self, url: Optional[str]) -> None:
        url = url or os.environ.get("GPUQ_URL") or DEFAULT_URL
        if "://" not in url:
            url = "http://" + url
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("gpuq: bad URL %r (want http://HOST:PORT)"
                             % url)
        self.url = url.rstrip("/")
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        host = self.host if ":" not in self.host else "[%s]" % self.host
        default = 443 if u.scheme == "https" else 80
        self.host_header = host if self.port == default else "%s:%d" % (
            host, self.port)

    def path(self, path: str) -> str:
        return self.prefix + path


def base_headers(token: Optional[str]) -> Dict[str, str]:
    h = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    return h


def encode(body: Any) -> Optional[bytes]:
    if body is None:
        return None
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode(raw: bytes) -> Any:
    """The reply body: parsed JSON, else text, else None when empty."""
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


def check(status: int, headers: Mapping[str, str], raw: bytes,
          job_reply: bool = False) -> Any:
    """The decoded body of a 2xx reply (None for 204); raises the
    :class:`~gpuq.Error` for anything else."""
    body = decode(raw)
    if 200 <= status < 300:
        return None if status == 204 else body
    raise error_from_reply(status, headers, body, job_reply)


def job_id(job: JobRef) -> str:
    """The id of a job object, or the id itself."""
    if isinstance(job, Mapping):
        return str(job["id"])
    return str(job)


def job_path(job: JobRef, suffix: str = "") -> str:
    return "/v1/jobs/%s%s" % (urllib.parse.quote(job_id(job), safe=""),
                              suffix)


def quote(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def query(params: Mapping[str, Any]) -> str:
    """'?k=v&...' of the params that are not None ('' when none)."""
    kv = [(k, v if isinstance(v, str) else json.dumps(v))
          for k, v in params.items() if v is not None]
    return "?" + urllib.parse.urlencode(kv) if kv else ""


def submit_body(cls: str, payload: Any = None,
                metadata: Optional[Mapping[str, Any]] = None,
                priority: Optional[int] = None,
                idempotency_key: Optional[str] = None,
                queue_timeout: Optional[float] = None,
                depends_on: Optional[Iterable[JobRef]] = None,
                callback_url: Optional[str] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {"class": cls}
    if payload is not None:
        body["payload"] = payload
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if priority is not None:
        body["priority"] = priority
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if queue_timeout is not None:
        body["queue_timeout"] = queue_timeout
    if depends_on is not None:
        body["depends_on"] = [job_id(j) for j in depends_on]
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body


def check_job_fields(fields: Mapping[str, Any]) -> None:
    bad = sorted(set(fields) - set(_JOB_FIELDS))
    if bad:
        raise TypeError("unexpected keyword argument(s): %s"
                        % ", ".join(bad))


def transcription_payload(audio_path: Optional[str],
                          audio_bytes: Optional[bytes],
                          language: Optional[str],
                          prompt: Optional[str]) -> Dict[str, Any]:
    if (audio_path is None) == (audio_bytes is None):
        raise ValueError("give exactly one of audio_path and audio_bytes")
    p: Dict[str, Any] = {}
    if audio_path is not None:
        p["audio_path"] = os.fspath(audio_path)
    elif audio_bytes is not None:
        p["audio"] = base64.b64encode(bytes(audio_bytes)).decode("ascii")
    if language is not None:
        p["language"] = language
    if prompt is not None:
        p["prompt"] = prompt
    return p


def summarization_payload(text: Optional[str], from_job: Optional[JobRef],
                          instructions: Optional[str],
                          max_words: Optional[int]) -> Dict[str, Any]:
    if (text is None) == (from_job is None):
        raise ValueError("give exactly one of text and from_job")
    p: Dict[str, Any] = {}
    if text is not None:
        p["text"] = text
    else:
        p["from_job"] = job_id(from_job)  # type: ignore[arg-type]
    if instructions is not None:
        p["instructions"] = instructions
    if max_words is not None:
        p["max_words"] = max_words
    return p


def chat_body(messages: Sequence[Mapping[str, Any]], stream: bool,
              model: Optional[str],
              params: Mapping[str, Any]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"messages": [dict(m) for m in messages]}
    if model is not None:
        body["model"] = model
    body.update(params)
    body["stream"] = bool(stream)
    return body


def chat_headers(cls: Optional[str]) -> Dict[str, str]:
    return {"X-Gpuq-Class": cls} if cls else {}


def lock_body(cls: str, holder: Optional[str],
              metadata: Optional[Mapping[str, Any]], wait: float,
              priority: Optional[int]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"class": cls, "wait": wait}
    if holder is not None:
        body["holder"] = holder
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if priority is not None:
        body["priority"] = priority
    return body


def lock_metadata(job_id_: Optional[str],
                  metadata: Optional[Mapping[str, Any]]
                  ) -> Optional[Dict[str, Any]]:
    if job_id_ is None:
        return dict(metadata) if metadata is not None else None
    md = dict(metadata or {})
    md["job_id"] = job_id_
    return md


def fail_body(token: int, error: Any, retryable: bool) -> Dict[str, Any]:
    body: Dict[str, Any] = {"token": token, "retryable": bool(retryable)}
    if isinstance(error, BaseException):
        error = {"code": type(error).__name__,
                 "message": str(error) or type(error).__name__}
    if error is not None:
        body["error"] = error
    return body


def heartbeat_interval(ttl: Any) -> float:
    """A third of the ttl, at least 50 ms."""
    try:
        t = float(ttl)
    except (TypeError, ValueError):
        t = 120.0
    return max(0.05, t / 3.0)


def long_poll_timeout(base: Optional[float], wait: float) -> Optional[float]:
    """The socket timeout of a request the daemon holds up to `wait`
    seconds."""
    if base is None:
        return None
    return float(wait) + base


class SSEParser:
    """Server-Sent Events, fed one line at a time."""

    def __init__(self) -> None:
        self.event: Optional[str] = None
        self.data: List[str] = []

    def feed(self, line: str) -> Optional[Tuple[str, str]]:
        """(event, data) when the line ends an event, else None."""
        line = line.rstrip("\r\n")
        if line == "":
            if not self.data and self.event is None:
                return None
            out = (self.event or "message", "\n".join(self.data))
            self.event, self.data = None, []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


class ChatState:
    """What a streamed chat completion has told so far."""

    def __init__(self) -> None:
        self.id: Optional[str] = None
        self.model: Optional[str] = None
        self.finish_reason: Optional[str] = None
        self.usage: Optional[Dict[str, Any]] = None
        self.done = False

    @property
    def job_id(self) -> Optional[str]:
        """The gpuq job behind the completion (``chatcmpl-gpuq-jN``)."""
        if self.id and self.id.startswith("chatcmpl-gpuq-"):
            return self.id[len("chatcmpl-gpuq-"):]
        return None

    def feed(self, data: str) -> Optional[str]:
        """The text of one ``data:`` event (None when it has none); raises
        :class:`JobFailed` for an error event."""
        if data.strip() == "[DONE]":
            self.done = True
            return None
        try:
            obj = json.loads(data)
        except ValueError:
            raise Error(200, "bad_reply", "unparsable stream event: %r"
                        % data[:200])
        if not isinstance(obj, dict):
            return None
        err = obj.get("error")
        if err is not None:
            self.done = True
            if isinstance(err, dict):
                raise JobFailed(200, str(err.get("code") or "failed"),
                                str(err.get("message") or "job failed"),
                                body=obj)
            raise JobFailed(200, "failed", str(err), body=obj)
        self.id = obj.get("id", self.id)
        self.model = obj.get("model", self.model)
        if obj.get("usage") is not None:
            self.usage = obj["usage"]
        text = None
        for ch in obj.get("choices") or ():
            if ch.get("finish_reason") is not None:
                self.finish_reason = ch["finish_reason"]
            piece = (ch.get("delta") or {}).get("content")
            if piece:
                text = (text or "") + piece
        return text

    def feed_completion(self, obj: Any) -> str:
        """The text of a non-streamed ``chat.completion``."""
        if not isinstance(obj, dict):
            raise Error(200, "bad_reply", "not a chat completion: %r"
                        % (obj,))
        self.id = obj.get("id")
        self.model = obj.get("model")
        self.usage = obj.get("usage")
        self.done = True
        choices = obj.get("choices") or [{}]
        self.finish_reason = choices[0].get("finish_reason")
        return ((choices[0].get("message") or {}).get("content")) or ""


class JobStreamState:
    """What ``GET /v1/jobs/{id}/stream`` has told so far."""

    def __init__(self) -> None:
        self.job: Optional[Dict[str, Any]] = None

    def feed(self, event: str, data: str) -> Optional[str]:
        if event == "token":
            try:
                return json.loads(data).get("text") or None
            except (ValueError, AttributeError):
                return None
        if event == "done":
            try:
                self.job = json.loads(data)
            except ValueError:
                self.job = None
        return None
