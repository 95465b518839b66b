"""What limits the int8 reranker on this CPU: its weight GEMMs' rate against the CPU's own int8 GEMM
peak, and the fp32 work that int8 leaves untouched.

    python -m benchmarks.int8_ceiling [--batch-size 8] [--threads 2]
    python -m benchmarks.kernel_cap avx2 int8-ceiling        (the same on an AVX2-only CPU's kernels)

1. Peaks: MLAS on one weight GEMM of the reranker's largest shape (a batch's tokens × 384 × 1536),
   fp32 `MatMul` and int8 `MatMulInteger` (u8 activations × s8 7-bit weights, as served).
2. The served int8 reranker and its fp32 export, profiled by onnxruntime over the 100 pairs of
   `benchmarks.rerank_peers` in length-sorted batches, as served: time per kind of op, and the weight
   GEMMs' achieved rate (their multiply-adds are counted from the optimised graph's weight shapes).
3. The ceiling: the whole model's int8 ÷ fp32 speed if its int8 GEMMs ran at the int8 peak and the
   rest stayed as measured, and if they took no time at all.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks.machine import describe
from benchmarks.rerank_batch import fp32_reranker
from benchmarks.rerank_peers import candidate_pairs
from handler.manifest import ModelManifest, read_manifest
from handler.onnx_model import SLOW_CPU_FUSIONS, CrossEncoder

WEIGHT_GEMMS = {
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "FusedGemm",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
}
INT8_OPS = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
HIDDEN, FFN = 384, 1536


def session(model: onnx.ModelProto | Path, threads: int, work: Path | None = None) -> ort.InferenceSession:
    """As `handler.onnx_model.make_session` configures it; with `work`, profiled, its optimised graph saved."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if work is not None:
        options.log_severity_level = 3  # not the warning that a saved optimised graph is CPU-specific
        options.enable_profiling = True
        options.profile_file_prefix = str(work / "profile")
        options.optimized_model_filepath = str(work / "optimised.onnx")
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(
        source, options, providers=["CPUExecutionProvider"], disabled_optimizers=list(SLOW_CPU_FUSIONS)
    )


def gemm_peaks(tokens: int, threads: int, rounds: int = 5) -> dict[str, float]:
    """G-op/s (a multiply-add is 2 ops) of MLAS's fp32 and u8×s8 kernels on the FFN's shape: the best of
    rounds that alternate the two, so a busy moment lowers neither."""
    rng = np.random.default_rng(0)
    runs = {
        "fp32": one_gemm(
            "MatMul",
            rng.standard_normal((tokens, HIDDEN)).astype(np.float32),
            rng.standard_normal((HIDDEN, FFN)).astype(np.float32),
            threads,
        ),
        "int8": one_gemm(
            "MatMulInteger",
            rng.integers(0, 256, (tokens, HIDDEN)).astype(np.uint8),
            rng.integers(-63, 64, (HIDDEN, FFN)).astype(np.int8),
            threads,
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            seconds[name].append(timed(run, repeats=10))
    best = {name: min(times) for name, times in seconds.items()}
    return {name: 2 * tokens * HIDDEN * FFN / best[name] / 1e9 for name in runs}


def one_gemm(op: str, activations: np.ndarray, weights: np.ndarray, threads: int):
    out_type = TensorProto.FLOAT if op == "MatMul" else TensorProto.INT32
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])],
        op,
        [helper.make_tensor_value_info("A", helper.np_dtype_to_tensor_dtype(activations.dtype), [None, HIDDEN])],
        [helper.make_tensor_value_info("Y", out_type, None)],
        [numpy_helper.from_array(weights, "B")],
    )
    run = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), threads)
    return lambda: run.run(None, {"A": activations})


def timed(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def weight_gemm_nodes(optimised: Path) -> set[str]:
    """The optimised graph's GEMMs against a constant weight (not the attention's activation products)."""
    graph = onnx.load(str(optimised)).graph
    constants = {init.name for init in graph.initializer}
    return {n.name for n in graph.node if n.op_type in WEIGHT_GEMMS and len(n.input) > 1 and n.input[1] in constants}


def profile(model_dir: Path, batches: list[dict], threads: int, repeats: int) -> dict:
    """Milliseconds per pass over all batches, by kind of op; and the weight GEMMs' multiply-adds."""
    with tempfile.TemporaryDirectory(prefix="int8-ceiling-") as tmp:
        work = Path(tmp)
        onnx_file = read_manifest(model_dir, ModelManifest).onnx_file
        run = session(model_dir / onnx_file, threads, work)
        for feeds in batches:  # warm-up: its events are dropped below
            run.run(None, feeds)
        started = time.perf_counter()
        for _ in range(repeats):
            for feeds in batches:
                run.run(None, feeds)
        wall_ms = (time.perf_counter() - started) * 1000 / repeats
        events = json.loads(Path(run.end_profiling()).read_text())
        weight_nodes = weight_gemm_nodes(work / "optimised.onnx")
    runs = sorted(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    after_warm_up = runs[len(batches) - 1]
    by_kind: dict[str, float] = defaultdict(float)
    macs = 0
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < after_warm_up:
            continue
        node, op = event["name"].removesuffix("_kernel_time"), event["args"]["op_name"]
        by_kind[kind_of(node, op, weight_nodes)] += event["dur"] / 1000 / repeats
        if node in weight_nodes:  # rows × K × N, from the shapes this run really had
            (activations,), (out,) = (
                event["args"]["input_type_shape"][0].values(),
                event["args"]["output_type_shape"][0].values(),
            )
            macs += math.prod(activations) * out[-1] // repeats
    return {"wall_ms": wall_ms, "by_kind": dict(by_kind), "gemm_macs": macs}


GEMMS = "weight GEMMs (int8: with quantising their inputs)"


def kind_of(node: str, op: str, weight_nodes: set[str]) -> str:
    if node in weight_nodes or op in INT8_OPS:  # INT8_OPS: also the activations quantised once for Q, K, V
        return GEMMS
    if op in ("MatMul", "FusedMatMul"):
        return "attention MatMuls (fp32 in both)"
    return op


def report(peaks: dict[str, float], fp32: dict, int8: dict) -> None:
    kinds = sorted(set(fp32["by_kind"]) | set(int8["by_kind"]), key=lambda k: -int8["by_kind"].get(k, 0))
    print(
        f"\nMLAS peaks on the FFN's shape: fp32 {peaks['fp32']:.0f} G-op/s, int8 {peaks['int8']:.0f} G-op/s "
        f"({peaks['int8'] / peaks['fp32']:.2f}×)"
    )
    print("\n| op kind | fp32 ms | int8 ms |\n| --- | --- | --- |")
    for kind in kinds:
        print(f"| {kind} | {fp32['by_kind'].get(kind, 0):.1f} | {int8['by_kind'].get(kind, 0):.1f} |")
    print(
        f"| **all ops (profiled) / wall** | {sum(fp32['by_kind'].values()):.1f} / {fp32['wall_ms']:.1f} "
        f"| {sum(int8['by_kind'].values()):.1f} / {int8['wall_ms']:.1f} |"
    )
    g32, g8 = fp32["by_kind"][GEMMS], int8["by_kind"][GEMMS]
    rate32, rate8 = 2 * fp32["gemm_macs"] / g32 / 1e6, 2 * int8["gemm_macs"] / g8 / 1e6
    rest32, rest8 = sum(fp32["by_kind"].values()) - g32, sum(int8["by_kind"].values()) - g8
    whole32, whole8 = g32 + rest32, g8 + rest8
    at_peak = g32 * rate32 / peaks["int8"]  # the fp32 GEMMs' work at the int8 peak
    print(
        f"\nweight GEMMs: fp32 {rate32:.0f} G-op/s ({rate32 / peaks['fp32']:.0%} of its peak), "
        f"int8 {rate8:.0f} G-op/s ({rate8 / peaks['int8']:.0%} of its peak): int8 {g32 / g8:.2f}× fp32"
    )
    print(f"int8's time outside its GEMMs: {rest8:.1f} of {whole8:.1f} ms ({rest8 / whole8:.0%})")
    print(
        f"whole model, int8 ÷ fp32: {whole32 / whole8:.2f}× measured; "
        f"{whole32 / (at_peak + rest8):.2f}× if its GEMMs ran at the int8 peak; "
        f"{whole32 / rest8:.2f}× if they took no time"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--bench-dir", type=Path, default=Path("artifacts/bench/rerank-batch"))
    parser.add_argument("--batch-size", type=int, default=None, help="default: the served one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU

    query, passages = candidate_pairs(args.data, args.artifacts_dir, 100)
    served = CrossEncoder(args.artifacts_dir / "models" / "cross", threads=args.threads, batch_size=args.batch_size)
    batches = served_batches(served, query, passages)
    tokens = max(feeds["input_ids"].size for feeds in batches)
    print(f"{len(passages)} pairs in {len(batches)} batches of {served.batch_size}, up to {tokens} tokens a batch")
    peaks = gemm_peaks(tokens, args.threads)
    fp32 = profile(fp32_reranker(args.artifacts_dir, args.bench_dir), batches, args.threads, args.repeats)
    int8 = profile(served.model_dir, batches, args.threads, args.repeats)
    report(peaks, fp32, int8)


def served_batches(model: CrossEncoder, query: str, passages: list[str]) -> list[dict]:
    """The feeds the served reranker runs: pairs sorted by length, each batch padded to its longest."""
    encodings = sorted(model.encode(query, passages), key=lambda e: len(e.ids))
    return [model._feeds(encodings[i : i + model.batch_size]) for i in range(0, len(encodings), model.batch_size)]


if __name__ == "__main__":
    main()
