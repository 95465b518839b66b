"""Init ahead of the request: Lambda SnapStart and provisioned concurrency.

Both run the handler's init (imports, both models, the index: 0.5 s at 100k chunks, 2 s at 1M,
docs/results.md §8) before any request arrives: SnapStart once per published version, after which new
execution environments resume from a snapshot of it; provisioned concurrency in environments kept
ready. Either way a priming /search through the whole handler (Mangum, Starlette, the pipeline, both
models) costs the caller nothing, and what a first request initialises lazily (onnxruntime's buffers for
the request's shapes, the thread pool, modules imported on first use) is then done before it.

Lambda says which init this is in AWS_LAMBDA_INITIALIZATION_TYPE. Under SnapStart the runtime (Lambda's
Python 3.12+ runtimes and base images, or awslambdaric) runs the hooks registered with
`snapshot_restore_py`; an on-demand init neither imports it nor primes. Nothing the init makes must be
unique per environment (ids are drawn from os.urandom per request), so restoring needs no hook but a log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from handler.events import http_api_event
from handler.settings import Settings

log = logging.getLogger(__name__)
PRIMING_QUERY = "what does the evidence say about this"  # with the deployment's defaults (recall_k, mode)


def prime(handler: Callable[[dict, object], dict]) -> None:
    """Answer one /search through `handler`; raises when it is not a 200, so that a broken function fails
    its version's publication instead of being snapshotted."""
    started = time.perf_counter()
    response = handler(http_api_event("POST", "/search", {"query": PRIMING_QUERY}), None)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.get("statusCode") != 200:
        raise RuntimeError(f"priming /search answered {response.get('statusCode')}: {response.get('body')}")
    log.info("primed: /search answered in %.0f ms before the first request", elapsed_ms)


def init_runs_ahead() -> bool:
    """SnapStart and provisioned concurrency run the init before any caller waits."""
    return os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand") in ("snap-start", "provisioned-concurrency")


def settings_for_init(settings: Settings) -> Settings:
    """Full artifact checks (every file's sha256, SQLite quick_check, BM25 postings) where the init runs
    ahead of callers: what they cost is paid once per version (SnapStart) or environment, not by a request."""
    return settings.replace(verify="full") if init_runs_ahead() else settings


def _restored() -> None:
    from handler.observability import mark_cold_start

    mark_cold_start()  # a restored environment's first request counts as a cold start in the metrics
    log.info("restored from a SnapStart snapshot")


def prepare(handler: Callable[[dict, object], dict]) -> None:
    """Prime `handler` now (provisioned concurrency) or before the snapshot (SnapStart); nothing on demand."""
    init_type = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    if init_type == "provisioned-concurrency":
        prime(handler)
    elif init_type == "snap-start":
        from snapshot_restore_py import register_after_restore, register_before_snapshot

        register_before_snapshot(prime, handler)
        register_after_restore(_restored)
