"""Contract test over every conf/metric/*.yaml (DomainBed style): compose, build, run on a tiny model and two images,
and check the contract: one finite-or-NaN float score per image, deterministic, the model's flags and hooks left as
they were, and the metric's facts consistent with its file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import xai_bench  # noqa: F401
from conftest import attribution_node
from xai_bench.attribution.runner import build_attribution
from xai_bench.metrics.explanation import CATEGORIES, METRICS, ExplanationMetric
from xai_bench.models.base import ImageClassifier

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "metric"
YAMLS = sorted(CONF_DIR.glob("*.yaml"))
# Only keys a file already has are lowered (a metric's cost on 2 images × 16² must stay well under a second).
CHEAP = {"nr_samples": 3, "nr_runs": 4, "n_perturb_samples": 2, "features_in_step": 16, "subset_size": 16,
         "patch_sizes": [4], "patch_size": 4, "win_size": 3, "nr_steps": 3, "segmentation_kwargs": None}


def tiny_model() -> ImageClassifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    return ImageClassifier(net, num_classes=3, input_size=(3, 16, 16), default_layer="net.2")


def load(path: Path) -> ExplanationMetric:
    node = OmegaConf.load(path)
    for key, value in CHEAP.items():
        if key in node and not (key == "segmentation_kwargs" or value is None):
            node[key] = value
    if isinstance(node.get("k"), int) and node.k > 1:  # top-k in pixels (a fraction elsewhere)
        node.k = 20
    return instantiate(node)


def test_there_is_a_yaml_for_every_registered_metric_and_back():
    assert {p.stem for p in YAMLS} == set(METRICS.list())
    assert len(YAMLS) >= 25


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_metric_contract_tiny_model(path):
    metric = load(path)
    assert metric.name == path.stem and metric.category in CATEGORIES and isinstance(metric.higher_is_better, bool)
    model = tiny_model().train()  # the metric must evaluate in eval mode and give the train flag back
    g = torch.Generator().manual_seed(0)
    x, t = torch.rand(2, 3, 16, 16, generator=g), torch.tensor([0, 2])
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[..., 4:12, 4:12] = True
    node = attribution_node("saliency")

    def explainer(images, targets, model=None):
        return build_attribution(node, model if model is not None else tiny_model()).attribute(images, targets)

    maps = explainer(x, t)
    a = metric(model, x, t, maps, masks=masks, explainer=explainer)
    b = load(path)(model, x, t, maps, masks=masks, explainer=explainer)
    assert a.shape == (2,) and a.dtype == torch.float32
    assert not torch.isinf(a).any()
    assert torch.equal(a.nan_to_num(-9.0), b.nan_to_num(-9.0)), f"{path.stem} is not deterministic"
    assert all(m.training for m in model.modules())
    assert all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())
