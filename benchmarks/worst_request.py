"""The costliest requests a deployment accepts, through the Lambda entry point (what a caller can make us pay).

    python -m benchmarks.worst_request --artifacts-dir artifacts

Each request runs in a fresh process (so its peak RSS is its own): the issue's two attacks (/rerank with
1,000 documents of 300 words; /search with recall_k 1000 and a 2,048-character query) and, under the
work budget (max_rerank_tokens), the largest of each that is still accepted. Prints status, wall time
and peak RSS. Run it on a checkout from before the budget (`--python`, `--cwd`) for the before column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks.machine import describe

CHILD = r"""
import json, resource, sys, time
from handler import lambda_function as lf
from handler.events import http_api_event
path, body = sys.argv[1], json.load(open(sys.argv[2]))
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
response = lf.handler(http_api_event("POST", path, body), None)
elapsed = time.perf_counter() - started
print(json.dumps({"status": response["statusCode"], "seconds": round(elapsed, 2), "rss_before_mb": round(rss_before),
                  "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""
WORDS = ["the", "trial", "measured", "plasma", "concentration", "in", "adults", "and", "children", "after"]


def passage(words: int, seed: int) -> str:
    return " ".join(WORDS[(seed + i) % len(WORDS)] for i in range(words))


def cases(budget: int) -> list[tuple[str, str, dict]]:
    query = passage(400, 3)[:2048]  # real words (one long "xxx…" word is a single [UNK] token)
    most = budget // 256  # pairs of 256 tokens (the reranker's max length) that fit the budget
    documents = [passage(300, i) for i in range(1000)]  # 300 words reach 256 tokens per pair
    return [
        ("issue: /rerank 1,000 docs × 300 words", "/rerank", {"query": "dose", "documents": documents}),
        (
            f"largest accepted /rerank: {most} docs × 300 words",
            "/rerank",
            {"query": "dose", "documents": documents[:most]},
        ),
        ("issue: /search recall_k 1000, 2,048-char query", "/search", {"query": query, "recall_k": 1000}),
        (f"/search recall_k {most}, same query", "/search", {"query": query, "recall_k": most}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the code under test")
    parser.add_argument("--cwd", default=".", help="checkout of the code under test")
    parser.add_argument("--budget", type=int, default=65536, help="the deployment's max_rerank_tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--index-path", help="another index built with the same encoder (cold_start's 100k one)")
    args = parser.parse_args()
    print(describe())
    env = (
        os.environ
        | {
            "ARTIFACTS_DIR": os.path.abspath(args.artifacts_dir),
            "TWOSTAGE_THREADS": str(args.threads),
            "PYTHONPATH": os.path.abspath(args.cwd),
        }
        | ({"TWOSTAGE_INDEX_PATH": os.path.abspath(args.index_path)} if args.index_path else {})
    )
    print("| request | status | seconds | peak RSS MB (after init) |")
    print("| --- | --- | --- | --- |")
    for name, path, body in cases(args.budget):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as request:  # too long for a command-line argument
            json.dump(body, request)
            request.flush()
            command = [args.python, "-c", CHILD, path, request.name]
            out = subprocess.run(command, capture_output=True, text=True, cwd=args.cwd, env=env, timeout=1800)
        if out.returncode:
            print(f"| {name} | crashed | | | {out.stderr[-300:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {name} | {row['status']} | {row['seconds']} | {row['rss_peak_mb']} ({row['rss_before_mb']}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
