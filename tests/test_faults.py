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
try:  # "-": ARTIFACTS_DIR from the environment, as Lambda gives it
    settings = Settings(verify=sys.argv[2], **({} if sys.argv[1] == "-" else {"artifacts_dir": sys.argv[1]}))
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


def load(artifacts: Path | str, verify: str = "quick", wrap: tuple = (), env: dict | None = None) -> dict:
    out = subprocess.run(
        [*wrap, sys.executable, "-c", CHILD, str(artifacts), verify],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
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


def record_as_is(directory: Path) -> None:
    """The manifest in `directory` records its files as they are now (an attacker's or a careless copy's
    manifest): the checks that read the files themselves must stand on their own."""
    from handler.verify import describe_files

    manifest = directory / "manifest.json"
    data = json.loads(manifest.read_text())
    skip = (data["onnx_file"],) if "onnx_file" in data else ()
    data["files"] = {name: r.model_dump() for name, r in describe_files(directory, skip).items()}
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
    init_fails(load(copy), "index.bin", f"holds {count} vectors")


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_damaged_index_bin(copy, damage):
    path = copy / "index" / "index.bin"
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    rewrite(path, data[: len(data) // 2] if damage == "truncated" else rng.bytes(len(data)))
    record_as_is(copy / "index")
    init_fails(load(copy), "index.bin")


def test_truncated_doc_store(copy):
    path = copy / "index" / "docstore.sqlite"
    rewrite(path, path.read_bytes()[: path.stat().st_size // 2])
    record_as_is(copy / "index")
    init_fails(load(copy), "docstore.sqlite", "truncated")


def test_doc_store_with_fewer_rows_than_the_index(copy):
    import sqlite3

    path = copy / "index" / "docstore.sqlite"
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM chunks WHERE label = (SELECT max(label) FROM chunks)")
    db.close()
    record_as_is(copy / "index")
    init_fails(load(copy), "docstore.sqlite", "chunks")


def test_doc_store_damaged_inside_is_caught_by_its_recorded_hash(copy):
    flip_middle_byte(copy / "index" / "docstore.sqlite")
    quick = load(copy)
    assert quick["init"] != "ok" or quick["search"] in (200, 503), quick  # quick: sizes only; no crash
    init_fails(load(copy, "full"), "docstore.sqlite", "sha256")


def test_bm25_array_truncated(copy):
    path = copy / "index" / "bm25" / "indices.csc.index.npy"
    rewrite(path, path.read_bytes()[:200])
    record_as_is(copy / "index")
    init_fails(load(copy), "bm25")


def test_bm25_postings_out_of_range_answer_503_or_fail_full_init(copy):
    path = copy / "index" / "bm25" / "indices.csc.index.npy"
    indices = np.load(path)
    indices[:] = 10**6  # every posting points past the chunks
    path.unlink()
    np.save(path, indices)
    record_as_is(copy / "index")
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


# -- what the file records and the graph check catch ---------------------------------------------


def hnsw_layout(path: Path):
    from handler.hnsw_file import HEADER, read_header

    header = read_header(path)
    return header, HEADER.size, HEADER.size + header.count * header.bytes_per_element


def first_upper_list(path: Path, data: bytes) -> int:
    """The byte offset of the first element's level-1 list (its count word)."""
    header, _, offset = hnsw_layout(path)
    for _ in range(header.count):
        length = int.from_bytes(data[offset : offset + 4], "little")
        if length:
            return offset + 4
        offset += 4
    raise AssertionError("no element above level 0")


def patched(data: bytes, offset: int, value: int, size: int = 4) -> bytes:
    return data[:offset] + value.to_bytes(size, "little", signed=value < 0) + data[offset + size :]


def damage_entry_point(path: Path, data: bytes) -> bytes:
    return patched(data, 52, 1_000_000)


def damage_max_level(path: Path, data: bytes) -> bytes:
    return patched(data, 48, 1000)


def damage_level0_neighbour(path: Path, data: bytes) -> bytes:
    header, start, _ = hnsw_layout(path)
    return patched(data, start + 4, header.count + 7)  # element 0's first neighbour (every element has one)


def damage_upper_neighbour(path: Path, data: bytes) -> bytes:
    return patched(data, first_upper_list(path, data) + 4, 1_000_000)


def damage_labels(path: Path, data: bytes) -> bytes:
    header, start, _ = hnsw_layout(path)
    return patched(data, start + header.label_offset, 1, 8)  # element 0 takes element 1's label


GRAPH_DAMAGE = {
    "entry point 1,000,000": (damage_entry_point, "entry point"),
    "max level 1000": (damage_max_level, "max level"),
    "a level-0 neighbour out of range": (damage_level0_neighbour, "level-0 neighbour id"),
    "an upper-level neighbour out of range": (damage_upper_neighbour, "upper neighbour id"),
    "two elements with one label": (damage_labels, "labels"),
}


@pytest.mark.parametrize("damage", list(GRAPH_DAMAGE))
def test_a_graph_that_would_kill_the_process_fails_init_even_when_recorded(copy, damage):
    """Right size, manifest re-recorded to match: only the graph check stands between it and a SIGSEGV."""
    change, words = GRAPH_DAMAGE[damage]
    path = copy / "index" / "index.bin"
    rewrite(path, change(path, path.read_bytes()))
    record_as_is(copy / "index")
    init_fails(load(copy), "index.bin", words)


def test_a_graph_damaged_under_its_record_fails_the_sampled_checksum(copy):
    path = copy / "index" / "index.bin"
    rewrite(path, damage_entry_point(path, path.read_bytes()))
    init_fails(load(copy), "index.bin", "sampled sha256")


def test_an_index_of_the_same_size_from_another_build_fails_quick_init(copy):
    """Every vector under another label (what another corpus's index of the same size looks like)."""
    import hnswlib

    path = copy / "index" / "index.bin"
    manifest = json.loads((copy / "index" / "manifest.json").read_text())
    index = hnswlib.Index(space="cosine", dim=manifest["dims"])
    index.load_index(str(path))
    vectors = index.get_items(list(range(manifest["count"])), return_type="numpy")
    other = hnswlib.Index(space="cosine", dim=manifest["dims"])
    other.init_index(
        max_elements=manifest["count"], M=manifest["M"], ef_construction=manifest["ef_construction"], random_seed=0
    )
    other.add_items(vectors[::-1], np.arange(manifest["count"]), num_threads=1)
    path.unlink()
    other.save_index(str(path))
    assert (
        path.stat().st_size == json.loads((copy / "index" / "manifest.json").read_text())["files"]["index.bin"]["bytes"]
    )
    init_fails(load(copy), "index.bin", "sampled sha256")


def test_random_damage_to_the_graph_never_kills_the_process(copy, tmp_path):
    """Bytes of the link lists overwritten at random, the manifest re-recorded each time: every load, in
    one process, fails init naming index.bin or answers; the process never dies by a signal."""
    path = copy / "index" / "index.bin"
    original = path.read_bytes()
    header, start, _ = hnsw_layout(path)
    rng = np.random.default_rng(30)
    for trial in range(12):
        data = bytearray(original)
        for _ in range(8):
            element = int(rng.integers(header.count))
            slot = int(rng.integers(header.max_m0 + 1))
            offset = start + element * header.bytes_per_element + 4 * slot
            data[offset : offset + 4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
        rewrite(path, bytes(data))
        record_as_is(copy / "index")
        report = load(copy)  # a signal would fail load()'s returncode check
        assert report["init"] in ("ok", "ArtifactError"), (trial, report)
        assert report["init"] == "ok" or "index.bin" in report["message"], (trial, report)


def test_a_doc_store_with_shuffled_labels_fails_init(copy):
    import sqlite3

    path = copy / "index" / "docstore.sqlite"
    rewrite(path, path.read_bytes())
    with sqlite3.connect(path) as db:
        count = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        db.execute("UPDATE chunks SET label = -1 - label")
        db.execute(f"UPDATE chunks SET label = ((-1 - label) + 1) % {count}")
    db.close()
    init_fails(load(copy), "docstore.sqlite")
    init_fails(load(copy, "full"), "docstore.sqlite")


def test_bm25_files_of_another_corpus_fail_init(copy, tmp_path):
    from index_build.build import build_index
    from index_build.settings import IndexSettings

    corpus = tmp_path / "other.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"gizmo number {i} hums"}) + "\n" for i in range(30)))
    build_index(IndexSettings(artifacts_dir=copy, corpus=corpus, index_path=tmp_path / "other"))
    shutil.rmtree(copy / "index" / "bm25")
    shutil.copytree(tmp_path / "other" / "bm25", copy / "index" / "bm25")
    init_fails(load(copy), "bm25")


def test_an_index_without_file_records_is_refused_with_the_way_out(copy):
    edit_json(copy / "index" / "manifest.json", files=None)
    init_fails(load(copy), "manifest.json", "twostage index", "twostage verify --record")


def test_a_tokenizer_with_swapped_ids_fails_init(copy):
    """Same size, two ids swapped: every query embeds differently, only a checksum can tell."""
    path = copy / "models" / "bi" / "tokenizer.json"
    text = path.read_bytes()
    swapped = text.replace(b'"the": 1996', b'"the": 1998').replace(b'"and": 1998', b'"and": 1996')
    assert swapped != text and len(swapped) == len(text)
    rewrite(path, swapped)
    init_fails(load(copy), "tokenizer.json", "sha256")


def test_another_models_tokenizer_fails_init(copy, tmp_path):
    from tokenizers import BertWordPieceTokenizer

    other = BertWordPieceTokenizer()
    other.train_from_iterator(["another model's vocabulary, learnt from a few words of text"] * 10, vocab_size=200)
    other.save(str(tmp_path / "tokenizer.json"))
    rewrite(copy / "models" / "bi" / "tokenizer.json", (tmp_path / "tokenizer.json").read_bytes())
    init_fails(load(copy), "tokenizer.json")


def test_a_model_manifest_without_file_records_is_refused(copy):
    edit_json(copy / "models" / "cross" / "manifest.json", files=None)
    init_fails(load(copy), "cross", "manifest.json", "twostage export")


def test_a_zero_byte_tokenizer_fails_init_naming_it(copy):
    rewrite(copy / "models" / "bi" / "tokenizer.json", b"")
    record_as_is(copy / "models" / "bi")
    init_fails(load(copy), "tokenizer.json", "not a tokenizer")


def test_an_invalid_config_fails_init_naming_it(copy):
    rewrite(copy / "models" / "cross" / "config.json", b"{not json")
    record_as_is(copy / "models" / "cross")
    init_fails(load(copy), "config.json", "JSON")


def test_an_onnx_file_that_does_not_parse_but_matches_its_record(copy):
    from handler.manifest import sha256_file

    path = copy / "models" / "cross" / "model.onnx"
    rewrite(path, b"this is not a protobuf " * 100)
    edit_json(copy / "models" / "cross" / "manifest.json", sha256=sha256_file(path), size_bytes=path.stat().st_size)
    init_fails(load(copy), "model.onnx", "cannot load")


# A manifest value the runtime cannot serve: init fails naming the file and the field.
CROSS, INDEX = "models/cross/manifest.json", "index/manifest.json"
MANIFEST_VALUES = {
    "calibration a NaN": (CROSS, {"calibration": {"platt": {"a": float("nan"), "b": 0.0}}}, "calibration.platt.a"),
    "calibration c inf": (
        CROSS,
        {"calibration": {"platt_cosine": {"a": 1.0, "b": 0.0, "c": float("inf")}}},
        "calibration.platt_cosine.c",
    ),
    "calibration a a string": (CROSS, {"calibration": {"platt": {"a": "0.2", "b": 0.0}}}, "calibration.platt.a"),
    "floor NaN": (CROSS, {"calibration": {"floor": float("nan")}}, "calibration.floor"),
    "floor 7": (CROSS, {"calibration": {"floor": 7}}, "calibration.floor"),
    "an unknown calibration key": (CROSS, {"calibration": {"flor": 0.2}}, "calibration.flor"),
    "calibration not an object": (CROSS, {"calibration": [0.2]}, "calibration"),
    "max_length -5": (CROSS, {"max_length": -5}, "max_length"),
    "max_length 2.5": (CROSS, {"max_length": 2.5}, "max_length"),
    "max_length 10^6": (CROSS, {"max_length": 10**6}, "max_length"),
    "max_length 0": (CROSS, {"max_length": 0}, "max_length"),
    "a NUL byte in onnx_file": (CROSS, {"onnx_file": "model\u0000.onnx"}, "onnx_file"),
    "space l2": (INDEX, {"space": "l2"}, "space"),
    "ef -1": (INDEX, {"ef": -1}, "ef"),
    "bm25 stopwords 42": (INDEX, {"bm25": "stopwords=42"}, "bm25.stopwords"),
    "an unknown bm25 stemmer": (INDEX, {"bm25": "stemmer=klingon"}, "bm25.stemmer"),
}


@pytest.mark.parametrize("case", list(MANIFEST_VALUES))
def test_a_manifest_value_that_cannot_be_served_fails_init_naming_it(copy, case):
    where, change, field = MANIFEST_VALUES[case]
    path = copy / where
    data = json.loads(path.read_text())
    if isinstance(change.get("bm25"), str):  # one key of the BM25 record
        key, value = change["bm25"].split("=")
        data["bm25"][key] = int(value) if value.isdigit() else value
    else:
        data.update(change)
    if "max_length" in change:  # without config.json the positions cannot bound it: the range must
        (copy / "models" / "cross" / "config.json").unlink()
        data["files"].pop("config.json")
    rewrite(path, json.dumps(data).encode())
    init_fails(load(copy), path.name, field)


def test_a_symlink_loop_fails_init_naming_the_file(copy):
    path = copy / "index" / "docstore.sqlite"
    path.unlink()
    path.symlink_to(path)
    init_fails(load(copy), "docstore.sqlite")


def test_an_artifacts_dir_that_is_not_utf8_fails_naming_the_setting(artifacts, tmp_path):
    target = os.fsencode(tmp_path) + b"/art\xff"
    shutil.copytree(artifacts, os.fsdecode(target), copy_function=os.link)
    report = load("-", env={"ARTIFACTS_DIR": os.fsdecode(target)})
    init_fails(report, "artifacts_dir", "UTF-8")
