"""Feature masks (superpixels or a regular grid) for perturbation methods: LIME, Kernel SHAP, feature ablation.

Superpixels come from scikit-image (SLIC: Achanta et al., TPAMI 2012; Quickshift: Vedaldi & Soatto, ECCV 2008), the
segmentations the LIME paper (Ribeiro et al., KDD 2016) uses for images. scikit-image works on one NumPy image at a
time, so these masks are made with a per-image loop on the CPU. That is deliberate and cheap: a mask is computed once
per image, while the method that uses it then runs hundreds to thousands of model forward passes on the device. The
``grid`` algorithm needs no scikit-image and is pure tensor code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from xai_bench.checks import check_images
from xai_bench.registry import unknown_name_message

ALGORITHMS = ("slic", "quickshift", "grid")


def superpixel_masks(images: Tensor, algorithm: str = "slic", **params: Any) -> Tensor:
    """One feature mask per image: integer ids ``0 … K_i−1``, contiguous, shared by all channels.

    Args:
        images: N×C×H×W float images in [0, 1] (C = 1 or 3).
        algorithm: ``"slic"`` (params: ``n_segments`` = 50, ``compactness`` = 10, ``sigma`` = 1, …),
            ``"quickshift"`` (params: ``kernel_size`` = 4, ``max_dist`` = 200, ``ratio`` = 0.2, …; grey images are
            replicated to RGB because quickshift needs colour) or ``"grid"`` (params: ``patch_size`` = 8 pixels, or
            ``n_segments`` ≈ number of cells). Other params are passed to the scikit-image function.

    Returns:
        LongTensor N×1×H×W on the images' device; broadcasts over channels for Captum's ``feature_mask``.
    """
    check_images(images, check_range=False)
    if algorithm == "grid":
        return grid_masks(images, **params)
    if algorithm not in ALGORITHMS:
        raise ValueError(unknown_name_message("superpixel algorithm", str(algorithm), ALGORITHMS,
                                              " Set segmentation.algorithm to one of these."))
    from skimage.segmentation import quickshift, slic

    arr = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy().astype(np.float64)
    masks = []
    for img in arr:  # scikit-image segments one image at a time (see module docstring)
        if algorithm == "slic":
            kw = {"n_segments": 50, "compactness": 10.0, "sigma": 1.0, "start_label": 0, **params}
            seg = slic(img if img.shape[-1] > 1 else img[..., 0],
                       channel_axis=-1 if img.shape[-1] > 1 else None, **kw)
        else:
            kw = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2, **params}
            rgb = img if img.shape[-1] == 3 else np.repeat(img[..., :1], 3, axis=-1)
            seg = quickshift(rgb, **kw)
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
