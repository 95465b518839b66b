"""hnswlib's index.bin, read and checked before hnswlib loads it.

hnswlib trusts its file: an entry point, a level or a neighbour id out of range is read as a pointer
offset at the first search, and the process dies by a signal. Its loader checks only that the file's
length adds up. So every number a search will follow is checked here first, with numpy over the
file mapped read-only:

- the header (element count, sizes, offsets, M, max level, entry point) against each other and the
  manifest's count and dims;
- level 0, a fixed-size block per element: list count ≤ maxM0, every neighbour id < count, labels a
  permutation of 0..count-1 (they key the doc store);
- the upper levels, one variable-length record per element: each element's level, the entry point at
  the top level, list counts ≤ maxM, neighbour ids < count and on a level the neighbour has.

Layout (hnswlib 0.8 saveIndex): 96-byte header; count × size_data_per_element bytes of level 0
(uint32 list size whose low 16 bits are the count, maxM0 uint32 ids, the vector, a uint64 label); then
per element a uint32 byte length and that many bytes of levels 1..L, each a uint32 count and maxM ids.
What it costs at 100k and 1M chunks: docs/results.md §10.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handler.errors import ArtifactError

HEADER = struct.Struct("<QQQQQQiIQQQdQ")
MAX_LEVEL = 64  # a level beyond this needs more elements than any index holds (P(level ≥ l) = M^-l)


@dataclass(frozen=True)
class HnswHeader:
    level0_offset: int
    max_elements: int
    count: int
    bytes_per_element: int
    label_offset: int
    data_offset: int
    max_level: int
    entry_point: int
    max_m: int
    max_m0: int
    m: int
    mult: float
    ef_construction: int

    @property
    def dims(self) -> int:
        return (self.label_offset - self.data_offset) // 4


def read_header(path: Path) -> HnswHeader:
    """The numbers hnswlib wrote at the top of index.bin, each checked against the others."""
    with open(path, "rb") as handle:
        raw = handle.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise ArtifactError(path, f"{len(raw)} bytes: too short for an hnswlib index")
    header = HnswHeader(*HEADER.unpack(raw))
    links0 = 4 + 4 * header.max_m0
    problems = [
        (header.level0_offset != 0, "level-0 offset"),
        (not 0 < header.max_m <= 4096 or not 0 < header.max_m0 <= 8192, "neighbour list sizes"),
        (header.data_offset != links0, "vector offset"),
        (header.label_offset <= header.data_offset or (header.label_offset - header.data_offset) % 4, "label offset"),
        (header.bytes_per_element != header.label_offset + 8, "element size"),
        (header.count > header.max_elements, "element count"),
        (header.count and not 0 <= header.max_level < MAX_LEVEL, f"max level {header.max_level}"),
        (header.count and header.entry_point >= header.count, f"entry point {header.entry_point}"),
    ]
    wrong = [name for bad, name in problems if bad]
    if wrong:
        raise ArtifactError(path, f"header is not an hnswlib index's ({', '.join(wrong)} out of range: corrupt)")
    return header


def check_index_file(path: Path, count: int, dims: int) -> HnswHeader:
    """index.bin holds `count` vectors of `dims` floats in a graph every search can walk safely."""
    header = read_header(path)
    if header.dims != dims:
        raise ArtifactError(path, f"holds {header.dims}-d vectors, manifest.json says dims {dims}")
    if header.count != count:
        raise ArtifactError(path, f"holds {header.count} vectors, manifest.json says count {count}")
    level0_end = HEADER.size + header.count * header.bytes_per_element
    size = path.stat().st_size
    if size < level0_end + 4 * header.count:
        raise ArtifactError(path, f"{size} bytes, its header needs at least {level0_end + 4 * count} (truncated)")
    if count:
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        # every field of an element is 4-byte aligned: one uint32 row per element, read in place
        _check_level0(path, raw[HEADER.size : level0_end].view(np.uint32).reshape(count, -1), header)
        _check_upper_levels(path, raw[level0_end:], header)
    return header


@dataclass(frozen=True)
class StoredVectors:
    """The vectors in index.bin, read in place (memory-mapped): what exact search over a slice and the
    cosines of BM25-found candidates read, without hnswlib's item-by-item copies."""

    rows: np.ndarray  # (count, dims) float32, one row per internal id
    row_of_label: np.ndarray  # label → internal id

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        return self.rows[self.row_of_label[labels]]


def stored_vectors(path: Path, header: HnswHeader) -> StoredVectors:
    """index.bin's vectors and labels as numpy views (the file already passed check_index_file)."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    level0 = raw[HEADER.size : HEADER.size + header.count * header.bytes_per_element].view(np.uint32)
    elements = level0.reshape(header.count, -1)
    start = header.data_offset // 4
    rows = elements[:, start : start + header.dims].view(np.float32)
    labels = elements[:, header.label_offset // 4].astype(np.int64)
    row_of_label = np.empty(header.count, dtype=np.int64)
    row_of_label[labels] = np.arange(header.count)
    return StoredVectors(rows, row_of_label)


def _check_level0(path: Path, elements: np.ndarray, header: HnswHeader) -> None:
    """Each element's list count and every id slot (hnswlib zeroes a new element's slots, and a slot a
    list no longer uses keeps an id that was valid, so every slot of a sound file is < count)."""
    counts = elements[:, 0] & 0xFFFF
    if int(counts.max()) > header.max_m0:
        raise ArtifactError(path, f"a level-0 neighbour list holds {int(counts.max())} ids, at most {header.max_m0}")
    highest = int(elements[:, 1 : 1 + header.max_m0].max())
    if highest >= header.count:
        raise ArtifactError(path, f"a level-0 neighbour id is {highest}, the index holds {header.count}")
    low, high = elements[:, header.label_offset // 4], elements[:, header.label_offset // 4 + 1]  # a uint64 label
    if int(high.max()) or int(low.max()) >= header.count or not (np.bincount(low, minlength=header.count) == 1).all():
        raise ArtifactError(path, f"labels are not 0..{header.count - 1}, one each (they key the doc store)")


def _check_upper_levels(path: Path, tail: np.ndarray, header: HnswHeader) -> None:
    """The per-element records, found by one jump per element above level 0 (about 1 in M): a zero word
    is a level-0 element's record, so from one record's end the next non-zero word starts the next."""
    if len(tail) % 4:
        raise ArtifactError(path, "upper levels are not whole 32-bit words (corrupt)")
    words = np.asarray(tail).view(np.uint32)
    n = len(words)
    per_level = 1 + header.max_m  # words: the count, then max_m ids
    # next_nonzero[i]: the first non-zero word at or after i (n: none)
    positions = np.where(words != 0, np.arange(n, dtype=np.int64), n)
    next_nonzero = np.append(np.minimum.accumulate(positions[::-1])[::-1], n)
    jump, word = memoryview(next_nonzero).cast("B").cast("q"), memoryview(words).cast("B").cast("I")
    heads, position = [], jump[0]
    while position < n:
        heads.append(position)
        after = position + 1 + word[position] // 4
        if after > n:
            raise ArtifactError(path, "upper levels run past the end of the file (truncated)")
        position = jump[after]
    heads = np.asarray(heads, dtype=np.int64)
    lengths = words[heads].astype(np.int64)  # bytes of each record's levels
    if len(heads) and (bool((lengths % (4 * per_level)).any()) or int(lengths.max()) // (4 * per_level) >= MAX_LEVEL):
        raise ArtifactError(path, "an element's upper levels have an impossible size (corrupt)")
    spans = lengths // (4 * per_level)
    elements = heads - np.concatenate([[0], np.cumsum(lengths // 4)[:-1]])  # words before it, less other levels
    if n - int(lengths.sum() // 4) != header.count or (len(heads) and int(elements.max()) >= header.count):
        raise ArtifactError(path, f"the upper levels do not hold {header.count} elements (corrupt)")
    levels = np.zeros(header.count, dtype=np.int64)
    levels[elements] = spans
    if int(levels.max()) != header.max_level or levels[header.entry_point] != header.max_level:
        raise ArtifactError(path, f"the entry point is not on the top level {header.max_level} (corrupt)")
    _check_upper_lists(path, words, heads + 1, spans, levels, header)


def _check_upper_lists(path, words, starts, spans, levels, header: HnswHeader) -> None:
    """Every upper-level list at once: its count, its ids, and that each neighbour lives on that level."""
    if not len(starts):
        return
    per_level = 1 + header.max_m
    owner = np.repeat(np.arange(len(starts)), spans)
    level = np.arange(len(owner)) - np.repeat(np.cumsum(spans) - spans, spans) + 1  # 1-based within each element
    rows = words[(starts[owner] + (level - 1) * per_level)[:, None] + np.arange(per_level)]
    counts = rows[:, 0] & 0xFFFF
    if int(counts.max()) > header.max_m:
        raise ArtifactError(path, f"an upper neighbour list holds {int(counts.max())} ids, at most {header.max_m}")
    used = np.arange(header.max_m)[None, :] < counts[:, None]
    ids = rows[:, 1:][used].astype(np.int64)
    if len(ids) and int(ids.max()) >= header.count:
        raise ArtifactError(path, f"an upper neighbour id is {int(ids.max())}, the index holds {header.count}")
    on_level = np.broadcast_to(level[:, None], used.shape)[used]
    if len(ids) and bool((levels[ids] < on_level).any()):
        raise ArtifactError(path, "an upper neighbour list names an element below that level (corrupt)")
