"""The prebuilt hnswlib index, refused when it was built with another encoder than the one served."""

from __future__ import annotations

import threading
from pathlib import Path

import hnswlib
import numpy as np

from handler.hnsw_file import check_index_file, stored_vectors
from handler.manifest import IndexManifest, ModelManifest, check_binding, read_manifest
from handler.verify import check_file_records

INDEX_NAME = "index.bin"
EXACT_SLICE = 10_000  # a slice up to this many chunks is searched exactly (docs/results.md §17)
FILTERED_EF_PER_RESULT = 3  # a filtered search's beam: 3 × k (Recall@100 ≥ .99 at half the index, §17)


class VectorIndex:
    def __init__(self, index_dir: Path, encoder: ModelManifest, threads: int = 1, checksum: bool = False):
        self.manifest: IndexManifest = read_manifest(index_dir, IndexManifest)
        check_binding(self.manifest.model_dump(), encoder, f"index {index_dir}", "twostage index")
        check_file_records(index_dir, self.manifest.files, checksum, "rebuild it with `twostage index`")
        # hnswlib trusts its file (dims, ids, levels) and dies by a signal on a bad one: check it first
        header = check_index_file(index_dir / INDEX_NAME, self.manifest.count, self.manifest.dims)
        self.stored = stored_vectors(index_dir / INDEX_NAME, header)
        self.index = hnswlib.Index(space=self.manifest.space, dim=self.manifest.dims)
        self.index.load_index(str(index_dir / INDEX_NAME), max_elements=self.manifest.count)
        # hnswlib searches with max(ef, k), so one ef serves every recall_k; a filtered search widens it
        # (its beam skips the chunks the filter refuses), under a lock: ef is the index's, not the call's.
        self.index.set_ef(self.manifest.ef)
        self.index.set_num_threads(threads)
        self._ef_lock = threading.Lock()

    def __len__(self) -> int:
        return self.manifest.count

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels and their cosine similarities, best first."""
        k = min(k, len(self))
        with self._ef_lock:
            labels, distances = self.index.knn_query(vector.reshape(1, -1), k=k)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def search_within(self, vector: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of the chunks `allowed` admits (one boolean per label): exact over the slice's vectors
        when it is small, hnswlib's filtered search when it is large (the switch: docs/results.md §17)."""
        members = np.flatnonzero(allowed)
        k = min(k, len(members))
        if not k:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if len(members) <= EXACT_SLICE:
            return self._exact(vector, k, members)
        try:
            with self._ef_lock:
                self.index.set_ef(max(self.manifest.ef, FILTERED_EF_PER_RESULT * k))
                try:
                    labels, distances = self.index.knn_query(
                        vector.reshape(1, -1), k=k, filter=lambda label: allowed[label]
                    )
                finally:
                    self.index.set_ef(self.manifest.ef)
        except RuntimeError:  # too few admitted chunks reachable for k: the slice's vectors answer exactly
            return self._exact(vector, k, members)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def _exact(self, vector: np.ndarray, k: int, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cosines = self.similarity(vector, members)
        top = np.argpartition(-cosines, k - 1)[:k]
        top = top[np.argsort(-cosines[top], kind="stable")]
        return members[top].astype(np.int64), cosines[top]

    def similarity(self, vector: np.ndarray, labels) -> np.ndarray:
        """Cosine of the query vector and these stored chunks (hnswlib stores cosine-space vectors
        normalised; the query's norm is divided out)."""
        stored = self.stored(np.asarray(labels, dtype=np.int64))
        return (stored @ vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
