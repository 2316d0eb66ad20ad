"""The dynamic batcher: each caller gets its own rows, batches fill up to the limit or the delay, a failing request does
not fail its neighbours, and a cancelled request is dropped."""

import asyncio

import numpy as np

from helpers.serving.batching import DynamicBatcher


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
