"""Shared set-up of the client's tests: the import paths, and a test case
base class that runs one real gpuqd per test class (the daemon harness of
tests/integration/gpuqtest.py; $GPUQD names the binary, default the
repository's bin/gpuqd), optionally with the fake inference server
(tests/fake/fake_infer.py) as its backends.  127.0.0.1 only; every wait is
bounded."""

import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.dirname(HERE)                       # clients/python
REPO = os.path.dirname(os.path.dirname(CLIENT_DIR))
for p in (CLIENT_DIR, os.path.join(REPO, "tests", "integration"),
          os.path.join(REPO, "tests", "fake")):
    if p not in sys.path:
        sys.path.insert(0, p)

import gpuq  # noqa: E402,F401
from gpuqtest import Daemon, wait_until  # noqa: E402,F401

# Classes: each area of the tests has its own, so jobs one test leaves
# behind cannot be granted to another.  `short` has a 1 s lease ttl.
CONFIG = """\
[server]
drain_timeout = 3

[gpu]
slots = 1

[class chatbot]
priority = 10

[class transcription]
weight = 70
max_consecutive = 2

[class summarization]
weight = 30
max_consecutive = 1

[class jobs]

[class work]
max_attempts = 2
backoff_base = 0.05
backoff_max = 0.1

[class locks]

[class short]
lease_ttl = 1

[class tiny]
max_queue = 1
"""

# The daemon must still exist for the whole class: one failed stop is
# reported by the class clean-up.
TIMEOUT = 10.0


class DaemonCase(unittest.TestCase):
    """One gpuqd for the whole class (self.d, self.url)."""

    maxDiff = None

    @classmethod
    def config(cls):
        return CONFIG

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = Daemon(cls.config())
        cls.d.__enter__()
        cls.addClassCleanup(cls.d.__exit__, None, None, None)
        cls.url = cls.d.url

    def job(self, job_id):
        return self.d.job(job_id)

    def wait_state(self, job_id, states, timeout=TIMEOUT):
        return self.d.wait_state(job_id, states, timeout)


class ExecCase(DaemonCase):
    """A DaemonCase whose daemon runs the built-in executors against the
    fake inference server (self.fake), with an audio root (self.root)."""

    @classmethod
    def setUpClass(cls):
        from execfix import FakeInfer, exec_config
        cls.tmp = tempfile.mkdtemp(prefix="gpuqclient-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.root = os.path.join(cls.tmp, "audio")
        os.mkdir(cls.root)
        cls.fake = FakeInfer("llama").start()
        cls.addClassCleanup(cls.fake.stop)
        cls._config = exec_config(cls.fake.port, cls.root)
        super().setUpClass()

    @classmethod
    def config(cls):
        return cls._config

    def setUp(self):
        self.fake.reset()
