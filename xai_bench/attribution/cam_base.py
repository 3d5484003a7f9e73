"""The CAM template: hooks, ``reshape_transform`` and target objects, so a new CAM implements only its weights.

In the spirit of pytorch-grad-cam's ``BaseCAM`` (``pytorch_grad_cam/base_cam.py``), in Captum's shape
(``Method(forward_func, layer)``, ``attribute(inputs, target, ...)``, maps Tensor[N, 1, h, w] at the layer's
resolution like ``captum.attr.LayerGradCam``):

- **hooks** record the layer's output on a forward pass and are removed even when the model raises;
- a **reshape transform** turns whatever the layer outputs into activations Tensor[N, K, h, w]: ViT tokens
  Tensor[N, T, D] → a D×h×w grid (:class:`~xai_bench.models.vit.ViTTokensToGrid`), an FPN's dict of levels → one map
  (:class:`FPNLevelsToMap`). It is applied to activations and to their gradients alike. ``None`` takes the model's
  own (``model.reshape_transform``, which our ViT builder sets), so the same YAML explains a CNN and a ViT;
- **targets** say which scalar per image is explained: class indices (Captum's ``target``) become a
  :class:`ClassTarget`; a detector is explained with a :class:`BoxScoreTarget` (``cam_targets.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_bench.attribution.base import with_settings_of
from xai_bench.attribution.cam_targets import Target, as_target
from xai_bench.models.vit import ViTTokensToGrid

__all__ = ["BaseCAM", "FPNLevelsToMap", "ViTTokensToGrid", "flatten_output", "unflatten_output"]

ReshapeTransform = Callable[[Any], Tensor]


class FPNLevelsToMap:
    """An FPN's levels (a dict or list of Tensor[N, K_l, h_l, w_l]) → one Tensor[N, ΣK_l, h, w].

    Each level is resized (bilinear) to the finest level's size, or to ``size``, and the levels are stacked along the
    channels in the dict's order, so channel ``k`` of the result is one channel of one level (what AblationCAM
    ablates). pytorch-grad-cam's ``fasterrcnn_reshape_transform`` does the same at the coarsest level and on |A|;
    the finest level keeps small objects apart.
    """

    def __init__(self, size: Sequence[int] | None = None, levels: Sequence[str] | None = None) -> None:
        self.size = tuple(int(s) for s in size) if size is not None else None
        self.levels = list(levels) if levels is not None else None

    def __call__(self, levels: Any) -> Tensor:
        maps = flatten_output(levels)
        if isinstance(levels, Mapping) and self.levels is not None:
            maps = [levels[k] for k in self.levels]
        if not maps or any(m.dim() != 4 for m in maps):
            raise ValueError("FPNLevelsToMap needs a dict or list of Tensor[N, K, h, w] feature maps")
        size = self.size or max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
        return torch.cat([m if tuple(m.shape[-2:]) == size else
                          F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1)


def flatten_output(out: Any) -> list[Tensor]:
    """The tensors of a layer's output: a Tensor, a 1-tuple, or an (ordered) dict / list of tensors."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [v for v in out.values() if isinstance(v, Tensor)]
    if isinstance(out, (tuple, list)):
        return [v for v in out if isinstance(v, Tensor)]
    return []


def unflatten_output(like: Any, tensors: Sequence[Tensor]) -> Any:
    """Put ``tensors`` back in the structure of ``like`` (the inverse of :func:`flatten_output`)."""
    if isinstance(like, Tensor):
        return tensors[0]
    it = iter(tensors)
    if isinstance(like, Mapping):
        return OrderedDict((k, next(it) if isinstance(v, Tensor) else v) for k, v in like.items())
    return type(like)(next(it) if isinstance(v, Tensor) else v for v in like)


class BaseCAM:
    """Template for class activation maps: subclasses implement :meth:`cam` (the weighted map) only.

    Args:
        forward_func: model mapping Tensor[N, C, H, W] → its output (Tensor[N, K] logits, or whatever the targets
            read, e.g. a detector's list of box dicts).
        layer: module whose output is explained.
        reshape_transform: its output → Tensor[N, K, h, w] (``None``: ``forward_func.reshape_transform`` if the
            model has one, else the output itself, which must then be Tensor[N, K, h, w]).
    """

    signed: bool = False
    forward_only: bool = False
    one_image_per_call: bool = False
    unshare_nonlinearities: bool = False
    figure: str | None = "overlay"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "cam" in cls.__dict__ and "attribute" not in cls.__dict__:
            cls.attribute = with_settings_of(BaseCAM.attribute, cls.cam, ("self", "inputs", "target"))

    def __init__(self, forward_func: Callable[[Tensor], Any], layer: nn.Module,
                 reshape_transform: ReshapeTransform | None = None) -> None:
        if not isinstance(layer, nn.Module):
            raise ValueError(f"layer must be an nn.Module (e.g. model.get_layer(name)), got {type(layer).__name__}")
        self.forward_func = forward_func
        self.layer = layer
        self.reshape_transform = reshape_transform or getattr(forward_func, "reshape_transform", None)

    # -------------------------------------------------------------------------------------------- template method
    def attribute(self, inputs: Tensor, target: Any = None, relu_attributions: bool = True, **settings: Any) -> Tensor:
        """Maps Tensor[N, 1, h, w] at the layer's resolution.

        Args:
            inputs: images, Tensor[N, C, H, W].
            target: class per image (int, list / 1-D tensor of N ints), ``None`` for the predicted class, or a
                target object (:class:`ClassTarget`, :class:`BoxScoreTarget`, any ``Target``).
            relu_attributions: apply a ReLU to the map, as the CAM papers do. Default: True
            settings: the subclass's own (batch sizes, channel budgets, …).
        """
        from xai_bench.checks import check_images

        check_images(inputs, "inputs", check_range=False)
        cam = self.cam(inputs.detach(), target, **settings)
        cam = cam.unsqueeze(1)
        return (F.relu(cam) if relu_attributions else cam).to(inputs.dtype)

    def cam(self, inputs: Tensor, target: Any, **settings: Any) -> Tensor:  # pragma: no cover
        """Tensor[N, h, w] signed maps (before the ReLU)."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------------- plumbing
    def _layer_output(self, inputs: Tensor) -> tuple[Any, Any]:
        """Model output and the layer's raw output (attached to the graph if grad is enabled)."""
        store: dict[str, Any] = {}

        def hook(module: nn.Module, args: object, out: object) -> None:
            store["act"] = out[0] if isinstance(out, tuple) and len(out) == 1 else out

        handle = self.layer.register_forward_hook(hook)
        try:
            out = self.forward_func(inputs)
        finally:
            handle.remove()
        if "act" not in store:
            raise ValueError(f"layer {type(self.layer).__name__} was not called by the forward pass; "
                             f"is it part of the model?")
        return out, store["act"]

    def to_maps(self, raw: Any) -> Tensor:
        """The layer's raw output (or its gradient) → Tensor[N, K, h, w] through the reshape transform."""
        out = self.reshape_transform(raw) if self.reshape_transform is not None else raw
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"layer {type(self.layer).__name__} must output a Tensor[N, K, h, w] for a CAM, got "
                             f"{shape}; pick a convolutional layer, or give a reshape_transform (ViTTokensToGrid "
                             f"for ViT tokens, FPNLevelsToMap for FPN levels)")
        return out

    def _forward_with_activations(self, inputs: Tensor) -> tuple[Any, Tensor]:
        """Model output and the layer's activations Tensor[N, K, h, w]."""
        out, raw = self._layer_output(inputs)
        return out, self.to_maps(raw)

    def _target(self, target: Any, inputs: Tensor, outputs: Any, **class_options: Any) -> Target:
        return as_target(target, inputs, outputs, **class_options)

    def _gradients(self, inputs: Tensor, target: Any) -> tuple[Tensor, Tensor]:
        """Activations and d(target score)/d(activations), both Tensor[N, K, h, w] and detached."""
        with torch.enable_grad():
            x = inputs.requires_grad_(True)  # makes the graph reach the layer even if it has no params
            outputs, raw = self._layer_output(x)
            leaves = flatten_output(raw)
            scores = self._target(target, inputs, outputs)(outputs, torch.arange(len(inputs), device=inputs.device))
            grads = torch.autograd.grad(scores.sum(), leaves, allow_unused=True)
        grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
        acts = self.to_maps(unflatten_output(raw, [leaf.detach() for leaf in leaves]))
        return acts, self.to_maps(unflatten_output(raw, grads)).detach()

