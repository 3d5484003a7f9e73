"""``synthetic_shapes``: procedurally drawn shapes on cluttered, noisy backgrounds, with the object's mask.

It is the embedded default (no download) and the ground truth for localisation metrics (pointing game, etc.).
Each image holds one shape of a random class, position, scale, rotation and colour, on a smooth random-colour
background with distractor strokes and pixel noise, so colour, size and position carry no class information.
Everything is generated as batched tensor ops from a seed: the same seed gives the same images on every machine.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

SHAPES = ("circle", "square", "triangle", "cross", "ring", "star")


def _inside(k: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test for shape ``k`` in unit coordinates (object radius 1); u, v are rotated coordinates."""
    if k == 0:
        return u**2 + v**2 < 1.0
    if k == 1:
        return torch.maximum(u.abs(), v.abs()) < 0.8
    if k == 2:  # equilateral triangle: three half-planes at 120° (inradius 0.5)
        angles = (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
        return torch.stack([u * math.cos(a) + v * math.sin(a) < 0.5 for a in angles]).all(0)
    if k == 3:
        return ((u.abs() < 0.3) & (v.abs() < 1.0)) | ((v.abs() < 0.3) & (u.abs() < 1.0))
    r2 = u**2 + v**2
    if k == 4:
        return (r2 < 1.0) & (r2 > 0.36)
    r = torch.sqrt(r2)
    return r < 0.55 + 0.45 * torch.cos(5 * torch.atan2(v, u)).clamp(min=0) ** 1.5


def _shape_masks(cls: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    inside = torch.zeros_like(u, dtype=torch.bool)
    for k in cls.unique().tolist():  # one vectorised test per class, only on that class's images
        idx = cls == k
        inside[idx] = _inside(k, u[idx], v[idx])
    return inside


def make_shapes(n: int, image_size: int = 64, *, seed: int = 0, num_classes: int = 6, clutter: int = 4,
                noise: float = 0.06, scale: tuple[float, float] = (0.2, 0.38)) -> dict[str, torch.Tensor]:
    """Generate ``n`` images. Returns ``image`` N×3×S×S, ``label`` N, ``mask`` N×1×S×S."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"dataset.num_classes must be in 1..{len(SHAPES)} for synthetic_shapes, got {num_classes}")
    if image_size < 16:
        raise ValueError(f"dataset.image_size must be at least 16 for synthetic_shapes, got {image_size}")
    g = torch.Generator().manual_seed(seed)
    S = image_size
    labels = torch.randint(0, num_classes, (n,), generator=g)
    radius = (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=g)) * S
    cx = radius + (S - 2 * radius) * torch.rand(n, generator=g)
    cy = radius + (S - 2 * radius) * torch.rand(n, generator=g)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32) + 0.5, torch.arange(S, dtype=torch.float32) + 0.5,
                            indexing="ij")
    dx = (xs[None] - cx.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    dy = (ys[None] - cy.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    mask = _shape_masks(labels, c * dx + s * dy, -s * dx + c * dy).float().unsqueeze(1)

    # Smooth random-colour background: a coarse random grid, upsampled.
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 0.6 + 0.2
    background = F.interpolate(coarse, size=(S, S), mode="bicubic", align_corners=False)
    # Distractor strokes: thin random line segments in random colours (open curves, never a closed shape).
    for _ in range(clutter):
        p0 = torch.rand(n, 2, generator=g) * S
        d = torch.randn(n, 2, generator=g)
        d = d / d.norm(dim=1, keepdim=True) * (0.2 + 0.5 * torch.rand(n, 1, generator=g)) * S
        px, py = xs[None] - p0[:, 0].view(-1, 1, 1), ys[None] - p0[:, 1].view(-1, 1, 1)
        t = ((px * d[:, 0].view(-1, 1, 1) + py * d[:, 1].view(-1, 1, 1)) / (d**2).sum(1).view(-1, 1, 1)).clamp(0, 1)
        dist = torch.sqrt((px - t * d[:, 0].view(-1, 1, 1)) ** 2 + (py - t * d[:, 1].view(-1, 1, 1)) ** 2)
        stroke = (dist < 0.5 + 0.015 * S * torch.rand(n, 1, 1, generator=g)).float().unsqueeze(1)
        colour = torch.rand(n, 3, 1, 1, generator=g)
        background = background * (1 - stroke) + colour * stroke
    # Object: a random hue whose brightness is pushed away from the local background's, so the shape always stands
    # out by luminance (colour alone carries no class information).
    hue = torch.rand(n, 3, 1, 1, generator=g)
    local_bg = (background * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp(min=1)
    bright_bg = local_bg.mean(1, keepdim=True) > 0.5
    colour = torch.where(bright_bg, 0.35 * hue, 0.65 + 0.35 * hue)
    shading = 0.85 + 0.15 * torch.rand(n, 1, S, S, generator=g)
    image = background * (1 - mask) + (colour * shading).clamp(0, 1) * mask
    image = (image + noise * torch.randn(image.shape, generator=g)).clamp(0, 1)
    return {"image": image, "label": labels, "mask": mask}


class SyntheticShapes(Dataset):
    """An in-memory split of ``make_shapes`` (items are dicts with image/label/mask)."""

    def __init__(self, n: int, image_size: int = 64, *, seed: int = 0, num_classes: int = 6, **kwargs: Any) -> None:
        self.data = make_shapes(n, image_size, seed=seed, num_classes=num_classes, **kwargs)

    def __len__(self) -> int:
        return len(self.data["label"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.data["image"][i], "label": int(self.data["label"][i]), "mask": self.data["mask"][i]}
