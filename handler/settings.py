"""Serving settings: env vars TWOSTAGE_* (ARTIFACTS_DIR too), mirrored by `twostage serve/query` flags.

`Settings` holds what the whole deployment shares and one group per part that reads its own: `recall`
(stage 1), `rerank` (stage 2, the floor, the work budget and the deadline), `limits` (request bodies and
admission), `batcher` (the GPU container's dynamic batching) and `server` (`twostage serve`). Every
field keeps one flat name, for its env var (`TWOSTAGE_RECALL_K`), its flag (`--recall-k`) and its
keyword (`Settings(recall_k=50)`, `TwoStage.load(..., recall_k=50)`); a keyword no setting has is an
error naming it, where a misspelt env var can only be ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from handler.artifacts import Artifacts
from handler.providers import RERANK_BATCH_SIZE, check_provider_names

SETTINGS_CONFIG = SettingsConfigDict(env_prefix="TWOSTAGE_", extra="forbid", populate_by_name=True)

MAX_RECALL_K = 1000
MAX_TOP_K = 200
CASCADE_KEEP = 30  # chosen on the 809 SciFact train claims (docs/results.md §16)
CASCADE_FIRST_PASS = "stage1"  # chosen on the reranker's dev queries (docs/results.md §16)
CASCADE_CEILING = 0.9  # chosen with CASCADE_KEEP on the same claims (docs/results.md §16)
FIRST_PASS_MAX_LENGTH = 128  # the distilled first pass's length, chosen on the dev queries (docs/results.md §16)


def command_config(command: str) -> SettingsConfigDict:
    """A build command's settings read TWOSTAGE_<COMMAND>_*: the same name means one thing everywhere
    (eval's mode is not serve's). Serving keeps TWOSTAGE_*; ARTIFACTS_DIR is shared by all."""
    return SettingsConfigDict(SETTINGS_CONFIG, env_prefix=f"TWOSTAGE_{command.upper()}_")


def _names(field_name: str, field: FieldInfo) -> set[str]:
    aliases = getattr(field.validation_alias, "choices", None) or []
    return {field_name, *(a for a in aliases if isinstance(a, str))}


class StrictSettings(BaseSettings):
    """Settings built from code: a keyword that names no setting is an error naming it (and the nearest
    setting), not silently ignored. Env vars are read by name, so a misspelt one is never seen."""

    model_config = SETTINGS_CONFIG
    GROUPS: ClassVar[dict[str, type[BaseSettings]]] = {}  # nested groups, filled from flat keywords

    @classmethod
    def flat_fields(cls) -> dict[str, FieldInfo]:
        """Every setting by its flat name: this class's own fields and its groups' fields."""
        own = {name: field for name, field in cls.model_fields.items() if name not in cls.GROUPS}
        return own | {name: field for group in cls.GROUPS.values() for name, field in group.model_fields.items()}

    @model_validator(mode="after")
    def _utf8_paths(self):
        _check_paths(self)
        return self

    def replace(self, **changes: Any):
        """A copy with these settings changed, by their flat names (each into its group), unvalidated like
        model_copy; an unknown name is an error naming it."""
        fields = type(self).flat_fields()
        unknown = [name for name in changes if name not in fields]
        if unknown:
            raise ValueError("; ".join(_unknown(name, fields) for name in unknown))
        own = {name: value for name, value in changes.items() if name in type(self).model_fields}
        for group, cls in self.GROUPS.items():
            mine = {name: value for name, value in changes.items() if name in cls.model_fields}
            if mine:
                own[group] = getattr(self, group).model_copy(update=mine)
        return self.model_copy(update=own)

    def value(self, name: str) -> Any:
        """A setting by its flat name, wherever its group keeps it."""
        if name in type(self).model_fields:
            return getattr(self, name)
        group = next(g for g, cls in self.GROUPS.items() if name in cls.model_fields)
        return getattr(getattr(self, group), name)

    @model_validator(mode="before")
    @classmethod
    def _known_keywords_into_groups(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, group in cls.GROUPS.items():
            given = data.pop(name, None)
            given = given.model_dump() if isinstance(given, BaseModel) else dict(given or {})
            flat = {key: data.pop(key) for key in list(data) if key in group.model_fields}
            data[name] = group(**(given | flat))  # reads its env vars for the rest
        known = set(cls.GROUPS).union(*(_names(n, f) for n, f in cls.model_fields.items()))
        unknown = [key for key in data if key not in known]
        if unknown:
            raise ValueError("; ".join(_unknown(key, cls.flat_fields()) for key in unknown))
        return data


def _check_paths(settings: BaseSettings) -> None:
    """Every path setting is text the native libraries can open (hnswlib's binding takes only UTF-8)."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, Path):
            try:
                str(value).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{name}: {str(value)!r} is not valid UTF-8; rename the directory") from None


def _unknown(key: str, fields: dict[str, FieldInfo]) -> str:
    near = difflib.get_close_matches(key, list(fields), n=1)
    return f"unknown setting {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")


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


class Stage1Store(StrictSettings):
    """Where stage 1 lives: the local artifact, or a Qdrant collection (a cluster, or qdrant-client's
    local mode in a directory). Shared by `twostage index`, `eval` and serving."""

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


class RecallSettings(BaseSettings):
    """Stage 1: how many candidates, from which side, fused how."""

    model_config = SETTINGS_CONFIG

    recall_k: int = Field(100, ge=1, le=MAX_RECALL_K, description="default stage-1 candidates")
    mode: Literal["dense", "bm25", "hybrid"] = Field("hybrid", description="default stage-1 mode")
    fusion: Literal["rrf", "weighted"] = Field("rrf", description="hybrid fusion: reciprocal rank or weighted scores")
    rrf_k: int = Field(60, ge=1, description="RRF constant k")
    dense_weight: float = Field(0.5, ge=0, le=1, description="weighted fusion: dense share (BM25 gets the rest)")
    hybrid_depth: int | None = Field(None, ge=1, description="candidates taken from each side (unset: recall_k)")


class RerankSettings(BaseSettings):
    """Stage 2: the cross-encoder's batches and length, the floor, the work budget and the deadline."""

    model_config = SETTINGS_CONFIG

    floor: float | None = Field(
        None, ge=0.0, le=1.0, description="default relevance floor (unset: the reranker's calibrated floor, else 0)"
    )
    rerank_batch_size: int = Field(
        RERANK_BATCH_SIZE, ge=1, description="pairs per cross-encoder batch (without dynamic batching)"
    )
    rerank_max_length: int | None = rerank_max_length_field()
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
    cascade_keep: int = Field(
        CASCADE_KEEP,
        ge=0,
        le=MAX_RECALL_K,
        description="the rerank cascade: the served reranker reads the first pass's best cascade_keep "
        "candidates (at least top_k), then reads on as cascade_ceiling says; 0: it reads every candidate",
    )
    cascade_ceiling: float = Field(
        CASCADE_CEILING,
        ge=0,
        lt=1,
        description="the cascade reads on past cascade_keep, 10 candidates at a time, while an unread candidate "
        "whose /rerank score reached cascade_ceiling could still take first place under the served order "
        "(its stage-1 prior included); 0: it reads cascade_keep only",
    )
    cascade_first_pass: Literal["stage1", "model"] = Field(
        CASCADE_FIRST_PASS,
        description="what orders the candidates for the cascade: stage1 (stage 1's own order, no extra work) or model "
        "(the distilled first-pass model in models/first_pass scores every candidate; required then)",
    )
    first_pass_max_length: int | None = Field(
        FIRST_PASS_MAX_LENGTH,
        ge=32,
        description="tokens per pair the first pass reads, at most its own max length (None: its own)",
    )


class LimitSettings(BaseSettings):
    """What one request may send and how many may wait (docs/security.md)."""

    model_config = SETTINGS_CONFIG

    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body; larger is 413 before reading")
    body_timeout_s: float = Field(10.0, gt=0, description="longest time to receive a request body (then 408)")
    max_concurrent: int = Field(
        1, ge=1, description="requests running the models at once without batching (more wait, up to max_pending)"
    )
    max_pending: int = Field(
        16, ge=1, description="requests waiting for the models (batcher queue or admission) before 503 + Retry-After"
    )
    max_query_chars: int = Field(2048, ge=1, description="longest query accepted")
    max_documents: int = Field(1000, ge=1, description="most documents accepted by /rerank")
    max_document_chars: int = Field(20000, ge=1, description="longest document accepted by /rerank")


class BatcherSettings(BaseSettings):
    """The GPU container's dynamic batching of concurrent requests' rerank pairs."""

    model_config = SETTINGS_CONFIG

    batching: bool = Field(
        False, description="merge concurrent requests' rerank pairs into shared batches (GPU container)"
    )
    max_batch_tokens: int = Field(16384, ge=256, description="dynamic batching: padded tokens per batch")
    max_wait_ms: float = Field(5.0, ge=0, description="dynamic batching: longest wait for more pairs")
    batch_workers: int = Field(
        1, ge=1, le=8, description="dynamic batching: batches prepared and run at once (2 overlaps host and GPU work)"
    )
    rerank_timeout_s: float = Field(30.0, gt=0, description="dynamic batching: a request's wait for its scores")


class ServerSettings(BaseSettings):
    """`twostage serve`: where it listens and how it stops."""

    model_config = SETTINGS_CONFIG

    host: str = Field("127.0.0.1", description="address to listen on (beyond loopback needs an API key or insecure)")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    insecure: bool = Field(
        False, description="allow a non-loopback host without an API key (behind your own authenticating gateway)"
    )
    graceful_shutdown_s: float = Field(30.0, ge=0, description="seconds in-flight requests get to finish after SIGTERM")
    drain_s: float = Field(
        2.0,
        ge=0,
        description="after SIGTERM, seconds of answering new requests 503 with Connection: close before the "
        "listener closes, so that clients on kept-alive connections hear it instead of a reset",
    )


class Settings(Stage1Store):
    GROUPS: ClassVar[dict[str, type[BaseSettings]]] = {
        "recall": RecallSettings,
        "rerank": RerankSettings,
        "limits": LimitSettings,
        "batcher": BatcherSettings,
        "server": ServerSettings,
    }

    artifacts_dir: Path = artifacts_dir_field("holds models/bi, models/cross and index")
    index_path: Path | None = Field(None, description="index directory (unset: <artifacts_dir>/index)")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="default results kept after reranking")
    threads: int | None = Field(None, ge=1, description="ONNX Runtime threads (unset: CPUs available)")
    providers: str = Field(
        "tensorrt,cuda,cpu",
        description="ONNX Runtime providers in order of preference; those this onnxruntime lacks are skipped",
    )
    require_gpu: bool = Field(False, description="refuse to start unless the models really run on a GPU provider")
    api_key: SecretStr | None = Field(
        None, description="require `Authorization: Bearer <key>` on /search and /rerank (twostage serve, TEI-style)"
    )
    log_level: str = Field("INFO", description="logging level")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="twostage serve's log lines (Lambda writes JSON when its LogFormat is JSON, as the template sets)",
    )
    metrics: bool = Field(True, description="one CloudWatch EMF line per request on stdout (latency, refusals, errors)")
    metrics_namespace: str = Field(
        "twostage",
        validation_alias=AliasChoices(
            "metrics_namespace", "TWOSTAGE_METRICS_NAMESPACE", "POWERTOOLS_METRICS_NAMESPACE"
        ),
        pattern=r"^[A-Za-z0-9._/#:-]{1,255}$",
        description="CloudWatch namespace of the EMF metrics (one per stack, so two stacks' series stay apart)",
    )
    verify: Literal["quick", "full"] = Field(
        "quick",
        description="artifact checks at init: quick (sizes, sampled checksums, model checksums, the index graph, "
        "counts, dims, probes) or full (also every file's sha256, SQLite quick_check, BM25 postings; the "
        "SnapStart priming runs full)",
    )
    recall: RecallSettings = Field(default_factory=RecallSettings)
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    batcher: BatcherSettings = Field(default_factory=BatcherSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value):
        """TWOSTAGE_API_KEY= (empty) means unset, never "the empty string is the key"."""
        return None if value in ("", None) else value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        return ",".join(check_provider_names(value.split(",")))

    @property
    def provider_names(self) -> tuple[str, ...]:
        return tuple(self.providers.split(","))

    @property
    def artifacts(self) -> Artifacts:
        return Artifacts(self.artifacts_dir, self.index_path)
