"""Read a BEIR-format directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from handler.manifest import TRAINING_LOG


@dataclass
class BeirData:
    root: Path
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]

    @property
    def corpus(self) -> Path:
        return self.root / "corpus.jsonl"


def corpus_titles(path: Path, n: int, seed: int = 0) -> dict[str, str]:
    """`n` titles of a corpus (a fixed random sample), keyed by document id: questions from another
    collection that touch none of its judged queries."""
    titles = {}
    with open(path) as handle:
        for line in handle:
            row = json.loads(line)
            if str(row.get("title", "")).strip():
                titles[str(row["_id"])] = row["title"].strip()
    return dict(random.Random(seed).sample(sorted(titles.items()), min(n, len(titles))))


def read_pairs(path: Path) -> dict[str, dict[str, int]]:
    """query-id → {corpus-id: score} from a TSV with a header row (BEIR qrels, exclusion lists)."""
    pairs: dict[str, dict[str, int]] = {}
    with open(path, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader, None)
        for row in reader:
            if len(row) >= 2:
                pairs.setdefault(row[0], {})[row[1]] = int(row[2]) if len(row) > 2 else 1
    return pairs


def dev_queries(queries: dict[str, str], cross_dir: Path) -> dict[str, str] | None:
    """The queries the reranker held out as its dev split (recorded in its training log), or None when
    it carries no such record: settings are chosen on these, never on the test split."""
    log_path = cross_dir / TRAINING_LOG
    dev = set(json.loads(log_path.read_text()).get("dev_query_ids", [])) if log_path.is_file() else set()
    return {q: t for q, t in queries.items() if q in dev} if dev else None


def load_beir(root: Path, split: str) -> BeirData:
    qrels_path = root / "qrels" / f"{split}.tsv"
    for needed in (root / "corpus.jsonl", root / "queries.jsonl", qrels_path):
        if not needed.is_file():
            raise FileNotFoundError(f"not a BEIR directory for split {split!r}: missing {needed}")
    qrels = read_pairs(qrels_path)
    queries = {}
    with open(root / "queries.jsonl") as handle:
        for line in handle:
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = row["text"]
    return BeirData(root, queries, {q: qrels[q] for q in queries})
