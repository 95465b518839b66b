"""Hard negatives mined by our own stage 1 (the pipeline's recall, as served), known positives excluded."""

from __future__ import annotations

import random

from tqdm import tqdm

from evaluation.beir import load_beir
from evaluation.evaluate import eval_index
from evaluation.settings import EvalSettings
from handler.pipeline import load_recall
from handler.recall import Recall
from handler.settings import Settings
from index_build.corpus import read_corpus
from training.data import Example, TrainingData
from training.settings import TrainSettings


def _stage1(settings: TrainSettings) -> Recall:
    """Stage 1 only (no reranker): negatives come from the candidates a reranker will really see."""
    index_dir = eval_index(
        EvalSettings(data=settings.data, artifacts_dir=settings.artifacts_dir, eval_dir=settings.eval_dir)
    )
    return load_recall(Settings(artifacts_dir=settings.artifacts_dir, index_path=index_dir, mode=settings.mine_mode))


def mine(query: str, skip: set[str], stage1: Recall, settings: TrainSettings) -> list[str]:
    """Doc ids at stage-1 ranks negatives_from..negatives_to, known positives excluded."""
    chunks = stage1(query, settings.negatives_to * 2, stage1.default_mode).chunks
    ranked = list(dict.fromkeys(c.doc_id for c in chunks))
    return [d for d in ranked[settings.negatives_from - 1 : settings.negatives_to] if d not in skip]


def build_data(settings: TrainSettings) -> TrainingData:
    rng = random.Random(settings.seed)
    data = load_beir(settings.data, settings.train_split)
    corpus = {d.id: d for d in read_corpus(data.corpus)}
    passages = {i: f"{d.title} {d.text}" if d.title else d.text for i, d in corpus.items()}
    stage1 = _stage1(settings)

    query_ids = sorted(data.queries)
    rng.shuffle(query_ids)
    dev_ids = set(query_ids[: int(len(query_ids) * settings.dev_fraction)])
    train, dev = [], []
    for qid in tqdm(query_ids, desc="mining negatives", unit="q"):
        positives = {d for d, rel in data.qrels[qid].items() if rel > 0 and d in passages}
        pool = mine(data.queries[qid], positives, stage1, settings)
        for doc in sorted(positives):
            (dev if qid in dev_ids else train).append(Example(data.queries[qid], doc, pool))
    train += pseudo_examples(corpus, settings, stage1, rng)
    rng.shuffle(train)
    mined_with = settings.model_dump(
        mode="json",
        include={
            "data",
            "train_split",
            "mine_mode",
            "negatives_from",
            "negatives_to",
            "pseudo_queries",
            "dev_fraction",
        },
    )
    return TrainingData(passages, train, dev, sorted(dev_ids), mined_with | {"seed": settings.seed})


def pseudo_examples(corpus: dict, settings: TrainSettings, stage1: Recall, rng: random.Random) -> list[Example]:
    """Weak supervision from document structure: a title is a query its own text answers."""
    titled = [d for d in corpus.values() if d.title and d.text]
    chosen = rng.sample(titled, min(settings.pseudo_queries, len(titled)))
    return [
        Example(d.title, d.id, mine(d.title, {d.id}, stage1, settings))
        for d in tqdm(chosen, desc="pseudo-queries", unit="q")
    ]


def corpus_data(settings: TrainSettings) -> TrainingData:
    """No labels: inverse-cloze pseudo-queries from the corpus (a sentence taken out of its document), each
    answered by what is left of that document, with negatives mined by our stage 1 over the corpus as
    indexed without those sentences (the index `twostage calibrate --corpus` builds and reuses)."""
    from evaluation.corpus_calibration import calibration_retriever, corpus_file
    from evaluation.pseudo_queries import write_pseudo_queries
    from evaluation.settings import CalibrateSettings

    rng = random.Random(settings.seed)
    like = CalibrateSettings(
        corpus=settings.corpus, artifacts_dir=settings.artifacts_dir, eval_dir=settings.eval_dir, pseudo_queries=10
    )
    workdir = settings.eval_dir / "calibration" / f"{settings.corpus.resolve().name}-train-{settings.pseudo_queries}"
    corpus = corpus_file(settings.corpus, workdir)
    queries, changed = write_pseudo_queries(corpus, "sentence", settings.pseudo_queries, settings.seed)
    stage1 = calibration_retriever(like, corpus, changed, workdir).recall
    docs = {d.id: changed.get(d.id, d) for d in read_corpus(corpus)}
    passages = {i: f"{d.title} {d.text}" if d.title else d.text for i, d in docs.items()}
    held_out = set(rng.sample(range(len(queries)), int(len(queries) * settings.dev_fraction)))
    train, dev = [], []
    for i, q in enumerate(tqdm(queries, desc="mining negatives", unit="q")):
        (dev if i in held_out else train).append(Example(q.text, q.doc_id, mine(q.text, {q.doc_id}, stage1, settings)))
    rng.shuffle(train)
    mined_with = {
        "corpus": str(settings.corpus),
        "pseudo_queries": len(queries),
        "kind": "sentence",
        "seed": settings.seed,
    }
    mined_with |= settings.model_dump(
        mode="json", include={"mine_mode", "negatives_from", "negatives_to", "dev_fraction"}
    )
    return TrainingData(passages, train, dev, [f"pseudo-{i}" for i in sorted(held_out)], mined_with)
