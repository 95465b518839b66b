"""Every judged query through the serving pipeline's stages; metrics per stage with ranx."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.beir import BeirData, dev_queries, load_beir, read_pairs
from evaluation.score_fit import gate_of_scores
from evaluation.settings import EvalSettings
from handler.artifacts import Artifacts
from handler.calibration import Logistic
from handler.manifest import ModelManifest
from handler.pipeline import Retriever
from handler.rerank import Rerank, cascade_order, cascade_reads, reading_on_logit
from handler.settings import Settings

CUTOFFS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")
GATE_TOP = 10  # the results a default /search answers: the gate is measured on these


@dataclass
class Scores:
    """One query's candidates in stage-1 order: their docs, every candidate's served score (the served
    reranker reading all of them) and the first pass's logit (None without a first pass)."""

    docs: list[str]
    served: np.ndarray
    first_pass: np.ndarray | None
    logits: np.ndarray | None = None  # the served reranker's (what the cascade's ceiling compares)


@dataclass
class Runs:
    """query → {doc: score} per stage; chunked documents count once (max over chunks)."""

    stage1: dict[str, dict[str, float]] = field(default_factory=dict)
    stage1_ranks: dict[str, dict[str, int]] = field(default_factory=dict)  # deep stage-1 doc ranks
    scored: dict[str, Scores] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: {"first_pass": 0.0, "served": 0.0, "pairs": 0.0})

    def budgeted(self, pairs: int) -> dict[str, dict[str, float]]:
        """The answer when only the first `pairs` stage-1 candidates are reranked (a deadline's)."""
        return {q: _max_by_doc(s.docs[:pairs], s.served[:pairs]) for q, s in self.scored.items()}

    def cascaded(self, keep: int, score: Logistic, ceiling: float | None = None) -> dict[str, dict[str, float]]:
        """The served answer when the served reranker reads the first pass's best `keep` (0: all; without a
        first-pass model, the first `keep` in stage-1 order), reading on to the `ceiling` logit if given."""
        return {q: cascaded(s, keep, score, ceiling) for q, s in self.scored.items()}

    def reads(self, keep: int, score: Logistic, ceiling: float | None = None) -> float:
        """Candidates the served reranker reads per query under that cascade, on average."""
        return float(np.mean(self.read_counts(keep, score, ceiling) or [0.0]))

    def read_counts(self, keep: int, score: Logistic, ceiling: float | None = None) -> list[int]:
        """Candidates the served reranker reads, query by query."""
        return [cascade_read(s, keep, score, ceiling)[1] for s in self.scored.values()]


def cascade_read(scores: Scores, keep: int, score: Logistic, ceiling: float | None = None) -> tuple[np.ndarray, int]:
    """The cascade's reading order and how many of its first the served reranker reads (serving's loop)."""
    if not 0 < keep < len(scores.docs):
        return np.arange(len(scores.docs)), len(scores.docs)
    order = cascade_order(scores.first_pass, score, len(scores.docs))
    return order, len(cascade_reads(order, keep, lambda candidates: scores.logits[candidates], score, ceiling)[0])


def cascaded(scores: Scores, keep: int, score: Logistic, ceiling: float | None = None) -> dict[str, float]:
    """The candidates the served reranker reads by their served score, the rest below them in the first
    pass's order (serving answers only from the first; recall@100 still sees the rest)."""
    return read_answer(scores, *cascade_read(scores, keep, score, ceiling))


def read_answer(scores: Scores, order: np.ndarray, read: int) -> dict[str, float]:
    """The answer when the served reranker read `order`'s first `read`: those by their served score, the
    rest below them in `order`."""
    if read == len(order):
        return _max_by_doc(scores.docs, scores.served)
    values = np.empty(len(scores.docs))
    values[order[:read]] = scores.served[order[:read]]
    values[order[read:]] = -1.0 - np.arange(len(order) - read)  # below every 0–1 score, and below the floor
    return _max_by_doc(scores.docs, values)


def _max_by_doc(doc_ids: list[str], scores) -> dict[str, float]:
    best: dict[str, float] = {}
    for doc, score in zip(doc_ids, scores, strict=True):
        if doc not in best or score > best[doc]:
            best[doc] = float(score)
    return best


def eval_index(settings: EvalSettings) -> Path:
    """The index over the data's corpus under eval_dir, built by our own index_build or reused."""
    from index_build.build import ensure_index
    from index_build.settings import IndexSettings

    name = settings.data.resolve().name + ("" if settings.chunking else "-nochunk")
    return ensure_index(
        IndexSettings(
            corpus=settings.data / "corpus.jsonl",
            artifacts_dir=settings.artifacts_dir,
            index_path=settings.eval_dir / name / "index",
            chunking=settings.chunking,
        )
    )


def eval_collection(settings: EvalSettings, index_dir: Path) -> None:
    """The Qdrant collection holding the eval index's chunks and its very vectors (a comparison of
    the stores alone); a later run finds them there and copies nothing."""
    from index_build.qdrant_load import load_collection
    from index_build.settings import IndexSettings

    load_collection(
        IndexSettings(
            artifacts_dir=settings.artifacts_dir,
            from_index=index_dir,
            chunking=settings.chunking,
            **settings.stage1_store(),
        )
    )


def run_queries(retriever: Retriever, data: BeirData, settings: EvalSettings, exclude: dict) -> Runs:
    """Stage 1 exactly as served (recall_k), plus a deeper stage-1 search only to place recall misses."""
    runs = Runs()
    depth = max(settings.recall_k, settings.diagnose_depth)
    for qid, text in tqdm(data.queries.items(), desc="queries", unit="q"):
        excluded = exclude.get(qid, {})
        deep = retriever.recall(text, depth, settings.mode).without(excluded)
        deep_docs = _max_by_doc([c.doc_id for c in deep.chunks], [c.score for c in deep.candidates])  # best first
        runs.stage1_ranks[qid] = {doc: rank for rank, doc in enumerate(deep_docs, 1)}
        top = retriever.recall(text, settings.recall_k, settings.mode).without(excluded)
        docs = [c.doc_id for c in top.chunks]
        runs.stage1[qid] = _max_by_doc(docs, [c.score for c in top.candidates])
        if settings.rerank:
            runs.scored[qid] = score_candidates(retriever, text, top, runs.seconds)
    return runs


def score_candidates(retriever: Retriever, query: str, top, seconds: dict[str, float]) -> Scores:
    """Every candidate's served score (the served reranker reading all of them, keep 0) and its first-pass
    logit, each model timed: any cascade_keep is simulated from these (Runs.cascaded)."""
    started = time.perf_counter()
    served = retriever.rerank.candidates(query, top, keep=0)
    seconds["served"] += time.perf_counter() - started
    seconds["pairs"] += len(top)
    first_pass = None
    if retriever.rerank.first_pass is not None and len(top):
        started = time.perf_counter()
        first_pass = retriever.rerank.first_pass.logits(query, [c.passage for c in top.chunks])
        seconds["first_pass"] += time.perf_counter() - started
    return Scores([c.doc_id for c in top.chunks], served.scores, first_pass, served.logits)


def metrics(qrels: dict, run: dict, recall_k: int) -> dict[str, float]:
    from ranx import Qrels, Run, evaluate

    names = list(dict.fromkeys([*CUTOFFS, f"recall@{recall_k}"]))
    run = {q: docs for q, docs in run.items() if docs}  # refused queries score 0 (make_comparable)
    if not run:  # every query refused: ranx cannot build an empty run
        return dict.fromkeys(names, 0.0)
    scores = evaluate(Qrels.from_dict(qrels), Run.from_dict(run), names, make_comparable=True)
    return {name: round(float(value), 4) for name, value in scores.items()}


def significance(qrels: dict, stage1: dict, two_stage: dict, metric: str = "ndcg@10") -> dict:
    """A run (`two_stage`) against a baseline (`stage1`), per query: paired t-test (ranx), wins/ties/losses."""
    from ranx import Qrels, Run, compare

    runs = [
        Run.from_dict({q: d for q, d in run.items() if d}, name=n) for n, run in (("s1", stage1), ("s2", two_stage))
    ]
    report = compare(Qrels.from_dict(qrels), runs, [metric], stat_test="student", make_comparable=True).to_dict()
    delta, tally = report["s2"]["scores"][metric] - report["s1"]["scores"][metric], report["s2"]["win_tie_loss"]["s1"]
    p_value = float(report["s2"]["comparisons"]["s1"][metric])  # NaN when every query ties
    return {
        "metric": metric,
        "delta": round(delta, 4),
        "p_value": 1.0 if math.isnan(p_value) else round(p_value, 6),
        "test": "paired t-test",
        "wins_ties_losses": [tally[metric][k] for k in "WTL"],
    }


def recall_misses(qrels: dict, ranks: dict[str, dict[str, int]], recall_k: int, depth: int) -> dict:
    """Where relevant docs sat in stage 1, and the recall_k that would have caught 95% of them."""
    positions = [ranks[q].get(doc, depth + 1) for q, docs in qrels.items() for doc, rel in docs.items() if rel > 0]
    missed = sorted(p for p in positions if p > recall_k)
    return {
        "relevant": len(positions),
        "missed": len(missed),
        "missed_ranks": {
            "min": missed[0] if missed else None,
            "median": int(np.median(missed)) if missed else None,
            "beyond_depth": sum(p > depth for p in missed),
        },
        "recall_k_for_95pct": int(np.percentile(positions, 95, method="higher")) if positions else None,
        "depth": depth,
    }


def gate(qrels: dict, served: dict[str, dict[str, float]], floor: float, top: int) -> dict:
    """The floor as a gate on each query's top results (score_fit.gate_of_scores), from served runs."""
    per_query = (
        (
            np.fromiter(docs.values(), dtype=np.float64, count=len(docs)),
            np.array([qrels.get(qid, {}).get(doc, 0) > 0 for doc in docs], dtype=bool),
        )
        for qid, docs in served.items()
    )
    return {"top": top, "floor": floor} | gate_of_scores(per_query, floor, top)


def ood_refusal(retriever: Retriever, settings: EvalSettings, keep: int, score: Logistic, floor: float) -> float:
    """Share of another collection's questions refused against this index, as served."""
    questions = load_beir(settings.ood_data, settings.ood_split).queries
    refused = 0
    for text in tqdm(questions.values(), desc="questions from elsewhere", unit="q"):
        top = retriever.recall(text, settings.recall_k, settings.mode)
        served = cascaded(
            score_candidates(retriever, text, top, {"first_pass": 0.0, "served": 0.0, "pairs": 0.0}),
            keep,
            score,
            retriever.rerank.ceiling_logit,
        )
        refused += not any(value >= floor for value in served.values())
    return round(refused / max(1, len(questions)), 4)


def served_keep(settings: EvalSettings, retriever: Retriever) -> int:
    """The cascade_keep a default /search applies (at least its top_k, 10), or 0 (off)."""
    keep = retriever.settings.rerank.cascade_keep if settings.cascade_keep is None else settings.cascade_keep
    return max(keep, retriever.settings.top_k) if keep else 0


def table_ceilings(settings: EvalSettings, rerank: Rerank) -> dict[str, float | None]:
    """The reading-on ceilings (as logits) each cascade_keep is scored with: the served one, none, and
    each of --cascade-ceilings; a name suffix for each."""
    served = rerank.ceiling_logit
    ceilings = {"": served} | ({} if served is None else {", no ceiling": None})
    for value in settings.cascade_ceilings:
        logit = reading_on_logit(value, rerank.calibration)
        if logit is not None and logit not in ceilings.values():
            ceilings[f", ceiling {value:g}"] = logit
    return ceilings


def cascade_table(
    runs: Runs, qrels: dict, settings: EvalSettings, score: Logistic, floor: float, ceilings: dict
) -> dict:
    """Quality and the floor's gate per cascade_keep (and reading-on ceiling) from the same run, and the rerank
    time each would take: the first pass over every candidate plus the served reranker per pair read, both
    as measured here."""
    queries = max(1, len(runs.scored))
    per_pair = runs.seconds["served"] / max(1.0, runs.seconds["pairs"])
    first_pass = runs.seconds["first_pass"] / queries
    pairs = runs.seconds["pairs"] / queries
    table, every = {}, runs.cascaded(0, score)
    for keep in settings.cascade_keeps:
        for name, limit in ceilings.items() if 0 < keep < pairs else [("", None)]:
            counts = runs.read_counts(keep, score, limit)
            reads = float(np.mean(counts or [0.0]))
            ms = ((first_pass if keep and keep < pairs else 0.0) + per_pair * reads) * 1000
            served = runs.cascaded(keep, score, limit)
            table[f"{keep}{name}"] = metrics(qrels, served, settings.recall_k) | {
                "reads": round(reads, 1),
                "reads_p50": float(np.median(counts or [0])),
                "rerank_ms": round(ms, 1),
                "gate": gate(qrels, served, floor, GATE_TOP),
                "vs_every_candidate": significance(qrels, every, served),
            }
    return table


def evaluate_dataset(settings: EvalSettings) -> dict:
    data = load_beir(settings.data, settings.split)
    if settings.dev_only:
        data.queries = dev_queries(data.queries, Artifacts(settings.artifacts_dir).cross) or {}
        if not data.queries:
            raise ValueError(f"dev_only: the reranker records no dev queries in split {settings.split!r}")
        data.qrels = {q: data.qrels[q] for q in data.queries if q in data.qrels}
    if settings.max_queries:
        data.queries = dict(list(data.queries.items())[: settings.max_queries])
        data.qrels = {q: data.qrels[q] for q in data.queries}
    exclude = read_pairs(settings.exclude) if settings.exclude else {}
    index_dir = eval_index(settings)
    if settings.stage1 == "qdrant":
        eval_collection(settings, index_dir)
    served = Settings(
        artifacts_dir=settings.artifacts_dir,
        index_path=index_dir,
        floor=settings.floor,
        rerank_max_length=settings.rerank_max_length,
        first_pass_max_length=settings.first_pass_max_length,
        **settings.stage1_store(),
        **({} if settings.cascade_ceiling is None else {"cascade_ceiling": settings.cascade_ceiling}),
    )
    retriever = Retriever.from_settings(served)
    started = time.perf_counter()
    runs = run_queries(retriever, data, settings, exclude)
    qrels = {q: {d: r for d, r in docs.items() if d not in exclude.get(q, {})} for q, docs in data.qrels.items()}
    report = {
        "dataset": str(settings.data),
        "split": settings.split,
        "dev_only": settings.dev_only,
        "queries": len(data.queries),
        "recall_k": settings.recall_k,
        "mode": settings.mode,
        "excluded_pairs": sum(map(len, exclude.values())),
        "score_model": retriever.rerank.score_model,
        "rerank_max_length": retriever.rerank.cross.max_length,
        "models": {
            "bi": _describe(retriever.recall.encoder.manifest),
            "cross": _describe(retriever.rerank.cross.manifest),
        },
        "stage1": metrics(qrels, runs.stage1, settings.recall_k),
        "recall_miss": recall_misses(qrels, runs.stage1_ranks, settings.recall_k, settings.diagnose_depth),
    }
    if settings.rerank:
        floor, score = retriever.rerank.floor, retriever.rerank.calibration.search
        keep, ceiling = served_keep(settings, retriever), retriever.rerank.ceiling_logit
        two_stage = runs.cascaded(keep, score, ceiling)  # the served order and score
        floored = {q: {d: score for d, score in docs.items() if score >= floor} for q, docs in two_stage.items()}
        report["cascade_keep"] = keep
        report["cascade_ceiling"] = retriever.settings.rerank.cascade_ceiling
        report["reads"] = round(runs.reads(keep, score, ceiling), 1)
        report["two_stage"] = metrics(qrels, two_stage, settings.recall_k)
        report["two_stage_floor"] = metrics(qrels, floored, settings.recall_k)
        report["two_stage_vs_stage1"] = significance(qrels, runs.stage1, two_stage)
        report["gate"] = gate(qrels, two_stage, floor, GATE_TOP)
        if settings.ood_data:
            report["gate"]["ood_refused"] = ood_refusal(retriever, settings, keep, score, floor)
        if settings.cascade_keeps:
            report["cascade"] = cascade_table(
                runs, qrels, settings, score, floor, table_ceilings(settings, retriever.rerank)
            )
        if settings.rerank_budgets:
            report["rerank_budget"] = {
                str(n): metrics(qrels, runs.budgeted(n), settings.recall_k) for n in settings.rerank_budgets
            }
        report["floor"] = {
            "value": floor,
            "source": retriever.rerank.floor_source,
            "refused_queries": sum(not docs for docs in floored.values()),
        }
    report["seconds_per_query"] = round((time.perf_counter() - started) / max(1, len(data.queries)), 4)
    if settings.json_path:
        settings.json_path.parent.mkdir(parents=True, exist_ok=True)
        settings.json_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _describe(manifest: ModelManifest) -> dict:
    return {
        "source": manifest.source,
        "sha256": manifest.sha256[:12],
        "quantization": (manifest.quantization or {}).get("dtype", "fp32"),
    }


def _gate_cells(g: dict) -> str:
    return f"{g['relevant_kept']} | {g['irrelevant_dropped']} | {g['refused_queries']}"


def _p(value: float) -> str:
    return "< 0.0001" if value < 1e-4 else f"= {value:.4f}"


def _versus(sig: dict) -> str:
    return "{:+.4f}, p {}, better / tied / worse {} / {} / {}".format(
        sig["delta"], _p(sig["p_value"]), *sig["wins_ties_losses"]
    )


def markdown(report: dict) -> str:
    stages = [s for s in ("stage1", "two_stage", "two_stage_floor") if s in report]
    names = list(report["stage1"])
    lines = [f"| stage | {' | '.join(names)} |", "| --- |" + " --- |" * len(names)]
    lines += [f"| {s} | " + " | ".join(f"{report[s][n]:.4f}" for n in names) + " |" for s in stages]
    miss = report["recall_miss"]
    lines.append(
        f"\n{report['queries']} queries; recall misses: {miss['missed']}/{miss['relevant']} relevant docs "
        f"outside recall_k={report['recall_k']}; 95% caught by recall_k={miss['recall_k_for_95pct']}"
    )
    if "two_stage_vs_stage1" in report:
        sig = report["two_stage_vs_stage1"]
        lines.append(
            f"two_stage − stage1 {sig['metric']}: {sig['delta']:+.4f}, {sig['test']} p {_p(sig['p_value'])}; "
            "queries better / tied / worse: {} / {} / {}".format(*sig["wins_ties_losses"])
        )
    if "cascade" in report:
        lines.append(
            "\nthe served reranker reads the first pass's best N (0: every candidate; metrics without the floor, "
            "the gate at it):\n"
        )
        gated = ("relevant kept", "irrelevant dropped", "queries refused")
        lines.append(
            f"| N | {' | '.join([*names, *gated])} | reads, mean / p50 | rerank ms | nDCG@10 − every candidate |"
            "\n| --- |" + " --- |" * (len(names) + 6)
        )
        lines += [
            f"| {n} | "
            + " | ".join([f"{m[k]:.4f}" for k in names] + [_gate_cells(m["gate"])])
            + f" | {m['reads']:.1f} / {m['reads_p50']:g} | {m['rerank_ms']:.0f} | {_versus(m['vs_every_candidate'])} |"
            for n, m in report["cascade"].items()
        ]
    if "rerank_budget" in report:
        lines.append("\nonly the first N stage-1 candidates reranked (no floor):\n")
        lines.append(f"| N | {' | '.join(names)} |\n| --- |" + " --- |" * len(names))
        lines += [
            f"| {n} | " + " | ".join(f"{m[k]:.4f}" for k in names) + " |" for n, m in report["rerank_budget"].items()
        ]
    if "floor" in report:
        f = report["floor"]
        lines.append(f"floor {f['value']:.3f} ({f['source']}): {f['refused_queries']} queries refused")
    if "gate" in report:
        g = report["gate"]
        ood = f"; questions from elsewhere refused {g['ood_refused']}" if "ood_refused" in g else ""
        lines.append(
            f"gate on the top {g['top']}: relevant kept {g['relevant_kept']}, irrelevant dropped "
            f"{g['irrelevant_dropped']}, kept precision {g['kept_precision']}, "
            f"queries refused {g['refused_queries']}{ood}"
        )
    return "\n".join(lines)
