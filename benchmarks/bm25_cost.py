"""What the BM25 side costs: artifact size, import + load time, and per-query latency of the bm25 stage.

python -m benchmarks.bm25_cost --index-dir artifacts/eval/scifact/index --queries ../shared/data/scifact/queries.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import describe


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _import_seconds(module: str) -> float:
    """Import time in a fresh interpreter (what a cold start pays)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="BEIR queries.jsonl")
    parser.add_argument("--limit", type=int, default=300)
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU

    from handler.manifest import IndexManifest, read_manifest

    manifest = read_manifest(args.index_dir, IndexManifest)
    started = time.perf_counter()
    from handler.sparse_index import BM25Index

    bm25 = BM25Index(args.index_dir, manifest)
    load = time.perf_counter() - started
    queries = [json.loads(line)["text"] for line in args.queries.read_text().splitlines()][: args.limit]
    bm25.search(queries[0], 100)
    latencies = []
    for query in queries:
        t = time.perf_counter()
        bm25.search(query, 100)
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    print(f"chunks: {manifest.count}")
    print(
        f"BM25 artifact: {_dir_size(args.index_dir / 'bm25') / 1e6:.2f} MB "
        f"(hnswlib index.bin {(args.index_dir / 'index.bin').stat().st_size / 1e6:.2f} MB)"
    )
    print(f"import bm25s + Stemmer (fresh process): {_import_seconds('bm25s, Stemmer') * 1000:.0f} ms")
    print(f"import + load in this process: {load * 1000:.0f} ms")
    print(
        f"bm25 stage, top-100, {len(queries)} queries: p50 {statistics.median(latencies):.2f} ms, "
        f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.2f} ms"
    )


if __name__ == "__main__":
    main()
