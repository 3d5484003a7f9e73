"""The training loop: optimiser/schedule from config, early stopping, AMP + channels_last on GPU, atomic per-epoch
checkpoints with exact resume, and the best model exported as safetensors + JSON."""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from xai_bench.data import DataBundle, make_loader
from xai_bench.metrics import predict
from xai_bench.models import ImageClassifier, save_checkpoint
from xai_bench.tracking import Tracker
from xai_bench.utils import atomic_path, build, remove_stale_temps

log = logging.getLogger(__name__)

LAST = "last.pt"


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    max_epochs: int | None = None  # of the run that wrote the checkpoint (its LR schedule was planned for it)


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def find_resume_checkpoint(resume: Any, out_dir: Path) -> Path | None:
    """``resume``: false/None → none; true/"auto" → this run's own last checkpoint if any; a path → a run folder,
    a ``checkpoints`` folder or a ``last.pt`` file of an earlier run."""
    if resume in (None, False, "", "false"):
        return None
    if resume in (True, "auto", "true"):
        path = out_dir / "checkpoints" / LAST
        return path if path.is_file() else None
    p = Path(str(resume))
    for cand in (p, p / LAST, p / "checkpoints" / LAST):
        if cand.is_file():
            # the killed run's half-written files (its whole folder when this is one of ours)
            remove_stale_temps(cand.parent.parent if cand.parent.name == "checkpoints" else cand.parent)
            return cand
    raise FileNotFoundError(f"trainer.resume={resume}: no checkpoint found (looked for {p}, {p / LAST} and "
                            f"{p / 'checkpoints' / LAST}); point it at an earlier run's output folder")


def _save_last(path: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, state: TrainState,
               device: torch.device) -> None:
    payload = {
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else None,
        "state": {"epoch": state.epoch, "best": state.best, "best_epoch": state.best_epoch,
                  "bad_epochs": state.bad_epochs, "history": state.history, "max_epochs": state.max_epochs},
        # The RNG that drives dropout and augmentation: restoring it makes a resumed run equal an uninterrupted one.
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_last(path: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
               device: torch.device) -> TrainState:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
        model.load_state_dict(payload["model"])
    except Exception as exc:
        raise ValueError(f"cannot resume from {path}: {type(exc).__name__}: {exc}. The file is corrupt or was "
                         "written for another model/dataset; start without trainer.resume") from exc
    opt.load_state_dict(payload["optimizer"])
    if sched is not None and payload.get("scheduler") is not None:
        sched.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"])
    if device.type == "cuda" and payload.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    s = payload["state"]
    return TrainState(s["epoch"], s["best"], s["best_epoch"], s["bad_epochs"], list(s["history"]),
                      s.get("max_epochs"))


def _train_step(model: nn.Module, batch: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None, device: torch.device, amp_dtype: torch.dtype | None,
                channels_last: bool, grad_clip: float | None) -> tuple[float, int, int]:
    x = batch["image"].to(device, non_blocking=True)
    y = batch["label"].to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return float(loss.detach()) * len(y), int((logits.argmax(1) == y).sum()), len(y)


def fit(model: ImageClassifier, data: DataBundle, *, trainer: DictConfig, optim: DictConfig,
        scheduler: DictConfig | None, out_dir: Path, device: torch.device, seed: int = 0,
        tracker: Tracker | None = None) -> dict[str, Any]:
    """Train ``model`` on ``data.train``, validating on ``data.val`` each epoch.

    Args:
        model: the classifier (moved to ``device``).
        data: the dataset bundle; needs ``train`` and ``val`` splits.
        trainer: a ``conf/trainer`` node (epochs, batch sizes, AMP, early stopping, resume, …).
        optim: a ``conf/optim`` node (a ``_partial_`` optimiser taking the parameters).
        scheduler: a ``conf/scheduler`` node or ``None``.
        out_dir: where ``checkpoints/last.pt`` and ``best/`` are written.
        device: where to train.
        seed: drives the data order (per epoch) so that a resumed run sees the same batches.
        tracker: receives per-step and per-epoch metrics (default: none).

    Returns:
        ``epochs``, ``best_epoch``, ``best/<monitor>``, ``history`` and, when resumed, ``resumed_from`` and
        ``resumed_at_epoch``.
    """
    tc = trainer
    tracker = tracker or Tracker()
    out_dir = Path(out_dir)
    result: dict[str, Any] = {}
    on_gpu = device.type == "cuda"
    channels_last = bool(tc.channels_last) if tc.channels_last != "auto" else on_gpu
    amp_choices = {"auto": torch.bfloat16 if on_gpu else None, True: torch.bfloat16 if on_gpu else None,
                   "bf16": torch.bfloat16, "fp16": torch.float16, False: None, None: None, "none": None}
    if tc.amp not in amp_choices:
        raise ValueError(f"trainer.amp={tc.amp!r} is not one of auto, bf16, fp16, none")
    amp_dtype = amp_choices[tc.amp]
    if amp_dtype is not None and not on_gpu:
        raise ValueError(f"trainer.amp={tc.amp} needs a GPU; use trainer.amp=auto or none on CPU")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = build(optim)(model.parameters())
    per_step = bool(scheduler and scheduler.get("interval") == "step")
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    train_loader = make_loader(data.split("train"), tc.batch_size, shuffle=True, seed=int(seed),
                               num_workers=tc.num_workers, drop_last=False)
    if data.val is None:
        # Selecting epochs on the test split and then reporting it would overstate accuracy.
        raise ValueError(f"dataset {data.name!r} has no validation split, which early stopping and the best-"
                         "checkpoint choice need; set dataset.val_fraction > 0 (dataset.n_val > 0 for "
                         "synthetic_shapes). The test split is never used for model selection.")
    val_ds = data.val
    val_loader = make_loader(val_ds, tc.eval_batch_size, num_workers=tc.num_workers)
    es = tc.early_stopping
    monitor, mode = es.monitor, es.mode
    n_batches = len(train_loader) if tc.limit_train_batches is None else min(len(train_loader), tc.limit_train_batches)
    sched = None
    if scheduler and scheduler.get("scheduler"):
        node = scheduler.scheduler
        extra: dict[str, Any] = {}
        if "total_steps" in node and node.total_steps is None:
            # Per-step schedules (OneCycle) need the run's length, which only the loader knows.
            total = tc.max_epochs * n_batches
            extra["total_steps"] = total
            if "pct_start" in node and total < 3:
                raise ValueError(f"scheduler={node._target_.rsplit('.', 1)[-1]} needs at least 3 optimiser steps, the "
                                 f"run has {total}; use scheduler=none or more data/epochs")
            if "pct_start" in node:  # torch divides by (pct_start·total − 1): keep the warm-up ≥ 2 steps
                extra["pct_start"] = max(float(node.pct_start), 2.0 / total)
        sched = build(node)(opt, **extra)
    ckpt_dir = out_dir / "checkpoints"
    state = TrainState(max_epochs=tc.max_epochs)
    resume_from = find_resume_checkpoint(tc.resume, out_dir)
    if resume_from is not None:
        state = _load_last(resume_from, model, opt, sched, device)
        if sched is not None and state.max_epochs not in (None, tc.max_epochs):
            raise ValueError(
                f"trainer.resume: {resume_from} was written by a run with trainer.max_epochs={state.max_epochs}, "
                f"this one has {tc.max_epochs}; its learning-rate schedule cannot be stretched. Resume with "
                f"trainer.max_epochs={state.max_epochs}, or train longer with scheduler=none.")
        result.update(resumed_from=str(resume_from), resumed_at_epoch=state.epoch)

    if resume_from is None and tc.resume in (True, "auto", "true"):
        log.warning("trainer.resume=%s: no checkpoint in %s, starting from scratch (to continue an earlier run, "
                    "pass its folder: trainer.resume=outputs/train/<run>)", tc.resume, ckpt_dir)
    if resume_from is not None and resume_from.parent.parent.resolve() != out_dir.resolve():
        # Carry the earlier run's best model along, so this run's best/ exists even if no later epoch beats it.
        src_best = resume_from.parent.parent / "best"
        if src_best.is_dir() and not (out_dir / "best").exists():
            shutil.copytree(src_best, out_dir / "best")
    step = state.epoch * n_batches
    if es.patience is not None and state.bad_epochs >= es.patience:
        log.info("early stopping: the resumed run had already stopped (%s flat for %d epochs)", monitor,
                 state.bad_epochs)

    for epoch in range(state.epoch, tc.max_epochs if not (es.patience is not None and state.bad_epochs >= es.patience)
                       else state.epoch):
        # Shuffling depends only on (seed, epoch), so a resumed epoch sees the same order as the original.
        train_loader.generator.manual_seed(int(seed) * 100_003 + epoch)
        model.train()
        loss_sum = correct = seen = 0
        bar = tqdm(train_loader, total=n_batches, desc=f"epoch {epoch + 1}/{tc.max_epochs}",
                   disable=not tc.progress, leave=False)
        for i, batch in enumerate(bar):
            if i >= n_batches:
                break
            loss, c, n = _train_step(model, batch, opt, scaler, device, amp_dtype, channels_last, tc.grad_clip)
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at epoch {epoch + 1}, step {i}; lower optim.lr "
                                         "or set trainer.grad_clip")
            loss_sum, correct, seen, step = loss_sum + loss, correct + c, seen + n, step + 1
            if sched is not None and per_step:
                sched.step()
            if tc.log_every_n_steps and step % tc.log_every_n_steps == 0:
                tracker.log({"train/step_loss": loss / n, "lr": opt.param_groups[0]["lr"]}, step=step)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        lr = opt.param_groups[0]["lr"]
        if sched is not None and not per_step:
            sched.step()
        val = predict(model, val_loader, device, amp=amp_dtype is not None)
        val_acc = float((val.probs.argmax(1) == val.labels).float().mean())
        row = {"epoch": epoch + 1, "train/loss": loss_sum / seen, "train/acc": correct / seen, "val/loss": val.loss,
               "val/acc": val_acc, "lr": lr}
        state.history.append(row)
        state.epoch = epoch + 1
        tracker.log(row, step=step)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
        if monitor not in row:
            raise ValueError(f"trainer.early_stopping.monitor={monitor!r} is not a logged metric; "
                             f"choose one of {sorted(k for k in row if k != 'epoch')}")
        if _improved(row[monitor], state.best, mode, es.min_delta):
            state.best, state.best_epoch, state.bad_epochs = row[monitor], epoch + 1, 0
            save_checkpoint(model, out_dir / "best")
        else:
            state.bad_epochs += 1
        _save_last(ckpt_dir / LAST, model, opt, sched, state, device)
        if es.patience is not None and state.bad_epochs >= es.patience:
            log.info("early stopping: %s did not improve by %s for %s epochs", monitor, es.min_delta, es.patience)
            break

    return {**result, "epochs": state.epoch, "best_epoch": state.best_epoch, f"best/{monitor}": state.best,
            "history": state.history}
