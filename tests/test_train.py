"""One-epoch training, exact resume after a crash mid-epoch, evaluate on the checkpoint, and tracking files."""

import json

import pytest
import torch
from safetensors.torch import load_file

import xai_bench.training as training
from xai_bench.tasks import evaluate, train


def _weights(path):
    return load_file(str(path / "best" / "model.safetensors"))


def test_one_epoch_train_writes_everything(compose, tmp_path, tiny_train_overrides):
    cfg = compose("train", [*tiny_train_overrides, "trainer.max_epochs=1"], tmp_path)
    metrics = train.run(cfg)
    assert metrics["epochs"] == 1 and 0 <= metrics["test/top1"] <= 1
    for f in ("best/model.safetensors", "best/model.json", "checkpoints/last.pt", "results.json",
              "figures/train_samples.png", "figures/test_confusion_matrix.png"):
        assert (tmp_path / f).is_file(), f
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "ok" and res["seed"] == 0 and "torch" in res["versions"]
    assert res["config"]["model"]["name"] == "small_cnn" and res["timings"]["fit"] > 0
    assert res["metrics"]["history"][0]["epoch"] == 1


def test_training_is_deterministic(compose, tmp_path, tiny_train_overrides):
    for run in ("a", "b"):
        train.run(compose("train", [*tiny_train_overrides, "trainer.max_epochs=1"], tmp_path / run))
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_after_crash_mid_epoch_equals_uninterrupted(compose, tmp_path, tiny_train_overrides, monkeypatch):
    over = [*tiny_train_overrides, "trainer.max_epochs=2", "dataset.augment={rotation: 10}"]
    train.run(compose("train", over, tmp_path / "full"))

    real_step, calls = training._train_step, {"n": 0}

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6 + 3:  # 6 steps per epoch: crash in the middle of epoch 2
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "_train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train.run(compose("train", over, tmp_path / "crash"))
    res = json.loads((tmp_path / "crash" / "results.json").read_text())
    assert res["status"] == "interrupted"
    monkeypatch.setattr(training, "_train_step", real_step)
    metrics = train.run(compose("train", [*over, "trainer.resume=true"], tmp_path / "crash"))
    assert metrics["resumed_at_epoch"] == 1 and metrics["epochs"] == 2
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "crash" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_resume_from_another_run_folder(compose, tmp_path, tiny_train_overrides):
    over = [*tiny_train_overrides, "scheduler=none"]
    train.run(compose("train", [*over, "trainer.max_epochs=1"], tmp_path / "first"))
    metrics = train.run(compose("train", [*over, "trainer.max_epochs=2", f"trainer.resume={tmp_path / 'first'}"],
                                tmp_path / "second"))
    assert metrics["resumed_at_epoch"] == 1 and metrics["epochs"] == 2


def test_resume_refuses_to_stretch_a_schedule(compose, tmp_path, tiny_train_overrides):
    train.run(compose("train", [*tiny_train_overrides, "trainer.max_epochs=1"], tmp_path / "first"))
    with pytest.raises(ValueError, match="trainer.max_epochs=1"):
        train.run(compose("train", [*tiny_train_overrides, "trainer.max_epochs=2",
                                    f"trainer.resume={tmp_path / 'first'}"], tmp_path / "second"))


def test_resume_errors(compose, tmp_path, tiny_train_overrides):
    with pytest.raises(FileNotFoundError, match="trainer.resume"):
        train.run(compose("train", [*tiny_train_overrides, f"trainer.resume={tmp_path / 'nope'}"], tmp_path / "r"))
    bad = tmp_path / "bad" / "checkpoints"
    bad.mkdir(parents=True)
    (bad / "last.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot resume"):
        train.run(compose("train", [*tiny_train_overrides, f"trainer.resume={tmp_path / 'bad'}"], tmp_path / "r2"))


def test_evaluate_checkpoint_and_corruptions(compose, tmp_path, tiny_train_overrides):
    train.run(compose("train", [*tiny_train_overrides, "trainer.max_epochs=1"], tmp_path / "t"))
    cfg = compose("evaluate", ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0",
                               "dataset.n_test=48", "dataset.image_size=32", "model=checkpoint",
                               f"model.path={tmp_path / 't' / 'best'}", "logger=none", "progress=false",
                               "corruption=basic"], tmp_path / "e")
    metrics = evaluate.run(cfg)
    assert metrics["n"] == 48 and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert set(metrics["per_class_acc"]) <= {"circle", "square", "triangle", "cross", "ring", "star"}
    acc = metrics["corruptions"]["accuracy"]
    assert acc["clean"] == pytest.approx(metrics["top1"]) and "contrast_x5" in acc and "invert" in acc
    for f in ("figures/confusion_matrix.png", "figures/reliability_diagram.png", "tables/predictions.csv",
              "tables/corruption_accuracy.csv", "tables/flips.csv", "figures/corruption_accuracy.png"):
        assert (tmp_path / "e" / f).is_file(), f


def test_evaluate_samples_offline_with_reference_sets(compose, tmp_path):
    metrics = evaluate.run(compose("evaluate", ["logger=none", "progress=false"], tmp_path))
    assert metrics["n"] == 5 and metrics["top1"] == 1.0
    rows = (tmp_path / "tables" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("image,label,correct,top1,top1_prob") and len(rows) == 6


def test_wandb_offline_writes_run_files(compose, tmp_path, tiny_train_overrides, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    over = [o for o in tiny_train_overrides if not o.startswith("logger")]
    train.run(compose("train", [*over, "trainer.max_epochs=1", "logger=wandb"], tmp_path))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "offline run has no event log"


def test_wandb_online_without_account_says_how_to_fix(compose, tmp_path, tiny_train_overrides, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))  # no stored login
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    over = [o for o in tiny_train_overrides if not o.startswith("logger")]
    with pytest.raises(RuntimeError, match="logger.mode=offline"):
        train.run(compose("train", [*over, "trainer.max_epochs=1", "logger=wandb", "logger.mode=online"],
                          tmp_path / "run"))
