"""Ensembles through ``evaluate.py ensemble=…``: hand-checked votes and entropies, per-member transforms, figures and
tables, config errors, and the torchvision ensemble failing fast offline."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image

import xai_bench  # noqa: F401  (before torchvision/timm)
from xai_bench.data import synthetic_shapes
from xai_bench.data.transforms import eval_transform, load_image
from xai_bench.robustness.ensemble import ensemble_accuracy
from xai_bench.models import create_model, load_checkpoint, save_checkpoint
from xai_bench.tasks import evaluate

CLASSES = ["circle", "square", "triangle", "cross", "ring", "star"]
N_TEST = 8




def _constant_member(path: Path, probs: list[float], input_size: int = 32) -> Path:
    """A small_cnn whose output is log(probs) for every image: all weights 0, the last bias log p."""
    model = create_model("small_cnn", num_classes=6, in_chans=3, input_size=input_size, class_names=CLASSES)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.net.classifier[-1].bias.copy_(torch.tensor(probs).log())
    return save_checkpoint(model, path)


def _evaluate_ensemble(compose, out_dir, members, *extra, combine=("vote", "mean"), max_figures=12):
    cfg = compose("evaluate", ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0",
                               f"dataset.n_test={N_TEST}", "dataset.image_size=32", "logger=none", "progress=false",
                               "batch_size=4", *extra], out_dir)
    with open_dict(cfg):
        cfg.ensemble = OmegaConf.create({"members": members, "combine": list(combine), "max_figures": max_figures})
    return evaluate.run(cfg)


def _entropy(p):
    return -sum(v * math.log(v) for v in p if v > 0)


def test_hand_checked_votes_entropy_and_accuracy(compose, tmp_path):
    pa = [0.7, 0.1, 0.05, 0.05, 0.05, 0.05]
    pc = [0.1, 0.7, 0.05, 0.05, 0.05, 0.05]
    paths = [_constant_member(tmp_path / name, p) for name, p in (("a", pa), ("b", pa), ("c", pc))]
    members = [{"name": "checkpoint", "path": str(p), "label": lab} for p, lab in zip(paths, "abc")]
    metrics = _evaluate_ensemble(compose, tmp_path / "run", members, max_figures=3)

    labels = synthetic_shapes(n_train=0, n_val=0, n_test=N_TEST, image_size=32, seed=0).test
    y = torch.tensor([labels[i]["label"] for i in range(N_TEST)])
    frac = lambda c: float((y == c).float().mean())
    assert metrics["members"] == ["a", "b", "c"]
    assert metrics["top1/a"] == pytest.approx(frac(0)) and metrics["top1/c"] == pytest.approx(frac(1))
    assert metrics["top1/ensemble_vote"] == pytest.approx(frac(0))  # two votes of three for class 0
    assert metrics["top1/ensemble_mean"] == pytest.approx(frac(0))
    assert metrics["objective"] == metrics["top1/ensemble_vote"]  # combine[0]

    mean = [(2 * a + c) / 3 for a, c in zip(pa, pc)]  # [0.5, 0.3, 0.05 × 4]
    h = _entropy(mean)
    mi = h - (2 * _entropy(pa) + _entropy(pc)) / 3
    with open(tmp_path / "run" / "tables" / "ensemble_uncertainty.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_TEST and [int(r["rank"]) for r in rows] == list(range(1, N_TEST + 1))
    for r in rows:
        assert float(r["entropy"]) == pytest.approx(h, abs=1e-5)
        assert float(r["mutual_information"]) == pytest.approx(mi, abs=1e-5)
        assert float(r["vote_agreement"]) == pytest.approx(2 / 3)
        assert r["vote_class"] == "circle" and r["ensemble_class"] == "circle"
        assert float(r["ensemble_prob"]) == pytest.approx(0.5, abs=1e-6)
        assert (r["a_class"], r["b_class"], r["c_class"]) == ("circle", "circle", "square")
        assert r["correct"] == str(r["label"] == "circle")
    with open(tmp_path / "run" / "tables" / "ensemble_accuracy.csv") as f:
        acc = {r["model"]: r for r in csv.DictReader(f)}
    assert list(acc) == ["a", "b", "c", "ensemble_vote", "ensemble_mean"]
    assert acc["ensemble_vote"]["top5"] == "" and float(acc["ensemble_mean"]["top1"]) == pytest.approx(frac(0))
    figures = sorted(p.name for p in (tmp_path / "run" / "figures").glob("*.png"))
    assert "ensemble_accuracy.png" in figures and "uncertainty_ranking.png" in figures
    assert len([f for f in figures if f.startswith("votes_")]) == 3  # max_figures
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "ok" and res["metrics"]["ranking"] == [r["image"] for r in rows]


def test_ranking_puts_certain_images_first_and_duplicate_names_are_made_unique(compose, tmp_path):
    torch.manual_seed(0)
    paths = []
    for i in range(2):
        model = create_model("small_cnn", num_classes=6, in_chans=3, input_size=32, class_names=CLASSES)
        with torch.no_grad():
            model.net.classifier[-1].weight.mul_(50 * (i + 1))  # input-dependent, different confidence per image
        paths.append(save_checkpoint(model, tmp_path / f"m{i}"))
    members = [{"name": "checkpoint", "path": str(p)} for p in paths]
    metrics = _evaluate_ensemble(compose, tmp_path / "run", members, combine=("mean",), max_figures=0)
    assert metrics["members"] == ["small_cnn", "small_cnn#2"] and "top1/ensemble_vote" not in metrics
    with open(tmp_path / "run" / "tables" / "ensemble_uncertainty.csv") as f:
        h = [float(r["entropy"]) for r in csv.DictReader(f)]
    assert h == sorted(h) and h[0] < h[-1]
    assert not list((tmp_path / "run" / "figures").glob("votes_*.png"))


def test_each_member_sees_its_own_eval_transform(compose, tmp_path):
    """Photos of their own sizes: members of 32 and 48 pixels each get images resized for them."""
    photos = tmp_path / "photos"
    photos.mkdir()
    g = torch.Generator().manual_seed(0)
    for i, (h, w) in enumerate([(50, 70), (64, 40), (45, 45)]):
        arr = (torch.rand(h, w, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(arr).save(photos / f"p{i}.png")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"p0": {"label": 0, "accept": [0, 1]}, "p1": 2}))  # p2 unlabelled
    torch.manual_seed(0)
    models = [create_model("small_cnn", num_classes=6, in_chans=3, input_size=s, class_names=CLASSES)
              for s in (32, 48)]
    paths = [save_checkpoint(m, tmp_path / f"m{s}") for m, s in zip(models, (32, 48))]
    cfg = compose("evaluate", ["dataset=images", f"dataset.root={photos}", f"dataset.labels={labels}",
                               "dataset.num_classes=6", f"+dataset.class_names=[{','.join(CLASSES)}]",
                               "logger=none", "progress=false", "batch_size=2"], tmp_path / "run")
    with open_dict(cfg):
        cfg.ensemble = {"members": [{"name": "checkpoint", "path": str(p)} for p in paths], "combine": ["mean"]}
    metrics = evaluate.run(cfg)
    assert metrics["n"] == 3 and metrics["n_scored"] == 2
    with open(tmp_path / "run" / "tables" / "ensemble_uncertainty.csv") as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    assert rows["p2.png"]["correct"] == "" and rows["p2.png"]["label"] == ""  # unknown, not False
    for path, size in zip(paths, (32, 48)):
        model = load_checkpoint(path).eval()
        for name in ("p0.png", "p1.png"):
            x = eval_transform((3, size, size))(load_image(photos / name, 3))[None]
            with torch.no_grad():
                p = model(x).softmax(-1)[0]
            member = "small_cnn" if size == 32 else "small_cnn#2"
            assert float(rows[name][f"{member}_prob"]) == pytest.approx(float(p.max()), abs=1e-5)


def test_ensemble_accuracy_with_reference_sets():
    probs = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]],
                          [[0.3, 0.6, 0.1], [0.1, 0.1, 0.8]],
                          [[0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]])  # M=3, N=2, K=3
    accept = torch.tensor([[True, True, False], [False, False, False]])  # image 0: {0, 1}; image 1 unscored
    rows = {r["model"]: r for r in ensemble_accuracy(probs, accept, ["x", "y", "z"], ["vote", "mean"])}
    assert all(rows[m]["top1"] == 1.0 and rows[m]["n"] == 1 for m in ("x", "y", "z", "ensemble_vote",
                                                                       "ensemble_mean"))
    accept = torch.tensor([[True, False, False], [False, True, False]])
    rows = {r["model"]: r for r in ensemble_accuracy(probs, accept, ["x", "y", "z"], ["vote", "mean"])}
    assert [rows[m]["top1"] for m in ("x", "y", "z")] == [1.0, 0.0, 0.0]
    # Image 0 votes 0, 1, 1 → 1 (wrong). Image 1 votes 1, 2, 0: a three-way tie broken by the mean probability
    # [0.27, 0.40, 0.33] → 1 (right; breaking it by the lowest index would give 0, wrong).
    assert rows["ensemble_vote"]["top1"] == 0.5 and rows["ensemble_vote"]["top5"] is None
    assert rows["ensemble_mean"]["top1"] == 0.5  # means: image 0 [0.37, 0.53, 0.10] → 1, image 1 → 1
    nan = ensemble_accuracy(probs, torch.zeros(2, 3, dtype=torch.bool), ["x", "y", "z"], ["mean"])
    assert math.isnan(nan[0]["top1"])


def test_config_errors(compose, tmp_path):
    path = _constant_member(tmp_path / "a", [0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="ensemble.combine"):
        _evaluate_ensemble(compose, tmp_path / "r1", [{"name": "checkpoint", "path": str(path)}], combine=("max",))
    with pytest.raises(ValueError, match="ensemble.members"):
        _evaluate_ensemble(compose, tmp_path / "r2", [])
    with pytest.raises(ValueError, match=r"members\[0\]"):
        _evaluate_ensemble(compose, tmp_path / "r3", [{"path": str(path)}])


def test_shipped_ensemble_configs_compose(compose, tmp_path):
    conf = Path(__file__).resolve().parents[1] / "conf" / "ensemble"
    names = sorted(p.stem for p in conf.glob("*.yaml"))
    assert {"efficientnet_lite", "torchvision_imagenet"} <= set(names)
    for name in names:
        cfg = compose("evaluate", [f"ensemble={name}"], tmp_path)
        assert len(cfg.ensemble.members) >= 2 and set(cfg.ensemble.combine) <= {"vote", "mean"}
        assert all(m.get("pretrained") for m in cfg.ensemble.members.values())


def test_torchvision_ensemble_fails_fast_offline(compose, tmp_path, monkeypatch):
    """Offline by construction (empty weight cache, downloads refused), whatever network this machine has."""
    import urllib.error

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(f"download of {url} refused by the test (simulated offline)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    cfg = compose("evaluate", ["ensemble=torchvision_imagenet", "logger=none", "progress=false", "max_images=1"],
                  tmp_path)
    with pytest.raises(RuntimeError, match="pretrained torchvision weights for 'vgg16'.*Without network"):
        evaluate.run(cfg)
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_efficientnet_lite_ensemble_on_the_sample_photos(compose, tmp_path):
    """The offline default ensemble end to end (~4 s single-threaded): three input sizes, reference sets."""
    cfg = compose("evaluate", ["ensemble=efficientnet_lite", "logger=none", "progress=false",
                               "dataset.names=[chelsea,coffee,cameraman]"], tmp_path)
    metrics = evaluate.run(cfg)
    assert metrics["members"] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert metrics["top1/ensemble_mean"] == 1.0 and metrics["n"] == 3
    assert len(list((tmp_path / "figures").glob("votes_*.png"))) == 3
