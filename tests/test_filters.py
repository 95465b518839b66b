"""Metadata filters: the language (each operator, nesting, errors naming the path), recall inside the
slice on the local store (exact and hnswlib's filtered search, BM25 scored within the slice), numbers,
booleans and nested keys, the same answers from Qdrant (qdrant-client's local mode, and Qdrant's own
engine in process), the API and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from handler import filters
from handler.api import create_app
from handler.errors import InvalidRequest
from handler.metadata_columns import flatten
from handler.pipeline import Retriever
from handler.settings import Settings

QUERY = "dose and error codes"
SAMPLE_FILTERS = [
    {"drug": "Veltrazine"},
    {"topic": {"$ne": "medicine"}},
    {"topic": {"$in": ["plants", "device"]}},
    {"drug": {"$nin": ["Veltrazine", "Corvadil"]}},
    {"device": {"$exists": True}},
    {"$or": [{"drug": "Corvadil"}, {"device": "ThermoLine X2"}]},
    {"$and": [{"topic": "medicine"}, {"drug": {"$ne": "Veltrazine"}}]},
    {"topic": "medicine", "drug": {"$in": ["Tandoprin", "Dermavex"]}},
]


def admits(raw: dict, metadata: dict) -> bool:
    """The reference semantics, row by row (what the columns and Qdrant must agree with)."""
    flat = flatten(metadata)
    for key, value in raw.items():
        if key == "$and":
            ok = all(admits(part, metadata) for part in value)
        elif key == "$or":
            ok = any(admits(part, metadata) for part in value)
        else:
            ok = all(_holds(op, operand, flat.get(key)) for op, operand in _operators(value))
        if not ok:
            return False
    return True


def _operators(value):
    return value.items() if isinstance(value, dict) else [("$eq", value)]


def _holds(op: str, operand, stored) -> bool:
    if op == "$exists":
        return (stored is not None) == operand
    if op in ("$eq", "$in"):
        return stored is not None and stored in (operand if op == "$in" else [operand])
    if op in ("$ne", "$nin"):
        return stored is None or stored not in (operand if op == "$nin" else [operand])
    compare = {
        "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b,
        "$lte": lambda a, b: a <= b,
    }
    return stored is not None and compare[op](stored, operand)


# -- the language ---------------------------------------------------------------------------------

FIELDS = {"drug": "string", "year": "number", "reviewed": "boolean", "device.model": "string"}


def test_each_operator_and_combinator_parses():
    tree = filters.parse(
        {
            "drug": "Corvadil",
            "year": {"$gte": 2020, "$lt": 2024.0, "$ne": 2021, "$in": [2020, 2022], "$nin": [1999], "$exists": True},
            "$or": [{"reviewed": True}, {"$and": [{"device.model": {"$eq": "X2"}}, {"drug": {"$ne": "C"}}]}],
        },
        FIELDS,
    )
    assert isinstance(tree, filters.All) and filters.fields_of(tree) == set(FIELDS)
    assert filters.parse({}, FIELDS) is None and filters.parse(None, FIELDS) is None


@pytest.mark.parametrize(
    "raw, path, words",
    [
        ({"drug": {"$like": "C%"}}, "filter.drug.$like", "unknown operator"),
        ({"$not": {"drug": "C"}}, "filter.$not", "unknown combinator"),
        ({"tenant": "a"}, "filter.tenant", "not a filterable field; filterable: device.model, drug, reviewed, year"),
        ({"year": "2020"}, "filter.year", "must be a number"),
        ({"year": True}, "filter.year", "must be a number"),
        ({"reviewed": 1}, "filter.reviewed", "must be a boolean"),
        ({"drug": {"$gt": "A"}}, "filter.drug.$gt", "compares numbers"),
        ({"drug": {"$in": []}}, "filter.drug.$in", "list of 1 to 1000"),
        ({"drug": {"$in": ["a", 3]}}, "filter.drug.$in.1", "must be a string"),
        ({"year": {"$exists": "yes"}}, "filter.year.$exists", "true or false"),
        ({"$and": {"drug": "C"}}, "filter.$and", "non-empty list"),
        ({"$or": [{"drug": "C"}, "x"]}, "filter.$or.1", "non-empty object"),
        ({"drug": {}}, "filter.drug", "needs an operator"),
        ({"year": float("nan")}, "filter.year", "finite"),
        ("drug", "filter", "non-empty object"),
    ],
)
def test_a_bad_filter_is_refused_naming_its_path(raw, path, words):
    with pytest.raises(InvalidRequest) as error:
        filters.parse(raw, FIELDS)
    assert error.value.field == path and words in error.value.message


def test_nesting_is_bounded():
    deep = {"drug": "C"}
    for _ in range(12):
        deep = {"$and": [deep]}
    with pytest.raises(InvalidRequest, match="nested deeper"):
        filters.parse(deep, FIELDS)


# -- the local store ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(retriever):
    return retriever


def test_the_sample_index_declares_its_metadata_fields(local):
    assert local.recall.stage1.filterable == {
        "code": "string",
        "device": "string",
        "drug": "string",
        "plant": "string",
        "topic": "string",
    }


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("raw", SAMPLE_FILTERS, ids=[json.dumps(f) for f in SAMPLE_FILTERS])
def test_every_candidate_is_in_the_slice(local, raw, mode):
    where = local.recall.filter(raw)
    recalled = local.recall(QUERY, 30, mode, where=where)
    assert recalled.chunks and all(admits(raw, c.metadata) for c in recalled.chunks)


def slice_of(store, raw: dict) -> np.ndarray:
    chunks = store.fetch(list(range(len(store))))
    return np.array([admits(raw, c.metadata) for c in chunks])


@pytest.mark.parametrize("raw", SAMPLE_FILTERS, ids=[json.dumps(f) for f in SAMPLE_FILTERS])
@pytest.mark.parametrize("exact_slice", [10_000, 0], ids=["exact", "hnswlib-filtered"])
def test_dense_recall_inside_the_slice_is_the_slices_exact_best(local, raw, exact_slice, monkeypatch):
    import handler.vector_index as vector_index

    monkeypatch.setattr(vector_index, "EXACT_SLICE", exact_slice)
    store = local.recall.stage1
    allowed = slice_of(store, raw)
    vector = local.recall.encoder.embed_queries([QUERY])[0]
    labels, cosines = store.index.search_within(vector, 20, store.columns.mask(local.recall.filter(raw)))
    members = np.flatnonzero(allowed)
    exact = store.index.similarity(vector, members.tolist())
    best = members[np.argsort(-exact, kind="stable")[: min(20, len(members))]]
    assert set(labels.tolist()) == set(best.tolist())
    assert cosines == pytest.approx(np.sort(exact)[::-1][: len(best)], abs=1e-5)


@pytest.mark.parametrize("raw", SAMPLE_FILTERS, ids=[json.dumps(f) for f in SAMPLE_FILTERS])
def test_bm25_scores_within_the_slice(local, raw):
    store = local.recall.stage1
    allowed = slice_of(store, raw)
    labels, scores = store.bm25.search(QUERY, 15, store.columns.mask(local.recall.filter(raw)))
    everyone, all_scores = store.bm25.search(QUERY, len(store))
    expected = [s for label, s in zip(everyone.tolist(), all_scores.tolist(), strict=True) if allowed[label]][:15]
    assert scores.tolist() == pytest.approx(expected) and all(allowed[label] for label in labels)


def test_an_empty_slice_is_a_refusal_that_says_so(local):
    client = TestClient(create_app(local, local.settings))
    body = client.post("/search", json={"query": QUERY, "filter": {"drug": "Nonexistin"}}).json()
    assert body["refused"] and body["results"] == [] and body["reason"].startswith("empty slice")
    floor = client.post("/search", json={"query": QUERY, "filter": {"drug": "Corvadil"}, "floor": 1.0}).json()
    assert floor["refused"] and "in the slice drug $eq 'Corvadil'" in floor["reason"]


def test_the_api_filters_and_names_a_bad_filters_path(local):
    client = TestClient(create_app(local, local.settings))
    answer = client.post("/search", json={"query": QUERY, "filter": {"topic": "plants"}, "floor": 0.0}).json()
    assert answer["results"] and all(r["metadata"]["topic"] == "plants" for r in answer["results"])
    assert answer["timings"]["filter_ms"] >= 0
    bad = client.post("/search", json={"query": QUERY, "filter": {"topic": {"$gte": 2}}})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "filter.topic.$gte"
    unknown = client.post("/search", json={"query": QUERY, "filter": {"tenant": "a"}})
    assert unknown.status_code == 422 and "filterable: code, device, drug, plant, topic" in unknown.json()["message"]
    document = client.get("/openapi.json").json()["components"]["schemas"]["Filter"]
    assert set(document["properties"]) == {"$and", "$or", "code", "device", "drug", "plant", "topic"}
    assert client.get("/health").json()["index"]["filterable"]["drug"] == "string"


def test_the_python_api_and_the_cli_take_a_filter(artifacts, capsys):
    from twostage import TwoStage
    from twostage.cli import main

    with TwoStage.load(artifacts) as ts:
        answer = ts.search(QUERY, filter={"drug": "Corvadil"}, floor=0.0)
    assert answer.results and {r.metadata["drug"] for r in answer.results} == {"Corvadil"}
    assert main(["query", QUERY, "--artifacts-dir", str(artifacts), "--filter", '{"drug": "Corvadil"}', "--json"]) == 0
    assert {r["metadata"]["drug"] for r in json.loads(capsys.readouterr().out)["results"]} == {"Corvadil"}
    with pytest.raises(SystemExit) as exit_:
        main(["query", QUERY, "--artifacts-dir", str(artifacts), "--filter", "{drug"])
    assert exit_.value.code == 2 and "--filter" in capsys.readouterr().err


# -- numbers, booleans, nested keys, and --filter-fields -------------------------------------------

DEVICES = ["X1", "X2", "X3"]


@pytest.fixture(scope="module")
def typed(artifacts, tmp_path_factory) -> Path:
    """An index whose metadata holds a number, a boolean and a nested key (and a field of two types)."""
    from index_build.build import build_index
    from index_build.settings import IndexSettings

    root = tmp_path_factory.mktemp("typed")
    shutil.copytree(artifacts / "models", root / "models")
    corpus = root / "corpus.jsonl"
    rows = [
        {
            "id": f"doc-{i}",
            "title": f"Service note {i}",
            "text": f"The pump model needs a new seal after {i} hours of work at the plant.",
            "metadata": {
                "year": 2019 + i % 6,
                "reviewed": i % 2 == 0,
                "device": {"model": DEVICES[i % 3]},
                "mixed": i if i % 2 else str(i),
            },
        }
        for i in range(60)
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(IndexSettings(artifacts_dir=root, corpus=corpus))
    return root


def test_numbers_booleans_and_nested_keys_filter(typed):
    retriever = Retriever.from_settings(Settings(artifacts_dir=typed))
    assert retriever.recall.stage1.filterable == {"year": "number", "reviewed": "boolean", "device.model": "string"}
    cases = [
        {"year": {"$gte": 2022}},
        {"year": 2021},
        {"year": {"$in": [2019, 2024]}},
        {"reviewed": True},
        {"device.model": "X2"},
        {"$or": [{"year": {"$lt": 2020}}, {"$and": [{"reviewed": False}, {"device.model": {"$ne": "X1"}}]}]},
    ]
    for raw in cases:
        answer = retriever.search("pump seal hours", recall_k=60, top_k=60, floor=0.0, filter=raw)
        metadata = [r.metadata for r in answer.results]
        expected = sum(
            admits(raw, row) for row in (json.loads(line)["metadata"] for line in (typed / "corpus.jsonl").open())
        )
        assert len(metadata) == expected and all(admits(raw, m) for m in metadata), raw
    with pytest.raises(InvalidRequest, match="filter.mixed"):
        retriever.search("pump", filter={"mixed": 3})


def test_filter_fields_narrows_what_is_filterable(artifacts, tmp_path):
    from index_build.build import build_index
    from index_build.settings import IndexSettings

    root = tmp_path / "artifacts"
    shutil.copytree(artifacts / "models", root / "models")
    build_index(IndexSettings(artifacts_dir=root, filter_fields=["drug", "device"]))
    retriever = Retriever.from_settings(Settings(artifacts_dir=root))
    assert retriever.recall.stage1.filterable == {"drug": "string", "device": "string"}
    with pytest.raises(InvalidRequest, match="filterable: device, drug"):
        retriever.search(QUERY, filter={"topic": "plants"})
    with pytest.raises(ValueError, match="tenant"):
        build_index(IndexSettings(artifacts_dir=root, filter_fields=["tenant"]))


# -- Qdrant ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qdrant(artifacts, tmp_path_factory):
    pytest.importorskip("qdrant_client")
    from index_build.qdrant_load import load_collection
    from index_build.settings import IndexSettings

    path = tmp_path_factory.mktemp("qdrant-filters")
    record = load_collection(IndexSettings(artifacts_dir=artifacts, stage1="qdrant", qdrant_path=path))
    assert record["filters"]["drug"] == "string"
    retriever = Retriever.from_settings(Settings(artifacts_dir=artifacts, stage1="qdrant", qdrant_path=path))
    yield retriever
    retriever.close()


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("raw", SAMPLE_FILTERS, ids=[json.dumps(f) for f in SAMPLE_FILTERS])
def test_qdrant_finds_what_the_local_store_finds_in_the_slice(local, qdrant, raw, mode):
    ours = local.recall(QUERY, 20, mode, where=local.recall.filter(raw))
    theirs = qdrant.recall(QUERY, 20, mode, where=qdrant.recall.filter(raw))
    keys = [{(c.doc_id, c.chunk) for c in side.chunks} for side in (ours, theirs)]
    assert all(admits(raw, c.metadata) for c in theirs.chunks)
    if mode == "dense":  # exact on both sides: the same chunks, the same cosines
        assert [(c.doc_id, c.chunk) for c in ours.chunks] == [(c.doc_id, c.chunk) for c in theirs.chunks]
    else:  # BM25 ties (the sample's templated texts) may be cut differently at the last ranks
        assert len(keys[0] & keys[1]) >= 0.8 * len(keys[0])


def edge_filter(edge, tree):
    """qdrant-client's Filter (what QdrantStage1 sends) as Qdrant's engine's own classes, field by field."""
    from qdrant_client import models

    if isinstance(tree, models.Filter):
        convert = lambda parts: None if parts is None else [edge_filter(edge, p) for p in parts]  # noqa: E731
        return edge.Filter(must=convert(tree.must), should=convert(tree.should), must_not=convert(tree.must_not))
    if isinstance(tree, models.IsEmptyCondition):
        return edge.IsEmptyCondition(key=tree.is_empty.key)
    if tree.match is not None:
        return edge.FieldCondition(key=tree.key, match=edge.MatchValue(tree.match.value))
    r = tree.range
    return edge.FieldCondition(key=tree.key, range=edge.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt))


def test_qdrants_own_engine_agrees_with_our_translation(local, tmp_path):
    """The Filter QdrantStage1 sends, run by Qdrant's engine (qdrant-edge, in process) over the sample's
    vectors and payloads, admits exactly the slice and finds its exact nearest chunks."""
    edge = pytest.importorskip("qdrant_edge")
    from handler.qdrant_stage1 import qdrant_filter

    store = local.recall.stage1
    labels = list(range(len(store)))
    chunks, vectors = store.fetch(labels), store.index.index.get_items(labels, return_type="numpy")
    config = edge.EdgeConfig(
        vectors={"dense": edge.EdgeVectorParams(size=vectors.shape[1], distance=edge.Distance.Cosine)}
    )
    shard = edge.EdgeShard.create(str(tmp_path / "shard"), config)
    points = [
        edge.Point(id=label, vector={"dense": vector.tolist()}, payload={"metadata": chunk.metadata})
        for label, chunk, vector in zip(labels, chunks, vectors, strict=True)
    ]
    shard.update(edge.UpdateOperation.upsert_points(points))
    query = local.recall.encoder.embed_queries([QUERY])[0]
    for raw in SAMPLE_FILTERS:
        where = local.recall.filter(raw)
        only = edge_filter(edge, qdrant_filter(where))
        found = shard.query(
            edge.QueryRequest(limit=10, query=edge.Query.Nearest(query.tolist(), using="dense"), filter=only)
        )
        expected, _ = store.index.search_within(query, 10, store.columns.mask(where))
        assert [p.id for p in found] == expected.tolist(), raw
    shard.close()
