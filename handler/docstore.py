"""Chunk texts, parent ids and metadata in SQLite, keyed by the hnswlib label."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.errors import ArtifactError
from handler.verify import check_docstore_rows, check_sqlite_file

DOCSTORE_NAME = "docstore.sqlite"
SCHEMA = """
CREATE TABLE chunks (
    label INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX chunks_doc_id ON chunks (doc_id);
"""


@dataclass(frozen=True)
class Chunk:
    label: int | str  # the stage-1 store's key: hnswlib label (SQLite row) or Qdrant point id
    doc_id: str
    chunk: int
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def passage(self) -> str:
        return passage(self.title, self.text)


def passage(title: str, text: str) -> str:
    """What both models read: title and text, as BEIR feeds them."""
    return f"{title} {text}" if title else text


class DocStore:
    """Read-only; one connection shared by request threads behind a lock. Init checks it holds one row
    per index label (`full`: and every page, SQLite's quick_check)."""

    def __init__(self, path: Path, count: int, full: bool = False):
        if not path.is_file():
            raise FileNotFoundError(f"doc store not found: {path}")
        check_sqlite_file(path)
        # as_uri() percent-encodes '#' and '?' in the path, which would otherwise end the file name
        # and drop mode=ro (SQLite then creates an empty writable file).
        uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self.path = path
        check_docstore_rows(self._db, path, count, full)

    def fetch(self, labels: Sequence[int]) -> list[Chunk]:
        """Chunks in the order of `labels`."""
        if not len(labels):
            return []
        marks = ",".join("?" * len(labels))
        try:
            with self._lock:
                rows = self._db.execute(f"SELECT * FROM chunks WHERE label IN ({marks})", [int(x) for x in labels])
                by_label = {row[0]: Chunk(*row[:5], metadata=json.loads(row[5])) for row in rows}
            return [by_label[int(label)] for label in labels]
        except (sqlite3.DatabaseError, KeyError, ValueError, TypeError) as error:  # damaged after init
            raise ArtifactError(self.path, f"unreadable rows ({error!r})") from None

    def ping(self) -> None:
        """A read that fails when the file has become unreadable (for /health)."""
        try:
            with self._lock:
                self._db.execute("SELECT label FROM chunks LIMIT 1").fetchall()
        except sqlite3.DatabaseError as error:
            raise ArtifactError(self.path, f"unreadable ({error})") from None
