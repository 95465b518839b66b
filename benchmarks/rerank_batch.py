"""Reranker pairs/s by batch size: why `rerank_batch_size` defaults to what it does.

    python -m benchmarks.rerank_batch [--sizes 4,8,16,32,64] [--threads 2]
    python -m benchmarks.kernel_cap avx2 rerank-batch        (the same on an AVX2-only CPU's kernels)

The 100 (query, passage) pairs of `benchmarks.rerank_peers` (one SciFact claim, its hybrid top 100),
scored by the served reranker (artifacts/models/cross, int8) and by its fp32 export, whole and cut to
the first 30 and 80 words of each passage; length-sorted batches as served. Rounds interleave the batch
sizes so that a noisy neighbour slows all of them alike; the median of the rounds is printed.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.machine import describe
from benchmarks.rerank_peers import candidate_pairs, pairs_per_second
from handler.onnx_model import CrossEncoder


def fp32_reranker(artifacts: Path, bench_dir: Path) -> Path:
    """The served reranker's own source, exported without quantisation (once)."""
    from handler.manifest import ModelManifest, read_manifest
    from model_export.export import export_all
    from model_export.settings import ExportSettings

    target = bench_dir / "cross"
    if not (target / "manifest.json").is_file():
        source = read_manifest(artifacts / "models" / "cross", ModelManifest).source
        export_all(ExportSettings(models_dir=bench_dir, which="cross", cross_model=source, quantize="none"))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--bench-dir", type=Path, default=Path("artifacts/bench/rerank-batch"))
    parser.add_argument("--sizes", default="4,8,16,32,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU

    query, passages = candidate_pairs(args.data, args.artifacts_dir, 100)
    models = {
        "int8": args.artifacts_dir / "models" / "cross",
        "fp32": fp32_reranker(args.artifacts_dir, args.bench_dir),
    }
    lengths = {"whole (≤ 256 tokens)": None, "first 80 words": 80, "first 30 words": 30}
    sizes = [int(s) for s in args.sizes.split(",")]
    print("| model | passages | tokens per pair | " + " | ".join(f"batch {s}" for s in sizes) + " |")
    print("| --- " * (3 + len(sizes)) + "|")
    for model_name, model_dir in models.items():
        for length_name, words in lengths.items():
            cut = [" ".join(p.split()[:words]) if words else p for p in passages]
            print(f"| {model_name} | {length_name} | {row(model_dir, query, cut, sizes, args)} |", flush=True)


def row(model_dir: Path, query: str, passages: list[str], sizes: list[int], args) -> str:
    models = {size: CrossEncoder(model_dir, threads=args.threads, batch_size=size) for size in sizes}
    tokens = statistics.mean(len(e.ids) for e in models[sizes[0]].encode(query, passages))
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(args.rounds):
        for size, model in models.items():
            rates[size].append(pairs_per_second(model.logits, query, passages, repeats=3))
    return f"{tokens:.0f} | " + " | ".join(f"{statistics.median(rates[s]):.1f}" for s in sizes)


if __name__ == "__main__":
    main()
