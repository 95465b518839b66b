"""`twostage index`: embed every chunk with the serving encoder and write the index artifact, in this
process (index_build/local_build.py) or as a Ray Data pipeline (index_build/ray_build.py)."""

from __future__ import annotations

from pathlib import Path

from handler.artifacts import Artifacts
from handler.manifest import MANIFEST_NAME, IndexManifest, ModelManifest, read_manifest
from index_build.settings import IndexSettings


def ensure_index(settings: IndexSettings) -> Path:
    """The index at settings' target, reused when it was built from the same corpus and chunking with
    the served encoder and its prompts (and has BM25), else built."""
    artifacts = Artifacts(settings.artifacts_dir, settings.index_path)
    target = artifacts.index
    if (target / MANIFEST_NAME).is_file():
        built = read_manifest(target, IndexManifest)
        encoder = read_manifest(artifacts.bi, ModelManifest)
        same = (
            Path(built.corpus).resolve() == Path(settings.corpus).resolve()  # ./ vs /abs
            and built.chunking == settings.chunking
            and built.encoder_sha256 == encoder.sha256
            and (built.query_prompt, built.passage_prompt) == (encoder.query_prompt, encoder.passage_prompt)
        )
        recorded = bool(built.files) and all(f.sample_sha256 for f in built.files.values())  # else: older twostage
        if same and built.bm25 and recorded:
            return target
    build_index(settings)
    return target


def build_index(settings: IndexSettings) -> IndexManifest:
    """Write index.bin, docstore.sqlite, bm25/ and manifest.json into <artifacts>/index atomically."""
    if settings.engine == "ray":
        from index_build.ray_build import build_with_ray

        return build_with_ray(settings)
    from index_build.local_build import build_locally

    return build_locally(settings)
