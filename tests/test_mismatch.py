"""An index built with one encoder is refused when served with another, naming both hashes."""

import json
import shutil

import pytest

from handler.errors import IndexMismatchError
from handler.manifest import IndexManifest, ModelManifest, read_manifest
from handler.pipeline import Retriever
from handler.settings import Settings
from index_build.build import build_index
from index_build.settings import IndexSettings
from model_export.export import export_all
from model_export.settings import ExportSettings
from tests.conftest import make_tiny_bert


def test_index_from_another_encoder_is_refused(artifacts, tmp_path):
    other = tmp_path / "other"
    tiny_bi = make_tiny_bert(tmp_path / "tiny-bi", for_cross=False, seed=1)
    export_all(ExportSettings(models_dir=other / "models", which="bi", bi_model=str(tiny_bi), quantize="none"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"passage {i}"}) + "\n" for i in range(5)))
    build_index(IndexSettings(artifacts_dir=other, corpus=corpus))

    mixed = tmp_path / "mixed"
    shutil.copytree(artifacts / "models", mixed / "models")
    shutil.copytree(other / "index", mixed / "index")
    with pytest.raises(IndexMismatchError) as refused:
        Retriever.from_settings(Settings(artifacts_dir=mixed))
    index_sha = read_manifest(other / "index", IndexManifest).encoder_sha256
    served_sha = read_manifest(artifacts / "models" / "bi", ModelManifest).sha256
    assert index_sha != served_sha
    assert index_sha in str(refused.value) and served_sha in str(refused.value)


def test_missing_artifacts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="twostage export"):
        Retriever.from_settings(Settings(artifacts_dir=tmp_path))
