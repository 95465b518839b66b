"""Why CPU sessions leave SkipLayerNormalization unfused (handler.onnx_model.SLOW_CPU_FUSIONS): onnxruntime's
CPU kernel for it against the Add + Add + LayerNormalization it replaces, on one reranker batch's shape.

    python -m benchmarks.skip_layer_norm [--tokens 204] [--batch 8]

When a later onnxruntime makes the fused kernel the faster one, drop the fusion from SLOW_CPU_FUSIONS.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks.int8_ceiling import timed
from benchmarks.machine import describe

HIDDEN = 384


def graphs() -> dict[str, object]:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), n) for n in ("g", "b", "bias")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, None, HIDDEN]) for n in ("x", "skip")]
    output = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, HIDDEN])]
    fused = [
        helper.make_node(
            "SkipLayerNormalization", ["x", "skip", "g", "b", "bias"], ["y"], domain="com.microsoft", epsilon=1e-12
        )
    ]
    unfused = [
        helper.make_node("Add", ["x", "bias"], ["biased"]),
        helper.make_node("Add", ["biased", "skip"], ["summed"]),
        helper.make_node("LayerNormalization", ["summed", "g", "b"], ["y"], axis=-1, epsilon=1e-12),
    ]
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return {
        name: helper.make_model(
            helper.make_graph(nodes, name, inputs, output, weights), opset_imports=opsets, ir_version=8
        )
        for name, nodes in (("SkipLayerNormalization", fused), ("Add + Add + LayerNormalization", unfused))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=204)
    args = parser.parse_args()
    print(f"{describe()}; onnxruntime {ort.__version__}", flush=True)  # every figure names its CPU

    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal((args.batch, args.tokens, HIDDEN)).astype(np.float32) for n in ("x", "skip")}
    outputs = {}
    print("| graph | 1 thread, ms | 2 threads, ms |\n| --- | --- | --- |")
    for name, model in graphs().items():
        row = []
        for threads in (1, 2):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as built
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            outputs[name] = session.run(None, feeds)[0]
            row.append(timed(lambda s=session: s.run(None, feeds), repeats=200) * 1000)
        print(f"| {name} | {row[0]:.3f} | {row[1]:.3f} |")
    first, second = outputs.values()
    print(f"largest difference between the two outputs: {float(np.abs(first - second).max()):.1e}")


if __name__ == "__main__":
    main()
