"""Every private API of another library that xai-bench uses, in one place (tested in ``tests/test_compat.py``).

When a pinned upper bound in ``pyproject.toml`` is raised, that test says at once which of these moved. Nothing
else in the package imports a ``_private`` name of torchvision or Captum.

1. Make ``import torchvision`` (and therefore ``timm``) work with a CPU torch and a CUDA torchvision wheel.

The only torchvision wheel on the CPU machines is a CUDA build whose compiled extension cannot load next to the CPU
torch. torchvision's Python side still works, except that ``torchvision/_meta_registrations.py`` registers fake
kernels for ``torchvision::nms``/``qnms`` unconditionally, which raises ``operator torchvision::nms does not exist``.
When, and only when, the extension does not load, we declare those operator schemas with a pure-torch NMS so the
import succeeds. On a machine with matching builds this module does nothing.

Import it before torchvision or timm: ``import xai_bench`` does so.

2. Captum internals (imported lazily, so ``import xai_bench`` stays cheap): the DeepLift non-linearity table, the
backward-hook helper and the undecorated ``attribute`` of a class (to run it without Captum's usage logger), and
LIME's surrogate model and default functions (Captum exports them only from private modules), and the tqdm class
behind Captum's ``show_progress`` bars (swapped for ours inside ``xai_bench.progress.progress_reporting``).

3. torchvision's ImageNet category names (a private module, but the only offline copy).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os

import numpy as np
import torch

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["TORCHVISION_EXTENSION_LOADED", "captum_progress_factory", "captum_register_backward_hook",
           "deeplift_nonlinearities", "ensure_torchvision_nms", "imagenet_categories", "lime_default_functions",
           "lime_lasso", "nms_reference", "undecorated_attribute", "undecorated_override"]

_LIB: torch.library.Library | None = None


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision not installed: nothing to patch
    libs = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so")) + glob.glob(
        os.path.join(spec.submodule_search_locations[0], "_C*.pyd")
    )
    if not libs:
        return False
    try:
        torch.ops.load_library(libs[0])
    except (OSError, ImportError, RuntimeError):
        return False
    return True


def nms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression in plain torch (same contract as ``torchvision.ops.nms``: indices of the kept
    boxes by decreasing score; a box is dropped when its IoU with a kept, higher-scoring box exceeds the threshold).

    One iteration per *kept* box, each vectorised over the boxes still in play, so a detector's thousands of
    candidates cost a few dozen tensor ops, not a Python loop over every pair.
    """
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    order = scores.argsort(descending=True, stable=True)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    n = order.numel()
    if n <= 4096:  # the whole IoU matrix (≤ 16 M booleans) once, then a greedy pass of cheap row ORs
        o = order
        inter = ((torch.minimum(x2[o, None], x2[None, o]) - torch.maximum(x1[o, None], x1[None, o])).clamp(min=0)
                 * (torch.minimum(y2[o, None], y2[None, o]) - torch.maximum(y1[o, None], y1[None, o])).clamp(min=0))
        over = (inter / (areas[o, None] + areas[None, o] - inter) > iou_threshold).cpu().numpy()
        suppressed = np.zeros(n, dtype=bool)
        kept = []
        for i in range(n):  # rows in score order: a box is kept unless a kept, higher-scoring box overlaps it
            if not suppressed[i]:
                kept.append(i)
                suppressed |= over[i]
        return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]
    keep = []
    while order.numel():
        i, rest = order[0], order[1:]
        keep.append(i)
        inter = ((torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
                 * (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0))
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]  # NaN IoU (two empty boxes) keeps the box, as torchvision's kernel does
    return torch.stack(keep)


def ensure_torchvision_nms() -> None:
    """Make ``torchvision.ops.nms`` / ``batched_nms`` (what every torchvision detector calls) work without the
    compiled extension, with :func:`nms_reference`; a no-op where the extension loads.

    The operator schema declared at import lets torchvision import, but ``torchvision.ops.boxes.nms`` first asserts
    that the extension is loaded. ``batched_nms`` looks ``nms`` up in that module, so rebinding it there (and the
    re-export in ``torchvision.ops``) is enough.
    """
    if TORCHVISION_EXTENSION_LOADED:
        return
    import torchvision.ops
    import torchvision.ops.boxes as boxes

    if getattr(boxes.nms, "_xai_bench", False):
        return

    def nms(boxes_: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        return nms_reference(boxes_, scores, iou_threshold)

    nms._xai_bench = True  # type: ignore[attr-defined]
    nms.__doc__ = boxes.nms.__doc__
    boxes.nms = nms
    torchvision.ops.nms = nms


def _declare_ops() -> None:
    global _LIB
    try:
        torch.ops.torchvision.nms  # noqa: B018  (already declared by someone)
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.impl("nms", nms_reference, "CompositeExplicitAutograd")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.impl("qnms", nms_reference, "CompositeExplicitAutograd")


TORCHVISION_EXTENSION_LOADED = _extension_loads()
if not TORCHVISION_EXTENSION_LOADED:
    _declare_ops()


# ---------------------------------------------------------------------------------------------------------------
# Captum internals
# ---------------------------------------------------------------------------------------------------------------
def deeplift_nonlinearities() -> set[type]:
    """The module types Captum's DeepLift hooks (and therefore must each run once, out of place)."""
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    return set(SUPPORTED_NON_LINEAR)


def captum_register_backward_hook(module: torch.nn.Module, hook: Callable, attr_obj: Any) -> list[Any]:
    """Captum's own backward-hook registration (handles full vs. legacy hooks the way its methods expect)."""
    from captum._utils.common import _register_backward_hook

    return _register_backward_hook(module, hook, attr_obj)


def undecorated_attribute(cls: type) -> Callable[..., Any]:
    """``cls.attribute`` without Captum's ``@log_usage`` wrapper, to call it on an instance of a subclass."""
    fn = cls.attribute
    return getattr(fn, "__wrapped__", fn)


def lime_lasso(alpha: float = 0.01) -> Any:
    """LIME's sparse linear surrogate (``captum._utils.models.linear_model.SkLearnLasso``)."""
    from captum._utils.models.linear_model import SkLearnLasso

    return SkLearnLasso(alpha=alpha)


def lime_default_functions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Captum LIME's default coalition sampler and coalition → input transform (``captum.attr._core.lime``
    ``default_perturb_func``, ``default_from_interp_rep_transform``), so a batched LIME can tell them apart from a
    user's own."""
    from captum.attr._core.lime import default_from_interp_rep_transform, default_perturb_func

    return default_perturb_func, default_from_interp_rep_transform


def undecorated_override(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An ``attribute`` method calling ``fn`` that Captum's ``Lime`` can call undecorated: ``Lime`` calls its base
    class's method as ``super().attribute.__wrapped__(self, ...)`` (skipping the usage logger), so an override placed
    in between must carry ``__wrapped__``."""

    def attribute(self: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(self, *args, **kwargs)

    attribute.__wrapped__ = fn  # type: ignore[attr-defined]
    attribute.__doc__ = fn.__doc__
    return attribute


@contextlib.contextmanager
def captum_progress_factory(factory: Callable[..., Any]) -> Iterator[None]:
    """Route the bars Captum draws with ``show_progress=True`` through ``factory`` (a tqdm-like class) in a block.

    Captum's perturbation methods call ``captum._utils.progress.progress(...)``, which builds
    ``tqdm.auto.tqdm(iterable, desc=, total=, file=, mininterval=, ...)`` from that module's global ``tqdm``; we
    swap that global for the block, so the bars nest under ours and write log lines instead of carriage-return
    refreshes where the output is not a terminal.
    """
    from captum._utils import progress as captum_progress
    from captum.attr import Occlusion

    old = captum_progress.tqdm
    captum_progress.tqdm = factory
    # Captum 0.9 sizes Occlusion's bar by the input's element count (150,529 at 224²) instead of its windows, so
    # the bar would never pass 1 % and the ETA would be wild; count the windows for the block
    Occlusion._attribute_progress_setup = _occlusion_progress_setup
    try:
        yield
    finally:
        captum_progress.tqdm = old
        del Occlusion._attribute_progress_setup


def _occlusion_progress_setup(self: Any, formatted_inputs: Any, feature_mask: Any, perturbations_per_eval: int,
                              **kwargs: Any) -> Any:
    import math

    from captum._utils.progress import progress

    windows = sum(math.prod(int(c) for c in counts) for counts in kwargs["shift_counts"])
    return progress(desc=f"{self.get_name()} attribution", total=math.ceil(windows / perturbations_per_eval) + 1)


# ---------------------------------------------------------------------------------------------------------------
# torchvision internals
# ---------------------------------------------------------------------------------------------------------------
def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (torchvision's private copy: it works offline)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)
