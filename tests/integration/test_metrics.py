"""test_metrics - GET /metrics as Prometheus sees it (doc/api.md
"GET /metrics"): a daemon that has run jobs (built-in chat jobs against
the fake inference server, worker jobs held for a while, a failure) is
scraped, the text is checked with `promtool check metrics` (Debian
package prometheus; that test is skipped only when promtool is not
installed), and the families the API promises are there with their
types, HELP and TYPE once each, and sensible values.

    cd tests/integration && GPUQD=../../bin/gpuqd python3 -m unittest -v \
        test_metrics
"""

import re
import shutil
import subprocess
import time
import unittest

from execfix import ExecTest, metric, metrics

PROMTOOL = shutil.which("promtool")

# family -> type: what doc/api.md promises.
REQUIRED = {
    "gpuq_build_info": "gauge",
    "gpuq_uptime_seconds": "gauge",
    "gpuq_jobs_submitted_total": "counter",
    "gpuq_grants_total": "counter",
    "gpuq_jobs_finished_total": "counter",
    "gpuq_lease_expired_total": "counter",
    "gpuq_queue_ready": "gauge",
    "gpuq_queue_backoff": "gauge",
    "gpuq_jobs_running": "gauge",
    "gpuq_workers_waiting": "gauge",
    "gpuq_slots": "gauge",
    "gpuq_slots_busy": "gauge",
    "gpuq_slot_busy_seconds_total": "counter",
    "gpuq_slot_busy_ratio": "gauge",
    "gpuq_parked_requests": "gauge",
    "gpuq_store_commits_total": "counter",
    "gpuq_store_commit_failures_total": "counter",
    "gpuq_wait_seconds": "histogram",
    "gpuq_hold_seconds": "histogram",
    "gpuq_handoff_seconds": "histogram",
    "gpuq_loop_turn_seconds": "histogram",
    "gpuq_store_commit_seconds": "histogram",
    "gpuq_chat_first_token_seconds": "histogram",
    "gpuq_backend_up": "gauge",
    "gpuq_backend_errors_total": "counter",
    "gpuq_auth_refused_total": "counter",
}

SAMPLE_RE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})?'
    r' (\S+)$')

HOLD_S = 0.3        # how long the worker holds its grant


class MetricsTest(ExecTest):

    def daemon(self, **changes):
        # Two GPU slots, and a class for external workers beside the
        # brief's built-in ones.
        changes.setdefault("gpu", {"slots": 2})
        changes.setdefault("class_jobs", {"priority": 0, "max_attempts": 1})
        return super().daemon(**changes)

    def run_some_jobs(self, d):
        """Chat jobs, a held worker job, a failed one; returns the time
        the worker held its grant."""
        for i in range(2):
            self.finished(d, self.chat(d, "hello %d" % i)["id"])
        j = d.submit("jobs", payload={"n": 1})
        g = d.grant(["jobs"])
        self.assertEqual(g["job"]["id"], j["id"])
        t0 = time.monotonic()
        time.sleep(HOLD_S)
        self.assertEqual(d.lease_op(g, "complete", result={"ok": 1})[0],
                         200)
        held = time.monotonic() - t0
        f = d.submit("jobs", payload={"n": 2})
        g = d.grant(["jobs"])
        self.assertEqual(d.lease_op(g, "fail", error="boom",
                                    retryable=False)[0], 200)
        self.finished(d, f["id"], state="failed")
        return held

    def scrape(self, d):
        status, hdrs, raw = d.request_raw("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(hdrs.get("content-type", "").startswith(
            "text/plain; version=0.0.4"), hdrs)
        return raw.decode("utf-8")

    @unittest.skipIf(PROMTOOL is None,
                     "promtool is not installed (Debian package "
                     "prometheus; scripts/deps.sh test installs it): the "
                     "exposition is not checked with it")
    def test_promtool_check_metrics(self):
        with self.daemon() as d:
            self.run_some_jobs(d)
            text = self.scrape(d)
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0,
                         "promtool check metrics: %s%s\n--- scraped:\n%s"
                         % (p.stdout, p.stderr, text))
        # Lint problems are printed even when the exit status is 0.
        self.assertEqual((p.stdout + p.stderr).strip(), "",
                         "promtool check metrics found problems")

    def test_families_types_and_help(self):
        with self.daemon() as d:
            self.run_some_jobs(d)
            text = self.scrape(d)
        helps, types, order = {}, {}, []
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name = line.split(" ", 3)[2]
                helps[name] = helps.get(name, 0) + 1
                self.assertGreater(len(line.split(" ", 3)), 3,
                                   "empty HELP: %r" % line)
            elif line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ")
                self.assertNotIn(name, types, "TYPE twice for " + name)
                types[name] = typ
                order.append(name)
            else:
                m = SAMPLE_RE.match(line)
                self.assertIsNotNone(m, "bad sample line %r" % line)
                name = m.group(1)
                fam = name
                if order and types[order[-1]] == "histogram":
                    fam = re.sub(r"_(bucket|sum|count)$", "", name)
                # Samples come right after their own family's TYPE.
                self.assertEqual(fam, order[-1] if order else None,
                                 "sample %r outside its family" % line)
                float(m.group(3))
        for name, typ in REQUIRED.items():
            self.assertEqual(types.get(name), typ, "family %s" % name)
        for name, n in helps.items():
            self.assertEqual(n, 1, "HELP twice for " + name)
            self.assertIn(name, types)
        for name, typ in types.items():
            self.assertIn(name, helps, "no HELP for " + name)
            self.assertTrue(name.startswith("gpuq_"), name)
            # Prometheus naming: counters end in _total, nothing else
            # does; durations are in seconds.
            self.assertEqual(typ == "counter", name.endswith("_total"),
                             name)
            self.assertNotRegex(name, r"_(ms|millis|milliseconds|us)(_|$)")

    def test_values(self):
        with self.daemon() as d:
            held = self.run_some_jobs(d)
            st = d.status()
            ms = metrics(d)
            self.assertEqual(metric(ms, "gpuq_build_info",
                                    version=st["version"]), 1)
            up = metric(ms, "gpuq_uptime_seconds")
            self.assertGreater(up, 0)
            self.assertLessEqual(up, st["uptime_s"] + 2)
            self.assertEqual(metric(ms, "gpuq_jobs_submitted_total",
                                    **{"class": "chatbot"}), 2)
            self.assertEqual(metric(ms, "gpuq_jobs_submitted_total",
                                    **{"class": "jobs"}), 2)
            self.assertEqual(metric(ms, "gpuq_jobs_finished_total",
                                    **{"class": "jobs",
                                       "state": "succeeded"}), 1)
            self.assertEqual(metric(ms, "gpuq_jobs_finished_total",
                                    **{"class": "jobs", "state": "failed"}),
                             1)
            self.assertEqual(metric(ms, "gpuq_queue_ready",
                                    **{"class": "jobs"}), 0)
            self.assertEqual(metric(ms, "gpuq_chat_first_token_seconds_count",
                                    **{"class": "chatbot"}), 2)
            self.assertEqual(metric(ms, "gpuq_hold_seconds_count",
                                    **{"class": "jobs"}), 2)
            self.assertGreaterEqual(metric(ms, "gpuq_hold_seconds_sum",
                                           **{"class": "jobs"}), HOLD_S)
            self.assertEqual(metric(ms, "gpuq_backend_up", backend="llm"), 1)
            self.assertEqual(metric(ms, "gpuq_backend_errors_total",
                                    backend="llm", kind="fatal"), 0)
            self.assertEqual(metric(ms, "gpuq_slots"), 2)
            self.assertEqual(metric(ms, "gpuq_slots_busy"), 0)
            # Every grant has ended: the slots' busy time covers the held
            # worker grant at least (and each slot at most the uptime).
            busy = [metric(ms, "gpuq_slot_busy_seconds_total", slot=s)
                    for s in ("0", "1")]
            ratio = [metric(ms, "gpuq_slot_busy_ratio", slot=s)
                     for s in ("0", "1")]
            self.assertNotIn(None, busy + ratio, sorted(ms))
            self.assertGreaterEqual(
                sum(busy), HOLD_S,
                "ended grants are not counted in gpuq_slot_busy_seconds_"
                "total: daemon.c end_grant must call "
                "gq_metrics_slot_freed")
            self.assertLessEqual(sum(busy), 2 * up + 0.1)
            for b, r in zip(busy, ratio):
                self.assertGreaterEqual(r, 0)
                self.assertLessEqual(r, 1)
                self.assertAlmostEqual(r, b / up, delta=0.05)
            self.assertLessEqual(held, up)

    def test_busy_slot_counts_while_held(self):
        with self.daemon() as d:
            d.submit("jobs")
            g = d.grant(["jobs"])
            time.sleep(0.2)
            ms = metrics(d)
            self.assertEqual(metric(ms, "gpuq_slots_busy"), 1)
            self.assertEqual(metric(ms, "gpuq_jobs_running",
                                    **{"class": "jobs"}), 1)
            slot = str(g["job"]["slot"])
            first = metric(ms, "gpuq_slot_busy_seconds_total", slot=slot)
            self.assertGreaterEqual(first, 0.2)
            self.assertGreater(metric(ms, "gpuq_slot_busy_ratio", slot=slot),
                               0)
            # A counter: it only grows, across the grant's end too.
            time.sleep(0.1)
            self.assertEqual(d.lease_op(g, "complete")[0], 200)
            later = metric(metrics(d), "gpuq_slot_busy_seconds_total",
                           slot=slot)
            self.assertGreaterEqual(
                later, first + 0.1,
                "ended grants are not counted in gpuq_slot_busy_seconds_"
                "total: daemon.c end_grant must call "
                "gq_metrics_slot_freed")
            self.assertEqual(metric(metrics(d), "gpuq_slots_busy"), 0)


if __name__ == "__main__":
    unittest.main()
