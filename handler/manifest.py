"""Manifests that bind artifacts together: each model and the index record what they are.

Every field is declared, typed and range-checked (finite calibration, a floor in [0, 1], positive
lengths, known spaces and keys): a manifest that says something the runtime cannot serve fails init
naming the file and the field, instead of serving another metric, NaN scores or a refusal of everything.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from handler.errors import ArtifactError, IndexMismatchError

MANIFEST_NAME = "manifest.json"
HEAD_FILE = "twostage_head.json"  # mean-pooled linear head of our own cross-encoders
TRAINING_LOG = "twostage_training.json"  # how our own cross-encoders were trained (dev query ids included)
CALIBRATION_FILE = "twostage_calibration.json"  # travels with a model directory into its export
DISTILL_LOG = "twostage_distill.json"  # how a first pass was distilled, and from which teacher weights

STRICT = ConfigDict(extra="forbid", strict=True)
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# A weight of the served score: finite and far from what overflows sigmoid's exp.
Weight = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]
Share = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0)]
FileName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00/\\][^\x00]*$")]
MAX_TOKENS = 32768  # beyond any encoder's positions we serve (ModernBERT: 8,192)


class FileRecord(BaseModel):
    """One file beside a manifest: its size and sha256 (full), and the sha256 of a fixed sample of its
    blocks (checked at every init: cheap, and it tells one corpus's index from another's)."""

    model_config = STRICT

    bytes: int = Field(ge=0)
    sha256: Sha256
    sample_sha256: Sha256 | None = None


class LogisticRecord(BaseModel):
    """sigmoid(a·logit + b + c·cosine + d·ln(stage-1 rank)), as `twostage calibrate` fits it."""

    model_config = STRICT

    a: Weight
    b: Weight
    c: Weight = 0.0
    d: Weight = 0.0
    cosine: Literal["query", "pair"] = "pair"


class CalibrationRecord(BaseModel):
    """What `twostage calibrate` writes: the fitted score models, the floor and how it was chosen."""

    model_config = STRICT

    platt: LogisticRecord | None = None  # the logit alone (/rerank)
    platt_cosine: LogisticRecord | None = None  # the /search score
    floor: Share | None = None
    source: Literal["labels", "traces", "corpus"] | None = None  # what the floor was fitted on
    stage1_prior: Annotated[float, Field(allow_inf_nan=False, ge=0, le=100)] | None = None
    objective: str | None = None
    target: Share | None = None
    ood_target: Share | None = None
    report: dict[str, Any] | None = None  # the fit's own figures, shown, never served


class ModelManifest(BaseModel):
    """What `twostage export` wrote about one ONNX model; the runtime trusts only this file."""

    model_config = STRICT

    kind: Literal["bi", "cross", "first_pass"]
    source: str
    task: str
    onnx_file: FileName
    sha256: Sha256
    size_bytes: int | None = Field(None, ge=1)  # checked at every init (older exports lack it)
    max_length: int = Field(ge=1, le=MAX_TOKENS)
    max_length_limits: dict[str, int] | None = None  # the limits max_length is the least of
    pad_id: int = Field(0, ge=0)
    pooling: Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"] | None = None
    normalize: bool = False
    dims: int | None = Field(None, ge=1, le=65536)
    query_prompt: str = ""  # put before every query (E5's "query: ", BGE's instruction)
    passage_prompt: str = ""  # put before every indexed passage
    quantization: dict[str, Any] | None = None
    calibration: CalibrationRecord | None = None
    head: str | None = None  # how the cross-encoder's output became one logit per pair
    labels: dict[Annotated[int, Strict(False)], str] | None = None  # a two-label head's id2label
    positive_label: int | None = Field(None, ge=0, le=1)  # … and which of them the served logit favours
    teacher_sha256: Sha256 | None = None  # a first pass: the served reranker it was distilled from
    files: dict[FileName, FileRecord] | None = None  # the tokenizer and config files beside the model
    parity: dict[str, float | int] | None = None  # the export's parity report against PyTorch
    libraries: dict[str, str] | None = None
    export_seconds: float | None = None


class BM25Record(BaseModel):
    """How the index's BM25 side tokenises and scores."""

    model_config = STRICT

    method: Literal["robertson", "lucene", "atire", "bm25l", "bm25+"] = "lucene"
    k1: float = Field(1.5, gt=0, le=100, allow_inf_nan=False)
    b: Share = 0.75
    stopwords: str | list[str] | None = "en"
    stemmer: str | None = None  # a Snowball algorithm PyStemmer knows (checked at load)
    library: str = "bm25s"
    version: str | None = None
    count: int | None = Field(None, ge=0)


class IndexManifest(BaseModel):
    model_config = STRICT

    encoder_sha256: Sha256
    encoder_source: str
    dims: int = Field(ge=1, le=65536)
    count: int = Field(ge=0)
    documents: int | None = Field(None, ge=0)
    space: Literal["cosine"]  # what the served similarity and calibration assume
    M: int = Field(ge=2, le=4096)
    ef_construction: int = Field(ge=1)
    ef: int = Field(ge=1, le=100_000)
    max_length: int = Field(ge=1, le=MAX_TOKENS)
    chunk_overlap: int = Field(ge=0)
    chunking: bool = True
    pooling: str | None = None
    normalize: bool | None = None
    query_prompt: str = ""  # the encoder's prompts when the index was built: a change needs a rebuild
    passage_prompt: str = ""
    corpus: str | None = None
    bm25: BM25Record | None = None
    filters: dict[str, Literal["string", "number", "boolean"]] | None = None  # filterable metadata fields
    build: dict[str, Any] | None = None  # how it was built (engine, timings): shown, never served
    files: dict[FileName, FileRecord] | None = None  # every file beside it (required at load)


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


SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 64, 4096


def sample_sha256(path: Path) -> str:
    """sha256 of the file's size and of 64 blocks of 4 KiB spread evenly over it (the whole file when
    smaller): a few hundred KB read whatever the size, and a file from another build differs in them."""
    size = path.stat().st_size
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as handle:
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES:
            digest.update(handle.read())
            return digest.hexdigest()
        step = (size - SAMPLE_BLOCK_BYTES) / (SAMPLE_BLOCKS - 1)
        for i in range(SAMPLE_BLOCKS):
            handle.seek(math.floor(i * step))
            digest.update(handle.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest()


def describe_file(path: Path) -> FileRecord:
    return FileRecord(bytes=path.stat().st_size, sha256=sha256_file(path), sample_sha256=sample_sha256(path))


def read_manifest(directory: Path, model: type[BaseModel]):
    """The manifest in `directory`, validated; ArtifactError naming the file and the field at fault."""
    path = Path(directory) / MANIFEST_NAME
    try:
        if not path.is_file():
            raise FileNotFoundError(
                f"no {MANIFEST_NAME} in {directory}: run `twostage export` / `twostage index` first"
            )
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(path, "not UTF-8 text") from None
    except FileNotFoundError:
        raise
    except OSError as error:  # a symlink loop, a directory, no permission
        raise ArtifactError(path, f"unreadable ({error.strerror or error})") from None
    try:
        return model.model_validate_json(text)
    except ValidationError as error:
        raise ArtifactError(path, describe_errors(error)) from None


def describe_errors(error: ValidationError, most: int = 5) -> str:
    """A validation error as 'field: message' pairs (the first few, and how many more)."""
    errors = error.errors(include_url=False)
    parts = [f"{'.'.join(map(str, e['loc'])) or 'the document'}: {e['msg']}" for e in errors[:most]]
    more = f"; and {len(errors) - most} more" if len(errors) > most else ""
    return "; ".join(parts) + more


def write_manifest(directory: Path, data: BaseModel | dict) -> Path:
    payload = data.model_dump(mode="json", exclude_none=True) if isinstance(data, BaseModel) else data
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
