"""The handler under the real Lambda runtime client (awslambdaric), fed by a Runtime API stub on loopback."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import load_event

PREFIX = "/2018-06-01/runtime"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"


class RuntimeApiStub(ThreadingHTTPServer):
    """The subset of the Lambda Runtime API a runtime client uses: next, response, error, init error, and
    SnapStart's restore/next (answered at once: the "snapshot" is the running process) and restore/error."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.events: queue.Queue = queue.Queue()
        self.results: dict[str, tuple[str, dict]] = {}
        self.done = threading.Condition()
        self.restores = 0

    def invoke(self, event: dict, timeout: float = 60) -> tuple[str, dict]:
        request_id = f"req-{len(self.results)}-{time.monotonic_ns()}"
        self.events.put((request_id, event))
        with self.done:
            if not self.done.wait_for(lambda: request_id in self.results or "init" in self.results, timeout):
                raise TimeoutError("runtime client never answered")
        return self.results.get(request_id) or self.results["init"]

    def record(self, key: str, kind: str, body: dict) -> None:
        with self.done:
            self.results[key] = (kind, body)
            self.done.notify_all()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: bytes = b"{}", headers: dict | None = None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == f"{PREFIX}/restore/next":
            self.server.restores += 1
            return self._reply(200)
        if self.path != f"{PREFIX}/invocation/next":
            return self._reply(404)
        request_id, event = self.server.events.get()
        self._reply(
            200,
            json.dumps(event).encode(),
            {
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:twostage",
                "Lambda-Runtime-Trace-Id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
                "Content-Type": "application/json",
            },
        )

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        parts = self.path[len(PREFIX) :].strip("/").split("/")
        if parts in (["init", "error"], ["restore", "error"]):
            self.server.record("init", "_".join(parts), body | {"type": self.headers.get(ERROR_TYPE)})
        elif len(parts) == 3 and parts[0] == "invocation":
            self.server.record(parts[1], parts[2], body)
        else:
            return self._reply(404)
        self._reply(202)


@contextmanager
def runtime_client(artifacts: Path, log: Path, **env: str):
    """awslambdaric serving our handler against a fresh Runtime API stub; its output goes to `log`."""
    stub = RuntimeApiStub()
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    env = dict(
        os.environ,
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{stub.server_port}",
        ARTIFACTS_DIR=str(artifacts),
        AWS_LAMBDA_FUNCTION_NAME="twostage",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="2048",
        PYTHONPATH=str(Path(__file__).parent.parent),
        **env,
    )
    with log.open("w") as out:
        client = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "handler.lambda_function.handler"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield stub
    finally:
        client.kill()
        client.wait(10)
        stub.shutdown()


@pytest.fixture(scope="module")
def runtime(artifacts, tmp_path_factory):
    with runtime_client(artifacts, tmp_path_factory.mktemp("ric") / "out.log") as stub:
        yield stub


@pytest.mark.parametrize("event", ["apigw_v1_rest.json", "apigw_v2_http.json", "lambda_function_url.json"])
def test_search_through_awslambdaric(runtime, event):
    kind, result = runtime.invoke(load_event(event, "POST", "/search", {"query": "E240 ThermoLine", "top_k": 3}))
    assert kind == "response", result
    assert result["statusCode"] == 200
    body = json.loads(result["body"])
    assert len(body["results"]) == 3 and body["refused"] is False


def test_bad_input_through_awslambdaric_is_a_4xx_response_not_an_error(runtime):
    kind, result = runtime.invoke(load_event("apigw_v2_http.json", "POST", "/search", {"query": " "}))
    assert kind == "response" and result["statusCode"] == 422
    assert json.loads(result["body"])["details"][0]["field"] == "query"


SEARCH = {"query": "E240 ThermoLine", "top_k": 3}


def test_snapstart_primes_before_the_snapshot_and_serves_after_restore(artifacts, tmp_path):
    log = tmp_path / "out.log"
    with runtime_client(artifacts, log, AWS_LAMBDA_INITIALIZATION_TYPE="snap-start", TWOSTAGE_LOG_LEVEL="info") as stub:
        kind, result = stub.invoke(load_event("apigw_v2_http.json", "POST", "/search", SEARCH))
    assert kind == "response" and result["statusCode"] == 200, result
    assert stub.restores == 1
    output = log.read_text()
    primed, restored = output.find("primed: /search answered"), output.find("restored from a SnapStart snapshot")
    assert 0 <= primed < restored, output


def test_a_function_that_cannot_answer_fails_before_its_snapshot(artifacts, tmp_path):
    # A 5-character query limit makes the priming /search a 422: the version must not be published.
    env = {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start", "TWOSTAGE_MAX_QUERY_CHARS": "5"}
    with runtime_client(artifacts, tmp_path / "out.log", **env) as stub:
        kind, result = stub.invoke(load_event("apigw_v2_http.json", "POST", "/search", SEARCH))
    assert kind == "init_error" and result["type"] == "Runtime.BeforeSnapshotError", result
    assert "422" in result["errorMessage"] and stub.restores == 0


def test_provisioned_concurrency_primes_during_init(artifacts, tmp_path):
    log = tmp_path / "out.log"
    env = {"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency", "TWOSTAGE_LOG_LEVEL": "info"}
    with runtime_client(artifacts, log, **env) as stub:
        kind, result = stub.invoke(load_event("apigw_v2_http.json", "POST", "/search", SEARCH))
    assert kind == "response" and result["statusCode"] == 200
    assert "primed: /search answered" in log.read_text() and stub.restores == 0


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return [line for line in lines if isinstance(line, dict)]


def test_json_logs_and_emf_metrics_under_lambdas_json_log_format(artifacts, tmp_path):
    log = tmp_path / "out.log"
    with runtime_client(artifacts, log, AWS_LAMBDA_LOG_FORMAT="JSON", TWOSTAGE_LOG_LEVEL="info") as stub:
        kind, result = stub.invoke(load_event("apigw_v2_http.json", "POST", "/search", SEARCH))
        refused = stub.invoke(load_event("apigw_v2_http.json", "POST", "/search", SEARCH | {"floor": 1.0}))[1]
    assert kind == "response" and result["statusCode"] == 200 and json.loads(refused["body"])["refused"]
    lines = json_lines(log.read_text())
    requests = [line for line in lines if line.get("message") == "request"]
    assert len(requests) == 2, lines
    first, second = requests
    assert first["requestId"].startswith("req-0-") and second["requestId"].startswith("req-1-")  # Lambda's ids
    assert (first["route"], first["status"], first["refused"], second["refused"]) == ("/search", 200, False, True)
    assert first["candidates"] > 0 and {"embed_ms", "rerank_ms", "total_ms"} <= set(first["timings"])
    assert (first["cold_start"], second["cold_start"]) == (True, False)
    emf = [line for line in lines if "_aws" in line]
    assert len(emf) == 2
    for document in emf:  # the EMF specification: every declared metric is a top-level number
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "twostage" and directive["Dimensions"] == [["route"]]
        assert document["route"] == "/search" and isinstance(document["_aws"]["Timestamp"], int)
        for metric in directive["Metrics"]:
            assert isinstance(document[metric["Name"]], int | float) and metric["Unit"] in ("Milliseconds", "Count")
    assert [d["refusals"] for d in emf] == [0, 1] and [d["cold_starts"] for d in emf] == [1, 0]
