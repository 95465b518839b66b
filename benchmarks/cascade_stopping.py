"""When the cascade stops reading (issue 32): stopping rules for reading on past cascade_keep, on the
same queries and candidates.

    python -m benchmarks.cascade_stopping --data ../shared/data/scifact --split train

The served reranker reads every candidate once (hybrid, recall_k 100, the serving pipeline); each rule's
answer is built from those logits. The rules, each over keeps and ceilings:

- serving's: read on 10 at a time while an unread candidate at the ceiling could still come first
  (handler.rerank.cascade_reads itself; tests check this module's loop against it);
- the same in steps of 5;
- near miss: also stop once the last 10 read hold no candidate within `m` logits of the 10th best;
- sides agree: read on only when stage 1's dense and BM25 top 10 share at most `tau` documents.

Prints nDCG@10 against reading every candidate (paired t-test, better / tied / worse), reads (mean,
p50, p60) and the share of queries reading past the keep: the p50 time holds only when a clear
majority stops at the keep.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from evaluation.beir import load_beir, read_pairs
from evaluation.evaluate import Scores, eval_index, metrics, read_answer, run_queries, significance
from evaluation.settings import EvalSettings
from handler.calibration import Logistic
from handler.pipeline import Retriever
from handler.rerank import CEILING_BLOCK, cascade_reads, reading_on_logit
from handler.settings import Settings

SIDE_TOP = 10


def reads(
    logits: np.ndarray,
    keep: int,
    score: Logistic,
    ceiling: float | None,
    block: int = CEILING_BLOCK,
    margin: float | None = None,
) -> int:
    """How many candidates (in stage-1 order) the served reranker reads: the first `keep`, then `block` at
    a time while one at the `ceiling` logit could come first; with a `margin`, only while the last
    CEILING_BLOCK read hold a candidate within `margin` logits of the 10th best order key so far."""
    n, read = len(logits), min(keep, len(logits))
    while ceiling is not None and read < n:
        key = score.order_key(logits[:read], np.arange(1, read + 1))
        if score.order_key(ceiling, read + 1) <= key.max():
            break
        tenth = np.sort(key)[-min(10, read)]
        if margin is not None and key[-CEILING_BLOCK:].max() < tenth - margin * score.a:
            break
        read = min(n, read + block)
    return read


def answer(scores: Scores, read: int) -> dict[str, float]:
    """The served answer when the first `read` candidates in stage-1 order were read (as eval builds it)."""
    return read_answer(scores, np.arange(len(scores.docs)), read)


def served_reads(scores: Scores, keep: int, score: Logistic, ceiling: float | None) -> int:
    """What serving's own loop reads."""
    order = np.arange(len(scores.docs))
    return len(cascade_reads(order, keep, lambda candidates: scores.logits[candidates], score, ceiling)[0])


def sides_overlap(retriever: Retriever, queries: dict[str, str]) -> dict[str, int]:
    """Documents stage 1's dense and BM25 sides share in their top SIDE_TOP, per query."""
    overlap = {}
    for qid, query in queries.items():
        tops = [
            list(dict.fromkeys(c.doc_id for c in retriever.recall(query, 3 * SIDE_TOP, mode).chunks))[:SIDE_TOP]
            for mode in ("dense", "bm25")
        ]
        overlap[qid] = len(set(tops[0]) & set(tops[1]))
    return overlap


def row(name: str, counts: dict[str, int], scored: dict[str, Scores], qrels: dict, every: dict, keep: int) -> str:
    run = {q: answer(s, counts[q]) for q, s in scored.items()}
    versus, values = significance(qrels, every, run), np.array(list(counts.values()))
    better, tied, worse = versus["wins_ties_losses"]
    spread = f"{values.mean():.1f} / {np.median(values):.0f} / {np.percentile(values, 60):.0f}"
    return (
        f"| {name} | {versus['delta']:+.4f} | {versus['p_value']:.4f} | {better} / {tied} / {worse} | "
        f"{spread} | {(values > keep).mean():.3f} |"
    )


def run(args) -> None:
    data = load_beir(args.data, args.split)
    if args.max_queries:
        data.queries = dict(list(data.queries.items())[: args.max_queries])
    exclude = read_pairs(args.exclude) if args.exclude else {}
    settings = EvalSettings(data=args.data, split=args.split, mode="hybrid", recall_k=args.recall_k, diagnose_depth=1)
    retriever = Retriever.from_settings(Settings(artifacts_dir=settings.artifacts_dir, index_path=eval_index(settings)))
    calibration, score = retriever.rerank.calibration, retriever.rerank.calibration.search
    scored = run_queries(retriever, data, settings, exclude).scored
    qrels = {q: {d: r for d, r in data.qrels[q].items() if d not in exclude.get(q, {})} for q in scored}
    overlap = sides_overlap(retriever, data.queries)
    every = {q: answer(s, len(s.docs)) for q, s in scored.items()}
    print(describe())
    print(f"{len(scored)} queries; every candidate read: nDCG@10 {metrics(qrels, every, args.recall_k)['ndcg@10']:.4f}")
    print("| rule | nDCG@10 − every candidate | p | better / tied / worse | reads mean / p50 / p60 | reading on |")
    print("| --- | --- | --- | --- | --- | --- |")
    for keep in args.keeps:
        for ceiling in args.ceilings:
            logit = reading_on_logit(ceiling, calibration)
            served = {q: served_reads(s, keep, score, logit) for q, s in scored.items()}
            name = f"keep {keep}, ceiling {ceiling:g}"
            print(row(name, served, scored, qrels, every, keep))
            steps = {q: reads(s.logits, keep, score, logit, block=5) for q, s in scored.items()}
            print(row(f"{name}, steps of 5", steps, scored, qrels, every, keep))
            for margin in args.margins:
                near = {q: reads(s.logits, keep, score, logit, margin=margin) for q, s in scored.items()}
                print(row(f"{name}, near miss {margin:g}", near, scored, qrels, every, keep))
            for tau in args.taus:
                gated = {q: served[q] if overlap[q] <= tau else min(keep, served[q]) for q in scored}
                print(row(f"{name}, sides share ≤ {tau}", gated, scored, qrels, every, keep))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--exclude", type=Path, default=None)
    parser.add_argument("--recall-k", type=int, default=100)
    parser.add_argument("--max-queries", type=int, default=None, help="only the first N queries (a smoke run)")
    parser.add_argument("--keeps", type=_ints, default=[20, 25, 30])
    parser.add_argument("--ceilings", type=_floats, default=[0.6, 0.7, 0.8, 0.9, 0.95])
    parser.add_argument("--margins", type=_floats, default=[0, 2, 4, 8], help="near-miss margins, in logits")
    parser.add_argument("--taus", type=_ints, default=[2, 4, 6, 8], help="most documents the two sides share")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
