"""Per-ε robustness numbers from :meth:`~xai_bench.robustness.attacks.Attack.sweep` results.

One implementation for one batch and for a whole split: :class:`SweepAccumulator` sums per-ε *counts* over batches
and forms every ratio once at the end, each over its own denominator, so the numbers do not depend on the batch
size; :func:`summarize_sweep` is the one-batch shortcut. Correctness uses the images' reference sets (``accept``,
``Bool[N, K]``), so a tabby called "tiger cat" still counts as correct; with plain labels the reference set is the
label's one-hot, and unlabelled images (label −1) are classified but not scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from xai_bench.checks import accept_matrix, as_class_indices

__all__ = ["SweepAccumulator", "eps_label", "summarize_sweep"]


def eps_label(eps: float, norm: str = "inf") -> str:
    """Readable ε: ``"8/255"`` for L∞ values on the half-level grid (``"0.5/255"``), else ``"%.4g"``."""
    if norm == "inf":
        levels = eps * 255
        if abs(levels * 2 - round(levels * 2)) < 1e-6:
            return f"{round(levels * 2) / 2:g}/255"
    return f"{eps:.4g}"


class SweepAccumulator:
    """Per-ε sums over batches of sweep results; :meth:`rows` forms the ratios, each over its own denominator.

    Accuracy is over the *scored* images (known label or reference set). The untargeted success rate is over the
    scored images the model got right when clean (now wrong); the targeted one over the images whose reference set
    excludes the target (now predicted as the target). A ratio with an empty denominator is NaN.

    Args:
        eps: the E radii, in the order of the sweep.
        norm: ``"inf"`` or ``"2"`` (for ``eps_label`` and the ``eps_255`` column). Default: ``"inf"``.
        targeted: whether the sweeps are targeted (then each result must carry ``target_labels``).
        device: where the sums live (the sweeps' device avoids a copy per batch). Default: CPU.
    """

    _SUMS = ("n", "scored", "correct", "attackable", "success", "flipped", "confidence", "true_prob", "target_prob",
             "linf_sum", "l2_sum")

    def __init__(self, eps: Sequence[float], norm: str = "inf", *, targeted: bool = False,
                 device: torch.device | str | None = None) -> None:
        self.eps, self.norm, self.targeted = list(eps), norm, targeted
        zeros = lambda: torch.zeros(len(self.eps), dtype=torch.float64, device=device)
        self.sums = {k: zeros() for k in self._SUMS}
        self.linf_max, self.l2_max = zeros(), zeros()

    def add(self, result: Mapping[str, Any], accept: Tensor) -> None:
        """Add one batch.

        Args:
            result: the dict returned by ``Attack.sweep`` (``preds``, ``logits``, ``clean_logits``, ``linf``, ``l2``
                and, when targeted, ``target_labels``) for N images.
            accept: ``Bool[N, K]`` classes that count as correct per image (see :func:`xai_bench.checks.accept_matrix`).
        """
        preds, n = result["preds"], result["preds"].shape[1]
        if preds.shape[0] != len(self.eps):
            raise ValueError(f"the sweep has {preds.shape[0]} ε values but the accumulator was made for "
                             f"{len(self.eps)}")
        probs = result["logits"].float().softmax(-1)  # E×N×K
        rows = torch.arange(n, device=preds.device)
        scored = accept.any(1)  # N
        correct = accept[rows, preds] & scored  # E×N: the prediction is in the image's reference set
        clean_pred = result["clean_logits"].argmax(-1)
        if self.targeted:
            target = result["target_labels"]
            attackable = ~accept[rows, target]
            success = attackable & (preds == target)
            self.sums["target_prob"] += probs[:, rows, target].sum(1)
        else:
            attackable = scored & accept[rows, clean_pred]
            success = attackable & ~correct
        s = self.sums
        s["n"] += n
        s["scored"] += scored.sum()
        s["correct"] += correct.sum(1)
        s["attackable"] += attackable.sum()
        s["success"] += success.sum(1)
        s["flipped"] += (preds != clean_pred).sum(1)
        s["confidence"] += probs.amax(-1).sum(1)
        s["true_prob"] += (probs * accept).sum(-1).sum(1)  # mass on the reference set; 0 for unscored images
        s["linf_sum"] += result["linf"].sum(1)
        s["l2_sum"] += result["l2"].sum(1)
        self.linf_max = torch.maximum(self.linf_max, result["linf"].amax(1))
        self.l2_max = torch.maximum(self.l2_max, result["l2"].amax(1))

    def merge(self, state: Mapping[str, Tensor]) -> None:
        """Add another accumulator's :meth:`state_dict` (e.g. one batch computed on another torchrun rank). Merging
        per-batch states in batch order gives the same float64 sums, bit for bit, as :meth:`add`-ing the batches in
        that order here: a fresh accumulator holds a batch's sums exactly, and the additions happen in the same
        order."""
        device = self.linf_max.device
        for k in self._SUMS:
            self.sums[k] += state[f"sum/{k}"].to(device=device, dtype=torch.float64)
        self.linf_max = torch.maximum(self.linf_max, state["linf_max"].to(device=device, dtype=torch.float64))
        self.l2_max = torch.maximum(self.l2_max, state["l2_max"].to(device=device, dtype=torch.float64))

    def state_dict(self) -> dict[str, Tensor]:
        """The running sums (float64 tensors), to save with a finished batch and restore on resume."""
        return {**{f"sum/{k}": v for k, v in self.sums.items()}, "linf_max": self.linf_max, "l2_max": self.l2_max}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Continue from :meth:`state_dict`'s sums (exactly: the next :meth:`add` sees the same running totals)."""
        device = self.linf_max.device
        self.sums = {k: state[f"sum/{k}"].to(device=device, dtype=torch.float64) for k in self._SUMS}
        self.linf_max = state["linf_max"].to(device=device, dtype=torch.float64)
        self.l2_max = state["l2_max"].to(device=device, dtype=torch.float64)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per ε, in sweep order.

        Keys: ``eps``, ``eps_label``, ``eps_255`` (L∞ only), ``n``, ``n_scored``, ``accuracy``,
        ``attack_success_rate``, ``flip_rate`` (prediction differs from the clean one, over all images),
        ``mean_confidence`` (probability of the predicted class), ``mean_true_class_prob`` (probability mass on the
        reference set, over the scored images), ``mean_target_class_prob`` (targeted only), and ``linf_max``,
        ``linf_mean``, ``l2_max``, ``l2_mean`` of δ.
        """
        s = {k: v.tolist() for k, v in self.sums.items()}
        linf_max, l2_max = self.linf_max.tolist(), self.l2_max.tolist()
        ratio = lambda a, b: a / b if b else math.nan
        out = []
        for i, e in enumerate(self.eps):
            row: dict[str, Any] = {"eps": e, "eps_label": eps_label(e, self.norm)}
            if self.norm == "inf":
                row["eps_255"] = round(e * 255, 6)
            row.update({
                "n": int(s["n"][i]), "n_scored": int(s["scored"][i]),
                "accuracy": ratio(s["correct"][i], s["scored"][i]),
                "attack_success_rate": ratio(s["success"][i], s["attackable"][i]),
                "flip_rate": ratio(s["flipped"][i], s["n"][i]),
                "mean_confidence": ratio(s["confidence"][i], s["n"][i]),
                "mean_true_class_prob": ratio(s["true_prob"][i], s["scored"][i]),
            })
            if self.targeted:
                row["mean_target_class_prob"] = ratio(s["target_prob"][i], s["n"][i])
            row.update(linf_max=linf_max[i], linf_mean=ratio(s["linf_sum"][i], s["n"][i]),
                       l2_max=l2_max[i], l2_mean=ratio(s["l2_sum"][i], s["n"][i]))
            out.append(row)
        return out


def summarize_sweep(sweep_result: Mapping[str, Any], labels: Tensor, target_labels: Tensor | int | None = None, *,
                    accept: Tensor | None = None) -> list[dict[str, Any]]:
    """Per-ε robustness numbers of one :meth:`~xai_bench.robustness.attacks.Attack.sweep` result.

    Args:
        sweep_result: the dict returned by ``sweep``.
        labels: N true class indices (−1 = unknown: classified but not scored).
        target_labels: N target indices or one int (default: the ones stored in ``sweep_result``).
        accept: optional ``Bool[N, K]`` reference sets (the classes that count as correct); default: the labels'
            one-hot.

    Returns:
        One dict per ε, as :meth:`SweepAccumulator.rows`.
    """
    logits = sweep_result["logits"]
    n, k = logits.shape[1], logits.shape[2]
    labels = as_class_indices(labels, n, logits.device, "labels")
    targeted = bool(sweep_result.get("targeted", False))
    if target_labels is None:
        target_labels = sweep_result.get("target_labels")
    if targeted and target_labels is None:
        raise ValueError("the sweep was targeted; pass target_labels to summarize_sweep")
    result = dict(sweep_result)
    if targeted:
        result["target_labels"] = as_class_indices(target_labels, n, logits.device, "target_labels", num_classes=k)
    acc = SweepAccumulator(sweep_result["eps"], str(sweep_result.get("norm", "inf")), targeted=targeted,
                           device=logits.device)
    acc.add(result, accept_matrix(labels, k, accept))
    return acc.rows()
