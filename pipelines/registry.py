"""MLflow model registry: challenger registration, the promotion gate, approval, rollback, listing.

Every registered model is ``<register.model_name_prefix><category>`` (``sidn-carpet``). Only
aliases are used (registry stages are deprecated in MLflow):

* ``challenger`` -- the newest registered version (:func:`register_challenger`, called by the
  pipeline's ``register`` stage after each run);
* ``champion`` -- the version that serves (``models:/sidn-carpet@champion``); it moves only
  through :func:`promote`.

Promotion (``sidn promote --category C``):

1. :func:`compare` puts challenger and champion side by side on the **same evaluation data**.
   Each version carries the ``data_version`` tag of the data it was evaluated on (from
   ``dvc.lock``, see :func:`pipelines.tracking.data_version`). If the champion's differs from
   the challenger's (or either is ``unknown``), the champion's bundle is downloaded and
   re-evaluated with ``evaluate_fn(bundle_path) -> metrics`` (``sidn promote`` passes
   :func:`sidn.jobs.evaluate_category` on the current data); without ``evaluate_fn`` the gate
   fails with "not compared on the same data".
2. The gate (:class:`sidn.config.RegisterConfig`, ``register:`` in ``params.yaml``):

   * ``data_validation``: the challenger's data passed validation (tag ``data_validation``);
   * ``image_far``: its calibrated image false-alarm rate on held-out good images
     <= ``max_image_far``;
   * ``pixel_auroc`` / ``aupro``: challenger >= champion + ``min_pixel_auroc_delta`` /
     ``min_aupro_delta`` (the deltas are negative tolerances);
   * ``same_evaluation_data`` (see 1) and ``current_data`` (the challenger was evaluated on the
     data ``dvc.lock`` records now, when that is known).

   **First champion:** with no champion yet, only the absolute checks apply (data validation,
   false-alarm rate, and finite metrics): there is nothing to compare with.
3. Without approval a passing gate records a **pending request** on the challenger version
   (tags ``promotion_request=pending``, ``requested_at``, ``comparison``) and nothing moves.
   With ``approve=True, by=NAME`` and a passing gate ``champion`` moves to the challenger and the
   version gets ``promotion_request=approved``, ``approved_by``, ``approved_at``,
   ``comparison``, ``previous_champion``. A failing gate is a refusal (tags
   ``promotion_request=refused``, ``comparison``), never a promotion, approved or not.
4. Rollback: ``promote(category, to_version=V, by=NAME)`` moves ``champion`` to version ``V``
   (tags ``rolled_back_at``, ``rolled_back_by``, ``rolled_back_from`` on ``V``). No gate: V
   was a champion candidate before; this is the emergency exit.

Every champion change is also appended to the registered model's tag ``champion_history``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from pipelines.tracking import finite_or_none
from sidn.config import RegisterConfig, SIDNConfig

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHALLENGER = "challenger"
CHAMPION = "champion"
KEY_METRICS = ("pixel_auroc", "aupro", "image_auroc", "image_far", "threshold")
PROVENANCE_TAGS = ("run_id", "data_version", "data_validation", "git_commit", "dataset")


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
    from pipelines.tracking import get_client

    return get_client()


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


def register_challenger(run_id: str, category: str, cfg: SIDNConfig | None = None,
                        client: "MlflowClient | None" = None) -> int:
    """Register the MLflow model of run ``run_id`` as a new version with alias ``challenger``.

    The version is tagged with the run's key metrics (``pixel_auroc``, ``aupro``,
    ``image_auroc``, ``image_far``, ``threshold``) and provenance (``run_id``, ``data_version``,
    ``data_validation``, ``git_commit``, ``dataset``). Returns the version number.
    """
    if isinstance(run_id, SIDNConfig):  # (cfg, category, run_id) order, as pipelines.tracking
        run_id, cfg = cfg, run_id  # type: ignore[assignment]
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
    for key in KEY_METRICS:
        if key in run.data.metrics:
            tags[key] = repr(float(run.data.metrics[key]))
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


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Comparison:
    """Challenger vs champion and the gate's verdict (``passed``)."""

    model: str
    challenger: Side
    champion: Side | None
    checks: list[Check] = field(default_factory=list)

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
        """Readable comparison: metrics side by side, then one line per gate check."""
        champ = self.champion
        lines = [f"{self.model}: challenger v{self.challenger.version} vs "
                 + (f"champion v{champ.version}" if champ else "no champion yet (absolute checks only)")]
        head = f"  {'metric':<14}{'challenger':>12}" + (f"{'champion':>12}{'delta':>10}" if champ else "")
        lines.append(head)
        for key in KEY_METRICS:
            a = self.challenger.metrics.get(key)
            row = f"  {key:<14}{_fmt(a):>12}"
            if champ:
                b = champ.metrics.get(key)
                delta = (a - b) if a is not None and b is not None else None
                row += f"{_fmt(b):>12}{_fmt(delta, signed=True):>10}"
            lines.append(row)
        lines.append(f"  data version  {self.challenger.data_version}"
                     + (f" / {champ.data_version} (champion metrics: {champ.metrics_source})" if champ else ""))
        for c in self.checks:
            lines.append(f"  [{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        lines.append(f"  gate: {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _side(client: "MlflowClient", mv: "ModelVersion") -> Side:
    tags = dict(mv.tags or {})
    metrics: dict[str, float | None] = {k: finite_or_none(tags.get(k)) for k in KEY_METRICS}
    run_id = tags.get("run_id") or mv.run_id or ""
    if run_id and any(v is None for v in metrics.values()):
        try:  # fall back to the run's metrics
            run = client.get_run(run_id)
            for k in KEY_METRICS:
                if metrics[k] is None:
                    metrics[k] = finite_or_none(run.data.metrics.get(k))
            tags = {**run.data.tags, **tags}
        except Exception:
            pass
    return Side(version=int(mv.version), run_id=run_id, data_version=tags.get("data_version", "unknown"),
                data_validation=tags.get("data_validation", "missing"), metrics=metrics)


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


def compare(
    category: str,
    cfg: SIDNConfig | None = None,
    evaluate_fn: Callable[[Path], dict[str, Any]] | None = None,
    client: "MlflowClient | None" = None,
    current_data_version: str | None = None,
    challenger_version: int | None = None,
) -> Comparison:
    """Challenger (alias, or ``challenger_version``) vs champion under the gate of ``cfg.register``.

    ``evaluate_fn(bundle_path) -> {"pixel_auroc", "aupro", ...}`` re-evaluates the champion when
    its data version differs from the challenger's. ``current_data_version`` (from ``dvc.lock``
    now) adds the check that the challenger was evaluated on the current data (skipped if
    ``None`` or ``unknown``).
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
            f"challenger evaluated on data {chal.data_version}; dvc.lock now records {current_data_version}",
        ))

    if champ is not None and champ.version != chal.version:
        same = chal.data_version == champ.data_version and chal.data_version != "unknown"
        if not same and evaluate_fn is not None:
            with tempfile.TemporaryDirectory(prefix="sidn-champion-") as tmp:
                bundle = download_bundle(name, champ.version, Path(tmp), client)
                fresh = evaluate_fn(bundle)
            for key in ("pixel_auroc", "aupro", "image_auroc"):
                champ.metrics[key] = finite_or_none(fresh.get(key))
            champ.metrics_source = f"re-evaluated on data {chal.data_version}"
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


def _append_history(client: "MlflowClient", name: str, entry: dict[str, Any]) -> None:
    rm = client.get_registered_model(name)
    try:
        history = json.loads((rm.tags or {}).get("champion_history", "[]"))
    except ValueError:
        history = []
    history = (history + [entry])[-50:]
    client.set_registered_model_tag(name, "champion_history", json.dumps(history))


def _set_tags(client: "MlflowClient", name: str, version: int, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


def rollback(category: str, to_version: int, by: str | None = None, cfg: SIDNConfig | None = None,
             client: "MlflowClient | None" = None) -> PromotionResult:
    """Move ``champion`` to ``to_version`` (recorded on that version and in ``champion_history``)."""
    client = _client(client)
    name = model_name(category, cfg)
    try:
        client.get_model_version(name, str(int(to_version)))
    except Exception as exc:
        raise RegistryError(f"{name}: there is no version {to_version} to roll back to") from exc
    current = _alias_version(client, name, CHAMPION)
    if current is not None and int(current.version) == int(to_version):
        return PromotionResult("unchanged", name, int(to_version), f"{name} v{to_version} is already the champion")
    now = _now()
    previous = int(current.version) if current is not None else None
    client.set_registered_model_alias(name, CHAMPION, str(int(to_version)))
    _set_tags(client, name, int(to_version), {
        "rolled_back_at": now, "rolled_back_by": by or "unknown", "rolled_back_from": str(previous),
    })
    _append_history(client, name, {"kind": "rollback", "version": int(to_version), "from": previous, "at": now,
                                   "by": by or "unknown"})
    return PromotionResult("rolled_back", name, int(to_version),
                           f"{name}: champion rolled back from v{previous} to v{to_version}")


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

    * ``to_version``: :func:`rollback` (no gate).
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
    previous = comp.champion.version if comp.champion else None
    client.set_registered_model_alias(name, CHAMPION, str(version))
    _set_tags(client, name, version, {
        "promotion_request": "approved", "approved_by": by.strip(), "approved_at": now, "comparison": record,
        "previous_champion": str(previous),
    })
    _append_history(client, name, {"kind": "promotion", "version": version, "from": previous, "at": now,
                                   "by": by.strip()})
    return PromotionResult("promoted", name, version,
                           f"{name} v{version} is now the champion (approved by {by.strip()}; was v{previous})", comp)


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------

LIST_COLUMNS = ["model", "version", "aliases", "created", *KEY_METRICS, "data_version", "data_validation",
                "promotion_request", "approved_by", "run_id"]


def list_registry(cfg: SIDNConfig | None = None, category: str | None = None,
                  client: "MlflowClient | None" = None) -> pd.DataFrame:
    """One row per model version of every ``sidn-*`` model (or one category): aliases + key metrics."""
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
                **{k: finite_or_none(tags.get(k)) for k in KEY_METRICS},
                "data_version": tags.get("data_version", ""), "data_validation": tags.get("data_validation", ""),
                "promotion_request": tags.get("promotion_request", ""), "approved_by": tags.get("approved_by", ""),
                "run_id": tags.get("run_id") or mv.run_id or "",
            })
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def format_registry(df: pd.DataFrame) -> str:
    """Fixed-width table for the terminal (metrics with 4 decimals, run ids shortened)."""
    if df.empty:
        return "no registered sidn models"
    show = df.copy()
    for k in KEY_METRICS:
        show[k] = show[k].map(lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}")
    show["run_id"] = show["run_id"].str.slice(0, 8)
    return show.to_string(index=False)


__all__ = [
    "CHALLENGER", "CHAMPION", "Comparison", "PromotionResult", "RegistryError", "compare", "download_bundle",
    "format_registry", "list_registry", "model_name", "promote", "register_challenger", "rollback",
]
