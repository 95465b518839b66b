"""Contracts between the runtime's parts, as Protocols (what the pipeline needs, not who provides it)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from tokenizers import Encoding, Tokenizer

from handler.docstore import Chunk
from handler.filters import FieldType, Filter
from handler.fusion import Sides
from handler.manifest import ModelManifest


class CrossScorer(Protocol):
    """Stage 2 as the pipeline sees it: the ONNX cross-encoder, or the same routed through the GPU batcher."""

    manifest: ModelManifest
    max_length: int
    tokenizer: Tokenizer  # the pairs' tokenizer (cutting a document to N tokens uses it)

    def encode(self, query: str, passages: Sequence[str]) -> list[Encoding]: ...

    def logits_encoded(self, encodings: list[Encoding], stop: threading.Event | None = None) -> np.ndarray: ...

    def close(self) -> None:
        """Finish queued work before shutdown (the batcher); nothing for a plain session."""
        ...


class Stage1(Protocol):
    """Stage 1's store as the pipeline sees it: the local artifact (hnswlib + bm25s + SQLite, the
    default) or a Qdrant collection. Labels are the store's own chunk keys (hnswlib labels, Qdrant
    point ids); fusion, rerank, calibration and the response do not depend on which store it is."""

    backend: str
    has_bm25: bool
    filterable: dict[str, FieldType]  # the metadata fields a filter may name, and their types

    def __len__(self) -> int: ...

    def candidates(
        self,
        vector: np.ndarray,
        query: str,
        sides: Sequence[str],
        depth: int,
        lap: Callable[[str], None],
        where: Filter | None = None,
    ) -> Sides:
        """Each asked side's top `depth` among the chunks `where` admits (all, without a filter): dense with
        cosines, bm25 with BM25 scores; `lap(name)` after each round of work (the response's timings)."""
        ...

    def similarity(self, vector: np.ndarray, labels: Sequence) -> np.ndarray:
        """Cosines of these chunks to the query vector (for candidates only BM25 found)."""
        ...

    def fetch(self, labels: Sequence) -> list[Chunk]: ...

    def describe(self) -> dict[str, Any]:
        """/health: backend, chunks, documents."""
        ...

    def ping(self) -> None:
        """Raise when the store cannot answer now (a damaged file, an unreachable cluster)."""
        ...

    def close(self) -> None: ...
