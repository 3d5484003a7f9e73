"""Lost work: explain, attack and evaluate keep every finished batch and resume a killed run to the same results;
files are reproducible byte for byte, get the umask's mode, and no temporary file outlives a kill; a sweep with a failed
job still draws its plot."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.resume import FAULT_ENV, InjectedFault, ShardStore, config_diff
from xai_bench.tasks import attack, explain
from xai_bench.utils import TEMP_PATTERN, atomic_path, remove_stale_temps, save_safetensors

ROOT = Path(__file__).resolve().parents[1]
# 7 images, 2 per batch: 4 batches, the last one short.
DATA = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=7",
        "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false", "batch_size=2"]
# SmoothGrad draws noise from the global RNG: its maps show whether each batch is seeded the same when resumed.
EXPLAIN = [*DATA, "attribution=[saliency,smoothgrad]", "attribution.smoothgrad.wrapper.nt_samples=2"]
# PGD's random start from the global RNG (seed=null): the RNG state must carry over the kill.
ATTACK = [*DATA, "attack=pgd_linf", "attack.method.steps=2", "attack.method.seed=null", "attack.save_examples=true",
          "max_examples=5", "attack.eps=[0,2/255,8/255]"]
OUTPUTS = {"explain": ["maps.safetensors", "tables/maps.csv"],
           "attack": ["adversarial.safetensors", "tables/eps_sweep.csv"],
           "evaluate": ["tables/predictions.csv", "tables/corruption_accuracy.csv", "tables/flips.csv"]}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(task: str, compose, out: Path, *extra: str) -> dict:
    module, base = (explain, EXPLAIN) if task == "explain" else (attack, ATTACK)
    return module.run(compose(task, [*base, *extra], out))


def _assert_clean(root: Path) -> None:
    """No temporary file anywhere, no uncommitted shard, every file that should parse does."""
    for path in root.rglob("*"):
        assert not TEMP_PATTERN.match(path.name), f"orphaned temporary file {path}"
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
    for index in root.rglob("shards/index.json"):
        named = set(json.loads(index.read_text())["shards"].values())
        assert {p.name for p in index.parent.glob("*.safetensors")} == named, f"uncommitted shard in {index.parent}"


@pytest.mark.parametrize("task,fault", [("explain", "2:mid:raise"), ("attack", "1:after:raise")])
def test_a_killed_run_resumes_to_the_uninterrupted_result(compose, tmp_path, monkeypatch, task, fault):
    _run(task, compose, tmp_path / "full")
    monkeypatch.setenv(FAULT_ENV, fault)
    with pytest.raises(InjectedFault):
        _run(task, compose, tmp_path / "killed")
    monkeypatch.delenv(FAULT_ENV)
    assert json.loads((tmp_path / "killed" / "results.json").read_text())["status"] == "failed"
    kept = int(fault.split(":")[0]) + (fault.split(":")[1] == "after")
    assert len(list((tmp_path / "killed" / "shards").glob("*.safetensors"))) == kept

    metrics = _run(task, compose, tmp_path / "resumed", f"resume={tmp_path / 'killed'}")
    assert metrics["resumed_from"] == str(tmp_path / "killed")
    for name in OUTPUTS[task]:
        assert _sha(tmp_path / "resumed" / name) == _sha(tmp_path / "full" / name), name
    assert not (tmp_path / "full" / "shards").exists() and not (tmp_path / "resumed" / "shards").exists()
    _assert_clean(tmp_path)


# evaluate: the prediction loop and the corruption loop each keep their batches (shards/predict-*, corruptions-*)
EVALUATE = [*DATA, "gallery_images=3"]
EVALUATE_TABLES = ["predictions", "corruption_accuracy", "flips"]


def _evaluate(compose, out: Path, *extra: str) -> dict:
    from xai_bench.tasks import evaluate

    return evaluate.run(compose("evaluate", [*EVALUATE, *extra], out))


def _metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    metrics.pop("resumed_from", None)
    return metrics


# noise under basic: each label's generator carries over the kill; seed=null: torch's global RNG does;
# imagenet_c: random (glass_blur's pixel shuffles, gaussian_noise) and deterministic corruptions at two severities
@pytest.mark.parametrize("suite,fault", [
    ([], "predict/1:mid:raise"),
    (["corruption=basic"], "predict/3:after:raise"),
    (["corruption=basic"], "corruptions/2:before:raise"),
    (["corruption=basic", "corruption.seed=null"], "corruptions/1:after:raise"),
    (["corruption=imagenet_c", "corruption.names=[gaussian_noise,glass_blur,contrast]",
      "corruption.severities=[1,3]"], "corruptions/1:mid:raise"),
])
def test_a_killed_evaluate_resumes_to_the_uninterrupted_result(compose, tmp_path, monkeypatch, suite, fault):
    _evaluate(compose, tmp_path / "full", *suite)
    monkeypatch.setenv(FAULT_ENV, fault)
    with pytest.raises(InjectedFault):
        _evaluate(compose, tmp_path / "killed", *suite)
    monkeypatch.delenv(FAULT_ENV)
    part, at, when, _ = fault.replace("/", ":").split(":")
    kept = {p.name for p in (tmp_path / "killed" / "shards").glob("*.safetensors")}
    n_kept = int(at) + (when == "after")
    assert {n for n in kept if n.startswith(part)} == {f"{part}-{b:05d}.safetensors" for b in range(n_kept)}
    assert len(kept) == n_kept + 4 * (part == "corruptions")  # 7 images, 2 a batch: all 4 predicted

    metrics = _evaluate(compose, tmp_path / "resumed", *suite, f"resume={tmp_path / 'killed'}")
    assert metrics["resumed_from"] == str(tmp_path / "killed")
    tables = [t for t in EVALUATE_TABLES if (tmp_path / "full" / "tables" / f"{t}.csv").exists()]
    assert len(tables) == (3 if suite else 1)
    for t in tables:
        assert _sha(tmp_path / "resumed" / "tables" / f"{t}.csv") == _sha(tmp_path / "full" / "tables" / f"{t}.csv")
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "full")
    if suite:
        assert _metrics(tmp_path / "full")["corruptions"]["accuracy"]
    assert not (tmp_path / "full" / "shards").exists() and not (tmp_path / "resumed" / "shards").exists()
    _assert_clean(tmp_path)


class _ArgmaxPixel(torch.nn.Module):
    """Predicts the brightest of the first 10 pixels: any change in the noise changes its predictions."""

    def forward(self, x):
        return x.flatten(1)[:, :10] * 100


@pytest.mark.parametrize("seed", [0, None])
def test_corruption_streams_continue_over_a_kill(tmp_path, monkeypatch, seed):
    """Each batch of a resumed corruption loop gets the noise it got in the uninterrupted run (from each label's
    generator with a seed, from torch's global RNG without)."""
    from torch.utils.data import DataLoader

    from xai_bench.robustness.corruption_eval import corruption_correctness
    from xai_bench.robustness.corruptions import build_suite

    data = [{"image": torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)), "label": i % 10}
            for i in range(7)]
    suite_cfg = {"names": ["gaussian_noise", "glass_blur"], "severities": [2],
                 "custom": {"noise": {"_target_": "xai_bench.robustness.corruptions.gaussian_noise",
                                      "_partial_": True, "std": 0.1}}, "seed": seed}

    def run(folder, resume=None):
        torch.manual_seed(0)
        store = ShardStore.open(folder, task="evaluate", config={}, resume=resume)
        out = corruption_correctness({"model": _ArgmaxPixel()}, DataLoader(data, batch_size=2),
                                     build_suite(suite_cfg), torch.device("cpu"), progress=False, keep=3,
                                     store=store.part("corruptions"))
        store.close()
        return out

    full = run(tmp_path / "full")
    monkeypatch.setenv(FAULT_ENV, "corruptions/2:before:raise")
    with pytest.raises(InjectedFault):
        run(tmp_path / "killed")
    monkeypatch.delenv(FAULT_ENV)
    resumed = run(tmp_path / "resumed", tmp_path / "killed")
    assert len(set(full.predictions["model"]["noise"].tolist())) > 3  # the model sees the noise
    for label, pred in full.predictions["model"].items():
        assert torch.equal(resumed.predictions["model"][label], pred), label
    for label, ex in full.examples.items():
        assert torch.equal(resumed.examples[label], ex), label


def test_evaluate_resume_refuses_another_config(compose, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "corruptions/0:before:raise")
    with pytest.raises(InjectedFault):
        _evaluate(compose, tmp_path / "killed", "corruption=basic")
    monkeypatch.delenv(FAULT_ENV)
    killed = tmp_path / "killed"
    with pytest.raises(ValueError, match=r"2 key\(s\)") as err:
        _evaluate(compose, tmp_path / "a", "corruption=basic", "corruption.seed=1", "batch_size=3",
                  f"resume={killed}")
    assert "\n  corruption.seed: 0 → 1" in str(err.value) and "batch_size: 2 → 3" in str(err.value)
    with pytest.raises(ValueError, match="'evaluate' run"):
        _run("explain", compose, tmp_path / "b", f"resume={killed}")
    # the per-image table's top-k is made from the finished predictions: a resumed run may change it
    _evaluate(compose, tmp_path / "c", "corruption=basic", "topk=2", f"resume={killed}")
    with open(tmp_path / "c" / "tables" / "predictions.csv") as f:
        assert "top3" not in next(csv.reader(f))


def test_resume_checks_the_config_and_the_folder(compose, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "1:before:raise")
    with pytest.raises(InjectedFault):
        _run("explain", compose, tmp_path / "killed")
    monkeypatch.delenv(FAULT_ENV)
    killed = tmp_path / "killed"
    with pytest.raises(ValueError, match=r"3 key\(s\)") as err:
        _run("explain", compose, tmp_path / "a", f"resume={killed}", "seed=1", "attribution.smoothgrad.wrapper"
             ".nt_samples=3")
    assert "\n  seed: 0 → 1" in str(err.value) and "dataset.seed: 0 → 1" in str(err.value)
    assert "attribution.smoothgrad.wrapper.nt_samples: 2 → 3" in str(err.value)
    with pytest.raises(ValueError, match="'explain' run"):
        _run("attack", compose, tmp_path / "b", f"resume={killed}")
    with pytest.raises(FileNotFoundError, match="no shards/index.json"):
        _run("explain", compose, tmp_path / "c", f"resume={tmp_path / 'nowhere'}")
    # figure and metric settings act after the maps: a resumed run may change them
    _run("explain", compose, tmp_path / "d", f"resume={killed}", "figure.kind=overlay")
    with pytest.raises(FileNotFoundError, match="it finished"):
        _run("explain", compose, tmp_path / "f", f"resume={tmp_path / 'd'}")


def test_config_diff_names_dotted_keys():
    assert config_diff({"a": {"b": 1, "c": [1]}, "d": 2}, {"a": {"b": 2, "c": [1]}, "e": 3}) == [
        "a.b: 1 → 2", "d: 2 → <unset>", "e: <unset> → 3"]


def test_a_fresh_run_in_a_reused_folder_drops_the_old_shards(tmp_path):
    store = ShardStore.open(tmp_path, task="explain", config={"seed": 0})
    store.put(0, {"x": torch.zeros(2)})
    store = ShardStore.open(tmp_path, task="explain", config={"seed": 1})
    assert len(store) == 0 and not list((tmp_path / "shards").glob("*.safetensors"))


def test_safetensors_files_are_byte_reproducible_and_get_the_umask_mode(tmp_path):
    # safetensors writes its metadata from a Rust HashMap, in an order that changes between calls and processes
    meta = {f"key{i}": f"value {i}" for i in range(12)}
    a, b = save_safetensors({"m": torch.arange(6.0)}, tmp_path / "a.safetensors", meta), tmp_path / "b.safetensors"
    save_safetensors({"m": torch.arange(6.0)}, b, dict(reversed(meta.items())))
    assert _sha(a) == _sha(b)
    assert oct(a.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    old = os.umask(0o077)
    try:
        save_safetensors({"m": torch.zeros(1)}, tmp_path / "private.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "private.safetensors").stat().st_mode & 0o777 == 0o600


def test_checkpoint_weights_are_not_owner_only(tmp_path, tiny_classifier):
    from xai_bench.models import save_checkpoint

    save_checkpoint(tiny_classifier, tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_stale_temporary_files_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / f".maps.safetensors.{dead}-abcd_123.tmp"
    live = tmp_path / f".results.json.{os.getpid()}-zz9y8x7w.tmp"
    other = tmp_path / ".someone.else.tmp"
    for p in (stale, live, other):
        p.write_text("half")
    assert remove_stale_temps(tmp_path) == [stale]
    assert live.exists() and other.exists()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.json") as tmp:  # an exception removes its own
        assert TEMP_PATTERN.match(tmp.name)
        tmp.write_text("{")
        raise RuntimeError
    assert not (tmp_path / "x.json").exists() and not list(tmp_path.glob(".x.json.*"))


def test_callback_draws_the_finished_jobs_after_a_failed_one(tmp_path, caplog):
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from xai_bench.reports.callbacks import AccuracyVsEpsCallback

    rows = [{"eps": e, "eps_label": str(e), "n": 4, "accuracy": a} for e, a in ((0.0, 1.0), (0.1, 0.5))]
    (tmp_path / "0_ok").mkdir()
    (tmp_path / "0_ok" / "results.json").write_text(json.dumps({"task": "attack", "status": "ok", "metrics": {
        "model": "m", "attack": "fgsm", "norm": "inf", "dataset": "d", "eps_sweep": rows}}))
    (tmp_path / "1_bad").mkdir()
    (tmp_path / "1_bad" / "results.json").write_text(json.dumps({"task": "attack", "status": "failed",
                                                                  "error": "ValueError: grid_eps=3/255 …"}))
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}}})
    callback = AccuracyVsEpsCallback()
    with caplog.at_level("WARNING"):
        callback.on_job_end(config, JobReturn(status=JobStatus.FAILED))
    assert (tmp_path / "accuracy_vs_eps.png").is_file() and (tmp_path / "accuracy_vs_eps.csv").is_file()
    assert "1_bad is not drawn: failed (ValueError: grid_eps=3/255 …)" in caplog.text


# ---------------------------------------------------------------------------------------------------------------
def _cli(task: str, out: Path, *extra: str, env: dict | None = None, **kw) -> subprocess.Popen:
    base = {"explain": EXPLAIN, "attack": ATTACK, "evaluate": [*EVALUATE, "corruption=basic"]}[task]
    return subprocess.Popen([sys.executable, f"{task}.py", *base, f"hydra.run.dir={out}", *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                                 **(env or {})}, **kw)


def _finish(proc: subprocess.Popen) -> int:
    _, err = proc.communicate(timeout=300)
    proc.stderr_text = err  # type: ignore[attr-defined]
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("task", ["explain", "attack", "evaluate"])
def test_sigkill_at_random_points_then_resume(tmp_path, task):
    """SIGKILL (no handler runs, no cleanup) at seeded random batches and phases, and once from outside at a random
    moment; each resumed run equals the uninterrupted one, and no temporary or uncommitted file is left."""
    assert _finish(p := _cli(task, tmp_path / "full")) == 0, p.stderr_text[-3000:]
    for seed in range(3):
        rng = random.Random(seed)
        killed, resumed = tmp_path / f"killed{seed}", tmp_path / f"resumed{seed}"
        if seed < 2:  # at a commit point: before a shard, with its temp file half-made, or before the index
            part = rng.choice(["predict/", "corruptions/"]) if task == "evaluate" else ""
            fault = f"{part}{rng.randrange(4)}:{rng.choice(['before', 'mid', 'after'])}"
            assert _finish(_cli(task, killed, env={FAULT_ENV: fault})) == -9
        else:  # from outside, anywhere after the first committed batch
            proc = _cli(task, killed)
            deadline = time.time() + 120
            first = "predict-00000.safetensors" if task == "evaluate" else "00000.safetensors"
            while not (killed / "shards" / first).exists() and proc.poll() is None:
                assert time.time() < deadline
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.5))
            proc.kill()
            proc.wait()
        if not (killed / "shards" / "index.json").exists():  # killed after it finished: nothing to resume
            continue
        assert not (killed / "results.json").exists()  # SIGKILL: no handler ran
        assert _finish(p := _cli(task, resumed, f"resume={killed}")) == 0, p.stderr_text[-3000:]
        for name in OUTPUTS[task]:
            assert _sha(resumed / name) == _sha(tmp_path / "full" / name), (seed, name)
    _assert_clean(tmp_path)


@pytest.mark.slow
def test_multirun_with_a_failed_job_still_plots_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    # job 1's grid_eps is not one of attack.eps: it fails after start-up, job 0 and 2 finish
    proc = subprocess.run([sys.executable, "attack.py", "-m", *DATA, "attack=fgsm", "attack.eps=[0,2/255]",
                           "grid_eps=null,3/255,2/255", f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0  # the sweep still reports the failure
    assert (sweep / "accuracy_vs_eps.png").is_file()
    with open(sweep / "accuracy_vs_eps.csv") as f:
        jobs = {row["job"] for row in csv.DictReader(f)}
    assert len(jobs) == 2 and not any(job.startswith("1_") for job in jobs)
    assert "is not drawn: failed (ValueError: grid_eps='3/255'" in proc.stdout + proc.stderr
