"""Natural micro-batching: the next batch is whatever arrived while the last one was processed.

faust's ``take_events(n, within)`` stops taking events while its batch is processed and then
waits up to ``within`` again, so a worker running small batches spends most of each cycle
waiting, and its latency is that wait plus the processing. Here events keep arriving (on the
event loop) while a batch is processed (on the worker thread); when the batch is done, the
next one starts at once with everything that arrived meanwhile, up to ``max_size``. Under light
load a batch is one or a few events, processed as soon as they come (``linger`` lets an idle
worker wait that long for company); under heavy load batches grow to ``max_size`` by
themselves. Acknowledging is the handler's job, after its batch is durable, so the guarantee is
unchanged: an event is acknowledged only once its batch is done, and batches run one at a time
in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from faust.types import EventT

Item = TypeVar("Item")


class MicroBatcher(Generic[Item]):
    """Feeds ``handle`` batches of at most ``max_size`` items, one batch at a time.

    ``add`` blocks once ``max_pending`` items wait, so a slow handler slows the intake down
    instead of letting memory grow.
    """

    def __init__(
        self,
        handle: Callable[[list[Item]], Awaitable[None]],
        max_size: int,
        linger: float = 0.0,
        max_pending: int | None = None,
    ) -> None:
        self.handle = handle
        self.max_size = max_size
        self.linger = linger
        self.max_pending = max_pending or 2 * max_size
        self._pending: list[Item] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def add(self, item: Item) -> None:
        """Queue one item; waits while ``max_pending`` items are already queued."""
        while len(self._pending) >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        self._pending.append(item)
        self._arrived.set()

    async def run(self) -> None:
        """Hand batches to ``handle`` until cancelled; an exception from it ends the loop."""
        idle = True  # nothing ran since the first pending item arrived
        while True:
            if not self._pending:
                idle = True
                self._arrived.clear()
                await self._arrived.wait()
            if idle and self.linger > 0 and len(self._pending) < self.max_size:
                await self._linger()
            batch = self._pending[: self.max_size]
            del self._pending[: self.max_size]
            self._room.set()
            await self.handle(batch)
            idle = False

    async def _linger(self) -> None:
        """An idle worker's first event waits up to ``linger`` for others to join it."""
        deadline = asyncio.get_running_loop().time() + self.linger
        while len(self._pending) < self.max_size:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return


async def process_in_batches(
    stream: Any,
    work: Callable[[list[EventT]], Awaitable[None]],
    max_size: int,
    linger: float,
) -> None:
    """Run ``work`` over natural batches of a faust agent's ``stream`` and acknowledge each
    batch's events once ``work`` has returned (so their offsets may be committed); an exception
    from ``work`` ends the agent."""
    manual = stream.noack()

    async def handle(batch: list[EventT]) -> None:
        await work(batch)
        for event in batch:
            await manual.ack(event)

    batcher: MicroBatcher[EventT] = MicroBatcher(handle, max_size, linger)
    dispatcher = asyncio.ensure_future(batcher.run())
    try:
        async for event in manual.events():
            if dispatcher.done():
                dispatcher.result()  # re-raises what stopped it
            await batcher.add(event)
    finally:
        dispatcher.cancel()
