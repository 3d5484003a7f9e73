"""Reference maps: explanations that ignore the model, listed in every table as "methods" so a real method's scores
can be read against what chance (``random_map``), a centre prior (``centre_gaussian``) and the image's edges alone
(``sobel_edges``) reach. They never call the model.

Each is in Captum's shape: the constructor takes the model, ``attribute(inputs, target=None, **settings)`` returns
``N×1×H×W`` float32 maps. ``target`` is accepted and ignored.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xai_bench.attribution.base import AttributionMethod
from xai_bench.checks import check_images

__all__ = ["CentreGaussian", "RandomMap", "SobelEdges"]

# ITU-R BT.601 luma, the weights of torchvision's rgb_to_grayscale
_LUMA = (0.299, 0.587, 0.114)


class RandomMap(AttributionMethod):
    """Uniform noise in [0, 1) per pixel, drawn from a generator seeded with ``seed`` and the image's own content.

    The same image always gets the same map (whatever its batch-mates or position in the batch), and any change to
    the image — an attack, a corruption, a robustness metric's noise — gives an unrelated map. So the baseline is
    honest on every metric: it is insensitive to the model (randomisation flags it) but not spuriously "stable" under
    perturbations, which a map fixed per batch position would be. The global RNG is untouched.
    """

    forward_only = True

    def attribute(self, inputs: Tensor, target: Any = None, seed: int = 0) -> Tensor:
        """Args: inputs ``N×C×H×W``; target ignored; seed of the noise. Returns ``N×1×H×W`` noise."""
        check_images(inputs, "inputs", check_range=False)
        n, _, h, w = inputs.shape
        # One generator per image, seeded by a hash of its bytes: a per-image loop, but of N cheap draws for a
        # baseline (a batched fingerprint in floating point would collide for images that differ by rounding).
        flat = inputs.detach().to("cpu", torch.float32).contiguous().view(n, -1).numpy()
        out = torch.empty(n, 1, h, w, dtype=torch.float32)
        for i in range(n):
            digest = hashlib.blake2b(flat[i].tobytes(), digest_size=8, key=str(int(seed)).encode()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
            out[i] = torch.rand(1, h, w, generator=g)
        return out.to(inputs.device)


class CentreGaussian(AttributionMethod):
    """A Gaussian bump at the image centre, the same for every image (the photographer's centre bias).

    ``exp(−(y − cy)² / 2(σ·H)² − (x − cx)² / 2(σ·W)²)`` with ``(cy, cx)`` the centre, peak 1.
    """

    forward_only = True

    def attribute(self, inputs: Tensor, target: Any = None, sigma: float = 0.25) -> Tensor:
        """Args: inputs ``N×C×H×W``; target ignored; sigma: the standard deviation as a fraction of each side
        (> 0). Returns ``N×1×H×W``."""
        check_images(inputs, "inputs", check_range=False)
        if not sigma > 0:
            raise ValueError(f"centre_gaussian: sigma must be > 0 (a fraction of the image side), got {sigma!r}")
        n, _, h, w = inputs.shape
        ys = torch.arange(h, device=inputs.device, dtype=torch.float32) - (h - 1) / 2
        xs = torch.arange(w, device=inputs.device, dtype=torch.float32) - (w - 1) / 2
        bump = torch.exp(-(ys[:, None] / (sigma * h)) ** 2 / 2 - (xs[None, :] / (sigma * w)) ** 2 / 2)
        return bump.expand(n, 1, h, w).contiguous()


class SobelEdges(AttributionMethod):
    """Sobel gradient magnitude ``√(G_x² + G_y²)`` of the grey image (BT.601 luma for RGB, the mean of other channel
    counts), with edge-replicated borders."""

    forward_only = True

    def attribute(self, inputs: Tensor, target: Any = None) -> Tensor:
        """Args: inputs ``N×C×H×W``; target ignored. Returns ``N×1×H×W`` edge strength."""
        check_images(inputs, "inputs", check_range=False)
        x = inputs.detach().float()
        if x.shape[1] == 3:
            grey = sum(wt * x[:, i:i + 1] for i, wt in enumerate(_LUMA))
        else:
            grey = x.mean(1, keepdim=True)
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
        kernel = torch.stack([gx, gx.T])[:, None]  # 2×1×3×3: d/dx, d/dy
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernel)
        return g.square().sum(1, keepdim=True).sqrt()
