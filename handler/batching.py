"""Dynamic batching for the GPU container: concurrent requests' rerank pairs share token-budget batches.

A GPU is fast only on large batches, yet each request brings its own few dozen pairs. Pairs from all
waiting requests are taken first-come first-served (so no request starves) into batches of at most
`max_batch_tokens` padded tokens (like TEI's max-batch-tokens), waiting at most `max_wait_ms` for
company. Each caller gets exactly its own scores back, in its own order. A bounded queue refuses
new work when full (the API answers 503 with Retry-After) and `close()` drains it before shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
from tokenizers import Encoding

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The queue is full, or the batcher is shutting down: try again later."""


class _Job:
    def __init__(self, encodings: Sequence[Encoding]):
        self.encodings = list(encodings)
        self.out = np.empty(len(self.encodings), dtype=np.float32)
        self.taken = 0  # pairs handed to a batch so far
        self.done = 0  # pairs scored so far
        self.future: Future = Future()
        self.arrived = time.monotonic()

    @property
    def abandoned(self) -> bool:
        return self.future.done()  # timed out or cancelled by its caller


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[Encoding]], np.ndarray],
        max_batch_tokens: int = 16384,
        max_wait_ms: float = 5.0,
        max_pending: int = 64,
        workers: int = 1,
    ):
        self.run_batch, self.max_batch_tokens = run_batch, max_batch_tokens
        self.max_wait, self.max_pending = max_wait_ms / 1000, max_pending
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0  # batches run and pairs scored so far (tests read them)
        self.pairs = 0
        # Two workers let one build the next batch's feeds (and copy results back) while the other's
        # batch runs: onnxruntime releases the GIL inside session.run.
        self._workers = [
            threading.Thread(target=self._loop, name=f"dynamic-batcher-{i}", daemon=True) for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, encodings: Sequence[Encoding]) -> Future:
        job = _Job(encodings)
        if not job.encodings:
            job.future.set_result(job.out)
            return job.future
        with self._cond:
            if self._closed:
                raise Overloaded("shutting down")
            if len(self._queue) >= self.max_pending:
                raise Overloaded(f"{len(self._queue)} requests already waiting")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def score(self, encodings: Sequence[Encoding], timeout: float | None = None) -> np.ndarray:
        """Block until this caller's pairs are scored; on timeout its unscored pairs are dropped."""
        future = self.submit(encodings)
        try:
            return future.result(timeout)
        except FutureTimeout:
            with self._cond:  # workers deliver under this lock: cancel cannot race a set_result
                cancelled = future.cancel()  # False only when the result arrived in the meantime
            if cancelled:
                raise TimeoutError(f"reranking did not finish within {timeout}s") from None
            return future.result()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued, stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout)

    # -- worker ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[tuple[_Job, int]] | None:
        """Called with the lock held: wait for work, then for company, then take pairs FIFO."""
        while not self._queue and not self._closed:
            self._cond.wait()
        if not self._queue:
            return None  # closed and drained
        deadline = self._queue[0].arrived + self.max_wait
        while not self._closed and self._queued_tokens() < self.max_batch_tokens:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        return self._take()

    def _queued_tokens(self) -> int:
        return sum(len(e.ids) for job in self._queue for e in job.encodings[job.taken :])

    def _take(self) -> list[tuple[_Job, int]]:
        """Pairs in arrival order while the padded batch (rows × longest) fits the token budget."""
        batch, longest = [], 0
        while self._queue:
            job = self._queue[0]
            if job.abandoned:
                self._queue.popleft()
                continue
            length = len(job.encodings[job.taken].ids)
            if batch and max(longest, length) * (len(batch) + 1) > self.max_batch_tokens:
                break
            batch.append((job, job.taken))
            longest = max(longest, length)
            job.taken += 1
            if job.taken == len(job.encodings):
                self._queue.popleft()
        return batch

    def _run(self, batch: list[tuple[_Job, int]]) -> None:
        try:
            logits = self.run_batch([job.encodings[i] for job, i in batch])
        except Exception as error:  # the model failed: every caller in this batch hears why
            log.exception("batch of %d pairs failed", len(batch))
            with self._cond:
                for job in {id(job): job for job, _ in batch}.values():
                    if not job.future.done():
                        job.future.set_exception(error)
            return
        with self._cond:  # another worker may be delivering pairs of the same request
            self.batches += 1
            self.pairs += len(batch)
            for (job, i), logit in zip(batch, logits, strict=True):
                job.out[i] = logit
                job.done += 1
                if job.done == len(job.encodings) and not job.future.done():
                    job.future.set_result(job.out)


class BatchedCrossEncoder:
    """The cross-encoder as the pipeline sees it, with `logits` routed through a DynamicBatcher."""

    def __init__(
        self, cross, max_batch_tokens: int, max_wait_ms: float, max_pending: int, timeout_s: float, workers: int = 1
    ):
        self.cross, self.timeout_s = cross, timeout_s
        self.manifest, self.max_length, self.tokenizer = cross.manifest, cross.max_length, cross.tokenizer
        self.batcher = DynamicBatcher(cross.logits_batch, max_batch_tokens, max_wait_ms, max_pending, workers)

    def encode(self, query: str, passages: Sequence[str]) -> list[Encoding]:
        return self.cross.encode(query, passages)

    def logits_encoded(self, encodings: Sequence[Encoding], stop=None) -> np.ndarray:
        """`stop` is checked by the pipeline between stages; queued pairs finish with their batch."""
        return self.batcher.score(encodings, self.timeout_s)

    def close(self) -> None:
        self.batcher.close()
