"""Attacks: analytic checks on linear models, Captum equivalence, the ε-ball/[0, 1] contract for every config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import xai_bench  # noqa: F401  (before torchvision/timm, see xai_bench._compat)
from xai_bench.robustness.attacks import FGSM, PGD, Attack, build_attack, parse_eps
from xai_bench.robustness.sweeps import summarize_sweep

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "attack"
ATTACK_CONFIGS = sorted(CONF_DIR.glob("*.yaml"))


def _linear(c: int = 1, h: int = 4, w: int = 4, classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    lin = nn.Linear(c * h * w, classes)
    return nn.Sequential(nn.Flatten(), lin)


def _tiny_cnn(classes: int = 3, seed: int = 0, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act(), nn.Conv2d(4, 4, 3, padding=1), act(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, classes))


def _interior_images(n: int, shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.4 + 0.2 * torch.rand((n, *shape), generator=g)  # in [0.4, 0.6]: no clamping for ε ≤ 0.4


# -- analytic checks on f(x) = Wx + b -------------------------------------------------------------------------------

@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_linear_moves_along_sign_of_weight_difference(targeted):
    model = _linear()
    w = model[1].weight.detach()
    x = _interior_images(3, (1, 4, 4))
    labels = torch.zeros(3, dtype=torch.long)
    eps = 0.1
    attack = FGSM(model, targeted=targeted)
    # CE gradient for true class 0 is p₁ (w₁ − w₀): untargeted ascends it, targeted-to-1 descends CE(·, 1) whose
    # gradient is p₀ (w₀ − w₁) — both move along sign(w₁ − w₀).
    expected = eps * torch.sign(w[1] - w[0]).view(1, 1, 4, 4).expand_as(x)
    adv = attack(x, labels, eps, target_labels=torch.ones(3, dtype=torch.long) if targeted else None)
    torch.testing.assert_close(adv - x, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_linf_linear_reaches_the_corner(random_start):
    model = _linear()
    w = model[1].weight.detach()
    x = _interior_images(3, (1, 4, 4))
    adv = PGD(model, steps=10, random_start=random_start, seed=0)(x, torch.zeros(3, dtype=torch.long), 0.05)
    # The sign of the gradient never changes for a 2-class linear model; 10 steps of 2.5ε/10 saturate the ball.
    torch.testing.assert_close(adv - x, 0.05 * torch.sign(w[1] - w[0]).view(1, 1, 4, 4).expand_as(x),
                               atol=1e-7, rtol=0)


def test_pgd_l2_linear_moves_along_the_weight_difference():
    model = _linear()
    w = model[1].weight.detach()
    x = _interior_images(2, (1, 4, 4))
    eps = 0.25
    adv = PGD(model, norm="2", steps=10, random_start=False)(x, torch.zeros(2, dtype=torch.long), eps)
    direction = (w[1] - w[0]) / (w[1] - w[0]).norm()
    torch.testing.assert_close(adv - x, eps * direction.view(1, 1, 4, 4).expand_as(x), atol=1e-6, rtol=0)


def test_l2_pgd_stays_in_l2_ball_with_random_start():
    model = _tiny_cnn()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for eps in (0.1, 0.5, 2.0):
        adv = PGD(model, norm="L2", steps=5, seed=3)(x, torch.tensor([0, 1, 2, 0]), eps)
        norms = (adv - x).flatten(1).norm(dim=1)
        assert (norms <= eps * (1 + 1e-5)).all(), norms
        assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_is_at_least_as_strong_as_fgsm():
    torch.manual_seed(0)
    model = _linear(c=3, h=8, w=8, classes=10, seed=0)
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        labels = model(x).argmax(dim=1)  # "trained-ish": the model is right on every image before the attack
    eps = 4 / 255
    loss_fgsm = F.cross_entropy(model(FGSM(model)(x, labels, eps)), labels).item()
    loss_pgd = F.cross_entropy(model(PGD(model, steps=20, random_start=False)(x, labels, eps)), labels).item()
    loss_clean = F.cross_entropy(model(x), labels).item()
    assert loss_clean < loss_fgsm <= loss_pgd + 1e-6


# -- Captum is the reference behaviour ------------------------------------------------------------------------------

def _captum_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, reduction="none")  # Captum unbinds a per-sample loss; summed CE is ours


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_captum(targeted):
    from captum.robust import FGSM as CaptumFGSM

    model = _tiny_cnn(act=nn.Tanh).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 1])
    target = torch.tensor([2, 2, 0, 0])
    y = target if targeted else labels
    eps = 8 / 255
    ours = FGSM(model, targeted=targeted)(x, labels, eps, target_labels=target if targeted else None)
    theirs = CaptumFGSM(model, loss_func=_captum_loss, lower_bound=0.0, upper_bound=1.0).perturb(
        x, eps, y, targeted=targeted)
    # Captum leaves components with |∇| ≤ 1e-6 unperturbed; everywhere else the two must agree.
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_captum_loss(model(x_req), y).sum(), x_req)
    differ = (ours - theirs).abs() > 1e-6
    assert not (differ & (grad.abs() > 1e-6)).any()
    assert (grad.abs() > 1e-6).float().mean() > 0.95  # the comparison is not vacuous


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_pgd_linf_matches_captum():
    from captum.robust import PGD as CaptumPGD

    model = _tiny_cnn(act=nn.Tanh).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 1])
    eps, alpha, steps = 8 / 255, 2 / 255, 7
    ours = PGD(model, steps=steps, step_size=alpha, random_start=False)(x, labels, eps)
    theirs = CaptumPGD(model, loss_func=_captum_loss, lower_bound=0.0, upper_bound=1.0).perturb(
        x, radius=eps, step_size=alpha, step_num=steps, target=labels, random_start=False, norm="Linf")
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert (ours - x).abs().max() > eps / 2  # the attack did move


# -- contract over every config file --------------------------------------------------------------------------------

def test_there_are_attack_configs():
    assert {p.stem for p in ATTACK_CONFIGS} >= {"fgsm", "fgsm_targeted", "pgd_linf", "pgd_l2"}


@pytest.mark.parametrize("path", ATTACK_CONFIGS, ids=lambda p: p.stem)
def test_every_attack_config_respects_ball_and_range(path):
    cfg = OmegaConf.load(path)
    assert set(cfg) >= {"name", "method", "eps", "target_class", "save_examples"}
    model = _tiny_cnn()
    attack, eps_list = build_attack(cfg, model)
    assert eps_list[0] == 0 and len(eps_list) >= 3
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])
    target = cfg.target_class
    assert attack.targeted == (target is not None)
    result = attack.sweep(x, labels, eps_list, target_labels=target, return_images=True)
    assert result["images"].shape == (len(eps_list), 2, 3, 8, 8)
    assert result["logits"].shape == (len(eps_list), 2, 3)
    assert torch.isfinite(result["logits"]).all()
    for eps, adv in zip(eps_list, result["images"]):
        delta = adv - x
        assert adv.min() >= 0 and adv.max() <= 1
        if attack.norm == "inf":
            assert delta.abs().max() <= eps + 1e-7
        else:
            assert (delta.flatten(1).norm(dim=1) <= eps * (1 + 1e-5) + 1e-7).all()
    rows = summarize_sweep(result, labels)
    assert [r["eps"] for r in rows] == eps_list
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    if attack.norm == "inf":
        assert all(r["linf_max"] <= r["eps"] + 1e-7 for r in rows)
    single = attack(x, labels, eps_list[-1], target_labels=target)
    assert single.shape == x.shape and single.min() >= 0 and single.max() <= 1


def test_build_attack_errors_and_target_override():
    model = _tiny_cnn()
    cfg = OmegaConf.load(CONF_DIR / "fgsm.yaml")
    cfg.target_class = 1
    attack, _ = build_attack(cfg, model)
    assert attack.targeted  # target_class turns the attack into a targeted one
    cfg = OmegaConf.load(CONF_DIR / "fgsm_targeted.yaml")
    cfg.target_class = None
    with pytest.raises(ValueError, match="target_class"):
        build_attack(cfg, model)
    cfg = OmegaConf.load(CONF_DIR / "fgsm.yaml")
    cfg.eps = [0, "8/255", 3]
    with pytest.raises(ValueError, match="attack.eps"):
        build_attack(cfg, model)
    cfg = OmegaConf.load(CONF_DIR / "pgd_l2.yaml")
    cfg.eps = [0, 3.0]  # fine in L2
    assert build_attack(cfg, model)[1] == [0.0, 3.0]


# -- sweep, ε = 0, modes, input checks ------------------------------------------------------------------------------

def test_fgsm_sweep_equals_separate_calls():
    model = _tiny_cnn()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2])
    eps_list = parse_eps([0, "1/255", "4/255", 0.1])
    attack = FGSM(model)
    result = attack.sweep(x, labels, eps_list, return_images=True)
    for i, eps in enumerate(eps_list):
        single = attack(x, labels, eps)
        assert torch.equal(result["images"][i], single)
        with torch.no_grad():
            torch.testing.assert_close(result["logits"][i], model(single))
        torch.testing.assert_close(result["linf"][i], (single - x).flatten(1).abs().amax(1))
    assert torch.equal(result["preds"], result["logits"].argmax(-1))


def test_fgsm_sweep_uses_one_backward():
    calls = {"forward": 0, "backward": 0}
    model = _tiny_cnn()

    def counted(x):
        calls["forward"] += 1
        out = model(x)
        if out.requires_grad:
            out.register_hook(lambda g: calls.__setitem__("backward", calls["backward"] + 1))
        return out

    x = torch.rand(2, 3, 8, 8)
    FGSM(counted).sweep(x, torch.tensor([0, 1]), [0, 1 / 255, 2 / 255, 4 / 255])
    assert calls == {"forward": 1 + 3, "backward": 1}  # ε = 0 reuses the clean logits


@pytest.mark.parametrize("attack_cls", [FGSM, PGD])
def test_eps_zero_returns_the_input(attack_cls):
    model = _tiny_cnn()
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(attack_cls(model)(x, torch.tensor([0, 1]), 0), x)
    assert torch.equal(attack_cls(model)(x, torch.tensor([0, 1]), "0/255"), x)


def test_model_mode_is_restored_and_eval_used_during_attack():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.train()
    model[1].momentum = 1.0  # a train-mode forward would overwrite the running stats completely
    stats = model[1].running_mean.clone()
    x = torch.rand(2, 3, 8, 8)
    PGD(model, steps=2)(x, torch.tensor([0, 1]), 4 / 255)
    FGSM(model).sweep(x, torch.tensor([0, 1]), [0, 4 / 255])
    assert torch.equal(model[1].running_mean, stats)  # BatchNorm ran in eval mode
    assert all(m.training for m in model.modules())
    model[1].eval()  # mixed modes come back as they were, not all-train
    FGSM(model)(x, torch.tensor([0, 1]), 4 / 255)
    assert model.training and not model[1].training and model[0].training


def test_mode_restored_when_attack_raises():
    model = _tiny_cnn().train()
    with pytest.raises(IndexError):
        FGSM(model)(torch.rand(2, 3, 8, 8), torch.tensor([0, 7]), 0.1)  # label out of range inside the loss
    assert model.training


@pytest.mark.parametrize("images, match", [
    (torch.rand(3, 8, 8), "N×C×H×W"),
    (torch.rand(2, 3, 8, 8) * 2, r"\[0, 1\]"),
    (torch.rand(2, 3, 8, 8) - 0.5, r"\[0, 1\]"),
    ((torch.rand(2, 3, 8, 8) * 255).to(torch.uint8), "float"),
])
def test_bad_images_raise(images, match):
    with pytest.raises(ValueError, match=match):
        FGSM(_tiny_cnn())(images, torch.tensor([0, 1]), 0.1)


def test_targeting_errors():
    model = _tiny_cnn()
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="target_labels"):
        FGSM(model, targeted=True)(x, torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="untargeted"):
        FGSM(model)(x, torch.tensor([0, 1]), 0.1, target_labels=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="shape"):
        PGD(model, targeted=True)(x, torch.tensor([0, 1]), 0.1, target_labels=torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="norm"):
        PGD(model, norm="1")
    with pytest.raises(ValueError, match="eps"):
        FGSM(model)(x, torch.tensor([0, 1]), 1.5)


def test_targeted_fgsm_raises_target_probability():
    model = _tiny_cnn()
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(8, dtype=torch.long)
    res = FGSM(model, targeted=True).sweep(x, labels, [0, 8 / 255], target_labels=2)
    rows = summarize_sweep(res, labels)
    assert rows[1]["mean_target_class_prob"] > rows[0]["mean_target_class_prob"]


# -- parse_eps, summarize_sweep --------------------------------------------------------------------------------------

def test_parse_eps_values():
    assert parse_eps("8/255") == [8 / 255]
    assert parse_eps(OmegaConf.create({"e": [0, "0.5/255", 0.25, "1e-3"]}).e) == [0.0, 0.5 / 255, 0.25, 1e-3]
    assert parse_eps(3, norm="2") == [3.0]
    assert parse_eps(" 16 / 255 ") == [16 / 255]


@pytest.mark.parametrize("bad", ["abc", -0.1, 2, "1/0", True, "8/255/2", float("nan")])
def test_parse_eps_errors(bad):
    with pytest.raises(ValueError, match="attack.eps"):
        parse_eps([0, bad])


def test_summarize_sweep_hand_made():
    big, small = 5.0, 0.0
    clean = torch.tensor([[big, small], [big, small], [small, big], [big, small]])  # labels 0,0,0,1: 2 correct
    labels = torch.tensor([0, 0, 0, 1])
    flipped = torch.tensor([[small, big], [big, small], [small, big], [small, big]])
    result = {
        "eps": [0.0, 0.1],
        "clean_logits": clean,
        "logits": torch.stack([clean, flipped]),
        "preds": torch.stack([clean, flipped]).argmax(-1),
        "linf": torch.tensor([[0.0] * 4, [0.1, 0.1, 0.05, 0.1]]),
        "l2": torch.tensor([[0.0] * 4, [1.0, 2.0, 3.0, 2.0]]),
        "targeted": False,
        "target_labels": None,
    }
    rows = summarize_sweep(result, labels)
    p = 1 / (1 + math.exp(-5))
    assert rows[0]["accuracy"] == 0.5 and rows[0]["attack_success_rate"] == 0.0
    assert rows[1]["accuracy"] == 0.5  # image 0 flipped to wrong, image 3 flipped to right
    assert rows[1]["attack_success_rate"] == 0.5  # of the 2 originally correct, image 0 now wrong
    assert rows[1]["mean_confidence"] == pytest.approx(p)
    assert rows[1]["mean_true_class_prob"] == pytest.approx((1 - p + p + 1 - p + p) / 4)
    assert rows[1]["linf_max"] == pytest.approx(0.1) and rows[1]["linf_mean"] == pytest.approx(0.0875)
    assert rows[1]["l2_max"] == 3.0 and rows[1]["l2_mean"] == 2.0
    # Targeted towards class 1: image 3 (already class 1) is left out; of images 0-2, images 0 and 2 hit it.
    result.update(targeted=True, target_labels=torch.ones(4, dtype=torch.long))
    rows = summarize_sweep(result, labels)
    assert rows[1]["attack_success_rate"] == pytest.approx(2 / 3)
    assert rows[0]["attack_success_rate"] == pytest.approx(1 / 3)


def test_attack_is_abstract():
    with pytest.raises(NotImplementedError):
        Attack(_tiny_cnn())(torch.rand(1, 3, 8, 8), torch.tensor([0]), 0.1)
