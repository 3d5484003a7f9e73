"""``model=onnx model.path=<file.onnx>``: a model from another framework (TensorFlow/Keras via ``tf2onnx``, JAX,
scikit-learn, PyTorch itself) as a differentiable torch module, so it can be attacked and explained with gradients.

The file is converted with ``onnx2torch`` (each ONNX node becomes a torch module in a ``torch.fx`` graph).
Loading executes no code from the file: an ONNX model is a protobuf graph of named operators from the ONNX standard,
read by ``onnx.load``; each operator is mapped to a torch implementation that ships with ``onnx2torch``. Operators
it has no converter for — custom domains (``com.microsoft``, TensorFlow custom ops), or standard operators at an
opset newer than its converters (e.g. ``Constant``-19 from ``opset_version`` ≥ 19) — are refused before conversion,
with the file and the list of operator types; :func:`supported_operators` lists what works (about 260 operator
versions: convolutions, pooling, normalisation, activations, Gemm/MatMul, reshapes, Resize, attention building
blocks …). Export with ``opset_version`` ≤ 18 (``torch.onnx.export(..., dynamo=False, opset_version=17)``,
``python -m tf2onnx.convert --opset 17``).

Pixels: the graph is fed ``(x − mean) / std`` of the [0, 1] images; ``mean``/``std`` default to 0 / 1 (a graph that
takes [0, 1] pixels, like one exported from an xai-bench model); set ``model.mean``/``model.std`` for a graph that
expects normalised input. A graph with N×H×W×C input (Keras' channels-last layout) gets a transpose in front of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.errors import CheckpointError, ConfigError
from xai_bench.models.base import ImageClassifier
from xai_bench.models.zoo import MODELS, _meta

__all__ = ["onnx_model", "supported_operators", "unsupported_operators"]

INSTALL = "pip install 'xai-bench[onnx]' (onnx, onnx2torch)"
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.Tanh)


def _libs() -> tuple[Any, Any]:
    try:
        import onnx
        import onnx2torch
    except ImportError as err:
        raise ConfigError(f"model=onnx needs the onnx and onnx2torch packages: {INSTALL}") from err
    return onnx, onnx2torch


def supported_operators() -> list[str]:
    """``domain:OpType-version`` of every operator ``onnx2torch`` converts (``domain`` empty for standard ONNX)."""
    _libs()
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY

    return sorted(f"{d.domain}:{d.operation_type}-{d.version}" for d in _CONVERTER_REGISTRY)


def unsupported_operators(model: Any) -> list[str]:
    """Operators of an ``onnx.ModelProto`` that ``onnx2torch`` cannot convert, as ``OpType (domain, opset N)``."""
    _libs()
    from onnx2torch.node_converters.registry import get_converter

    opsets = {imp.domain or "": imp.version for imp in model.opset_import}
    missing: list[str] = []
    for node in model.graph.node:
        domain = node.domain or ""
        if domain == "ai.onnx":
            domain = ""
        version = opsets.get(domain, opsets.get("", 1))
        try:
            get_converter(node.op_type, version, domain)
        except NotImplementedError:
            label = f"{node.op_type} ({domain or 'ai.onnx'}, opset {version})"
            if label not in missing:
                missing.append(label)
    return missing


class _ChannelsLast(nn.Module):
    """N×C×H×W → N×H×W×C in front of a channels-last graph."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.permute(0, 2, 3, 1))


def _inline_constant_identities(proto: Any) -> None:
    """Replace ``Identity`` nodes that copy an initializer by a copy of it under the output's name.

    PyTorch's exporter shares equal constants (e.g. the zero biases of batch norms folded into convolutions) through
    ``Identity`` nodes; onnx2torch reads convolution weights only from initializers (what onnx-simplifier does too).
    """
    inits = {t.name: t for t in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in inits:
            copy = type(inits[node.input[0]])()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            proto.graph.initializer.append(copy)
            inits[copy.name] = copy
        else:
            keep.append(node)
    if len(keep) != len(proto.graph.node):
        del proto.graph.node[:]
        proto.graph.node.extend(keep)


def _input_shape(model: Any, path: Path) -> list[int | None]:
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        raise CheckpointError(f"{path}: model=onnx takes a graph with one image input, this one has "
                              f"{[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    if len(shape) != 4:
        raise CheckpointError(f"{path}: the graph's input {inputs[0].name!r} has {len(shape)} dimensions; model=onnx "
                              f"takes N×C×H×W (or N×H×W×C) images")
    return shape


def _default_layer(net: nn.Module, x: Tensor) -> str | None:
    """The last activation module with a spatial (4-D) output, else the last module with one (Grad-CAM's layer)."""
    seen: list[tuple[str, nn.Module]] = []
    handles = [m.register_forward_hook(lambda mod, i, o, name=name: seen.append((name, mod))
                                       if isinstance(o, Tensor) and o.dim() == 4 and min(o.shape[-2:]) > 1 else None)
               for name, m in net.named_modules() if name and not list(m.children())]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    acts = [name for name, m in seen if isinstance(m, _ACTIVATIONS)]
    names = acts or [name for name, _ in seen]
    return names[-1] if names else None


@MODELS.register("onnx")
def onnx_model(path: str, num_classes: int | None = None, in_chans: int | None = None,
               input_size: int | None = None, **meta: Any) -> ImageClassifier:
    """An :class:`ImageClassifier` around the ONNX graph in ``path`` (see the module docstring).

    ``num_classes``, ``in_chans`` and ``input_size`` are read from the graph; values given (e.g. by the dataset)
    must agree with it. Raises :class:`~xai_bench.errors.CheckpointError` naming the file for a missing/unreadable
    file, unsupported operators, or a shape that disagrees.
    """
    onnx, onnx2torch = _libs()
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"model.path={path}: no such ONNX file")
    try:
        proto = onnx.load(str(file))
        onnx.checker.check_model(proto)
    except Exception as err:  # protobuf / checker errors have many types
        raise CheckpointError(f"model.path={path} is not a valid ONNX model ({type(err).__name__}: {err})") from err
    missing = unsupported_operators(proto)
    if missing:
        raise CheckpointError(f"model.path={path}: onnx2torch cannot convert operator(s) {missing}; re-export with "
                              f"standard operators at opset <= 18, or replace them (xai_bench.models.onnx_model."
                              f"supported_operators() lists the {len(supported_operators())} supported ones)")
    _inline_constant_identities(proto)
    shape = _input_shape(proto, file)
    channels_last = shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4)
    c, h, w = (shape[3], shape[1], shape[2]) if channels_last else (shape[1], shape[2], shape[3])
    c = c or in_chans or 3
    side = input_size or h or w or 224
    if in_chans is not None and in_chans != c:
        raise CheckpointError(f"model.path={path} takes {c}-channel images but {in_chans} were asked for "
                              f"(model.in_chans / the dataset's channels)")
    if h is not None and (h, w) != (side, side):
        raise CheckpointError(f"model.path={path} takes {h}×{w} images but input_size={side} (model.input_size / "
                              f"the dataset's image size); set dataset.image_size={h}")
    net: nn.Module = onnx2torch.convert(proto)
    if channels_last:
        net = _ChannelsLast(net)
    net.eval()
    x = torch.zeros(1, c, side, h and w or side)
    with torch.no_grad():
        out = net(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise CheckpointError(f"model.path={path}: the graph must output N×K logits, got "
                              f"{getattr(out, 'shape', type(out))}")
    k = int(out.shape[1])
    if num_classes is not None and num_classes != k:
        raise CheckpointError(f"model.path={path} outputs {k} classes but num_classes={num_classes} (the dataset's "
                              f"or model.num_classes)")
    layer = _default_layer(net, x)
    return ImageClassifier(net, num_classes=k, input_size=(c, side, side),
                           name="onnx", arch={"name": "onnx", "path": str(file)}, fixed_input_size=h is not None,
                           **_meta(meta, mean=(0.0,) * c, std=(1.0,) * c,
                                   default_layer=f"net.{layer}" if layer else None))
