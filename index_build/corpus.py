"""Read a corpus in the formats users have, and cut long passages into token windows that fit the bi-encoder.

Formats, by the path: `.jsonl` (one JSON object a line), `.csv`/`.tsv`, `.parquet` (or a directory of
Parquet files), or a directory of `.txt`/`.md`/`.html` files (id = the relative path, title = the first
Markdown heading or the HTML <title>). Rows need an id and a text; the field names are mappable
(`--id-field`, `--text-field`, `--title-field`). In tables, columns beyond those become metadata.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm"}
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)


class CorpusError(ValueError):
    pass


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fields:
    """Which fields of a row are the id, text and title (id: `id`, else BEIR's `_id`)."""

    id: str | None = None
    text: str = "text"
    title: str = "title"

    def document(self, row: dict, where: str) -> Document:
        doc_id = row.get(self.id) if self.id else row.get("id", row.get("_id"))
        text = row.get(self.text)
        if doc_id is None or doc_id == "" or not isinstance(text, str):
            raise CorpusError(f"{where}: needs `{self.id or 'id'}` and a string `{self.text}`")
        title = row.get(self.title) or ""
        named = {self.id or "id", "_id", self.text, self.title, "metadata"}
        given = row.get("metadata") or {}
        if isinstance(given, str):  # Parquet and CSV carry it as JSON text (one column type for every row)
            given = json.loads(given)
        metadata = dict(given) | {k: v for k, v in row.items() if k not in named and v is not None}
        return Document(str(doc_id), text, str(title), metadata)


DEFAULT_FIELDS = Fields()


def read_corpus(path: Path, fields: Fields = DEFAULT_FIELDS) -> Iterator[Document]:
    """Documents of `path`, in file order; the format follows from the path (module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {path}")
    if path.is_dir():
        if any(path.glob("*.parquet")):
            yield from _read_parquet(sorted(path.glob("*.parquet")), fields)
        else:
            yield from _read_text_files(path)
        return
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from _read_csv(path, fields, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        yield from _read_parquet([path], fields)
    else:
        yield from _read_jsonl(path, fields)


def _read_jsonl(path: Path, fields: Fields) -> Iterator[Document]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{path}:{number}: {error}") from error
            if not isinstance(row, dict):
                raise CorpusError(f"{path}:{number}: not a JSON object")
            yield fields.document(row, f"{path}:{number}")


def _read_csv(path: Path, fields: Fields, delimiter: str) -> Iterator[Document]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle, delimiter=delimiter), 2):  # line 1 is the header
            yield fields.document({k: v for k, v in row.items() if k is not None}, f"{path}:{number}")


def _read_parquet(paths: list[Path], fields: Fields) -> Iterator[Document]:
    import pyarrow.parquet as pq  # the build extra; only Parquet corpora need it

    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):  # streamed, not the whole table
            for number, row in enumerate(batch.to_pylist()):
                yield fields.document(row, f"{path} row {number}")


class _HtmlText(HTMLParser):
    """Visible text and <title> of an HTML page (scripts and styles dropped)."""

    def __init__(self):
        super().__init__()
        self.title, self.parts, self._skip, self._in_title = "", [], 0, False

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")
        self._in_title = self._in_title or tag == "title"

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0
        self._in_title = self._in_title and tag != "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def _read_text_files(root: Path) -> Iterator[Document]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise CorpusError(f"{root}: no .parquet, .txt, .md or .html files")
    for path in files:
        raw = path.read_text(encoding="utf-8", errors="replace")
        doc_id = path.relative_to(root).as_posix()
        if path.suffix.lower() in (".html", ".htm"):
            page = _HtmlText()
            page.feed(raw)
            text = " ".join(" ".join(page.parts).split())
            yield Document(doc_id, text, " ".join(page.title.split()), {"path": doc_id})
        else:
            heading = HEADING.search(raw) if path.suffix.lower() != ".txt" else None
            title = heading.group(1).strip() if heading else ""
            text = (raw[: heading.start()] + raw[heading.end() :]) if heading else raw  # the title is not repeated
            yield Document(doc_id, text.strip(), title, {"path": doc_id})


def passage_chunker(tokenizer_file: Path, max_length: int, passage_prompt: str, overlap: int) -> Chunker:
    """The serving tokenizer's windows. The passage prompt is embedded with every chunk, so its tokens
    come off each window."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    reserved = len(tokenizer.encode(passage_prompt, add_special_tokens=False).ids) if passage_prompt else 0
    return Chunker(tokenizer, max_length - reserved, overlap)


class Chunker:
    """Windows of at most max_length tokens (title included, specials counted) with overlap."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, overlap: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.overlap = overlap

    def pieces(self, doc: Document) -> list[str]:
        title_tokens = len(self.tokenizer.encode(doc.title, add_special_tokens=False).ids) if doc.title else 0
        budget = max(16, self.max_length - 3 - title_tokens)  # [CLS] … [SEP] and the title's separator
        offsets = self.tokenizer.encode(doc.text, add_special_tokens=False).offsets
        if len(offsets) <= budget:
            return [doc.text]
        step = max(1, budget - min(self.overlap, budget // 2))
        pieces = []
        for start in range(0, len(offsets), step):
            window = offsets[start : start + budget]
            pieces.append(doc.text[window[0][0] : window[-1][1]])
            if start + budget >= len(offsets):
                break
        return pieces
