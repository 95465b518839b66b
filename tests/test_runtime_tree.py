"""The Lambda image's runtime tree (scripts/build_runtime.sh: runtime dependencies, pruned) serves alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from handler.settings import CASCADE_KEEP

ROOT = Path(__file__).parent.parent
BUDGET_MB = 150  # the pruned tree's budget (docs/results.md, "Runtime install size"), with and without qdrant-client

# `python -S` sees the standard library and PYTHONPATH only: this checkout's code, then the tree.
CHILD = r"""
import json, sys
from handler import lambda_function as lf
from handler.events import http_api_event
response = lf.handler(http_api_event("POST", "/search", {"query": "E240 ThermoLine", "top_k": 3}), None)
sliced = lf.handler(http_api_event("POST", "/search", {"query": "E240", "filter": {"topic": "plants"}}), None)
build_only = [m for m in ("torch", "transformers", "optimum", "tqdm", "huggingface_hub") if m in sys.modules]
print(json.dumps({"status": response["statusCode"], "body": json.loads(response["body"]), "build_only": build_only,
                  "sliced": json.loads(sliced["body"])}))
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
    assert not list((runtime_tree / "onnxruntime" / "capi").glob("libonnxruntime.so*"))
    assert _megabytes(runtime_tree) <= BUDGET_MB


def test_pruned_runtime_tree_answers_search_without_build_dependencies(runtime_tree, artifacts):
    path = f"{ROOT}{os.pathsep}{runtime_tree}"
    env = {"PATH": os.environ["PATH"], "ARTIFACTS_DIR": str(artifacts), "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-S", "-c", CHILD], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == 200 and len(report["body"]["results"]) == 3
    assert report["build_only"] == []
    sliced = report["sliced"]["results"]  # a filtered search from the tree alone
    assert all(r["metadata"]["topic"] == "plants" for r in sliced) and report["sliced"]["candidates"] > 0


CASCADE_CHILD = r"""
import json, sys
from handler import lambda_function as lf
from handler.events import http_api_event
from model_export.parity import PROBE_PAIRS
response = lf.handler(http_api_event("POST", "/search", {"query": "E240 ThermoLine", "recall_k": 40}), None)
first_pass = lf.retriever.rerank.first_pass
probes = [float(first_pass.logits(q, [p])[0]) for q, p in PROBE_PAIRS]
print(json.dumps({"status": response["statusCode"], "body": json.loads(response["body"]), "probes": probes}))
"""


def test_the_runtime_tree_serves_the_cascade_and_its_first_pass_as_exported(runtime_tree, cascade_artifacts):
    """The first pass passed its export gate (parity with PyTorch) in the dev venv; in the tree it must
    give the same logits on the gate's probes, and /search must run the cascade."""
    from handler.onnx_model import FirstPass
    from model_export.parity import PROBE_PAIRS

    exported = FirstPass(cascade_artifacts / "models" / "first_pass")
    expected = [float(exported.logits(q, [p])[0]) for q, p in PROBE_PAIRS]
    path = f"{ROOT}{os.pathsep}{runtime_tree}"
    env = {"PATH": os.environ["PATH"], "ARTIFACTS_DIR": str(cascade_artifacts), "PYTHONPATH": path}
    env["TWOSTAGE_CASCADE_FIRST_PASS"] = "model"
    out = subprocess.run([sys.executable, "-S", "-c", CASCADE_CHILD], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    body = report["body"]
    assert report["status"] == 200 and (body["first_pass"], body["cascade_keep"]) == (40, CASCADE_KEEP)
    assert CASCADE_KEEP <= body["reranked"] <= 40  # the cascade may read on past its keep (cascade_ceiling)
    assert report["probes"] == pytest.approx(expected, abs=1e-5)


QDRANT_CHILD = r"""
import json, sys
from handler import lambda_function as lf
from handler.events import http_api_event
response = lf.handler(http_api_event("POST", "/search", {"query": "E240 ThermoLine", "top_k": 3}), None)
sliced = lf.handler(http_api_event("POST", "/search", {"query": "E240", "filter": {"topic": "plants"}}), None)
loaded = [m for m in ("qdrant_client", "hnswlib", "torch", "transformers") if m in sys.modules]
print(json.dumps({"status": response["statusCode"], "body": json.loads(response["body"]), "loaded": loaded,
                  "sliced": json.loads(sliced["body"])}))
"""


def _megabytes(tree: Path) -> float:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) / 1e6


def test_qdrant_runtime_tree_serves_stage1_from_qdrant(runtime_tree, artifacts, tmp_path_factory):
    """EXTRAS=qdrant: the image for TWOSTAGE_STAGE1=qdrant, which carries no index and needs no hnswlib."""
    from index_build.qdrant_load import load_collection
    from index_build.settings import IndexSettings

    tree = tmp_path_factory.mktemp("runtime-qdrant")
    env = dict(os.environ, PIP=f"{sys.executable} -m pip", EXTRAS="qdrant")
    subprocess.run(
        ["sh", str(ROOT / "scripts" / "build_runtime.sh"), str(tree)], env=env, check=True, capture_output=True
    )
    collection = tmp_path_factory.mktemp("collection")
    load_collection(IndexSettings(artifacts_dir=artifacts, stage1="qdrant", qdrant_path=collection))
    models_only = tmp_path_factory.mktemp("models-only")
    (models_only / "models").symlink_to(artifacts / "models")  # the qdrant image ships no artifacts/index
    env = {
        "PATH": os.environ["PATH"],
        "ARTIFACTS_DIR": str(models_only),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{tree}",
        "TWOSTAGE_STAGE1": "qdrant",
        "TWOSTAGE_QDRANT_PATH": str(collection),
    }
    out = subprocess.run([sys.executable, "-S", "-c", QDRANT_CHILD], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == 200 and len(report["body"]["results"]) == 3
    assert report["loaded"] == ["qdrant_client"]  # no hnswlib, nothing from the build
    sliced = report["sliced"]  # Qdrant filters in the same round trip, from the tree alone
    assert sliced["candidates"] > 0 and all(r["metadata"]["topic"] == "plants" for r in sliced["results"])
    print(f"runtime tree: {_megabytes(runtime_tree):.0f} MB; with qdrant-client: {_megabytes(tree):.0f} MB")
    assert _megabytes(tree) <= BUDGET_MB
