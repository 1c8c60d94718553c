"""Gather concurrent requests into one forward pass.

A CNN's forward pass on a CPU costs nearly as much for one image as for thirty: the fixed cost
(kernel launches, Python, thread hand-offs) dominates small inputs. The worker takes whatever
is waiting whenever it is free (up to ``max_batch``), so a lone request waits for nobody and a
burst of requests shares one call. ``max_batch=1`` turns batching off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool


class Batcher:
    """``await batcher(x)`` returns ``forward(collate([x]))[0]``: with images, uint8 ``x (C, S, S)``
    gives its row ``(n_out,)`` of ``forward((B, C, S, S)) -> (B, n_out)``.

    ``collate`` makes one batch of the waiting inputs (the task's ``collate``: stacked images,
    padded texts, table rows; the default keeps the list); ``forward`` returns one row per input. It runs in a
    worker thread, one batch at a time, so the model is never called from two threads at once.
    """

    def __init__(self, forward: Callable[[Any], Sequence[Any]], max_batch: int = 32,
                 collate: Callable[[list[Any]], Any] = list):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.forward, self.max_batch, self.collate = forward, max_batch, collate
        self.batches = self.items = 0  # counters for /health: items / batches is the mean batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def _ensure_started(self) -> asyncio.Queue:
        # Started lazily on the running loop (a test client may run each request on a new one).
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run())
        return self._queue

    async def __call__(self, x: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self._ensure_started().put_nowait((x, fut))
        return await fut

    async def _run(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [(x, fut) for x, fut in batch if not fut.done()]  # drop disconnected clients
            if not batch:
                continue
            try:
                out = await run_in_threadpool(self._forward, [x for x, _ in batch])
            except Exception as e:  # one bad batch fails its requests, not the worker
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches, self.items = self.batches + 1, self.items + len(batch)
            for (_, fut), row in zip(batch, out):
                if not fut.done():
                    fut.set_result(row)

    def _forward(self, xs: list[Any]) -> Sequence[Any]:
        return self.forward(self.collate(xs))

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def stats(self) -> dict:
        return {"max_batch": self.max_batch, "batches": self.batches, "items": self.items}
