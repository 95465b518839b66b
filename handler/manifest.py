"""Manifests that bind artifacts together: each model and the index record what they are."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from handler.errors import IndexMismatchError

MANIFEST_NAME = "manifest.json"
HEAD_FILE = "twostage_head.json"  # mean-pooled linear head of our own cross-encoders
TRAINING_LOG = "twostage_training.json"  # how our own cross-encoders were trained (dev query ids included)
CALIBRATION_FILE = "twostage_calibration.json"  # travels with a model directory into its export


class ModelManifest(BaseModel):
    """What `twostage export` wrote about one ONNX model; the runtime trusts only this file."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["bi", "cross"]
    source: str
    task: str
    onnx_file: str
    sha256: str
    size_bytes: int | None = None  # checked at every init (older exports lack it)
    max_length: int
    pad_id: int = 0
    pooling: Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"] | None = None
    normalize: bool = False
    dims: int | None = None
    query_prompt: str = ""  # put before every query (E5's "query: ", BGE's instruction)
    passage_prompt: str = ""  # put before every indexed passage
    quantization: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    head: str | None = None  # how the cross-encoder's output became one logit per pair
    labels: dict[int, str] | None = None  # a two-label head's id2label
    positive_label: int | None = None  # … and which of them the served logit favours


class IndexManifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    encoder_sha256: str
    encoder_source: str
    dims: int
    count: int
    space: str
    M: int
    ef_construction: int
    ef: int
    max_length: int
    chunk_overlap: int
    bm25: dict[str, Any] | None = None
    query_prompt: str = ""  # the encoder's prompts when the index was built: a change needs a rebuild
    passage_prompt: str = ""
    files: dict[str, dict[str, Any]] | None = None  # {name: {bytes, sha256}} of every file beside it


def check_binding(built: dict[str, Any], encoder: ModelManifest, place: str, rebuild: str) -> None:
    """A stage-1 store (a local index's manifest, a Qdrant collection's record) was built with the
    served bi-encoder, its prompts and its dims; else IndexMismatchError naming both sha256."""
    if encoder.kind != "bi":
        raise IndexMismatchError(f"the bi-encoder's manifest.json describes a {encoder.kind} model where a bi belongs")
    if built.get("encoder_sha256") != encoder.sha256:
        raise IndexMismatchError(
            f"{place} was built with bi-encoder sha256 {built.get('encoder_sha256')} "
            f"({built.get('encoder_source')}), but the served bi-encoder is sha256 {encoder.sha256} "
            f"({encoder.source}); rebuild it with `{rebuild}`"
        )
    prompts = (built.get("query_prompt", ""), built.get("passage_prompt", ""))
    if prompts != (encoder.query_prompt, encoder.passage_prompt):
        raise IndexMismatchError(
            f"{place} was built for (query, passage) prompts {prompts}, the served bi-encoder uses "
            f"{(encoder.query_prompt, encoder.passage_prompt)}; rebuild it with `{rebuild}`"
        )
    if encoder.dims is not None and built.get("dims") != encoder.dims:
        raise IndexMismatchError(
            f"{place} holds {built.get('dims')}-d vectors, the served bi-encoder embeds {encoder.dims}-d"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path, model: type[BaseModel]):
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {directory}: run `twostage export` / `twostage index` first")
    return model.model_validate_json(path.read_text())


def write_manifest(directory: Path, data: BaseModel | dict) -> Path:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
