"""Complexity metrics: hand-computed values, batch invariance, the YAMLs build the classes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from xai_bench.metrics.explanation import METRICS
from xai_bench.metrics.explanation.complexity import Complexity, EffectiveComplexity, Sparseness

CONF = Path(__file__).resolve().parents[1] / "conf" / "metric"
NAMES = ["sparseness", "complexity", "effective_complexity"]


def images(n: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def one_hot_map(n: int = 1, size: int = 8) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size)
    m[:, :, 2, 5] = 3.0
    return m


def test_constant_map_is_not_sparse_and_maximally_complex():
    x, m = images(1), torch.full((1, 1, 8, 8), 0.7)
    assert Sparseness()(None, x, 0, m).item() == pytest.approx(0.0, abs=1e-6)
    assert Complexity()(None, x, 0, m).item() == pytest.approx(math.log(64), rel=1e-6)
    assert EffectiveComplexity()(None, x, 0, m).item() == 64


def test_one_pixel_map():
    x, m = images(1), one_hot_map()
    d = 64
    # Gini of one non-zero value among d: (d − 1)/d, up to Quantus's 1e-7 offset
    assert Sparseness()(None, x, 0, m).item() == pytest.approx((d - 1) / d, abs=1e-5)
    assert Complexity()(None, x, 0, m).item() == pytest.approx(0.0, abs=1e-6)
    assert EffectiveComplexity()(None, x, 0, m).item() == 1


def test_sparseness_matches_the_gini_formula_and_abs():
    x = images(1, 4)
    v = torch.arange(16.0).view(1, 1, 4, 4) - 8  # signed: abs makes it |v|
    a = torch.sort((v.abs() / 8).flatten() + 1e-7).values.double()
    d = 16
    i = torch.arange(1, d + 1, dtype=torch.float64)
    expected = ((2 * i - d - 1) * a).sum() / (d * a.sum())
    assert Sparseness()(None, x, 0, v).item() == pytest.approx(float(expected), rel=1e-6)
    # channels are summed first: two channels that cancel give an all-zero map → Gini of equal values = 0
    two = torch.cat([v, -v], 1)
    assert Sparseness()(None, x, 0, two).item() == pytest.approx(0.0, abs=1e-6)


def test_effective_complexity_threshold_is_relative_to_the_peak():
    x = images(1, 4)
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 0, :4] = torch.tensor([10.0, 1.0, 0.1, 1e-5])
    assert EffectiveComplexity(eps=0.05)(None, x, 0, m).item() == 2  # normalised: 1, 0.1, 0.01, 1e-6
    assert EffectiveComplexity(eps=0.2)(None, x, 0, m).item() == 1
    assert EffectiveComplexity(eps=0.05, normalise=False)(None, x, 0, m).item() == 3  # 10, 1, 0.1
    with pytest.raises(ValueError, match="eps"):
        EffectiveComplexity(eps=-1)


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance_and_yaml(name):
    node = OmegaConf.load(CONF / f"{name}.yaml")
    metric = instantiate(node)
    assert type(metric) is METRICS.get(name) and metric.name == name and metric.category == "complexity"
    x = images(4)
    maps = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    maps[1] *= 100  # a different scale must not change the others' scores
    t = torch.tensor([0, 1, 2, 0])
    batch = metric(None, x, t, maps)
    alone = torch.cat([metric(None, x[i:i + 1], t[i:i + 1], maps[i:i + 1]) for i in range(4)])
    assert batch.shape == (4,) and torch.allclose(batch, alone)
    assert torch.equal(batch, metric(None, x, t, maps))
