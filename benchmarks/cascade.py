"""Warm /search with the rerank cascade on and off, on SciFact-length chunks (issue 32).

    python -m benchmarks.cascade --queries 30 --arms 0,stage1:30:0.9,stage1:20:0.6,model:20 [--threads 1] [--repeat 2]
    python -m benchmarks.kernel_cap avx2 cascade --queries 30      (AVX2-only kernels, from this host)

An arm is `0` (every candidate read), `stage1:KEEP` (the cascade in stage 1's order) or `model:KEEP` (the
distilled first-pass model in models/first_pass picks them), optionally `:CEILING` (the cascade reads on
to that cascade_ceiling; 0 reads KEEP only; unset: the serving default).

SciFact test claims through the pipeline in process (hybrid, recall_k 100, ≈ 230-token chunks) after
one warm-up request per setting; the settings take turns query by query, so each sees the same
machine. Prints p50/p95 of the total, the first pass and the served rerank, the p50 and the mean
against keep 0, and the dollars per million questions at the template's memory size from the mean
(Lambda bills each invocation's duration).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from benchmarks.machine import describe
from evaluation.beir import load_beir
from handler.pipeline import Retriever
from handler.settings import Settings

LAMBDA_X86_PER_GB_S = 0.0000166667  # on-demand x86 price per GB-second (us-east-1, the first tier)
LAMBDA_PER_REQUEST = 0.20 / 1e6


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts", type=Path)
    parser.add_argument("--index-path", default="artifacts/eval/scifact/index", type=Path)
    parser.add_argument("--data", default="../shared/data/scifact", type=Path)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--recall-k", type=int, default=100)
    parser.add_argument(
        "--arms",
        default="0,stage1:20,stage1:30,stage1:40,model:20",
        help="comma-separated: 0 (every candidate; first, for the ratio), stage1:KEEP, model:KEEP",
    )
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: every CPU)")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the queries")
    parser.add_argument("--memory-mb", type=int, default=3008, help="the function's memory size, for the cost")
    args = parser.parse_args()
    print(describe())
    arms = [arm if ":" in arm else f"stage1:{arm}" for arm in args.arms.split(",")]
    uses_model = any(arm.startswith("model:") for arm in arms)
    settings = Settings(
        artifacts_dir=args.artifacts_dir,
        index_path=args.index_path,
        threads=args.threads,
        cascade_first_pass="model" if uses_model else "stage1",
    )
    with_model = Retriever.from_settings(settings)
    in_stage1_order = dataclasses.replace(with_model, rerank=dataclasses.replace(with_model.rerank, first_pass=None))
    queries = list(load_beir(args.data, "test").queries.values())[: args.queries]

    def ask(arm: str, query: str) -> dict[str, float]:
        first_pass, keep, *ceiling = arm.split(":")
        retriever = with_model if first_pass == "model" else in_stage1_order
        if ceiling:
            reading = retriever.rerank.settings.model_copy(update={"cascade_ceiling": float(ceiling[0])})
            retriever = dataclasses.replace(retriever, rerank=dataclasses.replace(retriever.rerank, settings=reading))
        answer = retriever.search(query, args.recall_k, cascade_keep=int(keep))
        return answer.timings | {"reranked": answer.reranked}

    for arm in arms:  # warm-up: sessions, buffers, the rate estimate
        ask(arm, queries[0])
    runs: dict[str, list] = {arm: [] for arm in arms}
    for _ in range(args.repeat):
        for query in queries:
            for arm in arms:
                runs[arm].append(ask(arm, query))
    threads = args.threads or "every CPU"
    print(f"{len(queries)} queries × {args.repeat}, recall_k {args.recall_k}, threads {threads}, warm, in process")
    print("| first pass: keep[: ceiling] | p50 ms | p95 ms | mean ms | first pass p50 | served rerank p50 "
          "| pairs read, mean / p50 | p50 ÷ every candidate | mean ÷ every candidate "
          f"| $ per 1M at {args.memory_mb} MB (mean) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    every = [arm for arm in arms if arm.split(":")[1] == "0"]
    base = total_ms(runs[every[0]]) if every else None
    for arm, timings in runs.items():
        total = total_ms(timings)
        p50, mean = statistics.median(total), statistics.mean(total)
        first = statistics.median(t.get("first_pass_ms", 0.0) for t in timings)
        rerank = statistics.median(t["rerank_ms"] for t in timings)
        reads = [t["reranked"] for t in timings]
        ratios = f"{p50 / statistics.median(base):.2f}× | {mean / statistics.mean(base):.2f}×" if base else " | "
        # Lambda bills each invocation's own duration: a million questions cost the mean, not the median
        dollars = (mean / 1000 * args.memory_mb / 1024 * LAMBDA_X86_PER_GB_S + LAMBDA_PER_REQUEST) * 1e6
        name = "every candidate" if arm in every else arm
        print(
            f"| {name} | {p50:.0f} | {percentile(total, 0.95):.0f} | {mean:.0f} | {first:.0f} | {rerank:.0f} "
            f"| {statistics.mean(reads):.1f} / {statistics.median(reads):g} | {ratios} | {dollars:.2f} |"
        )


def total_ms(timings: list[dict]) -> list[float]:
    return [t["total_ms"] for t in timings]


if __name__ == "__main__":
    main()
