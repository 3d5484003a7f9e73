"""Ensembles of classifiers: the members' predictions on a dataset and per-member and ensemble accuracy.

The members are already-built models (:func:`predict_members` consumes them one at a time, so a generator that
builds each member on demand keeps one in memory); the combinations are ``vote`` (majority of top-1 votes) and
``mean`` (average softmax). The uncertainty of the resulting ``probs: Tensor[M, N, K]`` is in
:mod:`xai_bench.robustness.uncertainty`: predictive entropy (total), expected entropy (aleatoric) and mutual
information (epistemic; Houlsby et al. 2011, Lakshminarayanan et al. 2017 "Deep Ensembles"). The evaluate task's
``ensemble=<name>`` (``xai_bench.tasks.ensemble``) builds the members from ``conf/ensemble/*.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sized
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from xai_bench.data import make_loader
from xai_bench.metrics import predict, topk_correct
from xai_bench.robustness.uncertainty import majority_vote

__all__ = ["COMBINE", "check_combine", "ensemble_accuracy", "predict_members", "unique_name"]

COMBINE = ("vote", "mean")


def check_combine(combine: Iterable[str] | None, name: str = "ensemble.combine") -> list[str]:
    """The combinations to score as a list (``None`` or empty: all of :data:`COMBINE`); unknown ones raise."""
    out = [str(c) for c in (combine or COMBINE)]
    bad = [c for c in out if c not in COMBINE]
    if bad or not out:
        raise ValueError(f"{name}={out} must be a non-empty list drawn from {list(COMBINE)}")
    return out


def predict_members(members: Iterable[tuple[str, nn.Module]], ds: Dataset, device: torch.device, *,
                    batch_size: int = 64, num_workers: int = 0, progress: bool = False) -> dict[str, Any]:
    """Softmax outputs of every member on ``ds``, one member at a time.

    Args:
        members: ``(name, model)`` pairs, consumed lazily: each model is dropped before the next pair is drawn, so a
            generator that builds each member on demand keeps one in memory (VGG16 alone is 0.5 GB). The loader over
            ``ds`` is made after a pair is drawn, so a generator may first give ``ds`` the member's own eval transform
            (``xai_bench.data.prepare_for_model``). Duplicate names get ``#2``, ``#3`` … appended.
        ds: the images; it must yield them in the same order for every member.
        device: where the members run.
        batch_size, num_workers: loader settings.
        progress: progress bars.

    Returns:
        dict with ``probs`` (M×N×K float, CPU), ``accept`` (N×K bool reference sets), ``labels`` (N, −1 unknown),
        ``names`` (N), ``member_names`` (M, unique) and ``class_names`` (K: the first member's ``class_names``, else
        ``"0"`` … ``"K-1"``).
    """
    probs: list[Tensor] = []
    member_names: list[str] = []
    first: Any = None
    total = len(members) if isinstance(members, Sized) else None
    for name, model in tqdm(members, desc="ensemble members", total=total, disable=not progress):
        member_names.append(unique_name(str(name), member_names))
        p = predict(model, make_loader(ds, batch_size, num_workers=num_workers), device, progress=progress,
                    desc=member_names[-1])
        if first is None:
            classes = getattr(model, "class_names", None)
            first = (p, [str(c) for c in classes] if classes else [str(i) for i in range(p.probs.shape[1])])
        else:
            if p.names != first[0].names:
                raise RuntimeError(f"member {member_names[-1]!r} saw the images in another order than "
                                   f"{member_names[0]!r}; the dataset must be deterministic")
            if p.probs.shape != first[0].probs.shape:
                raise ValueError(f"member {member_names[-1]!r} outputs {p.probs.shape[1]} classes but "
                                 f"{member_names[0]!r} outputs {first[0].probs.shape[1]}; members must share classes")
        probs.append(p.probs)
        del model  # before the next member is built
    if first is None:
        raise ValueError("predict_members got no members")
    p0, class_names = first
    return {"probs": torch.stack(probs), "accept": p0.accept, "labels": p0.labels, "names": p0.names,
            "member_names": member_names, "class_names": class_names}


def ensemble_accuracy(probs: Tensor, accept: Tensor, member_names: list[str],
                      combine: list[str] | tuple[str, ...] = COMBINE) -> list[dict[str, Any]]:
    """Top-1 and top-5 accuracy (reference sets counted) of each member and each ensemble combination.

    Args:
        probs: M×N×K member probabilities.
        accept: N×K bool: classes that count as correct; images with an empty row are not scored.
        member_names: M names.
        combine: combinations to score: ``"mean"`` (average probability) and/or ``"vote"`` (majority vote; top-5
            is undefined for a vote and left ``None``).

    Returns:
        One row per member then per combination: ``model``, ``kind`` (member | ensemble), ``top1``, ``top5``, ``n``
        (scored images). Accuracies are NaN when no image is scored.
    """
    scored = accept.bool().any(1)
    acc, n = accept.bool()[scored], int(scored.sum())
    mean = lambda t: float(t.float().mean()) if n else math.nan

    def row(name: str, kind: str, p: Tensor | None, classes: Tensor | None = None) -> dict[str, Any]:
        if p is not None:
            return {"model": name, "kind": kind, "top1": mean(topk_correct(p[scored], acc, 1)),
                    "top5": mean(topk_correct(p[scored], acc, 5)), "n": n}
        assert classes is not None
        return {"model": name, "kind": kind, "top1": mean(acc.gather(1, classes[scored, None]).squeeze(1)),
                "top5": None, "n": n}

    rows = [row(name, "member", probs[m]) for m, name in enumerate(member_names)]
    for c in combine:
        if c == "mean":
            rows.append(row("ensemble_mean", "ensemble", probs.mean(0)))
        elif c == "vote":
            rows.append(row("ensemble_vote", "ensemble", None, majority_vote(probs)[0]))
    return rows


def unique_name(name: str, taken: list[str]) -> str:
    """``name``, or ``name#2``, ``name#3`` … when ``taken`` already has it."""
    if name not in taken:
        return name
    i = 2
    while f"{name}#{i}" in taken:
        i += 1
    return f"{name}#{i}"
