"""What an attribution method *is*: its capability flags, kept with the method (Captum keeps ``multiplies_by_inputs``
and ``has_convergence_delta`` on the class the same way).

Each fact is looked up in this order:

1. the method's YAML node (``conf/attribution/<name>.yaml``: ``signed: true``) — the only place for Captum's own
   classes, which we do not subclass;
2. a class attribute of the same name on the method class — how our own methods (``RISE``, the CAMs, ``ForGrad``)
   and a user's method declare them, so adding a method is one file + one YAML;
3. the default below.

No task keeps a list of class names to decide how to treat a method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor, nn

__all__ = ["FIGURE_STYLES", "AttributionMethod", "MethodFacts", "method_facts"]

FIGURE_STYLES = ("overlay", "heatmap", "isolines", "signed")


@dataclass(frozen=True)
class MethodFacts:
    """Capability flags of an attribution method.

    Attributes:
        signed: the map's sign means something (evidence for / against the class): drawn with a diverging colormap.
        forward_only: the method runs forward passes only, so bf16 autocast is safe for it on a GPU.
        one_image_per_call: the method must be called one image at a time (LIME / Kernel SHAP size their
            interpretable space by the whole batch's largest segment id).
        unshare_nonlinearities: the method stores state on non-linearity modules (Captum's DeepLift), so a model
            that reuses one ReLU module or runs it in place is traced and given one copy per call site first.
        figure: how its maps read best when a grid mixes kinds (``overlay`` for coarse CAM-like maps), or ``None``
            to follow the figure's kind.
    """

    signed: bool = False
    forward_only: bool = False
    one_image_per_call: bool = False
    unshare_nonlinearities: bool = False
    figure: str | None = None


FACT_NAMES = tuple(f.name for f in fields(MethodFacts))


def method_facts(method_cls: type, node: Mapping[str, Any] | None = None) -> MethodFacts:
    """Resolve a method's facts from its config node, then its class attributes, then the defaults.

    The node may also make a signed method's maps magnitudes: ``channel_reduction: abs_sum | max_abs``,
    ``kwargs.abs`` / ``kwargs.relu_attributions`` or a variance wrapper (``smoothgrad_sq``, ``vargrad``) all give
    maps without a meaningful sign.
    """
    node = node or {}
    values: dict[str, Any] = {}
    for name in FACT_NAMES:
        value = node.get(name)
        if value is None:
            value = getattr(method_cls, name, getattr(MethodFacts, name))
        values[name] = value
    if values["figure"] is not None and values["figure"] not in FIGURE_STYLES:
        raise ValueError(f"figure={values['figure']!r} for {getattr(method_cls, '__name__', method_cls)} must be one "
                         f"of {FIGURE_STYLES} or null")
    kwargs = node.get("kwargs") or {}
    wrapper = node.get("wrapper") or {}
    if (node.get("channel_reduction") in ("abs_sum", "max_abs") or kwargs.get("abs")
            or kwargs.get("relu_attributions") or wrapper.get("type") in ("smoothgrad_sq", "vargrad")):
        values["signed"] = False
    return MethodFacts(**{k: (bool(v) if k != "figure" else v) for k, v in values.items()})


class AttributionMethod:
    """Optional base class for our own methods, in Captum's shape: the constructor takes the model (and the layer,
    for layer methods); ``attribute(inputs, target=None, **settings)`` returns maps shaped like ``inputs`` (or
    N×1×h×w for layer methods).

    Subclasses declare their facts as class attributes (see :class:`MethodFacts`). Captum's classes need no base:
    any class with that constructor/``attribute`` split can be named in a YAML file.
    """

    signed: bool = False
    forward_only: bool = False
    one_image_per_call: bool = False
    unshare_nonlinearities: bool = False
    figure: str | None = None

    def __init__(self, forward_func: nn.Module) -> None:
        self.forward_func = forward_func

    def attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def with_settings_of(base_attribute: Any, impl: Any, skip: tuple[str, ...]) -> Any:
    """A per-class ``attribute`` that calls ``base_attribute`` and whose signature also lists ``impl``'s settings.

    Template classes (the CAMs' ``attribute`` → ``cam``, the attention methods' → ``_explain``) take a subclass's
    settings through ``**settings``; giving each subclass an ``attribute`` with the real parameter list lets the
    config check reject a misspelt ``kwargs`` key at start-up (``relu`` for ``relu_attributions``) and lets
    ``help()`` show the settings.
    """
    import inspect

    def attribute(self: Any, *args: Any, **kwargs: Any) -> Any:
        return base_attribute(self, *args, **kwargs)

    # name and doc only: a wrapped-function link would lead inspect.signature back to the template's signature
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(attribute, name, getattr(base_attribute, name))
    params = [p for p in inspect.signature(base_attribute).parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in params}
    extra = [p.replace(kind=p.KEYWORD_ONLY) if p.kind is p.POSITIONAL_OR_KEYWORD else p
             for name, p in inspect.signature(impl).parameters.items() if name not in (*skip, *names)]
    attribute.__signature__ = inspect.Signature(params + extra)  # type: ignore[attr-defined]
    return attribute
