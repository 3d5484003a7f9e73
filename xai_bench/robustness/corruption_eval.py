"""Accuracy under common corruptions: per corruption × severity, mean corruption error, and which images flipped.

:func:`corruption_correctness` runs models over a corruption suite (from
:func:`xai_bench.robustness.corruptions.build_suite`); :func:`corruption_summary` and :func:`flip_rows` turn its
per-image correctness into the numbers and tables the evaluate task reports.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xai_bench.checks import accept_matrix, eval_mode
from xai_bench.metrics import topk_correct

__all__ = ["corruption_correctness", "corruption_summary", "flip_rows", "split_label"]


@torch.no_grad()
def corruption_correctness(models: dict[str, nn.Module], loader: DataLoader,
                           suite: dict[str, Callable[[torch.Tensor], torch.Tensor]], device: torch.device, *,
                           progress: bool = True) -> tuple[dict[str, dict[str, torch.Tensor]], torch.Tensor]:
    """Top-1 correctness (Bool[N]) of each model on clean images (label ``"clean"``) and under each corruption,
    and which images can be scored at all (Bool[N]: they have a label or a reference set).

    Each batch is corrupted once per label on ``device`` and shared by all models, so a reference model costs
    forward passes only.
    """
    out: dict[str, dict[str, list[torch.Tensor]]] = {m: defaultdict(list) for m in models}
    labels = ["clean", *suite]
    scored: list[torch.Tensor] = []
    with contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(eval_mode(model))
        for batch in tqdm(loader, desc="corruptions", disable=not progress, leave=False):
            x = batch["image"].to(device)
            y = batch["label"].to(device)
            given = batch.get("accept")
            scored.append((given.bool().any(1) if given is not None else y >= 0).cpu())
            accept: dict[int, torch.Tensor] = {}  # per class count: models may differ (a reference model)
            for label in labels:
                xc = x if label == "clean" else suite[label](x)
                for name, model in models.items():
                    probs = model(xc).softmax(1)
                    k = probs.shape[1]
                    if k not in accept:
                        accept[k] = accept_matrix(y, k, given, device=device)
                    out[name][label].append(topk_correct(probs, accept[k], 1).cpu())
    return {m: {k: torch.cat(v) for k, v in d.items()} for m, d in out.items()}, torch.cat(scored)


def split_label(label: str) -> tuple[str, int | None]:
    """``"fog/3"`` → ("fog", 3); a custom label has no severity."""
    name, _, sev = label.rpartition("/")
    return (name, int(sev)) if name and sev.isdigit() else (label, None)


def corruption_summary(correct: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None = None,
                       scored: torch.Tensor | None = None) -> dict[str, Any]:
    """Accuracy per label, per corruption (mean over severities), mean corruption error relative to clean and,
    with a reference model, Hendrycks & Dietterich's mCE and relative mCE (ratios of summed errors per corruption)."""
    if scored is not None:  # unlabelled images are classified but cannot be right or wrong
        if not scored.any():
            return {"accuracy": {}, "n_scored": 0}
        correct = {k: v[scored] for k, v in correct.items()}
        reference = {k: v[scored] for k, v in reference.items()} if reference is not None else None
    acc = {k: float(v.float().mean()) for k, v in correct.items()}
    clean_err = 1 - acc["clean"]
    by_corruption: dict[str, list[str]] = defaultdict(list)
    for label in correct:
        if label != "clean":
            by_corruption[split_label(label)[0]].append(label)
    summary: dict[str, Any] = {"accuracy": acc, "clean_accuracy": acc["clean"], "n_scored": len(correct["clean"])}
    if not by_corruption:
        return summary
    errs = {c: [1 - acc[lb] for lb in labels] for c, labels in by_corruption.items()}
    summary["corruption_accuracy"] = {c: 1 - sum(e) / len(e) for c, e in errs.items()}
    summary["mean_corruption_error"] = sum(sum(e) / len(e) for e in errs.values()) / len(errs)
    summary["relative_corruption_error"] = summary["mean_corruption_error"] - clean_err
    if reference is not None:
        ref_acc = {k: float(v.float().mean()) for k, v in reference.items()}
        ref_clean_err = 1 - ref_acc["clean"]
        ce, rel = [], []
        for labels in by_corruption.values():
            e = sum(1 - acc[lb] for lb in labels)
            r = sum(1 - ref_acc[lb] for lb in labels)
            ce.append(e / r if r > 0 else float("nan"))
            dr = r - len(labels) * ref_clean_err
            rel.append((e - len(labels) * clean_err) / dr if dr > 0 else float("nan"))
        summary["mCE"] = sum(ce) / len(ce)
        summary["relative_mCE"] = sum(rel) / len(rel)
    return summary


def flip_rows(correct: dict[str, torch.Tensor], names: list[str],
              scored: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Per scored image: correct or not on the clean image and under each alteration, and how many alterations
    flipped it."""
    rows = []
    labels = [k for k in correct if k != "clean"]
    for i, name in enumerate(names):
        if scored is not None and not scored[i]:
            continue
        row: dict[str, Any] = {"image": name, "clean": bool(correct["clean"][i])}
        row.update({k: bool(correct[k][i]) for k in labels})
        row["flipped"] = sum(row["clean"] != row[k] for k in labels)
        rows.append(row)
    return rows
