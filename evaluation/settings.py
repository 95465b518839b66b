"""Eval and calibrate settings: env vars TWOSTAGE_EVAL_* / TWOSTAGE_CALIBRATE_*, mirrored by their flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from handler.settings import Stage1Store, StrictSettings, artifacts_dir_field, command_config, rerank_max_length_field


class EvalSettings(Stage1Store):
    model_config = command_config("eval")

    data: Path = Field(Path("../shared/data/scifact"), description="BEIR directory")
    split: str = Field("test", description="qrels split")
    artifacts_dir: Path = artifacts_dir_field("models/bi and models/cross to evaluate")
    eval_dir: Path = Field(Path("artifacts/eval"), description="indexes built for evaluation live here")
    mode: Literal["dense", "bm25", "hybrid"] = Field("dense", description="stage-1 mode")
    recall_k: int = Field(100, ge=1, description="stage-1 candidates reranked")
    chunking: bool = Field(True, description="chunk long documents (off: truncate, comparable with BEIR/MTEB)")
    diagnose_depth: int = Field(1000, ge=1, description="stage-1 depth searched to place recall misses")
    floor: float | None = Field(None, ge=0, le=1, description="floor (unset: the reranker's calibrated floor)")
    dev_only: bool = Field(
        False, description="only the reranker's held-out dev queries of this split (choose settings on these)"
    )
    exclude: Path | None = Field(None, description="TSV query-id, corpus-id pairs removed from every ranking")
    rerank: bool = Field(True, description="also score stage 1 + rerank")
    rerank_max_length: int | None = rerank_max_length_field()
    max_queries: int | None = Field(None, ge=1, description="evaluate only the first N queries")
    json_path: Path | None = Field(None, description="write the report as JSON here")
    rerank_budgets: Annotated[list[Annotated[int, Field(ge=1)]], NoDecode] = Field(
        [],
        description="also score the answer with only the first N stage-1 candidates reranked, for each N "
        "(comma-separated): what a deadline that fits N pairs serves",
    )

    cascade_keep: int | None = Field(
        None, ge=0, description="the cascade's served share scored as the main answer (unset: the serving default)"
    )
    cascade_keeps: Annotated[list[Annotated[int, Field(ge=0)]], NoDecode] = Field(
        [],
        description="also score the answer when the served reranker reads only the first pass's best N, for each N "
        "(comma-separated; 0: every candidate), with the rerank time each would take",
    )
    first_pass_max_length: int | None = Field(None, ge=32, description="tokens per pair the first pass reads")
    cascade_ceiling: float | None = Field(
        None, ge=0, lt=1, description="the cascade reads on to this /rerank score (unset: the serving default; 0: off)"
    )
    cascade_ceilings: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], NoDecode] = Field(
        [],
        description="with cascade_keeps: also score each keep reading on to each of these /rerank scores "
        "(comma-separated; the served ceiling and no ceiling are always scored)",
    )
    ood_data: Path | None = Field(
        None, description="another BEIR directory: the share of its questions refused against this index"
    )
    ood_split: str = Field("test", description="split of ood_data whose queries are asked")

    @field_validator("rerank_budgets", "cascade_keeps", "cascade_ceilings", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        return [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class CalibrateSettings(StrictSettings):
    model_config = command_config("calibrate")

    data: Path = Field(Path("../shared/data/scifact"), description="BEIR directory with labelled queries")
    split: str = Field("train", description="split to fit on (its dev queries when the reranker recorded them)")
    dev_only: bool = Field(True, description="fit only on the dev queries held out at training time")
    eval_split: str | None = Field("test", description="split to report in-domain refusal on (empty: skip)")
    ood_data: Path | None = Field(
        None,
        description="another BEIR directory: its corpus and titles join the fit as non-relevant; its queries only "
        "measure refusal",
    )
    ood_split: str = Field("test", description="split of ood_data whose queries measure refusal")
    artifacts_dir: Path = artifacts_dir_field("calibration is written into <artifacts_dir>/models/cross/manifest.json")
    eval_dir: Path = Field(Path("artifacts/eval"), description="indexes built for evaluation live here")
    candidates: int = Field(20, ge=1, description="stage-1 candidates labelled per query")
    stage1_prior: float = Field(
        4.0,
        ge=0,
        le=20,
        description="weight of ln(stage-1 rank) against the logit in the /search score, and so in its order "
        "(chosen on the reranker's dev queries, docs/results.md §5.1; 0: the reranker's order)",
    )
    objective: Literal["window", "answerable-refusal", "false-accept"] = Field(
        "window",
        description="floor between the answerable-refusal and the foreign-refusal limits (needs ood_data; else "
        "answerable-refusal), keeps answerable queries, or caps non-relevant pairs let through",
    )
    target: float = Field(0.05, gt=0, lt=1, description="allowed share: answerable queries refused / false accepts")
    ood_target: float = Field(0.9, gt=0, lt=1, description="window: share of foreign queries to refuse")
    ood_titles: int = Field(
        300, ge=0, description="titles of ood_data's corpus asked against data's corpus as foreign queries (0: none)"
    )
    traces: Path | None = Field(None, description="JSONL of logged score traces instead of labelled pairs")
    corpus: Path | None = Field(
        None,
        description="no labels: fit on pseudo-queries written from this corpus (any format `twostage index` reads, "
        "or an index directory: its doc store), each answered by the document it came from",
    )
    pseudo_kind: Literal["sentence", "leading", "title"] = Field(
        "leading",
        description="corpus: a pseudo-query is its document's first sentence, taken out of it (chosen on real "
        "claims, docs/results.md §18), any one sentence likewise (inverse cloze), or its title",
    )
    pseudo_queries: int = Field(400, ge=10, description="corpus: pseudo-queries written (one per document)")
    ood_queries: Path | None = Field(
        None, description="corpus: questions of your own this corpus should refuse (one a line), beside the shipped set"
    )
    plot: Path | None = Field(
        None, description="draw the score distributions (answers, padding, off-topic questions) and the floor here"
    )
