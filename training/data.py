"""Listwise training groups: (query, positive, hard negatives mined by our own stage 1)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tqdm import tqdm

from evaluation.beir import load_beir
from evaluation.evaluate import ensure_index
from evaluation.settings import EvalSettings
from handler.docstore import DOCSTORE_NAME, DocStore
from handler.onnx_model import Encoder
from handler.vector_index import VectorIndex
from index_build.corpus import read_corpus
from training.settings import TrainSettings


@dataclass
class Example:
    query: str
    positive: str  # doc id
    pool: list[str]  # stage-1 doc ids in the negative rank window, positives removed


@dataclass
class TrainingData:
    passages: dict[str, str]
    train: list[Example]
    dev: list[Example]
    dev_query_ids: list[str]


def _stage1(settings: TrainSettings):
    index_dir = ensure_index(
        EvalSettings(data=settings.data, artifacts_dir=settings.artifacts_dir, eval_dir=settings.eval_dir)
    )
    encoder = Encoder(settings.artifacts_dir / "models" / "bi")
    return encoder, VectorIndex(index_dir, encoder.manifest), DocStore(index_dir / DOCSTORE_NAME)


def mine(query: str, skip: set[str], stage1, settings: TrainSettings) -> list[str]:
    """Doc ids at stage-1 ranks negatives_from..negatives_to, known positives excluded."""
    encoder, index, docs = stage1
    labels, _ = index.search(encoder.embed([query])[0], settings.negatives_to * 2)
    ranked = list(dict.fromkeys(c.doc_id for c in docs.fetch(labels)))
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
    return TrainingData(passages, train, dev, sorted(dev_ids))


def pseudo_examples(corpus: dict, settings: TrainSettings, stage1, rng: random.Random) -> list[Example]:
    """Weak supervision from document structure: a title is a query its own text answers."""
    titled = [d for d in corpus.values() if d.title and d.text]
    chosen = rng.sample(titled, min(settings.pseudo_queries, len(titled)))
    return [
        Example(d.title, d.id, mine(d.title, {d.id}, stage1, settings))
        for d in tqdm(chosen, desc="pseudo-queries", unit="q")
    ]


def group(example: Example, passages: dict[str, str], size: int, rng: random.Random) -> list[tuple[str, str]]:
    """[positive, negatives...] as (query, passage) pairs; the positive is always first."""
    negatives = rng.sample(example.pool, min(size, len(example.pool)))
    while len(negatives) < size:  # a short pool is topped up with random corpus documents
        negatives.append(rng.choice(list(passages)))
    return [(example.query, passages[example.positive])] + [(example.query, passages[d]) for d in negatives]
