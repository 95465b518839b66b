"""The prebuilt hnswlib index, refused when it was built with another encoder than the one served."""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np

from handler.errors import IndexMismatchError
from handler.manifest import IndexManifest, ModelManifest, read_manifest
from handler.verify import check_files, check_index_file

INDEX_NAME = "index.bin"


def check_binding(index: IndexManifest, encoder: ModelManifest, index_dir: Path) -> None:
    if encoder.kind != "bi":
        raise IndexMismatchError(f"the bi-encoder's manifest.json describes a {encoder.kind} model where a bi belongs")
    if index.encoder_sha256 != encoder.sha256:
        raise IndexMismatchError(
            f"index {index_dir} was built with bi-encoder sha256 {index.encoder_sha256} "
            f"({index.encoder_source}), but the served bi-encoder is sha256 {encoder.sha256} "
            f"({encoder.source}); rebuild it with `twostage index`"
        )
    built, served = (index.query_prompt, index.passage_prompt), (encoder.query_prompt, encoder.passage_prompt)
    if built != served:
        raise IndexMismatchError(
            f"index {index_dir} was built for (query, passage) prompts {built}, the served bi-encoder uses "
            f"{served}; rebuild it with `twostage index`"
        )
    if encoder.dims is not None and index.dims != encoder.dims:
        raise IndexMismatchError(
            f"index {index_dir} holds {index.dims}-d vectors, the served bi-encoder embeds {encoder.dims}-d"
        )


class VectorIndex:
    def __init__(self, index_dir: Path, encoder: ModelManifest, threads: int = 1, checksum: bool = False):
        self.manifest: IndexManifest = read_manifest(index_dir, IndexManifest)
        check_binding(self.manifest, encoder, index_dir)
        check_files(index_dir, self.manifest.files, checksum)
        # hnswlib trusts `dim` and reads past its buffer when it is wrong: check the file's own header first.
        check_index_file(index_dir / INDEX_NAME, self.manifest.count, self.manifest.dims)
        self.index = hnswlib.Index(space=self.manifest.space, dim=self.manifest.dims)
        self.index.load_index(str(index_dir / INDEX_NAME), max_elements=self.manifest.count)
        # hnswlib searches with max(ef, k), so one ef serves every recall_k.
        self.index.set_ef(self.manifest.ef)
        self.index.set_num_threads(threads)

    def __len__(self) -> int:
        return self.manifest.count

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels and their cosine similarities, best first."""
        k = min(k, len(self))
        labels, distances = self.index.knn_query(vector.reshape(1, -1), k=k)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def similarity(self, vector: np.ndarray, labels: list[int]) -> np.ndarray:
        """Cosine of the query vector and these stored chunks (hnswlib keeps cosine-space vectors
        normalised; the norms are divided out anyway, for an index in another space)."""
        stored = self.index.get_items(labels, return_type="numpy")
        norms = np.linalg.norm(stored, axis=1) * max(float(np.linalg.norm(vector)), 1e-12)
        return (stored @ vector / np.clip(norms, 1e-12, None)).astype(np.float32)
