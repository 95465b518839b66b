"""benchmarks.int8_ceiling counts the reranker's weight-GEMM work exactly: its achieved rate (the
share of the CPU's int8 peak that docs/results.md §15 reports) rests on that count."""

from __future__ import annotations

from benchmarks.int8_ceiling import GEMMS, profile, served_batches
from handler.onnx_model import CrossEncoder

# conftest's tiny BERT: 2 layers, hidden 32, FFN 64; then the pooler (32 × 32) and one logit (32 × 1)
MACS_PER_TOKEN = 2 * (4 * 32 * 32 + 2 * 32 * 64)
MACS_PER_PAIR = 32 * 32 + 32


def test_profile_counts_every_weight_multiply_add_and_not_attention(artifacts):
    model = CrossEncoder(artifacts / "models" / "cross", threads=1, batch_size=2)
    passages = ["a short one", "a somewhat longer passage about cells", "x", "three words here", "last"]
    batches = served_batches(model, "which cells divide", passages)
    assert [len(feeds["input_ids"]) for feeds in batches] == [2, 2, 1]
    tokens = sum(feeds["input_ids"].size for feeds in batches)  # padded per batch, as served

    measured = profile(model.model_dir, batches, threads=1, repeats=2)

    assert measured["gemm_macs"] == tokens * MACS_PER_TOKEN + len(passages) * MACS_PER_PAIR
    assert measured["by_kind"][GEMMS] > 0
    assert measured["by_kind"]["attention MatMuls (fp32 in both)"] > 0
    assert measured["wall_ms"] >= sum(measured["by_kind"].values()) * 0.5
