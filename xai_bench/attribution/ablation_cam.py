"""AblationCAM on the CAM template (:mod:`.cam_base`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.attribution.cam_base import BaseCAM, flatten_output, unflatten_output
from xai_bench.attribution.cam_targets import as_target
from xai_bench.batching import AdaptiveBatcher, default_batch_size

__all__ = ["AblationCAM"]


class AblationCAM(BaseCAM):
    r"""AblationCAM: each activation map is weighted by how much the target score drops when that map is removed.

    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free
    Localization", WACV 2020. https://openaccess.thecvf.com/content_WACV_2020/html/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.html

    :math:`w_k = (y - y_k) / y`, where :math:`y` is the target's score and :math:`y_k` the score with channel
    :math:`k` of the layer's output set to ``ablation_value`` (0 in the paper); the map is
    :math:`\mathrm{ReLU}(\sum_k w_k A_k)`. Gradient-free, so it also explains detectors, whose box scores have
    no useful gradient. All N·K ablated forward passes go through the model in large batches (like our Score-CAM);
    the layer's output is edited in place by a forward hook, so nothing in the model is replaced.

    With a ``reshape_transform`` the channels are those of the reshaped activations: a ViT's token features
    (channel ``d`` of every token), an FPN's levels stacked in order (channel ``k`` of one level).

    ``max_channels`` ablates only the K' channels of largest mean activation per image and gives the rest weight 0
    (pytorch-grad-cam's ``ratio_channels_to_ablate`` does the same with another ranking): K/K' times fewer forward
    passes, for channels that add little to :math:`\sum_k w_k A_k` anyway.

    Args:
        forward_func: model mapping Tensor[N, C, H, W] → Tensor[N, K] logits, or what the target reads.
        layer: module whose output is explained.
        reshape_transform: see :class:`~xai_bench.attribution.cam_base.BaseCAM`.
    """

    forward_only = True

    def cam(
        self,
        inputs: Tensor,
        target: Any = None,
        batch_size: int | None = None,
        max_channels: int | None = None,
        ablation_value: float = 0.0,
        show_progress: bool | None = None,
    ) -> Tensor:
        r"""
        Args:
            inputs: images, Tensor[N, C, H, W].
            target: class per image (int, list / 1-D tensor of N ints), ``None`` for the predicted class, or a
                target object (e.g. a :class:`~xai_bench.attribution.cam_targets.BoxScoreTarget`). Default: None
            batch_size: ablated inputs per forward pass (``None`` picks one; halved on out-of-memory). Default: None
            max_channels: ablate only this many channels per image, those of largest mean activation (``None``:
                all K, as in the paper). Default: None
            ablation_value: what an ablated channel is set to (the paper: 0; pytorch-grad-cam uses a very
                negative value on layers whose activations can be negative). Default: 0.0
            show_progress: progress per batch of ablated inputs (``None``: inside
                :func:`xai_bench.progress.progress_reporting`). Default: None

        Returns:
            Tensor[N, h, w] at the layer's resolution.
        """
        n = inputs.shape[0]
        if max_channels is not None and int(max_channels) < 1:
            raise ValueError(f"max_channels must be >= 1 or None, got {max_channels}")
        if batch_size is None:
            model = self.forward_func if isinstance(self.forward_func, nn.Module) else None
            batch_size = default_batch_size(model, inputs.shape[1:], inputs.device)
        with torch.no_grad():
            outputs, raw = self._layer_output(inputs)
            score_target = as_target(target, inputs, outputs)
            rows_all = torch.arange(n, device=inputs.device)
            base = score_target(outputs, rows_all).float()
            leaves = [leaf.detach() for leaf in flatten_output(raw)]
            acts = self.to_maps(unflatten_output(raw, leaves))
            k = acts.shape[1]
            counts = [_channel_count(leaf) for leaf in leaves]
            if sum(counts) != k:
                raise ValueError(f"AblationCAM: the layer's output has {sum(counts)} channels but its reshaped "
                                 f"activations have {k}; the reshape_transform must keep channels one to one")
            k_used = k if max_channels is None else min(k, int(max_channels))
            channels = (torch.arange(k, device=inputs.device).expand(n, k) if k_used == k
                        else acts.float().flatten(2).mean(dim=2).topk(k_used, dim=1).indices)
            current: dict[str, Tensor] = {}

            def ablate(module: nn.Module, args: object, out: Any) -> Any:
                single = isinstance(out, tuple) and len(out) == 1
                value = out[0] if single else out
                edited, offset = [], 0
                for leaf, count in zip(flatten_output(value), counts):
                    local = current["ch"] - offset
                    hit = (local >= 0) & (local < count)
                    mask = torch.zeros(leaf.shape[0], count, dtype=torch.bool, device=leaf.device)
                    mask[hit.nonzero().flatten(), local[hit]] = True
                    mask = mask.view(*mask.shape, 1, 1) if leaf.dim() == 4 else mask.unsqueeze(1)
                    edited.append(torch.where(mask, torch.full_like(leaf, ablation_value), leaf))
                    offset += count
                new = unflatten_output(value, edited)
                return (new,) if single else new

            def score(rows: slice) -> Tensor:
                # row r of the flattened (image, channel) grid is the (r % K')-th ablated channel of image r // K'
                idx = torch.arange(rows.start, rows.stop, device=inputs.device)
                img = idx // k_used
                current["ch"] = channels[img, idx % k_used]
                handle = self.layer.register_forward_hook(ablate)
                try:
                    return score_target(self.forward_func(inputs[img]), img).float()
                finally:
                    handle.remove()

            batcher = AdaptiveBatcher(batch_size, device=inputs.device)
            ablated = batcher(score, n * k_used, show_progress=show_progress, desc="AblationCAM").view(n, k_used)
            denom = torch.where(base.abs() > 1e-12, base, torch.full_like(base, 1e-12)).unsqueeze(1)
            weights = torch.zeros(n, k, device=inputs.device).scatter_(1, channels, (base.unsqueeze(1) - ablated)
                                                                       / denom)
            return torch.einsum("nk,nkhw->nhw", weights.to(acts.dtype), acts)


def _channel_count(leaf: Tensor) -> int:
    """Channels of one output tensor: dim 1 of a feature map N×K×h×w, the last dim of tokens N×T×D."""
    if leaf.dim() == 4:
        return int(leaf.shape[1])
    if leaf.dim() == 3:
        return int(leaf.shape[2])
    raise ValueError(f"AblationCAM cannot ablate channels of a layer output shaped {tuple(leaf.shape)}; pick a layer "
                     f"with feature maps N×K×h×w or tokens N×T×D")
