"""The costliest requests a deployment accepts or rejects (what a caller can make us pay), through the
Lambda entry point and against `twostage serve`.

    python -m benchmarks.worst_request --artifacts-dir artifacts [--index-path artifacts/bench/index-100000]

Each request runs in a fresh process (so its peak RSS is its own): the largest /rerank and /search
the work budget (max_rerank_tokens) accepts, and the worst bodies it rejects (1 MiB of integers as
documents, JSON nested 1,000 deep, 1,000 invalid document objects, an oversized body). Prints status,
wall time, the answer's size and peak RSS; against `serve` also the slowest /health answered while the
request ran. `--python`/`--cwd` run another checkout (a before column).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.machine import describe

CHILD = r"""
import json, resource, sys, time
from handler import lambda_function as lf
from handler.events import http_api_event
path, raw = sys.argv[1], open(sys.argv[2]).read()
event = http_api_event("POST", path)
event["body"] = raw
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
response = lf.handler(event, None)
elapsed = time.perf_counter() - started
print(json.dumps({"status": response["statusCode"], "seconds": round(elapsed, 2), "bytes": len(response["body"]),
                  "rss_before_mb": round(rss_before),
                  "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""
WORDS = ["the", "trial", "measured", "plasma", "concentration", "in", "adults", "and", "children", "after"]


def passage(words: int, seed: int) -> str:
    return " ".join(WORDS[(seed + i) % len(WORDS)] for i in range(words))


def cases(budget: int) -> list[tuple[str, str, str]]:
    """(name, path, raw body)."""
    query = passage(400, 3)[:2048]  # real words (one long "xxx…" word is a single [UNK] token)
    most = budget // 256  # pairs of 256 tokens (the reranker's max length) that fit the budget
    documents = [passage(300, i) for i in range(most)]  # 300 words reach 256 tokens per pair
    integers = '{"query": "q", "documents": [' + ",".join(["0"] * 524_000) + "]}"
    objects = json.dumps({"query": "q", "documents": [{"body": "x" * 900} for _ in range(1000)]})
    rerank = json.dumps({"query": "dose", "documents": documents})
    return [
        (f"accepted: /rerank {most} docs × 300 words", "/rerank", rerank),
        (
            f"accepted: /search recall_k {most}, 2,048-char query",
            "/search",
            json.dumps({"query": query, "recall_k": most}),
        ),
        ("rejected: /rerank 1 MiB, 524k integers as documents", "/rerank", integers),
        ("rejected: /rerank JSON nested 1,000 deep", "/rerank", "[" * 1000 + "]" * 1000),
        ("rejected: /v1/rerank 1,000 objects without text", "/v1/rerank", objects),
        (
            "rejected: /search recall_k 1000 (over the budget)",
            "/search",
            json.dumps({"query": query, "recall_k": 1000}),
        ),
    ]


def through_lambda(args, env: dict, path: str, raw: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as request:  # too long for a command-line argument
        request.write(raw)
        request.flush()
        command = [args.python, "-c", CHILD, path, request.name]
        out = subprocess.run(command, capture_output=True, text=True, cwd=args.cwd, env=env, timeout=1800)
    if out.returncode:
        return {"status": f"crashed ({out.returncode})"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next((line for line in status.splitlines() if line.startswith("VmHWM:")), "VmHWM: 0 kB")
    return round(int(peak.split()[1]) / 1024)


def against_serve(args, env: dict, path: str, raw: str) -> dict:
    """A fresh `twostage serve`; while the request runs, /health is asked every 50 ms."""
    import httpx

    port = _free_port()
    command = [args.python, "-m", "twostage.cli", "serve", "--port", str(port), "--log-level", "WARNING"]
    server = subprocess.Popen(command, cwd=args.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        health, done = [], threading.Event()

        def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                httpx.get(f"{url}/health", timeout=60)
                health.append((time.perf_counter() - started) * 1000)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        started = time.perf_counter()
        answer = httpx.post(f"{url}{path}", content=raw, headers={"content-type": "application/json"}, timeout=600)
        elapsed = time.perf_counter() - started
        done.set()
        prober.join()
        return {
            "status": answer.status_code,
            "seconds": round(elapsed, 2),
            "bytes": len(answer.content),
            "rss_peak_mb": _peak_rss_mb(server.pid),
            "health_ms": round(max(health, default=0.0)),
        }
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the code under test")
    parser.add_argument("--cwd", default=".", help="checkout of the code under test")
    parser.add_argument("--budget", type=int, default=65536, help="the deployment's max_rerank_tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--index-path", help="another index built with the same encoder (cold_start's 100k one)")
    parser.add_argument("--targets", default="lambda,serve", help="lambda, serve or both")
    parser.add_argument("--only", default="", help="only the requests whose name contains this")
    args = parser.parse_args()
    print(describe())
    env = (
        os.environ
        | {
            "ARTIFACTS_DIR": os.path.abspath(args.artifacts_dir),
            "TWOSTAGE_THREADS": str(args.threads),
            "TWOSTAGE_DRAIN_S": "0",
            "PYTHONPATH": os.path.abspath(args.cwd),
        }
        | ({"TWOSTAGE_INDEX_PATH": os.path.abspath(args.index_path)} if args.index_path else {})
    )
    print("| request | through | status | seconds | answer bytes | peak RSS MB | slowest /health ms meanwhile |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    run = {"lambda": through_lambda, "serve": against_serve}
    for name, path, raw in (case for case in cases(args.budget) if args.only in case[0]):
        for target in args.targets.split(","):
            row = run[target](args, env, path, raw)
            cells = [row.get(k, "") for k in ("status", "seconds", "bytes", "rss_peak_mb", "health_ms")]
            print(f"| {name} | {target} | " + " | ".join(str(c) for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
