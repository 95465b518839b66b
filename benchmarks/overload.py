"""`twostage serve` on CPU under more clients than it can serve, and after clients that hang up.

    python -m benchmarks.overload --artifacts-dir artifacts --clients 16,64 --seconds 60 --abandon 5

Starts the server (from `--cwd`, a checkout, with `--python`), then for each client count runs that many
closed-loop clients on loopback sending default /search requests for `--seconds`; a client told 503
waits its Retry-After, as well-behaved clients do. Prints p50/p99 of the answered requests, the share
of 503s, other 5xx and transport errors, and the server's RSS before and at its peak. `--abandon N`
first sends N of the costliest accepted /search requests and hangs up after half a second, then
reports the CPU seconds the server spends in the next 30 s (work nobody will read). Loopback only,
bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from benchmarks.machine import describe

QUERIES = [
    "How much Veltrazine should a 7-year-old child take?",
    "What does error E240 mean on the ThermoLine?",
    "Which plants are safe for cats?",
    "How long is the warranty on the heat pump?",
    "Can I take Veltrazine with grapefruit juice?",
    "How do I reset the device after a power cut?",
    "What is the adult dose?",
    "Is the oral suspension sugar free?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def start(args, port: int) -> subprocess.Popen:
    # quiet: no per-request log or EMF lines in the figures
    env = os.environ | {
        "PYTHONPATH": os.path.abspath(args.cwd),
        "TWOSTAGE_LOG_LEVEL": "WARNING",
        "TWOSTAGE_METRICS": "false",
    }
    command = [args.python, "-m", "twostage.cli", "serve", "--artifacts-dir", os.path.abspath(args.artifacts_dir)]
    server = subprocess.Popen([*command, "--port", str(port)], cwd=args.cwd, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("server did not start")


def client(url: str, until: float, seed: int, log: list) -> None:
    with httpx.Client(base_url=url, timeout=300) as http:
        i = seed
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                response = http.post("/search", json={"query": QUERIES[i % len(QUERIES)]})
                log.append((response.status_code, time.monotonic() - started))
                if response.status_code == 503:
                    time.sleep(float(response.headers.get("retry-after", "1")))
            except httpx.TransportError:
                log.append(("transport", time.monotonic() - started))
            i += 1


def load(url: str, clients: int, seconds: float) -> list:
    log: list = []
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(url, until, i, log)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    return log


def abandon(port: int, count: int, recall_k: int) -> None:
    """Costly requests whose clients hang up after half a second."""
    body = ('{"query": "' + " ".join(QUERIES) * 3 + f'", "recall_k": {recall_k}}}').encode()
    head = f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(head.encode() + body)
        sockets.append(sock)
    time.sleep(0.5)
    for sock in sockets:
        sock.close()


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100)[int(share * 100) - 1] if len(values) > 1 else (values or [0])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--cwd", default=".", help="checkout of the server's code")
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--abandon", type=int, default=0, help="hung-up costly requests to send first")
    parser.add_argument("--abandon-recall-k", type=int, default=225)
    args = parser.parse_args()
    print(describe())
    port = free_port()
    server = start(args, port)
    url = f"http://127.0.0.1:{port}"
    try:
        load(url, 1, 3)  # warm-up
        print(f"server RSS after warm-up: {memory_mb(server.pid)['VmRSS']:.0f} MB")
        if args.abandon:
            before = cpu_seconds(server.pid)
            abandon(port, args.abandon, args.abandon_recall_k)
            time.sleep(30)
            spent = cpu_seconds(server.pid) - before
            print(f"{args.abandon} abandoned /search (recall_k {args.abandon_recall_k}): {spent:.1f} CPU s in 30 s")
        print("| clients | answered | p50 s | p99 s | 503 share | other 5xx | transport errors | peak RSS MB |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for clients in map(int, args.clients.split(",")):
            log = load(url, clients, args.seconds)
            ok = [t for status, t in log if status == 200]
            refused = sum(status == 503 for status, _ in log)
            errors = sum(isinstance(status, int) and status >= 500 and status != 503 for status, _ in log)
            transport = sum(status == "transport" for status, _ in log)
            print(
                f"| {clients} | {len(ok)} | {percentile(ok, 0.5):.2f} | {percentile(ok, 0.99):.2f} | "
                f"{refused / max(len(log), 1):.0%} | {errors} | {transport} | {memory_mb(server.pid)['VmHWM']:.0f} |",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    main()
