"""Tests for xai_bench.robustness.corruptions: contracts over every corruption × severity and every suite config,
reference checks against scipy / scikit-image / Pillow, determinism and input validation."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench import ops
from xai_bench.robustness import corruptions as C
from xai_bench.robustness.corruptions import _kernels as K

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SUITES = sorted(p.stem for p in (CONF_DIR / "corruption").glob("*.yaml"))
NAMES = C.list_corruptions()
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform"}
DETERMINISTIC = sorted(set(NAMES) - RANDOM)


def _images(n: int = 2, c: int = 3, size: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Smooth structure plus texture, kept inside (0.05, 0.95) so every corruption has room to move."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, c, 4, 4, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = 0.7 * smooth + 0.3 * torch.rand(n, c, size, size, generator=g)
    return (0.05 + 0.9 * x).to(dtype)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).double().numpy()


# ----------------------------------------------------------------------------------------------------------------
# registry contract
# ----------------------------------------------------------------------------------------------------------------


def test_registry_holds_imagenet_c():
    assert set(C.IMAGENET_C_NAMES) <= set(NAMES)
    assert len(C.IMAGENET_C_NAMES) == 15
    assert C.list_corruptions("*blur") == ["defocus_blur", "gaussian_blur", "glass_blur", "motion_blur", "zoom_blur"]


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", NAMES)
def test_contract(name, severity):
    x = _images()
    y = C.corrupt(x, name, severity, seed=0)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 1e-3, f"{name}/{severity} left the images (almost) unchanged"
    assert torch.equal(x, _images()), "input was modified in place"


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_is_identity(name):
    x = _images()
    y = C.corrupt(x, name, 0, seed=0)
    assert torch.equal(y, x) and y is not x


@pytest.mark.parametrize("name", NAMES)
def test_seed_determinism(name):
    x = _images()
    a, b = C.corrupt(x, name, 3, seed=0), C.corrupt(x, name, 3, seed=0)
    assert torch.equal(a, b)
    if name in RANDOM:
        assert not torch.equal(a, C.corrupt(x, name, 3, seed=1))
        g = torch.Generator().manual_seed(0)
        assert not torch.equal(C.corrupt(x, name, 3, generator=g), C.corrupt(x, name, 3, generator=g))


# Not zoom_blur: ImageNet-C's severity 5 averages fewer, coarser zoom steps than severity 4, so on small images the
# distance can dip; fog, glass, elastic and JPEG tables are not monotone in a single distance either.
@pytest.mark.parametrize(
    "name",
    ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur", "defocus_blur",
     "motion_blur", "contrast", "brightness", "pixelate", "snow"],
)
def test_distance_grows_with_severity(name):
    x = _images(size=48)
    dist = [(C.corrupt(x, name, s, seed=0) - x).abs().mean().item() for s in range(6)]
    assert dist[0] == 0
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(dist)), dist
    assert dist[5] > dist[1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("name", ["gaussian_noise", "defocus_blur", "fog", "elastic_transform", "jpeg_compression"])
def test_dtype_preserved(name, dtype):
    x = _images(dtype=dtype)
    y = C.corrupt(x, name, 2, seed=0)
    assert y.dtype == dtype and torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def test_channels_other_than_rgb():
    for c in (1, 4):
        x = _images(c=c)
        for name in NAMES:
            if name == "jpeg_compression" and c == 4:
                with pytest.raises(ValueError, match="1 or 3 channels"):
                    C.corrupt(x, name, 1)
                continue
            y = C.corrupt(x, name, 2, seed=0)
            assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1, name


# ----------------------------------------------------------------------------------------------------------------
# reference checks (the ImageNet-C code uses scikit-image, scipy, OpenCV, Pillow, ImageMagick)
# ----------------------------------------------------------------------------------------------------------------


def test_gaussian_blur_matches_skimage():
    from skimage.filters import gaussian

    x = _images(n=1, dtype=torch.float64)
    for sev, sigma in zip(range(1, 6), [1, 2, 3, 4, 6]):
        ref = np.clip(gaussian(_hwc(x), sigma=sigma, channel_axis=-1), 0, 1)
        np.testing.assert_allclose(_hwc(C.corrupt(x, "gaussian_blur", sev)), ref, atol=1e-12)
    np.testing.assert_allclose(_hwc(C.gaussian_blur(x, 10)), gaussian(_hwc(x), sigma=10, channel_axis=-1),
                               atol=1e-12)


def test_huge_sigma_symmetric_blur_matches_skimage():
    # ImageNet-C's elastic field: σ ≈ 171 px with reflect edges and truncate=3, wider than the image itself.
    from skimage.filters import gaussian

    u = np.random.default_rng(0).uniform(-1, 1, (20, 24))
    got = ops.gaussian_filter(torch.from_numpy(u)[None, None], 244 * 0.7, mode="symmetric", truncate=3.0)[0, 0]
    np.testing.assert_allclose(got.numpy(), gaussian(u, 244 * 0.7, mode="reflect", truncate=3), atol=1e-14)


@pytest.mark.parametrize("mode, torch_mode", [("reflect101", "reflect"), ("nearest", "replicate")])
def test_ops_boundary_modes_match_torch_pad(mode, torch_mode):
    # xai_bench.ops names one convention per mode; torch calls reflect-101 "reflect" (scipy calls it "mirror").
    x = torch.rand(1, 2, 5, 7, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.pad(x, (3, 3, 2, 2), mode=torch_mode)
    assert torch.equal(ops.pad(x, 2, 3, mode), expected)


@pytest.mark.parametrize("delta", [0.1, 0.5, -0.3])
def test_brightness_matches_skimage_hsv(delta):
    from skimage.color import hsv2rgb, rgb2hsv

    x = _images(n=1, dtype=torch.float64)
    x[0, :, 0, 0] = 0  # a black pixel: HSV has no hue there
    hsv = rgb2hsv(_hwc(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + delta, 0, 1)
    np.testing.assert_allclose(_hwc(C.brightness(x, delta)), np.clip(hsv2rgb(hsv), 0, 1), atol=1e-12)


def test_clipped_zoom_matches_scipy():
    from scipy.ndimage import zoom

    x = _images(n=1, size=40, dtype=torch.float64)
    img = _hwc(x)
    for z in (1.0, 1.07, 1.31, 2.5, 4.5):
        ch = math.ceil(40 / z)
        top = (40 - ch) // 2
        ref = zoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
        trim = (ref.shape[0] - 40) // 2
        np.testing.assert_allclose(_hwc(K.clipped_zoom(x, z)), ref[trim : trim + 40, trim : trim + 40], atol=1e-12)


@pytest.mark.parametrize("size", [40, 37])
def test_pixelate_matches_pillow_box(size):
    from PIL import Image

    x = torch.round(_images(n=1, size=size, dtype=torch.float64) * 255) / 255
    arr = np.round(_hwc(x) * 255).astype(np.uint8)
    for sev, c in zip(range(1, 6), [0.6, 0.5, 0.4, 0.3, 0.25]):
        small = int(size * c)
        ref = np.asarray(Image.fromarray(arr).resize((small, small), Image.BOX).resize((size, size), Image.BOX))
        # Pillow rounds to uint8 after each pass; we stay in float.
        assert np.abs(_hwc(C.corrupt(x, "pixelate", sev)) * 255 - ref).max() <= 1.0 + 1e-9


@pytest.mark.parametrize("mode, scipy_mode", [("reflect101", "mirror"), ("symmetric", "reflect")])
def test_sample_matches_map_coordinates(mode, scipy_mode):
    from scipy.ndimage import map_coordinates

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 20, 20, generator=g, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    sx = (xs + 15 * torch.randn(20, 20, generator=g)).double()[None]
    sy = (ys + 15 * torch.randn(20, 20, generator=g)).double()[None]
    ref = map_coordinates(x[0, 0].numpy(), [sy[0].numpy(), sx[0].numpy()], order=1, mode=scipy_mode)
    np.testing.assert_allclose(K.sample_bilinear(x, sx, sy, mode)[0, 0].numpy(), ref, atol=1e-12)


def test_defocus_conv_matches_scipy_mirror():
    from scipy.ndimage import correlate

    x = _images(n=1, c=1, size=24, dtype=torch.float64)
    k = torch.rand(21, 21, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = correlate(x[0, 0].numpy(), k.numpy(), mode="mirror")  # scipy "mirror" = OpenCV BORDER_REFLECT_101
    np.testing.assert_allclose(ops.correlate2d(x, k, "reflect101")[0, 0].numpy(), ref, atol=1e-12)


def test_motion_blur_matches_imagemagick_formula():
    # A per-pixel transcription of ImageMagick's MotionBlurImage (edge pixels repeat).
    x = _images(n=2, c=1, size=12, dtype=torch.float64)
    angles = torch.tensor([30.0, -100.0], dtype=torch.float64)
    radius, sigma = 4, 2.0
    got = K.motion_blur(x, radius, sigma, angles)
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k /= k.sum()
    img = x[:, 0].numpy()
    for n, a in enumerate(angles.tolist()):
        px, py = width * math.sin(math.radians(a)), width * math.cos(math.radians(a))
        offs = [(math.ceil(i * py / math.hypot(px, py) - 0.5), math.ceil(i * px / math.hypot(px, py) - 0.5))
                for i in range(width)]
        ref = np.zeros((12, 12))
        for yy in range(12):
            for xx in range(12):
                ref[yy, xx] = sum(k[i] * img[n, min(max(yy + oy, 0), 11), min(max(xx + ox, 0), 11)]
                                  for i, (ox, oy) in enumerate(offs))
        np.testing.assert_allclose(got[n, 0].numpy(), ref, atol=1e-12)


def test_noise_statistics():
    x = torch.full((4, 3, 64, 64), 0.5)
    # impulse: a fraction c of values flipped to 0 or 1, half each
    y = C.corrupt(x, "impulse_noise", 5, seed=0)
    flipped = (y != 0.5).float().mean().item()
    assert abs(flipped - 0.27) < 0.01 and abs((y == 1).float().mean().item() - 0.135) < 0.01
    # gaussian: std .38 (barely clipped around 0.5)
    assert abs((C.corrupt(x, "gaussian_noise", 1, seed=0) - x).std().item() - 0.08) < 0.003
    # shot: Poisson(λx)/λ has mean x and variance x/λ
    y = C.corrupt(x, "shot_noise", 1, seed=0)
    assert abs(y.mean().item() - 0.5) < 0.01 and abs(y.var().item() - 0.5 / 60) < 0.001


def test_plasma_fractal_and_fog():
    x = _images()
    p = K.plasma_fractal(3, 32, 2.0, torch.Generator().manual_seed(0), x)
    assert p.shape == (3, 32, 32)
    assert torch.allclose(p.amin((1, 2)), torch.zeros(3)) and torch.allclose(p.amax((1, 2)), torch.ones(3))
    assert not torch.equal(p[0], p[1])  # one fractal per image
    # fog keeps values below max·(max+s)/(max+s) and lifts dark pixels
    y = C.corrupt(x, "fog", 3, seed=0)
    assert (y <= x.amax((1, 2, 3), keepdim=True) + 1e-6).all()


def test_contrast_matches_imagenet_c_formula():
    x = _images()
    mean = x.mean((-2, -1), keepdim=True)
    for sev, c in zip(range(1, 6), [0.4, 0.3, 0.2, 0.1, 0.05]):
        torch.testing.assert_close(C.corrupt(x, "contrast", sev), ((x - mean) * c + mean).clamp(0, 1))
        torch.testing.assert_close(C.contrast(x, c), C.corrupt(x, "contrast", sev))


def test_glass_blur_shuffles_locally():
    # Shuffling a flat image changes nothing: the result is the uint8-truncated flat value (edges repeat in blurs).
    flat = torch.full((2, 3, 24, 24), 0.5)
    torch.testing.assert_close(C.corrupt(flat, "glass_blur", 5, seed=0), torch.full_like(flat, 127 / 255))
    # On a textured image the shuffle adds to the blur: farther from the input than the two blurs alone.
    x = _images(size=24)
    blur_only = ops.gaussian_filter(torch.floor(ops.gaussian_filter(x, 1.5) * 255) / 255, 1.5)
    y = C.corrupt(x, "glass_blur", 5, seed=0)
    assert (y - x).abs().mean() > (blur_only - x).abs().mean()


# ----------------------------------------------------------------------------------------------------------------
# parametric corruptions
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, kwargs",
    [(C.contrast, {"factor": 1}), (C.gaussian_blur, {"radius": 0}), (C.brightness, {"delta": 0}),
     (C.gaussian_noise, {"std": 0}), (C.pixelate, {"factor": 1}), (C.rotate, {"degrees": 0}),
     (C.rotate, {"degrees": 360})],
)
def test_parametric_identity_settings(fn, kwargs):
    x = _images()
    y = fn(x, **kwargs)
    assert torch.equal(y, x) and y is not x


@pytest.mark.parametrize(
    "fn, kwargs",
    [(C.contrast, {"factor": 5}), (C.contrast, {"factor": 0.3}), (C.gaussian_blur, {"radius": 10}),
     (C.invert, {}), (C.brightness, {"delta": -0.4}), (C.gaussian_noise, {"std": 0.1}),
     (C.jpeg, {"quality": 10}), (C.pixelate, {"factor": 8}), (C.rotate, {"degrees": 30})],
)
def test_parametric_contract(fn, kwargs):
    x = _images()
    y = fn(x, **kwargs)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1 and (y - x).abs().mean() > 1e-3


def test_parametric_exact_values():
    x = _images()
    assert torch.equal(C.invert(x), 1 - x)
    torch.testing.assert_close(C.contrast(x, 0), x.mean((-2, -1), keepdim=True).expand_as(x))
    torch.testing.assert_close(C.rotate(x, 90), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(C.rotate(x, -90), torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5, rtol=0)
    blocks = torch.nn.functional.avg_pool2d(x, 4).repeat_interleave(4, -2).repeat_interleave(4, -1)
    torch.testing.assert_close(C.pixelate(x, 4), blocks)
    g = torch.Generator().manual_seed(3)
    expected = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    torch.testing.assert_close(C.gaussian_noise(x, 0.1, generator=g), expected)


def test_jpeg_quality_100_is_close_not_exact():
    x = torch.nn.functional.interpolate(_images(), scale_factor=0.25, mode="area")
    x = torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear")  # smooth: chroma subsampling is mild
    y = C.jpeg(x, 100)
    assert 0 < (y - x).abs().mean() < 0.01
    assert (C.jpeg(x, 5) - x).abs().mean() > (y - x).abs().mean()


def test_rotate_non_square_is_rigid():
    x = torch.zeros(1, 1, 9, 15)
    x[0, 0, 4, 7 + 3] = 1  # 3 px right of centre
    y = C.rotate(x, 90)  # counter-clockwise: ends up 3 px above the centre
    assert y[0, 0, 4 - 3, 7] > 0.99


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros((1, 3, 8, 8)), "torch.Tensor"), (torch.rand(3, 8, 8), "N×C×H×W"),
     (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "float"), (torch.rand(1, 3, 8, 8) * 2, r"\[0, 1\]"),
     (torch.full((1, 3, 8, 8), float("nan")), r"\[0, 1\]"), (-torch.rand(1, 3, 8, 8), r"\[0, 1\]")],
)
def test_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        C.corrupt(bad, "fog", 1)
    with pytest.raises(ValueError, match=match):
        C.contrast(bad, 2)


@pytest.mark.parametrize("severity", [-1, 6, 1.5, True, "3"])
def test_bad_severity(severity):
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(_images(), "fog", severity)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="Did you mean: gaussian_noise"):
        C.corrupt(_images(), "gausian_noise", 1)


@pytest.mark.parametrize(
    "fn, kwargs, param",
    [(C.contrast, {"factor": -1}, "factor"), (C.gaussian_blur, {"radius": -2}, "radius"),
     (C.gaussian_blur, {"radius": float("inf")}, "radius"), (C.brightness, {"delta": 1.5}, "delta"),
     (C.gaussian_noise, {"std": -0.1}, "std"), (C.jpeg, {"quality": 0}, "quality"),
     (C.jpeg, {"quality": 101}, "quality"), (C.jpeg, {"quality": 50.5}, "quality"),
     (C.pixelate, {"factor": 0.5}, "factor"), (C.rotate, {"degrees": 10, "padding_mode": "wrap"}, "padding_mode")],
)
def test_bad_parameters(fn, kwargs, param):
    with pytest.raises(ValueError, match=param):
        fn(_images(), **kwargs)


def test_seed_and_generator_are_exclusive():
    with pytest.raises(ValueError, match="seed or generator"):
        C.corrupt(_images(), "fog", 1, seed=0, generator=torch.Generator())


# ----------------------------------------------------------------------------------------------------------------
# suites from conf/corruption/*.yaml
# ----------------------------------------------------------------------------------------------------------------


def _compose(name: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=f"corruption/{name}").corruption
    finally:
        GlobalHydra.instance().clear()


def test_suite_files_exist():
    assert {"basic", "imagenet_c", "none"} <= set(SUITES)


@pytest.mark.parametrize("suite_name", SUITES)
def test_suite_contract(suite_name):
    cfg = _compose(suite_name)
    assert set(cfg) >= {"names", "severities", "custom", "seed"}
    suite = C.build_suite(cfg)
    assert len(suite) == len(cfg.names) * len(cfg.severities) + len(cfg.custom)
    x = _images(size=16)
    for label, fn in suite.items():
        y = fn(x)
        assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all(), label
        assert y.min() >= 0 and y.max() <= 1, label
        assert (y - x).abs().mean() > 1e-3, label


def test_suite_labels_and_reproducibility():
    suite = C.build_suite(_compose("imagenet_c"))
    assert len(suite) == 75 and "gaussian_noise/3" in suite and "jpeg_compression/5" in suite
    basic = C.build_suite(_compose("basic"))
    assert {"contrast_x5", "blur_r10", "invert"} <= set(basic)
    assert C.build_suite(_compose("none")) == {}
    x = _images()
    # same seed → same sequence of batches; consecutive batches get fresh noise
    a, b = C.build_suite(_compose("basic"))["noise_std0_1"], C.build_suite(_compose("basic"))["noise_std0_1"]
    a1, b1, a2 = a(x), b(x), a(x)
    assert torch.equal(a1, b1) and not torch.equal(a1, a2)
    torch.testing.assert_close(suite["contrast/2"](x), C.corrupt(x, "contrast", 2))


def test_build_suite_errors():
    with pytest.raises(KeyError, match="Did you mean"):
        C.build_suite({"names": ["fogg"], "severities": [1]})
    with pytest.raises(ValueError, match="severity"):
        C.build_suite({"names": ["fog"], "severities": [7]})
    with pytest.raises(ValueError, match="severities"):
        C.build_suite({"names": ["fog"], "severities": []})
    assert C.build_suite(None) == {}


# ----------------------------------------------------------------------------------------------------------------
# devices
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_cpu_and_cuda_agree(name):
    x = _images(size=48)
    cpu = C.corrupt(x, name, 3)
    gpu = C.corrupt(x.cuda(), name, 3)
    assert gpu.device.type == "cuda"
    # JPEG and pixelation round through uint8 / area averaging: allow one grey level
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3 if name == "jpeg_compression" else 1e-4, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_corruptions_stay_on_cuda(name):
    x = _images().cuda()
    y = C.corrupt(x, name, 3, seed=0)
    assert y.device == x.device and torch.equal(y, C.corrupt(x, name, 3, seed=0))
    # a CPU generator may drive CUDA inputs
    assert C.corrupt(x, name, 3, generator=torch.Generator().manual_seed(0)).device == x.device
