"""Guided Backprop, Deconvolution and Guided Grad-CAM that say when they cannot do what their name promises.

Captum's versions override the backward pass of ``nn.ReLU`` modules only. On a model whose activations are ReLU6,
SiLU, GELU, Hardswish or functional calls they silently return plain gradients (or something in between), and a
reused in-place ReLU (torchvision's ResNet calls one ``relu`` module twice per block, in place) is fragile under
hooks. These subclasses keep Captum's constructors and ``attribute`` signatures and:

(a) switch in-place activations (any module with ``inplace=True``) to out-of-place for the call and restore the
    flags afterwards, even on error;
(b) apply the rule to the whole monotone rectifier family: ``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh`` and
    ``nn.LeakyReLU`` with a non-negative slope. With ``g`` the gradient arriving at the activation's output and
    ``f'(x) ≥ 0`` its local derivative, Guided Backprop passes ``ReLU(f'(x) · g) = f'(x) · ReLU(g)`` (only positive
    signal, only where the unit passed signal forward: for ReLU6/Hardtanh that is ``min < x < max``, for LeakyReLU
    the negative side is scaled by its slope), and Deconvolution passes ``ReLU(g)`` whatever the forward input was;
(c) refuse with a ``ValueError`` on activations where no such rule is defined (SiLU/Swish, GELU, Hardswish, Mish,
    ELU, SELU, Softplus, PReLU, …, by module type or by class name for timm's own modules) and on functional
    activations (``F.relu``, ``torch.relu``, ``F.silu``, … called outside an activation module, detected during one
    probing forward pass on the first image), unless ``allow_unsupported=True``; those then keep their ordinary
    gradient. Gating non-linearities (Sigmoid, Tanh, Softmax, e.g. in squeeze-excitation blocks) are not rectifiers
    and keep their ordinary gradient without complaint, as in the original methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import captum.attr
import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from xai_bench._compat import captum_register_backward_hook, undecorated_attribute

__all__ = ["Deconvolution", "GuidedBackprop", "GuidedGradCam", "check_guided_support"]

_HANDLED = (nn.ReLU, nn.Hardtanh, nn.LeakyReLU)  # nn.ReLU6 subclasses nn.Hardtanh
_UNSUPPORTED_TYPES = (nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish, nn.ELU, nn.CELU, nn.SELU, nn.Softplus, nn.PReLU,
                      nn.RReLU, nn.GLU, nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.Softsign,
                      nn.LogSigmoid)
# activation classes of other libraries (timm's Swish, SwishMe, HardSwishMe, GELUTanh, QuickGELU, …) by lower-case
# class name with a trailing "me"/"auto"/"jit" removed
_UNSUPPORTED_NAMES = {"silu", "swish", "hardswish", "gelu", "gelutanh", "quickgelu", "geglu", "swiglu", "mish",
                      "hardmish", "elu", "celu", "selu", "softplus", "prelu", "starrelu", "squaredrelu"}
_FUNCTIONAL = {F.relu: "F.relu", F.relu_: "F.relu_", torch.relu: "torch.relu", torch.relu_: "torch.relu_",
               Tensor.relu: "Tensor.relu", Tensor.relu_: "Tensor.relu_", F.relu6: "F.relu6",
               F.hardtanh: "F.hardtanh", F.hardtanh_: "F.hardtanh_", F.leaky_relu: "F.leaky_relu",
               F.silu: "F.silu", F.gelu: "F.gelu", F.hardswish: "F.hardswish", F.mish: "F.mish", F.elu: "F.elu",
               F.selu: "F.selu", F.celu: "F.celu", F.softplus: "F.softplus"}


def _module_verdict(module: nn.Module) -> str | None:
    """``"handled"``, ``"unsupported"`` or ``None`` (not a rectifier: ordinary gradient, no complaint)."""
    if isinstance(module, nn.LeakyReLU):
        return "handled" if module.negative_slope >= 0 else "unsupported"
    if isinstance(module, _HANDLED):
        return "handled"
    if isinstance(module, _UNSUPPORTED_TYPES):
        return "unsupported"
    name = type(module).__name__.lower()
    for suffix in ("me", "auto", "jit"):
        if name.endswith(suffix) and name[: -len(suffix)] in _UNSUPPORTED_NAMES:
            return "unsupported"
    return "unsupported" if name in _UNSUPPORTED_NAMES else None


class _RecordFunctional(TorchFunctionMode):
    """Records functional activations called while no activation module is running."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.found: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if self.depth == 0 and func in _FUNCTIONAL and _FUNCTIONAL[func] not in self.found:
            self.found.append(_FUNCTIONAL[func])
        return func(*args, **(kwargs or {}))


def _functional_activations(model: nn.Module, inputs: Tensor) -> list[str]:
    recorder = _RecordFunctional()
    handles = []

    def enter(*_: Any) -> None:
        recorder.depth += 1

    def leave(*_: Any) -> None:
        recorder.depth -= 1

    try:
        for module in model.modules():
            if _module_verdict(module) is not None:
                handles.append(module.register_forward_pre_hook(enter))
                handles.append(module.register_forward_hook(leave))
        with torch.no_grad(), recorder:
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return recorder.found


def check_guided_support(model: nn.Module, inputs: Tensor | None = None) -> list[str]:
    """Names of the activations Guided Backprop / Deconvolution cannot apply their rule to.

    Args:
        model: the network.
        inputs: optional example Tensor[N, C, H, W]; when given, one forward pass on its first image also finds
            functional activations (``F.relu``, ``F.silu``, …) called outside activation modules.

    Returns:
        Dotted module names (e.g. ``"features.1.act"``), followed by ``"functional F.silu"``-style entries when
        ``inputs`` is given. Empty when the methods are exact on this model.
    """
    names = [name for name, module in model.named_modules() if _module_verdict(module) == "unsupported"]
    if inputs is not None:
        names += [f"functional {fn}" for fn in _functional_activations(model, inputs[:1].detach())]
    return names


def _describe(model: nn.Module, names: list[str]) -> str:
    modules = dict(model.named_modules())
    parts = [f"{n} ({type(modules[n]).__name__})" if n in modules else n for n in names]
    return ", ".join(parts[:8]) + (f" and {len(parts) - 8} more" if len(parts) > 8 else "")


@contextlib.contextmanager
def _out_of_place(model: nn.Module) -> Iterator[None]:
    """Temporarily set ``inplace=False`` on every module that has ``inplace=True``; always restore."""
    switched = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    try:
        for module in switched:
            module.inplace = False
        yield
    finally:
        for module in switched:
            module.inplace = True


class _Honest:
    """Support check (cached per instance) and hook registration for the whole rectifier family."""

    model: nn.Module
    backward_hooks: list
    allow_unsupported: bool
    _checked: bool

    def _init_honest(self, allow_unsupported: bool) -> None:
        self.allow_unsupported = bool(allow_unsupported)
        self._checked = False

    def _check_support(self, inputs: Any, additional_forward_args: Any, allow_unsupported: bool | None) -> None:
        allow = self.allow_unsupported if allow_unsupported is None else bool(allow_unsupported)
        if allow or self._checked:
            return
        # the probing forward pass for functional activations needs a plain single-tensor call
        probe = inputs if isinstance(inputs, Tensor) and additional_forward_args is None else None
        bad = check_guided_support(self.model, probe)
        if bad:
            raise ValueError(
                f"{type(self).__name__} has no guided rule for these activations: {_describe(self.model, bad)}. "
                f"Captum would silently use their plain gradient there. Use a model with ReLU/ReLU6/Hardtanh/"
                f"LeakyReLU modules, or pass allow_unsupported=True (constructor or attribute) to proceed knowingly."
            )
        self._checked = True  # the model's structure does not change between calls

    def _honest_attribute(self, captum_cls: type, inputs: Any, target: Any, additional_forward_args: Any,
                          allow_unsupported: bool | None) -> Any:
        """Check support, then run Captum's ``attribute`` (unwrapped from its usage logger) with ReLUs out of place."""
        self._check_support(inputs, additional_forward_args, allow_unsupported)
        with _out_of_place(self.model):
            return undecorated_attribute(captum_cls)(self, inputs, target, additional_forward_args)

    def _register_hooks(self, module: nn.Module) -> None:
        if _module_verdict(module) == "handled":
            self.backward_hooks.extend(captum_register_backward_hook(module, self._backward_hook, self))


class GuidedBackprop(_Honest, captum.attr.GuidedBackprop):
    r"""Guided Backpropagation (Springenberg et al., 2015, https://arxiv.org/abs/1412.6806) for the ReLU family.

    Same as ``captum.attr.GuidedBackprop`` but exact on ReLU6/Hardtanh/LeakyReLU modules, safe with in-place and
    reused ReLUs, and it raises instead of silently degrading on other activations (see the module docstring).

    Args:
        model: the network.
        allow_unsupported: run even on unsupported activations (they keep their plain gradient). Default: False
    """

    def __init__(self, model: nn.Module, *, allow_unsupported: bool = False) -> None:
        captum.attr.GuidedBackprop.__init__(self, model)
        self._init_honest(allow_unsupported)

    @log_usage()
    def attribute(self, inputs: Tensor | tuple[Tensor, ...], target: Any = None,
                  additional_forward_args: Any = None, allow_unsupported: bool | None = None) -> Any:
        """Captum's ``GuidedBackprop.attribute``; ``allow_unsupported`` overrides the constructor's setting."""
        return self._honest_attribute(captum.attr.GuidedBackprop, inputs, target, additional_forward_args,
                                      allow_unsupported)


class Deconvolution(_Honest, captum.attr.Deconvolution):
    r"""Deconvolution (Zeiler & Fergus, 2014, https://arxiv.org/abs/1311.2901) for the ReLU family.

    Same as ``captum.attr.Deconvolution`` (each rectifier passes ``ReLU`` of the gradient at its output, ignoring
    the forward input) but covering ReLU6/Hardtanh/LeakyReLU, safe with in-place ReLUs, and refusing unsupported
    activations (see the module docstring).

    Args:
        model: the network.
        allow_unsupported: run even on unsupported activations (they keep their plain gradient). Default: False
    """

    def __init__(self, model: nn.Module, *, allow_unsupported: bool = False) -> None:
        captum.attr.Deconvolution.__init__(self, model)
        self._init_honest(allow_unsupported)

    @log_usage()
    def attribute(self, inputs: Tensor | tuple[Tensor, ...], target: Any = None,
                  additional_forward_args: Any = None, allow_unsupported: bool | None = None) -> Any:
        """Captum's ``Deconvolution.attribute``; ``allow_unsupported`` overrides the constructor's setting."""
        return self._honest_attribute(captum.attr.Deconvolution, inputs, target, additional_forward_args,
                                      allow_unsupported)


class GuidedGradCam(captum.attr.GuidedGradCam):
    r"""Guided Grad-CAM (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391) built on our GuidedBackprop.

    Same constructor and ``attribute`` as ``captum.attr.GuidedGradCam``; the guided part is exact on the ReLU family
    and refuses unsupported activations unless ``allow_unsupported=True``.

    Args:
        model: the network.
        layer: layer for the Grad-CAM part.
        device_ids: for DataParallel models, as in Captum. Default: None
        allow_unsupported: run even on unsupported activations. Default: False
    """

    def __init__(self, model: nn.Module, layer: nn.Module, device_ids: list[int] | None = None, *,
                 allow_unsupported: bool = False) -> None:
        super().__init__(model, layer, device_ids)
        self.guided_backprop = GuidedBackprop(model, allow_unsupported=allow_unsupported)

    @log_usage()
    def attribute(self, inputs: Tensor | tuple[Tensor, ...], target: Any = None,
                  additional_forward_args: Any = None, interpolate_mode: str = "nearest",
                  attribute_to_layer_input: bool = False, allow_unsupported: bool | None = None) -> Any:
        """Captum's ``GuidedGradCam.attribute``; ``allow_unsupported`` overrides the constructor's setting."""
        gbp = self.guided_backprop
        previous = gbp.allow_unsupported
        if allow_unsupported is not None:
            gbp.allow_unsupported = bool(allow_unsupported)
        try:
            gbp._check_support(inputs, additional_forward_args, None)  # fail before computing the Grad-CAM half
            with _out_of_place(self.forward_func):
                return undecorated_attribute(captum.attr.GuidedGradCam)(
                    self, inputs, target, additional_forward_args, interpolate_mode, attribute_to_layer_input)
        finally:
            gbp.allow_unsupported = previous
