"""Bounded work in flight: an admission gate around the models, and a stop signal when the client leaves.

On a CPU the models use every core, so requests run one at a time (`max_concurrent`) and a few wait
(`max_pending`); the rest get 503 + Retry-After at once instead of a queue that grows without bound
(the GPU batcher has its own queue). A client that disconnects sets its request's stop event, which
the pipeline checks between stages and rerank batches.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import Request

from handler.batching import Overloaded


class Admission:
    def __init__(self, running: int, waiting: int):
        self.running, self.waiting = running, waiting
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._waiters = 0

    def _current(self) -> asyncio.Semaphore:
        """One semaphore per event loop (Mangum may run each Lambda invocation on a new one)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._semaphore, self._waiters = loop, asyncio.Semaphore(self.running), 0
        return self._semaphore

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        semaphore = self._current()
        if semaphore.locked():
            if self._waiters >= self.waiting:
                raise Overloaded(f"{self.running} running and {self._waiters} waiting")
            self._waiters += 1
            try:
                await semaphore.acquire()
            finally:
                self._waiters -= 1
        else:
            await semaphore.acquire()
        try:
            yield
        finally:
            semaphore.release()


@asynccontextmanager
async def stop_on_disconnect(request: Request) -> AsyncIterator[threading.Event]:
    """An event set when the client disconnects (read after the body, so only disconnects arrive)."""
    stop = threading.Event()

    async def listen() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        stop.set()

    listener = asyncio.create_task(listen())
    try:
        yield stop
    finally:
        listener.cancel()
