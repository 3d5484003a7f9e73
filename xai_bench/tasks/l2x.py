"""``python train.py task=l2x``: train an L2X explainer (Chen et al. 2018) for a trained classifier.

The explained model (``model=…``, usually ``model=checkpoint model.path=<run>/best``) labels every image of the
dataset with its prediction; the L2X network (:mod:`xai_bench.models.l2x`: selector + approximator) then learns to
predict those labels from the ``l2x.k`` patches its selector picks. That is ordinary classifier training, so it
runs in the ordinary loop (:func:`xai_bench.training.fit`): the same ``trainer``/``optim``/``scheduler`` configs,
``checkpoints/last.pt`` every epoch, ``trainer.resume=<run>`` to continue a killed run, and ``best/`` chosen on the
validation split — its accuracy there is L2X's *post-hoc accuracy* (agreement with the model from k patches).
Chen et al. fit the model's predicted distribution; the hard predicted class is used here so that the loop's
cross-entropy applies unchanged. Explain with ``attribution=l2x attribution.l2x.method.path=<this run>/best``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import Dataset

from xai_bench.data import DataBundle, make_loader
from xai_bench.data.base import TransformedDataset
from xai_bench.errors import ConfigError
from xai_bench.models.l2x import l2x
from xai_bench.tasks.common import run_context
from xai_bench.tasks.setup import build_data, build_model
from xai_bench.training import fit

log = logging.getLogger(__name__)

L2X_KEYS = ("k", "patch_size", "tau", "width")


class _ModelLabels(Dataset):
    """A split whose labels are the explained model's predictions (images and masks unchanged)."""

    def __init__(self, base: Dataset, labels: Tensor) -> None:
        self.base, self.labels = base, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.base[i], "label": int(self.labels[i])}


@torch.no_grad()
def _predict(model: nn.Module, ds: Dataset, device: torch.device, batch_size: int) -> Tensor:
    out = [model(batch["image"].to(device)).argmax(1).cpu() for batch in make_loader(ds, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def relabel(data: DataBundle, model: nn.Module, device: torch.device, batch_size: int = 512) -> DataBundle:
    """``data`` with every split's labels replaced by ``model``'s predictions; training augmentation is dropped (the
    explainer must see the very image the prediction was made on)."""
    splits: dict[str, Dataset | None] = {}
    for name in ("train", "val", "test"):
        ds = getattr(data, name)
        while isinstance(ds, TransformedDataset):
            ds = ds.base
        splits[name] = None if ds is None else _ModelLabels(ds, _predict(model, ds, device, batch_size))
    return DataBundle(name=data.name, num_classes=data.num_classes, class_names=data.class_names,
                      channels=data.channels, image_size=data.image_size, has_masks=data.has_masks,
                      ready_shape=data.ready_shape, **splits)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the explainer; returns the loop's metrics plus ``test/posthoc_acc`` and ``checkpoint``."""
    with run_context(cfg, "l2x") as ctx:
        opts = dict(cfg.get("l2x") or {})
        unknown = sorted(set(opts) - set(L2X_KEYS))
        if unknown:
            raise ConfigError(f"l2x: unknown key(s) {unknown}; valid keys: {', '.join(L2X_KEYS)}")
        data = build_data(cfg)
        model = build_model(cfg, data).to(ctx.device).eval()
        ctx.name(f"l2x-{model.name}", data.name)
        c, h, w = model.input_size
        if h != w:
            raise ConfigError(f"task=l2x needs square images, the model takes {h}×{w}")
        with ctx.timer("relabel"):
            labelled = relabel(data, model, ctx.device, int(cfg.trainer.eval_batch_size))
        explainer = l2x(num_classes=model.num_classes, in_chans=c, input_size=h, **opts)
        with ctx.timer("fit"):
            ctx.metrics.update(fit(explainer, labelled, trainer=cfg.trainer, optim=cfg.optim,
                                   scheduler=cfg.get("scheduler"), out_dir=ctx.out_dir, device=ctx.device,
                                   seed=int(cfg.seed), tracker=ctx.tracker))
        ctx.metrics["objective"] = ctx.metrics.get(f"best/{cfg.trainer.early_stopping.monitor}")
        from xai_bench.models.l2x import load_l2x

        best = load_l2x(str(ctx.out_dir / "best")).to(ctx.device)
        if labelled.test is not None and len(labelled.test):
            loader = make_loader(labelled.test, int(cfg.trainer.eval_batch_size))
            with torch.no_grad():
                hits = sum(int((best(b["image"].to(ctx.device)).argmax(1).cpu() == b["label"]).sum()) for b in loader)
            ctx.metrics["test/posthoc_acc"] = hits / len(labelled.test)
        ctx.metrics["checkpoint"] = str(ctx.out_dir / "best")
        log.info("L2X explainer (k=%s patches of %s px): post-hoc accuracy %s; explain with attribution=l2x "
                 "attribution.l2x.method.path=%s", best.net.k, best.net.patch_size,
                 ctx.metrics.get("test/posthoc_acc"), ctx.out_dir / "best")
        return dict(ctx.metrics)
