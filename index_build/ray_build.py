"""`twostage index --engine ray`: the build as a Ray Data pipeline, then the same artifact as the local
engine (index_build/assemble.py).

    read (JSONL lines or Parquet; files, directories, globs, s3://)
      → chunk (tasks: the serving tokenizer and Chunker)
      → embed (an actor pool: one ONNX session per actor, loaded once; vectors reused by text hash)
      → Parquet embedding shards under <embeddings_dir>/run-<time>/
      → assemble, streaming the shards into hnswlib, the doc store and BM25.

Read, chunking and write workers reserve a quarter CPU each, and the embedding actors share the
rest but one CPU (Parquet's file listing asks for a whole one): an actor pool holding every CPU
starves the read tasks and the pipeline hangs. Each actor runs onnxruntime on the CPUs Ray
gave it. An interrupted build resumes: the shards of earlier runs are reused by text hash, and only
chunks without one are embedded.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from handler.cpu import available_cpus
from handler.docstore import passage
from handler.manifest import IndexManifest, ModelManifest, read_manifest
from index_build.assemble import assemble
from index_build.corpus import Fields, passage_chunker
from index_build.embedding import passage_batch_size, vectors_for
from index_build.settings import IndexSettings
from index_build.shards import COMPLETE, count_rows, load_reusable, read_batches, shard_files, text_hash

log = logging.getLogger(__name__)

TASK_CPUS = 0.25  # each read, chunking and write worker: what the embedding actors leave free
RAY_BATCH_ROWS = 256  # rows per actor call (the encoder runs its own smaller batches within it)


def _model_files(model_dir: Path) -> dict[str, bytes]:
    """The bi-encoder's files, shipped through the object store (a cluster's nodes need no shared disk)."""
    return {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}


def _model_dir(files: dict[str, bytes]) -> Path:
    """Unpacked once per actor, into its own temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="twostage-bi-"))
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


class Chunking:
    """Rows (JSONL lines or Parquet records) → one row per chunk, with the serving tokenizer's windows."""

    def __init__(self, files: dict[str, bytes], max_length: int, prompt: str, overlap: int, chunking: bool, fields):
        self.chunker = passage_chunker(_model_dir(files) / "tokenizer.json", max_length, prompt, overlap)
        self.chunking, self.fields = chunking, Fields(*fields)

    def __call__(self, batch):
        import pyarrow as pa

        out = {k: [] for k in ("chunk_id", "doc_id", "chunk", "title", "text", "metadata")}
        for row in batch.to_pylist():
            record = json.loads(row["text"]) if set(row) == {"text"} and _is_json(row["text"]) else row
            doc = self.fields.document(record, "corpus row")
            for number, piece in enumerate(self.chunker.pieces(doc) if self.chunking else [doc.text]):
                for key, value in zip(
                    out, (f"{doc.id}#{number}", doc.id, number, doc.title, piece, json.dumps(doc.metadata)), strict=True
                ):
                    out[key].append(value)
        return pa.table(out)


def _is_json(text: str) -> bool:
    return text.lstrip().startswith("{")


class Embedding:
    """One ONNX session per actor, with the CPUs Ray assigned it; reuses known vectors by text hash."""

    def __init__(self, files: dict[str, bytes], threads: int, gpu: bool, reusable, batch_size: int):
        import ray

        from handler.onnx_model import Encoder

        providers = ("cuda", "cpu") if gpu else ("cpu",)
        self.encoder = Encoder(_model_dir(files), threads=threads, providers=providers, require_gpu=gpu)
        self.reusable = ray.get(reusable) if reusable is not None else None
        self.batch_size = batch_size

    def __call__(self, batch):
        import pyarrow as pa

        manifest = self.encoder.manifest
        titles, texts = batch.column("title").to_pylist(), batch.column("text").to_pylist()
        passages = [passage(t, x) for t, x in zip(titles, texts, strict=True)]
        hashes = [text_hash(p, manifest.passage_prompt) for p in passages]
        vectors, reused = vectors_for(self.encoder, passages, hashes, self.batch_size, self.reusable, progress=False)
        flat = pa.array(vectors.reshape(-1), pa.float32())
        return (
            batch.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, manifest.dims))
            .append_column("text_hash", pa.array(hashes))
            .append_column("encoder_sha256", pa.array([manifest.sha256] * len(hashes)))
            .append_column("reused", pa.array(reused))
        )


def expand(corpus: str) -> list[str]:
    """Local globs expanded here; files, directories and s3:// prefixes go to Ray as they are."""
    if "://" not in corpus and any(ch in corpus for ch in "*?["):
        found = sorted(glob.glob(corpus))
        if not found:
            raise FileNotFoundError(f"corpus: nothing matches {corpus}")
        return found
    return [corpus]


def read(paths: list[str]):
    import ray.data

    parquet = all(p.endswith(".parquet") for p in paths) or (
        len(paths) == 1 and "://" not in paths[0] and Path(paths[0]).is_dir() and any(Path(paths[0]).glob("*.parquet"))
    )
    if parquet:
        return ray.data.read_parquet(paths, num_cpus=TASK_CPUS)
    return ray.data.read_text(paths, num_cpus=TASK_CPUS, drop_empty_lines=True)


def _resources(settings: IndexSettings, cluster_cpus: float) -> tuple[float, int]:
    """CPUs each actor reserves (leaving room for the read and chunking tasks) and its ORT threads."""
    # Free besides the chunking actor: one whole CPU, as Parquet's file listing task asks for one
    # whatever num_cpus says (the pipeline hung without it).
    cpus = settings.cpus_per_actor or max(TASK_CPUS / 2, (cluster_cpus - 1 - TASK_CPUS) / settings.actors)
    return cpus, max(1, math.floor(cpus))


def _runs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("run-*") if p.is_dir()) if directory.is_dir() else []


def build_with_ray(settings: IndexSettings) -> IndexManifest:
    import ray
    import ray.data

    started = time.perf_counter()
    bi_dir = settings.artifacts_dir / "models" / "bi"
    encoder = read_manifest(bi_dir, ModelManifest)
    shards_root = settings.embeddings_dir or settings.artifacts_dir / "embeddings"
    earlier = _runs(shards_root)  # complete or interrupted: either way their vectors are good
    reuse_dirs = [d for d in [settings.reuse_embeddings, *earlier] if d is not None]
    reusable = load_reusable(reuse_dirs, encoder) if reuse_dirs else None

    started_here = not ray.is_initialized() and settings.ray_address is None
    if not ray.is_initialized():
        local = {"num_cpus": available_cpus()} if settings.ray_address is None else {}
        ray.init(address=settings.ray_address, include_dashboard=False, logging_level=logging.WARNING, **local)
    try:
        cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
        cpus, threads = _resources(settings, cluster_cpus)
        files = _model_files(bi_dir)
        fields = (settings.id_field, settings.text_field, settings.title_field)
        run_dir = shards_root / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        chunk_args = (
            files,
            encoder.max_length,
            encoder.passage_prompt,
            settings.chunk_overlap,
            settings.chunking,
            fields,
        )
        dataset = read(expand(str(settings.corpus))).map_batches(
            Chunking, fn_constructor_args=chunk_args, batch_format="pyarrow", num_cpus=TASK_CPUS,
            compute=ray.data.ActorPoolStrategy(size=1),
        )  # fmt: skip
        batch_size = passage_batch_size(settings.embed_batch_size, encoder)
        embed_args = (files, threads, settings.gpus_per_actor > 0, ray.put(reusable) if reusable else None,
                      batch_size)  # fmt: skip
        dataset = dataset.map_batches(
            Embedding,
            fn_constructor_args=embed_args,
            batch_format="pyarrow",
            batch_size=max(RAY_BATCH_ROWS, batch_size),
            compute=ray.data.ActorPoolStrategy(size=settings.actors),
            num_cpus=cpus,
            num_gpus=settings.gpus_per_actor or None,
        )
        # the write's tasks would ask for a whole CPU and wait for the actors to finish, the corpus piling up
        dataset.write_parquet(str(run_dir), ray_remote_args={"num_cpus": TASK_CPUS})
    finally:
        if started_here:
            ray.shutdown()
    embed_seconds = time.perf_counter() - started
    shards = shard_files(run_dir)
    count = count_rows(shards)
    reused = _count_reused(shards)
    (run_dir / COMPLETE).write_text(json.dumps({"chunks": count, "encoder_sha256": encoder.sha256}))
    for older in earlier:  # the new run holds every chunk, reused vectors included
        shutil.rmtree(older, ignore_errors=True)
    build = {
        "engine": "ray",
        "ray_address": settings.ray_address or "local",
        "actors": settings.actors,
        "cpus_per_actor": round(cpus, 3),
        "threads_per_actor": threads,
        "embed_batch_size": batch_size,
        "gpus_per_actor": settings.gpus_per_actor,
        "embedded": count - reused,
        "reused": reused,
        "embed_seconds": round(embed_seconds, 2),
        "chunks_per_second": round((count - reused) / embed_seconds, 1),
        "shards": str(run_dir),
    }
    return assemble(read_batches(shards, encoder), count, encoder, settings, build, started)


def _count_reused(shards: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(int(np.sum(pq.read_table(p, columns=["reused"]).column("reused").to_numpy())) for p in shards)
