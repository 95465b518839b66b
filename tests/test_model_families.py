"""The model families users bring from the hub (tests/model_zoo.py: small random models of each
architecture, tokenizer kind, head, pooling and prompt convention) go through our export (int8 and
fp16 parity gates), our index build and the HTTP API, and score what PyTorch scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.model_zoo import BI_FAMILIES, CROSS_FAMILIES, FAMILIES, make_model

# Random weights carry no signal: their logits spread little, so int8 noise is a larger share of the
# spread than on a trained reranker (.069 for ours). Ranks and fp16 keep the shipped gate.
RANDOM_WEIGHTS_GATE = {"max_relative_delta": 0.2}
QUERY_SIDE = (lambda name: "query" in name, lambda name: "query" not in name)
PAIRS = [
    ("Veltrazine dose for children", "For children aged 2 to 12 years the dose is 0.25 mg per kilogram."),
    ("Veltrazine dose for children", "The warranty of the heat pump lasts two years."),
    ("what does error E240 mean", "E240 means the outdoor sensor does not answer; check its cable."),
    ("what does error E240 mean", "Adults should not take more than 20 mg in 24 hours."),
]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = make_model(FAMILIES[name], tmp_path_factory.mktemp(name))
        return made[name]

    return get


def _export(kind: str, source: Path, target: Path, quantize: str, **overrides):
    from model_export.export import export_model
    from model_export.settings import ExportSettings

    gate = RANDOM_WEIGHTS_GATE if quantize == "int8" else {}
    return export_model(kind, str(source), source, target, ExportSettings(quantize=quantize, **gate | overrides))


def _client(root: Path) -> TestClient:
    from handler.api import create_app
    from handler.pipeline import Retriever
    from handler.settings import Settings

    settings = Settings(artifacts_dir=root)
    return TestClient(create_app(Retriever.from_settings(settings), settings))


def _torch_pair_logits(source: Path, pairs, positive: int | None) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModelForSequenceClassification.from_pretrained(str(source)).eval()
    queries, passages = zip(*pairs, strict=True)
    with torch.inference_mode():
        logits = model(**tokenizer(list(queries), list(passages), padding=True, return_tensors="pt")).logits
    logits = logits[:, 0] if positive is None else logits[:, positive] - logits[:, 1 - positive]
    return logits.numpy()


@pytest.mark.parametrize("name", [f.name for f in CROSS_FAMILIES])
def test_reranker_family_exports_and_scores_like_pytorch(name, zoo, artifacts, tmp_path):
    family = FAMILIES[name]
    source = zoo(name)
    shutil.copytree(artifacts / "models" / "bi", tmp_path / "models" / "bi")
    shutil.copytree(artifacts / "index", tmp_path / "index")
    for quantize in ("fp16", "int8"):  # int8 last: it is the one served on this CPU
        manifest = _export("cross", source, tmp_path / "models" / "cross", quantize)
        assert manifest.quantization["dtype"] == quantize, manifest.parity  # its own gate, no fp32 fallback
    assert manifest.max_length == min(family.max_positions, 512)  # positions, and the cap for ModernBERT's 8,192
    assert (manifest.positive_label is not None) == (family.labels == 2)

    client = _client(tmp_path)
    health = client.get("/health").json()
    assert health["cross"]["conventions"]["calibrated"] is False  # a foreign reranker: raw sigmoid, no floor
    assert health["floor"] == 0.0 and health["floor_source"] == "none"

    for query in dict(PAIRS):
        docs = [p for q, p in PAIRS if q == query]
        body = client.post("/rerank", json={"query": query, "documents": docs}).json()
        assert body["meta"]["calibrated"] is False
        ours = np.empty(len(docs))
        for r in body["results"]:
            ours[r["index"]] = r["relevance_score"]
        reference = 1 / (1 + np.exp(-_torch_pair_logits(source, [(query, d) for d in docs], manifest.positive_label)))
        assert len(body["results"]) == len(docs)  # one score per document, also from a two-label head
        np.testing.assert_allclose(ours, reference, atol=0.1)
        # the same order wherever PyTorch's scores are further apart than int8 noise could bridge
        apart = np.abs(reference[:, None] - reference[None, :]) > 0.1
        assert (np.sign(ours[:, None] - ours[None, :]) == np.sign(reference[:, None] - reference[None, :]))[apart].all()

    search = client.post("/search", json={"query": "Veltrazine dose for children", "top_k": 3}).json()
    assert search["results"] and not search["refused"]
    assert search["score_model"]["calibrated"] is False


@pytest.mark.parametrize("name", [f.name for f in BI_FAMILIES])
def test_embedder_family_exports_indexes_and_serves(name, zoo, artifacts, tmp_path):
    from sentence_transformers import SentenceTransformer

    from handler.onnx_model import Encoder
    from index_build.build import build_index
    from index_build.settings import IndexSettings

    family = FAMILIES[name]
    source = zoo(name)
    shutil.copytree(artifacts / "models" / "cross", tmp_path / "models" / "cross")
    target = tmp_path / "models" / "bi"
    for quantize in ("fp16", "int8", "none"):
        manifest = _export("bi", source, target, quantize)
        assert (manifest.quantization or {"dtype": "none"})["dtype"] == quantize  # its own gate, no fp32 fallback
    assert manifest.parity["cosine_min"] >= 0.9999  # fp32 (the last export here): pooling and prompts are theirs
    assert manifest.pooling == family.pooling and manifest.normalize == family.normalize

    reference = SentenceTransformer(str(source), device="cpu")
    encoder = Encoder(target)
    queries = ["Veltrazine dose for children", "error E240"]
    prompts = (manifest.query_prompt, manifest.passage_prompt)
    expected = [next((text for name, text in family.prompts.items() if is_query(name)), "") for is_query in QUERY_SIDE]
    assert list(prompts) == expected  # E5's query/passage, BGE's query instruction only, nomic's search_* prefixes
    for ours, prompt in ((encoder.embed_queries(queries), prompts[0]), (encoder.embed_passages(queries), prompts[1])):
        theirs = reference.encode(queries, prompt=prompt, normalize_embeddings=True)
        cosine = (ours / np.linalg.norm(ours, axis=1, keepdims=True) * theirs).sum(axis=1)
        assert cosine.min() > 0.9999

    built = build_index(IndexSettings(artifacts_dir=tmp_path))
    assert (built.query_prompt, built.passage_prompt) == (manifest.query_prompt, manifest.passage_prompt)
    client = _client(tmp_path)
    health = client.get("/health").json()
    assert health["bi"]["conventions"]["pooling"] == family.pooling
    search = client.post("/search", json={"query": "Veltrazine dose for children", "mode": "dense"}).json()
    assert search["results"]


def test_prompts_reach_queries_and_indexed_passages(zoo, tmp_path):
    """An E5-style model: "query: " before queries, "passage: " before every indexed chunk."""
    from handler.onnx_model import Encoder

    source = zoo("xlm-roberta-mean-e5")
    manifest = _export("bi", source, tmp_path / "bi", "none")
    assert (manifest.query_prompt, manifest.passage_prompt) == ("query: ", "passage: ")
    encoder = Encoder(tmp_path / "bi")
    text = ["Veltrazine dose for children"]
    np.testing.assert_allclose(encoder.embed_queries(text), encoder.embed(["query: " + text[0]]), atol=1e-6)
    np.testing.assert_allclose(encoder.embed_passages(text), encoder.embed(["passage: " + text[0]]), atol=1e-6)
    assert float((encoder.embed_queries(text) * encoder.embed(text)).sum()) < 0.9999  # the prefix changes it

    # --query-prompt / --passage-prompt override the model's own
    manifest = _export("bi", source, tmp_path / "bi2", "none", query_prompt="q: ", passage_prompt="")
    assert (manifest.query_prompt, manifest.passage_prompt) == ("q: ", "")


def test_index_refuses_an_encoder_with_other_prompts(artifacts):
    from handler.errors import IndexMismatchError
    from handler.manifest import IndexManifest, ModelManifest, check_binding, read_manifest

    index = read_manifest(artifacts / "index", IndexManifest).model_dump()
    encoder = read_manifest(artifacts / "models" / "bi", ModelManifest)
    check_binding(index, encoder, "index", "twostage index")
    with pytest.raises(IndexMismatchError, match="prompts"):
        check_binding(index, encoder.model_copy(update={"query_prompt": "query: "}), "index", "twostage index")


def test_two_label_head_scores_each_document(zoo, tmp_path):
    """Each pair gets its own margin: no interleaving of the (n, 2) output."""
    from handler.onnx_model import CrossEncoder

    source = zoo("bert-2label")
    manifest = _export("cross", source, tmp_path / "cross", "none")
    assert manifest.labels == {0: "LABEL_0", 1: "LABEL_1"} and manifest.positive_label == 1
    model = CrossEncoder(tmp_path / "cross")
    docs = [p for _, p in PAIRS]
    ours = model.logits(PAIRS[0][0], docs)
    reference = _torch_pair_logits(source, [(PAIRS[0][0], d) for d in docs], positive=1)
    assert ours.shape == (len(docs),)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_heads_and_modules_we_cannot_serve_fail_the_export_clearly(zoo, tmp_path):
    from transformers import AutoConfig

    from model_export.export import ExportError

    source = shutil.copytree(zoo("bert-2label"), tmp_path / "odd-labels")
    config = AutoConfig.from_pretrained(source)
    config.id2label, config.label2id = {0: "alpha", 1: "beta"}, {"alpha": 0, "beta": 1}
    config.save_pretrained(source)
    with pytest.raises(ExportError, match="--positive-label"):
        _export("cross", source, tmp_path / "x", "none")
    manifest = _export("cross", source, tmp_path / "x", "none", positive_label="alpha")
    assert manifest.positive_label == 0

    config.num_labels = 3
    config.id2label = {0: "contradiction", 1: "neutral", 2: "entailment"}
    config.save_pretrained(source)
    with pytest.raises(ExportError, match="3 labels"):
        _export("cross", source, tmp_path / "y", "none")

    dense = shutil.copytree(zoo("bert-mean"), tmp_path / "with-dense")
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="Dense"):
        _export("bi", dense, tmp_path / "z", "none")
    assert not (tmp_path / "z").exists()


def test_max_length_within_positions_and_cap(zoo, tmp_path):
    roberta = _export("cross", zoo("roberta-1label"), tmp_path / "r", "none")
    assert roberta.max_length == 128 and roberta.max_length_limits["positions"] == 128  # 130 − pad id 1 − 1
    modern = _export("cross", zoo("modernbert-1label"), tmp_path / "m", "none", max_length_cap=1024)
    assert modern.max_length == 1024 and modern.max_length_limits == {
        "model": 8192,
        "positions": 8192,
        "max_length_cap": 1024,
    }
    asked = _export("cross", zoo("modernbert-1label"), tmp_path / "a", "none", max_length=2048)
    assert asked.max_length == 2048
