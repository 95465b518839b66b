"""Warm /search latency per stage through the Lambda entry point (API Gateway v2 events).

python -m benchmarks.search_latency --artifacts-dir artifacts --recall-k 20 50 100 --repeat 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from benchmarks.machine import describe

QUERIES = [
    "How much Veltrazine should a 7-year-old child take?",
    "what does error E240 mean on the ThermoLine X2",
    "is marble pothos poisonous to my cat",
    "maximum daily dose of Tandoprin for adults",
    "how does Corvadil lower blood pressure",
    "how often should I water an ember cactus",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts-dir", default="artifacts")
    parser.add_argument("--recall-k", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU
    os.environ["ARTIFACTS_DIR"] = args.artifacts_dir
    os.environ.setdefault("TWOSTAGE_LOG_LEVEL", "WARNING")
    from handler.events import http_api_event
    from handler.lambda_function import handler, settings

    print(f"threads: {settings.threads or 'auto'}; {args.repeat} requests per recall_k after 3 warm-ups")
    print("| recall_k | stage | p50 ms | p95 ms |\n| --- | --- | --- | --- |")
    for recall_k in args.recall_k:
        samples: dict[str, list[float]] = {}
        for i in range(args.repeat + 3):
            body = {"query": QUERIES[i % len(QUERIES)], "recall_k": recall_k, "top_k": min(10, recall_k)}
            timings = json.loads(handler(http_api_event("POST", "/search", body), None)["body"])["timings"]
            for stage, ms in timings.items():
                if i >= 3:
                    samples.setdefault(stage[:-3], []).append(ms)
        for stage, values in samples.items():
            print(f"| {recall_k} | {stage} | {statistics.median(values):.2f} | {percentile(values, 0.95):.2f} |")


if __name__ == "__main__":
    main()
