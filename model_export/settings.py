"""Export settings: env vars TWOSTAGE_*, mirrored by `twostage export` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from handler.settings import StrictSettings, command_config


class ExportSettings(StrictSettings):
    model_config = command_config("export")

    bi_model: str | None = Field(
        None, description="bi-encoder: HF id or directory (default: packaged all-MiniLM-L6-v2)"
    )
    cross_model: str | None = Field(
        None,
        description="cross-encoder: HF id or directory (default: the project's SciFact-trained MiniLM reranker)",
    )
    models_dir: Path = Field(Path("artifacts/models"), description="writes <models_dir>/bi and <models_dir>/cross")
    first_pass_model: str | None = Field(
        None,
        description="the rerank cascade's first pass (`twostage train --distill`): HF id or directory (default: the "
        "packaged one when the reranker is the packaged one; else none, and the cascade is off)",
    )
    which: Literal["all", "both", "bi", "cross", "first-pass"] = Field(
        "all", description="which model(s) to export: all (bi, cross and its first pass), both (bi and cross), or one"
    )
    quantize: Literal["int8", "fp16", "none"] = Field(
        "int8", description="int8 = dynamic, per-channel weights (CPU); fp16 = GPU-fused graph in half precision"
    )
    max_length: int | None = Field(
        None, ge=8, description="override the model's max tokens (still within its positions)"
    )
    # Attention is quadratic: an 8,192-token ModernBERT would make one pair cost what 16 short ones do.
    max_length_cap: int = Field(512, ge=8, description="cap on the model's declared max tokens (unless --max-length)")
    query_prompt: str | None = Field(
        None, description="bi: text put before every query (default: the model's sentence-transformers prompt)"
    )
    passage_prompt: str | None = Field(
        None,
        description="bi: text put before every indexed passage (default: the model's sentence-transformers prompt)",
    )
    positive_label: str | None = Field(
        None, description="cross, two-label head: the relevant label's name or index (default: read from id2label)"
    )
    # Measured on all-MiniLM-L6-v2 int8 per-channel: mean .990, worst probe .969 (the one-word "ok").
    min_cosine_mean: float = Field(0.985, description="bi parity gate: mean cosine to PyTorch over the probes")
    min_cosine_min: float = Field(0.93, description="bi parity gate: worst single-probe cosine to PyTorch")
    min_spearman: float = Field(0.9, description="cross parity gate: minimum Spearman to PyTorch")
    # Measured on the SciFact reranker int8: Spearman .974, worst |Δ logit| 1.24 of an 18-logit range (.069).
    max_relative_delta: float = Field(
        0.1, description="cross parity gate: worst |Δ logit| as a share of the PyTorch logits' range over the probes"
    )
    fp32_fallback: bool = Field(False, description="keep fp32 instead of failing when int8/fp16 misses the gate")
