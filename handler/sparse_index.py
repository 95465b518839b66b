"""The BM25 side of stage 1: a bm25s artifact over the same chunks (labels) as the hnswlib index."""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from handler.errors import ArtifactError, IndexMismatchError
from handler.manifest import IndexManifest
from handler.verify import check_bm25_arrays

BM25_DIR = "bm25"


def bm25_tokenize(texts: list[str], settings: dict) -> list[list[str]]:
    """One tokenizer for build and query: bm25s' regex split, stopwords, optional Snowball stemmer."""
    import bm25s

    stemmer = None
    if settings.get("stemmer"):
        import Stemmer

        stemmer = Stemmer.Stemmer(settings["stemmer"])
    return bm25s.tokenize(
        texts, stopwords=settings.get("stopwords"), stemmer=stemmer, return_ids=False, show_progress=False
    )


def check_tokenizer(index_dir: Path, settings: dict) -> None:
    """The recorded stemmer and stopwords are ones this runtime has: else init fails naming the field."""
    import Stemmer

    if settings.get("stemmer") and settings["stemmer"] not in Stemmer.algorithms():
        raise ArtifactError(
            index_dir / "manifest.json", f"bm25.stemmer: {settings['stemmer']!r} is not a known stemmer"
        )
    try:
        bm25_tokenize(["probe"], settings)
    except (TypeError, ValueError) as error:
        raise ArtifactError(index_dir / "manifest.json", f"bm25.stopwords: {error}") from None


class BM25Index:
    """Loaded only when the index manifest lists a BM25 artifact; checked against it like the dense side."""

    def __init__(self, index_dir: Path, manifest: IndexManifest, full: bool = False):
        import bm25s

        self.settings = manifest.bm25.model_dump() if manifest.bm25 else {}
        self.directory = index_dir / BM25_DIR
        check_tokenizer(index_dir, self.settings)
        try:
            self.bm25 = bm25s.BM25.load(str(self.directory), mmap=True, show_progress=False)
        except (OSError, ValueError, KeyError) as error:  # missing, truncated or unparsable arrays
            raise ArtifactError(self.directory, f"unreadable BM25 artifact ({error})") from None
        scores = self.bm25.scores
        chunks = int(scores["num_docs"])
        vocab = len(self.bm25.vocab_dict) - ("" in self.bm25.vocab_dict)  # bm25s' "" term has no postings
        check_bm25_arrays(self.directory, scores["data"], scores["indices"], scores["indptr"], vocab, chunks, full)
        if chunks != manifest.count:
            raise IndexMismatchError(
                f"BM25 artifact in {index_dir} holds {chunks} chunks but the dense index "
                f"{manifest.count}; rebuild with `twostage index`"
            )

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels and BM25 scores, best first (of the chunks `allowed` admits, when given); empty
        when no query term is in the vocabulary."""
        tokens = bm25_tokenize([query], self.settings)[0]
        ids = self.bm25.get_tokens_ids(tokens)
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        try:
            scores = self.bm25.get_scores_from_ids(ids)
        except (IndexError, ValueError) as error:  # postings damaged past the quick checks (TWOSTAGE_VERIFY=full)
            raise ArtifactError(self.directory, f"corrupt postings ({error!r})") from None
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        k = min(k, int((scores > 0).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return top.astype(np.int64), scores[top].astype(np.float32)


# BM25 as sparse vectors for a store that computes IDF itself (Qdrant's IDF modifier: ln(1 + (N − df +
# 0.5)/(df + 0.5)), bm25s' "lucene" IDF): documents carry the term-frequency part, queries their term
# counts, so the dot product is bm25s' score and the IDF stays right as the collection grows.
def term_id(token: str) -> int:
    """A stable 32-bit id per term (no vocabulary to ship: the store and every query agree by hashing)."""
    return zlib.crc32(token.encode("utf-8"))


def bm25_document_vector(tokens: list[str], avgdl: float, k1: float, b: float) -> tuple[list[int], list[float]]:
    counts = Counter(tokens)
    norm = k1 * (1 - b + b * len(tokens) / avgdl)
    weights: dict[int, float] = defaultdict(float)
    for token, tf in counts.items():
        weights[term_id(token)] += tf / (tf + norm)
    return list(weights), list(weights.values())


def bm25_query_vector(tokens: list[str]) -> tuple[list[int], list[float]]:
    weights: dict[int, float] = defaultdict(float)
    for token in tokens:
        weights[term_id(token)] += 1.0
    return list(weights), list(weights.values())
