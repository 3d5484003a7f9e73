"""Vision transformers in the zoo: a small timm ViT for 32×32 data (offline), and what CAMs need from any timm ViT.

``vit_tiny_shapes`` is timm's ``VisionTransformer`` at ``vit_tiny`` width scaled down for ``synthetic_shapes``
(32×32 images, 4×4 patches → an 8×8 grid, 4 blocks of width 64): it trains on two CPU cores in minutes
(``python train.py model=vit_tiny_shapes``). Pretrained ViTs/DeiTs come from timm with network
(``model=vit_deit_tiny``); both get :func:`vit_cam_support`, so Grad-CAM-style methods read their tokens as a grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from xai_bench.models.base import ImageClassifier

__all__ = ["ViTTokensToGrid", "attention_modules", "vit_cam_support", "vit_tiny_shapes"]


class ViTTokensToGrid:
    """ViT tokens Tensor[N, P + h·w, D] → Tensor[N, D, h, w]: drop the ``prefix_tokens`` (class / distillation /
    register tokens) and lay the patch tokens out on their grid (pytorch-grad-cam's ``reshape_transform`` for ViTs).

    Args:
        grid: ``(h, w)`` patches per column and row; ``None`` takes the square root of the patch count.
        prefix_tokens: tokens before the patches (1 for ViT's class token, 2 for DeiT-distilled). Default: 1
    """

    def __init__(self, grid: Sequence[int] | None = None, prefix_tokens: int = 1) -> None:
        self.grid = tuple(int(g) for g in grid) if grid is not None else None
        self.prefix_tokens = int(prefix_tokens)

    def __call__(self, tokens: Any) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 3:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"ViTTokensToGrid needs tokens Tensor[N, T, D], got {shape}; pick a transformer block "
                             f"(e.g. net.blocks.3.norm1) as the layer")
        patches = tokens[:, self.prefix_tokens:]
        n, t, d = patches.shape
        h, w = self.grid or (round(t ** 0.5),) * 2
        if h * w != t:
            raise ValueError(f"{t} patch tokens do not fill a {h}×{w} grid; set grid=(h, w) and prefix_tokens")
        return patches.transpose(1, 2).reshape(n, d, h, w)

    def __repr__(self) -> str:
        return f"ViTTokensToGrid(grid={self.grid}, prefix_tokens={self.prefix_tokens})"


def attention_modules(net: nn.Module) -> list[nn.Module]:
    """timm's multi-head self-attention modules of a ViT, in depth order (those with ``attn_drop`` and
    ``fused_attn``: the attention probabilities pass through ``attn_drop`` when the fused kernel is off)."""
    return [m for m in net.modules() if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None),
                                                                                nn.Module) and hasattr(m, "qkv")]


def vit_cam_support(model: ImageClassifier) -> ImageClassifier:
    """Give a classifier around a timm ViT what token-based methods read: ``reshape_transform`` (tokens → grid),
    ``prefix_tokens`` and ``patch_grid``. Other models are returned unchanged."""
    net = model.net
    patch_embed = getattr(net, "patch_embed", None)
    if patch_embed is None or not attention_modules(net):
        return model
    grid = tuple(int(g) for g in patch_embed.grid_size)
    prefix = int(getattr(net, "num_prefix_tokens", 1))
    model.reshape_transform = ViTTokensToGrid(grid, prefix)
    model.patch_grid = grid
    model.prefix_tokens = prefix
    return model


def vit_tiny_shapes(num_classes: int, in_chans: int = 3, input_size: int = 32, **meta: Any) -> ImageClassifier:
    """A small ViT for 32×32 images: patch 4, width 64, depth 4, 4 heads, MLP ratio 2 (≈ 0.14 M parameters)."""
    from timm.models.vision_transformer import VisionTransformer

    from xai_bench.models.zoo import _meta, _size

    side = _size(input_size)
    net = VisionTransformer(img_size=side, patch_size=4, in_chans=in_chans, num_classes=num_classes, embed_dim=64,
                            depth=4, num_heads=4, mlp_ratio=2.0)
    model = ImageClassifier(net, num_classes=num_classes, input_size=(in_chans, side, side),
                            arch={"name": "vit_tiny_shapes", "num_classes": num_classes, "in_chans": in_chans,
                                  "input_size": side}, name="vit_tiny_shapes", fixed_input_size=True,
                            # Grad-CAM on ViTs (pytorch-grad-cam's advice): the last block's first LayerNorm, whose
                            # tokens still depend on the patch they came from
                            **_meta(meta, default_layer="net.blocks.3.norm1", mean=(0.5,) * in_chans,
                                    std=(0.25,) * in_chans))
    return vit_cam_support(model)
