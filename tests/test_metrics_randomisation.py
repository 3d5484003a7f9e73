"""Randomisation metrics and their statistics: Spearman / SSIM against scipy / scikit-image, the parameter
randomisation test on a tiny model with a gradient explainer, the random-logit test, batch invariance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from xai_bench.metrics.explanation import METRICS
from xai_bench.metrics.explanation._stats import average_ranks, spearman, ssim
from xai_bench.metrics.explanation.randomisation import (
    ModelParameterRandomisation,
    RandomLogit,
    randomisable_layers,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "metric"


# ------------------------------------------------------------------------------------------------------ statistics
def test_spearman_matches_scipy_with_ties():
    from scipy.stats import rankdata, spearmanr

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 1, 7, 9), generator=g).float()  # many ties
    b = torch.rand(6, 1, 7, 9, generator=g) + 0.3 * a
    assert np.array_equal(average_ranks(a.flatten(1)).numpy(), rankdata(a.flatten(1).numpy(), axis=1))
    want = [spearmanr(x.flatten(), y.flatten())[0] for x, y in zip(a.numpy(), b.numpy())]
    assert np.allclose(spearman(a, b).numpy(), want, atol=1e-6)
    assert torch.allclose(spearman(a, a), torch.ones(6))
    assert torch.allclose(spearman(a, -a), -torch.ones(6))


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(1)
    a = torch.rand(4, 1, 12, 10, generator=g)
    b = a + 0.5 * torch.randn(4, 1, 12, 10, generator=g)
    want = []
    for x, y in zip(a[:, 0].double().numpy(), b[:, 0].double().numpy()):
        rng = float(max(x.max(), y.max()) - min(x.min(), y.min()))
        want.append(structural_similarity(x, y, data_range=rng))
    assert np.allclose(ssim(a, b).numpy(), want, atol=1e-5)
    assert torch.allclose(ssim(a, a), torch.ones(4))
    with pytest.raises(ValueError, match="win_size"):
        ssim(a, b, win_size=11)


# ------------------------------------------------------------------------------------------- tiny model, explainers
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()


def gradient_explainer(original: nn.Module):
    """Plain gradient × sign-free saliency of whichever model it is given (``model=None``: the original)."""
    def explain(images, targets, model=None):
        m = original if model is None else model
        x = images.detach().clone().requires_grad_(True)
        out = m(x).gather(1, targets.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(out, x)
        return grad.sum(1, keepdim=True)
    return explain


def blind_explainer(images, targets, model=None):
    """Ignores the model and the class: an edge-like map of the image itself."""
    return images.mean(1, keepdim=True).diff(dim=-1, prepend=images[..., :1].mean(1, keepdim=True)).abs()


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(2))


# -------------------------------------------------------------------------------------------------------- MPRT
def test_mprt_blind_explainer_fails_the_sanity_check():
    model, x, t = tiny_model(), images(), torch.tensor([0, 1, 2])
    maps = blind_explainer(x, t)
    scores = ModelParameterRandomisation()(model, x, t, maps, explainer=blind_explainer)
    assert torch.allclose(scores, torch.ones(3))  # the map never changes: rank correlation 1, the worst


def test_mprt_layers_order_and_gradient_explainer():
    model, x, t = tiny_model(), images(), torch.tensor([0, 1, 2])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explain = gradient_explainer(model)
    maps = explain(x, t)
    metric = ModelParameterRandomisation()
    assert randomisable_layers(model) == ["0", "3"]
    per_layer, names = metric.layer_scores(model, x, t, maps, explain)
    assert names == ["3", "0"] and per_layer.shape == (3, 2)  # top (the linear layer) first
    # randomising the linear layer replaces the weights that the gradient reads: the ranks decorrelate
    assert per_layer.abs().max() < 0.6
    scores = metric(model, x, t, maps, explainer=explain)
    assert torch.allclose(scores, per_layer.mean(1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    assert torch.equal(scores, metric(model, x, t, maps, explainer=explain))  # seeded
    bottom, names_up = ModelParameterRandomisation(layer_order="bottom_up").layer_scores(model, x, t, maps, explain)
    assert names_up == ["0", "3"]
    # independent: randomising only the conv keeps the linear weights, cascading at "0" has both randomised
    indep, _ = ModelParameterRandomisation(layer_order="independent").layer_scores(model, x, t, maps, explain)
    assert torch.allclose(indep[:, 0], per_layer[:, 0])  # the first step is the same in both orders
    assert not torch.allclose(indep[:, 1], per_layer[:, 1])
    only, names_only = ModelParameterRandomisation(layers=["3"]).layer_scores(model, x, t, maps, explain)
    assert names_only == ["3"] and torch.allclose(only[:, 0], per_layer[:, 0])
    with pytest.raises(ValueError, match="layer_order"):
        ModelParameterRandomisation(layer_order="cascading")
    with pytest.raises(ValueError, match="reset_parameters"):
        ModelParameterRandomisation(layers=["nope*"])(model, x, t, maps, explainer=explain)
    with pytest.raises(ValueError, match="explainer"):
        ModelParameterRandomisation()(model, x, t, maps)


# ------------------------------------------------------------------------------------------------- random logit
def test_random_logit_blind_explainer_scores_one_and_classes_differ():
    model, x, t = tiny_model(), images(), torch.tensor([0, 1, 2])
    scores = RandomLogit()(model, x, t, blind_explainer(x, t), explainer=blind_explainer)
    assert torch.allclose(scores, torch.ones(3))  # the same map for every class: SSIM 1, the worst
    off = RandomLogit(seed=5).other_classes(t.repeat(50), 3)
    assert (off != t.repeat(50)).all() and set(off.tolist()) == {0, 1, 2}


def test_random_logit_of_a_linear_model_is_ssim_of_its_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1 * 8 * 8, 2)).eval()
    x, t = images(2)[:, :1], torch.tensor([0, 1])
    explain = gradient_explainer(model)
    w = model[1].weight.detach().view(2, 1, 8, 8)
    got = RandomLogit()(model, x, t, explain(x, t), explainer=explain)
    norm = w / w.abs().amax((1, 2, 3), keepdim=True)
    # two classes: the other class is fixed, so the score is SSIM(w_t, w_other) of the normalised weights
    want = ssim(norm[t], norm[1 - t])
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="win_size"):
        RandomLogit(win_size=4)


# ------------------------------------------------------------------------------------------ YAMLs, batch invariance
@pytest.mark.parametrize("name", ["model_parameter_randomisation", "random_logit"])
def test_batch_invariance_and_yaml(name):
    metric = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert type(metric) is METRICS.get(name) and metric.category == "randomisation" and not metric.higher_is_better
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).eval()
    explain = gradient_explainer(model)
    x, t = images(4), torch.tensor([0, 1, 1, 0])
    maps = explain(x, t)
    batch = metric(model, x, t, maps, explainer=explain)
    alone = torch.cat([metric(model, x[i:i + 1], t[i:i + 1], maps[i:i + 1], explainer=explain) for i in range(4)])
    assert batch.shape == (4,) and torch.allclose(batch, alone, atol=1e-5)
    assert torch.equal(batch, metric(model, x, t, maps, explainer=explain))
