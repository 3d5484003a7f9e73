"""Scale-out helpers: CPU threads per job from the launcher, one GPU per job, and torchrun sharding of explain and
attack (two CPU processes, gloo) equal to the single-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xai_bench.distributed import PeerStore, Ranks, cpus_per_job, env_rank, env_world_size, job_device, merge_ranks

ROOT = Path(__file__).resolve().parents[1]
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"


# --- threads per job -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("launcher", "env", "cores", "expected"), [
    (None, {}, 16, None),                                                    # a plain run: torch's default
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, {}, 16, None),
    ({"_target_": JOBLIB, "n_jobs": 4}, {}, 16, 4),                          # 4 jobs at once share 16 cores
    ({"_target_": JOBLIB, "n_jobs": 2}, {}, 2, 1),
    ({"_target_": JOBLIB, "n_jobs": -1}, {}, 16, 1),                         # one job per core
    ({"_target_": JOBLIB, "n_jobs": -2}, {}, 16, 1),                         # 15 jobs
    ({"_target_": JOBLIB, "n_jobs": 64}, {}, 16, 1),                         # more jobs than cores: still 1
    ({"_target_": SUBMITIT, "cpus_per_task": 6}, {}, 16, 6),
    ({"_target_": SUBMITIT, "cpus_per_task": None}, {}, 16, None),
    ({"_target_": SUBMITIT, "cpus_per_task": 6}, {"SLURM_CPUS_PER_TASK": "10"}, 64, 10),  # what Slurm granted
    ({"_target_": RAY, "ray": {"init": {}, "remote": {"num_cpus": 3}}}, {}, 16, 3),
    ({"_target_": RAY, "ray": {"init": {}, "remote": {}}}, {}, 16, 1),       # Ray's default: 1 CPU per task
    (None, {"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "4"}, 16, 4),            # torchrun, 4 ranks on the node
    (None, {"LOCAL_WORLD_SIZE": "1"}, 16, None),
])
def test_cpus_per_job_follows_the_launcher(launcher, env, cores, expected):
    assert cpus_per_job(launcher, env, cpu_count=cores) == expected


# --- one GPU per job -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("device", "job_num", "local_rank", "n_gpus", "expected"), [
    ("auto", 0, None, 4, "cuda:0"),
    ("auto", 5, None, 4, "cuda:1"),          # job 5 of a sweep on a 4-GPU node
    ("auto", 7, None, 4, "cuda:3"),
    ("auto", None, 3, 2, "cuda:1"),          # torchrun rank with LOCAL_RANK 3 on 2 GPUs
    ("auto", 5, 2, 4, "cuda:2"),             # LOCAL_RANK wins over the job number
    ("auto", None, None, 4, "auto"),         # a plain run: auto (cuda:0)
    ("auto", 3, None, 1, "auto"),            # one visible GPU (Slurm gave this job one): nothing to choose
    ("auto", 3, None, 0, "auto"),            # CPU machine
    ("cpu", 3, None, 4, "cpu"),              # explicit devices are never changed
    ("cuda:2", 0, None, 4, "cuda:2"),
    (None, 2, None, 2, "cuda:0"),
])
def test_job_device_spreads_jobs_over_gpus(device, job_num, local_rank, n_gpus, expected):
    assert job_device(device, job_num=job_num, local_rank=local_rank, n_gpus=n_gpus) == expected


def test_job_device_reads_the_gpu_count_from_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert job_device("auto", job_num=4) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert job_device("auto", job_num=4) == "auto"


def test_setup_job_in_a_hydra_sweep_picks_threads_and_gpu(monkeypatch):
    """The job's own Hydra config says which launcher ran it and its job number (mocked: 4 GPUs, joblib, job 6)."""
    from omegaconf import OmegaConf

    from xai_bench import distributed

    launcher = OmegaConf.create({"_target_": JOBLIB, "n_jobs": 4})
    monkeypatch.setattr(distributed, "launcher_config", lambda: launcher)
    monkeypatch.setattr(distributed, "_job_num", lambda: 6)
    monkeypatch.setattr(distributed, "_cpu_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    before = torch.get_num_threads()
    try:
        assert distributed.setup_job("auto") == "cuda:2"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_env_rank_and_world_size():
    assert env_world_size({}) == 1 and env_rank({}) == 0
    assert env_world_size({"WORLD_SIZE": "4", "RANK": "3"}) == 4 and env_rank({"WORLD_SIZE": "4", "RANK": "3"}) == 3
    assert env_rank({"RANK": "3"}) == 0  # RANK without a world is no distributed run


# --- sharding --------------------------------------------------------------------------------------------------
def test_ranks_split_batches_disjointly_and_completely():
    for world in (1, 2, 3, 5):
        owners = [[r for r in range(world) if Ranks(r, world).owns(b)] for b in range(11)]
        assert all(len(o) == 1 for o in owners)  # every batch has exactly one rank


def test_merge_ranks_in_one_process_is_a_no_op():
    parts = {"saliency": {0: torch.zeros(1)}}
    skipped, seconds = [], {"saliency": 1.0}
    merge_ranks(Ranks(), PeerStore([], {}), parts, skipped, seconds)
    assert list(parts["saliency"]) == [0] and seconds == {"saliency": 1.0}


def test_other_tasks_refuse_torchrun(compose, tmp_path, monkeypatch):
    from xai_bench.tasks import evaluate

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    cfg = compose("evaluate", ["dataset=synthetic_shapes", "model=small_cnn", "logger=none"], tmp_path)
    with pytest.raises(ValueError, match="torchrun"):
        evaluate.run(cfg)


DATA = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=7", "max_images=7",
        "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false", "batch_size=2"]
TINY = [*DATA, "attribution=[saliency,rise,occlusion]", "attribution.rise.kwargs.n_masks=64",
        "attribution.occlusion.window=8", "attribution.occlusion.stride=8", "metric=[deletion]"]


def _env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def _single_and_sharded(tmp_path: Path, script: str, args: list[str]) -> tuple[Path, Path]:
    """Run ``script`` once in one process and once under torchrun with 2 gloo ranks; returns both run folders."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    proc = subprocess.run([sys.executable, script, *args, f"hydra.run.dir={single}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", script, *args, f"hydra.run.dir={sharded}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1 of 2 (gloo)" in proc.stderr + proc.stdout
    return single, sharded


@pytest.mark.slow  # two runs, three process starts: ~25 s on a loaded 2-core machine
def test_torchrun_two_cpu_ranks_equal_the_single_process_run(tmp_path):
    """7 images in 4 batches over 2 gloo ranks (rank 0: batches 0 and 2, rank 1: 1 and 3): rank 0 merges them into
    one results.json, maps file and table equal to one process's (RISE is random, seeded per batch)."""
    single, sharded = _single_and_sharded(tmp_path, "explain.py", TINY)

    a, b = (json.loads((d / "results.json").read_text()) for d in (single, sharded))
    assert a["status"] == b["status"] == "ok"
    timing = lambda m: {k: v for k, v in m.items() if not k.startswith("seconds/") and k != "world_size"}
    assert b["metrics"]["world_size"] == 2 and "world_size" not in a["metrics"]
    assert timing(a["metrics"]) == timing(b["metrics"])  # counts, methods and the deletion scores of every method
    assert a["metrics"]["explanation_metrics"]  # (so the comparison above covers metric values)
    ma, mb = load_file(str(single / "maps.safetensors")), load_file(str(sharded / "maps.safetensors"))
    assert ma.keys() == mb.keys() and {"saliency", "rise", "occlusion"} <= ma.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    assert (single / "tables" / "maps.csv").read_text() == (sharded / "tables" / "maps.csv").read_text()
    assert not (sharded / "shards").exists()  # rank 0 closed the merged store


@pytest.mark.slow  # ~15 s: two ranks start, one fails
def test_a_failing_rank_fails_the_run_instead_of_hanging(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    script = tmp_path / "fail_rank1.py"
    script.write_text(
        "import os, sys\n"
        "import xai_bench.cli\n"
        "if os.environ.get('RANK') == '1':\n"
        "    from xai_bench.attribution.runner import Explainer\n"
        "    def boom(self, *args, **kwargs):\n"
        "        raise RuntimeError('injected failure on rank 1')\n"
        "    Explainer.attribute = boom\n"
        "sys.argv[0] = 'explain'\n"
        "xai_bench.cli.explain()\n")
    out = tmp_path / "run"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script), *DATA,
                           "attribution=[saliency]", f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**_env(), "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr + proc.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "failed" and "another rank stopped" in res["error"]


@pytest.mark.slow  # ~20 s: a killed single-process run, resumed by two ranks
def test_torchrun_resumes_a_killed_run(tmp_path):
    """A run killed after two of its four batches, resumed under torchrun: rank 0 carries the two over, the ranks
    split the rest, and the maps equal an uninterrupted single-process run's."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    args = [*DATA, "attribution=[saliency,rise]", "attribution.rise.kwargs.n_masks=64"]
    full, part, resumed = tmp_path / "full", tmp_path / "part", tmp_path / "resumed"
    for out, env in ((full, {}), (part, {"XAI_BENCH_FAULT": "2:before:raise"})):
        subprocess.run([sys.executable, "explain.py", *args, f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**_env(), **env})
    assert (full / "maps.safetensors").is_file() and (part / "shards" / "index.json").is_file()
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "explain.py", *args, f"resume={part}",
                           f"hydra.run.dir={resumed}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 finished batch(es) carried over" in proc.stderr + proc.stdout
    res = json.loads((resumed / "results.json").read_text())
    assert res["metrics"]["resumed_from"] == str(part) and res["metrics"]["world_size"] == 2
    ma, mb = load_file(str(full / "maps.safetensors")), load_file(str(resumed / "maps.safetensors"))
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k


def test_merging_per_batch_sums_in_order_equals_adding_the_batches():
    """What rank 0 does with the other ranks' batches (merge their own sums in batch order) gives the float64 sums of
    one process adding the batches, bit for bit."""
    from xai_bench.robustness.sweeps import SweepAccumulator

    g = torch.Generator().manual_seed(0)
    eps, k = [0.0, 0.01, 0.1], 5
    batches = []
    for n in (4, 4, 3):
        logits = torch.randn(len(eps), n, k, generator=g)
        batches.append(({"preds": logits.argmax(-1), "logits": logits, "clean_logits": torch.randn(n, k, generator=g),
                         "linf": torch.rand(len(eps), n, generator=g), "l2": torch.rand(len(eps), n, generator=g)},
                        torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=g), k).bool()))
    one, merged = SweepAccumulator(eps), SweepAccumulator(eps)
    for result, accept in batches:
        one.add(result, accept)
        part = SweepAccumulator(eps)
        part.add(result, accept)
        merged.merge(part.state_dict())
    for key, value in one.state_dict().items():
        assert torch.equal(value, merged.state_dict()[key]), key
    assert one.rows() == merged.rows()


ATTACK = [*DATA, "attack=pgd_linf", "attack.method.steps=2", "attack.method.seed=null", "attack.save_examples=true",
          "max_examples=5", "attack.eps=[0,2/255,8/255]", "grid_images=4"]


@pytest.mark.slow  # two runs, three process starts: ~20 s on a loaded 2-core machine
def test_torchrun_attack_on_two_cpu_ranks_equals_the_single_process_run(tmp_path):
    """PGD with a random start drawn from torch's RNG (attack.method.seed=null), 7 images in 4 batches over 2 gloo
    ranks, kept examples spanning batches of both ranks: rank 0's results.json, table and adversarial images equal
    one process's."""
    single, sharded = _single_and_sharded(tmp_path, "attack.py", ATTACK)

    a, b = (json.loads((d / "results.json").read_text()) for d in (single, sharded))
    assert a["status"] == b["status"] == "ok"
    assert b["metrics"].pop("world_size") == 2 and "world_size" not in a["metrics"]
    assert a["metrics"] == b["metrics"]  # every ε row: accuracy, success, confidences, ‖δ‖ sums and maxima
    rows = a["metrics"]["eps_sweep"]
    assert a["metrics"]["n"] == 7 and rows[0]["linf_max"] == 0 < rows[-1]["linf_max"]  # the attack moved the images
    for table in ("eps_sweep.csv", "examples.csv"):
        assert (single / "tables" / table).read_text() == (sharded / "tables" / table).read_text(), table
    ea, eb = load_file(str(single / "adversarial.safetensors")), load_file(str(sharded / "adversarial.safetensors"))
    assert ea.keys() == eb.keys() and ea["images"].shape[0] == 5  # batches 0, 1 (rank 1) and 2 (rank 0)
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k
    assert not (sharded / "shards").exists()
