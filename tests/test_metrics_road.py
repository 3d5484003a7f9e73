"""ROAD: the batched imputation against a direct scipy.sparse solve, exact on linear images, hand-computed scores on a
centre-patch model, direction of MoRF / LeRF, batch invariance, seeded noise and argument checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl
import torch
from omegaconf import OmegaConf
from torch import nn

from xai_bench.config import ConfigKeyError
from xai_bench.config.validate import check_target
from xai_bench.metrics.explanation import METRICS
from xai_bench.metrics.explanation.road import ROAD, linear_imputation

CONF = Path(__file__).resolve().parents[1] / "conf" / "metric" / "road.yaml"
S5 = 1 / (1 + math.exp(-5))
OFFSETS = {(-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12, (0, -1): 1 / 6, (0, 1): 1 / 6, (1, -1): 1 / 12,
           (1, 0): 1 / 6, (1, 1): 1 / 12}


def scipy_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Reference: one image (``C×H×W``), one sparse system solved directly, built pixel by pixel (Rong et al.)."""
    c, h, w = image.shape
    idx = np.flatnonzero(removed.ravel())
    var = np.full(h * w, -1)
    var[idx] = np.arange(len(idx))
    a = sp.lil_matrix((len(idx), len(idx)))
    b = np.zeros((len(idx), c))
    flat = image.reshape(c, -1)
    for k, p in enumerate(idx):
        i, j = divmod(int(p), w)
        for (di, dj), weight in OFFSETS.items():
            ii, jj = i + di, j + dj
            if 0 <= ii < h and 0 <= jj < w:
                a[k, k] += weight
                q = ii * w + jj
                if var[q] >= 0:
                    a[k, var[q]] -= weight
                else:
                    b[k] += weight * flat[:, q]
    sol = spl.spsolve(sp.csc_matrix(a), b).reshape(len(idx), c)
    out = flat.copy()
    out[:, idx] = sol.T
    return out.reshape(c, h, w)


class CentrePatch(nn.Module):
    """Logit of class 1 = 10 · mean of the 2×2 patch at rows/cols 3..4 of an 8×8 image − 5; class 0 logit = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[:, :, 3:5, 3:5].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(patch), 10 * patch - 5], dim=1)


def patch_image(n: int = 1) -> torch.Tensor:
    x = torch.zeros(n, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1
    return x


def patch_map(n: int = 1, reverse: bool = False) -> torch.Tensor:
    """Ranks the 4 patch pixels first (or last), the others in a fixed order."""
    m = torch.arange(64, 0, -1, dtype=torch.float32).view(1, 1, 8, 8).repeat(n, 1, 1, 1)
    m[:, :, 3:5, 3:5] += 1000
    return -m if reverse else m


ONE = torch.tensor([1])


# ---------------------------------------------------------------- imputation


def test_imputation_matches_a_direct_scipy_sparse_solve():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g)
    removed = torch.rand(3, 1, 16, 16, generator=g) < torch.tensor([0.2, 0.6, 0.95]).view(3, 1, 1, 1)
    removed[1, :, 2:12, 0:10] = True  # a large hole touching the border
    ours = linear_imputation(x, removed)
    for i in range(3):
        ref = scipy_imputation(x[i].double().numpy(), removed[i, 0].numpy())
        assert np.allclose(ours[i].double().numpy(), ref, atol=1e-4), i


def test_imputation_is_exact_on_a_linear_image_and_keeps_kept_pixels():
    i, j = torch.meshgrid(torch.arange(10.0), torch.arange(12.0), indexing="ij")
    x = torch.stack([0.05 * i + 0.03 * j, 0.9 - 0.04 * j, 0.02 * (i + j)]).unsqueeze(0)  # 1×3×10×12, linear
    removed = torch.zeros(1, 1, 10, 12, dtype=torch.bool)
    removed[..., 1:9, 1:11] = torch.rand(8, 10, generator=torch.Generator().manual_seed(0)) < 0.7  # interior only
    removed[..., 2:8, 3:9] = True
    out = linear_imputation(x, removed)
    assert torch.allclose(out, x, atol=1e-5)  # a linear function is its own weighted neighbour mean
    assert torch.equal(out[~removed.expand_as(x)], x[~removed.expand_as(x)])


def test_imputation_of_a_hole_in_a_constant_image_is_the_constant():
    x = torch.full((2, 3, 9, 9), 0.3)
    removed = torch.zeros(2, 1, 9, 9, dtype=torch.bool)
    removed[0, :, :8, :] = True  # everything but the last row, border pixels included
    removed[1, :, 4, 4] = True
    assert torch.allclose(linear_imputation(x, removed), x, atol=1e-6)


def test_imputation_edge_cases():
    x = torch.rand(2, 1, 5, 5)
    assert torch.equal(linear_imputation(x, torch.zeros(2, 1, 5, 5, dtype=torch.bool)), x)
    with pytest.raises(ValueError, match="every pixel removed"):
        linear_imputation(x, torch.ones(2, 1, 5, 5, dtype=torch.bool))


# ---------------------------------------------------------------- the metric


def test_morf_hand_computed_on_the_centre_patch_model():
    # 6.25 % of 64 pixels = the 4 patch pixels; with zero neighbours they are imputed as 0
    metric = ROAD(percentages=[6.25], noise=0.0)
    assert metric.higher_is_better is False
    good = metric(CentrePatch(), patch_image(), ONE, patch_map())
    bad = metric(CentrePatch(), patch_image(), ONE, patch_map(reverse=True))
    assert good.item() == pytest.approx(1 - S5, abs=1e-6) and bad.item() == pytest.approx(S5, abs=1e-6)
    # two points: the unperturbed image and the patch removed; the score is the curve's mean height
    metric = ROAD(percentages=[0, 6.25], noise=0.0)
    curve = metric.curves(CentrePatch(), patch_image(), ONE, patch_map())
    assert torch.allclose(curve, torch.tensor([[S5, 1 - S5]]), atol=1e-6)
    assert metric(CentrePatch(), patch_image(), ONE, patch_map()).item() == pytest.approx(0.5, abs=1e-6)


def test_morf_ranks_a_true_map_below_its_reverse_and_lerf_above():
    x, t = patch_image(2), torch.tensor([1, 1])
    x[1] += 0.1 * torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = x.clamp(0, 1)
    morf, lerf = ROAD(), ROAD(order="lerf")  # defaults: 10 steps, noise 0.01
    assert lerf.higher_is_better is True
    assert (morf(CentrePatch(), x, t, patch_map(2)) < morf(CentrePatch(), x, t, patch_map(2, reverse=True)) - 0.3).all()
    assert (lerf(CentrePatch(), x, t, patch_map(2)) > lerf(CentrePatch(), x, t, patch_map(2, reverse=True)) + 0.3).all()


def test_noise_is_seeded_and_batch_invariant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    g = torch.Generator().manual_seed(1)
    x, t, maps = torch.rand(3, 3, 12, 12, generator=g), torch.tensor([0, 1, 2]), torch.randn(3, 1, 12, 12, generator=g)
    metric = ROAD(percentages=[10, 50, 90], noise=0.05)
    batch = metric(model, x, t, maps)
    alone = torch.cat([metric(model, x[i:i + 1], t[i:i + 1], maps[i:i + 1]) for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-5)
    assert torch.equal(ROAD(percentages=[10, 50, 90], noise=0.05)(model, x, t, maps), batch)
    assert not torch.allclose(ROAD(percentages=[10, 50, 90], noise=0.05, seed=1)(model, x, t, maps), batch)
    assert torch.allclose(metric(model, x, t, maps.repeat(1, 3, 1, 1) / 3), batch, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"percentages": [100]}, "< 100"), ({"percentages": []}, "non-empty"), ({"percentages": [30, 10]}, "increasing"),
    ({"percentages": [-1]}, "percentages"), ({"percentages": 10}, "non-empty"), ({"order": "random"}, "order"),
    ({"noise": -0.1}, "noise"), ({"noise": "x"}, "noise"), ({"seed": 1.5}, "seed"),
])
def test_bad_arguments_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ROAD(**kwargs)


def test_yaml_builds_the_registered_class_and_misspelt_keys_fail():
    node = OmegaConf.to_container(OmegaConf.load(CONF))
    check_target(node, "metric.road")
    assert METRICS.get("road") is ROAD
    with pytest.raises(ConfigKeyError, match="percentage"):
        check_target({**node, "percentage": [10]}, "metric.road")


def test_too_few_iterations_warn_and_still_keep_kept_pixels(caplog):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    removed = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    removed[..., :, 2:] = True
    with caplog.at_level("WARNING", logger="xai_bench.metrics.explanation.road"):
        out = linear_imputation(x, removed, max_iter=2)
    assert "did not reach" in caplog.text
    assert torch.equal(out[..., :2], x[..., :2]) and torch.isfinite(out).all()
