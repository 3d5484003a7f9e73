"""Attention-based explanations of vision transformers: raw attention, attention rollout and Chefer et al.'s
gradient-weighted relevance propagation.

Each reads the attention probabilities of every block of a timm ViT (``attn_drop`` receives them once the fused
kernel is off for the call), explains the class token's row over the patch tokens, and returns maps
Tensor[N, 1, h, w] on the patch grid (``upsample: true`` in the YAML brings them to the input size).

These methods only make sense for transformers: they declare ``requires = "vit"`` and refuse any other model with
a :class:`~xai_bench.errors.ConfigError` when built, before any work.
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.attribution.base import with_settings_of
from xai_bench.batching import AdaptiveBatcher
from xai_bench.errors import ConfigError
from xai_bench.models.vit import attention_modules

__all__ = ["AttentionRollout", "RawAttention", "TransformerAttribution", "rollout"]


@contextmanager
def recorded_attention(modules: list[nn.Module]) -> Iterator[list[Tensor]]:
    """Record each module's attention probabilities Tensor[N, heads, T, T] (in call order) during a block.

    timm computes attention with ``F.scaled_dot_product_attention`` when ``fused_attn`` is set, which never
    materialises the probabilities; the explicit path (same numbers up to rounding) passes them through ``attn_drop``,
    a module we can hook. Both the flag and the hooks are restored on exit, even when the model raises.
    """
    store: list[Tensor] = []
    flags = [m.fused_attn for m in modules]
    handles = [m.attn_drop.register_forward_hook(lambda mod, args, out: store.append(out)) for m in modules]
    for m in modules:
        m.fused_attn = False
    try:
        yield store
    finally:
        for m, flag in zip(modules, flags):
            m.fused_attn = flag
        for h in handles:
            h.remove()


def rollout(attentions: list[Tensor], residual: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``Π_l (residual·I + (1 − residual)·Ā_l)`` with rows renormalised,
    Ā_l the head mean of block ``l``'s attention Tensor[N, heads, T, T]. Returns Tensor[N, T, T] (last block left)."""
    joint = None
    for attn in attentions:
        a = attn.mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(dim=-1, keepdim=True)
        joint = a if joint is None else a @ joint
    assert joint is not None
    return joint


class _AttentionMethod:
    """Shared plumbing: the model, its attention modules and the patch grid."""

    requires = "vit"
    signed = False
    forward_only = False
    one_image_per_call = False
    unshare_nonlinearities = False
    figure: str | None = "overlay"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_explain" in cls.__dict__:
            cls.attribute = with_settings_of(_AttentionMethod.attribute, cls._explain, ("self", "inputs", "targets"))

    def __init__(self, forward_func: nn.Module) -> None:
        net = getattr(forward_func, "net", forward_func)
        self.modules = attention_modules(net)
        if not self.modules or getattr(forward_func, "patch_grid", None) is None:
            raise ConfigError(f"{type(self).__name__} explains vision transformers (timm ViT/DeiT attention), but "
                              f"the model ({type(net).__name__}) has none; use model=vit_tiny_shapes, a timm ViT "
                              f"(model=timm model.arch=deit_tiny_patch16_224), or a method for any model (gradcam)")
        self.forward_func = forward_func
        self.grid = tuple(forward_func.patch_grid)
        self.prefix = int(getattr(forward_func, "prefix_tokens", 1))

    def _cls_row(self, relevance: Tensor) -> Tensor:
        """Tensor[N, T, T] token relevance → the class token's row over the patches, Tensor[N, 1, h, w]."""
        row = relevance[:, 0, self.prefix:]
        return row.reshape(row.shape[0], 1, *self.grid)

    def attribute(self, inputs: Tensor, target: Any = None, batch_size: int | None = None, **kwargs: Any) -> Tensor:
        from xai_bench.checks import check_images

        check_images(inputs, "inputs", check_range=False)
        batcher = AdaptiveBatcher(batch_size or inputs.shape[0], device=inputs.device)
        targets = None
        if target is not None:
            from xai_bench.checks import target_indices

            targets = target_indices(self.forward_func, inputs, target)
        return batcher(lambda rows: self._explain(inputs[rows].detach(), None if targets is None else targets[rows],
                                                  **kwargs), inputs.shape[0]).to(inputs.dtype)

    def _explain(self, inputs: Tensor, targets: Tensor | None, **kwargs: Any) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _attentions(self, inputs: Tensor) -> list[Tensor]:
        with torch.no_grad(), recorded_attention(self.modules) as store:
            self.forward_func(inputs)
        return list(store)


class RawAttention(_AttentionMethod):
    """Raw attention: the class token's attention to each patch in the last block, averaged over heads.

    The baseline that attention rollout and Chefer et al. improve on (LATEC's "raw attention"). Class-agnostic.

    Args:
        forward_func: a classifier around a timm ViT (``model=vit_tiny_shapes``).
    """

    forward_only = True

    def _explain(self, inputs: Tensor, targets: Tensor | None, block: int = -1) -> Tensor:
        return self._cls_row(self._attentions(inputs)[block].mean(dim=1))


class AttentionRollout(_AttentionMethod):
    """Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

    https://arxiv.org/abs/2005.00928 — attention is multiplied through the blocks, each block's head-mean attention
    mixed with the identity for the residual connection (``residual`` = 0.5 in the paper) and renormalised; the map
    is the class token's row of the product over the patches. Class-agnostic.

    Args:
        forward_func: a classifier around a timm ViT (``model=vit_tiny_shapes``).
    """

    forward_only = True

    def _explain(self, inputs: Tensor, targets: Tensor | None, residual: float = 0.5) -> Tensor:
        return self._cls_row(rollout(self._attentions(inputs), residual))


class TransformerAttribution(_AttentionMethod):
    r"""Chefer et al.'s class-specific relevance propagation through the attention blocks.

    Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
    Transformers", ICCV 2021 (https://arxiv.org/abs/2103.15679), the gradient form of their CVPR 2021 "Transformer
    Interpretability Beyond Attention Visualization": starting from :math:`R = I`, each block adds
    :math:`\bar A R` with :math:`\bar A = \mathbb{E}_h[(\nabla A \odot A)^+]`, the head mean of the attention
    weighted by the target logit's gradient, positive part. The map is the class token's row of :math:`R` over the
    patches. (The CVPR version replaces :math:`A` with its LRP relevance; that needs LRP rules for every layer of
    the ViT and is not implemented here.)

    Args:
        forward_func: a classifier around a timm ViT (``model=vit_tiny_shapes``).
    """

    def _explain(self, inputs: Tensor, targets: Tensor | None) -> Tensor:
        with torch.enable_grad(), recorded_attention(self.modules) as store:
            logits = self.forward_func(inputs)
            t = logits.argmax(1) if targets is None else targets
            grads = torch.autograd.grad(logits.gather(1, t.unsqueeze(1)).sum(), store)
        attentions = [a.detach() for a in store]
        n, _, tokens, _ = attentions[0].shape
        r = torch.eye(tokens, dtype=attentions[0].dtype, device=inputs.device).expand(n, tokens, tokens)
        for attn, grad in zip(attentions, grads):
            cam = (grad * attn).clamp(min=0).mean(dim=1)
            r = r + cam @ r
        return self._cls_row(r)
