"""Rerank throughput by batch size on whatever provider really runs the cross-encoder.

The GPU variant's figure (docs/results.md): an fp16 export on a GPU host, pairs filled to 256 tokens:
    python -m benchmarks.gpu_rerank --model-dir artifacts/models-fp16/cross --require-gpu
It also prints how far the GPU's scores are from the CPU provider's on the same graph.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.machine import describe
from handler.onnx_model import DEFAULT_PROVIDERS, CrossEncoder
from model_export.parity import PROBE_TEXTS


def make_pairs(count: int, tokens: int, seed: int = 0) -> tuple[str, list[str]]:
    """One query and `count` passages long enough that every pair is truncated to max_length."""
    rng = np.random.default_rng(seed)
    vocab = " ".join(PROBE_TEXTS).split()
    query = " ".join(rng.choice(vocab, 12))
    return query, [" ".join(rng.choice(vocab, tokens)) for _ in range(count)]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The cross-encoder under test and the providers it must run on (shared by the GPU benchmarks)."""
    parser.add_argument("--model-dir", default="artifacts/models/cross")
    parser.add_argument("--providers", default=",".join(DEFAULT_PROVIDERS))
    parser.add_argument("--require-gpu", action="store_true")


def load_model(args: argparse.Namespace) -> CrossEncoder:
    return CrossEncoder(args.model_dir, providers=args.providers.split(","), require_gpu=args.require_gpu)


def throughput(model: CrossEncoder, query: str, passages: list[str], batch_size: int, repeats: int) -> float:
    model.batch_size = batch_size
    model.logits(query, passages[: batch_size * 2])  # warm-up: kernels, arena growth, cuDNN algorithm search
    started = time.perf_counter()
    for _ in range(repeats):
        model.logits(query, passages)
    return repeats * len(passages) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--batch-sizes", default="32,64,128,256,512")
    parser.add_argument("--pairs", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU

    model = load_model(args)
    query, passages = make_pairs(args.pairs, model.manifest.max_length)
    lengths = [len(e.ids) for e in model.tokenizer.encode_batch([(query, p) for p in passages[:64]])]
    started = time.perf_counter()
    model.tokenizer.encode_batch([(query, p) for p in passages])
    tokenize_per_s = len(passages) / (time.perf_counter() - started)
    report = {
        "machine": describe(),
        "model": args.model_dir,
        "precision": (model.manifest.quantization or {}).get("dtype", "fp32"),
        "providers_live": model.session.get_providers(),
        "tokens_per_pair": int(np.median(lengths)),
        "tokenize_pairs_per_s": round(tokenize_per_s),
        "pairs_per_s": {},
    }
    for size in map(int, args.batch_sizes.split(",")):
        report["pairs_per_s"][size] = round(throughput(model, query, passages, size, args.repeats))
        print(f"batch {size:>4}: {report['pairs_per_s'][size]:>7} pairs/s", flush=True)
    cpu = CrossEncoder(args.model_dir, providers=["cpu"])
    sample = passages[:64]
    report["max_abs_logit_delta_vs_cpu"] = round(
        float(np.abs(model.logits(query, sample) - cpu.logits(query, sample)).max()), 5
    )
    print(json.dumps(report, indent=1))
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(report, out, indent=1)


if __name__ == "__main__":
    main()
