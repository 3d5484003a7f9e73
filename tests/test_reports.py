"""The sweep report (xai-report): every kind of job's results gathered into one table and one self-contained HTML
page; failed and unfinished jobs listed with their errors; the Hydra callback after a multirun, also when a job
failed; W&B groups, job types and tables (a real offline run); the demo study under debug, rendered in a real
headless browser."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import headless_chromium

from xai_bench.errors import NoResultsError
from xai_bench.reports import ReportCallback, collect_jobs, write_report

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ a fake sweep
def _job(folder: Path, task: str, metrics: dict, *, status: str = "ok", error: str | None = None,
         overrides: list[str] = (), config: dict | None = None, files: list[str] = ()) -> Path:
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "results.json").write_text(json.dumps({
        "schema_version": 1, "task": task, "status": status, "error": error, "metrics": metrics,
        "config": config or {}, "files": list(files)}))
    return folder


def _eps_sweep(accs):
    return [{"eps": e / 255, "eps_label": f"{e}/255", "eps_255": e, "n": 8, "accuracy": a} for e, a in
            zip((0, 1, 4), accs)]


def _fake_study(root: Path) -> None:
    """One job of each kind as the tasks write them (keys as in results.json of real runs), a failed job and one
    that died before writing results.json."""
    sweep = root / "attack"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for i, (attack, accs) in enumerate((("fgsm", [0.9, 0.6, 0.3]), ("pgd_linf", [0.9, 0.5, 0.1]))):
        _job(sweep / f"{i}_attack={attack}", "attack", {"model": "small_cnn", "attack": attack, "norm": "inf",
             "dataset": "synthetic_shapes", "eps_sweep": _eps_sweep(accs), "objective": accs[-1]},
             overrides=[f"attack={attack}", "max_images=8"])
    _job(sweep / "2_attack=pgd_l2", "attack", {}, status="failed", overrides=["attack=pgd_l2", "max_images=8"],
         error="ValueError: attack.eps: an L2 radius must be ≥ 0, got -1")
    _job(root / "train", "train", {"history": [{"epoch": 1, "train/loss": 1.2, "val/acc": 0.6},
                                                {"epoch": 2, "train/loss": 0.7, "val/acc": 0.8}],
                                    "test/top1": 0.8, "best/val/acc": 0.8, "epochs": 2, "objective": 0.8},
         config={"model": {"name": "small_cnn"}, "dataset": {"_target_": "xai_bench.data.synthetic_shapes"}})
    acc = {"clean": 0.9, **{f"{c}/{s}": 0.9 - 0.1 * s for c in ("fog", "gaussian_noise") for s in (1, 2, 3)}}
    _job(root / "corrupt", "evaluate", {"top1": 0.9, "objective": 0.9, "mean_corruption_error": 0.2,
                                        "corruptions": {"accuracy": acc, "suite": "imagenet_c"}},
         config={"model": {"name": "checkpoint", "path": "/x/train/best"}})
    em = {m: {"deletion": {"mean": d, "se": 0.01}, "sparseness": {"mean": s, "se": 0.02}}
          for m, d, s in (("saliency", 0.3, 0.5), ("gradcam", 0.2, 0.3), ("random_map", 0.4, 0.1))}
    _job(root / "explain", "explain", {"explanation_metrics": em, "methods": list(em),
                                       "ranking": [{"method": "gradcam", "median_rank": 1.5},
                                                   {"method": "saliency", "median_rank": 1.5},
                                                   {"method": "random_map", "median_rank": 3.0}]},
         config={"metric": {"deletion": {"_target_": "xai_bench.metrics.explanation.faithfulness.Deletion"},
                            "sparseness": {}}})
    ens = _job(root / "ensemble", "evaluate", {"members": ["a", "b"], "n": 2, "top1/a": 1.0, "top1/b": 0.5,
                                               "top1/ensemble_vote": 1.0, "top1/ensemble_mean": 1.0,
                                               "ranking": ["coffee", "chelsea"], "objective": 1.0},
               files=["tables/ensemble_uncertainty.csv"])
    (ens / "tables").mkdir()
    (ens / "tables" / "ensemble_uncertainty.csv").write_text(
        "rank,image,label,ensemble_class,ensemble_prob,entropy,mutual_information,vote_agreement,correct\n"
        "1,coffee,,espresso,0.72,1.86,0.07,1.0,True\n2,chelsea,,Egyptian cat,0.38,2.73,0.05,1.0,True\n")
    died = root / "explain_oom"  # killed before results.json: only Hydra's files and a log
    (died / ".hydra").mkdir(parents=True)
    (died / ".hydra" / "config.yaml").write_text("task_name: explain\n")
    (died / "explain.log").write_text("[INFO] - explaining 64 images\n[INFO] - batch 3/8\n")


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html)]


def test_report_gathers_every_kind_of_job(tmp_path):
    from PIL import Image

    _fake_study(tmp_path)
    written = write_report(tmp_path)
    with open(written["csv"], newline="") as f:
        runs = {r["job"]: r for r in csv.DictReader(f)}
    assert set(runs) == {"attack/0_attack=fgsm", "attack/1_attack=pgd_linf", "attack/2_attack=pgd_l2", "train",
                         "corrupt", "explain", "ensemble", "explain_oom"}
    assert runs["attack/0_attack=fgsm"]["attack"] == "fgsm"  # the swept value is a column; max_images was not swept
    assert "max_images" not in runs["train"]
    failed = runs["attack/2_attack=pgd_l2"]
    assert failed["status"] == "failed" and "L2 radius" in failed["error"]
    assert runs["explain_oom"]["status"] == "failed" and runs["explain_oom"]["task"] == "explain"
    assert runs["train"]["model"] == "small_cnn" and runs["corrupt"]["model"] == "checkpoint:train/best"

    with open(written["attack_csv"], newline="") as f:
        attack = list(csv.DictReader(f))
    assert [float(r["accuracy"]) for r in attack if r["attack"] == "pgd_linf"] == [0.9, 0.5, 0.1]
    with open(written["metrics_csv"], newline="") as f:
        metrics = {(r["method"], r["metric"]): r for r in csv.DictReader(f)}
    assert metrics[("gradcam", "deletion")]["higher_is_better"] == "False"  # the fact from the metric's class
    assert metrics[("gradcam", "deletion")]["category"] == "faithfulness"
    with open(written["corruption_csv"], newline="") as f:
        corr = [r for r in csv.DictReader(f) if r["corruption"] == "fog"]
    assert [(int(r["severity"]), float(r["accuracy"])) for r in corr] == [(1, 0.8), (2, 0.7), (3, 0.6)]
    with open(written["uncertainty_csv"], newline="") as f:
        assert [r["image"] for r in csv.DictReader(f)] == ["coffee", "chelsea"]

    html = written["html"].read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    assert "L2 radius must be" in html and "batch 3/8" in html  # the error, and the log tail of the dead job
    figures = sorted(p.stem for p in (tmp_path / "report" / "figures").glob("*.png"))
    assert figures == ["accuracy_vs_eps", "corruption_0", "ensemble_accuracy_0", "metrics_0", "training_curves",
                       "uncertainty_0"]
    pngs = _images(html)
    assert len(pngs) == len(figures)
    for png in pngs:
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
    md = written["md"].read_text()
    assert "| job | task | status |" in md and "![" in md


def test_report_of_a_single_run_and_of_nothing(tmp_path, capsys):
    from xai_bench import cli

    _job(tmp_path / "run", "train", {"history": [{"epoch": 1, "val/acc": 0.5}], "objective": 0.5})
    written = write_report(tmp_path / "run")
    assert [j.name for j in collect_jobs(tmp_path / "run")] == ["."] and written["html"].is_file()
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(NoResultsError, match="no results.json and no Hydra job folder"):
        write_report(tmp_path / "empty")
    with pytest.raises(SystemExit) as exit_info:
        cli.report([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing: no such folder" in err


def test_callback_reports_after_a_failed_job_and_records_its_error(tmp_path):
    """Hydra skips on_multirun_end once a job failed: the report is rewritten at each job's end instead, and a job
    that raised before writing results.json gets one with the error."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    _job(tmp_path / "0_seed=0", "train", {"objective": 0.5})
    bad = tmp_path / "1_seed=1"
    (bad / ".hydra").mkdir(parents=True)
    config = OmegaConf.create({"task_name": "train", "seed": 1, "hydra": {
        "mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}, "runtime": {"output_dir": str(bad)},
        "job": {"name": "train"}}})
    ret = JobReturn(status=JobStatus.FAILED)
    ret.return_value = ValueError("dataset.n_trian: unknown key")
    ReportCallback().on_job_end(config, ret)
    res = json.loads((bad / "results.json").read_text())
    assert res["status"] == "failed" and res["error"] == "ValueError: dataset.n_trian: unknown key"
    html = (tmp_path / "report.html").read_text()
    assert "dataset.n_trian: unknown key" in html
    # a later job (another process with joblib) sees the marker and rewrites the report with its own result
    _job(tmp_path / "2_seed=2", "train", {"objective": 0.7})
    ok = JobReturn(status=JobStatus.COMPLETED)
    ok.return_value = 0.7
    later = OmegaConf.merge(config, {"hydra": {"runtime": {"output_dir": str(tmp_path / "2_seed=2")}}})
    ReportCallback().on_job_end(later, ok)
    assert "2_seed=2" in (tmp_path / "report" / "runs.csv").read_text()


def test_multirun_shares_a_wandb_group_and_logs_the_report_tables(tmp_path, monkeypatch):
    """A real multirun (in-process, basic launcher) with W&B offline: both jobs and the report run share the sweep
    folder's name as group; jobs carry their task as job_type and their overrides as config; the report's tables
    land in the report run's files."""
    import wandb

    from xai_bench import cli

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    runs = []
    real_init = wandb.init

    def init(*args, **kwargs):
        run = real_init(*args, **kwargs)
        runs.append({"group": run.group, "job_type": run.job_type, "config": dict(run.config),
                     "dir": kwargs.get("dir")})
        return run

    monkeypatch.setattr(wandb, "init", init)
    sweep = tmp_path / "my_sweep"
    monkeypatch.setattr(sys, "argv", ["train", "-m", "debug=default", "logger=wandb", "scheduler=none",
                                      "trainer.limit_train_batches=2", "dataset.n_train=64", "dataset.n_val=32",
                                      "dataset.n_test=32",
                                      "optim.lr=0.05,0.1", f"hydra.sweep.dir={sweep}"])
    cli.train()
    jobs = [r for r in runs if r["job_type"] == "train"]
    assert len(jobs) == 2 and {r["group"] for r in runs} == {"my_sweep"}
    assert sorted(r["config"]["overrides"]["optim.lr"] for r in jobs) == ["0.05", "0.1"]
    report = [r for r in runs if r["job_type"] == "report"]
    assert len(report) == 1 and report[0]["dir"] == str(sweep)
    tables = list((sweep / "wandb").glob("offline-run-*/files/media/table/report/runs_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert "optim.lr" in table["columns"] and len(table["data"]) == 2
    assert (sweep / "report.html").is_file()


def test_demo_stage_commands(compose, tmp_path):
    from xai_bench.tasks.demo import stage_commands

    cfg = compose("demo", ["debug=default", "stages.ensemble.enabled=false"], tmp_path)
    cmds = stage_commands(cfg, tmp_path, logger="wandb")
    assert list(cmds) == ["train", "attack", "corrupt", "explain"]
    attack = cmds["attack"]
    assert attack[3:5] == ["attack", "-m"] and f"model.path={tmp_path}/train/best" in attack
    # extra (the debug preset) after the stage's own overrides, so its sizes win; logger and the demo's group last
    assert attack.index("max_images=2") > attack.index("max_images=256")
    assert attack[-4:] == ["logger=wandb", f"logger.group={tmp_path.name}", "seed=0",
                           f"hydra.sweep.dir={tmp_path}/attack"]


# ------------------------------------------------------------------------------------------------ the demo, for real
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = subprocess.run([sys.executable, "-m", "xai_bench.cli", "demo", "debug=default", f"hydra.run.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                               "HF_HUB_OFFLINE": "1"})
    return out, proc


@pytest.mark.slow
def test_demo_runs_every_stage_under_debug(demo_run):
    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out / "report.html")
    with open(out / "report" / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert {r["status"] for r in runs} == {"ok"}
    assert sorted(r["task"] for r in runs) == ["attack", "attack", "evaluate", "evaluate", "explain", "train"]
    figures = {p.stem for p in (out / "report" / "figures").glob("*.png")}
    assert figures == {"training_curves", "accuracy_vs_eps", "metrics_0", "corruption_0", "ensemble_accuracy_0",
                       "uncertainty_0"}


@pytest.mark.slow
def test_demo_report_renders_in_headless_chromium(demo_run, tmp_path):
    """Every <img> of the report decodes in a real browser (Debian's chromium via chromedriver), and the page's
    screenshot is not blank."""
    from PIL import Image

    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (out / "report.html").read_text()
    n_img = len(_images(html))
    assert n_img == 6
    browser = headless_chromium("1280,2400")
    try:
        browser.get((out / "report.html").as_uri())
        loaded = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
        shot = tmp_path / "report.png"
        browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    assert len(loaded) == n_img and all(ok and w > 100 and h > 100 for ok, w, h in loaded), loaded
    import numpy as np

    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 10, "the screenshot is blank"


def test_a_figure_that_cannot_be_drawn_leaves_the_rest_of_the_report(tmp_path, monkeypatch):
    from xai_bench import viz

    _fake_study(tmp_path)

    def broken(*args, **kwargs):
        raise ValueError("no finite mean to rank")

    monkeypatch.setattr(viz, "metrics_heatmap", broken)
    written = write_report(tmp_path)
    html = written["html"].read_text()
    assert "figure <code>metrics_0</code> not drawn (ValueError: no finite mean to rank)" in html
    assert len(_images(html)) == 5 and "metrics_csv" in written
