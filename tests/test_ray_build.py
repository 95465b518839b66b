"""`twostage index --engine ray` on a real local Ray (2 CPUs): the same artifact as the local engine,
served by the handler; re-indexing embeds only what changed; bad shards are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

SAMPLE = Path(__file__).parents[1] / "sample_data" / "corpus.jsonl"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _settings(artifacts: Path, root: Path, **more):
    from index_build.settings import IndexSettings

    if not (root / "models").exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / "models").symlink_to(artifacts / "models")
    return IndexSettings(artifacts_dir=root, **more)


def _chunks_and_vectors(index_dir: Path, artifacts: Path) -> dict:
    from handler.local_stage1 import LocalStage1
    from handler.manifest import ModelManifest, read_manifest

    store = LocalStage1.load(index_dir, read_manifest(artifacts / "models" / "bi", ModelManifest), False)
    chunks = store.fetch(list(range(len(store))))
    vectors = store.index.index.get_items(list(range(len(store))), return_type="numpy")
    return {(c.doc_id, c.chunk): (c.title, c.text, c.metadata, v) for c, v in zip(chunks, vectors, strict=True)}


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_ray_build_is_the_local_artifact(local_ray, artifacts, tmp_path):
    from handler.pipeline import Retriever
    from handler.settings import Settings
    from index_build.build import build_index

    manifest = build_index(_settings(artifacts, tmp_path, engine="ray", actors=2))
    assert manifest.build["engine"] == "ray" and manifest.build["embedded"] == manifest.count
    assert manifest.build["threads_per_actor"] == 1 and manifest.build["cpus_per_actor"] == 0.375  # reads keep a CPU
    assert manifest.build["embed_batch_size"] == 1  # int8: each chunk alone, so its vector has no neighbours
    ours, theirs = (
        _chunks_and_vectors(tmp_path / "index", artifacts),
        _chunks_and_vectors(artifacts / "index", artifacts),
    )
    assert ours.keys() == theirs.keys()
    for key, (title, text, metadata, vector) in ours.items():
        assert (title, text, metadata) == theirs[key][:3]
        np.testing.assert_array_equal(vector, theirs[key][3], err_msg=str(key))  # 1 ORT thread here, 2 there

    retriever = Retriever.from_settings(Settings(artifacts_dir=tmp_path))
    answer = retriever.recall("What does error E240 mean?", 10, "hybrid").chunks
    assert answer and retriever.recall.stage1.describe()["chunks"] == manifest.count


def test_ray_reindex_embeds_only_what_changed(local_ray, artifacts, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from handler.pipeline import Retriever
    from handler.settings import Settings
    from index_build.build import build_index

    docs = [json.loads(line) for line in SAMPLE.open()]
    first = build_index(_settings(artifacts, tmp_path, engine="ray", corpus=_write(tmp_path / "v1.jsonl", docs)))

    changed = [dict(d) for d in docs[3:]]  # three deleted
    changed[0]["text"] = "Zorblat tablets must be stored below 25 °C, away from light."
    changed.append({"id": "new-doc", "title": "Quenthor battery", "text": "The Quenthor battery lasts 9 hours."})
    for d in changed:  # Parquet wants one metadata type: as JSON text, which the reader turns back into fields
        d["metadata"] = json.dumps(d.get("metadata") or {})
    parquet_dir = tmp_path / "v2"
    parquet_dir.mkdir()
    pq.write_table(pa.Table.from_pylist(changed[:100]), parquet_dir / "a.parquet")
    pq.write_table(pa.Table.from_pylist(changed[100:]), parquet_dir / "b.parquet")
    second = build_index(
        _settings(artifacts, tmp_path, engine="ray", corpus=parquet_dir, reuse_embeddings=tmp_path / "embeddings")
    )
    assert second.build["embedded"] == 2 and second.build["reused"] == second.count - 2
    assert second.documents == len(changed) and second.count < first.count
    assert len(list((tmp_path / "embeddings").glob("run-*"))) == 1  # the new run holds everything

    retriever = Retriever.from_settings(Settings(artifacts_dir=tmp_path))
    assert retriever.recall("Quenthor battery hours", 5, "bm25").chunks[0].doc_id == "new-doc"
    assert retriever.recall("Zorblat stored below", 5, "bm25").chunks[0].doc_id == changed[0]["id"]
    gone = {d["id"] for d in docs[:3]}
    assert not gone & {c.doc_id for c in retriever.recall(docs[0]["title"], 100, "hybrid").chunks}


def test_local_engine_reuses_embedding_shards(artifacts, tmp_path):
    from index_build.build import build_index

    docs = [json.loads(line) for line in SAMPLE.open()]
    shards = tmp_path / "shards"
    first = build_index(
        _settings(artifacts, tmp_path, corpus=_write(tmp_path / "v1.jsonl", docs), embeddings_dir=shards)
    )
    assert first.build["embedded"] == first.count and list(shards.glob("*.parquet"))
    docs[5]["text"] += " Also available as a syrup."
    again = build_index(
        _settings(artifacts, tmp_path, corpus=_write(tmp_path / "v2.jsonl", docs), reuse_embeddings=shards)
    )
    assert again.build["embedded"] == 1 and again.build["reused"] == again.count - 1
    fresh = tmp_path / "fresh"
    build_index(_settings(artifacts, fresh, corpus=tmp_path / "v2.jsonl"))
    incremental, full = (
        _chunks_and_vectors(tmp_path / "index", artifacts),
        _chunks_and_vectors(fresh / "index", artifacts),
    )
    assert incremental.keys() == full.keys()
    for key, (*_, vector) in incremental.items():  # reused or embedded, a chunk's vector is the full build's
        np.testing.assert_array_equal(vector, full[key][3], err_msg=str(key))


def test_a_bad_shard_is_named(artifacts, tmp_path):
    from handler.manifest import ModelManifest, read_manifest
    from index_build.build import build_index
    from index_build.shards import ShardError, load_reusable, read_batches, shard_files

    shards = tmp_path / "shards"
    build_index(_settings(artifacts, tmp_path, embeddings_dir=shards))
    encoder = read_manifest(artifacts / "models" / "bi", ModelManifest)
    (good,) = shard_files(shards)

    truncated = shards / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ShardError, match="truncated.parquet: unreadable"):
        load_reusable([shards], encoder)
    truncated.unlink()

    other = encoder.model_copy(update={"sha256": "f" * 64})
    assert len(load_reusable([shards], other)) == 0  # another encoder's vectors are simply not reusable
    with pytest.raises(ShardError, match=f"{good.name}: embedded with encoder sha256"):
        next(read_batches([good], other))  # but assembling from them is an error naming the shard
    with pytest.raises(ShardError, match="384-d vectors, the bi-encoder embeds 768-d"):
        load_reusable([shards], encoder.model_copy(update={"dims": 768}))
    shutil.rmtree(shards)
