"""Localisation metrics: hand-computed values on tiny maps and masks, AUC against scikit-learn, batch invariance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from xai_bench.metrics.explanation import METRICS
from xai_bench.metrics.explanation.localisation import (
    AUC,
    AttributionLocalisation,
    EnergyPointingGame,
    PointingGame,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    TopKIntersection,
    bounding_boxes,
    dilate,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "metric"
NAMES = ["pointing_game", "energy_pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy",
         "top_k_intersection", "attribution_localisation", "auc"]


def images(n: int = 1, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def square_mask(size: int = 8, lo: int = 2, hi: int = 4) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size, dtype=torch.bool)
    m[..., lo:hi, lo:hi] = True
    return m


def test_pointing_game_hit_miss_and_tolerance():
    x, s = images(), square_mask()  # object: rows/cols 2..3
    inside, outside = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    inside[..., 3, 3] = 1.0
    outside[..., 3, 5] = 1.0  # two pixels right of the object
    assert PointingGame()(None, x, 0, inside, masks=s).item() == 1
    assert PointingGame()(None, x, 0, outside, masks=s).item() == 0
    assert PointingGame(tolerance=1)(None, x, 0, outside, masks=s).item() == 0
    assert PointingGame(tolerance=2)(None, x, 0, outside, masks=s).item() == 1
    assert PointingGame(weighted=True)(None, x, 0, inside, masks=s).item() == pytest.approx(1 - 4 / 64)
    empty = torch.zeros_like(s)
    assert torch.isnan(PointingGame()(None, x, 0, inside, masks=empty)).all()
    with pytest.raises(ValueError, match="tolerance"):
        PointingGame(tolerance=-1)
    with pytest.raises(ValueError, match="needs ground-truth masks"):
        PointingGame()(None, x, 0, inside)


def test_dilate_and_bounding_boxes():
    m = torch.zeros(1, 1, 7, 7, dtype=torch.bool)
    m[..., 3, 3] = True
    assert dilate(m, 1).sum() == 5 and dilate(m, 0).sum() == 1  # a radius-1 disk is a plus sign
    m[..., 1, 5] = True
    box = bounding_boxes(m)
    assert box.sum() == 3 * 3 and box[..., 1:4, 3:6].all()
    assert not bounding_boxes(torch.zeros_like(m)).any()


def test_mass_energy_and_attribution_localisation():
    x, s = images(), square_mask()
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2, 2] = 3.0   # inside
    m[..., 0, 0] = 1.0   # outside
    m[..., 7, 7] = -2.0  # outside, negative
    assert RelevanceMassAccuracy()(None, x, 0, m, masks=s).item() == pytest.approx(3 / 2)  # signed: 3 / (3+1−2)
    assert RelevanceMassAccuracy(abs=True)(None, x, 0, m, masks=s).item() == pytest.approx(3 / 6)
    assert EnergyPointingGame()(None, x, 0, m, masks=s).item() == pytest.approx(3 / 4)  # positive part only
    assert AttributionLocalisation()(None, x, 0, m, masks=s).item() == pytest.approx(3 / 6)
    assert AttributionLocalisation(positive_attributions=True)(None, x, 0, m, masks=s).item() == pytest.approx(3 / 4)
    assert AttributionLocalisation(weighted=True)(None, x, 0, m, masks=s).item() == pytest.approx(3 / 6 * 4 / 64)
    # a signed map whose inside share exceeds 1 is NaN in attribution_localisation (Quantus)
    assert torch.isnan(AttributionLocalisation(abs=False)(None, x, 0, m, masks=s)).all()
    # the bounding box of an L-shaped object holds the pixel its mask misses
    ell = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    ell[..., 2, 2:5] = True
    ell[..., 2:5, 2] = True
    m2 = torch.zeros(1, 1, 8, 8)
    m2[..., 2, 2] = 1.0
    m2[..., 4, 4] = 1.0
    assert EnergyPointingGame()(None, x, 0, m2, masks=ell).item() == pytest.approx(0.5)
    assert EnergyPointingGame(bounding_box=True)(None, x, 0, m2, masks=ell).item() == pytest.approx(1.0)


def test_rank_accuracy_and_top_k():
    x, s = images(), square_mask()  # 4 object pixels
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2, 2], m[..., 2, 3], m[..., 3, 2] = 9.0, 8.0, 7.0  # three object pixels first
    m[..., 0, 0] = 6.0                                        # then background, then the 4th object pixel
    m[..., 3, 3] = 5.0
    assert RelevanceRankAccuracy()(None, x, 0, m, masks=s).item() == pytest.approx(3 / 4)
    assert TopKIntersection(k=3)(None, x, 0, m, masks=s).item() == pytest.approx(1.0)
    assert TopKIntersection(k=5)(None, x, 0, m, masks=s).item() == pytest.approx(4 / 5)
    assert TopKIntersection(k=3, concept_influence=True)(None, x, 0, m, masks=s).item() == pytest.approx(64 / 4)
    # k larger than half the map: the score is about the object's share of the image, and the user is told so
    with pytest.warns(UserWarning, match=r"k=1000 covers 100% of the map's 64 pixels.*k=1 is Quantus's"):
        assert TopKIntersection(k=1000)(None, x, 0, m, masks=s).item() == pytest.approx(4 / 64)  # all pixels
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a k that leaves most pixels out does not warn
        TopKIntersection(k=5)(None, x, 0, m, masks=s)
    with pytest.raises(ValueError, match="k must"):
        TopKIntersection(k=0)


def test_auc_perfect_random_and_sklearn():
    from sklearn.metrics import roc_auc_score

    x, s = images(), square_mask()
    assert AUC()(None, x, 0, s.float(), masks=s).item() == pytest.approx(1.0)
    assert AUC()(None, x, 0, 1 - s.float(), masks=s).item() == pytest.approx(0.0)
    assert AUC()(None, x, 0, torch.ones(1, 1, 8, 8), masks=s).item() == pytest.approx(0.5)  # ties count one half
    g = torch.Generator().manual_seed(3)
    maps = torch.randint(0, 4, (5, 1, 8, 8), generator=g).float()  # many ties
    masks = torch.rand(5, 1, 8, 8, generator=g) > 0.6
    got = AUC()(None, images(5), 0, maps, masks=masks)
    want = [roc_auc_score(mk.flatten().numpy(), mp.flatten().numpy()) for mk, mp in zip(masks, maps)]
    assert np.allclose(got.numpy(), want, atol=1e-6)
    assert torch.isnan(AUC()(None, x, 0, maps[:1], masks=torch.ones_like(s))).all()


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance_and_yaml(name):
    metric = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert type(metric) is METRICS.get(name) and metric.category == "localisation" and metric.needs_masks
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(4, 1, 8, 8, generator=g)
    maps[2] *= 50
    masks = torch.rand(4, 1, 8, 8, generator=g) > 0.5
    x, t = images(4), torch.tensor([0, 1, 2, 0])
    batch = metric(None, x, t, maps, masks=masks)
    alone = torch.cat([metric(None, x[i:i + 1], t[i:i + 1], maps[i:i + 1], masks=masks[i:i + 1]) for i in range(4)])
    assert batch.shape == (4,) and torch.allclose(batch, alone, equal_nan=True)
    # three-channel maps are summed over channels
    three = maps.expand(4, 3, 8, 8) / 3
    assert torch.allclose(metric(None, x, t, three, masks=masks), batch, atol=1e-5, equal_nan=True)


# ------------------------------------------------------------------------------- reference maps (chance levels)
def test_reference_maps():
    from torch import nn

    from xai_bench.attribution.reference_maps import CentreGaussian, RandomMap, SobelEdges

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 9 * 9, 2))
    x = torch.zeros(2, 3, 9, 9)
    x[:, :, :, 5:] = 1.0  # a vertical step edge between columns 4 and 5
    r1, r2 = RandomMap(model).attribute(x, seed=3), RandomMap(model).attribute(x, seed=3)
    assert r1.shape == (2, 1, 9, 9) and torch.equal(r1, r2) and not torch.equal(r1, RandomMap(model).attribute(x))
    assert 0 <= r1.min() and r1.max() < 1
    # the map depends on the image alone: not on its batch-mates or position; any change to the image redraws it
    y = torch.rand(3, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    both = RandomMap(model).attribute(torch.cat([y, x[:1]]), seed=3)
    assert torch.equal(both[-1], r1[0]) and torch.equal(RandomMap(model).attribute(y[1:2], seed=3)[0], both[1])
    moved = RandomMap(model).attribute(y + 1e-3, seed=3)
    assert abs(float(torch.corrcoef(torch.stack([moved.flatten(), both[:3].flatten()]))[0, 1])) < 0.2
    g = CentreGaussian(model).attribute(x, sigma=0.25)
    assert g.shape == (2, 1, 9, 9) and g[0, 0, 4, 4] == 1 and int(g[0, 0].argmax()) == 4 * 9 + 4
    assert g[0, 0, 4, 0] == pytest.approx(float(torch.exp(torch.tensor(-(4 / 2.25) ** 2 / 2))))
    # a centred object: the centre prior wins the pointing game
    assert PointingGame()(None, x, 0, g, masks=square_mask(9, 3, 6).expand(2, 1, 9, 9)).tolist() == [1.0, 1.0]
    e = SobelEdges(model).attribute(x)
    # Sobel x-response of a unit step: 1 + 2 + 1 = 4 on both columns beside the edge, 0 elsewhere
    assert e.shape == (2, 1, 9, 9)
    assert torch.allclose(e[0, 0, :, 4:6], torch.full((9, 2), 4.0)) and e[0, 0, :, :4].abs().max() == 0
    with pytest.raises(ValueError, match="sigma"):
        CentreGaussian(model).attribute(x, sigma=0)
