"""The `[distributed]` extra alone: `pip install ".[distributed]"` in a fresh venv (no build extras, no
torch) runs `twostage index --engine ray` on a local Ray, outside the checkout, as a cluster's image would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "sample_data" / "corpus.jsonl"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def distributed_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("distributed-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{ROOT}[distributed]"]
    env = dict(os.environ, HNSWLIB_NO_NATIVE="1")
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def test_the_extra_installs_no_build_tools(distributed_venv):
    probe = "import importlib.util as u; print([m for m in ('torch', 'optimum', 'transformers') if u.find_spec(m)])"
    python = str(distributed_venv / "bin" / "python")
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_ray_index_builds_from_the_extra_alone(distributed_venv, artifacts, tmp_path):
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "models").symlink_to(artifacts / "models")
    command = [str(distributed_venv / "bin" / "twostage"), "index", "--engine", "ray", "--actors", "1"]
    command += ["--artifacts-dir", str(root), "--corpus", str(SAMPLE)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    # outside the checkout, so only the venv's installed copy can be imported
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((root / "index" / "manifest.json").read_text())
    assert manifest["build"]["engine"] == "ray" and manifest["count"] == manifest["build"]["embedded"] > 200
