"""The ``sidn`` command line.

Library commands are defined here; commands that need the orchestration stack (MLflow
registry, Prefect flows) are plugged in from ``pipelines/`` through the ``sidn.commands``
entry-point group, so this package never imports them. In the same way ``--model`` accepts,
besides a bundle path, a URI such as ``models:/sidn-carpet@champion``: the resolver installed
for its scheme in the ``sidn.model_uris`` group (``pipelines/tracking/model_uri.py`` for ``models:``)
maps it to a local bundle (:func:`resolve_model`).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

# One or more examples per command (one per line), shown by --help. They run as written, in
# this order, after `sidn train` and `sidn calibrate` (tests/unit/test_examples.py); `models:/` lines
# need the MLflow registry (pipelines/tracking/model_uri.py; tests/integration/test_model_uri.py).
EXAMPLES = {
    "train": "sidn train --data data/raw/sidn-default --category carpet --out runs/carpet/train",
    "calibrate": "sidn calibrate --model runs/carpet/train/model.pt --category carpet --out runs/carpet",
    "evaluate": "sidn evaluate --model runs/carpet/model.pt --category carpet --out runs/carpet/evaluate",
    "predict": ("sidn predict --model runs/carpet/model.pt photos/ --out predictions/\n"
                "sidn predict --model models:/sidn-carpet@champion photos/ --out predictions/"),
    "info": "sidn info --size 256",
    "bench": "sidn bench --json",
    "export": ("sidn export --model runs/carpet/model.pt --format onnx --out carpet.onnx\n"
               "sidn export --model models:/sidn-carpet@champion --format onnx --out carpet.onnx"),
    "data synth": "sidn data synth --out data/raw/sidn-default",
    "data validate": "sidn data validate --data data/raw/sidn-default --out runs/validation",
    "data fetch": "sidn data fetch mvtec --dest data/raw/mvtec_ad --categories carpet wood",
}


def _parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    lines = EXAMPLES[name].splitlines()
    return sub.add_parser(
        name.split()[-1],
        help=help,
        description=help,
        epilog=("example:\n" if len(lines) == 1 else "examples:\n") + "\n".join(f"  {line}" for line in lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


MODEL_URI_GROUP = "sidn.model_uris"
MODEL_HELP = ("model bundle (model.pt), a registered model URI such as models:/sidn-carpet@champion "
              "or models:/sidn-carpet/3, or a bundle published to the S3 store with `sidn registry publish`, "
              "such as s3://sidn-data/bundles/models/sidn-carpet@champion (URIs need the extras: "
              "pip install -e '.[stack]')")
_URI_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):")  # 2+ characters: C:\x is a path


class ModelURIError(ValueError):
    """``--model`` is a URI that no installed resolver maps to a bundle (exit 2)."""


def model_uri_scheme(model: str) -> str | None:
    """The scheme of ``model`` if it is a URI (``models`` for ``models:/x@y``), None for a path."""
    m = _URI_SCHEME.match(str(model))
    return m["scheme"] if m is not None and not Path(model).exists() else None


def model_uri_resolvers() -> dict[str, Any]:
    """scheme -> its ``sidn.model_uris`` entry point (loaded only when used; tests may put a function)."""
    return {ep.name: ep for ep in entry_points(group=MODEL_URI_GROUP)}


def resolve_model(model: str) -> Path:
    """``--model`` as a local bundle path: a path as given; a URI through the resolver for its scheme.

    Resolvers are the functions of the ``sidn.model_uris`` entry-point group, one per scheme,
    each mapping a URI to a local bundle path (e.g. ``models`` -> ``pipelines.tracking.model_uri:resolve``).
    An unknown scheme, no resolver installed or a resolver's failure is a :class:`ModelURIError`
    naming the URI.
    """
    scheme = model_uri_scheme(model)
    if scheme is None:
        return Path(model)
    resolvers = model_uri_resolvers()
    if scheme not in resolvers:
        known = ", ".join(f"{s}:" for s in sorted(resolvers)) or "none"
        hint = " (models:/ URIs need the MLflow extras: pip install -e '.[stack]')" if scheme == "models" else ""
        raise ModelURIError(f"--model {model}: no resolver for '{scheme}:' URIs is installed "
                            f"(installed: {known}){hint}; give a model bundle path or a supported URI")
    entry = resolvers[scheme]
    try:
        resolver = entry.load() if hasattr(entry, "load") else entry
    except ImportError as exc:
        raise ModelURIError(f"--model {model}: the '{scheme}:' resolver is not usable ({exc}); "
                            "pip install -e '.[stack]'") from exc
    try:
        path = Path(resolver(model))
    except Exception as exc:  # the resolver's own errors (registry, network, I/O)
        text = str(exc)
        raise ModelURIError(text if model in text else f"--model {model}: {text}") from exc
    if not path.is_file():
        raise ModelURIError(f"--model {model}: the resolver gave {path}, which is not a file")
    return path


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="params.yaml to read (default: ./params.yaml if present, else built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one parameter, e.g. --set train.steps=200 (repeatable)")


def _config(args: argparse.Namespace):
    from sidn.config import load_config

    cfg = load_config(args.params, args.overrides)
    if getattr(args, "data", None):
        cfg.data.root = str(args.data)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from sidn.jobs import train_category

    cfg = _config(args)
    result = train_category(cfg, args.category, Path(args.out), resume=args.resume, progress=not args.quiet)
    print(f"trained {args.category}: {result.steps_done} steps, best step {result.best_step} "
          f"(val loss {result.best_val_loss:.4f}) -> {Path(args.out) / 'model.pt'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sidn.jobs import evaluate_category

    metrics = evaluate_category(resolve_model(args.model), args.category, Path(args.out), data_root=args.data,
                                overlays=args.overlays)
    print(json.dumps({k: metrics[k] for k in ("category", "pixel_auroc", "aupro", "image_auroc")}, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sidn.config import load_config
    from sidn.jobs import calibrate_category

    if model_uri_scheme(args.model) is not None:
        raise ModelURIError(f"--model {args.model}: calibrate makes a calibrated copy of a local model.pt (the "
                            "trained one), not of a registered model URI")
    cfg = load_config(args.params, args.overrides) if (args.params or args.overrides) else None
    result = calibrate_category(Path(args.model), args.category, Path(args.out), cfg=cfg, data_root=args.data)
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from sidn.inference import UncalibratedModelError
    from sidn.predict_files import predict_files

    model = resolve_model(args.model)
    try:
        table = predict_files(model, [Path(p) for p in args.inputs], Path(args.out),
                              threshold=args.threshold, onnx=args.onnx, skip_bad=args.skip_bad, fast=args.fast)
    except UncalibratedModelError as exc:
        raise UncalibratedModelError(f"{args.model}: {exc}{_calibrated_hint(model)}") from exc
    if str(model) != args.model:  # resolved from a URI: predictions.json names what was asked for too
        _record_model_uri(Path(args.out) / "predictions.json", args.model)
    skipped = table[table["status"] == "skipped"]
    for _, row in skipped.iterrows():
        print(f"skipped {row['path']}: {row['reason']}", file=sys.stderr)
    defective = int((table["is_defective"] == True).sum())  # noqa: E712 - skipped rows hold None
    print(f"{len(table) - len(skipped)} image(s), {defective} defective, {len(skipped)} skipped -> {args.out}")
    if args.fast:
        mode = json.loads((Path(args.out) / "predictions.json").read_text())
        print(f"maps computed in fast mode {mode['fast_mode']}" + (f" ({mode['fast_note']})" if mode["fast_note"] else ""))
    return 0


def _calibrated_hint(model: Path) -> str:
    """Where the pipeline put the calibrated form of a trained bundle (runs/C/train/model.pt -> runs/C/model.pt)."""
    shipped = model.parent.parent / "model.pt"
    if model.parent.name == "train" and shipped.is_file() and shipped.resolve() != model.resolve():
        return f"; {shipped} is the calibrated model that the pipeline (`make run`, `dvc repro`) ships"
    return ""


def _record_model_uri(predictions_json: Path, uri: str) -> None:
    from sidn.io import atomic_write_json

    if predictions_json.is_file():
        doc = json.loads(predictions_json.read_text())
        atomic_write_json(predictions_json, {"model_uri": uri, **doc})


def cmd_info(args: argparse.Namespace) -> int:
    from sidn.model import SIDN
    from sidn.model.flops import count_flops, count_parameters

    cfg = _config(args)
    model = SIDN(cfg.model).eval()
    print(f"SIDN  C={cfg.model.channels} K={cfg.model.clusters} lambda_f={cfg.model.lambda_f}")
    print(f"parameters:      {count_parameters(model):,}")
    print(f"GFLOPs / image:  {count_flops(model, args.size) / 1e9:.3f}  ({args.size}x{args.size} grayscale)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sidn.bench import format_bench, run_bench

    figures = run_bench(image_size=args.size, bundle=str(resolve_model(args.model)) if args.model else None)
    print(json.dumps(figures) if args.json else format_bench(figures))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sidn import export

    out = Path(args.out)
    model = resolve_model(args.model)
    if args.format == "onnx":
        export.export_onnx(model, out, image_size=args.size)
    else:
        export.export_torchscript(model, out, image_size=args.size)
    print(f"wrote {out}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from sidn.data.synth import contact_sheet, synthesize

    synthesize(Path(args.out), args.categories, seed=args.seed, size=args.size, n_train=args.n_train,
               n_test_good=args.n_test_good, n_test_defect=args.n_test_defect)
    for category in args.categories or _categories_in(Path(args.out)):
        print(contact_sheet(Path(args.out), category, Path(args.out) / f"{category}_contact_sheet.png"))
    return 0


def _categories_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def cmd_data_validate(args: argparse.Namespace) -> int:
    from sidn.data.validate import format_report, validate_dataset

    categories = args.categories or _categories_in(Path(args.data))
    report = validate_dataset(Path(args.data), categories, Path(args.out), min_train_images=args.min_train_images)
    print(format_report(report))
    return 0 if report.passed else 1


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from sidn.data.fetch import fetch_mvtec

    for path in fetch_mvtec(args.categories, Path(args.dest)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidn", description="SIDN texture-defect segmentation (Yang et al., IEEE TII 2023)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _parser(sub, "train", "train one category's model on its defect-free images")
    p.add_argument("--data", help="MVTec-layout root (overrides data.root)")
    p.add_argument("--category", required=True)
    p.add_argument("--out", required=True, help="output folder: model.pt, checkpoint.pt, config.yaml, history.csv")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = _parser(sub, "evaluate", "pixel AUROC, AUPRO, image AUROC on the test split at original resolution")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--category", required=True)
    p.add_argument("--data", help="MVTec-layout root (default: the one the model was trained on)")
    p.add_argument("--out", required=True, help="output folder: metrics.json, roc.csv, pro.csv, scores.csv, overlays/")
    p.add_argument("--overlays", type=int, default=12, help="number of overlay panels, worst first")
    p.set_defaults(func=cmd_evaluate)

    p = _parser(sub, "calibrate", "choose the threshold from held-out good images; write the calibrated model to ship")
    p.add_argument("--model", required=True, help="the trained model.pt (not modified)")
    p.add_argument("--category", required=True)
    p.add_argument("--data", help="MVTec-layout root (default: the one the model was trained on)")
    p.add_argument("--out", required=True, help="output folder: model.pt (calibrated copy), calibration.json")
    p.add_argument("--params", help="calibrate with this params.yaml's data/dgm/infer/calibrate settings, as "
                                    "`dvc repro` does (default: the model's own settings)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one of those settings, e.g. --set calibrate.target_image_far=0.02 (repeatable)")
    p.set_defaults(func=cmd_calibrate)

    p = _parser(sub, "predict", "segment defects in images or folders")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder: masks/, overlays/, predictions.csv, predictions.json")
    p.add_argument("--threshold", type=float, help="override the calibrated threshold (a finite number)")
    p.add_argument("--onnx", help="run the fused map through this ONNX file (onnxruntime) instead of torch; "
                                  "it must have been exported from --model")
    p.add_argument("--fast", action="store_true",
                   help="fastest mode this CPU supports: int8 where the model's int8 calibration passed parity "
                        "(sidn calibrate), else bf16 / folded fp32; predictions.json names the mode")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable images (listed with status 'skipped' and the reason in predictions.csv/json) "
                        "instead of failing the run")
    p.set_defaults(func=cmd_predict)

    p = _parser(sub, "info", "parameter count and FLOPs per image")
    p.add_argument("--size", type=int, default=256)
    _add_config_args(p)
    p.set_defaults(func=cmd_info)

    p = _parser(sub, "bench", "inference/training speed, memory and achieved FLOP rate on this machine")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--model", help="time and judge this calibrated model.pt or registered model URI (its int8 "
                                   "calibration included) instead of a random timing model")
    p.set_defaults(func=cmd_bench)

    p = _parser(sub, "export", "export a model bundle to ONNX or TorchScript (fused map, eq. 26)")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--size", type=int, default=None,
                   help="input size of the exported graph (default: the model's data.image_size, the size "
                        "`sidn predict --onnx` feeds it)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

    data = sub.add_parser("data", help="embedded default dataset, validation, fetching MVTec AD")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = _parser(data_sub, "data synth", "generate the embedded default texture-defect dataset (MVTec layout)")
    p.add_argument("--out", default="data/raw/sidn-default")
    p.add_argument("--categories", nargs="*", help="default: carpet grid leather tile wood")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test-good", type=int, default=40)
    p.add_argument("--n-test-defect", type=int, default=60)
    p.set_defaults(func=cmd_data_synth)

    p = _parser(data_sub, "data validate", "validate an MVTec-layout dataset with great-expectations")
    p.add_argument("--data", required=True)
    p.add_argument("--categories", nargs="*", help="default: every category folder")
    p.add_argument("--out", required=True, help="output folder: validation.json, validation.html")
    p.add_argument("--min-train-images", type=int, default=10)
    p.set_defaults(func=cmd_data_validate)

    p = _parser(data_sub, "data fetch", "download MVTec AD categories (needs internet)")
    p.add_argument("dataset", choices=["mvtec"])
    p.add_argument("--dest", default="data/raw/mvtec_ad")
    p.add_argument("--categories", nargs="+", default=["carpet", "grid", "leather", "tile", "wood"])
    p.set_defaults(func=cmd_data_fetch)

    for plugin in entry_points(group="sidn.commands"):
        try:
            register: Callable[[argparse._SubParsersAction], None] = plugin.load()
        except ImportError as exc:  # the orchestration extras are not installed
            logging.getLogger(__name__).debug("plug-in %s unavailable: %s", plugin.name, exc)
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 130 if type(exc).__name__ == "TrainingInterrupted" else 2


if __name__ == "__main__":
    sys.exit(main())
