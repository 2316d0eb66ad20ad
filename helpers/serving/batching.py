"""How a request reaches its model: gathered with others into one call (DynamicBatcher), or one call each (DirectCalls).

DynamicBatcher: each request waits in a bounded queue; a worker takes the first one, keeps gathering until
`max_batch_size` rows are waiting or `max_delay_ms` has passed since that first request, runs the batch in one call on
a worker thread, and hands each caller its own rows back. It pays when a call has a large fixed cost (a TensorFlow
signature, a GPU launch) and costs up to `max_delay_ms` of latency when it does not. A request cancelled while it
waits (its client went away) is dropped from the batch; if a batch call fails, the failure is logged and its requests
are retried one by one, so a bad request cannot fail its neighbours.

DirectCalls, without batching: a model that answers faster than a hand-off to a thread costs (ONNX Runtime: tens of
microseconds) runs inline on the event loop; a slower one runs in a thread pool, so that it cannot stall health checks
and every other connection while it computes. Which of the two is decided from timed calls at the version's first
request (`DirectCalls.plan`).

Both shed load instead of queueing it without end: beyond `max_queue` requests waiting (or calls in the pool), `submit`
raises QueueFull at once, and the server answers 503 with Retry-After. Closing a batcher (its version replaced or
unloaded) never strands a caller: every request already taken or queued is computed, or, past the drain timeout,
failed with BatcherClosed, and a submit after close fails at once the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger("helpers.serving")

# A thread waiting for the GIL gets it within the switch interval (5 ms), so a timed call slower than this is a slow
# model, not a fast one that waited: it is never timed on the event loop (see DirectCalls.plan).
LOOP_TIMING_LIMIT_S = 0.01
LOOP_TIMINGS = 3
POOL_TIMINGS, POOL_TIMING_BUDGET_S = 5, 0.05  # timings in the executor: at most 5, or as many as fit in 50 ms


class Unavailable(RuntimeError):
    """The request was not run and a retry can succeed (the server answers 503 with Retry-After)."""


class QueueFull(Unavailable):
    pass


class BatcherClosed(Unavailable):
    pass


@dataclass
class Pending:
    x: np.ndarray
    future: asyncio.Future


class DynamicBatcher:
    inline = False  # like DirectCalls.inline: every request goes through submit()

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 32, max_delay_ms: float = 2.0,
                 on_batch: Callable[[int], None] | None = None, max_queue: int = 0):
        self.predict, self.max_batch_size, self.max_delay_s = predict, max_batch_size, max_delay_ms / 1000
        self.on_batch = on_batch or (lambda size: None)  # metrics hook: rows per runtime call
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(max_queue)  # 0: no bound
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")  # one runtime call at a time
        self.worker: asyncio.Task | None = None
        # Off the queue but not answered yet: the batch being gathered or computed. Every request is always in the
        # queue, here, or answered, which is what lets close() answer them all.
        self.taken: list[Pending] = []
        self.gathering: asyncio.Timeout | None = None  # the wait for more rows, which close() cuts short
        self.closed = False

    def depth(self) -> int:
        return self.queue.qsize()

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """The model's output rows for the rows of `x`, computed in a batch with whatever else is waiting."""
        if self.closed:
            raise BatcherClosed("this model version is being replaced or unloaded")
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self.run())
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(Pending(x, future))
        except asyncio.QueueFull:  # answered at once: a client told to retry beats one left waiting for its timeout
            raise QueueFull(f"{self.queue.maxsize} requests are already waiting") from None
        return await future

    async def run(self) -> None:
        while not (self.closed and self.queue.empty()):  # a closing batcher still answers what is queued
            await self.gather()
            if self.taken:
                await self.compute(self.taken)
            self.taken = []

    async def gather(self) -> None:
        """Take the next batch into `taken`: the first request, then whatever arrives within the delay."""
        self.taken = [await self.queue.get()]
        rows, deadline = len(self.taken[0].x), asyncio.get_running_loop().time() + self.max_delay_s
        while rows < self.max_batch_size:
            try:
                item = self.queue.get_nowait()  # under load the next request is already waiting: no timer needed
            except asyncio.QueueEmpty:
                item = None if self.closed else await self.wait_for_more(deadline)  # closing: no more will come
            if item is None:
                break
            self.taken.append(item)
            rows += len(item.x)
        self.taken = [p for p in self.taken if not p.future.done()]  # cancelled while waiting: nobody wants the answer

    async def wait_for_more(self, deadline: float) -> Pending | None:
        try:
            async with asyncio.timeout_at(deadline) as self.gathering:
                return await self.queue.get()
        except TimeoutError:
            return None
        finally:
            self.gathering = None

    async def compute(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self.executor, self.predict, np.concatenate([p.x for p in batch]))
            self.on_batch(sum(len(p.x) for p in batch))
            start = 0
            for p in batch:
                rows = outputs[start : start + len(p.x)]
                start += len(p.x)
                if not p.future.done():
                    p.future.set_result(rows)
        except Exception as error:
            # logged here, once per batch: the retries below may all succeed (a batch-only failure, such as memory)
            # and then nothing else would ever say why the batch failed
            log.warning("a batch of %d requests failed (%s: %s); retrying them one by one", len(batch),
                        type(error).__name__, error, exc_info=error)
            await self.one_by_one(batch)

    async def one_by_one(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        for p in batch:
            try:
                result = await loop.run_in_executor(self.executor, self.predict, p.x)
                self.on_batch(len(p.x))
                if not p.future.done():
                    p.future.set_result(result)
            except Exception as error:
                if not p.future.done():
                    p.future.set_exception(error)

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new requests, answer those already taken or queued (a replaced model version finishes its requests),
        then stop. Past `drain_timeout_s` (a model stuck in a call), what is left fails with BatcherClosed: no caller
        is ever left waiting for its request timeout."""
        self.closed = True  # submit() refuses from now on, so the queue only shrinks
        if self.gathering is not None and not self.gathering.expired():
            self.gathering.reschedule(asyncio.get_running_loop().time())  # compute the batch being gathered now
        try:
            if self.worker is not None and not self.worker.done():
                if not self.taken and self.queue.empty():
                    self.worker.cancel()  # idle, waiting for a request that can no longer come
                await asyncio.wait([self.worker], timeout=drain_timeout_s)
        finally:
            self.stop()

    def stop(self) -> None:
        """Cancel the worker and fail whatever it had not answered."""
        if self.worker is not None:
            self.worker.cancel()
        left = [*self.taken, *self.empty_queue()]
        self.taken = []
        for p in left:
            if not p.future.done():
                p.future.set_exception(BatcherClosed("this model version was closed before the request could run"))
        self.executor.shutdown(wait=False)

    def empty_queue(self) -> list[Pending]:
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items


def timed(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> float:
    started = time.perf_counter()
    predict(x)
    return time.perf_counter() - started


class DirectCalls:
    """One runtime call per request, inline on the event loop or in `executor` (the version's first request decides,
    see `plan`); at most `max_queue` calls in the executor at once."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], example: np.ndarray, executor: Executor,
                 max_queue: int = 0, inline_below_s: float = 200e-6,
                 on_plan: Callable[[bool, float], None] | None = None):
        self.predict, self.example, self.executor = predict, example, executor
        self.max_queue, self.inline_below_s = max_queue, inline_below_s
        self.on_plan = on_plan or (lambda inline, seconds: None)  # told the decision once: logs and metrics
        self.inline: bool | None = None  # None until planned
        self.call_s = float("nan")  # the timed cost of a one-row call that decided
        self.planning: asyncio.Task | None = None
        self.in_flight = 0

    def depth(self) -> int:
        return self.in_flight

    async def submit(self, x: np.ndarray) -> np.ndarray:
        if self.inline is None:
            await self.planned()
        if self.inline:
            return self.predict(x)  # nothing else runs meanwhile: why only a model this fast runs here
        if self.max_queue and self.in_flight >= self.max_queue:
            raise QueueFull(f"{self.in_flight} calls are already running or waiting")
        # counted until the await ends: a call abandoned by its request timeout may still run, but a call not yet
        # started is cancelled with it, so the pool holds at most max_queue + its thread count
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.predict, x)
        finally:
            self.in_flight -= 1

    async def planned(self) -> None:
        if self.planning is None:  # the first request plans; those arriving meanwhile wait for the same plan
            self.planning = asyncio.get_running_loop().create_task(self.plan())
        await asyncio.shield(self.planning)  # a request that gives up must not cancel the plan the others wait for

    async def plan(self) -> None:
        """Time one-row calls (the warm-up input) and run inline if one takes less than `inline_below_s`. A timing can
        come out too long (the timing thread waited for the GIL, a page fault, a first call allocating), never too
        short, so one fast call is proof enough and the fastest of several is the estimate. The calls are timed in the
        executor first, so a slow model never runs on the event loop at all: up to POOL_TIMINGS of them, stopping at a
        fast one or once POOL_TIMING_BUDGET_S is spent (a slow model is not timed for long). Only an uncertain result
        (between the threshold and LOOP_TIMING_LIMIT_S) is timed on the event loop too, where no other thread's hold
        on the GIL inflates the figure: up to LOOP_TIMINGS calls, once per version."""
        try:
            seconds = await self.time_in_executor()
            for _ in range(LOOP_TIMINGS):
                if seconds < self.inline_below_s or seconds >= LOOP_TIMING_LIMIT_S:
                    break
                seconds = min(seconds, timed(self.predict, self.example))
        except Exception:  # the requests will fail, and say why; the thread pool is the safe place for a broken model
            log.exception("timing a one-row call failed; unbatched calls run in the thread pool")
            seconds = float("inf")
        self.call_s, self.inline = seconds, seconds < self.inline_below_s
        self.on_plan(self.inline, seconds)

    async def time_in_executor(self) -> float:
        loop, fastest, spent = asyncio.get_running_loop(), float("inf"), 0.0
        for _ in range(POOL_TIMINGS):
            seconds = await loop.run_in_executor(self.executor, timed, self.predict, self.example)
            fastest, spent = min(fastest, seconds), spent + seconds
            if fastest < self.inline_below_s or spent >= POOL_TIMING_BUDGET_S:
                break
        return fastest

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Nothing to stop: calls in flight finish in the shared executor, and a request still holding this version
        may run on it."""
