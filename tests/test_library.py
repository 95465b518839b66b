"""The Python API: one import, one call, typed results; importing it loads no torch, CLI or HTTP stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

CHILD = r"""
import json, sys
from twostage import TwoStage, SearchAnswer, Result, Reranked
heavy = [m for m in ("torch", "transformers", "starlette", "mangum", "uvicorn", "twostage.cli") if m in sys.modules]
with TwoStage.load(sys.argv[1], top_k=4) as ts:
    answer = ts.search("What does error E240 mean?")
    ranked = ts.rerank("error E240", ["the heat pump shows E240 when the sensor fails", "a recipe"], top_n=1)
typed = isinstance(answer, SearchAnswer) and all(isinstance(r, Result) for r in answer.results)
typed = typed and isinstance(ranked[0], Reranked)
print(json.dumps({"heavy": heavy, "typed": typed, "n": len(answer.results), "top_k": answer.top_k,
                  "scores": [r.score for r in answer.results], "floor": answer.floor, "ranked": len(ranked)}))
"""


def test_import_is_light_and_results_are_typed(artifacts):
    out = subprocess.run([sys.executable, "-c", CHILD, str(artifacts)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and report["typed"]
    assert report["n"] <= 4 == report["top_k"] and report["ranked"] == 1  # load(**overrides) and top_n apply
    assert all(score >= report["floor"] for score in report["scores"])


def test_search_defaults_and_bad_values(artifacts):
    from handler.errors import InvalidRequest
    from twostage import TwoStage

    ts = TwoStage.load(artifacts, recall_k=30)
    answer = ts.search("Veltrazine child dose", mode="dense")
    assert (answer.recall_k, answer.mode) == (30, "dense") and answer.candidates == 30
    with pytest.raises(InvalidRequest, match="top_k"):
        ts.search("dose", recall_k=5, top_k=10)
    with pytest.raises(InvalidRequest, match="query"):
        ts.search("\u200b ")
    ranked = ts.rerank("Veltrazine dose for children", ["child dose: 5 mg", "the warranty lasts 2 years"])
    assert sorted(r.index for r in ranked) == [0, 1] and ranked[0].score >= ranked[1].score


def test_a_misspelt_keyword_is_an_error_naming_it(artifacts):
    from twostage import TwoStage

    with pytest.raises(ValueError, match="unknown setting 'recal_k' \\(did you mean 'recall_k'\\?\\)"):
        TwoStage.load(artifacts, recal_k=5)


def test_settings_groups_keep_flat_names_for_keywords_and_env(monkeypatch):
    from handler.settings import Settings

    monkeypatch.setenv("TWOSTAGE_MAX_PENDING", "3")
    monkeypatch.setenv("TWOSTAGE_PORT", "9001")
    monkeypatch.setenv("TWOSTAGE_NO_SUCH_SETTING", "1")  # an env var can only be ignored
    settings = Settings(recall_k=7, floor=0.5, batching=True)
    assert (settings.recall.recall_k, settings.rerank.floor, settings.batcher.batching) == (7, 0.5, True)
    assert (settings.limits.max_pending, settings.server.port) == (3, 9001)
    with pytest.raises(ValueError, match="unknown setting 'florr'"):
        Settings(florr=0.5)
