"""Every conf/experiment/*.yaml composes for its task, and the explanation studies run end to end under debug."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# The task each study is written for; a new experiment file must be added here (the first test fails otherwise).
TASK = {"fashion_mnist_small_cnn": "train", "metrics_shapes": "explain"}
SUITES = sorted(p.stem for p in (CONF_DIR / "metric_suite").glob("*.yaml"))


def test_every_experiment_names_its_task():
    assert set(EXPERIMENTS) == set(TASK), "add the new experiment to TASK with the task it runs under"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name, compose, tmp_path):
    from xai_bench.config import validate

    extra = ["model.path=/x"] if name == "metrics_shapes" else []
    validate(compose(TASK[name], [f"experiment={name}", *extra], tmp_path))


def test_metric_suites_cover_every_metric(compose, tmp_path):
    from xai_bench.metrics.explanation import METRICS

    per_suite = {s: set(compose("explain", [f"metric_suite={s}"], tmp_path).metric) for s in SUITES}
    assert per_suite["all"] == set(METRICS.list())
    categories = {s for s in SUITES if s not in ("all", "latec")}
    assert set().union(*(per_suite[s] for s in categories)) == per_suite["all"]
    for s in categories:  # a category suite holds that category's metrics only
        assert {METRICS.get(m).category for m in per_suite[s]} == {s}
    assert len(per_suite["latec"]) == 20 and per_suite["latec"] <= per_suite["all"]
    # a suite and a hand-picked metric add up; a suite's setting can be overridden
    cfg = compose("explain", ["metric_suite=complexity", "metric=[deletion]", "metric.sparseness.abs=false"], tmp_path)
    assert set(cfg.metric) == per_suite["complexity"] | {"deletion"} and cfg.metric.sparseness.abs is False


@pytest.mark.slow
def test_metrics_study_runs_under_debug(compose, tmp_path):
    """The README's study (11 methods × every metric) on 2 images with a random small_cnn: every method gets a
    score on every metric whose needs the run meets, and the ranking lists every method."""
    from xai_bench.tasks import explain

    cfg = compose("explain", ["experiment=metrics_shapes", "debug=default", "model=small_cnn",
                              "model.num_classes=6", "model.input_size=32",
                              "attribution.lime.kwargs.n_samples=32", "attribution.rise.kwargs.n_masks=200",
                              "attribution.integrated_gradients.kwargs.n_steps=8",
                              "attribution.smoothgrad.wrapper.nt_samples=4"], tmp_path)
    metrics = explain.run(cfg)
    assert len(metrics["methods"]) == 11
    with open(tmp_path / "tables" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    scored = {(r["method"], r["metric"]) for r in rows}
    assert len(scored) == 11 * len(cfg.metric)
    ranking = json.loads((tmp_path / "results.json").read_text())["metrics"]["ranking"]
    assert {r["method"] for r in ranking} == set(metrics["methods"])
