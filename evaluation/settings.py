"""Eval settings: env vars TWOSTAGE_*, mirrored by `twostage eval` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EvalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWOSTAGE_", extra="ignore", populate_by_name=True)

    data: Path = Field(Path("../shared/data/scifact"), description="BEIR directory")
    split: str = Field("test", description="qrels split")
    artifacts_dir: Path = Field(
        Path("artifacts"),
        validation_alias=AliasChoices("artifacts_dir", "TWOSTAGE_ARTIFACTS_DIR", "ARTIFACTS_DIR"),
        description="models/bi and models/cross to evaluate",
    )
    eval_dir: Path = Field(Path("artifacts/eval"), description="indexes built for evaluation live here")
    mode: Literal["dense", "bm25", "hybrid"] = Field("dense", description="stage-1 mode")
    recall_k: int = Field(100, ge=1, description="stage-1 candidates reranked")
    diagnose_depth: int = Field(1000, ge=1, description="stage-1 depth searched to place recall misses")
    floor: float | None = Field(None, ge=0, le=1, description="floor (unset: the reranker's calibrated floor)")
    exclude: Path | None = Field(None, description="TSV query-id, corpus-id pairs removed from every ranking")
    rerank: bool = Field(True, description="also score stage 1 + rerank")
    max_queries: int | None = Field(None, ge=1, description="evaluate only the first N queries")
    json_path: Path | None = Field(None, description="write the report as JSON here")
