"""The metric template's contract, scoring over methods, the summary table and the LATEC-style ranking."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import xai_bench  # noqa: F401
from xai_bench.metrics.explanation import ExplanationMetric, model_scores
from xai_bench.metrics.explanation.scoring import rank_methods, score_methods, summary_rows


class MapMean(ExplanationMetric):
    """Toy metric: the mean of the map (needs nothing but the map)."""

    name, category, higher_is_better, needs_model = "map_mean", "complexity", True, False

    def score(self, model, images, targets, maps, *, masks=None, explainer=None):
        return maps.flatten(1).mean(1)


class MaskMass(ExplanationMetric):
    name, category, higher_is_better, needs_model, needs_masks = "mask_mass", "localisation", True, False, True

    def score(self, model, images, targets, maps, *, masks=None, explainer=None):
        return (maps * masks).flatten(1).sum(1) / maps.flatten(1).sum(1)


def test_contract_checks_and_shapes():
    x, t = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 0])
    maps = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(MapMean()(None, x, t, maps), maps.flatten(1).mean(1))
    with pytest.raises(ValueError, match="maps must be"):
        MapMean()(None, x, t, torch.rand(3, 1, 4, 4))
    with pytest.raises(ValueError, match="needs ground-truth masks"):
        MaskMass()(None, x, t, maps)
    masks = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    masks[..., :4, :] = True
    ones = torch.ones(3, 1, 8, 8)
    assert MaskMass()(None, x, t, ones, masks=masks).tolist() == [0.5, 0.5, 0.5]


def test_model_scores_equal_a_plain_forward_in_any_chunking():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()
    x, t = torch.rand(7, 3, 4, 4), torch.randint(0, 5, (7,))
    ref = model(x).gather(1, t.view(-1, 1)).squeeze(1)
    for bs in (1, 3, 7, 64):
        torch.testing.assert_close(model_scores(model, x, t, batch_size=bs), ref)
    torch.testing.assert_close(model_scores(model, x, t, softmax=True), model(x).softmax(-1).gather(1, t.view(-1, 1))
                               .squeeze(1))


def test_summary_and_ranking_by_hand():
    metrics = {"map_mean": MapMean(), "mask_mass": MaskMass()}
    x, t = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[..., 0, 0] = True
    inside = torch.zeros(2, 1, 4, 4)
    inside[..., 0, 0] = 1.0                     # all mass in the mask, mean 1/16
    flat = torch.full((2, 1, 4, 4), 0.5)        # mass 1/16 in the mask, mean 0.5
    scores = score_methods(metrics, None, x, t, {"inside": inside, "flat": flat}, masks=masks)
    assert scores["inside"]["mask_mass"].tolist() == [1.0, 1.0]
    rows = summary_rows(scores, metrics)
    by = {(r["method"], r["metric"]): r for r in rows}
    assert by["flat", "map_mean"]["mean"] == 0.5 and by["flat", "map_mean"]["se"] == 0.0
    assert math.isclose(by["flat", "mask_mass"]["mean"], 1 / 16)
    ranking = rank_methods(rows)
    r = {row["method"]: row for row in ranking}
    assert r["inside"]["rank/mask_mass"] == 1 and r["flat"]["rank/map_mean"] == 1
    assert r["inside"]["median_rank/localisation"] == 1 and r["inside"]["median_rank/complexity"] == 2
    assert r["inside"]["median_rank"] == r["flat"]["median_rank"] == 1.5


def test_ranking_direction_ties_and_nan():
    rows = [{"method": m, "metric": "err", "category": "robustness", "higher_is_better": False, "mean": v, "se": 0.0}
            for m, v in (("a", 0.1), ("b", 0.1), ("c", 0.5), ("d", float("nan")))]
    ranks = {r["method"]: r["rank/err"] for r in rank_methods(rows)}
    assert ranks == {"a": 1.5, "b": 1.5, "c": 3.0, "d": 4.0}


def test_masks_missing_skips_localisation_with_a_warning(caplog):
    scores = score_methods({"mask_mass": MaskMass()}, None, torch.rand(1, 3, 4, 4), torch.tensor([0]),
                           {"m": torch.rand(1, 1, 4, 4)})
    assert scores == {"m": {}} and "needs ground-truth masks" in caplog.text


def test_score_task_on_saved_maps(compose, tmp_path):
    """explain.py writes maps.safetensors; the score task scores them without recomputing maps, and agrees with
    scoring the same maps inside explain.py."""
    import json

    from xai_bench.tasks import explain, score

    data = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=4",
            "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false"]
    both = ["attribution=[saliency,random_map]", "metric=[sparseness,deletion]"]
    explain.run(compose("explain", [*data, *both], tmp_path / "explain"))
    inside = json.loads((tmp_path / "explain" / "results.json").read_text())["metrics"]["explanation_metrics"]
    cfg = compose("score", [f"maps={tmp_path / 'explain' / 'maps.safetensors'}", "model=small_cnn",
                            "model.num_classes=6", "model.input_size=32", "logger=none",
                            "metric=[sparseness,deletion]"], tmp_path / "score")
    # the model must be the one that made the maps: small_cnn with random weights is rebuilt from the same seed
    metrics = score.run(cfg)
    assert metrics["methods"] == ["saliency", "random_map"] and metrics["n_maps"] == 4
    rows = {(r["method"], r["metric"]): r for r in _csv(tmp_path / "score" / "tables" / "metrics.csv")}
    assert math.isclose(float(rows["saliency", "sparseness"]["mean"]), inside["saliency"]["sparseness"]["mean"],
                        rel_tol=1e-5)
    assert (tmp_path / "score" / "figures" / "metrics.png").is_file()
    assert (tmp_path / "score" / "figures" / "perturbation_curves.png").is_file()  # deletion's curves, no re-explaining
    with pytest.raises(FileNotFoundError, match="maps="):
        score.run(compose("score", ["maps=/nonexistent.safetensors", "logger=none", "metric=[sparseness]"],
                          tmp_path / "bad"))


def _csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))
