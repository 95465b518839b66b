import json
import shutil

import pytest

from handler.errors import IndexMismatchError
from handler.manifest import IndexManifest, read_manifest
from handler.pipeline import Retriever
from handler.settings import Settings
from handler.sparse_index import BM25Index
from tests.test_lambda import invoke


def test_bm25_manifest_records_tokenizer_settings(artifacts):
    bm25 = read_manifest(artifacts / "index", IndexManifest).bm25
    assert bm25.library == "bm25s" and bm25.stemmer == "english" and bm25.stopwords == "en"
    assert bm25.count == read_manifest(artifacts / "index", IndexManifest).count


def test_bm25_keeps_exact_terms(retriever):
    labels, scores = retriever.recall.stage1.bm25.search("E301 firmware", 5)
    chunks = retriever.recall.stage1.fetch(labels)
    assert chunks[0].doc_id.endswith("-e301") and list(scores) == sorted(scores, reverse=True)
    assert len(retriever.recall.stage1.bm25.search("the of and", 5)[0]) == 0  # stopwords only: nothing, not noise


def test_bm25_artifact_from_another_build_is_refused(artifacts, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(artifacts / "index", index)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["count"] += 1
    (index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="BM25 artifact"):
        BM25Index(index, read_manifest(index, IndexManifest))


def test_index_without_bm25_serves_dense_and_names_the_mode_field(artifacts, tmp_path, settings):
    from mangum import Mangum

    from handler.api import create_app

    root = tmp_path / "art"
    shutil.copytree(artifacts / "models", root / "models")
    shutil.copytree(artifacts / "index", root / "index")
    manifest = json.loads((root / "index" / "manifest.json").read_text())
    manifest["bm25"] = None
    (root / "index" / "manifest.json").write_text(json.dumps(manifest))
    dense_only = Settings(artifacts_dir=root)
    retriever = Retriever.from_settings(dense_only)
    assert retriever.recall.modes == {"dense"} and retriever.recall.default_mode == "dense"
    handler = Mangum(create_app(retriever, dense_only), lifespan="off")
    status, body, _ = invoke(handler, "apigw_v2_http.json", "POST", "/search", {"query": "q", "mode": "bm25"})
    assert status == 422 and body["details"][0]["field"] == "mode"
    status, body, _ = invoke(handler, "apigw_v2_http.json", "POST", "/search", {"query": "q"})
    assert status == 200 and body["mode"] == "dense"
