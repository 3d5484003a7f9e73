"""ImageNet-C fidelity of glass blur and frost: the reference's glass-blur sweep transcribed and compared exactly,
the frost stand-in's statistics against the recorded photograph profiles, and (when the optional peer library
``imagecorruptions`` is installed) both against the reference code itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench import ops
from xai_bench.robustness import corruptions as C
from xai_bench.robustness.corruptions import _frost
from xai_bench.robustness.corruptions import _kernels as K

GLASS = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]  # ImageNet-C's (σ, δ, iterations)


def _reference_sweep(img: np.ndarray, dy: np.ndarray, dx: np.ndarray, delta: int) -> np.ndarray:
    """make_imagenet_c.py's glass-blur loop, verbatim but for the offsets (given instead of drawn).

    On an H×W×3 array the tuple "swap" is a copy (``x[h, w]`` is a view); this transcription keeps that.
    """
    x = img.copy()
    height, width = x.shape[:2]
    for h in range(height - delta, delta, -1):
        for w in range(width - delta, delta, -1):
            oy, ox = dy[h - delta - 1, w - delta - 1], dx[h - delta - 1, w - delta - 1]
            h_prime, w_prime = h + oy, w + ox
            x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


@pytest.mark.parametrize("h, w, delta", [(9, 11, 1), (12, 10, 2), (15, 16, 3), (20, 18, 4), (6, 6, 2), (5, 5, 2)])
def test_glass_sweep_step_equals_reference_loop(h, w, delta):
    rng = np.random.default_rng(h * w + delta)
    imgs = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    nh, nw = max(h - 2 * delta, 0), max(w - 2 * delta, 0)
    dy, dx = rng.integers(-delta, delta, (2, nh, nw)), rng.integers(-delta, delta, (2, nh, nw))
    src = K.glass_sweep_step(torch.from_numpy(dy), torch.from_numpy(dx), h, w, delta).numpy()
    for i in range(2):
        expected = _reference_sweep(imgs[i], dy[i], dx[i], delta)
        np.testing.assert_array_equal(imgs[i].reshape(-1, 3)[src[i]].reshape(h, w, 3), expected)


def test_glass_sweep_moves_content_along_chains():
    # δ = 2 reads right/below neighbours that were already overwritten: some pixels travel more than one hop.
    h = w = 40
    src = K.glass_sweep_sources(1, h, w, 2, 1, torch.Generator().manual_seed(0), torch.zeros(1))[0]
    i = torch.arange(h * w)
    hops = torch.maximum((src // w - i // w).abs(), (src % w - i % w).abs())
    assert hops.max() > 2  # one hop moves at most δ = 2
    assert (src.sort().values != i).any()  # a copy sweep, not a permutation: some values are duplicated


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_glass_sources_replay_their_draws(severity):
    # glass_sweep_sources draws (dx, dy) per swept pixel, one uniform block per iteration; replay them in the loop.
    _, delta, iters = GLASS[severity - 1]
    n, h, w = 2, 13, 14
    src = K.glass_sweep_sources(n, h, w, delta, iters, torch.Generator().manual_seed(3), torch.zeros(1))
    g = torch.Generator().manual_seed(3)
    imgs = np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    expected = imgs.copy()
    for _ in range(iters):
        d = (torch.floor(torch.rand(n, h - 2 * delta, w - 2 * delta, 2, generator=g) * 2 * delta) - delta).long()
        for i in range(n):
            expected[i] = _reference_sweep(expected[i], d[i, ..., 1].numpy(), d[i, ..., 0].numpy(), delta)
    got = np.stack([imgs[i].reshape(-1, 3)[src[i].numpy()].reshape(h, w, 3) for i in range(n)])
    np.testing.assert_array_equal(got, expected)


def test_glass_blur_is_blur_sweep_blur():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    sigma, delta, iters = GLASS[3]
    src = K.glass_sweep_sources(2, 20, 20, delta, iters, torch.Generator().manual_seed(5), x)
    first = torch.floor(ops.gaussian_filter(x, sigma).clamp(0, 1) * 255) / 255
    swept = torch.stack([first[i].reshape(3, -1)[:, src[i]].reshape(3, 20, 20) for i in range(2)])
    expected = ops.gaussian_filter(swept, sigma).clamp(0, 1)
    torch.testing.assert_close(C.corrupt(x, "glass_blur", 4, seed=5), expected)


# ----------------------------------------------------------------------------------------------------------------
# frost stand-in
# ----------------------------------------------------------------------------------------------------------------


def _profile_moments(profile: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per channel of the piecewise-linear quantile function the stand-in samples."""
    q = torch.tensor(profile["quantiles"], dtype=torch.float64) / 255
    u = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000 * (q.shape[1] - 1)
    i0 = u.floor().long().clamp(max=q.shape[1] - 2)
    v = q[:, i0] * (1 - (u - i0)) + q[:, i0 + 1] * (u - i0)
    return v.mean(1), v.std(1)


@pytest.mark.parametrize("k", range(5))
def test_frost_stand_in_matches_recorded_profile(k):
    n = 16
    layer = _frost.procedural_frost(n, 224, 224, 3, torch.Generator().manual_seed(k), torch.zeros(1),
                                    photo=torch.full((n,), k))
    assert layer.shape == (n, 3, 224, 224) and layer.min() >= 0 and layer.max() <= 1
    profile = _frost.FROST_PROFILES[k]
    mean, std = _profile_moments(profile)
    torch.testing.assert_close(layer.double().mean((0, 2, 3)), mean, atol=2e-3, rtol=0)
    torch.testing.assert_close(layer.double().std((2, 3)).mean(0), std, atol=0, rtol=0.03)
    luma = (layer.double() * torch.tensor([0.2989, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)).sum(1)
    bands = _frost.octave_band_power(luma).mean(0)
    recorded = torch.tensor(profile["bands"], dtype=torch.float64)
    torch.testing.assert_close(bands[1:], recorded[1:], atol=0.05, rtol=0)
    # the lowest octave: the photographs' crops also hold structure larger than the crop (see procedural_frost)
    assert 0.4 * recorded[0] < bands[0] < recorded[0] + 0.05


def test_frost_stand_in_is_as_bright_as_the_photographs():
    # the old procedural layer averaged 0.35; the five photographs average 0.64
    layer = _frost.procedural_frost(20, 64, 64, 3, torch.Generator().manual_seed(0), torch.zeros(1))
    means = torch.stack([_profile_moments(p)[0].mean() for p in _frost.FROST_PROFILES])
    assert abs(layer.mean().item() - means.mean().item()) < 0.05
    assert 0.6 < means.mean() < 0.7


def test_frost_source_choice(monkeypatch):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setenv(_frost.FROST_TEXTURES_ENV, "procedural")
    assert _frost.frost_source() == "procedural"
    a, b = _frost.FROST_BLEND[2]
    layer = _frost.procedural_frost(2, 32, 32, 3, torch.Generator().manual_seed(1), x)
    torch.testing.assert_close(C.corrupt(x, "frost", 3, seed=1), (a * x + b * layer).clamp(0, 1))
    gray = C.corrupt(x[:, :1], "frost", 3, seed=1)
    assert gray.shape == (2, 1, 32, 32)
    monkeypatch.setenv(_frost.FROST_TEXTURES_ENV, "snowy")
    with pytest.raises(ValueError, match="auto, photos or procedural"):
        C.corrupt(x, "frost", 1)
    monkeypatch.setattr(_frost, "frost_photo_dir", lambda: None)
    monkeypatch.setenv(_frost.FROST_TEXTURES_ENV, "photos")
    with pytest.raises(ValueError, match="imagecorruptions"):
        C.corrupt(x, "frost", 1)
    monkeypatch.setenv(_frost.FROST_TEXTURES_ENV, "auto")
    assert _frost.frost_source() == "procedural"
    with pytest.raises(ValueError, match="one index in 0–4"):
        _frost.procedural_frost(2, 8, 8, 3, None, x, photo=torch.tensor([0, 5]))


# ----------------------------------------------------------------------------------------------------------------
# against the reference code (optional peer library)
# ----------------------------------------------------------------------------------------------------------------


def _imagecorruptions():
    # imagecorruptions is an optional peer library (the `bench` extra): it holds the reference code and the frost
    # photographs, so these comparisons can only run where it is installed.
    from xai_bench.robustness.corruptions._reference import install_pkg_resources_shim, load_imagecorruptions

    install_pkg_resources_shim()  # it imports pkg_resources, which recent setuptools no longer ships
    pytest.importorskip("imagecorruptions", reason="optional peer library for reference checks (xai-bench[bench])")
    return load_imagecorruptions()


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_glass_blur_equals_imagecorruptions_given_the_same_offsets(severity, monkeypatch):
    ic = _imagecorruptions()
    mod = ic.corruptions
    sigma, delta, iters = GLASS[severity - 1]
    n, h, w = 1, 40, 36
    x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(severity))
    img = np.round(x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
    ours = C.corrupt(x, "glass_blur", severity, seed=7)

    g = torch.Generator().manual_seed(7)
    offsets = []
    for _ in range(iters):  # our draws, in the reference's sweep order
        d = (torch.floor(torch.rand(n, h - 2 * delta, w - 2 * delta, 2, generator=g) * 2 * delta) - delta).long()
        offsets += [d[0, r, c].numpy() for r in range(h - 2 * delta - 1, -1, -1)
                    for c in range(w - 2 * delta - 1, -1, -1)]
    feed = iter(offsets)

    class _Random:
        @staticmethod
        def randint(low, high, size=None):
            return next(feed)

    class _Np(type(mod.np)):
        random = _Random

        def __getattr__(self, name):
            return getattr(np, name)

    monkeypatch.setattr(mod, "np", _Np("numpy"))
    ref = mod.glass_blur(img, severity) / 255
    assert next(feed, None) is None
    got = ours[0].permute(1, 2, 0).numpy()
    # the first blur is truncated to uint8 on both sides; a value within 1e-12 of a level may round either way
    assert np.abs(got - ref).max() < 0.05 and np.abs(got - ref).mean() < 1e-4


def test_frost_profiles_are_the_photographs():
    _imagecorruptions()
    recorded = _frost.FROST_PROFILES
    for photo, profile in zip(_frost._photos(), recorded):
        assert _frost.frost_statistics(photo) == profile


@pytest.mark.parametrize("texture", ["photos", "procedural"])
def test_frost_psnr_matches_imagecorruptions(texture):
    ic = _imagecorruptions()
    from skimage import data

    clean = np.stack([np.asarray(getattr(data, name)())[:224, :224] for name in ("chelsea", "coffee")])
    x = torch.from_numpy(clean).permute(0, 3, 1, 2).double() / 255
    reps = 10  # 2 per frost photograph (stratified: PSNR depends mostly on which photograph is drawn)
    stratum = torch.arange(reps).repeat_interleave(2) % 5
    xs = x.repeat(reps, 1, 1, 1)

    def psnr(a, b):
        return 10 * np.log10(1 / ((a - b) ** 2).reshape(len(a), -1).mean(1))

    for severity in (1, 3, 5):
        a, b = _frost.FROST_BLEND[severity - 1]
        layer = _frost.frost_layer(len(xs), 224, 224, 3, torch.Generator().manual_seed(severity), xs,
                                   source=texture, photo=stratum)
        ours = psnr(((a * xs + b * layer).clamp(0, 1)).numpy(), xs.numpy()).mean()
        refs = []
        for r in range(reps):
            for i in range(2):
                seed = 1000 * (100 * r + 10 * severity + i)
                while np.random.RandomState(seed).randint(5) != r % 5:
                    seed += 1
                np.random.seed(seed)
                y = np.clip(ic.corruptions.frost(clean[i], severity), 0, 255) / 255
                refs.append(psnr(y[None], clean[i][None] / 255)[0])
        assert abs(ours - np.mean(refs)) < 0.5, (severity, ours, np.mean(refs))
