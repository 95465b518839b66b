"""Load test of the HTTP server on loopback with wrk: 1 client vs N clients, batching on and off.

    apt-get install wrk   # once
    python -m benchmarks.load_test --artifacts-dir artifacts --clients 1,16 --seconds 20

Starts `twostage serve` for each setting, POSTs the same /rerank body (a query and `--documents`
passages from the sample corpus) and prints requests/s, latency and non-2xx answers, so that
"throughput with 16 clients ≥ 1.5× one client, zero errors" can be read off.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.machine import describe

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%.1f %%.1f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.duration, latency:percentile(50) / 1000, latency:percentile(95) / 1000))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(artifacts: str, batching: bool, port: int) -> subprocess.Popen:
    env = os.environ | {
        "TWOSTAGE_BATCHING": str(batching).lower(),
        "TWOSTAGE_LOG_LEVEL": "WARNING",
        "TWOSTAGE_METRICS": "false",
    }
    cmd = [sys.executable, "-m", "twostage.cli", "serve", "--artifacts-dir", artifacts, "--port", str(port)]
    server = subprocess.Popen(cmd, env=env)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("server did not start")


def body(documents: int) -> str:
    lines = Path("sample_data/corpus.jsonl").read_text().splitlines()[:documents]
    texts = [json.loads(line)["text"] for line in lines]
    return json.dumps({"query": "How much Veltrazine should a 7-year-old child take?", "documents": texts})


def wrk(port: int, clients: int, seconds: int, script: Path) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(clients, 4)),
            "-c",
            str(clients),
            "-d",
            f"{seconds}s",
            "-s",
            str(script),
            "--timeout",
            "30s",
            f"http://127.0.0.1:{port}/rerank",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests, errors, micros, p50, p95 = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out).groups()
    return {
        "requests_per_s": round(int(requests) / (int(micros) / 1e6), 2),
        "errors": int(errors),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts")
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--batching", default="false,true", help="server settings to compare")
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % body(args.documents))
    rows = []
    for batching in [b == "true" for b in args.batching.split(",")]:
        port = free_port()
        server = start_server(args.artifacts_dir, batching, port)
        try:
            wrk(port, 1, 3, Path(script.name))  # warm-up
            for clients in map(int, args.clients.split(",")):
                rows.append(
                    {"batching": batching, "clients": clients, **wrk(port, clients, args.seconds, Path(script.name))}
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.terminate()
            server.wait(30)
    print(f"\n{args.documents} documents per /rerank request")
    print("| batching | clients | requests/s | × one client | p50 ms | p95 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        single = next(r for r in rows if r["batching"] == row["batching"] and r["clients"] == 1)["requests_per_s"]
        ratio = row["requests_per_s"] / single
        print(
            f"| {row['batching']} | {row['clients']} | {row['requests_per_s']} | {ratio:.2f} | "
            f"{row['p50_ms']} | {row['p95_ms']} | {row['errors']} |"
        )


if __name__ == "__main__":
    main()
