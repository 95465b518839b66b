"""The exported models' outputs on this CPU's kernels, saved, then compared against a reference: the
same int8 file runs different onnxruntime kernels on AVX-512 VNNI, AVX2 and arm64 (dot product, i8mm).
Run `save` on each host, or under qemu-user for arm64 (scripts/arm64_parity.sh), then `compare`.

    python -m benchmarks.cpu_parity save --models artifacts/models --out /tmp/int8-x86.npz
    python -m benchmarks.cpu_parity compare /tmp/fp32-x86.npz /tmp/int8-x86.npz /tmp/int8-arm64.npz

Inputs: three queries, the first 24 sample passages (embedded one at a time, as the index build does)
and every (query, passage) pair for the reranker. Reported as the export gate reports parity: cosine
of the embeddings, and the worst |Δ logit| as a share of the reference logits' range.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.machine import describe

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "corpus.jsonl"
QUERIES = ["How much Veltrazine should a 7-year-old child take?", "What does error E240 mean?", "battery life"]


def save(models: Path, out: Path) -> None:
    from handler.onnx_model import CrossEncoder, Encoder

    docs = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:24]]
    passages = [f"{d['title']}. {d['text']}" for d in docs]
    encoder, cross = Encoder(models / "bi", batch_size=1), CrossEncoder(models / "cross")
    logits = np.stack([cross.logits(q, passages) for q in QUERIES])
    queries, embedded = encoder.embed_queries(QUERIES), encoder.embed_passages(passages)
    np.savez(out, queries=queries, passages=embedded, logits=logits, machine=describe())
    print(f"{describe()}: saved {out}")


def _ranks(row: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(row)).astype(float)


def compare(reference: Path, others: list[Path]) -> None:
    ref = np.load(reference)
    span = float(ref["logits"].max() - ref["logits"].min())
    print(f"reference: {reference.name} ({ref['machine']})")
    print("| outputs | on | embedding cosine min / mean | worst \\|Δ logit\\| / range | Spearman per query |")
    print("| --- | --- | --- | --- | --- |")
    for path in others:
        got = np.load(path)
        cosine = np.concatenate([(ref[k] * got[k]).sum(axis=1) for k in ("queries", "passages")])
        delta = float(np.abs(ref["logits"] - got["logits"]).max())
        pairs = zip(ref["logits"], got["logits"], strict=True)
        rho = np.mean([np.corrcoef(_ranks(a), _ranks(b))[0, 1] for a, b in pairs])
        print(
            f"| {path.name} | {got['machine']} | {cosine.min():.4f} / {cosine.mean():.4f} "
            f"| {delta:.3f} / {span:.1f} = {delta / span:.3f} | {rho:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    saving = commands.add_parser("save")
    saving.add_argument("--models", type=Path, default=Path("artifacts/models"))
    saving.add_argument("--out", type=Path, required=True)
    comparing = commands.add_parser("compare")
    comparing.add_argument("reference", type=Path)
    comparing.add_argument("others", type=Path, nargs="+")
    args = parser.parse_args()
    save(args.models, args.out) if args.command == "save" else compare(args.reference, args.others)


if __name__ == "__main__":
    main()
