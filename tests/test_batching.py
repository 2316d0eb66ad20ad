"""The dynamic batcher: each caller gets its own rows, batches fill up to the limit or the delay, a failing request does
not fail its neighbours, and a cancelled request is dropped; a close answers every request it holds, a full queue
refuses at once. And the unbatched caller: inline for a fast model, in a thread for a slow one, bounded too. Time is
controlled with events and fake models (Gate), not with sleeps."""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers.serving.batching import BatcherClosed, DirectCalls, DynamicBatcher, QueueFull


def run(coroutine):
    return asyncio.run(coroutine)


class Recorder:
    """A fake model: doubles its input and remembers the size of every call; refuses rows containing -1."""

    def __init__(self):
        self.calls = []

    def __call__(self, x):
        self.calls.append(len(x))
        if (x == -1).any():
            raise ValueError("bad row")
        return x * 2


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows_back():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, max_batch_size=8, max_delay_ms=50)
        inputs = [np.full((1 + i % 3, 2), i, np.float32) for i in range(10)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.close()
        return inputs, outputs

    inputs, outputs = run(main())
    for x, y in zip(inputs, outputs):
        np.testing.assert_array_equal(y, x * 2)
    assert sum(model.calls) == sum(len(x) for x in inputs) and len(model.calls) < len(inputs)
    assert all(size <= 8 + 2 for size in model.calls)  # a batch stops growing once it holds max_batch_size rows


def test_a_lone_request_is_answered_after_the_delay_not_held_for_a_full_batch():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, max_batch_size=64, max_delay_ms=5)
        y = await asyncio.wait_for(batcher.submit(np.ones((1, 2), np.float32)), timeout=5)
        await batcher.close()
        return y

    np.testing.assert_array_equal(run(main()), [[2, 2]])
    assert model.calls == [1]


def test_a_failing_request_fails_alone():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, max_batch_size=16, max_delay_ms=50)
        good = [batcher.submit(np.full((1, 2), i, np.float32)) for i in range(3)]
        bad = batcher.submit(np.full((1, 2), -1, np.float32))
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        await batcher.close()
        return results

    *good, bad = run(main())
    assert isinstance(bad, ValueError)
    for i, y in enumerate(good):
        np.testing.assert_array_equal(y, [[2 * i, 2 * i]])


def test_a_request_cancelled_while_waiting_is_dropped_from_its_batch():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, max_batch_size=16, max_delay_ms=100)
        doomed = asyncio.ensure_future(batcher.submit(np.zeros((5, 2), np.float32)))
        kept = asyncio.ensure_future(batcher.submit(np.ones((1, 2), np.float32)))
        await asyncio.sleep(0.01)
        doomed.cancel()
        y = await kept
        await batcher.close()
        return y, doomed

    y, doomed = run(main())
    np.testing.assert_array_equal(y, [[2, 2]])
    assert doomed.cancelled() and model.calls == [1]


def test_closing_answers_what_is_already_queued():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, max_batch_size=1, max_delay_ms=1)
        pending = [asyncio.ensure_future(batcher.submit(np.full((1, 2), i, np.float32))) for i in range(5)]
        await asyncio.sleep(0)  # let them queue
        await batcher.close()
        return await asyncio.gather(*pending)

    results = run(main())
    assert [float(y[0, 0]) for y in results] == [0, 2, 4, 6, 8]


# --------------------------------------------------------------------------- closing, shedding, logging


class Gate:
    """A fake model that blocks inside its call until `release()`: the test decides when a batch finishes. Calls on
    all-zero rows (the timing calls of DirectCalls.plan) pass straight through."""

    def __init__(self):
        self.entered, self.open, self.calls = threading.Event(), threading.Event(), []

    def __call__(self, x):
        if x.any():
            self.calls.append(len(x))
            self.entered.set()
            assert self.open.wait(30), "the test never released the gate"
        return x * 2

    def release(self):
        self.open.set()


async def until(condition, timeout_s: float = 30.0):
    """Let the event loop run until `condition()` holds, checking every millisecond: a wait bounded for a hang, not a
    measurement (threads in the pool, such as the timing calls of DirectCalls.plan, take their own time)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition never held within {timeout_s} s")
        await asyncio.sleep(0.001)


async def until_called(gate: Gate):
    assert await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 30)


def test_closing_while_a_batch_is_being_gathered_answers_it():
    # The race: the worker has taken a request off the queue and waits for companions (here up to a minute); the queue
    # is empty and no batch is computing. Closing now must still answer that request, and at once.
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, max_batch_size=64, max_delay_ms=60_000)
        request = asyncio.ensure_future(batcher.submit(np.ones((1, 2), np.float32)))
        await until(lambda: batcher.worker is not None and batcher.queue.empty())  # taken: the worker is gathering
        await asyncio.wait_for(batcher.close(), timeout=30)
        done, _ = await asyncio.wait([request], timeout=5)  # only bounds the failure: answered before close returned
        assert done, "a request the worker had taken was never answered"
        return request.result()

    np.testing.assert_array_equal(run(main()), [[2, 2]])
    assert model.calls == [1]


def test_a_submit_after_close_fails_at_once():
    async def main():
        batcher = DynamicBatcher(Recorder())
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(np.ones((1, 2), np.float32))

    run(main())


def test_past_the_drain_timeout_every_request_left_fails_with_batcher_closed():
    gate = Gate()

    async def main():
        batcher = DynamicBatcher(gate, max_batch_size=1, max_delay_ms=1)
        requests = [asyncio.ensure_future(batcher.submit(np.full((1, 2), i + 1, np.float32))) for i in range(3)]
        await until_called(gate)  # one request computing (stuck in the model), two queued behind it
        await batcher.close(drain_timeout_s=0.05)  # the model is stuck: the drain must time out
        await asyncio.wait(requests, timeout=5)  # only bounds the failure: each was failed before close returned
        return [r.exception() if r.done() else "never answered" for r in requests]

    try:
        outcomes = run(main())
    finally:
        gate.release()
    assert all(isinstance(error, BatcherClosed) for error in outcomes), outcomes


def test_a_full_queue_refuses_at_once_and_the_accepted_requests_are_answered():
    gate = Gate()

    async def main():
        batcher = DynamicBatcher(gate, max_batch_size=1, max_delay_ms=1, max_queue=2)
        first = asyncio.ensure_future(batcher.submit(np.full((1, 2), 1, np.float32)))
        await until_called(gate)  # taken off the queue: computing
        queued = [asyncio.ensure_future(batcher.submit(np.full((1, 2), i, np.float32))) for i in (2, 3)]
        await until(lambda: batcher.depth() == 2)
        with pytest.raises(QueueFull):
            await batcher.submit(np.full((1, 2), 4, np.float32))
        gate.release()
        results = await asyncio.gather(first, *queued)
        await batcher.close()
        return results

    try:
        results = run(main())
    finally:
        gate.release()
    assert [float(y[0, 0]) for y in results] == [2, 4, 6]


def test_a_failed_batch_is_logged_once_with_its_cause(caplog):
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, max_batch_size=16, max_delay_ms=50)
        results = await asyncio.gather(batcher.submit(np.ones((1, 2), np.float32)),
                                       batcher.submit(np.full((1, 2), -1, np.float32)), return_exceptions=True)
        await batcher.close()
        return results

    with caplog.at_level(logging.WARNING, logger="helpers.serving"):
        good, bad = run(main())
    np.testing.assert_array_equal(good, [[2, 2]])
    assert isinstance(bad, ValueError)
    (record,) = [r for r in caplog.records if "one by one" in r.getMessage()]
    assert "ValueError: bad row" in record.getMessage() and record.exc_info is not None


# --------------------------------------------------------------------------- unbatched calls: inline or in a thread


def planned(model, **options):
    """The DirectCalls of `model` after its first call, the decisions it reported, and the threads its calls ran in."""
    decisions = []

    async def main():
        with ThreadPoolExecutor(2) as pool:
            calls = DirectCalls(model, np.zeros((1, 2), np.float32), pool, on_plan=lambda *d: decisions.append(d), **options)
            await asyncio.gather(*(calls.submit(np.ones((1, 2), np.float32)) for _ in range(3)))
            return calls

    return run(main()), decisions


def test_a_fast_model_runs_inline_and_a_slow_one_in_the_thread_pool():
    fast, decisions = planned(lambda x: x * 2)
    assert fast.inline and len(decisions) == 1 and decisions[0][0] is True  # planned once, though three requests came
    threads = set()

    def slow(x):
        threads.add(threading.current_thread())
        time.sleep(0.02)  # over LOOP_TIMING_LIMIT_S: never timed on the event loop
        return x * 2

    slow_calls, decisions = planned(slow)
    assert not slow_calls.inline and slow_calls.call_s >= 0.02 and decisions == [(False, slow_calls.call_s)]
    assert threading.main_thread() not in threads  # not one call, timing included, ran on the event loop


def test_an_uncertain_timing_in_a_thread_is_settled_on_the_event_loop():
    # slow when called from a thread (as a call waiting for the GIL would look), fast on the event loop's thread
    def model(x):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.002)
        return x * 2

    calls, _ = planned(model)
    assert calls.inline and calls.call_s < calls.inline_below_s


def test_unbatched_calls_in_the_pool_are_bounded():
    gate = Gate()

    async def main():
        with ThreadPoolExecutor(4) as pool:
            calls = DirectCalls(gate, np.zeros((1, 2), np.float32), pool, max_queue=2, inline_below_s=0)
            accepted = [asyncio.ensure_future(calls.submit(np.full((1, 2), i, np.float32))) for i in (1, 2)]
            await until(lambda: calls.in_flight == 2)
            with pytest.raises(QueueFull):
                await calls.submit(np.full((1, 2), 3, np.float32))
            gate.release()
            return await asyncio.gather(*accepted)

    try:
        results = run(main())
    finally:
        gate.release()
    assert [float(y[0, 0]) for y in results] == [2, 4]


def test_one_slow_first_timing_does_not_send_a_fast_model_to_the_pool():
    # the first call is slow (a cold start, a page fault, another process starting): the fastest timing decides
    calls_made = []

    def model(x):
        calls_made.append(1)
        if len(calls_made) == 1:
            time.sleep(0.012)  # over LOOP_TIMING_LIMIT_S: alone, it would look like a slow model
        return x * 2

    calls, _ = planned(model)
    assert calls.inline and calls.call_s < calls.inline_below_s
