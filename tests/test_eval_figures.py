"""Evaluation figures tell the truth: every figure names its model (and attack or corruption), the corruption heat map
follows ImageNet-C's groups, the accuracy bars hold clean and corrupted accuracy, the gallery exists, the ε axis is
symlog, and a reliability diagram of a few images says it is unreliable."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from xai_bench import viz
from xai_bench.robustness.corruption_eval import IMAGENET_C_GROUPS, corruption_summary, group_order
from xai_bench.tasks.common import RunContext

TINY = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=6",
        "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false"]
SHUFFLED = ["jpeg_compression", "fog", "gaussian_noise", "motion_blur", "contrast", "snow", "shot_noise"]


@pytest.fixture
def figures(monkeypatch):
    """name → the figure each task call saved (captured before saving)."""
    seen: dict[str, dict] = {}
    real = RunContext.figure

    def capture(self, name, fig, caption=None):
        path = real(self, name, fig, caption)  # names the figure, then saves it
        seen[name] = {"texts": viz.figure_texts(fig), "fig": fig, "path": path}
        return path

    monkeypatch.setattr(RunContext, "figure", capture)
    return seen


def test_group_order_follows_imagenet_c():
    assert group_order(SHUFFLED) == ["gaussian_noise", "shot_noise", "motion_blur", "snow", "fog", "contrast",
                                     "jpeg_compression"]
    assert group_order(["mine", "fog", "other"]) == ["fog", "mine", "other"]
    assert list(IMAGENET_C_GROUPS) == ["noise", "blur", "weather", "digital"]


def test_evaluate_imagenet_c_figures(compose, tmp_path, figures):
    from xai_bench.tasks import evaluate

    metrics = evaluate.run(compose("evaluate", [*TINY, "corruption=imagenet_c", f"corruption.names={SHUFFLED}",
                                                "corruption.severities=[1,3]"], tmp_path))
    assert set(figures) >= {"confusion_matrix", "reliability_diagram", "corruption_heatmap", "corruption_accuracy",
                            "corruption_gallery"}
    for name, f in figures.items():
        assert any("small_cnn" in t for t in f["texts"]), name
        assert f["path"].is_file()
    heat = figures["corruption_heatmap"]
    rows = [t.get_text() for t in heat["fig"].axes[0].get_yticklabels()]
    assert rows == group_order(SHUFFLED)
    assert any("n=6" in t and "clean accuracy" in t for t in heat["texts"])
    bars = figures["corruption_accuracy"]["fig"].axes[0]
    labels = [t.get_text() for t in bars.get_xticklabels()]
    assert labels == ["clean", *group_order(SHUFFLED)]
    assert bars.patches[0].get_height() == pytest.approx(metrics["corruptions"]["clean_accuracy"])
    gallery = figures["corruption_gallery"]
    assert len(gallery["fig"].axes) == len(SHUFFLED) * 3  # clean + severities 1 and 3 per corruption row
    assert any("imagenet_c" in t for t in gallery["texts"])
    rel = " ".join(figures["reliability_diagram"]["texts"])
    assert "n=6" in rel and "unreliable" in rel
    notes = " ".join(metrics["corruptions"]["notes"])
    assert "reference" in notes and "mCE" not in metrics  # no unexplained nan
    with open(tmp_path / "tables" / "flips.csv") as f:
        row = next(csv.DictReader(f))
    assert row["clean_pred"] in {"circle", "square", "triangle", "cross", "ring", "star"}
    assert row["fog/3_pred"] and row["fog/3"] in ("True", "False")


def test_relative_mce_nan_is_explained():
    correct = {"clean": torch.tensor([True, True]), "fog/1": torch.tensor([True, False])}
    ref = {"clean": torch.tensor([True, True]), "fog/1": torch.tensor([True, True])}  # the reference never errs
    s = corruption_summary(correct, ref)
    assert np.isnan(s["relative_mCE"]) and any("relative mCE is undefined" in n and "fog" in n for n in s["notes"])


def test_attack_and_explain_figures_name_model_and_attack(compose, tmp_path, figures):
    from xai_bench.tasks import attack, explain

    attack.run(compose("attack", [*TINY, "attack.eps=[0,1/255,2/255,8/255]"], tmp_path / "a"))
    for name in ("accuracy_vs_eps", "adversarial_grid"):
        assert any("small_cnn" in t and "fgsm" in t for t in figures[name]["texts"]), name
    ax = figures["accuracy_vs_eps"]["fig"].axes[0]
    assert ax.get_xscale() == "symlog"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1/255", "2/255", "8/255"]
    figures.clear()
    explain.run(compose("explain", [*TINY, "attribution=[saliency]"], tmp_path / "x"))
    assert figures and all(any("small_cnn" in t for t in f["texts"]) for f in figures.values())


def test_name_figure_adds_a_header_only_when_the_model_is_missing(tmp_path):
    fig = viz.corruption_heatmap(np.full((2, 2), 0.5), ["fog", "snow"], [1, 2], title="m1 · imagenet_c")
    viz.name_figure(fig, "m1 · imagenet_c", required="m1")
    assert fig.get_suptitle() == ""  # already named by its title
    grid = viz.adversarial_grid(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))  # laid out by hand
    viz.name_figure(grid, "m2 · pgd", required="m2")
    assert "m2 · pgd" in viz.figure_texts(grid)
    viz.save_figure(grid, tmp_path / "g.png")


def test_viz_gallery_bars_and_reliability_caveat(tmp_path):
    img = torch.rand(3, 8, 8)
    fig = viz.corruption_gallery([[img, img, None], [img, img, img]], ["a", "b"], ["clean", "1", "2"],
                                 [["x ✓", "y ✗", None], [None, "z", "w"]], title="m · suite")
    assert len(fig.axes) == 5
    viz.save_figure(fig, tmp_path / "gallery.png")
    fig = viz.corruption_bars(["fog", "snow"], [0.4, 0.3], groups=["weather", "weather"], clean=0.9)
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx([0.9, 0.4, 0.3])
    rng = np.random.default_rng(0)
    few, _ = viz.reliability_diagram(rng.random(5), rng.random(5) < 0.5)
    many, _ = viz.reliability_diagram(rng.random(500), rng.random(500) < 0.5)
    assert "unreliable" in few.axes[0].get_title() and "unreliable" not in many.axes[0].get_title()
    assert "(n=500)" in many.axes[0].get_title()
    lin = viz.accuracy_vs_eps({"m": ([0, 8 / 255], [0.9, 0.1])}, xscale="linear")
    assert lin.axes[0].get_xscale() == "linear"
