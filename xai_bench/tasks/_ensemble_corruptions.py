"""``evaluate.py ensemble=… corruption=…``: does each member still classify the first few images correctly once
they are corrupted (the "still correct?" table of an out-of-distribution study)?

Each member sees the images through its own eval transform (224 / 240 / 260 / 299 pixels), so every member is built
again, one at a time, and corrupts its own view of the images; the corruptions act in pixel space, after the resize,
as everywhere else in the project.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import Subset

from xai_bench import viz
from xai_bench.data import DataBundle, make_loader
from xai_bench.robustness.corruption_eval import corruption_correctness
from xai_bench.robustness.corruptions import build_suite
from xai_bench.tasks.common import RunContext

__all__ = ["ensemble_corruptions"]

log = logging.getLogger(__name__)


def ensemble_corruptions(cfg: DictConfig, ctx: RunContext, data: DataBundle, members: list[dict[str, Any]],
                         build: Any) -> dict[str, Any]:
    """Run ``cfg.corruption`` on the first ``cfg.ensemble.corruption_images`` images of ``cfg.split`` with every
    member; write ``tables/still_correct.csv`` (one row per image × corruption: each member's class and whether it
    is still in the reference set) and ``figures/still_correct.png``.

    Args:
        cfg: the composed evaluate config (``ensemble``, ``corruption``, ``split``).
        ctx: the run context.
        data: the dataset bundle (re-prepared for each member as it is built).
        members: the member nodes (see :func:`xai_bench.tasks.ensemble._member_nodes`).
        build: ``build(members, data, device)`` → iterator of ``(label, model)``, one member in memory at a time.

    Returns:
        ``still_correct/<member>``: the fraction of (image, corruption) pairs still correct, per member, and
        ``corruption_images``: the images used.
    """
    suite = build_suite(cfg.corruption)
    n = int(cfg.ensemble.get("corruption_images", 2))
    if not suite or n <= 0:
        return {}
    labels = ["clean", *suite]
    correct: dict[str, dict[str, torch.Tensor]] = {}
    preds: dict[str, dict[str, torch.Tensor]] = {}
    examples: dict[str, torch.Tensor] = {}
    names: list[str] = []
    with ctx.timer("corruptions"):
        for label, model in build(members, data, ctx.device):
            ds = data.split(cfg.split)
            ds = Subset(ds, range(min(n, len(ds))))  # type: ignore[arg-type]
            names = [str(ds[i].get("name", i)) for i in range(len(ds))]
            run = corruption_correctness({label: model}, make_loader(ds, n, num_workers=0), suite, ctx.device,
                                         progress=False, keep=n)
            correct[label], preds[label] = run.correct[label], run.predictions[label]
            examples = run.examples  # the last member's view of the corrupted images (for the figure)
            scored = run.scored
    class_names = list(data.class_names)
    member_names = list(correct)
    rows = []
    for i, image in enumerate(names):
        for c in labels:
            row: dict[str, Any] = {"image": image, "corruption": c}
            for m in member_names:
                row[f"{m}_class"] = class_names[int(preds[m][c][i])]
                row[f"{m}_correct"] = bool(correct[m][c][i]) if bool(scored[i]) else None
            rows.append(row)
    ctx.table("still_correct", rows)
    ctx.figure("still_correct", viz.still_correct_figure(
        torch.stack([examples[c] for c in labels], 1), names, labels, member_names,
        [[[class_names[int(preds[m][c][i])] for m in member_names] for c in labels] for i in range(len(names))],
        [[[bool(correct[m][c][i]) for m in member_names] for c in labels] for i in range(len(names))],
        title=f"{ctx.subject}: still correct under corruption?"))
    out: dict[str, Any] = {"corruption_images": names}
    for m in member_names:
        under = torch.stack([correct[m][c] for c in suite])[:, scored]
        out[f"still_correct/{m}"] = float(under.float().mean()) if under.numel() else float("nan")
    log.info("still correct under %s: %s", ", ".join(suite),
             ", ".join(f"{m} {out[f'still_correct/{m}']:.2f}" for m in member_names))
    return out
