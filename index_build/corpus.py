"""Read a corpus JSONL and cut long passages into token windows that fit the bi-encoder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer


class CorpusError(ValueError):
    pass


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def read_corpus(path: Path) -> Iterator[Document]:
    """`id` (or BEIR's `_id`) and `text` required; `title` and `metadata` optional."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = row.get("id", row.get("_id"))
                if doc_id is None or not isinstance(row.get("text"), str):
                    raise KeyError("needs `id` (or `_id`) and a string `text`")
                yield Document(str(doc_id), row["text"], row.get("title") or "", row.get("metadata") or {})
            except (json.JSONDecodeError, KeyError, AttributeError) as error:
                raise CorpusError(f"{path}:{number}: {error}") from error


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
