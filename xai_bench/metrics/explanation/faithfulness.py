"""Faithfulness metrics: does the model's output change the way the explanation says it should when the pixels it
ranks as relevant are removed (or inserted)?

All of them work per pixel: an ``N×C×H×W`` map is summed over its channels to one relevance per pixel, a removed pixel
loses all its channels at once and step sizes count pixels. (Quantus broadcasts an ``N×1×H×W`` map over the channels
and counts single channel values, ordering a pixel's tied channels arbitrarily; on one-channel images the two agree,
and on ``C`` channels our ``k`` pixels per step are its ``k·C`` features per step with ties kept together.)

Perturbed copies of all images × all steps are built in chunks on the images' device and scored by
:func:`~xai_bench.metrics.explanation.base.model_scores` in OOM-safe batches. Random draws (subsets, uniform fills,
random orders) come from a local generator seeded with ``seed`` and are shared by all images, so an image's score
does not depend on its batch-mates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from xai_bench.metrics.explanation import _perturb as P
from xai_bench.metrics.explanation._curve import _CurveMetric, _replace
from xai_bench.metrics.explanation.base import ExplanationMetric, register_metric

__all__ = [
    "IROF",
    "Deletion",
    "FaithfulnessCorrelation",
    "FaithfulnessEstimate",
    "Infidelity",
    "Insertion",
    "MonotonicityCorrelation",
    "PixelFlipping",
    "RegionPerturbation",
]


@register_metric
class Deletion(_CurveMetric):
    """Deletion (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC).

    Pixels are removed most-relevant-first, ``pixels_per_step`` at a time, until none is left; the score is the area
    under the target's softmax probability over the fraction of pixels removed (trapezoid rule on ``[0, 1]``, the
    unperturbed image included). A faithful map makes the probability fall fast: lower is better.

    Args:
        pixels_per_step: pixels removed per step. Default ``None``: 32 steps of ``H·W / 32`` pixels (rounded).
            (RISE used 224 pixels per step on 224×224 images, 224 steps.)
        substrate: what removed pixels become, one of ``zeros`` (RISE's deletion), ``black`` (each image's minimum),
            ``mean`` (each image's mean) or ``blur`` (the image blurred). Default: ``zeros``.
        blur_sigma: σ in pixels of the ``blur`` substrate (RISE: σ = 5 truncated to 11×11; here scipy's 4σ radius).
        softmax: score the target's probability (RISE) instead of its logit.

    The x axis is the true fraction removed, so a last, partial step counts for its share.
    """

    name = "deletion"
    category = "faithfulness"
    higher_is_better = False
    curve_xlabel = "fraction of pixels removed"
    _insert = False

    def __init__(self, pixels_per_step: int | None = None, substrate: str = "zeros", blur_sigma: float = 5.0,
                 softmax: bool = True) -> None:
        self.pixels_per_step = P.check_int("pixels_per_step", pixels_per_step, allow_none=True)
        self.substrate = P.check_choice("substrate", substrate, P.SUBSTRATES)
        if not float(blur_sigma) > 0:
            raise ValueError(f"blur_sigma must be > 0, got {blur_sigma!r}")
        self.blur_sigma = float(blur_sigma)
        self.softmax = bool(softmax)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(pixels_per_step={self.pixels_per_step}, substrate={self.substrate!r}, "
                f"softmax={self.softmax})")

    def _curves(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        n_pix = images.shape[-2] * images.shape[-1]
        if self.pixels_per_step is None:  # 32 steps of H·W/32 pixels, rounded
            n_steps = min(32, n_pix)
            counts = torch.linspace(0, n_pix, n_steps + 1, device=images.device).round().long()
        else:
            n_steps = math.ceil(n_pix / self.pixels_per_step)
            counts = (torch.arange(n_steps + 1, device=images.device) * self.pixels_per_step).clamp(max=n_pix)
        r = P.ranks(P.pixel_relevance(maps), descending=True)
        fill = P.substrate(images, self.substrate, blur_sigma=self.blur_sigma)
        if self._insert:  # start from the substrate; the ranked pixels come back
            images, fill = fill, images
        make = _replace(images, fill, lambda n, s: r[n] < counts[s, None])
        curve = P.perturbed_scores(model, images, targets, n_steps + 1, make, softmax=self.softmax)
        return curve, counts.float() / n_pix

    def _summarise(self, curve: Tensor, x: Tensor) -> Tensor:
        return P.trapezoid(curve, x)


@register_metric
class Insertion(Deletion):
    """Insertion (Petsiuk et al. 2018, RISE): the mirror of :class:`Deletion`.

    Starting from the substrate (default: the image blurred, RISE's choice), pixels of the image are put back
    most-relevant-first; the score is the area under the target's probability over the fraction inserted. A faithful
    map makes it rise fast: higher is better. Same arguments as :class:`Deletion` (default ``substrate="blur"``).
    """

    name = "insertion"
    higher_is_better = True
    curve_xlabel = "fraction of pixels inserted"
    _insert = True

    def __init__(self, pixels_per_step: int | None = None, substrate: str = "blur", blur_sigma: float = 5.0,
                 softmax: bool = True) -> None:
        super().__init__(pixels_per_step, substrate, blur_sigma, softmax)


@register_metric
class PixelFlipping(_CurveMetric):
    """Pixel flipping (Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
    Layer-Wise Relevance Propagation", PLOS ONE), as Quantus's ``PixelFlipping``.

    Pixels are set to the baseline most-relevant-first, ``features_in_step`` at a time, and the target's softmax
    probability is recorded after every step (``ceil(H·W / features_in_step)`` values, the unperturbed image not
    among them). The score is Quantus's ``return_auc_per_sample=True`` value: the trapezoid area under that curve with
    unit spacing (``np.trapz(curve, dx=1)``), so it grows with the number of steps; lower is better. (Quantus's
    default, ``return_auc_per_sample=False``, returns the curve itself: :meth:`curves`.)

    Args:
        features_in_step: pixels flipped per step (Quantus's default: 1, one forward pass per pixel).
        perturb_baseline: the flipped value, one of ``black`` (each image's minimum; Quantus's default), ``zeros``,
            ``mean``, ``blur``.
        softmax: score the probability (Quantus's default for this metric) instead of the logit.
    """

    name = "pixel_flipping"
    category = "faithfulness"
    higher_is_better = False
    curve_xlabel = "pixels flipped"
    score_label = "AUC (unit steps)"

    def __init__(self, features_in_step: int = 1, perturb_baseline: str = "black", softmax: bool = True) -> None:
        self.features_in_step = P.check_int("features_in_step", features_in_step)
        self.perturb_baseline = P.check_choice("perturb_baseline", perturb_baseline, P.SUBSTRATES)
        self.softmax = bool(softmax)

    def _curves(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        n_pix = images.shape[-2] * images.shape[-1]
        n_steps = math.ceil(n_pix / self.features_in_step)
        counts = (torch.arange(1, n_steps + 1, device=images.device) * self.features_in_step).clamp(max=n_pix)
        r = P.ranks(P.pixel_relevance(maps), descending=True)
        fill = P.substrate(images, self.perturb_baseline)
        make = _replace(images, fill, lambda n, s: r[n] < counts[s, None])
        curve = P.perturbed_scores(model, images, targets, n_steps, make, softmax=self.softmax)
        return curve, counts.float()

    def _summarise(self, curve: Tensor, x: Tensor) -> Tensor:
        return P.trapezoid(curve, dx=1.0)


@register_metric
class RegionPerturbation(_CurveMetric):
    """Region perturbation (Samek et al. 2017, "Evaluating the Visualization of What a Deep Neural Network Has
    Learned", IEEE TNNLS), as Quantus's ``RegionPerturbation``.

    The image is cut into non-overlapping ``patch_size``² patches (Quantus's grid: padded to a multiple of the patch
    size, the padding split evenly, so border patches are smaller); patches are ranked by their summed attribution
    (``morf``: most relevant first, ``lerf``: least relevant first, ``random``) and the first ``regions_evaluation`` are
    set to the baseline one after another. Quantus returns the curve ``f(x) − f(x_k)``, k = 1…L (:meth:`curves`
    returns it with the k = 0 zero in front); the score is Samek's AOPC, the mean of that curve over k = 0…L.
    With ``morf`` higher is better (with ``lerf`` lower would be: compare like with like).

    Args:
        patch_size: patch side in pixels (Quantus: 8).
        order: ``morf`` | ``lerf`` | ``random`` (Quantus: ``morf``).
        regions_evaluation: patches perturbed, L (Quantus: 100; capped at the number of patches).
        perturb_baseline: ``black`` (Quantus's default, each image's minimum) | ``zeros`` | ``mean`` | ``blur``.
        softmax: score the probability (Quantus's default) instead of the logit.
        seed: seeds the ``random`` order (one order shared by all images).
    """

    name = "region_perturbation"
    category = "faithfulness"
    higher_is_better = True
    curve_xlabel = "patches perturbed"
    score_label = "AOPC"
    ORDERS = ("morf", "lerf", "random")

    @property
    def curve_ylabel(self) -> str:
        return f"drop of the target {'probability' if self.softmax else 'logit'}, f(x) − f(x_k)"

    def __init__(self, patch_size: int = 8, order: str = "morf", regions_evaluation: int = 100,
                 perturb_baseline: str = "black", softmax: bool = True, seed: int | None = 0) -> None:
        self.patch_size = P.check_int("patch_size", patch_size)
        self.order = P.check_choice("order", order, self.ORDERS)
        self.regions_evaluation = P.check_int("regions_evaluation", regions_evaluation)
        self.perturb_baseline = P.check_choice("perturb_baseline", perturb_baseline, P.SUBSTRATES)
        self.softmax = bool(softmax)
        self.seed = seed

    def patch_ids(self, h: int, w: int, device: torch.device | str | None = None) -> tuple[Tensor, int]:
        """Each pixel's patch index (row-major over Quantus's padded grid), ``H·W``, and the number of patches."""
        ps = self.patch_size
        nh, nw = math.ceil(h / ps), math.ceil(w / ps)
        top, left = (nh * ps - h) // 2, (nw * ps - w) // 2
        rows = (torch.arange(h, device=device) + top) // ps
        cols = (torch.arange(w, device=device) + left) // ps
        return (rows[:, None] * nw + cols[None, :]).flatten(), nh * nw

    def _curves(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = images.shape
        pid, n_patches = self.patch_ids(h, w, images.device)
        rel = P.pixel_relevance(maps)
        sums = rel.new_zeros(n, n_patches).index_add_(1, pid, rel)
        if self.order == "random":
            g = P.generator(self.seed)
            sums = torch.rand(n_patches, generator=g).to(rel.device).expand(n, -1)
        patch_rank = P.ranks(sums, descending=self.order != "lerf")
        r = patch_rank[:, pid]  # each pixel's position in the perturbation order
        n_regions = min(self.regions_evaluation, n_patches)
        fill = P.substrate(images, self.perturb_baseline)
        make = _replace(images, fill, lambda i, s: r[i] < s[:, None])
        scores = P.perturbed_scores(model, images, targets, n_regions + 1, make, softmax=self.softmax)
        return scores[:, :1] - scores, torch.arange(n_regions + 1, device=images.device).float()

    def _summarise(self, curve: Tensor, x: Tensor) -> Tensor:
        return curve.mean(-1)


@register_metric
class FaithfulnessCorrelation(ExplanationMetric):
    """Faithfulness correlation (Bhatt et al. 2020, "Evaluating and Aggregating Feature-based Model Explanations",
    IJCAI), as Quantus's ``FaithfulnessCorrelation``.

    ``nr_runs`` times, a random subset of ``subset_size`` pixels is set to the baseline; the score is the Pearson
    correlation, over the runs, between the attribution summed over the subset and the drop of the target's logit
    ``f(x) − f(x_S)``. Higher is better; NaN for a constant map (as Quantus/scipy). Subsets are drawn once per call
    from ``seed`` and shared by all images (Quantus draws per image).

    Args:
        nr_runs: random subsets (Quantus: 100).
        subset_size: pixels per subset (Quantus: 224 features, i.e. channel values; here whole pixels).
        perturb_baseline: ``black`` (Quantus's default) | ``zeros`` | ``mean`` | ``blur``.
        softmax: use probabilities instead of logits (Quantus's default: logits).
        seed: seeds the subsets.
    """

    name = "faithfulness_correlation"
    category = "faithfulness"
    higher_is_better = True

    def __init__(self, nr_runs: int = 100, subset_size: int = 224, perturb_baseline: str = "black",
                 softmax: bool = False, seed: int | None = 0) -> None:
        self.nr_runs = P.check_int("nr_runs", nr_runs, 2)
        self.subset_size = P.check_int("subset_size", subset_size)
        self.perturb_baseline = P.check_choice("perturb_baseline", perturb_baseline, P.SUBSTRATES)
        self.softmax = bool(softmax)
        self.seed = seed

    def score(self, model, images, targets, maps, *, masks=None, explainer=None) -> Tensor:
        n_pix = images.shape[-2] * images.shape[-1]
        if self.subset_size > n_pix:
            raise ValueError(f"{self.name}: subset_size={self.subset_size} exceeds the {n_pix} pixels of an image")
        g = P.generator(self.seed)
        subsets = torch.rand(self.nr_runs, n_pix, generator=g).argsort(-1)[:, :self.subset_size]
        chosen = torch.zeros(self.nr_runs + 1, n_pix, dtype=torch.bool)  # row 0: the unperturbed image
        chosen[torch.arange(1, self.nr_runs + 1)[:, None], subsets] = True
        chosen = chosen.to(images.device)
        fill = P.substrate(images, self.perturb_baseline)
        make = _replace(images, fill, lambda i, s: chosen[s])
        y = P.perturbed_scores(model, images, targets, self.nr_runs + 1, make, softmax=self.softmax)
        att = P.pixel_relevance(maps) @ chosen[1:].float().T
        return P.pearson(att, y[:, :1] - y[:, 1:])


@register_metric
class FaithfulnessEstimate(ExplanationMetric):
    """Faithfulness estimate (Alvarez-Melis & Jaakkola 2018, "Towards Robust Interpretability with Self-Explaining
    Neural Networks", NeurIPS), as Quantus's ``FaithfulnessEstimate``.

    Pixels are taken most-relevant-first in groups of ``features_in_step``; each group alone (not cumulatively) is
    set to the baseline. The score is the Pearson correlation, over the groups, between the group's summed
    attribution and the drop of the target's logit. Higher is better; NaN for a constant map.

    Args:
        features_in_step: pixels per group (Quantus: 1, one forward pass per pixel).
        perturb_baseline: ``black`` (Quantus's default) | ``zeros`` | ``mean`` | ``blur``.
        softmax: use probabilities instead of logits (Quantus's default: logits).
    """

    name = "faithfulness_estimate"
    category = "faithfulness"
    higher_is_better = True

    def __init__(self, features_in_step: int = 1, perturb_baseline: str = "black", softmax: bool = False) -> None:
        self.features_in_step = P.check_int("features_in_step", features_in_step)
        self.perturb_baseline = P.check_choice("perturb_baseline", perturb_baseline, P.SUBSTRATES)
        self.softmax = bool(softmax)

    def score(self, model, images, targets, maps, *, masks=None, explainer=None) -> Tensor:
        n_pix = images.shape[-2] * images.shape[-1]
        n_steps = math.ceil(n_pix / self.features_in_step)
        rel = P.pixel_relevance(maps)
        step = P.ranks(rel, descending=True) // self.features_in_step  # each pixel's group
        fill = P.substrate(images, self.perturb_baseline)
        make = _replace(images, fill, lambda i, s: step[i] == (s[:, None] - 1))  # variant 0: unperturbed
        y = P.perturbed_scores(model, images, targets, n_steps + 1, make, softmax=self.softmax)
        att = rel.new_zeros(rel.shape[0], n_steps).scatter_add_(1, step, rel)
        return P.pearson(att, y[:, :1] - y[:, 1:])


@register_metric
class MonotonicityCorrelation(ExplanationMetric):
    """Monotonicity correlation (Nguyen & Martínez 2020, "On Quantitative Aspects of Model Interpretability",
    arXiv:2007.07584), as Quantus's ``MonotonicityCorrelation``.

    Pixels are ranked by ``|attribution|`` least-relevant-first and grouped by ``features_in_step``; each group alone
    is replaced ``nr_samples`` times by a uniform random value (Quantus's ``"uniform"`` baseline: one value in
    [0, 1) per copy for the whole group) and the mean squared change of the target's probability, divided by
    ``f(x)²`` (when ``|f(x)| ≥ eps``), is recorded. The score is the Spearman correlation between the groups'
    ``|attribution|`` sums and those variances. Higher is better; NaN for a constant map. The uniform values are
    drawn from ``seed`` and shared by all images.

    Args:
        nr_samples: random fills per group (Quantus: 100).
        features_in_step: pixels per group (Quantus: 1).
        eps: below this ``|f(x)|`` the variance is not rescaled (Quantus: 1e-5).
        perturb_baseline: ``uniform`` (Quantus's default) or a fixed substrate ``black`` | ``zeros`` | ``mean`` |
            ``blur`` (then ``nr_samples`` copies are identical; set it to 1).
        softmax: use probabilities (Quantus's default) instead of logits.
        seed: seeds the uniform values.
    """

    name = "monotonicity_correlation"
    category = "faithfulness"
    higher_is_better = True

    def __init__(self, nr_samples: int = 100, features_in_step: int = 1, eps: float = 1e-5,
                 perturb_baseline: str = "uniform", softmax: bool = True, seed: int | None = 0) -> None:
        self.nr_samples = P.check_int("nr_samples", nr_samples)
        self.features_in_step = P.check_int("features_in_step", features_in_step)
        if not float(eps) >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.eps = float(eps)
        self.perturb_baseline = P.check_choice("perturb_baseline", perturb_baseline, ("uniform", *P.SUBSTRATES))
        self.softmax = bool(softmax)
        self.seed = seed

    def score(self, model, images, targets, maps, *, masks=None, explainer=None) -> Tensor:
        n, _, h, w = images.shape
        n_steps = math.ceil(h * w / self.features_in_step)
        k = self.nr_samples
        rel = P.pixel_relevance(maps, absolute=True)
        step = P.ranks(rel, descending=False) // self.features_in_step
        if self.perturb_baseline == "uniform":
            u = torch.rand(n_steps * k, generator=P.generator(self.seed)).to(images)

            def make(i: Tensor, s: Tensor) -> Tensor:  # variant 0: unperturbed; 1 + g·k + j: group g, draw j
                mask = (step[i] == ((s - 1) // k)[:, None]).view(-1, 1, h, w)
                return torch.where(mask, u[(s - 1).clamp(min=0)].view(-1, 1, 1, 1), images[i])
        else:
            fill = P.substrate(images, self.perturb_baseline)
            make = _replace(images, fill, lambda i, s: step[i] == ((s - 1) // k)[:, None])
        y = P.perturbed_scores(model, images, targets, n_steps * k + 1, make, softmax=self.softmax)
        y0 = y[:, 0]
        inv = torch.where(y0.abs() >= self.eps, 1 / y0.abs(), torch.ones_like(y0)) ** 2
        var = (y[:, 1:].view(n, n_steps, k) - y0[:, None, None]).square().mean(-1) * inv[:, None]
        att = rel.new_zeros(n, n_steps).scatter_add_(1, step, rel)
        return P.spearman(att, var)


@register_metric
class Infidelity(ExplanationMetric):
    """Infidelity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations", NeurIPS), with Quantus's
    ``Infidelity`` as the default perturbation.

    ``INFD = E_I[(Iᵀa − (f(x) − f(x − I)))²]`` on the target's logit: how badly the attribution, used as a linear
    model of the output, predicts the output change under perturbations ``I``. Lower is better; 0 for the gradient
    of a linear model. Two perturbation families:

    - ``square`` (Quantus's default): for each ``patch_size``, the ``patch_size``² squares of the image (Quantus's
      padded grid, row-major) are set to the baseline one after another, cumulatively; ``I = x − x_k`` after square
      ``k``; the squared errors are averaged over the squares, then over the patch sizes. (Quantus repeats this
      ``n_perturb_samples`` times, identically for a fixed baseline: here it is done once.)
    - ``gaussian`` (Yeh et al.'s noisy baseline): ``n_perturb_samples`` draws of ``I ~ N(0, noise_std²)`` per channel
      value, the same draws for every image (from ``seed``); inputs are not clipped.

    The attribution of a pixel multiplies ``I`` summed over the pixel's channels.

    Args:
        perturbation: ``square`` | ``gaussian``.
        patch_sizes: square sides in pixels (Quantus: ``[4]``).
        perturb_baseline: what squares become: ``black`` (Quantus's default) | ``zeros`` | ``mean`` | ``blur``.
        n_perturb_samples: Gaussian draws (Quantus: 10).
        noise_std: σ of the Gaussian perturbation, in pixel units.
        softmax: use probabilities instead of logits (Quantus's default: logits).
        seed: seeds the Gaussian draws.
    """

    name = "infidelity"
    category = "faithfulness"
    higher_is_better = False
    PERTURBATIONS = ("square", "gaussian")

    def __init__(self, perturbation: str = "square", patch_sizes: tuple[int, ...] | list[int] = (4,),
                 perturb_baseline: str = "black", n_perturb_samples: int = 10, noise_std: float = 0.1,
                 softmax: bool = False, seed: int | None = 0) -> None:
        self.perturbation = P.check_choice("perturbation", perturbation, self.PERTURBATIONS)
        if isinstance(patch_sizes, int) or not len(patch_sizes):
            raise ValueError(f"patch_sizes must be a non-empty list of integers, got {patch_sizes!r}")
        self.patch_sizes = tuple(P.check_int("patch_sizes", p) for p in patch_sizes)
        self.perturb_baseline = P.check_choice("perturb_baseline", perturb_baseline, P.SUBSTRATES)
        self.n_perturb_samples = P.check_int("n_perturb_samples", n_perturb_samples)
        if not float(noise_std) > 0:
            raise ValueError(f"noise_std must be > 0, got {noise_std!r}")
        self.noise_std = float(noise_std)
        self.softmax = bool(softmax)
        self.seed = seed

    def score(self, model, images, targets, maps, *, masks=None, explainer=None) -> Tensor:
        rel = P.pixel_relevance(maps)
        if self.perturbation == "gaussian":
            noise = torch.randn(self.n_perturb_samples, *images.shape[1:], generator=P.generator(self.seed))
            noise = torch.cat([noise.new_zeros(1, *noise.shape[1:]), noise]).to(images)  # variant 0: unperturbed
            y = P.perturbed_scores(model, images, targets, noise.shape[0], lambda i, s: images[i] - noise[s],
                                   softmax=self.softmax)
            a_dot_i = rel @ noise[1:].sum(1).flatten(1).T
            return ((a_dot_i - (y[:, :1] - y[:, 1:])) ** 2).mean(-1)
        n, _, h, w = images.shape
        fill = P.substrate(images, self.perturb_baseline)
        contrib = rel * (images - fill).sum(1).flatten(1)  # a · I of a pixel once it is removed
        losses = []
        for ps in self.patch_sizes:  # a few sizes: a loop over settings, not images
            pid, n_patches = RegionPerturbation(patch_size=ps).patch_ids(h, w, images.device)
            make = _replace(images, fill, lambda i, s, pid=pid: pid[None, :] < s[:, None])
            y = P.perturbed_scores(model, images, targets, n_patches + 1, make, softmax=self.softmax)
            a_dot_i = contrib.new_zeros(n, n_patches).index_add_(1, pid, contrib).cumsum(1)
            losses.append(((a_dot_i - (y[:, :1] - y[:, 1:])) ** 2).mean(-1))
        return torch.stack(losses).mean(0)


@register_metric
class IROF(ExplanationMetric):
    """Iterative removal of features, IROF (Rieger & Hansen 2020, "IROF: a low resource evaluation metric for
    explanation methods", ICLR workshop AI4AH), as Quantus's ``IROF``.

    Each image is cut into superpixels (Quantus: ``skimage.segmentation.slic(img, start_label=0)``, i.e. about 100
    segments, compactness 10, no pre-smoothing); segments are ranked by their mean attribution and replaced by the
    baseline most-relevant-first, cumulatively. With ``p_k = f(x_k)/f(x)`` the target's relative probability after
    ``k`` of the image's ``K`` segments, the score is the area over the curve ``K − trapz(p_1…p_K, dx=1)``. Higher is
    better. Deviations from Quantus 0.6, whose batched code has two batch-dependent quirks: the ``mean`` baseline is
    each original image's mean (Quantus takes the mean of the whole, already perturbed batch), and each image's
    curve ends at its own ``K`` (Quantus pads shorter curves with zeros and integrates over the padding too).

    Args:
        segmentation_method: ``slic`` (Quantus) or ``grid`` (square patches; pure tensor code).
        segmentation_kwargs: passed to :func:`xai_bench.attribution.superpixels.superpixel_masks`. Default for
            ``slic``: ``n_segments=100, compactness=10, sigma=0`` (scikit-image's defaults, as Quantus); for ``grid``:
            ``patch_size=8``.
        perturb_baseline: ``mean`` (Quantus's default) | ``black`` | ``zeros`` | ``blur``.
        softmax: use probabilities (Quantus's default) instead of logits.
    """

    name = "irof"
    category = "faithfulness"
    higher_is_better = True
    SEGMENTATIONS = ("slic", "grid")

    def __init__(self, segmentation_method: str = "slic", segmentation_kwargs: dict | None = None,
                 perturb_baseline: str = "mean", softmax: bool = True) -> None:
        self.segmentation_method = P.check_choice("segmentation_method", segmentation_method, self.SEGMENTATIONS)
        defaults = {"slic": {"n_segments": 100, "compactness": 10.0, "sigma": 0.0}, "grid": {"patch_size": 8}}
        self.segmentation_kwargs = {**defaults[self.segmentation_method], **dict(segmentation_kwargs or {})}
        self.perturb_baseline = P.check_choice("perturb_baseline", perturb_baseline, P.SUBSTRATES)
        self.softmax = bool(softmax)

    def score(self, model, images, targets, maps, *, masks=None, explainer=None) -> Tensor:
        from xai_bench.attribution.superpixels import superpixel_masks

        n = images.shape[0]
        seg = superpixel_masks(images, self.segmentation_method, **self.segmentation_kwargs).flatten(1)  # N×P
        n_seg = seg.amax(1) + 1  # K per image (ids are contiguous)
        k_max = int(n_seg.max())
        rel = P.pixel_relevance(maps)
        flat = (seg + torch.arange(n, device=seg.device)[:, None] * k_max).flatten()
        sums = rel.new_zeros(n * k_max).index_add_(0, flat, rel.flatten()).view(n, k_max)
        sizes = rel.new_zeros(n * k_max).index_add_(0, flat, torch.ones_like(rel).flatten()).view(n, k_max)
        mean = torch.where(sizes > 0, sums / sizes.clamp(min=1), torch.full_like(sums, -float("inf")))
        r = P.ranks(mean, descending=True).gather(1, seg)  # each pixel's segment position in the order
        fill = P.substrate(images, self.perturb_baseline)
        make = _replace(images, fill, lambda i, s: r[i] < s[:, None])
        y = P.perturbed_scores(model, images, targets, k_max + 1, make, softmax=self.softmax)
        p = y[:, 1:] / y[:, :1]
        k = torch.arange(k_max - 1, device=p.device)
        area = (((p[:, :-1] + p[:, 1:]) / 2) * (k[None, :] < (n_seg[:, None] - 1))).sum(1)
        return n_seg.to(p.dtype) - area
