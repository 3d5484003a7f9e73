"""LIME and Kernel SHAP with the samples of a call drawn, built, weighted and scored as batches.

Same methods, settings and numbers as Captum's :class:`captum.attr.Lime` and :class:`captum.attr.KernelShap`
(subclasses of them, so every argument, the feature-mask handling, the surrogate models and the output shapes are
Captum's own). What changes is Captum's ``LimeBase.attribute`` loop, which handles one sample at a time in Python:
it draws a coalition, builds that one perturbed image, computes its similarity weight (LIME's kernel constructs a
``CosineSimilarity`` module per sample), and then feeds the surrogate through a ``DataLoader`` that collates the
samples one by one. On the benchmark's overhead regime (a small CNN at 32², 256 samples per image) that loop took
about twice as long as the model's passes over all the samples (``benchmarks/run.py``, LIME and Kernel SHAP rows).

Here, for the common case (one image tensor, class targets, Captum's interpretable-space transform):

- **coalitions** are drawn at once. LIME's (``default_perturb_func``: a fair coin per feature) come from one
  ``torch.bernoulli`` over the n × F matrix, which consumes the CPU generator exactly as Captum's n calls do, so a
  seeded run gives Captum's coalitions bit for bit (``tests/test_surrogate.py``). Kernel SHAP's come from the same
  distribution as Captum's generator (the all-on and all-off coalitions first, then k ~ p(k) ∝ (M−1)/(k(M−k)) and
  k features uniformly at random) but not from the same random stream: Captum interleaves one categorical draw and
  one ``randn`` per sample, which no batched draw can reproduce. The tests check the distribution, and that given the
  same coalitions the maps are Captum's;
- **perturbed images** of a forward pass are one ``torch.where`` over the coalitions indexed by the feature mask;
- **similarity weights** are one vectorised call: :class:`ExpKernel` (LIME's exponential kernel, the configs'
  ``similarity_func``) computes all of a call's weights from per-feature sums of the image and the baseline, without
  the perturbed images, and Kernel SHAP's kernel from the coalitions' sizes; any other ``similarity_func`` is called
  sample by sample, as Captum does;
- the **surrogate** gets the same ``(coalitions, scores, weights)`` in a single batch (a ``DataLoader`` that slices
  the whole ``TensorDataset`` once instead of collating it sample by sample), fitted with BLAS on one thread
  (:func:`_one_blas_thread` says why).

Anything else (tuple inputs, ``additional_forward_args``, non-class targets, a perturbation function in input space,
a custom ``from_interp_rep_transform``) runs Captum's own loop unchanged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import KernelShap, Lime, LimeBase
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from xai_bench._compat import lime_default_functions, undecorated_attribute, undecorated_override
from xai_bench.checks import as_class_indices
from xai_bench.progress import ProgressBar

__all__ = ["BatchedKernelShap", "BatchedLime", "ExpKernel"]


class ExpKernel:
    """LIME's similarity weight ``exp(−d² / (2 · kernel_width²))`` of a perturbed input to the original, with ``d``
    the cosine distance (``1 − cos``) or the Euclidean distance of the flattened inputs.

    Captum's ``get_exp_kernel_similarity_function`` with a batched form: called as Captum calls a similarity function
    (one sample, returns a float) it gives Captum's number; :meth:`batched` weighs a whole pass of perturbed inputs.

    Args:
        distance_mode: ``"cosine"`` or ``"euclidean"``.
        kernel_width: the kernel's width (LIME's image default is 0.25 with the cosine distance).
    """

    def __init__(self, distance_mode: str = "cosine", kernel_width: float = 1.0) -> None:
        if distance_mode not in ("cosine", "euclidean"):
            raise ValueError(f"distance_mode must be 'cosine' or 'euclidean', got {distance_mode!r}")
        if not kernel_width > 0:
            raise ValueError(f"kernel_width must be > 0, got {kernel_width}")
        self.distance_mode = distance_mode
        self.kernel_width = float(kernel_width)

    def __repr__(self) -> str:
        return f"ExpKernel(distance_mode={self.distance_mode!r}, kernel_width={self.kernel_width})"

    def batched(self, original: Tensor, perturbed: Tensor) -> Tensor:
        """Weights (P, float32) of the P perturbed inputs ``perturbed`` (P×…) against ``original`` (1×…)."""
        return self._weights(self._distance(original, perturbed))

    def _distance(self, original: Tensor, perturbed: Tensor) -> Tensor:
        a = original.reshape(1, -1).float()
        b = perturbed.reshape(perturbed.shape[0], -1).float()
        if self.distance_mode == "cosine":
            return 1 - torch.nn.functional.cosine_similarity(a, b, dim=1)
        return (a - b).norm(dim=1)

    def _exponent(self, distance: Tensor) -> Tensor:
        return -1 * distance ** 2 / (2 * self.kernel_width ** 2)

    def _weights(self, distance: Tensor) -> Tensor:
        # float32 up to the exponent, which Captum takes in double (math.exp) before storing float32: same here
        return torch.exp(self._exponent(distance).double()).float()

    def from_coalitions(self, original: Tensor, baselines: Tensor, feature_mask: Tensor, coalitions: Tensor) -> Tensor:
        """Weights (n, float32) of the n perturbed inputs that ``coalitions`` (n×F, 1 = feature kept, 0 = set to the
        baseline) make of ``original`` (1×…), without building them: a perturbed input is the original on kept
        features and the baseline elsewhere, so its dot product with the original and its squared norm (or its squared
        distance to it) are sums of per-feature sums, one ``(n×F) @ (F)`` product each."""
        x = original.float()
        b = baselines.to(x).expand_as(x)
        ids = feature_mask.to(x.device).expand_as(x).reshape(-1)
        f = coalitions.shape[1]

        def per_feature(v: Tensor) -> Tensor:
            return torch.zeros(f, dtype=torch.float32, device=x.device).index_add_(0, ids, v.reshape(-1))

        on = coalitions.to(x)
        off = 1 - on
        if self.distance_mode == "cosine":
            xx, xb, bb = per_feature(x * x), per_feature(x * b), per_feature(b * b)
            dot = on @ xx + off @ xb
            norms = (xx.sum() * (on @ xx + off @ bb)).clamp_min(1e-16).sqrt()  # torch's eps 1e-8, squared
            return self._weights(1 - dot / norms)
        return self._weights((off @ per_feature((x - b) ** 2)).clamp_min(0).sqrt())

    def __call__(self, original_inp: Tensor | tuple[Tensor, ...], perturbed_inp: Tensor | tuple[Tensor, ...],
                 _interpretable: Any = None, **_: Any) -> float:
        a, b = (torch.cat([t.flatten() for t in v]) if isinstance(v, tuple) else v.flatten()
                for v in (original_inp, perturbed_inp))
        return math.exp(float(self._exponent(self._distance(a, b[None]))[0]))


def _whole_batch(*tensors: Tensor) -> DataLoader:
    """A DataLoader yielding ``tensors`` once, whole: what Captum's ``DataLoader(dataset, batch_size=n)`` yields,
    without indexing and re-stacking the dataset one sample at a time (``batch_size=None``: no collation; the sampler
    hands the dataset one slice)."""
    return DataLoader(TensorDataset(*tensors), batch_size=None, sampler=[slice(None)])


class _BatchedLimeBase(LimeBase):
    """Captum's ``LimeBase.attribute`` with its per-sample loop batched (see the module docstring). Sits between
    ``Lime`` and ``LimeBase`` in the MRO, where ``Lime`` calls its base class's method undecorated."""

    def _draw(self, inputs: Tensor, n: int, kwargs: dict[str, Any]) -> Tensor:
        """n coalitions (n×F, long, on the CPU as Captum draws them)."""
        default_perturb_func, _ = lime_default_functions()
        f = int(kwargs["num_interp_features"])
        if self.perturb_func is default_perturb_func:
            return torch.bernoulli(torch.full((n, f), 0.5)).long()
        if getattr(self.perturb_func, "__func__", None) is KernelShap.kernel_shap_perturb_generator:
            return _kernel_shap_coalitions(n, f, kwargs["num_select_distribution"])
        gen = self._get_perturb_generator_func(inputs, **kwargs)
        rows = []
        for _ in range(n):
            try:
                rows.append(gen()[0].reshape(1, -1).long().cpu())
            except StopIteration:
                warnings.warn("Generator completed prior to given n_samples iterations!", stacklevel=3)
                break
        return torch.cat(rows) if rows else torch.zeros(0, f, dtype=torch.long)

    def _weights_at_once(self, x: Tensor, base: Tensor, mask: Tensor, coalitions: Tensor,
                         kwargs: dict[str, Any]) -> Tensor | None:
        """All n weights from the coalitions alone, for the kernels that allow it (LIME's :class:`ExpKernel` from
        per-feature sums, Kernel SHAP's from the coalitions' sizes); ``None`` for any other kernel."""
        sim = self.similarity_func
        if isinstance(sim, ExpKernel):
            return sim.from_coalitions(x, base, mask, coalitions)
        if getattr(sim, "__func__", None) is KernelShap.kernel_shap_similarity_kernel:
            on = coalitions.sum(1)
            edge = (on == 0) | (on == int(kwargs["num_interp_features"]))
            return torch.where(edge, float(self.inf_weight), 1.0).float()  # type: ignore[attr-defined]
        return None

    def _weights_per_sample(self, x: Tensor, copies: Tensor, coalitions: Tensor, kwargs: dict[str, Any]) -> Tensor:
        """Any other kernel: Captum's call, one perturbed input at a time."""
        out = []
        for i in range(copies.shape[0]):
            w = self.similarity_func(x, copies[i:i + 1], coalitions[i:i + 1], **kwargs)
            out.append(w.flatten().float().cpu() if isinstance(w, Tensor) else torch.tensor([float(w)]))
        return torch.cat(out).to(x.device)

    def _fast_path(self, inputs: Any, target: Any, additional_forward_args: Any, kwargs: dict[str, Any]) -> bool:
        _, default_from_interp_rep_transform = lime_default_functions()
        return (isinstance(inputs, Tensor) and inputs.dim() >= 2 and inputs.shape[0] == 1
                and additional_forward_args is None and _one_class(target)
                and bool(self.perturb_interpretable_space)
                and self.from_interp_rep_transform is default_from_interp_rep_transform
                and isinstance(kwargs.get("feature_mask"), Tensor))

    @torch.no_grad()
    def _attribute(self, inputs: Any, target: Any = None, additional_forward_args: Any = None, n_samples: int = 50,
                   perturbations_per_eval: int = 1, show_progress: bool = False, **kwargs: Any) -> Tensor:
        if not self._fast_path(inputs, target, additional_forward_args, kwargs):
            return undecorated_attribute(LimeBase)(
                self, inputs, target=target, additional_forward_args=additional_forward_args, n_samples=n_samples,
                perturbations_per_eval=perturbations_per_eval, show_progress=show_progress, **kwargs)
        x: Tensor = inputs
        device = x.device
        t = int(as_class_indices(target, 1, device, "target")[0])
        mask: Tensor = kwargs["feature_mask"].to(device)
        base = torch.as_tensor(kwargs["baselines"], dtype=x.dtype, device=device)
        coalitions = self._draw(x, int(n_samples), kwargs).to(device)
        n = coalitions.shape[0]
        per_eval = max(int(perturbations_per_eval or 1), 1)
        # a coalition (F,) indexed by the mask gives that sample's on/off pattern of the mask's shape; with x's
        # leading 1 the broadcast is one image per coalition, as Captum's transform builds it
        pad = (1,) * max(x.dim() - mask.dim(), 0)
        at_once = self._weights_at_once(x, base, mask, coalitions, kwargs)
        weights = [] if at_once is None else [at_once]
        scores = []
        with ProgressBar(total=n, desc=self.get_name(), show=bool(show_progress), unit="img") as bar:
            for start in range(0, n, per_eval):
                chunk = coalitions[start:start + per_eval]
                on = chunk[:, mask].bool().view(chunk.shape[0], *pad, *mask.shape)
                copies = torch.where(on, x.unsqueeze(0), base).flatten(0, 1)
                out = self.forward_func(copies)
                if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != copies.shape[0]:
                    raise ValueError(f"{self.get_name()}: the model returned "
                                     f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__} for "
                                     f"{copies.shape[0]} perturbed images; expected one row of class scores each")
                scores.append(out[:, t].float())
                if at_once is None:
                    weights.append(self._weights_per_sample(x, copies, chunk, kwargs))
                bar.update(chunk.shape[0])
        with _one_blas_thread():
            self.interpretable_model.fit(_whole_batch(coalitions.float(), torch.cat(scores), torch.cat(weights)))
        return self.interpretable_model.representation()

    # Lime's attribute calls this class's method undecorated (``_compat.undecorated_override`` says how)
    attribute = undecorated_override(_attribute)  # type: ignore[assignment]


_BLAS_CONTROLLER: Any = None


def _one_blas_thread() -> Any:
    """A block in which BLAS (OpenBLAS, MKL) runs on one thread, through threadpoolctl (scikit-learn's own tool).

    The surrogate's fit is tiny (n samples × F features). With BLAS on every core, OpenBLAS's threads keep spinning
    after a least-squares fit and take the cores from the next forward passes: Kernel SHAP (scikit-learn's
    ``LinearRegression``) on the small CNN at 32² took 26 ms per image instead of 16, its forward passes 17 ms instead
    of 11 (``python benchmarks/surrogate_parts.py --methods kernel_shap``, with and without
    ``OPENBLAS_NUM_THREADS=1``, 2026-12-07)."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        import sklearn.linear_model  # noqa: F401  (loads SciPy's BLAS first, so the controller finds it)
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()  # scans the loaded libraries once (~1 ms); limit() is ~10 µs
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


def _one_class(target: Any) -> bool:
    """A single class index (an int, a one-element integer tensor or list): the targets the batched path scores."""
    if isinstance(target, list) and len(target) == 1:
        target = target[0]
    if isinstance(target, Tensor):
        return target.numel() == 1 and not target.dtype.is_floating_point and target.dtype != torch.bool
    return isinstance(target, int) and not isinstance(target, bool)


def _kernel_shap_coalitions(n: int, f: int, num_select: torch.distributions.Categorical) -> Tensor:
    """Kernel SHAP's coalitions as Captum's generator defines them: all on, all off, then for each sample k ~ p(k)
    and k of the f features chosen uniformly (the k largest of f normal draws)."""
    head = torch.stack([torch.ones(f, dtype=torch.long), torch.zeros(f, dtype=torch.long)])[:n]
    m = n - head.shape[0]
    if m <= 0:
        return head
    k = num_select.sample((m,)).long()
    rand = torch.randn(m, f)
    threshold = rand.sort(1).values.gather(1, (f - k - 1).clamp(0, f - 1)[:, None])
    return torch.cat([head, (rand > threshold).long()])


class BatchedLime(Lime, _BatchedLimeBase):
    """Captum's :class:`~captum.attr.Lime`, its samples batched (module docstring); the same arguments.

    Default similarity: :class:`ExpKernel` with Captum's defaults (cosine distance, width 1).
    """

    def __init__(self, forward_func: Callable[..., Any], interpretable_model: Any = None,
                 similarity_func: Callable[..., Any] | None = None, perturb_func: Callable[..., Any] | None = None,
                 ) -> None:
        super().__init__(forward_func, interpretable_model=interpretable_model,
                         similarity_func=ExpKernel() if similarity_func is None else similarity_func,
                         perturb_func=perturb_func)


class BatchedKernelShap(KernelShap, _BatchedLimeBase):
    """Captum's :class:`~captum.attr.KernelShap`, its samples batched (module docstring); the same arguments."""
