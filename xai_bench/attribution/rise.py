"""RISE: saliency as the score-weighted average of random occlusion masks."""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from xai_bench.accel import fast_forward
from xai_bench.batching import AdaptiveBatcher, default_batch_size
from xai_bench.checks import check_images, target_indices
from xai_bench.progress import ProgressBar

__all__ = ["RISE", "generate_rise_masks"]

_MASK_BLOCK = 256  # masks drawn per RNG call (fewer for images above 512×512)
_MAX_MASK_VALUES = 2**26  # bound on mask values held at once (256 MB in float32)


def generate_rise_masks(n_masks: int, input_hw: tuple[int, int], grid_size: int, p: float, *,
                        device: torch.device | str | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Random smooth masks as in RISE (Petsiuk et al., 2018), built on ``device`` in one vectorised step.

    Each mask is a ``grid_size``×``grid_size`` binary grid with P(1) = ``p``, bilinearly upsampled to
    ``(grid_size + 1)`` cells of ``ceil(H / grid_size)``×``ceil(W / grid_size)`` pixels, then cropped to H×W at a
    random shift of less than one cell, so that mask edges do not all fall on the same pixel grid.

    Args:
        n_masks: number of masks.
        input_hw: ``(H, W)`` of the images.
        grid_size: cells per side ``s`` of the binary grid.
        p: probability that a cell is kept (1).
        device: where to build them.
        generator: RNG for reproducibility (must live on ``device``).

    Returns:
        Tensor[n_masks, H, W] with values in [0, 1].
    """
    h, w = input_hw
    cell_h, cell_w = math.ceil(h / grid_size), math.ceil(w / grid_size)
    grid = (torch.rand(n_masks, 1, grid_size, grid_size, device=device, generator=generator) < p).float()
    up = F.interpolate(grid, size=((grid_size + 1) * cell_h, (grid_size + 1) * cell_w), mode="bilinear",
                       align_corners=False)[:, 0]
    dy = torch.randint(0, cell_h, (n_masks, 1), device=device, generator=generator)
    dx = torch.randint(0, cell_w, (n_masks, 1), device=device, generator=generator)
    rows = (dy + torch.arange(h, device=device)).unsqueeze(2)  # n×H×1
    cols = (dx + torch.arange(w, device=device)).unsqueeze(1)  # n×1×W
    # bilinear weights can overshoot 1 by a rounding error
    return up[torch.arange(n_masks, device=device).view(-1, 1, 1), rows, cols].clamp_(0.0, 1.0)


_CACHE_VALUES = 2**22  # the largest seeded mask set kept between calls (16 MB in float32)
_MASK_CACHE: dict[tuple[Any, ...], Tensor] = {}


def _seeded_masks(n_masks: int, hw: tuple[int, int], grid_size: int, p: float, seed: int | None,
                  device: torch.device, block: int) -> Tensor | None:
    """All masks of a seeded call, kept for the next call with the same settings (the last set only).

    A seed gives the same masks on every call, as in the RISE paper (one mask set for all images), yet drawing them
    again cost ~15 % of a 32² call of 500 masks on a small CNN. Drawn block after block from one generator, exactly
    as the chunked loop draws them, so the maps are the same with or without the cache. ``None`` (draw as you go)
    without a seed or for sets larger than ``_CACHE_VALUES`` values.
    """
    h, w = hw
    if seed is None or n_masks * h * w > _CACHE_VALUES:
        return None
    key = (n_masks, h, w, grid_size, p, int(seed), str(device), block)
    masks = _MASK_CACHE.get(key)
    if masks is None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
        masks = torch.cat([generate_rise_masks(min(block, n_masks - b), hw, grid_size, p, device=device,
                                               generator=generator) for b in range(0, n_masks, block)])
        _MASK_CACHE.clear()
        _MASK_CACHE[key] = masks
    return masks


class RISE:
    r"""Randomized Input Sampling for Explanation (RISE), a black-box saliency method.

    Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018.
    https://arxiv.org/abs/1806.07421

    The model is queried on the input multiplied by ``n_masks`` random smooth masks; the saliency of a pixel is the
    average class score over the masks weighted by how much each mask keeps that pixel:
    :math:`S(x) = \frac{1}{N \cdot p} \sum_i f_c(I \odot M_i) \, M_i(x)`.
    Masks are generated on the input's device in chunks and every (mask, image) pair is one row of large batched
    forward passes, so the cost is about ``n_masks × n_images`` images' worth of forward passes. The same masks are
    used for every image in a call.

    Args:
        forward_func: model (or any callable) mapping Tensor[N, C, H, W] → Tensor[N, K].
    """

    forward_only = True  # masked forward passes only: bf16 autocast is safe
    figure = "overlay"  # a coarse saliency blob reads best over the photo

    def __init__(self, forward_func: Callable[[Tensor], Tensor]) -> None:
        self.forward_func = forward_func

    def attribute(
        self,
        inputs: Tensor,
        target: int | list[int] | Tensor | None = None,
        n_masks: int = 4000,
        grid_size: int = 7,
        p: float = 0.5,
        batch_size: int | None = None,
        seed: int | None = None,
        show_progress: bool | None = None,
        use_softmax: bool = True,
    ) -> Tensor:
        r"""
        Args:
            inputs: images, Tensor[N, C, H, W].
            target: class to explain: an int for all images, a list / 1-D tensor of N ints, or ``None`` for the
                model's prediction on the clean input. Default: None
            n_masks: number of random masks (the paper uses 4000–8000 for ImageNet). Default: 4000
            grid_size: cells per side of the low-resolution binary grid. Default: 7
            p: probability that a grid cell is kept. Default: 0.5
            batch_size: masked images per forward pass; ``None`` picks one from the device and input size. It is
                halved automatically on out-of-memory errors. Default: None
            seed: seed of a private RNG on the input's device, for reproducible masks (the same for any
                ``batch_size`` on a given device and input size); ``None`` uses the global RNG. Default: None
            show_progress: report progress per batch of masked images with an ETA (``None``: when the caller is
                inside :func:`xai_bench.progress.progress_reporting`, as the tasks are). Default: None
            use_softmax: score each masked image by the softmax probability of ``target`` (as in the paper); set False
                when the model already outputs probabilities or to weight masks by raw logits. Default: True

        Returns:
            Tensor[N, 1, H, W] saliency on the input's device.
        """
        check_images(inputs, "inputs", check_range=False)
        if int(n_masks) < 1:
            raise ValueError(f"n_masks must be >= 1, got {n_masks}")
        if int(grid_size) < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        if not 0.0 < float(p) <= 1.0:
            raise ValueError(f"p (probability of keeping a cell) must be in (0, 1], got {p}")
        n_masks, grid_size, p = int(n_masks), int(grid_size), float(p)
        device = inputs.device
        n, _, h, w = inputs.shape
        inputs = inputs.detach()
        if batch_size is None:
            model = self.forward_func if isinstance(self.forward_func, torch.nn.Module) else None
            batch_size = default_batch_size(model, inputs.shape[1:], device)
        batcher = AdaptiveBatcher(batch_size, device=device)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(seed))

        model = self.forward_func if isinstance(self.forward_func, torch.nn.Module) else None
        # forward passes only: inference mode and channels_last weights (undone on exit)
        with fast_forward(model, device):
            targets = target_indices(self.forward_func, inputs, target)
            saliency = torch.zeros(n, h, w, device=device, dtype=torch.float32)
            # masks are drawn in fixed blocks, so a seed gives the same masks whatever the batch size; a chunk
            # groups enough blocks for a few batches of (mask, image) pairs but never more than ~64 M mask values,
            # so memory stays bounded however large n_masks is
            max_masks = max(1, _MAX_MASK_VALUES // (h * w))
            block = min(_MASK_BLOCK, max_masks)
            per_chunk = max(1, min(math.ceil(4 * batch_size / n), max_masks) // block)
            cached = _seeded_masks(n_masks, (h, w), grid_size, p, seed, device, block)
            with ProgressBar(total=n_masks * n, desc="RISE", show=show_progress, unit="img") as bar:
                for start in range(0, n_masks, per_chunk * block):
                    blocks = range(start, min(n_masks, start + per_chunk * block), block)
                    masks = cached[start:start + per_chunk * block] if cached is not None else torch.cat([
                        generate_rise_masks(min(block, n_masks - b), (h, w), grid_size, p, device=device,
                                            generator=generator)
                        for b in blocks
                    ])
                    m = masks.shape[0]
                    scores = batcher(self._scorer(inputs, masks, targets, use_softmax), m * n, progress=bar).view(m, n)
                    saliency += torch.einsum("mn,mhw->nhw", scores.float(), masks)
        return (saliency / (n_masks * p)).unsqueeze(1).to(inputs.dtype)

    def _scorer(self, inputs: Tensor, masks: Tensor, targets: Tensor, use_softmax: bool) -> Callable[[slice], Tensor]:
        n = inputs.shape[0]

        def score(rows: slice) -> Tensor:
            # row r of the flattened (mask, image) grid is mask r // n applied to image r % n
            idx = torch.arange(rows.start, rows.stop, device=inputs.device)
            mask_idx, img_idx = idx // n, idx % n
            out = self.forward_func(inputs[img_idx] * masks[mask_idx].unsqueeze(1))
            if use_softmax:
                out = out.softmax(dim=1)
            return out.gather(1, targets[img_idx].unsqueeze(1)).squeeze(1)

        return score
