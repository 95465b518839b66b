"""Export one model to ONNX with optimum, quantise it (int8 per-channel, or fp16) and gate it on parity."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

from handler.manifest import (
    CALIBRATION_FILE,
    DISTILL_LOG,
    HEAD_FILE,
    TRAINING_LOG,
    ModelManifest,
    read_manifest,
    sha256_file,
    write_manifest,
)
from handler.onnx_model import SLOW_CPU_FUSIONS
from handler.verify import describe_files
from model_export.head import HeadError, fold_head, fold_label_margin, positive_label
from model_export.parity import bi_parity, cross_parity, parity_failures
from model_export.settings import ExportSettings
from model_export.source import (
    UnsupportedModel,
    encoder_config,
    max_length_of,
    packaged_first_pass_dir,
    packaged_minilm_dir,
    packaged_reranker_dir,
    position_range,
    resolve_model_dir,
    weights_sha256,
)

log = logging.getLogger(__name__)

TASKS = {"bi": "feature-extraction", "cross": "text-classification", "first_pass": "text-classification"}
RERANKERS = ("cross", "first_pass")  # both read (query, passage) pairs and serve one logit each
RUNTIME_FILES = ("tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt")
INT8 = {
    "dtype": "int8",
    "mode": "dynamic",
    "per_channel": True,
    "weights": "s8, 7-bit",
    "matmuls": "weights",
    "ort_optimized": "extended",
}
LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers")


class ExportError(ValueError):
    """The export cannot give what was asked (parity gate, unknown head): a message for the user."""


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in LIBRARIES}


def onnx_export(source_dir: Path, out_dir: Path, task: str) -> Path:
    from optimum.exporters.onnx import main_export

    # library_name="transformers": a plain graph (last_hidden_state / logits); pooling stays ours.
    main_export(str(source_dir), out_dir, task=task, library_name="transformers", do_validation=False)
    return out_dir / "model.onnx"


def quantize_int8(onnx_dir: Path) -> Path:
    """Both models: per-channel signed weights in a 7-bit range, uint8 activations, weight MatMuls only.
    Faster than optimum's `avx2` recipe (u8 weights) at the same parity and retrieval quality
    (docs/results.md §15), and u8×s8 is the kernel every CPU family has: VNNI's vpdpbusd, AVX2's
    vpmaddubsw, arm64's udot/usmmla.

    onnxruntime's quantiser directly, not optimum's ORTQuantizer, which cannot keep the attention
    MatMuls (activation × activation) in fp32: quantising those cost parity and time. Signed weights
    run the faster VNNI kernels; the 7-bit range keeps AVX2 machines without VNNI clear of the u8×s8
    saturation they are prone to (`benchmarks/int8_variants.py`, docs/results.md §1, §15).
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = onnx_dir / "model_quantized.onnx"
    quantize_dynamic(
        onnx_dir / "model.onnx",
        quantized,
        per_channel=True,
        reduce_range=True,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )
    return quantized


def optimize_fp16(onnx_dir: Path) -> Path:
    """fp16 for GPUs (int8 dynamic quantisation is a CPU format): ORT's transformer fusions (attention,
    skip-layer-norm, GELU) tuned for GPU, then fp16 weights; inputs and outputs keep their types."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    config = OptimizationConfig(optimization_level=2, optimize_for_gpu=True, fp16=True)
    ORTOptimizer.from_pretrained(onnx_dir, file_names=["model.onnx"]).optimize(config, save_dir=onnx_dir / "fp16")
    return onnx_dir / "fp16" / "model_optimized.onnx"


def save_ort_optimizations(onnx_file: Path) -> None:
    """Store onnxruntime's graph optimisations (fusions, constant folding) in the int8 file itself,
    so each cold start loads a finished graph instead of optimising it again (docs/results.md §8; outputs
    bit-identical: tests/test_export.py). EXTENDED, not ALL: ALL adds layout
    transforms tied to the exporting machine's CPU. int8 only: it is the CPU format, and these fused
    kernels are the CPU provider's; minus the fusions whose CPU kernels are slower (SLOW_CPU_FUSIONS)."""
    import onnxruntime as ort

    optimized = onnx_file.with_name("model.ort-optimized.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(
        str(onnx_file), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(SLOW_CPU_FUSIONS)
    )
    optimized.replace(onnx_file)


def _precisions(kind: str, work: Path, fp32: Path, settings: ExportSettings) -> list[tuple[Path, dict | None]]:
    """Candidate graphs, preferred first; fp32 (None) is always the last resort."""
    if settings.quantize == "int8":
        return [(quantize_int8(work), INT8), (fp32, None)]
    if settings.quantize == "fp16":
        return [(optimize_fp16(work), {"dtype": "fp16", "optimization_level": 2, "for": "gpu"}), (fp32, None)]
    return [(fp32, None)]


def task_of(kind: str, source_dir: Path) -> str:
    """Our own cross-encoders export their token states; `fold_head` then appends the mean-pooled head."""
    return "feature-extraction" if kind in RERANKERS and (source_dir / HEAD_FILE).is_file() else TASKS[kind]


def cross_head(source_dir: Path, settings: ExportSettings) -> dict:
    """How the cross-encoder's output becomes one logit per pair: our folded head, a one-label head as
    is, or a two-label head's margin (positive class from id2label). Anything else fails here, before
    the export runs."""
    if (source_dir / HEAD_FILE).is_file():
        return {"kind": "mean-pooled linear, folded into the graph"}
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source_dir))
    if config.num_labels == 1:
        return {"kind": "one logit"}
    try:
        positive = positive_label(config.id2label, settings.positive_label)
    except HeadError as error:
        raise ExportError(f"{source_dir}: {error}") from None
    labels = {int(i): name for i, name in config.id2label.items()}
    return {"kind": "two-label margin: logit[positive] − logit[other]", "positive": positive, "labels": labels}


def max_length_for(source_dir: Path, config, settings: ExportSettings) -> tuple[int, dict]:
    """The tokens served: the model's declared length, capped by its position range and the settings."""
    limits = {"model": settings.max_length or max_length_of(source_dir), "positions": position_range(config)}
    if not settings.max_length:
        limits["max_length_cap"] = settings.max_length_cap
    return min(limits.values()), limits


def _manifest(
    kind: str,
    source: str,
    source_dir: Path,
    onnx_path: Path,
    settings: ExportSettings,
    quantization: dict | None,
    head: dict | None,
    extra: dict | None = None,
) -> ModelManifest:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source_dir))
    max_length, limits = max_length_for(source_dir, config, settings)
    fields: dict = {"max_length_limits": limits} | (extra or {})
    if head is not None:
        fields["head"] = head["kind"]
        fields |= {"labels": head["labels"], "positive_label": head["positive"]} if "labels" in head else {}
    if (source_dir / CALIBRATION_FILE).is_file():  # fitted by `twostage calibrate` on this model's export
        fields["calibration"] = json.loads((source_dir / CALIBRATION_FILE).read_text())
    if kind == "bi":
        enc = encoder_config(source_dir)
        fields |= {"pooling": enc.pooling, "normalize": enc.normalize, "dims": config.hidden_size}
        fields["query_prompt"] = enc.query_prompt if settings.query_prompt is None else settings.query_prompt
        fields["passage_prompt"] = enc.passage_prompt if settings.passage_prompt is None else settings.passage_prompt
    return ModelManifest(
        kind=kind,
        source=source,
        task=task_of(kind, source_dir),
        onnx_file="model.onnx",
        sha256=sha256_file(onnx_path),
        size_bytes=onnx_path.stat().st_size,
        max_length=max_length,
        pad_id=config.pad_token_id or 0,
        quantization=quantization,
        libraries=library_versions(),
        files=describe_files(onnx_path.parent, skip=(onnx_path.name,)),  # the ONNX file has its own sha256
        **fields,
    )


def _install(
    onnx_file: Path, work_dir: Path, source_dir: Path, target_dir: Path, quantization: dict | None, head: dict | None
) -> Path:
    shutil.rmtree(target_dir, ignore_errors=True)  # nothing of an earlier export stays beside this one
    target_dir.mkdir(parents=True)
    shutil.copy(onnx_file, target_dir / "model.onnx")
    if (source_dir / HEAD_FILE).is_file():  # our own cross-encoder: the graph ends in its logit
        fold_head(target_dir / "model.onnx", source_dir / HEAD_FILE)
    elif head and "positive" in head:  # two labels: the graph ends in their margin
        fold_label_margin(target_dir / "model.onnx", head["positive"])
    if quantization and quantization["dtype"] == "int8":
        save_ort_optimizations(target_dir / "model.onnx")
    for name in RUNTIME_FILES:
        if (work_dir / name).is_file():
            shutil.copy(work_dir / name, target_dir / name)
    for name in (TRAINING_LOG, DISTILL_LOG):
        if (source_dir / name).is_file():
            shutil.copy(source_dir / name, target_dir / name)
    return target_dir / "model.onnx"


def _check_parity(kind: str, source_dir: Path, target_dir: Path, settings: ExportSettings) -> tuple[dict, list]:
    report = bi_parity(source_dir, target_dir) if kind == "bi" else cross_parity(source_dir, target_dir)
    return report, parity_failures(report, settings, kind)


def export_model(
    kind: str, source: str, source_dir: Path, target_dir: Path, settings: ExportSettings, extra: dict | None = None
) -> ModelManifest:
    """Export, quantise, install into target_dir with a manifest carrying the parity report."""
    started = time.perf_counter()
    try:  # what the runtime could not reproduce fails before the export runs
        head = cross_head(source_dir, settings) if kind in RERANKERS else None
        if kind == "bi":
            encoder_config(source_dir)
    except UnsupportedModel as error:
        raise ExportError(str(error)) from None
    with tempfile.TemporaryDirectory(prefix=f"twostage-{kind}-") as tmp:
        work = Path(tmp)
        fp32 = onnx_export(source_dir, work, task_of(kind, source_dir))
        for onnx_file, quantization in _precisions(kind, work, fp32, settings):
            installed = _install(onnx_file, work, source_dir, target_dir, quantization, head)
            manifest = _manifest(kind, source, source_dir, installed, settings, quantization, head, extra)
            write_manifest(target_dir, manifest)
            report, failures = _check_parity(kind, source_dir, target_dir, settings)
            if not failures:
                break
            log.warning("%s %s misses the parity gate: %s", kind, (quantization or {}).get("dtype", "fp32"), failures)
            if not (quantization and settings.fp32_fallback):
                shutil.rmtree(target_dir)
                raise ExportError(
                    f"{kind} export fails the parity gate: {'; '.join(failures)}. "
                    "Use --fp32-fallback to keep fp32, or relax the gate explicitly."
                )
    manifest.parity = report
    manifest.export_seconds = round(time.perf_counter() - started, 1)
    write_manifest(target_dir, manifest)
    return manifest


def export_all(settings: ExportSettings) -> dict[str, ModelManifest]:
    done = {}
    if settings.which in ("all", "both", "bi"):
        bi_source = settings.bi_model or str(packaged_minilm_dir())
        done["bi"] = export_model("bi", bi_source, resolve_model_dir(bi_source), settings.models_dir / "bi", settings)
    if settings.which in ("all", "both", "cross"):
        cross_source = settings.cross_model or str(packaged_reranker_dir())
        cross_dir = resolve_model_dir(cross_source)
        done["cross"] = export_model("cross", cross_source, cross_dir, settings.models_dir / "cross", settings)
    if settings.which in ("all", "first-pass"):
        first_pass = export_first_pass(settings)
        if first_pass is not None:
            done["first_pass"] = first_pass
    return done


def export_first_pass(settings: ExportSettings) -> ModelManifest | None:
    """The cascade's first pass, bound to the reranker exported beside it: it must have been distilled from
    that reranker's weights. Without one (a reranker you brought, not yet distilled: `twostage train
    --distill`) none is exported, and any stale one is removed: every candidate is then reranked."""
    target = settings.models_dir / "first_pass"
    cross = read_manifest(settings.models_dir / "cross", ModelManifest)
    teacher = weights_sha256(resolve_model_dir(cross.source))
    source = settings.first_pass_model
    if source is None:
        packaged = packaged_first_pass_dir()
        source = str(packaged) if _distilled_from(packaged) == teacher else None
    if source is None:
        shutil.rmtree(target, ignore_errors=True)
        log.warning("no first pass for %s: the cascade is off (twostage train --distill makes one)", cross.source)
        return None
    source_dir = resolve_model_dir(source)
    if _distilled_from(source_dir) != teacher:
        raise ExportError(
            f"{source_dir} was not distilled from the reranker in {settings.models_dir / 'cross'} ({cross.source}): "
            f"its {DISTILL_LOG} names other teacher weights; distil one from it with `twostage train --distill`"
        )
    return export_model("first_pass", source, source_dir, target, settings, {"teacher_sha256": cross.sha256})


def _distilled_from(model_dir: Path) -> str | None:
    """The sha256 of the teacher weights a first pass was distilled from (its distillation log)."""
    distilled = model_dir / DISTILL_LOG
    return json.loads(distilled.read_text()).get("teacher_weights_sha256") if distilled.is_file() else None
