"""Robustness of the explainer: how much an explanation changes under small random perturbations of the input.

All metrics here re-explain ``nr_samples`` noisy copies of every image (lower is better) and follow Quantus 0.6
(``quantus/metrics/robustness/*.py``) in their formula, perturbation and defaults, with these differences, the same
for every metric:

- The same ``nr_samples`` noise draws (from a local generator seeded by ``seed``) are added to every image of the
  batch, so an image's score does not depend on its batch-mates (Quantus draws fresh noise per image and step).
- Perturbed images are clipped to [0, 1] (``clip=True``), the range models and explainers accept; input distances
  are measured after clipping. Quantus does not clip.
- Samples whose prediction changed are ignored (``nan_on_prediction_change=True``) with a NaN-skipping max/mean; the
  score is NaN only when every sample changed the prediction. Quantus returns NaN as soon as one sample did.
- "Normalise by max" (Local Lipschitz) divides each map by its own maximum absolute value, not by the batch's.
- Multi-channel maps (given or returned by the explainer) are summed over channels.

The explainer is called with all perturbed copies of all images at once (``N·nr_samples`` images, targets repeated),
or with ``N·samples_per_call`` images at a time when ``samples_per_call`` is set, to bound memory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from xai_bench.checks import check_number
from xai_bench.metrics.explanation._reexplain import explain_batch, forward_outputs, per_pixel, resolve_layer
from xai_bench.metrics.explanation.base import ExplanationMetric, register_metric

__all__ = [
    "AvgSensitivity",
    "Continuity",
    "LocalLipschitzEstimate",
    "MaxSensitivity",
    "RelativeInputStability",
    "RelativeOutputStability",
    "RelativeRepresentationStability",
]


def _check_int(name: str, value: object, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def _nan_max(v: Tensor) -> Tensor:
    out = v.nan_to_num(nan=float("-inf"), posinf=float("inf")).amax(1)
    return out.masked_fill(v.isnan().all(1), float("nan"))


class _SampledRobustness(ExplanationMetric):
    """Template: draw noise, re-explain every noisy copy in one call, score each sample, aggregate over samples.

    Subclasses set ``aggregate`` (``"max"`` or ``"mean"``) and implement :meth:`_noise` (``K×C×H×W``, added to every
    image) and :meth:`_objective` (``N×K`` values from clean/perturbed images, maps and model outputs).
    """

    category = "robustness"
    higher_is_better = False
    needs_model = True
    needs_explainer = True
    aggregate = "max"
    uses_logits = False  # the objective needs the model's logits on the perturbed images
    uses_layer = False  # ... and a layer's output
    compare_with_target = False  # a "changed prediction" differs from the target (else: from the clean prediction)

    def __init__(self, *, nr_samples: int, seed: int | None, clip: bool, nan_on_prediction_change: bool,
                 samples_per_call: int | None) -> None:
        self.nr_samples = _check_int("nr_samples", nr_samples)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self.clip = bool(clip)
        self.nan_on_prediction_change = bool(nan_on_prediction_change)
        self.samples_per_call = None if samples_per_call is None else _check_int("samples_per_call", samples_per_call)
        self.layer: str | None = None

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({keys})"

    # -- to implement -------------------------------------------------------------------------------------------
    def _perturbations(self, images: Tensor, start: int, k: int, gen: torch.Generator | None) -> Tensor:
        """Perturbed copies ``N×k×C×H×W`` of ``images``, samples ``start … start + k − 1``; default: added noise."""
        return images[:, None] + self._noise(k, images.shape[1:], images.device, gen)[None]

    def _noise(self, k: int, shape: torch.Size, device: torch.device, gen: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _objective(self, x: Tensor, xs: Tensor, e: Tensor, es: Tensor, out: Tensor | None,
                   outs: Tensor | None) -> Tensor:
        """``N×K`` per-sample values. ``x, e``: ``N×1×…``; ``xs, es``: ``N×K×…``; ``out(s)``: logits or layer."""
        raise NotImplementedError

    # -- the algorithm ------------------------------------------------------------------------------------------
    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        assert model is not None and explainer is not None
        n = images.shape[0]
        if n == 0:
            return images.new_zeros(0)
        device = images.device
        gen = torch.Generator(device=device).manual_seed(self.seed) if self.seed is not None else None
        layer = resolve_layer(model, self.layer, self.name) if self.uses_layer else None
        need_forward = self.nan_on_prediction_change or self.uses_logits or self.uses_layer
        out = None
        if need_forward:
            logits, rep = forward_outputs(model, images, layer)
            pred, out = logits.argmax(1), (rep if self.uses_layer else logits)
        e = per_pixel(maps)[:, None]
        step = self.samples_per_call or self.nr_samples
        values = []
        for start in range(0, self.nr_samples, step):
            k = min(step, self.nr_samples - start)
            xs = self._perturbations(images, start, k, gen)
            if self.clip:
                xs = xs.clamp(0, 1)
            flat = xs.flatten(0, 1)
            es = explain_batch(explainer, flat, targets.repeat_interleave(k), self.name).view(n, k, *e.shape[2:])
            outs = None
            if need_forward:
                logits_s, rep_s = forward_outputs(model, flat, layer)
                outs = (rep_s if self.uses_layer else logits_s).view(n, k, -1)
            v = self._objective(images[:, None], xs, e, es, None if out is None else out[:, None], outs)
            if self.nan_on_prediction_change:
                ref = targets if self.compare_with_target else pred
                v = v.masked_fill(logits_s.argmax(1).view(n, k) != ref[:, None], float("nan"))
            values.append(v)
        v = torch.cat(values, dim=1)
        return _nan_max(v) if self.aggregate == "max" else v.nanmean(1)


def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(2).norm(dim=2)


class _Sensitivity(_SampledRobustness):
    """Yeh et al. (2019) sensitivity: ``‖e(x) − e(x + δ)‖_F / ‖e(x)‖_F``, δ uniform noise; see subclasses."""

    def __init__(self, nr_samples: int = 200, lower_bound: float = 0.2, upper_bound: float | None = None,
                 seed: int | None = 0, clip: bool = True, nan_on_prediction_change: bool = False,
                 samples_per_call: int | None = None) -> None:
        super().__init__(nr_samples=nr_samples, seed=seed, clip=clip,
                         nan_on_prediction_change=nan_on_prediction_change, samples_per_call=samples_per_call)
        self.lower_bound, self.upper_bound = _check_bounds(lower_bound, upper_bound)

    def _noise(self, k: int, shape: torch.Size, device: torch.device, gen: torch.Generator | None) -> Tensor:
        return _uniform(k, shape, device, gen, self.lower_bound, self.upper_bound)

    def _objective(self, x: Tensor, xs: Tensor, e: Tensor, es: Tensor, out: Tensor | None,
                   outs: Tensor | None) -> Tensor:
        return _flat_norm(e - es) / _flat_norm(e)


def _check_bounds(lower_bound: float, upper_bound: float | None) -> tuple[float, float | None]:
    lo = check_number("lower_bound", lower_bound, lo=0)
    if upper_bound is None:
        return lo, None
    hi = check_number("upper_bound", upper_bound)
    if hi <= lo:
        raise ValueError(f"upper_bound ({upper_bound}) must be larger than lower_bound ({lower_bound}), or None for "
                         f"noise in [-lower_bound, lower_bound]")
    return lo, hi


def _uniform(k: int, shape: torch.Size, device: torch.device, gen: torch.Generator | None, lower: float,
             upper: float | None) -> Tensor:
    """Quantus ``batch_uniform_noise``: U[−lower, lower] when ``upper`` is None, else U[lower, upper]."""
    u = torch.rand((k, *shape), generator=gen, device=device)
    if upper is None:
        return (2 * u - 1) * lower
    return lower + (upper - lower) * u


@register_metric
class MaxSensitivity(_Sensitivity):
    """Max-Sensitivity: the largest relative change of the explanation over random perturbations in an L∞ ball.

    Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019; Quantus ``MaxSensitivity``.
    For each image, ``max_j ‖e(x) − e(x + δ_j)‖_F / ‖e(x)‖_F`` with ``δ_j`` uniform in ``[−lower_bound,
    lower_bound]`` per pixel (``upper_bound`` set: uniform in ``[lower_bound, upper_bound]``). ``e(x)`` is the
    given map. Lower is better; an all-zero map gives ``inf`` (or NaN when unchanged).

    Args:
        nr_samples: number of perturbations. Default: 200 (Quantus).
        lower_bound: radius of the L∞ ball in pixel units. Default: 0.2 (Quantus).
        upper_bound: see above. Default: None.
        seed: seeds the noise (``None``: torch's global generator). Default: 0.
        clip: clip perturbed images to [0, 1]. Default: True (Quantus: no clipping).
        nan_on_prediction_change: ignore perturbations that change the predicted class. Default: False (Quantus).
        samples_per_call: perturbations per image in one explainer call (``None``: all). Default: None.

    Returns (from ``score``): ``Tensor[N]``.
    """

    name = "max_sensitivity"
    aggregate = "max"


@register_metric
class AvgSensitivity(_Sensitivity):
    """Avg-Sensitivity: the mean relative change of the explanation over random perturbations in an L∞ ball.

    Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019; Quantus ``AvgSensitivity``.
    As :class:`MaxSensitivity` with the mean over samples instead of the max; same arguments and defaults.
    """

    name = "avg_sensitivity"
    aggregate = "mean"


@register_metric
class LocalLipschitzEstimate(_SampledRobustness):
    """Local Lipschitz estimate: ``max_j ‖e(x) − e(x_j)‖₂ / (‖x − x_j‖₂ + 1e-10)``, ``x_j = x + N(mean, std²)``.

    Alvarez-Melis & Jaakkola, "On the Robustness of Interpretability Methods", ICML WHI 2018; Quantus
    ``LocalLipschitzEstimate``. The paper maximises over an ε-ball by optimisation; Quantus (and we) take the max
    over Gaussian samples. Maps are first divided by their own max absolute value (``normalise=True``, Quantus's
    default; Quantus divides by the batch's max). Lower is better.

    Args:
        nr_samples: number of perturbations. Default: 200.
        perturb_mean: mean of the Gaussian noise. Default: 0.
        perturb_std: its standard deviation (pixel units). Default: 0.1.
        normalise: divide each map by its max absolute value. Default: True.
        seed, clip, nan_on_prediction_change, samples_per_call: as in :class:`MaxSensitivity`.
    """

    name = "local_lipschitz_estimate"
    aggregate = "max"

    def __init__(self, nr_samples: int = 200, perturb_mean: float = 0.0, perturb_std: float = 0.1,
                 normalise: bool = True, seed: int | None = 0, clip: bool = True,
                 nan_on_prediction_change: bool = False, samples_per_call: int | None = None) -> None:
        super().__init__(nr_samples=nr_samples, seed=seed, clip=clip,
                         nan_on_prediction_change=nan_on_prediction_change, samples_per_call=samples_per_call)
        self.perturb_mean = check_number("perturb_mean", perturb_mean)
        self.perturb_std = check_number("perturb_std", perturb_std, lo=0)
        self.normalise = bool(normalise)

    def _noise(self, k: int, shape: torch.Size, device: torch.device, gen: torch.Generator | None) -> Tensor:
        return self.perturb_mean + self.perturb_std * torch.randn((k, *shape), generator=gen, device=device)

    def _objective(self, x: Tensor, xs: Tensor, e: Tensor, es: Tensor, out: Tensor | None,
                   outs: Tensor | None) -> Tensor:
        if self.normalise:
            e, es = _normalise_by_max(e), _normalise_by_max(es)
        return _flat_norm(e - es) / (_flat_norm(x - xs) + 1e-10)


def _normalise_by_max(e: Tensor) -> Tensor:
    peak = e.abs().flatten(2).amax(2).view(*e.shape[:2], *([1] * (e.ndim - 2)))
    return torch.where(peak > 0, e / peak.clamp_min(torch.finfo(e.dtype).tiny), e)


class _RelativeStability(_SampledRobustness):
    """Agarwal et al. (2022): relative change of the explanation over relative change of the input / output / layer.

    Numerator (all three): ``‖(e(x) − e(x'))/e(x)‖₂`` elementwise, zeros of ``e(x)`` replaced by ``eps_min``.
    Perturbations: Quantus's ``batch_uniform_noise`` with ``upper_bound=0.2``, i.e. uniform in ``[lower_bound,
    upper_bound] = [0.02, 0.2]`` (brightening only); ``upper_bound=None`` gives ``[−lower_bound, lower_bound]``.
    """

    aggregate = "max"

    def __init__(self, nr_samples: int = 200, lower_bound: float = 0.02, upper_bound: float | None = 0.2,
                 eps_min: float = 1e-6, seed: int | None = 0, clip: bool = True,
                 nan_on_prediction_change: bool = True, samples_per_call: int | None = None) -> None:
        super().__init__(nr_samples=nr_samples, seed=seed, clip=clip,
                         nan_on_prediction_change=nan_on_prediction_change, samples_per_call=samples_per_call)
        self.lower_bound, self.upper_bound = _check_bounds(lower_bound, upper_bound)
        self.eps_min = check_number("eps_min", eps_min, lo=0)
        if self.eps_min == 0:
            raise ValueError("eps_min must be > 0: it replaces zeros in divisions")

    def _noise(self, k: int, shape: torch.Size, device: torch.device, gen: torch.Generator | None) -> Tensor:
        return _uniform(k, shape, device, gen, self.lower_bound, self.upper_bound)

    def _relative(self, a: Tensor, b: Tensor) -> Tensor:
        """``‖(a − b) / a‖₂`` over all but the first two dims, zeros of ``a`` replaced by ``eps_min``."""
        return ((a - b) / (a + (a == 0) * self.eps_min)).flatten(2).norm(dim=2)

    def _denominator(self, x: Tensor, xs: Tensor, out: Tensor | None, outs: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _objective(self, x: Tensor, xs: Tensor, e: Tensor, es: Tensor, out: Tensor | None,
                   outs: Tensor | None) -> Tensor:
        den = self._denominator(x, xs, out, outs)
        return self._relative(e, es) / (den + (den == 0) * self.eps_min)


_RELATIVE_ARGS = """
    Args:
        nr_samples: number of perturbations. Default: 200 (Quantus).
        lower_bound, upper_bound: the noise is uniform in ``[lower_bound, upper_bound]`` per pixel (``upper_bound``
            None: ``[−lower_bound, lower_bound]``). Default: 0.02, 0.2 (Quantus's defaults).
        eps_min: replaces zeros in divisions. Default: 1e-6.
        seed: seeds the noise (``None``: torch's global generator). Default: 0.
        clip: clip perturbed images to [0, 1]. Default: True (Quantus: no clipping).
        nan_on_prediction_change: ignore perturbations that change the predicted class (Quantus: True).
        samples_per_call: perturbations per image in one explainer call (``None``: all). Default: None.
"""


@register_metric
class RelativeInputStability(_RelativeStability):
    """Relative Input Stability: ``max_x' ‖(e − e')/e‖₂ / ‖(x − x')/x‖₂`` (zeros replaced by ``eps_min``).

    Agarwal et al., "Rethinking Stability for Attribution-based Explanations", ICLR 2022 PAIR2Struct workshop;
    Quantus ``RelativeInputStability``. Lower is better.
    """ + _RELATIVE_ARGS

    name = "relative_input_stability"

    def _denominator(self, x: Tensor, xs: Tensor, out: Tensor | None, outs: Tensor | None) -> Tensor:
        return self._relative(x, xs)


@register_metric
class RelativeOutputStability(_RelativeStability):
    """Relative Output Stability: ``max_x' ‖(e − e')/e‖₂ / ‖h(x) − h(x')‖₂`` with ``h`` the logits.

    Agarwal et al., "Rethinking Stability for Attribution-based Explanations", ICLR 2022 PAIR2Struct workshop;
    Quantus ``RelativeOutputStability``. Lower is better.
    """ + _RELATIVE_ARGS

    name = "relative_output_stability"
    uses_logits = True

    def _denominator(self, x: Tensor, xs: Tensor, out: Tensor | None, outs: Tensor | None) -> Tensor:
        assert out is not None and outs is not None
        return (out - outs).norm(dim=2)


@register_metric
class RelativeRepresentationStability(_RelativeStability):
    """Relative Representation Stability: ``max_x' ‖(e − e')/e‖₂ / ‖(L(x) − L(x'))/L(x)‖₂``, ``L`` a layer's output.

    Agarwal et al., "Rethinking Stability for Attribution-based Explanations", ICLR 2022 PAIR2Struct workshop;
    Quantus ``RelativeRepresentationStability``. Quantus concatenates all layers by default; we take one layer,
    ``layer`` or the model's ``default_layer`` (read with a forward hook, removed even on errors). Lower is better.
    """ + _RELATIVE_ARGS + """        layer: dotted module name; ``None``: ``model.default_layer``. Default: None.
"""

    name = "relative_representation_stability"
    uses_layer = True

    def __init__(self, nr_samples: int = 200, lower_bound: float = 0.02, upper_bound: float | None = 0.2,
                 eps_min: float = 1e-6, layer: str | None = None, seed: int | None = 0, clip: bool = True,
                 nan_on_prediction_change: bool = True, samples_per_call: int | None = None) -> None:
        super().__init__(nr_samples=nr_samples, lower_bound=lower_bound, upper_bound=upper_bound, eps_min=eps_min,
                         seed=seed, clip=clip, nan_on_prediction_change=nan_on_prediction_change,
                         samples_per_call=samples_per_call)
        if layer is not None and not isinstance(layer, str):
            raise ValueError(f"layer must be a dotted module name or None, got {layer!r}")
        self.layer = layer

    def _denominator(self, x: Tensor, xs: Tensor, out: Tensor | None, outs: Tensor | None) -> Tensor:
        assert out is not None and outs is not None
        return self._relative(out, outs)


@register_metric
class Continuity(_SampledRobustness):
    """Continuity: the largest ``‖e(x) − e(x_t)‖₁ / (‖x − x_t‖₂ + 1e-9)`` over horizontal translations ``x_t``.

    Montavon, Samek & Müller, "Methods for Interpreting and Understanding Deep Neural Networks", Digital Signal
    Processing 2018; Quantus ``Continuity`` (0.6: translations along x, black padding). The image is shifted by
    ``t_s = −W + (s + 1) · ⌊(2W + 1) / nr_steps⌋`` pixels, ``s = 0 … nr_steps − 1`` (positive: to the right), and
    re-explained; maps are made absolute and divided by their own max (Quantus's defaults ``abs=True``,
    ``normalise=True``; Quantus normalises by the batch's max and re-explains the clean image, we use the given
    map). Translations that leave the image unchanged (``t = 0`` is on the grid) are left out: the ratio is
    undefined there, and for a stochastic explainer it would be its own noise over 1e-9. Deterministic. Lower is
    better.

    Args:
        nr_steps: number of translations. Default: 28.
        abs: take absolute values of the maps. Default: True.
        normalise: divide each map by its max absolute value. Default: True.
        nan_on_prediction_change: ignore translations whose prediction differs from the target. Default: False.
        samples_per_call: translations per image in one explainer call (``None``: all). Default: None.
    """

    name = "continuity"
    aggregate = "max"
    compare_with_target = True

    def __init__(self, nr_steps: int = 28, abs: bool = True, normalise: bool = True,
                 nan_on_prediction_change: bool = False, samples_per_call: int | None = None) -> None:
        super().__init__(nr_samples=_check_int("nr_steps", nr_steps), seed=None, clip=False,
                         nan_on_prediction_change=nan_on_prediction_change, samples_per_call=samples_per_call)
        self.abs = bool(abs)
        self.normalise = bool(normalise)

    def shifts(self, width: int) -> list[int]:
        """The horizontal translations (pixels) for images ``width`` wide."""
        dx = (2 * width + 1) // self.nr_samples
        return [-width + (s + 1) * dx for s in range(self.nr_samples)]

    def _perturbations(self, images: Tensor, start: int, k: int, gen: torch.Generator | None) -> Tensor:
        width = images.shape[-1]
        return torch.stack([_translate_x(images, t) for t in self.shifts(width)[start:start + k]], dim=1)

    def _objective(self, x: Tensor, xs: Tensor, e: Tensor, es: Tensor, out: Tensor | None,
                   outs: Tensor | None) -> Tensor:
        if self.abs:
            e, es = e.abs(), es.abs()
        if self.normalise:
            e, es = _normalise_by_max(e), _normalise_by_max(es)
        dist = _flat_norm(x - xs)
        ratio = (e - es).flatten(2).abs().sum(2) / (dist + 1e-9)
        # The shift grid contains t = 0 (and black images shift to themselves): there the ratio measures the
        # explainer's own randomness over 1e-9 (SmoothGrad, LIME: ~1e10), not continuity, so it is left out.
        return ratio.masked_fill(dist == 0, float("nan"))


def _translate_x(images: Tensor, t: int) -> Tensor:
    """Shift ``images`` by ``t`` pixels along the width (positive: right), filling with black (0)."""
    out = torch.zeros_like(images)
    width = images.shape[-1]
    if abs(t) >= width:
        return out
    if t >= 0:
        out[..., t:] = images[..., :width - t]
    else:
        out[..., :width + t] = images[..., -t:]
    return out
