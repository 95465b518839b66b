import json

import numpy as np
import pytest

from handler.manifest import ModelManifest, read_manifest, sha256_file
from handler.onnx_model import CrossEncoder, Encoder
from model_export.export import INT8, ExportError, export_all
from model_export.settings import ExportSettings
from model_export.source import resolve_model_dir
from tests.conftest import make_tiny_bert


def test_bi_export_of_packaged_minilm_is_int8_per_channel_with_parity(artifacts):
    bi = artifacts / "models" / "bi"
    manifest = read_manifest(bi, ModelManifest)
    assert manifest.quantization == INT8 and manifest.quantization["dtype"] == "int8"
    assert manifest.sha256 == sha256_file(bi / "model.onnx")
    assert (manifest.pooling, manifest.normalize, manifest.dims) == ("mean", True, 384)
    # The sentence-transformers config (256) wins over the tokenizer file's fixed 128.
    assert manifest.max_length == 256
    assert manifest.parity["cosine_mean"] >= 0.985
    assert manifest.parity["cosine_min"] >= 0.93
    assert set(manifest.libraries) >= {"torch", "optimum", "onnxruntime"}


def test_runtime_tokenizer_follows_manifest_not_tokenizer_file(artifacts):
    bi = artifacts / "models" / "bi"
    assert json.loads((bi / "tokenizer.json").read_text())["truncation"]["max_length"] == 128
    encoder = Encoder(bi)
    long_text = "word " * 600
    assert len(encoder.tokenizer.encode(long_text).ids) == 256
    assert len(encoder.tokenizer.encode("short").ids) == 3  # no padding to a fixed length


def test_embeddings_are_normalised_and_order_preserving(artifacts):
    encoder = Encoder(artifacts / "models" / "bi", batch_size=2)
    texts = ["a much longer sentence about the weather in spring", "hi", "dose for children", "hi"]
    together = encoder.embed(texts)
    one_by_one = np.stack([encoder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Dynamic int8 picks activation scales per batch, so batch-mates move an embedding slightly (cosine ≈ .99)
    # but never swap it with another text's: sorting and padding are undone correctly.
    similarity = together @ one_by_one.T
    assert (np.diag(similarity) > 0.98).all()
    assert [texts[i] for i in similarity.argmax(axis=1)] == texts


def test_rerank_max_length_truncates_pairs_but_never_beyond_the_model(artifacts):
    cross = artifacts / "models" / "cross"
    model_max = read_manifest(cross, ModelManifest).max_length
    long_passage = "word " * 600
    assert len(CrossEncoder(cross).encode("query", [long_passage])[0].ids) == model_max
    assert len(CrossEncoder(cross, max_length=48).encode("query", [long_passage])[0].ids) == 48
    assert CrossEncoder(cross, max_length=model_max + 100).max_length == model_max
    # Cutting the passage changes what the reranker reads, so the score moves.
    full, cut = (
        CrossEncoder(cross).logits("query", [long_passage + " query"]),
        CrossEncoder(cross, max_length=48).logits("query", [long_passage + " query"]),
    )
    assert not np.allclose(full, cut)


def test_tiny_cross_encoder_export(artifacts):
    cross = artifacts / "models" / "cross"
    manifest = read_manifest(cross, ModelManifest)
    assert manifest.kind == "cross" and manifest.task == "text-classification"
    assert manifest.quantization in (INT8, None)  # int8 unless the tiny model fell back to fp32
    assert {"spearman", "relative_delta_logit", "max_abs_delta_score"} <= set(manifest.parity)
    logits = CrossEncoder(cross).logits("query", ["one passage", "another, longer passage of text"])
    assert logits.shape == (2,) and np.isfinite(logits).all()


def test_parity_gate_failure_is_a_clear_error(tmp_path):
    source = make_tiny_bert(tmp_path / "src", for_cross=True)
    settings = ExportSettings(
        models_dir=tmp_path / "out", which="cross", cross_model=str(source), max_relative_delta=-1.0
    )
    with pytest.raises(ExportError, match=r"parity gate: .*relative_delta_logit [\d.e-]+ \(needs ≤ -1.0\)"):
        export_all(settings)
    assert not (tmp_path / "out" / "cross").exists()


def test_missing_local_model_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        resolve_model_dir(str(tmp_path / "nope"))


def test_int8_graph_is_stored_with_onnxruntime_optimizations(artifacts):
    """The served file already holds ORT's fusions, except those whose CPU kernels are slower
    (SLOW_CPU_FUSIONS): optimising it again at load, as serving does, changes nothing."""
    import onnx
    import onnxruntime as ort

    from handler.onnx_model import SLOW_CPU_FUSIONS

    path = artifacts / "models" / "bi" / "model.onnx"
    stored = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "DynamicQuantizeMatMul" in stored and "LayerNormalization" in stored
    assert "SkipLayerNormalization" not in stored  # its CPU kernel is 5x slower than Add + LayerNormalization
    encoder = Encoder(artifacts / "models" / "bi")
    feeds = encoder._feeds(encoder.tokenizer.encode_batch(["dose for children", "a longer text about fever"]))
    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(SLOW_CPU_FUSIONS)
        )
        outputs.append(session.run(None, feeds)[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[1], encoder.session.run(None, feeds)[0])  # what serving runs


@pytest.mark.slow
def test_the_packaged_reranker_exports_with_its_shipped_first_pass(tmp_path):
    """`make demo`'s path: the shipped first pass (fp16, word embeddings shared with its teacher) is
    completed, exported int8 beside the packaged reranker, gated on order parity and bound to it."""
    from handler.onnx_model import FirstPass

    models = tmp_path / "models"
    done = export_all(ExportSettings(models_dir=models, which="cross"))
    done |= export_all(ExportSettings(models_dir=models, which="first-pass"))
    first = read_manifest(models / "first_pass", ModelManifest)
    assert first.kind == "first_pass" and first.quantization == INT8
    assert first.teacher_sha256 == done["cross"].sha256 and first.parity["spearman"] >= 0.9
    scorer = FirstPass(models / "first_pass", max_length=128)
    logits = scorer.logits(
        "Does aspirin lower the risk of heart attack?",
        ["Aspirin reduces myocardial infarction risk in trials.", "The wing's boundary layer separates at Mach 2."],
    )
    assert logits[0] > logits[1]
