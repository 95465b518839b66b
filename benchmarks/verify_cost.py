"""What each artifact check costs at init (handler/verify.py), to see what fits an on-demand cold start.

    python -m benchmarks.verify_cost --artifacts-dir artifacts [--index-dir artifacts/bench/index-100000]

Times every check `quick` runs and what `full` adds, on a warm page cache (median of `--runs`). The two
model checksums run on the model-loading thread, beside the index load, so they add to the cold start
only when that thread is the later one (docs/results.md §8 has the init's critical path).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from pathlib import Path

from benchmarks.machine import describe
from handler.docstore import DOCSTORE_NAME
from handler.hnsw_file import check_index_file
from handler.manifest import IndexManifest, ModelManifest, read_manifest, sha256_file
from handler.sparse_index import BM25Index
from handler.vector_index import INDEX_NAME
from handler.verify import check_docstore_rows, check_file_records, check_sqlite_file


def timed(run, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def checks(models: Path, index: Path) -> list[tuple[str, str, object]]:
    manifest = read_manifest(index, IndexManifest)
    store = index / DOCSTORE_NAME
    index_bytes = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())

    def rows(full: bool):
        with sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro&immutable=1", uri=True) as db:
            check_docstore_rows(db, store, manifest.count, full)

    rows_checked = [
        (
            f"{kind} model sha256 ({(models / kind / 'model.onnx').stat().st_size / 1e6:.0f} MB)",
            "quick",
            lambda kind=kind: sha256_file(models / kind / read_manifest(models / kind, ModelManifest).onnx_file),
        )
        for kind in ("bi", "cross")
    ]
    rows_checked += [
        (
            "hnswlib graph: header, level-0 and upper-level ids, labels",
            "quick",
            lambda: check_index_file(index / INDEX_NAME, manifest.count, manifest.dims),
        ),
        (
            "sizes and sampled sha256 of every index file",
            "quick",
            lambda: check_file_records(index, manifest.files, False, ""),
        ),
        ("doc store header + rows (count, min, max label)", "quick", lambda: (check_sqlite_file(store), rows(False))),
        ("BM25 postings: shapes and offsets", "quick", lambda: BM25Index(index, manifest, full=False)),
        ("BM25 postings: every id and score", "full", lambda: BM25Index(index, manifest, full=True)),
        ("doc store quick_check", "full", lambda: rows(True)),
        (
            f"sha256 of every index file ({index_bytes / 1e6:.0f} MB)",
            "full",
            lambda: check_file_records(index, manifest.files, True, ""),
        ),
    ]
    return rows_checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts", type=Path)
    parser.add_argument("--index-dir", type=Path, help="default: <artifacts-dir>/index")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    index = args.index_dir or args.artifacts_dir / "index"
    print(describe())
    print(f"index {index}: {read_manifest(index, IndexManifest).count} chunks")
    print("| check | level | ms (median) |")
    print("| --- | --- | --- |")
    for name, level, run in checks(args.artifacts_dir / "models", index):
        print(f"| {name} | {level} | {timed(run, args.runs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
