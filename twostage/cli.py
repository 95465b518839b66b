"""`twostage` — one CLI; build code (torch, optimum, onnx) is imported only inside the subcommand that needs
it, so the GPU image's `pip install ".[server]"` runs `twostage serve` and `twostage query`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys

from handler.artifacts import Artifacts
from handler.errors import ArtifactError, IndexMismatchError, Stage1Unavailable
from handler.onnx_model import ProviderError
from handler.settings import ServerSettings, Settings
from twostage.flags import add_settings_flags, settings_from_args

# model_export's ExportError is a ValueError: naming it here would import onnx in the server image
USER_ERRORS = (
    FileNotFoundError,
    PermissionError,
    ValueError,
    IndexMismatchError,
    ProviderError,
    ArtifactError,
    Stage1Unavailable,
)


def cmd_export(parser, args) -> int:
    from model_export.export import export_all
    from model_export.settings import ExportSettings

    settings = settings_from_args(parser, ExportSettings, args)
    manifests = export_all(settings)
    for kind, m in manifests.items():
        size = m.size_bytes / 1e6
        quant = m.quantization["dtype"] if m.quantization else "fp32"
        print(f"{kind}: {quant} {size:.1f} MB in {m.export_seconds}s, parity {m.parity} → {settings.models_dir / kind}")
    return 0


def cmd_index(parser, args) -> int:
    from index_build.build import build_index
    from index_build.settings import IndexSettings

    settings = settings_from_args(parser, IndexSettings, args)
    if settings.stage1 == "qdrant":
        return _load_qdrant(settings)
    if settings.from_index:
        parser.error("--from-index copies a local index into Qdrant: use it with --stage1 qdrant")
    m = build_index(settings)
    target = settings.index_path or settings.artifacts_dir / "index"
    build = m.build
    print(
        f"index ({build['engine']}): {m.documents} documents, {m.count} chunks in {build['seconds']}s; "
        f"{build['embedded']} embedded, {build['reused']} reused → {target}"
    )
    return 0


def _load_qdrant(settings) -> int:
    try:
        from index_build.qdrant_load import load_collection
    except ImportError:
        print("--stage1 qdrant needs qdrant-client: pip install 'twostage[qdrant]'", file=sys.stderr)
        return 2
    record = load_collection(settings)
    build = record["build"]
    print(
        f"qdrant: {record['documents']} documents, {record['count']} chunks in {build['seconds']}s "
        f"({build['embedded']} embedded, {build['copied_from_index']} copied, {build['reused']} reused, "
        f"{build['deleted']} deleted) → {settings.qdrant_url or settings.qdrant_path} {settings.qdrant_collection!r}"
    )
    return 0


def cmd_eval(parser, args) -> int:
    from evaluation.evaluate import evaluate_dataset, markdown
    from evaluation.settings import EvalSettings

    settings = settings_from_args(parser, EvalSettings, args)
    print(markdown(evaluate_dataset(settings)))
    return 0


def cmd_calibrate(parser, args) -> int:
    from evaluation.calibrate import calibrate
    from evaluation.settings import CalibrateSettings

    settings = settings_from_args(parser, CalibrateSettings, args)
    print(json.dumps(calibrate(settings), indent=2))
    print(f"written to {Artifacts(settings.artifacts_dir).cross / 'manifest.json'} (the handler's default floor)")
    return 0


def cmd_train(parser, args) -> int:
    from training.data import GROUPS_FILE
    from training.settings import TrainSettings
    from training.train import train

    settings = settings_from_args(parser, TrainSettings, args)
    logging.getLogger("training").setLevel(logging.INFO)
    if settings.distill:
        from training.distill import distill

        summary = distill(settings)
        print(json.dumps({k: summary[k] for k in ("groups", "best_cascade_recall@20", "minutes", "history")}, indent=1))
        print(
            f"first pass → {settings.output_dir}; export: twostage export --which first-pass "
            f"--first-pass-model {settings.output_dir}"
        )
        return 0
    summary = train(settings)
    if settings.mine_only:
        groups = settings.output_dir / GROUPS_FILE
        print(f"{summary['train_groups']} train / {summary['dev_groups']} dev groups → {groups}")
        return 0
    print(json.dumps({k: summary[k] for k in ("train_groups", "best_dev_mrr", "minutes", "history")}, indent=1))
    print(f"model → {settings.output_dir}; export: twostage export --which cross --cross-model {settings.output_dir}")
    return 0


def cmd_verify(parser, args) -> int:
    """Every artifact checked in full (every file's sha256, the index graph, SQLite, BM25, a probe per
    model); with --record, older artifacts first get the file records the runtime requires."""
    from handler.pipeline import Retriever

    settings = settings_from_args(parser, Settings, args).replace(verify="full")
    former = {}
    if args.record:
        from index_build.records import record_files

        former = record_files(settings.artifacts)
    try:
        Retriever.from_settings(settings).close()
    except Exception:
        if former:
            from index_build.records import restore

            restore(former)
        raise
    for directory in former:
        print(f"recorded the files of {directory}")
    print(f"ok: {settings.artifacts.root} (models, index) passed the full checks")
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def cmd_serve(parser, args) -> int:
    settings = settings_from_args(parser, Settings, args)
    server = settings.server
    if not is_loopback(server.host) and settings.api_key is None and not server.insecure:
        parser.error(
            f"--host {server.host} is reachable from other machines and no API key is set: set TWOSTAGE_API_KEY "
            "(callers send `Authorization: Bearer <key>`), or pass --insecure (env TWOSTAGE_INSECURE=true) to "
            "serve without authentication behind your own gateway"
        )
    from twostage.serve import serve  # uvicorn: the [server] extra

    serve(settings)
    return 0


def _print_answer(answer: dict) -> None:
    print(f"query: {answer['query']}")
    best = "none" if answer["best_score"] is None else f"{answer['best_score']:.3f}"
    print(f"floor {answer['floor']:.3f} · best score {best} · refused: {answer['refused']}")
    model = answer["score_model"]
    if model["calibrated"]:
        cosine = "the query's best cosine" if model["cosine_of"] == "query" else "cosine"
        print(
            f"score = sigmoid({model['logit']:.3g}·logit {model['ln_stage1_rank']:+.3g}·ln(stage-1 rank) "
            f"{model['cosine']:+.3g}·{cosine} {model['intercept']:+.3g}), best first"
        )
    else:
        print("score = sigmoid(logit): this reranker ships no calibration (twostage calibrate), best first")
    if answer["refused"]:
        print(f"  {answer['reason']}")
    for rank, hit in enumerate(answer["results"], 1):
        text = hit["text"] if len(hit["text"]) < 110 else hit["text"][:107] + "..."
        print(
            f"{rank:>3}. score {hit['score']:.3f} (stage-1 #{hit['stage1_rank']} via {'+'.join(hit['found_by'])})"
            f"  {hit['id']}  {hit['title']}\n       {text}"
        )
    ran = {k: v for k, v in answer["timings"].items() if v or k == "total_ms"}  # the stages this store has
    print("timings (ms): " + ", ".join(f"{k[:-3]} {v}" for k, v in ran.items()))


def cmd_query(parser, args) -> int:
    """Answer one query through the Lambda app (Mangum, Starlette, the pipeline) built from this command's
    settings (flags, then TWOSTAGE_* env vars), with the event API Gateway would send."""
    from handler.api import lambda_handler
    from handler.events import http_api_event
    from handler.pipeline import Retriever

    # in process: a TWOSTAGE_API_KEY in the environment is for the server, not for this call; a one-off
    # answer on a terminal wants no metric line unless asked (--metrics)
    quiet = {} if args.metrics is not None else {"metrics": False}
    settings = settings_from_args(parser, Settings, args).replace(api_key=None, **quiet)
    if args.log_level is not None:
        logging.getLogger().setLevel(settings.log_level.upper())
    body = {"query": args.text}
    if args.filter is not None:
        try:
            body["filter"] = json.loads(args.filter)
        except ValueError as error:
            parser.error(f"--filter: not JSON ({error})")
    retriever = Retriever.from_settings(settings)
    try:
        response = lambda_handler(retriever, settings)(http_api_event("POST", "/search", body), None)
    finally:
        retriever.close()
    body = json.loads(response["body"])
    if args.json or response["statusCode"] != 200:
        print(json.dumps(body, indent=2))
    else:
        _print_answer(body)
    return 0 if response["statusCode"] == 200 else 1


def installed_settings(module: str, name: str):
    """A build command's settings class, or None where its package is not installed: the images ship
    only the serving packages (the GPU image has no evaluation/ or training/, the Lambda tree less)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError:
        return None


def no_server_fields() -> tuple[str, ...]:
    """Commands that run the pipeline in process: no API key to present, no server to run."""
    return ("api_key", *ServerSettings.model_fields)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twostage", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, settings, run, exclude: tuple = ()) -> argparse.ArgumentParser:
        """A subcommand whose flags mirror a settings class (every field, env var as default)."""
        sub = commands.add_parser(name, help=help_text)
        add_settings_flags(sub, settings, exclude)
        sub.set_defaults(run=run, parser=sub)
        return sub

    build_commands = [
        (
            "export",
            "HF model (id or dir) → ONNX int8 with manifest and parity",
            "model_export",
            "ExportSettings",
            cmd_export,
        ),
        (
            "index",
            "corpus (JSONL, CSV, Parquet, a directory) → hnswlib + BM25 + doc store",
            "index_build",
            "IndexSettings",
            cmd_index,
        ),
        ("eval", "BEIR data → stage-1 and two-stage metrics (ranx)", "evaluation", "EvalSettings", cmd_eval),
        (
            "calibrate",
            "fit score calibration and pick the floor from data",
            "evaluation",
            "CalibrateSettings",
            cmd_calibrate,
        ),
        ("train", "fine-tune a cross-encoder on BEIR-format training data", "training", "TrainSettings", cmd_train),
    ]
    for name, help_text, package, class_name, run in build_commands:
        settings_class = installed_settings(f"{package}.settings", class_name)
        if settings_class is not None:
            sub = command(name, help_text, settings_class, run)
            if name == "eval":
                sub.add_argument("--json", dest="json_path", default=None, metavar="PATH", help="same as --json-path")

    command("serve", "serve the HTTP API with uvicorn", Settings, cmd_serve)
    verify = command("verify", "check every artifact in full (models, index)", Settings, cmd_verify, no_server_fields())
    verify.add_argument(
        "--record",
        action="store_true",
        help="first record the files of artifacts made by an older twostage (trusts what is on disk now)",
    )
    query = command("query", "answer one query through the Lambda handler", Settings, cmd_query, no_server_fields())
    query.add_argument("text", help="the query")
    query.add_argument("--json", action="store_true", help="print the raw response body")
    query.add_argument(
        "--filter", default=None, metavar="JSON", help='a metadata filter, e.g. \'{"drug": "Corvadil"}\' (see README)'
    )

    bench = commands.add_parser("bench", help="run a benchmark script (they print figures; docs/results.md)")
    bench.add_argument("name", choices=benchmark_names())
    bench.add_argument("args", nargs=argparse.REMAINDER, help="its own flags (twostage bench NAME --help)")
    bench.set_defaults(run=cmd_bench, parser=bench)
    return parser


def benchmark_names() -> list[str]:
    """The scripts in benchmarks/, as `twostage bench` names them (cold_start → cold-start)."""
    import pkgutil

    try:
        import benchmarks
    except ImportError:  # the runtime images (Lambda, GPU container) ship without them
        return []
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(benchmarks.__path__))


def cmd_bench(parser, args) -> int:
    import importlib

    sys.argv = [f"twostage bench {args.name}", *args.args]  # the benchmark parses its own flags
    importlib.import_module(f"benchmarks.{args.name.replace('-', '_')}").main()
    return 0


# Optional extras by the top-level module a command may miss (the images install only what serves).
EXTRA_OF = {"fastembed": "bench", "flashrank": "bench", "uvicorn": "server"}


def missing_module_message(error: ModuleNotFoundError) -> str:
    name = (error.name or "").split(".")[0]
    return f"needs {name}: pip install 'twostage[{EXTRA_OF.get(name, 'build')}]' (or -e '.[build,bench]' here)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.run(args.parser, args)
    except USER_ERRORS as error:  # bad paths, data or artifacts: a message, not a traceback
        print(f"twostage {args.command}: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:  # an optional extra this environment lacks
        print(f"twostage {args.command}: {missing_module_message(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
