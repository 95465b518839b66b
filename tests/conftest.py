"""Shared, session-scoped real artifacts: the packaged MiniLM exported by our code, a generated tiny
cross-encoder exported the same way, and an hnswlib index over the sample corpus."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"


def make_tiny_bert(out_dir: Path, for_cross: bool, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT with the MiniLM vocabulary, saved as an HF directory."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    from model_export.source import packaged_minilm_dir

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    model = BertForSequenceClassification(config) if for_cross else BertModel(config)
    model.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_minilm_dir()))
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """artifacts/{models/bi, models/cross, index} built by our own export and index code."""
    from index_build.build import build_index
    from index_build.settings import IndexSettings
    from model_export.export import export_all
    from model_export.settings import ExportSettings

    root = tmp_path_factory.mktemp("artifacts")
    tiny_cross = make_tiny_bert(tmp_path_factory.mktemp("tiny-cross"), for_cross=True)
    export_all(ExportSettings(models_dir=root / "models", which="bi"))
    export_all(
        ExportSettings(models_dir=root / "models", which="cross", cross_model=str(tiny_cross), fp32_fallback=True)
    )
    build_index(IndexSettings(artifacts_dir=root))
    return root


@pytest.fixture(scope="session")
def cascade_artifacts(artifacts, tmp_path_factory) -> Path:
    """The session's artifacts plus a first pass for the rerank cascade, distilled from the tiny reranker by
    our own `twostage train --distill` (the sample corpus' titles) and exported by our own export."""
    import shutil

    from index_build.settings import SAMPLE_CORPUS
    from model_export.export import export_all
    from model_export.settings import ExportSettings
    from training.distill import distill
    from training.settings import TrainSettings

    root = tmp_path_factory.mktemp("cascade") / "artifacts"
    shutil.copytree(artifacts, root)
    student = root.parent / "student"
    summary = distill(
        TrainSettings(
            distill=True,
            corpus=SAMPLE_CORPUS,
            artifacts_dir=root,
            eval_dir=root / "eval",
            output_dir=student,
            student_layers=1,
            max_length=64,
            pseudo_queries=20,
            distill_candidates=16,
            distill_group=8,
            groups_per_step=2,
            epochs=1,
            max_steps=2,
            dev_fraction=0.2,
        )
    )
    assert summary["groups"]["train"] and "cascade_recall@20" in summary["history"][-1]
    exported = ExportSettings(
        models_dir=root / "models", which="first-pass", first_pass_model=str(student), fp32_fallback=True
    )
    export_all(exported)
    return root


@pytest.fixture(scope="session")
def settings(artifacts):
    from handler.settings import Settings

    return Settings(artifacts_dir=artifacts)


@pytest.fixture(scope="session")
def retriever(settings):
    from handler.pipeline import Retriever

    return Retriever.from_settings(settings)


@pytest.fixture(scope="session")
def lambda_handler(artifacts):
    """The real entry point, imported the way Lambda does, with ARTIFACTS_DIR set."""
    os.environ["ARTIFACTS_DIR"] = str(artifacts)
    from handler.lambda_function import handler

    return handler


def load_event(name: str, method: str, path: str, body: dict | str | None) -> dict:
    """A `sam local generate-event` fixture, re-pointed at our route with our body."""
    event = json.loads((FIXTURES / name).read_text())
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    event["body"] = text
    event["isBase64Encoded"] = False
    if event.get("version") == "2.0":
        event["rawPath"] = path
        event["routeKey"] = "$default"
        event["rawQueryString"] = ""
        event.pop("queryStringParameters", None)
        event.pop("cookies", None)
        event["requestContext"]["http"].update(method=method, path=path)
        event["headers"]["content-type"] = "application/json"
    else:
        event.update(
            httpMethod=method,
            path=path,
            resource="/{proxy+}",
            queryStringParameters=None,
            multiValueQueryStringParameters=None,
        )
        event["requestContext"].update(httpMethod=method, path=f"/prod{path}", resourcePath="/{proxy+}")
        event["pathParameters"] = {"proxy": path.lstrip("/")}
        event["headers"]["Content-Type"] = "application/json"
        event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    return event


@contextmanager
def uvicorn_on_loopback(app):
    """The app under a real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
