"""BatchedLime and BatchedKernelShap compute Captum's Lime and KernelShap (the references) with the samples batched."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression
from captum.attr import KernelShap, Lime
from captum.attr._core.lime import get_exp_kernel_similarity_function
from torch.distributions import Categorical

from xai_bench.attribution.surrogate import BatchedKernelShap, BatchedLime, ExpKernel, _kernel_shap_coalitions
from xai_bench.models import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=6, in_chans=3).eval()


def _mask(n: int = 1, size: int = 32, channels: int = 1) -> torch.Tensor:
    grid = torch.arange(size)
    mask = grid.view(1, 1, size, 1) // 8 * 4 + grid.view(1, 1, 1, size) // 8  # 16 square features
    if channels > 1:  # a feature per (square, channel): 48 features
        mask = mask + 16 * torch.arange(channels).view(1, channels, 1, 1)
    return mask.expand(n, channels, size, size).clone()


def _images(n: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("baseline", ["zero", "half", "tensor"])
@pytest.mark.parametrize("per_eval", [1, 7, 64])
def test_lime_equals_captum_with_the_same_seed(model, baseline, per_eval, monkeypatch):
    x, t = _images(), torch.tensor([3])
    base = {"zero": 0.0, "half": 0.5, "tensor": _images(seed=2)}[baseline]

    torch.manual_seed(5)
    ref = Lime(model, SkLearnLasso(alpha=1e-4), get_exp_kernel_similarity_function("cosine", 0.25)).attribute(
        x, target=t, feature_mask=_mask(), baselines=base, n_samples=50, perturbations_per_eval=per_eval).detach()
    seen = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    # the batched path never calls Captum's per-chunk evaluation
    monkeypatch.setattr(BatchedLime, "_evaluate_batch", lambda *a, **k: pytest.fail("Captum's loop ran"))
    try:
        torch.manual_seed(5)
        ours = BatchedLime(model, SkLearnLasso(alpha=1e-4), ExpKernel("cosine", 0.25)).attribute(
            x, target=t, feature_mask=_mask(), baselines=base, n_samples=50, perturbations_per_eval=per_eval)
    finally:
        handle.remove()
    assert ref.abs().max() > 0 and (ref != 0).sum() > 8  # a map with structure, not the Lasso's all-zero answer
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert seen == [min(per_eval, 50 - s) for s in range(0, 50, per_eval)]


@pytest.mark.parametrize("mode", ["cosine", "euclidean"])
def test_exp_kernel_is_captums_kernel(mode):
    x = _images()
    p = torch.where(torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.4, x, 0.2)
    captum_kernel = get_exp_kernel_similarity_function(mode, 0.7)
    ours = ExpKernel(mode, 0.7)
    ref = torch.tensor([captum_kernel(x, p[i:i + 1], None) for i in range(5)])
    assert ref.min() < 0.99  # the samples are far enough for the kernel to matter
    torch.testing.assert_close(ours.batched(x, p), ref.float(), rtol=1e-6, atol=1e-7)
    assert abs(ours(x, p[:1], None) - float(ref[0])) < 1e-6
    with pytest.raises(ValueError, match="distance_mode"):
        ExpKernel("manhattan")


@pytest.mark.parametrize("mode", ["cosine", "euclidean"])
@pytest.mark.parametrize("channels", [1, 3])
def test_exp_kernel_from_coalitions_equals_the_kernel_of_the_built_images(mode, channels):
    """The weights from per-feature sums are the kernel of the perturbed images themselves (any baseline, masks
    spanning the channels or per channel, the all-off coalition included)."""
    g = torch.Generator().manual_seed(4)
    x, base = _images(), torch.rand(1, 3, 32, 32, generator=g)
    mask = _mask(channels=channels)
    f = int(mask.max()) + 1
    coalitions = torch.cat([torch.zeros(1, f, dtype=torch.long),
                            torch.bernoulli(torch.full((20, f), 0.3), generator=g).long()])
    kernel = ExpKernel(mode, 0.6)
    built = torch.where(coalitions[:, mask].bool().view(21, 1, *mask.shape[1:]), x, base)
    torch.testing.assert_close(kernel.from_coalitions(x, base, mask, coalitions), kernel.batched(x, built),
                               rtol=1e-5, atol=1e-6)
    zero = kernel.from_coalitions(x, torch.zeros(()), mask, coalitions[:1])  # an all-baseline image of zeros
    torch.testing.assert_close(zero, kernel.batched(x, torch.zeros(1, 3, 32, 32)))


def test_lime_per_channel_mask_several_images_and_list_target(model):
    x = _images(2)
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Lime(model, SkLearnLasso(alpha=1e-4), get_exp_kernel_similarity_function("euclidean", 3.0)).attribute(
            x, target=[2, 4], feature_mask=_mask(2, channels=3), n_samples=40, perturbations_per_eval=16).detach()
        torch.manual_seed(5)
        ours = BatchedLime(model, SkLearnLasso(alpha=1e-4), ExpKernel("euclidean", 3.0)).attribute(
            x, target=[2, 4], feature_mask=_mask(2, channels=3), n_samples=40, perturbations_per_eval=16)
    assert (ref != 0).sum() > 8
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_other_kernels_perturbations_and_inputs_give_captums_maps(model):
    """A similarity without a batched form is called per sample; a custom coalition sampler is drawn per sample;
    tuple inputs and additional_forward_args take Captum's own loop: every case gives Captum's map."""
    x, t = _images(), 1

    def sparse_coalitions(original, **kwargs):
        return torch.bernoulli(torch.full((1, kwargs["num_interp_features"]), 0.3)).long()

    kernel = get_exp_kernel_similarity_function("cosine", 0.5)
    cases = {
        "captum kernel": ({"similarity_func": kernel}, {}),
        "custom sampler": ({"similarity_func": kernel, "perturb_func": sparse_coalitions}, {}),
    }
    for name, (init, extra) in cases.items():
        torch.manual_seed(5)
        ref = Lime(model, SkLearnLasso(alpha=1e-4), **init).attribute(
            x, target=t, feature_mask=_mask(), n_samples=30, perturbations_per_eval=8, **extra).detach()
        torch.manual_seed(5)
        ours = BatchedLime(model, SkLearnLasso(alpha=1e-4), **init).attribute(
            x, target=t, feature_mask=_mask(), n_samples=30, perturbations_per_eval=8, **extra)
        assert (ref != 0).sum() > 4, name
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()), msg=name)

    class Scaled(torch.nn.Module):  # a model with an extra forward argument
        def forward(self, images, scale):
            return model(images) * scale

    torch.manual_seed(5)
    ref = Lime(Scaled(), SkLearnLasso(alpha=1e-4)).attribute(
        x, target=t, feature_mask=_mask(), n_samples=30, additional_forward_args=(2.0,)).detach()
    torch.manual_seed(5)
    ours = BatchedLime(Scaled(), SkLearnLasso(alpha=1e-4)).attribute(
        x, target=t, feature_mask=_mask(), n_samples=30, additional_forward_args=(2.0,))
    torch.testing.assert_close(ours, ref)
    torch.manual_seed(5)
    ref = Lime(model, SkLearnLasso(alpha=1e-4)).attribute(
        (x,), target=t, feature_mask=(_mask(),), n_samples=30)[0].detach()
    torch.manual_seed(5)
    ours = BatchedLime(model, SkLearnLasso(alpha=1e-4)).attribute((x,), target=t, feature_mask=(_mask(),),
                                                                  n_samples=30)[0]
    torch.testing.assert_close(ours, ref)


def test_kernel_shap_equals_captum_given_the_same_coalitions(model):
    """Kernel SHAP's sampler is not Captum's random stream (see the module); with both fed the same coalitions the
    weights, scores and regression are Captum's."""
    draws = _kernel_shap_coalitions(60, 16, _num_select(16))

    def fixed(original, **kwargs):
        yield from (row[None] for row in draws)

    x = _images()
    ref_m, ours_m = KernelShap(model), BatchedKernelShap(model)
    ref_m.perturb_func = fixed
    ours_m.perturb_func = fixed
    ref = ref_m.attribute(x, target=2, feature_mask=_mask(), n_samples=60, perturbations_per_eval=16).detach()
    ours = ours_m.attribute(x, target=2, feature_mask=_mask(), n_samples=60, perturbations_per_eval=16)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def _num_select(f: int) -> Categorical:
    k = torch.arange(f, dtype=torch.float)
    probs = torch.tensor(float(f - 1)) / (k * (f - k))
    probs[0] = 0.0
    return Categorical(probs)


def test_kernel_shap_coalitions_follow_captums_distribution():
    f, n = 8, 40_002
    torch.manual_seed(0)
    c = _kernel_shap_coalitions(n, f, _num_select(f))
    assert c.shape == (n, f) and c.dtype == torch.long
    assert torch.equal(c[0], torch.ones(f, dtype=torch.long)) and torch.equal(c[1], torch.zeros(f, dtype=torch.long))
    k = c[2:].sum(1)
    p = _num_select(f).probs
    freq = torch.bincount(k, minlength=f).float() / (n - 2)
    sigma = (p * (1 - p) / (n - 2)).sqrt()
    assert (freq[0] == 0) and ((freq - p).abs() <= 5 * sigma + 1e-9).all(), (freq, p)
    # given k, every feature equally likely: each position of the one-feature coalitions within 5 sigma of 1/f
    ones = c[2:][k == 1].float()
    pos = ones.mean(0)
    assert ((pos - 1 / f).abs() <= 5 * (1 / f * (1 - 1 / f) / ones.shape[0]) ** 0.5).all(), pos
    assert _kernel_shap_coalitions(1, f, _num_select(f)).shape == (1, f)


def test_kernel_shap_recovers_exact_shapley_values_of_an_additive_model():
    """For a model additive in the features, the Shapley value of a feature is its own contribution. Both ours
    (batched sampler) and Captum's find it from 200 coalitions."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3 * 32 * 32, generator=g)

    class Linear(torch.nn.Module):
        def forward(self, images):
            return images.flatten(1) @ w.T

    x, mask = _images(), _mask()
    contrib = (w[1] * x.flatten()).view(1, 3, 32, 32).sum(1, keepdim=True)
    exact = torch.zeros(16).index_add_(0, mask.flatten(), contrib.flatten())[mask].expand(1, 3, 32, 32)
    for cls in (KernelShap, BatchedKernelShap):
        torch.manual_seed(1)
        got = cls(Linear()).attribute(x, target=1, feature_mask=mask, n_samples=200, perturbations_per_eval=64)
        torch.testing.assert_close(got.detach(), exact, rtol=1e-3, atol=1e-3 * float(exact.abs().max()), msg=str(cls))


def test_progress_reports_every_pass(model):
    from xai_bench.progress import progress_reporting

    seen = []
    with progress_reporting(enabled=False, callback=lambda desc, done, total: seen.append((desc, done, total))):
        BatchedKernelShap(model).attribute(_images(), target=0, feature_mask=_mask(), n_samples=40,
                                           perturbations_per_eval=16)
    assert [s[1:] for s in seen if s[1] > 0] == [(16, 40), (32, 40), (40, 40)]


def test_default_similarity_is_captums_default(model):
    assert isinstance(BatchedLime(model).similarity_func, ExpKernel)
    torch.manual_seed(5)
    ref = Lime(model, SkLearnLinearRegression()).attribute(_images(), target=0, feature_mask=_mask(),
                                                           n_samples=30).detach()
    torch.manual_seed(5)
    ours = BatchedLime(model, SkLearnLinearRegression()).attribute(_images(), target=0, feature_mask=_mask(),
                                                                   n_samples=30)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_surrogate_fit_runs_blas_on_one_thread(model):
    """The fit runs with BLAS limited to one thread (OpenBLAS's spinning threads would slow the next forward passes)
    and the limit is lifted afterwards."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library loaded")
    seen = []
    method = BatchedKernelShap(model)
    fit = method.interpretable_model.fit
    method.interpretable_model.fit = lambda data: (seen.append(blas_threads()), fit(data))[1]
    method.attribute(_images(), target=0, feature_mask=_mask(), n_samples=30, perturbations_per_eval=16)
    assert seen and all(n == 1 for n in seen[0])
    assert blas_threads() == before
