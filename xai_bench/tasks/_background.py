"""Background sets for attribution methods whose baselines are drawn from data (``baseline: data``).

Expected Gradients (Erion et al. 2021) and DeepLIFT-SHAP (Lundberg & Lee 2017) average over references sampled from
the data distribution instead of one hand-picked image. The references come from the dataset's *training* split
(never the images being explained), without training-time augmentation, ``baseline_samples`` of them drawn with their
own generator seeded by ``baseline_seed``, so the set depends on neither the run seed nor the other methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from xai_bench.attribution.baselines import DATA_BASELINE
from xai_bench.data import DataBundle
from xai_bench.data.base import TransformedDataset
from xai_bench.errors import ConfigError

__all__ = ["draw_background", "needs_background"]


def needs_background(node: Mapping[str, Any]) -> bool:
    """Whether a ``conf/attribution`` node asks for a background set (``baseline: data``)."""
    return node.get("baseline") == DATA_BASELINE


def draw_background(data: DataBundle, node: Mapping[str, Any], key: str, device: torch.device | str = "cpu"
                    ) -> Tensor:
    """``baseline_samples`` images of ``data``'s training split, chosen without replacement by ``baseline_seed``.

    Raises:
        ConfigError: no ``baseline_samples``, a dataset without a training split, or fewer training images than
            asked for — naming ``attribution.<key>`` and the fix.
    """
    size, seed = node.get("baseline_samples"), node.get("baseline_seed")
    if not size or int(size) < 1:
        raise ConfigError(f"attribution.{key}.baseline=data needs attribution.{key}.baseline_samples (the size of "
                          f"the background set, e.g. 32)")
    ds = data.train
    if ds is None:
        raise ConfigError(f"attribution.{key}.baseline=data draws its background set from the training split, but "
                          f"dataset {data.name!r} has none; use a dataset with one (e.g. synthetic_shapes with "
                          f"n_train > 0) or another baseline (attribution.{key}.baseline=uniform)")
    while isinstance(ds, TransformedDataset):  # no training-time augmentation in the references
        ds = ds.base
    n = len(ds)  # type: ignore[arg-type]
    if int(size) > n:
        raise ConfigError(f"attribution.{key}.baseline_samples={size} but the training split of {data.name!r} has "
                          f"only {n} images; lower it")
    g = torch.Generator().manual_seed(int(seed if seed is not None else 0))
    idx = torch.randperm(n, generator=g)[: int(size)].tolist()
    return torch.stack([ds[i]["image"] for i in idx]).float().to(device)
