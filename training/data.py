"""Listwise training groups: (query, positive, hard negatives), and their JSON form.

Mined groups are saved beside the model (`training_groups.json`) so that training can run again,
or on another machine (a GPU host), without an index or the ONNX runtime: `--groups-file`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

GROUPS_FILE = "training_groups.json"


@dataclass
class Example:
    query: str
    positive: str  # doc id
    pool: list[str]  # stage-1 doc ids in the negative rank window, positives removed


@dataclass
class TrainingData:
    passages: dict[str, str]
    train: list[Example]
    dev: list[Example]
    dev_query_ids: list[str]
    mined_with: dict = field(default_factory=dict)  # the settings that mined these groups

    def save(self, path: Path) -> None:
        """Only the passages some group uses travel, so the file stays small."""
        used = {d for ex in self.train + self.dev for d in [ex.positive, *ex.pool]}
        payload = asdict(self) | {"passages": {d: self.passages[d] for d in sorted(used)}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload))

    @classmethod
    def load(cls, path: Path) -> TrainingData:
        raw = json.loads(Path(path).read_text())
        return cls(
            raw["passages"],
            [Example(**ex) for ex in raw["train"]],
            [Example(**ex) for ex in raw["dev"]],
            raw["dev_query_ids"],
            raw.get("mined_with", {}),
        )


def group(example: Example, passages: dict[str, str], size: int, rng: random.Random) -> list[tuple[str, str]]:
    """[positive, negatives...] as (query, passage) pairs; the positive is always first."""
    negatives = rng.sample(example.pool, min(size, len(example.pool)))
    while len(negatives) < size:  # a short pool is topped up with random passages
        negatives.append(rng.choice(list(passages)))
    return [(example.query, passages[example.positive])] + [(example.query, passages[d]) for d in negatives]
