"""What explain.py writes beyond the metrics table: deletion/insertion curves, the cascading randomisation grid with
its insensitivity flag, and explanation stability per ε / severity — the metric details behind them, the summary
tables, the figures, and one tiny end-to-end run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from xai_bench import viz
from xai_bench.config.validate import ConfigKeyError
from xai_bench.metrics.explanation.faithfulness import Deletion, Insertion
from xai_bench.metrics.explanation.randomisation import ModelParameterRandomisation, randomisable_layers
from xai_bench.metrics.explanation.stability import AttackStability, CorruptionStability
from xai_bench.metrics.explanation.summaries import curve_rows, layer_rows, mean_se, sweep_rows

TINY = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=4",
        "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false"]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()


def saliency(images, targets, model=None):
    x = images.clone().requires_grad_(True)
    out = (model or tiny_model())(x)
    out.gather(1, targets.view(-1, 1)).sum().backward()
    return x.grad.abs().sum(1, keepdim=True)


# ---------------------------------------------------------------------------------------------- metric details
def test_curve_details_are_the_scored_curves():
    model, x, t = tiny_model(), torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    maps = torch.rand(3, 1, 8, 8)
    for metric in (Deletion(), Insertion()):
        scores, d = metric.evaluate(model, x, t, maps)
        assert torch.allclose(scores, metric(model, x, t, maps))
        assert torch.allclose(d["curve"], metric.curves(model, x, t, maps))
        assert d["x"][0] == 0 and d["x"][-1] == 1 and d["score_label"] == "AUC"
        assert "removed" in d["xlabel"] if metric.name == "deletion" else "inserted" in d["xlabel"]
    probs = model(x).softmax(1)[torch.arange(3), t]
    assert torch.allclose(Deletion().curves(model, x, t, maps)[:, 0], probs.detach(), atol=1e-6)


def test_randomisation_details_one_pass():
    model, x, t = tiny_model(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    maps = saliency(x, t, model)
    metric = ModelParameterRandomisation()
    scores, d = metric.evaluate(model, x, t, maps, explainer=saliency)
    names = randomisable_layers(model)[::-1]
    assert d["layers"] == names and d["cumulative"] and d["spearman"].shape == (2, len(names))
    assert d["maps"].shape == (len(names), 1, 1, 8, 8)
    assert torch.allclose(scores, d["spearman"].mean(1))
    assert torch.allclose(scores, metric(model, x, t, maps, explainer=saliency))  # the old score is unchanged
    per_layer, _ = metric.layer_scores(model, x, t, maps, saliency)
    assert torch.allclose(per_layer, d["spearman"])


def test_insensitive_flag_rule():
    metric = ModelParameterRandomisation(insensitive_above=0.5)
    assert metric.insensitive(0.9) and not metric.insensitive(0.2) and not metric.insensitive(math.nan)
    assert not ModelParameterRandomisation(layer_order="independent").insensitive(0.99)  # no fully randomised step
    assert not ModelParameterRandomisation(insensitive_above=None).insensitive(0.99)
    with pytest.raises(ValueError, match="insensitive_above"):
        ModelParameterRandomisation(insensitive_above=2)


def test_stability_sweep_levels():
    metric = AttackStability(curve_eps=["4/255", 1 / 255])
    assert metric.curve_levels == pytest.approx([1 / 255, 4 / 255])
    model, x, t = tiny_model(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    points = metric.sweep(model, x, t, saliency(x, t, model), explainer=saliency)
    assert [lv for lv, _ in points] == metric.curve_levels and metric.eps == pytest.approx(2 / 255)
    assert set(points[0][1]) == {"spearman", "topk_iou", "ssim", "flipped"}
    assert CorruptionStability(curve_severities=[3, 1, 3]).curve_levels == [1, 3]
    with pytest.raises(ValueError, match="curve_severities"):
        CorruptionStability(curve_severities=[6])
    with pytest.raises(ValueError, match="curve_eps"):
        AttackStability(curve_eps=["a/255"])


# ---------------------------------------------------------------------------------------------- summary tables
def test_summary_rows():
    mean, se, n = mean_se(torch.tensor([[1.0, 2.0], [3.0, math.nan], [5.0, 4.0]]))
    assert mean.tolist() == [3.0, 3.0] and n.tolist() == [3, 2]
    assert se[0] == pytest.approx(2 / math.sqrt(3)) and se[1] == pytest.approx(1.0)
    rows = curve_rows({"deletion": {"a": {"curve": torch.tensor([[1.0, 0.0], [0.5, 0.0]]),
                                          "x": torch.tensor([0.0, 1.0]), "xlabel": "x", "ylabel": "y"}}})
    assert [(r["step"], r["mean"]) for r in rows] == [(0, 0.75), (1, 0.0)]
    rows = layer_rows({"a": {"layers": ["fc", "conv"], "spearman": torch.tensor([[0.9, 0.1], [0.7, math.nan]])}})
    assert [(r["step"], r["layer"], r["n_nonfinite"]) for r in rows] == [(1, "fc", 0), (2, "conv", 1)]
    assert rows[0]["spearman"] == pytest.approx(0.8)
    d = {"spearman": torch.tensor([1.0, 0.0]), "topk_iou": torch.tensor([1.0, 0.5]), "ssim": torch.tensor([1.0, 1.0]),
         "flipped": torch.tensor([True, False])}
    rows = sweep_rows({"a": [(0.1, d), (0.2, d)]}, "eps")
    assert len(rows) == 2 and rows[1]["eps"] == 0.2 and rows[0]["flip_rate"] == 0.5 and rows[0]["topk_iou"] == 0.75


# ------------------------------------------------------------------------------------------------------ figures
def test_viz_figures(tmp_path):
    x = torch.linspace(0, 1, 5)
    crows = curve_rows({k: {m: {"curve": torch.rand(3, 5), "x": x, "xlabel": f"fraction of pixels {w}",
                                "ylabel": "target class probability"} for m in ("a", "b")}
                        for k, w in (("deletion", "removed"), ("insertion", "inserted"))})
    scores = [{"method": "a", "metric": "deletion", "mean": 0.3, "se": 0.01}]
    fig = viz.perturbation_curves(crows, scores, score_labels={"deletion": "AUC"})
    assert len(fig.axes) == 2 and fig.axes[0].get_ylim() == (0, pytest.approx(1.02))
    assert any("AUC 0.3" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert "n=3" in fig.axes[0].get_title()

    lrows = layer_rows({m: {"layers": ["fc", "c2", "c1"], "spearman": torch.rand(2, 3)} for m in ("a", "b")})
    fig = viz.randomisation_curve(lrows, threshold=0.5)
    assert fig.axes[0].get_ylim() == (-1.05, 1.05) and [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "fc", "c2", "c1"]

    layers = [f"l{i}" for i in range(12)]
    fig = viz.randomisation_grid(torch.rand(3, 8, 8), {"a": torch.rand(1, 8, 8), "b": torch.rand(8, 8)},
                                 {"a": torch.rand(12, 1, 8, 8), "b": torch.rand(12, 8, 8)}, layers, max_steps=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:2] == ["image", "original map"] and len(titles) == 2 + 4 and "l11 (12/12)" in titles[-1]

    d = {"spearman": torch.rand(4), "topk_iou": torch.rand(4), "ssim": torch.rand(4),
         "flipped": torch.tensor([True, False, False, False])}
    srows = sweep_rows({m: [(e / 255, d) for e in (1, 2, 4)] for m in ("a", "b")}, "eps")
    fig = viz.stability_curves(srows, "eps", scale=255)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == ["all methods"]  # same flips: one line
    assert fig.axes[0].lines[0].get_xdata().tolist() == [1, 2, 4]
    viz.save_figure(fig, tmp_path / "s.png")
    with pytest.raises(ValueError):
        viz.stability_curves([], "eps")


# -------------------------------------------------------------------------------------------- explain.py end to end
def test_explain_writes_metric_figures(compose, tmp_path):
    from xai_bench.tasks import explain

    out = tmp_path / "run"
    cfg = compose("explain", [*TINY, "attribution=[saliency,sobel_edges]",
                              "metric=[deletion,insertion,model_parameter_randomisation,attack_stability]"], out)
    metrics = explain.run(cfg)
    for name in ("perturbation_curves", "randomisation_curve", "randomisation_maps", "attack_stability_curves",
                 "metrics"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0, name
    methods = ["saliency", "sobel_edges"]

    # curves start (deletion) and end (insertion) at the unperturbed target probability
    p0 = np.mean([float(r["target_prob"]) for r in _csv(out / "tables" / "maps.csv") if r["method"] == "saliency"])
    curves = _csv(out / "tables" / "perturbation_curves.csv")
    for m in methods:
        dele = [r for r in curves if r["metric"] == "deletion" and r["method"] == m]
        ins = [r for r in curves if r["metric"] == "insertion" and r["method"] == m]
        assert len(dele) == 33 and float(dele[0]["x"]) == 0 and float(dele[-1]["x"]) == 1
        assert float(dele[0]["mean"]) == pytest.approx(p0, abs=1e-3)
        assert float(ins[-1]["mean"]) == pytest.approx(p0, abs=1e-3)

    # one row per layer per method, layers from the output down
    from xai_bench.models import create_model

    n_layers = len(randomisable_layers(create_model("small_cnn", num_classes=6, input_size=32)))
    layers = _csv(out / "tables" / "randomisation_layers.csv")
    assert len(layers) == n_layers * len(methods)
    assert [int(r["step"]) for r in layers if r["method"] == "saliency"] == list(range(1, n_layers + 1))
    assert all(float(r["spearman"]) == pytest.approx(1.0) for r in layers if r["method"] == "sobel_edges")

    # the image-only map is flagged, the gradient map is not; the flag is in the table and results.json
    rows = {(r["method"], r["metric"]): r for r in _csv(out / "tables" / "metrics.csv")}
    assert rows["sobel_edges", "model_parameter_randomisation"]["flag"].startswith("insensitive to model parameters")
    assert rows["saliency", "model_parameter_randomisation"]["flag"] == ""
    assert [f["method"] for f in metrics["flags"]] == ["sobel_edges"]
    assert json.loads((out / "results.json").read_text())["metrics"]["flags"][0]["method"] == "sobel_edges"

    # one row per ε per method (the YAML's curve_eps), flip rate shared by the methods
    stab = _csv(out / "tables" / "attack_stability_curves.csv")
    assert len(stab) == 4 * len(methods)
    assert sorted({round(float(r["eps"]) * 255, 6) for r in stab}) == [1, 2, 4, 8]
    assert len({(r["eps"], r["flip_rate"]) for r in stab}) == 4


def test_curve_settings_are_validated(compose, tmp_path):
    from xai_bench.tasks import explain

    cfg = compose("explain", [*TINY, "attribution=[saliency]", "metric=[attack_stability]",
                              "+metric.attack_stability.curve_epsilons=[1/255]"], tmp_path / "bad")
    with pytest.raises(ConfigKeyError, match="curve_eps"):
        explain.run(cfg)
    cfg = compose("explain", [*TINY, "attribution=[saliency]", "metric=[corruption_stability]",
                              "metric.corruption_stability.curve_severities=[1,3]",
                              "metric.corruption_stability.corruption=contrast"], tmp_path / "corr")
    explain.run(cfg)
    rows = _csv(tmp_path / "corr" / "tables" / "corruption_stability_curves.csv")
    assert [int(float(r["severity"])) for r in rows] == [1, 3]
    assert (tmp_path / "corr" / "figures" / "corruption_stability_curves.png").is_file()
