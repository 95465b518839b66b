"""Questions written from a corpus, with their answers known: no labels needed.

Each pseudo-query comes from one document and names it as its answer; every other document is padding
for it. How it is written (`kind`):
- `leading` (the default for `calibrate --corpus`): the text's first sentence, removed from that
  document, so that stage 1 and the reranker must find the answer the way they find it for a real
  question, not by the words it was copied from; a document's opening states what it is about, as a
  question to it does;
- `sentence`: any one sentence of the text, removed likewise (the inverse cloze task);
- `title`: the document's title (kept in the document: titles are part of what both models read; too
  easy to calibrate a floor on, docs/results.md §18).
The documents they were removed from are indexed as a copy of the corpus (`corpus_without_spans`), so
served stages run over what a real query meets.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from index_build.corpus import Document, read_corpus

Kind = Literal["sentence", "leading", "title"]
# A sentence ends at . ! ? before a capital, or, in tokenised text (Cranfield's lowercased " . "), at a
# stop standing alone between spaces.
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])|(?<=\s[.!?])\s+")
MIN_WORDS, MAX_WORDS = 6, 40


@dataclass(frozen=True)
class PseudoQuery:
    text: str
    doc_id: str  # the document that answers it
    kind: str


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE.split(text) if s.strip()]


def write_pseudo_queries(
    corpus: Path, kind: Kind, count: int, seed: int = 13
) -> tuple[list[PseudoQuery], dict[str, Document]]:
    """`count` pseudo-queries from distinct documents, and those documents as they are to be indexed
    (a sentence taken out for `sentence` and `leading`)."""
    rng = random.Random(seed)
    docs = list(read_corpus(corpus))
    rng.shuffle(docs)
    queries, changed = [], {}
    for doc in docs:
        if len(queries) == count:
            break
        made = _one(doc, kind, rng)
        if made is not None:
            query, rest = made
            queries.append(PseudoQuery(query, doc.id, kind))
            if rest is not None:
                changed[doc.id] = Document(id=doc.id, text=rest, title=doc.title, metadata=doc.metadata)
    return queries, changed


def _one(doc: Document, kind: Kind, rng: random.Random) -> tuple[str, str | None] | None:
    if kind == "title":
        return (doc.title, None) if doc.title and len(doc.title.split()) >= 3 and doc.text else None
    parts = sentences(doc.text)
    usable = [i for i, s in enumerate(parts) if MIN_WORDS <= len(s.split()) <= MAX_WORDS]
    if len(parts) < 2 or not usable or (kind == "leading" and usable[0] != 0):
        return None
    pick = 0 if kind == "leading" else rng.choice(usable)
    return parts[pick], " ".join(parts[:pick] + parts[pick + 1 :])


def corpus_without_spans(corpus: Path, changed: dict[str, Document], target: Path) -> Path:
    """The corpus as JSONL with the pseudo-queries' sentences taken out of their documents."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w") as out:
        for doc in read_corpus(corpus):
            doc = changed.get(doc.id, doc)
            out.write(json.dumps({"id": doc.id, "title": doc.title, "text": doc.text, "metadata": doc.metadata}) + "\n")
    return target


SHIPPED_OFF_TOPIC = Path(__file__).parent / "off_topic_questions.txt"


def off_topic_questions(path: Path = SHIPPED_OFF_TOPIC) -> list[str]:
    """Off-topic questions, one a line (`#` lines are comments): the generic set shipped with the package,
    or the user's own."""
    return [q.strip() for q in path.read_text().splitlines() if q.strip() and not q.startswith("#")]
