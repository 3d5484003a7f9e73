"""Classification metrics on batched predictions: top-k with reference sets, per-class accuracy, confusion, ECE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xai_bench.viz import expected_calibration_error


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
            progress: bool = False, desc: str = "predict") -> Predictions:
    model.eval()
    probs, labels, accept, names = [], [], [], []
    loss_sum, n_scored = 0.0, 0
    offset = 0
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        x = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(x).float()
        y = batch["label"].to(device)
        k = logits.shape[1]
        if "accept" in batch:
            acc = batch["accept"].to(device)
        else:
            acc = torch.zeros(len(y), k, dtype=torch.bool, device=device)
            known = y >= 0
            acc[known.nonzero().squeeze(1), y[known]] = True
        known = y >= 0
        if known.any():
            loss_sum += float(nn.functional.cross_entropy(logits[known], y[known], reduction="sum"))
            n_scored += int(known.sum())
        probs.append(logits.softmax(1).cpu())
        labels.append(y.cpu())
        accept.append(acc.cpu())
        names += list(batch.get("name", [str(offset + i) for i in range(len(y))]))
        offset += len(y)
    return Predictions(torch.cat(probs), torch.cat(labels), torch.cat(accept), names,
                       loss_sum / max(n_scored, 1))


def topk_correct(probs: torch.Tensor, accept: torch.Tensor, k: int) -> torch.Tensor:
    """Bool[N]: any of the top-k classes is in the image's reference set."""
    k = min(k, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    return accept.gather(1, top).any(1)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
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
