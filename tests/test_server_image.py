"""The GPU image's own environment: exactly Dockerfile.gpu's files and `pip install ".[server]"` (no build
extras) in a fresh venv, then `twostage serve` on loopback (CPU provider) answers /health and /search."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from handler.settings import CASCADE_KEEP
from tests.test_http_guards import free_port, wait_ready

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def image_sources() -> list[str]:
    """What Dockerfile.gpu copies before its pip install (the artifacts come after)."""
    dockerfile = (ROOT / "Dockerfile.gpu").read_text()
    before_install = dockerfile.split("pip install", 1)[0]
    return [p for line in re.findall(r"^COPY (.+)$", before_install, re.M) for p in line.split()[:-1]]


@pytest.fixture(scope="module")
def server_venv(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("image-src")
    for name in image_sources():
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    venv = tmp_path_factory.mktemp("server-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, HNSWLIB_NO_NATIVE="1")
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", ".[server]"]
    result = subprocess.run(install, cwd=source, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def test_the_image_installs_no_build_tools(server_venv):
    python = str(server_venv / "bin" / "python")
    probe = (
        "import importlib.util as u; print([m for m in ('torch', 'onnx', 'optimum', 'transformers') if u.find_spec(m)])"
    )
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_serve_answers_from_the_image_environment(server_venv, cascade_artifacts, tmp_path):
    """With the rerank cascade: the first pass loads and runs here as it was exported (its gate's probes
    give the dev venv's logits) and /search reports it ran."""
    from handler.onnx_model import FirstPass
    from model_export.parity import PROBE_PAIRS

    artifacts = cascade_artifacts
    exported = FirstPass(artifacts / "models" / "first_pass")
    expected = [float(exported.logits(q, [p])[0]) for q, p in PROBE_PAIRS]
    probe = (
        "import json, sys; from handler.onnx_model import FirstPass; from model_export.parity import PROBE_PAIRS; "
        "m = FirstPass(sys.argv[1]); print(json.dumps([float(m.logits(q, [p])[0]) for q, p in PROBE_PAIRS]))"
    )
    here = subprocess.run(
        [str(server_venv / "bin" / "python"), "-c", probe, str(artifacts / "models" / "first_pass")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert here.returncode == 0, here.stderr[-2000:]
    assert json.loads(here.stdout) == pytest.approx(expected, abs=1e-5)
    port = free_port()
    command = [str(server_venv / "bin" / "twostage"), "serve", "--artifacts-dir", str(artifacts)]
    command += ["--port", str(port), "--providers", "cpu"]
    # run outside the checkout, so only the venv's installed copy can be imported
    with (tmp_path / "out.log").open("w") as out:
        env = os.environ | {"TWOSTAGE_CASCADE_FIRST_PASS": "model"}
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        found = httpx.post(f"{url}/search", json={"query": "What does error E240 mean?", "top_k": 3}, timeout=30)
        assert found.status_code == 200 and len(found.json()["results"]) == 3
        assert found.json()["first_pass"] == 100 and CASCADE_KEEP <= found.json()["reranked"] <= 100
    finally:
        process.terminate()
        process.wait(30)


def test_build_commands_name_the_extra_they_need(server_venv, tmp_path):
    twostage = str(server_venv / "bin" / "twostage")
    result = subprocess.run([twostage, "export"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "pip install 'twostage[build]'" in result.stderr
    assert "Traceback" not in result.stderr
    absent = subprocess.run([twostage, "eval"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert absent.returncode == 2 and "invalid choice" in absent.stderr  # not in this image
