"""Embedding shards: Parquet files of embedded chunks (the distributed build's output, and what any
later build may reuse). One row per chunk: chunk id, doc id, chunk number, title, text, metadata
(JSON), vector, text hash and the encoder's sha256.

A chunk is re-embedded only when its (text hash, encoder sha256) is not in a shard already: the text
hash covers the passage prompt too, so new prompts re-embed everything."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handler.docstore import Chunk
from handler.manifest import ModelManifest

COLUMNS = ("chunk_id", "doc_id", "chunk", "title", "text", "metadata", "vector", "text_hash", "encoder_sha256")
COMPLETE = "_COMPLETE.json"  # written last into a run's directory: its shards hold the whole corpus


class ShardError(ValueError):
    """A shard that cannot be used: unreadable, or built with another encoder or dims. Names the file."""


def text_hash(passage: str, prompt: str) -> str:
    return hashlib.sha256((prompt + passage).encode("utf-8")).hexdigest()[:32]


def shard_files(directory: Path) -> list[Path]:
    return sorted(Path(directory).rglob("*.parquet"))


def table_of(chunks: list[Chunk], vectors: np.ndarray, encoder: ModelManifest):
    import pyarrow as pa

    dims = vectors.shape[1]
    return pa.table(
        {
            "chunk_id": [f"{c.doc_id}#{c.chunk}" for c in chunks],
            "doc_id": [c.doc_id for c in chunks],
            "chunk": pa.array([c.chunk for c in chunks], pa.int32()),
            "title": [c.title for c in chunks],
            "text": [c.text for c in chunks],
            "metadata": [json.dumps(c.metadata) for c in chunks],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dims),
            "text_hash": [text_hash(c.passage, encoder.passage_prompt) for c in chunks],
            "encoder_sha256": [encoder.sha256] * len(chunks),
        }
    )


def write_shard(path: Path, chunks: list[Chunk], vectors: np.ndarray, encoder: ModelManifest) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table_of(chunks, vectors, encoder), path)


def _open(path: Path, columns: list[str]):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError… for a truncated or foreign file
        raise ShardError(f"{path}: unreadable shard ({error})") from None
    missing = set(columns) - set(parquet.schema_arrow.names)
    if missing:
        raise ShardError(f"{path}: not an embedding shard (no {sorted(missing)})")
    return parquet


def _vectors(path: Path, column, dims: int | None) -> np.ndarray:
    width = column.type.list_size if hasattr(column.type, "list_size") else None
    if dims is not None and width != dims:
        raise ShardError(f"{path}: {width}-d vectors, the bi-encoder embeds {dims}-d")
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column  # a table's or a batch's
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float32)


@dataclass
class Reusable:
    """Vectors already computed, by text hash (this encoder's only)."""

    rows: dict[str, int]
    vectors: np.ndarray

    def get(self, key: str) -> np.ndarray | None:
        row = self.rows.get(key)
        return None if row is None else self.vectors[row]

    def __len__(self) -> int:
        return len(self.rows)


def load_reusable(directories: Iterable[Path], encoder: ModelManifest) -> Reusable:
    """Every shard under the directories: rows of another encoder are not reusable (skipped); a shard
    of this encoder with other dims, or an unreadable one, is an error naming it."""
    rows: dict[str, int] = {}
    parts: list[np.ndarray] = []
    count = 0
    for directory in directories:
        if not Path(directory).is_dir():  # a mistyped --reuse-embeddings would silently re-embed everything
            raise FileNotFoundError(f"no directory of embedding shards at {directory}")
        for path in shard_files(directory):
            parquet = _open(path, ["text_hash", "encoder_sha256", "vector"])
            table = parquet.read(columns=["text_hash", "encoder_sha256", "vector"])
            mine = np.asarray(table.column("encoder_sha256").to_pylist()) == encoder.sha256
            if not mine.any():
                continue
            vectors = _vectors(path, table.column("vector"), encoder.dims)[mine]
            for key in np.asarray(table.column("text_hash").to_pylist())[mine]:
                rows.setdefault(str(key), count)
                count += 1
            parts.append(vectors)
    vectors = np.concatenate(parts) if parts else np.zeros((0, encoder.dims or 0), np.float32)
    return Reusable(rows, vectors)


def read_batches(
    files: list[Path], encoder: ModelManifest, batch_rows: int = 8192
) -> Iterator[tuple[list[Chunk], np.ndarray]]:
    """Shards in file order, batch by batch (never the whole corpus at once), each checked against the
    served encoder: another sha256 or other dims is an error naming the shard."""
    for path in files:
        parquet = _open(path, list(COLUMNS))
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(COLUMNS)):
            shas = set(batch.column("encoder_sha256").to_pylist())
            if shas != {encoder.sha256}:
                raise ShardError(
                    f"{path}: embedded with encoder sha256 {sorted(shas)}, the bi-encoder is {encoder.sha256}"
                )
            vectors = _vectors(path, batch.column("vector"), encoder.dims)
            columns = {
                name: batch.column(name).to_pylist() for name in ("doc_id", "chunk", "title", "text", "metadata")
            }
            chunks = [
                Chunk(-1, doc, number, title, text, json.loads(meta))
                for doc, number, title, text, meta in zip(*columns.values(), strict=True)
            ]
            yield chunks, vectors


def count_rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    total = 0
    for path in files:
        try:
            total += pq.ParquetFile(path).metadata.num_rows
        except Exception as error:
            raise ShardError(f"{path}: unreadable shard ({error})") from None
    return total
