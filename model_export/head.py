"""Fold our mean-pooled linear head into the exported graph, so the model outputs one logit per pair.

The runtime could pool token states itself, but then every pair's (tokens × hidden) states leave the
session: on a GPU that device-to-host copy halved throughput (docs/results.md §9), on a CPU it is
numpy work per request. In the graph, pooling is two reductions and the head one MatMul.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = "last_hidden_state"


def fold_head(onnx_path: Path, head_file: Path) -> None:
    """Rewrite onnx_path in place: last_hidden_state → masked mean → Linear(hidden, 1) → `logits` (batch, 1)."""
    head = json.loads(head_file.read_text())
    if head.get("pooling") != "mean":
        raise ValueError(f"{head_file}: only mean pooling can be folded, not {head.get('pooling')!r}")
    model = onnx.load(str(onnx_path))
    graph = model.graph
    if [o.name for o in graph.output] != [HIDDEN]:
        raise ValueError(f"{onnx_path}: expected one output {HIDDEN!r}, found {[o.name for o in graph.output]}")
    weight = np.asarray(head["weight"], dtype=np.float32).reshape(-1, 1)
    graph.initializer.extend(
        [
            numpy_helper.from_array(weight, "head_weight"),
            numpy_helper.from_array(np.asarray([head["bias"]], dtype=np.float32), "head_bias"),
            numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "head_last_axis"),
            numpy_helper.from_array(np.asarray([1], dtype=np.int64), "head_token_axis"),
            numpy_helper.from_array(np.asarray([1e-9], dtype=np.float32), "head_eps"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Cast", ["attention_mask"], ["head_mask"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["head_mask", "head_last_axis"], ["head_mask3"]),
            helper.make_node("Mul", [HIDDEN, "head_mask3"], ["head_masked"]),
            helper.make_node("ReduceSum", ["head_masked", "head_token_axis"], ["head_sum"], keepdims=0),
            helper.make_node("ReduceSum", ["head_mask3", "head_token_axis"], ["head_count"], keepdims=0),
            helper.make_node("Max", ["head_count", "head_eps"], ["head_count_safe"]),
            helper.make_node("Div", ["head_sum", "head_count_safe"], ["head_pooled"]),
            helper.make_node("MatMul", ["head_pooled", "head_weight"], ["head_logit"]),
            helper.make_node("Add", ["head_logit", "head_bias"], ["logits"]),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 1]))
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


LOGITS = "logits"
POSITIVE_NAMES = {"1", "label_1", "relevant", "positive", "pos", "yes", "true", "entailment", "match", "related"}
NEGATIVE_NAMES = {"0", "label_0", "irrelevant", "not_relevant", "negative", "neg", "no", "false", "not_entailment",
                  "contradiction", "unrelated", "no_match"}  # fmt: skip


class HeadError(ValueError):
    """A classification head we cannot turn into one relevance logit per pair."""


def positive_label(id2label: dict, asked: str | None = None) -> int:
    """The index of the relevant class of a two-label head, from `id2label` (or the label asked for)."""
    labels = {int(i): str(name) for i, name in id2label.items()}
    if len(labels) != 2:
        raise HeadError(f"a head with {len(labels)} labels {sorted(labels.values())}: only 1 (a logit) or 2 are served")
    if asked is not None:
        found = [i for i, name in labels.items() if name == asked or str(i) == asked]
        if not found:
            raise HeadError(f"--positive-label {asked!r} is not one of the head's labels {labels}")
        return found[0]
    positive = [i for i, name in labels.items() if name.lower() in POSITIVE_NAMES]
    negative = [i for i, name in labels.items() if name.lower() in NEGATIVE_NAMES]
    if len(positive) != 1 or len(negative) != 1 or positive == negative:
        raise HeadError(f"cannot tell the relevant label of {labels}: pass --positive-label NAME")
    return positive[0]


def fold_label_margin(onnx_path: Path, positive: int) -> None:
    """Rewrite a two-label head's `logits` (batch, 2) as (batch, 1): logit[positive] − logit[other].

    The margin is the log-odds of the softmax's positive class, so sigmoid(margin) is exactly the
    probability the model was trained to give, and calibration treats it like any single logit."""
    model = onnx.load(str(onnx_path))
    graph = model.graph
    if [o.name for o in graph.output] != [LOGITS]:
        raise HeadError(f"{onnx_path}: expected one output {LOGITS!r}, found {[o.name for o in graph.output]}")
    for node in graph.node:
        node.output[:] = ["head_two_logits" if name == LOGITS else name for name in node.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray([positive], dtype=np.int64), "head_positive"),
            numpy_helper.from_array(np.asarray([1 - positive], dtype=np.int64), "head_negative"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Gather", ["head_two_logits", "head_positive"], ["head_pos_logit"], axis=1),
            helper.make_node("Gather", ["head_two_logits", "head_negative"], ["head_neg_logit"], axis=1),
            helper.make_node("Sub", ["head_pos_logit", "head_neg_logit"], [LOGITS]),
        ]
    )
    elem_type = graph.output[0].type.tensor_type.elem_type
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(LOGITS, elem_type, ["batch_size", 1]))
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
