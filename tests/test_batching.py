"""deploy/batching.QueueBatcher: batches form when the model is free, from what queued meanwhile."""

import asyncio
import threading

import pytest

from deploy.batching import QueueBatcher


class GatedForward:
    """A forward that records each batch and, while `gate` is clear, blocks (a long forward)."""

    def __init__(self):
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.entered.set()
        self.gate.wait(10)
        if "boom" in items:
            raise RuntimeError("forward failed")
        return [f"out-{item}" for item in items]


async def started(forward: GatedForward) -> None:
    await asyncio.to_thread(forward.entered.wait, 10)


def test_requests_that_queue_during_a_forward_form_the_next_batch_up_to_the_cap():
    forward = GatedForward()

    async def scenario():
        batcher = QueueBatcher(forward, max_batch_size=4, wait_s=0)
        forward.gate.clear()
        first = asyncio.create_task(batcher.submit(0))
        await started(forward)  # the model is busy with request 0
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        forward.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert forward.batches == [[0], [1, 2, 3, 4], [5, 6]]
    assert first[0] == "out-0" and [result for result, _ in rest] == [f"out-{i}" for i in range(1, 7)]
    assert all(queued > 0 for _, queued in rest)  # they waited for the model, not for a window


def test_a_lone_request_on_an_idle_model_runs_at_once():
    forward = GatedForward()

    async def scenario():
        batcher = QueueBatcher(forward, max_batch_size=8, wait_s=0)
        return await batcher.submit("a"), batcher

    (result, queued), _ = asyncio.run(scenario())
    assert result == "out-a" and forward.batches == [["a"]]
    assert queued < 0.5


def test_a_batch_wait_holds_a_partial_batch_until_it_fills():
    forward = GatedForward()

    async def scenario():
        batcher = QueueBatcher(forward, max_batch_size=3, wait_s=5)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        others = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        return await asyncio.gather(first, *others)

    results = asyncio.run(asyncio.wait_for(scenario(), 4))  # full at 3, long before the 5 s window
    assert forward.batches == [[1, 2, 3]] and [r for r, _ in results] == ["out-1", "out-2", "out-3"]


def test_a_failed_forward_fails_its_batch_only():
    forward = GatedForward()

    async def scenario():
        batcher = QueueBatcher(forward, max_batch_size=2, wait_s=0)
        forward.gate.clear()
        blocker = asyncio.create_task(batcher.submit("x"))
        await started(forward)
        doomed = [asyncio.create_task(batcher.submit(i)) for i in ("boom", "y")]
        await asyncio.sleep(0.05)
        forward.gate.set()
        outcomes = await asyncio.gather(blocker, *doomed, return_exceptions=True)
        return outcomes, await batcher.submit("after")

    outcomes, after = asyncio.run(scenario())
    assert outcomes[0][0] == "out-x"
    assert all(isinstance(o, RuntimeError) for o in outcomes[1:])
    assert after[0] == "out-after"


def test_a_request_whose_caller_gave_up_is_left_out_of_the_batch():
    forward = GatedForward()

    async def scenario():
        batcher = QueueBatcher(forward, max_batch_size=4, wait_s=0)
        forward.gate.clear()
        blocker = asyncio.create_task(batcher.submit(0))
        await started(forward)
        gone = asyncio.create_task(batcher.submit("gone"))
        kept = asyncio.create_task(batcher.submit("kept"))
        await asyncio.sleep(0.02)
        gone.cancel()
        await asyncio.sleep(0.02)
        forward.gate.set()
        return await blocker, await kept

    asyncio.run(scenario())
    assert forward.batches == [[0], ["kept"]]


def test_bad_batching_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        QueueBatcher(lambda items: items, max_batch_size=0)
