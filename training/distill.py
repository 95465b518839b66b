"""`twostage train --distill`: a small first-pass reranker distilled from the served one, for the rerank
cascade (handler/rerank.py): it scores every candidate, the served reranker only the best few.

- Queries: the training split's (when the data has one) and pseudo-queries from the corpus (each
  titled document's title), so a reranker a user brings can be distilled from their corpus alone.
- Candidates: our own stage 1 (served mode), the best `distill_candidates` of each query.
- Targets: the served reranker's own logits (the ONNX model in models/cross, as it serves).
- Student: the teacher's first `student_layers` layers and its head (or a new mean-pooled head), its
  word embeddings frozen. Loss: the listwise KL between the teacher's and the student's served orders
  (logit times the calibration's weight, plus the stage-1 prior: what decides who reaches the second
  stage), plus a small squared error on the logits themselves.
- Selection: held-out queries' **cascade recall**: the share of the teacher's top 10 that the student's
  top `keep` would hand to the second stage.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from handler.artifacts import Artifacts
from handler.cpu import available_cpus
from handler.manifest import DISTILL_LOG, HEAD_FILE, ModelManifest, read_manifest
from model_export.source import resolve_model_dir, weights_sha256
from model_export.torch_head import MeanPoolCrossEncoder
from training.settings import TrainSettings

log = logging.getLogger(__name__)
GROUPS_FILE = "distill_groups.json"
RECALL_AT = 10  # the teacher's top 10: what a /search answers


@dataclass
class Group:
    """One query's candidates, in stage-1 order, with the served reranker's logits."""

    query: str
    passages: list[str]
    teacher: list[float]
    held_out: bool = False


def served_order_weights(cross: ModelManifest) -> tuple[float, float]:
    """(a, d) of the served score sigmoid(a·logit + d·ln rank + …): its order within a query."""
    fit = cross.calibration.platt_cosine if cross.calibration else None
    return (fit.a, fit.d) if fit else (1.0, 0.0)


def keys(logits: np.ndarray, a: float, d: float) -> np.ndarray:
    """What orders a query's candidates: a·logit + d·ln(stage-1 rank)."""
    return a * logits + d * np.log(np.arange(1, len(logits) + 1))


def cascade_recall(student: np.ndarray, teacher: np.ndarray, a: float, d: float, keep: int) -> float:
    """Share of the teacher's top RECALL_AT (served order) among the student's top `keep`."""
    top = set(np.argsort(-keys(teacher, a, d), kind="stable")[:RECALL_AT].tolist())
    kept = set(np.argsort(-keys(student, a, d), kind="stable")[:keep].tolist())
    return len(top & kept) / len(top)


# -- the data: queries, candidates, the teacher's logits ------------------------------------------


def _split_queries(settings: TrainSettings) -> dict[str, str]:
    """The training split's queries, when distilling from labelled data that has the split; else none."""
    from evaluation.beir import load_beir

    if settings.corpus is not None or not (settings.data / "qrels" / f"{settings.train_split}.tsv").is_file():
        return {}
    return dict(load_beir(settings.data, settings.train_split).queries)


def _queries(settings: TrainSettings) -> tuple[dict[str, str], Path]:
    """The training queries (if the data has the split) and titles as pseudo-queries; the corpus path."""
    from index_build.corpus import read_corpus

    rng = random.Random(settings.seed)
    corpus = settings.corpus or settings.data / "corpus.jsonl"
    queries = _split_queries(settings)
    titled = sorted({d.title for d in read_corpus(corpus) if d.title and d.text})
    chosen = rng.sample(titled, min(settings.pseudo_queries, len(titled)))
    queries |= {f"title:{i}": title for i, title in enumerate(chosen)}
    return queries, corpus


def build_groups(settings: TrainSettings) -> list[Group]:
    from evaluation.evaluate import eval_index
    from evaluation.settings import EvalSettings
    from handler.onnx_model import CrossEncoder
    from handler.pipeline import load_recall
    from handler.settings import Settings

    queries, corpus = _queries(settings)
    if not queries:
        raise ValueError("distillation needs queries: a training split, or a corpus with titles (--pseudo-queries N)")
    where = EvalSettings(data=corpus.parent, artifacts_dir=settings.artifacts_dir, eval_dir=settings.eval_dir)
    index = eval_index(where)
    recall = load_recall(Settings(artifacts_dir=settings.artifacts_dir, index_path=index, mode=settings.mine_mode))
    teacher = CrossEncoder(Artifacts(settings.artifacts_dir).cross)
    rng = random.Random(settings.seed)
    ids = sorted(queries)
    held_out = set(rng.sample(ids, int(len(ids) * settings.dev_fraction)))
    groups = []
    for qid in tqdm(ids, desc="teacher scores", unit="q"):
        recalled = recall(queries[qid], settings.distill_candidates, recall.default_mode)
        passages = [c.passage for c in recalled.chunks]
        logits = teacher.logits(queries[qid], passages)
        groups.append(Group(queries[qid], passages, [round(float(x), 5) for x in logits], qid in held_out))
    return groups


def save_groups(groups: list[Group], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(g) for g in groups]))


def load_groups(path: Path) -> list[Group]:
    return [Group(**g) for g in json.loads(Path(path).read_text())]


def hold_out_teacher_dev(groups: list[Group], settings: TrainSettings) -> list[Group]:
    """The served reranker's dev queries are where the cascade's defaults are chosen (benchmarks.cascade_levers
    --dev-only): a first pass distilled on them would make that choice look better than it is."""
    from evaluation.beir import dev_queries

    queries = _split_queries(settings)
    if not queries:
        return groups
    texts = set((dev_queries(queries, Artifacts(settings.artifacts_dir).cross) or {}).values())
    return [Group(g.query, g.passages, g.teacher, g.held_out or g.query in texts) for g in groups]


# -- the student ----------------------------------------------------------------------------------


def teacher_weights(settings: TrainSettings) -> Path:
    """The served reranker's Hugging Face weights: --teacher-weights, else where its export came from."""
    source = settings.teacher_weights or read_manifest(Artifacts(settings.artifacts_dir).cross, ModelManifest).source
    return resolve_model_dir(source)


def make_student(teacher_dir: Path, layers: int) -> MeanPoolCrossEncoder:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the teacher's later layers are left out on purpose
    encoder = AutoModel.from_pretrained(str(teacher_dir), num_hidden_layers=layers)
    student = MeanPoolCrossEncoder(encoder)
    if (teacher_dir / HEAD_FILE).is_file():  # our own head: start from the teacher's
        head = json.loads((teacher_dir / HEAD_FILE).read_text())
        with torch.no_grad():
            student.head.weight.copy_(torch.tensor([head["weight"]]))
            student.head.bias.fill_(head["bias"])
    for parameter in student.encoder.embeddings.word_embeddings.parameters():
        parameter.requires_grad = False  # the teacher's vocabulary stays as it is
    return student


class Scorer:
    """Tokenises (query, passage) pairs the way the runtime does and runs the student."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, model, query: str, passages: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            [query] * len(passages),
            passages,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        return model(**batch)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, ranks: torch.Tensor, a: float, d: float) -> torch.Tensor:
    """KL(teacher's served order ‖ student's) over a group, plus a small squared error on the logits."""
    prior = d * torch.log(ranks)
    target = torch.softmax(a * teacher + prior, dim=-1)
    kl = torch.nn.functional.kl_div(torch.log_softmax(a * student + prior, dim=-1), target, reduction="sum")
    return kl + 0.01 * torch.mean((student - teacher) ** 2)


@torch.no_grad()
def held_out_recall(model, scorer: Scorer, groups: list[Group], a: float, d: float, keeps=(10, 20, 30)) -> dict:
    model.eval()
    found = {keep: [] for keep in keeps}
    for group in groups:
        student = scorer(model, group.query, group.passages).numpy()
        for keep in keeps:
            found[keep].append(cascade_recall(student, np.asarray(group.teacher), a, d, keep))
    model.train()
    return {f"cascade_recall@{keep}": round(float(np.mean(v)), 4) for keep, v in found.items()}


def _sample(group: Group, size: int, rng: random.Random) -> list[int]:
    """The teacher's best few always, the rest at random: the order that matters is at the top."""
    best = np.argsort(-np.asarray(group.teacher))[: size // 4].tolist()
    rest = [i for i in range(len(group.passages)) if i not in best]
    return sorted(best + rng.sample(rest, min(size - len(best), len(rest))))


def distill(settings: TrainSettings) -> dict:
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    torch.set_num_threads(available_cpus())
    out = settings.output_dir
    groups = load_groups(settings.groups_file) if settings.groups_file else build_groups(settings)
    if not settings.groups_file:
        save_groups(groups, out / GROUPS_FILE)
    groups = hold_out_teacher_dev(groups, settings)
    cross = read_manifest(Artifacts(settings.artifacts_dir).cross, ModelManifest)
    a, d = served_order_weights(cross)
    teacher_dir = teacher_weights(settings)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    model = make_student(teacher_dir, settings.student_layers).train()
    scorer = Scorer(tokenizer, settings.max_length)
    train = [g for g in groups if not g.held_out]
    dev = [g for g in groups if g.held_out]
    steps = min(settings.epochs * math.ceil(len(train) / settings.groups_per_step), settings.max_steps or 10**9)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(settings.warmup * steps), steps)
    rng = random.Random(settings.seed)
    history = [{"epoch": 0, **held_out_recall(model, scorer, dev, a, d)}]
    best, step = history[0].get("cascade_recall@20", -1.0), 0
    model.save(out, tokenizer, settings.max_length)
    for epoch in range(1, settings.epochs + 1):
        rng.shuffle(train)
        running = []
        bar = tqdm(range(0, len(train), settings.groups_per_step), desc=f"epoch {epoch}", unit="step")
        for start in bar:
            loss = torch.zeros(())
            for group in train[start : start + settings.groups_per_step]:
                chosen = _sample(group, settings.distill_group, rng)
                student = scorer(model, group.query, [group.passages[i] for i in chosen])
                teacher = torch.tensor([group.teacher[i] for i in chosen])
                ranks = torch.tensor([i + 1.0 for i in chosen])
                loss = loss + distill_loss(student, teacher, ranks, a, d)
            (loss / settings.groups_per_step).backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            running.append(loss.item() / settings.groups_per_step)
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
            step += 1
            if step >= steps:
                break
        record = {"epoch": epoch, "steps": step, "loss": round(float(np.mean(running)), 5)}
        record |= held_out_recall(model, scorer, dev, a, d)
        history.append(record)
        log.info("%s", record)
        if record.get("cascade_recall@20", 0.0) >= best or not dev:
            best = record.get("cascade_recall@20", best)
            model.save(out, tokenizer, settings.max_length)
        if step >= steps:
            break
    summary = {
        "teacher_sha256": cross.sha256,
        "teacher_weights": str(teacher_dir),
        "teacher_weights_sha256": weights_sha256(teacher_dir),  # what export binds the first pass by
        "student_layers": settings.student_layers,
        "max_length": settings.max_length,
        "groups": {"train": len(train), "held_out": len(dev), "candidates": settings.distill_candidates},
        "served_order": {"a": a, "d": d},
        "history": history,
        "best_cascade_recall@20": best,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "settings": json.loads(settings.model_dump_json()),
    }
    (out / DISTILL_LOG).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


SHARED = ("embeddings.word_embeddings.weight",)  # frozen in distillation: the teacher's, unchanged


def package(student_dir: Path, teacher_dir: Path, target: Path) -> Path:
    """A distilled first pass stored small, as `models/` ships one: every tensor in fp16 but those it shares
    with its teacher, which model_export.source.complete_shared puts back at export."""
    import os
    import shutil

    from safetensors.numpy import load_file, save_file

    from model_export.source import SHARED_FILE

    shutil.rmtree(target, ignore_errors=True)
    skip = shutil.ignore_patterns("model.safetensors", "distill_groups.json", "*.onnx")
    shutil.copytree(student_dir, target, ignore=skip)
    tensors = load_file(str(student_dir / "model.safetensors"))
    teacher = load_file(str(teacher_dir / "model.safetensors"))
    for name in SHARED:
        if not np.array_equal(tensors[name], teacher[name].astype(tensors[name].dtype)):
            raise ValueError(f"{name} differs from the teacher's: it cannot be shared")
    kept = {name: value.astype(np.float16) for name, value in tensors.items() if name not in SHARED}
    save_file(kept, str(target / "model.safetensors"), metadata={"format": "pt"})
    relative = os.path.relpath(teacher_dir.resolve(), target.resolve())
    (target / SHARED_FILE).write_text(json.dumps({name: relative for name in SHARED}, indent=2) + "\n")
    return target
