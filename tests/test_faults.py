"""Fault injection: each damaged or mismatched artifact fails init naming the file and the disagreement,
or (damage the quick checks cannot see) the request answers 503 and /health says broken. Never an
abort, never a silent wrong answer. Each case loads in a child process, so an abort would show as one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow

CHILD = r"""
import json, sys
from handler.settings import Settings
from handler.pipeline import Retriever
settings = Settings(artifacts_dir=sys.argv[1], verify=sys.argv[2])
try:
    retriever = Retriever.from_settings(settings)
except Exception as error:
    print(json.dumps({"init": type(error).__name__, "message": str(error)}))
    sys.exit(0)
from starlette.testclient import TestClient
from handler.api import create_app
client = TestClient(create_app(retriever, settings))
found = client.post("/search", json={"query": "What does error E240 mean?", "top_k": 3})
health = client.get("/health")
ids = [r["id"] for r in found.json().get("results", [])]
print(json.dumps({"init": "ok", "search": found.status_code, "ids": ids, "health": health.status_code}))
"""


def load(artifacts: Path, verify: str = "quick", wrap: tuple = ()) -> dict:
    out = subprocess.run(
        [*wrap, sys.executable, "-c", CHILD, str(artifacts), verify],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.returncode == 0, f"the process died ({out.returncode}): {out.stderr[-2000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def copy(artifacts, tmp_path):
    """A copy of the artifacts to damage (hard links: `rewrite` replaces a file instead of editing it)."""
    target = tmp_path / "artifacts"
    shutil.copytree(artifacts, target, copy_function=os.link)
    return target


@pytest.fixture(scope="module")
def healthy(artifacts) -> dict:
    return load(artifacts)


def rewrite(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    rewrite(path, json.dumps(data).encode())


def forget_file_record(root: Path) -> None:
    """An index from before `files` was recorded: the deeper checks must stand on their own."""
    manifest = root / "index" / "manifest.json"
    data = json.loads(manifest.read_text())
    data.pop("files", None)
    rewrite(manifest, json.dumps(data).encode())


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rewrite(path, bytes(data))


def test_the_healthy_copy_answers(healthy):
    assert healthy == {"init": "ok", "search": 200, "ids": healthy["ids"], "health": 200} and len(healthy["ids"]) == 3


def init_fails(report: dict, *words: str) -> None:
    assert report["init"] != "ok", report
    for word in words:
        assert word in report["message"], report


def test_index_manifest_with_larger_dims_fails_init_instead_of_aborting(copy):
    edit_json(copy / "index" / "manifest.json", dims=768)
    init_fails(load(copy), "768")


def test_index_file_with_other_dims_than_both_manifests_fails_init(copy):
    edit_json(copy / "index" / "manifest.json", dims=768)
    edit_json(copy / "models" / "bi" / "manifest.json", dims=768)
    init_fails(load(copy), "index.bin", "384-d", "768")


def test_smaller_dims_fail_init_instead_of_wrong_results(copy):
    edit_json(copy / "index" / "manifest.json", dims=128)
    init_fails(load(copy), "128")


def test_index_with_fewer_elements_than_its_manifest(copy):
    count = json.loads((copy / "index" / "manifest.json").read_text())["count"]
    edit_json(copy / "index" / "manifest.json", count=count + 5)
    forget_file_record(copy)
    init_fails(load(copy), "index.bin", f"holds {count} vectors")


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_damaged_index_bin(copy, damage):
    path = copy / "index" / "index.bin"
    data = path.read_bytes()
    forget_file_record(copy)
    rng = np.random.default_rng(0)
    rewrite(path, data[: len(data) // 2] if damage == "truncated" else rng.bytes(len(data)))
    init_fails(load(copy), "index.bin")


def test_truncated_doc_store(copy):
    path = copy / "index" / "docstore.sqlite"
    forget_file_record(copy)
    rewrite(path, path.read_bytes()[: path.stat().st_size // 2])
    init_fails(load(copy), "docstore.sqlite", "truncated")


def test_doc_store_with_fewer_rows_than_the_index(copy):
    import sqlite3

    path = copy / "index" / "docstore.sqlite"
    forget_file_record(copy)
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM chunks WHERE label = (SELECT max(label) FROM chunks)")
    db.close()
    init_fails(load(copy), "docstore.sqlite", "chunks")


def test_doc_store_damaged_inside_is_caught_by_its_recorded_hash(copy):
    flip_middle_byte(copy / "index" / "docstore.sqlite")
    quick = load(copy)
    assert quick["init"] != "ok" or quick["search"] in (200, 503), quick  # quick: sizes only; no crash
    init_fails(load(copy, "full"), "docstore.sqlite", "sha256")


def test_bm25_array_truncated(copy):
    path = copy / "index" / "bm25" / "indices.csc.index.npy"
    forget_file_record(copy)
    rewrite(path, path.read_bytes()[:200])
    init_fails(load(copy), "bm25")


def test_bm25_postings_out_of_range_answer_503_or_fail_full_init(copy):
    path = copy / "index" / "bm25" / "indices.csc.index.npy"
    forget_file_record(copy)
    indices = np.load(path)
    indices[:] = 10**6  # every posting points past the chunks
    path.unlink()
    np.save(path, indices)
    quick = load(copy)
    assert quick == {"init": "ok", "search": 503, "ids": [], "health": 503}, quick
    init_fails(load(copy, "full"), "bm25", "posting ids")


def test_max_length_beyond_the_models_positions(copy):
    edit_json(copy / "models" / "bi" / "manifest.json", max_length=1024)
    init_fails(load(copy), "max_length 1024", "512 positions")


def test_model_file_that_differs_from_its_manifest(copy):
    flip_middle_byte(copy / "models" / "bi" / "model.onnx")
    init_fails(load(copy), "model.onnx", "sha256")


def test_truncated_model_file(copy):
    path = copy / "models" / "cross" / "model.onnx"
    rewrite(path, path.read_bytes()[:1000])
    init_fails(load(copy), "model.onnx", "bytes")


def test_manifest_path_outside_its_directory(copy):
    edit_json(copy / "models" / "bi" / "manifest.json", onnx_file="../../../../etc/passwd")
    init_fails(load(copy), "outside")


@pytest.mark.parametrize("missing", ["index/index.bin", "models/cross/tokenizer.json", "index/docstore.sqlite"])
def test_missing_files(copy, missing):
    (copy / missing).unlink()
    init_fails(load(copy), Path(missing).name)


def test_swapped_models(copy):
    bi, cross = copy / "models" / "bi", copy / "models" / "cross"
    bi.rename(copy / "models" / "tmp")
    cross.rename(bi)
    (copy / "models" / "tmp").rename(cross)
    init_fails(load(copy), "manifest.json", "model where a")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_file_owned_by_another_user(copy):
    store = copy / "index" / "docstore.sqlite"
    rewrite(store, store.read_bytes())  # its own inode, so the shared original keeps its owner and mode
    os.chown(store, 65534, 65534)
    store.chmod(0o600)
    # root without the capabilities that bypass file permissions reads as an ordinary user does
    init_fails(load(copy, wrap=["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]), "docstore.sqlite")


def test_artifacts_dir_with_uri_characters_stays_read_only(artifacts, tmp_path, healthy):
    target = tmp_path / "odd#dir?mode=rwc"
    shutil.copytree(artifacts, target, copy_function=os.link)
    before = sorted(p.name for p in (target / "index").iterdir())
    assert load(target) == healthy
    assert sorted(p.name for p in (target / "index").iterdir()) == before  # no empty database created
