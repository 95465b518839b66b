"""Build the two ONNX models on a worker thread, started as early as the settings are known.

onnxruntime releases the GIL while it builds a session, so the handler's remaining imports and the
hnswlib load (both hold the GIL) run on the other core meanwhile. Measured on 2 vCPUs: importing the
API layer while a session builds took 0.22–0.24 s against 0.32–0.37 s one after the other
(docs/results.md §8). The hnswlib load holds the GIL, so it stays on the calling thread.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from handler.onnx_model import CrossEncoder, Encoder, available_cpus
from handler.settings import Settings


@dataclass
class Models:
    encoder: Encoder
    cross: CrossEncoder
    load_ms: dict[str, float]


def _build(settings: Settings) -> Models:
    threads = settings.threads or available_cpus()
    session = {"threads": threads, "providers": settings.provider_names, "require_gpu": settings.require_gpu}
    started = time.perf_counter()
    encoder = Encoder(settings.bi_dir, **session)
    built = time.perf_counter()
    cross = CrossEncoder(settings.cross_dir, batch_size=settings.rerank_batch_size, **session)
    done = time.perf_counter()
    return Models(encoder, cross, {"bi_ms": _ms(built - started), "cross_ms": _ms(done - built)})


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def start_loading(settings: Settings) -> Future[Models]:
    """Start building both models; `.result()` waits for them and re-raises what failed."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-models")
    future = pool.submit(_build, settings)
    pool.shutdown(wait=False)  # the thread ends with the job
    return future
