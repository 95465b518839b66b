"""The Lambda image's runtime tree (scripts/build_runtime.sh: runtime dependencies, pruned) serves alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

# `python -S` sees the standard library and PYTHONPATH only: this checkout's code, then the tree.
CHILD = r"""
import json, sys
from handler import lambda_function as lf
from handler.events import http_api_event
response = lf.handler(http_api_event("POST", "/search", {"query": "E240 ThermoLine", "top_k": 3}), None)
build_only = [m for m in ("torch", "transformers", "optimum", "tqdm", "huggingface_hub") if m in sys.modules]
print(json.dumps({"status": response["statusCode"], "body": json.loads(response["body"]), "build_only": build_only}))
"""


@pytest.fixture(scope="module")
def runtime_tree(tmp_path_factory):
    tree = tmp_path_factory.mktemp("runtime")
    env = dict(os.environ, PIP=f"{sys.executable} -m pip")
    build = ["sh", str(ROOT / "scripts" / "build_runtime.sh"), str(tree)]
    subprocess.run(build, env=env, check=True, capture_output=True)
    return tree


def test_pruned_runtime_tree_has_no_build_tools(runtime_tree):
    installed = {p.name for p in runtime_tree.iterdir()}
    assert {"onnxruntime", "tokenizers", "numpy", "starlette", "mangum", "handler"} <= installed
    assert not installed & {"torch", "pip", "tqdm", "huggingface_hub", "training", "evaluation", "model_export"}


def test_pruned_runtime_tree_answers_search_without_build_dependencies(runtime_tree, artifacts):
    path = f"{ROOT}{os.pathsep}{runtime_tree}"
    env = {"PATH": os.environ["PATH"], "ARTIFACTS_DIR": str(artifacts), "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-S", "-c", CHILD], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == 200 and len(report["body"]["results"]) == 3
    assert report["build_only"] == []
