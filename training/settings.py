"""Training settings: env vars TWOSTAGE_*, mirrored by `twostage train` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from handler.settings import StrictSettings, artifacts_dir_field, command_config

# What `--distill` changes unless given: a small student wants a higher rate, and queries from the corpus.
DISTILL_DEFAULTS = {
    "output_dir": Path("artifacts/trained/first_pass"),
    "pseudo_queries": 1000,
    "lr": 1e-4,
    "epochs": 3,
    "groups_per_step": 4,
}


class TrainSettings(StrictSettings):
    model_config = command_config("train")

    data: Path = Field(Path("../shared/data/scifact"), description="BEIR directory with the training split")
    train_split: str = Field("train", description="qrels split to train on (never the test split)")
    base_model: str | None = Field(None, description="HF id or directory (default: packaged all-MiniLM-L6-v2)")
    output_dir: Path = Field(Path("artifacts/trained/cross"), description="HF model directory written here")
    artifacts_dir: Path = artifacts_dir_field("the exported bi-encoder mines hard negatives")
    eval_dir: Path = Field(Path("artifacts/eval"), description="where the mining index is built or reused")
    max_length: int = Field(256, ge=16, description="tokens per (query, passage) pair")
    negatives: int = Field(7, ge=1, description="hard negatives per positive in each listwise group")
    negatives_from: int = Field(
        5, ge=1, description="first stage-1 rank to draw negatives from (skips likely false negatives)"
    )
    negatives_to: int = Field(60, ge=2, description="last stage-1 rank to draw negatives from")
    mine_mode: Literal["dense", "bm25", "hybrid"] = Field(
        "hybrid", description="stage-1 mode that mines negatives (the one served: the reranker sees its confusers)"
    )
    groups_file: Path | None = Field(
        None, description="train on groups saved by an earlier run (training_groups.json): no index or mining"
    )
    mine_only: bool = Field(False, description="mine and save the groups beside the model, then stop")
    device: str = Field("auto", description="torch device: auto (cuda when present, else cpu), cpu, cuda")
    pseudo_queries: int = Field(0, ge=0, description="extra title→text pairs from the corpus (weak supervision)")
    groups_per_step: int = Field(2, ge=1, description="listwise groups per optimiser step")
    epochs: int = Field(2, ge=1, description="passes over the training groups")
    lr: float = Field(3e-5, gt=0, description="encoder learning rate")
    head_lr: float = Field(1e-3, gt=0, description="learning rate of the new head")
    warmup: float = Field(0.1, ge=0, le=1, description="fraction of steps with linear warm-up")
    dev_fraction: float = Field(0.1, ge=0, lt=1, description="train queries held out for early stopping")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (smoke tests)")
    seed: int = Field(13, description="random seed")
    distill: bool = Field(
        False,
        description="make a first-pass reranker for the rerank cascade, distilled from the served one (models/cross) "
        "on stage-1 candidates of the training queries and pseudo-queries (then `twostage export --which first-pass`)",
    )
    corpus: Path | None = Field(
        None,
        description="no labels: train (or distil) on pseudo-queries written from this corpus (any format `index` "
        "reads): without --distill, the served reranker is adapted to it (inverse cloze, stage-1 negatives)",
    )
    student_layers: int = Field(2, ge=1, le=24, description="distill: the teacher's first layers the student keeps")
    distill_candidates: int = Field(48, ge=8, description="distill: stage-1 candidates scored by the teacher per query")
    distill_group: int = Field(16, ge=4, description="distill: candidates per query in each step's listwise loss")
    teacher_weights: str | None = Field(
        None,
        description="distill or train --corpus: the served reranker's HF weights (default: the source its export "
        "records)",
    )

    @model_validator(mode="before")
    @classmethod
    def _distill_defaults(cls, data):
        if isinstance(data, dict) and str(data.get("distill", "")).lower() in ("true", "1", "yes"):
            return DISTILL_DEFAULTS | data
        return data
