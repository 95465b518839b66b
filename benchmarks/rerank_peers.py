"""Rerank throughput: ours vs sentence-transformers (torch and ONNX), fastembed and FlashRank.

    python -m benchmarks.rerank_peers --threads 2

Every system scores the same 100 (query, passage) pairs — one SciFact test claim and its hybrid
stage-1 top 100, as served — truncated at 256 tokens, with the same thread count, in the same run.
All of them load the same files: a MiniLM-L6 sequence-classification cross-encoder exported by our
`model_export` (fp32 and int8 per-channel). Prints pairs/s and each peer's time relative to ours.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from benchmarks.machine import describe
from handler.onnx_model import CrossEncoder

MAX_LENGTH = 256


def candidate_pairs(data: Path, artifacts: Path, count: int) -> tuple[str, list[str]]:
    from evaluation.beir import load_beir
    from evaluation.evaluate import eval_index
    from evaluation.settings import EvalSettings
    from handler.pipeline import Retriever
    from handler.settings import Settings

    index = eval_index(EvalSettings(data=data, artifacts_dir=artifacts))
    beir = load_beir(data, "test")
    query = next(iter(beir.queries.values()))
    retriever = Retriever.from_settings(Settings(artifacts_dir=artifacts, index_path=index))
    chunks = retriever.recall(query, count, "hybrid").chunks
    return query, [c.passage for c in chunks]


def classification_model(bench_dir: Path) -> Path:
    """MiniLM-L6 with a one-logit classification head: the graph every peer knows how to run."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model_export.source import packaged_minilm_dir

    hf = bench_dir / "hf"
    if not (hf / "config.json").is_file():
        AutoModelForSequenceClassification.from_pretrained(str(packaged_minilm_dir()), num_labels=1).save_pretrained(hf)
        tokenizer = AutoTokenizer.from_pretrained(str(packaged_minilm_dir()))
        tokenizer.model_max_length = MAX_LENGTH
        tokenizer.save_pretrained(hf)
    return hf


def _exported_with_current_recipe(target: Path, quantize: str) -> bool:
    from handler.manifest import ModelManifest, read_manifest
    from model_export.export import INT8

    if not (target / "manifest.json").is_file():
        return False
    return read_manifest(target, ModelManifest).quantization == (INT8 if quantize == "int8" else None)


def export(hf: Path, bench_dir: Path, quantize: str) -> Path:
    """Our export, then the file layouts the peers look for, all pointing at the same graph."""
    from model_export.export import export_all
    from model_export.settings import ExportSettings

    target = bench_dir / quantize / "cross"
    if not _exported_with_current_recipe(target, quantize):
        # a speed benchmark: the untrained head's logits barely vary, so no parity gate
        settings = ExportSettings(
            models_dir=bench_dir / quantize,
            which="cross",
            cross_model=str(hf),
            quantize=quantize,
            max_relative_delta=1e9,
            min_spearman=-1.0,
            max_length=MAX_LENGTH,
        )
        export_all(settings)
    tokenizer = json.loads((target / "tokenizer.json").read_text())
    tokenizer["truncation"] = {"direction": "Right", "max_length": MAX_LENGTH, "strategy": "LongestFirst", "stride": 0}
    tokenizer["padding"] = None  # peers configure padding themselves; a fixed-length pad would be unfair
    (target / "tokenizer.json").write_text(json.dumps(tokenizer))
    # fastembed truncates at the stricter of model_max_length and max_length (the MiniLM config says 128)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.update(model_max_length=MAX_LENGTH, max_length=MAX_LENGTH)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    (target / "onnx").mkdir(exist_ok=True)
    shutil.copy(target / "model.onnx", target / "onnx" / "model.onnx")
    flashrank = target / "flashrank" / "ms-marco-TinyBERT-L-2-v2"  # FlashRank only loads names it knows
    flashrank.mkdir(parents=True, exist_ok=True)
    shutil.copy(target / "model.onnx", flashrank / "flashrank-TinyBERT-L-2-v2.onnx")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt"):
        shutil.copy(target / name, flashrank / name)
    return target


def ours(model_dir: Path, threads: int):
    model = CrossEncoder(model_dir, threads=threads)  # batches as served (rerank_batch_size's default)
    return lambda q, ps: model.logits(q, ps)


def st_torch(hf: Path, threads: int):
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    torch.set_num_threads(threads)
    model = STCrossEncoder(str(hf), max_length=MAX_LENGTH, device="cpu")
    return lambda q, ps: model.predict([(q, p) for p in ps], batch_size=32)


def st_onnx(model_dir: Path, threads: int):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    model = STCrossEncoder(
        str(model_dir),
        backend="onnx",
        max_length=MAX_LENGTH,
        device="cpu",
        model_kwargs={"file_name": "onnx/model.onnx", "provider": "CPUExecutionProvider"},
    )
    return lambda q, ps: model.predict([(q, p) for p in ps], batch_size=32)


def fastembed(model_dir: Path, threads: int):
    from fastembed.common.model_description import ModelSource
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    name = f"twostage/bench-{model_dir.parent.name}"
    if name.lower() not in {m["model"].lower() for m in TextCrossEncoder.list_supported_models()}:
        TextCrossEncoder.add_custom_model(name, sources=ModelSource(hf=name), model_file="onnx/model.onnx")
    model = TextCrossEncoder(name, threads=threads, specific_model_path=str(model_dir))
    return lambda q, ps: list(model.rerank(q, ps, batch_size=32))


def flashrank(model_dir: Path, threads: int):
    from flashrank import Ranker, RerankRequest

    ranker = Ranker("ms-marco-TinyBERT-L-2-v2", cache_dir=str(model_dir / "flashrank"), max_length=MAX_LENGTH)
    return lambda q, ps: ranker.rerank(
        RerankRequest(query=q, passages=[{"id": i, "text": p} for i, p in enumerate(ps)])
    )


def pairs_per_second(run, query: str, passages: list[str], repeats: int) -> float:
    run(query, passages)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(query, passages)
        times.append(time.perf_counter() - started)
    return len(passages) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--bench-dir", type=Path, default=Path("artifacts/bench/peers"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(describe(), flush=True)  # every figure names its CPU

    query, passages = candidate_pairs(args.data, args.artifacts_dir, args.pairs)
    hf = classification_model(args.bench_dir)
    dirs = {q: export(hf, args.bench_dir, q) for q in ("none", "int8")}
    systems = [
        ("ours int8", lambda: ours(dirs["int8"], args.threads)),
        ("ours fp32", lambda: ours(dirs["none"], args.threads)),
        ("sentence-transformers torch fp32", lambda: st_torch(hf, args.threads)),
        ("sentence-transformers onnx fp32", lambda: st_onnx(dirs["none"], args.threads)),
        ("sentence-transformers onnx int8", lambda: st_onnx(dirs["int8"], args.threads)),
        ("fastembed int8", lambda: fastembed(dirs["int8"], args.threads)),
        ("fastembed fp32", lambda: fastembed(dirs["none"], args.threads)),
        ("FlashRank int8", lambda: flashrank(dirs["int8"], args.threads)),
        ("FlashRank fp32", lambda: flashrank(dirs["none"], args.threads)),
    ]
    results = {}
    for name, make in systems:
        try:
            results[name] = pairs_per_second(make(), query, passages, args.repeats)
        except Exception as error:  # noqa: BLE001 — a peer that cannot run is reported, not fatal
            print(f"{name}: failed: {error!r}")
            continue
        print(f"{name:<36} {results[name]:7.1f} pairs/s", flush=True)
    best = results.get("ours int8")
    print(f"\n{len(passages)} pairs, {args.threads} threads, max_length {MAX_LENGTH}")
    print("| system | pairs/s | ours int8 is × faster |\n| --- | --- | --- |")
    for name, value in results.items():
        print(f"| {name} | {value:.1f} | {best / value:.2f} |")


if __name__ == "__main__":
    main()
