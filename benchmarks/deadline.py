"""Warm /search latency with and without a deadline, on SciFact-length chunks (issue 18).

    python -m benchmarks.deadline --index-path artifacts/eval/scifact/index --queries 30 --deadline-ms 500

SciFact test claims through the pipeline (hybrid, recall_k 100, ≈ 230-token chunks), in process after
one warm-up request; prints p50/p95 of the total time and how many candidates were reranked.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.machine import describe
from evaluation.beir import load_beir
from handler.pipeline import Retriever
from handler.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts", type=Path)
    parser.add_argument("--index-path", default="artifacts/eval/scifact/index", type=Path)
    parser.add_argument("--data", default="../shared/data/scifact", type=Path)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--recall-k", type=int, default=100)
    parser.add_argument("--deadline-ms", type=int, default=500)
    args = parser.parse_args()
    print(describe())
    retriever = Retriever.from_settings(Settings(artifacts_dir=args.artifacts_dir, index_path=args.index_path))
    queries = list(load_beir(args.data, "test").queries.values())[: args.queries]
    retriever.search(queries[0], args.recall_k)  # warm-up: sessions, buffers, the rate estimate
    print(f"| deadline | p50 ms | p95 ms | reranked (median of {args.recall_k}) | cut |")
    print("| --- | --- | --- | --- | --- |")
    for deadline in (None, args.deadline_ms):
        answers = [retriever.search(q, args.recall_k, deadline_ms=deadline) for q in queries]
        totals = sorted(a.timings["total_ms"] for a in answers)
        p95 = totals[min(len(totals) - 1, round(0.95 * (len(totals) - 1)))]
        reranked = statistics.median(a.reranked for a in answers)
        cut = sum(a.deadline_cut for a in answers)
        label = f"{deadline} ms" if deadline else "none"
        print(f"| {label} | {statistics.median(totals):.0f} | {p95:.0f} | {reranked:.0f} | {cut}/{len(answers)} |")


if __name__ == "__main__":
    main()
