"""attack.py: every attack config writes its curve, grid and table; per-ε numbers aggregate exactly over batches; the
ε-ball contract; one backward per batch for FGSM; lossless saved examples; the multirun callback."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

import xai_bench  # noqa: F401  (before torchvision/timm)
import xai_bench.tasks.attack as attack_task
from xai_bench.reports.callbacks import AccuracyVsEpsCallback, collect_sweep
from xai_bench.robustness.attacks import FGSM
from xai_bench.robustness.sweeps import summarize_sweep
from xai_bench.data import make_loader, synthetic_shapes
from xai_bench.metrics import classification_report, predict
from xai_bench.models import create_model, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
N_TEST = 10




def _quick_classifier(seed: int = 0):
    """A small_cnn that is input-dependent without training: BatchNorm statistics from 384 synthetic images, then the
    last layer fitted by ridge regression on the random features (~3 s; a random small_cnn predicts one class)."""
    torch.manual_seed(seed)
    model = create_model("small_cnn", num_classes=6, in_chans=3, input_size=32,
                         class_names=["circle", "square", "triangle", "cross", "ring", "star"])
    batch = next(iter(make_loader(synthetic_shapes(n_train=384, n_val=0, n_test=0, image_size=32, seed=7).train, 384)))
    x, y = batch["image"], batch["label"]
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the one calibration batch
    head = model.net.classifier[-1]
    feats = {}
    handle = head.register_forward_hook(lambda _m, inputs, _o: feats.__setitem__("f", inputs[0]))
    with torch.no_grad():
        model.train()(x)
        model.eval()(x)
    handle.remove()
    f = torch.cat([feats["f"], torch.ones(len(x), 1)], 1)
    targets = torch.nn.functional.one_hot(y, 6).float() * 2 - 1
    w = torch.linalg.solve(f.T @ f + 0.1 * torch.eye(f.shape[1]), f.T @ targets)
    with torch.no_grad():
        head.weight.copy_(3 * w[:-1].T)
        head.bias.copy_(3 * w[-1])
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(_quick_classifier(), tmp_path_factory.mktemp("ckpt") / "best")


def _overrides(checkpoint, *extra):
    return ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", f"dataset.n_test={N_TEST}",
            "dataset.image_size=32", "model=checkpoint", f"model.path={checkpoint}", "logger=none",
            "progress=false", "batch_size=4", *extra]


def _test_images():
    ds = synthetic_shapes(n_train=0, n_val=0, n_test=N_TEST, image_size=32, seed=0).test
    batch = next(iter(make_loader(ds, N_TEST)))
    return batch["image"], batch["label"]


@pytest.mark.parametrize("attack,extra", [("fgsm", []), ("pgd_linf", ["attack.method.steps=2"]),
                                          ("pgd_l2", ["attack.method.steps=2"]), ("fgsm_targeted", [])])
def test_every_attack_config_writes_curve_grid_and_table(compose, tmp_path, checkpoint, attack, extra):
    cfg = compose("attack", _overrides(checkpoint, f"attack={attack}", *extra), tmp_path)
    metrics = attack_task.run(cfg)
    for f in ("figures/accuracy_vs_eps.png", "figures/adversarial_grid.png", "tables/eps_sweep.csv", "results.json"):
        assert (tmp_path / f).is_file(), f
    eps = [r["eps"] for r in metrics["eps_sweep"]]
    assert eps == sorted(eps) and eps[0] == 0 and len(eps) == len(cfg.attack.eps)
    with open(tmp_path / "tables" / "eps_sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["eps"]) for r in rows] == pytest.approx(eps)
    norm = metrics["norm"]
    for r in metrics["eps_sweep"]:
        size = r["linf_max"] if norm == "inf" else r["l2_max"]
        assert size <= r["eps"] * (1 + 1e-5) + 1e-6 and r["n"] == N_TEST
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["mean_confidence"] <= 1
    assert metrics["eps_sweep"][-1]["linf_max"] > 0  # something was perturbed
    assert metrics["objective"] == metrics["eps_sweep"][-1]["accuracy"]
    assert metrics["clean_accuracy"] == metrics["eps_sweep"][0]["accuracy"]
    first, last = metrics["eps_sweep"][0], metrics["eps_sweep"][-1]
    assert first["flip_rate"] == 0 and last["flip_rate"] > 0  # ε = 0 is the clean batch; the largest ε bites
    if attack != "fgsm_targeted":
        assert first["attack_success_rate"] == 0 and last["attack_success_rate"] > 0
    assert metrics["model"] == "small_cnn" and metrics["attack"] == attack
    assert ("mean_target_class_prob" in metrics["eps_sweep"][0]) == (attack == "fgsm_targeted")
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "ok" and res["metrics"]["eps_sweep"][-1]["eps"] == eps[-1]


def test_eps_zero_accuracy_is_clean_accuracy_and_batches_aggregate_exactly(compose, tmp_path, checkpoint):
    model = load_checkpoint(checkpoint).eval()
    images, labels = _test_images()
    ds = synthetic_shapes(n_train=0, n_val=0, n_test=N_TEST, image_size=32, seed=0).test
    clean = classification_report(predict(model, make_loader(ds, 4), torch.device("cpu")), model.class_names)
    batched = attack_task.run(compose("attack", _overrides(checkpoint, "batch_size=3", "grid_images=0"),
                                      tmp_path / "b3"))
    whole = attack_task.run(compose("attack", _overrides(checkpoint, f"batch_size={N_TEST}", "grid_images=0"),
                                    tmp_path / "b10"))
    assert batched["clean_accuracy"] == pytest.approx(clean["top1"], abs=1e-6)  # float32 mean there
    # Batches of 3, 3, 3, 1 must give the numbers of one batch of 10, and those of summarize_sweep on it.
    eps = [r["eps"] for r in batched["eps_sweep"]]
    reference = summarize_sweep(FGSM(model).sweep(images, labels, eps), labels)
    for a, b, ref in zip(batched["eps_sweep"], whole["eps_sweep"], reference):
        for key in ("accuracy", "attack_success_rate", "mean_confidence", "mean_true_class_prob", "linf_max",
                    "l2_mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6, nan_ok=True), key
            assert a[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6, nan_ok=True), key


def _count_backwards(monkeypatch):
    counter = {"backward": 0}
    real = attack_task.build_model

    def counting_build_model(cfg, data=None):
        model = real(cfg, data)

        def hook(_module, _inputs, output):
            if output.requires_grad:
                output.register_hook(lambda g: counter.__setitem__("backward", counter["backward"] + 1))

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(attack_task, "build_model", counting_build_model)
    return counter


def test_fgsm_sweep_is_one_backward_per_batch(compose, tmp_path, checkpoint, monkeypatch):
    counter = _count_backwards(monkeypatch)
    attack_task.run(compose("attack", _overrides(checkpoint, "attack=fgsm", "grid_images=0"), tmp_path / "fgsm"))
    assert counter["backward"] == math.ceil(N_TEST / 4)  # 7 ε values, one gradient per batch
    counter["backward"] = 0
    attack_task.run(compose("attack", _overrides(checkpoint, "attack=pgd_linf", "attack.method.steps=2",
                                                 "attack.eps=[0,1/255,2/255]", "grid_images=0"), tmp_path / "pgd"))
    assert counter["backward"] == math.ceil(N_TEST / 4) * 2 * 2  # the counter does see PGD's steps × non-zero ε


def test_save_examples_roundtrip(compose, tmp_path, checkpoint):
    metrics = attack_task.run(compose("attack", _overrides(checkpoint, "attack.save_examples=true",
                                                           "max_examples=6"), tmp_path))
    path = tmp_path / "adversarial.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    eps = json.loads(meta["eps"])
    assert eps == [r["eps"] for r in metrics["eps_sweep"]] and meta["norm"] == "inf"
    images, labels = _test_images()
    torch.testing.assert_close(tensors["images"], images[:6])
    assert torch.equal(tensors["labels"], labels[:6])
    for key, e in zip(json.loads(meta["adv_keys"]), eps):
        adv = tensors[key]
        assert adv.shape == (6, 3, 32, 32) and adv.dtype == torch.float32
        assert adv.min() >= 0 and adv.max() <= 1
        assert (adv - tensors["images"]).abs().amax() <= e * (1 + 1e-5) + 1e-6
    assert (tensors[f"adv_{eps[-1]:.6g}"] != tensors["images"]).any()
    assert len(list((tmp_path / "examples").glob("*.png"))) == 2 * 6
    assert json.loads(meta["class_names"])[0] == "circle"


def test_saved_examples_are_explained_and_evaluated_as_attacked(compose, tmp_path, checkpoint):
    """dataset=tensors reads adversarial.safetensors exactly: evaluate's and explain's predictions on adv_<eps> are
    the attack's own adversarial predictions (PNG reloading would resize, crop and round them)."""
    from xai_bench.tasks import evaluate, explain

    attack_task.run(compose("attack", _overrides(checkpoint, "attack.save_examples=true", "attack.eps=[0,8/255]",
                                                 "grid_images=2"), tmp_path / "a"))
    with open(tmp_path / "a" / "tables" / "examples.csv") as f:
        rows = [r for r in csv.DictReader(f)]
    key = rows[-1]["key"]
    expected = {r["image"]: r["prediction"] for r in rows if r["key"] == key}
    clean = {r["image"]: r["prediction"] for r in rows if r["key"] != key}
    assert len(expected) == N_TEST and expected != clean  # 8/255 flips some images: the check can fail
    data = ["dataset=tensors", f"dataset.path={tmp_path / 'a' / 'adversarial.safetensors'}", f"dataset.key={key}",
            "model=checkpoint", f"model.path={checkpoint}", "logger=none", "progress=false"]
    metrics = evaluate.run(compose("evaluate", data, tmp_path / "e"))
    with open(tmp_path / "e" / "tables" / "predictions.csv") as f:
        got = {r["image"]: r["top1"] for r in csv.DictReader(f)}
    assert got == expected and metrics["n"] == N_TEST
    explain.run(compose("explain", [*data, "attribution=[saliency]", "max_images=null"], tmp_path / "x"))
    with open(tmp_path / "x" / "tables" / "maps.csv") as f:
        assert {r["image"]: r["prediction"] for r in csv.DictReader(f)} == expected


def test_eps_fraction_strings_from_the_command_line(compose, tmp_path, checkpoint):
    metrics = attack_task.run(compose("attack", _overrides(checkpoint, "attack.eps=[0,8/255]", "grid_eps=8/255",
                                                                 "grid_images=1"),
                                      tmp_path))
    assert [r["eps"] for r in metrics["eps_sweep"]] == [0.0, 8 / 255]
    assert [r["eps_label"] for r in metrics["eps_sweep"]] == ["0/255", "8/255"]
    assert "accuracy@0.03137" in metrics and metrics["grid_eps"] == 8 / 255


def test_bad_grid_eps_and_bounds_guard(compose, tmp_path, checkpoint):
    with pytest.raises(ValueError, match="grid_eps"):
        attack_task.run(compose("attack", _overrides(checkpoint, "grid_eps=3/255"), tmp_path))
    x = torch.full((2, 3, 4, 4), 0.5)
    fake = {"linf": torch.tensor([[0.0, 0.0], [0.02, 0.05]]), "l2": torch.zeros(2, 2), "images": x.expand(2, -1, -1,
                                                                                                          -1, -1)}
    with pytest.raises(RuntimeError, match="ε-ball"):
        attack_task._check_bounds(fake, x, [0.0, 0.03], "inf")
    fake["linf"] = torch.tensor([[0.0, 0.0], [0.02, 0.03]])
    attack_task._check_bounds(fake, x, [0.0, 0.03], "inf")
    fake["images"] = x.expand(2, -1, -1, -1, -1) + 0.6
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        attack_task._check_bounds(fake, x, [0.0, 0.03], "inf")


def _fake_job(folder: Path, model: str, attack: str, accs, norm="inf", status="ok", task="attack"):
    eps = [0.0, 1 / 255, 4 / 255][: len(accs)] if norm == "inf" else [0.0, 0.5, 1.0][: len(accs)]
    rows = [{"eps": e, "eps_label": f"{e}", "n": 10, "accuracy": a, "attack_success_rate": 1 - a} for e, a in
            zip(eps, accs)]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "task": task, "status": status,
        "metrics": {"model": model, "attack": attack, "norm": norm, "dataset": "samples", "eps_sweep": rows}}))


def test_multirun_callback_draws_one_plot_from_job_folders(tmp_path):
    _fake_job(tmp_path / "0_model=a", "a", "fgsm", [1.0, 0.6, 0.2])
    _fake_job(tmp_path / "1_model=b", "b", "fgsm", [0.9, 0.8, 0.7])
    _fake_job(tmp_path / "2_model=b,attack=pgd" / "nested", "b", "pgd_linf", [0.9, 0.5, 0.1])
    _fake_job(tmp_path / "3_failed", "c", "fgsm", [1.0], status="failed")
    _fake_job(tmp_path / "4_not_attack", "d", "fgsm", [1.0], task="evaluate")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    AccuracyVsEpsCallback().on_multirun_end(config)
    assert (tmp_path / "accuracy_vs_eps.png").stat().st_size > 1000
    with open(tmp_path / "accuracy_vs_eps.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9
    assert {(r["model"], r["attack"]) for r in rows} == {("a", "fgsm"), ("b", "fgsm"), ("b", "pgd_linf")}
    assert [float(r["accuracy"]) for r in rows if r["model"] == "a"] == [1.0, 0.6, 0.2]
    assert {r["job"] for r in rows if r["attack"] == "pgd_linf"} == {"2_model=b,attack=pgd/nested"}


def test_callback_splits_norms_and_tolerates_empty_sweeps(tmp_path):
    assert collect_sweep(tmp_path / "nothing_here") == {}
    _fake_job(tmp_path / "0", "a", "fgsm", [1.0, 0.5])
    _fake_job(tmp_path / "1", "a", "pgd_l2", [1.0, 0.4], norm="2")
    _fake_job(tmp_path / "2", "a", "fgsm", [1.0, 0.3])  # same (model, attack) as job 0: labelled by folder
    written = collect_sweep(tmp_path)
    assert set(written) == {"csv", "png", "png_l2"} and written["png_l2"].name == "accuracy_vs_eps_l2.png"
    assert all(p.is_file() for p in written.values())


@pytest.mark.slow
def test_multirun_from_the_command_line(tmp_path, checkpoint):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "attack.py"), "-m", *_overrides(checkpoint, "attack=fgsm,pgd_linf"),
           f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "accuracy_vs_eps.png").is_file()
    with open(sweep / "accuracy_vs_eps.csv") as f:
        assert {r["attack"] for r in csv.DictReader(f)} == {"fgsm", "pgd_linf"}
