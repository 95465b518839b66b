"""Parity of the exported ONNX model against the original PyTorch model on a built-in probe set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from handler.calibration import sigmoid
from handler.manifest import HEAD_FILE, ModelManifest, read_manifest
from handler.onnx_model import CrossEncoder, Encoder, FirstPass

_LONG = (
    "The committee reviewed every maintenance record of the pumping station, starting with the "
    "original commissioning report and ending with last winter's emergency repairs. It found that "
    "the bearings had been replaced twice as often as the manufacturer recommends, that vibration "
    "readings were logged by hand and often skipped on weekends, and that the spare parts inventory "
    "listed components that had been discontinued years earlier. The report recommends continuous "
    "vibration monitoring, a revised inventory, and a training programme for the night shift, and it "
    "estimates that these measures would pay for themselves within three years through fewer "
    "unplanned outages, lower overtime costs and longer intervals between major overhauls of the "
    "pumps, motors and valves that keep the town's water supply running through the dry season."
)

PROBE_TEXTS = [
    "How long should I boil an egg for a runny yolk?",
    "Soft-boiled eggs need about six minutes in gently simmering water.",
    "The recommended dose for children is based on body weight.",
    "Adults usually take one tablet twice a day with food.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The train to the airport leaves every twenty minutes from platform four.",
    "A binary search halves the remaining interval at every step.",
    "Rust's borrow checker prevents data races at compile time.",
    "Interest rates rose for the third consecutive quarter.",
    "The enzyme is inhibited competitively by the drug's active metabolite.",
    "She planted tomatoes, basil and marigolds along the south fence.",
    "Error 504 means the gateway did not receive a timely response upstream.",
    "Glaciers in the Alps have lost a large share of their volume since 1900.",
    "ok",
    "What causes the northern lights?",
    _LONG,
]

PROBE_PAIRS = [
    ("how long to boil a soft egg", "Soft-boiled eggs need about six minutes in gently simmering water."),
    ("how long to boil a soft egg", "The train to the airport leaves every twenty minutes."),
    ("dose for children", "The recommended dose for children is based on body weight."),
    ("dose for children", "Adults usually take one tablet twice a day with food."),
    ("what is photosynthesis", "Photosynthesis converts light energy into chemical energy."),
    ("what is photosynthesis", "Interest rates rose for the third consecutive quarter."),
    ("binary search complexity", "A binary search halves the remaining interval at every step."),
    ("binary search complexity", "She planted tomatoes, basil and marigolds along the fence."),
    ("gateway timeout error", "Error 504 means the gateway did not receive a timely response."),
    ("gateway timeout error", "Glaciers in the Alps have lost a large share of their volume."),
    ("why do glaciers melt", "Glaciers in the Alps have lost a large share of their volume since 1900."),
    ("pump maintenance recommendations", _LONG),
    ("pump maintenance recommendations", "Rust's borrow checker prevents data races at compile time."),
    ("northern lights cause", "Charged solar particles hitting the upper atmosphere make auroras glow."),
    ("northern lights cause", "The enzyme is inhibited competitively by the active metabolite."),
    ("compile-time safety in Rust", "Rust's borrow checker prevents data races at compile time."),
]


def bi_parity(source_dir: Path, onnx_dir: Path) -> dict:
    """Cosine between the PyTorch sentence-transformers embedding and ours, per probe text, each probe
    embedded as a query and as a passage (with the prompts the export recorded)."""
    from sentence_transformers import SentenceTransformer

    reference_model = SentenceTransformer(str(source_dir), device="cpu")
    encoder = Encoder(onnx_dir)
    prompts = (encoder.manifest.query_prompt, encoder.manifest.passage_prompt)
    reference = np.concatenate(
        [
            reference_model.encode(PROBE_TEXTS, prompt=p, convert_to_numpy=True, normalize_embeddings=True)
            for p in prompts
        ]
    )
    ours = np.concatenate([encoder.embed_queries(PROBE_TEXTS), encoder.embed_passages(PROBE_TEXTS)])
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    cosine = (reference * ours).sum(axis=1)
    return {
        "probes": len(reference),
        "cosine_mean": round(float(cosine.mean()), 5),
        "cosine_min": round(float(cosine.min()), 5),
    }


def _torch_cross_encoder(source_dir: Path, positive: int | None):
    """The PyTorch original: our mean-pooled head model, or a stock sequence-classification model
    (a two-label head as the margin the export folds in)."""
    from transformers import AutoModelForSequenceClassification

    if (source_dir / HEAD_FILE).is_file():
        from model_export.torch_head import MeanPoolCrossEncoder

        return MeanPoolCrossEncoder.load(source_dir)
    model = AutoModelForSequenceClassification.from_pretrained(str(source_dir)).eval()
    if positive is None:
        return lambda **batch: model(**batch).logits

    def margin(**batch):
        logits = model(**batch).logits
        return logits[:, positive] - logits[:, 1 - positive]

    return margin


def _torch_logits(source_dir: Path, max_length: int, positive: int | None = None) -> np.ndarray:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source_dir))
    model = _torch_cross_encoder(source_dir, positive)
    queries, passages = zip(*PROBE_PAIRS, strict=True)
    batch = tokenizer(
        list(queries), list(passages), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        return model(**batch).reshape(-1).numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def cross_parity(source_dir: Path, onnx_dir: Path) -> dict:
    """Spearman of the scores and the largest change of the sigmoid score, ONNX vs PyTorch."""
    kind = read_manifest(onnx_dir, ModelManifest).kind
    model = (FirstPass if kind == "first_pass" else CrossEncoder)(onnx_dir)
    reference = _torch_logits(source_dir, model.manifest.max_length, model.manifest.positive_label)
    ours = np.concatenate([model.logits(q, [p]) for q, p in PROBE_PAIRS])
    delta = float(np.abs(reference - ours).max())
    spread = float(reference.max() - reference.min())
    return {
        "probes": len(PROBE_PAIRS),
        "spearman": round(spearman(reference, ours), 5),
        "max_abs_delta_logit": round(delta, 5),
        # Scale-free: a listwise-trained model's logits span ±10, an untrained head's a few hundredths;
        # the served score is calibrated later, so raw-sigmoid deltas say little (reported, not gated).
        "relative_delta_logit": round(delta / spread, 5) if spread > 0 else 0.0,
        "max_abs_delta_score": round(float(np.abs(sigmoid(reference) - sigmoid(ours)).max()), 5),
    }


def parity_failures(report: dict, settings, kind: str = "cross") -> list[str]:
    """Human-readable reasons the report misses the gate (empty when it passes)."""
    checks = [
        ("cosine_mean", report.get("cosine_mean"), settings.min_cosine_mean, "≥"),
        ("cosine_min", report.get("cosine_min"), settings.min_cosine_min, "≥"),
        ("spearman", report.get("spearman"), settings.min_spearman, "≥"),
        ("relative_delta_logit", report.get("relative_delta_logit"), settings.max_relative_delta, "≤"),
    ]
    if kind == "first_pass":
        checks.pop()  # its logits are only ever ordered (never calibrated or served): the order is the gate
    failures = []
    for name, value, bound, op in checks:
        if value is None:
            continue
        ok = value >= bound if op == "≥" else value <= bound
        if not ok:
            failures.append(f"{name} {value} (needs {op} {bound})")
    return failures
