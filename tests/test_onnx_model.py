"""model=onnx: an ONNX round trip of zoo models gives the same logits and saliency maps; unsupported ops refused."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import xai_bench  # noqa: F401  (before torchvision)
from conftest import attribution_node
from xai_bench.attribution.runner import build_attribution
from xai_bench.models import ImageClassifier, create_model
from xai_bench.tasks.setup import model_from_node

onnx = pytest.importorskip("onnx", reason="pip install 'xai-bench[onnx]'")
pytest.importorskip("onnx2torch", reason="pip install 'xai-bench[onnx]'")


def _export(model: torch.nn.Module, path, size: int) -> None:
    # The TorchScript exporter (dynamo=False) works offline with torch 2.13 and no onnxscript; opset 17 is within
    # what onnx2torch converts (its Constant converter stops at opset 18).
    x = torch.rand(2, model.input_size[0], size, size)
    torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})


def _zoo(name: str) -> tuple[ImageClassifier, int]:
    torch.manual_seed(0)
    if name == "small_cnn":
        return create_model("small_cnn", num_classes=4, in_chans=3, input_size=32).eval(), 32
    return create_model("torchvision", arch="resnet18", num_classes=5, input_size=64).eval(), 64


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_onnx_round_trip_same_logits_and_saliency(name, compose, tmp_path):
    model, size = _zoo(name)
    path = tmp_path / f"{name}.onnx"
    _export(model, path, size)
    cfg = compose("explain", ["model=onnx", f"model.path={path}", "model.num_classes=null"], tmp_path)
    loaded = model_from_node(cfg.model, warn_random=False)
    assert loaded.num_classes == model.num_classes and loaded.input_size == (3, size, size)
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), loaded(x)
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    t = a.argmax(1)
    for method in ("saliency", "integrated_gradients", "gradcam"):
        node = OmegaConf.merge(attribution_node(method), {"kwargs": {"n_steps": 8}} if method ==
                               "integrated_gradients" else {})
        if method == "gradcam":
            node.layer = None  # each model's own default layer: the last spatial activation
        # Grad-CAM: the zoo model's default layer (small_cnn's last ReLU, resnet18's layer4, whose output is its
        # last ReLU's) and the one found in the graph (its last spatial activation) are the same tensor
        m1 = build_attribution(node, model).attribute(x, t)
        m2 = build_attribution(node, loaded).attribute(x, t)
        # The exported graph folds batch norms into the convolutions: logits agree to ~1e-6, but a path point of IG
        # that lands next to a ReLU kink can take the other side's gradient, so IG is compared in L1 (measured
        # 3.6e-3 of ‖map‖₁ on resnet18, 1.5e-7 on small_cnn); saliency and Grad-CAM agree pixel by pixel (measured
        # ≤ 1.3e-6 of the map's maximum; tolerance 1e-3).
        rel_l1 = float((m2 - m1).abs().sum() / m1.abs().sum().clamp_min(1e-12))
        rel_max = float((m2 - m1).abs().amax() / m1.abs().amax().clamp_min(1e-12))
        assert (rel_l1 < 1e-2) if method == "integrated_gradients" else (rel_max < 1e-3), (method, rel_l1, rel_max)


def test_onnx_model_runs_in_explain(compose, tmp_path):
    from xai_bench.tasks import explain

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=6, in_chans=3, input_size=32).eval()
    path = tmp_path / "net.onnx"
    _export(model, path, 32)
    cfg = compose("explain", ["dataset=synthetic_shapes", "dataset.n_train=8", "dataset.n_val=0", "dataset.n_test=2",
                              "dataset.image_size=32", "model=onnx", f"model.path={path}", "logger=none",
                              "progress=false", "attribution=[saliency,gradcam]"], tmp_path / "run")
    metrics = explain.run(cfg)
    assert metrics["n_maps"] == 4 and metrics["methods"] == ["saliency", "gradcam"]


def test_unsupported_operator_is_refused_by_name(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    nodes = [helper.make_node("FancyPool", ["x"], ["p"], domain="com.example"),
             helper.make_node("Flatten", ["p"], ["y"])]
    proto = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match=r"custom\.onnx.*FancyPool \(com\.example, opset 1\)"):
        create_model("onnx", path=str(path))
    with pytest.raises(ValueError, match="no such ONNX file"):
        create_model("onnx", path=str(tmp_path / "missing.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        create_model("onnx", path=str(tmp_path / "junk.onnx"))


def test_channels_last_graph_and_shape_checks(tmp_path):
    # A Keras-style graph (N×H×W×C input) gets a transpose in front; a wrong dataset size is refused by name.
    class NHWC(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = create_model("small_cnn", num_classes=3, in_chans=3, input_size=16).eval()

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    torch.manual_seed(0)
    net = NHWC().eval()
    path = tmp_path / "nhwc.onnx"
    torch.onnx.export(net, (torch.rand(1, 16, 16, 3),), str(path), dynamo=False, opset_version=17)
    loaded = create_model("onnx", path=str(path))
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x.permute(0, 2, 3, 1)), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="dataset.image_size=16"):
        create_model("onnx", path=str(path), input_size=32)
