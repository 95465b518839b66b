"""Export time, file size and parity of each model family (tests/model_zoo.py's small random models),
int8 and fp16, with the shipped parity gate: what `twostage export` does with each architecture.

Random weights say nothing about a real model's quality or its int8 loss; they show that the
architecture, its tokenizer, head, pooling and prompts go through export and serve what PyTorch computes.

    python -m benchmarks.model_families [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe


def measure(name: str, root: Path) -> list[dict]:
    from model_export.export import ExportError, export_model
    from model_export.settings import ExportSettings
    from tests.model_zoo import FAMILIES, make_model

    family = FAMILIES[name]
    source = make_model(family, root / name)
    rows = []
    for quantize in ("none", "int8", "fp16"):
        started = time.perf_counter()
        try:
            manifest = export_model(
                family.kind, str(source), source, root / f"{name}-{quantize}", ExportSettings(quantize=quantize)
            )
            parity, size, error = manifest.parity, manifest.size_bytes, None
        except ExportError as failure:
            parity, size, error = {}, None, str(failure)
        rows.append(
            {
                "family": name,
                "kind": family.kind,
                "quantize": quantize,
                "export_s": round(time.perf_counter() - started, 2),
                "bytes": size,
                "parity": parity,
                "gate": "fails: " + error if error else "passes",
            }
        )
    return rows


def main() -> None:
    from tests.model_zoo import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    print(describe())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in FAMILIES:
            rows += measure(name, Path(tmp))
    print("| family | stage | precision | export s | bytes | parity | default gate |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        p = r["parity"]
        shown = (
            f"cos mean {p['cosine_mean']:.4f}, min {p['cosine_min']:.4f}"
            if "cosine_mean" in p
            else f"Spearman {p.get('spearman', 0):.3f}, rel Δ {p.get('relative_delta_logit', 0):.3f}"
            if p
            else "–"
        )
        print(
            f"| {r['family']} | {r['kind']} | {r['quantize']} | {r['export_s']} | {r['bytes'] or '–'} | {shown} "
            f"| {r['gate'][:90]} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
