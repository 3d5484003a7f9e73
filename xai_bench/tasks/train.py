"""``train.py``: fit a classifier, then evaluate its best checkpoint on the test split."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig

from xai_bench.data import make_loader
from xai_bench.metrics import classification_report, predict
from xai_bench.models import load_checkpoint
from xai_bench.tasks.common import run_context
from xai_bench.tasks.setup import build_data, build_model
from xai_bench.training import fit

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("task_name") == "l2x":  # python train.py task=l2x: train an L2X explainer for cfg.model
        from xai_bench.tasks import l2x

        return l2x.run(cfg)
    with run_context(cfg, "train") as ctx:
        data = build_data(cfg)
        model = build_model(cfg, data)
        ctx.name(model.name, data.name)
        from xai_bench import viz

        sample = [data.split("train")[i] for i in range(min(16, len(data.split("train"))))]
        ctx.figure("train_samples", viz.image_grid(torch.stack([s["image"] for s in sample]),
                                                   titles=[data.class_names[s["label"]] for s in sample]))
        with ctx.timer("fit"):
            ctx.metrics.update(fit(model, data, trainer=cfg.trainer, optim=cfg.optim, scheduler=cfg.get("scheduler"),
                                   out_dir=ctx.out_dir, device=ctx.device, seed=int(cfg.seed),
                                   tracker=ctx.tracker))
        # the validation score model selection used: what a sweep should optimise (never the test split)
        ctx.metrics["objective"] = ctx.metrics.get(f"best/{cfg.trainer.early_stopping.monitor}")
        best = load_checkpoint(ctx.out_dir / "best").to(ctx.device)
        split = "test" if data.test is not None else "val"
        loader = make_loader(data.split(split), cfg.trainer.eval_batch_size, num_workers=cfg.trainer.num_workers)
        with ctx.timer("evaluate"):
            report = classification_report(predict(best, loader, ctx.device), data.class_names)
        ctx.metrics.update({f"{split}/top1": report["top1"], f"{split}/top5": report["top5"],
                            f"{split}/loss": report["loss"], f"{split}/ece": report["ece"],
                            f"{split}/per_class_acc": report["per_class_acc"],
                            "checkpoint": str(ctx.out_dir / "best")})
        ctx.figure(f"{split}_confusion_matrix", viz.confusion_matrix_figure(
            report["confusion_matrix"].numpy(), data.class_names))
        log.info("%s top-1 %.4f  top-5 %.4f  ECE %.4f  (best checkpoint: %s)", split, report["top1"], report["top5"],
                 report["ece"], ctx.out_dir / "best")
        return dict(ctx.metrics)
