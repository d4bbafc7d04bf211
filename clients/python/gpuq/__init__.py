"""gpuq - the Python client of gpuqd, the GPU job-queue daemon.

Standard library only.  :class:`Client` is synchronous (threads for
heartbeats); :class:`gpuq.aio.AsyncClient` has the same API for asyncio.

    import gpuq
    gq = gpuq.Client()                      # $GPUQ_URL or 127.0.0.1:7707
    job = gq.submit_transcription_job(audio_path="/srv/rec/m7.wav")
    summary = gq.submit_summarization_job(from_job=job, max_words=150)
    print(gq.wait(summary, timeout=600)["result"]["summary"])
    with gq.lock("transcription", holder="my-app"):
        ...                                 # the GPU is ours
    for piece in gq.chat([{"role": "user", "content": "Hello"}]):
        print(piece, end="", flush=True)

The HTTP contract is doc/api.md in the gpuq repository.
"""

from ._common import DEFAULT_URL, TERMINAL
from .aio import AsyncClient, AsyncLease, AsyncLock
from .client import ChatStream, Client, JobStream, Lease, Lock
from .errors import (BadState, Busy, Conflict, Draining, Error, Forbidden,
                     InvalidRequest, JobFailed, MethodNotAllowed, NotFound,
                     QueueFull, StaleToken, StoreFailure, StoreFull,
                     Timeout, TooLarge, Unauthorized, Unavailable,
                     UnknownClass)

__version__ = "0.1.0"

__all__ = [
    "Client", "AsyncClient", "Lock", "AsyncLock", "Lease", "AsyncLease",
    "ChatStream", "JobStream", "DEFAULT_URL", "TERMINAL",
    "Error", "InvalidRequest", "NotFound", "UnknownClass", "TooLarge",
    "QueueFull", "Conflict", "StaleToken", "BadState", "Timeout",
    "Unavailable", "Draining", "Busy", "StoreFailure", "StoreFull",
    "MethodNotAllowed", "Unauthorized", "Forbidden", "JobFailed",
]
