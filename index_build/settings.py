"""Index settings: env vars TWOSTAGE_*, mirrored by `twostage index` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from handler.settings import Stage1Store, artifacts_dir_field, command_config

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "sample_data" / "corpus.jsonl"


class IndexSettings(Stage1Store):
    model_config = command_config("index")

    corpus: Path = Field(
        SAMPLE_CORPUS,
        description="corpus: .jsonl, .csv/.tsv, .parquet (file or directory), or a directory of .txt/.md/.html files",
    )
    id_field: str | None = Field(None, description="the id field of JSONL/CSV/Parquet rows (unset: id, else _id)")
    text_field: str = Field("text", description="the text field of JSONL/CSV/Parquet rows")
    title_field: str = Field("title", description="the title field of JSONL/CSV/Parquet rows (optional in rows)")
    artifacts_dir: Path = artifacts_dir_field("reads models/bi, writes index/")
    index_path: Path | None = Field(None, description="where to write the index (unset: <artifacts_dir>/index)")
    hnsw_m: int = Field(16, ge=2, description="hnswlib M (graph degree)")
    ef_construction: int = Field(200, ge=1, description="hnswlib ef_construction")
    ef_search: int = Field(128, ge=1, description="default ef stored with the index")
    chunking: bool = Field(True, description="cut long passages into windows (off: truncate, as BEIR/MTEB do)")
    chunk_overlap: int = Field(32, ge=0, description="tokens shared by consecutive chunks of a long passage")
    bm25: bool = Field(True, description="also build a BM25 (bm25s) artifact over the same chunks")
    bm25_stemmer: str | None = Field("english", description="Snowball stemmer language (PyStemmer); empty: none")
    bm25_k1: float = Field(1.5, gt=0, description="BM25 k1")
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 b")
    filter_fields: Annotated[list[str], NoDecode] | None = Field(
        None,
        description="metadata fields /search may filter on, comma-separated (nested keys dotted: device.model; "
        "unset: every field whose values are all strings, all numbers or all booleans; empty: none)",
    )
    embed_batch_size: int | None = Field(
        None,
        ge=1,
        description="texts per encoder run (unset: 1 for a dynamic-int8 encoder, so a vector never depends "
        "on its batch neighbours; 64 otherwise)",
    )
    seed: int = Field(0, description="hnswlib random seed")
    engine: Literal["local", "ray"] = Field("local", description="build in this process, or as a Ray Data pipeline")
    ray_address: str | None = Field(
        None, description="ray: unset = a local Ray started here; `auto` or ray://host:10001 = an existing cluster"
    )
    actors: int = Field(1, ge=1, description="ray: embedding actors (one ONNX session each, loaded once)")
    cpus_per_actor: float | None = Field(
        None,
        gt=0,
        description="ray: CPUs each actor reserves, and its onnxruntime threads (unset: fits the cluster, "
        "leaving room for the read and chunking tasks)",
    )
    gpus_per_actor: float = Field(0, ge=0, description="ray: GPUs per actor (then the CUDA provider; export fp16)")
    embeddings_dir: Path | None = Field(
        None, description="write the embedding shards here (ray: default <artifacts_dir>/embeddings; local: none)"
    )
    reuse_embeddings: Path | None = Field(
        None, description="a directory of embedding shards: chunks whose text and encoder match are not embedded again"
    )
    qdrant_shards: int | None = Field(
        None, ge=1, description="qdrant: shards of a new collection (unset: the cluster's default)"
    )
    qdrant_replicas: int | None = Field(None, ge=1, description="qdrant: replication factor of a new collection")
    qdrant_batch: int = Field(256, ge=1, description="qdrant: points per upsert")
    from_index: Path | None = Field(
        None, description="qdrant: load the vectors and chunks of this local index instead of embedding the corpus"
    )

    @field_validator("filter_fields", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
