"""Two rerankers on the same queries and the same stage-1 candidates, with paired tests (issue 34): our
SciFact reranker against one adapted to a corpus without labels (`twostage train --corpus`).

    python -m benchmarks.adapted_reranker --data ../shared/data/cranfield \\
        --exclude ../shared/data/cranfield/source_docs.tsv \\
        --artifacts artifacts --other-artifacts artifacts-cranfield

Both artifact directories must hold the same bi-encoder (the eval index is shared); every reranker reads
every candidate (cascade off). Prints nDCG@10 of stage 1 and of each two-stage run, and paired t-tests
(ranx): each two-stage run against stage 1, and the two against each other.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from tqdm import tqdm

from benchmarks.machine import describe
from evaluation.beir import load_beir, read_pairs
from evaluation.evaluate import _max_by_doc, eval_index, metrics
from evaluation.settings import EvalSettings
from handler.pipeline import Retriever
from handler.settings import Settings


def runs_of(retrievers: dict[str, Retriever], queries: dict, exclude: dict, recall_k: int, mode: str) -> dict:
    first = next(iter(retrievers.values()))
    runs: dict[str, dict] = {"stage1": {}} | {name: {} for name in retrievers}
    for qid, text in tqdm(queries.items(), desc="queries", unit="q"):
        top = first.recall(text, recall_k, mode).without(exclude.get(qid, {}))
        docs = [c.doc_id for c in top.chunks]
        runs["stage1"][qid] = _max_by_doc(docs, [c.score for c in top.candidates])
        for name, retriever in retrievers.items():
            runs[name][qid] = _max_by_doc(docs, retriever.rerank.candidates(text, top, keep=0).scores)
    return runs


def compare(qrels: dict, runs: dict, metric: str = "ndcg@10") -> dict:
    from ranx import Qrels, Run
    from ranx import compare as ranx_compare

    named = [Run.from_dict({q: d for q, d in run.items() if d}, name=name) for name, run in runs.items()]
    return ranx_compare(Qrels.from_dict(qrels), named, [metric], stat_test="student", make_comparable=True).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--exclude", type=Path)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="the first reranker's artifacts")
    parser.add_argument("--other-artifacts", type=Path, required=True, help="the second reranker's artifacts")
    parser.add_argument("--names", default="scifact reranker,adapted reranker")
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("--recall-k", type=int, default=100)
    args = parser.parse_args()
    print(describe())
    data = load_beir(args.data, args.split)
    exclude = read_pairs(args.exclude) if args.exclude else {}
    index = eval_index(EvalSettings(data=args.data, artifacts_dir=args.artifacts))
    names = args.names.split(",")
    retrievers = {
        name: Retriever.from_settings(Settings(artifacts_dir=root, index_path=index, cascade_keep=0))
        for name, root in zip(names, (args.artifacts, args.other_artifacts), strict=True)
    }
    qrels = {q: {d: r for d, r in docs.items() if d not in exclude.get(q, {})} for q, docs in data.qrels.items()}
    runs = runs_of(retrievers, data.queries, exclude, args.recall_k, args.mode)
    print(f"{len(data.queries)} queries of {args.data.name} ({args.split}), {args.mode}, recall_k {args.recall_k}")
    print("| run | nDCG@10 | MRR@10 | Recall@10 |\n| --- | --- | --- | --- |")
    for name, run in runs.items():
        m = metrics(qrels, run, args.recall_k)
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | {m['recall@10']:.4f} |")
    report = compare(qrels, runs)
    print("\npaired t-test on nDCG@10 (ranx), p-values and wins/ties/losses of the row against the column:")
    for b, a in itertools.combinations(runs, 2):
        p = report[a]["comparisons"][b]["ndcg@10"]
        wtl = report[a]["win_tie_loss"][b]["ndcg@10"]
        print(f"- {a} vs {b}: p = {p:.4f}; {wtl['W']} / {wtl['T']} / {wtl['L']}")


if __name__ == "__main__":
    main()
