"""Fine-tune loop: listwise softmax over [positive, hard negatives], AdamW, warm-up, early stopping."""

from __future__ import annotations

import json
import logging
import math
import random
import time

import torch
from tqdm import tqdm

from handler.cpu import available_cpus
from handler.manifest import HEAD_FILE, TRAINING_LOG
from model_export.source import packaged_minilm_dir, resolve_model_dir
from model_export.torch_head import MeanPoolCrossEncoder
from training.data import GROUPS_FILE, Example, TrainingData, group
from training.settings import TrainSettings

log = logging.getLogger(__name__)


class Batcher:
    """Tokenises listwise groups the way the runtime does (pair, longest-first truncation)."""

    def __init__(self, tokenizer, settings: TrainSettings, passages: dict[str, str], device: torch.device):
        self.tokenizer, self.settings, self.passages, self.device = tokenizer, settings, passages, device

    def logits(self, model, examples: list[Example], rng: random.Random) -> torch.Tensor:
        pairs = [p for ex in examples for p in group(ex, self.passages, self.settings.negatives, rng)]
        queries, passages = zip(*pairs, strict=True)
        batch = self.tokenizer(
            list(queries),
            list(passages),
            truncation=True,
            max_length=self.settings.max_length,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        # bf16 autocast on a GPU (tensor cores); the weights and the optimiser stay fp32.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = model(**batch)
        return logits.float().view(len(examples), self.settings.negatives + 1)


def listwise_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the positive (column 0) as the target class."""
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return torch.nn.functional.cross_entropy(logits, target)


@torch.no_grad()
def dev_metrics(model, batcher: Batcher, dev: list[Example], seed: int) -> dict:
    """Loss and MRR of the positive within fixed dev groups (same negatives every epoch)."""
    if not dev:
        return {}
    model.eval()
    rng = random.Random(seed)
    losses, reciprocal = [], []
    for start in range(0, len(dev), 8):
        logits = batcher.logits(model, dev[start : start + 8], rng)
        losses.append(listwise_loss(logits).item() * len(logits))
        ranks = (logits > logits[:, :1]).sum(1) + 1
        reciprocal += (1.0 / ranks.float()).tolist()
    model.train()
    return {"dev_loss": round(sum(losses) / len(dev), 4), "dev_mrr": round(sum(reciprocal) / len(dev), 4)}


def _optimizer(model: MeanPoolCrossEncoder, settings: TrainSettings, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": settings.lr},
            {"params": model.head.parameters(), "lr": settings.head_lr},
        ],
        weight_decay=0.01,
    )
    schedule = get_linear_schedule_with_warmup(optimizer, int(settings.warmup * total_steps), total_steps)
    return optimizer, schedule


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    return torch.device(name)


def training_data(settings: TrainSettings) -> TrainingData:
    """Mined groups: from an earlier run's file, or mined now and saved beside the model."""
    if settings.groups_file:
        return TrainingData.load(settings.groups_file)
    from training.mining import build_data, corpus_data  # need the index and the ONNX runtime

    data = corpus_data(settings) if settings.corpus else build_data(settings)
    data.save(settings.output_dir / GROUPS_FILE)
    return data


def served_weights(settings: TrainSettings) -> str:
    """The served reranker's Hugging Face weights (adapting it to a corpus starts from them)."""
    from handler.artifacts import Artifacts
    from handler.manifest import ModelManifest, read_manifest

    return settings.teacher_weights or read_manifest(Artifacts(settings.artifacts_dir).cross, ModelManifest).source


def train(settings: TrainSettings) -> dict:
    from transformers import AutoModel, AutoTokenizer

    data = training_data(settings)
    if settings.mine_only:
        return {"train_groups": len(data.train), "dev_groups": len(data.dev), "groups_file": str(GROUPS_FILE)}
    torch.manual_seed(settings.seed)
    torch.set_num_threads(available_cpus())
    device = pick_device(settings.device)
    rng = random.Random(settings.seed)
    base = settings.base_model or (served_weights(settings) if settings.corpus else str(packaged_minilm_dir()))
    base_dir = resolve_model_dir(base)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if (base_dir / HEAD_FILE).is_file():  # one of ours: go on from its head too
        model = MeanPoolCrossEncoder.load(base_dir).to(device).train()
    else:
        model = MeanPoolCrossEncoder(AutoModel.from_pretrained(str(base_dir))).to(device).train()
    batcher = Batcher(tokenizer, settings, data.passages, device)

    steps_per_epoch = math.ceil(len(data.train) / settings.groups_per_step)
    total = min(settings.epochs * steps_per_epoch, settings.max_steps or 10**9)
    optimizer, schedule = _optimizer(model, settings, total)
    history = [{"epoch": 0, **dev_metrics(model, batcher, data.dev, settings.seed)}]
    best, step, started = history[0].get("dev_mrr", -1.0), 0, time.perf_counter()
    log.info("constant-predictor loss: %.3f", math.log(settings.negatives + 1))
    model.save(settings.output_dir, tokenizer, settings.max_length)
    for epoch in range(1, settings.epochs + 1):
        rng.shuffle(data.train)
        running = []
        bar = tqdm(range(0, len(data.train), settings.groups_per_step), desc=f"epoch {epoch}", unit="step")
        for start in bar:
            loss = listwise_loss(batcher.logits(model, data.train[start : start + settings.groups_per_step], rng))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            running.append(loss.item())
            bar.set_postfix(loss=f"{sum(running[-50:]) / len(running[-50:]):.3f}")
            step += 1
            if step >= total:
                break
        record = {
            "epoch": epoch,
            "steps": step,
            "train_loss": round(sum(running) / len(running), 4),
            **dev_metrics(model, batcher, data.dev, settings.seed),
        }
        history.append(record)
        log.info("%s", record)
        if record.get("dev_mrr", 0.0) > best or not data.dev:
            best = record.get("dev_mrr", best)
            model.save(settings.output_dir, tokenizer, settings.max_length)
        if step >= total:
            break
    summary = {
        "base_model": base,
        "device": str(device),
        "train_groups": len(data.train),
        "dev_groups": len(data.dev),
        "groups_mined_with": data.mined_with,
        "dev_query_ids": data.dev_query_ids,
        "constant_predictor_loss": round(math.log(settings.negatives + 1), 4),
        "history": history,
        "best_dev_mrr": best,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "settings": json.loads(settings.model_dump_json()),
    }
    (settings.output_dir / TRAINING_LOG).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
