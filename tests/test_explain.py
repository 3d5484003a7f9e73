"""explain.py end to end on a tiny CNN and synthetic shapes: files, targets, errors, skips, determinism, odd images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import xai_bench  # noqa: F401  (before torchvision)
from conftest import attribution_node
from xai_bench.tasks import explain

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "attribution"
# 4 random-weight small_cnn predictions on 32×32 shapes; the default method set with its expensive kwargs lowered.
DATA = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=4",
        "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false"]
TINY = [*DATA, "attribution.integrated_gradients.kwargs.n_steps=4", "attribution.occlusion.window=8",
        "attribution.occlusion.stride=8"]
# One cheap method instead of the set.
ONE = [*DATA, "attribution=saliency"]


def _run(compose, tmp_path, overrides, name="run"):
    out = tmp_path / name
    metrics = explain.run(compose("explain", overrides, out))
    return metrics, out


def _rows(out):
    with open(out / "tables" / "maps.csv") as f:
        return list(csv.DictReader(f))


def test_default_set_writes_grid_maps_and_results(compose, tmp_path):
    metrics, out = _run(compose, tmp_path, TINY)
    methods = ["saliency", "integrated_gradients", "gradcam", "occlusion"]
    assert metrics["methods"] == methods and metrics["n_images"] == 4 and metrics["n_maps"] == 16
    assert all(metrics[f"seconds/{m}"] >= 0 for m in methods)
    with Image.open(out / "figures" / "attributions.png") as im:
        assert im.size[0] > im.size[1] > 100  # 4 rows × 5 columns
    maps = load_file(str(out / "maps.safetensors"))
    assert set(maps) == {*methods, "images", "targets", "image_index"}
    for m in methods:
        assert maps[m].shape == (4, 1, 32, 32) and torch.isfinite(maps[m]).all() and maps[m].abs().sum() > 0
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "ok" and res["metrics"]["n_maps"] == 16 and res["timings"]["attr/gradcam"] >= 0
    assert "maps.safetensors" in res["files"] and "figures/attributions.png" in res["files"]
    rows = _rows(out)
    assert len(rows) == 16 and {r["method"] for r in rows} == set(methods)
    assert all(r["figure"] == "figures/attributions.png" for r in rows)

    # The saliency column is |∂ logit_pred / ∂x| max over channels of the images stored beside it: the predicted
    # class was routed to the right rows, and the stored images are the exact tensors explained.
    from xai_bench.tasks.setup import build_data, build_model
    from xai_bench.utils import seed_everything

    cfg = compose("explain", TINY, tmp_path / "again")
    seed_everything(int(cfg.seed))
    data = build_data(cfg)
    model = build_model(cfg, data).eval()
    x = maps["images"].clone().requires_grad_(True)
    logits = model(x)
    assert torch.equal(maps["targets"], logits.argmax(1))
    logits.gather(1, maps["targets"][:, None]).sum().backward()
    torch.testing.assert_close(maps["saliency"], x.grad.abs().amax(1, keepdim=True))
    assert [r["prediction"] for r in rows[::4]] == [data.class_names[int(c)] for c in maps["targets"]]


def test_several_targets_per_image_give_one_map_per_image_and_class(compose, tmp_path):
    metrics, out = _run(compose, tmp_path, [*DATA, "attribution=gradcam", "target=[0,3]"])
    maps = load_file(str(out / "maps.safetensors"))
    assert metrics["n_maps"] == 8 and maps["gradcam"].shape == (8, 1, 32, 32)
    assert maps["targets"].tolist() == [0, 3] * 4 and maps["image_index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(maps["images"][0], maps["images"][1])
    for i in range(4):  # the same image explained for two classes: two different maps
        assert not torch.allclose(maps["gradcam"][2 * i], maps["gradcam"][2 * i + 1])
    assert [r["target_name"] for r in _rows(out)][:2] == ["circle", "cross"]


def test_top_k_predicted_targets(compose, tmp_path):
    _, out = _run(compose, tmp_path, [*ONE, "top_k=2"])
    maps = load_file(str(out / "maps.safetensors"))
    rows = _rows(out)
    probs = [float(r["target_prob"]) for r in rows]
    assert maps["saliency"].shape == (8, 1, 32, 32)
    assert all(probs[2 * i] >= probs[2 * i + 1] for i in range(4))  # best class first
    assert all(r["prediction"] == rows[2 * (k // 2)]["target_name"] for k, r in enumerate(rows))


def test_target_label_uses_dataset_labels(compose, tmp_path):
    from xai_bench.data import synthetic_shapes

    _, out = _run(compose, tmp_path, [*ONE, "target=label"])
    test = synthetic_shapes(n_train=0, n_val=0, n_test=4, image_size=32).test
    assert load_file(str(out / "maps.safetensors"))["targets"].tolist() == [test[i]["label"] for i in range(4)]


def test_target_errors(compose, tmp_path):
    with pytest.raises(ValueError, match=r"target ids \[7\].*num_classes=6"):
        _run(compose, tmp_path, [*ONE, "target=[1,7]"], "a")
    with pytest.raises(ValueError, match="target must be 'predicted', 'label'"):
        _run(compose, tmp_path, [*ONE, "target=best"], "b")
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["status"] == "failed" and "target" in res["error"]


def test_unknown_layer_lists_valid_names(compose, tmp_path):
    with pytest.raises(KeyError, match=r"net\.nope.*net\.features"):
        _run(compose, tmp_path, [*DATA, "attribution=gradcam", "attribution.gradcam.layer=net.nope"])


def test_unsupported_method_fails_or_is_skipped(compose, tmp_path):
    # timm's test_efficientnet uses SiLU, for which guided backprop has no rule.
    over = [*DATA, "model=timm", "model.arch=test_efficientnet", "attribution=[saliency,guided_backprop]"]
    with pytest.raises(ValueError, match="SiLU"):
        _run(compose, tmp_path, over, "fail")
    metrics, out = _run(compose, tmp_path, [*over, "skip_unsupported=true"], "skip")
    assert metrics["methods"] == ["saliency"]
    skipped = json.loads((out / "results.json").read_text())["metrics"]["skipped"]
    assert [s["method"] for s in skipped] == ["guided_backprop"] and "SiLU" in skipped[0]["error"]
    assert set(load_file(str(out / "maps.safetensors"))) == {"saliency", "images", "targets", "image_index"}


def test_maps_are_deterministic_and_independent_of_the_method_set(compose, tmp_path):
    # SmoothGrad and GradientSHAP draw noise from the global RNG; each method is reseeded, so GradientSHAP after
    # SmoothGrad equals GradientSHAP alone.
    smooth = ["attribution.smoothgrad.wrapper.nt_samples=2"]
    shap = ["attribution.gradient_shap.kwargs.n_samples=4", "attribution.gradient_shap.baseline_samples=4"]
    both = [*DATA, "attribution=[smoothgrad,gradient_shap]", *smooth, *shap]
    _, a = _run(compose, tmp_path, both, "a")
    _, b = _run(compose, tmp_path, both, "b")
    _, c = _run(compose, tmp_path, [*DATA, "attribution=[gradient_shap]", *shap], "c")
    ma, mb, mc = (load_file(str(p / "maps.safetensors")) for p in (a, b, c))
    assert set(ma) == set(mb) and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert torch.equal(ma["gradient_shap"], mc["gradient_shap"])


def test_figure_kinds_and_per_map_figures(compose, tmp_path):
    _, out = _run(compose, tmp_path, [*ONE, "max_images=2", "figure.kind=all", "figure.per_map=true",
                                      "save_maps=false", "figure.cell_size=1"])
    for k in ("overlay", "heatmap", "isolines", "signed"):
        assert (out / "figures" / f"attributions_{k}.png").is_file()
    per_map = sorted((out / "figures" / "maps").glob("*.png"))
    assert len(per_map) == 2 and not (out / "maps.safetensors").exists()
    assert {r["figure"] for r in _rows(out)} == {str(p.relative_to(out)) for p in per_map}
    with pytest.raises(ValueError, match="figure.kind"):
        _run(compose, tmp_path, [*ONE, "figure.kind=contours"], "bad")


def test_signed_defaults():

    def signed(name, override=None):
        return explain.is_signed(attribution_node(name), override, name)

    assert [signed(n) for n in ("integrated_gradients", "deeplift", "gradient_shap", "input_x_gradient",
                                "occlusion", "lime", "kernel_shap")] == [True] * 7
    assert [signed(n) for n in ("saliency", "smoothgrad", "vargrad", "gradcam", "rise", "scorecam",
                                "guided_backprop")] == [False] * 7
    assert signed("saliency", True) and not signed("integrated_gradients", {"integrated_gradients": False})


def _png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)


def test_images_folder_with_odd_pngs_and_an_undecodable_file(compose, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    _png(folder / "gray.png", rng.integers(0, 256, (40, 50), dtype=np.uint8))
    _png(folder / "rgba.png", rng.integers(0, 256, (30, 30, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 65536, (36, 36), dtype=np.uint16).astype(np.int32), mode="I").convert(
        "I;16").save(folder / "deep16.png")
    with Image.open(folder / "deep16.png") as im:
        assert im.mode.startswith("I")
    over = ["dataset=images", f"dataset.root={folder}", "dataset.num_classes=6", "model=small_cnn", "logger=none",
            "progress=false", "attribution=saliency"]
    metrics, out = _run(compose, tmp_path, over, "ok")
    maps = load_file(str(out / "maps.safetensors"))
    assert metrics["n_images"] == 3 and maps["saliency"].shape == (3, 1, 32, 32)
    assert maps["images"].shape == (3, 3, 32, 32) and 0 <= maps["images"].min() <= maps["images"].max() <= 1
    assert sorted({r["image"] for r in _rows(out)}) == ["deep16.png", "gray.png", "rgba.png"]

    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ValueError, match="broken.png"):  # strict: a bad file fails the run (else skipped, listed)
        _run(compose, tmp_path, [*over, "dataset.strict=true"], "broken")


@pytest.mark.slow
def test_default_config_gradcam_points_at_the_cat_and_the_cup(compose, tmp_path):
    """The real default run (EfficientNet-Lite0, bundled photos, the four default methods) on chelsea and coffee.

    The 224×224 centre crop of chelsea.png is all cat face, so "on the cat" cannot fail there; the cat is located
    in a composite instead: chelsea (left) and coffee (right) side by side on grey, explained for "tabby" (281) and
    "espresso" (967). Measured: 79% of the tabby map's mass lies in the left half, 20% of the espresso map's. On
    coffee alone the Grad-CAM mean over the cup (rows 10–150, columns 20–200) is 2.2× the mean elsewhere (the
    saucer, spoon and table).
    """
    import skimage.data

    metrics, out = _run(compose, tmp_path, ["logger=none", "progress=false", "max_images=2"], "default")
    assert metrics["methods"] == ["saliency", "integrated_gradients", "gradcam", "occlusion"]
    rows = _rows(out)
    assert rows[0]["image"] == "chelsea" and rows[0]["prediction"] in (
        "tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")
    assert rows[4]["image"] == "coffee" and rows[4]["prediction"] == "espresso"
    cam = load_file(str(out / "maps.safetensors"))["gradcam"][1, 0]
    cup = torch.zeros_like(cam, dtype=torch.bool)
    cup[10:150, 20:200] = True
    assert cam[cup].mean() >= 1.5 * cam[~cup].mean()

    def square(a):
        h, w = a.shape[:2]
        s, top, left = min(h, w), (h - min(h, w)) // 2, (w - min(h, w)) // 2
        return Image.fromarray(a[top:top + s, left:left + s]).resize((224, 224), Image.BICUBIC)

    folder = tmp_path / "composite"
    folder.mkdir()
    canvas = Image.new("RGB", (448, 448), (128, 128, 128))
    canvas.paste(square(skimage.data.chelsea()), (0, 112))
    canvas.paste(square(skimage.data.coffee()), (224, 112))
    canvas.save(folder / "cat_and_coffee.png")
    _, out = _run(compose, tmp_path, ["logger=none", "progress=false", "dataset=images", f"dataset.root={folder}",
                                      "attribution=gradcam", "target=[281,967]"], "composite")
    maps = load_file(str(out / "maps.safetensors"))["gradcam"][:, 0]
    left = maps[:, :, :112].sum((1, 2)) / maps.sum((1, 2))
    assert left[0] >= 0.65 and left[1] <= 0.35, left


def test_lime_topk_figure_scale_and_target_output(compose, tmp_path):
    _, out = _run(compose, tmp_path, [*DATA, "max_images=2", "attribution=lime", "attribution.lime.kwargs.n_samples=16",
                                      "attribution.lime.segmentation.algorithm=quickshift", "figure.topk=3",
                                      "figure.scale=per_method", "save_maps=false"])
    assert (out / "figures" / "lime_topk.png").is_file()
    assert {r["attributed_output"] for r in _rows(out)} == {"logit of target"}
    with pytest.raises(ValueError, match="figure.scale"):
        _run(compose, tmp_path, [*ONE, "figure.scale=global"], "bad")


def test_constant_map_warns_with_method_and_setting(caplog):
    from xai_bench.attribution.diagnostics import constant_rows, target_output, warn_constant_maps
    from xai_bench.attribution.runner import build_attribution
    from xai_bench.models import create_model

    model = create_model("small_cnn", num_classes=3, in_chans=3, input_size=32)
    occ = build_attribution({**attribution_node(CONF_DIR / "occlusion.yaml"), "window": 64}, model)
    maps = torch.ones(2, 1, 32, 32)
    maps[1, 0, 0, 0] = 2.0
    assert constant_rows(maps) == [0] and constant_rows(torch.zeros(1, 1, 4, 4)) == [0]
    with caplog.at_level("WARNING"):
        assert warn_constant_maps(occ, maps, ["a", "b"]) == [0]
    assert "occlusion" in caplog.text and "window (64×64" in caplog.text and "32×32" in caplog.text
    assert target_output(occ) == "logit"
    rise = build_attribution(attribution_node(CONF_DIR / "rise.yaml"), model)
    assert target_output(rise) == "probability"
