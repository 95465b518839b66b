"""The dynamic batcher under concurrency, on a real exported (fp32) cross-encoder."""

import threading
import time

import numpy as np
import pytest

from handler.batching import DynamicBatcher, Overloaded
from handler.onnx_model import CrossEncoder
from model_export.export import export_all
from model_export.settings import ExportSettings
from tests.conftest import make_tiny_bert

QUERY = "dose for children"


@pytest.fixture(scope="module")
def cross(tmp_path_factory) -> CrossEncoder:
    """fp32, so a pair scores the same in any batch (dynamic int8 depends on the batch's range)."""
    root = tmp_path_factory.mktemp("fp32-cross")
    tiny = make_tiny_bert(root / "hf", for_cross=True, seed=3)
    export_all(ExportSettings(models_dir=root / "models", which="cross", cross_model=str(tiny), quantize="none"))
    return CrossEncoder(root / "models" / "cross")


def passages_for(caller: int) -> list[str]:
    words = ["adults", "children", "tablet", "dose", "weight", "food", "morning", "evening", "kidney", "liver"]
    return [" ".join(words[(caller + i) % len(words) :] + [str(caller), str(i)]) for i in range(1 + caller % 7)]


def run_together(count: int, work) -> list:
    """Start `count` threads at the same instant; return each one's result (or exception)."""
    results, start = [None] * count, threading.Barrier(count)

    def body(i):
        start.wait()
        try:
            results[i] = work(i)
        except Exception as error:  # noqa: BLE001 — the test inspects it
            results[i] = error

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


class Recorder:
    """The real model's batch call, remembering each batch's shape (and optionally slowed down)."""

    def __init__(self, cross: CrossEncoder, delay: float = 0.0, gate: threading.Event | None = None):
        self.cross, self.delay, self.gate, self.shapes = cross, delay, gate, []

    def __call__(self, encodings):
        if self.gate:
            self.gate.wait(10)
        time.sleep(self.delay)
        self.shapes.append((len(encodings), max(len(e.ids) for e in encodings)))
        return self.cross.logits_batch(encodings)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_caller_gets_exactly_its_own_scores(cross, workers):
    batcher = DynamicBatcher(cross.logits_batch, max_batch_tokens=512, max_wait_ms=50, workers=workers)
    got = run_together(16, lambda i: batcher.score(cross.encode(QUERY, passages_for(i)), timeout=10))
    for i, scores in enumerate(got):
        expected = cross.logits(QUERY, passages_for(i))
        np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert batcher.batches < 16, "concurrent requests were not merged"
    batcher.close()


def test_batches_respect_the_token_budget(cross):
    recorder = Recorder(cross)
    batcher = DynamicBatcher(recorder, max_batch_tokens=64, max_wait_ms=20)
    run_together(8, lambda i: batcher.score(cross.encode(QUERY, passages_for(i)), timeout=10))
    batcher.close()
    assert sum(rows for rows, _ in recorder.shapes) == sum(len(passages_for(i)) for i in range(8))
    assert all(rows * longest <= 64 or rows == 1 for rows, longest in recorder.shapes)


def test_a_large_request_does_not_starve_small_ones(cross):
    recorder = Recorder(cross, delay=0.01)
    batcher = DynamicBatcher(recorder, max_batch_tokens=256, max_wait_ms=1)
    big = batcher.submit(cross.encode(QUERY, [f"passage number {i}" for i in range(300)]))
    small = run_together(6, lambda i: batcher.score(cross.encode(QUERY, passages_for(i)), timeout=20))
    assert all(isinstance(s, np.ndarray) for s in small)
    assert big.result(20).shape == (300,)
    batcher.close()


def test_a_caller_that_times_out_gets_an_error_and_its_pairs_are_dropped(cross):
    gate = threading.Event()
    recorder = Recorder(cross, gate=gate)
    batcher = DynamicBatcher(recorder, max_batch_tokens=64, max_wait_ms=0)
    first = batcher.submit(cross.encode(QUERY, ["held in the first batch"]))
    time.sleep(0.05)  # the worker is now blocked on the gate with the first batch
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        batcher.score(cross.encode(QUERY, [f"never scored {i}" for i in range(50)]), timeout=0.2)
    assert time.perf_counter() - started < 1.0
    gate.set()
    assert first.result(10).shape == (1,)
    batcher.close()
    assert batcher.pairs == 1, "the abandoned request's pairs still ran"


def test_a_full_queue_refuses_then_recovers(cross):
    gate = threading.Event()
    batcher = DynamicBatcher(Recorder(cross, gate=gate), max_batch_tokens=64, max_wait_ms=0, max_pending=1)
    running = batcher.submit(cross.encode(QUERY, ["a"]))
    time.sleep(0.05)
    queued = batcher.submit(cross.encode(QUERY, ["b"]))
    with pytest.raises(Overloaded):
        batcher.submit(cross.encode(QUERY, ["c"]))
    gate.set()
    assert running.result(10).shape == queued.result(10).shape == (1,)
    assert batcher.score(cross.encode(QUERY, ["d"]), timeout=10).shape == (1,)
    batcher.close()


def test_close_drains_the_queue_then_refuses(cross):
    batcher = DynamicBatcher(Recorder(cross, delay=0.02), max_batch_tokens=64, max_wait_ms=0)
    futures = [batcher.submit(cross.encode(QUERY, passages_for(i))) for i in range(10)]
    batcher.close()
    assert all(f.done() and f.result().shape == (len(passages_for(i)),) for i, f in enumerate(futures))
    with pytest.raises(Overloaded):
        batcher.submit(cross.encode(QUERY, ["late"]))
