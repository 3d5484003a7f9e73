"""Stability under attack / corruption, and the batched similarity helpers against SciPy and scikit-image."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from xai_bench.metrics.explanation import METRICS
from xai_bench.metrics.explanation._similarity import minmax_normalise, spearman, ssim, topk_iou
from xai_bench.metrics.explanation._stats import average_ranks
from xai_bench.metrics.explanation.stability import AttackStability, CorruptionStability
from xai_bench.utils import build

CONF = Path(__file__).resolve().parents[1] / "conf" / "metric"


# ---------------------------------------------------------------- similarity helpers


def random_pairs(n: int = 6, h: int = 9, w: int = 11, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 1, h, w, generator=g)
    b = a + 0.5 * torch.randn(n, 1, h, w, generator=g)
    a[0] = torch.randint(0, 4, (1, h, w), generator=g).float()  # many ties
    b[1] = torch.randint(0, 3, (1, h, w), generator=g).float()
    b[2] = -a[2]
    return a, b


def test_spearman_matches_scipy_with_ties():
    a, b = random_pairs()
    ref = [spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0] for i in range(len(a))]
    torch.testing.assert_close(spearman(a, b), torch.tensor(ref, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(spearman(a[2:3], b[2:3]), torch.tensor([-1.0]))
    assert spearman(torch.ones(1, 5), torch.arange(5.0)[None]).isnan().all()  # constant map: NaN, as scipy


def test_average_ranks_share_ties():
    assert average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]])).tolist() == [[3.5, 1.0, 3.5, 2.0]]  # 1-based


def test_ssim_matches_scikit_image():
    a, b = random_pairs()
    a, b = minmax_normalise(a), minmax_normalise(b)
    ref = [structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), data_range=1.0) for i in range(len(a))]
    torch.testing.assert_close(ssim(a, b), torch.tensor(ref, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    c = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    d = (c + 0.1 * torch.rand(2, 3, 12, 10)).clamp(0, 1)
    ref = [structural_similarity(c[i].numpy(), d[i].numpy(), data_range=1.0, channel_axis=0) for i in range(2)]
    torch.testing.assert_close(ssim(c, d), torch.tensor(ref, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    assert torch.equal(ssim(c, c), torch.ones(2))


def test_topk_iou_by_hand():
    a = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0, -4.0]])
    b = torch.tensor([[5.0, 0.0, 4.0, 3.0, 1.0, 2.0, -1.0, -2.0, -3.0, -4.0]])
    # top 30%: {0,1,2} vs {0,2,3}: 2 shared of 4 → 0.5
    torch.testing.assert_close(topk_iou(a, b, 0.3), torch.tensor([0.5]))
    torch.testing.assert_close(topk_iou(a, -a, 0.5), torch.tensor([0.0]))
    torch.testing.assert_close(topk_iou(a, a, 0.01), torch.tensor([1.0]))  # at least one pixel


def test_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.rand(2, 4), torch.rand(2, 5))
    with pytest.raises(ValueError, match="k must be"):
        topk_iou(torch.rand(2, 4), torch.rand(2, 4), 0)


# ---------------------------------------------------------------- models and explainers


class MeanModel(nn.Module):
    """Logits [0, 10·(mean − 0.5)]: class 1 when the image is brighter than grey; ∇ of class 1 is uniform > 0."""

    num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 10 * (x.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(m), m], dim=1)


class ConstantModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 2, device=x.device) + 0 * x.sum()


def counting_identity():
    calls = []

    def explain(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        return images.sum(1, keepdim=True)

    explain.calls = calls
    return explain


def ramp_images(n: int = 2, base: float = 0.52) -> torch.Tensor:
    """Just brighter than grey, with a strict pixel ordering (no ties)."""
    ramp = torch.linspace(-0.01, 0.01, 64).view(1, 1, 8, 8)
    return (base + ramp + 0.001 * torch.arange(n).view(-1, 1, 1, 1)).expand(n, 3, 8, 8).clone()


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def saliency(model: nn.Module):
    def explain(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            model(x).gather(1, targets[:, None]).sum().backward()
        return x.grad.abs().amax(1, keepdim=True)

    return explain


# ---------------------------------------------------------------- attack stability


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attack_that_shifts_every_pixel_alike_keeps_the_ranking_but_flips_the_prediction(attack):
    x = ramp_images()
    explain = counting_identity()
    # the gradient of class 1 is uniform, so FGSM (and PGD, projected) darkens every pixel by exactly eps
    metric = AttackStability(attack=attack, eps=0.05, steps=3)
    maps = explain(x, None)
    d = metric.details(MeanModel(), x, 1, maps, explainer=explain)
    assert set(d) == {"spearman", "topk_iou", "ssim", "flipped"}
    torch.testing.assert_close(d["spearman"], torch.ones(2))
    torch.testing.assert_close(d["topk_iou"], torch.ones(2))
    torch.testing.assert_close(d["ssim"], torch.ones(2))  # min-max scaling removes the shift
    assert d["flipped"].tolist() == [True, True]  # mean 0.52 → 0.47
    assert explain.calls == [2, 2]  # the clean maps, then one call for all adversarial images
    torch.testing.assert_close(metric(MeanModel(), x, 1, maps, explainer=explain), torch.ones(2))


def test_attack_with_zero_gradient_changes_nothing():
    x = ramp_images()
    d = AttackStability(eps=0.1).details(ConstantModel(), x, 0, x[:, :1], explainer=counting_identity())
    torch.testing.assert_close(d["spearman"], torch.ones(2))
    assert d["flipped"].tolist() == [False, False]


def test_attack_stability_on_a_cnn_matches_references_and_is_batch_invariant():
    model = small_cnn()
    x = torch.rand(3, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    explain = saliency(model)
    maps = explain(x, y)
    for metric in (AttackStability(eps=0.1), AttackStability(attack="pgd", eps=0.1, steps=2)):
        s = metric(model, x, y, maps, explainer=explain)
        alone = torch.cat([metric(model, x[i:i + 1], y[i:i + 1], maps[i:i + 1], explainer=explain) for i in range(3)])
        torch.testing.assert_close(s, alone)
        assert (s < 1).all() and (s > -1).all()
        adv = metric.perturb(model, x, y)
        assert (adv - x).abs().max() <= 0.1 + 1e-6
        e_adv = explain(adv, y)
        ref = [spearmanr(maps[i].flatten().numpy(), e_adv[i].flatten().numpy())[0] for i in range(3)]
        torch.testing.assert_close(s, torch.tensor(ref, dtype=torch.float32), rtol=1e-5, atol=1e-6)
        d = metric.details(model, x, y, maps, explainer=explain)
        torch.testing.assert_close(d["spearman"], s)
        ref = [structural_similarity(*(minmax_normalise(t)[i, 0].numpy() for t in (maps, e_adv)), data_range=1.0)
               for i in range(3)]
        torch.testing.assert_close(d["ssim"], torch.tensor(ref, dtype=torch.float32), rtol=1e-5, atol=1e-6)
        preds = model(torch.cat([x, adv])).argmax(1)
        assert d["flipped"].tolist() == (preds[:3] != preds[3:]).tolist()


# ---------------------------------------------------------------- corruption stability


def test_contrast_is_monotone_so_rankings_survive_it():
    x = ramp_images(3)
    explain = counting_identity()
    d = CorruptionStability("contrast", severity=5).details(MeanModel(), x, 1, explain(x, None), explainer=explain)
    # ImageNet-C contrast is an increasing affine map of each image: ranks, top-k and min-max scaled maps are kept
    for key in ("spearman", "topk_iou", "ssim"):
        torch.testing.assert_close(d[key], torch.ones(3), rtol=1e-4, atol=1e-4)
    assert explain.calls == [3, 3]


def test_corruption_stability_noise_is_seeded_and_lowers_the_correlation():
    model = small_cnn()
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2])
    explain = saliency(model)
    maps = explain(x, y)
    s = CorruptionStability(severity=5)(model, x, y, maps, explainer=explain)
    assert torch.equal(s, CorruptionStability(severity=5)(model, x, y, maps, explainer=explain))
    assert not torch.equal(s, CorruptionStability(severity=5, seed=1)(model, x, y, maps, explainer=explain))
    assert (s < 1).all()
    blur = CorruptionStability("gaussian_blur", severity=2)
    alone = torch.cat([blur(model, x[i:i + 1], y[i:i + 1], maps[i:i + 1], explainer=explain) for i in range(2)])
    torch.testing.assert_close(blur(model, x, y, maps, explainer=explain), alone)


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("name", ["attack_stability", "corruption_stability"])
def test_yaml_builds_the_registered_class(name):
    path = CONF / f"{name}.yaml"
    lines = path.read_text().splitlines()
    assert lines[0] == f"# @package metric.{name}" and lines[1].startswith("# ")
    metric = build(OmegaConf.load(path))
    assert type(metric) is METRICS.get(name) and metric.name == name
    assert metric.category == "stability" and metric.higher_is_better and metric.needs_explainer
    assert set(OmegaConf.load(path)) - {"_target_"} <= set(inspect.signature(type(metric)).parameters)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="attack"):
        AttackStability(attack="cw")
    with pytest.raises(ValueError, match="eps"):
        AttackStability(eps=2)
    with pytest.raises(ValueError, match="steps"):
        AttackStability(attack="pgd", steps=0)
    with pytest.raises(ValueError, match="loss"):
        AttackStability(loss="hinge")
    with pytest.raises(ValueError, match="k must"):
        CorruptionStability(k=0)
    with pytest.raises(ValueError, match="severity"):
        CorruptionStability(severity=6)
    with pytest.raises(KeyError, match="gaussian_nois"):
        CorruptionStability("gaussian_nois")
    assert AttackStability(eps="4/255").eps == pytest.approx(4 / 255)
    assert np.isclose(AttackStability().eps, 2 / 255)
