"""Metadata filters on a 100k-chunk index (issue 33): recall inside the slice, stage-1 latency with a
filter against without, and where exact search over the slice should give way to hnswlib's filtered
search.

    python -m benchmarks.filters --index artifacts/bench/index-100000 --queries 50

A copy of `benchmarks.cold_start`'s synthesised index gets a `tenant` column of controlled selectivity
(50%, 10%, 1%, 0.1% of chunks, drawn at random, disjoint; the rest `other`), recorded in its manifest
as `twostage index` records one. For each selectivity: dense Recall@100 of the served path
(VectorIndex.search_within) against exact search over the slice, and p50 of stage 1 (embed, dense,
BM25, fusion, fetch; hybrid, recall_k 100) with the filter and without, interleaved query by query.
Every query runs once both ways before timing, and the timed pairs alternate which goes first: the
first call of a query reads its BM25 postings and its slice's vector pages from the page cache into the
process (first touches), which a fixed order would charge to one side only.
Then, for slice sizes around the switch, the time of exact search against hnswlib's filtered search.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from evaluation.beir import load_beir
from handler.manifest import IndexManifest, read_manifest, write_manifest
from handler.metadata_columns import write_columns
from handler.pipeline import Retriever
from handler.settings import Settings
from handler.verify import describe_files

SELECTIVITIES = {"half": 0.5, "tenth": 0.1, "hundredth": 0.01, "thousandth": 0.001}


def with_tenants(source: Path, target: Path, seed: int = 0) -> Path:
    """A copy of `source` whose chunks carry a `tenant` of controlled selectivity."""
    if (target / "manifest.json").is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    manifest = read_manifest(target, IndexManifest)
    order = np.random.default_rng(seed).permutation(manifest.count)
    tenants = np.array(["other"] * manifest.count, dtype=object)
    start = 0
    for name, share in SELECTIVITIES.items():
        size = int(round(share * manifest.count))
        tenants[order[start : start + size]] = name
        start += size
    write_columns(target, {"tenant": "string"}, ({"tenant": t} for t in tenants), manifest.count)
    manifest.filters = {"tenant": "string"}
    manifest.files = describe_files(target)
    write_manifest(target, manifest)
    return target


def exact_top(vectors: np.ndarray, query: np.ndarray, members: np.ndarray, k: int) -> set[int]:
    scores = vectors[members] @ query
    return set(members[np.argsort(-scores)[:k]].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts", type=Path)
    parser.add_argument("--index", default="artifacts/bench/index-100000", type=Path)
    parser.add_argument("--data", default="../shared/data/scifact", type=Path)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--recall-k", type=int, default=100)
    args = parser.parse_args()
    print(describe())
    index = with_tenants(args.index, args.index.with_name(args.index.name + "-tenants"))
    retriever = Retriever.from_settings(Settings(artifacts_dir=args.artifacts_dir, index_path=index))
    store, recall = retriever.recall.stage1, retriever.recall
    count = len(store)
    vectors = store.index.index.get_items(list(range(count)), return_type="numpy")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = list(load_beir(args.data, "test").queries.values())[: args.queries]
    embedded = recall.encoder.embed_queries(queries)
    print(f"{count} chunks; {len(queries)} SciFact test queries; dense Recall@{args.recall_k} against exact search "
          "over the slice; stage 1 hybrid p50 with and without the filter (interleaved)")  # fmt: skip
    print("| tenant share | chunks in the slice | dense Recall@100 | stage 1 p50 ms, filter | without | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, share in SELECTIVITIES.items():
        where = recall.filter({"tenant": name})
        mask = store.columns.mask(where)
        members = np.flatnonzero(mask)
        k = min(args.recall_k, len(members))
        found = [set(store.index.search_within(q, k, mask)[0].tolist()) for q in embedded]
        truth = [exact_top(vectors, q, members, k) for q in embedded]
        recall_at = statistics.mean(len(f & t) / len(t) for f, t in zip(found, truth, strict=True))
        for query in queries:  # warm: both ways once, untimed
            recall(query, args.recall_k, "hybrid", where=where)
            recall(query, args.recall_k, "hybrid")
        timed = {True: [], False: []}
        for turn, query in enumerate(queries):
            for filtered in (True, False) if turn % 2 else (False, True):
                started = time.perf_counter()
                recall(query, args.recall_k, "hybrid", where=where if filtered else None)
                timed[filtered].append((time.perf_counter() - started) * 1000)
        a, b = statistics.median(timed[True]), statistics.median(timed[False])
        print(f"| {share:.1%} | {len(members)} | {recall_at:.4f} | {a:.1f} | {b:.1f} | {a / b:.2f}× |", flush=True)
    switch(store, embedded, count, args.recall_k)


def switch(store, embedded: np.ndarray, count: int, k: int) -> None:
    """Exact search over slices of growing size against hnswlib's filtered search of the same slices."""
    import handler.vector_index as vector_index

    print("\n| slice chunks | exact ms (p50) | hnswlib filtered ms (p50) | hnswlib Recall@100 |")
    print("| --- | --- | --- | --- |")
    rng = np.random.default_rng(1)
    vectors = None
    for size in (1_000, 5_000, 10_000, 20_000, 50_000):
        mask = np.zeros(count, dtype=bool)
        mask[rng.choice(count, size, replace=False)] = True
        members = np.flatnonzero(mask)
        times = {}
        for label, limit in (("exact", count + 1), ("hnswlib", 0)):
            vector_index.EXACT_SLICE = limit
            samples, found = [], []
            for q in embedded[:20]:
                started = time.perf_counter()
                found.append(set(store.index.search_within(q, k, mask)[0].tolist()))
                samples.append((time.perf_counter() - started) * 1000)
            times[label] = (statistics.median(samples), found)
        if vectors is None:
            vectors = store.index.index.get_items(list(range(count)), return_type="numpy")
        truth = [exact_top(vectors, q, members, k) for q in embedded[:20]]
        recall_at = statistics.mean(len(f & t) / len(t) for f, t in zip(times["hnswlib"][1], truth, strict=True))
        print(f"| {size} | {times['exact'][0]:.1f} | {times['hnswlib'][0]:.1f} | {recall_at:.4f} |", flush=True)


if __name__ == "__main__":
    main()
