"""Cold start: a new process → the first /search answer through `handler.lambda_function`.

    python -m benchmarks.cold_start --source-index artifacts/eval/scifact/index --chunks 100000

Synthesises an index of `--chunks` chunks from a real one (SciFact's by default): every vector is
repeated with small noise and re-normalised, every chunk's text reused under a new id, and hnswlib,
BM25 and the doc store are built from those exactly as `twostage index` builds them. Then it starts
fresh interpreters (`--runs`) that import `handler.lambda_function` (every import and the init, as
Lambda does) and answer one API Gateway v2 `/search` event reranking `--recall-k` candidates. Prints
imports + init, the first request, their sum, and the init's parts (the two models build on a worker
thread while imports and the index load run, so the parts overlap).
Run it with a runtime-only environment's python (`--python`) to see what Lambda pays.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from handler import lambda_function as lf  # every import and the whole init, as Lambda runs it
t1 = time.perf_counter()
from twostage.events import http_api_event
body = {"query": "vitamin D deficiency and bone fractures", "recall_k": int(sys.argv[1])}
response = lf.handler(http_api_event("POST", "/search", body), None)
t2 = time.perf_counter()
assert response["statusCode"] == 200, response
import resource
print(json.dumps({"imports_and_init": t1 - t0, "first_request": t2 - t1, "ready_to_answer": t2 - t0,
                  "load_ms": lf.retriever.load_ms,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def synthesise(source: Path, target: Path, chunks: int, seed: int = 0) -> Path:
    import hnswlib
    import numpy as np

    from handler.docstore import DOCSTORE_NAME, Chunk, DocStore, write_docstore
    from handler.manifest import IndexManifest, read_manifest, write_manifest
    from handler.sparse_index import build_bm25
    from handler.vector_index import INDEX_NAME
    from index_build.build import build_hnsw
    from index_build.settings import IndexSettings

    manifest = read_manifest(source, IndexManifest)
    if (target / "manifest.json").is_file():
        built = read_manifest(target, IndexManifest)
        if (built.count, built.encoder_sha256) == (chunks, manifest.encoder_sha256):
            return target
    real = hnswlib.Index(space="cosine", dim=manifest.dims)
    real.load_index(str(source / INDEX_NAME))
    vectors = np.asarray(real.get_items(list(range(manifest.count))), dtype=np.float32)
    originals = DocStore(source / DOCSTORE_NAME).fetch(list(range(manifest.count)))
    rng = np.random.default_rng(seed)
    picks = np.arange(chunks) % manifest.count
    noisy = vectors[picks] + rng.normal(0, 0.02, (chunks, manifest.dims)).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    copies = [originals[p] for p in picks]
    made = [
        Chunk(i, f"{c.doc_id}~{i // manifest.count}", c.chunk, c.title, c.text, c.metadata)
        for i, c in enumerate(copies)
    ]
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    settings = IndexSettings(hnsw_m=manifest.M, ef_construction=manifest.ef_construction, ef_search=manifest.ef)
    build_hnsw(noisy, settings).save_index(str(staging / INDEX_NAME))
    write_docstore(staging / DOCSTORE_NAME, made)
    bm25 = dict(manifest.bm25, count=chunks) if manifest.bm25 else None
    if bm25:
        build_bm25([c.passage for c in made], staging, bm25)
    documents = len({c.doc_id for c in made})
    write_manifest(staging, manifest.model_copy(update={"count": chunks, "documents": documents, "bm25": bm25}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def cold_start(python: str, artifacts: Path, index: Path, recall_k: int) -> dict:
    env = {"ARTIFACTS_DIR": str(artifacts), "TWOSTAGE_INDEX_PATH": str(index), "TWOSTAGE_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    command = [python, "-c", CHILD, str(recall_k)]
    out = subprocess.run(command, env=env | _path_env(), capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["process_total"] = time.perf_counter() - started
    return report


def _path_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH", "HNSWLIB_NO_NATIVE")} | {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1])
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts", type=Path, help="holds models/bi and models/cross")
    parser.add_argument("--source-index", default="artifacts/eval/scifact/index", type=Path)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--bench-dir", default="artifacts/bench", type=Path)
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure (a runtime-only venv)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--recall-k", type=int, default=100, help="candidates the first /search reranks")
    args = parser.parse_args()

    index = synthesise(args.source_index, args.bench_dir / f"index-{args.chunks}", args.chunks)
    started = time.perf_counter()
    for _ in range(3):
        subprocess.run([args.python, "-c", "pass"], check=True)
    interpreter = (time.perf_counter() - started) / 3
    # The first run only warms the page cache.
    runs = [cold_start(args.python, args.artifacts_dir, index, args.recall_k) for _ in range(args.runs + 1)][1:]
    parts = ["imports_and_init", "first_request", "ready_to_answer", "process_total"]
    print(f"{args.chunks} chunks, first /search at recall_k {args.recall_k}, {args.runs} runs (median), {args.python}")
    print(f"  interpreter start  {interpreter * 1000:5.0f} ms (not in the parts below)")
    for part in parts:
        print(f"  {part:<16} {statistics.median(r[part] for r in runs) * 1000:7.0f} ms")
    for name in runs[0]["load_ms"]:
        print(f"    {name:<18} {statistics.median(r['load_ms'][name] for r in runs):7.0f} ms")
    print(f"  RSS after first request: {statistics.median(r['rss_mb'] for r in runs):.0f} MB")


if __name__ == "__main__":
    main()
