"""Where the artifacts lie under one root: the models (the bi-encoder, the served reranker and, for the
rerank cascade, its first pass) and the index (which may live elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifacts:
    root: Path
    index_path: Path | None = None  # an index outside the root (evaluation builds one per collection)

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def bi(self) -> Path:
        return self.models / "bi"

    @property
    def cross(self) -> Path:
        return self.models / "cross"

    @property
    def first_pass(self) -> Path:
        """The cascade's first-pass reranker (optional: without it every candidate is reranked)."""
        return self.models / "first_pass"

    @property
    def index(self) -> Path:
        return self.index_path or self.root / "index"
