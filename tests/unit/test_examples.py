"""Every documented ``sidn`` example runs as written.

The commands come from the docs themselves, so an edited example is the example tested:

* ``sidn.cli.EXAMPLES`` (the ``--help`` epilogs; one or more lines per command);
* the code block of README.md's "The CLI" section: ``# comments`` are dropped, and ``[...]``
  optional parts are left out of the command; each alternative of an optional part
  (``[--fast | --onnx carpet.onnx]``) is then run too, once the whole sequence has run, except
  for ``sidn train``'s (``--set train.steps=2000`` and ``--resume`` would retrain the model).

They run, in a temporary working directory laid out as the docs assume (a tiny generated
MVTec-layout dataset at ``data/raw/sidn-default``, a tiny ``params.yaml``, ``photos/`` with a few
images), through ``sidn.cli.main(shlex.split(line)[1:])``, in the order of :data:`SEQUENCE`.
``models:/sidn-carpet@...`` lines run with the registry replaced by a stub resolver that maps
them to the locally trained bundle (the real MLflow path: tests/integration/test_model_uri.py).

Not run: ``sidn data synth`` (the full 512 px default dataset, minutes), ``sidn data fetch``
(internet), ``sidn bench`` (timing), and the orchestration commands (``pipeline``, ``promote``,
``registry``: they need the servers and are tested in test_flows.py / test_mlflow.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.data import make_mvtec_tree
from sidn import cli

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SEQUENCE = ["train", "calibrate", "evaluate", "predict", "export"]  # the user's path through the CLI
ALSO = ["info", "data validate"]  # quick, independent examples run after it
NO_VARIANTS = {"train"}

TINY_PARAMS = """\
data:
  root: data/raw/sidn-default
  categories: [carpet]
  image_size: 64
  holdout_fraction: 0.25
  min_train_images: 4
dgm:
  val_images: 8
train:
  steps: 6
  batch_size: 4
  crop_size: 0
  val_every: 3
  checkpoint_every: 3
  amp: "off"
  num_threads: 1
infer:
  batch_size: 8
calibrate:
  int8: false
"""


def _command(line: str) -> str:
    """The command a doc line names: ``data validate`` for ``sidn data validate ...``, else the first word."""
    words = line.split()
    return " ".join(words[1:3]) if words[1] == "data" else words[1]


def _strip(line: str) -> tuple[str, list[str]]:
    """A doc line without its ``# comment`` and ``[...]`` parts, and the alternatives of those parts."""
    line = re.sub(r"\s#.*$", "", line).strip()
    alternatives = [alt.strip() for group in re.findall(r"\[([^\]]*)\]", line) for alt in group.split("|")]
    return " ".join(re.sub(r"\[[^\]]*\]", " ", line).split()), [a for a in alternatives if a]


def readme_cli_lines() -> list[str]:
    """The ``sidn ...`` lines of the first code block under "## The CLI" in README.md."""
    section = README.read_text().split("\n## The CLI", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S)
    assert block, "README.md: no code block in the section 'The CLI'"
    return [line.strip() for line in block.group(1).splitlines() if line.strip().startswith("sidn ")]


def example_lines() -> list[str]:
    return [line.strip() for text in cli.EXAMPLES.values() for line in text.splitlines()]


def plan(lines: list[str]) -> list[str]:
    """The command lines to run, in order: SEQUENCE, then ALSO, then the optional alternatives."""
    main: dict[str, list[str]] = {name: [] for name in SEQUENCE + ALSO}
    variants: list[str] = []
    for line in lines:
        base, alternatives = _strip(line)
        name = _command(base)
        if name not in main:
            continue
        main[name].append(base)
        if name not in NO_VARIANTS:
            variants += [f"{base} {alt}" for alt in alternatives]
    return [line for name in SEQUENCE + ALSO for line in main[name]] + variants


@dataclass
class Docs:
    cwd: Path
    resolved: list[str]  # models:/ URIs the stub resolver was asked for


@pytest.fixture
def docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Docs:
    """A working directory as the docs assume it, with a stub ``models:`` resolver."""
    data = tmp_path / "data" / "raw" / "sidn-default"
    cat = make_mvtec_tree(data, "carpet", n_train=12, n_test_good=3, defects={"cut": 3}, size=64)
    (tmp_path / "params.yaml").write_text(TINY_PARAMS)
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in [*sorted((cat / "test" / "good").glob("*.png"))[:2], *sorted((cat / "test" / "cut").glob("*.png"))[:2]]:
        shutil.copy(src, photos / f"{src.parent.name}_{src.name}")
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)

    resolved: list[str] = []

    def registry_stub(uri: str) -> Path:
        assert re.fullmatch(r"models:/sidn-carpet(@[\w-]+|/\d+)", uri), uri
        resolved.append(uri)
        return tmp_path / "runs" / "carpet" / "model.pt"  # what the registry holds: the calibrated bundle

    monkeypatch.setattr(cli, "model_uri_resolvers", lambda: {"models": registry_stub})
    return Docs(tmp_path, resolved)


def _run_all(lines: list[str], capsys: pytest.CaptureFixture) -> None:
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "sidn", line
        code = cli.main(argv[1:])
        captured = capsys.readouterr()
        assert code == 0, f"documented example failed (exit {code}): {line}\n{captured.err[-2000:]}"


def _check_outputs(docs: Docs, lines: list[str]) -> None:
    cwd = docs.cwd
    train = cwd / "runs" / "carpet" / "train" / "model.pt"
    assert train.is_file() and (cwd / "runs" / "carpet" / "calibration.json").is_file()
    assert json.loads((cwd / "runs" / "carpet" / "evaluate" / "metrics.json").read_text())["operating_point"]
    doc = json.loads((cwd / "predictions" / "predictions.json").read_text())
    assert len(doc["images"]) == 4
    assert (cwd / "carpet.onnx").is_file()
    if any("models:/" in line for line in lines if _command(line) == "predict"):
        assert docs.resolved


def test_plan_parses_the_docs() -> None:
    """Every command of SEQUENCE is documented in both places; the README's alternatives are found."""
    for lines in (readme_cli_lines(), example_lines()):
        names = {_command(_strip(line)[0]) for line in lines}
        assert set(SEQUENCE) <= names, names
    base, alternatives = _strip("sidn predict --model m.pt photos/ --out p/ [--fast | --onnx c.onnx]  # note")
    assert base == "sidn predict --model m.pt photos/ --out p/" and alternatives == ["--fast", "--onnx c.onnx"]


@pytest.mark.slow
def test_help_examples_run_as_written(docs: Docs, capsys: pytest.CaptureFixture) -> None:
    lines = plan(example_lines())
    assert list(dict.fromkeys(_command(line) for line in lines)) == SEQUENCE + ALSO
    _run_all(lines, capsys)
    _check_outputs(docs, example_lines())


@pytest.mark.slow
def test_readme_cli_block_runs_as_written(docs: Docs, capsys: pytest.CaptureFixture) -> None:
    lines = plan(readme_cli_lines())
    assert any("--onnx" in line for line in lines) and any("--fast" in line for line in lines)
    _run_all(lines, capsys)
    _check_outputs(docs, readme_cli_lines())


def test_uncalibrated_predict_names_the_calibrated_bundle(docs: Docs, capsys: pytest.CaptureFixture) -> None:
    """After `make run`, runs/C/train/model.pt is the uncalibrated trained bundle: the error says where the shipped one is."""
    import torch

    from sidn.bundle import save_bundle
    from sidn.config import load_config
    from sidn.model.sidn import SIDN

    cfg = load_config()
    model = SIDN(cfg.model).eval()
    (docs.cwd / "runs" / "carpet" / "train").mkdir(parents=True)
    save_bundle(model, cfg, docs.cwd / "runs" / "carpet" / "train" / "model.pt")
    with torch.no_grad():
        model.threshold.fill_(0.5)
    save_bundle(model, cfg, docs.cwd / "runs" / "carpet" / "model.pt")
    code = cli.main(shlex.split("predict --model runs/carpet/train/model.pt photos/ --out predictions/"))
    err = capsys.readouterr().err
    assert code == 2 and "not calibrated" in err and "runs/carpet/model.pt is the calibrated model" in err
    assert cli.main(shlex.split("predict --model runs/carpet/model.pt photos/ --out predictions/")) == 0
