"""Class activation maps on the CAM template (:mod:`.cam_base`): Grad-CAM, Score-CAM, Eigen-CAM and Grad-CAM++.

Each follows Captum's layer-method shape (``Method(forward_func, layer)``, ``attribute(inputs, target, ...)``) and
returns maps at the layer's resolution, Tensor[N, 1, h, w], like ``captum.attr.LayerGradCam``; the template supplies
the hooks, the ``reshape_transform`` (ViT tokens, FPN levels) and the targets, each class only its weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_bench.attribution.cam_base import BaseCAM
from xai_bench.attribution.cam_targets import as_target
from xai_bench.batching import AdaptiveBatcher, default_batch_size

__all__ = ["EigenCAM", "GradCAM", "GradCAMPlusPlus", "ScoreCAM", "is_target_object"]


def is_target_object(target: Any) -> bool:
    """A target object (callable on outputs) rather than Captum-style class indices."""
    return target is not None and callable(target) and not isinstance(target, (int, list, Tensor))


def resolve_class_target(target: Any, inputs: Tensor) -> Any:
    """Class indices for all N images → a target object; ``None`` stays ``None`` (the prediction, per batch)."""
    return target if target is None or is_target_object(target) else as_target(target, inputs, None)


def _rows(target: Any, rows: slice) -> Any:
    return None if target is None else _Rows(target, rows)


class GradCAM(BaseCAM):
    r"""Grad-CAM: activation maps weighted by the spatial mean of the target's gradient.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017.
    https://arxiv.org/abs/1610.02391

    The same numbers as ``captum.attr.LayerGradCam`` on a convolutional layer (tested), on the CAM template, so it
    also explains ViT tokens and FPN levels through a ``reshape_transform`` and any target object.

    Args:
        forward_func: model mapping Tensor[N, C, H, W] → Tensor[N, K] (logits), or what the target reads.
        layer: module whose output is explained.
        reshape_transform: see :class:`~xai_bench.attribution.cam_base.BaseCAM`.
    """

    def cam(self, inputs: Tensor, target: Any = None, batch_size: int | None = None) -> Tensor:
        r"""
        Args:
            batch_size: images per forward/backward pass (``None``: all at once; halved on out-of-memory).
        """
        target = resolve_class_target(target, inputs)
        batcher = AdaptiveBatcher(batch_size or inputs.shape[0], device=inputs.device)

        def chunk(rows: slice) -> Tensor:
            acts, grads = self._gradients(inputs[rows], _rows(target, rows))
            return (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)

        return batcher(chunk, inputs.shape[0])


class _Rows:
    """A target restricted to the images of one batch slice (so row 0 of the slice is image ``rows.start``)."""

    def __init__(self, target: Any, rows: slice) -> None:
        self.target, self.offset = target, rows.start or 0

    def __call__(self, outputs: Any, rows: Tensor) -> Tensor:
        return self.target(outputs, rows + self.offset)


class ScoreCAM(BaseCAM):
    r"""Score-CAM: weights each activation map by the class score of the input masked with it (gradient-free).

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks", CVPR-W 2020.
    https://arxiv.org/abs/1910.01279

    Each channel's activation map is upsampled (bilinear) to the input size and min-max normalised to [0, 1]; the
    input is multiplied by it and the model's softmax probability of the target class on that masked input is the
    channel's weight, as in the authors' code (the paper's baseline subtraction only adds a constant to every
    weight). Channels whose map is constant carry no spatial information and get weight 0. The map is
    ``ReLU(Σ_k w_k A_k)`` at the layer's resolution. All N·K masked inputs go through the model in large batches.

    ``max_channels`` scores only the K' channels of largest spatial variance per image and gives the rest weight 0
    (the authors' "Faster Score-CAM"): K/K' times fewer forward passes, for channels that are nearly constant and
    contribute little to the map anyway.

    Args:
        forward_func: model mapping Tensor[N, C, H, W] → Tensor[N, K].
        layer: module whose output Tensor[N, K, h, w] is explained.
    """

    forward_only = True
    figure = "overlay"

    def cam(
        self,
        inputs: Tensor,
        target: Any = None,
        batch_size: int | None = None,
        use_softmax: bool = True,
        show_progress: bool | None = None,
        max_channels: int | None = None,
    ) -> Tensor:
        r"""
        Args:
            inputs: images, Tensor[N, C, H, W].
            target: class per image (int, list / 1-D tensor of N ints), ``None`` for the predicted class, or a
                target object. Default: None
            batch_size: masked inputs per forward pass (``None`` picks one; halved on out-of-memory). Default: None
            use_softmax: weight channels by softmax probabilities (paper); False uses raw outputs (class targets
                only; a target object scores as it is). Default: True
            show_progress: report progress per batch of masked inputs with an ETA (``None``: inside
                :func:`xai_bench.progress.progress_reporting`, as the tasks are). Default: None
            max_channels: score only this many channels per image, those whose activation map varies most
                (``None``: all K, as in the paper). Default: None

        Returns:
            Tensor[N, h, w] at the layer's resolution.
        """
        n, _, h, w = inputs.shape
        if batch_size is None:
            model = self.forward_func if isinstance(self.forward_func, nn.Module) else None
            batch_size = default_batch_size(model, inputs.shape[1:], inputs.device)
        batcher = AdaptiveBatcher(batch_size, device=inputs.device)
        with torch.no_grad():
            logits, acts = self._forward_with_activations(inputs)
            score_target = as_target(target, inputs, logits, softmax=use_softmax)
            acts = acts.detach()
            k = acts.shape[1]
            flat = acts.flatten(2)
            lo, hi = flat.amin(dim=2), flat.amax(dim=2)
            informative = (hi - lo) > 1e-6 * hi.abs().clamp_min(1e-6)
            if max_channels is not None and int(max_channels) < 1:
                raise ValueError(f"max_channels must be >= 1 or None, got {max_channels}")
            k_used = k if max_channels is None else min(k, int(max_channels))
            # N×K' channel ids scored per image (all of them, or those whose map varies most)
            channels = (torch.arange(k, device=inputs.device).expand(n, k) if k_used == k
                        else flat.float().var(dim=2).topk(k_used, dim=1).indices)

            def score(rows: slice) -> Tensor:
                # row r of the flattened (image, channel) grid is the (r % K')-th scored channel of image r // K'
                idx = torch.arange(rows.start, rows.stop, device=inputs.device)
                img = idx // k_used
                ch = channels[img, idx % k_used]
                maps = F.interpolate(acts[img, ch].unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)
                m_lo = maps.amin(dim=(2, 3), keepdim=True)
                maps = (maps - m_lo) / (maps.amax(dim=(2, 3), keepdim=True) - m_lo).clamp_min(1e-12)
                return score_target(self.forward_func(inputs[img] * maps), img)

            scores = batcher(score, n * k_used, show_progress=show_progress, desc="Score-CAM").view(n, k_used)
            weights = torch.zeros(n, k, device=inputs.device, dtype=scores.dtype).scatter_(1, channels, scores)
            weights = weights * informative
            return torch.einsum("nk,nkhw->nhw", weights.to(acts.dtype), acts)


class EigenCAM(BaseCAM):
    r"""Eigen-CAM: the first principal component of the layer's activations (class-agnostic, gradient-free).

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020.
    https://arxiv.org/abs/2008.00299

    For each image the activations are arranged as an (h·w)×K matrix, centred over pixels, and projected on their
    first right singular vector. A singular vector's sign is arbitrary, so it is flipped where needed to make the
    map correlate positively with the activations summed over channels (what a plain CAM would show).

    Args:
        forward_func: model mapping Tensor[N, C, H, W] → Tensor[N, K].
        layer: module whose output Tensor[N, K, h, w] is explained.
    """

    figure = "overlay"

    def cam(self, inputs: Tensor, target: Any = None, batch_size: int | None = None) -> Tensor:
        r"""
        Args:
            inputs: images, Tensor[N, C, H, W].
            target: ignored (Eigen-CAM does not depend on the class or box); accepted so that every method can be
                called alike. Default: None
            batch_size: images per forward pass (``None``: all at once; halved on out-of-memory). Default: None

        Returns:
            Tensor[N, h, w] at the layer's resolution.
        """
        del target
        batcher = AdaptiveBatcher(batch_size or inputs.shape[0], device=inputs.device)
        with torch.no_grad():
            acts = batcher(lambda x: self._forward_with_activations(x)[1], inputs)
            return self.project(acts)

    @staticmethod
    def project(acts: Tensor) -> Tensor:
        """Tensor[N, K, h, w] activations → Tensor[N, h, w] signed first-principal-component maps."""
        n, _, h, w = acts.shape
        x = acts.float().flatten(2).transpose(1, 2)  # N × hw × K
        x = torch.nan_to_num(x - x.mean(dim=1, keepdim=True))
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        proj = torch.einsum("npk,nk->np", x, vh[:, 0])
        total = acts.float().flatten(2).sum(dim=1)
        corr = ((proj - proj.mean(1, keepdim=True)) * (total - total.mean(1, keepdim=True))).sum(1)
        sign = torch.where(corr < 0, -1.0, 1.0).to(proj.dtype)
        return (proj * sign.unsqueeze(1)).view(n, h, w).to(acts.dtype)


class GradCAMPlusPlus(BaseCAM):
    r"""Grad-CAM++: Grad-CAM with pixel-wise weights from higher-order derivatives.

    Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks", WACV 2018.
    https://arxiv.org/abs/1710.11063

    With the paper's exponential score, the second and third derivatives reduce to powers of the gradient ``g`` of
    the class logit w.r.t. the activations ``A``:
    :math:`\alpha^{kc}_{ij} = g^2 / (2 g^2 + \sum_{ab} A^k_{ab} \, g^3)`, :math:`w^c_k = \sum_{ij} \alpha^{kc}_{ij}
    \mathrm{ReLU}(g_{ij})`, and the map is :math:`\mathrm{ReLU}(\sum_k w^c_k A^k)`.

    Args:
        forward_func: model mapping Tensor[N, C, H, W] → Tensor[N, K] (logits, not probabilities).
        layer: module whose output Tensor[N, K, h, w] is explained.
    """

    figure = "overlay"

    def cam(self, inputs: Tensor, target: Any = None, batch_size: int | None = None) -> Tensor:
        r"""
        Args:
            inputs: images, Tensor[N, C, H, W].
            target: class per image (int, list / 1-D tensor of N ints), ``None`` for the predicted class, or a
                target object. Default: None
            batch_size: images per forward/backward pass (``None``: all at once; halved on out-of-memory).
                Default: None

        Returns:
            Tensor[N, h, w] at the layer's resolution.
        """
        target = resolve_class_target(target, inputs)
        batcher = AdaptiveBatcher(batch_size or inputs.shape[0], device=inputs.device)

        def cam_chunk(rows: slice) -> Tensor:
            acts, grads = self._gradients(inputs[rows], _rows(target, rows))
            g2 = grads.pow(2)
            denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads
            alpha = torch.where(grads != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                                torch.zeros_like(g2))
            weights = (alpha * F.relu(grads)).sum(dim=(2, 3))
            return torch.einsum("nk,nkhw->nhw", weights, acts)

        return batcher(cam_chunk, inputs.shape[0])
