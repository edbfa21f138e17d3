"""DVC stage ``synth@<category>``: generate one category of the embedded default dataset.

    python -m pipelines.stages.synth CATEGORY OUT_ROOT [--size 512 --n-train 200 ...]

Writes ``OUT_ROOT/CATEGORY/{train/good,test/<defect>,ground_truth/<defect>}`` (MVTec layout)
with :func:`sidn.data.synth.synthesize`, which generates into ``OUT_ROOT/.CATEGORY.tmp`` and
renames it into place when complete (byte-identical output for the same settings). The generator settings are the ``synth`` vars at the top of
``dvc.yaml`` (they are not model parameters, so they are not in ``params.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipelines.stages import base_parser, run_main

PARAMS: list[str] = []  # reads no params.yaml key; its settings come on the command line


def run(category: str, out_root: Path, seed: int = 0, size: int = 512, n_train: int = 200,
        n_test_good: int = 40, n_test_defect: int = 60) -> Path:
    """Generate ``out_root/category``; returns that folder."""
    from sidn.data.synth import synthesize

    out_root = Path(out_root)
    n_images = n_train + n_test_good + n_test_defect
    workers = 1 if n_images * size * size < 64 * 256 * 256 else None  # tiny sets: no process pool start-up
    synthesize(out_root, [category], seed=seed, size=size, n_train=n_train, n_test_good=n_test_good,
               n_test_defect=n_test_defect, workers=workers)
    return out_root / category


def _body(argv: Sequence[str] | None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("category")
    parser.add_argument("out_root", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test-good", type=int, default=40)
    parser.add_argument("--n-test-defect", type=int, default=60)
    a = parser.parse_args(argv)
    out = run(a.category, a.out_root, a.seed, a.size, a.n_train, a.n_test_good, a.n_test_defect)
    print(f"synth: wrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("synth", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
