"""Training loop for SIDN (paper Sec. III-E).

Each step (eq. 25, ``L = L_s + L_fd``):

1. sample ``batch_size`` defect-free training images ``I_p`` uniformly with replacement
   across steps (``rng.choice``, without replacement inside a batch when possible);
2. **augmentation (our choice, ``train.augment``; the paper has none):** ``dihedral`` gives
   each image one of the 8 dihedral transforms (90-degree rotation ``k in {0..3}`` times an
   optional horizontal flip; only flips for non-square images), ``flips`` only horizontal /
   vertical flips, ``none`` nothing. Rotations teach oriented textures (wood grain, grids)
   that rotated structure is normal, which is wrong where orientation matters;
3. the DGM (eq. 1) turns them into ``(I_n, I_m)``, using a random set of other training
   images as donors for the ``foreign_patch`` source;
4. forward (bf16 autocast where supported, :mod:`sidn.device`), loss in fp32
   (:class:`sidn.losses.SIDNLoss`, eq. 5, 8, 17-19, 25), Adam step (paper: lr 1e-4, batch 16)
   at the rate of ``train.schedule``: ``constant`` (the paper) or ``cosine`` (our choice for
   short budgets: linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``steps``).

Validation: a fixed DGM set built once from the held-out good images
(:func:`sidn.data.dgm.make_validation_set`, seed ``dgm.seed``) is scored every ``val_every``
steps and at the end: ``val_loss`` = L_s (eq. 5) and pixel AUROC of the fused map (eq. 26).
**Model selection (our choice): the lowest validation L_s** is kept as ``out_dir/model.pt``.
L_s is the segmentation objective itself, is smooth from step to step and does not saturate
the way AUROC on easy synthetic defects does; AUROC is logged alongside for inspection.

The loop is here; checkpoints and run files are :mod:`sidn.train_checkpoint`, validation
:mod:`sidn.train_validation`, clean stops :mod:`sidn.train_signals`, batch sampling and
augmentation :mod:`sidn.batches`, the allocator setting :mod:`sidn.heap`. Over 400 lines: one
concept, the loop and its run state (``_Run``, one method per step of the loop), and this docstring.

Outputs in ``out_dir`` (all written atomically): ``model.pt`` (best, :mod:`sidn.bundle`),
``checkpoint.pt`` (last state, for ``resume=True``), ``config.yaml`` (resolved config),
``history.csv`` (one row per step; ``val_*`` columns filled on validation steps).

Reproducibility: the model is initialised after ``torch.manual_seed(train.seed)``; all data
randomness (batch choice, augmentation, DGM) comes from one ``numpy.random.Generator``
seeded with ``train.seed``. Checkpoints store both RNG states, the optimiser state and the
history, so an interrupted run resumed with ``resume=True`` ends with exactly the weights of
an uninterrupted run (same device, thread count and amp setting).

Interrupts: SIGTERM and the first SIGINT (Ctrl-C) set a flag; the loop finishes the current
step, writes ``checkpoint.pt`` and raises :class:`TrainingInterrupted`. A second Ctrl-C, or a
KeyboardInterrupt raised elsewhere, still writes a consistent checkpoint of the last completed
step (unless it lands inside the optimiser update). A non-finite loss or gradient raises
:class:`TrainingDiverged` and leaves the last good ``checkpoint.pt`` untouched.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from sidn.batches import AUGMENTS, sample_batch
from sidn.bundle import save_bundle
from sidn.config import SIDNConfig
from sidn.cpu import cpu_info
from sidn.device import amp_enabled, autocast, select_device
from sidn.heap import reuse_heap
from sidn.io import atomic_write
from sidn.train_checkpoint import (CHECKPOINT_FILE, CHECKPOINT_FORMAT, CONFIG_FILE, HISTORY_COLUMNS, HISTORY_FILE,
                                   MODEL_FILE, check_resume_config, data_fingerprint, history_frame, load_checkpoint,
                                   remove_stale_temporaries, rng_state, set_rng_state, write_history)
from sidn.train_signals import StopFlag, UpdateGuard, signal_guard
from sidn.train_validation import evaluate_validation, to_fp32

log = logging.getLogger("sidn.train")

class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN/inf; the last good checkpoint was kept."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM / SIGINT / KeyboardInterrupt after writing a checkpoint."""

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``history`` has the columns of ``HISTORY_COLUMNS``."""

    best_step: int
    best_val_loss: float
    steps_done: int
    history: pd.DataFrame
    best_val_auroc: float = float("nan")
    stopped: str = "steps"  # "steps" (step budget reached) or "time" (max_minutes reached)
    out_dir: Path | None = None
    device: str = "cpu"
    amp: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, total: int, schedule: str, warmup: int) -> float:
    """Multiplier of ``train.lr`` for step ``step`` (0-based) of ``total``: 1, or warm-up + cosine."""
    if schedule == "constant":
        return 1.0
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def _check_images(name: str, arr: Any) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"train: {name} must be a numpy array [N, H, W], got {type(arr).__name__}")
    if arr.ndim != 3:
        raise ValueError(f"train: {name} must have shape [N, H, W], got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"train: {name} is empty")
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"train: {name} contains NaN or inf values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"train: {name} must be gray images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return arr


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _grad_norm(params: list[torch.nn.Parameter]) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if hasattr(torch.nn.utils, "get_total_norm"):
        return float(torch.nn.utils.get_total_norm(grads))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def _nanmean(t: torch.Tensor | None) -> float:
    if t is None:
        return float("nan")
    t = t.detach().float()
    t = t[torch.isfinite(t)]
    return float(t.mean()) if t.numel() else float("nan")


def _check_settings(tc: Any) -> None:
    if tc.augment not in AUGMENTS:
        raise ValueError(f"train.augment must be one of {', '.join(AUGMENTS)}, got {tc.augment!r}")
    if tc.schedule not in SCHEDULES:
        raise ValueError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {tc.schedule!r}")
    if tc.batch_size < 1 or tc.steps < 0 or tc.lr <= 0:
        raise ValueError(f"train: invalid settings batch_size={tc.batch_size}, steps={tc.steps}, lr={tc.lr}")
    if tc.crop_size < 0 or tc.crop_size % 16:
        raise ValueError(f"train: crop_size must be 0 (whole images) or a positive multiple of 16, got {tc.crop_size}")


class _Run:
    """One training run's state (model, optimiser, RNGs, history, best-so-far) and its steps.

    Built deterministically from ``train.seed``; :meth:`resume` replaces the state with a
    checkpoint's. Each method is one concern of the loop: a step, validation with model
    selection, a checkpoint, the bundle's metadata.
    """

    def __init__(self, cfg: SIDNConfig, train_images: np.ndarray, val_images: np.ndarray | None,
                 out_dir: Path) -> None:
        from sidn.data.dgm import DefectGenerator, make_validation_set
        from sidn.losses import SIDNLoss
        from sidn.model.sidn import SIDN

        self.cfg, self.tc, self.out_dir = cfg, cfg.train, out_dir
        self.ckpt_path, self.model_path = out_dir / CHECKPOINT_FILE, out_dir / MODEL_FILE
        self.history_path = out_dir / HISTORY_FILE
        self.images = train_images
        self.n_val = 0 if val_images is None else len(val_images)
        self.data_hash = data_fingerprint(train_images)
        if self.tc.num_threads and self.tc.num_threads > 0:
            torch.set_num_threads(int(self.tc.num_threads))
        self.device = select_device(self.tc.device)
        self.use_amp = amp_enabled(self.tc.amp, self.device)

        torch.manual_seed(self.tc.seed)
        self.rng = np.random.default_rng(self.tc.seed)
        self.model = SIDN(cfg.model).to(self.device)
        self.loss_fn = SIDNLoss(cfg.loss, cfg.model).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=self.tc.lr)
        self.dgm = DefectGenerator(cfg.dgm)

        self.history: dict[str, list] = {c: [] for c in HISTORY_COLUMNS}
        self.step = 0
        self.best_step, self.best_val_loss, self.best_val_auroc = -1, float("inf"), float("nan")
        self.elapsed_before = 0.0
        self.t0 = time.monotonic()
        self.pending_rng: tuple[torch.Tensor, str] | None = None  # RNG states at the start of an unfinished step
        self.val: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.n_val:
            v_img, v_mask = make_validation_set(val_images, cfg.dgm)
            self.val = tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1)
                             for a in (v_img, v_mask))

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t0)

    # -- checkpoints ----------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from ``checkpoint.pt``: same config keys and same training images required."""
        ckpt = load_checkpoint(self.ckpt_path)
        check_resume_config(self.ckpt_path, ckpt.get("config", {}), self.cfg)
        if ckpt.get("data_sha256", self.data_hash) != self.data_hash:
            raise ValueError(
                f"{self.ckpt_path}: cannot resume, the checkpoint was trained on other images (another dataset, "
                "category or holdout split); start a fresh run without --resume or point it at the original data"
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("loss"):
                self.loss_fn.load_state_dict(ckpt["loss"])
            torch.set_rng_state(ckpt["torch_rng"])
            if self.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)
            set_rng_state(self.rng, ckpt["numpy_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ValueError(f"{self.ckpt_path}: checkpoint does not match this model/optimizer: {exc}") from exc
        self.step = int(ckpt["step"])
        self.history = {c: list(ckpt["history"].get(c, [])) for c in HISTORY_COLUMNS}
        self.best_step = int(ckpt["best_step"])
        self.best_val_loss = float(ckpt["best_val_loss"])
        self.best_val_auroc = float(ckpt["best_val_auroc"])
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        log.info("resuming %s from step %d", self.ckpt_path, self.step)

    def write_checkpoint(self, rng_states: tuple[torch.Tensor, str] | None = None) -> None:
        """``checkpoint.pt`` + ``history.csv`` at the current step; ``rng_states`` rewinds the RNGs
        to the start of a step that was interrupted."""
        torch_rng, np_rng = rng_states if rng_states is not None else (torch.get_rng_state(), rng_state(self.rng))
        payload = {
            "format": CHECKPOINT_FORMAT,
            "step": int(self.step),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "torch_rng": torch_rng,
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "numpy_rng": np_rng,
            "history": {c: list(v) for c, v in self.history.items()},
            "best_step": int(self.best_step),
            "best_val_loss": float(self.best_val_loss),
            "best_val_auroc": float(self.best_val_auroc),
            "elapsed_s": float(self.elapsed()),
            "config": self.cfg.to_dict(),
            "data_sha256": self.data_hash,
        }
        atomic_write(self.ckpt_path, lambda tmp: torch.save(payload, tmp))
        write_history(self.history_path, self.history)

    def bundle_extra(self, val_loss: float, val_auroc: float) -> dict[str, Any]:
        import sidn

        return {
            "step": int(self.step),
            "val_loss": float(val_loss),
            "val_pixel_auroc": float(val_auroc),
            "image_size": int(self.images.shape[1]),
            "train_images": int(self.images.shape[0]),
            "val_images": int(self.n_val),
            "device": str(self.device),
            "amp": bool(self.use_amp),
            "precision": "bf16" if self.use_amp else "fp32",
            **cpu_info(),
            "data_sha256": self.data_hash,
            "augment": self.tc.augment,
            "torch_version": torch.__version__,
            "sidn_version": sidn.__version__,
            "selection": "min val L_s",
        }

    # -- validation and model selection ------------------------------------------------------
    def validate(self) -> tuple[float, float]:
        """Score the DGM validation set; a new lowest L_s becomes ``model.pt``."""
        assert self.val is not None
        vl, va = evaluate_validation(self.model, self.loss_fn, *self.val, self.tc.batch_size, self.device,
                                     self.use_amp)
        if math.isfinite(vl) and vl < self.best_val_loss:
            self.best_step, self.best_val_loss, self.best_val_auroc = self.step, vl, va
            save_bundle(self.model, self.cfg, self.model_path, extra=self.bundle_extra(vl, va))
        return vl, va

    def due(self, every: int) -> bool:
        return bool(every) and every > 0 and self.step % every == 0

    # -- one step ----------------------------------------------------------------------------
    def train_step(self, total_steps: int, guard: "UpdateGuard") -> dict[str, float]:
        """Sample, corrupt (DGM, eq. 1), forward, loss (eq. 25), one Adam step; returns the history row."""
        tc, device = self.tc, self.device
        self.pending_rng = (torch.get_rng_state(), rng_state(self.rng))
        clean, donors = sample_batch(self.images, tc.batch_size, self.rng, tc.augment, tc.crop_size)
        noisy, mask = self.dgm(clean, self.rng, donors=donors)
        x = torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32)).unsqueeze(1).to(device)
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).unsqueeze(1).to(device)
        if getattr(self.model, "needs_centre_init", False):  # center_init="kmeans", first batch only
            with torch.no_grad(), autocast(device, self.use_amp):
                first = self.model(x)
            self.model.init_centres_from(first.z_t.float(), first.z_d.float())
        with autocast(device, self.use_amp):
            out = self.model(x)
        terms = self.loss_fn(to_fp32(out), m, self.model)
        values = {k: float(getattr(terms, k).detach()) for k in ("l_s", "l_z", "l_kl", "l_td", "total")}
        if not math.isfinite(values["total"]):
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1}: loss is {values['total']} "
                f"({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); last good checkpoint kept: "
                f"{self.ckpt_path if self.ckpt_path.exists() else 'none written yet'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        gnorm = _grad_norm(self.params)
        if not math.isfinite(gnorm):
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1}: gradient norm is {gnorm} (loss {values['total']:.4g}); "
                f"last good checkpoint kept: {self.ckpt_path if self.ckpt_path.exists() else 'none written yet'}"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = tc.lr * lr_factor(self.step, total_steps, tc.schedule, tc.warmup_steps)
        with guard:
            self.optimizer.step()
            self.step += 1
        self.pending_rng = None
        row: dict[str, float] = {"step": self.step, **values}
        row["radii_t_mean"] = _nanmean(getattr(terms, "radii_t", None))
        row["radii_d_mean"] = _nanmean(getattr(terms, "radii_d", None))
        row["grad_norm"] = gnorm
        row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        row["elapsed_s"] = self.elapsed()
        row["val_loss"] = float("nan")
        row["val_pixel_auroc"] = float("nan")
        for c in HISTORY_COLUMNS:
            self.history[c].append(row[c])
        return row

    def record_validation(self, row: dict[str, float]) -> None:
        row["val_loss"], row["val_pixel_auroc"] = self.validate()
        self.history["val_loss"][-1], self.history["val_pixel_auroc"][-1] = row["val_loss"], row["val_pixel_auroc"]

    # -- end ---------------------------------------------------------------------------------
    def finish(self, stopped: str) -> TrainResult:
        """Final validation (unless the last step had one), ``model.pt``, checkpoint, history."""
        h = self.history
        last_val_step = h["step"][-1] if h["step"] and math.isfinite(h["val_loss"][-1]) else None
        if self.val is not None and self.step > 0 and last_val_step != self.step:
            vl, va = self.validate()
            if h["step"] and h["step"][-1] == self.step:
                h["val_loss"][-1], h["val_pixel_auroc"][-1] = vl, va
        if self.best_step < 0 or not self.model_path.exists():  # no (finite) validation: keep the final weights
            self.best_step = self.step
            save_bundle(self.model, self.cfg, self.model_path, extra=self.bundle_extra(float("nan"), float("nan")))
        self.write_checkpoint()
        return TrainResult(
            best_step=self.best_step,
            best_val_loss=self.best_val_loss if math.isfinite(self.best_val_loss) else float("nan"),
            steps_done=self.step,
            history=history_frame(h),
            best_val_auroc=self.best_val_auroc,
            stopped=stopped,
            out_dir=self.out_dir,
            device=str(self.device),
            amp=self.use_amp,
        )


def _interrupted(run: _Run, flag: StopFlag, guard: UpdateGuard, total_steps: int) -> TrainingInterrupted:
    """Checkpoint after an interrupt (rewinding the RNGs of an unfinished step) and say how to resume."""
    if guard.active:
        msg = (f"training interrupted inside an optimiser update at step {run.step + 1}; the state is "
               f"inconsistent, so the last periodic checkpoint {run.ckpt_path} was kept")
        return TrainingInterrupted(msg, run.step, run.ckpt_path if run.ckpt_path.exists() else None)
    run.write_checkpoint(run.pending_rng)
    msg = (f"training interrupted ({flag.reason or 'KeyboardInterrupt'}) after step {run.step}/{total_steps}; "
           f"checkpoint saved to {run.ckpt_path}; run again with resume=True (sidn train --resume) to continue")
    log.warning(msg)
    return TrainingInterrupted(msg, run.step, run.ckpt_path)


def train(
    cfg: SIDNConfig,
    train_images: np.ndarray,
    val_images: np.ndarray | None,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    *,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train SIDN on defect-free ``train_images [N,H,W]`` (float32 in [0,1], H,W multiples of 16).

    ``val_images [M,H,W]`` are held-out good images from which the DGM makes the fixed
    validation set; ``None`` or empty disables validation (the final weights become model.pt).
    ``callback(step, row)`` is called after every completed step (tests, custom logging).
    Raises :class:`TrainingDiverged` on NaN/inf, :class:`TrainingInterrupted` after a
    checkpoint on SIGTERM/SIGINT/KeyboardInterrupt.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out_dir):
        log.warning("removed %s, left behind by an interrupted run", stale)
    tc = cfg.train
    _check_settings(tc)
    train_images = _check_images("train_images", train_images)
    if val_images is not None and len(val_images) > 0:
        val_images = _check_images("val_images", val_images)
        if val_images.shape[1:] != train_images.shape[1:]:
            raise ValueError(
                f"train: val_images are {val_images.shape[1]}x{val_images.shape[2]} but train_images are "
                f"{train_images.shape[1]}x{train_images.shape[2]}; resize both to data.image_size"
            )

    run = _Run(cfg, train_images, val_images, out_dir)
    if resume and run.ckpt_path.is_file():
        run.resume()
    elif resume:
        log.warning("%s not found; starting a fresh run", run.ckpt_path)
    cfg.save_yaml(out_dir / CONFIG_FILE)
    run.t0 = time.monotonic()

    from tqdm.auto import tqdm

    flag, guard = StopFlag(), UpdateGuard()
    total_steps = int(tc.steps)
    stopped = "steps"
    with tqdm(total=total_steps, initial=run.step, disable=not progress, desc="train", unit="step",
              dynamic_ncols=True) as bar, signal_guard(flag), reuse_heap():
        try:
            while run.step < total_steps:
                if tc.max_minutes and tc.max_minutes > 0 and run.elapsed() >= tc.max_minutes * 60.0:
                    stopped = "time"
                    log.info("time budget of %.1f min reached at step %d", tc.max_minutes, run.step)
                    break
                row = run.train_step(total_steps, guard)
                if run.val is not None and run.due(tc.val_every):
                    run.record_validation(row)
                if run.due(tc.checkpoint_every):
                    run.write_checkpoint()
                post = {"loss": f"{row['total']:.4f}", "l_s": f"{row['l_s']:.4f}"}
                if math.isfinite(run.best_val_loss):
                    post["best_val"] = f"{run.best_val_loss:.4f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
                if callback is not None:
                    callback(run.step, dict(row))
                if flag.reason is not None:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise _interrupted(run, flag, guard, total_steps) from None
        except TrainingDiverged:
            write_history(run.history_path, run.history)
            raise
    return run.finish(stopped)


__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "train",
    "lr_factor",
]
