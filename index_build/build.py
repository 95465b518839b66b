"""`twostage index`: embed every chunk with the serving encoder and write the index artifact."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from handler.docstore import Chunk
from handler.manifest import MANIFEST_NAME, IndexManifest, ModelManifest, read_manifest
from handler.onnx_model import Encoder
from index_build.assemble import assemble
from index_build.corpus import DEFAULT_FIELDS, Fields, passage_chunker, read_corpus
from index_build.settings import IndexSettings
from index_build.shards import Reusable, load_reusable, text_hash, write_shard


def chunk_corpus(
    corpus: Path, encoder: Encoder, overlap: int, chunking: bool = True, fields: Fields = DEFAULT_FIELDS
) -> list[Chunk]:
    manifest = encoder.manifest
    chunker = passage_chunker(
        encoder.model_dir / "tokenizer.json", manifest.max_length, manifest.passage_prompt, overlap
    )
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for doc in read_corpus(corpus, fields):
        if doc.id in seen:
            raise ValueError(f"{corpus}: duplicate document id {doc.id!r}")
        seen.add(doc.id)
        for number, piece in enumerate(chunker.pieces(doc) if chunking else [doc.text]):
            chunks.append(Chunk(len(chunks), doc.id, number, doc.title, piece, doc.metadata))
    if not chunks:
        raise ValueError(f"{corpus}: no documents")
    return chunks


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


def ensure_index(settings: IndexSettings) -> Path:
    """The index at settings' target, reused when it was built from the same corpus and chunking with
    the served encoder and its prompts (and has BM25), else built."""
    target = settings.index_path or settings.artifacts_dir / "index"
    if (target / MANIFEST_NAME).is_file():
        built = read_manifest(target, IndexManifest)
        encoder = read_manifest(settings.artifacts_dir / "models" / "bi", ModelManifest)
        same = (
            Path(built.corpus).resolve() == Path(settings.corpus).resolve()  # ./ vs /abs
            and getattr(built, "chunking", True) == settings.chunking
            and built.encoder_sha256 == encoder.sha256
            and (built.query_prompt, built.passage_prompt) == (encoder.query_prompt, encoder.passage_prompt)
        )
        if same and built.bm25:
            return target
    build_index(settings)
    return target


def build_index(settings: IndexSettings) -> IndexManifest:
    """Write index.bin, docstore.sqlite, bm25/ and manifest.json into <artifacts>/index atomically."""
    if settings.engine == "ray":
        from index_build.ray_build import build_with_ray

        return build_with_ray(settings)
    started = time.perf_counter()
    encoder = Encoder(settings.artifacts_dir / "models" / "bi", batch_size=32)
    fields = Fields(settings.id_field, settings.text_field, settings.title_field)
    chunks = chunk_corpus(settings.corpus, encoder, settings.chunk_overlap, settings.chunking, fields)
    reusable = load_reusable([settings.reuse_embeddings], encoder.manifest) if settings.reuse_embeddings else None
    passages = [c.passage for c in chunks]
    hashes = [text_hash(p, encoder.manifest.passage_prompt) for p in passages] if reusable is not None else []
    batch_size = passage_batch_size(settings.embed_batch_size, encoder.manifest)
    vectors, reused = vectors_for(encoder, passages, hashes, batch_size, reusable)
    embed_seconds = time.perf_counter() - started
    if settings.embeddings_dir:
        write_shards(settings.embeddings_dir, chunks, vectors, encoder)
    build = {
        "engine": "local",
        "embed_batch_size": batch_size,
        "embedded": int((~reused).sum()),
        "reused": int(reused.sum()),
        "embed_seconds": round(embed_seconds, 2),
        "docs_per_second": round(len({c.doc_id for c in chunks}) / embed_seconds, 1),
    }
    return assemble([(chunks, vectors)], len(chunks), encoder.manifest, settings, build, started)
