"""The GPU container's code paths that run on any machine: providers, fp16 export, batched server."""

import threading

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from handler.api import create_app
from handler.manifest import ModelManifest, read_manifest
from handler.onnx_model import CrossEncoder, Encoder, ProviderError, wanted_providers
from handler.pipeline import Retriever
from handler.settings import Settings
from model_export.export import export_all
from model_export.settings import ExportSettings
from tests.conftest import make_tiny_bert, uvicorn_on_loopback

CPU_ONLY = "CUDAExecutionProvider" not in ort.get_available_providers()


def test_providers_this_build_lacks_are_skipped_and_cpu_comes_last():
    chosen = wanted_providers(("tensorrt", "cuda", "cpu"))
    assert chosen[-1] == "CPUExecutionProvider"
    assert set(chosen) <= set(ort.get_available_providers())
    assert wanted_providers(("cpu",)) == ["CPUExecutionProvider"]


def test_unknown_provider_is_a_settings_error_naming_the_field():
    with pytest.raises(ValidationError, match="providers"):
        Settings(providers="cuda,tpu")
    assert Settings(providers=" CUDA , cpu").provider_names == ("cuda", "cpu")


@pytest.mark.skipif(not CPU_ONLY, reason="this machine has a GPU provider")
def test_required_gpu_that_is_not_there_fails_loudly(artifacts):
    with pytest.raises(ProviderError, match="GPU was required.*CPUExecutionProvider"):
        Encoder(artifacts / "models" / "bi", require_gpu=True)
    with pytest.raises(ProviderError):
        Retriever.from_settings(Settings(artifacts_dir=artifacts, require_gpu=True))


def test_fp16_export_is_recorded_and_gated_on_parity(tmp_path):
    tiny = make_tiny_bert(tmp_path / "hf", for_cross=True, seed=5)
    # A random tiny model's logits barely differ between probes, so its relative error is large; the
    # SciFact reranker's fp16 export measures far inside the default gate (docs/results.md).
    settings = ExportSettings(
        models_dir=tmp_path / "models", which="cross", cross_model=str(tiny), quantize="fp16", max_relative_delta=0.5
    )
    export_all(settings)
    manifest = read_manifest(tmp_path / "models" / "cross", ModelManifest)
    assert manifest.quantization["dtype"] == "fp16"
    assert manifest.parity["spearman"] >= 0.9 and manifest.parity["relative_delta_logit"] <= 0.5
    logits = CrossEncoder(tmp_path / "models" / "cross").logits("q", ["a b", "c"])
    assert logits.dtype == np.float32 and np.isfinite(logits).all()


@pytest.fixture(scope="module")
def batched_server(artifacts):
    """The GPU container's app (dynamic batching on) under uvicorn on a loopback port."""
    settings = Settings(artifacts_dir=artifacts, batching=True, max_wait_ms=20, max_pending=32)
    retriever = Retriever.from_settings(settings)
    with uvicorn_on_loopback(create_app(retriever, settings)) as url:
        yield url, retriever


def test_bounded_load_on_loopback_has_no_errors_and_shares_batches(batched_server):
    url, retriever = batched_server
    batcher = retriever.rerank.cross.batcher
    before = batcher.batches

    def client(i: int) -> list[int]:
        codes = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for j in range(4):
                if j % 2:
                    body = {"query": f"dose for children {i}", "documents": [f"doc {i} {k}" for k in range(5)]}
                    codes.append(http.post("/rerank", json=body).status_code)
                else:
                    codes.append(http.post("/search", json={"query": f"tablet dose {i}", "recall_k": 10}).status_code)
        return codes

    results: list = [None] * 16
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, client(i))) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = [c for r in results for c in r]
    assert codes.count(200) == 64, codes
    assert batcher.batches - before < 64, "requests were never merged into shared batches"


def test_overload_is_a_503_with_retry_after(batched_server):
    url, retriever = batched_server
    batcher = retriever.rerank.cross.batcher
    limit, batcher.max_pending = batcher.max_pending, 0  # every request now finds the queue full
    try:
        response = httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["a"]})
    finally:
        batcher.max_pending = limit
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"] == "overloaded"
    assert httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200
