"""Build the two ONNX models on worker threads, started as early as the settings are known.

onnxruntime releases the GIL while it builds a session, so the handler's remaining imports run
meanwhile; hnswlib's load holds the GIL, so it stays on the calling thread (docs/results.md §8).
That calling thread is the cold start's critical path, so the builders leave it a core of its own:
on 2 vCPUs both models build one after the other on one worker (two workers beside the main thread
answered the first request later, in interleaved runs: docs/results.md §8).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from handler.cpu import available_cpus
from handler.errors import ArtifactError
from handler.manifest import MANIFEST_NAME
from handler.onnx_model import CrossEncoder, Encoder, FirstPass
from handler.settings import Settings


@dataclass
class Models:
    encoder: Encoder
    cross: CrossEncoder
    first_pass: FirstPass | None  # the cascade's first-pass model, when the settings ask for it
    load_ms: dict[str, float]


def _timed(build, *args, **kwargs):
    started = time.perf_counter()
    return build(*args, **kwargs), round((time.perf_counter() - started) * 1000, 2)


@dataclass
class PendingModels:
    bi: Future
    cross: Future
    first_pass: Future | None

    def result(self) -> Models:
        """Wait for the models; re-raises what failed to load."""
        (encoder, bi_ms), (cross, cross_ms) = self.bi.result(), self.cross.result()
        load_ms = {"bi_ms": bi_ms, "cross_ms": cross_ms}
        first_pass = None
        if self.first_pass is not None:
            first_pass, load_ms["first_pass_ms"] = self.first_pass.result()
        return Models(encoder, cross, first_pass, load_ms)


def builder_threads(cpus: int) -> int:
    """Worker threads for the two model builds: every CPU but the calling thread's, one or two."""
    return min(2, max(1, cpus - 1))


def start_loading(settings: Settings) -> PendingModels:
    """Start building the models on worker threads (see `builder_threads`): both stages', and the rerank
    cascade's first-pass model when the settings ask for it."""
    if settings.rerank.cascade_first_pass == "model" and not (settings.artifacts.first_pass / MANIFEST_NAME).is_file():
        raise ArtifactError(
            settings.artifacts.first_pass / MANIFEST_NAME,
            "cascade_first_pass=model needs the distilled first pass: `twostage export --which first-pass` (or "
            "TWOSTAGE_CASCADE_FIRST_PASS=stage1: the cascade in stage 1's order)",
        )
    cpus = available_cpus()
    session = {
        "threads": settings.threads or cpus,
        "providers": settings.provider_names,
        "require_gpu": settings.require_gpu,
    }
    pool = ThreadPoolExecutor(max_workers=builder_threads(cpus), thread_name_prefix="load-models")
    bi = pool.submit(_timed, Encoder, settings.artifacts.bi, **session)
    cross = pool.submit(
        _timed,
        CrossEncoder,
        settings.artifacts.cross,
        batch_size=settings.rerank.rerank_batch_size,
        max_length=settings.rerank.rerank_max_length,
        **session,
    )
    first_pass = None
    if settings.rerank.cascade_first_pass == "model":
        first_pass = pool.submit(
            _timed,
            FirstPass,
            settings.artifacts.first_pass,
            batch_size=settings.rerank.rerank_batch_size,
            max_length=settings.rerank.first_pass_max_length,
            **session,
        )
    pool.shutdown(wait=False)  # the threads end with their jobs
    return PendingModels(bi, cross, first_pass)
