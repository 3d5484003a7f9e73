"""Robustness-of-the-explainer metrics: hand-computable values, batching, seeding and the hook contract."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from xai_bench.metrics.explanation import METRICS
from xai_bench.metrics.explanation.robustness import (
    AvgSensitivity,
    Continuity,
    LocalLipschitzEstimate,
    MaxSensitivity,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
)
from xai_bench.utils import build

CONF = Path(__file__).resolve().parents[1] / "conf" / "metric"
NAMES = ["max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "relative_input_stability",
         "relative_output_stability", "relative_representation_stability", "continuity"]


class Identity2Class(nn.Module):
    """Logits: [mean of the image, 0]; class 0 whenever the image is not black."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, torch.zeros_like(m)], dim=1)


class FlattenModel(nn.Module):
    """Logits = the pixels; ``feat`` (an identity layer) is the default layer, so the representation is the image."""

    default_layer = "feat"

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat(x).flatten(1)


def identity_explainer(scale: float = 1.0):
    calls = []

    def explain(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        return scale * images.sum(1, keepdim=True)

    explain.calls = calls
    return explain


def constant_explainer(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.ones(images.shape[0], 1, *images.shape[-2:])


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    net.default_layer = "2"
    return net


def saliency(model: nn.Module):
    def explain(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            model(x).gather(1, targets[:, None]).sum().backward()
        return x.grad.abs().amax(1, keepdim=True)

    return explain


def images(n: int = 3, c: int = 1, h: int = 6, w: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(n, c, h, w, generator=g)


# ---------------------------------------------------------------- sensitivity


@pytest.mark.parametrize("cls,agg", [(MaxSensitivity, "max"), (AvgSensitivity, "mean")])
def test_sensitivity_of_identity_explainer_is_noise_norm_over_map_norm(cls, agg):
    x = images()
    explain = identity_explainer()
    metric = cls(nr_samples=5, lower_bound=0.1, seed=3, clip=False)
    got = metric(Identity2Class(), x, 0, x.clone(), explainer=explain)
    # e(x + δ) − e(x) = δ: the score is ‖δ_j‖ / ‖x‖, with the same 5 draws δ_j for every image
    u = torch.rand((5, 1, 6, 6), generator=torch.Generator().manual_seed(3))
    delta_norms = ((2 * u - 1) * 0.1).flatten(1).norm(dim=1)
    ref = getattr(delta_norms, "amax" if agg == "max" else "mean")() / x.flatten(1).norm(dim=1)
    torch.testing.assert_close(got, ref)
    assert explain.calls == [15]  # one call with all N·K perturbed images


def test_sensitivity_zero_for_input_independent_explainer_and_bounded_by_ball():
    x = images(2, 3, 5, 5)
    maps = constant_explainer(x, None)
    assert torch.equal(MaxSensitivity(nr_samples=4)(Identity2Class(), x, 0, maps, explainer=constant_explainer),
                       torch.zeros(2))
    r = 0.05
    s = MaxSensitivity(nr_samples=20, lower_bound=r)(Identity2Class(), x, 0, x.sum(1, keepdim=True),
                                                     explainer=identity_explainer())
    bound = r * 3 * math.sqrt(25) / x.sum(1).flatten(1).norm(dim=1)  # |Σ_c δ_c| ≤ 3r per pixel
    assert (s > 0).all() and (s <= bound).all()


def test_sensitivity_samples_per_call_splits_the_explainer_calls_not_the_result():
    x = images()
    a, b = identity_explainer(), identity_explainer()
    full = MaxSensitivity(nr_samples=5, seed=1)(Identity2Class(), x, 0, x, explainer=a)
    split = MaxSensitivity(nr_samples=5, seed=1, samples_per_call=2)(Identity2Class(), x, 0, x, explainer=b)
    assert a.calls == [15] and b.calls == [6, 6, 3]
    torch.testing.assert_close(full, split)


def test_prediction_change_gives_nan_only_when_every_sample_flips():
    class Flips(nn.Module):  # class 1 for the clean images, class 0 after any perturbation
        def __init__(self, clean: torch.Tensor) -> None:
            super().__init__()
            self.clean = clean

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            same = (x[:, None] == self.clean[None]).flatten(2).all(2).any(1).float()
            return torch.stack([1 - same, same], dim=1)

    x = images()
    s = MaxSensitivity(nr_samples=3, nan_on_prediction_change=True)(Flips(x), x, 0, x, explainer=identity_explainer())
    assert s.isnan().all()
    s = MaxSensitivity(nr_samples=3)(Flips(x), x, 0, x, explainer=identity_explainer())
    assert s.isfinite().all()


# ---------------------------------------------------------------- local Lipschitz


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_local_lipschitz_of_linear_explainer_is_its_slope(scale):
    x = images()
    metric = LocalLipschitzEstimate(nr_samples=4, normalise=False)
    got = metric(Identity2Class(), x, 0, scale * x, explainer=identity_explainer(scale))
    torch.testing.assert_close(got, torch.full((3,), scale))  # clipping shrinks Δx and Δe alike
    assert torch.equal(LocalLipschitzEstimate(nr_samples=4)(Identity2Class(), x, 0, constant_explainer(x, None),
                                                            explainer=constant_explainer), torch.zeros(3))


def test_local_lipschitz_normalise_divides_each_map_by_its_own_max():
    x = images()
    # e(x) = x / max|x| after normalisation: Δe = x/max x − x'/max x', so compare against that directly
    s = LocalLipschitzEstimate(nr_samples=1, seed=5, clip=False)(Identity2Class(), x, 0, 7 * x,
                                                                 explainer=identity_explainer(2.0))
    xs = x + 0.1 * torch.randn((1, 1, 6, 6), generator=torch.Generator().manual_seed(5))
    e, es = x / x.flatten(1).amax(1).view(-1, 1, 1, 1), xs / xs.flatten(1).amax(1).view(-1, 1, 1, 1)
    torch.testing.assert_close(s, (e - es).flatten(1).norm(dim=1) / ((x - xs).flatten(1).norm(dim=1) + 1e-10))


# ---------------------------------------------------------------- relative stability


def test_relative_input_stability_of_identity_explainer_is_one():
    x = images(3, 1)
    s = RelativeInputStability(nr_samples=6)(Identity2Class(), x, 0, x, explainer=lambda im, t: im)
    torch.testing.assert_close(s, torch.ones(3))


def test_relative_output_stability_of_constant_image_is_inverse_pixel_value():
    x = torch.full((2, 1, 4, 4), 0.5)
    x[1] = 0.25
    # logits = pixels: ‖(x−x')/x‖ = ‖δ‖/x₀ and ‖h(x)−h(x')‖ = ‖δ‖
    s = RelativeOutputStability(nr_samples=5, nan_on_prediction_change=False)(FlattenModel(), x, 0, x,
                                                                              explainer=identity_explainer())
    torch.testing.assert_close(s, torch.tensor([2.0, 4.0]))


def test_relative_representation_stability_uses_the_default_layer_and_removes_its_hook():
    x = images()
    model = FlattenModel()
    s = RelativeRepresentationStability(nr_samples=5)(model, x, 0, x, explainer=identity_explainer())
    torch.testing.assert_close(s, torch.ones(3))  # L(x) = x, e(x) = x
    assert not model.feat._forward_hooks

    def broken(images, targets):
        raise RuntimeError("explainer failed")

    with pytest.raises(RuntimeError, match="explainer failed"):
        RelativeRepresentationStability(nr_samples=2)(model, x, 0, x, explainer=broken)
    assert not model.feat._forward_hooks
    with pytest.raises(KeyError, match="nope"):
        RelativeRepresentationStability(layer="nope", nr_samples=2)(model, x, 0, x, explainer=identity_explainer())


# ---------------------------------------------------------------- continuity


def test_continuity_of_a_single_bright_pixel_is_l1_over_l2_of_the_worst_shift():
    x = torch.zeros(2, 1, 1, 4)
    x[:, 0, 0, 0] = 1.0
    metric = Continuity(nr_steps=3)
    assert metric.shifts(4) == [-1, 2, 5]  # ⌊9/3⌋ = 3 pixels apart, starting at −W + 3
    explain = identity_explainer()
    # t=−1 and t=5 push the pixel out: Δ = [1,0,0,0] → 1; t=2: Δ = [1,0,−1,0] → ‖Δ‖₁/‖Δ‖₂ = √2
    s = metric(Identity2Class(), x, 0, x, explainer=explain)
    torch.testing.assert_close(s, torch.full((2,), math.sqrt(2)))
    assert explain.calls == [6]
    x[1, 0, 0, 1] = 0.5  # [1, .5, 0, 0]: t=2 → Δ = [1, .5, −1, −.5]: 3 / √2.5
    s = metric(Identity2Class(), x, 0, x, explainer=explain)
    torch.testing.assert_close(s, torch.tensor([math.sqrt(2), 3 / math.sqrt(2.5)]))


def test_continuity_leaves_out_the_zero_shift_where_a_noisy_explainer_would_divide_by_zero():
    x = torch.zeros(1, 1, 1, 4)
    x[0, 0, 0, 0] = 1.0
    metric = Continuity(nr_steps=9, normalise=False)
    assert 0 in metric.shifts(4)  # ⌊9/9⌋ = 1: t = −3 … 5, with 0 among them
    gen = torch.Generator().manual_seed(0)

    def noisy(images, targets, model=None):  # the identity map plus explainer noise, like SmoothGrad or LIME
        return images + 1e-3 * torch.rand(images.shape, generator=gen)

    s = metric(Identity2Class(), x, 0, x, explainer=noisy)
    # without the exclusion the t = 0 ratio is ~1e-3·4 / 1e-9 ≈ 4e6; every real shift moves the pixel:
    # ‖Δe‖₁/‖Δx‖₂ ≤ √2 + noise
    assert torch.isfinite(s).all() and float(s) < 1.5


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance_and_seeding_on_a_cnn(name):
    model = small_cnn()
    x = images(3, 3, 8, 8)
    y = torch.tensor([0, 1, 2])
    explain = saliency(model)
    maps = explain(x, y)
    size = {"nr_steps": 5} if name == "continuity" else {"nr_samples": 4}
    metric = METRICS.get(name)(**size, nan_on_prediction_change=False)
    batch = metric(model, x, y, maps, explainer=explain)
    alone = torch.cat([metric(model, x[i:i + 1], y[i:i + 1], maps[i:i + 1], explainer=explain) for i in range(3)])
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-6)
    assert batch.isfinite().all() and (batch > 0).all()
    again = METRICS.get(name)(**size, nan_on_prediction_change=False)(model, x, y, maps, explainer=explain)
    assert torch.equal(batch, again)
    if name == "continuity":
        return  # deterministic: no seed
    other = METRICS.get(name)(nr_samples=4, seed=1, nan_on_prediction_change=False)(model, x, y, maps,
                                                                                    explainer=explain)
    assert not torch.equal(batch, other)


@pytest.mark.parametrize("name", NAMES)
def test_yaml_builds_the_registered_class_with_its_facts(name):
    path = CONF / f"{name}.yaml"
    lines = path.read_text().splitlines()
    assert lines[0] == f"# @package metric.{name}" and lines[1].startswith("# ")
    metric = build(OmegaConf.load(path))
    assert type(metric) is METRICS.get(name) and metric.name == name
    assert metric.category == "robustness" and not metric.higher_is_better and metric.needs_explainer
    assert set(OmegaConf.load(path)) - {"_target_"} <= set(inspect.signature(type(metric)).parameters)


def test_settings_are_validated_and_explainer_is_required():
    with pytest.raises(ValueError, match="nr_samples"):
        MaxSensitivity(nr_samples=0)
    with pytest.raises(ValueError, match="upper_bound"):
        RelativeInputStability(lower_bound=0.3, upper_bound=0.2)
    with pytest.raises(ValueError, match="perturb_std"):
        LocalLipschitzEstimate(perturb_std=-1)
    with pytest.raises(ValueError, match="explainer"):
        MaxSensitivity()(Identity2Class(), images(), 0, images())
    with pytest.raises(ValueError, match="explainer must return"):
        MaxSensitivity(nr_samples=2)(Identity2Class(), images(), 0, images(), explainer=lambda im, t: im[:1])
