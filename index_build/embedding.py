"""Embedding passages with the serving encoder: the helpers both build engines (local, Ray) and the
Qdrant load share, so a chunk gets the same vector whichever of them embeds it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from handler.docstore import Chunk
from handler.manifest import ModelManifest
from handler.onnx_model import Encoder
from index_build.shards import Reusable, write_shard


def passage_batch_size(asked: int | None, encoder: ModelManifest) -> int:
    """Texts per encoder run: one for a dynamic-int8 encoder unless asked otherwise. Its activations are
    quantised with one scale per run, so a batched vector depends on its neighbours; alone, a chunk
    gets the same vector whichever engine, batch or re-index embeds it (and, unpadded, no slower)."""
    if asked is not None:
        return asked
    return 1 if (encoder.quantization or {}).get("mode") == "dynamic" else 64


def embed_passages(encoder: Encoder, passages: list[str], batch_size: int, progress: bool = True) -> np.ndarray:
    """In slices of `batch_size`, in order (see passage_batch_size)."""
    vectors = np.zeros((len(passages), encoder.manifest.dims), dtype=np.float32)
    with tqdm(total=len(passages), desc="embedding", unit="chunk", disable=not progress) as bar:
        for start in range(0, len(passages), batch_size):
            batch = passages[start : start + batch_size]
            vectors[start : start + len(batch)] = encoder.embed_passages(batch)
            bar.update(len(batch))
    return vectors


def vectors_for(
    encoder: Encoder,
    passages: list[str],
    hashes: list[str],
    batch_size: int,
    reusable: Reusable | None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Every passage's vector, from `reusable` where its text hash is known, embedded otherwise; and
    which were reused."""
    vectors = np.zeros((len(passages), encoder.manifest.dims), dtype=np.float32)
    reused = np.zeros(len(passages), dtype=bool)
    for i, key in enumerate(hashes if reusable is not None else []):
        known = reusable.get(key)
        if known is not None:
            vectors[i], reused[i] = known, True
    todo = np.flatnonzero(~reused)
    vectors[todo] = embed_passages(encoder, [passages[i] for i in todo], batch_size, progress)
    return vectors, reused


def write_shards(
    directory: Path, chunks: list[Chunk], vectors: np.ndarray, encoder: Encoder, rows: int = 50_000
) -> None:
    """The local build's embeddings as shards, for a later --reuse-embeddings."""
    shutil.rmtree(directory, ignore_errors=True)
    for number, start in enumerate(range(0, len(chunks), rows)):
        part = slice(start, start + rows)
        write_shard(directory / f"part-{number:05d}.parquet", chunks[part], vectors[part], encoder.manifest)
