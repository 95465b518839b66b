"""`twostage calibrate --corpus`: the served score and the floor fitted from the user's own corpus, no labels.

Every document is a known answer to questions written from it, and the rest of the corpus is known
padding for those questions (evaluation/pseudo_queries.py). The pseudo-queries run through the served
stages over a copy of the corpus indexed without their sentences, so their answers compete as a real
question's do; questions from no corpus's domain (a shipped generic set, and `--ood-queries`) teach the
fit and the floor what to refuse. The fit and the floor are then chosen exactly as from labelled
queries (evaluation/score_fit.py): the answer score model, then the floor between keeping the answerable
pseudo-queries and refusing the off-topic questions. What it fitted is reported in the same numbers as
`twostage eval`'s gate, and drawn with --plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.evaluate import eval_index
from evaluation.pseudo_queries import corpus_without_spans, off_topic_questions, write_pseudo_queries
from evaluation.score_fit import (
    QueryPairs,
    answerable_best,
    balanced_weights,
    calibration_record,
    choose_floor,
    distributions,
    fit_platt,
    fit_search,
    gate_of_pairs,
    keep_drop,
    labelled_pairs,
    query_pairs,
    refusal_rate,
)
from evaluation.settings import CalibrateSettings, EvalSettings
from handler.docstore import DOCSTORE_NAME, DocStore
from handler.manifest import MANIFEST_NAME, IndexManifest, read_manifest
from handler.pipeline import Retriever
from handler.settings import Settings


def corpus_file(source: Path, workdir: Path) -> Path:
    """The corpus to write pseudo-queries from: a file or directory `twostage index` reads, or an index
    directory, whose doc store's chunks become the documents."""
    if not (source / MANIFEST_NAME).is_file():
        return source
    manifest = read_manifest(source, IndexManifest)
    chunks = DocStore(source / DOCSTORE_NAME, manifest.count).fetch(list(range(manifest.count)))
    target = workdir / "corpus-from-index.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w") as out:
        for c in chunks:
            row = {"id": f"{c.doc_id}#{c.chunk}", "title": c.title, "text": c.text, "metadata": c.metadata}
            out.write(json.dumps(row) + "\n")
    return target


def calibration_retriever(settings: CalibrateSettings, corpus: Path, changed: dict, workdir: Path) -> Retriever:
    """The served stages over the corpus without the pseudo-queries' sentences (indexed once, then reused)."""
    without = corpus_without_spans(corpus, changed, workdir / "corpus.jsonl")
    index = eval_index(EvalSettings(data=without.parent, artifacts_dir=settings.artifacts_dir, eval_dir=workdir))
    return Retriever.from_settings(Settings(artifacts_dir=settings.artifacts_dir, index_path=index, floor=0.0))


def calibrate_from_corpus(settings: CalibrateSettings) -> tuple[dict, dict]:
    """The calibration, and the score distributions it was chosen from (for --plot)."""
    name = f"{settings.corpus.resolve().name}-{settings.pseudo_kind}-{settings.pseudo_queries}"
    workdir = settings.eval_dir / "calibration" / name
    corpus = corpus_file(settings.corpus, workdir)
    queries, changed = write_pseudo_queries(corpus, settings.pseudo_kind, settings.pseudo_queries)
    if len(queries) < 10:
        raise ValueError(f"{settings.corpus}: only {len(queries)} pseudo-queries could be written; pick another kind")
    retriever = calibration_retriever(settings, corpus, changed, workdir)
    pairs = [
        query_pairs(retriever, f"pseudo-{i}", q.text, {q.doc_id: 1}, settings.candidates)
        for i, q in enumerate(tqdm(queries, desc="pseudo-queries", unit="q"))
    ]
    generic = off_topic_questions()
    shipped, set_aside = without_answered(off_topic_pairs(retriever, "off", generic, settings), pairs)
    # the user's own questions are off-topic by their word: none is set aside
    own = off_topic_questions(settings.ood_queries) if settings.ood_queries else []
    off_topic = shipped + off_topic_pairs(retriever, "own", own, settings)
    platt = fit_platt(pairs)
    # The off-topic questions weigh as much as the pseudo-queries: refusing is half the floor's job, and a
    # few dozen questions among hundreds of answerable ones would barely move the query-cosine term.
    search = fit_search(pairs + off_topic, settings.stage1_prior, balanced_weights(pairs, off_topic))
    floor, objective, window = choose_floor(pairs, search, settings, [off_topic])
    report = {
        "fitted_on": {
            "corpus": str(settings.corpus),
            "pseudo_queries": len(queries),
            "kind": settings.pseudo_kind,
            "off_topic_questions": len(off_topic),
            "own_questions": str(settings.ood_queries) if settings.ood_queries else None,
            "off_topic_set_aside": [generic[int(qid.removeprefix("off-"))] for qid in set_aside],
        },
        "window": window,
        "keep_drop": keep_drop(pairs, search, floor),
        "gate": gate_of_pairs(pairs, search, floor),
        "answerable_refused": round(float((answerable_best(pairs, search) < floor).mean()), 4),
        "off_topic_refused": refusal_rate(off_topic, search, floor),
    }
    calibration = calibration_record("corpus", platt, search, floor, objective, window, settings, report)
    return calibration, distributions(pairs, off_topic, search)


def off_topic_pairs(retriever: Retriever, prefix: str, questions: list[str], settings: CalibrateSettings) -> list:
    return labelled_pairs(retriever, {f"{prefix}-{i}": q for i, q in enumerate(questions)}, {}, settings.candidates)


def without_answered(off_topic: list[QueryPairs], pairs: list[QueryPairs]) -> tuple[list[QueryPairs], list[str]]:
    """The off-topic questions, less those the corpus meets as closely as a typical pseudo-query (best stage-1
    cosine at or above the pseudo-queries' median): the shipped set spans many fields, and a question from
    the corpus's own field is no evidence of what to refuse. Returns the rest and the ids set aside."""
    typical = float(np.median([p.query_cosine for p in pairs]))
    kept = [q for q in off_topic if q.query_cosine < typical]
    return kept, [q.qid for q in off_topic if q.query_cosine >= typical]
