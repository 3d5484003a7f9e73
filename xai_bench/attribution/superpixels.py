"""Feature masks (superpixels or a regular grid) for perturbation methods: LIME, Kernel SHAP, feature ablation.

Superpixels come from scikit-image (SLIC: Achanta et al., TPAMI 2012; Quickshift: Vedaldi & Soatto, ECCV 2008), the
segmentations the LIME paper (Ribeiro et al., KDD 2016) uses for images. scikit-image works on one NumPy image at a
time, so these masks are made with a per-image loop on the CPU. That is deliberate and cheap: a mask is computed once
per image, while the method that uses it then runs hundreds to thousands of model forward passes on the device. The
``grid`` algorithm needs no scikit-image and is pure tensor code.

A config's ``segmentation`` node keeps each algorithm's settings under its own key, so switching algorithm never
hands one algorithm's settings to another (:func:`segmentation_settings`)::

    segmentation:
      algorithm: slic                # slic | quickshift | grid
      slic: {n_segments: 50, compactness: 10.0, sigma: 1.0}
      quickshift: {kernel_size: null, max_dist: null, ratio: 0.2}   # null: sized to the image
      grid: {patch_size: null, n_segments: 49}

Settings that depend on the image size default to ``null`` and are sized to the image (:func:`sized_params`):
Quickshift's ``kernel_size`` = 4 and ``max_dist`` = 200 are LIME's values for 224² photos and give a single segment
on a 32² image, so both scale with the shorter side.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xai_bench.checks import check_images
from xai_bench.registry import unknown_name_message

ALGORITHMS = ("slic", "quickshift", "grid")
# Defaults per algorithm (None: sized to the image by sized_params). Keys other than these are passed on to the
# scikit-image function when it takes them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "slic": {"n_segments": 50, "compactness": 10.0, "sigma": 1.0},
    "quickshift": {"kernel_size": None, "max_dist": None, "ratio": 0.2},
    "grid": {"patch_size": None, "n_segments": None},
}
_REFERENCE_SIDE = 224  # the image side LIME's quickshift settings were chosen for


def segmentation_settings(node: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(algorithm, params)`` from a config's ``segmentation`` node.

    The node is ``{algorithm: <name>, <name>: {…}, <other>: {…}}``: only the chosen algorithm's sub-node is used,
    ``None`` values are left to :func:`sized_params`. Raises ``ValueError`` naming the valid keys for an unknown
    algorithm, a top-level setting (``n_segments`` belongs under ``segmentation.slic``) or a key the algorithm
    does not take.
    """
    node = dict(node)
    algorithm = str(node.pop("algorithm", "slic"))
    if algorithm not in ALGORITHMS:
        raise ValueError(unknown_name_message("superpixel algorithm", algorithm, ALGORITHMS,
                                              " Set segmentation.algorithm to one of these."))
    loose = [k for k in node if k not in ALGORITHMS]
    if loose:
        raise ValueError(f"segmentation has setting(s) {loose} outside an algorithm's node; put each under "
                         f"the algorithm it belongs to, e.g. segmentation.{algorithm} (valid keys: algorithm, "
                         f"{', '.join(ALGORITHMS)}; segmentation.{algorithm} takes "
                         f"{', '.join(valid_params(algorithm))})")
    for name in ALGORITHMS:
        if node.get(name) is not None:
            check_params(name, node[name])
    params = {**DEFAULTS[algorithm], **dict(node.get(algorithm) or {})}
    return algorithm, params


def valid_params(algorithm: str) -> list[str]:
    """Settings ``algorithm`` takes: ours first, then the scikit-image function's keyword arguments."""
    keys = list(DEFAULTS[algorithm])
    if algorithm != "grid":
        from skimage import segmentation

        skipped = {"image", "channel_axis", "start_label", "convert2lab"} | set(keys)
        sig = inspect.signature(getattr(segmentation, algorithm)).parameters
        keys += [k for k in sig if k not in skipped and sig[k].default is not inspect.Parameter.empty]
    return keys


def check_params(algorithm: str, params: Mapping[str, Any]) -> None:
    """Fail with the valid keys when ``params`` has a setting ``algorithm`` does not take (e.g. SLIC's
    ``compactness`` given to quickshift, which scikit-image would refuse with a bare ``TypeError``)."""
    valid = valid_params(algorithm)
    bad = [k for k in params if k not in valid]
    if bad:
        raise ValueError(f"segmentation.{algorithm} does not take {bad}; valid keys: {', '.join(valid)}")


def sized_params(algorithm: str, params: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    """``params`` with its ``None`` values sized to an ``height``×``width`` image.

    Quickshift: ``kernel_size`` = 4·s/224 (at least 1) and ``max_dist`` = 200·s/224 for the shorter side s (LIME's
    4 / 200 at 224²; 1 / 28.6 at 32², about 15 segments instead of one). Grid: about 49 cells (7×7) unless
    ``patch_size`` is set. SLIC's ``n_segments`` is a count, so it needs no sizing.
    """
    side = min(height, width)
    out = dict(params)
    if algorithm == "quickshift":
        if out.get("kernel_size") is None:
            out["kernel_size"] = max(1.0, 4.0 * side / _REFERENCE_SIDE)
        if out.get("max_dist") is None:
            out["max_dist"] = 200.0 * side / _REFERENCE_SIDE
    elif algorithm == "grid":
        if out.get("patch_size") is None and out.get("n_segments") is None:
            out["n_segments"] = 49
    return {k: v for k, v in out.items() if v is not None}


def segment(images: Tensor, node: Mapping[str, Any]) -> Tensor:
    """Feature masks for ``images`` from a config's ``segmentation`` node (see the module docstring)."""
    algorithm, params = segmentation_settings(node)
    return superpixel_masks(images, algorithm, **sized_params(algorithm, params, *images.shape[-2:]))


def superpixel_masks(images: Tensor, algorithm: str = "slic", **params: Any) -> Tensor:
    """One feature mask per image: integer ids ``0 … K_i−1``, contiguous, shared by all channels.

    Args:
        images: N×C×H×W float images in [0, 1] (C = 1 or 3).
        algorithm: ``"slic"`` (params: ``n_segments`` = 50, ``compactness`` = 10, ``sigma`` = 1, …),
            ``"quickshift"`` (params: ``kernel_size``, ``max_dist`` (default: sized to the image, see
            :func:`sized_params`), ``ratio`` = 0.2, …; grey images are replicated to RGB because quickshift needs
            colour) or ``"grid"`` (params: ``patch_size`` = 8 pixels, or ``n_segments`` ≈ number of cells). Other
            params are passed to the scikit-image function; one it does not take is a ``ValueError`` naming the
            valid keys.

    Returns:
        LongTensor N×1×H×W on the images' device; broadcasts over channels for Captum's ``feature_mask``.
    """
    check_images(images, check_range=False)
    if algorithm not in ALGORITHMS:
        raise ValueError(unknown_name_message("superpixel algorithm", str(algorithm), ALGORITHMS,
                                              " Set segmentation.algorithm to one of these."))
    check_params(algorithm, params)
    if algorithm == "grid":
        return grid_masks(images, **params)
    from skimage.segmentation import quickshift, slic

    params = sized_params(algorithm, params, *images.shape[-2:])
    arr = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy().astype(np.float64)
    masks = []
    for img in arr:  # scikit-image segments one image at a time (see module docstring)
        if algorithm == "slic":
            kw = {**DEFAULTS["slic"], "start_label": 0, **params}
            seg = slic(img if img.shape[-1] > 1 else img[..., 0],
                       channel_axis=-1 if img.shape[-1] > 1 else None, **kw)
        else:
            rgb = img if img.shape[-1] == 3 else np.repeat(img[..., :1], 3, axis=-1)
            seg = quickshift(rgb, **params)
        # Relabel to 0..K-1: SLIC can skip labels, and Captum sizes its interpretable space by the largest id.
        _, inverse = np.unique(seg, return_inverse=True)
        masks.append(inverse.reshape(seg.shape))
    return torch.from_numpy(np.stack(masks)).long().unsqueeze(1).to(images.device)
def grid_masks(images: Tensor, patch_size: int | None = None, n_segments: int | None = None) -> Tensor:
    """Regular square patches as features (row-major ids); ``patch_size`` pixels or ≈ ``n_segments`` cells.

    Returns:
        LongTensor N×1×H×W (the same grid for every image).
    """
    n, _, h, w = images.shape
    if patch_size is None:
        if n_segments is None:
            patch_size = 8
        else:
            if n_segments < 1:
                raise ValueError(f"n_segments must be >= 1, got {n_segments}")
            patch_size = max(1, round((h * w / n_segments) ** 0.5))
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1 pixel, got {patch_size}")
    rows = torch.arange(h, device=images.device) // patch_size
    cols = torch.arange(w, device=images.device) // patch_size
    n_cols = (w + patch_size - 1) // patch_size
    mask = rows[:, None] * n_cols + cols[None, :]
    return mask.view(1, 1, h, w).expand(n, 1, h, w).contiguous()
