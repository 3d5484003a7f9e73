"""A bad-input corpus made on the fly: each bad file or folder reaches its documented outcome, and a folder with some
bad files still processes the good ones (through the ``images`` and ``imagefolder`` datasets and an evaluate run)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench import data
from xai_bench.checks import check_limit
from xai_bench.data.transforms import BadImageError, load_image
from xai_bench.robustness.attacks import FGSM, PGD
from xai_bench.robustness.sweeps import summarize_sweep

GOOD = 16  # side of the good images: 256 pixels, under the lowered decompression-bomb limit below
BOMB_LIMIT = 1000


def _png(path, side=GOOD, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)


def _float_tiff(path, arr):
    Image.fromarray(np.asarray(arr, np.float32), mode="F").save(path)


def _bad_corpus(folder, monkeypatch) -> dict[str, str]:
    """One file per kind of bad image; returns file name → a word its skip reason must contain."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "notes.png").write_text("these are my notes, not a picture\n")
    (folder / "._photo.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    _png(folder / "bomb_warning.png", side=40)  # 1,600 pixels: over the limit (PIL warns)
    _png(folder / "bomb_error.png", side=50)    # 2,500 pixels: over twice the limit (PIL raises)
    _float_tiff(folder / "nan.tif", [[0.5, np.nan], [0.2, 0.1]])
    _float_tiff(folder / "inf.tif", [[0.5, np.inf], [0.2, 0.1]])
    _float_tiff(folder / "sensor.tif", np.linspace(0, 4000, 16).reshape(4, 4))
    return {"empty.png": "decode", "truncated.jpg": "truncated", "notes.png": "decode", "._photo.png": "macOS",
            "bomb_warning.png": "decompression bomb", "bomb_error.png": "decompression bomb", "nan.tif": "NaN",
            "inf.tif": "infinite", "sensor.tif": "[0, 4000]"}


def _check_skipped(skipped, expected):
    by_name = {os.path.basename(s["path"]): s["reason"] for s in skipped}
    assert set(by_name) == set(expected)
    for name, word in expected.items():
        assert word in by_name[name] and name in by_name[name], (name, by_name[name])


# -- one file at a time -----------------------------------------------------------------------------------------------

def test_every_bad_file_is_refused_naming_it(tmp_path, monkeypatch):
    expected = _bad_corpus(tmp_path, monkeypatch)
    for name, word in expected.items():
        with pytest.raises(BadImageError, match=word.replace("[", r"\[")) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # stored landscape: left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", as phones write it
    Image.fromarray(arr).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    img = np.asarray(load_image(tmp_path / "phone.jpg"), dtype=np.float64)
    assert img.shape == (40, 20, 3)  # upright: portrait
    assert img[:20].mean() > 200 and img[20:].mean() < 50  # the left half turned to the top


def test_float_images_in_unit_range_are_read_as_intensities(tmp_path):
    _float_tiff(tmp_path / "ok.tif", [[0.0, 0.5], [1.0, 0.25]])
    img = np.asarray(load_image(tmp_path / "ok.tif", channels=1))
    assert img.tolist() == [[0, 128], [255, 64]]


# -- folders with some bad files --------------------------------------------------------------------------------------

def test_images_folder_skips_and_lists_bad_files(tmp_path, monkeypatch, tiny_classifier):
    from xai_bench.tasks.setup import prepare_for_model

    folder = tmp_path / "photos"
    expected = _bad_corpus(folder, monkeypatch)
    _png(folder / "a.png")
    _png(folder / "b.png", seed=1)
    b = prepare_for_model(data.images(root=str(folder), num_classes=3), tiny_classifier)
    assert sorted(b.test.names) == ["a.png", "b.png"]
    assert b.test[1]["image"].shape == (3, 32, 32)
    _check_skipped(b.skipped, expected)
    with pytest.raises(ValueError, match="dataset.strict=true") as info:
        data.images(root=str(folder), num_classes=3, strict=True)
    assert all(name in str(info.value) for name in expected)
    for name in ("a.png", "b.png"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match="no usable image") as info:
        data.images(root=str(folder), num_classes=3)
    assert all(name in str(info.value) for name in expected)


def test_imagefolder_skips_bad_files_and_refuses_bad_trees(tmp_path, monkeypatch):
    root = tmp_path / "asl"
    expected = _bad_corpus(root / "A", monkeypatch)
    (root / "B").mkdir()
    for c in ("A", "B"):
        for i in range(3):
            _png(root / c / f"{i}.png", seed=i)
    (root / "__MACOSX" / "A").mkdir(parents=True)  # left by unzipping a macOS archive: not a class
    b = data.imagefolder(root=str(root), image_size=8, val_fraction=0)
    assert b.class_names == ["A", "B"] and len(b.train) == 6
    _check_skipped(b.skipped, expected)

    (root / "C").mkdir()  # an empty class folder would be a class that is never trained
    with pytest.raises(ValueError, match=r"\['C'\].*never trained"):
        data.imagefolder(root=str(root), image_size=8)
    (root / "C" / "bad.png").write_bytes(b"")  # only bad files: the same after skipping
    with pytest.raises(ValueError, match=r"\['C'\]"):
        data.imagefolder(root=str(root), image_size=8)


def test_imagefolder_with_one_class_says_where_the_classes_are(tmp_path):
    for c in ("A", "B"):
        (tmp_path / "x" / "train" / c).mkdir(parents=True)
        _png(tmp_path / "x" / "train" / c / "0.png")
    with pytest.raises(ValueError, match="one class folder 'train'.*point dataset.root at the folder that holds") \
            as info:
        data.imagefolder(root=str(tmp_path / "x"), image_size=8)
    assert f"dataset.root={tmp_path / 'x' / 'train'}" in str(info.value)
    (tmp_path / "single" / "A").mkdir(parents=True)
    _png(tmp_path / "single" / "A" / "0.png")
    with pytest.raises(ValueError, match="one class folder 'A'.*at least two classes"):
        data.imagefolder(root=str(tmp_path / "single"), image_size=8)


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that stores non-UTF-8 names")
def test_evaluate_on_a_folder_with_bad_files_and_a_non_utf8_name(compose, tmp_path, monkeypatch):
    from xai_bench.tasks import evaluate

    folder = tmp_path / "photos"
    expected = _bad_corpus(folder, monkeypatch)
    _png(folder / "a.png")
    _png(folder / os.fsdecode(b"caf\xe9.png"), seed=1)  # Latin-1 bytes: not valid UTF-8
    out = tmp_path / "run"
    cfg = compose("evaluate", ["dataset=images", f"dataset.root={folder}", "dataset.num_classes=6", "model=small_cnn",
                               "logger=none", "progress=false"], out)
    with pytest.warns(UserWarning, match="random weights"):
        evaluate.run(cfg)
    with open(out / "tables" / "predictions.csv", encoding="utf-8") as f:
        assert sorted(r["image"] for r in csv.DictReader(f)) == ["a.png", "caf\\xe9.png"]
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "ok"
    _check_skipped(res["skipped_files"], expected)
    assert "tables/skipped_files.csv" in res["files"]


# -- max_images -------------------------------------------------------------------------------------------------------

def test_max_images_is_null_or_positive(compose, tmp_path):
    from xai_bench.tasks import evaluate

    assert check_limit("max_images", None) is None and check_limit("max_images", 3) == 3
    for bad in (0, -1, 2.5, True, "all"):
        with pytest.raises(ValueError, match="max_images must be a positive integer, or null"):
            check_limit("max_images", bad)
    for bad in ("0", "-1"):
        cfg = compose("evaluate", ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0",
                                   "dataset.n_test=2", "model=small_cnn", "logger=none", f"max_images={bad}"], tmp_path)
        with pytest.raises(ValueError, match=f"max_images must be a positive integer, or null for no limit; got {bad}"):
            evaluate.run(cfg)
        assert not (tmp_path / "results.json").exists()  # refused at start-up, before any work


# -- attacks and reference sets ---------------------------------------------------------------------------------------

def _tiny_model_with_sets(seed=1, n=64, k=6):
    """A seeded MLP and images whose reference set is their two best classes, labelled with the second best."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Tanh(), nn.Linear(16, k))
    for p in model.parameters():
        nn.init.normal_(p, std=0.3, generator=g)
    x = torch.rand(n, 3, 8, 8, generator=g)
    with torch.no_grad():
        top = model(x).topk(2, 1).indices
    accept = torch.zeros(n, k, dtype=torch.bool)
    accept[torch.arange(n)[:, None], top] = True
    return model, x, top[:, 1], accept


def test_fgsm_against_reference_sets_gives_a_monotone_curve():
    model, x, labels, accept = _tiny_model_with_sets()
    eps = [0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1]
    acc = [r["accuracy"] for r in summarize_sweep(FGSM(model).sweep(x, labels, eps, accept=accept), labels,
                                                  accept=accept)]
    assert acc[0] == 1.0 and all(b <= a for a, b in zip(acc, acc[1:])) and acc[-1] < 0.5
    # Against the single label the attack pushes towards the other accepted class and its ε is wasted.
    single = [r["accuracy"] for r in summarize_sweep(FGSM(model).sweep(x, labels, eps), labels, accept=accept)]
    assert single[-1] > acc[-1] + 0.3


def test_attack_loss_is_over_the_reference_set():
    model, x, labels, accept = _tiny_model_with_sets(n=4)
    attack = FGSM(model)
    sets = attack._check_inputs(x, labels, None, accept)[1]
    grad, _ = attack._input_grad(x, sets, None)
    xr = x.clone().requires_grad_(True)
    p = model(xr).softmax(1)
    (-(p * accept).sum(1).log()).sum().backward()  # -log Σ_{c∈A} p_c
    torch.testing.assert_close(grad, xr.grad)
    # Every class accepted: nothing to attack, for both losses.
    everything = torch.ones_like(accept)
    assert torch.equal(attack(x, labels, 0.1, accept=everything), x)
    assert torch.equal(PGD(model, loss="margin", random_start=False)(x, labels, 0.1, accept=everything), x)
    # An unlabelled image (empty set) is attacked away from the label it was given.
    empty = torch.zeros_like(accept)
    assert torch.equal(attack(x, labels, 0.1, accept=empty), attack(x, labels, 0.1))
    with pytest.raises(ValueError, match="Bool"):
        attack(x, labels, 0.1, accept=accept.float())
