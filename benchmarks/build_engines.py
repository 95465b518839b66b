"""Index build throughput: the local engine against `--engine ray` with 1 and 2 actors (local Ray on
this machine's CPUs), then a re-index after changing 1% of the documents (only those are embedded).

    python -m benchmarks.build_engines --corpus ../shared/data/scifact/corpus.jsonl --docs 1000

Each build is fresh (no shards reused) into a scratch directory. The assembly's peak RSS is the
child process's, measured by building from the shards alone (`--assembly`), per million chunks.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe

ASSEMBLY = r"""
import json, sys, time
from pathlib import Path
from handler.manifest import ModelManifest, read_manifest
from index_build.assemble import assemble
from index_build.settings import IndexSettings
from index_build.shards import count_rows, read_batches, shard_files
def high_water_mb():  # this process's own peak (ru_maxrss survives exec and would show the parent's)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024
root, shards = Path(sys.argv[1]), Path(sys.argv[2])
encoder = read_manifest(root / "models" / "bi", ModelManifest)
files = shard_files(shards)
before = high_water_mb()
started = time.perf_counter()
settings = IndexSettings(artifacts_dir=root, index_path=root / "assembled")
m = assemble(read_batches(files, encoder), count_rows(files), encoder, settings, {"engine": "shards"}, started)
print(json.dumps({"chunks": m.count, "seconds": time.perf_counter() - started, "rss_before_mb": before,
                  "peak_rss_mb": high_water_mb(), "index_bytes": sum(f["bytes"] for f in m.files.values())}))
"""


def build(root: Path, corpus: Path, **options) -> dict:
    from index_build.build import build_index
    from index_build.settings import IndexSettings

    started = time.perf_counter()
    manifest = build_index(IndexSettings(artifacts_dir=root, corpus=corpus, **options))
    return manifest.build | {"wall_seconds": time.perf_counter() - started, "chunks": manifest.count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--corpus", type=Path, default=Path("../shared/data/scifact/corpus.jsonl"))
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of documents changed for the re-index")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(describe())
    report = {"machine": describe()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").symlink_to((args.artifacts / "models").resolve())
        docs = [json.loads(line) for line in args.corpus.open()][: args.docs]
        corpus = root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
        runs = {
            "local": {},
            "ray, 1 actor": {"engine": "ray", "actors": 1, "embeddings_dir": root / "e1"},
            "ray, 2 actors": {"engine": "ray", "actors": 2, "embeddings_dir": root / "e2"},
        }
        for name, options in runs.items():
            result = build(root, corpus, **options)
            rate = result["chunks"] / result["embed_seconds"]
            report[name] = result
            print(
                f"{name}: {result['chunks']} chunks, embedding stage {result['embed_seconds']:.1f} s "
                f"({rate:.1f} chunks/s, Ray start included), whole build {result['wall_seconds']:.1f} s"
            )
        rng = random.Random(0)
        for doc in rng.sample(docs, max(1, int(len(docs) * args.changed))):
            doc["text"] += " (revised)"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
        again = build(root, corpus, engine="ray", actors=2, embeddings_dir=root / "e2", reuse_embeddings=root / "e2")
        report["re-index"] = again
        full = report["ray, 2 actors"]["embed_seconds"]
        print(
            f"re-index after changing {args.changed:.0%} of documents: {again['embedded']} embedded, "
            f"{again['reused']} reused, embedding stage {again['embed_seconds']:.1f} s "
            f"({again['embed_seconds'] / full:.0%} of the full build's {full:.1f} s; Ray start included)"
        )
        shards = next((root / "e2").glob("run-*"))
        out = subprocess.run([sys.executable, "-c", ASSEMBLY, str(root), str(shards)], capture_output=True, text=True)
        failed = {"error": out.stderr[-500:]}
        assembly = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else failed
        report["assembly"] = assembly
        if "chunks" in assembly:
            per_million = 1e6 / assembly["chunks"]
            grown = (assembly["peak_rss_mb"] - assembly["rss_before_mb"]) * per_million / 1024
            print(
                f"assembly from shards: {assembly['chunks']} chunks in {assembly['seconds']:.1f} s; peak RSS "
                f"{assembly['peak_rss_mb']:.0f} MB ({assembly['rss_before_mb']:.0f} MB after imports), growth "
                f"≈ {grown:.2f} GB per million chunks; artifact "
                f"{assembly['index_bytes'] * per_million / 1e9:.2f} GB per million"
            )
    report["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
