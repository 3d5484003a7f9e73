"""Every conf/experiment/**.yaml composes for its task, and every study runs end to end under its debug preset.

A study with several steps has one experiment file per task (``conf/experiment/<study>/<task>.yaml``); its CI-sized
form is ``debug=studies/<study>`` (conf/debug/studies/<study>.yaml plus conf/debug/task/studies/<study>_<task>.yaml):
study-specific presets, so they live apart from the generic ``debug=default|limit`` that fit every task."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(str(p.relative_to(CONF_DIR / "experiment").with_suffix(""))
                     for p in (CONF_DIR / "experiment").rglob("*.yaml"))
# The task each experiment is written for; a new experiment file must be added here (the first test fails otherwise).
TASK = {"fashion_mnist_small_cnn": "train", "metrics_shapes": "explain", "lime_vs_rise": "explain",
        "xai_suite": "explain", "ood_ensemble/evaluate": "evaluate", "ood_ensemble/explain": "explain",
        "asl_cnn_vs_darknet/train": "train", "asl_cnn_vs_darknet/attack": "attack",
        "asl_cnn_vs_darknet/explain": "explain", "cifar_vgg_resnet/train": "train",
        "cifar_vgg_resnet/explain": "explain", "cifar_vgg_resnet/attack": "attack"}
SUITES = sorted(p.stem for p in (CONF_DIR / "metric_suite").glob("*.yaml"))
STUDIES = ["ood_ensemble", "asl_cnn_vs_darknet", "cifar_vgg_resnet", "lime_vs_rise", "xai_suite"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_experiment_names_its_task():
    assert set(EXPERIMENTS) == set(TASK), "add the new experiment to TASK with the task it runs under"


def test_every_study_has_a_debug_preset():
    for study in STUDIES:
        assert (CONF_DIR / "debug" / "studies" / f"{study}.yaml").is_file()
        tasks = {TASK[e] for e in TASK if e == study or e.startswith(f"{study}/")}
        assert tasks and all((CONF_DIR / "debug" / "task" / "studies" / f"{study}_{t}.yaml").is_file()
                             for t in tasks)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name, compose, tmp_path):
    from xai_bench.config import validate

    cfg = compose(TASK[name], [f"experiment={name}"], tmp_path)
    extra = ["model.path=/x"] if cfg.model.get("name") == "checkpoint" else []
    validate(compose(TASK[name], [f"experiment={name}", *extra], tmp_path))


def test_study_settings_are_the_issues(compose, tmp_path):
    """The numbers the studies promise are the ones the composed configs carry."""
    suite = compose("explain", ["experiment=xai_suite"], tmp_path).attribution
    assert [suite[k].name for k in suite] == [
        "ig_baseline_0", "ig_baseline_0.5", "ig_forgrad15", "rise_100", "rise_20000", "occlusion",
        "occlusion_forgrad15", "deconvolution", "lime", "kernel_shap", "gradcam"]
    assert suite.ig_baseline_half.baseline == "constant" and suite.ig_baseline_half.baseline_value == 0.5
    assert (suite.rise_100.kwargs.n_masks, suite.rise_20000.kwargs.n_masks) == (100, 20000)
    assert suite.rise_100.kwargs.grid_size == suite.rise_20000.kwargs.grid_size == 13
    assert suite.ig_forgrad.forgrad_sigma == suite.occlusion_forgrad.forgrad_sigma == 15.0
    lvr = compose("explain", ["experiment=lime_vs_rise"], tmp_path)
    assert (lvr.attribution.rise_grid7.kwargs.grid_size, lvr.attribution.rise_grid15.kwargs.grid_size) == (7, 15)
    train = compose("train", ["experiment=asl_cnn_vs_darknet/train"], tmp_path)
    assert train.trainer.batch_size == 128 and train.trainer.early_stopping.patience == 5
    assert {"rotation", "translate", "crop_padding"} <= set(train.dataset.augment)
    lime = compose("explain", ["experiment=asl_cnn_vs_darknet/explain", "model.path=/x"], tmp_path).attribution.lime
    assert lime.segmentation.algorithm == "quickshift" and lime.kwargs.n_samples == 150
    attack = compose("attack", ["experiment=cifar_vgg_resnet/attack", "model.path=/x"], tmp_path)
    assert 0.007 in list(attack.attack.eps) and attack.grid_eps == 0.007
    ood = compose("evaluate", ["experiment=ood_ensemble/evaluate"], tmp_path)
    assert list(ood.corruption.custom) == ["contrast_x5", "blur_r10", "invert"] and ood.ensemble.corruption_images == 2


@pytest.mark.parametrize("task,overrides", [
    ("evaluate", ["experiment=ood_ensemble/evaluate", "ensemble=torchvision_imagenet", "dataset=images",
                  "dataset.root=.", "dataset.accept=[33,34,35,36,37]", "~dataset.names"]),
    ("explain", ["experiment=ood_ensemble/explain", "dataset=images", "dataset.root=.", "~dataset.names",
                 "model=torchvision", "model.arch=vgg16", "model.pretrained=true", "model.num_classes=1000"]),
    ("train", ["experiment=asl_cnn_vs_darknet/train", "dataset=imagefolder", "dataset.root=."]),
    ("attack", ["experiment=asl_cnn_vs_darknet/attack", "dataset=imagefolder", "dataset.root=.", "model.path=/x"]),
    ("train", ["experiment=cifar_vgg_resnet/train", "dataset=cifar10", "dataset.download=true"]),
    ("explain", ["experiment=cifar_vgg_resnet/explain", "dataset=cifar10", "target=[3,5]", "model.path=/x"]),
    ("explain", ["experiment=xai_suite", "model=torchvision", "model.arch=resnet50", "model.pretrained=true",
                 "model.num_classes=1000"]),
])
def test_original_data_overrides_compose_and_validate(task, overrides, compose, tmp_path):
    """The README's commands for the original data and pretrained models (which need network) are valid configs."""
    from xai_bench.config import validate

    validate(compose(task, overrides, tmp_path))


def test_metric_suites_cover_every_metric(compose, tmp_path):
    from xai_bench.metrics.explanation import METRICS

    per_suite = {s: set(compose("explain", [f"metric_suite={s}"], tmp_path).metric) for s in SUITES}
    assert per_suite["all"] == set(METRICS.list())
    categories = {s for s in SUITES if s not in ("all", "latec")}
    assert set().union(*(per_suite[s] for s in categories)) == per_suite["all"]
    for s in categories:  # a category suite holds that category's metrics only
        assert {METRICS.get(m).category for m in per_suite[s]} == {s}
    assert len(per_suite["latec"]) == 20 and per_suite["latec"] <= per_suite["all"]
    # a suite and a hand-picked metric add up; a suite's setting can be overridden
    cfg = compose("explain", ["metric_suite=complexity", "metric=[deletion]", "metric.sparseness.abs=false"], tmp_path)
    assert set(cfg.metric) == per_suite["complexity"] | {"deletion"} and cfg.metric.sparseness.abs is False


@pytest.mark.slow
def test_metrics_study_runs_under_debug(compose, tmp_path):
    """The README's study (11 methods × every metric) on 2 images with a random small_cnn: every method gets a
    score on every metric whose needs the run meets, and the ranking lists every method."""
    from xai_bench.tasks import explain

    cfg = compose("explain", ["experiment=metrics_shapes", "debug=default", "model=small_cnn",
                              "model.num_classes=6", "model.input_size=32",
                              "attribution.lime.kwargs.n_samples=32", "attribution.rise.kwargs.n_masks=200",
                              "attribution.integrated_gradients.kwargs.n_steps=8",
                              "attribution.smoothgrad.wrapper.nt_samples=4"], tmp_path)
    metrics = explain.run(cfg)
    assert len(metrics["methods"]) == 11
    with open(tmp_path / "tables" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    scored = {(r["method"], r["metric"]) for r in rows}
    assert len(scored) == 11 * len(cfg.metric)
    ranking = json.loads((tmp_path / "results.json").read_text())["metrics"]["ranking"]
    assert {r["method"] for r in ranking} == set(metrics["methods"])


# ------------------------------------------------------------------------------------------ the studies, CI-sized
def _explain_study(compose, out: Path, name: str, extra=()):
    from xai_bench.tasks import explain

    metrics = explain.run(compose("explain", [f"experiment={name}", f"debug=studies/{name}", *extra], out))
    methods = metrics["methods"]
    maps = load_file(str(out / "maps.safetensors"))
    for m in methods:  # every method made a finite map that is not constant (LIME's and SHAP's sparse surrogates,
        flat = maps[m].flatten(1)  # fitted to a few samples of a random model, may keep no segment)
        assert torch.isfinite(flat).all() and (m in ("lime", "kernel_shap") or (flat.amax(1) > flat.amin(1)).all()), m
    table = _rows(out / "tables" / "metrics.csv")
    return metrics, maps, table


def test_xai_suite_debug(compose, tmp_path):
    metrics, maps, table = _explain_study(compose, tmp_path, "xai_suite")
    assert len(metrics["methods"]) == 11
    assert {(r["method"], r["metric"]) for r in table} == {
        (m, k) for m in metrics["methods"] for k in ("deletion", "insertion", "sparseness", "complexity")}
    # ForGrad is a low-pass of the very map it filters: same method and baseline, smoother map
    from xai_bench.attribution.forgrad import forgrad_filter

    torch.testing.assert_close(maps["ig_forgrad15"], forgrad_filter(maps["ig_baseline_0"], 4.0), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(maps["ig_baseline_0"], maps["ig_baseline_0.5"])  # the two baselines differ
    for f in ("attributions", "lime_topk", "kernel_shap_topk", "metrics"):
        assert (tmp_path / "figures" / f"{f}.png").is_file()


def test_lime_vs_rise_debug(compose, tmp_path):
    metrics, maps, table = _explain_study(compose, tmp_path, "lime_vs_rise")
    assert metrics["methods"] == ["lime", "rise_grid7", "rise_grid15"]
    assert not torch.allclose(maps["rise_grid7"], maps["rise_grid15"])
    assert len(table) == 3 * 4
    for kind in ("heatmap", "overlay", "isolines", "signed"):
        assert (tmp_path / "figures" / f"attributions_{kind}.png").is_file()


def test_ood_ensemble_debug(compose, tmp_path):
    """Two photos through the three Lite models: the 'still correct?' table's clean rows agree with the ensemble's own
    per-member correctness, and each edit changes at least one member's prediction on one of them."""
    from xai_bench.tasks import evaluate, explain

    metrics = evaluate.run(compose("evaluate", ["experiment=ood_ensemble/evaluate", "debug=studies/ood_ensemble"],
                                   tmp_path / "evaluate"))
    members = metrics["members"]
    assert len(members) == 3 and set(metrics["corruption_images"]) == {"chelsea", "coffee"}
    rows = _rows(tmp_path / "evaluate" / "tables" / "still_correct.csv")
    assert [(r["image"], r["corruption"]) for r in rows] == [
        (i, c) for i in ("chelsea", "coffee") for c in ("clean", "contrast_x5", "blur_r10", "invert")]
    unc = {r["image"]: r for r in _rows(tmp_path / "evaluate" / "tables" / "ensemble_uncertainty.csv")}
    for r in rows:
        if r["corruption"] == "clean":
            for m in members:
                assert r[f"{m}_class"] == unc[r["image"]][f"{m}_class"]
                assert r[f"{m}_correct"] == unc[r["image"]][f"{m}_correct"]
    clean = {(r["image"], m): r[f"{m}_class"] for r in rows if r["corruption"] == "clean" for m in members}
    for c in ("contrast_x5", "blur_r10", "invert"):  # each edit changes some member's prediction on some image
        assert any(r[f"{m}_class"] != clean[r["image"], m] for r in rows if r["corruption"] == c for m in members)
    for m in members:
        assert 0.0 <= metrics[f"still_correct/{m}"] <= 1.0
    assert (tmp_path / "evaluate" / "figures" / "still_correct.png").is_file()
    out = tmp_path / "explain"
    m = explain.run(compose("explain", ["experiment=ood_ensemble/explain", "debug=studies/ood_ensemble"], out))
    assert m["methods"] == ["saliency"]
    sal = load_file(str(out / "maps.safetensors"))["saliency"]
    assert sal.shape[-2:] == (224, 224) and (sal.flatten(1).amax(1) > sal.flatten(1).amin(1)).all()


@pytest.mark.skipif(not any(Path("/usr/share/fonts/truetype/dejavu").glob("*.ttf")),
                    reason="the glyphs dataset needs fonts-dejavu-core (apt-get install fonts-dejavu-core)")
def test_asl_cnn_vs_darknet_debug(compose, tmp_path):
    """train → attack → explain on 8 rendered glyphs per letter, with the small CNN; DarkNet-53 trains a step."""
    from xai_bench.tasks import attack, explain, train

    data = [f"paths.data_dir={tmp_path / 'data'}", "debug=studies/asl_cnn_vs_darknet"]
    for model in ("small_cnn", "darknet53"):
        metrics = train.run(compose("train", ["experiment=asl_cnn_vs_darknet/train", f"model={model}", *data],
                                    tmp_path / model))
        assert (tmp_path / model / "best" / "model.safetensors").is_file() and metrics["objective"] is not None
    meta = json.loads((tmp_path / "small_cnn" / "best" / "model.json").read_text())
    assert meta["class_names"] == list("ABCDEFGHIKLMNOPQRSTUVWXY")
    path = [f"model.path={tmp_path / 'small_cnn' / 'best'}"]
    res = attack.run(compose("attack", ["experiment=asl_cnn_vs_darknet/attack", *data, *path], tmp_path / "attack"))
    sweep = res["eps_sweep"]
    assert [round(r["eps"] * 255) for r in sweep] == [0, 4, 16]
    assert sweep[-1]["accuracy"] <= sweep[0]["accuracy"]
    m = explain.run(compose("explain", ["experiment=asl_cnn_vs_darknet/explain", *data, *path], tmp_path / "explain"))
    assert m["methods"] == ["lime"] and (tmp_path / "explain" / "figures" / "lime_topk.png").is_file()


def test_cifar_vgg_resnet_debug(compose, tmp_path):
    """train (ResNet50) → Grad-CAM for two classes of one image → FGSM at ε = 0.007 with the before/after grid."""
    from xai_bench.tasks import attack, explain, train

    debug = ["debug=studies/cifar_vgg_resnet"]
    train.run(compose("train", ["experiment=cifar_vgg_resnet/train", "model.arch=resnet50", *debug], tmp_path / "t"))
    path = [f"model.path={tmp_path / 't' / 'best'}"]
    explain.run(compose("explain", ["experiment=cifar_vgg_resnet/explain", *debug, *path], tmp_path / "x"))
    maps = load_file(str(tmp_path / "x" / "maps.safetensors"))
    assert maps["targets"].tolist() == [0, 1] and maps["image_index"].tolist() == [0, 0]
    assert not torch.allclose(maps["gradcam"][0], maps["gradcam"][1])  # one map per class, and they differ
    res = attack.run(compose("attack", ["experiment=cifar_vgg_resnet/attack", *debug, *path], tmp_path / "a"))
    assert [r["eps"] for r in res["eps_sweep"]] == [0.0, 0.007] and res["grid_eps"] == 0.007
    assert (tmp_path / "a" / "figures" / "adversarial_grid.png").is_file()
