"""Scheduling over HTTP: strict tiers, caps and shares, servability, and
the status, health and metrics endpoints (doc/api.md "Status and
operations"; src/core/sched.h has the decision rule)."""

import re
import time
import unittest

from gpuqtest import Background, Daemon, GpuqTest, Worker, wait_until

CONFIG = """\
[server]
drain_timeout = 5

[gpu]
slots = 1

[scheduler]
share_by = grants

[class chatbot]
priority = 10
lease_ttl = 5

[class transcription]
priority = 0
weight = 70
max_consecutive = 2

[class summarization]
priority = 0
weight = 30
max_consecutive = 1
"""

ALL = ["chatbot", "transcription", "summarization"]


def check_caps(test, seq, totals, caps):
    """seq: the classes granted, in order; totals: jobs per class.  A class
    with `cap` grants in a row must not get another while another class
    still has jobs waiting."""
    left = dict(totals)
    run_cls, run_len = None, 0
    for i, cls in enumerate(seq):
        others_waiting = any(n > 0 for c, n in left.items() if c != cls)
        if cls == run_cls:
            run_len += 1
        else:
            run_cls, run_len = cls, 1
        cap = caps.get(cls, 0)
        if cap and others_waiting:
            test.assertLessEqual(
                run_len, cap, "grant %d: %d %s in a row while others "
                "wait; sequence %r" % (i, run_len, cls, seq))
        left[cls] -= 1


class SchedTest(GpuqTest):

    def test_higher_tier_goes_first_then_caps(self):
        with Daemon(CONFIG) as d:
            d.submit("transcription", payload="t0")
            g0 = d.grant(["transcription"], worker="holder")
            for i in range(5):
                d.submit("transcription", payload="t%d" % (i + 1))
            for i in range(5):
                d.submit("summarization", payload="s%d" % i)
            chat = d.submit("chatbot", payload="c")
            w = Worker(d, ALL, name="all", wait=1)
            w.start()
            try:
                wait_until(lambda: d.status()["classes"][0]
                           ["workers_waiting"] >= 1, 3,
                           what="the worker to wait")
                self.assertEqual(w.grants, [])
                self.assertEqual(d.lease_op(g0, "complete")[0], 200)
                grants = w.wait_grants(11, timeout=10)
            finally:
                w.stop()
            self.assertEqual(grants[0]["job"]["id"], chat["id"],
                             "chatbot was not granted first: %r"
                             % [g["job"]["payload"] for g in grants])
            seq = [g["job"]["class"] for g in grants[1:]]
            # t0 was the last grant before the chatbot's.
            check_caps(self, seq, {"transcription": 5, "summarization": 5},
                       {"transcription": 2, "summarization": 1})
            # Within a class, submission order.
            for cls, prefix in (("transcription", "t"),
                                ("summarization", "s")):
                got = [g["job"]["payload"] for g in grants
                       if g["job"]["class"] == cls]
                start = 1 if prefix == "t" else 0
                self.assertEqual(got, ["%s%d" % (prefix, i)
                                       for i in range(start, start + 5)])

    def test_caps_and_weights(self):
        with Daemon(CONFIG) as d:
            for i in range(8):
                d.submit("transcription", payload="t%d" % i)
            for i in range(8):
                d.submit("summarization", payload="s%d" % i)
            w = Worker(d, ["transcription", "summarization"], name="w",
                       wait=1)
            w.start()
            try:
                grants = w.wait_grants(16, timeout=10)
                w.wait_completed(16, timeout=5)
            finally:
                w.stop()
            seq = [g["job"]["class"][0] for g in grants]
            full = [g["job"]["class"] for g in grants]
            check_caps(self, full, {"transcription": 8,
                                    "summarization": 8},
                       {"transcription": 2, "summarization": 1})
            # Weights 70:30 with caps 2 and 1: two transcriptions for
            # each summarization while both wait.
            self.assertGreaterEqual(seq[:9].count("t"), 6,
                                    "weights ignored: %s" % "".join(seq))
            st = d.status()
            by = {c["name"]: c for c in st["classes"]}
            self.assertEqual(by["transcription"]["grants"], 8)
            self.assertEqual(by["summarization"]["grants"], 8)
            self.assertAlmostEqual(by["transcription"]["share"]
                                   + by["summarization"]["share"], 1.0,
                                   delta=0.02)
            self.assertAlmostEqual(by["transcription"]["share"], 0.5,
                                   delta=0.02)

    def test_only_servable_jobs_are_granted(self):
        with Daemon(CONFIG) as d:
            s = d.submit("summarization")
            t = d.submit("transcription")
            g = d.grant(["transcription"])
            self.assertEqual(g["job"]["id"], t["id"])
            self.assertEqual(d.lease_op(g, "complete")[0], 200)
            got = d.job(s["id"])
            self.assertEqual(got["state"], "queued")
            self.assertEqual(got["reason"], "no_worker")
            g = d.grant(["summarization"])
            self.assertEqual(g["job"]["id"], s["id"])
            self.assertEqual(d.lease_op(g, "complete")[0], 200)

    def test_status_fields(self):
        conf = CONFIG.replace("slots = 1", "slots = 2")
        with Daemon(conf) as d:
            st = d.status()
            self.assertIsInstance(st["version"], str)
            self.assertIsInstance(st["uptime_s"], int)
            self.assertGreaterEqual(st["uptime_s"], 0)
            self.assertIs(st["draining"], False)
            self.assertEqual(st["share_by"], "grants")
            self.assertEqual([s["slot"] for s in st["slots"]], [0, 1])
            for s in st["slots"]:
                self.assertIsNone(s["job"])
            self.assertEqual([c["name"] for c in st["classes"]], ALL)
            by = {c["name"]: c for c in st["classes"]}
            self.assertEqual(by["chatbot"]["priority"], 10)
            self.assertEqual(by["transcription"]["weight"], 70)
            self.assertEqual(by["summarization"]["max_consecutive"], 1)
            self.assertAlmostEqual(by["transcription"]["target_share"], 0.7,
                                   places=2)
            self.assertAlmostEqual(by["summarization"]["target_share"], 0.3,
                                   places=2)
            self.assertAlmostEqual(by["chatbot"]["target_share"], 1.0,
                                   places=2)
            for c in st["classes"]:
                for k in ("ready", "backoff", "running", "oldest_wait_ms",
                          "streak", "grants", "workers_waiting"):
                    self.assertIsInstance(c[k], int, "%s.%s" % (c["name"],
                                                                 k))
                self.assertIsInstance(c["share"], (int, float))
                self.assertEqual(c["ready"], 0)
                self.assertEqual(c["grants"], 0)

            for _ in range(3):
                d.submit("transcription")
            time.sleep(0.2)
            by = {c["name"]: c for c in d.status()["classes"]}
            self.assertEqual(by["transcription"]["ready"], 3)
            self.assertGreaterEqual(by["transcription"]["oldest_wait_ms"],
                                    100)
            self.assertEqual(by["summarization"]["ready"], 0)

            g = d.grant(["transcription"], worker="w9")
            st = d.status()
            by = {c["name"]: c for c in st["classes"]}
            t = by["transcription"]
            self.assertEqual((t["ready"], t["running"], t["grants"],
                              t["streak"]), (2, 1, 1, 1))
            busy = [s for s in st["slots"] if s["job"]]
            self.assertEqual(len(busy), 1)
            self.assertEqual(busy[0]["job"], g["job"]["id"])
            self.assertEqual(busy[0]["class"], "transcription")
            self.assertEqual(busy[0]["holder"], "w9")
            self.assertIsInstance(busy[0]["held_ms"], int)

            # A parked poll counts as a waiting worker.
            bg = Background(d.lease, ["summarization"], 2, "idle")
            wait_until(lambda: {c["name"]: c for c in d.status()["classes"]}
                       ["summarization"]["workers_waiting"] == 1, 2,
                       what="workers_waiting = 1")
            self.assertEqual(bg.get(timeout=6)[0], 204)
            self.assertEqual(d.lease_op(g, "complete")[0], 200)

    def test_healthz(self):
        with Daemon(CONFIG) as d:
            status, _, body = d.request("GET", "/healthz")
            self.assertEqual(status, 200)
            self.assertEqual(body, {"status": "ok"})

    def test_metrics(self):
        with Daemon(CONFIG) as d:
            for _ in range(3):
                d.submit("transcription")
            d.submit("summarization")
            g = d.grant(["transcription"])
            status, hdrs, raw = d.request_raw("GET", "/metrics")
            self.assertEqual(status, 200)
            self.assertIn("text/plain", hdrs.get("content-type", ""))
            text = raw.decode()

            def value(name, **labels):
                for line in text.splitlines():
                    if line.startswith("#"):
                        continue
                    m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)"
                                 r"(?:\{([^}]*)\})?\s+(\S+)", line)
                    if not m or m.group(1) != name:
                        continue
                    got = dict(re.findall(r'(\w+)="([^"]*)"',
                                          m.group(2) or ""))
                    if all(got.get(k) == v for k, v in labels.items()):
                        return float(m.group(3))
                self.fail("no %s%r in /metrics:\n%s" % (name, labels, text))
            self.assertEqual(value("gpuq_jobs_submitted_total",
                                   **{"class": "transcription"}), 3)
            self.assertEqual(value("gpuq_jobs_submitted_total",
                                   **{"class": "summarization"}), 1)
            self.assertEqual(value("gpuq_grants_total",
                                   **{"class": "transcription"}), 1)
            self.assertEqual(value("gpuq_queue_ready",
                                   **{"class": "transcription"}), 2)
            self.assertEqual(value("gpuq_slots_busy"), 1)
            self.assertIn("gpuq_wait_seconds", text)
            self.assertIn("gpuq_hold_seconds", text)
            self.assertEqual(d.lease_op(g, "complete")[0], 200)
            text = d.request_raw("GET", "/metrics")[2].decode()
            self.assertEqual(value("gpuq_jobs_finished_total",
                                   **{"class": "transcription",
                                      "state": "succeeded"}), 1)
            self.assertEqual(value("gpuq_slots_busy"), 0)


if __name__ == "__main__":
    unittest.main()
