"""Concurrent rerank requests with and without dynamic batching: pairs/s and request latency.

    python -m benchmarks.batching_throughput --model-dir artifacts/models/cross --clients 1,4,16
    python -m benchmarks.batching_throughput --model-dir artifacts-gpu/models/cross --require-gpu  # GPU host

Each client thread sends `--requests` requests of `--pairs` (query, passage) pairs filled to the
model's max length. Without batching every request runs its own session calls; with it, pairs of
concurrent requests share token-budget batches (handler/batching.py), as in the GPU container.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from benchmarks.gpu_rerank import add_model_arguments, load_model, make_pairs
from benchmarks.machine import describe
from handler.batching import BatchedCrossEncoder


def run_clients(score, clients: int, requests: int, query: str, passages: list[str]) -> tuple[float, float]:
    latencies: list[float] = []
    start = threading.Barrier(clients + 1)

    def client() -> None:
        start.wait()
        for _ in range(requests):
            began = time.perf_counter()
            score(query, passages)
            latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return clients * requests * len(passages) / elapsed, statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--max-batch-tokens", type=int, default=65536)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="batches prepared and run at once")
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU

    model = load_model(args)
    batched = BatchedCrossEncoder(
        model, args.max_batch_tokens, args.max_wait_ms, max_pending=1024, timeout_s=600, workers=args.workers
    )
    query, passages = make_pairs(args.pairs, model.manifest.max_length)
    model.logits(query, passages)  # warm-up
    print(f"{model.session.get_providers()[0]}, {args.pairs} pairs × {model.manifest.max_length} tokens per request")
    print("| batching | clients | pairs/s | × one client | p50 request ms |\n| --- | --- | --- | --- | --- |")
    for name, score in (("off", model.logits), (f"on, {args.workers} worker(s)", batched.logits)):
        single = None
        for clients in map(int, args.clients.split(",")):
            rate, p50 = run_clients(score, clients, args.requests, query, passages)
            single = single or rate
            print(f"| {name} | {clients} | {rate:.0f} | {rate / single:.2f} | {p50:.0f} |", flush=True)
    batched.close()


if __name__ == "__main__":
    main()
