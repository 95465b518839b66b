"""Why the int8 recipe is what it is: parity and speed of int8 variants of the shipped reranker.

    python -m benchmarks.int8_variants [--cross-model models/scifact-minilm-l6-cross]

Exports the reranker to fp32 ONNX with our `model_export`, quantises it several ways, and for each
prints the parity report the export gate uses and pairs/s on 32 pairs × 204 tokens (SciFact's mean),
2 threads, median of 5, all in one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_export.export import quantize_int8_bi, quantize_int8_cross
from model_export.parity import cross_parity


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


def _ort(fp32: Path, out: Path, weights: str, fuse: bool = False) -> None:
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
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )


VARIANTS = {
    "optimum avx2 (u8 weights, all MatMuls; the earlier export)": _export_recipe(quantize_int8_bi),
    "optimum avx512_vnni (s8 weights, all MatMuls)": lambda f, o: _optimum(f, o, "avx512_vnni"),
    "ORT u8 weights, weight MatMuls only": lambda f, o: _ort(f, o, "u8"),
    "ORT s8 weights, weight MatMuls only": lambda f, o: _ort(f, o, "s8"),
    "ORT s8 7-bit weights, weight MatMuls only (shipped)": _export_recipe(quantize_int8_cross),
    "ORT fusions, then s8 incl. QAttention": lambda f, o: _ort(f, o, "s8", fuse=True),
}


def pairs_per_second(path: Path, threads: int, batch: int = 32, tokens: int = 204) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    ids = np.random.default_rng(0).integers(1000, 20000, (batch, tokens))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {k: v.astype(np.int64) for k, v in feeds.items() if k in names}
    session.run(None, feeds)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


def main() -> None:
    from model_export.export import export_all
    from model_export.settings import ExportSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cross-model", default="models/scifact-minilm-l6-cross")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="int8-variants-") as tmp:
        work = Path(tmp)
        fp32 = ExportSettings(models_dir=work / "models", which="cross", cross_model=args.cross_model, quantize="none")
        export_all(fp32)
        fp32_dir = work / "models" / "cross"
        print(f"{'variant':<56} {'Spearman':>8} {'rel Δ':>6} {'pairs/s':>8}")
        print(f"{'fp32':<56} {'1':>8} {'0':>6} {pairs_per_second(fp32_dir / 'model.onnx', args.threads):8.1f}")
        for name, make in VARIANTS.items():
            variant = work / name.split(" (")[0].replace(" ", "_").replace(",", "")
            shutil.copytree(fp32_dir, variant)
            make(fp32_dir / "model.onnx", variant / "model.int8.onnx")
            shutil.move(variant / "model.int8.onnx", variant / "model.onnx")
            report = cross_parity(Path(args.cross_model), variant)
            speed = pairs_per_second(variant / "model.onnx", args.threads)
            print(f"{name:<56} {report['spearman']:8.3f} {report['relative_delta_logit']:6.3f} {speed:8.1f}")


if __name__ == "__main__":
    main()
