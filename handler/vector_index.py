"""The prebuilt hnswlib index, refused when it was built with another encoder than the one served."""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np

from handler.hnsw_file import check_index_file
from handler.manifest import IndexManifest, ModelManifest, check_binding, read_manifest
from handler.verify import check_file_records

INDEX_NAME = "index.bin"


class VectorIndex:
    def __init__(self, index_dir: Path, encoder: ModelManifest, threads: int = 1, checksum: bool = False):
        self.manifest: IndexManifest = read_manifest(index_dir, IndexManifest)
        check_binding(self.manifest.model_dump(), encoder, f"index {index_dir}", "twostage index")
        check_file_records(index_dir, self.manifest.files, checksum, "rebuild it with `twostage index`")
        # hnswlib trusts its file (dims, ids, levels) and dies by a signal on a bad one: check it first
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
