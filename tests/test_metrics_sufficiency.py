"""Sufficiency: counted by hand on built maps and predictions, distances against scipy's cdist, argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.spatial.distance import cdist
from torch import nn

from xai_bench.config import ConfigKeyError
from xai_bench.config.validate import check_target
from xai_bench.metrics.explanation import METRICS
from xai_bench.metrics.explanation.sufficiency import Sufficiency, explanation_distances

CONF = Path(__file__).resolve().parents[1] / "conf" / "metric" / "sufficiency.yaml"


class FirstPixel(nn.Module):
    """Logits = the first pixel's channels, so an image's predicted class is the argmax of its pixel (0, 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0, 0]


def images_predicting(classes: list[int]) -> torch.Tensor:
    x = torch.zeros(len(classes), 3, 4, 4)
    x[torch.arange(len(classes)), torch.tensor(classes), 0, 0] = 1
    return x


def one_hot_maps(pixels: list[int], scale: list[float] | None = None) -> torch.Tensor:
    """Each map is a single bright pixel (optionally scaled: normalisation removes the scale)."""
    m = torch.zeros(len(pixels), 1, 16)
    values = torch.tensor(scale or [1.0] * len(pixels), dtype=torch.float32)
    m[torch.arange(len(pixels)), 0, torch.tensor(pixels)] = values
    return m.view(-1, 1, 4, 4)


@pytest.mark.parametrize("distance_func", ["seuclidean", "euclidean", "cosine"])
def test_counted_by_hand(distance_func):
    # maps: four alike (pixel 0), two alike (pixel 5), one alone (pixel 9); alike maps are at distance 0, the
    # others at the largest distance (1 after normalisation), so only same-group images are neighbours
    classes = [0, 0, 0, 1, 2, 2, 1]
    maps = one_hot_maps([0, 0, 0, 0, 5, 5, 9], scale=[1, 2, 3, 4, 1, 7, 1])
    out = Sufficiency(distance_func=distance_func)(FirstPixel(), images_predicting(classes), [0] * 7, maps)
    # group of four: three neighbours each; 2 of 3 share the class for the class-0 images, none for the class-1 one
    expected = torch.tensor([2 / 3, 2 / 3, 2 / 3, 0, 1, 1, 0])  # the lone map has no neighbours: 0 (Quantus)
    assert torch.allclose(out, expected, atol=1e-6)


def test_uses_predictions_not_targets_and_threshold_bounds():
    x, maps = images_predicting([0, 1, 1]), one_hot_maps([0, 0, 7])
    m = Sufficiency(distance_func="euclidean")
    assert torch.allclose(m(FirstPixel(), x, [2, 2, 2], maps), torch.tensor([0.0, 0.0, 0.0]))
    # threshold 1: every batch-mate is a neighbour; image 1 agrees with image 2, image 0 with nobody
    everyone = Sufficiency(threshold=1.0, distance_func="euclidean")(FirstPixel(), x, [0, 0, 0], maps)
    assert torch.allclose(everyone, torch.tensor([0.0, 0.5, 0.5]))
    # alone in its batch, an image has no neighbours
    assert m(FirstPixel(), x[:1], [0], maps[:1]).item() == 0.0


def test_distances_match_scipy_cdist():
    a = torch.randn(6, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for kind in ("seuclidean", "euclidean", "cosine"):
        assert np.allclose(explanation_distances(a, kind).numpy(), cdist(a.numpy(), a.numpy(), kind), atol=1e-9), kind
    with pytest.raises(ValueError, match="distance_func"):
        explanation_distances(a, "manhattan")


@pytest.mark.parametrize("kwargs,match", [
    ({"threshold": -0.1}, "threshold"), ({"threshold": "high"}, "threshold"),
    ({"distance_func": "l1"}, "distance_func"),
])
def test_bad_arguments_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sufficiency(**kwargs)


def test_yaml_builds_the_registered_class_and_misspelt_keys_fail():
    node = OmegaConf.to_container(OmegaConf.load(CONF))
    check_target(node, "metric.sufficiency")
    assert METRICS.get("sufficiency") is Sufficiency and Sufficiency.higher_is_better
    with pytest.raises(ConfigKeyError, match="treshold"):
        check_target({**node, "treshold": 0.5}, "metric.sufficiency")
