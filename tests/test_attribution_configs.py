"""Contract tests over every conf/attribution/*.yaml (DomainBed style) plus analytic checks of the runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import xai_bench  # noqa: F401  (before torchvision)
from conftest import attribution_node, untrained_l2x
from xai_bench.attribution.baselines import make_baseline
from xai_bench.attribution.runner import build_attribution, expand_targets, reduce_channels, to_display
from xai_bench.attribution.superpixels import superpixel_masks
from xai_bench.models.base import ImageClassifier
from xai_bench.utils import seed_everything

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "attribution"
YAMLS = sorted(CONF_DIR.glob("*.yaml"))
# Cheap settings for tests: only keys a config already has are lowered.
CHEAP_KWARGS = {"n_steps": 4, "n_samples": 8, "n_masks": 24, "internal_batch_size": 16, "batch_size": 32}
CHEAP_WRAPPER = {"nt_samples": 3, "nt_samples_batch_size": 3}


def load(path: Path, **top) -> OmegaConf:
    cfg = attribution_node(path)
    for key, value in CHEAP_KWARGS.items():
        if cfg.get("kwargs") and key in cfg.kwargs:
            cfg.kwargs[key] = value if cfg.kwargs[key] is None else min(cfg.kwargs[key], value)  # null: auto
    if cfg.get("wrapper"):
        cfg.wrapper = OmegaConf.merge(cfg.wrapper, CHEAP_WRAPPER)
    return OmegaConf.merge(cfg, top)


def tiny_cnn(num_classes: int = 3) -> ImageClassifier:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )
    return ImageClassifier(net, num_classes=num_classes, input_size=(3, 32, 32), default_layer="net.3")


def images(n: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g)


def run(cfg, model, x, target, seed: int = 0) -> torch.Tensor:
    seed_everything(seed)  # GradientSHAP also draws from NumPy's global RNG
    model.train()
    # baseline: data (Expected Gradients, DeepLIFT-SHAP) takes a background set; explain.py draws it from the
    # training split, here a fixed set of images of the same shape
    background = images(6, x.shape[-1]) if cfg.get("baseline") == "data" else None
    if str(cfg.method.get("_target_")).endswith(".L2X") and not cfg.method.get("path"):
        cfg.method.path = untrained_l2x(x.shape[1], x.shape[-1])  # the contract, not the training (test_l2x.py)
    explainer = build_attribution(cfg, model, background=background)
    assert model.training  # building leaves the caller's mode alone (it used to switch the model to eval for good)
    # attribute() must evaluate in eval mode and then restore the caller's mode
    return explainer.attribute(x, target)


def no_hooks(model: nn.Module) -> bool:
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())


def check_contract(cfg, model, x, target) -> None:
    a = run(cfg, model, x, target)
    b = run(cfg, model, x, target)
    assert a.shape[0] == x.shape[0] and a.shape[1] in (1, x.shape[1]) and a.shape[2:] == x.shape[2:], a.shape
    assert a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b), "not deterministic under seed_everything"
    assert model.training
    assert no_hooks(model)


# --------------------------------------------------------------------------------------------------------- contracts
def test_there_is_a_config_per_method():
    names = {p.stem for p in YAMLS}
    expected = {"saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "vargrad", "guided_backprop",
                "deconvolution", "guided_gradcam", "gradcam", "gradcam_plus_plus", "scorecam", "eigencam",
                "occlusion", "feature_ablation", "lime", "kernel_shap", "gradient_shap", "deeplift", "rise",
                "saliency_forgrad"}
    assert expected <= names
    for p in YAMLS:
        cfg = attribution_node(p)
        assert cfg.name == p.stem and cfg.method._partial_ is True


def tiny_vit(num_classes: int = 3) -> ImageClassifier:
    from xai_bench.models import create_model

    torch.manual_seed(0)
    return create_model("vit_tiny_shapes", num_classes=num_classes, input_size=16)


def requirement(cfg) -> str | None:
    """What a method declares it needs of the model (``requires = "vit"`` on attention methods), else None."""
    from hydra.utils import get_class

    return getattr(get_class(cfg.method._target_), "requires", None)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_config_contract_tiny_cnn(path):
    cfg = load(path)
    if requirement(cfg) == "vit":
        # a ViT-only method refuses a CNN when built, naming what it needs, and keeps the contract on a ViT
        from xai_bench.errors import ConfigError

        with pytest.raises(ConfigError, match="vit_tiny_shapes"):
            build_attribution(cfg, tiny_cnn())
        check_contract(cfg, tiny_vit(), images(2, 16), torch.tensor([0, 2]))
        return
    assert requirement(cfg) is None, f"unknown model requirement {requirement(cfg)!r}: give the contract test a model"
    check_contract(cfg, tiny_cnn(), images(), torch.tensor([0, 2]))


@pytest.mark.parametrize("name", ["gradcam", "gradcam_plus_plus", "scorecam", "eigencam", "ablationcam"])
def test_cam_contract_on_vit_tokens(name):
    """The CAMs on the template explain a ViT through its tokens → grid reshape_transform, with the same YAML."""
    check_contract(load(CONF_DIR / f"{name}.yaml"), tiny_vit(), images(2, 16), torch.tensor([1, 2]))


@pytest.mark.slow
@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_config_contract_resnet18(path):
    import torchvision

    cfg = load(path)
    if requirement(cfg) == "vit":
        pytest.skip("ViT-only method: its contract runs on a ViT in test_config_contract_tiny_cnn")
    if cfg.get("window") is not None:
        cfg.window, cfg.stride = 32, 32
    if cfg.name == "scorecam":
        cfg.layer = "net.layer1"  # one forward pass per channel: 64 here instead of layer4's 512
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    model = ImageClassifier(net, num_classes=10, input_size=(3, 64, 64), default_layer="net.layer4")
    check_contract(cfg, model, images(2, 64), torch.tensor([3, 7]))


# --------------------------------------------------------------------------------------------------- analytic checks
@pytest.mark.parametrize("baseline", ["zeros", "constant", "blurred"])
def test_integrated_gradients_completeness(baseline):
    model = tiny_cnn()
    x, t = images(), torch.tensor([2, 1])  # classes with |f(x) − f(0)| ≫ 0 for this seed
    cfg = OmegaConf.merge(attribution_node(CONF_DIR / "integrated_gradients.yaml"),
                          {"baseline": baseline, "baseline_value": 0.5, "baseline_sigma": 3.0,
                           "kwargs": {"n_steps": 256, "internal_batch_size": 512}})
    maps = build_attribution(cfg, model).attribute(x, t)
    ref = make_baseline(baseline, x, value=0.5, sigma=3.0)
    with torch.no_grad():
        delta = model(x).gather(1, t[:, None])[:, 0] - model(ref).gather(1, t[:, None])[:, 0]
    total = maps.flatten(1).sum(1)
    assert ((total - delta).abs() <= 0.01 * delta.abs() + 1e-6).all(), (total, delta)


def test_saliency_of_linear_model_is_its_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))  # a plain nn.Module works too
    cfg = OmegaConf.merge(attribution_node(CONF_DIR / "saliency.yaml"),
                          {"kwargs": {"abs": False}, "channel_reduction": None})
    x, t = images(3, 8), torch.tensor([0, 3, 1])
    maps = build_attribution(cfg, model).attribute(x, t)
    expected = model[1].weight[t].view(3, 3, 8, 8)
    assert maps.shape == (3, 3, 8, 8)
    assert torch.allclose(maps, expected, atol=1e-6)


def test_deeplift_on_reused_inplace_relu_sums_to_delta():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)  # reused, like torchvision's BasicBlock
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = self.relu(self.c1(x))
            x = self.relu(self.c2(x))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    model = ImageClassifier(Block(), num_classes=3, input_size=(3, 16, 16))
    x, t = images(2, 16), torch.tensor([0, 2])
    maps = build_attribution(attribution_node(CONF_DIR / "deeplift.yaml"), model).attribute(x, t)
    with torch.no_grad():
        delta = model(x).gather(1, t[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    assert torch.allclose(maps.flatten(1).sum(1), delta, rtol=1e-3, atol=1e-5)
    assert model.net.relu.inplace and no_hooks(model)  # the user's model is left as it was


def test_several_targets_per_image():
    model, x = tiny_cnn(), images()
    cfg = attribution_node(CONF_DIR / "saliency.yaml")
    explainer = build_attribution(cfg, model)
    targets = torch.tensor([[0, 1], [2, 0]])
    maps = explainer.attribute(x, targets)
    assert maps.shape == (2, 2, 1, 32, 32)
    assert not torch.allclose(maps[:, 0], maps[:, 1])
    assert torch.allclose(maps[:, 1], explainer.attribute(x, targets[:, 1]))
    xs, ts = expand_targets(x, targets)
    assert xs.shape[0] == 4 and ts.tolist() == [0, 1, 2, 0] and torch.equal(xs[1], x[0])


def test_target_none_explains_the_prediction():
    model, x = tiny_cnn(), images()
    explainer = build_attribution(attribution_node(CONF_DIR / "saliency.yaml"), model)
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert torch.equal(explainer.attribute(x, None), explainer.attribute(x, pred))


def test_batching_does_not_change_results():
    model, x = tiny_cnn(), images(3)
    cfg = load(CONF_DIR / "feature_ablation.yaml")
    explainer = build_attribution(cfg, model)
    t = torch.tensor([0, 1, 2])
    assert torch.allclose(explainer.attribute(x, t, batch_size=1), explainer.attribute(x, t), atol=1e-6)


def test_bad_target_names_num_classes():
    explainer = build_attribution(attribution_node(CONF_DIR / "saliency.yaml"), tiny_cnn())
    with pytest.raises(ValueError, match=r"target id 5.*num_classes=3"):
        explainer.attribute(images(), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="num_classes"):
        explainer.attribute(images(), -1)


def test_unknown_layer_lists_valid_names():
    cfg = OmegaConf.merge(attribution_node(CONF_DIR / "gradcam.yaml"), {"layer": "net.9"})
    with pytest.raises(KeyError, match=r"net\.3"):
        build_attribution(cfg, tiny_cnn())


def test_layer_method_without_default_layer():
    model = tiny_cnn()
    model.default_layer = None
    with pytest.raises(ValueError, match="default_layer"):
        build_attribution(attribution_node(CONF_DIR / "gradcam.yaml"), model)


def test_bad_config_keys_are_errors():
    cfg = attribution_node(CONF_DIR / "saliency.yaml")
    with pytest.raises(ValueError, match="unknown attribution config key"):
        build_attribution(OmegaConf.merge(cfg, {"n_stepz": 3}), tiny_cnn())
    with pytest.raises(ValueError, match="baselines"):
        build_attribution(OmegaConf.merge(cfg, {"baseline": "zeros"}), tiny_cnn())
    with pytest.raises(ValueError, match="baseline kind 'grey'"):
        build_attribution(OmegaConf.merge(attribution_node(CONF_DIR / "integrated_gradients.yaml"),
                                          {"baseline": "grey"}), tiny_cnn())
    with pytest.raises(ValueError, match="_partial_"):
        build_attribution(OmegaConf.merge(cfg, {"method": {"_partial_": False}}), tiny_cnn())
    with pytest.raises(ValueError, match="channel_reduction"):
        build_attribution(OmegaConf.merge(cfg, {"channel_reduction": "median"}), tiny_cnn())


# ------------------------------------------------------------------------------------------ baselines / superpixels
def test_single_segment_is_a_clear_error():
    cfg = OmegaConf.merge(load(CONF_DIR / "kernel_shap.yaml"), {"segmentation": {"slic": {"n_segments": 1}}})
    with pytest.raises(ValueError, match="single segment"):
        build_attribution(cfg, tiny_cnn()).attribute(images(), 0)


def test_baselines():
    x = images()
    assert torch.equal(make_baseline("zeros", x), torch.zeros_like(x))
    assert torch.equal(make_baseline("constant", x, value=0.5), torch.full_like(x, 0.5))
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(make_baseline("blurred", flat, sigma=2.0), flat, atol=1e-6)
    blurred = make_baseline("blurred", x, sigma=2.0)
    assert blurred.shape == x.shape and blurred.var() < x.var()
    u1, u2 = make_baseline("uniform", x, seed=3), make_baseline("uniform", x, seed=3)
    assert torch.equal(u1, u2) and 0 <= u1.min() and u1.max() < 1
    assert not torch.equal(u1, make_baseline("uniform", x, seed=4))
    with pytest.raises(ValueError, match="zeros"):
        make_baseline("gray", x)


@pytest.mark.parametrize("algorithm,params", [("slic", {"n_segments": 10}),
                                              ("quickshift", {"kernel_size": 2, "max_dist": 20}),
                                              ("grid", {"patch_size": 8})])
def test_superpixel_masks(algorithm, params):
    x = F.interpolate(images(2, 4), size=32, mode="bilinear")  # smooth colour blobs, as in a photo
    masks = superpixel_masks(x, algorithm, **params)
    assert masks.shape == (2, 1, 32, 32) and masks.dtype == torch.long
    for m in masks:
        ids = m.unique()
        assert torch.equal(ids, torch.arange(len(ids)))  # contiguous 0..K-1
        assert len(ids) > 1
    if algorithm == "grid":
        assert masks.max() == 15


def test_reduce_and_display():
    maps = torch.tensor([[-1.0, 2.0], [3.0, -4.0]]).view(1, 2, 1, 2)
    assert reduce_channels(maps, "sum").flatten().tolist() == [2.0, -2.0]
    assert reduce_channels(maps, "abs_sum").flatten().tolist() == [4.0, 6.0]
    assert reduce_channels(maps, "max_abs").flatten().tolist() == [3.0, 4.0]
    assert reduce_channels(maps, None) is maps
    signed = to_display(maps, signed=True)
    assert signed.flatten().tolist() == [1.0, -1.0]
    unsigned = to_display(maps, signed=False)
    assert unsigned.flatten().tolist() == pytest.approx([4 / 6, 1.0])


# ------------------------------------------------------------------------------------------ segmentation settings
@pytest.mark.parametrize("algorithm", ["slic", "quickshift", "grid"])
def test_switching_segmentation_algorithm_keeps_settings_apart(algorithm):
    # The YAML's SLIC settings stay in segmentation.slic: switching algorithm never passes them to quickshift
    # (which used to raise scikit-image's bare TypeError for `compactness`).
    from xai_bench.attribution.superpixels import segment

    cfg = load(CONF_DIR / "lime.yaml", segmentation={"algorithm": algorithm})
    x = F.interpolate(images(2, 4), size=32, mode="bilinear")
    maps = build_attribution(cfg, tiny_cnn()).attribute(x, 0)
    assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all()
    assert all(m.max() >= 2 for m in segment(x, cfg.segmentation))  # several segments on 32×32: sized defaults


def test_quickshift_defaults_are_sized_to_the_image():
    from xai_bench.attribution.superpixels import segment, sized_params

    assert sized_params("quickshift", {"kernel_size": None, "max_dist": None}, 224, 224) == {"kernel_size": 4.0,
                                                                                           "max_dist": 200.0}
    small = sized_params("quickshift", {"kernel_size": None, "max_dist": None}, 32, 32)
    assert small["kernel_size"] == 1.0 and small["max_dist"] == pytest.approx(200 * 32 / 224)
    x = F.interpolate(images(2, 4), size=32, mode="bilinear")
    masks = segment(x, {"algorithm": "quickshift"})
    assert all(m.max() >= 2 for m in masks)  # LIME's 224² settings (4 / 200) give one segment here


@pytest.mark.parametrize("segmentation,match", [
    ({"algorithm": "quickshift", "quickshift": {"compactness": 10}}, r"quickshift does not take \['compactness'\]"),
    ({"algorithm": "slic", "slic": {"n_segment": 10}}, "valid keys: n_segments"),
    ({"algorithm": "slic", "n_segments": 10}, "outside an algorithm's node"),
    ({"algorithm": "felzenszwalb"}, "superpixel algorithm"),
])
def test_bad_segmentation_settings_fail_when_built(segmentation, match):
    cfg = OmegaConf.merge(load(CONF_DIR / "lime.yaml"), {"segmentation": None})
    cfg.segmentation = segmentation
    with pytest.raises(ValueError, match=match):
        build_attribution(OmegaConf.to_container(cfg), tiny_cnn())
