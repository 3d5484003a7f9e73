"""Tests for our own attribution methods: RISE, CAMs, ForGrad, honest guided methods and adaptive batching."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.attribution import (
    RISE,
    Deconvolution,
    EigenCAM,
    ForGrad,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCam,
    ScoreCAM,
    check_guided_support,
    forgrad_filter,
    generate_rise_masks,
)
from xai_bench.batching import AdaptiveBatcher, default_batch_size, run_batched
from xai_bench.checks import target_indices

PATCH = (slice(8, 16), slice(20, 28))  # rows, cols of the patch that decides class 1


class PatchModel(nn.Module):
    """Logit of class 1 = 10 · mean of a fixed 8×8 patch − 5; class 0 logit = 0. Only the patch matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[:, :, PATCH[0], PATCH[1]].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(patch), 10 * patch - 5], dim=1)


class ConstantModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 2, device=x.device)


def small_cnn(act: type[nn.Module] = nn.ReLU, num_classes: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), act(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), act(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes),
    ).eval()


# ---------------------------------------------------------------- batching


def test_run_batched_halves_on_oom_and_matches_unbatched():
    x = torch.arange(40, dtype=torch.float32).view(20, 2)
    sizes = []

    def fn(chunk: torch.Tensor) -> torch.Tensor:
        sizes.append(chunk.shape[0])
        if chunk.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return chunk * 2 + 1

    batcher = AdaptiveBatcher(16)
    out = batcher(fn, x)
    assert torch.equal(out, x * 2 + 1)
    assert batcher.batch_size == 2  # 16 → 8 → 4 → 2, then kept for later calls
    assert sizes[:4] == [16, 8, 4, 2]
    assert max(sizes[4:]) == 2


def test_run_batched_slices_cpu_oom_and_gives_up_at_one():
    data = torch.randn(7, 3)

    def fn(rows: slice) -> torch.Tensor:
        if rows.stop - rows.start > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory")
        return data[rows].sum(1)

    assert torch.allclose(run_batched(fn, 7, 5), data.sum(1))

    def always_oom(rows: slice) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory even with batch_size=1"):
        run_batched(always_oom, 4, 4)

    def other_error(rows: slice) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batched(other_error, 4, 4)
    with pytest.raises(ValueError, match="batch_size"):
        AdaptiveBatcher(0)


def test_default_batch_size_and_targets():
    model = small_cnn()
    small = default_batch_size(model, (3, 32, 32), "cpu")
    big = default_batch_size(model, (3, 224, 224), "cpu")
    assert 1 <= big < small <= 128
    x = torch.rand(3, 3, 16, 16)
    assert target_indices(model, x, 2).tolist() == [2, 2, 2]
    assert target_indices(model, x, [0, 1, 2]).tolist() == [0, 1, 2]
    assert target_indices(model, x, torch.tensor(1)).tolist() == [1, 1, 1]
    assert torch.equal(target_indices(model, x, None), model(x).argmax(1))
    with pytest.raises(ValueError, match="target has 2 entries"):
        target_indices(model, x, [0, 1])


# ---------------------------------------------------------------- RISE


def test_rise_masks_shape_range_and_density():
    g = torch.Generator().manual_seed(0)
    masks = generate_rise_masks(400, (30, 20), grid_size=5, p=0.3, generator=g)
    assert masks.shape == (400, 30, 20)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.3) < 0.03


def test_rise_finds_the_deciding_patch():
    x = torch.ones(2, 3, 32, 32)
    sal = RISE(PatchModel()).attribute(x, target=1, n_masks=1000, grid_size=4, seed=0, batch_size=256)
    assert sal.shape == (2, 1, 32, 32)
    for s in sal[:, 0]:
        row, col = divmod(int(s.argmax()), 32)
        assert PATCH[0].start <= row < PATCH[0].stop and PATCH[1].start <= col < PATCH[1].stop
        # far from the patch the score is independent of the mask, so the map is flat there
        assert s[PATCH[0], PATCH[1]].mean() > s[24:, :8].mean()


def test_rise_constant_model_gives_mask_average():
    x = torch.rand(1, 3, 16, 16)
    sal = RISE(ConstantModel()).attribute(x, target=0, n_masks=50, grid_size=3, p=0.5, seed=3, batch_size=64,
                                          use_softmax=False)
    masks = generate_rise_masks(50, (16, 16), 3, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(sal[0, 0], masks.sum(0) / (50 * 0.5), atol=1e-5)


def test_rise_deterministic_finite_and_targets():
    model = small_cnn()
    x = torch.rand(3, 3, 16, 16)
    rise = RISE(model)
    a = rise.attribute(x, n_masks=64, seed=1, batch_size=20)
    b = rise.attribute(x, n_masks=64, seed=1, batch_size=7)  # chunking must not change the masks' effect
    c = rise.attribute(x, n_masks=64, seed=2, batch_size=20)
    assert a.shape == (3, 1, 16, 16) and torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c)
    pred = model(x).argmax(1)
    assert torch.allclose(a, rise.attribute(x, target=pred, n_masks=64, seed=1, batch_size=20), atol=1e-6)
    assert torch.allclose(a, rise.attribute(x, target=pred.tolist(), n_masks=64, seed=1, batch_size=20), atol=1e-6)
    with pytest.raises(ValueError, match="p "):
        rise.attribute(x, p=0.0)
    with pytest.raises(ValueError, match="N×C×H×W"):
        rise.attribute(x[0])


def test_rise_keeps_a_seeded_mask_set_and_the_maps_do_not_change(monkeypatch):
    """The cached masks of a seeded call are the masks the chunked loop draws: maps equal with the cache off."""
    from xai_bench.attribution import rise as rise_mod

    model = small_cnn()
    x = torch.rand(2, 3, 16, 16)
    rise_mod._MASK_CACHE.clear()
    cached = RISE(model).attribute(x, n_masks=600, seed=3, batch_size=64)  # 3 mask blocks, several chunks
    assert len(rise_mod._MASK_CACHE) == 1 and next(iter(rise_mod._MASK_CACHE.values())).shape == (600, 16, 16)
    again = RISE(model).attribute(x, n_masks=600, seed=3, batch_size=64)
    monkeypatch.setattr(rise_mod, "_CACHE_VALUES", 0)
    rise_mod._MASK_CACHE.clear()
    drawn = RISE(model).attribute(x, n_masks=600, seed=3, batch_size=64)
    assert not rise_mod._MASK_CACHE
    assert torch.equal(cached, again) and torch.equal(cached, drawn)
    assert not torch.equal(cached, RISE(model).attribute(x, n_masks=600, seed=4, batch_size=64))


# ---------------------------------------------------------------- CAMs


@pytest.mark.parametrize("cls", [ScoreCAM, EigenCAM, GradCAMPlusPlus])
def test_cam_shapes_at_layer_resolution(cls):
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16)
    out = cls(model, model[3]).attribute(x, target=[0, 2])
    assert out.shape == (2, 1, 8, 8)
    assert torch.isfinite(out).all() and (out >= 0).all()
    raw = cls(model, model[3]).attribute(x, target=[0, 2], relu_attributions=False)
    assert torch.allclose(F.relu(raw), out, atol=1e-6)
    assert all(not m._forward_hooks for m in model.modules())


def test_scorecam_batch_size_invariant_and_finite():
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16)
    cam = ScoreCAM(model, model[2])
    a = cam.attribute(x, batch_size=3, relu_attributions=False)
    b = cam.attribute(x, batch_size=64, relu_attributions=False)
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    assert torch.allclose(a, b, atol=1e-5)


def test_scorecam_weights_are_masked_scores():
    # layer = identity on the input, so A_k are the input channels and the weights can be computed by hand
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    x = torch.rand(1, 2, 4, 4)
    x[0, 1] = 0.5  # a constant channel carries no spatial information → weight 0
    cam = ScoreCAM(model, model[0]).attribute(x, target=1, relu_attributions=False)
    a0 = x[0, 0]
    mask = (a0 - a0.min()) / (a0.max() - a0.min())
    w0 = model(x * mask).softmax(1)[0, 1]
    assert torch.allclose(cam[0, 0], w0 * a0, atol=1e-6)


def test_eigencam_is_signed_first_principal_component():
    torch.manual_seed(0)
    pattern = torch.rand(5, 6)
    head = nn.Sequential(nn.Identity(), nn.Flatten(), nn.LazyLinear(2))
    for w in (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, -2.0, -3.0])):
        acts = (w.view(3, 1, 1) * pattern).unsqueeze(0)  # rank one: every channel is a multiple of the pattern
        cam = EigenCAM(head, head[0]).attribute(acts, relu_attributions=False)
        # the sign follows the channel sum Σ w · pattern
        expected = torch.sign(w.sum()) * w.norm() * (pattern - pattern.mean())
        assert torch.allclose(cam[0, 0], expected, atol=1e-5)


def test_gradcampp_matches_closed_form_on_linear_head():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    x = torch.rand(1, 3, 4, 4)
    cam = GradCAMPlusPlus(model, model[0]).attribute(x, target=1, relu_attributions=False)
    g = model[3].weight[1].detach() / 16  # d logit / d A_k(i, j), the same at every pixel
    alpha = g**2 / (2 * g**2 + x[0].sum(dim=(1, 2)) * g**3)
    weights = 16 * alpha * F.relu(g)
    assert torch.allclose(cam[0, 0], (weights.view(3, 1, 1) * x[0]).sum(0), atol=1e-6)


def test_cam_rejects_non_spatial_layer():
    model = small_cnn()
    with pytest.raises(ValueError, match="Tensor\\[N, K, h, w\\]"):
        EigenCAM(model, model[6]).attribute(torch.rand(1, 3, 16, 16))


# ---------------------------------------------------------------- ForGrad


@pytest.mark.parametrize("hw", [(16, 16), (15, 21)])
def test_forgrad_sigma_extremes(hw):
    torch.manual_seed(0)
    maps = torch.randn(2, 3, *hw)
    assert torch.allclose(forgrad_filter(maps, max(hw)), maps, atol=1e-5)
    dc = forgrad_filter(maps, 0)  # only the DC term survives: each map becomes its mean
    assert torch.allclose(dc, maps.mean(dim=(2, 3), keepdim=True).expand_as(maps), atol=1e-5)


def test_forgrad_is_low_pass():
    i = torch.arange(32)
    checker = ((-1.0) ** (i.view(-1, 1) + i.view(1, -1))).expand(1, 1, 32, 32)
    smooth = torch.cos(2 * math.pi * 2 * i / 32).view(1, 1, 1, 32).expand(1, 1, 32, 32)
    assert forgrad_filter(checker, 5).pow(2).sum() < 1e-6 * checker.pow(2).sum()
    assert torch.allclose(forgrad_filter(smooth, 5), smooth, atol=1e-5)
    noisy = smooth + checker
    assert torch.allclose(forgrad_filter(noisy, 5), smooth, atol=1e-5)
    with pytest.raises(ValueError, match="sigma"):
        forgrad_filter(checker, -1)


def test_forgrad_wraps_captum_methods():
    from captum.attr import IntegratedGradients, Saliency

    model = small_cnn()
    x = torch.rand(2, 3, 16, 16)
    plain = Saliency(model).attribute(x, target=0, abs=False)
    wrapped = ForGrad(Saliency(model), sigma=3).attribute(x, target=0, abs=False)
    assert torch.allclose(wrapped, forgrad_filter(plain, 3), atol=1e-6)
    attr, delta = ForGrad(IntegratedGradients(model), sigma=3).attribute(
        x, target=0, n_steps=4, return_convergence_delta=True)
    assert attr.shape == x.shape and delta.shape == (2,)
    with pytest.raises(ValueError, match="attribute"):
        ForGrad(model, sigma=3)


# ---------------------------------------------------------------- guided methods


class TwoLayer(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1, self.act, self.fc2 = nn.Linear(6, 8), act, nn.Linear(8, 1)
        with torch.no_grad():
            self.fc1.weight.mul_(6)  # spread pre-activations over ReLU6's whole range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_guided_refuses_silu_and_allows_when_asked():
    model = small_cnn(nn.SiLU)
    x = torch.rand(1, 3, 16, 16)
    assert check_guided_support(model) == ["1", "3"]
    with pytest.raises(ValueError, match="SiLU.*allow_unsupported=True"):
        GuidedBackprop(model).attribute(x, target=0)
    with pytest.raises(ValueError, match="SiLU"):
        GuidedGradCam(model, model[2]).attribute(x, target=0)
    out = GuidedBackprop(model, allow_unsupported=True).attribute(x, target=0)
    assert out.shape == x.shape


def test_guided_detects_functional_relu():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(F.relu(self.fc1(x)))

    x = torch.randn(2, 6)
    assert check_guided_support(Functional(), x) == ["functional F.relu"]
    assert check_guided_support(TwoLayer(nn.ReLU()), x) == []
    with pytest.raises(ValueError, match="functional F.relu"):
        Deconvolution(Functional()).attribute(x)


def test_guided_rules_on_relu6_are_exact():
    model = TwoLayer(nn.ReLU6())
    x = torch.randn(4, 6)
    z = model.fc1(x).detach()
    w1, w2 = model.fc1.weight.detach(), model.fc2.weight.detach()[0]
    inside = ((z > 0) & (z < 6)).float()
    assert 0 < inside.mean() < 1 and (z > 6).any()
    plain = inside * w2 @ w1
    guided = GuidedBackprop(model).attribute(x.clone())
    deconv = Deconvolution(model).attribute(x.clone())
    assert torch.allclose(guided, inside * F.relu(w2) @ w1, atol=1e-5)
    assert torch.allclose(deconv, (F.relu(w2) @ w1).expand_as(x), atol=1e-5)
    assert not torch.allclose(guided, plain, atol=1e-3)


def test_guided_on_resnet18_leaves_model_unchanged():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=5).eval()
    before = [(name, id(m), getattr(m, "inplace", None)) for name, m in model.named_modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 64, 64)
    method = GuidedBackprop(model)
    gbp = method.attribute(x, target=1)
    ggc = GuidedGradCam(model, model.layer4).attribute(x, target=[2])
    assert gbp.shape == ggc.shape == x.shape
    assert torch.isfinite(gbp).all() and torch.isfinite(ggc).all() and gbp.abs().sum() > 0
    with pytest.raises((IndexError, RuntimeError)):
        method.attribute(x, target=99)  # an error mid-call must still restore the model
    assert [(name, id(m), getattr(m, "inplace", None)) for name, m in model.named_modules()] == before
    assert all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
