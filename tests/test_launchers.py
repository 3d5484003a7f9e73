"""The same small sweep (2 models × 2 methods) through Hydra's basic, joblib, submitit-local and Ray launchers gives
the same results table: every job's results.json, read with xai_bench.results.find_results, and its maps — and the
same report tables (runs, metrics, ranking) that the report callback writes into the sweep folder."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from xai_bench.results import find_results

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "attribution=saliency,gradcam", "model=timm", "model.arch=test_resnet,test_efficientnet",
         "dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=3",
         "dataset.image_size=32", "metric=[sparseness,deletion]", "logger=none", "progress=false"]


def _needs(plugin: str) -> None:
    if importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
        pytest.skip(f"{plugin} is not installed (pip install -e '.[sweeps]')")


def _sweep(tmp_path: Path, *launcher: str) -> tuple[list[tuple], dict[str, str]]:
    """Run the sweep with ``launcher`` overrides; one row per job: model, method, counts, explanation-metric means
    and a checksum of the maps. Rows are sorted, so the order jobs finished in does not matter. Also returns the
    report's CSV tables, which the report callback writes at the end of the multirun."""
    out = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.run([sys.executable, "explain.py", *SWEEP, *launcher, f"hydra.sweep.dir={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = []
    for res in find_results(out, task="explain", ok_only=False):
        assert res.status == "ok", (res.path, res.error)
        maps = load_file(str(res.path / "maps.safetensors"))
        method = res.metrics["methods"][0]
        digest = hashlib.sha256(maps[method].numpy().tobytes()).hexdigest()[:16]
        scores = tuple(sorted((k, round(v["mean"], 6)) for k, v in res.metrics["explanation_metrics"][method].items()))
        rows.append((res.config["model"]["arch"], method, res.metrics["n_images"], res.metrics["n_maps"],
                     tuple(maps["targets"].tolist()), scores, round(float(maps[method].abs().sum()), 4), digest))
    report = {name: (out / "report" / f"{name}.csv").read_text() for name in ("runs", "metrics", "ranking")}
    return sorted(rows), report


@pytest.fixture(scope="module")
def basic_table(tmp_path_factory):
    rows, report = _sweep(tmp_path_factory.mktemp("basic"))
    assert len(report["runs"].splitlines()) == 5  # a header and one row per job
    assert len(rows) == 4 and all(len(r[5]) == 2 for r in rows)  # sparseness and deletion for every job
    assert {r[:2] for r in rows} == {(a, m) for a in ("test_resnet", "test_efficientnet")
                                     for m in ("saliency", "gradcam")}
    return rows, report


@pytest.mark.slow  # each launcher starts fresh processes that import torch: 20–60 s on a loaded 2-core machine
def test_joblib_launcher_gives_the_basic_launchers_table(basic_table, tmp_path):
    _needs("hydra_joblib_launcher")
    assert _sweep(tmp_path, "hydra/launcher=joblib_cpu") == basic_table


@pytest.mark.slow
def test_submitit_local_launcher_gives_the_basic_launchers_table(basic_table, tmp_path):
    _needs("hydra_submitit_launcher")
    assert _sweep(tmp_path, "hydra/launcher=submitit_local_cpu") == basic_table
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))  # the jobs did go through submitit


@pytest.mark.slow
def test_ray_launcher_on_a_local_cluster_gives_the_basic_launchers_table(basic_table, tmp_path):
    _needs("hydra_ray_launcher")
    assert _sweep(tmp_path, "hydra/launcher=ray_local") == basic_table


def test_launcher_configs_compose_with_their_plugins():
    """Every conf/hydra/launcher file extends an installed plugin's config (a typo in a key fails here)."""
    from hydra import compose, initialize_config_dir

    files = sorted((ROOT / "conf" / "hydra" / "launcher").glob("*.yaml"))
    assert {f.stem for f in files} >= {"joblib_cpu", "submitit_local_cpu", "slurm_gpu", "ray_local"}
    for f in files:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="explain", overrides=[f"hydra/launcher={f.stem}"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_.startswith("hydra_plugins."), f.name
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()


# --- Optuna: conf/hparams_search/explain_rise_optuna ------------------------------------------------------------
@pytest.mark.slow  # three trials in fresh processes: ~20 s on a loaded 2-core machine
def test_optuna_tunes_rise_for_insertion_auc(tmp_path):
    """Three trials of the RISE search on tiny settings: each trial explains with RISE only, scores insertion, and
    returns its mean insertion AUC; the sweeper's best value is the best trial's (none is over the budget here)."""
    _needs("hydra_optuna_sweeper")
    import yaml

    sweep = tmp_path / "optuna"
    env = {**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "explain.py", "hparams_search=explain_rise_optuna",
                           "dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=2",
                           "dataset.image_size=32",
                           "model=small_cnn", "logger=none", "progress=false", "hydra.sweeper.n_trials=3",
                           "hydra.sweeper.sampler.n_startup_trials=3", "time_budget.max_s=600",
                           f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    trials = list(find_results(sweep, task="explain"))
    assert len(trials) == 3
    values = []
    for res in trials:
        assert res.metrics["methods"] == ["rise"]
        rise = res.config["attribution"]["rise"]["kwargs"]
        assert rise["n_masks"] in (250, 500, 1000, 2000, 4000) and 4 <= rise["grid_size"] <= 15
        values.append(res.metrics["explanation_metrics"]["rise"]["insertion"]["mean"])
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))
    assert set(best["best_params"]) == {"attribution.rise.kwargs.n_masks", "attribution.rise.kwargs.grid_size"}


def test_objective_reads_nested_metrics_and_applies_the_time_budget():
    from xai_bench.cli import _objective

    metrics = {"explanation_metrics": {"rise": {"insertion": {"mean": 0.8}}}, "seconds/rise": 12.0,
               "accuracy@0.0157": 0.5}
    key = "explanation_metrics.rise.insertion.mean"
    assert _objective(metrics, key) == 0.8
    assert _objective(metrics, "accuracy@0.0157") == 0.5  # a flat key with a dot in it
    budget = {"metric": "seconds/rise", "max_s": 20, "penalty": 0.0}
    assert _objective(metrics, key, budget) == 0.8
    assert _objective(metrics, key, {**budget, "max_s": 10}) == 0.0  # over budget: the penalty
    with pytest.raises(ValueError, match="time_budget.metric='seconds/lime'"):
        _objective(metrics, key, {**budget, "metric": "seconds/lime"})
    with pytest.raises(ValueError, match="optimized_metric='explanation_metrics.rise.deletion.mean'"):
        _objective(metrics, "explanation_metrics.rise.deletion.mean")
