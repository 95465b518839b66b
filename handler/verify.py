"""Artifact checks before the first request: a wrong or corrupt file fails init, naming the file.

Every file beside a manifest is recorded in it (size, sha256, and the sha256 of a fixed sample of its
blocks); an artifact without that record is refused with the command that makes one. `quick` (every
cold start) checks sizes and sampled checksums, each model's files in full, hnswlib's graph
(handler/hnsw_file.py) and counts; `full` adds every file's whole sha256, SQLite's `quick_check` and the
BM25 postings' range scan, and runs where nobody waits: the SnapStart priming, a provisioned init,
`twostage serve` when asked (TWOSTAGE_VERIFY=full). Costs: docs/results.md §10.
Why each matters: hnswlib trusts its file and dies by a signal on a bad id; a doc store or BM25
artifact that disagrees with the index answers wrong results or 500s while /health says ok.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from handler.errors import ArtifactError
from handler.manifest import MANIFEST_NAME, FileRecord, describe_file, sample_sha256, sha256_file

# RoBERTa-family models start positions after the padding index: pad_token_id + 1 of them are unusable.
POSITION_OFFSET_MODELS = {"roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl"}
SQLITE_MAGIC = b"SQLite format 3\x00"


RECORD = "record what is there now with `twostage verify --record`"


def inside(directory: Path, name: str) -> Path:
    """`directory / name`, refused when a manifest's name escapes its directory (`../../etc/passwd`)."""
    try:
        root = directory.resolve(strict=True)
        path = (root / name).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # a symlink loop, a NUL byte
        raise ArtifactError(directory / name, f"unreadable path ({error})") from None
    if not path.is_relative_to(root):
        raise ArtifactError(directory / MANIFEST_NAME, f"file {name!r} lies outside {directory}")
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
    try:
        config = json.loads(config_path.read_bytes())
    except (OSError, ValueError) as error:
        raise ArtifactError(config_path, f"not a readable JSON config ({error})") from None
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(positions, int) or isinstance(positions, bool) or positions < 1:
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


def describe_files(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, FileRecord]:
    """A record of every file under `directory` but the manifest and `skip` (index build, export)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in (MANIFEST_NAME, *skip))
    return {str(p.relative_to(directory)): describe_file(p) for p in files}


def check_file_records(directory: Path, files: dict[str, FileRecord] | None, full: bool, rebuild: str) -> None:
    """Every file the manifest records is inside `directory` and is the one recorded: its size and
    sampled sha256 always, its whole sha256 when `full`. No record: refused, naming how to make one."""
    manifest = directory / MANIFEST_NAME
    if not files:
        raise ArtifactError(manifest, f"records no files (made by an older twostage): {rebuild}, or {RECORD}")
    for name, record in files.items():
        path = inside(directory, name)
        size = path.stat().st_size
        if size != record.bytes:
            raise ArtifactError(path, f"{size} bytes, manifest.json says {record.bytes} (truncated or replaced)")
        if full and sha256_file(path) != record.sha256:
            raise ArtifactError(
                path, f"sha256 differs from manifest.json's {record.sha256[:12]}… (corrupt or replaced)"
            )
        if not full:
            if record.sample_sha256 is None:
                raise ArtifactError(manifest, f"records no sampled checksum for {name}: {rebuild}, or {RECORD}")
            if sample_sha256(path) != record.sample_sha256:
                raise ArtifactError(path, "sampled sha256 differs from manifest.json's (corrupt or replaced)")
