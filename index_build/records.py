"""`twostage verify --record`: give artifacts made by an older twostage the file records the runtime now
requires (each file's size, sha256 and sampled sha256), after checking everything else in full.

Recording trusts what is on disk now, so it is for artifacts you built and kept yourself; anything
else should be rebuilt (`twostage export`, `twostage index`)."""

from __future__ import annotations

from pathlib import Path

from handler.artifacts import Artifacts
from handler.manifest import MANIFEST_NAME, IndexManifest, ModelManifest, read_manifest, write_manifest
from handler.verify import describe_files


def _complete(manifest) -> bool:
    return bool(manifest.files) and all(f.sample_sha256 for f in manifest.files.values())


def record_files(artifacts: Artifacts) -> dict[Path, bytes]:
    """Write the missing file records; returns each rewritten manifest's former bytes, for `restore` when
    the full load that follows fails."""
    targets = [(artifacts.bi, ModelManifest), (artifacts.cross, ModelManifest)]
    if (artifacts.index / MANIFEST_NAME).is_file():
        targets.append((artifacts.index, IndexManifest))
    former = {}
    for directory, model in targets:
        manifest = read_manifest(directory, model)
        if _complete(manifest):
            continue
        skip = (manifest.onnx_file,) if model is ModelManifest else ()  # the ONNX file has its own sha256
        former[directory] = (directory / MANIFEST_NAME).read_bytes()
        manifest.files = describe_files(directory, skip)
        write_manifest(directory, manifest)
    return former


def restore(former: dict[Path, bytes]) -> None:
    for directory, content in former.items():
        (directory / MANIFEST_NAME).write_bytes(content)
