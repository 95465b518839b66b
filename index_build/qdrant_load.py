"""`twostage index --stage1 qdrant`: load the corpus into a Qdrant collection that the `qdrant`
stage-1 backend serves. The same chunker, encoder and prompts as the local build; BM25 as sparse
vectors with the local BM25's tokenizer (Qdrant's IDF modifier supplies the IDF).

Point ids come from (doc id, chunk number), and each point records its text's hash. A run that
reaches an existing collection (the same corpus again, an interrupted load, a changed corpus) embeds
only the chunks that are new or whose text changed, upserts them, and deletes points whose chunks are
gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from importlib import metadata

import numpy as np
from tqdm import tqdm

from handler.docstore import DOCSTORE_NAME, Chunk, DocStore
from handler.errors import Stage1Unavailable
from handler.manifest import IndexManifest, check_binding, read_manifest
from handler.onnx_model import Encoder
from handler.qdrant_stage1 import (
    DENSE,
    RECORD_KEY,
    RELOAD,
    SPARSE,
    UNAVAILABLE,
    make_client,
    point_id,
    read_record,
    where,
)
from handler.sparse_index import bm25_document_vector, bm25_tokenize
from handler.vector_index import VectorIndex
from index_build.assemble import bm25_settings
from index_build.corpus import Fields
from index_build.embedding import embed_passages, passage_batch_size
from index_build.local_build import chunk_corpus
from index_build.metadata import declared_fields
from index_build.settings import IndexSettings
from index_build.shards import text_hash

log = logging.getLogger(__name__)


def _from_local_index(index_dir, encoder: Encoder) -> tuple[list[Chunk], np.ndarray]:
    """A local artifact's chunks and the very vectors it was built with (a migration, no embedding)."""
    index = VectorIndex(index_dir, encoder.manifest)
    labels = list(range(len(index)))
    vectors = index.index.get_items(labels, return_type="numpy").astype(np.float32)
    return DocStore(index_dir / DOCSTORE_NAME, len(index)).fetch(labels), vectors


def _new_record(settings: IndexSettings, encoder: Encoder, passages_tokens: list[list[str]]) -> dict:
    m = encoder.manifest
    avgdl = float(np.mean([len(t) for t in passages_tokens])) if passages_tokens else 1.0
    return {
        "encoder_sha256": m.sha256,
        "encoder_source": m.source,
        "dims": m.dims,
        "query_prompt": m.query_prompt,
        "passage_prompt": m.passage_prompt,
        "max_length": m.max_length,
        "chunking": settings.chunking,
        "chunk_overlap": settings.chunk_overlap,
        # avgdl is fixed at creation: every later point is weighted against the same length
        "bm25": bm25_settings(settings) | {"avgdl": max(avgdl, 1.0), "idf": "qdrant modifier"}
        if settings.bm25
        else None,
    }


def _create(client, settings: IndexSettings, record: dict) -> None:
    from qdrant_client import models

    client.create_collection(
        settings.qdrant_collection,
        vectors_config={DENSE: models.VectorParams(size=record["dims"], distance=models.Distance.COSINE)},
        sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        shard_number=settings.qdrant_shards,
        replication_factor=settings.qdrant_replicas,
        metadata={RECORD_KEY: record},
    )
    client.create_payload_index(settings.qdrant_collection, "doc_id", models.PayloadSchemaType.KEYWORD)


def _index_payload(client, collection: str, fields: dict[str, str]) -> None:
    """A payload index per filterable field, so a filtered query plans like any other (`metadata.<field>`)."""
    from qdrant_client import models

    schemas = {
        "string": models.PayloadSchemaType.KEYWORD,
        "number": models.PayloadSchemaType.FLOAT,
        "boolean": models.PayloadSchemaType.BOOL,
    }
    for name, kind in fields.items():
        client.create_payload_index(collection, f"metadata.{name}", schemas[kind])


def _existing(client, collection: str) -> dict[str, str]:
    """Point id → text hash of everything already in the collection."""
    found, offset = {}, None
    while True:
        points, offset = client.scroll(collection, limit=2048, offset=offset, with_payload=["text_hash"])
        found |= {str(p.id): (p.payload or {}).get("text_hash") for p in points}
        if offset is None:
            return found


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _upsert(client, settings, encoder, todo: list[tuple[str, Chunk, np.ndarray | None]], record: dict) -> None:
    from qdrant_client import models

    bm25 = record.get("bm25")
    batch_size = passage_batch_size(settings.embed_batch_size, encoder.manifest)
    with tqdm(total=len(todo), desc="embedding + upserting", unit="chunk") as bar:
        for batch in _batches(todo, settings.qdrant_batch):
            given = [v for _, _, v in batch]
            if given[0] is None:  # not copied from a local index: embedded as the index build embeds
                given = embed_passages(encoder, [c.passage for _, c, _ in batch], batch_size, progress=False)
            vectors = np.stack(given)
            tokens = bm25_tokenize([c.passage for _, c, _ in batch], bm25) if bm25 else [None] * len(batch)
            points = []
            for (pid, chunk, _), vector, words in zip(batch, vectors, tokens, strict=True):
                named = {DENSE: vector.tolist()}
                if bm25:
                    indices, values = bm25_document_vector(words, bm25["avgdl"], bm25["k1"], bm25["b"])
                    named[SPARSE] = models.SparseVector(indices=indices, values=values)
                payload = {
                    "doc_id": chunk.doc_id,
                    "chunk": chunk.chunk,
                    "title": chunk.title,
                    "text": chunk.text,
                    "metadata": chunk.metadata,
                    "text_hash": text_hash(chunk.passage, encoder.manifest.passage_prompt),
                }
                points.append(models.PointStruct(id=pid, vector=named, payload=payload))
            client.upsert(settings.qdrant_collection, points, wait=True)
            bar.update(len(batch))


def load_collection(settings: IndexSettings) -> dict:
    """Create or update the collection; returns its build record (counts of embedded, reused, deleted)."""
    started = time.perf_counter()
    encoder = Encoder(settings.artifacts_dir / "models" / "bi", batch_size=32)
    if settings.from_index:
        chunks, vectors = _from_local_index(settings.from_index, encoder)
        source = str(read_manifest(settings.from_index, IndexManifest).corpus)
    else:
        fields = Fields(settings.id_field, settings.text_field, settings.title_field)
        chunks = chunk_corpus(settings.corpus, encoder, settings.chunk_overlap, settings.chunking, fields)
        vectors, source = None, str(settings.corpus)
    client = make_client(settings)
    try:
        return _sync(client, settings, encoder, chunks, vectors, source, started)
    except UNAVAILABLE as error:  # a cluster that does not answer: a message, not the client's traceback
        raise Stage1Unavailable(f"Qdrant {where(settings)}: {type(error).__name__}: {error}") from None
    finally:
        client.close()


def _sync(client, settings: IndexSettings, encoder: Encoder, chunks, vectors, source: str, started: float) -> dict:
    """The collection brought to these chunks: created or checked, changed chunks upserted, gone ones deleted."""
    record = read_record(client, settings.qdrant_collection)
    if record is None:
        tokens = bm25_tokenize([c.passage for c in chunks], bm25_settings(settings)) if settings.bm25 else []
        record = _new_record(settings, encoder, tokens)
        _create(client, settings, record)
    else:
        check_binding(record, encoder.manifest, where(settings), RELOAD)
    existing = _existing(client, settings.qdrant_collection)
    ids = [point_id(c.doc_id, c.chunk) for c in chunks]
    todo = [
        (pid, chunk, None if vectors is None else vectors[i])
        for i, (pid, chunk) in enumerate(zip(ids, chunks, strict=True))
        if existing.get(pid) != text_hash(chunk.passage, encoder.manifest.passage_prompt)
    ]
    _upsert(client, settings, encoder, todo, record)
    gone = sorted(set(existing) - set(ids))
    for batch in _batches(gone, 1024):
        client.delete(settings.qdrant_collection, points_selector=batch, wait=True)
    record["filters"] = declared_fields((c.metadata for c in chunks), settings.filter_fields)
    _index_payload(client, settings.qdrant_collection, record["filters"])
    record |= {
        "count": len(ids),
        "documents": len({c.doc_id for c in chunks}),
        "corpus": source,
        "build": {
            "embedded": len(todo) if vectors is None else 0,
            "copied_from_index": len(todo) if vectors is not None else 0,
            "reused": len(ids) - len(todo),
            "deleted": len(gone),
            "seconds": round(time.perf_counter() - started, 2),
            "qdrant_client": metadata.version("qdrant-client"),
        },
    }
    client.update_collection(settings.qdrant_collection, metadata={RECORD_KEY: record})
    return record
