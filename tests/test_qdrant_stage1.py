"""Stage 1 on Qdrant (qdrant-client's local mode, a real client; the cluster's wire protocol is only
exercised for failures, against loopback sockets): the same answers as the local store, the encoder
binding, incremental loads, and 503 instead of a hang or a 500 when the cluster does not answer."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.testclient import TestClient

pytest.importorskip("qdrant_client")

QUERIES = ["Veltrazine dose for children", "what does error E240 mean", "how do I reset the thermostat"]


def _settings(artifacts: Path, **qdrant):
    from handler.settings import Settings

    return Settings(artifacts_dir=artifacts, stage1="qdrant", **qdrant) if qdrant else Settings(artifacts_dir=artifacts)


def _client(settings) -> TestClient:
    from handler.api import create_app
    from handler.pipeline import Retriever

    return TestClient(create_app(Retriever.from_settings(settings), settings))


def _load(artifacts: Path, path: Path, corpus: Path | None = None, **more) -> dict:
    from index_build.qdrant_load import load_collection
    from index_build.settings import IndexSettings

    extra = {"corpus": corpus} if corpus else {}
    return load_collection(IndexSettings(artifacts_dir=artifacts, stage1="qdrant", qdrant_path=path, **extra | more))


@pytest.fixture(scope="module")
def collection(artifacts, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qdrant")
    record = _load(artifacts, path)
    assert record["build"]["embedded"] == record["count"] > 0 and record["build"]["reused"] == 0
    return path


@pytest.fixture(scope="module")
def both(artifacts, collection):
    with _client(_settings(artifacts)) as local, _client(_settings(artifacts, qdrant_path=collection)) as qdrant:
        yield local, qdrant  # leaving closes the Qdrant client (the app's lifespan): local mode locks its directory


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("query", QUERIES)
def test_same_answers_as_the_local_store(both, mode, query):
    local, qdrant = both
    body = {"query": query, "mode": mode, "recall_k": 30, "top_k": 10, "floor": 0.0}
    a, b = local.post("/search", json=body).json(), qdrant.post("/search", json=body).json()
    # BM25 ties (equal scores: the sample's templated texts) are broken by hnswlib label locally and by
    # point id in Qdrant; in hybrid a tie at another rank changes the fused score a little, and the
    # calibrated score through ln(stage-1 rank). The tiny test reranker scores every pair alike, so
    # hybrid answers may swap results whose scores are that close, never others.
    tolerance = 0.05 if mode == "hybrid" else 1e-4
    keys = [[(r["id"], r["chunk"]) for r in side["results"]] for side in (a, b)]
    if mode == "hybrid":
        assert set(keys[0]) == set(keys[1])
        by_key = {(r["id"], r["chunk"]): r for r in b["results"]}
        b["results"] = [by_key[k] for k in keys[0]]  # compare each result with its counterpart
        scores = [r["score"] for r in a["results"]]
        swapped = [i for i, (x, y) in enumerate(zip(*keys, strict=True)) if x != y]
        assert all(abs(scores[i] - scores[j]) <= tolerance for i in swapped for j in swapped)
    else:
        assert keys[0] == keys[1]
    for x, y in zip(a["results"], b["results"], strict=True):
        # the same vectors (each chunk embedded alone), exact search on 225 chunks, and BM25 with the same IDF formula
        assert x["stage1_score"] == pytest.approx(y["stage1_score"], rel=tolerance, abs=1e-5)
        assert x["stage1_similarity"] == pytest.approx(y["stage1_similarity"], abs=1e-4)
        assert x["score"] == pytest.approx(y["score"], rel=tolerance, abs=1e-4) and x["text"] == y["text"]
        assert x["metadata"] == y["metadata"] and x["title"] == y["title"]
    assert b["timings"]["qdrant_ms"] > 0 and b["timings"]["ann_ms"] == 0


def test_health_names_the_backend(both):
    _, qdrant = both
    health = qdrant.get("/health").json()
    assert health["status"] == "ok" and health["index"]["backend"] == "qdrant"
    assert health["index"]["chunks"] == 225 and health["index"]["state"] == "ok"


def test_a_collection_from_another_encoder_or_none_is_refused(artifacts, collection, tmp_path):
    from qdrant_client import QdrantClient

    from handler.errors import IndexMismatchError
    from handler.pipeline import Retriever
    from handler.qdrant_stage1 import RECORD_KEY, read_record

    copy = shutil.copytree(collection, tmp_path / "copy")
    client = QdrantClient(path=str(copy))
    record = read_record(client, "twostage") | {"encoder_sha256": "0" * 64}
    client.update_collection("twostage", metadata={RECORD_KEY: record})
    client.close()
    with pytest.raises(IndexMismatchError, match="sha256 0000"):
        Retriever.from_settings(_settings(artifacts, qdrant_path=copy))
    with pytest.raises(IndexMismatchError, match="no .*collection 'elsewhere'"):
        Retriever.from_settings(_settings(artifacts, qdrant_path=copy, qdrant_collection="elsewhere"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def silent_server():
    """Accepts connections and never answers: a cluster that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_an_unreachable_cluster_is_503_for_search_and_not_for_rerank(artifacts, kind):
    from handler.errors import Stage1Unavailable
    from handler.pipeline import Retriever

    with silent_server() as silent:
        url = f"http://127.0.0.1:{_free_port()}" if kind == "refused" else silent
        settings = _settings(artifacts, qdrant_url=url, qdrant_timeout_s=1)
        client = _client(settings)  # init survives: /rerank needs no stage 1
        started = time.perf_counter()
        response = client.post("/search", json={"query": "Veltrazine dose"})
        assert response.status_code == 503 and response.headers["retry-after"]
        assert response.json()["error"] == "stage1_unavailable" and time.perf_counter() - started < 5
        rerank = client.post("/rerank", json={"query": "dose", "documents": ["5 mg", "a recipe"]})
        assert rerank.status_code == 200 and len(rerank.json()["results"]) == 2
        health = client.get("/health")
        assert health.status_code == 503 and "stage1" in health.json()["problems"]
        assert health.json()["index"]["state"].startswith("unverified")
        with pytest.raises(Stage1Unavailable):  # the SnapStart priming's full check fails the publication
            Retriever.from_settings(_settings(artifacts, qdrant_url=url, qdrant_timeout_s=1, verify="full"))


def test_reload_embeds_only_what_changed(artifacts, tmp_path):
    from handler.pipeline import Retriever

    corpus = [json.loads(line) for line in (Path(__file__).parents[1] / "sample_data" / "corpus.jsonl").open()]
    first = tmp_path / "v1.jsonl"
    first.write_text("".join(json.dumps(d) + "\n" for d in corpus))
    path = tmp_path / "qdrant"
    before = _load(artifacts, path, first)

    changed = [dict(d) for d in corpus[2:]]  # two deleted
    changed[0]["text"] = "Zorblat tablets must be stored below 25 °C, away from light."  # one changed
    changed.append({"id": "new-doc", "title": "Quenthor battery", "text": "The Quenthor battery lasts 9 hours."})
    second = tmp_path / "v2.jsonl"
    second.write_text("".join(json.dumps(d) + "\n" for d in changed))
    after = _load(artifacts, path, second)
    build = after["build"]
    assert build["embedded"] == 2 and build["deleted"] == before["count"] - after["count"] + 1
    assert build["reused"] == after["count"] - 2 and after["documents"] == len(changed)

    retriever = Retriever.from_settings(_settings(artifacts, qdrant_path=path))

    def first(query: str) -> str:  # stage 1 (the test reranker is random)
        return retriever.recall(query, 10, "bm25").chunks[0].doc_id

    assert first("Quenthor battery hours") == "new-doc" and first("Zorblat stored below") == changed[0]["id"]
    gone = {corpus[0]["id"], corpus[1]["id"]}
    assert not gone & {c.doc_id for c in retriever.recall(corpus[0]["title"], 100, "hybrid").chunks}
    retriever.close()


def test_from_index_copies_the_local_vectors(artifacts, tmp_path):
    record = _load(artifacts, tmp_path / "q", from_index=artifacts / "index")
    assert record["build"]["copied_from_index"] == record["count"] and record["build"]["embedded"] == 0


def test_qdrants_own_engine_scores_our_bm25_vectors_as_bm25s_does(artifacts, tmp_path):
    """qdrant-edge is Qdrant's engine (Rust) in process: the collection design (term-frequency weights
    in the points, Qdrant's IDF modifier) gives bm25s' scores there too, not only in the client's
    Python local mode; the dense side finds hnswlib's neighbours."""
    edge = pytest.importorskip("qdrant_edge")
    import numpy as np

    from handler.local_stage1 import LocalStage1
    from handler.manifest import ModelManifest, read_manifest
    from handler.sparse_index import bm25_document_vector, bm25_query_vector, bm25_tokenize

    encoder = read_manifest(artifacts / "models" / "bi", ModelManifest)
    store = LocalStage1.load(artifacts / "index", encoder, False)
    labels = list(range(len(store)))
    chunks, vectors = store.fetch(labels), store.index.index.get_items(labels, return_type="numpy")
    bm25 = store.bm25.settings
    tokens = bm25_tokenize([c.passage for c in chunks], bm25)
    avgdl = float(np.mean([len(t) for t in tokens]))
    config = edge.EdgeConfig(
        vectors={"dense": edge.EdgeVectorParams(size=encoder.dims, distance=edge.Distance.Cosine)},
        sparse_vectors={"bm25": edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
    )
    shard = edge.EdgeShard.create(str(tmp_path / "shard"), config)
    points = []
    for label, words, vector in zip(labels, tokens, vectors, strict=True):
        indices, values = bm25_document_vector(words, avgdl, bm25["k1"], bm25["b"])
        named = {"dense": vector.tolist(), "bm25": edge.SparseVector(indices=indices, values=values)}
        points.append(edge.Point(id=label, vector=named))
    shard.update(edge.UpdateOperation.upsert_points(points))
    for query in QUERIES:
        indices, values = bm25_query_vector(bm25_tokenize([query], bm25)[0])
        sparse = edge.Query.Nearest(edge.SparseVector(indices=indices, values=values), using="bm25")
        found = shard.query(edge.QueryRequest(limit=10, query=sparse))
        expected_labels, expected = store.bm25.search(query, 10)
        assert [p.score for p in found] == pytest.approx(expected.tolist(), rel=1e-5)  # ties may swap labels
        assert {p.id for p in found if p.score > expected[-1] + 1e-4} <= set(expected_labels.tolist())
        vector = store.index.index.get_items([expected_labels[0]], return_type="numpy")[0]  # any unit vector
        dense = shard.query(edge.QueryRequest(limit=5, query=edge.Query.Nearest(vector.tolist(), using="dense")))
        assert [p.id for p in dense] == store.index.search(vector, 5)[0].tolist()
    shard.close()
