"""params.yaml -> SIDNConfig (with profiles), stage-restricted configs, and the ``profile-args`` CLI.

Both entry points use this module: the DVC stages (``pipelines/stages/*``) and the Prefect
tasks (:mod:`pipelines.orchestration.tasks`) resolve their configuration here (and their
output paths in :mod:`pipelines.layout`), so a category trained by ``dvc repro`` and one
trained by a Prefect flow are trained with the same values.

Profiles: ``params.yaml`` may hold a top-level ``profiles`` mapping of partial sections
(``profiles.paper.train.steps: 30000``). ``load_params(path, profile="paper")`` merges one
over the base values; ``python -m pipelines.params profile-args paper`` prints the same
profile as ``-S section.key=value`` arguments for ``dvc exp run``.

Stage restriction: each stage declares the param keys it reads (``PARAMS`` in its module,
identical to its ``params:`` list in ``dvc.yaml``; a test keeps them equal).
``restrict(cfg, keys)`` returns a config in which every other key has its default value, so a
stage cannot depend on a parameter DVC does not know it depends on.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from sidn.config import SIDNConfig, apply_overrides

PARAMS_FILE = Path("params.yaml")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def read_raw(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The params file as a dict (``profiles`` included); ValueError naming the file otherwise."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read params: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_profile(raw: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with each ``section.key`` of ``profile`` replaced whole, as ``dvc exp run -S section.key=...`` does.

    A profile's ``dgm.sources: {paper: 1.0}`` therefore means Gaussian noise only, on the Prefect
    route as on the DVC route, instead of being merged into the other sources' shares.
    """
    out = copy.deepcopy(raw)
    for section, values in profile.items():
        if not isinstance(values, dict):
            raise ValueError(f"profile section '{section}' must be a mapping of keys, got {type(values).__name__}")
        out.setdefault(section, {}).update(copy.deepcopy(values))
    return out


def profile_names(path: str | Path = PARAMS_FILE) -> list[str]:
    return sorted((read_raw(path).get("profiles") or {}).keys())


def _profile(raw: dict[str, Any], profile: str, path: Path) -> dict[str, Any]:
    profiles = raw.get("profiles") or {}
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ValueError(f"{path}: unknown profile '{profile}' (profiles defined: {known})")
    return profiles[profile] or {}


def load_params(
    path: str | Path = PARAMS_FILE, profile: str | None = None, overrides: Iterable[str] | None = None
) -> SIDNConfig:
    """Read ``path``, merge ``profiles[profile]`` over it, apply ``section.key=value`` overrides."""
    path = Path(path)
    raw = read_raw(path)
    if profile:
        raw = apply_profile(raw, _profile(raw, profile, path))
    raw.pop("profiles", None)
    cfg = SIDNConfig.from_dict(raw, source=str(path))
    return apply_overrides(cfg, list(overrides or []))


def profile_overrides(path: str | Path, profile: str) -> list[str]:
    """The profile as ``section.key=value`` strings (for ``dvc exp run -S``)."""
    path = Path(path)
    items: list[str] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and prefix.count(".") < 1:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            items.append(f"{prefix}={json.dumps(node) if not isinstance(node, str) else node}")

    walk("", _profile(read_raw(path), profile, path))
    return items


# ---------------------------------------------------------------------------------------------
# Restriction to declared keys + their hash
# ---------------------------------------------------------------------------------------------


def select(cfg: SIDNConfig, keys: Iterable[str]) -> dict[str, Any]:
    """The values of ``keys`` ("train" or "data.root") as a nested dict."""
    full = cfg.to_dict()
    out: dict[str, Any] = {}
    for key in keys:
        section, _, name = key.partition(".")
        if section not in full or (name and name not in full[section]):
            raise KeyError(f"unknown param key '{key}'")
        if name:
            out.setdefault(section, {})[name] = copy.deepcopy(full[section][name])
        else:
            out[section] = copy.deepcopy(full[section])
    return out


def restrict(cfg: SIDNConfig, keys: Iterable[str]) -> SIDNConfig:
    """A config equal to ``cfg`` on ``keys`` and to the defaults everywhere else."""
    return SIDNConfig.from_dict(_merge(SIDNConfig().to_dict(), select(cfg, keys)), source="restrict")


def load_stage_config(keys: Iterable[str], path: str | Path = PARAMS_FILE) -> SIDNConfig:
    """What a DVC stage's ``main()`` uses: only its declared keys of ``params.yaml``."""
    return restrict(load_params(path), keys)


def params_hash(cfg: SIDNConfig, keys: Iterable[str]) -> str:
    blob = json.dumps(select(cfg, keys), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.params", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("profile-args", help="print a profile as `-S key=value` arguments for dvc exp run")
    p.add_argument("profile")
    p.add_argument("--params", default=str(PARAMS_FILE))
    s = sub.add_parser("show", help="print the resolved config (profile and overrides applied)")
    s.add_argument("--params", default=str(PARAMS_FILE))
    s.add_argument("--profile")
    s.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        if args.cmd == "profile-args":
            print(" ".join(f"-S {item}" for item in profile_overrides(args.params, args.profile)))
        else:
            cfg = load_params(args.params, args.profile, args.overrides)
            print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
