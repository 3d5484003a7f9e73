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
    "infidelity": "Infidelity", "infidelity_gaussian": "Infidelity", "irof": "IROF", "irof_grid": "IROF",
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


# ---------------------------------------------------------------- pixel flipping / region perturbation


def test_pixel_flipping_hand_computed_auc_with_unit_spacing():
    metric = F.PixelFlipping(features_in_step=4, perturb_baseline="zeros")
    curve = metric.curves(CornerModel(), ONES, ONE, corner_map())
    assert torch.allclose(curve[0], torch.full((16,), 1 - S5))  # no unperturbed point, as Quantus
    assert metric(CornerModel(), ONES, ONE, corner_map()).item() == pytest.approx(15 * (1 - S5), abs=1e-5)
    assert metric(CornerModel(), ONES, ONE, corner_map(reverse=True)).item() == pytest.approx(14 * S5 + 0.5, abs=1e-5)


def test_pixel_flipping_black_is_each_images_minimum():
    image = torch.ones(1, 1, 8, 8)
    assert F.PixelFlipping(features_in_step=4)(CornerModel(), image, ONE, corner_map()).item() == pytest.approx(
        15 * S5, abs=1e-5)  # min is 1: flipping changes nothing
    image[..., -1, -1] = 0
    assert F.PixelFlipping(features_in_step=4)(CornerModel(), image, ONE, corner_map()).item() == pytest.approx(
        15 * (1 - S5), abs=1e-5)


def test_region_perturbation_hand_computed_aopc():
    kw = {"patch_size": 2, "regions_evaluation": 3, "perturb_baseline": "zeros"}
    metric = F.RegionPerturbation(**kw)  # 16 patches of 2×2; the corner patch goes first
    curve = metric.curves(CornerModel(), ONES, ONE, corner_map())
    assert torch.allclose(curve[0], torch.tensor([0.0] + [2 * S5 - 1] * 3), atol=1e-6)
    assert metric(CornerModel(), ONES, ONE, corner_map()).item() == pytest.approx(3 * (2 * S5 - 1) / 4, abs=1e-6)
    assert F.RegionPerturbation(order="lerf", **kw)(CornerModel(), ONES, ONE, corner_map()).item() == 0
    assert F.RegionPerturbation(**kw)(CornerModel(), ONES, ONE, corner_map(reverse=True)).item() == 0


def test_region_perturbation_grid_pads_like_quantus():
    pid, n = F.RegionPerturbation(patch_size=4).patch_ids(6, 6)  # padded to 8: 1 row above, 1 below
    assert n == 4
    assert pid.view(6, 6)[:, 0].tolist() == [0, 0, 0, 2, 2, 2]
    assert pid.view(6, 6)[0].tolist() == [0, 0, 0, 1, 1, 1]


# ---------------------------------------------------------------- correlations


class LinearModel(nn.Module):
    """Logit of class 1 = Σ w·x, class 0 = 0: ``w·x`` is its exact attribution against a zero baseline."""

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(3)) + 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x * self.w).sum(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _linear_case() -> tuple[LinearModel, torch.Tensor, torch.Tensor]:
    model = LinearModel()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.1
    return model, x, (x * model.w).detach()


def test_faithfulness_correlation_is_one_for_exact_attributions():
    model, x, exact = _linear_case()
    metric = F.FaithfulnessCorrelation(nr_runs=20, subset_size=10, perturb_baseline="zeros")
    assert torch.allclose(metric(model, x, [1, 1], exact), torch.ones(2), atol=1e-5)
    assert torch.allclose(metric(model, x, [1, 1], -exact), -torch.ones(2), atol=1e-5)
    assert torch.isnan(metric(model, x, [1, 1], torch.ones_like(exact))).all()
    other = F.FaithfulnessCorrelation(nr_runs=20, subset_size=10, perturb_baseline="zeros", seed=1)
    noisy = exact + torch.rand(exact.shape, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(metric(model, x, [1, 1], noisy), other(model, x, [1, 1], noisy))
    with pytest.raises(ValueError, match="subset_size"):
        F.FaithfulnessCorrelation(subset_size=65)(model, x, [1, 1], exact)


def test_faithfulness_estimate_is_one_for_exact_attributions():
    model, x, exact = _linear_case()
    for step in (1, 5):
        metric = F.FaithfulnessEstimate(features_in_step=step, perturb_baseline="zeros")
        assert torch.allclose(metric(model, x, [1, 1], exact), torch.ones(2), atol=1e-5)
    assert torch.allclose(metric(model, x, [1, 1], -exact), -torch.ones(2), atol=1e-5)


def test_monotonicity_correlation_hand_computed_signs():
    model, x, exact = _linear_case()
    metric = F.MonotonicityCorrelation(nr_samples=1, perturb_baseline="zeros", softmax=False)
    # removing pixel p alone changes the logit by w·x at p: variance (w·x)²/f(x)², monotone in |w·x|
    assert torch.allclose(metric(model, x, [1, 1], exact), torch.ones(2), atol=1e-5)
    assert torch.allclose(metric(model, x, [1, 1], 1 / exact), -torch.ones(2), atol=1e-5)
    # uniform fills: seeded, and the default path runs
    uni = F.MonotonicityCorrelation(nr_samples=4, features_in_step=8, softmax=False)
    assert torch.equal(uni(model, x, [1, 1], exact), uni(model, x, [1, 1], exact))


def test_infidelity_is_zero_for_the_gradient_of_a_linear_model():
    model, x, _ = _linear_case()
    grad = model.w.detach().expand_as(x)  # Iᵀ∇f = f(x) − f(x − I) exactly
    for metric in (F.Infidelity(perturb_baseline="zeros", patch_sizes=[3, 4]), F.Infidelity(perturbation="gaussian")):
        assert torch.allclose(metric(model, x, [1, 1], grad), torch.zeros(2), atol=1e-8)


def test_infidelity_square_hand_computed():
    model, x, _ = _linear_case()
    grad = model.w.detach().expand_as(x)
    # with 2·∇f the error of each cumulative removal equals its logit drop: INFD = mean_k (Σ_{removed} w·x)²
    got = F.Infidelity(perturb_baseline="zeros", patch_sizes=[4])(model, x, [1, 1], 2 * grad)
    wx = (x * model.w).detach()[:, 0]
    squares = torch.stack([wx[:, :4, :4], wx[:, :4, 4:], wx[:, 4:, :4], wx[:, 4:, 4:]], 1).sum((2, 3))
    assert torch.allclose(got, squares.cumsum(1).square().mean(1), atol=1e-5)


def test_irof_hand_computed_area_over_the_curve():
    kw = {"segmentation_method": "grid", "segmentation_kwargs": {"patch_size": 2}, "perturb_baseline": "zeros"}
    q = (1 - S5) / S5  # relative probability once the corner is gone
    got = F.IROF(**kw)(CornerModel(), ONES, ONE, corner_map()).item()
    assert got == pytest.approx(16 - 15 * q, abs=1e-5)  # 16 segments, the corner first
    got = F.IROF(**kw)(CornerModel(), ONES, ONE, corner_map(reverse=True)).item()
    assert got == pytest.approx(16 - 14 - (1 + q) / 2, abs=1e-5)


def test_irof_slic_runs_on_images_with_different_segment_counts():
    images, targets, maps = random_batch(2, 16)
    images[1] = 0.5  # a flat image: far fewer SLIC segments than a noisy one
    model, metric = small_cnn(), F.IROF()
    out = metric(model, images, targets, maps)
    assert out.shape == (2,) and torch.isfinite(out).all()
    alone = torch.cat([metric(model, images[i:i + 1], targets[i:i + 1], maps[i:i + 1]) for i in range(2)])
    assert torch.allclose(out, alone, atol=1e-5)  # each curve ends at its own K


# ---------------------------------------------------------------- family-wide


def _cheap(cls: type, name: str) -> object:
    settings = {
        "deletion": {}, "insertion": {}, "pixel_flipping": {"features_in_step": 8},
        "region_perturbation": {"patch_size": 4, "regions_evaluation": 5, "order": "random"},
        "faithfulness_correlation": {"nr_runs": 10, "subset_size": 8},
        "faithfulness_estimate": {"features_in_step": 8},
        "monotonicity_correlation": {"features_in_step": 16, "nr_samples": 3},
        "infidelity": {"patch_sizes": [4, 5]}, "infidelity_gaussian": {"perturbation": "gaussian"},
        "irof": {"segmentation_kwargs": {"n_segments": 6}},
        "irof_grid": {"segmentation_method": "grid", "segmentation_kwargs": {"patch_size": 5}},
    }
    return cls(**settings[name])


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_batch_invariance_and_seeded_determinism(name):
    cls = getattr(F, FAMILY[name])
    model, (images, targets, maps) = small_cnn(), random_batch()
    metric = _cheap(cls, name)
    batch = metric(model, images, targets, maps)
    assert batch.shape == (3,) and batch.dtype == torch.float32
    alone = torch.cat([metric(model, images[i:i + 1], targets[i:i + 1], maps[i:i + 1]) for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-5, equal_nan=True)
    assert torch.equal(_cheap(cls, name)(model, images, targets, maps), batch)
    # an N×C×H×W map is summed over its channels
    assert torch.allclose(metric(model, images, targets, maps.repeat(1, 3, 1, 1) / 3), batch, atol=1e-5,
                          equal_nan=True)


FAMILY_YAMLS = [p for p in sorted(CONF_DIR.glob("*.yaml"))
                if ".faithfulness." in str(OmegaConf.load(p).get("_target_", ""))]


@pytest.mark.parametrize("path", FAMILY_YAMLS, ids=lambda p: p.stem)
def test_family_yaml_contract(path):
    node = OmegaConf.load(path)
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
    (F.PixelFlipping, {"features_in_step": 0}, "features_in_step"),
    (F.PixelFlipping, {"perturb_baseline": "white"}, "perturb_baseline"),
    (F.RegionPerturbation, {"order": "best"}, "order"),
    (F.RegionPerturbation, {"patch_size": 0}, "patch_size"),
    (F.FaithfulnessCorrelation, {"nr_runs": 1}, "nr_runs"),
    (F.FaithfulnessEstimate, {"features_in_step": 1.5}, "features_in_step"),
    (F.MonotonicityCorrelation, {"eps": -1}, "eps"),
    (F.Infidelity, {"perturbation": "blur"}, "perturbation"),
    (F.Infidelity, {"patch_sizes": []}, "patch_sizes"),
    (F.Infidelity, {"patch_sizes": [0]}, "patch_sizes"),
    (F.Infidelity, {"noise_std": 0}, "noise_std"),
    (F.IROF, {"segmentation_method": "felzenszwalb"}, "segmentation_method"),
])
def test_bad_settings_name_the_argument(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
