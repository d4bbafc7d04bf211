"""The synchronous gpuq client (standard library only: http.client and
threads).  Every request uses its own connection, so one :class:`Client`
may be shared by threads."""

from __future__ import annotations

import http.client
import threading
import time
from types import TracebackType
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Type, Union)

from . import _common as c
from .errors import BadState, Error, NotFound, StaleToken, Timeout

__all__ = ["Client", "Lock", "Lease", "ChatStream", "JobStream"]

Job = Dict[str, Any]

#: Seconds between reads of a streamed reply before giving up, when the
#: caller gives no timeout (chat tokens, a job's stream).
STREAM_TIMEOUT = 300.0

_DEFAULT: Any = object()   # "the client's timeout"


class _Reply:
    """An open reply whose body has not been read (streams)."""

    def __init__(self, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}

    def lines(self) -> Iterator[str]:
        while True:
            raw = self.resp.readline()
            if not raw:
                return
            yield raw.decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self.resp.close()
        finally:
            self.conn.close()


class Client:
    """A gpuqd client.

    url: the daemon (default ``$GPUQ_URL``, else http://127.0.0.1:7707);
    a path prefix is kept (``http://proxy/gpuq``).  token: sent as
    ``Authorization: Bearer TOKEN``.  timeout: seconds a request may take
    (long-polls get their ``wait`` on top); None waits forever.

    Errors: any non-2xx reply raises a :class:`gpuq.Error` subclass
    (:class:`gpuq.UnknownClass`, :class:`gpuq.QueueFull`, ...);
    connection failures raise :class:`OSError`."""

    def __init__(self, url: Optional[str] = None,
                 token: Optional[str] = None,
                 timeout: Optional[float] = 30.0) -> None:
        self.endpoint = c.Endpoint(url)
        self.url = self.endpoint.url
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return "Client(%r)" % self.url

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (connections are per request); for
        symmetry with :class:`gpuq.aio.AsyncClient`."""

    # -- HTTP ------------------------------------------------------------

    def _open(self, method: str, path: str, body: Any = None,
              headers: Optional[Mapping[str, str]] = None,
              timeout: Optional[float] = None) -> _Reply:
        ep = self.endpoint
        cls = (http.client.HTTPSConnection if ep.scheme == "https"
               else http.client.HTTPConnection)
        conn = cls(ep.host, ep.port, timeout=timeout)
        try:
            data = c.encode(body)
            hdrs = c.base_headers(self.token)
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            hdrs.update(headers or {})
            conn.request(method, ep.path(path), body=data, headers=hdrs)
            return _Reply(conn, conn.getresponse())
        except BaseException:
            conn.close()
            raise

    def request(self, method: str, path: str, body: Any = None, *,
                headers: Optional[Mapping[str, str]] = None,
                timeout: Optional[float] = _DEFAULT,
                job_reply: bool = False) -> Any:
        """One request; returns the decoded body of a 2xx reply (None for
        204) and raises :class:`gpuq.Error` otherwise.  path is relative
        to the base URL (``/v1/status``); timeout: seconds (default the
        client's)."""
        t = self.timeout if timeout is _DEFAULT else timeout
        r = self._open(method, path, body, headers, t)
        try:
            raw = r.resp.read()
        finally:
            r.close()
        return c.check(r.status, r.headers, raw, job_reply)

    def _stream(self, method: str, path: str, body: Any,
                headers: Optional[Mapping[str, str]],
                timeout: Optional[float], job_reply: bool = False
                ) -> _Reply:
        r = self._open(method, path, body, headers, timeout)
        if not 200 <= r.status < 300:
            try:
                raw = r.resp.read()
            finally:
                r.close()
            c.check(r.status, r.headers, raw, job_reply)
        return r

    # -- jobs --------------------------------------------------------------

    def submit(self, cls: str, payload: Any = None,
               metadata: Optional[Mapping[str, Any]] = None,
               priority: Optional[int] = None,
               idempotency_key: Optional[str] = None,
               queue_timeout: Optional[float] = None,
               depends_on: Optional[Iterable[c.JobRef]] = None,
               callback_url: Optional[str] = None) -> Job:
        """Submits a job of class `cls`; returns the job object (the
        existing job when `idempotency_key` was used before).  Raises
        :class:`gpuq.UnknownClass` (also a ValueError),
        :class:`gpuq.InvalidRequest`, :class:`gpuq.QueueFull` (see its
        ``retry_after``), :class:`gpuq.TooLarge`."""
        return self.request("POST", "/v1/jobs", c.submit_body(
            cls, payload, metadata, priority, idempotency_key,
            queue_timeout, depends_on, callback_url))

    def get(self, job: c.JobRef, wait: Optional[float] = None) -> Job:
        """The job with its history.  wait: hold the reply until the job
        is terminal or `wait` seconds (at most 300) pass."""
        return self.request("GET", c.job_path(job) + c.query({"wait": wait}),
                            timeout=c.long_poll_timeout(self.timeout,
                                                        wait or 0))

    def wait(self, job: c.JobRef, timeout: Optional[float] = None) -> Job:
        """Waits until the job is terminal and returns it (whatever its
        state: check ``job["state"]``).  Raises :class:`gpuq.Timeout`
        (status None) if it is not after `timeout` seconds (None: no
        limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 300.0
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
            t0 = time.monotonic()
            j = self.get(job, wait=step if step > 0 else None)
            if j["state"] in c.TERMINAL:
                return j
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(None, "timeout", "job %s is still %s after "
                              "%gs" % (j["id"], j["state"], timeout or 0),
                              body=j)
            if time.monotonic() - t0 < 0.1:
                time.sleep(0.1)  # answered early (draining): no busy loop

    def list_page(self, cls: Optional[str] = None,
                  state: Optional[str] = None,
                  limit: Optional[int] = None,
                  after: Optional[str] = None) -> Dict[str, Any]:
        """One page: ``{"jobs": [...], "next": id or None}``."""
        return self.request("GET", "/v1/jobs" + c.query(
            {"class": cls, "state": state, "limit": limit,
             "after": after}))

    def list(self, cls: Optional[str] = None, state: Optional[str] = None,
             limit: Optional[int] = None, after: Optional[str] = None,
             page_size: int = 100) -> Iterator[Job]:
        """Yields the jobs (without history) in id order, fetching pages
        of `page_size` as needed; at most `limit` jobs if given."""
        n = 0
        while limit is None or n < limit:
            size = page_size if limit is None else min(page_size, limit - n)
            page = self.list_page(cls, state, size, after)
            for j in page["jobs"]:
                yield j
                n += 1
            after = page.get("next")
            if not after or not page["jobs"]:
                return

    def cancel(self, job: c.JobRef) -> Job:
        """Cancels a queued or running job; :class:`gpuq.BadState` if it
        is already terminal."""
        return self.request("POST", c.job_path(job, "/cancel"), {})

    def requeue(self, job: c.JobRef) -> Job:
        """Queues a failed, dead, expired or cancelled job again."""
        return self.request("POST", c.job_path(job, "/requeue"), {})

    def status(self) -> Dict[str, Any]:
        """``GET /v1/status``: slots, classes, backends."""
        return self.request("GET", "/v1/status")

    get_status = status

    def healthy(self) -> bool:
        """True if ``/healthz`` answers 200 (False while draining)."""
        try:
            self.request("GET", "/healthz")
            return True
        except Error:
            return False

    # -- the application's helpers ------------------------------------------

    def submit_transcription_job(self, audio_path: Optional[str] = None,
                                 audio_bytes: Optional[bytes] = None,
                                 language: Optional[str] = None,
                                 prompt: Optional[str] = None,
                                 cls: str = "transcription",
                                 **job_fields: Any) -> Job:
        """Submits a transcription: `audio_path` (absolute, on the
        daemon's host, inside the class's ``audio_roots``) or
        `audio_bytes` (any format the daemon decodes; sent base64 as
        ``payload.audio``).  job_fields: those of :meth:`submit`.  The
        result is ``{"text", "segments", "language", "duration"}``."""
        c.check_job_fields(job_fields)
        return self.submit(cls, c.transcription_payload(
            audio_path, audio_bytes, language, prompt), **job_fields)

    def submit_summarization_job(self, text: Optional[str] = None,
                                 from_job: Optional[c.JobRef] = None,
                                 instructions: Optional[str] = None,
                                 max_words: Optional[int] = None,
                                 cls: str = "summarization",
                                 **job_fields: Any) -> Job:
        """Submits a summarization of `text`, or of the result of
        `from_job` (a job or id; it becomes a dependency).  The result is
        ``{"summary", "parts"}``."""
        c.check_job_fields(job_fields)
        return self.submit(cls, c.summarization_payload(
            text, from_job, instructions, max_words), **job_fields)

    def chat(self, messages: Sequence[Mapping[str, Any]],
             stream: bool = True, cls: Optional[str] = None,
             model: Optional[str] = None, timeout: Optional[float] = None,
             **params: Any) -> Union["ChatStream", str]:
        """A chat completion through ``POST /v1/chat/completions``.

        stream=True: returns a :class:`ChatStream` yielding the text
        pieces as they arrive (closing it early hangs up, which cancels
        the job).  stream=False: returns the whole text.  cls: the class
        (sent as ``X-Gpuq-Class``); else the daemon picks it from `model`
        or takes the first chat class.  params: more OpenAI fields
        (``max_tokens``, ``temperature``, ...).  timeout: seconds to wait
        for each piece (default 300).  A job that fails raises
        :class:`gpuq.JobFailed`."""
        body = c.chat_body(messages, stream, model, params)
        t = STREAM_TIMEOUT if timeout is None else timeout
        if not stream:
            state = c.ChatState()
            obj = self.request("POST", "/v1/chat/completions", body,
                               headers=c.chat_headers(cls), timeout=t,
                               job_reply=True)
            return state.feed_completion(obj)
        r = self._stream("POST", "/v1/chat/completions", body,
                         c.chat_headers(cls), t, job_reply=True)
        return ChatStream(r)

    def stream(self, job: c.JobRef,
               timeout: Optional[float] = None) -> "JobStream":
        """``GET /v1/jobs/{id}/stream``: a :class:`JobStream` yielding the
        text a chat job generates; its ``job`` is the final job after the
        end.  timeout: seconds to wait for each piece (default 300)."""
        r = self._stream("GET", c.job_path(job, "/stream"), None, None,
                         STREAM_TIMEOUT if timeout is None else timeout)
        return JobStream(r)

    def events(self, cls: Optional[str] = None,
               job: Optional[c.JobRef] = None) -> Iterator[Dict[str, Any]]:
        """Yields every state change (``GET /v1/events``) as a dict
        (``id``, ``class``, ``state``, ``at``, ...) until the daemon ends
        the stream.  Close the generator to stop."""
        q = c.query({"class": cls,
                     "job": c.job_id(job) if job is not None else None})
        t = None if self.timeout is None else max(self.timeout, 60.0)
        r = self._stream("GET", "/v1/events" + q, None, None, t)
        try:
            p = c.SSEParser()
            for line in r.lines():
                ev = p.feed(line)
                if ev and ev[0] == "job":
                    yield c.decode(ev[1].encode())
        finally:
            r.close()

    # -- GPU locks ------------------------------------------------------------

    def lock(self, cls: str, holder: Optional[str] = None,
             metadata: Optional[Mapping[str, Any]] = None,
             wait: float = 30, priority: Optional[int] = None) -> "Lock":
        """A GPU lock of class `cls`, as a context manager::

            with client.lock("transcription", holder="app") as lk:
                ...  # the GPU is ours; heartbeats run in a thread

        Entering waits up to `wait` seconds for the grant
        (:class:`gpuq.Timeout` if it does not come,
        :class:`gpuq.UnknownClass` for an unknown class); leaving releases
        the lock, also when the body raises."""
        return Lock(self, cls, holder, metadata, wait, priority)

    def acquire_lock(self, job_type: str, job_id: Optional[str] = None,
                     metadata: Optional[Mapping[str, Any]] = None,
                     wait: float = 30,
                     holder: Optional[str] = None) -> "Lock":
        """:meth:`lock` with the application's names: `job_type` is the
        class, `job_id` goes into the metadata as ``job_id``."""
        return Lock(self, job_type, holder,
                    c.lock_metadata(job_id, metadata), wait, None)

    # -- worker leases ----------------------------------------------------

    def lease(self, classes: Union[str, Sequence[str]], wait: float = 30,
              worker: Optional[str] = None) -> Optional["Lease"]:
        """Long-polls up to `wait` seconds for a job of one of `classes`;
        returns a :class:`Lease`, or None when nothing was granted."""
        if isinstance(classes, str):
            classes = [classes]
        body: Dict[str, Any] = {"classes": list(classes), "wait": wait}
        if worker is not None:
            body["worker"] = worker
        g = self.request("POST", "/v1/leases", body,
                         timeout=c.long_poll_timeout(self.timeout, wait))
        return None if g is None else Lease(self, g)

    def work(self, classes: Union[str, Sequence[str]],
             handler: Callable[[Job], Any], worker: Optional[str] = None,
             wait: float = 30, max_jobs: Optional[int] = None,
             stop: Optional[threading.Event] = None) -> int:
        """A worker loop: leases jobs of `classes` and completes each with
        ``handler(job)``'s return value (heartbeats run meanwhile); a
        handler that raises fails the job (retryable).  Ends after
        `max_jobs` jobs or once `stop` is set (checked between polls);
        returns the number of jobs handled."""
        n = 0
        while (max_jobs is None or n < max_jobs) and not (
                stop is not None and stop.is_set()):
            lease = self.lease(classes, wait, worker)
            if lease is None:
                continue
            n += 1
            with lease:
                try:
                    try:
                        result = handler(lease.job)
                    except Exception as e:
                        lease.fail(e, retryable=True)
                    else:
                        lease.complete(result)
                except (StaleToken, BadState, NotFound):
                    pass  # the grant was lost (expired, cancelled)
        return n


class _Heartbeat(threading.Thread):
    """Calls beat() every `interval` seconds until stopped, or until it
    raises StaleToken / NotFound (the grant is gone)."""

    def __init__(self, beat: Callable[[], Any], interval: float) -> None:
        super().__init__(daemon=True, name="gpuq-heartbeat")
        self.beat = beat
        self.interval = interval
        self.halt = threading.Event()
        self.lost: Optional[Error] = None
        self.beats = 0

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            try:
                self.beat()
                self.beats += 1
            except (StaleToken, NotFound) as e:
                self.lost = e
                return
            except (Error, OSError, http.client.HTTPException):
                continue  # transient: the next beat tries again

    def stop(self) -> None:
        self.halt.set()
        if self is not threading.current_thread():
            self.join()


class Lock:
    """A GPU lock (``POST /v1/locks``); see :meth:`Client.lock`.

    After :meth:`acquire`: ``lock_id``, ``token``, ``ttl``, ``job_id``.
    ``lost`` is true once a heartbeat found the lock gone (its ttl ran
    out or it was cancelled)."""

    def __init__(self, client: Client, cls: str, holder: Optional[str],
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
        return "<gpuq.Lock %s %s token=%s>" % (self.cls, self.lock_id,
                                               self.token)

    @property
    def lost(self) -> bool:
        return self._hb is not None and self._hb.lost is not None

    def acquire(self) -> "Lock":
        """Waits for the grant and starts the heartbeat thread."""
        if self.lock_id is not None:
            raise RuntimeError("gpuq.Lock: already acquired")
        g = self.client.request(
            "POST", "/v1/locks",
            c.lock_body(self.cls, self.holder, self.metadata, self.wait,
                        self.priority),
            timeout=c.long_poll_timeout(self.client.timeout, self.wait))
        self.lock_id, self.token = g["lock_id"], g["token"]
        self.ttl, self.job_id = g.get("ttl"), g.get("job_id")
        self._hb = _Heartbeat(self.heartbeat,
                              c.heartbeat_interval(self.ttl))
        self._hb.start()
        return self

    def heartbeat(self) -> Dict[str, Any]:
        """Extends the lock by its ttl (the thread does this)."""
        return self.client.request(
            "POST", "/v1/locks/%s/heartbeat" % c.quote(str(self.lock_id)),
            {"token": self.token})

    def release(self) -> Job:
        """Stops the heartbeats and releases the lock; returns the lock
        job (``succeeded``).  :class:`gpuq.StaleToken` if the lock was
        lost meanwhile."""
        if self.lock_id is None:
            raise RuntimeError("gpuq.Lock: not acquired")
        if self._hb is not None:
            self._hb.stop()
        if self.released is not None:
            return self.released
        self.released = self.client.request(
            "DELETE", "/v1/locks/%s?token=%s" % (
                c.quote(str(self.lock_id)), self.token))
        return self.released

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, et: Optional[Type[BaseException]],
                 ev: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        try:
            self.release()
        except (Error, OSError, http.client.HTTPException):
            if et is None:
                raise  # else the body's exception is the one to see


class Lease:
    """A granted worker lease (``POST /v1/leases``).

    ``lease_id``, ``token``, ``ttl``, ``job`` (the job object), and
    ``job_id``/``payload`` for short.  As a context manager it heartbeats
    in a thread; leaving it without :meth:`complete`, :meth:`fail` or
    :meth:`yield_` fails the job (retryable)."""

    def __init__(self, client: Client, grant: Mapping[str, Any]) -> None:
        self.client = client
        self.lease_id: str = grant["lease_id"]
        self.token: int = grant["token"]
        self.ttl = grant.get("ttl")
        self.job: Job = grant["job"]
        self.should_yield = False
        self.finished: Optional[Job] = None
        self._hb: Optional[_Heartbeat] = None

    def __repr__(self) -> str:
        return "<gpuq.Lease %s token=%s>" % (self.lease_id, self.token)

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    @property
    def payload(self) -> Any:
        return self.job.get("payload")

    @property
    def lost(self) -> bool:
        return self._hb is not None and self._hb.lost is not None

    def _op(self, op: str, body: Dict[str, Any]) -> Any:
        body["token"] = self.token
        return self.client.request(
            "POST", "/v1/leases/%s/%s" % (c.quote(self.lease_id), op), body)

    def heartbeat(self) -> Dict[str, Any]:
        """Extends the lease; returns ``{"ttl", "yield"}`` and sets
        ``should_yield``."""
        r = self._op("heartbeat", {})
        self.should_yield = bool(r.get("yield"))
        return r

    def _end(self, op: str, body: Dict[str, Any]) -> Job:
        if self._hb is not None:
            self._hb.stop()
        job: Job = self._op(op, body)
        self.finished = job
        return job

    def complete(self, result: Any = None) -> Job:
        """The job succeeds with `result`."""
        body: Dict[str, Any] = {}
        if result is not None:
            body["result"] = result
        return self._end("complete", body)

    def fail(self, error: Any = None, retryable: bool = True) -> Job:
        """Fails the job: `error` is a string, ``{"code", "message"}`` or
        an exception."""
        return self._end("fail", c.fail_body(0, error, retryable))

    def yield_(self, progress: Any = None) -> Job:
        """Gives the GPU back; the job keeps its place, with `progress`."""
        body: Dict[str, Any] = {}
        if progress is not None:
            body["progress"] = progress
        return self._end("yield", body)

    def __enter__(self) -> "Lease":
        self._hb = _Heartbeat(self.heartbeat, c.heartbeat_interval(self.ttl))
        self._hb.start()
        return self

    def __exit__(self, et: Optional[Type[BaseException]],
                 ev: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if self._hb is not None:
            self._hb.stop()
        if self.finished is not None:
            return
        try:
            self.fail(ev if ev is not None else
                      "lease left without a result", retryable=True)
        except (Error, OSError, http.client.HTTPException):
            if et is None:
                raise


class ChatStream:
    """The text pieces of a streamed chat completion, as they arrive.

    Iterate it; afterwards ``text`` is the whole reply, ``job_id`` the
    gpuq job, ``finish_reason`` and ``usage`` what the backend said.
    ``close()`` (or leaving a ``with``) before the end hangs up, which
    cancels the job."""

    def __init__(self, reply: _Reply) -> None:
        self._r = reply
        self._state = c.ChatState()
        self._pieces: List[str] = []

    def __iter__(self) -> Iterator[str]:
        p = c.SSEParser()
        try:
            for line in self._r.lines():
                ev = p.feed(line)
                if ev is None:
                    continue
                piece = self._state.feed(ev[1])
                if piece:
                    self._pieces.append(piece)
                    yield piece
                if self._state.done:
                    break
        finally:
            self.close()

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
        self._r.close()

    def __enter__(self) -> "ChatStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class JobStream:
    """The text of ``GET /v1/jobs/{id}/stream``; ``job`` is the job in
    its final state once the stream has ended.  Hanging up does not cancel
    the job."""

    def __init__(self, reply: _Reply) -> None:
        self._r = reply
        self._state = c.JobStreamState()

    def __iter__(self) -> Iterator[str]:
        p = c.SSEParser()
        try:
            for line in self._r.lines():
                ev = p.feed(line)
                if ev is None:
                    continue
                piece = self._state.feed(*ev)
                if piece:
                    yield piece
                if ev[0] == "done":
                    break
        finally:
            self.close()

    @property
    def job(self) -> Optional[Job]:
        return self._state.job

    def close(self) -> None:
        self._r.close()

    def __enter__(self) -> "JobStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
