"""The default stage-1 store: the artifact `twostage index` writes (hnswlib, bm25s, SQLite), in memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from handler.docstore import DOCSTORE_NAME, Chunk, DocStore
from handler.filters import FieldType, Filter
from handler.fusion import Sides
from handler.manifest import ModelManifest
from handler.metadata_columns import MetadataColumns
from handler.sparse_index import BM25Index
from handler.vector_index import VectorIndex


@dataclass
class LocalStage1:
    index: VectorIndex
    docs: DocStore
    bm25: BM25Index | None
    columns: MetadataColumns
    backend: str = "local"

    @classmethod
    def load(cls, index_dir, encoder: ModelManifest, full: bool, laps=None) -> LocalStage1:
        """`laps(name)` marks each part's load time (cold start, part by part)."""
        laps = laps or (lambda _name: None)
        index = VectorIndex(index_dir, encoder, checksum=full)
        laps("ann_index")
        docs = DocStore(index_dir / DOCSTORE_NAME, len(index), full)
        laps("docstore")
        bm25 = BM25Index(index_dir, index.manifest, full) if index.manifest.bm25 else None
        laps("bm25")
        columns = MetadataColumns(index_dir, index.manifest.filters or {}, len(index))
        return cls(index, docs, bm25, columns)

    @property
    def filterable(self) -> dict[str, FieldType]:
        return self.columns.fields

    @property
    def has_bm25(self) -> bool:
        return self.bm25 is not None

    def __len__(self) -> int:
        return len(self.index)

    def candidates(
        self,
        vector: np.ndarray,
        query: str,
        sides: Sequence[str],
        depth: int,
        lap: Callable[[str], None],
        where: Filter | None = None,
    ) -> Sides:
        allowed = None if where is None else self.columns.mask(where)
        if allowed is not None:
            lap("filter")
        found = {}
        if "dense" in sides:
            dense = (
                self.index.search(vector, depth)
                if allowed is None
                else self.index.search_within(vector, depth, allowed)
            )
            found["dense"] = dense
            lap("ann")
        if "bm25" in sides:
            found["bm25"] = self.bm25.search(query, depth, allowed)
            lap("bm25")
        return found

    def similarity(self, vector: np.ndarray, labels: Sequence) -> np.ndarray:
        return self.index.similarity(vector, list(labels))

    def fetch(self, labels: Sequence) -> list[Chunk]:
        return self.docs.fetch(labels)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "chunks": len(self.index),
            "documents": self.index.manifest.documents,
            "filterable": self.filterable,
        }

    def ping(self) -> None:
        self.docs.ping()

    def close(self) -> None:
        pass
