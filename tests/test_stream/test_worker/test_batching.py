"""Natural micro-batching: batches run one at a time, in order, none larger than the maximum;
what arrives during a batch forms the next one; a slow handler holds the intake back."""

from __future__ import annotations

import asyncio

import pytest

from stream.worker.batching import MicroBatcher


def test_what_arrives_during_a_batch_is_the_next_batch() -> None:
    async def scenario() -> list[list[int]]:
        batches: list[list[int]] = []
        running = 0

        async def handle(batch: list[int]) -> None:
            nonlocal running
            running += 1
            assert running == 1  # one batch at a time
            batches.append(batch)
            await asyncio.sleep(0.05)
            running -= 1

        batcher = MicroBatcher(handle, max_size=4)
        task = asyncio.ensure_future(batcher.run())
        await batcher.add(0)
        await asyncio.sleep(0.01)  # batch [0] is running
        for item in range(1, 11):
            await batcher.add(item)
        while batcher.pending or sum(len(b) for b in batches) < 11:
            await asyncio.sleep(0.01)
        task.cancel()
        return batches

    batches = asyncio.run(scenario())
    assert batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_an_idle_worker_lingers_for_company_but_not_past_a_full_batch() -> None:
    async def scenario(linger: float) -> list[list[int]]:
        batches: list[list[int]] = []

        async def handle(batch: list[int]) -> None:
            batches.append(batch)

        batcher = MicroBatcher(handle, max_size=3, linger=linger)
        task = asyncio.ensure_future(batcher.run())
        for item in range(2):
            await batcher.add(item)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        for item in range(2, 6):
            await batcher.add(item)
        await asyncio.sleep(0.3)
        task.cancel()
        return batches

    assert asyncio.run(scenario(0.0)) == [[0], [1], [2, 3, 4], [5]]
    assert asyncio.run(scenario(0.2)) == [[0, 1], [2, 3, 4], [5]]


def test_intake_waits_while_the_pending_queue_is_full() -> None:
    async def scenario() -> tuple[int, int]:
        release = asyncio.Event()

        async def handle(batch: list[int]) -> None:
            await release.wait()

        batcher = MicroBatcher(handle, max_size=2, max_pending=3)
        task = asyncio.ensure_future(batcher.run())
        added = 0

        async def feed() -> None:
            nonlocal added
            for item in range(10):
                await batcher.add(item)
                added += 1

        feeder = asyncio.ensure_future(feed())
        await asyncio.sleep(0.05)
        held = added  # 2 taken into the running batch, 3 pending, the next add blocked
        release.set()
        await asyncio.wait_for(feeder, 1.0)
        task.cancel()
        return held, added

    held, added = asyncio.run(scenario())
    assert held == 5 and added == 10


def test_a_failing_handler_ends_the_loop() -> None:
    async def scenario() -> None:
        async def handle(batch: list[int]) -> None:
            raise RuntimeError("boom")

        batcher = MicroBatcher(handle, max_size=2)
        task = asyncio.ensure_future(batcher.run())
        await batcher.add(1)
        await asyncio.wait_for(task, 1.0)

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(scenario())
