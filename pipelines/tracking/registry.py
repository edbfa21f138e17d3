"""MLflow model registry: challenger registration, the promotion gate, approval, rollback, listing.

Every registered model is ``<register.model_name_prefix><category>`` (``sidn-carpet``). Only
aliases are used (registry stages are deprecated in MLflow):

* ``challenger`` -- the newest registered version (:func:`register_challenger`, called by the
  pipeline's ``register`` stage after each run);
* ``champion`` -- the version that serves (``models:/sidn-carpet@champion``); it moves only
  through :func:`promote`. On the project's MLflow server (``make up``, ``infra/stack.py``) the
  server itself refuses (HTTP 403) a ``champion`` change by anyone but a release manager
  (MLflow basic-auth + ``infra/mlflow_release_guard.py``); this module's gate is the policy, the
  server is the lock.

Each version carries, as tags, its key metrics and the figures people approve on, measured on
the test split at the threshold the model ships with (``operating_point`` of
``eval/metrics.json``): ``catch_rate`` (share of defective images flagged), ``false_alarm_rate``
on good images with its 95 % interval, ``pixel_precision`` / ``pixel_recall`` / ``pixel_iou``,
their counts, and the same per defect type (tag ``per_defect``, JSON).

Promotion (``sidn promote --category C``):

1. :func:`compare` puts challenger and champion side by side on the **same evaluation data**.
   Each version carries the ``data_version`` tag of the data it was evaluated on (DVC's md5 of
   ``<data.root>/<category>``, the value ``dvc.lock`` records for it; one definition for the DVC
   and the Prefect paths, see :func:`pipelines.tracking.runs.data_version`). If the champion's differs from
   the challenger's (or either is ``unknown``), the champion's bundle is downloaded and
   re-evaluated with ``evaluate_fn(bundle_path) -> metrics`` (``sidn promote`` passes
   :func:`sidn.jobs.evaluate_category` on the current data); without ``evaluate_fn`` the gate
   fails with "not compared on the same data".
2. The gate (:class:`sidn.config.RegisterConfig`, ``register:`` in ``params.yaml``):

   * **absolute floors**, on every promotion (the first one and rollbacks included):
     ``floor_pixel_auroc`` (pixel AUROC >= ``min_pixel_auroc``), ``floor_catch_rate`` (catch
     rate >= ``min_catch_rate``) and ``floor_false_alarm_rate`` (false-alarm rate on good test
     images <= ``max_false_alarm_rate``). A version without figures at the threshold fails them;
   * ``data_validation``: the challenger's data passed validation (tag ``data_validation``);
   * ``image_far``: its calibrated image false-alarm rate on held-out good images
     <= ``max_image_far``;
   * ``pixel_auroc`` / ``aupro``: challenger >= champion + ``min_pixel_auroc_delta`` /
     ``min_aupro_delta`` (the deltas are negative tolerances);
   * ``same_evaluation_data`` (see 1) and ``current_data`` (the challenger was evaluated on the
     data there is now, :func:`pipelines.tracking.runs.data_version`, when that is known).

   **First champion:** with no champion yet, the absolute checks apply (floors, data
   validation, false-alarm rates): there is nothing to compare with.
3. Without approval a passing gate records a **pending request** on the challenger version
   (tags ``promotion_request=pending``, ``requested_at``, ``comparison``) and nothing moves.
   With ``approve=True, by=NAME`` and a passing gate ``champion`` moves to the challenger and the
   version gets ``promotion_request=approved``, ``approved_by``, ``approved_at``,
   ``comparison``, ``previous_champion`` (and ``moved_by_account``: the MLflow user, when the
   client authenticates). A failing gate is a refusal (tags ``promotion_request=refused``,
   ``comparison``), never a promotion, approved or not.
4. Rollback: ``promote(category, to_version=V, by=NAME)`` moves ``champion`` back to ``V``,
   only if ``V`` was champion before (``champion_history``) and still passes the absolute
   floors; ``by`` is required. Tags ``rolled_back_at``, ``rolled_back_by``,
   ``rolled_back_from`` on ``V``.

Every champion change is also appended to the registered model's tag ``champion_history``.

Over 400 lines: registration, the gate, promotion and the listing share the view of a version
(:class:`Side`) and the formatting of the figures at the threshold; split, those shared pieces
would need a third module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import pandas as pd

from pipelines.tracking.runs import OPERATING_POINT_METRICS, finite_or_none, operating_point_metrics
from sidn.config import RegisterConfig, SIDNConfig

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHALLENGER = "challenger"
CHAMPION = "champion"
KEY_METRICS = ("pixel_auroc", "aupro", "image_auroc", "image_far", "threshold")
#: figures at the shipped threshold (test split), see :func:`pipelines.tracking.runs.operating_point_metrics`
OP_METRICS = OPERATING_POINT_METRICS
VERSION_METRICS = KEY_METRICS + OP_METRICS
#: per defect type: the threshold-free pixel AUROC plus the figures at the threshold
DEFECT_METRICS = ("pixel_auroc", *OP_METRICS)
PROVENANCE_TAGS = ("run_id", "data_version", "data_validation", "git_commit", "dataset")
_RUN_METRIC_PREFIXES = ("train/", "val/")


class RegistryError(RuntimeError):
    """A registry operation cannot be done (no challenger, unknown version, missing approver...)."""


def model_name(category: str, cfg: SIDNConfig | None = None) -> str:
    prefix = (cfg.register if cfg else RegisterConfig()).model_name_prefix
    return f"{prefix}{category}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _client(client: "MlflowClient | None") -> "MlflowClient":
    if client is not None:
        return client
    from pipelines.tracking.runs import get_client

    return get_client()


def _account() -> str | None:
    """The MLflow user this client authenticates as (``MLFLOW_TRACKING_USERNAME``), if any."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or None


def per_defect_from_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{"cut/catch_rate": ..}`` run metrics -> ``{"cut": {"catch_rate": ..}}`` (:data:`DEFECT_METRICS`)."""
    out: dict[str, dict[str, float | None]] = {}
    for key, value in metrics.items():
        defect, sep, name = key.rpartition("/")
        if sep and defect and name in DEFECT_METRICS and not key.startswith(_RUN_METRIC_PREFIXES):
            out.setdefault(defect, {})[name] = finite_or_none(value)
    return {d: {k: v.get(k) for k in DEFECT_METRICS} for d, v in sorted(out.items())}


def _per_defect_tag(raw: str | None) -> dict[str, dict[str, float | None]]:
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(d): {k: finite_or_none((v or {}).get(k)) for k in DEFECT_METRICS}
            for d, v in sorted(data.items()) if isinstance(v, dict)}


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


def register_challenger(run_id: str, category: str, cfg: SIDNConfig | None = None,
                        client: "MlflowClient | None" = None) -> int:
    """Register the MLflow model of run ``run_id`` as a new version with alias ``challenger``.

    The version is tagged with the run's key metrics (``pixel_auroc``, ``aupro``,
    ``image_auroc``, ``image_far``, ``threshold``), its figures at the calibrated threshold
    (:data:`OP_METRICS`; per defect type as the JSON tag ``per_defect``) and provenance
    (``run_id``, ``data_version``, ``data_validation``, ``git_commit``, ``dataset``). Returns
    the version number.
    """
    import mlflow

    client = _client(client)
    name = model_name(category, cfg)
    run = client.get_run(run_id)
    model_uri = run.data.tags.get("model_uri") or f"runs:/{run_id}/model"
    try:
        client.get_registered_model(name)
    except Exception:
        try:
            client.create_registered_model(
                name, description=f"SIDN texture-defect segmentation for '{category}' (aliases: challenger, champion)",
                tags={"category": category},
            )
        except Exception:  # created concurrently
            client.get_registered_model(name)
    tags = {k: str(run.data.tags[k]) for k in PROVENANCE_TAGS if k in run.data.tags}
    tags["run_id"] = run_id
    for key in VERSION_METRICS:
        value = finite_or_none(run.data.metrics.get(key))
        if value is not None:
            tags[key] = repr(value)
    per_defect = per_defect_from_metrics(run.data.metrics)
    if per_defect:
        tags["per_defect"] = json.dumps(per_defect, sort_keys=True)
    mlflow.set_tracking_uri(client.tracking_uri)  # mlflow.register_model uses the global URI
    mv = mlflow.register_model(model_uri, name, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, str(mv.version))
    return int(mv.version)


# ---------------------------------------------------------------------------------------------
# Comparison + gate
# ---------------------------------------------------------------------------------------------


@dataclass
class Side:
    """One model version in a comparison."""

    version: int
    run_id: str
    data_version: str
    data_validation: str
    metrics: dict[str, float | None]
    metrics_source: str = "logged"  # "logged" or "re-evaluated on data <version>"
    per_defect: dict[str, dict[str, float | None]] = field(default_factory=dict)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _fmt(value: float | None, signed: bool = False, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _count(value: float | None) -> str:
    return "?" if value is None else str(int(value))


def catch_text(m: dict[str, float | None]) -> str:
    """``0.950 (57/60)``: catch rate at the threshold with its counts."""
    if m.get("catch_rate") is None:
        return "-"
    return f"{m['catch_rate']:.3f} ({_count(m.get('caught'))}/{_count(m.get('n_defective'))})"


def false_alarm_text(m: dict[str, float | None], interval: bool = True) -> str:
    """``0.050 (2/40) [0.006, 0.169]``: false-alarm rate on good test images, counts, 95 % interval."""
    if m.get("false_alarm_rate") is None:
        return "-"
    text = f"{m['false_alarm_rate']:.3f} ({_count(m.get('false_alarms'))}/{_count(m.get('n_good_test'))})"
    lo, hi = m.get("false_alarm_ci95_low"), m.get("false_alarm_ci95_high")
    if interval and lo is not None and hi is not None:
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def floor_checks(side: Side, gate: RegisterConfig) -> list[Check]:
    """The absolute floors of ``gate`` on one version (every promotion, the first and rollbacks too)."""
    m = side.metrics
    auroc, catch, far = m.get("pixel_auroc"), m.get("catch_rate"), m.get("false_alarm_rate")
    missing = " (no figures at the calibrated threshold: evaluate the calibrated model and register it again)"
    return [
        Check("floor_pixel_auroc", auroc is not None and auroc >= gate.min_pixel_auroc,
              f"pixel AUROC {_fmt(auroc)} >= min_pixel_auroc {gate.min_pixel_auroc}"),
        Check("floor_catch_rate", catch is not None and catch >= gate.min_catch_rate,
              f"catch rate {catch_text(m)} >= min_catch_rate {gate.min_catch_rate}" + ("" if catch is not None else missing)),
        Check("floor_false_alarm_rate", far is not None and far <= gate.max_false_alarm_rate,
              f"false-alarm rate on good test images {false_alarm_text(m)} <= max_false_alarm_rate "
              f"{gate.max_false_alarm_rate}" + ("" if far is not None else missing)),
    ]


#: rows of the comparison at the threshold: (label, text of one side, metric for the delta)
_OP_ROWS: tuple[tuple[str, Callable[[dict], str], str | None], ...] = (
    ("catch rate", catch_text, "catch_rate"),
    ("false-alarm rate", lambda m: false_alarm_text(m, interval=False), "false_alarm_rate"),
    ("  95% interval", lambda m: "-" if m.get("false_alarm_ci95_low") is None else
     f"[{m['false_alarm_ci95_low']:.3f}, {m['false_alarm_ci95_high']:.3f}]", None),
    ("pixel precision", lambda m: _fmt(m.get("pixel_precision")), "pixel_precision"),
    ("pixel recall", lambda m: _fmt(m.get("pixel_recall")), "pixel_recall"),
    ("pixel IoU", lambda m: _fmt(m.get("pixel_iou")), "pixel_iou"),
)


def defect_rows(sides: Sequence[tuple[str, Side]]) -> list[str]:
    """Per defect type at the threshold, one line per (defect, side): catch, false alarms, pixels."""
    defects = sorted({d for _, side in sides for d in side.per_defect})
    if not defects:
        return []
    width = max(12, *(len(d) + 2 for d in defects))
    lines = [f"    {'defect':<{width}}{'':<13}{'pixel AUROC':>12}{'catch':>16}{'false alarms':>24}"
             f"{'px prec':>9}{'px rec':>9}{'px IoU':>9}"]
    for defect in defects:
        for i, (label, side) in enumerate(sides):
            m = side.per_defect.get(defect)
            row = f"    {defect if i == 0 else '':<{width}}{label:<13}"
            if m is None:
                lines.append(row + f"{'(no such defect type)':>12}")
                continue
            lines.append(row + f"{_fmt(m.get('pixel_auroc')):>12}{catch_text(m):>16}"
                         f"{false_alarm_text(m):>24}{_fmt(m.get('pixel_precision'), digits=3):>9}"
                         f"{_fmt(m.get('pixel_recall'), digits=3):>9}{_fmt(m.get('pixel_iou'), digits=3):>9}")
    return lines


@dataclass
class Comparison:
    """Challenger vs champion and the gate's verdict (``passed``)."""

    model: str
    challenger: Side
    champion: Side | None
    checks: list[Check] = field(default_factory=list)
    challenger_label: str = "challenger"

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def table(self) -> str:
        """Readable comparison: metrics and the figures at the threshold side by side (per
        category, then per defect type), then one line per gate check."""
        champ, label = self.champion, self.challenger_label
        lines = [f"{self.model}: {label} v{self.challenger.version} vs "
                 + (f"champion v{champ.version}" if champ else "no champion yet (absolute checks only)")]
        lines.append(f"  {'metric':<20}{label:>22}" + (f"{'champion':>22}{'delta':>10}" if champ else ""))
        for key in KEY_METRICS:
            a = self.challenger.metrics.get(key)
            row = f"  {key:<20}{_fmt(a):>22}"
            if champ:
                b = champ.metrics.get(key)
                row += f"{_fmt(b):>22}{_fmt(a - b if a is not None and b is not None else None, signed=True):>10}"
            lines.append(row)
        lines.append("  at the calibrated threshold (test split):")
        for name, text, key in _OP_ROWS:
            row = f"  {name:<20}{text(self.challenger.metrics):>22}"
            if champ:
                a = self.challenger.metrics.get(key) if key else None
                b = champ.metrics.get(key) if key else None
                delta = _fmt(a - b, signed=True, digits=3) if a is not None and b is not None else ""
                row += f"{text(champ.metrics):>22}{delta:>10}"
            lines.append(row)
        sides = [(label, self.challenger)] + ([("champion", champ)] if champ else [])
        per_defect = defect_rows(sides)
        if per_defect:
            lines.append("  per defect type (good test images count as false alarms for every type):")
            lines += per_defect
        lines.append(f"  data version  {self.challenger.data_version}"
                     + (f" / {champ.data_version} (champion metrics: {champ.metrics_source})" if champ else ""))
        for c in self.checks:
            lines.append(f"  [{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        lines.append(f"  gate: {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def _side(client: "MlflowClient", mv: "ModelVersion") -> Side:
    tags = dict(mv.tags or {})
    metrics: dict[str, float | None] = {k: finite_or_none(tags.get(k)) for k in VERSION_METRICS}
    per_defect = _per_defect_tag(tags.get("per_defect"))
    run_id = tags.get("run_id") or mv.run_id or ""
    if run_id and (any(v is None for v in metrics.values()) or not per_defect):
        try:  # fall back to the run's metrics
            run = client.get_run(run_id)
            for k in VERSION_METRICS:
                if metrics[k] is None:
                    metrics[k] = finite_or_none(run.data.metrics.get(k))
            per_defect = per_defect or per_defect_from_metrics(run.data.metrics)
            tags = {**run.data.tags, **tags}
        except Exception:
            pass
    return Side(version=int(mv.version), run_id=run_id, data_version=tags.get("data_version", "unknown"),
                data_validation=tags.get("data_validation", "missing"), metrics=metrics, per_defect=per_defect)


def _alias_version(client: "MlflowClient", name: str, alias: str) -> "ModelVersion | None":
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:
        return None


def download_bundle(name: str, version: int, dst: Path, client: "MlflowClient | None" = None) -> Path:
    """Download version ``version`` of model ``name`` and return the path of its ``model.pt`` bundle."""
    import mlflow

    client = _client(client)
    # the version's storage URI from this client's registry: a "models:/" URI would be resolved
    # through the process-wide default registry instead
    source = client.get_model_version_download_uri(name, str(version))
    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=str(dst), tracking_uri=client.tracking_uri
    ))
    found = sorted(local.glob("artifacts/*.pt")) or sorted(local.rglob("*.pt"))
    if not found:
        raise RegistryError(f"models:/{name}/{version}: no .pt bundle among the model's artifacts ({local})")
    return found[0]


def _apply_fresh(side: Side, fresh: dict[str, Any], data_version: str) -> None:
    """Replace ``side``'s evaluation figures with a re-evaluation (``sidn.jobs.evaluate_category``'s dict)."""
    for key in ("pixel_auroc", "aupro", "image_auroc"):
        side.metrics[key] = finite_or_none(fresh.get(key))
    side.metrics.update(operating_point_metrics(fresh.get("operating_point")))
    side.per_defect = {
        str(d): {"pixel_auroc": finite_or_none((v or {}).get("pixel_auroc")),
                 **operating_point_metrics((v or {}).get("operating_point"))}
        for d, v in sorted((fresh.get("per_defect") or {}).items())
    }
    side.metrics_source = f"re-evaluated on data {data_version}"


def compare(
    category: str,
    cfg: SIDNConfig | None = None,
    evaluate_fn: Callable[[Path], dict[str, Any]] | None = None,
    client: "MlflowClient | None" = None,
    current_data_version: str | None = None,
    challenger_version: int | None = None,
) -> Comparison:
    """Challenger (alias, or ``challenger_version``) vs champion under the gate of ``cfg.register``.

    ``evaluate_fn(bundle_path) -> {"pixel_auroc", "aupro", "operating_point", ...}`` re-evaluates
    the champion when its data version differs from the challenger's. ``current_data_version``
    (:func:`pipelines.tracking.runs.data_version` of the data now) adds the check that the challenger was evaluated on the current data
    (skipped if ``None`` or ``unknown``).
    """
    client = _client(client)
    gate = (cfg or SIDNConfig()).register
    name = model_name(category, cfg)
    if challenger_version is not None:
        chal_mv = client.get_model_version(name, str(challenger_version))
    else:
        chal_mv = _alias_version(client, name, CHALLENGER)
        if chal_mv is None:
            raise RegistryError(f"{name}: no version has the alias '{CHALLENGER}' (run the pipeline's register stage)")
    champ_mv = _alias_version(client, name, CHAMPION)
    chal = _side(client, chal_mv)
    champ = _side(client, champ_mv) if champ_mv is not None else None
    comp = Comparison(model=name, challenger=chal, champion=champ)
    checks = comp.checks

    if champ is not None and champ.version == chal.version:
        checks.append(Check("not_already_champion", False, f"v{chal.version} is already the champion"))

    checks += floor_checks(chal, gate)
    checks.append(Check("data_validation", chal.data_validation == "passed",
                        f"challenger data validation: {chal.data_validation}"))
    far = chal.metrics.get("image_far")
    checks.append(Check(
        "image_far", far is not None and far <= gate.max_image_far,
        f"calibrated image false-alarm rate {_fmt(far)} <= max_image_far {gate.max_image_far}",
    ))
    for key in ("pixel_auroc", "aupro"):
        if chal.metrics.get(key) is None:
            checks.append(Check(key, False, f"challenger has no {key}"))
    if current_data_version and current_data_version != "unknown":
        checks.append(Check(
            "current_data", chal.data_version == current_data_version,
            f"challenger evaluated on data {chal.data_version}; the data now is {current_data_version}",
        ))

    if champ is not None and champ.version != chal.version:
        same = chal.data_version == champ.data_version and chal.data_version != "unknown"
        if not same and evaluate_fn is not None:
            with tempfile.TemporaryDirectory(prefix="sidn-champion-") as tmp:
                bundle = download_bundle(name, champ.version, Path(tmp), client)
                fresh = evaluate_fn(bundle)
            _apply_fresh(champ, fresh, chal.data_version)
            same = True
        checks.append(Check(
            "same_evaluation_data", same,
            f"both on data {chal.data_version}" + (f" (champion {champ.metrics_source})" if same else
                                                   f"; champion was evaluated on {champ.data_version} and cannot be "
                                                   "re-evaluated here (no evaluate_fn)"),
        ))
        for key, delta in (("pixel_auroc", gate.min_pixel_auroc_delta), ("aupro", gate.min_aupro_delta)):
            a, b = chal.metrics.get(key), champ.metrics.get(key)
            if a is None:
                continue  # reported above
            if b is None:
                checks.append(Check(key, True, f"champion has no {key}; not compared"))
                continue
            checks.append(Check(key, a >= b + delta,
                                f"challenger {a:.4f} >= champion {b:.4f} {delta:+g} (= {b + delta:.4f})"))
    return comp


# ---------------------------------------------------------------------------------------------
# Promotion, approval, rollback
# ---------------------------------------------------------------------------------------------


@dataclass
class PromotionResult:
    """``status``: ``pending`` | ``promoted`` | ``refused`` | ``rolled_back`` | ``unchanged``."""

    status: str
    model: str
    version: int | None
    message: str
    comparison: Comparison | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "refused" else 0


def champion_history(client: "MlflowClient", name: str) -> list[dict[str, Any]]:
    """The registered model's ``champion_history`` tag (oldest first); [] if absent or unreadable."""
    rm = client.get_registered_model(name)
    try:
        history = json.loads((rm.tags or {}).get("champion_history", "[]"))
    except ValueError:
        return []
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


def former_champions(client: "MlflowClient", name: str) -> set[int]:
    """Versions that held ``champion`` (``champion_history``, and the current champion)."""
    out: set[int] = set()
    for entry in champion_history(client, name):
        for key in ("version", "from"):
            try:
                out.add(int(entry[key]))
            except (KeyError, TypeError, ValueError):  # absent, or null for the first champion
                pass
    current = _alias_version(client, name, CHAMPION)
    if current is not None:
        out.add(int(current.version))
    return out


def _append_history(client: "MlflowClient", name: str, entry: dict[str, Any]) -> None:
    history = (champion_history(client, name) + [entry])[-50:]
    client.set_registered_model_tag(name, "champion_history", json.dumps(history))


def _set_tags(client: "MlflowClient", name: str, version: int, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


def rollback(category: str, to_version: int, by: str | None = None, cfg: SIDNConfig | None = None,
             client: "MlflowClient | None" = None) -> PromotionResult:
    """Move ``champion`` back to ``to_version``: a former champion that still passes the floors.

    ``by`` (who decides) is required. Raises :class:`RegistryError` if ``by`` is missing, the
    version does not exist or was never champion (promote it through the gate instead). Returns
    ``refused`` (nothing moves) if it falls below an absolute floor of ``cfg.register``,
    ``unchanged`` if it is the champion already. Recorded on that version (``rolled_back_*``
    tags) and in ``champion_history``.
    """
    if not (by and by.strip()):
        raise RegistryError("a rollback must name who decides it: --to VERSION --by NAME")
    by = by.strip()
    client = _client(client)
    gate = (cfg or SIDNConfig()).register
    name = model_name(category, cfg)
    try:
        target_mv = client.get_model_version(name, str(int(to_version)))
    except Exception as exc:
        raise RegistryError(f"{name}: there is no version {to_version} to roll back to") from exc
    current = _alias_version(client, name, CHAMPION)
    if current is not None and int(current.version) == int(to_version):
        return PromotionResult("unchanged", name, int(to_version), f"{name} v{to_version} is already the champion")
    former = former_champions(client, name)
    if int(to_version) not in former:
        raise RegistryError(
            f"{name}: v{to_version} was never the champion (former champions: "
            f"{', '.join(f'v{v}' for v in sorted(former)) or 'none'}); --to only rolls back to a former "
            f"champion. A new version goes through the gate: sidn promote --category {category} --approve --by NAME")
    target = _side(client, target_mv)
    comp = Comparison(model=name, challenger=target, champion=_side(client, current) if current is not None else None,
                      challenger_label="rollback to")
    comp.checks.append(Check("former_champion", True, f"v{to_version} was champion before"))
    comp.checks += floor_checks(target, gate)
    if not comp.passed:
        why = "; ".join(f"{c.name}: {c.detail}" for c in comp.failures)
        return PromotionResult("refused", name, int(to_version),
                               f"{name}: NOT rolled back to v{to_version}: below an absolute floor ({why})", comp)
    now = _now()
    previous = int(current.version) if current is not None else None
    client.set_registered_model_alias(name, CHAMPION, str(int(to_version)))
    tags = {"rolled_back_at": now, "rolled_back_by": by, "rolled_back_from": str(previous)}
    account = _account()
    if account:
        tags["moved_by_account"] = account
    _set_tags(client, name, int(to_version), tags)
    _append_history(client, name, {"kind": "rollback", "version": int(to_version), "from": previous, "at": now,
                                   "by": by, "account": _account()})
    return PromotionResult("rolled_back", name, int(to_version),
                           f"{name}: champion rolled back from v{previous} to v{to_version} (by {by})", comp)


def promote(
    category: str,
    approve: bool = False,
    by: str | None = None,
    to_version: int | None = None,
    cfg: SIDNConfig | None = None,
    evaluate_fn: Callable[[Path], dict[str, Any]] | None = None,
    client: "MlflowClient | None" = None,
    current_data_version: str | None = None,
) -> PromotionResult:
    """Gate + approval for ``challenger -> champion``, or a rollback with ``to_version``.

    * ``to_version``: :func:`rollback` (a former champion only, floors checked, ``by`` required).
    * gate fails: ``refused`` (recorded on the challenger), champion untouched.
    * gate passes, ``approve`` false: ``pending`` request recorded on the challenger.
    * gate passes, ``approve`` and ``by``: ``champion`` moves; approval recorded.
    ``approve`` without ``by`` raises :class:`RegistryError` (an approval names a person).
    """
    if to_version is not None:
        return rollback(category, to_version, by=by, cfg=cfg, client=client)
    if approve and not (by and by.strip()):
        raise RegistryError("an approval must name the approver: --approve --by NAME")
    client = _client(client)
    comp = compare(category, cfg, evaluate_fn=evaluate_fn, client=client, current_data_version=current_data_version)
    name, version = comp.model, comp.challenger.version
    now = _now()
    record = comp.to_json()
    if not comp.passed:
        _set_tags(client, name, version, {"promotion_request": "refused", "refused_at": now, "comparison": record})
        why = "; ".join(f"{c.name}: {c.detail}" for c in comp.failures)
        return PromotionResult("refused", name, version, f"{name} v{version} NOT promoted: gate failed ({why})", comp)
    if not approve:
        _set_tags(client, name, version, {"promotion_request": "pending", "requested_at": now, "comparison": record})
        return PromotionResult(
            "pending", name, version,
            f"{name} v{version} passed the gate; promotion request recorded as pending. Approve with: "
            f"sidn promote --category {category} --approve --by NAME", comp)
    assert by is not None
    previous = comp.champion.version if comp.champion else None
    client.set_registered_model_alias(name, CHAMPION, str(version))
    tags = {"promotion_request": "approved", "approved_by": by.strip(), "approved_at": now, "comparison": record,
            "previous_champion": str(previous)}
    account = _account()
    if account:
        tags["moved_by_account"] = account
    _set_tags(client, name, version, tags)
    _append_history(client, name, {"kind": "promotion", "version": version, "from": previous, "at": now,
                                   "by": by.strip(), "account": _account()})
    return PromotionResult("promoted", name, version,
                           f"{name} v{version} is now the champion (approved by {by.strip()}; was v{previous})", comp)


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------

LIST_COLUMNS = ["model", "version", "aliases", "created", *KEY_METRICS, *OP_METRICS, "data_version",
                "data_validation", "promotion_request", "approved_by", "run_id", "per_defect"]


def list_registry(cfg: SIDNConfig | None = None, category: str | None = None,
                  client: "MlflowClient | None" = None) -> pd.DataFrame:
    """One row per model version of every ``sidn-*`` model (or one category): aliases, key metrics,
    the figures at the calibrated threshold, and ``per_defect`` (a dict per defect type)."""
    client = _client(client)
    prefix = (cfg.register if cfg else RegisterConfig()).model_name_prefix
    names = [model_name(category, cfg)] if category else sorted(
        m.name for m in client.search_registered_models(filter_string=f"name LIKE '{prefix}%'")
    )
    rows = []
    for name in names:
        try:
            versions = client.search_model_versions(f"name='{name}'")
            aliases_of: dict[str, list[str]] = {}
            for alias, version in (client.get_registered_model(name).aliases or {}).items():
                aliases_of.setdefault(str(version), []).append(alias)  # search results carry no aliases
        except Exception:
            continue
        for mv in sorted(versions, key=lambda v: int(v.version)):
            tags = dict(mv.tags or {})
            created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc) if mv.creation_timestamp else None
            rows.append({
                "model": name, "version": int(mv.version), "aliases": ",".join(sorted(aliases_of.get(str(mv.version), []))),
                "created": created.strftime("%Y-%m-%d %H:%M") if created else "",
                **{k: finite_or_none(tags.get(k)) for k in VERSION_METRICS},
                "data_version": tags.get("data_version", ""), "data_validation": tags.get("data_validation", ""),
                "promotion_request": tags.get("promotion_request", ""), "approved_by": tags.get("approved_by", ""),
                "run_id": tags.get("run_id") or mv.run_id or "", "per_defect": _per_defect_tag(tags.get("per_defect")),
            })
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def to_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """:func:`list_registry` rows as JSON-ready dicts (NaN -> None)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict(orient="records")]


def format_registry(df: pd.DataFrame) -> str:
    """Fixed-width table for the terminal: metrics with 4 decimals, then at the calibrated
    threshold the catch rate (caught/defective), the false-alarm rate on good test images
    (alarms/good) with its 95 % interval, and pixel precision / recall / IoU; run ids shortened."""
    if df.empty:
        return "no registered sidn models"
    rows = []
    for r in to_records(df):
        row = {k: r[k] for k in ("model", "version", "aliases", "created")}
        row.update({k: _fmt(r[k]) for k in KEY_METRICS})
        row["catch"] = catch_text(r)
        row["false alarms [95% CI]"] = false_alarm_text(r)
        row.update({"px_prec": _fmt(r["pixel_precision"], digits=3), "px_rec": _fmt(r["pixel_recall"], digits=3),
                    "px_iou": _fmt(r["pixel_iou"], digits=3)})
        row.update({k: r[k] for k in ("data_version", "data_validation", "promotion_request", "approved_by")})
        row["run_id"] = str(r["run_id"])[:8]
        rows.append(row)
    return pd.DataFrame(rows).to_string(index=False)


def format_defects(df: pd.DataFrame, only_aliased: bool = True) -> str:
    """Per defect type at the calibrated threshold, for each version (with an alias, by default)."""
    lines = []
    for r in to_records(df):
        if (only_aliased and not r["aliases"]) or not r["per_defect"]:
            continue
        label = f"{r['model']} v{r['version']}" + (f" ({r['aliases']})" if r["aliases"] else "")
        side = Side(version=int(r["version"]), run_id="", data_version="", data_validation="", metrics={},
                    per_defect=r["per_defect"])
        lines.append(label)
        lines += defect_rows([("", side)])
    return "\n".join(lines)


def champion_figures(categories: Iterable[str], cfg: SIDNConfig | None = None,
                     client: "MlflowClient | None" = None) -> dict[str, dict[str, Any]]:
    """The champion of each category as ``eval/metrics.json`` would hold it (for the report).

    ``{category: {"version", "data_version", "pixel_auroc", "aupro", "image_auroc",
    "operating_point": {...}, "per_defect": {defect: {"pixel_auroc", "operating_point"}}}}``;
    categories without a champion are left out.
    """
    client = _client(client)
    out: dict[str, dict[str, Any]] = {}
    for category in categories:
        mv = _alias_version(client, model_name(category, cfg), CHAMPION)
        if mv is None:
            continue
        side = _side(client, mv)
        out[category] = {
            "version": side.version, "data_version": side.data_version,
            **{k: side.metrics.get(k) for k in ("pixel_auroc", "aupro", "image_auroc")},
            "operating_point": operating_point_dict(side.metrics),
            "per_defect": {d: {"pixel_auroc": m.get("pixel_auroc"), "operating_point": operating_point_dict(m)}
                           for d, m in side.per_defect.items()},
        }
    return out


def operating_point_dict(m: dict[str, float | None]) -> dict[str, Any]:
    """Flat :data:`OP_METRICS` -> the ``operating_point`` shape of ``eval/metrics.json``."""
    if m.get("catch_rate") is None and m.get("false_alarm_rate") is None:
        return {}
    return {
        "catch_rate": m.get("catch_rate"), "caught": m.get("caught"), "n_defective": m.get("n_defective"),
        "false_alarm_rate": m.get("false_alarm_rate"),
        "false_alarm_ci95": [m.get("false_alarm_ci95_low"), m.get("false_alarm_ci95_high")],
        "false_alarms": m.get("false_alarms"), "n_good": m.get("n_good_test"),
        "pixel_precision": m.get("pixel_precision"), "pixel_recall": m.get("pixel_recall"),
        "pixel_iou": m.get("pixel_iou"),
    }


__all__ = [
    "CHALLENGER", "CHAMPION", "Comparison", "PromotionResult", "RegistryError", "champion_figures", "compare",
    "download_bundle", "floor_checks", "format_defects", "format_registry", "former_champions", "list_registry",
    "to_records",
    "model_name", "promote", "register_challenger", "rollback",
]
