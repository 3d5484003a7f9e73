"""Feature Ablation over a feature mask (superpixels) and Occlusion (sliding windows), every ablated copy of a
forward pass built in one tensor operation.

Same method and numbers as Captum's :class:`captum.attr.FeatureAblation` with a ``feature_mask`` (the reference
tests compare the two map for map): feature ``k``'s attribution is ``f(x)[t] − f(x with feature k set to the
baseline)[t]``, written to every position of the feature.

Why not Captum's class itself: on small images its per-call work outweighs the model. For every call it formats the
inputs, runs the clean image in a forward of its own, and builds each chunk of ablated copies feature by feature
in Python; on the benchmark's overhead regime (a small CNN at 32², one image per call) that set-up was about as
long as the model's forward over all 33 ablated copies (``benchmarks/run.py``, Feature Ablation row). Here the
ablated copies of a chunk are one ``torch.where`` over a one-hot of the mask, and the clean images ride in the first
chunk's forward. :class:`BatchedOcclusion` does the same for Captum's :class:`captum.attr.Occlusion` (windows
placed as Captum places them, each pixel's attribution averaged over the windows covering it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from xai_bench.checks import as_class_indices
from xai_bench.progress import ProgressBar

__all__ = ["BatchedFeatureAblation", "BatchedOcclusion"]


class BatchedFeatureAblation:
    """Feature Ablation for N×C×H×W images with an integer feature mask; Captum's ``FeatureAblation`` arguments.

    Args:
        forward_func: the model, mapping N×C×H×W images to N×K scores.
    """

    def __init__(self, forward_func: Callable[[Tensor], Tensor]) -> None:
        self.forward_func = forward_func

    def attribute(self, inputs: Tensor, baselines: float | Tensor | None = None, target: Any = None,
                  feature_mask: Tensor | None = None, perturbations_per_eval: int = 1,
                  show_progress: bool = False) -> Tensor:
        """Attributions of ``inputs`` (N×C×H×W, float32 like Captum's).

        Args:
            inputs: the images.
            baselines: what an ablated feature is set to: a number or a tensor broadcastable to ``inputs``
                (default 0, as Captum).
            target: one class per image (N ints, a tensor, or one int for all).
            feature_mask: integer feature ids ≥ 0 broadcastable to ``inputs`` (N×1×H×W superpixels: a feature spans
                the channels). Default: every scalar of an image is its own feature (Captum's default).
            perturbations_per_eval: features ablated per forward pass (each pass takes N × this many images).
            show_progress: a progress bar over the forward passes.
        """
        x = inputs
        if x.dim() != 4:
            raise ValueError(f"BatchedFeatureAblation takes N×C×H×W images, got shape {tuple(x.shape)}")
        n = x.shape[0]
        if feature_mask is None:
            mask = torch.arange(x[0].numel(), device=x.device).view(1, *x.shape[1:]).expand_as(x)
        else:
            if feature_mask.dtype.is_floating_point or feature_mask.dtype == torch.bool:
                raise ValueError(f"feature_mask must hold integer feature ids, got dtype {feature_mask.dtype}")
            try:
                mask = feature_mask.to(x.device).expand_as(x)
            except RuntimeError:
                raise ValueError(f"feature_mask of shape {tuple(feature_mask.shape)} does not broadcast to the "
                                 f"images' {tuple(x.shape)}; give N×1×H×W (superpixels) or N×C×H×W") from None
        if mask.numel() and int(mask.min()) < 0:
            raise ValueError(f"feature_mask has negative ids (min {int(mask.min())}); number features from 0")
        n_feat = int(mask.max()) + 1 if mask.numel() else 0
        per_eval = max(int(perturbations_per_eval or 1), 1)
        base = torch.as_tensor(0.0 if baselines is None else baselines, dtype=x.dtype, device=x.device)
        if base.dim() == 4:  # per image: N×1×C×H×W against the N×P×C×H×W copies
            base = base.unsqueeze(1)
        t = _targets(target, n, x.device)

        diffs = torch.zeros(n, n_feat, dtype=torch.float32, device=x.device)
        clean: Tensor | None = None
        # ProgressBar, not tqdm: it also reports to the enclosing progress callback (the web app's Stop acts there)
        with ProgressBar(total=n * n_feat, desc="Feature Ablation", show=bool(show_progress), unit="img") as bar:
            for start in range(0, n_feat, per_eval):
                ks = torch.arange(start, min(start + per_eval, n_feat), device=x.device)
                p = len(ks)
                ablate = mask.unsqueeze(1) == ks.view(1, p, 1, 1, 1)  # N×P×C×H×W
                copies = torch.where(ablate, base, x.unsqueeze(1)).flatten(0, 1)
                clean, scores = _score_pass(self.forward_func, x, copies, t, clean)
                diffs[:, start:start + p] = clean[:, None] - scores
                bar.update(n * p)
        if n_feat == 0:
            return torch.zeros_like(x, dtype=torch.float32)
        return diffs.gather(1, mask.reshape(n, -1)).view(x.shape)


def _score_pass(forward_func: Callable[[Tensor], Tensor], x: Tensor, copies: Tensor, t: Tensor,
                clean: Tensor | None) -> tuple[Tensor, Tensor]:
    """One forward pass over the (N·P) perturbed ``copies`` of the N images ``x``, with ``x`` itself in front when
    ``clean`` (the N clean target scores) is not known yet. Returns (clean scores N, perturbed scores N×P), float32."""
    n = x.shape[0]
    out = forward_func(copies if clean is not None else torch.cat([x, copies]))
    if out.dim() != 2:
        raise ValueError(f"the model returned scores of shape {tuple(out.shape)}; expected N×K")
    rows = torch.arange(n, device=x.device)
    if clean is None:
        clean, out = out[rows, t].float(), out[n:]
    p = out.shape[0] // n
    scores = out.view(n, p, -1)[rows[:, None], torch.arange(p, device=x.device)[None, :], t[:, None]]
    return clean, scores.float()


def _targets(target: Any, n: int, device: torch.device) -> Tensor:
    if target is None:
        raise ValueError("BatchedFeatureAblation needs a target class per image (target=...)")
    return as_class_indices(target, n, device, "target")


class BatchedOcclusion:
    """Occlusion for N×C×H×W images; Captum's ``Occlusion`` arguments and maps (to float rounding).

    A window of ``sliding_window_shapes`` (C', h, w) starts at every multiple of ``strides`` along each axis,
    ``ceil((size − window) / stride) + 1`` positions per axis as in Captum (the last window may be cut by the border);
    a pixel's attribution is the mean score drop of the windows that cover it.

    Args:
        forward_func: the model, mapping N×C×H×W images to N×K scores.
    """

    def __init__(self, forward_func: Callable[[Tensor], Tensor]) -> None:
        self.forward_func = forward_func

    def attribute(self, inputs: Tensor, sliding_window_shapes: tuple[int, int, int],
                  strides: int | tuple[int, int, int] | None = None, baselines: float | Tensor | None = None,
                  target: Any = None, perturbations_per_eval: int = 1, show_progress: bool = False) -> Tensor:
        """Attributions of ``inputs`` (N×C×H×W, float32).

        Args:
            inputs: the images.
            sliding_window_shapes: the window (C', h, w), e.g. ``(C, 8, 8)`` to occlude every channel at once.
            strides: the step along each axis (an int for all three); default 1, as Captum.
            baselines: what an occluded pixel is set to: a number or a tensor broadcastable to ``inputs``.
            target: one class per image (N ints, a tensor, or one int for all).
            perturbations_per_eval: windows per forward pass (each pass takes N × this many images).
            show_progress: a progress bar over the forward passes.
        """
        x = inputs
        if x.dim() != 4:
            raise ValueError(f"BatchedOcclusion takes N×C×H×W images, got shape {tuple(x.shape)}")
        window = tuple(int(v) for v in sliding_window_shapes)
        stride = (1, 1, 1) if strides is None else (
            (int(strides),) * 3 if isinstance(strides, int) else tuple(int(v) for v in strides))
        if len(window) != 3 or len(stride) != 3:
            raise ValueError(f"sliding_window_shapes and strides need 3 values (C, H, W) for N×C×H×W images, got "
                             f"{sliding_window_shapes} and {strides}")
        dims = tuple(x.shape[1:])
        if any(w < 1 or w > d for w, d in zip(window, dims)) or any(st < 1 for st in stride):
            raise ValueError(f"sliding_window_shapes {window} must lie within the image {dims} and strides {stride} "
                             f"be ≥ 1")
        if any(st > w for st, w in zip(stride, window)):
            raise ValueError(f"strides {stride} larger than the window {window} leave pixels no window covers (as "
                             f"Captum, refused); use a stride ≤ the window")
        n = x.shape[0]
        # per axis: where each window position starts, and which of the axis' indices it covers (positions × size)
        covers = []
        for d, w, st in zip(dims, window, stride):
            starts = torch.arange(-(-(d - w) // st) + 1, device=x.device) * st
            idx = torch.arange(d, device=x.device)
            covers.append((idx[None, :] >= starts[:, None]) & (idx[None, :] < starts[:, None] + w))
        counts = [c.shape[0] for c in covers]
        n_win = counts[0] * counts[1] * counts[2]
        per_eval = max(int(perturbations_per_eval or 1), 1)
        base = torch.as_tensor(0.0 if baselines is None else baselines, dtype=x.dtype, device=x.device)
        if base.dim() == 4:
            base = base.unsqueeze(1)
        t = _targets(target, n, x.device)

        total = torch.zeros(n, *dims, dtype=torch.float32, device=x.device)
        weight = torch.zeros(dims, dtype=torch.float32, device=x.device)
        clean: Tensor | None = None
        with ProgressBar(total=n * n_win, desc="Occlusion", show=bool(show_progress), unit="img") as bar:
            for start in range(0, n_win, per_eval):
                k = torch.arange(start, min(start + per_eval, n_win), device=x.device)
                p = len(k)
                # window k ↦ (c, y, x) positions, the first axis slowest (Captum's order is irrelevant to the result)
                kc, ky, kx = k // (counts[1] * counts[2]), (k // counts[2]) % counts[1], k % counts[2]
                masks = (covers[0][kc][:, :, None, None] & covers[1][ky][:, None, :, None]
                         & covers[2][kx][:, None, None, :])
                copies = torch.where(masks.unsqueeze(0), base, x.unsqueeze(1)).flatten(0, 1)  # (N·P)×C×H×W
                clean, scores = _score_pass(self.forward_func, x, copies, t, clean)
                m = masks.float()
                total += torch.einsum("np,pchw->nchw", clean[:, None] - scores, m)
                weight += m.sum(0)
                bar.update(n * p)
        return total / weight.clamp_min(1)  # every pixel is covered: the windows start at 0 and reach the border
