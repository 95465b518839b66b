"""The handler under the real Lambda runtime client (awslambdaric), fed by a Runtime API stub on loopback."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import load_event

PREFIX = "/2018-06-01/runtime"


class RuntimeApiStub(ThreadingHTTPServer):
    """The subset of the Lambda Runtime API a runtime client uses: next, response, error, init error."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.events: queue.Queue = queue.Queue()
        self.results: dict[str, tuple[str, dict]] = {}
        self.done = threading.Condition()

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
        if parts == ["init", "error"]:
            self.server.record("init", "init_error", body)
        elif len(parts) == 3 and parts[0] == "invocation":
            self.server.record(parts[1], parts[2], body)
        else:
            return self._reply(404)
        self._reply(202)


@pytest.fixture(scope="module")
def runtime(artifacts):
    stub = RuntimeApiStub()
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    env = dict(
        os.environ,
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{stub.server_port}",
        ARTIFACTS_DIR=str(artifacts),
        AWS_LAMBDA_FUNCTION_NAME="twostage",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="2048",
        PYTHONPATH=str(Path(__file__).parent.parent),
    )
    client = subprocess.Popen(
        [sys.executable, "-m", "awslambdaric", "handler.lambda_function.handler"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield stub
    client.kill()
    client.wait(10)
    stub.shutdown()


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
