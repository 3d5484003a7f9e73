"""Class activation maps Captum lacks: Score-CAM, Eigen-CAM and Grad-CAM++.

All three follow Captum's layer-method shape (``Method(forward_func, layer)``, ``attribute(inputs, target, ...)``) and
return maps at the layer's resolution, Tensor[N, 1, h, w], like ``captum.attr.LayerGradCam``; upsample them with
``captum.attr.LayerAttribution.interpolate``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_bench.batching import AdaptiveBatcher, default_batch_size
from xai_bench.checks import check_images, target_indices

__all__ = ["EigenCAM", "GradCAMPlusPlus", "ScoreCAM"]


def _layer_output(out: object, layer: nn.Module) -> Tensor:
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"layer {type(layer).__name__} must output a Tensor[N, K, h, w] for a CAM, got {shape}; "
                         f"pick a convolutional layer (for ViTs reshape tokens to a grid first)")
    return out


class _LayerCAM:
    """Shared plumbing: hold the model and layer, run forwards that record the layer's output."""

    def __init__(self, forward_func: Callable[[Tensor], Tensor], layer: nn.Module) -> None:
        if not isinstance(layer, nn.Module):
            raise ValueError(f"layer must be an nn.Module (e.g. model.get_layer(name)), got {type(layer).__name__}")
        self.forward_func = forward_func
        self.layer = layer

    def _forward_with_activations(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Model output and the layer's output (still attached to the graph if grad is enabled)."""
        store: dict[str, Tensor] = {}

        def hook(module: nn.Module, args: object, out: object) -> None:
            store["act"] = _layer_output(out, module)

        handle = self.layer.register_forward_hook(hook)
        try:
            out = self.forward_func(inputs)
        finally:
            handle.remove()
        if "act" not in store:
            raise ValueError(f"layer {type(self.layer).__name__} was not called by the forward pass; "
                             f"is it part of the model?")
        return out, store["act"]

    @staticmethod
    def _finish(cam: Tensor, relu_attributions: bool, dtype: torch.dtype) -> Tensor:
        cam = cam.unsqueeze(1)
        return (F.relu(cam) if relu_attributions else cam).to(dtype)


class ScoreCAM(_LayerCAM):
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

    def attribute(
        self,
        inputs: Tensor,
        target: int | list[int] | Tensor | None = None,
        relu_attributions: bool = True,
        batch_size: int | None = None,
        use_softmax: bool = True,
        show_progress: bool | None = None,
        max_channels: int | None = None,
    ) -> Tensor:
        r"""
        Args:
            inputs: images, Tensor[N, C, H, W].
            target: class per image (int, list / 1-D tensor of N ints) or ``None`` for the predicted class.
                Default: None
            relu_attributions: apply a ReLU to the weighted sum, as in the paper. Default: True
            batch_size: masked inputs per forward pass (``None`` picks one; halved on out-of-memory). Default: None
            use_softmax: weight channels by softmax probabilities (paper); False uses raw outputs. Default: True
            show_progress: report progress per batch of masked inputs with an ETA (``None``: inside
                :func:`xai_bench.progress.progress_reporting`, as the tasks are). Default: None
            max_channels: score only this many channels per image, those whose activation map varies most
                (``None``: all K, as in the paper). Default: None

        Returns:
            Tensor[N, 1, h, w] at the layer's resolution.
        """
        check_images(inputs, "inputs", check_range=False)
        inputs = inputs.detach()
        n, _, h, w = inputs.shape
        if batch_size is None:
            model = self.forward_func if isinstance(self.forward_func, nn.Module) else None
            batch_size = default_batch_size(model, inputs.shape[1:], inputs.device)
        batcher = AdaptiveBatcher(batch_size, device=inputs.device)
        with torch.no_grad():
            logits, acts = self._forward_with_activations(inputs)
            targets = target_indices(self.forward_func, inputs, target, logits=logits)
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
                out = self.forward_func(inputs[img] * maps)
                if use_softmax:
                    out = out.softmax(dim=1)
                return out.gather(1, targets[img].unsqueeze(1)).squeeze(1)

            scores = batcher(score, n * k_used, show_progress=show_progress, desc="Score-CAM").view(n, k_used)
            weights = torch.zeros(n, k, device=inputs.device, dtype=scores.dtype).scatter_(1, channels, scores)
            weights = weights * informative
            cam = torch.einsum("nk,nkhw->nhw", weights.to(acts.dtype), acts)
        return self._finish(cam, relu_attributions, inputs.dtype)


class EigenCAM(_LayerCAM):
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

    def attribute(
        self,
        inputs: Tensor,
        target: int | list[int] | Tensor | None = None,
        relu_attributions: bool = True,
        batch_size: int | None = None,
    ) -> Tensor:
        r"""
        Args:
            inputs: images, Tensor[N, C, H, W].
            target: ignored (Eigen-CAM does not depend on the class); accepted so that every method can be called
                alike. Default: None
            relu_attributions: clamp negative values to 0. Default: True
            batch_size: images per forward pass (``None``: all at once; halved on out-of-memory). Default: None

        Returns:
            Tensor[N, 1, h, w] at the layer's resolution.
        """
        del target
        check_images(inputs, "inputs", check_range=False)
        batcher = AdaptiveBatcher(batch_size or inputs.shape[0], device=inputs.device)
        with torch.no_grad():
            acts = batcher(lambda x: self._forward_with_activations(x)[1], inputs.detach())
            cam = self.project(acts)
        return self._finish(cam, relu_attributions, inputs.dtype)

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


class GradCAMPlusPlus(_LayerCAM):
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

    def attribute(
        self,
        inputs: Tensor,
        target: int | list[int] | Tensor | None = None,
        relu_attributions: bool = True,
        batch_size: int | None = None,
    ) -> Tensor:
        r"""
        Args:
            inputs: images, Tensor[N, C, H, W].
            target: class per image (int, list / 1-D tensor of N ints) or ``None`` for the predicted class.
                Default: None
            relu_attributions: apply a ReLU to the weighted sum, as in the paper. Default: True
            batch_size: images per forward/backward pass (``None``: all at once; halved on out-of-memory).
                Default: None

        Returns:
            Tensor[N, 1, h, w] at the layer's resolution.
        """
        check_images(inputs, "inputs", check_range=False)
        inputs = inputs.detach()
        targets = target_indices(self.forward_func, inputs, target) if target is not None else None
        batcher = AdaptiveBatcher(batch_size or inputs.shape[0], device=inputs.device)

        def cam_chunk(rows: slice) -> Tensor:
            with torch.enable_grad():
                x = inputs[rows].requires_grad_(True)  # makes the graph reach the layer even if it has no params
                logits, acts = self._forward_with_activations(x)
                t = logits.argmax(1) if targets is None else targets[rows]
                (grads,) = torch.autograd.grad(logits.gather(1, t.unsqueeze(1)).sum(), acts)
            acts, grads = acts.detach(), grads.detach()
            g2 = grads.pow(2)
            denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads
            alpha = torch.where(grads != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                                torch.zeros_like(g2))
            weights = (alpha * F.relu(grads)).sum(dim=(2, 3))
            return torch.einsum("nk,nkhw->nhw", weights, acts)

        cam = batcher(cam_chunk, inputs.shape[0])
        return self._finish(cam, relu_attributions, inputs.dtype)
