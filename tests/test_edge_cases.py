"""Inputs and configurations at the edges: missing splits, tiny runs, unlabelled photos, inline labels."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from xai_bench.tasks.setup import prepare_for_model
from xai_bench import data
from xai_bench.robustness.corruption_eval import corruption_summary, flip_rows
from xai_bench.tasks import explain, train

TINY = ["dataset.n_train=192", "dataset.n_test=64", "dataset.image_size=32", "trainer.batch_size=32",
        "trainer.eval_batch_size=64", "trainer.progress=false", "logger=none"]


def test_training_without_a_validation_split_refuses_to_select_on_test(compose, tmp_path):
    with pytest.raises(ValueError, match="no validation split"):
        train.run(compose("train", [*TINY, "dataset.n_val=0"], tmp_path))


def test_resume_into_a_new_folder_carries_the_best_model(compose, tmp_path):
    over = [*TINY, "dataset.n_val=64", "scheduler=none", "trainer.max_epochs=1"]
    train.run(compose("train", over, tmp_path / "first"))
    # Nothing left to train: the new folder still gets the earlier run's best model and evaluates it.
    metrics = train.run(compose("train", [*over, f"trainer.resume={tmp_path / 'first'}"], tmp_path / "second"))
    assert (tmp_path / "second" / "best" / "model.safetensors").is_file()
    assert metrics["resumed_at_epoch"] == 1 and 0 <= metrics["test/top1"] <= 1


def test_one_cycle_on_a_handful_of_steps(compose, tmp_path):
    train.run(compose("train", [*TINY, "dataset.n_val=64", "trainer.max_epochs=1", "trainer.limit_train_batches=4"],
                      tmp_path))  # 4 steps: torch's OneCycleLR divides by zero with pct_start·4 − 1 = 0
    with pytest.raises(ValueError, match="at least 3 optimiser steps"):
        train.run(compose("train", [*TINY, "dataset.n_val=64", "trainer.max_epochs=1",
                                    "trainer.limit_train_batches=2"], tmp_path / "b"))


def test_bad_amp_value(compose, tmp_path):
    with pytest.raises(ValueError, match="trainer.amp"):
        train.run(compose("train", [*TINY, "dataset.n_val=64", "trainer.amp=fp8"], tmp_path))


def test_failing_tracker_still_writes_results(compose, tmp_path, monkeypatch):
    from xai_bench.tracking import Tracker

    def broken_start(self, *args, **kwargs):
        raise RuntimeError("tracker down")

    monkeypatch.setattr(Tracker, "start", broken_start)
    with pytest.raises(RuntimeError, match="tracker down"):
        train.run(compose("train", [*TINY, "dataset.n_val=64"], tmp_path))
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_default_explain_set_on_small_images(compose, tmp_path):
    """The default set runs on 32-px images (occlusion's window is sized to the image: 8 px, not 56)."""
    cfg = compose("explain", ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=2",
                              "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false",
                              "attribution.integrated_gradients.kwargs.n_steps=4"], tmp_path)
    with pytest.warns(UserWarning, match="random weights"):
        metrics = explain.run(cfg)
    assert "occlusion" in metrics["methods"]


def test_pretrained_zoo_models_get_channels_size_and_names_from_the_data(compose, tmp_path, monkeypatch):
    import xai_bench.tasks.setup as setup

    seen = {}

    class Captured(Exception):
        pass

    def capture(**kw):
        seen.update(kw)
        raise Captured

    monkeypatch.setattr(setup, "create_model", capture)
    cfg = compose("train", ["model=timm", "model.pretrained=true", "dataset.n_train=4", "dataset.n_val=4",
                            "dataset.n_test=4", "dataset.image_size=32"], tmp_path)
    with pytest.raises(Captured):
        setup.build_model(cfg, data.synthetic_shapes(n_train=0, n_val=0, n_test=2, image_size=32))
    assert seen["in_chans"] == 3 and seen["input_size"] == 32 and seen["num_classes"] == 6
    assert seen["class_names"][0] == "circle"


def test_corruption_accuracy_counts_only_scored_images():
    correct = {"clean": torch.tensor([True, False, False]), "blur": torch.tensor([False, False, True])}
    scored = torch.tensor([True, True, False])
    s = corruption_summary(correct, scored=scored)
    assert s["clean_accuracy"] == 0.5 and s["accuracy"]["blur"] == 0.0 and s["n_scored"] == 2
    assert [r["image"] for r in flip_rows(correct, ["a", "b", "c"], scored)] == ["a", "b"]
    assert corruption_summary(correct, scored=torch.zeros(3, dtype=torch.bool))["n_scored"] == 0


def test_inline_label_mapping_from_the_config(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "chelsea.png")
    labels = OmegaConf.create({"chelsea": {"label": 281, "accept": [281, 282, 285]}})
    b = data.images(root=str(tmp_path), labels=labels)
    assert b.test.labels.tolist() == [281] and b.test.accept[0].nonzero().flatten().tolist() == [281, 282, 285]


def test_images_dataset_from_a_list_of_paths(compose, tmp_path):
    from xai_bench.tasks.setup import build_data

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    cfg = compose("evaluate", ["dataset=images", f"dataset.paths=[{tmp_path / 'a.png'}]"], tmp_path)
    assert len(build_data(cfg).test) == 1


def test_splits_can_be_switched_off(tmp_path):
    for c in ("A", "B"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / c / f"{i}.png")
    assert data.imagefolder(root=str(tmp_path), image_size=8, val_fraction=0).val is None
    assert data.digits(val_fraction=0.0, test_fraction=0.1).val is None


def test_image_size_mismatch_with_a_fixed_size_model(tmp_path, tiny_classifier):
    b = data.synthetic_shapes(n_train=0, n_val=0, n_test=2, image_size=48)
    with pytest.raises(ValueError, match="dataset.image_size=32"):
        prepare_for_model(b, tiny_classifier)
