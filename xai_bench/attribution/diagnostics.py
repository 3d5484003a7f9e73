"""What a map says about its own settings: constant maps and the setting likely responsible, and which model output
(logit or probability) a method explains."""

from __future__ import annotations

import inspect
import logging

from torch import Tensor

from xai_bench.attribution.runner import Explainer, occlusion_window

log = logging.getLogger(__name__)


def target_output(explainer: Explainer) -> str:
    """``"probability"`` when the method scores the target's softmax probability (RISE's ``use_softmax``), else
    ``"logit"`` (what Captum's methods and our CAMs differentiate or perturb)."""
    params = inspect.signature(explainer.method_cls.attribute).parameters
    if "use_softmax" in params:
        default = params["use_softmax"].default
        if bool(explainer.kwargs.get("use_softmax", default is True)):
            return "probability"
    return "logit"


def constant_rows(maps: Tensor, rel_tol: float = 1e-8) -> list[int]:
    """Rows of ``maps`` (N×…) whose ``max − min ≤ rel_tol · max|map|`` (all-zero maps included)."""
    flat = maps.detach().flatten(1).float()
    spread = flat.amax(1) - flat.amin(1)
    scale = flat.abs().amax(1)
    return (spread <= rel_tol * scale).nonzero().flatten().tolist()


def likely_setting(explainer: Explainer, height: int, width: int) -> str:
    """The setting of ``explainer`` most likely to flatten maps of ``height``×``width`` images."""
    if explainer._windowed:
        window, stride = occlusion_window(height, width, explainer.window, explainer.stride)
        return (f"the occlusion window ({window}×{window} px, stride {stride}) against the {height}×{width} image: "
                f"lower attribution.<name>.window or leave it null to size it to the image")
    if explainer.segmentation is not None:
        algo = explainer.segmentation.get("algorithm", "slic")
        return (f"the superpixels (segmentation.algorithm={algo}, {explainer.segmentation.get(algo)}) against the "
                f"{height}×{width} image: too few segments, or a surrogate that kept none (raise kwargs.n_samples)")
    if explainer.layer_name:
        return (f"the layer {explainer.layer_name!r}: a 1×1 or saturated feature map gives a flat map; pick an "
                f"earlier spatial layer with attribution.<name>.layer")
    return "the method's kwargs, or a model whose output for this class does not depend on the input"


def warn_constant_maps(explainer: Explainer, maps: Tensor, names: list[str] | None = None) -> list[int]:
    """Log a warning naming the method and :func:`likely_setting` when some of ``maps`` (N×C×H×W) are constant.

    Returns:
        The constant rows.
    """
    rows = constant_rows(maps)
    if rows:
        h, w = maps.shape[-2:]
        which = [names[r] for r in rows] if names else rows
        log.warning("%s gave %d constant map(s) (max − min ≤ 1e-8 · max|map|) for %s; likely setting: %s",
                    explainer.name, len(rows), which[:5], likely_setting(explainer, h, w))
    return rows


__all__ = ["constant_rows", "likely_setting", "target_output", "warn_constant_maps"]
