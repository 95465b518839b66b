"""The index artifact from embedded chunks, batch by batch: hnswlib, the SQLite doc store and BM25 are
fed each batch in turn, so a build from shards never holds every chunk text at once (BM25 keeps one
int32 array of term ids per chunk). Both engines write the artifact here: the handler cannot tell a
Ray build from a local one except by the manifest's build record."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import hnswlib
import numpy as np

from handler.cpu import available_cpus
from handler.docstore import DOCSTORE_NAME, SCHEMA, Chunk
from handler.manifest import IndexManifest, ModelManifest, write_manifest
from handler.metadata_columns import write_columns
from handler.sparse_index import BM25_DIR, bm25_tokenize
from handler.vector_index import INDEX_NAME
from handler.verify import describe_files
from index_build.metadata import FieldTypes
from index_build.settings import IndexSettings


def bm25_settings(settings: IndexSettings) -> dict:
    """How BM25 tokenises and scores, for the local artifact and a Qdrant collection alike."""
    return {
        "method": "lucene",
        "k1": settings.bm25_k1,
        "b": settings.bm25_b,
        "stopwords": "en",
        "stemmer": settings.bm25_stemmer or None,
    }


class _BM25Builder:
    """Term ids per chunk as compact arrays (no Python string per token), one bm25s index at the end."""

    def __init__(self, settings: dict):
        self.settings, self.vocab, self.docs = settings, {}, []

    def add(self, passages: list[str]) -> None:
        for tokens in bm25_tokenize(passages, self.settings):
            ids = [self.vocab.setdefault(t, len(self.vocab)) for t in tokens]
            self.docs.append(np.asarray(ids, dtype=np.int32))

    def save(self, target: Path) -> None:
        import bm25s
        from bm25s.tokenization import Tokenized

        bm25 = bm25s.BM25(k1=self.settings["k1"], b=self.settings["b"], method=self.settings["method"])
        bm25.index(Tokenized(ids=self.docs, vocab=self.vocab), show_progress=False)
        bm25.save(str(target / BM25_DIR), show_progress=False)


def assemble(
    batches: Iterable[tuple[list[Chunk], np.ndarray]],
    count: int,
    encoder: ModelManifest,
    settings: IndexSettings,
    build: dict,
    build_started: float,
) -> IndexManifest:
    """Write index.bin, docstore.sqlite, bm25/ and manifest.json into the index directory atomically;
    `build_started` (time.perf_counter) is when the whole build began, for its record."""
    started = time.perf_counter()
    target = settings.index_path or settings.artifacts_dir / "index"
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    index = hnswlib.Index(space="cosine", dim=encoder.dims)
    index.init_index(
        max_elements=count, M=settings.hnsw_m, ef_construction=settings.ef_construction, random_seed=settings.seed
    )
    bm25 = _BM25Builder(bm25_settings(settings)) if settings.bm25 else None
    labels, docs, flat_metadata, types = 0, set(), [], FieldTypes()
    with sqlite3.connect(staging / DOCSTORE_NAME) as db:
        db.executescript(SCHEMA)
        for chunks, vectors in batches:
            rows = range(labels, labels + len(chunks))
            index.add_items(vectors, np.asarray(rows), num_threads=available_cpus())
            db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (r, c.doc_id, c.chunk, c.title, c.text, json.dumps(c.metadata))
                    for r, c in zip(rows, chunks, strict=True)
                ),
            )
            if bm25:
                bm25.add([c.passage for c in chunks])
            flat_metadata += [types.add(c.metadata) for c in chunks]
            docs.update(c.doc_id for c in chunks)
            labels += len(chunks)
    (staging / DOCSTORE_NAME).chmod(0o644)
    if labels != count:
        raise ValueError(f"assembly expected {count} chunks, the batches held {labels}")
    index.set_ef(settings.ef_search)
    index.save_index(str(staging / INDEX_NAME))
    filters = types.declared(settings.filter_fields)
    write_columns(staging, filters, flat_metadata, count)
    bm25_record = None
    if bm25:
        bm25.save(staging)
        bm25_record = bm25_settings(settings) | {
            "library": "bm25s",
            "version": metadata.version("bm25s"),
            "count": count,
        }
    manifest = IndexManifest(
        encoder_sha256=encoder.sha256,
        encoder_source=encoder.source,
        dims=encoder.dims,
        count=count,
        space="cosine",
        M=settings.hnsw_m,
        ef_construction=settings.ef_construction,
        ef=settings.ef_search,
        max_length=encoder.max_length,
        chunk_overlap=settings.chunk_overlap,
        chunking=settings.chunking,
        pooling=encoder.pooling,
        normalize=encoder.normalize,
        query_prompt=encoder.query_prompt,
        passage_prompt=encoder.passage_prompt,
        corpus=str(settings.corpus),
        bm25=bm25_record,
        filters=filters,
        documents=len(docs),
        build=build
        | {
            "assembly_seconds": round(time.perf_counter() - started, 2),
            "seconds": round(time.perf_counter() - build_started, 2),
        },
        files=describe_files(staging),  # checked at every init (handler/verify.py)
    )
    write_manifest(staging, manifest)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return manifest
