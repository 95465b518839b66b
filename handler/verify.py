"""Artifact checks before the first request: a wrong or corrupt file fails init, naming the file.

Every check here is cheap enough for an on-demand cold start (numbers: docs/results.md §10) except the
two `full` adds: the SQLite `quick_check` (it reads the whole doc store) and the BM25 postings' range
scan. `full` runs where nobody waits: the SnapStart priming, a provisioned init, `twostage serve`'s
start-up when asked (TWOSTAGE_VERIFY=full).
Why each matters: hnswlib trusts the dims it is given and reads past its buffer when they are wrong
(an abort, not an exception); a doc store or BM25 artifact that disagrees with the index answers 500
on every request while /health says ok.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handler.manifest import sha256_file

# RoBERTa-family models start positions after the padding index: pad_token_id + 1 of them are unusable.
POSITION_OFFSET_MODELS = {"roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl"}
HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")  # hnswlib's saveIndex: offsets, counts, sizes, levels, M, mult, ef
SQLITE_MAGIC = b"SQLite format 3\x00"


class ArtifactError(RuntimeError):
    """An artifact that is missing a part, corrupt, or disagrees with another; names the file."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def inside(directory: Path, name: str) -> Path:
    """`directory / name`, refused when a manifest's name escapes its directory (`../../etc/passwd`)."""
    root = directory.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise ArtifactError(directory / "manifest.json", f"file {name!r} lies outside {directory}")
    if not path.is_file():
        raise ArtifactError(root / name, "missing (named by manifest.json)")
    return path


def check_model_file(path: Path, size: int | None, sha256: str, checksum: bool) -> None:
    """The ONNX file is the one the manifest describes: its size always, its sha256 when asked."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise ArtifactError(path, f"{actual} bytes, manifest.json says {size} (truncated or replaced)")
    if checksum and sha256_file(path) != sha256:
        raise ArtifactError(path, f"sha256 differs from manifest.json's {sha256[:12]}… (corrupt or replaced)")


def position_limit(model_dir: Path) -> int | None:
    """Tokens the model's position embeddings can take, from its config.json (None: not stated)."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        return None
    config = json.loads(config_path.read_text())
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    if config.get("model_type") in POSITION_OFFSET_MODELS:
        positions -= (config.get("pad_token_id") or 1) + 1
    return positions


def check_max_length(model_dir: Path, max_length: int) -> None:
    limit = position_limit(model_dir)
    if limit is not None and max_length > limit:
        raise ArtifactError(
            model_dir / "manifest.json", f"max_length {max_length} exceeds the model's {limit} positions (config.json)"
        )


@dataclass(frozen=True)
class HnswHeader:
    count: int
    max_elements: int
    dims: int
    bytes_per_element: int


def read_hnsw_header(path: Path) -> HnswHeader:
    """The counts hnswlib wrote at the top of index.bin, read without loading the graph."""
    with open(path, "rb") as handle:
        raw = handle.read(HNSW_HEADER.size)
    if len(raw) < HNSW_HEADER.size:
        raise ArtifactError(path, f"{len(raw)} bytes: too short for an hnswlib index")
    _level0, max_elements, count, per_element, label_offset, data_offset, *_ = HNSW_HEADER.unpack(raw)
    data_bytes = label_offset - data_offset
    if not 0 < data_bytes < per_element or data_bytes % 4 or count > max_elements:
        raise ArtifactError(path, "header is not an hnswlib index's (corrupt)")
    return HnswHeader(count, max_elements, data_bytes // 4, per_element)


def check_index_file(path: Path, count: int, dims: int) -> None:
    """index.bin holds `count` vectors of `dims` floats, and at least their bytes are on disk."""
    header = read_hnsw_header(path)
    if header.dims != dims:
        raise ArtifactError(path, f"holds {header.dims}-d vectors, manifest.json says dims {dims}")
    if header.count != count:
        raise ArtifactError(path, f"holds {header.count} vectors, manifest.json says count {count}")
    needed = HNSW_HEADER.size + header.count * header.bytes_per_element
    if path.stat().st_size < needed:
        raise ArtifactError(path, f"{path.stat().st_size} bytes, its header needs at least {needed} (truncated)")


def check_sqlite_file(path: Path) -> None:
    """An SQLite file whose header's page count matches its size (a truncated copy does not)."""
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise ArtifactError(path, "not an SQLite database (corrupt)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if pages and pages * page_size != path.stat().st_size:
        raise ArtifactError(path, f"{path.stat().st_size} bytes, its header says {pages * page_size} (truncated)")


def check_docstore_rows(db: sqlite3.Connection, path: Path, count: int, full: bool) -> None:
    """One row per index label 0..count-1; `full` also runs SQLite's quick_check over every page."""
    try:
        if full:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise ArtifactError(path, f"quick_check: {'; '.join(problems)}")
        rows, low, high = db.execute("SELECT count(*), min(label), max(label) FROM chunks").fetchone()
    except sqlite3.DatabaseError as error:
        raise ArtifactError(path, f"unreadable doc store ({error})") from None
    if rows != count or (count and (low, high) != (0, count - 1)):
        raise ArtifactError(path, f"{rows} chunks (labels {low}..{high}), the index holds {count} (0..{count - 1})")


def check_bm25_arrays(directory: Path, data, indices, indptr, vocab_size: int, chunks: int, full: bool) -> None:
    """bm25s' CSC postings agree with each other and with the chunk count; `full` scans every posting."""
    if len(indptr) != vocab_size + 1 or len(data) != len(indices) or int(indptr[-1]) != len(indices):
        raise ArtifactError(
            directory,
            f"postings disagree: {len(indptr)} offsets for {vocab_size} terms, {len(data)} scores, "
            f"{len(indices)} ids, last offset {int(indptr[-1]) if len(indptr) else None}",
        )
    if int(indptr[0]) != 0 or (len(indptr) > 1 and bool(np.any(np.diff(indptr) < 0))):
        raise ArtifactError(directory, "posting offsets are not increasing (corrupt)")
    if full and len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= chunks):
        raise ArtifactError(directory, f"posting ids outside 0..{chunks - 1} (corrupt)")
    if full and not bool(np.isfinite(data).all()):
        raise ArtifactError(directory, "posting scores are not finite (corrupt)")


def describe_files(directory: Path) -> dict[str, dict]:
    """{relative name: {bytes, sha256}} of every file under `directory` but the manifest (index build)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "manifest.json")
    return {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}


def check_files(directory: Path, files: dict[str, dict] | None, checksum: bool) -> None:
    """Every file the manifest lists is inside `directory`, of its size, and (when asked) of its sha256."""
    for name, expected in (files or {}).items():
        path = inside(directory, name)
        check_model_file(path, expected.get("bytes"), expected.get("sha256", ""), checksum and "sha256" in expected)
