"""``evaluate.py``: accuracy (top-1/top-5 with reference sets), per-class accuracy, confusion matrix, calibration,
a per-image top-k table, and accuracy under a corruption suite.

While running, ``shards/`` keeps every finished batch of the prediction loop and of the corruption loop
(:mod:`xai_bench.resume`), so ``resume=<run dir>`` continues a killed run to the tables and metrics an uninterrupted
one gives."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import Subset

from xai_bench import viz
from xai_bench.data import make_loader
from xai_bench.metrics import classification_report, predict
from xai_bench.resume import ShardStore, results_config
from xai_bench.tasks.common import RunContext, run_context
from xai_bench.robustness.corruption_eval import split_label
from xai_bench.tasks._corruption_figures import corruption_figures
from xai_bench.tasks.setup import build_data, build_model

log = logging.getLogger(__name__)

_MIN_CALIBRATION_IMAGES = 100  # fewer: the reliability diagram's title carries a caveat
# Settings a resumed run may change: they act on the finished predictions, not on what the batches hold.
_NOT_IN_BATCHES = ("topk",)


def run(cfg: DictConfig) -> dict[str, Any]:
    with run_context(cfg, "evaluate") as ctx:
        if cfg.get("ensemble"):  # the members replace `model`: per-model and ensemble accuracy, uncertainty ranking
            from xai_bench.tasks.ensemble import run_ensemble

            if cfg.get("resume"):
                raise ValueError("resume= is not supported with ensemble=; rerun the ensemble evaluation")
            ctx.metrics.update(run_ensemble(cfg, ctx, build_data(cfg)))
            return dict(ctx.metrics)
        store = ShardStore.open(ctx.out_dir, task="evaluate", config=results_config(cfg, ignore=_NOT_IN_BATCHES),
                                device=str(ctx.device), resume=cfg.get("resume"))
        if store.resumed_from is not None:
            ctx.metrics["resumed_from"] = str(store.resumed_from)
        data = build_data(cfg)
        model = build_model(cfg, data).to(ctx.device).eval()
        ctx.name(model.name)
        ds = data.split(cfg.split)
        if cfg.get("max_images"):
            ds = Subset(ds, range(min(int(cfg.max_images), len(ds))))
        loader = make_loader(ds, cfg.batch_size, num_workers=cfg.num_workers)
        with ctx.timer("predict"):
            preds = predict(model, loader, ctx.device, progress=cfg.progress, store=store.part("predict"))
        class_names = model.class_names
        report = classification_report(preds, class_names)
        if report["n"]:
            ctx.metrics.update({k: report[k] for k in ("n", "top1", "top5", "loss", "ece", "per_class_acc")})
            ctx.metrics["objective"] = report["top1"]
            log.info("%s on %s/%s: top-1 %.4f  top-5 %.4f  ECE %.4f  (n=%d)", model.name, data.name, cfg.split,
                     report["top1"], report["top5"], report["ece"], report["n"])
            where = f"{model.name} on {data.name}/{cfg.split}"
            if len(class_names) <= 50:
                ctx.figure("confusion_matrix", viz.confusion_matrix_figure(
                    report["confusion_matrix"].numpy(), class_names, title=f"{where} (n={report['n']})"))
            if report["n"] < _MIN_CALIBRATION_IMAGES:
                log.warning("ECE from %d images is unreliable (most of the 15 confidence bins are empty); the "
                            "reliability diagram says so in its title. Use ≥ %d images to compare calibration.",
                            report["n"], _MIN_CALIBRATION_IMAGES)
            fig, _ = viz.reliability_diagram(report["_conf"].numpy(), report["_correct"].numpy(), title=where,
                                             min_samples=_MIN_CALIBRATION_IMAGES)
            ctx.figure("reliability_diagram", fig)
        ctx.table("predictions", _topk_rows(preds, class_names, int(cfg.topk)))
        if len(preds.names) <= 32:
            for row in _topk_rows(preds, class_names, 1):
                log.info("  %s: %s (%.3f)%s", row["image"], row["top1"], row["top1_prob"],
                         "" if row["correct"] is None else "  ✓" if row["correct"] else "  ✗")
        if cfg.get("corruption") and (cfg.corruption.get("names") or cfg.corruption.get("custom")):
            _evaluate_corruptions(cfg, ctx, model, loader, preds.names, store)
        store.close()
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
                          names: list[str], store: ShardStore) -> None:
    from xai_bench.robustness.corruption_eval import corruption_correctness, corruption_summary, flip_rows
    from xai_bench.robustness.corruptions import build_suite
    from xai_bench.tasks.setup import model_from_node

    suite = build_suite(cfg.corruption)
    models = {"model": model}
    if cfg.get("reference_model"):
        # a conf/model node: `+model@reference_model=efficientnet_lite1` (or an inline {name: …, pretrained: true})
        models["reference"] = model_from_node(cfg.reference_model, path="reference_model").to(ctx.device).eval()
    with ctx.timer("corruptions"):
        run = corruption_correctness(models, loader, suite, ctx.device, progress=cfg.progress,
                                     keep=max(int(cfg.get("gallery_images", 1)), 0),
                                     store=store.part("corruptions"))
    summary = corruption_summary(run.correct["model"], run.correct.get("reference"), run.scored)
    if not summary["n_scored"]:
        log.warning("corruptions: no image has a label or reference set, so there is no accuracy to report")
        return
    summary["suite"] = _suite_name(cfg)
    ctx.metrics["corruptions"] = summary
    for key in ("mean_corruption_error", "relative_corruption_error", "mCE", "relative_mCE"):
        if key in summary:
            ctx.metrics[key] = summary[key]
            log.info("%s: %.4f", key, summary[key])
    for note in summary.get("notes", []):
        log.info("corruptions: %s", note)
    acc = summary["accuracy"]
    ctx.table("corruption_accuracy", [{"corruption": split_label(k)[0], "severity": split_label(k)[1], "label": k,
                                       "accuracy": v} for k, v in acc.items()])
    class_names = list(model.class_names)
    ctx.table("flips", flip_rows(run.correct["model"], names, run.scored, run.predictions["model"], class_names))
    corruption_figures(ctx, summary, run, names, class_names, model.name)


def _suite_name(cfg: DictConfig) -> str:
    """The corruption suite's config name (``imagenet_c``, ``basic``) under Hydra, else a description."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("corruption")
        if choice:
            return str(choice)
    from xai_bench.robustness.corruptions import CORRUPTIONS, IMAGENET_C_NAMES

    names = set(cfg.corruption.get("names") or [])
    if names and all(n in CORRUPTIONS for n in names):
        return "imagenet_c" if set(IMAGENET_C_NAMES) <= names else f"imagenet_c ({len(names)} corruptions)"
    return "corruptions"
