"""Dynamic batching: requests that arrive close together share one runtime call.

Each request waits in a queue; a worker takes the first one, keeps gathering until `max_batch_size` rows are waiting
or `max_delay_ms` has passed since that first request, runs the batch in one call on a worker thread, and hands each
caller its own rows back. It pays when a call has a large fixed cost (a TensorFlow signature, a GPU launch) and costs
up to `max_delay_ms` of latency when it does not. A request cancelled while it waits (its client went away) is dropped
from the batch; if a batch call fails, its requests are retried one by one, so a bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Pending:
    x: np.ndarray
    future: asyncio.Future


class DynamicBatcher:
    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 32, max_delay_ms: float = 2.0,
                 on_batch: Callable[[int], None] | None = None):
        self.predict, self.max_batch_size, self.max_delay_s = predict, max_batch_size, max_delay_ms / 1000
        self.on_batch = on_batch or (lambda size: None)  # metrics hook: rows per runtime call
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")  # one runtime call at a time
        self.worker: asyncio.Task | None = None
        self.busy = False  # a batch is being computed

    def depth(self) -> int:
        return self.queue.qsize()

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """The model's output rows for the rows of `x`, computed in a batch with whatever else is waiting."""
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self.run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(x, future))
        return await future

    async def gather(self) -> list[Pending]:
        batch = [await self.queue.get()]
        rows, deadline = len(batch[0].x), time.monotonic() + self.max_delay_s
        while rows < self.max_batch_size:
            try:
                item = self.queue.get_nowait()  # under load the next request is already waiting: no timer needed
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        item = await self.queue.get()
                except TimeoutError:
                    break
            batch.append(item)
            rows += len(item.x)
        return [p for p in batch if not p.future.done()]  # cancelled while waiting: nobody wants the answer

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.gather()
            if not batch:
                continue
            self.busy = True
            try:
                outputs = await loop.run_in_executor(self.executor, self.predict, np.concatenate([p.x for p in batch]))
                self.on_batch(sum(len(p.x) for p in batch))
                start = 0
                for p in batch:
                    rows = outputs[start : start + len(p.x)]
                    start += len(p.x)
                    if not p.future.done():
                        p.future.set_result(rows)
            except Exception:
                await self.one_by_one(batch)
            finally:
                self.busy = False

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
        """Stop after answering what is already queued or running (a replaced model version finishes its requests)."""
        deadline = time.monotonic() + drain_timeout_s
        while (not self.queue.empty() or self.busy) and self.worker is not None and not self.worker.done() \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=False)
