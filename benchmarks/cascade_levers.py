"""The levers that cut stage 2's multiply-adds, on the same queries and candidates (issue 32):

- the cascade: the first pass over every candidate, the served reranker over its best `keep`;
- the first pass at a shorter length (its pairs truncated to 128 tokens);
- query-aware windows: each passage's 128-token window with the most query terms (the first pass
  reads windows; or the served reranker reads windows and no first pass runs);
- the deadline's lever for comparison: only the first `keep` by stage-1 rank reranked (no first pass).

    python -m benchmarks.cascade_levers --data ../shared/data/scifact --split train --dev-only
    python -m benchmarks.cascade_levers --data ../shared/data/cranfield \
        --exclude ../shared/data/cranfield/source_docs.tsv

Every candidate is scored once by each model reading (hybrid, recall_k 100); each lever's answer is then
built from those scores (the cascade's with handler.rerank.cascade_order, as it serves), and its rerank
time from the per-query time of the model passes it needs, measured in this run. Prints nDCG@10 per
lever and keep, the difference to the served reranker reading every candidate, and the time.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.machine import describe
from evaluation.beir import dev_queries, load_beir, read_pairs
from evaluation.evaluate import Scores, _max_by_doc, cascaded, eval_index, metrics
from evaluation.settings import EvalSettings
from handler.onnx_model import CrossEncoder, FirstPass
from handler.pipeline import Retriever
from handler.settings import Settings

WINDOW_WORDS = 80  # ≈ 110 word pieces: with the query, a pair fits 128 tokens
WORD = re.compile(r"\w+")
STOP = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "that",
        "the",
        "to",
        "was",
        "were",
        "with",
        "what",
        "which",
    }
)


def best_window(query: str, title: str, text: str, words: int = WINDOW_WORDS) -> str:
    """The passage's `words`-word window holding the most distinct query terms (the earliest of equals),
    after its title."""
    terms = {w for w in WORD.findall(query.lower()) if w not in STOP}
    tokens = text.split()
    if len(tokens) <= words:
        return f"{title} {text}" if title else text
    hits = np.array([1 if t.lower().strip(".,;:()[]\"'") in terms else 0 for t in tokens])
    sums = np.convolve(hits, np.ones(words, dtype=int), mode="valid")
    start = int(np.argmax(sums))
    window = " ".join(tokens[start : start + words])
    return f"{title} {window}" if title else window


@dataclass
class Clock:
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, run):
        started = time.perf_counter()
        out = run()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return out


def run(args) -> None:
    data = load_beir(args.data, args.split)
    queries = dev_queries(data.queries, args.artifacts_dir / "models" / "cross") if args.dev_only else None
    queries = queries or data.queries
    exclude = read_pairs(args.exclude) if args.exclude else {}
    index = eval_index(EvalSettings(data=args.data, artifacts_dir=args.artifacts_dir))
    retriever = Retriever.from_settings(Settings(artifacts_dir=args.artifacts_dir, index_path=index))
    score = retriever.rerank.calibration.search
    shipped = args.artifacts_dir / "models" / "first_pass"
    readings = {name: (FirstPass(path, max_length=length), windowed) for name, (path, length, windowed) in (
        args.first_passes or {
            "first pass 256": (shipped, 256, False),
            "first pass 128": (shipped, 128, False),
            "first pass windows": (shipped, 128, True),
        }
    ).items()}  # fmt: skip
    served_128 = None if args.first_passes else CrossEncoder(args.artifacts_dir / "models" / "cross", max_length=128)
    clock, scored = Clock(), {}
    for qid, query in tqdm(queries.items(), desc="queries", unit="q"):
        top = retriever.recall(query, args.recall_k, "hybrid").without(exclude.get(qid, {}))
        passages = [c.passage for c in top.chunks]
        windows = [best_window(query, c.title, c.text) for c in top.chunks]
        docs, ranks, cosines = [c.doc_id for c in top.chunks], np.arange(1, len(top) + 1), top.cosines
        full = clock.timed("served", lambda top=top, query=query: retriever.rerank.candidates(query, top, keep=0))
        scored[qid] = {"served": full.scores, "docs": docs}
        if served_128 is not None:
            win = clock.timed("served on windows", lambda q=query, w=windows: served_128.logits(q, w))
            scored[qid]["served on windows"] = score(win, cosines, ranks, query_cosine=cosines.max())
        for name, (model, windowed) in readings.items():
            texts = windows if windowed else passages
            scored[qid][name] = clock.timed(name, lambda m=model, q=query, t=texts: m.logits(q, t))
    report(args, data.qrels, exclude, scored, clock, len(queries), score, list(readings))


def first_passes(spec: str) -> dict[str, tuple[Path, int, bool]]:
    """`name=DIR:LENGTH,…`: exported first passes to compare, each at its max length."""
    out = {}
    for item in spec.split(","):
        name, _, where = item.partition("=")
        path, _, length = where.rpartition(":")
        out[f"first pass {name}"] = (Path(path), int(length), False)
    return out


def report(args, qrels, exclude, scored, clock, queries: int, score, readings: list[str]) -> None:
    qrels = {q: {d: r for d, r in docs.items() if d not in exclude.get(q, {})} for q, docs in qrels.items()}
    per_query = {name: seconds / queries * 1000 for name, seconds in clock.seconds.items()}
    per_pair = per_query["served"] / args.recall_k

    def ndcg(run: dict) -> float:
        return metrics({q: qrels.get(q, {}) for q in run}, run, args.recall_k)["ndcg@10"]

    answers = {q: _max_by_doc(s["docs"], s["served"]) for q, s in scored.items()}

    def same_top10(run: dict) -> float:
        """Label-free: the share of the every-candidate answer's top 10 documents in this lever's top 10."""
        return float(np.mean([len(_top10(run[q]) & _top10(answers[q])) / max(1, len(_top10(answers[q]))) for q in run]))

    full = ndcg(answers)
    rows = [("served reranker, every candidate", "—", full, per_query["served"], 1.0)]
    if "served on windows" in per_query:
        run = {q: _max_by_doc(s["docs"], s["served on windows"]) for q, s in scored.items()}
        rows.append(
            ("served reranker on windows (128 tokens)", "—", ndcg(run), per_query["served on windows"], same_top10(run))
        )
    for keep in args.keeps:
        prefix = {q: _max_by_doc(s["docs"][:keep], s["served"][:keep]) for q, s in scored.items()}
        rows.append(
            ("stage-1 order, first keep (a deadline's)", keep, ndcg(prefix), per_pair * keep, same_top10(prefix))
        )
        for first in readings:
            run = {q: cascaded(Scores(s["docs"], s["served"], s[first]), keep, score) for q, s in scored.items()}
            rows.append((f"cascade: {first}", keep, ndcg(run), per_query[first] + per_pair * keep, same_top10(run)))
    print(f"{queries} queries of {args.data.name} ({args.split}{', dev' if args.dev_only else ''}), hybrid, "
          f"recall_k {args.recall_k}; model passes per query: "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in per_query.items()))  # fmt: skip
    print("| lever | keep | nDCG@10 | Δ to every candidate | same top 10 | rerank ms per query | ÷ every candidate |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, keep, value, ms, same in rows:
        ratio = ms / per_query["served"]
        print(f"| {name} | {keep} | {value:.4f} | {value - full:+.4f} | {same:.3f} | {ms:.0f} | {ratio:.2f} |")


def _top10(run: dict[str, float]) -> set[str]:
    return set(sorted(run, key=run.get, reverse=True)[:10])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts", type=Path)
    parser.add_argument("--data", default="../shared/data/scifact", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--dev-only", action="store_true", help="the reranker's held-out dev queries of the split")
    parser.add_argument("--exclude", type=Path, help="query-id, corpus-id pairs removed from every ranking")
    parser.add_argument("--recall-k", type=int, default=100)
    parser.add_argument("--keeps", default="10,20,30,50")
    parser.add_argument(
        "--first-passes",
        type=first_passes,
        help="name=DIR:LENGTH,…: exported first passes to compare instead of models/first_pass at 256, 128 and on "
        "windows (the windows levers are then left out)",
    )
    args = parser.parse_args()
    args.keeps = [int(k) for k in args.keeps.split(",")]
    print(describe())
    run(args)


if __name__ == "__main__":
    main()
