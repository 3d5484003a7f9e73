"""The README's commands, run the way a user runs them (a subprocess through @hydra.main)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args, tmp_path, **env):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WANDB_MODE": "disabled", **env})


def test_train_script_debug_run(tmp_path):
    out = tmp_path / "run"
    proc = _run(["train.py", "debug=default", "dataset.image_size=32", "trainer.progress=false",
                 f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "ok" and (out / "best" / "model.safetensors").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()  # Hydra's own record of the composed config


def test_bad_override_fails_with_clear_message(tmp_path):
    proc = _run(["train.py", "model=smal_cnn", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode != 0
    assert "small_cnn" in proc.stderr  # Hydra lists the available options of the group


def test_unknown_model_name_lists_close_matches(tmp_path):
    proc = _run(["train.py", "debug=default", "model.name=smal_cnn", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode != 0
    assert "Did you mean: small_cnn" in proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "smal_cnn" in res["error"]


TINY_DATA = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=3",
             "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false"]


def test_explain_multirun_sweeps_methods_and_each_job_writes_its_figure(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _run(["explain.py", "-m", "attribution=saliency,gradcam", "model.dropout=0.1,0.2", *TINY_DATA,
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "results.json").exists())
    assert len(jobs) == 4
    for job in jobs:
        res = json.loads((job / "results.json").read_text())
        assert res["status"] == "ok" and (job / "figures" / "attributions.png").is_file()
    methods = {json.loads((j / "results.json").read_text())["metrics"]["methods"][0] for j in jobs}
    assert methods == {"saliency", "gradcam"}


def test_console_script_is_installed_and_runs(tmp_path):
    script = Path(sys.executable).with_name("xai-evaluate")
    if not script.exists():
        import pytest

        pytest.skip("package not installed with its console scripts in this interpreter")
    out = tmp_path / "eval"
    proc = subprocess.run([str(script), *TINY_DATA, f"hydra.run.dir={out}"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "WANDB_MODE": "disabled"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["metrics"]["n"] == 3


def test_installed_package_runs_from_an_empty_directory(tmp_path):
    """A non-editable install (the wheel, not this checkout) finds its configs from any directory: the wheel ships
    conf/, and the console-script entry path (xai_bench.cli) runs a debug training job and a tiny explain job."""
    wheel_dir, site, empty = tmp_path / "wheel", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheel_dir), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheel_dir.glob("xai_bench-*.whl")
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    assert (site / "xai_bench" / "conf" / "train.yaml").is_file() and not (site / "xai_bench" / "conf").is_symlink()
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(site)}
    for task, args in (("train", ["debug=default", "dataset.image_size=32"]),
                       ("explain", ["debug=default", "attribution=[saliency,gradcam]", "max_images=1"])):
        code = (f"import sys, xai_bench; assert xai_bench.__file__.startswith({str(site)!r}), xai_bench.__file__; "
                f"sys.argv = ['xai-{task}', *{args!r}]; import xai_bench.cli as c; c.{task}()")
        proc = subprocess.run([sys.executable, "-c", code], cwd=empty, capture_output=True, text=True, timeout=600,
                              env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (res,) = (empty / "outputs" / task).glob("*/results.json")
        assert json.loads(res.read_text())["status"] == "ok"
        assert (res.parent / f"{task}.log").is_file()  # the run log is named after the task, not the entry module


def test_optuna_sweep_over_training(tmp_path):
    """conf/hparams_search/train_optuna from the command line: each trial returns its best validation accuracy and
    the sweeper records the best one (the README's Optuna example, two trials of a tiny run)."""
    sweep = tmp_path / "optuna"
    proc = _run(["train.py", "hparams_search=train_optuna", "debug=default", "dataset.image_size=16",
                 "dataset.n_train=128", "dataset.n_val=32", "dataset.n_test=32", "scheduler=none",
                 "trainer.progress=false",
                 "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                 f"hydra.sweep.dir={sweep}"], tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "results.json").exists())
    assert len(jobs) == 2
    values = []
    for job in jobs:
        res = json.loads((job / "results.json").read_text())
        assert res["status"] == "ok"
        values.append(res["metrics"]["best/val/acc"])
        assert res["metrics"]["objective"] == values[-1]  # the monitored validation metric, never the test split
    import yaml

    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(values) and set(best["best_params"]) >= {"optim.lr", "trainer.batch_size"}


def test_optimized_metric_that_the_task_does_not_return_is_named(tmp_path):
    from xai_bench.cli import _objective

    assert _objective({"objective": 0.5, "top1": 0.7}, None) == 0.5
    assert _objective({"objective": 0.5, "top1": 0.7}, "top1") == 0.7
    import pytest

    with pytest.raises(ValueError, match=r"optimized_metric='best/val/ac'.*'top1'"):
        _objective({"objective": 0.5, "top1": 0.7}, "best/val/ac")
