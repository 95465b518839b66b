"""Safe to expose: `twostage serve` on loopback with an API key, body limits and timeouts, JSON only;
the app's 500, 405, 413 (work budget), disconnect and admission behaviour."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from handler.admission import Admission, stop_on_disconnect
from handler.api import create_app
from handler.batching import Overloaded
from handler.errors import Cancelled
from handler.settings import Settings

ROOT = Path(__file__).parent.parent
KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def run_async(coroutine):
    """Run on a private loop: asyncio.run() would leave the main thread without the current loop that
    Mangum (the Lambda tests, later in the session) asks for."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(artifacts: Path, *flags: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """`twostage serve` in a child; its output goes to `log` (a pipe nobody reads would fill and stall it)."""
    command = [sys.executable, "-m", "twostage.cli", "serve", "--artifacts-dir", str(artifacts), *flags]
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    out = log.open("w") if log else subprocess.PIPE
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode() if process.stdout else "server exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server did not start")


@pytest.fixture(scope="module")
def server_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve") / "out.log"


@pytest.fixture(scope="module")
def server(artifacts, server_log):
    port = free_port()
    env = {"TWOSTAGE_API_KEY": KEY, "TWOSTAGE_MAX_BODY_BYTES": "4096", "TWOSTAGE_BODY_TIMEOUT_S": "1"}
    process = serve(artifacts, "--port", str(port), env=env, log=server_log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, port
    finally:
        process.terminate()
        process.wait(30)


def test_api_key_is_required_on_the_work_routes(server):
    url, _ = server
    missing = httpx.post(f"{url}/search", json={"query": "E240"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="twostage"'
    wrong = httpx.post(f"{url}/search", json={"query": "E240"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert wrong.json()["details"][0]["field"] == "authorization"
    assert httpx.post(f"{url}/search", json={"query": "E240"}, headers=AUTH).status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200  # probes need no key
    spec = httpx.get(f"{url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["paths"]["/search"]["post"]["security"] == [{"bearer": []}]


def raw_exchange(port: int, head: bytes, body: bytes = b"", wait: float = 5) -> bytes:
    """Send bytes as they are (a client that lies or stalls) and read one whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head + body)
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < _length(reply):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def _length(reply: bytes) -> int:
    for line in reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server):
    _, port = server
    head = (
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: 200000000\r\n\r\n".encode()
    )
    reply = raw_exchange(port, head)  # no body at all: the answer comes from the headers alone
    assert reply.startswith(b"HTTP/1.1 413") and b"larger than 4096 bytes" in reply


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    url, _ = server

    def chunks():
        yield b'{"query": "'
        for _ in range(100):
            yield b"x" * 100

    response = httpx.post(f"{url}/search", content=chunks(), headers=AUTH | {"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"


def test_a_body_that_never_finishes_times_out(server):
    _, port = server
    head = (
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: 100\r\n\r\n".encode()
    )
    started = time.monotonic()
    reply = raw_exchange(port, head, b'{"query": ', wait=10)
    assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_only_json_is_accepted(server, content_type):
    url, _ = server
    headers = AUTH | ({"Content-Type": content_type} if content_type else {})
    response = httpx.post(f"{url}/search", content=b'{"query": "E240"}', headers=headers)
    assert response.status_code == 415 and response.json()["details"][0]["field"] == "content-type"


def test_a_utf8_bom_is_ignored(server):
    url, _ = server
    body = b"\xef\xbb\xbf" + json.dumps({"query": "E240"}).encode()
    response = httpx.post(f"{url}/search", content=body, headers=AUTH | {"Content-Type": "application/json"})
    assert response.status_code == 200


def test_method_not_allowed_says_what_is(server):
    url, _ = server
    response = httpx.get(f"{url}/search", headers=AUTH)
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_health_shows_no_build_host_paths(server):
    url, _ = server
    body = httpx.get(f"{url}/health").json()
    assert "/" not in body["cross"]["source"] and body["status"] == "ok" and body["problems"] == {}


def test_a_public_host_without_a_key_is_refused(artifacts):
    process = serve(artifacts, "--host", "0.0.0.0", "--port", str(free_port()), env={"TWOSTAGE_API_KEY": ""})
    try:
        output = process.communicate(timeout=60)[0].decode()
    finally:
        process.kill()
    assert process.returncode == 2 and "TWOSTAGE_API_KEY" in output and "--insecure" in output


def test_serve_writes_the_same_json_log_and_emf_lines(server, server_log):
    from tests.test_runtime_client import json_lines

    url, _ = server
    response = httpx.post(f"{url}/search", json={"query": "E240"}, headers=AUTH | {"X-Request-Id": "abc-123"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "abc-123"
    scores = [r["score"] for r in response.json()["results"]]
    assert scores == sorted(scores, reverse=True) and min(scores) >= response.json()["floor"]  # one order, one score
    time.sleep(0.2)
    lines = json_lines(server_log.read_text())
    (line,) = [entry for entry in lines if entry.get("requestId") == "abc-123"]
    assert (line["message"], line["route"], line["status"], line["refused"]) == ("request", "/search", 200, False)
    assert line["candidates"] > 0 and "rerank_ms" in line["timings"] and line["level"] == "INFO"
    # the log is a score trace `twostage calibrate --traces` reads (EMF and other lines are skipped)
    from evaluation.calibrate import best_of_trace

    assert line["best_score"] == pytest.approx(scores[0], abs=1e-6)
    assert line["best_score"] in [best_of_trace(text) for text in server_log.read_text().splitlines()]
    assert any("_aws" in entry and entry["route"] == "/search" for entry in lines)
    unauthorised = [entry for entry in lines if entry.get("status") == 401]
    assert unauthorised and all("timings" not in entry for entry in unauthorised)  # refused before any work


def test_a_public_host_with_insecure_starts(artifacts, tmp_path):
    port = free_port()
    process = serve(artifacts, "--host", "0.0.0.0", "--port", str(port), "--insecure", log=tmp_path / "out.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        process.wait(30)


# -- in process: the app's own mappings ---------------------------------------------------------


def test_an_unexpected_error_is_one_logged_500(retriever, settings, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(retriever, "answer", broken)
    # raise_server_exceptions: had the error escaped (Starlette re-raises it after its 500), this raises
    with caplog.at_level(logging.ERROR), TestClient(create_app(retriever, settings)) as client:
        response = client.post("/search", json={"query": "E240"})
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_the_work_budget_is_a_413_naming_the_field(retriever, settings):
    import dataclasses

    tight = settings.replace(max_rerank_tokens=500)
    budgeted = dataclasses.replace(retriever.rerank, settings=tight.rerank)
    client = TestClient(create_app(dataclasses.replace(retriever, rerank=budgeted, settings=tight), tight))
    search = client.post("/search", json={"query": "E240 error code", "recall_k": 100})
    assert search.status_code == 413 and search.json()["details"][0]["field"] == "recall_k"
    assert "500 tokens" in search.json()["message"]
    rerank = client.post("/rerank", json={"query": "q", "documents": ["word " * 100] * 20})
    assert rerank.status_code == 413 and rerank.json()["details"][0]["field"] == "documents"
    assert client.post("/search", json={"query": "E240", "recall_k": 3}).status_code == 200


def test_a_stopped_request_does_no_more_work(retriever):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match="before stage 1"):
        retriever.search("E240 error", 50, 5, stop=stop)
    with pytest.raises(Cancelled, match="rerank batches"):
        retriever.rerank_documents("q", ["a", "b"], stop=stop)


def test_a_disconnect_sets_the_stop_event():
    from starlette.requests import Request

    messages = [{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0) if messages else await asyncio.sleep(3600)

    async def scenario() -> bool:
        request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
        await request.body()
        async with stop_on_disconnect(request) as stop:
            for _ in range(100):
                if stop.is_set():
                    return True
                await asyncio.sleep(0.01)
        return False

    assert run_async(scenario())


def test_admission_runs_one_lets_some_wait_and_refuses_the_rest():
    async def scenario():
        gate = Admission(running=1, waiting=1)
        release = asyncio.Event()
        order = []

        async def request(name):
            async with gate.slot():
                order.append(name)
                await release.wait()

        first = asyncio.create_task(request("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(request("second"))  # waits
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            async with gate.slot():
                pass
        release.set()
        await asyncio.gather(first, second)
        return order

    assert run_async(scenario()) == ["first", "second"]


def test_settings_reject_a_nonsense_budget():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(max_rerank_tokens=10)


# -- bounded work for bad bodies, and the smaller guards (issue 30) ----------------------------------


def test_a_1mib_rerank_of_integers_is_a_small_4xx(retriever, settings):
    """524k integers as documents: refused by the list's length before any item is validated."""
    body = b'{"query": "q", "documents": [' + b",".join([b"0"] * 524_000) + b"]}"
    assert len(body) <= settings.limits.max_body_bytes
    client = TestClient(create_app(retriever, settings))
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        answer = client.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 422 and len(answer.content) < 64 * 1024, path
        assert answer.json()["details"] == [{"field": "documents", "message": "at most 1000 documents, not 524000"}]


def test_validation_errors_are_capped_with_a_count(retriever, settings):
    client = TestClient(create_app(retriever, settings))
    answer = client.post("/v2/rerank", json={"query": "q", "documents": list(range(1000))})
    details = answer.json()["details"]
    assert answer.status_code == 422 and len(details) == 21
    assert details[0]["field"].startswith("documents.0") and details[-1]["message"].startswith("and ")


def test_json_nested_past_200_levels_is_a_400_on_every_route(retriever, settings):
    client = TestClient(create_app(retriever, settings))
    deep = b"[" * 1000 + b"]" * 1000
    for path in ("/search", "/rerank", "/v1/rerank", "/v2/rerank"):
        answer = client.post(path, content=deep, headers={"content-type": "application/json"})
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_json", path


def test_a_top_k_beyond_the_default_recall_k_raises_it(retriever, settings):
    client = TestClient(create_app(retriever, settings))
    answer = client.post("/search", json={"query": "Veltrazine dose", "top_k": 199, "floor": 0.0})
    assert answer.status_code == 200 and (answer.json()["recall_k"], answer.json()["top_k"]) == (199, 199)
    both = client.post("/search", json={"query": "Veltrazine dose", "top_k": 20, "recall_k": 10})
    assert both.status_code == 422 and both.json()["details"][0]["field"] == "top_k"


@pytest.mark.parametrize("query", ["\u0301", "\ufe0f", "\u034f", " \u0301\ufe0f\u200b ", "\u2800"])
def test_a_query_of_only_marks_or_selectors_is_refused(retriever, settings, query):
    client = TestClient(create_app(retriever, settings))
    for path, body in (("/search", {"query": query}), ("/rerank", {"query": query, "documents": ["a"]})):
        answer = client.post(path, json=body)
        assert answer.status_code == 422 and answer.json()["details"][0]["field"] == "query", (path, query)


def test_a_trailing_slash_is_a_404_not_a_redirect_built_from_host(retriever, settings):
    client = TestClient(create_app(retriever, settings), follow_redirects=False)
    answer = client.post("/search/", json={"query": "E240"}, headers={"host": "evil.example"})
    assert answer.status_code == 404 and "location" not in answer.headers


def test_sigterm_tells_kept_alive_connections_503_and_closes_them(artifacts, tmp_path):
    """After SIGTERM the server drains: a request on an open keep-alive connection gets 503 with
    Retry-After and Connection: close, not a reset; then the process exits."""
    port = free_port()
    process = serve(artifacts, "--port", str(port), "--drain-s", "3", log=tmp_path / "out.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        with httpx.Client(base_url=url) as client:
            assert client.post("/search", json={"query": "E240"}).status_code == 200  # the connection stays open
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            answer = client.post("/search", json={"query": "E240"})
            assert answer.status_code == 503 and answer.headers["connection"] == "close"
            assert answer.headers["retry-after"] == "1" and answer.json()["error"] == "shutting_down"
        assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    finally:
        process.kill()
