"""Shared machinery of the metrics that re-explain perturbed inputs (robustness and stability families).

- :func:`explain_batch` — call the explainer on a batch and return float32 one-channel maps on a given device.
- :func:`forward_outputs` — logits (and optionally a layer's flattened output, via a forward hook that is always
  removed) for a big batch, in out-of-memory-safe chunks.
- :func:`per_pixel` — reduce ``N×C×H×W`` maps to ``N×1×H×W`` by summing channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from xai_bench.batching import AdaptiveBatcher, default_batch_size

__all__ = ["explain_batch", "forward_outputs", "per_pixel", "resolve_layer"]


def per_pixel(maps: Tensor) -> Tensor:
    """``N×1×H×W`` maps: multi-channel maps are summed over channels."""
    return maps if maps.shape[1] == 1 else maps.sum(1, keepdim=True)


def explain_batch(explainer: Callable[..., Tensor], images: Tensor, targets: Tensor, name: str) -> Tensor:
    """``explainer(images, targets)`` as float32 ``N×1×H×W`` maps on ``images.device`` (channels summed)."""
    out = explainer(images, targets)
    if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != images.shape[0] \
            or out.shape[-2:] != images.shape[-2:]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name}: the explainer must return N×1×H×W maps for {tuple(images.shape)} images, got "
                         f"{shape}")
    return per_pixel(out.detach().to(images.device, torch.float32))


def resolve_layer(model: nn.Module, layer: str | None, name: str) -> nn.Module:
    """The module called ``layer`` (default: ``model.default_layer``)."""
    layer = layer or getattr(model, "default_layer", None)
    if layer is None:
        raise ValueError(f"{name} needs a layer: pass layer=<dotted module name> or use a model with a default_layer")
    if hasattr(model, "get_layer"):
        return model.get_layer(layer)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise KeyError(f"{name}: the model has no layer {layer!r}; some layers: {[n for n in modules if n][-8:]}")
    return modules[layer]


@torch.no_grad()
def forward_outputs(model: nn.Module, batch: Tensor, layer: nn.Module | None = None) -> tuple[Tensor, Tensor | None]:
    """The model's logits ``B×K`` for ``batch`` and, when ``layer`` is given, its output flattened to ``B×D``.

    Runs in chunks that halve on out-of-memory errors; the forward hook on ``layer`` is removed even on errors.
    """
    device = next((p.device for p in model.parameters()), batch.device)
    batcher = AdaptiveBatcher(default_batch_size(model, tuple(batch.shape[1:]), device), device=device)
    captured: list[Tensor] = []
    num_logits: list[int] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        captured.append(out.detach().flatten(1).float())

    def run(chunk: Tensor) -> Tensor:
        captured.clear()
        logits = model(chunk).float()
        num_logits[:] = [logits.shape[1]]
        if layer is None:
            return logits
        return torch.cat([logits, captured[-1]], dim=1)

    handle = layer.register_forward_hook(hook) if layer is not None else None
    try:
        out = batcher(run, batch)
    finally:
        if handle is not None:
            handle.remove()
    assert out is not None
    out = out.to(batch.device)
    if layer is None:
        return out, None
    k = num_logits[0]
    return out[:, :k], out[:, k:]
