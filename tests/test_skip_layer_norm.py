"""benchmarks.skip_layer_norm times two graphs that must compute the same thing: onnxruntime's fused
SkipLayerNormalization and the Add + Add + LayerNormalization that serving keeps instead (SLOW_CPU_FUSIONS)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from benchmarks.skip_layer_norm import HIDDEN, graphs


def test_fused_and_unfused_graphs_agree():
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((2, 5, HIDDEN)).astype(np.float32) for name in ("x", "skip")}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outputs = {}
    for name, model in graphs().items():
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        assert [node.op_type for node in model.graph.node][-1] in ("SkipLayerNormalization", "LayerNormalization")
        outputs[name] = session.run(None, feeds)[0]
    fused, unfused = outputs.values()
    np.testing.assert_allclose(fused, unfused, atol=1e-5)
