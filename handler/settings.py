"""Serving settings: env vars TWOSTAGE_* (ARTIFACTS_DIR too), mirrored by `twostage serve/query` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SETTINGS_CONFIG = SettingsConfigDict(env_prefix="TWOSTAGE_", extra="ignore", populate_by_name=True)


def command_config(command: str) -> SettingsConfigDict:
    """A build command's settings read TWOSTAGE_<COMMAND>_*: the same name means one thing everywhere
    (eval's mode is not serve's). Serving keeps TWOSTAGE_*; ARTIFACTS_DIR is shared by all."""
    return SettingsConfigDict(SETTINGS_CONFIG, env_prefix=f"TWOSTAGE_{command.upper()}_")


RERANK_BATCH_SIZE = 8  # the CPU's best (docs/results.md §15); the GPU image batches by tokens instead
MAX_RECALL_K = 1000
MAX_TOP_K = 200


def artifacts_dir_field(description: str):
    """ARTIFACTS_DIR (the Lambda contract) or TWOSTAGE_ARTIFACTS_DIR, the same for every command."""
    return Field(
        Path("artifacts"),
        validation_alias=AliasChoices("artifacts_dir", "TWOSTAGE_ARTIFACTS_DIR", "ARTIFACTS_DIR"),
        description=description,
    )


def shared_field(default, name: str, description: str, **kwargs):
    """A setting every command reads from the same env var TWOSTAGE_<NAME> (the stage-1 store is one
    thing for `twostage index` and for serving), beside its flag's own name."""
    alias = AliasChoices(f"TWOSTAGE_{name.upper()}")
    return Field(default, validation_alias=alias, description=description, **kwargs)


class Stage1Store(BaseSettings):
    """Where stage 1 lives: the local artifact, or a Qdrant collection (a cluster, or qdrant-client's
    local mode in a directory). Shared by `twostage index` and serving."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    stage1: Literal["local", "qdrant"] = shared_field(
        "local", "stage1", "stage-1 store: local (hnswlib + BM25 + SQLite in the artifact) or qdrant"
    )
    qdrant_url: str | None = shared_field(None, "qdrant_url", "Qdrant cluster URL (https://…:6333)")
    qdrant_path: Path | None = shared_field(
        None, "qdrant_path", "a directory for qdrant-client's local mode instead of a URL (tests, one process)"
    )
    qdrant_collection: str = shared_field("twostage", "qdrant_collection", "the Qdrant collection")
    qdrant_api_key: SecretStr | None = shared_field(None, "qdrant_api_key", "Qdrant API key")
    qdrant_api_key_secret_arn: str | None = shared_field(
        None, "qdrant_api_key_secret_arn", "an AWS Secrets Manager secret holding the API key (read once at init)"
    )
    qdrant_timeout_s: int = shared_field(
        2, "qdrant_timeout_s", "per Qdrant call; past it /search answers 503 (well inside the Lambda timeout)", ge=1
    )

    qdrant_hnsw_ef: int = shared_field(
        128, "qdrant_hnsw_ef", "Qdrant's HNSW search breadth for the dense side (at least the depth asked)", ge=1
    )

    @field_validator("qdrant_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if value in ("", None) else value

    def stage1_store(self) -> dict:
        """These settings alone, to hand to another command's settings."""
        return {name: getattr(self, name) for name in Stage1Store.model_fields}

    @model_validator(mode="after")
    def _qdrant_needs_a_place(self):
        if self.stage1 == "qdrant" and (self.qdrant_url is None) == (self.qdrant_path is None):
            raise ValueError("stage1 qdrant needs exactly one of qdrant_url and qdrant_path")
        return self


def rerank_max_length_field():
    """Tokens per rerank pair, below the reranker's own max length; the same bound for serving and eval."""
    return Field(
        None,
        ge=32,
        description="truncate each (query, passage) pair to this many tokens when below the reranker's own max "
        "length (unset: the reranker's); trades quality for latency, docs/results.md §8",
    )


class Settings(Stage1Store):
    model_config = SETTINGS_CONFIG

    artifacts_dir: Path = artifacts_dir_field("holds models/bi, models/cross and index")
    index_path: Path | None = Field(None, description="index directory (unset: <artifacts_dir>/index)")
    recall_k: int = Field(100, ge=1, le=MAX_RECALL_K, description="default stage-1 candidates")
    mode: Literal["dense", "bm25", "hybrid"] = Field("hybrid", description="default stage-1 mode")
    fusion: Literal["rrf", "weighted"] = Field("rrf", description="hybrid fusion: reciprocal rank or weighted scores")
    rrf_k: int = Field(60, ge=1, description="RRF constant k")
    dense_weight: float = Field(0.5, ge=0, le=1, description="weighted fusion: dense share (BM25 gets the rest)")
    hybrid_depth: int | None = Field(None, ge=1, description="candidates taken from each side (unset: recall_k)")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="default results kept after reranking")
    floor: float | None = Field(
        None, ge=0.0, le=1.0, description="default relevance floor (unset: the reranker's calibrated floor, else 0)"
    )
    threads: int | None = Field(None, ge=1, description="ONNX Runtime threads (unset: CPUs available)")
    rerank_batch_size: int = Field(
        RERANK_BATCH_SIZE, ge=1, description="pairs per cross-encoder batch (without dynamic batching)"
    )
    rerank_max_length: int | None = rerank_max_length_field()
    providers: str = Field(
        "tensorrt,cuda,cpu",
        description="ONNX Runtime providers in order of preference; those this onnxruntime lacks are skipped",
    )
    require_gpu: bool = Field(False, description="refuse to start unless the models really run on a GPU provider")
    batching: bool = Field(
        False, description="merge concurrent requests' rerank pairs into shared batches (GPU container)"
    )
    max_batch_tokens: int = Field(16384, ge=256, description="dynamic batching: padded tokens per batch")
    max_wait_ms: float = Field(5.0, ge=0, description="dynamic batching: longest wait for more pairs")
    max_pending: int = Field(
        16, ge=1, description="requests waiting for the models (batcher queue or admission) before 503 + Retry-After"
    )
    batch_workers: int = Field(
        1, ge=1, le=8, description="dynamic batching: batches prepared and run at once (2 overlaps host and GPU work)"
    )
    rerank_timeout_s: float = Field(30.0, gt=0, description="dynamic batching: a request's wait for its scores")
    max_rerank_tokens: int = Field(
        65536,
        ge=256,
        description="tokens one request may rerank (pairs × their tokens, each pair cut to the reranker's max length); "
        "above it 413. The default fits a 30 s Lambda on an AVX2-only CPU (docs/security.md)",
    )
    deadline_ms: int | None = Field(
        None,
        ge=1,
        description="default time budget of a /search (unset: none): candidates are reranked in stage-1 order "
        "while the measured rate says the next batch fits, and the answer is drawn from those",
    )
    rerank_tokens_per_s: float = Field(
        5000.0, gt=0, description="the reranker's speed assumed until this process has measured its own"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body; larger is 413 before reading")
    body_timeout_s: float = Field(10.0, gt=0, description="longest time to receive a request body (then 408)")
    max_concurrent: int = Field(
        1, ge=1, description="requests running the models at once without batching (more wait, up to max_pending)"
    )
    api_key: SecretStr | None = Field(
        None, description="require `Authorization: Bearer <key>` on /search and /rerank (twostage serve, TEI-style)"
    )
    max_query_chars: int = Field(2048, ge=1, description="longest query accepted")
    max_documents: int = Field(1000, ge=1, description="most documents accepted by /rerank")
    max_document_chars: int = Field(20000, ge=1, description="longest document accepted by /rerank")
    log_level: str = Field("INFO", description="logging level")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="twostage serve's log lines (Lambda writes JSON when its LogFormat is JSON, as the template sets)",
    )
    metrics: bool = Field(True, description="one CloudWatch EMF line per request on stdout (latency, refusals, errors)")
    verify: Literal["quick", "full"] = Field(
        "quick",
        description="artifact checks at init: quick (sizes, model checksums, counts, dims, probes) or full "
        "(also every index file's sha256, SQLite quick_check, BM25 postings; the SnapStart priming runs full)",
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value):
        """TWOSTAGE_API_KEY= (empty) means unset, never "the empty string is the key"."""
        return None if value in ("", None) else value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        from handler.onnx_model import wanted_providers  # here, so settings import without onnxruntime

        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        if not names:
            raise ValueError(f"no provider named in {value!r}")
        wanted_providers(names)  # the one check of the names, shared with direct callers
        return ",".join(names)

    @property
    def provider_names(self) -> tuple[str, ...]:
        return tuple(self.providers.split(","))

    @property
    def bi_dir(self) -> Path:
        return self.artifacts_dir / "models" / "bi"

    @property
    def cross_dir(self) -> Path:
        return self.artifacts_dir / "models" / "cross"

    @property
    def index_dir(self) -> Path:
        return self.index_path or self.artifacts_dir / "index"
