"""Contracts between the runtime's parts, as Protocols (what the pipeline needs, not who provides it)."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from tokenizers import Encoding, Tokenizer

from handler.manifest import ModelManifest


class CrossScorer(Protocol):
    """Stage 2 as the pipeline sees it: the ONNX cross-encoder, or the same routed through the GPU batcher."""

    manifest: ModelManifest
    max_length: int
    tokenizer: Tokenizer  # the pairs' tokenizer (cutting a document to N tokens uses it)

    def encode(self, query: str, passages: Sequence[str]) -> list[Encoding]: ...

    def logits(self, query: str, passages: Sequence[str]) -> np.ndarray: ...

    def logits_encoded(self, encodings: list[Encoding], stop: threading.Event | None = None) -> np.ndarray: ...


# A query needs one character that is not whitespace, a control or a zero-width/format character. One
# regex for the pipeline's check and the OpenAPI document's `pattern`: clients and fuzzers see one rule.
VISIBLE_PATTERN = r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]"
_VISIBLE = re.compile(VISIBLE_PATTERN)


def has_visible_text(text: str) -> bool:
    return bool(_VISIBLE.search(text))
