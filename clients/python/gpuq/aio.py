"""The asyncio gpuq client: the API of :class:`gpuq.Client` with
coroutines, on a minimal HTTP/1.1 client over
:func:`asyncio.open_connection` (standard library only; one connection per
request, so one :class:`AsyncClient` may be shared by tasks).

    async with AsyncClient() as gq:
        async with gq.acquire_lock("transcription", job_id="m-7"):
            ...                                 # our turn on the GPU
        job = await gq.submit_summarization_job(text="...")
        async for piece in gq.chat([{"role": "user", "content": "Hi"}]):
            print(piece, end="")
"""

from __future__ import annotations

import asyncio
import inspect
import ssl as _ssl
import time
from types import TracebackType
from typing import (Any, AsyncIterator, Awaitable, Callable, Dict, Generator,
                    Iterable, List, Mapping, Optional, Sequence, Type, Union)

from . import _common as c
from .errors import BadState, Error, NotFound, StaleToken, Timeout

__all__ = ["AsyncClient", "AsyncLock", "AsyncLease", "AsyncChatStream",
           "AsyncJobStream"]

Job = Dict[str, Any]

STREAM_TIMEOUT = 300.0
_DEFAULT: Any = object()
_LINE_LIMIT = 1 << 20   # the longest header or chunk-size line we accept


async def _within(aw: Awaitable[Any], timeout: Optional[float]) -> Any:
    if timeout is None:
        return await aw
    return await asyncio.wait_for(aw, timeout)


class _Reply:
    """The head of a reply, and its body read as it arrives."""

    def __init__(self, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter,
                 timeout: Optional[float]) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.status = 0
        self.headers: Dict[str, str] = {}
        self._framing = "eof"
        self._left = 0
        self._done = False

    async def read_head(self, method: str) -> None:
        while True:
            line = await _within(self.reader.readline(), self.timeout)
            if not line:
                raise ConnectionResetError("gpuq: connection closed before "
                                           "the reply")
            parts = line.decode("latin-1").split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise ConnectionError("gpuq: bad status line %r" % line)
            self.status = int(parts[1])
            self.headers = {}
            while True:
                h = await _within(self.reader.readline(), self.timeout)
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                self.headers[k.strip().lower()] = v.strip()
            if self.status >= 200 or self.status == 101:
                break  # skip 100 Continue and other interim replies
        te = self.headers.get("transfer-encoding", "").lower()
        if method == "HEAD" or self.status in (204, 304):
            self._done = True
        elif "chunked" in te:
            self._framing = "chunked"
        elif "content-length" in self.headers:
            self._framing = "length"
            self._left = int(self.headers["content-length"])
            self._done = self._left == 0

    async def chunk(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        if self._done:
            return b""
        rd, t = self.reader, self.timeout
        if self._framing == "chunked":
            while True:
                line = await _within(rd.readline(), t)
                if not line:
                    raise ConnectionResetError("gpuq: reply cut short")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:   # trailers, then the blank line
                        tl = await _within(rd.readline(), t)
                        if tl in (b"\r\n", b"\n", b""):
                            break
                    self._done = True
                    return b""
                data = await _within(rd.readexactly(size), t)
                await _within(rd.readexactly(2), t)
                if data:
                    return data
        if self._framing == "length":
            data = await _within(rd.read(min(self._left, 1 << 16)), t)
            if not data:
                raise ConnectionResetError("gpuq: reply cut short")
            self._left -= len(data)
            self._done = self._left == 0
            return data
        data = await _within(rd.read(1 << 16), t)
        if not data:
            self._done = True
        return data

    async def read(self) -> bytes:
        out = bytearray()
        while True:
            data = await self.chunk()
            if not data:
                return bytes(out)
            out += data

    async def lines(self) -> AsyncIterator[str]:
        buf = b""
        while True:
            data = await self.chunk()
            if not data:
                if buf:
                    yield buf.decode("utf-8", "replace")
                return
            buf += data
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    break
                line, buf = buf[:i + 1], buf[i + 1:]
                yield line.decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # pragma: no cover - the loop is gone
            pass


class AsyncClient:
    """The asyncio twin of :class:`gpuq.Client`: same arguments, same
    methods (coroutines), same errors."""

    def __init__(self, url: Optional[str] = None,
                 token: Optional[str] = None,
                 timeout: Optional[float] = 30.0) -> None:
        self.endpoint = c.Endpoint(url)
        self.url = self.endpoint.url
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return "AsyncClient(%r)" % self.url

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release (connections are per request)."""

    # -- HTTP ------------------------------------------------------------

    async def _open(self, method: str, path: str, body: Any = None,
                    headers: Optional[Mapping[str, str]] = None,
                    timeout: Optional[float] = None) -> _Reply:
        ep = self.endpoint
        ctx = _ssl.create_default_context() if ep.scheme == "https" else None
        reader, writer = await _within(asyncio.open_connection(
            ep.host, ep.port, ssl=ctx, limit=_LINE_LIMIT), timeout)
        r = _Reply(reader, writer, timeout)
        try:
            data = c.encode(body)
            hdrs = c.base_headers(self.token)
            hdrs["Host"] = ep.host_header
            hdrs["Connection"] = "close"
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            if data is not None or method in ("POST", "PUT", "PATCH"):
                hdrs["Content-Length"] = str(len(data or b""))
            hdrs.update(headers or {})
            head = "%s %s HTTP/1.1\r\n" % (method, ep.path(path))
            head += "".join("%s: %s\r\n" % kv for kv in hdrs.items())
            writer.write(head.encode("latin-1") + b"\r\n" + (data or b""))
            await _within(writer.drain(), timeout)
            await r.read_head(method)
            return r
        except BaseException:
            r.close()
            raise

    async def request(self, method: str, path: str, body: Any = None, *,
                      headers: Optional[Mapping[str, str]] = None,
                      timeout: Optional[float] = _DEFAULT,
                      job_reply: bool = False) -> Any:
        """One request; the decoded body of a 2xx reply (None for 204),
        else raises :class:`gpuq.Error`."""
        t = self.timeout if timeout is _DEFAULT else timeout
        r = await self._open(method, path, body, headers, t)
        try:
            raw = await r.read()
        finally:
            r.close()
        return c.check(r.status, r.headers, raw, job_reply)

    async def _stream(self, method: str, path: str, body: Any,
                      headers: Optional[Mapping[str, str]],
                      timeout: Optional[float],
                      job_reply: bool = False) -> _Reply:
        r = await self._open(method, path, body, headers, timeout)
        if not 200 <= r.status < 300:
            try:
                raw = await r.read()
            finally:
                r.close()
            c.check(r.status, r.headers, raw, job_reply)
        return r

    # -- jobs --------------------------------------------------------------

    async def submit(self, cls: str, payload: Any = None,
                     metadata: Optional[Mapping[str, Any]] = None,
                     priority: Optional[int] = None,
                     idempotency_key: Optional[str] = None,
                     queue_timeout: Optional[float] = None,
                     depends_on: Optional[Iterable[c.JobRef]] = None,
                     callback_url: Optional[str] = None) -> Job:
        """See :meth:`gpuq.Client.submit`."""
        return await self.request("POST", "/v1/jobs", c.submit_body(
            cls, payload, metadata, priority, idempotency_key,
            queue_timeout, depends_on, callback_url))

    async def get(self, job: c.JobRef, wait: Optional[float] = None) -> Job:
        """See :meth:`gpuq.Client.get`."""
        return await self.request(
            "GET", c.job_path(job) + c.query({"wait": wait}),
            timeout=c.long_poll_timeout(self.timeout, wait or 0))

    async def wait(self, job: c.JobRef,
                   timeout: Optional[float] = None) -> Job:
        """See :meth:`gpuq.Client.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 300.0
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
            t0 = time.monotonic()
            j = await self.get(job, wait=step if step > 0 else None)
            if j["state"] in c.TERMINAL:
                return j
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(None, "timeout", "job %s is still %s after "
                              "%gs" % (j["id"], j["state"], timeout or 0),
                              body=j)
            if time.monotonic() - t0 < 0.1:
                await asyncio.sleep(0.1)

    async def list_page(self, cls: Optional[str] = None,
                        state: Optional[str] = None,
                        limit: Optional[int] = None,
                        after: Optional[str] = None) -> Dict[str, Any]:
        """See :meth:`gpuq.Client.list_page`."""
        return await self.request("GET", "/v1/jobs" + c.query(
            {"class": cls, "state": state, "limit": limit,
             "after": after}))

    async def list(self, cls: Optional[str] = None,
                   state: Optional[str] = None,
                   limit: Optional[int] = None,
                   after: Optional[str] = None,
                   page_size: int = 100) -> AsyncIterator[Job]:
        """``async for job in client.list(...)``; see
        :meth:`gpuq.Client.list`."""
        n = 0
        while limit is None or n < limit:
            size = page_size if limit is None else min(page_size, limit - n)
            page = await self.list_page(cls, state, size, after)
            for j in page["jobs"]:
                yield j
                n += 1
            after = page.get("next")
            if not after or not page["jobs"]:
                return

    async def cancel(self, job: c.JobRef) -> Job:
        """See :meth:`gpuq.Client.cancel`."""
        return await self.request("POST", c.job_path(job, "/cancel"), {})

    async def requeue(self, job: c.JobRef) -> Job:
        """See :meth:`gpuq.Client.requeue`."""
        return await self.request("POST", c.job_path(job, "/requeue"), {})

    async def status(self) -> Dict[str, Any]:
        """``GET /v1/status``."""
        return await self.request("GET", "/v1/status")

    get_status = status

    async def healthy(self) -> bool:
        """True if ``/healthz`` answers 200."""
        try:
            await self.request("GET", "/healthz")
            return True
        except Error:
            return False

    # -- the application's helpers ------------------------------------------

    async def submit_transcription_job(self,
                                       audio_path: Optional[str] = None,
                                       audio_bytes: Optional[bytes] = None,
                                       language: Optional[str] = None,
                                       prompt: Optional[str] = None,
                                       cls: str = "transcription",
                                       **job_fields: Any) -> Job:
        """See :meth:`gpuq.Client.submit_transcription_job`."""
        c.check_job_fields(job_fields)
        return await self.submit(cls, c.transcription_payload(
            audio_path, audio_bytes, language, prompt), **job_fields)

    async def submit_summarization_job(self, text: Optional[str] = None,
                                       from_job: Optional[c.JobRef] = None,
                                       instructions: Optional[str] = None,
                                       max_words: Optional[int] = None,
                                       cls: str = "summarization",
                                       **job_fields: Any) -> Job:
        """See :meth:`gpuq.Client.submit_summarization_job`."""
        c.check_job_fields(job_fields)
        return await self.submit(cls, c.summarization_payload(
            text, from_job, instructions, max_words), **job_fields)

    def chat(self, messages: Sequence[Mapping[str, Any]],
             stream: bool = True, cls: Optional[str] = None,
             model: Optional[str] = None, timeout: Optional[float] = None,
             **params: Any) -> "AsyncChatStream":
        """A chat completion (``POST /v1/chat/completions``)::

            async for piece in client.chat(messages):   # streamed
                ...
            text = await client.chat(messages, stream=False)

        Arguments as :meth:`gpuq.Client.chat`.  Leaving an ``async with``
        around the stream before its end hangs up (the job is
        cancelled)."""
        return AsyncChatStream(
            self, c.chat_body(messages, stream, model, params),
            c.chat_headers(cls), STREAM_TIMEOUT if timeout is None
            else timeout, stream)

    def stream(self, job: c.JobRef,
               timeout: Optional[float] = None) -> "AsyncJobStream":
        """``async for piece in client.stream(job)``; see
        :meth:`gpuq.Client.stream`."""
        return AsyncJobStream(self, c.job_path(job, "/stream"),
                              STREAM_TIMEOUT if timeout is None else timeout)

    async def events(self, cls: Optional[str] = None,
                     job: Optional[c.JobRef] = None
                     ) -> AsyncIterator[Dict[str, Any]]:
        """``async for ev in client.events()``; see
        :meth:`gpuq.Client.events`."""
        q = c.query({"class": cls,
                     "job": c.job_id(job) if job is not None else None})
        t = None if self.timeout is None else max(self.timeout, 60.0)
        r = await self._stream("GET", "/v1/events" + q, None, None, t)
        try:
            p = c.SSEParser()
            async for line in r.lines():
                ev = p.feed(line)
                if ev and ev[0] == "job":
                    yield c.decode(ev[1].encode())
        finally:
            r.close()

    # -- GPU locks ------------------------------------------------------------

    def lock(self, cls: str, holder: Optional[str] = None,
             metadata: Optional[Mapping[str, Any]] = None,
             wait: float = 30, priority: Optional[int] = None
             ) -> "AsyncLock":
        """A GPU lock as an async context manager; see
        :meth:`gpuq.Client.lock`."""
        return AsyncLock(self, cls, holder, metadata, wait, priority)

    def acquire_lock(self, job_type: str, job_id: Optional[str] = None,
                     metadata: Optional[Mapping[str, Any]] = None,
                     wait: float = 30,
                     holder: Optional[str] = None) -> "AsyncLock":
        """The application's lock::

            async with client.acquire_lock("transcription", job_id="m-7"):
                ...

        Waits up to `wait` seconds for the GPU (:class:`gpuq.Timeout`
        after that; :class:`gpuq.UnknownClass`, a ValueError, for an
        unknown `job_type`), heartbeats in a background task every ttl/3,
        and releases on exit even when the body raises or is cancelled.
        `job_id` is stored in the lock job's metadata as ``job_id``."""
        return AsyncLock(self, job_type, holder,
                         c.lock_metadata(job_id, metadata), wait, None)

    # -- worker leases ----------------------------------------------------

    async def lease(self, classes: Union[str, Sequence[str]],
                    wait: float = 30, worker: Optional[str] = None
                    ) -> Optional["AsyncLease"]:
        """See :meth:`gpuq.Client.lease`."""
        if isinstance(classes, str):
            classes = [classes]
        body: Dict[str, Any] = {"classes": list(classes), "wait": wait}
        if worker is not None:
            body["worker"] = worker
        g = await self.request(
            "POST", "/v1/leases", body,
            timeout=c.long_poll_timeout(self.timeout, wait))
        return None if g is None else AsyncLease(self, g)

    async def work(self, classes: Union[str, Sequence[str]],
                   handler: Callable[[Job], Any],
                   worker: Optional[str] = None, wait: float = 30,
                   max_jobs: Optional[int] = None,
                   stop: Optional[asyncio.Event] = None) -> int:
        """See :meth:`gpuq.Client.work`; `handler` may be a coroutine
        function."""
        n = 0
        while (max_jobs is None or n < max_jobs) and not (
                stop is not None and stop.is_set()):
            lease = await self.lease(classes, wait, worker)
            if lease is None:
                continue
            n += 1
            async with lease:
                try:
                    try:
                        result = handler(lease.job)
                        if inspect.isawaitable(result):
                            result = await result
                    except Exception as e:
                        await lease.fail(e, retryable=True)
                    else:
                        await lease.complete(result)
                except (StaleToken, BadState, NotFound):
                    pass
        return n


class _Heartbeat:
    """A task calling beat() every `interval` seconds until stopped, or
    until the grant is gone (StaleToken / NotFound)."""

    def __init__(self, beat: Callable[[], Awaitable[Any]],
                 interval: float) -> None:
        self.beat = beat
        self.interval = interval
        self.lost: Optional[Error] = None
        self.beats = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
                self.beats += 1
            except (StaleToken, NotFound) as e:
                self.lost = e
                return
            except (Error, OSError, asyncio.TimeoutError):
                continue

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


class AsyncLock:
    """A GPU lock as an async context manager; see
    :meth:`AsyncClient.acquire_lock`.  Attributes as :class:`gpuq.Lock`."""

    def __init__(self, client: AsyncClient, cls: str, holder: Optional[str],
                 metadata: Optional[Mapping[str, Any]], wait: float,
                 priority: Optional[int]) -> None:
        self.client = client
        self.cls = cls
        self.holder = holder
        self.metadata = metadata
        self.wait = wait
        self.priority = priority
        self.lock_id: Optional[str] = None
        self.token: Optional[int] = None
        self.ttl: Optional[float] = None
        self.job_id: Optional[str] = None
        self.released: Optional[Job] = None
        self._hb: Optional[_Heartbeat] = None

    def __repr__(self) -> str:
        return "<gpuq.AsyncLock %s %s token=%s>" % (self.cls, self.lock_id,
                                                    self.token)

    @property
    def lost(self) -> bool:
        return self._hb is not None and self._hb.lost is not None

    async def acquire(self) -> "AsyncLock":
        """Waits for the grant (cancelling the wait withdraws the request:
        the daemon sees the hang-up) and starts the heartbeat task."""
        if self.lock_id is not None:
            raise RuntimeError("gpuq.AsyncLock: already acquired")
        g = await self.client.request(
            "POST", "/v1/locks",
            c.lock_body(self.cls, self.holder, self.metadata, self.wait,
                        self.priority),
            timeout=c.long_poll_timeout(self.client.timeout, self.wait))
        self.lock_id, self.token = g["lock_id"], g["token"]
        self.ttl, self.job_id = g.get("ttl"), g.get("job_id")
        self._hb = _Heartbeat(self.heartbeat, c.heartbeat_interval(self.ttl))
        return self

    async def heartbeat(self) -> Dict[str, Any]:
        """Extends the lock by its ttl (the task does this)."""
        return await self.client.request(
            "POST", "/v1/locks/%s/heartbeat" % c.quote(str(self.lock_id)),
            {"token": self.token})

    async def _delete(self) -> Job:
        return await self.client.request(
            "DELETE", "/v1/locks/%s?token=%s" % (
                c.quote(str(self.lock_id)), self.token))

    async def release(self) -> Job:
        """Stops the heartbeats and releases the lock (shielded from
        cancellation); returns the lock job."""
        if self.lock_id is None:
            raise RuntimeError("gpuq.AsyncLock: not acquired")
        if self._hb is not None:
            await self._hb.stop()
        if self.released is None:
            self.released = await asyncio.shield(self._delete())
        return self.released

    async def __aenter__(self) -> "AsyncLock":
        return await self.acquire()

    async def __aexit__(self, et: Optional[Type[BaseException]],
                        ev: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        try:
            await self.release()
        except (Error, OSError, asyncio.TimeoutError):
            if et is None:
                raise


class AsyncLease:
    """A granted worker lease; see :class:`gpuq.Lease`.  As an async
    context manager it heartbeats in a task."""

    def __init__(self, client: AsyncClient,
                 grant: Mapping[str, Any]) -> None:
        self.client = client
        self.lease_id: str = grant["lease_id"]
        self.token: int = grant["token"]
        self.ttl = grant.get("ttl")
        self.job: Job = grant["job"]
        self.should_yield = False
        self.finished: Optional[Job] = None
        self._hb: Optional[_Heartbeat] = None

    def __repr__(self) -> str:
        return "<gpuq.AsyncLease %s token=%s>" % (self.lease_id, self.token)

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    @property
    def payload(self) -> Any:
        return self.job.get("payload")

    @property
    def lost(self) -> bool:
        return self._hb is not None and self._hb.lost is not None

    async def _op(self, op: str, body: Dict[str, Any]) -> Any:
        body["token"] = self.token
        return await self.client.request(
            "POST", "/v1/leases/%s/%s" % (c.quote(self.lease_id), op), body)

    async def heartbeat(self) -> Dict[str, Any]:
        """Extends the lease; returns ``{"ttl", "yield"}``."""
        r = await self._op("heartbeat", {})
        self.should_yield = bool(r.get("yield"))
        return r

    async def _end(self, op: str, body: Dict[str, Any]) -> Job:
        if self._hb is not None:
            await self._hb.stop()
        job: Job = await self._op(op, body)
        self.finished = job
        return job

    async def complete(self, result: Any = None) -> Job:
        """The job succeeds with `result`."""
        body: Dict[str, Any] = {}
        if result is not None:
            body["result"] = result
        return await self._end("complete", body)

    async def fail(self, error: Any = None, retryable: bool = True) -> Job:
        """Fails the job (`error`: a string, ``{"code", "message"}`` or an
        exception)."""
        return await self._end("fail", c.fail_body(0, error, retryable))

    async def yield_(self, progress: Any = None) -> Job:
        """Gives the GPU back; the job keeps its place."""
        body: Dict[str, Any] = {}
        if progress is not None:
            body["progress"] = progress
        return await self._end("yield", body)

    async def __aenter__(self) -> "AsyncLease":
        self._hb = _Heartbeat(self.heartbeat, c.heartbeat_interval(self.ttl))
        return self

    async def __aexit__(self, et: Optional[Type[BaseException]],
                        ev: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        if self._hb is not None:
            await self._hb.stop()
        if self.finished is not None:
            return
        try:
            await asyncio.shield(self.fail(
                ev if ev is not None else "lease left without a result",
                retryable=True))
        except (Error, OSError, asyncio.TimeoutError):
            if et is None:
                raise


class AsyncChatStream:
    """A chat completion: ``await`` it for the whole text, or ``async
    for`` over it for the pieces (then ``text``, ``job_id``,
    ``finish_reason``, ``usage`` as :class:`gpuq.ChatStream`)."""

    def __init__(self, client: AsyncClient, body: Dict[str, Any],
                 headers: Dict[str, str], timeout: Optional[float],
                 stream: bool) -> None:
        self._client = client
        self._body = body
        self._headers = headers
        self._timeout = timeout
        self._stream = stream
        self._state = c.ChatState()
        self._pieces: List[str] = []
        self._r: Optional[_Reply] = None
        self._lines: Optional[AsyncIterator[str]] = None
        self._sse = c.SSEParser()
        self._ended = False

    def __await__(self) -> Generator[Any, None, str]:
        return self._collect().__await__()

    async def _collect(self) -> str:
        if not self._stream:
            obj = await self._client.request(
                "POST", "/v1/chat/completions", self._body,
                headers=self._headers, timeout=self._timeout,
                job_reply=True)
            return self._state.feed_completion(obj)
        async for _ in self:
            pass
        return self.text

    def __aiter__(self) -> "AsyncChatStream":
        if not self._stream:
            raise TypeError("chat(stream=False): await it instead")
        return self

    async def __anext__(self) -> str:
        if self._ended:
            raise StopAsyncIteration
        try:
            if self._r is None:
                self._r = await self._client._stream(
                    "POST", "/v1/chat/completions", self._body,
                    self._headers, self._timeout, job_reply=True)
                self._lines = self._r.lines().__aiter__()
            assert self._lines is not None
            while True:
                try:
                    line = await self._lines.__anext__()
                except StopAsyncIteration:
                    break
                ev = self._sse.feed(line)
                if ev is None:
                    continue
                piece = self._state.feed(ev[1])
                if piece:
                    self._pieces.append(piece)
                    if self._state.done:
                        self.close()
                    return piece
                if self._state.done:
                    break
        except BaseException:
            self.close()
            raise
        self.close()
        raise StopAsyncIteration

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    @property
    def job_id(self) -> Optional[str]:
        return self._state.job_id

    @property
    def finish_reason(self) -> Optional[str]:
        return self._state.finish_reason

    @property
    def usage(self) -> Optional[Dict[str, Any]]:
        return self._state.usage

    def close(self) -> None:
        """Hangs up (before the end, this cancels the job)."""
        self._ended = True
        if self._r is not None:
            self._r.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncChatStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class AsyncJobStream:
    """``GET /v1/jobs/{id}/stream`` as an async iterator of text pieces;
    ``job`` is the final job once it has ended."""

    def __init__(self, client: AsyncClient, path: str,
                 timeout: Optional[float]) -> None:
        self._client = client
        self._path = path
        self._timeout = timeout
        self._state = c.JobStreamState()
        self._r: Optional[_Reply] = None
        self._lines: Optional[AsyncIterator[str]] = None
        self._sse = c.SSEParser()
        self._ended = False

    @property
    def job(self) -> Optional[Job]:
        return self._state.job

    def __aiter__(self) -> "AsyncJobStream":
        return self

    async def __anext__(self) -> str:
        if self._ended:
            raise StopAsyncIteration
        try:
            if self._r is None:
                self._r = await self._client._stream(
                    "GET", self._path, None, None, self._timeout)
                self._lines = self._r.lines().__aiter__()
            assert self._lines is not None
            while True:
                try:
                    line = await self._lines.__anext__()
                except StopAsyncIteration:
                    break
                ev = self._sse.feed(line)
                if ev is None:
                    continue
                piece = self._state.feed(*ev)
                if piece:
                    return piece
                if ev[0] == "done":
                    break
        except BaseException:
            self.close()
            raise
        self.close()
        raise StopAsyncIteration

    def close(self) -> None:
        self._ended = True
        if self._r is not None:
            self._r.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncJobStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
