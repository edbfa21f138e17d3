"""DVC stage ``report``: one HTML page + a markdown summary over all categories.

    python -m pipelines.stages.report RUNS_DIR OUT_DIR          # runs -> reports/{index.html,summary.md}

See :mod:`pipelines.report`. Depends on the whole ``runs`` folder (every category's
evaluation and calibration); ``.work`` scratch folders are excluded by ``.dvcignore``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipelines.params import load_stage_config
from pipelines.stages import base_parser, run_main

PARAMS = ["data.categories"]


def _body(argv: Sequence[str] | None) -> None:
    from pipelines.report import build_report

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    a = parser.parse_args(argv)
    cfg = load_stage_config(PARAMS, a.params)
    report = build_report(a.runs_dir, cfg.data.categories, a.out_dir)
    print(report.markdown.read_text())
    print(f"report: {report.html}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("report", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
