"""Classification metrics on batched predictions: top-k with reference sets, per-class accuracy, confusion, ECE."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xai_bench.checks import accept_matrix, eval_mode
from xai_bench.resume import BatchStore, finished_batches, remaining_batches

__all__ = [
    "CalibrationBins",
    "Predictions",
    "calibration_bins",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "predict",
    "topk_correct",
]


@dataclass
class Predictions:
    """Outputs of :func:`predict` over a loader (all on CPU)."""

    probs: torch.Tensor  # N×K softmax probabilities
    labels: torch.Tensor  # N, -1 where unknown
    accept: torch.Tensor  # N×K bool: classes that count as correct (one-hot of the label unless a reference set)
    names: list[str]
    loss: float


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, *, amp: bool = False,
            progress: bool = False, desc: str = "predict", store: BatchStore | None = None) -> Predictions:
    """Softmax probabilities, labels, reference sets and names over ``loader``, with the mean loss over labelled images.

    Runs in eval mode (each submodule's flag is restored afterwards); ``amp`` uses bf16 autocast on CUDA. With
    ``store`` (:mod:`xai_bench.resume`), each finished batch is committed to it and the batches it already holds (a
    resumed run's) are read back instead of predicted, to the same result.
    """
    probs, labels, accept, names = [], [], [], []
    loss_sum, n_scored = 0.0, 0
    offset = 0
    done = finished_batches(store)
    for b in range(done):  # a resumed run's: summed in the same order as when they were made
        shard, meta = store.get(b)  # type: ignore[union-attr]
        probs.append(shard["probs"])
        labels.append(shard["labels"])
        accept.append(shard["accept"])
        names += json.loads(meta["names"])
        loss_sum += float(shard["loss_sum"])
        n_scored += int(shard["n_scored"])
        offset += len(shard["labels"])
    with eval_mode(model):
        for b, batch in enumerate(tqdm(remaining_batches(loader, done), desc=desc, disable=not progress, leave=False,
                                       initial=done, total=len(loader)), start=done):
            x = batch["image"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                logits = model(x).float()
            y = batch["label"].to(device)
            acc = accept_matrix(y, logits.shape[1], batch.get("accept"), device=device)
            known = y >= 0
            batch_loss, batch_n = 0.0, int(known.sum())
            if known.any():
                batch_loss = float(nn.functional.cross_entropy(logits[known], y[known], reduction="sum"))
                loss_sum += batch_loss
                n_scored += batch_n
            probs.append(logits.softmax(1).cpu())
            labels.append(y.cpu())
            accept.append(acc.cpu())
            batch_names = list(batch.get("name", [str(offset + i) for i in range(len(y))]))
            names += batch_names
            offset += len(y)
            if store is not None:
                store.put(b, {"probs": probs[-1], "labels": labels[-1], "accept": accept[-1],
                              "loss_sum": torch.tensor(batch_loss, dtype=torch.float64),
                              "n_scored": torch.tensor(batch_n)}, {"names": json.dumps(batch_names)})
    return Predictions(torch.cat(probs), torch.cat(labels), torch.cat(accept), names,
                       loss_sum / max(n_scored, 1))


def topk_correct(probs: torch.Tensor, accept: torch.Tensor, k: int) -> torch.Tensor:
    """Bool[N]: any of the top-k classes is in the image's reference set."""
    k = min(k, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    return accept.gather(1, top).any(1)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``K×K`` counts, ``cm[i, j]`` = labelled images of class i predicted as j (unlabelled images left out)."""
    known = labels >= 0
    idx = labels[known] * num_classes + pred[known]
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def classification_report(p: Predictions, class_names: list[str], n_bins: int = 15) -> dict[str, Any]:
    """Top-1/top-5 (reference sets count), per-class accuracy, confusion matrix, ECE, over scored images."""
    scored = p.accept.any(1)
    probs, accept, labels = p.probs[scored], p.accept[scored], p.labels[scored]
    k = probs.shape[1]
    if len(probs) == 0:
        return {"n": 0}
    conf, pred = probs.max(1)
    correct1 = topk_correct(probs, accept, 1)
    cm = confusion_matrix(pred, labels, k)
    per_class = {}
    for c in labels.unique().tolist():
        sel = labels == c
        per_class[class_names[c]] = float(correct1[sel].float().mean())
    return {
        "n": int(len(probs)),
        "top1": float(correct1.float().mean()),
        "top5": float(topk_correct(probs, accept, 5).float().mean()),
        "loss": p.loss,
        "ece": expected_calibration_error(conf, correct1, n_bins),
        "per_class_acc": per_class,
        "confusion_matrix": cm,
        "_conf": conf,
        "_correct": correct1,
    }


# ------------------------------------------------------------------------------------------------ calibration
class CalibrationBins(NamedTuple):
    """Equal-width confidence bins: per-bin sample count, mean accuracy and mean confidence (0 for empty bins)."""

    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def ece(self) -> float:
        """``Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|``."""
        return float(np.sum(self.counts / self.counts.sum() * np.abs(self.accuracy - self.confidence)))


def _float64(x: torch.Tensor | np.ndarray | Sequence[float], name: str) -> np.ndarray:
    # Calibration is computed in float64 on the CPU: one pass over N scalars, and exact against reference loops.
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
    try:
        return np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a torch tensor or a numeric array, got {type(x).__name__}") from err


def calibration_bins(confidences: torch.Tensor | np.ndarray | Sequence[float],
                     correct: torch.Tensor | np.ndarray | Sequence[float], n_bins: int = 15) -> CalibrationBins:
    """Bin predictions by confidence into ``n_bins`` equal-width bins ``(b/n, (b+1)/n]`` of [0, 1].

    Args:
        confidences: ``N`` predicted-class probabilities in [0, 1].
        correct: ``N`` booleans (or 0/1), whether the prediction was right.
        n_bins: number of bins. Default 15.

    Returns:
        :class:`CalibrationBins` (arrays of length ``n_bins``).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be ≥ 1, got {n_bins}")
    conf = _float64(confidences, "confidences")
    corr = _float64(correct, "correct")
    if conf.size == 0:
        raise ValueError("confidences is empty")
    if conf.shape != corr.shape:
        raise ValueError(f"confidences ({conf.size}) and correct ({corr.size}) must have one entry per sample")
    if not np.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidences must be finite probabilities in [0, 1] (e.g. the softmax max), not logits")
    if not np.isin(corr, (0.0, 1.0)).all():
        raise ValueError("correct must be booleans or 0/1 (prediction == label)")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right=True puts x in bin i when edges[i] < x <= edges[i+1] (Guo et al. 2017); a confidence of 0 joins bin 0.
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    safe = np.maximum(counts, 1)
    acc = np.bincount(idx, weights=corr, minlength=n_bins) / safe
    mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / safe
    return CalibrationBins(counts, acc, mean_conf)


def expected_calibration_error(confidences: torch.Tensor | np.ndarray | Sequence[float],
                               correct: torch.Tensor | np.ndarray | Sequence[float], n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins.

    Implements ECE as in Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017):
    ``Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|`` over ``n_bins`` bins ``(b/n, (b+1)/n]`` of [0, 1].

    Args:
        confidences: ``N`` predicted-class probabilities in [0, 1].
        correct: ``N`` booleans (or 0/1), whether the prediction was right.
        n_bins: number of bins. Default 15.

    Returns:
        ECE in [0, 1].
    """
    return calibration_bins(confidences, correct, n_bins).ece
