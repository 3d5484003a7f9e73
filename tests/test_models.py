import json

import pytest
import torch

from xai_bench.models import ImageClassifier, create_model, list_models, load_checkpoint, save_checkpoint


def test_registry_lists_and_errors():
    assert {"small_cnn", "darknet53", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(
        list_models())
    assert list_models("efficientnet_lite*") == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    with pytest.raises(KeyError, match="Did you mean: small_cnn"):
        create_model("smal_cnn", num_classes=3)
    with pytest.raises(KeyError, match="resnet18"):
        create_model("timm/resnet181", num_classes=3)
    with pytest.raises(KeyError, match="resnet18"):
        create_model("torchvision/resnet181", num_classes=3)


@pytest.mark.parametrize("name,kwargs", [
    ("small_cnn", dict(num_classes=4, in_chans=1, input_size=28)),
    ("darknet53", dict(num_classes=4, in_chans=3, input_size=32)),
    ("timm/resnet18", dict(num_classes=4, in_chans=1, input_size=32)),
    ("torchvision/mobilenet_v2", dict(num_classes=4, input_size=32)),
])
def test_models_take_unit_images_and_expose_contract(name, kwargs):
    m = create_model(name, **kwargs).eval()
    c, h, w = m.input_size
    assert (c, h) == (kwargs.get("in_chans", 3), kwargs["input_size"])
    x = torch.rand(2, c, h, w)
    out = m(x)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    assert len(m.class_names) == 4 and m.mean.shape == (1, c, 1, 1)
    layer = m.get_layer()  # default Grad-CAM layer exists
    assert isinstance(layer, torch.nn.Module)


def test_normalisation_happens_inside():
    net = torch.nn.Identity()
    m = ImageClassifier(net, num_classes=3, input_size=(3, 1, 1), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(m(x).flatten(), torch.tensor([-2.0, 0.0, 2.0]))


def test_unknown_layer_lists_valid_names(tiny_classifier):
    with pytest.raises(KeyError, match="net.features.block3.0"):
        tiny_classifier.get_layer("net.features.blok3")


def test_efficientnet_lite_offline_pretrained_on_real_photo():
    from xai_bench.data import samples
    from xai_bench.tasks.setup import prepare_for_model

    m = create_model("efficientnet_lite0", pretrained=True).eval()
    data = prepare_for_model(samples(names=["chelsea", "coffee"]), m)
    x = torch.stack([data.test[i]["image"] for i in range(2)])
    with torch.no_grad():
        pred = m(x).argmax(1).tolist()
    assert 281 <= pred[0] <= 285  # a domestic cat class
    assert pred[1] == 967  # espresso
    assert m.class_names[967] == "espresso"


def test_pretrained_without_network_gives_clear_error():
    with pytest.raises(RuntimeError, match="offline"):
        create_model("torchvision/resnet18", pretrained=True)


def test_no_pretrained_weights_for_small_cnn():
    with pytest.raises(ValueError, match="pretrained=false"):
        create_model("small_cnn", num_classes=3, pretrained=True)


def test_checkpoint_roundtrip(tmp_path, tiny_classifier):
    save_checkpoint(tiny_classifier, tmp_path / "ckpt")
    spec = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert spec["name"] == "small_cnn" and spec["input_size"] == [3, 32, 32]
    loaded = load_checkpoint(tmp_path / "ckpt").eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), tiny_classifier(x))
    assert loaded.default_layer == tiny_classifier.default_layer


def test_checkpoint_errors(tmp_path, tiny_classifier):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint(tmp_path / "missing")
    save_checkpoint(tiny_classifier, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="model.json"):
        load_checkpoint(tmp_path / "ckpt")


def test_checkpoint_is_never_unpickled(tmp_path, tiny_classifier):
    """A pickle that runs code must not be loadable as weights."""
    save_checkpoint(tiny_classifier, tmp_path / "ckpt")
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    (tmp_path / "ckpt" / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "ckpt")


# One small architecture per torchvision family of the default-layer table (convnext: a residual stream with no
# activation before pooling, so "post-activation" does not apply; it is checked for shape only).
_TORCHVISION_FAMILY_ARCHS = {
    "resnet": "resnet18", "resnext": "resnext50_32x4d", "wide_resnet": "wide_resnet50_2", "regnet": "regnet_y_400mf",
    "vgg": "vgg11", "alexnet": "alexnet", "densenet": "densenet121", "mobilenet": "mobilenet_v3_small",
    "efficientnet": "efficientnet_b0", "convnext": "convnext_tiny", "inception": "inception_v3",
    "googlenet": "googlenet", "squeezenet": "squeezenet1_0", "shufflenet": "shufflenet_v2_x0_5",
    "mnasnet": "mnasnet0_5",
}
_ZOO_CASES = [
    ("small_cnn", dict(num_classes=4, input_size=32)),
    ("darknet53", dict(num_classes=4, input_size=64)),
    *[(name, dict(pretrained=False, num_classes=4, input_size=64)) for name in
      ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")],
    *[(f"timm/{a}", dict(num_classes=4, input_size=64)) for a in
      ("resnet18", "efficientnet_b0", "mobilenetv3_small_100", "mnasnet_100", "convnext_atto")],
    *[(f"torchvision/{a}", dict(num_classes=4, input_size={"inception_v3": 160, "alexnet": 128}.get(a, 64)))
      for a in (*_TORCHVISION_FAMILY_ARCHS.values(), "mobilenet_v2")],
]


def test_every_torchvision_family_with_a_default_layer_is_checked():
    from xai_bench.models.zoo import _TORCHVISION_DEFAULT_LAYERS

    assert set(_TORCHVISION_FAMILY_ARCHS) == set(_TORCHVISION_DEFAULT_LAYERS)


@pytest.mark.parametrize("name,kwargs", _ZOO_CASES, ids=[c[0] for c in _ZOO_CASES])
def test_default_layer_is_the_last_spatial_map_after_its_activation(name, kwargs):
    """Grad-CAM, Grad-CAM++, Score-CAM and Eigen-CAM share the default layer: it must output the activated map the
    classifier pools (EfficientNet-Lite's default was `_conv_head`, before BN and ReLU6: Eigen-CAM lit the border).

    BatchNorm is an identity at initialisation, which would hide a pre-activation layer, so BN biases and running
    means are randomised first: a map taken before the activation then has about as much negative as positive mass.
    """
    torch.manual_seed(0)
    m = create_model(name, **kwargs).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.bias.data.normal_()
            mod.running_mean.data.normal_()
    layer = m.get_layer()
    seen = {}
    handle = layer.register_forward_hook(lambda mod, args, out: seen.setdefault("out", out))
    try:
        with torch.no_grad():
            m(torch.rand(2, *m.input_size))
    finally:
        handle.remove()
    out = seen["out"]
    assert out.dim() == 4 and out.shape[0] == 2 and min(out.shape[-2:]) >= 2, (m.default_layer, tuple(out.shape))
    if "convnext" in name:
        return
    acts = {type(mod) for mod in m.modules() if type(mod).__module__.startswith("torch.nn.modules.activation")}
    if acts <= {torch.nn.ReLU, torch.nn.ReLU6}:
        assert out.min() >= 0, (m.default_layer, float(out.min()))
    elif torch.nn.LeakyReLU in acts:  # DarkNet: negatives are 0.1× and residual sums of them
        negative, positive = (-out.clamp(max=0)).sum(), out.clamp(min=0).sum()
        assert negative <= 0.1 * positive, (m.default_layer, float(negative / positive))
    else:  # SiLU ≥ -0.279, Hardswish ≥ -0.375, GELU ≥ -0.17; a map before them reaches about -3
        assert out.min() >= -0.376, (m.default_layer, float(out.min()))


def test_efficientnet_lite_default_layer_is_the_activated_head_and_keeps_the_state_dict():
    from efficientnet_lite_pytorch import EfficientNet

    m = create_model("efficientnet_lite0", pretrained=False).eval()
    assert m.default_layer == "net._avg_pooling.head_act"
    assert m.net.state_dict().keys() == EfficientNet.from_name("efficientnet-lite0").state_dict().keys()
    x = torch.rand(1, 3, 224, 224)
    seen = {}
    handle = m.get_layer().register_forward_hook(lambda mod, args, out: seen.setdefault("out", out))
    with torch.no_grad():
        m(x)
        expected = m.net.extract_features((x - m.mean) / m.std)
    handle.remove()
    torch.testing.assert_close(seen["out"], expected)
