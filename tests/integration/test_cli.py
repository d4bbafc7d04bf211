"""The gpuq command-line client against the real daemon (src/cli/main.c
has its usage and exit codes).  Skipped when bin/gpuq is missing."""

import json
import os
import subprocess
import unittest

from gpuqtest import (BASE_CONFIG, GPUQ, Daemon, GpuqTest, Worker, scaled,
                      wait_until)

HAVE_GPUQ = os.access(GPUQ, os.X_OK)
CLI_TIMEOUT = scaled(20)


@unittest.skipUnless(HAVE_GPUQ, "no gpuq binary at %s" % GPUQ)
class CliTest(GpuqTest):

    def gpuq(self, d, *args, json_out=False, timeout=CLI_TIMEOUT,
             stdin=None):
        """Runs gpuq against d; returns (exit code, stdout, stderr) and,
        with json_out, the parsed stdout instead of the text."""
        cmd = [GPUQ, "--url", d.url] + list(args)
        p = subprocess.run(cmd, input=stdin, capture_output=True,
                           timeout=timeout, text=True)
        out = p.stdout
        if json_out and p.returncode == 0:
            try:
                out = json.loads(p.stdout)
            except ValueError:
                self.fail("%s: stdout is not JSON: %r (stderr %r)"
                          % (args, p.stdout, p.stderr))
        return p.returncode, out, p.stderr

    def test_submit_get_ls_cancel_status(self):
        with Daemon(BASE_CONFIG) as d:
            rc, job, err = self.gpuq(d, "--json", "submit", "transcription",
                                     "--payload", '{"a": [1, 2]}', "--meta",
                                     "m=7", "--priority", "3", "--key",
                                     "k1", json_out=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual(job["class"], "transcription")
            self.assertEqual(job["payload"], {"a": [1, 2]})
            self.assertEqual(job["metadata"], {"m": "7"})
            self.assertEqual(job["priority"], 3)
            self.assertEqual(job["state"], "queued")
            self.assertEqual(d.job(job["id"])["payload"], {"a": [1, 2]})
            # The same key again is the same job.
            rc, again, err = self.gpuq(d, "--json", "submit",
                                       "transcription", "--key", "k1",
                                       json_out=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual(again["id"], job["id"])

            rc, got, err = self.gpuq(d, "--json", "get", job["id"],
                                     json_out=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual(got["id"], job["id"])
            self.assertIn("history", got)

            other = d.submit("summarization")
            rc, page, err = self.gpuq(d, "--json", "ls", json_out=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual([j["id"] for j in page["jobs"]],
                             [job["id"], other["id"]])
            rc, page, err = self.gpuq(d, "--json", "ls", "--class",
                                      "summarization", json_out=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual([j["id"] for j in page["jobs"]], [other["id"]])
            rc, page, err = self.gpuq(d, "--json", "ls", "--limit", "1",
                                      "--all", json_out=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual([j["id"] for j in page["jobs"]],
                             [job["id"], other["id"]])
            rc, text, err = self.gpuq(d, "ls")
            self.assertEqual(rc, 0, err)
            self.assertIn(job["id"], text)
            self.assertIn(other["id"], text)

            rc, text, err = self.gpuq(d, "cancel", job["id"])
            self.assertEqual(rc, 0, err)
            self.assertEqual(text.split(), [job["id"], "cancelled"])
            self.assertEqual(d.job(job["id"])["state"], "cancelled")
            rc, text, err = self.gpuq(d, "cancel", job["id"])
            self.assertEqual(rc, 1, "cancel of a terminal job")
            self.assertIn("gpuq:", err)
            rc, req, err = self.gpuq(d, "--json", "requeue", job["id"],
                                     json_out=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual(req["state"], "queued")

            rc, st, err = self.gpuq(d, "--json", "status", json_out=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual([c["name"] for c in st["classes"]],
                             ["chatbot", "transcription", "summarization"])
            self.assertEqual(len(st["slots"]), 1)
            rc, text, err = self.gpuq(d, "status")
            self.assertEqual(rc, 0, err)
            self.assertIn("transcription", text)

    def test_exit_codes(self):
        with Daemon(BASE_CONFIG) as d:
            rc, _, err = self.gpuq(d, "get", "j999999")
            self.assertEqual(rc, 1, err)
            rc, _, err = self.gpuq(d, "submit", "nosuch")
            self.assertEqual(rc, 1, err)
            rc, _, err = self.gpuq(d, "submit")
            self.assertEqual(rc, 2, err)
            rc, _, err = self.gpuq(d, "frobnicate")
            self.assertEqual(rc, 2, err)
            self.assertEqual(d.snapshot(), [])
            p = subprocess.run([GPUQ, "--url", "http://127.0.0.1:1",
                                "status"], capture_output=True, text=True,
                               timeout=CLI_TIMEOUT)
            self.assertEqual(p.returncode, 3, p.stderr)

    def test_lock_runs_command_and_releases(self):
        with Daemon(BASE_CONFIG) as d:
            rc, out, err = self.gpuq(d, "lock", "chatbot", "--holder", "me",
                                     "--", "sh", "-c",
                                     'echo "$GPUQ_JOB_ID"; exit 3')
            self.assertEqual(rc, 3, err)
            job_id = out.strip()
            self.assertRegex(job_id, r"^j[0-9]+$")
            job = d.job(job_id)
            self.assertEqual(job["kind"], "lock")
            self.assertEqual(job["holder"], "me")
            self.assertEqual(job["state"], "succeeded")
            self.assertIsNone(d.status()["slots"][0]["job"])
            # While the command runs, the GPU is held.
            # chatbot's lease_ttl is 1 s: gpuq must heartbeat to keep it.
            p = subprocess.Popen([GPUQ, "--url", d.url, "lock",
                                  "chatbot", "--", "sleep", "2.5"],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                slot = wait_until(lambda: d.status()["slots"][0]["job"], 3,
                                  what="the lock to be held")
                self.assertEqual(d.job(slot)["kind"], "lock")
                self.assertEqual(d.job(slot)["state"], "running")
                self.assertEqual(p.wait(timeout=CLI_TIMEOUT), 0)
            finally:
                if p.poll() is None:
                    p.kill()
                p.communicate()
            self.assertEqual(d.job(slot)["state"], "succeeded")
            self.assertIsNone(d.status()["slots"][0]["job"])

    def test_lock_wait_runs_out(self):
        with Daemon(BASE_CONFIG) as d:
            st, lk = d.lock("transcription", wait=2)
            self.assertEqual(st, 200, lk)
            rc, _, err = self.gpuq(d, "lock", "transcription", "--wait",
                                   "0", "--", "true")
            self.assertEqual(rc, 6, err)
            self.assertEqual(d.release(lk)[0], 200)

    def test_worker_once_cat(self):
        with Daemon(BASE_CONFIG) as d:
            job = d.submit("transcription", payload={"text": "hi", "n": 2})
            rc, _, err = self.gpuq(d, "worker", "--class", "transcription",
                                   "--once", "--wait", "5", "--", "cat")
            self.assertEqual(rc, 0, err)
            got = d.job(job["id"])
            self.assertEqual(got["state"], "succeeded")
            self.assertEqual(got["result"], {"text": "hi", "n": 2})
            # A command that exits 65 fails the job for good.
            job = d.submit("transcription", payload="x")
            rc, _, err = self.gpuq(d, "worker", "--class", "transcription",
                                   "--once", "--wait", "5", "--", "sh",
                                   "-c", "exit 65")
            got = d.job(job["id"])
            self.assertEqual(got["state"], "failed", (rc, err))

    def test_submit_wait(self):
        with Daemon(BASE_CONFIG) as d:
            w = Worker(d, ["transcription"], wait=1,
                       result=lambda job: {"echo": job["payload"]})
            w.start()
            try:
                rc, job, err = self.gpuq(d, "--json", "submit",
                                         "transcription", "--payload", "5",
                                         "--wait", json_out=True)
                self.assertEqual(rc, 0, err)
                self.assertEqual(job["state"], "succeeded")
                self.assertEqual(job["result"], {"echo": 5})
            finally:
                w.stop()

            def fail(worker, grant):
                d.lease_op(grant, "fail", retryable=False, error="no")
            w = Worker(d, ["transcription"], wait=1, handle=fail)
            w.start()
            try:
                rc, _, err = self.gpuq(d, "submit", "transcription",
                                       "--wait")
                self.assertEqual(rc, 4, err)
            finally:
                w.stop()


if __name__ == "__main__":
    unittest.main()
