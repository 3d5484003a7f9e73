"""ForGrad: low-pass filter attribution maps in the Fourier domain."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["ForGrad", "forgrad_filter", "forgrad_mask"]


def forgrad_mask(height: int, width: int, sigma: float, *, device: torch.device | str | None = None) -> Tensor:
    """The ideal low-pass mask over ``torch.fft.rfft2`` frequencies: 1 where the radial frequency ≤ ``sigma``.

    Frequencies are in cycles per image (integer DFT indices, e.g. −H/2 … H/2 along the height), so the mask keeps a
    disc of radius ``sigma`` around the DC term, as in the reference implementation.

    Returns:
        Tensor[height, width // 2 + 1] of 0/1 floats.
    """
    fy = torch.fft.fftfreq(height, d=1.0 / height, device=device)
    fx = torch.fft.rfftfreq(width, d=1.0 / width, device=device)
    radius = torch.sqrt(fy.view(-1, 1) ** 2 + fx.view(1, -1) ** 2)
    return (radius <= sigma).float()


def forgrad_filter(maps: Tensor, sigma: float) -> Tensor:
    r"""Low-pass filter maps by zeroing their Fourier coefficients above a cut-off frequency.

    The filter of ForGrad (Muzellec et al., "Gradient strikes back: How filtering out high frequencies improves
    explanations", 2023, https://arxiv.org/abs/2307.09591), following the authors' reference implementation in
    Xplique: an ideal (0/1) circular low-pass filter of radius ``sigma`` in the 2-D DFT, applied with
    ``rfft2``/``irfft2`` over the last two dims. Unlike the reference it neither takes absolute values nor averages
    channels: it is linear, so callers choose their own post-processing (Xplique's ``forgrad`` is
    ``|forgrad_filter(|φ|.mean(C), σ)|``).

    Edge cases: ``sigma = 0`` keeps only the DC term, so every map becomes its own mean (constant maps are unchanged);
    ``sigma >= max(H, W)`` (indeed ≥ √(H² + W²)/2) keeps every frequency and returns the input up to FFT round-off.
    The paper recommends σ ≈ 15 for 224×224 ImageNet models; scale it with the map size.

    Args:
        maps: Tensor[..., H, W], e.g. attributions Tensor[N, C, H, W].
        sigma: cut-off radius in cycles per image (≥ 0).

    Returns:
        Tensor of the same shape, dtype and device as ``maps``.
    """
    if not isinstance(maps, Tensor) or maps.dim() < 2:
        raise ValueError(f"maps must be a Tensor[..., H, W], got "
                         f"{tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__}")
    if not float(sigma) >= 0:
        raise ValueError(f"sigma must be >= 0 (a frequency radius in cycles per image), got {sigma}")
    h, w = maps.shape[-2:]
    x = maps.float() if maps.dtype in (torch.float16, torch.bfloat16) else maps
    mask = forgrad_mask(h, w, float(sigma), device=maps.device)
    out = torch.fft.irfft2(torch.fft.rfft2(x) * mask, s=(h, w))
    return out.to(maps.dtype)


class ForGrad:
    r"""Wraps any Captum-like attribution method and low-pass filters its maps (ForGrad).

    Muzellec et al., "Gradient strikes back: How filtering out high frequencies improves explanations", 2023.
    https://arxiv.org/abs/2307.09591

    Usage: ``ForGrad(Saliency(model), sigma=15).attribute(x, target=y)`` returns the filtered saliency.

    Args:
        attribution_method: any object with ``.attribute(...)`` returning a Tensor[..., H, W] (or a tuple of them).
        sigma: cut-off radius in cycles per image, see :func:`forgrad_filter`. Default: 15 (the paper's choice
            for 224×224 ImageNet models)
    """

    def __init__(self, attribution_method: Any, sigma: float = 15.0) -> None:
        if not callable(getattr(attribution_method, "attribute", None)):
            raise ValueError(f"attribution_method must have an .attribute(...) method (e.g. captum.attr.Saliency("
                             f"model)), got {type(attribution_method).__name__}")
        if not float(sigma) >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.attribution_method = attribution_method
        self.sigma = float(sigma)

    @property
    def forward_func(self) -> Any:
        return getattr(self.attribution_method, "forward_func", None)

    def attribute(self, *args: Any, **kwargs: Any) -> Tensor | tuple[Tensor, ...]:
        """Calls the wrapped method's ``attribute`` with the same arguments and filters what it returns."""
        out = self.attribution_method.attribute(*args, **kwargs)
        if kwargs.get("return_convergence_delta"):
            # Captum returns (attributions, delta); the delta is a per-example scalar, not a map
            attributions, delta = out
            return self._filter(attributions), delta
        return self._filter(out)

    def _filter(self, out: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        if isinstance(out, tuple):
            return tuple(forgrad_filter(o, self.sigma) for o in out)
        return forgrad_filter(out, self.sigma)
