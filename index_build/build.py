"""`twostage index`: embed every chunk with the serving encoder and write the index artifact."""

from __future__ import annotations

import shutil
import time
from importlib import metadata
from pathlib import Path

import hnswlib
import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from handler.docstore import DOCSTORE_NAME, Chunk, write_docstore
from handler.manifest import MANIFEST_NAME, IndexManifest, ModelManifest, read_manifest, write_manifest
from handler.onnx_model import Encoder, available_cpus
from handler.sparse_index import build_bm25
from handler.vector_index import INDEX_NAME
from handler.verify import describe_files
from index_build.corpus import DEFAULT_FIELDS, Chunker, Fields, read_corpus
from index_build.settings import IndexSettings


def chunk_corpus(
    corpus: Path, encoder: Encoder, overlap: int, chunking: bool = True, fields: Fields = DEFAULT_FIELDS
) -> list[Chunk]:
    tokenizer = Tokenizer.from_file(str(encoder.model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    # The passage prompt is embedded with every chunk: it takes its tokens from the window.
    prompt = len(tokenizer.encode(encoder.manifest.passage_prompt, add_special_tokens=False).ids)
    chunker = Chunker(tokenizer, encoder.manifest.max_length - prompt, overlap)
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


def bm25_settings(settings: IndexSettings) -> dict:
    """How BM25 tokenises and scores, for the local artifact and a Qdrant collection alike."""
    return {
        "method": "lucene",
        "k1": settings.bm25_k1,
        "b": settings.bm25_b,
        "stopwords": "en",
        "stemmer": settings.bm25_stemmer or None,
    }


def embed_chunks(encoder: Encoder, chunks: list[Chunk], batch_size: int, progress: bool = True) -> np.ndarray:
    vectors = np.zeros((len(chunks), encoder.manifest.dims), dtype=np.float32)
    with tqdm(total=len(chunks), desc="embedding", unit="chunk", disable=not progress) as bar:
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start : start + batch_size]
            vectors[start : start + len(batch)] = encoder.embed_passages([c.passage for c in batch])
            bar.update(len(batch))
    return vectors


def build_hnsw(vectors: np.ndarray, settings: IndexSettings) -> hnswlib.Index:
    index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
    index.init_index(
        max_elements=len(vectors),
        M=settings.hnsw_m,
        ef_construction=settings.ef_construction,
        random_seed=settings.seed,
    )
    index.add_items(vectors, np.arange(len(vectors)), num_threads=available_cpus())
    index.set_ef(settings.ef_search)
    return index


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
    """Write index.bin, docstore.sqlite and manifest.json into <artifacts>/index atomically."""
    started = time.perf_counter()
    encoder = Encoder(settings.artifacts_dir / "models" / "bi", batch_size=32)
    fields = Fields(settings.id_field, settings.text_field, settings.title_field)
    chunks = chunk_corpus(settings.corpus, encoder, settings.chunk_overlap, settings.chunking, fields)
    vectors = embed_chunks(encoder, chunks, settings.embed_batch_size)
    embed_seconds = time.perf_counter() - started
    index = build_hnsw(vectors, settings)

    target = settings.index_path or settings.artifacts_dir / "index"
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    index.save_index(str(staging / INDEX_NAME))
    write_docstore(staging / DOCSTORE_NAME, chunks)
    bm25 = None
    if settings.bm25:
        bm25 = bm25_settings(settings) | {
            "library": "bm25s",
            "version": metadata.version("bm25s"),
            "count": len(chunks),
        }
        build_bm25([c.passage for c in chunks], staging, bm25)
    docs = len({c.doc_id for c in chunks})
    manifest = IndexManifest(
        encoder_sha256=encoder.manifest.sha256,
        encoder_source=encoder.manifest.source,
        dims=vectors.shape[1],
        count=len(chunks),
        space="cosine",
        M=settings.hnsw_m,
        ef_construction=settings.ef_construction,
        ef=settings.ef_search,
        max_length=encoder.manifest.max_length,
        chunk_overlap=settings.chunk_overlap,
        chunking=settings.chunking,
        pooling=encoder.manifest.pooling,
        normalize=encoder.manifest.normalize,
        query_prompt=encoder.manifest.query_prompt,
        passage_prompt=encoder.manifest.passage_prompt,
        corpus=str(settings.corpus),
        bm25=bm25,
        documents=docs,
        build_seconds=round(time.perf_counter() - started, 2),
        docs_per_second=round(docs / embed_seconds, 1),
        files=describe_files(staging),  # checked at every init: sizes always, sha256 with TWOSTAGE_VERIFY=full
    )
    write_manifest(staging, manifest)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return manifest
