"""Stage 1 on the local store and on Qdrant: latency per query, what the qdrant backend adds to a cold
start, and hybrid fused by our `fusion` module against Qdrant's own Query API fusion (prefetch + RRF).

    python -m benchmarks.stage1_backends --qdrant-path artifacts/eval/scifact/qdrant \
        --index-path artifacts/eval/scifact/index --data ../shared/data/scifact [--queries 300]

The collection is `twostage eval --stage1 qdrant`'s (the eval index's chunks and vectors, copied).
Qdrant here is qdrant-client's local mode: exact search over numpy arrays in this process, and BM25 in
Python. It is not a cluster. Its latency says nothing about a cluster's, only that the code path works
(docs/scale.md has the network budget).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import describe

COLD = r"""
import json, time
t0 = time.perf_counter()
from handler import lambda_function as lf
t1 = time.perf_counter()
print(json.dumps({"imports_and_init_ms": (t1 - t0) * 1000, "load_ms": lf.retriever.load_ms}))
"""
IMPORT = "import time; t=time.perf_counter(); import qdrant_client; print((time.perf_counter()-t)*1000)"


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(ordered):.1f} ms, p95 {p95:.1f} ms"


def latency(retriever, queries: list[str], mode: str) -> list[float]:
    times = []
    for query in queries:
        started = time.perf_counter()
        retriever.recall(query, 100, mode)
        times.append((time.perf_counter() - started) * 1000)
    return times


def cold_start(artifacts: Path, env_extra: dict, runs: int) -> list[dict]:
    env = dict(os.environ, ARTIFACTS_DIR=str(artifacts), TWOSTAGE_METRICS="false") | env_extra
    out = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", COLD], env=env, capture_output=True, text=True, check=True)
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def qdrant_fused(stage1, encoder, queries: dict[str, str], depth: int, k: int | None) -> dict:
    """Stage-1 doc runs of Qdrant's Query API: prefetch dense and BM25, fuse with RRF (its k, or ours)."""
    from qdrant_client import models

    from handler.qdrant_stage1 import DENSE, SPARSE
    from handler.sparse_index import bm25_query_vector, bm25_tokenize

    fusion = models.FusionQuery(fusion=models.Fusion.RRF) if k is None else models.RrfQuery(rrf=models.Rrf(k=k))
    runs = {}
    for qid, text in queries.items():
        vector = encoder.embed_queries([text])[0].tolist()
        indices, values = bm25_query_vector(bm25_tokenize([text], stage1.record["bm25"])[0])
        prefetch = [models.Prefetch(query=vector, using=DENSE, limit=depth)]
        if indices:
            sparse = models.SparseVector(indices=indices, values=values)
            prefetch.append(models.Prefetch(query=sparse, using=SPARSE, limit=depth))
        points = stage1.client.query_points(
            stage1.collection, prefetch=prefetch, query=fusion, limit=depth, with_payload=["doc_id"]
        ).points
        best: dict[str, float] = {}
        for point in points:
            best.setdefault(point.payload["doc_id"], point.score)
        runs[qid] = best
    return runs


def our_fused(retriever, queries: dict[str, str], depth: int) -> dict:
    runs = {}
    for qid, text in queries.items():
        chunks, candidates = retriever.recall(text, depth, "hybrid")
        best: dict[str, float] = {}
        for chunk, candidate in zip(chunks, candidates, strict=True):
            best.setdefault(chunk.doc_id, candidate.score)
        runs[qid] = best
    return runs


def main() -> None:
    from evaluation.beir import load_beir
    from evaluation.evaluate import metrics
    from handler.pipeline import Retriever
    from handler.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--index-path", type=Path, default=Path("artifacts/eval/scifact/index"))
    parser.add_argument("--qdrant-path", type=Path, default=Path("artifacts/eval/scifact/qdrant"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(describe())
    data = load_beir(args.data, "test")
    queries = dict(list(data.queries.items())[: args.queries])
    report: dict = {"machine": describe(), "queries": len(queries)}

    local = Retriever.from_settings(Settings(artifacts_dir=args.artifacts, index_path=args.index_path))
    qdrant = Retriever.from_settings(
        Settings(artifacts_dir=args.artifacts, stage1="qdrant", qdrant_path=args.qdrant_path)
    )
    for name, retriever in (("local", local), ("qdrant local mode", qdrant)):
        for mode in ("dense", "bm25", "hybrid"):
            times = latency(retriever, list(queries.values())[:50], mode)
            report[f"latency {name} {mode}"] = percentiles(times)
            print(f"stage 1 (embed + search + fetch), {name}, {mode}, recall_k 100: {percentiles(times)}")

    qrels = {q: data.qrels[q] for q in queries if q in data.qrels}
    variants = {
        "ours (RRF k=60), local store": our_fused(local, queries, 100),
        "ours (RRF k=60), qdrant": our_fused(qdrant, queries, 100),
        "qdrant Query API RRF (its default k)": qdrant_fused(qdrant.stage1, qdrant.encoder, queries, 100, None),
        "qdrant Query API RRF k=60": qdrant_fused(qdrant.stage1, qdrant.encoder, queries, 100, 60),
    }
    for name, runs in variants.items():
        report[f"hybrid {name}"] = metrics(qrels, runs, 100)
        print(f"hybrid stage 1, {name}: {report[f'hybrid {name}']}")
    qdrant.close()

    models_only = Path(os.environ.get("TMPDIR", "/tmp")) / "twostage-models-only"
    models_only.mkdir(exist_ok=True)
    if not (models_only / "models").exists():
        (models_only / "models").symlink_to((args.artifacts / "models").resolve())
    imports = [
        float(subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True).stdout) for _ in range(5)
    ]
    print(f"import qdrant_client alone: median {statistics.median(imports):.0f} ms of 5")
    local_cold = cold_start(args.artifacts, {"TWOSTAGE_INDEX_PATH": str(args.index_path.resolve())}, args.cold_runs)
    qdrant_env = {"TWOSTAGE_STAGE1": "qdrant", "TWOSTAGE_QDRANT_PATH": str(args.qdrant_path.resolve())}
    qdrant_cold = cold_start(models_only, qdrant_env, args.cold_runs)
    for name, runs in (("local", local_cold), ("qdrant local mode", qdrant_cold)):
        init = statistics.median(r["imports_and_init_ms"] for r in runs)
        parts = {k: statistics.median(r["load_ms"].get(k, 0) for r in runs) for k in runs[0]["load_ms"]}
        report[f"cold {name}"] = {"imports_and_init_ms": round(init), "load_ms": parts}
        print(f"cold start imports + init, {name}: median {init:.0f} ms of {len(runs)}; parts {parts}")
    report["import_qdrant_client_ms"] = round(statistics.median(imports))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
