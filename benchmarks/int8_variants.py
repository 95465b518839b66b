"""Why the int8 recipes are what they are: parity and speed of int8 variants of both shipped models,
on the CPU this runs on (its ISA is printed first: run it on each kind of host and compare columns).

    python -m benchmarks.int8_variants [--which both] [--cross-model models/scifact-minilm-l6-cross]
        [--json artifacts/reports/int8-variants-<isa>.json]

Exports each model to fp32 ONNX with our `model_export`, quantises it several ways, and for each
prints the parity report the export gate uses and its speed, 2 threads, median of 5, all in one run:
the reranker's pairs/s on 32 pairs × 204 tokens (SciFact's mean), the bi-encoder's passages/s one
204-token passage at a time (how the index build embeds) and its ms per 16-token query.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.machine import describe
from handler.onnx_model import SLOW_CPU_FUSIONS
from model_export.export import quantize_int8
from model_export.parity import bi_parity, cross_parity


def _export_recipe(quantize):
    """The export's own quantiser, so the rows for what ships measure exactly that."""

    def make(fp32: Path, out: Path) -> None:
        shutil.move(quantize(fp32.parent), out)  # it writes model_quantized.onnx beside model.onnx

    return make


def _optimum(fp32: Path, out: Path, target: str) -> None:
    """optimum's ORTQuantizer with another target (it also quantises the attention MatMuls)."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    config = getattr(AutoQuantizationConfig, target)(is_static=False, per_channel=True)
    ORTQuantizer.from_pretrained(fp32.parent, file_name=fp32.name).quantize(config, save_dir=out.parent / "q")
    shutil.move(out.parent / "q" / "model_quantized.onnx", out)


def _ort(fp32: Path, out: Path, weights: str, fuse: bool = False, seven_bit: bool = False, ops=None) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    source = fp32
    if fuse:  # ORT's BERT fusions first: Attention (→ QAttention), SkipLayerNorm, BiasGelu
        source = out.with_suffix(".fused.onnx")
        optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=384, opt_level=1).save_model_to_file(
            str(source)
        )
    quantize_dynamic(
        source,
        out,
        per_channel=True,
        weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8,
        reduce_range=seven_bit,
        op_types_to_quantize=ops,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )


VARIANTS = {
    "optimum avx2 (u8 weights, all MatMuls; the bi-encoder's export before issue 18)": lambda f, o: _optimum(
        f, o, "avx2"
    ),
    "optimum avx512_vnni (s8 weights, all MatMuls)": lambda f, o: _optimum(f, o, "avx512_vnni"),
    "ORT u8 weights, weight MatMuls only": lambda f, o: _ort(f, o, "u8"),
    "ORT s8 weights, weight MatMuls only": lambda f, o: _ort(f, o, "s8"),
    "ORT s8 7-bit weights, weight MatMuls only (both models' export)": _export_recipe(quantize_int8),
    "ORT fusions, then s8 incl. QAttention": lambda f, o: _ort(f, o, "s8", fuse=True),
    "ORT fusions, then s8 7-bit incl. QAttention": lambda f, o: _ort(f, o, "s8", fuse=True, seven_bit=True),
    "ORT fusions, then s8 7-bit, fp32 Attention": lambda f, o: _ort(
        f, o, "s8", fuse=True, seven_bit=True, ops=["MatMul"]
    ),
}


def texts_per_second(path: Path, threads: int, batch: int, tokens: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(SLOW_CPU_FUSIONS)
    )
    names = {i.name for i in session.get_inputs()}
    ids = np.random.default_rng(0).integers(1000, 20000, (batch, tokens))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {k: v.astype(np.int64) for k, v in feeds.items() if k in names}
    session.run(None, feeds)
    times = []
    for _ in range(5 if batch > 1 else 20):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


def measure(kind: str, source: Path, model_dir: Path, threads: int) -> dict:
    """The export gate's parity report and the speed of the work each model does when serving."""
    if kind == "cross":
        report = cross_parity(source, model_dir)
        return {
            "spearman": report["spearman"],
            "relative_delta_logit": report["relative_delta_logit"],
            "pairs_per_s": round(texts_per_second(model_dir / "model.onnx", threads, 32, 204), 1),
        }
    report = bi_parity(source, model_dir)
    return {
        "cosine_mean": report["cosine_mean"],
        "cosine_min": report["cosine_min"],
        "passages_per_s": round(texts_per_second(model_dir / "model.onnx", threads, 1, 204), 1),
        "query_ms": round(1000 / texts_per_second(model_dir / "model.onnx", threads, 1, 16), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which", choices=["bi", "cross", "both"], default="both")
    parser.add_argument("--cross-model", default="models/scifact-minilm-l6-cross")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU
    report = {"machine": describe(), "threads": args.threads}
    for kind in ("bi", "cross") if args.which == "both" else (args.which,):
        report[kind] = run_kind(kind, args)
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report, indent=1))


def run_kind(kind: str, args) -> dict[str, dict]:
    from handler.manifest import ModelManifest, read_manifest
    from model_export.export import export_all
    from model_export.settings import ExportSettings

    rows = {}
    with tempfile.TemporaryDirectory(prefix="int8-variants-") as tmp:
        work = Path(tmp)
        export_all(
            ExportSettings(models_dir=work / "models", which=kind, cross_model=args.cross_model, quantize="none")
        )
        fp32_dir = work / "models" / kind
        source = Path(read_manifest(fp32_dir, ModelManifest).source)
        print(f"\n{kind}: variant | " + " | ".join(measure_names(kind)), flush=True)
        rows["fp32"] = measure(kind, source, fp32_dir, args.threads)
        print(f"fp32 | {_cells(rows['fp32'])}", flush=True)
        for name, make in VARIANTS.items():
            variant = work / name.split(" (")[0].replace(" ", "_").replace(",", "")
            shutil.copytree(fp32_dir, variant)
            make(fp32_dir / "model.onnx", variant / "model.int8.onnx")
            shutil.move(variant / "model.int8.onnx", variant / "model.onnx")
            _restamp(variant)
            rows[name] = measure(kind, source, variant, args.threads)
            print(f"{name} | {_cells(rows[name])}", flush=True)
    return rows


def _restamp(model_dir: Path) -> None:
    """The manifest's size and sha256 for the swapped-in file (the runtime checks both at load)."""
    from handler.manifest import ModelManifest, read_manifest, sha256_file, write_manifest

    onnx = model_dir / "model.onnx"
    manifest = read_manifest(model_dir, ModelManifest)
    write_manifest(
        model_dir, manifest.model_copy(update={"sha256": sha256_file(onnx), "size_bytes": onnx.stat().st_size})
    )


def measure_names(kind: str) -> list[str]:
    if kind == "cross":
        return ["Spearman", "rel. Δ logit", "pairs/s"]
    return ["cosine mean", "cosine min", "passages/s", "query ms"]


def _cells(row: dict) -> str:
    return " | ".join(str(v) for v in row.values())


if __name__ == "__main__":
    main()
