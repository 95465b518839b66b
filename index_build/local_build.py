"""The local build engine: chunk the corpus with the serving tokenizer, embed every chunk here (or
reuse its vector from earlier shards), and assemble the artifact (index_build/assemble.py)."""

from __future__ import annotations

import time
from pathlib import Path

from handler.artifacts import Artifacts
from handler.docstore import Chunk
from handler.manifest import IndexManifest
from handler.onnx_model import Encoder
from index_build.assemble import assemble
from index_build.corpus import DEFAULT_FIELDS, Fields, passage_chunker, read_corpus
from index_build.embedding import passage_batch_size, vectors_for, write_shards
from index_build.settings import IndexSettings
from index_build.shards import load_reusable, text_hash


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


def build_locally(settings: IndexSettings) -> IndexManifest:
    """Write index.bin, docstore.sqlite, bm25/ and manifest.json into the index directory atomically."""
    started = time.perf_counter()
    encoder = Encoder(Artifacts(settings.artifacts_dir).bi, batch_size=32)
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
