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
