"""Faithfulness metrics: hand-computed scores on a corner-patch model, batch invariance, seeded determinism, and a
contract test over every conf/metric/*.yaml of the family."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from xai_bench.config.validate import check_target
from xai_bench.metrics.explanation import METRICS
from xai_bench.metrics.explanation import faithfulness as F
from xai_bench.metrics.explanation._perturb import pearson, spearman, trapezoid

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "metric"
FAMILY = {
    "deletion": "Deletion", "insertion": "Insertion", "pixel_flipping": "PixelFlipping",
    "region_perturbation": "RegionPerturbation", "faithfulness_correlation": "FaithfulnessCorrelation",
    "faithfulness_estimate": "FaithfulnessEstimate", "monotonicity_correlation": "MonotonicityCorrelation",
}
S5 = 1 / (1 + math.exp(-5))  # σ(5): the model's probability with the corner patch at 1; σ(−5) = 1 − S5 at 0


class CornerModel(nn.Module):
    """Logit of class 1 = 10 · mean of the top-left 2×2 patch − 5; class 0 logit = 0. Only those 4 pixels matter."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))  # gives model_scores a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[:, :, :2, :2].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(patch), 10 * patch - 5], dim=1)


def corner_map(n: int = 1, size: int = 8, reverse: bool = False) -> torch.Tensor:
    """A map ranking the corner patch first (or last), the other pixels in a fixed order."""
    m = torch.arange(size * size, 0, -1, dtype=torch.float32).view(1, 1, size, size).repeat(n, 1, 1, 1)
    m[:, :, :2, :2] += 1000
    return -m if reverse else m


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def random_batch(n: int = 3, size: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g), torch.tensor([0, 1, 2] * n)[:n],
            torch.randn(n, 1, size, size, generator=g))


ONES = torch.ones(1, 1, 8, 8)
ONE = torch.tensor([1])


# ---------------------------------------------------------------- helpers


def test_helpers_match_hand_values():
    assert torch.allclose(trapezoid(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0.0, 0.5, 1.0])),
                          torch.tensor([0.25]))
    assert torch.allclose(pearson(torch.tensor([[1.0, 2, 3]]), torch.tensor([[2.0, 4, 7]])),
                          torch.tensor([0.9933992]), atol=1e-6)
    assert torch.isnan(pearson(torch.tensor([[1.0, 1, 1]]), torch.tensor([[1.0, 2, 3]]))).all()
    # ties get average ranks: ranks (1.5, 1.5, 3) vs (1, 2, 3) -> r = 0.8660254 (scipy.stats.spearmanr)
    assert torch.allclose(spearman(torch.tensor([[5.0, 5, 9]]), torch.tensor([[1.0, 2, 3]])),
                          torch.tensor([0.8660254]), atol=1e-6)


# ---------------------------------------------------------------- deletion / insertion


def test_deletion_hand_computed_floor_and_reversed_map():
    metric = F.Deletion(pixels_per_step=4)  # 64 pixels: 16 steps; the corner goes in the first step
    curve = metric.curves(CornerModel(), ONES, ONE, corner_map())
    assert curve.shape == (1, 17)
    assert torch.allclose(curve[0], torch.tensor([S5] + [1 - S5] * 16))
    floor = ((S5 + (1 - S5)) / 2 + 15 * (1 - S5)) / 16
    assert metric(CornerModel(), ONES, ONE, corner_map()).item() == pytest.approx(floor, abs=1e-6)
    # ranked last, the corner survives until the final step
    worst = (15 * S5 + (S5 + 1 - S5) / 2) / 16
    assert metric(CornerModel(), ONES, ONE, corner_map(reverse=True)).item() == pytest.approx(worst, abs=1e-6)


def test_insertion_hand_computed_ceiling():
    metric = F.Insertion(pixels_per_step=4, substrate="zeros")
    curve = metric.curves(CornerModel(), ONES, ONE, corner_map())
    assert torch.allclose(curve[0], torch.tensor([1 - S5] + [S5] * 16))
    top = ((1 - S5 + S5) / 2 + 15 * S5) / 16
    assert metric(CornerModel(), ONES, ONE, corner_map()).item() == pytest.approx(top, abs=1e-6)
    assert metric(CornerModel(), ONES, ONE, corner_map(reverse=True)).item() < 0.1


def test_deletion_default_steps_and_partial_last_step():
    assert F.Deletion().curves(CornerModel(), torch.ones(1, 1, 12, 12), ONE, corner_map(size=12)).shape == (1, 33)
    # 10 pixels per step on 64: 7 steps, the last one of 4 pixels counts 4/64 of the x axis
    curve = F.Deletion(pixels_per_step=10).curves(CornerModel(), ONES, ONE, corner_map())
    assert curve.shape == (1, 8)


@pytest.mark.parametrize("substrate", ["zeros", "black", "mean", "blur"])
def test_substrates_fill_removed_pixels(substrate):
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    curve = F.Deletion(pixels_per_step=64, substrate=substrate).curves(CornerModel(), images, [1, 1],
                                                                       corner_map(2))
    full = {"zeros": torch.zeros(2), "black": images.amin((1, 2, 3)), "mean": images.mean((1, 2, 3))}
    if substrate in full:  # everything removed: the corner holds the substrate value
        assert torch.allclose(curve[:, -1], torch.sigmoid(10 * full[substrate] - 5), atol=1e-6)
    assert torch.allclose(curve[:, 0], torch.sigmoid(10 * images[:, :, :2, :2].mean((1, 2, 3)) - 5), atol=1e-6)


# ---------------------------------------------------------------- family-wide


def _cheap(cls: type) -> object:
    settings = {
        "deletion": {}, "insertion": {}, "pixel_flipping": {"features_in_step": 8},
        "region_perturbation": {"patch_size": 4, "regions_evaluation": 5, "order": "random"},
        "faithfulness_correlation": {"nr_runs": 10, "subset_size": 8},
        "faithfulness_estimate": {"features_in_step": 8},
        "monotonicity_correlation": {"features_in_step": 16, "nr_samples": 3},
    }
    return cls(**settings[cls.name])


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_batch_invariance_and_seeded_determinism(name):
    cls = getattr(F, FAMILY[name], None)
    if cls is None:
        pytest.skip(f"{name} not implemented")
    model, (images, targets, maps) = small_cnn(), random_batch()
    metric = _cheap(cls)
    batch = metric(model, images, targets, maps)
    assert batch.shape == (3,) and batch.dtype == torch.float32
    alone = torch.cat([metric(model, images[i:i + 1], targets[i:i + 1], maps[i:i + 1]) for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-5, equal_nan=True)
    assert torch.equal(_cheap(cls)(model, images, targets, maps), batch)
    # an N×C×H×W map is summed over its channels
    assert torch.allclose(metric(model, images, targets, maps.repeat(1, 3, 1, 1) / 3), batch, atol=1e-5,
                          equal_nan=True)


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_family_yaml_contract(path):
    node = OmegaConf.load(path)
    target = str(node._target_)
    if not target.startswith("xai_bench.metrics.explanation.faithfulness."):
        pytest.skip("another family's metric")
    text = path.read_text().splitlines()
    assert text[0] == f"# @package metric.{path.stem}" and text[1].startswith("# ")
    check_target(OmegaConf.to_container(node), f"metric.{path.stem}")
    metric = instantiate(node)
    assert metric.name == path.stem and METRICS.get(path.stem) is type(metric)
    assert metric.category == "faithfulness" and metric.needs_model and not metric.needs_masks


def test_every_family_metric_has_a_yaml():
    for name in METRICS.list("*"):
        if METRICS.get(name).__module__ == F.__name__:
            assert (CONF_DIR / f"{name}.yaml").exists(), name


@pytest.mark.parametrize(("cls", "kwargs", "match"), [
    (F.Deletion, {"pixels_per_step": 0}, "pixels_per_step"),
    (F.Deletion, {"substrate": "grey"}, "substrate"),
    (F.Insertion, {"blur_sigma": 0}, "blur_sigma"),
])
def test_bad_settings_name_the_argument(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
