"""One ONNX Runtime core shared by the bi-encoder (embeddings) and the cross-encoder (scores).

The index build and the query path both use these classes, so a passage is embedded the same way
whether it was indexed offline or arrives in a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from handler.cpu import available_cpus
from handler.errors import ArtifactError, Cancelled
from handler.manifest import ModelManifest, read_manifest
from handler.providers import DEFAULT_PROVIDERS, GPU_PROVIDERS, PROVIDERS, RERANK_BATCH_SIZE, check_provider_names
from handler.verify import check_file_records, check_max_length, check_model_file, inside

log = logging.getLogger(__name__)

# onnxruntime's CPU SkipLayerNormalization kernel is a scalar loop, slower than the Add + Add +
# LayerNormalization it replaces with the same output (docs/results.md §15). CPU sessions, and the int8
# graphs stored optimised at export, leave those unfused.
SLOW_CPU_FUSIONS = ("SkipLayerNormFusion",)


class ProviderError(RuntimeError):
    """A GPU was required but ONNX Runtime is not running the model on one."""


def wanted_providers(names: Sequence[str] = DEFAULT_PROVIDERS) -> list[str]:
    """The asked-for providers this onnxruntime build has, in the asked order (CPU always last)."""
    names = check_provider_names(names)
    built = set(ort.get_available_providers())
    chosen = [PROVIDERS[n] for n in names if PROVIDERS[n] in built and PROVIDERS[n] != PROVIDERS["cpu"]]
    return chosen + [PROVIDERS["cpu"]]


def make_session(
    path: Path, threads: int | None = None, providers: Sequence[str] = DEFAULT_PROVIDERS, require_gpu: bool = False
):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads would spin for work: on a 2-vCPU Lambda that takes CPU from the init's
    # imports and index load while rerank speed does not change (docs/results.md §8).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chosen = wanted_providers(providers)
    slow = SLOW_CPU_FUSIONS if not GPU_PROVIDERS.intersection(chosen) else ()
    session = ort.InferenceSession(str(path), options, providers=chosen, disabled_optimizers=list(slow))
    # ORT falls back to CPU silently when CUDA/TensorRT cannot start (get_device() still says GPU):
    # what really runs is session.get_providers().
    live = session.get_providers()
    log.info("%s runs on %s", path.parent.name, live)
    if require_gpu and not GPU_PROVIDERS.intersection(live):
        raise ProviderError(
            f"a GPU was required but {path.parent.name} runs on {live} "
            f"(asked for {list(providers)}; this onnxruntime has {ort.get_available_providers()})"
        )
    return session


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises its own exception type for an unparsable file
        raise ArtifactError(path, f"not a tokenizer ({error})") from None


class OnnxModel:
    """Tokenizer + session, both configured from our manifest (never from the tokenizer file's own
    padding/truncation: the packaged MiniLM's tokenizer.json pads to 128 while the model uses 256).

    Init checks the files against the manifest (handler/verify.py) and runs one probe, so a wrong or
    corrupt model fails here, naming its file, instead of on every request."""

    kind = ""  # what the manifest must say: "bi" or "cross"
    default_batch_size = 32

    def __init__(
        self,
        model_dir: Path | str,
        threads: int | None = None,
        batch_size: int | None = None,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        require_gpu: bool = False,
        max_length: int | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.manifest: ModelManifest = read_manifest(self.model_dir, ModelManifest)
        if self.manifest.kind != self.kind:
            raise ArtifactError(
                self.model_dir / "manifest.json", f"a {self.manifest.kind} model where a {self.kind} belongs"
            )
        onnx_path = inside(self.model_dir, self.manifest.onnx_file)
        # every file whole, always: the model's few MB hash quickly on the loading thread (docs/results.md §10)
        check_model_file(onnx_path, self.manifest.size_bytes, self.manifest.sha256, checksum=True)
        check_file_records(self.model_dir, self.manifest.files, True, "export it again with `twostage export`")
        check_max_length(self.model_dir, self.manifest.max_length)
        # Never beyond what the model was exported for; shorter only when asked (a latency lever).
        self.max_length = min(self.manifest.max_length, max_length or self.manifest.max_length)
        self.tokenizer = load_tokenizer(inside(self.model_dir, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        try:
            self.session = make_session(onnx_path, threads, providers, require_gpu)
        except ProviderError:
            raise
        except Exception as error:  # onnxruntime's own exception types for a graph it cannot read
            raise ArtifactError(onnx_path, f"onnxruntime cannot load it ({error})") from None
        self.input_names = {node.name for node in self.session.get_inputs()}
        self.batch_size = batch_size or self.default_batch_size
        try:
            self.probe()
        except ArtifactError:
            raise
        except Exception as error:  # onnxruntime's own errors for a graph that is not what it claims
            raise ArtifactError(onnx_path, f"probe run failed: {error}") from None

    def probe(self) -> None:
        """One tiny run that shows the graph computes what the manifest says (its shape)."""
        raise NotImplementedError

    def _feeds(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        """Pad to the longest sequence of this batch only (dynamic padding)."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.manifest.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
            types[row, : len(enc.ids)] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: value for name, value in feeds.items() if name in self.input_names}

    def _run_sorted(self, encodings: list[Encoding], run_batch, stop: threading.Event | None = None) -> np.ndarray:
        """Run length-sorted batches (little padding per batch) and restore the input order; `stop` set
        (the caller went away) ends the work before the next batch."""
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        parts = []
        for start in range(0, len(order), self.batch_size):
            if stop is not None and stop.is_set():
                raise Cancelled("stopped between rerank batches")
            batch = [encodings[i] for i in order[start : start + self.batch_size]]
            parts.append(run_batch(self._feeds(batch)))
        out = np.concatenate(parts)
        restored = np.empty_like(out)
        restored[order] = out
        return restored


class Encoder(OnnxModel):
    """Bi-encoder: texts → (n, dims) float32 embeddings, pooled and normalised as its manifest says.
    Queries and passages get the prompts the model was trained with (`embed_queries`, `embed_passages`):
    index build, serving, eval and training all embed through these two."""

    kind = "bi"

    def probe(self) -> None:
        width = self.embed(["probe"]).shape[1]
        if self.manifest.dims is not None and width != self.manifest.dims:
            raise ArtifactError(
                self.model_dir / self.manifest.onnx_file,
                f"embeds {width}-d vectors, manifest.json says dims {self.manifest.dims}",
            )

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.embed([self.manifest.query_prompt + q for q in queries])

    def embed_passages(self, passages: Sequence[str]) -> np.ndarray:
        return self.embed([self.manifest.passage_prompt + p for p in passages])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Texts as given, no prompt."""
        if not texts:
            return np.zeros((0, self.manifest.dims or 0), dtype=np.float32)
        return self._run_sorted(self.tokenizer.encode_batch(list(texts)), self._embed_batch)

    def _embed_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        hidden = self.session.run(None, feeds)[0]
        pooled = POOLING[self.manifest.pooling or "mean"](hidden.astype(np.float32), feeds["attention_mask"])
        if self.manifest.normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.astype(np.float32)


class CrossEncoder(OnnxModel):
    """Cross-encoder: (query, passage) pairs → one relevance logit each (the graph's only output;
    our own models' mean-pooled head is folded into the graph at export)."""

    kind = "cross"
    # small batches keep the attention scores (batch × heads × length²) in cache (handler/providers.py)
    default_batch_size = RERANK_BATCH_SIZE

    def probe(self) -> None:
        out = self.session.run(None, self._feeds(self.encode("probe", ["one", "two"])))[0]
        if out.shape not in ((2,), (2, 1)):
            raise ArtifactError(
                self.model_dir / self.manifest.onnx_file,
                f"outputs shape {out.shape} for 2 pairs, not one logit per pair",
            )

    def logits(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.logits_encoded(self.encode(query, passages))

    def encode(self, query: str, passages: Sequence[str]) -> list[Encoding]:
        return self.tokenizer.encode_batch([(query, passage) for passage in passages])

    def logits_encoded(self, encodings: list[Encoding], stop: threading.Event | None = None) -> np.ndarray:
        """Logits of pairs `encode` made (callers count their tokens in between: the work budget)."""
        if not encodings:
            return np.zeros(0, dtype=np.float32)
        return self._run_sorted(encodings, self._logit_batch, stop)

    def close(self) -> None:
        pass

    def logits_batch(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """One session run over exactly these pairs (the dynamic batcher has already sized them)."""
        return self._logit_batch(self._feeds(encodings))

    def _logit_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds)[0].reshape(-1).astype(np.float32)


class FirstPass(CrossEncoder):
    """The rerank cascade's first pass: a small cross-encoder distilled from the served one, scoring every
    candidate so that the served one reads only the best few (handler/rerank.py)."""

    kind = "first_pass"


# sentence-transformers' pooling modes over right-padded batches (ours always are).
def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    mask = attention_mask[..., None].astype(np.float32)
    return (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)


def mean_sqrt_len_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    mask = attention_mask[..., None].astype(np.float32)
    return (hidden * mask).sum(axis=1) / np.sqrt(np.clip(mask.sum(axis=1), 1e-9, None))


def weighted_mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Token i weighs i (1-based): later tokens count more (SGPT)."""
    weights = attention_mask.astype(np.float32) * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)
    return (hidden * weights[..., None]).sum(axis=1) / np.clip(weights.sum(axis=1, keepdims=True), 1e-9, None)


def max_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    return np.where(attention_mask[..., None] > 0, hidden, -np.inf).max(axis=1)


def last_token_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    last = np.clip(attention_mask.sum(axis=1) - 1, 0, None)
    return hidden[np.arange(len(hidden)), last]


POOLING = {
    "cls": lambda hidden, _mask: hidden[:, 0],
    "mean": mean_pool,
    "mean_sqrt_len_tokens": mean_sqrt_len_pool,
    "weightedmean": weighted_mean_pool,
    "max": max_pool,
    "lasttoken": last_token_pool,
}
