"""Figures: every function draws and saves on tiny inputs; normalisation is exact on hand-made values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from PIL import Image

import xai_bench  # noqa: F401  (import order: before anything that pulls in torchvision)
from xai_bench import viz
from xai_bench.metrics import expected_calibration_error

DPI = 40


def _images(n: int, c: int, h: int = 12, w: int = 16) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(n * 10 + c))


def _save_and_check(fig: Figure, tmp_path, name: str = "fig.png") -> Image.Image:
    """Save via save_figure and check the PNG opens, is non-empty and roughly the figure's size."""
    expected = fig.get_size_inches() * DPI
    path = viz.save_figure(fig, tmp_path / name, dpi=DPI)
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        im.load()
        w, h = im.size
    # bbox_inches="tight" trims margins (and may add a few pixels of padding), never much more
    assert 0.5 * expected[0] <= w <= 1.15 * expected[0] + 8, (w, expected)
    assert 0.5 * expected[1] <= h <= 1.15 * expected[1] + 8, (h, expected)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    return im


# ------------------------------------------------------------------------------------------- normalize_map
def test_normalize_map_absolute_sums_magnitudes_and_scales_by_max() -> None:
    attr = np.array([[[1.0, -2.0], [0.0, 4.0]], [[-1.0, 2.0], [3.0, -4.0]]])  # C=2, H=W=2
    out = viz.normalize_map(attr, signed=False, percentile=100)
    # magnitudes [[2, 4], [3, 8]]: the minimum is subtracted before scaling (issue 9), so the map spans [0, 1]
    np.testing.assert_allclose(out, (np.array([[2.0, 4.0], [3.0, 8.0]]) - 2.0) / 6.0, rtol=1e-6)
    assert out.shape == (2, 2) and out.dtype == np.float32


def test_normalize_map_signed_sums_channels_and_keeps_sign() -> None:
    attr = torch.tensor([[[1.0, -2.0], [0.0, 4.0]], [[1.0, -4.0], [3.0, -1.0]]])
    out = viz.normalize_map(attr, signed=True, percentile=100)
    np.testing.assert_allclose(out, np.array([[2.0, -6.0], [3.0, 3.0]]) / 6.0)
    assert out.min() == -1.0 and out.max() <= 1.0


def test_normalize_map_percentile_clips_outliers_and_batches_per_sample() -> None:
    m = np.ones((1, 10, 10))
    m[0, 0, 0] = 1000.0  # one outlier must not wash out the rest
    batch = np.stack([m, 3 * m, np.zeros_like(m)])  # N=3, C=1
    out = viz.normalize_map(batch, signed=False, percentile=90)
    assert out.shape == (3, 10, 10)
    # min-subtracted, the flat part is 0 and the 90th percentile equals the minimum: the maximum scales it instead
    expected = np.zeros((10, 10))
    expected[0, 0] = 1.0
    np.testing.assert_allclose(out[0], expected)
    np.testing.assert_allclose(out[1], out[0])  # each map scaled on its own
    np.testing.assert_array_equal(out[2], 0.0)  # an all-zero map stays zero instead of dividing by zero
    signed = viz.normalize_map(-batch, signed=True, percentile=90)
    assert signed.min() == -1.0 and signed.max() == 0.0


@pytest.mark.parametrize("bad", [0, -1, 100.5])
def test_normalize_map_rejects_bad_percentile(bad: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        viz.normalize_map(np.ones((2, 2)), percentile=bad)


def test_normalize_map_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        viz.normalize_map(np.array([[np.nan, 1.0]]))


# -------------------------------------------------------------------------------------------- calibration
def test_reliability_diagram_returns_ece(tmp_path) -> None:
    rng = np.random.default_rng(1)
    conf = rng.random(200)
    correct = rng.random(200) < conf
    fig, ece = viz.reliability_diagram(conf, correct, n_bins=10, title="toy")
    assert ece == pytest.approx(expected_calibration_error(conf, correct, n_bins=10))
    assert f"{100 * ece:.2f}%" in fig.axes[0].get_title()
    _save_and_check(fig, tmp_path)


# ------------------------------------------------------------------------------------------- attribution figures
@pytest.mark.parametrize(
    ("kind", "channels"), [("all", 1), ("all", 3), ("overlay", 3), ("heatmap", 1), ("isolines", 3), ("signed", 3)]
)
def test_attribution_figure_every_kind(tmp_path, channels: int, kind: str) -> None:
    image = _images(1, channels)[0]
    attr = torch.randn(channels, 12, 16, generator=torch.Generator().manual_seed(0))
    fig = viz.attribution_figure(image, attr, kind=kind, title="IG · cat 0.93")
    _save_and_check(fig, tmp_path)


def test_grayscale_image_is_drawn_gray() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    viz.draw_overlay(ax, _images(1, 1)[0], torch.rand(1, 12, 16), alpha=0.3)
    base = ax.get_images()[0]
    assert base.get_array().ndim == 2 and base.get_cmap().name == "gray"


def test_coarse_map_is_stretched_over_the_image() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    viz.draw_heatmap(ax, torch.rand(1, 3, 4), extent=(-0.5, 15.5, 11.5, -0.5))
    overlay = viz.draw_overlay(ax, _images(1, 3)[0], torch.rand(1, 3, 4))
    assert overlay.get_extent() == [-0.5, 15.5, 11.5, -0.5]
    assert overlay.get_array().shape[:2] == (12, 16)


def test_isolines_on_flat_map_draw_no_contours() -> None:
    ax = Figure().add_subplot()
    assert viz.draw_isolines(ax, _images(1, 3)[0], torch.zeros(1, 12, 16)) is None


@pytest.mark.parametrize(
    ("kind", "channels"), [("overlay", 1), ("overlay", 3), ("heatmap", 3), ("isolines", 1), ("signed", 3)]
)
def test_attribution_grid_has_one_axes_per_cell(tmp_path, channels: int, kind: str) -> None:
    images = _images(3, channels)
    g = torch.Generator().manual_seed(1)
    maps = {
        "Saliency": torch.rand(3, channels, 12, 16, generator=g),
        "IntegratedGradients": torch.randn(3, channels, 12, 16, generator=g),
        "GradCAM": torch.rand(3, 1, 3, 4, generator=g),  # coarse layer map
        "Occlusion": torch.rand(3, 12, 16, generator=g),  # N×H×W
    }
    fig = viz.attribution_grid(images, maps, titles=["cat 0.93", "dog 0.51", "a very long class name 0.10"],
                               kind=kind, signed={"IntegratedGradients": True})
    cells = [ax for ax in fig.axes if ax.get_label() != "colorbar"]  # grids have a colour bar per method column
    assert len(cells) == 3 * (1 + 4) and len(fig.axes) == len(cells) + 4
    assert [ax.get_title() for ax in cells[:5]] == ["image", "Saliency", "IntegratedGradients", "GradCAM",
                                                     "Occlusion"]
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in cells)
    _save_and_check(fig, tmp_path)


def test_attribution_grid_models_two_level_header(tmp_path) -> None:
    g = torch.Generator().manual_seed(2)
    maps = {(m, k): torch.rand(2, 1, 12, 16, generator=g) for m in ("resnet", "vit") for k in ("Saliency", "IG")}
    fig = viz.attribution_grid(_images(2, 3), maps, models=["vit", "resnet"], signed=True)
    cells = [ax for ax in fig.axes if ax.get_label() != "colorbar"]
    assert len(cells) == 2 * 2 * (1 + 2)  # rows × model blocks × (image + methods)
    assert [t.get_text() for t in fig.texts] == ["vit", "resnet"]
    _save_and_check(fig, tmp_path)


def test_attribution_grid_rejects_mismatched_inputs() -> None:
    images = _images(2, 3)
    with pytest.raises(ValueError, match="titles"):
        viz.attribution_grid(images, {"a": torch.rand(2, 1, 12, 16)}, titles=["only one"])
    with pytest.raises(ValueError, match=r"maps\['a'\]"):
        viz.attribution_grid(images, {"a": torch.rand(3, 1, 12, 16)})
    with pytest.raises(ValueError, match="kind"):
        viz.attribution_grid(images, {"a": torch.rand(2, 1, 12, 16)}, kind="nope")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.attribution_grid(images * 3 - 1, {"a": torch.rand(2, 1, 12, 16)})


# ---------------------------------------------------------------------------------------- other figures
@pytest.mark.parametrize("channels", [1, 3])
def test_image_figures(tmp_path, channels: int) -> None:
    images = _images(5, channels)
    fig = viz.image_grid(images, [f"class {i}" for i in range(5)], ncols=3)
    assert len(fig.axes) == 5  # the sixth, empty cell is removed
    _save_and_check(fig, tmp_path, "grid.png")
    adv = (images + 0.03 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    fig = viz.adversarial_grid(images, adv, [f"cat {i}" for i in range(5)], [f"dog {i}" for i in range(5)],
                               images_per_row=2)
    assert len(fig.axes) == 5 * 3
    _save_and_check(fig, tmp_path, "adv.png")
    fig = viz.uncertainty_strip(images, torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7]), [f"c{i}" for i in range(5)])
    assert [ax.get_title() for ax in fig.axes] == ["c1", "c3", "c0", "c4", "c2"]  # most certain first
    _save_and_check(fig, tmp_path, "strip.png")
    fig = viz.member_votes_figure(images[0], ["a", "b", "c"], [0, 0, 3], torch.rand(3, 4), ["w", "x", "y", "z"],
                                  torch.tensor([0.5, 0.3, 0.15, 0.05]), k=2)
    ticks = fig.axes[1].get_yticklabels()
    top_to_bottom = [t.get_text() for t in sorted(ticks, key=lambda t: -t.get_position()[1])]
    assert top_to_bottom == ["w", "x", "z"]  # top-2 plus the out-of-top-k vote "z", most probable on top
    _save_and_check(fig, tmp_path, "votes.png")


def test_adversarial_grid_perturbation_panel_is_mid_gray_plus_scaled_delta() -> None:
    clean = torch.full((1, 1, 4, 4), 0.5)
    adv = clean.clone()
    adv[0, 0, 0, 0] += 0.02
    adv[0, 0, 1, 1] -= 0.01
    fig = viz.adversarial_grid(clean, adv, perturbation_scale="auto")
    panel = fig.axes[1].get_images()[0].get_array()
    assert panel[0, 0] == pytest.approx(1.0) and panel[1, 1] == pytest.approx(0.25) and panel[2, 2] == 0.5
    fig = viz.adversarial_grid(clean, adv, perturbation_scale=10.0)
    assert fig.axes[1].get_images()[0].get_array()[0, 0] == pytest.approx(0.7)


def test_plot_figures(tmp_path) -> None:
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    fig = viz.confusion_matrix_figure(cm, ["cat", "dog", "bird"], normalize=True)
    assert fig.axes[0].get_images()[0].get_array()[1, 0] == pytest.approx(0.4)
    assert len(fig.axes[0].texts) == 9
    _save_and_check(fig, tmp_path, "cm.png")
    big = viz.confusion_matrix_figure(np.eye(25), normalize=False)
    assert len(big.axes[0].texts) == 0  # no annotations above 20 classes
    _save_and_check(big, tmp_path, "cm_big.png")
    fig = viz.accuracy_vs_eps({"a": ([0, 2 / 255, 8 / 255], [0.9, 0.5, 0.1]), "b": ([0, 8 / 255], [0.7, 0.4])})
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), [0, 2, 8])
    _save_and_check(fig, tmp_path, "eps.png")
    fig = viz.corruption_heatmap(np.random.default_rng(0).random((3, 5)), ["noise", "blur", "fog"], [1, 2, 3, 4, 5])
    assert len(fig.axes[0].texts) == 15
    _save_and_check(fig, tmp_path, "corr.png")
    fig = viz.per_model_accuracy_figure(["m0", "m1", "ensemble"], [0.8, 0.7, 0.85])
    _save_and_check(fig, tmp_path, "acc.png")


# ------------------------------------------------------------------------------------------------- saving
class _Boom(Artist):
    def draw(self, renderer) -> None:
        raise RuntimeError("boom")


def test_save_figure_is_atomic(tmp_path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"previous figure")
    fig = viz.image_grid(_images(2, 3))
    fig.add_artist(_Boom())
    with pytest.raises(RuntimeError, match="boom"):
        viz.save_figure(fig, path, dpi=DPI)
    assert path.read_bytes() == b"previous figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_figure_keeps_requested_format(tmp_path) -> None:
    fig = viz.image_grid(_images(2, 3))
    path = viz.save_figure(fig, tmp_path / "sub" / "fig.pdf")
    assert path.read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="path must end in"):
        viz.save_figure(viz.image_grid(_images(1, 3)), tmp_path / "fig.nope")


def test_attribution_grid_per_method_kinds():
    import numpy as np

    from xai_bench import viz

    images = np.random.default_rng(0).random((2, 3, 16, 16))
    maps = {"saliency": np.random.default_rng(1).random((2, 1, 16, 16)),
            "gradcam": np.random.default_rng(2).random((2, 1, 4, 4))}
    fig = viz.attribution_grid(images, maps, kind="heatmap", method_kinds={"gradcam": "overlay"})
    # the overlay cell draws the image and the map (two images), the heat map cell only the map
    axes = fig.axes
    assert len(axes[1].images) == 1 and len(axes[2].images) == 2
    import pytest

    with pytest.raises(ValueError, match="kind must be one of"):
        viz.attribution_grid(images, maps, kind="heatmap", method_kinds={"gradcam": "sparkles"})


# ------------------------------------------------------------------------------------------- map scaling (issue 9)
def _drawn(ax) -> np.ndarray:
    """The normalised values behind the colours of a heat-map cell."""
    return np.asarray(ax.get_images()[-1].get_array(), dtype=float)


def test_small_dynamic_range_map_spans_the_colour_map() -> None:
    # RISE scores in [0.229, 0.283]: divided by a percentile without subtracting the minimum, they landed in
    # [0.81, 1] (a uniform red wash).
    yy, xx = np.mgrid[:32, :32]
    rise = 0.229 + 0.054 * np.exp(-((yy - 12) ** 2 + (xx - 20) ** 2) / 60.0)
    out = viz.normalize_map(rise[None], percentile=99)
    assert out.max() - out.min() >= 0.9
    fig = viz.attribution_grid(_images(1, 3, 32, 32), {"rise": rise[None, None]}, kind="heatmap", percentile=99)
    values = _drawn(fig.axes[1])
    assert values.max() - values.min() >= 0.9


def test_signed_map_puts_zero_at_the_centre_of_the_colour_map() -> None:
    m = np.zeros((1, 1, 8, 8))
    m[0, 0, :4] = 3.0
    m[0, 0, 4:, :4] = -1.0  # zeros elsewhere; asymmetric extremes
    fig = viz.attribution_grid(_images(1, 3, 8, 8), {"ig": m}, kind="heatmap", signed=True, percentile=100)
    im = fig.axes[1].get_images()[-1]
    assert im.norm(_drawn(fig.axes[1])[7, 7]) == pytest.approx(0.5)  # 0 → the middle of bwr
    assert im.get_cmap().name == viz.CMAP_SIGNED
    lo, hi = viz.display_ranges({"ig": m}, {"ig": True}, percentile=100)["ig"][0]
    assert lo == -hi == -3.0


def test_per_method_scale_keeps_ratios_between_images() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 8, 8, generator=g)
    base[..., 0, 0] = 0.0  # a shared minimum of 0
    maps = torch.cat([base, 0.25 * base])  # the second image's map is a quarter of the first's
    ranges = viz.display_ranges({"gradcam": maps}, scale="per_method", percentile=100)["gradcam"]
    np.testing.assert_array_equal(ranges[0], ranges[1])
    fig = viz.attribution_grid(_images(2, 3, 8, 8), {"gradcam": maps}, kind="heatmap", scale="per_method",
                               percentile=100)
    cells = [ax for ax in fig.axes if ax.get_label() != "colorbar"]
    np.testing.assert_allclose(_drawn(cells[3]), 0.25 * _drawn(cells[1]), atol=1e-6)
    per_map = viz.attribution_grid(_images(2, 3, 8, 8), {"gradcam": maps}, kind="heatmap", percentile=100)
    cells = [ax for ax in per_map.axes if ax.get_label() != "colorbar"]
    np.testing.assert_allclose(_drawn(cells[3]), _drawn(cells[1]), atol=1e-6)  # each map on its own
    # the scale in use is said on the figure; the colour bar of a per_method column reads in map units
    assert any("per_method" in a.get_text() for a in fig.artists if hasattr(a, "get_text"))
    bar = [ax for ax in fig.axes if ax.get_label() == "colorbar"][0]
    assert [t.get_text() for t in bar.get_xticklabels()][-1] == f"{float(maps.max()):.3g}"


def test_per_image_scale_is_shared_across_methods_of_a_row() -> None:
    a = torch.rand(2, 1, 8, 8)
    ranges = viz.display_ranges({"a": a, "b": 2 * a}, scale="per_image", percentile=100)
    np.testing.assert_array_equal(ranges["a"], ranges["b"])
    with pytest.raises(ValueError, match="scale"):
        viz.display_ranges({"a": a}, scale="global")
