"""AutoAttack (torchattacks components): never weaker than PGD, untargeted only, a clear error when missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.robustness.attacks import build_attack

pytest.importorskip("torchattacks", reason="pip install --no-deps torchattacks==3.5.1")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "attack"


def _trained_tiny_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small ReLU CNN fitted for a few steps to 4 noisy colour-pattern classes (so it is confident, and attacks
    have something to break), and held-out images it classifies."""
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(4, 3, 12, 12, generator=g)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=g)
        return (0.7 * protos[y] + 0.3 * torch.rand(n, 3, 12, 12, generator=g)).clamp(0, 1), y

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        x, y = sample(64)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    x, y = sample(48)
    return model, x, y


def test_autoattack_is_never_weaker_than_pgd():
    model, x, y = _trained_tiny_model()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9
    eps = [0, "8/255", "10/255", "12/255", "14/255"]  # where PGD-10 leaves part of the images correct
    pgd, _ = build_attack(OmegaConf.merge(OmegaConf.load(CONF_DIR / "pgd_linf.yaml"), {"eps": eps}), model)
    aa, _ = build_attack(OmegaConf.merge(OmegaConf.load(CONF_DIR / "autoattack_fast.yaml"), {"eps": eps}), model)
    acc_pgd = (pgd.sweep(x, y, eps)["preds"] == y).float().mean(1)
    res = aa.sweep(x, y, eps, return_images=True)
    acc_aa = (res["preds"] == y).float().mean(1)
    assert (acc_aa <= acc_pgd).all(), (acc_aa, acc_pgd)
    assert acc_aa[-1] < acc_aa[0]  # it does break the model (measured: AA 0.21 vs PGD-10 0.27 at 12/255)
    assert (res["linf"] <= (torch.tensor([0, 8, 10, 12, 14]) / 255)[:, None] + 1e-7).all()


def test_autoattack_refuses_targets_and_reference_sets():
    model, x, y = _trained_tiny_model()
    cfg = OmegaConf.load(CONF_DIR / "autoattack_fast.yaml")
    with pytest.raises(ValueError, match="untargeted"):
        build_attack(OmegaConf.merge(cfg, {"target_class": 1}), model)
    attack, _ = build_attack(cfg, model)
    accept = torch.zeros(len(y), 4, dtype=torch.bool)
    accept[torch.arange(len(y)), y] = True  # one class per set (what attack.py passes for single-label data): fine
    assert torch.equal(attack(x[:4], y[:4], "8/255", accept=accept[:4]), attack(x[:4], y[:4], "8/255"))
    accept[:, (y + 1) % 4] = True
    with pytest.raises(ValueError, match="reference sets"):
        attack(x, y, "8/255", accept=accept)
    with pytest.raises(ValueError, match="apgd-ce"):
        build_attack(OmegaConf.merge(cfg, {"method": {"attacks": ["pgd"]}}), model)


def test_missing_torchattacks_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import fails as if it were not installed
    model, _, _ = _trained_tiny_model()
    with pytest.raises(ValueError, match="--no-deps torchattacks==3.5.1"):
        build_attack(OmegaConf.load(CONF_DIR / "autoattack.yaml"), model)
