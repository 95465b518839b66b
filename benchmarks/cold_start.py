"""Cold start: a new process → the first /search answer through `handler.lambda_function`.

    python -m benchmarks.cold_start --python /tmp/empty/bin/python --site /tmp/runtime --recall-k 10 --bare

Synthesises an index of `--chunks` chunks from a real one (SciFact's by default): every vector is
repeated with small noise and re-normalised, every chunk's text reused under a new id, and hnswlib,
BM25 and the doc store are built from those exactly as `twostage index` builds them. Then it starts
fresh interpreters (`--runs`) that import `handler.lambda_function` (every import and the init, as
Lambda does) and answer one API Gateway v2 `/search` event reranking `--recall-k` candidates. Prints
imports + init, the first request, their sum, and the init's parts (the two models build on a worker
thread while imports and the index load run, so the parts overlap).
To see what Lambda pays, run it on the image's runtime tree (`scripts/build_runtime.sh DIR`, then
`--site DIR`) with an empty venv's `--python`, so nothing outside the tree is importable. `--bare` also
times, alternating with the handler, the floor any handler pays: the four runtime libraries, both
models and the index loaded in turn, and the same first query, with nothing else (BARE below).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from handler import lambda_function as lf  # every import and the whole init, as Lambda runs it
t1 = time.perf_counter()
from handler.events import http_api_event
body = {"query": "vitamin D deficiency and bone fractures", "recall_k": int(sys.argv[1])}
response = lf.handler(http_api_event("POST", "/search", body), None)
t2 = time.perf_counter()
assert response["statusCode"] == 200, response
import resource
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"imports_and_init": t1 - t0, "first_request": t2 - t1, "ready_to_answer": t2 - t0,
                  "load_ms": lf.retriever.load_ms, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "rss_mb": usage.ru_maxrss / 1024}))
"""

# The throw-away measurement, rebuilt as the floor to compare against: only the four runtime
# libraries, both int8 models and the index loaded one after the other, then the same query (dense
# top recall_k, reranked). No settings, API, BM25 or doc-store layer: what any handler must pay.
BARE = r"""
import json, sqlite3, sys, time
t0 = time.perf_counter()
import hnswlib, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
t1 = time.perf_counter()
models, index_dir, recall_k = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(name):
    manifest = json.load(open(f"{models}/{name}/manifest.json"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    path = f"{models}/{name}/{manifest['onnx_file']}"
    # as handler.onnx_model.make_session: SLOW_CPU_FUSIONS
    session = ort.InferenceSession(
        path, options, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
    )
    tokenizer = Tokenizer.from_file(f"{models}/{name}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=manifest["max_length"])
    return session, tokenizer
def feeds(session, encodings):
    width = max(len(e.ids) for e in encodings)
    ids, mask, types = (np.zeros((len(encodings), width), np.int64) for _ in range(3))
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)], mask[row, : len(e.ids)], types[row, : len(e.ids)] = e.ids, 1, e.type_ids
    named = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {i.name: named[i.name] for i in session.get_inputs()}
(bi, bi_tok), (cross, cross_tok) = load("bi"), load("cross")
t2 = time.perf_counter()
meta = json.load(open(f"{index_dir}/manifest.json"))
index = hnswlib.Index(space=meta["space"], dim=meta["dims"])
index.load_index(f"{index_dir}/index.bin")
index.set_ef(max(meta["ef"], recall_k))
t3 = time.perf_counter()
query = "vitamin D deficiency and bone fractures"
hidden = bi.run(None, feeds(bi, [bi_tok.encode(query)]))[0]
vector = hidden.mean(axis=1)[0]
labels, _ = index.knn_query(vector / np.linalg.norm(vector), k=recall_k)
db = sqlite3.connect(f"file:{index_dir}/docstore.sqlite?mode=ro", uri=True)
rows = [db.execute("SELECT title, text FROM chunks WHERE label = ?", (int(l),)).fetchone() for l in labels[0]]
scores = cross.run(None, feeds(cross, cross_tok.encode_batch([(query, f"{t} {x}") for t, x in rows])))[0]
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "models": t2 - t1, "index": t3 - t2, "imports_and_init": t3 - t0,
                  "first_request": t4 - t3, "ready_to_answer": t4 - t0}))
"""


def synthesise(source: Path, target: Path, chunks: int, seed: int = 0) -> Path:
    """`chunks` chunks from a real index: its vectors with noise, its texts under new ids, assembled as
    `twostage index` assembles (index_build/assemble.py)."""
    import hnswlib
    import numpy as np

    from handler.docstore import DOCSTORE_NAME, Chunk, DocStore
    from handler.manifest import BM25Record, IndexManifest, ModelManifest, read_manifest
    from handler.vector_index import INDEX_NAME
    from index_build.assemble import assemble
    from index_build.settings import IndexSettings

    manifest = read_manifest(source, IndexManifest)
    if (target / "manifest.json").is_file():
        built = read_manifest(target, IndexManifest)
        if (built.count, built.encoder_sha256) == (chunks, manifest.encoder_sha256):
            return target
    real = hnswlib.Index(space="cosine", dim=manifest.dims)
    real.load_index(str(source / INDEX_NAME))
    vectors = np.asarray(real.get_items(list(range(manifest.count))), dtype=np.float32)
    originals = DocStore(source / DOCSTORE_NAME, manifest.count).fetch(list(range(manifest.count)))
    rng = np.random.default_rng(seed)
    picks = np.arange(chunks) % manifest.count
    noisy = vectors[picks] + rng.normal(0, 0.02, (chunks, manifest.dims)).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    made = [
        Chunk(i, f"{c.doc_id}~{i // manifest.count}", c.chunk, c.title, c.text, c.metadata)
        for i, c in enumerate(originals[p] for p in picks)
    ]
    encoder = ModelManifest(  # the encoder the source index records (its sha256 binds the copy too)
        kind="bi",
        source=manifest.encoder_source,
        task="feature-extraction",
        onnx_file="model.onnx",
        sha256=manifest.encoder_sha256,
        max_length=manifest.max_length,
        dims=manifest.dims,
        pooling=manifest.pooling,
        normalize=bool(manifest.normalize),
        query_prompt=manifest.query_prompt,
        passage_prompt=manifest.passage_prompt,
    )
    bm25 = manifest.bm25 or BM25Record()
    settings = IndexSettings(
        index_path=target,
        hnsw_m=manifest.M,
        ef_construction=manifest.ef_construction,
        ef_search=manifest.ef,
        bm25=manifest.bm25 is not None,
        bm25_k1=bm25.k1,
        bm25_b=bm25.b,
        bm25_stemmer=bm25.stemmer or "",
    )
    build = {"engine": "synthesised", "from": str(source)}
    assemble([(made, noisy)], chunks, encoder, settings, build, time.perf_counter())
    return target


def cold_start(
    python: str, site: Path | None, artifacts: Path, index: Path, recall_k: int, init_type: str = "on-demand"
) -> dict:
    env = {"ARTIFACTS_DIR": str(artifacts), "TWOSTAGE_INDEX_PATH": str(index), "TWOSTAGE_LOG_LEVEL": "WARNING"}
    env["AWS_LAMBDA_INITIALIZATION_TYPE"] = init_type
    return _child(python, site, [CHILD, str(recall_k)], env)


def bare_start(python: str, site: Path | None, artifacts: Path, index: Path, recall_k: int) -> dict:
    return _child(python, site, [BARE, str(artifacts / "models"), str(index), str(recall_k)], {})


def _child(python: str, site: Path | None, arguments: list[str], env: dict) -> dict:
    started = time.perf_counter()
    env = _inherited_env(site) | env  # the benchmark's own index and log level win over the caller's
    out = subprocess.run([python, "-c", *arguments], env=env, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["process_total"] = time.perf_counter() - started
    return report


def _inherited_env(site: Path | None) -> dict:
    """The caller's TWOSTAGE_* settings (e.g. TWOSTAGE_RERANK_MAX_LENGTH) and PATH; on the import path
    this checkout's code first, then the runtime tree (`--site`) the interpreter does not have itself."""
    import os

    paths = [str(Path(__file__).resolve().parents[1])] + ([str(site.resolve())] if site else [])
    kept = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME") or k.startswith("TWOSTAGE_")}
    return kept | {"PYTHONPATH": os.pathsep.join(paths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", default="artifacts", type=Path, help="holds models/bi and models/cross")
    parser.add_argument("--source-index", default="artifacts/eval/scifact/index", type=Path)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--bench-dir", default="artifacts/bench", type=Path)
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure (a runtime-only venv)")
    parser.add_argument(
        "--site",
        type=Path,
        help="a runtime tree as the Lambda image holds it (`scripts/build_runtime.sh DIR`); run it with an empty "
        "venv's --python, so that nothing outside the tree is importable",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--recall-k", type=int, default=100, help="candidates the first /search reranks")
    parser.add_argument(
        "--bare", action="store_true", help="also time the bare-library floor (BARE), alternating with the handler"
    )
    parser.add_argument(
        "--primed",
        action="store_true",
        help="also time the handler primed during its init (provisioned concurrency; a SnapStart snapshot)",
    )
    args = parser.parse_args()

    index = synthesise(args.source_index, args.bench_dir / f"index-{args.chunks}", args.chunks)
    started = time.perf_counter()
    for _ in range(3):
        subprocess.run([args.python, "-c", "pass"], check=True)
    interpreter = (time.perf_counter() - started) / 3
    # The first round only warms the page cache; handler and bare runs alternate, so both see the
    # same machine (its speed drifts by up to 40% over a day).
    setup = (args.python, args.site, args.artifacts_dir, index, args.recall_k)
    rounds = []
    for _ in range(args.runs + 1):
        primed = cold_start(*setup, "provisioned-concurrency") if args.primed else None
        rounds.append((cold_start(*setup), bare_start(*setup) if args.bare else None, primed))
    rounds = rounds[1:]
    runs = [handler for handler, _, _ in rounds]
    where = f"{args.python}" + (f" on {args.site}" if args.site else "")
    print(f"{args.chunks} chunks, first /search at recall_k {args.recall_k}, {args.runs} runs (median), {where}")
    print(f"  interpreter start  {interpreter * 1000:5.0f} ms (not in the parts below)")
    _print_parts("handler", runs)
    for name in runs[0]["load_ms"]:
        print(f"    {name:<18} {statistics.median(r['load_ms'][name] for r in runs):7.0f} ms")
    print(f"  RSS after first request: {statistics.median(r['rss_mb'] for r in runs):.0f} MB")
    print(f"  CPU time of the process (user + sys, both cores): {_median_ms(runs, 'cpu_s'):.0f} ms")
    if args.primed:
        primed = [p for *_, p in rounds]
        _print_parts("handler primed during init (provisioned concurrency; what SnapStart snapshots)", primed)
    if args.bare:
        bare = [b for _, b, _ in rounds]
        _print_parts(
            "bare libraries, same query (dense top recall_k), sequential", bare, ["imports", "models", "index"]
        )
        gap = statistics.median(h["ready_to_answer"] - b["ready_to_answer"] for h, b, _ in rounds)
        print(f"  handler − bare, ready_to_answer (median of pairs): {gap * 1000:+.0f} ms")


def _median_ms(runs: list[dict], part: str) -> float:
    """Median of a part the children report in seconds, in ms."""
    return statistics.median(r[part] for r in runs) * 1000


def _print_parts(title: str, runs: list[dict], extra: list[str] = ()) -> None:
    print(f"  {title}:")
    for part in [*extra, "imports_and_init", "first_request", "ready_to_answer", "process_total"]:
        print(f"    {part:<18} {_median_ms(runs, part):7.0f} ms")


if __name__ == "__main__":
    main()
