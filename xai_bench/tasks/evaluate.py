"""``evaluate.py``: accuracy (top-1/top-5 with reference sets), per-class accuracy, confusion matrix, calibration,
a per-image top-k table, and accuracy under a corruption suite."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import Subset

from xai_bench import viz
from xai_bench.data import make_loader
from xai_bench.metrics import classification_report, predict
from xai_bench.tasks.common import RunContext, run_context
from xai_bench.tasks.setup import build_data, build_model

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    with run_context(cfg, "evaluate") as ctx:
        data = build_data(cfg)
        if cfg.get("ensemble"):  # the members replace `model`: per-model and ensemble accuracy, uncertainty ranking
            from xai_bench.tasks.ensemble import run_ensemble

            ctx.metrics.update(run_ensemble(cfg, ctx, data))
            return dict(ctx.metrics)
        model = build_model(cfg, data).to(ctx.device).eval()
        ds = data.split(cfg.split)
        if cfg.get("max_images"):
            ds = Subset(ds, range(min(int(cfg.max_images), len(ds))))
        loader = make_loader(ds, cfg.batch_size, num_workers=cfg.num_workers)
        with ctx.timer("predict"):
            preds = predict(model, loader, ctx.device, progress=cfg.progress)
        class_names = model.class_names
        report = classification_report(preds, class_names)
        if report["n"]:
            ctx.metrics.update({k: report[k] for k in ("n", "top1", "top5", "loss", "ece", "per_class_acc")})
            ctx.metrics["objective"] = report["top1"]
            log.info("%s on %s/%s: top-1 %.4f  top-5 %.4f  ECE %.4f  (n=%d)", model.name, data.name, cfg.split,
                     report["top1"], report["top5"], report["ece"], report["n"])
            if len(class_names) <= 50:
                ctx.figure("confusion_matrix", viz.confusion_matrix_figure(report["confusion_matrix"].numpy(),
                                                                           class_names))
            fig, _ = viz.reliability_diagram(report["_conf"].numpy(), report["_correct"].numpy())
            ctx.figure("reliability_diagram", fig)
        ctx.table("predictions", _topk_rows(preds, class_names, int(cfg.topk)))
        if len(preds.names) <= 32:
            for row in _topk_rows(preds, class_names, 1):
                log.info("  %s: %s (%.3f)%s", row["image"], row["top1"], row["top1_prob"],
                         "" if row["correct"] is None else "  ✓" if row["correct"] else "  ✗")
        if cfg.get("corruption") and (cfg.corruption.get("names") or cfg.corruption.get("custom")):
            _evaluate_corruptions(cfg, ctx, model, loader, preds.names)
        return dict(ctx.metrics)


def _topk_rows(preds: Any, class_names: list[str], k: int) -> list[dict[str, Any]]:
    top = preds.probs.topk(min(k, preds.probs.shape[1]), dim=1)
    rows = []
    for i, name in enumerate(preds.names):
        scored = bool(preds.accept[i].any())
        row: dict[str, Any] = {"image": name,
                               "label": class_names[preds.labels[i]] if preds.labels[i] >= 0 else "",
                               "correct": bool(preds.accept[i, top.indices[i, 0]]) if scored else None}
        for j in range(top.indices.shape[1]):
            row[f"top{j + 1}"] = class_names[top.indices[i, j]]
            row[f"top{j + 1}_prob"] = round(float(top.values[i, j]), 4)
        rows.append(row)
    return rows


def _evaluate_corruptions(cfg: DictConfig, ctx: RunContext, model: torch.nn.Module, loader: Any,
                          names: list[str]) -> None:
    from xai_bench.robustness.corruptions import build_suite
    from xai_bench.tasks.setup import model_from_node
    from xai_bench.robustness.corruption_eval import corruption_correctness, corruption_summary, flip_rows, split_label

    suite = build_suite(cfg.corruption)
    models = {"model": model}
    if cfg.get("reference_model"):
        # a conf/model node: `+model@reference_model=efficientnet_lite1` (or an inline {name: …, pretrained: true})
        models["reference"] = model_from_node(cfg.reference_model, path="reference_model").to(ctx.device).eval()
    with ctx.timer("corruptions"):
        correct, scored = corruption_correctness(models, loader, suite, ctx.device, progress=cfg.progress)
    summary = corruption_summary(correct["model"], correct.get("reference"), scored)
    if not summary["n_scored"]:
        log.warning("corruptions: no image has a label or reference set, so there is no accuracy to report")
        return
    ctx.metrics["corruptions"] = summary
    for key in ("mean_corruption_error", "relative_corruption_error", "mCE", "relative_mCE"):
        if key in summary:
            ctx.metrics[key] = summary[key]
            log.info("%s: %.4f", key, summary[key])
    acc = summary["accuracy"]
    ctx.table("corruption_accuracy", [{"corruption": split_label(k)[0], "severity": split_label(k)[1], "label": k,
                                       "accuracy": v} for k, v in acc.items()])
    ctx.table("flips", flip_rows(correct["model"], names, scored))
    graded = sorted({split_label(k)[0] for k in acc if split_label(k)[1] is not None})
    if graded:
        sevs = sorted({split_label(k)[1] for k in acc if split_label(k)[1] is not None})
        grid = [[acc.get(f"{c}/{s}", float("nan")) for s in sevs] for c in graded]
        ctx.figure("corruption_heatmap", viz.corruption_heatmap(grid, graded, sevs))
    custom = [k for k in acc if split_label(k)[1] is None]
    ctx.figure("corruption_accuracy", viz.per_model_accuracy_figure(custom, [acc[k] for k in custom],
                                                                    highlight=("clean",)))
