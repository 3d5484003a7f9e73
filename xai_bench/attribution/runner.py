"""Turn a ``conf/attribution/*.yaml`` node into a ready-to-run explainer for one model.

Every attribution method, Captum's or ours, is one YAML file (see ``conf/attribution/integrated_gradients.yaml``)::

    name: integrated_gradients      # label in figures and tables
    method: {_target_: captum.attr.IntegratedGradients, _partial_: true}
    layer: null            # layer methods: null → model.default_layer, else a dotted module name
    upsample: false        # layer methods: bilinearly upsample the layer map to the input size
    baseline: zeros        # zeros | constant | blurred | uniform | data (training images) | null (see baselines.py)
    baseline_value: 0.0    # also baseline_sigma (blurred), baseline_seed (uniform), baseline_samples (distribution)
    wrapper: null          # {type: smoothgrad|smoothgrad_sq|vargrad, nt_samples, stdevs, nt_samples_batch_size}
    forgrad_sigma: null    # ForGrad low-pass of the map when set
    channel_reduction: sum # sum | abs_sum | max_abs | mean | null (keep C channels)
    segmentation: null     # feature mask: {algorithm: slic|quickshift|grid, slic: {...}, ...} (superpixels.py)
    window: null           # Occlusion: square window / stride in pixels, spanning all channels (null: ≈ side/4, half
    stride: null           #   of that; a window that fits the image whatever its size)
    signed: null           # method facts (see base.py): null → the method class's attribute of that name, else false
    forward_only: null     #   (also one_image_per_call, unshare_nonlinearities, figure)
    batch_size: null       # images per attribute() call (halved automatically on out-of-memory)
    kwargs: {n_steps: 32, internal_batch_size: 64}   # passed to attribute()

What a method *is* (signed maps, forward-only, one image per call, how it is best drawn) comes from
:func:`xai_bench.attribution.base.method_facts`, never from a list of class names here.

``build_attribution(cfg, model)`` binds the ``_partial_`` method to the model (and to the layer, for classes whose
constructor takes one), and :meth:`Explainer.attribute` does the rest: baselines, feature masks, NoiseTunnel,
upsampling, ForGrad, channel reduction and batching.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel
from torch import Tensor, nn

from xai_bench.accel import channels_last_weights, fast_forward
from xai_bench.batching import call_halving_inner, default_batch_size, run_batched
from xai_bench._compat import deeplift_nonlinearities
from xai_bench.attribution.base import FACT_NAMES, MethodFacts, method_facts
from xai_bench.attribution.baselines import BASELINE_KINDS, DATA_BASELINE, data_baseline, make_baseline
from xai_bench.attribution.superpixels import segment, segmentation_settings
from xai_bench.checks import as_class_indices, check_images, eval_mode
from xai_bench.registry import unknown_name_message
from xai_bench.utils import build

CONFIG_KEYS = (
    "name", "method", "layer", "upsample", "baseline", "baseline_value", "baseline_sigma", "baseline_seed",
    "baseline_samples", "wrapper", "forgrad_sigma", "channel_reduction", "segmentation", "window", "stride",
    "batch_size", "kwargs", *FACT_NAMES,
)
CHANNEL_REDUCTIONS = ("sum", "abs_sum", "max_abs", "mean")
NOISE_TUNNEL_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
# images per forward pass inside attribute(): null in a YAML → from the device and input size (batching.py); both
# are halved on out-of-memory errors once one image per call still does not fit
INNER_BATCH_KEYS = ("perturbations_per_eval", "internal_batch_size")
_CAPTUM_CHATTER = ("Input Tensor 0 did not already require gradients", "Setting backward hooks on ReLU activations")


class Explainer:
    """An attribution method bound to a model, configured by one ``conf/attribution`` node.

    Build it with :func:`build_attribution`. Args mirror the config keys documented in this module.

    Returns of :meth:`attribute` are float maps detached on the input's device.
    """

    def __init__(
        self,
        method: Any,
        model: nn.Module,
        *,
        name: str,
        method_cls: type,
        layer_name: str | None = None,
        upsample: bool = False,
        baseline: str | None = None,
        baseline_params: Mapping[str, Any] | None = None,
        baseline_samples: int | None = None,
        wrapper: Mapping[str, Any] | None = None,
        forgrad_sigma: float | None = None,
        channel_reduction: str | None = "sum",
        segmentation: Mapping[str, Any] | None = None,
        window: int | None = None,
        stride: int | None = None,
        batch_size: int | None = None,
        kwargs: Mapping[str, Any] | None = None,
        facts: MethodFacts | None = None,
        background: Tensor | None = None,
    ) -> None:
        self.method = method
        self.model = model
        self.name = name
        self.method_cls = method_cls
        self.layer_name = layer_name
        self.upsample = bool(upsample)
        self.baseline = baseline
        self.baseline_params = dict(baseline_params or {})
        self.baseline_samples = baseline_samples
        self.wrapper = dict(wrapper) if wrapper else None
        self.forgrad_sigma = forgrad_sigma
        self.channel_reduction = channel_reduction
        self.segmentation = dict(segmentation) if segmentation else None
        self.window = window
        self.stride = stride
        self.batch_size = batch_size
        self.kwargs = dict(kwargs or {})
        self.facts = facts or method_facts(method_cls)
        self.background = background  # baseline: data — images from the training split, B×C×H×W
        self._windowed = "sliding_window_shapes" in inspect.signature(method_cls.attribute).parameters
        self._num_classes: int | None = getattr(model, "num_classes", None)
        self._inner_limits: dict[str, int] = {}  # inner batch sizes learned from out-of-memory errors

    def __repr__(self) -> str:
        layer = f", layer={self.layer_name!r}" if self.layer_name else ""
        return f"Explainer({self.name!r}, {self.method_cls.__name__}{layer})"

    # ------------------------------------------------------------------------------------------------------------
    def attribute(self, images: Tensor, target: Tensor | int | list | None, *,
                  batch_size: int | None = None) -> Tensor:
        """Attribution maps for ``images`` with respect to the logits ``target``.

        Args:
            images: N×C×H×W float images in [0, 1].
            target: class ids, an int, a length-N tensor/list (one per image), an N×T tensor (T classes per image;
                one map is made per (image, class) pair, see :func:`expand_targets`), or ``None`` for the model's
                predicted class.
            batch_size: images per call to the underlying method (default: the config's ``batch_size``, else all
                at once). On out-of-memory errors the batch is halved and retried.

        Returns:
            Detached float maps on ``images``' device: N×1×H×W when ``channel_reduction`` is set (the YAMLs set
            it), else N×C×H×W; N×T×1×H×W / N×T×C×H×W for 2-D ``target``. Layer methods without ``upsample`` keep
            the layer's h×w.
        """
        check_images(images, "images", check_range=False)
        n = images.shape[0]
        with eval_mode(self.model), warnings.catch_warnings():
            # Captum says these on every call (metrics re-explain hundreds of times): the runner sets
            # requires_grad itself and removes Guided Backprop's hooks, so they carry no information here.
            for message in _CAPTUM_CHATTER:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            targets = self._check_targets(images, target)
            # Baselines and feature masks are made once for the original images (not per batch, not per target),
            # so results do not depend on the batch size.
            extras = self._prepare(images)
            t_per_image = 1 if targets.dim() == 1 else targets.shape[1]
            x, flat_t = expand_targets(images, targets)
            if t_per_image > 1:
                extras = {k: (v if k == "_distribution" else v.repeat_interleave(t_per_image, 0))
                          for k, v in extras.items()}
            size = batch_size or self.batch_size or x.shape[0]
            # channels_last weights (undone on exit); forward-only methods also run in inference mode (accel.py)
            fast = fast_forward if self.facts.forward_only else channels_last_weights
            with fast(self.model, images.device):
                maps = run_batched(lambda s: self._attribute_batch(x[s], flat_t[s], extras, s), x.shape[0], size)
            if maps.is_inference():
                maps = maps.clone()  # a normal tensor again, so callers may update it in place
        if targets.dim() == 2:
            maps = maps.view(n, t_per_image, *maps.shape[1:])
        return maps

    __call__ = attribute

    # ------------------------------------------------------------------------------------------------------------
    def _check_targets(self, images: Tensor, target: Tensor | int | list | None) -> Tensor:
        n = images.shape[0]
        if target is None:
            with torch.no_grad():
                logits = self.model(images)
            self._num_classes = self._num_classes or int(logits.shape[-1])
            return logits.argmax(-1)
        if self._num_classes is None:
            with torch.no_grad():
                self._num_classes = int(self.model(images[:1]).shape[-1])
        t = torch.as_tensor(target, device=images.device)
        if t.dim() != 2:  # one class per image: the shared contract
            return as_class_indices(t, n, images.device, "target", num_classes=self._num_classes)
        # N×T: T classes per image, one map per (image, class) pair
        if t.shape[0] != n:
            raise ValueError(f"an N×T target needs N = {n} rows (one per image), got shape {tuple(t.shape)}")
        flat = as_class_indices(t.flatten(), t.numel(), images.device, "target", num_classes=self._num_classes)
        return flat.view(n, -1)

    def _prepare(self, images: Tensor) -> dict[str, Tensor]:
        extras: dict[str, Tensor] = {}
        if self.baseline == DATA_BASELINE:
            extras["_distribution"] = data_baseline(self.background, images, self.name)
        elif self.baseline is not None:
            if self.baseline_samples:
                # A distribution of references (GradientSHAP samples from it): its own batch size, shared by all
                # images, so it is not sliced with them.
                template = images.new_empty((int(self.baseline_samples), *images.shape[1:]))
                extras["_distribution"] = make_baseline(self.baseline, template, **self.baseline_params)
            else:
                extras["baselines"] = make_baseline(self.baseline, images, **self.baseline_params)
        if self.segmentation is not None:
            masks = segment(images, self.segmentation)
            if self.facts.one_image_per_call:
                # Kernel SHAP's coalition sampler divides by zero for one feature (NaN deep inside Captum), and a
                # one-feature surrogate explains nothing.
                single = (masks.flatten(1).amax(1) == 0).nonzero().flatten().tolist()
                if single:
                    raise ValueError(f"{self.name}: segmentation {self.segmentation} gave a single segment for "
                                     f"image(s) {single} of {images.shape[-2]}×{images.shape[-1]} px; raise "
                                     f"segmentation.slic.n_segments, lower segmentation.quickshift.max_dist, or use "
                                     f"segmentation.algorithm: grid")
            extras["feature_mask"] = masks
        return extras

    def _attribute_batch(self, x: Tensor, t: Tensor, extras: dict[str, Tensor], s: slice) -> Tensor:
        kwargs = dict(self.kwargs)
        for key, value in extras.items():
            if key == "_distribution":
                kwargs["baselines"] = value
            else:
                kwargs[key] = value[s]
        c, h, w = x.shape[1:]
        if self._windowed:
            window, stride = occlusion_window(h, w, self.window, self.stride)
            win_h, win_w = min(window, h), min(window, w)
            kwargs["sliding_window_shapes"] = (c, win_h, win_w)
            kwargs["strides"] = (c, min(stride, win_h), min(stride, win_w))
        per_call = 1 if self.facts.one_image_per_call else x.shape[0]
        for key in INNER_BATCH_KEYS:
            if key in kwargs and kwargs[key] is None:  # per image (Captum's perturbations) or in all (IG's)
                size = default_batch_size(self.model, (c, h, w), x.device)
                kwargs[key] = max(1, size // per_call) if key == "perturbations_per_eval" else size
            if key in self._inner_limits and kwargs.get(key) is not None:
                kwargs[key] = min(int(kwargs[key]), self._inner_limits[key])
        if self.facts.one_image_per_call and x.shape[0] > 1:
            maps = torch.cat([self._call_halving(x[i:i + 1], t[i:i + 1], _slice_kwargs(kwargs, i, x.shape[0]))
                              for i in range(x.shape[0])])
        else:
            maps = self._call_halving(x, t, kwargs)
        maps = maps.detach().float()
        if self.upsample and maps.shape[-2:] != (h, w):
            maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
        if self.forgrad_sigma is not None:
            from xai_bench.attribution.forgrad import forgrad_filter

            maps = forgrad_filter(maps, self.forgrad_sigma)
        return reduce_channels(maps, self.channel_reduction)

    def _call_halving(self, x: Tensor, t: Tensor, kwargs: dict[str, Any]) -> Tensor:
        # one image: on OOM halve the inner batch (with more, the batcher first halves the images per call)
        if x.shape[0] > 1:
            return self._call_method(x, t, kwargs)
        return call_halving_inner(lambda kw: self._call_method(x, t, kw), kwargs, INNER_BATCH_KEYS, self._inner_limits)

    def _call_method(self, x: Tensor, t: Tensor, kwargs: dict[str, Any]) -> Tensor:
        if self.wrapper is not None:
            w = self.wrapper
            out = self.method.attribute(
                x, nt_type=w["type"], nt_samples=int(w.get("nt_samples", 10)), stdevs=float(w.get("stdevs", 0.15)),
                nt_samples_batch_size=w.get("nt_samples_batch_size"), target=t, **kwargs)
        else:
            out = self.method.attribute(x, target=t, **kwargs)
        if isinstance(out, tuple):  # e.g. (attributions, convergence_delta)
            out = out[0]
        if out.dim() != 4 or out.shape[0] != x.shape[0]:
            raise RuntimeError(f"{self.method_cls.__name__} returned shape {tuple(out.shape)} for input "
                               f"{tuple(x.shape)}; expected N×C'×H'×W'")
        return out


# ---------------------------------------------------------------------------------------------------------------
def build_attribution(cfg: Mapping[str, Any], model: nn.Module, *, background: Tensor | None = None) -> Explainer:
    """Build an :class:`Explainer` from one ``conf/attribution`` node (DictConfig or dict) for ``model`` (and the
    B×C×H×W ``background`` images of ``baseline: data``: Expected Gradients, DeepLIFT-SHAP).

    Leaves the model's train/eval flags alone (``attribute`` runs in eval mode and restores them). Raises
    ``ValueError`` on unknown config keys, a layer method for a model without a
    layer, a baseline/feature mask/window for a method that does not take one, and ``KeyError`` (listing the valid
    names) for an unknown layer.
    """
    from omegaconf import DictConfig, OmegaConf

    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    unknown = [k for k in node if k not in CONFIG_KEYS]
    if unknown:
        raise ValueError(f"unknown attribution config key(s) {unknown}; valid keys: {', '.join(CONFIG_KEYS)}")
    if node.get("method") is None:
        raise ValueError("attribution config needs a `method` node with _target_ and _partial_: true")
    opts = OmegaConf.to_container(node, resolve=True)
    name = str(opts.get("name") or opts["method"].get("_target_", "attribution"))
    if not (isinstance(opts["method"], dict) and opts["method"].get("_partial_") is True):
        raise ValueError(f"attribution.method for {name!r} must be a `_target_` node with `_partial_: true` (the "
                         f"model is bound at run time), got {opts['method']!r}")
    if opts.get("baseline") is not None and opts["baseline"] not in (*BASELINE_KINDS, DATA_BASELINE):
        raise ValueError(unknown_name_message("baseline kind", str(opts["baseline"]), (*BASELINE_KINDS, DATA_BASELINE),
                                              " Set attribution.baseline to one of these (or null)."))
    if opts.get("baseline_samples") and opts.get("baseline") == "blurred":
        raise ValueError("baseline_samples needs an image-independent baseline (zeros, constant, uniform); "
                         "'blurred' depends on each image. Set attribution.baseline_samples: null.")
    factory = build(node.method)
    method_cls = factory.func
    ctor = inspect.signature(method_cls).parameters
    facts = method_facts(method_cls, opts)

    forward: nn.Module = model
    if facts.unshare_nonlinearities:
        forward = unshare_nonlinearities(model, name)

    layer_name = None
    if "layer" in ctor:
        layer_name = opts.get("layer") or getattr(model, "default_layer", None)
        if layer_name is None:
            raise ValueError(f"{name} is a layer method but the model has no default_layer; set "
                             f"attribution.layer to a dotted module name, e.g. one of {_conv_names(model)[-5:]}")
        method = factory(forward, _get_layer(model, layer_name))
    else:
        if opts.get("layer"):
            raise ValueError(f"{name} ({method_cls.__name__}) does not take a layer; set attribution.layer: null")
        method = factory(forward)

    wrapper = opts.get("wrapper")
    if wrapper:
        wtype = wrapper.get("type")
        if wtype not in NOISE_TUNNEL_TYPES:
            raise ValueError(f"wrapper.type must be one of {NOISE_TUNNEL_TYPES} (a NoiseTunnel), got {wtype!r}")
        method = NoiseTunnel(method)

    attribute_params = inspect.signature(method_cls.attribute).parameters
    checks = {"baseline": "baselines", "segmentation": "feature_mask", "window": "sliding_window_shapes"}
    for key, param in checks.items():
        if opts.get(key) is not None and param not in attribute_params:
            raise ValueError(f"{name}: {method_cls.__name__}.attribute takes no `{param}`; set attribution.{key}: null")
    reduction = opts.get("channel_reduction", "sum")
    if reduction is not None and reduction not in CHANNEL_REDUCTIONS:
        raise ValueError(f"channel_reduction must be one of {CHANNEL_REDUCTIONS} or null, got {reduction!r}")
    if opts.get("segmentation") is not None:
        segmentation_settings(opts["segmentation"])  # a setting the algorithm does not take fails here, not later
    if opts.get("window") is not None and int(opts["window"]) < 1:
        raise ValueError(f"window must be >= 1 pixel, got {opts['window']}")

    baseline_params = {}
    for key, param in (("baseline_value", "value"), ("baseline_sigma", "sigma"), ("baseline_seed", "seed")):
        if opts.get(key) is not None:
            baseline_params[param] = opts[key]
    return Explainer(
        method, model, name=name, method_cls=method_cls, layer_name=layer_name,
        upsample=bool(opts.get("upsample", False)), baseline=opts.get("baseline"),
        baseline_params=baseline_params, baseline_samples=opts.get("baseline_samples"), wrapper=wrapper,
        forgrad_sigma=opts.get("forgrad_sigma"), channel_reduction=reduction, segmentation=opts.get("segmentation"),
        window=opts.get("window"), stride=opts.get("stride"), batch_size=opts.get("batch_size"),
        kwargs=opts.get("kwargs") or {}, facts=facts, background=background,
    )


def occlusion_window(height: int, width: int, window: int | None, stride: int | None) -> tuple[int, int]:
    """Occlusion's window and stride in pixels: as configured, or sized to the image when ``None``.

    The default window is a quarter of the shorter side (56 px at 224², 8 px at 32²) with a stride of half the
    window: 49 forward passes per image at any size, and never a window that covers the whole image (which gives
    a constant map).
    """
    if window is None:
        window = max(1, round(min(height, width) / 4))
        stride = stride or max(1, window // 2)
    return int(window), int(stride or window)


def expand_targets(images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Repeat images so that one map is made per (image, class) pair.

    Args:
        images: N×C×H×W.
        targets: length-N class ids (returned unchanged) or N×T (T classes per image).

    Returns:
        ``(images', targets')``: (N·T)×C×H×W images, each repeated T times in a row, and the flattened N·T targets.
    """
    targets = torch.as_tensor(targets, device=images.device)
    if targets.dim() <= 1:
        return images, targets
    if targets.dim() != 2 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets must be length-N or N×T for N={images.shape[0]}, got {tuple(targets.shape)}")
    return images.repeat_interleave(targets.shape[1], dim=0), targets.reshape(-1)


def reduce_channels(maps: Tensor, how: str | None) -> Tensor:
    """Reduce N×C×H×W maps to N×1×H×W.

    ``sum`` keeps the sign and completeness (IG, DeepLift, input×gradient); ``abs_sum`` and ``max_abs`` give
    magnitude maps (SmoothGrad / Simonyan et al.'s saliency use the max over channels of |gradient|); ``mean``
    suits perturbation methods whose value is replicated over channels (occlusion, ablation, LIME, Kernel SHAP).
    ``None`` returns the maps unchanged.
    """
    if how is None:
        return maps
    if how == "sum":
        return maps.sum(1, keepdim=True)
    if how == "abs_sum":
        return maps.abs().sum(1, keepdim=True)
    if how == "max_abs":
        return maps.abs().amax(1, keepdim=True)
    if how == "mean":
        return maps.mean(1, keepdim=True)
    raise ValueError(f"channel_reduction must be one of {CHANNEL_REDUCTIONS} or None, got {how!r}")


def to_display(maps: Tensor, signed: bool) -> Tensor:
    """Per-map scaling for figures: N×C×H×W maps → N×1×H×W.

    Several channels are summed (``signed``) or abs-summed first. Signed maps are divided by their max |value| into
    [-1, 1] (draw with a diverging colormap centred at 0); unsigned maps take |value| and are scaled to [0, 1].
    All-zero maps stay zero.
    """
    maps = maps.detach().float()
    if maps.shape[1] > 1:
        maps = reduce_channels(maps, "sum" if signed else "abs_sum")
    if not signed:
        maps = maps.abs()
    scale = maps.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return maps / scale


def unshare_nonlinearities(model: nn.Module, name: str = "DeepLift") -> nn.Module:
    """A forward function equal to ``model`` in which every DeepLift-hooked module runs once and out of place.

    Captum's DeepLift stores inputs/outputs on each non-linearity module (ReLU, MaxPool, …), so a module called
    twice (torchvision ResNet blocks reuse ``self.relu``) or an in-place ReLU breaks it. When the model has either,
    it is traced with ``torch.fx`` and each call site gets its own out-of-place copy. The traced module shares every
    parameter and buffer with ``model`` (nothing is copied but the stateless non-linearities) and ``model`` itself
    is left unchanged. Models without the problem are returned as they are.

    Raises:
        ValueError: when the model needs the fix but cannot be traced by ``torch.fx``.
    """
    nonlinear = deeplift_nonlinearities()

    def hooked(m: nn.Module) -> bool:
        return type(m) in nonlinear

    if not any(hooked(m) and getattr(m, "inplace", False) for m in model.modules()):
        calls: dict[int, int] = {}
        handles = [m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1))
                   for m in model.modules() if hooked(m)]
        try:
            c, h, w = getattr(model, "input_size", (3, 32, 32))
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            with torch.no_grad():
                model(torch.rand(1, c, h, w, device=device))
        finally:
            for handle in handles:
                handle.remove()
        if all(v == 1 for v in calls.values()):
            return model
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # fx raises many error types for untraceable code
        raise ValueError(
            f"{name}: the model reuses or runs in place a non-linearity module (e.g. one nn.ReLU(inplace=True) "
            f"called twice), which Captum's DeepLift cannot handle, and torch.fx could not trace it to fix that "
            f"({type(err).__name__}: {err}). Give each call its own nn.ReLU(inplace=False).") from err
    seen: set[str] = set()
    copies = 0
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if not hooked(mod) or (node.target not in seen and not getattr(mod, "inplace", False)):
            seen.add(node.target)
            continue
        fresh = copy.deepcopy(mod)
        if hasattr(fresh, "inplace"):
            fresh.inplace = False
        copies += 1
        new_name = f"{node.target.replace('.', '_')}__call{copies}"
        gm.add_submodule(new_name, fresh)
        node.target = new_name
    gm.recompile()
    return gm.eval()


# ---------------------------------------------------------------------------------------------------------------
def _get_layer(model: nn.Module, name: str) -> nn.Module:
    if hasattr(model, "get_layer"):
        return model.get_layer(name)
    modules = dict(model.named_modules())
    if name not in modules:
        raise KeyError(unknown_name_message("layer", name, [n for n in modules if n]))
    return modules[name]


def _conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _slice_kwargs(kwargs: dict[str, Any], i: int, n: int) -> dict[str, Any]:
    """Per-example kwargs: tensors with a batch dimension of ``n`` are sliced to example ``i``."""
    return {k: (v[i:i + 1] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n else v)
            for k, v in kwargs.items()}
