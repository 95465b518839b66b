import subprocess
import sys
from pathlib import Path

import pytest

from handler.settings import ServerSettings, Settings
from twostage.cli import build_parser
from twostage.flags import settings_from_args


def parse(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.parser, args


def test_env_vars_fill_options_and_flags_override_them(monkeypatch):
    monkeypatch.setenv("TWOSTAGE_RECALL_K", "42")
    monkeypatch.setenv("TWOSTAGE_TOP_K", "7")
    monkeypatch.setenv("ARTIFACTS_DIR", "/srv/art")
    sub, args = parse(["query", "q", "--top-k", "3"])
    settings = settings_from_args(sub, Settings, args)
    assert (settings.recall.recall_k, settings.top_k, str(settings.artifacts_dir)) == (42, 3, "/srv/art")


def test_bad_flag_value_is_a_usage_error_naming_the_flag(capsys):
    sub, args = parse(["query", "q", "--recall-k", "zero"])
    with pytest.raises(SystemExit) as exit_:
        settings_from_args(sub, Settings, args)
    assert exit_.value.code == 2
    assert "--recall-k" in capsys.readouterr().err


def test_a_bad_item_of_a_list_flag_names_the_flag(capsys):
    from evaluation.settings import EvalSettings

    sub, args = parse(["eval", "--cascade-ceilings", "0.5,1.5"])
    with pytest.raises(SystemExit) as exit_:
        settings_from_args(sub, EvalSettings, args)
    assert exit_.value.code == 2
    assert "--cascade-ceilings: Input should be less than 1" in capsys.readouterr().err


def test_every_settings_field_has_a_flag():
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for name in Settings.flat_fields():
        assert "--" + name.replace("_", "-") in help_text
        assert "TWOSTAGE_" + name.upper() in help_text


def test_query_command_prints_a_ranked_answer(artifacts):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "twostage.cli",
            "query",
            "What does error E240 mean?",
            "--top-k",
            "100",
            "--recall-k",
            "100",
            "--artifacts-dir",
            str(artifacts),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "  1. score" in result.stdout and "100. score" in result.stdout and "timings (ms)" in result.stdout
    assert "via bm25)" in result.stdout and "via dense)" in result.stdout  # hybrid: one-sided hits print too


def test_bad_paths_are_a_message_and_exit_1_not_a_traceback(tmp_path, capsys):
    from twostage.cli import main

    assert main(["index", "--corpus", str(tmp_path / "missing.jsonl"), "--artifacts-dir", str(tmp_path)]) == 1
    assert main(["eval", "--data", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "twostage index:" in err and "twostage eval: not a BEIR directory" in err and "Traceback" not in err


def test_required_gpu_or_unknown_provider_is_a_message_not_a_traceback(artifacts, capsys):
    import onnxruntime

    from twostage.cli import main

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert main(["serve", "--artifacts-dir", str(artifacts), "--require-gpu"]) == 1
        assert "twostage serve: a GPU was required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--artifacts-dir", str(artifacts), "--providers", "cuda,tpu"])
    assert exit_.value.code == 2 and "providers" in capsys.readouterr().err


def test_bench_runs_a_benchmark_script_with_its_own_flags(artifacts):
    command = [sys.executable, "-m", "twostage.cli", "bench", "search-latency", "--artifacts-dir", str(artifacts)]
    result = subprocess.run([*command, "--recall-k", "7", "--repeat", "2"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 7 |")]
    assert {row.split("|")[2].strip() for row in rows} >= {"embed", "ann", "rerank", "total"}


def test_cli_works_where_the_benchmarks_are_not_installed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "benchmarks", None)  # import benchmarks → ImportError, as in the images
    parser, args = parse(["query", "anything"])
    assert args.command == "query"
    with pytest.raises(SystemExit):
        parse(["bench", "cold-start"])
    assert "invalid choice" in capsys.readouterr().err


def test_bench_names_a_missing_optional_dependency(monkeypatch, capsys):
    import types

    def main():
        raise ModuleNotFoundError("No module named 'fastembed'", name="fastembed")

    monkeypatch.setitem(sys.modules, "benchmarks.rerank_peers", types.SimpleNamespace(main=main))
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the benchmark reads its flags from sys.argv
    from twostage.cli import main as cli

    assert cli(["bench", "rerank-peers", "--threads", "2"]) == 1
    assert "twostage bench: needs fastembed: pip install 'twostage[bench]'" in capsys.readouterr().err


def query_flags(artifacts) -> dict[str, tuple[str, object]]:
    """One non-default value for every serving setting `twostage query` accepts: flag value, expected."""
    return {
        "artifacts_dir": (str(artifacts), artifacts),
        "index_path": (str(artifacts / "index"), artifacts / "index"),
        "recall_k": ("7", 7),
        "mode": ("bm25", "bm25"),
        "fusion": ("weighted", "weighted"),
        "rrf_k": ("30", 30),
        "dense_weight": ("0.3", 0.3),
        "hybrid_depth": ("50", 50),
        "top_k": ("3", 3),
        "floor": ("0.001", 0.001),
        "threads": ("1", 1),
        "rerank_batch_size": ("4", 4),
        "rerank_max_length": ("64", 64),
        "providers": ("cpu", "cpu"),
        "require_gpu": (False, False),
        "batching": (True, True),
        "max_batch_tokens": ("4096", 4096),
        "max_wait_ms": ("1", 1.0),
        "max_pending": ("5", 5),
        "batch_workers": ("2", 2),
        "rerank_timeout_s": ("20", 20.0),
        "max_rerank_tokens": ("100000", 100000),
        "deadline_ms": ("60000", 60000),
        "rerank_tokens_per_s": ("3000", 3000.0),
        "cascade_keep": ("15", 15),
        "cascade_first_pass": ("stage1", "stage1"),
        "cascade_ceiling": ("0.7", 0.7),
        "first_pass_max_length": ("128", 128),
        "max_body_bytes": ("2000000", 2000000),
        "body_timeout_s": ("5", 5.0),
        "max_concurrent": ("2", 2),
        "max_query_chars": ("500", 500),
        "max_documents": ("10", 10),
        "max_document_chars": ("900", 900),
        "log_level": ("DEBUG", "DEBUG"),
        "log_format": ("text", "text"),
        "metrics": (False, False),
        "metrics_namespace": ("stack-a/twostage", "stack-a/twostage"),
        "verify": ("full", "full"),
        # the local store serves; the Qdrant settings are read all the same (tests/test_qdrant_stage1.py serves them)
        "stage1": ("local", "local"),
        "qdrant_url": ("http://127.0.0.1:6333", "http://127.0.0.1:6333"),
        "qdrant_path": ("/tmp/unused", Path("/tmp/unused")),
        "qdrant_collection": ("docs", "docs"),
        "qdrant_api_key_secret_arn": (
            "arn:aws:secretsmanager:eu-west-1:1:secret:k",
            "arn:aws:secretsmanager:eu-west-1:1:secret:k",
        ),
        "qdrant_timeout_s": ("3", 3),
        "qdrant_hnsw_ef": ("64", 64),
    }


def test_query_honours_every_flag_it_accepts(artifacts, monkeypatch, capsys):
    """Each flag reaches the settings the retriever is built from (no environment round trip), and the
    answer shows the ones a response carries."""
    import json as json_module

    from handler.pipeline import Retriever
    from twostage.cli import main

    flags = query_flags(artifacts)
    serving = set(Settings.flat_fields()) - {"api_key", "qdrant_api_key"} - set(ServerSettings.model_fields)
    assert set(flags) == serving  # a new setting needs a row here
    argv = ["query", "What does error E240 mean?", "--json"]
    for name, (value, _) in flags.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else [flag, value]
    built = []
    real = Retriever.from_settings.__func__
    monkeypatch.setattr(
        Retriever, "from_settings", classmethod(lambda cls, s, m=None: built.append(s) or real(cls, s, m))
    )
    monkeypatch.setenv("TWOSTAGE_MODE", "dense")  # flags win over the environment
    assert main(argv) == 0
    (settings,) = built
    for name, (_, expected) in flags.items():
        assert settings.value(name) == expected, name
    answer = json_module.loads(capsys.readouterr().out)
    assert (answer["mode"], answer["recall_k"], answer["top_k"]) == ("bm25", 7, 3)
    assert answer["floor"] == 0.001 and answer["candidates"] <= 7 and len(answer["results"]) <= 3
    assert all(r["found_by"] == ["bm25"] for r in answer["results"])


def test_each_environment_variable_means_one_thing():
    """No variable is read by two commands with different meanings (eval's mode was serve's TWOSTAGE_MODE)."""
    from evaluation.settings import CalibrateSettings, EvalSettings
    from handler.settings import Stage1Store
    from index_build.settings import IndexSettings
    from model_export.settings import ExportSettings
    from training.settings import TrainSettings
    from twostage.flags import env_names, flat_fields

    readers: dict[str, set] = {}
    for cls in (Settings, ExportSettings, IndexSettings, EvalSettings, CalibrateSettings, TrainSettings):
        for name, (owner, _) in flat_fields(cls).items():
            for env in env_names(owner, name):
                readers.setdefault(env, set()).add(cls.__name__)
    shared = {env for env, classes in readers.items() if len(classes) > 1}
    # where stage 1 lives is one thing for index, eval and serving: declared once, in Stage1Store
    store = {env for name in Stage1Store.model_fields for env in env_names(Stage1Store, name)}
    assert shared == {"ARTIFACTS_DIR", "TWOSTAGE_ARTIFACTS_DIR"} | store
    assert all(readers[env] == {"Settings", "IndexSettings", "EvalSettings"} for env in store)
    assert "TWOSTAGE_EVAL_MODE" in readers and "TWOSTAGE_MODE" in readers


def test_a_serving_variable_does_not_change_eval(monkeypatch):
    from evaluation.settings import EvalSettings

    monkeypatch.setenv("TWOSTAGE_MODE", "hybrid")
    monkeypatch.setenv("TWOSTAGE_EVAL_SPLIT", "train")
    evaluation = EvalSettings()
    assert (evaluation.mode, evaluation.split) == ("dense", "train")


def test_index_answers_bad_stage1_options_with_a_message(artifacts, capsys, tmp_path):
    """An unreachable Qdrant, a mistyped shard directory, options that need another: one line each, no traceback."""
    from twostage.cli import main

    base = ["index", "--artifacts-dir", str(artifacts), "--index-path", str(tmp_path / "index")]
    cases = [
        (["--stage1", "qdrant", "--qdrant-url", "http://127.0.0.1:1", "--qdrant-timeout-s", "1"], "Connection refused"),
        (["--reuse-embeddings", str(tmp_path / "missing")], "no directory of embedding shards"),
    ]
    for flags, message in cases:
        assert main(base + flags) == 1
        last = capsys.readouterr().err.strip().splitlines()[-1]  # (earlier tests' log handlers may write above it)
        assert last.startswith("twostage index: ") and message in last
    for flags, message in (
        (["--stage1", "qdrant"], "exactly one of qdrant_url"),
        (["--from-index", "x"], "--stage1 qdrant"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(base + flags)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
