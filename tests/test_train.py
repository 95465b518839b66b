"""`twostage train` smoke test: a few steps on a few pairs, then our own export of the result."""

import json

import numpy as np
import onnxruntime

from handler.manifest import CALIBRATION_FILE, HEAD_FILE, TRAINING_LOG, ModelManifest, read_manifest
from handler.onnx_model import CrossEncoder
from model_export.export import export_all
from model_export.settings import ExportSettings
from tests.conftest import make_tiny_bert
from tests.test_eval import tiny_beir  # noqa: F401  (fixture)
from training.data import GROUPS_FILE, TrainingData
from training.settings import TrainSettings
from training.train import train


def _settings(data, artifacts, tmp_path, base, out, **overrides) -> TrainSettings:
    return TrainSettings(
        **{
            "data": data,
            "train_split": "test",
            "base_model": str(base),
            "output_dir": out,
            "artifacts_dir": artifacts,
            "eval_dir": tmp_path / "eval",
            "max_length": 64,
            "negatives": 3,
            "negatives_from": 1,
            "negatives_to": 10,
            "groups_per_step": 2,
            "dev_fraction": 0.2,
            "epochs": 1,
            "max_steps": 2,
            "pseudo_queries": 3,
            "device": "cpu",
        }
        | overrides
    )


def test_train_a_few_steps_then_export(artifacts, tiny_beir, tmp_path):  # noqa: F811
    base = make_tiny_bert(tmp_path / "base", for_cross=False)
    out = tmp_path / "trained"
    summary = train(_settings(tiny_beir, artifacts, tmp_path, base, out))
    assert summary["train_groups"] == 4 + 3 and summary["dev_groups"] == 1
    assert summary["history"][-1]["steps"] == 2
    log = json.loads((out / TRAINING_LOG).read_text())
    assert len(log["dev_query_ids"]) == 1 and log["constant_predictor_loss"] == round(np.log(4), 4)
    head = json.loads((out / HEAD_FILE).read_text())
    assert head["pooling"] == "mean" and len(head["weight"]) == 32

    calibration = {"platt": {"a": 0.5, "b": -1.0}, "floor": 0.2}  # as `twostage calibrate` leaves beside a model
    (out / CALIBRATION_FILE).write_text(json.dumps(calibration))
    export_all(ExportSettings(models_dir=tmp_path / "models", which="cross", cross_model=str(out), fp32_fallback=True))
    manifest = read_manifest(tmp_path / "models" / "cross", ModelManifest)
    assert manifest.calibration.model_dump(exclude_defaults=True) == calibration
    assert manifest.head and manifest.task == "feature-extraction"
    graph = onnxruntime.InferenceSession(str(tmp_path / "models" / "cross" / "model.onnx"))
    assert [o.name for o in graph.get_outputs()] == ["logits"]  # the head is folded into the graph
    assert (tmp_path / "models" / "cross" / TRAINING_LOG).is_file()
    logits = CrossEncoder(tmp_path / "models" / "cross").logits("q", ["a", "b c d"])
    assert logits.shape == (2,) and np.isfinite(logits).all()


def test_mined_groups_are_saved_and_train_again_without_an_index(artifacts, tiny_beir, tmp_path):  # noqa: F811
    base = make_tiny_bert(tmp_path / "base", for_cross=False)
    mined = train(_settings(tiny_beir, artifacts, tmp_path, base, tmp_path / "mined", mine_only=True))
    groups = tmp_path / "mined" / GROUPS_FILE
    data = TrainingData.load(groups)
    assert mined["train_groups"] == len(data.train) == 7 and not (tmp_path / "mined" / HEAD_FILE).exists()
    assert all(ex.positive not in ex.pool and ex.positive in data.passages for ex in data.train)

    # no bi-encoder, no index: the groups file is all a GPU host needs
    again = _settings(tiny_beir, tmp_path / "nothing", tmp_path, base, tmp_path / "again", groups_file=groups)
    summary = train(again)
    assert summary["train_groups"] == 7 and summary["device"] == "cpu"
    assert summary["groups_mined_with"]["pseudo_queries"] == 3 and summary["groups_mined_with"]["mine_mode"] == "hybrid"
    assert (tmp_path / "again" / HEAD_FILE).is_file() and not (tmp_path / "nothing").exists()
