"""Contracts between the runtime's parts, as Protocols (what the pipeline needs, not who provides it)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from tokenizers import Encoding

from handler.manifest import ModelManifest


class CrossScorer(Protocol):
    """Stage 2 as the pipeline sees it: the ONNX cross-encoder, or the same routed through the GPU batcher."""

    manifest: ModelManifest
    max_length: int

    def encode(self, query: str, passages: Sequence[str]) -> list[Encoding]: ...

    def logits(self, query: str, passages: Sequence[str]) -> np.ndarray: ...

    def logits_encoded(self, encodings: list[Encoding], stop: threading.Event | None = None) -> np.ndarray: ...
