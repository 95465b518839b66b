"""Stage 1 on a Qdrant collection, for corpora no function can hold: the cluster shards and replicates
the dense vectors, BM25 as sparse vectors (IDF computed by Qdrant, so it stays right as shards grow)
and the chunk payloads; rerank, calibration and the floor stay in this process.

Imported only when TWOSTAGE_STAGE1=qdrant (qdrant-client is the optional extra `[qdrant]`). One round
trip per /search: a batch of the dense top-k, the BM25 top-k, and the BM25 candidates rescored by the
dense vector (their cosines, which the calibrated score needs), payloads included.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from handler.docstore import Chunk
from handler.errors import ArtifactError, IndexMismatchError, Stage1Unavailable
from handler.filters import All, Any_, FieldType, Filter
from handler.fusion import Sides
from handler.manifest import ModelManifest, check_binding
from handler.settings import Settings, Stage1Store
from handler.sparse_index import bm25_query_vector, bm25_tokenize

log = logging.getLogger(__name__)

DENSE, SPARSE = "dense", "bm25"
RELOAD = "twostage index --stage1 qdrant"
RECORD_KEY = "twostage"  # the collection's metadata entry: what built it (encoder, prompts, BM25 settings)
POINT_NAMESPACE = uuid.UUID("5f0c6a9e-6f4e-4d53-9a51-2f0d2b8e7c11")
# What a call to an unreachable, slow or failing cluster raises (httpx errors arrive wrapped).
UNAVAILABLE = (ResponseHandlingException, UnexpectedResponse, ConnectionError, TimeoutError, OSError)


def point_id(doc_id: str, chunk: int) -> str:
    """The same document chunk always lands on the same point: loads are idempotent and resumable."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}\x1f{chunk}"))


def api_key(store: Stage1Store) -> str | None:
    if store.qdrant_api_key_secret_arn:
        import boto3  # in the Lambda runtime already; only this path needs it

        secret = boto3.client("secretsmanager").get_secret_value(SecretId=store.qdrant_api_key_secret_arn)
        text = secret["SecretString"]
        return json.loads(text).get("api_key", text) if text.lstrip().startswith("{") else text
    return store.qdrant_api_key.get_secret_value() if store.qdrant_api_key else None


def make_client(store: Stage1Store) -> QdrantClient:
    if store.qdrant_path is not None:  # qdrant-client's local mode: one process owns the directory
        return QdrantClient(path=str(store.qdrant_path))
    # no version probe at construction: it is a network call in the cold start
    return QdrantClient(
        url=store.qdrant_url, api_key=api_key(store), timeout=store.qdrant_timeout_s, check_compatibility=False
    )


def where(store: Stage1Store) -> str:
    return f"{store.qdrant_url or store.qdrant_path} collection {store.qdrant_collection!r}"


def read_record(client: QdrantClient, collection: str) -> dict | None:
    """The collection's build record, or None when there is no such collection."""
    if not client.collection_exists(collection):
        return None
    return (client.get_collection(collection).config.metadata or {}).get(RECORD_KEY, {})


class QdrantStage1:
    backend = "qdrant"

    def __init__(self, client: QdrantClient, settings: Settings, encoder: ModelManifest, record: dict | None):
        self.client, self.settings, self.encoder = client, settings, encoder
        self.collection, self.place = settings.qdrant_collection, where(settings)
        self.record = record  # None: the cluster did not answer at init; checked at the first call that reaches it
        self._request = threading.local()  # this request's payloads and cosines, from its one round trip

    @classmethod
    def connect(cls, settings: Settings, encoder: ModelManifest) -> QdrantStage1:
        """A missing collection or one built with another encoder fails init (and so a SnapStart
        publication). An unreachable cluster fails it only under TWOSTAGE_VERIFY=full (the priming);
        else /search answers 503 until it answers, and /rerank works meanwhile."""
        client = make_client(settings)
        stage1 = cls(client, settings, encoder, None)
        try:
            stage1._check()
        except Stage1Unavailable:
            if settings.verify == "full":
                raise
            log.warning("Qdrant %s did not answer at init: /search answers 503 until it does", stage1.place)
        return stage1

    def _call(self, what: str, call: Callable, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except UNAVAILABLE as error:
            raise Stage1Unavailable(f"Qdrant {self.place}: {what} failed: {type(error).__name__}: {error}") from None

    def _check(self) -> dict:
        if self.record is None:
            record = self._call("reading the collection", read_record, self.client, self.collection)
            if record is None:
                raise IndexMismatchError(f"no {self.place}: load it with `twostage index --stage1 qdrant`")
            check_binding(record, self.encoder, self.place, RELOAD)
            self.record = record
        return self.record

    @property
    def filterable(self) -> dict[str, FieldType]:
        return (self.record or {}).get("filters") or {}

    @property
    def has_bm25(self) -> bool:
        return bool((self.record or {"bm25": True}).get("bm25"))  # unknown until checked: assume the default

    def __len__(self) -> int:
        return int((self.record or {}).get("count", 0))

    def candidates(
        self,
        vector: np.ndarray,
        query: str,
        sides: Sequence[str],
        depth: int,
        lap: Callable[[str], None],
        where: Filter | None = None,
    ) -> Sides:
        try:
            record = self._check()
        except IndexMismatchError as error:  # found out late (unreachable at init): this store cannot serve
            raise ArtifactError(self.place, str(error)) from None
        dense = vector.astype(np.float32).tolist()
        # local mode searches exactly (and warns about search params)
        params = (
            None if self.settings.qdrant_path else models.SearchParams(hnsw_ef=max(depth, self.settings.qdrant_hnsw_ef))
        )
        only = None if where is None else qdrant_filter(where)  # every request of the round trip: the slice
        requests, names = [], []
        if "dense" in sides:
            requests.append(
                models.QueryRequest(
                    query=dense, using=DENSE, limit=depth, params=params, filter=only, with_payload=True
                )
            )
            names.append("dense")
        sparse = bm25_query_vector(bm25_tokenize([query], record.get("bm25") or {})[0]) if "bm25" in sides else None
        if sparse and sparse[0]:
            query_sparse = models.SparseVector(indices=sparse[0], values=sparse[1])
            requests.append(
                models.QueryRequest(query=query_sparse, using=SPARSE, limit=depth, filter=only, with_payload=True)
            )
            # the same BM25 candidates rescored by the dense vector: their cosines, in the same round trip
            prefetch = models.Prefetch(query=query_sparse, using=SPARSE, limit=depth, filter=only)
            requests.append(models.QueryRequest(prefetch=prefetch, query=dense, using=DENSE, limit=depth))
            names += ["bm25", "cosines"]
        found = self._call("the query", self.client.query_batch_points, self.collection, requests) if requests else []
        lap("qdrant")
        return self._remember(dict(zip(names, found, strict=True)), sides)

    def _remember(self, responses: dict, sides: Sequence[str]) -> Sides:
        """Keep this request's payloads and cosines for `fetch` and `similarity` (same thread, same request)."""
        payloads, cosines, result = {}, {}, {}
        for name, response in responses.items():
            for point in response.points:
                if name == "cosines" or name == "dense":
                    cosines[str(point.id)] = point.score
                if point.payload is not None:
                    payloads[str(point.id)] = point.payload
        self._request.payloads, self._request.cosines = payloads, cosines
        for side in sides:
            points = responses[side].points if side in responses else []
            result[side] = (
                np.array([str(p.id) for p in points], dtype=object),
                np.array([p.score for p in points], dtype=np.float32),
            )
        return result

    def similarity(self, vector: np.ndarray, labels: Sequence) -> np.ndarray:
        known = getattr(self._request, "cosines", {})
        missing = [label for label in labels if label not in known]
        if missing:  # not from this request's round trip (a caller of its own): ask for exactly these
            only = models.Filter(must=[models.HasIdCondition(has_id=missing)])
            response = self._call(
                "cosines",
                self.client.query_points,
                self.collection,
                query=vector.astype(np.float32).tolist(),
                using=DENSE,
                query_filter=only,
                limit=len(missing),
            )
            known = known | {str(p.id): p.score for p in response.points}
        return np.array([known.get(label, 0.0) for label in labels], dtype=np.float32)

    def fetch(self, labels: Sequence) -> list[Chunk]:
        payloads = dict(getattr(self._request, "payloads", {}))
        missing = [label for label in labels if label not in payloads]
        if missing:
            points = self._call("fetching chunks", self.client.retrieve, self.collection, missing, with_payload=True)
            payloads |= {str(p.id): p.payload for p in points}
        return [_chunk(label, payloads[label]) for label in labels]

    def describe(self) -> dict[str, Any]:
        record = self.record or {}
        return {
            "backend": self.backend,
            "collection": self.collection,
            "chunks": record.get("count"),
            "documents": record.get("documents"),
            "state": "ok" if self.record is not None else "unverified: not reached yet",
            "filterable": self.filterable,
        }

    def ping(self) -> None:
        self._check()
        self._call("the health check", self.client.get_collection, self.collection)

    def close(self) -> None:
        self.client.close()


def qdrant_filter(tree: Filter) -> models.Filter:
    """A filter (handler/filters.py) as Qdrant's: the metadata sits under the payload key `metadata`.
    Missing values follow the same rule as the local store: only $ne, $nin and $exists false match them."""
    if isinstance(tree, All):
        return models.Filter(must=[qdrant_filter(part) for part in tree.parts])
    if isinstance(tree, Any_):
        return models.Filter(should=[qdrant_filter(part) for part in tree.parts])
    key = f"metadata.{tree.field}"
    if tree.op == "$exists":
        empty = models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
        return models.Filter(must_not=[empty]) if tree.value else models.Filter(must=[empty])
    values = tree.value if tree.op in ("$in", "$nin") else (tree.value,)
    if tree.op in ("$eq", "$in", "$ne", "$nin"):
        match = models.Filter(should=[_equals(key, v) for v in values])
        return models.Filter(must=[match]) if tree.op in ("$eq", "$in") else models.Filter(must_not=[match])
    bound = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}[tree.op]
    return models.Filter(must=[models.FieldCondition(key=key, range=models.Range(**{bound: tree.value}))])


def _equals(key: str, value) -> models.FieldCondition:
    """Numbers compare as numbers (a stored 2024 equals 2024.0), strings and booleans as they are."""
    if isinstance(value, float):
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _chunk(label: str, payload: dict) -> Chunk:
    return Chunk(
        label,
        payload["doc_id"],
        payload["chunk"],
        payload.get("title", ""),
        payload["text"],
        payload.get("metadata") or {},
    )
