"""gpuq.aio.AsyncClient against the real gpuqd: the application's
acquire_lock, jobs and leases."""

import asyncio
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpuq_support import DaemonCase  # noqa: E402

import gpuq  # noqa: E402
from gpuq.aio import AsyncClient, AsyncLease  # noqa: E402


async def until(fn, timeout=5.0, what="condition"):
    """Awaits fn() until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        v = await fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s (last %r)"
                                 % (what, v))
        await asyncio.sleep(0.05)


class AsyncLockTest(DaemonCase, unittest.IsolatedAsyncioTestCase):

    def setUp(self):
        self.gq = AsyncClient(self.url, timeout=10)

    async def state(self, job_id):
        return (await self.gq.get(job_id))["state"]

    async def queued_locks(self):
        return [j async for j in self.gq.list(cls="locks", state="queued")
                if j["kind"] == "lock"]

    async def test_granted_and_released(self):
        async with self.gq.acquire_lock("locks", job_id="m-7",
                                        metadata={"k": 1}) as lk:
            j = await self.gq.get(lk.job_id)
            self.assertEqual((j["kind"], j["state"]), ("lock", "running"))
            self.assertEqual(j["metadata"], {"k": 1, "job_id": "m-7"})
            self.assertEqual((await self.gq.get_status())["slots"][0]["job"],
                             lk.job_id)
        self.assertEqual(await self.state(lk.job_id), "succeeded")
        self.assertEqual(lk.released["state"], "succeeded")

    async def test_heartbeats_keep_it_beyond_ttl(self):
        async with self.gq.acquire_lock("short", wait=5) as lk:
            self.assertEqual(lk.ttl, 1)
            await asyncio.sleep(2.5)
            self.assertEqual(await self.state(lk.job_id), "running")
            self.assertFalse(lk.lost)
        self.assertEqual(await self.state(lk.job_id), "succeeded")

    async def test_released_when_the_body_raises(self):
        lk = self.gq.acquire_lock("locks", job_id="boom")
        with self.assertRaises(RuntimeError):
            async with lk:
                raise RuntimeError("the body failed")
        self.assertEqual(await self.state(lk.job_id), "succeeded")

    async def test_released_when_cancelled(self):
        held = asyncio.Event()
        lk = self.gq.acquire_lock("short", job_id="cancel-me")

        async def body():
            async with lk:
                held.set()
                await asyncio.sleep(30)
        task = asyncio.ensure_future(body())
        await asyncio.wait_for(held.wait(), 5)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        self.assertEqual(await self.state(lk.job_id), "succeeded")

    async def test_cancelled_while_waiting(self):
        async with self.gq.acquire_lock("locks") as first:
            task = asyncio.ensure_future(
                self.gq.acquire_lock("locks", wait=20).acquire())
            waiting = await until(self.queued_locks, what="a queued lock")
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            jid = waiting[0]["id"]
            await until(lambda: self._is(jid, "cancelled"),
                        what="the waiter's lock job to be cancelled")
            self.assertEqual(await self.state(first.job_id), "running")

    async def _is(self, jid, state):
        return await self.state(jid) == state

    async def test_unknown_class(self):
        with self.assertRaises(ValueError) as cm:
            async with self.gq.acquire_lock("no-such-class", wait=1):
                self.fail("granted")
        self.assertIsInstance(cm.exception, gpuq.UnknownClass)

    async def test_second_waits_for_first(self):
        first = await self.gq.acquire_lock("locks").acquire()
        got = {}

        async def second():
            async with self.gq.acquire_lock("locks", wait=10) as lk:
                got["at"] = time.monotonic()
                got["job"] = lk.job_id
        task = asyncio.ensure_future(second())
        waiting = await until(self.queued_locks, what="a queued lock")
        await asyncio.sleep(0.5)
        self.assertNotIn("at", got)
        released = time.monotonic()
        await first.release()
        await asyncio.wait_for(task, 10)
        self.assertGreaterEqual(got["at"], released)
        self.assertLess(got["at"] - released, 2.0)
        self.assertEqual(got["job"], waiting[0]["id"])
        self.assertEqual(await self.state(got["job"]), "succeeded")

    async def test_wait_runs_out(self):
        async with self.gq.acquire_lock("locks"):
            with self.assertRaises(gpuq.Timeout) as cm:
                await self.gq.acquire_lock("locks", wait=0.5).acquire()
            self.assertEqual(cm.exception.status, 408)


class AsyncJobTest(DaemonCase, unittest.IsolatedAsyncioTestCase):

    def setUp(self):
        self.gq = AsyncClient(self.url, timeout=10)

    async def test_jobs(self):
        async with AsyncClient(self.url) as gq:
            j = await gq.submit("jobs", {"a": 1}, metadata={"m": 1})
            self.assertEqual(j["state"], "queued")
            self.assertEqual((await gq.get(j["id"]))["payload"], {"a": 1})
            ids = [x["id"] async for x in gq.list(cls="jobs", page_size=1)]
            self.assertIn(j["id"], ids)
            with self.assertRaises(gpuq.Timeout):
                await gq.wait(j, timeout=0.3)
            self.assertEqual((await gq.cancel(j))["state"], "cancelled")
            with self.assertRaises(gpuq.BadState):
                await gq.cancel(j)
            self.assertEqual((await gq.requeue(j))["state"], "queued")
            asyncio.get_running_loop().call_later(
                0.3, lambda: asyncio.ensure_future(gq.cancel(j)))
            self.assertEqual((await gq.wait(j, timeout=5))["state"],
                             "cancelled")

    async def test_errors_and_status(self):
        with self.assertRaises(gpuq.UnknownClass):
            await self.gq.submit("no-such-class")
        with self.assertRaises(gpuq.InvalidRequest) as cm:
            await self.gq.submit("jobs", priority=99999)
        self.assertEqual(cm.exception.field, "priority")
        with self.assertRaises(gpuq.NotFound):
            await self.gq.get("j999999")
        st = await self.gq.status()
        self.assertIn("version", st)
        self.assertTrue(await self.gq.healthy())
        with self.assertRaises(OSError):
            await AsyncClient("http://127.0.0.1:1", timeout=2).status()

    async def test_events(self):
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, lambda: asyncio.ensure_future(
            self.gq.submit("jobs")))
        gen = self.gq.events(cls="jobs")
        ev = await asyncio.wait_for(gen.__anext__(), 5)
        await gen.aclose()
        self.assertEqual((ev["class"], ev["state"]), ("jobs", "queued"))
        await self.gq.cancel(ev["id"])

    async def test_lease_flow(self):
        j = await self.gq.submit("work", {"n": 3})
        lease = await self.gq.lease("work", wait=5, worker="aw")
        self.assertIsInstance(lease, AsyncLease)
        self.assertEqual(lease.job_id, j["id"])
        self.assertIn("ttl", await lease.heartbeat())
        done = await lease.complete({"n2": 9})
        self.assertEqual(done["state"], "succeeded")
        with self.assertRaises(gpuq.StaleToken):
            await lease.heartbeat()
        self.assertIsNone(await self.gq.lease("work", wait=0.2))

    async def test_lease_heartbeats_and_exception(self):
        j = await self.gq.submit("short")
        async with await self.gq.lease("short", wait=5) as lease:
            await asyncio.sleep(2.5)
            self.assertEqual((await self.gq.get(j))["state"], "running")
            await lease.yield_({"half": True})
        self.assertEqual((await self.gq.get(j))["progress"], {"half": True})
        with self.assertRaises(ValueError):
            async with await self.gq.lease("short", wait=5) as lease:
                raise ValueError("worker broke")
        got = await self.gq.get(j)
        self.assertEqual(got["error"]["code"], "ValueError")
        lease = await self.gq.lease("short", wait=5)
        await lease.fail("give up", retryable=False)
        self.assertEqual((await self.gq.get(j))["state"], "failed")

    async def test_work_loop(self):
        a = await self.gq.submit("work", {"x": 1})
        b = await self.gq.submit("work", {"x": 2})

        async def handler(job):
            await asyncio.sleep(0.01)
            return {"x": job["payload"]["x"] * 10}
        n = await self.gq.work(["work"], handler, wait=2, max_jobs=2)
        self.assertEqual(n, 2)
        self.assertEqual((await self.gq.get(a))["result"], {"x": 10})
        self.assertEqual((await self.gq.get(b))["result"], {"x": 20})


if __name__ == "__main__":
    unittest.main()
