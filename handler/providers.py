"""ONNX Runtime provider names and batch constants: a leaf module (never imports onnxruntime), so that
settings can check a provider list without loading the runtime and the ONNX core can read the defaults."""

from __future__ import annotations

from collections.abc import Sequence

# Short names a setting may use, in the default order of preference.
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})
# Length-sorted batches of this many pairs beat larger ones on every CPU measured (docs/results.md §15);
# the GPU image batches by tokens instead (handler/batching.py).
RERANK_BATCH_SIZE = 8


def check_provider_names(names: Sequence[str]) -> tuple[str, ...]:
    """The names, lower-cased; ValueError naming any this package does not know."""
    names = tuple(n.strip().lower() for n in names if n.strip())
    if not names:
        raise ValueError("no provider named")
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise ValueError(f"providers: unknown {unknown}; choose from {list(PROVIDERS)}")
    return names
