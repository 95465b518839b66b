"""The picture a person looks at to trust a floor: the score distributions it was chosen from, on a
log scale, with the floor drawn across them (`twostage calibrate … --plot floor.png`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SERIES = {  # key: (label, colour)
    "answers": ("answers (a question's own document)", "#1b7837"),
    "padding": ("padding (every other candidate)", "#999999"),
    "off_topic": ("off-topic questions (best candidate)", "#b2182b"),
    "best": ("requests (best candidate)", "#2166ac"),
}


def plot_floor(path: Path, scores: dict[str, np.ndarray], floor: float, title: str) -> Path:
    """Histograms (each series normalised to its own count) of log10(score), the floor as a line, and
    the share of each series the floor keeps."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file
    import matplotlib.pyplot as plt

    low = max(1e-6, min(float(np.min(v)) for v in scores.values() if len(v)))
    bins = np.logspace(np.log10(low), 0, 60)
    figure, axes = plt.subplots(figsize=(9, 4.8))
    for key, values in scores.items():
        if not len(values):
            continue
        label, colour = SERIES[key]
        kept = float((values >= floor).mean())
        weights = np.full(len(values), 1.0 / len(values))
        axes.hist(np.clip(values, low, 1.0), bins=bins, weights=weights, histtype="stepfilled", alpha=0.35,
                  color=colour, label=f"{label}: {len(values)}, {kept:.0%} at or above the floor")  # fmt: skip
    axes.axvline(floor, color="black", linestyle="--", linewidth=1.5, label=f"floor {floor:.4f}")
    axes.set_xscale("log")
    axes.set_xlabel("served score (calibrated probability of relevance), log scale")
    axes.set_ylabel("share of the series")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
