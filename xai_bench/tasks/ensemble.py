"""``evaluate.py ensemble=<name>``: every member of an ensemble and their combinations on one split.

An ensemble config (``conf/ensemble/*.yaml``) lists ``members`` (model config nodes, as in ``conf/model/``) and
how to ``combine`` them (``vote``: majority of top-1 votes; ``mean``: average softmax). Each member sees the images
through its *own* eval transform (EfficientNet-Lite0/1/2 take 224/240/260 pixels, Inception-v3 299), so the photo
dataset is re-prepared for every member as it is built, and the members' predictions are aligned by image name.
The numbers come from :mod:`xai_bench.robustness.ensemble` and :mod:`xai_bench.robustness.uncertainty`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from xai_bench import viz
from xai_bench.checks import safe_name
from xai_bench.data import DataBundle
from xai_bench.robustness.ensemble import check_combine, ensemble_accuracy, predict_members
from xai_bench.robustness.uncertainty import rank_by_certainty, uncertainty_table
from xai_bench.tasks.common import RunContext
from xai_bench.tasks.setup import model_from_node

__all__ = ["run_ensemble"]

log = logging.getLogger(__name__)


def run_ensemble(cfg: DictConfig, ctx: RunContext, data: DataBundle) -> dict[str, Any]:
    """Evaluate every member of ``cfg.ensemble`` on ``cfg.split`` and the ensemble built from them.

    With a corruption suite (``corruption=…``), also the "still correct?" table of the first
    ``ensemble.corruption_images`` images under each corruption, per member (:mod:`._ensemble_corruptions`).

    Writes ``tables/ensemble_accuracy.csv`` (top-1/top-5 per member and per combination, reference sets counted),
    ``tables/ensemble_uncertainty.csv`` (one row per image, most to least certain: ensemble class and probability,
    vote agreement, entropy, mutual information, each member's top class), and the figures
    ``ensemble_accuracy``, ``uncertainty_ranking`` and ``votes_<rank>_<image>`` (at most
    ``ensemble.max_figures``).

    Args:
        cfg: the composed ``evaluate`` config with an ``ensemble`` node (``members``, ``combine``, ``max_figures``).
        ctx: the run context (figures, tables, timer, device).
        data: the dataset bundle.

    Returns:
        Metrics: ``n``, ``members``, ``top1/<name>`` and ``top5/<name>`` per member and per ``ensemble_<combine>``,
        ``mean_entropy``, ``mean_mutual_information``, ``ranking`` (image names, most certain first) and
        ``objective`` (top-1 of the first combination in ``combine``).
    """
    ens = cfg.ensemble
    members = _member_nodes(ens)
    ctx.name(f"ensemble of {', '.join(str(m.get('label') or m['name']) for m in members)}")
    combine = check_combine(ens.get("combine"))
    ds: Dataset = data.split(cfg.split)
    if cfg.get("max_images"):
        ds = Subset(ds, range(min(int(cfg.max_images), len(ds))))  # type: ignore[arg-type]
    if len(ds) == 0:  # type: ignore[arg-type]
        raise ValueError(f"split {cfg.split!r} of dataset {data.name!r} is empty; pick another split")

    with ctx.timer("predict"):
        out = predict_members(_built_members(members, data, ctx.device), ds, ctx.device,
                              batch_size=int(cfg.batch_size), num_workers=int(cfg.get("num_workers", 0)),
                              progress=bool(cfg.get("progress", True)))
    probs, accept, names, member_names, class_names = (out[k] for k in ("probs", "accept", "names", "member_names",
                                                                        "class_names"))
    acc_rows = ensemble_accuracy(probs, accept, member_names, combine)
    scored = accept.any(1)

    order = rank_by_certainty(probs)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, len(order) + 1)
    table = uncertainty_table(probs, class_names, names, accept if scored.any() else None, member_names=member_names)
    labels = out["labels"].tolist()
    for i, row in enumerate(table):
        row["rank"] = int(rank[i])
        row["label"] = class_names[labels[i]] if labels[i] >= 0 else ""
        if not scored[i]:  # no reference set: correctness is unknown, not False
            for key in [k for k in row if k == "correct" or k.endswith("_correct")]:
                row[key] = None
    by_index = table
    table = [table[i] for i in order.tolist()]
    ctx.table("ensemble_accuracy", acc_rows)
    ctx.table("ensemble_uncertainty", [{"rank": r["rank"], "image": r["image"], "label": r["label"],
                                        **{k: v for k, v in r.items() if k not in ("rank", "image", "label")}}
                                       for r in table])

    metrics: dict[str, Any] = {"n": len(names), "n_scored": int(scored.sum()), "members": member_names,
                               "combine": combine}
    for r in acc_rows:
        metrics[f"top1/{r['model']}"] = r["top1"]
        if r["top5"] is not None:
            metrics[f"top5/{r['model']}"] = r["top5"]
    metrics["mean_entropy"] = float(sum(r["entropy"] for r in table) / len(table))
    metrics["mean_mutual_information"] = float(sum(r["mutual_information"] for r in table) / len(table))
    metrics["ranking"] = [r["image"] for r in table]
    metrics["objective"] = metrics[f"top1/ensemble_{combine[0]}"]
    _log_summary(acc_rows, table, member_names)
    _figures(ctx, ens, ds, probs, by_index, acc_rows, order, class_names, member_names)
    if cfg.get("corruption") and (cfg.corruption.get("names") or cfg.corruption.get("custom")):
        from xai_bench.tasks._ensemble_corruptions import ensemble_corruptions

        metrics.update(ensemble_corruptions(cfg, ctx, data, members, _built_members))
    return metrics


def _member_nodes(ens: DictConfig) -> list[dict[str, Any]]:
    """Members as a list of model nodes with a ``label``: ``members`` is either a mapping label → ``conf/model``
    node (what ``conf/ensemble/*.yaml`` compose from the model group) or a list of nodes (programmatic use)."""
    nodes = ens.get("members")
    if not nodes:
        raise ValueError("ensemble.members is empty; compose model configs into it, e.g. in conf/ensemble/<name>.yaml "
                         "`- /model@members.lite0: efficientnet_lite0`, or give a list of model nodes")
    members = OmegaConf.to_container(nodes, resolve=True)  # interpolations resolve against the whole config
    if isinstance(members, dict):
        members = [{**(m if isinstance(m, dict) else {"name": m}), "label": label} for label, m in members.items()]
    assert isinstance(members, list)
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not m.get("name"):
            raise ValueError(f"ensemble.members[{i}] = {m!r} must be a model config with a name, "
                             f"e.g. {{name: checkpoint, path: outputs/train/<run>/best}}")
    return members  # type: ignore[return-value]


def _built_members(nodes: list[dict[str, Any]], data: DataBundle,
                   device: torch.device) -> Iterator[tuple[str, nn.Module]]:
    """Build each member when it is drawn (and give photo datasets its eval transform), one in memory at a time."""
    for node in nodes:
        node = dict(node)
        label = node.pop("label", None)
        model = model_from_node(node, data, path="ensemble.members").to(device).eval()  # also re-prepares photos
        yield str(label or getattr(model, "name", node["name"])), model
        del model  # before the next member is built


def _figures(ctx: RunContext, ens: DictConfig, ds: Dataset, probs: Tensor, by_index: list[dict[str, Any]],
             acc_rows: list[dict[str, Any]], order: Tensor, class_names: list[str], member_names: list[str]) -> None:
    ctx.figure("ensemble_accuracy", viz.per_model_accuracy_figure(
        [r["model"] for r in acc_rows], [r["top1"] for r in acc_rows], ylabel="top-1 accuracy",
        highlight=("ensemble_mean", "ensemble_vote"),
        title=f"{ctx.subject}: members and ensemble (n={acc_rows[0]['n']})"))
    cap = int(ens.get("max_figures", 12))
    if cap <= 0:
        return
    n = len(by_index)
    # Beyond the cap, show both ends of the ranking: the most and the least certain images.
    ranked = order.tolist()
    picks = ranked if n <= cap else ranked[: cap - cap // 2] + ranked[n - cap // 2:]
    # Images as the last member saw them (any member's view will do for a figure).
    images = torch.stack([ds[i]["image"] for i in picks])
    rows = [by_index[i] for i in picks]
    ctx.figure("uncertainty_ranking", viz.uncertainty_strip(
        images, [r["entropy"] for r in rows],
        [f"{r['image']}: {r['ensemble_class']} {r['ensemble_prob']:.0%}" for r in rows], score_name="H"))
    mean = probs.mean(0)
    for img, i, r in zip(images, picks, rows):
        title = (f"#{r['rank']} {r['image']}" + (f" (label: {r['label']})" if r["label"] else "")
                 + f" · H={r['entropy']:.3f} MI={r['mutual_information']:.3f} · vote {r['vote_agreement']:.0%}")
        fig = viz.member_votes_figure(img, member_names, probs[:, i].argmax(-1).tolist(), probs[:, i], class_names,
                                      mean[i], title=title)
        ctx.figure(f"votes_{r['rank']:02d}_{_safe(r['image'])}", fig)


def _safe(name: str) -> str:
    return safe_name(name, "-")[:60]


def _log_summary(acc_rows: list[dict[str, Any]], table: list[dict[str, Any]], member_names: list[str]) -> None:
    lines = [f"{'model':>24}  {'top-1':>6}  {'top-5':>6}  (n={acc_rows[0]['n']})"]
    for r in acc_rows:
        top5 = "" if r["top5"] is None else f"{r['top5']:.3f}"
        lines.append(f"{r['model']:>24}  {r['top1']:6.3f}  {top5:>6}")
    lines.append("most → least certain (predictive entropy H, mutual information MI, vote agreement):")
    shown = table if len(table) <= 32 else table[:10] + table[-10:]  # both ends of a long ranking
    for r in shown:
        mark = "" if r.get("correct") is None else " ✓" if r["correct"] else " ✗"
        votes = ", ".join(str(r[f"{m}_class"]) for m in member_names)
        lines.append(f"  {r['rank']:>3}. {r['image']}: {r['ensemble_class']} {r['ensemble_prob']:.2f}{mark}  "
                     f"H={r['entropy']:.3f} MI={r['mutual_information']:.3f} agree={r['vote_agreement']:.2f}  "
                     f"[{votes}]")
    log.info("\n".join(lines))
