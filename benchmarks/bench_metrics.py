"""Explanation metrics against Quantus 0.6 (agreement, time) and against the model's own forward roofline.

Two regimes (``pip install -e .[bench]`` for Quantus):

- ``small``: ``small_cnn`` (seeded, trained for a few hundred steps on synthetic_shapes so that probabilities are not
  flat) on ``--n-images`` synthetic_shapes images at 32×32 with their ground-truth masks; maps are Captum
  ``Saliency`` (``|∂logit/∂x|`` summed over channels, ``N×1×H×W``), each divided by its own largest value, and
  Quantus receives the very same NumPy arrays (``a_batch``, ``s_batch``). Every metric with a Quantus counterpart is
  run by both with matched settings; deterministic metrics report the largest relative difference per image (target
  ≤ 1e-4), stochastic ones the mean ± standard error of both. Times are the best of ``--repeats`` runs each;
  the total is over the whole suite (target: ≥ 10× faster).
- ``resnet18``: torchvision resnet18 (random weights) at 224² on a few images. The model is wrapped in a module that
  counts the images it forwards; each model-bound metric's efficiency is
  ``images forwarded × best per-image forward time / measured time`` (target ≥ 0.8), the best per-image time being
  the best of no-grad batches of 4, 16, 32 and the batch size the metrics use (NCHW, as the metrics run on CPU).

Quantus conventions matched here: maps are ``N×1×H×W`` and Quantus broadcasts them over the image's 3 channels and
counts channel values, so its ``features_in_step`` / ``subset_size`` are ours × 3 (for a map without ties the same
pixels go at each step); its batch-wide max-normalisation is made moot by the per-image normalised maps;
``return_aggregate=False``; its softmax flag is passed as ours; robustness metrics get raw (unnormalised) saliency
maps and ``clip=False`` on our side (Quantus does not clip).

    python benchmarks/bench_metrics.py                           # both regimes, tables + benchmarks/bench_metrics.json
    python benchmarks/bench_metrics.py --regime small --n-images 32 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import xai_bench  # noqa: F401  (must precede torchvision)
from xai_bench.batching import default_batch_size
from xai_bench.data.synthetic import make_shapes
from xai_bench.metrics.explanation import complexity as cx
from xai_bench.metrics.explanation import faithfulness as fa
from xai_bench.metrics.explanation import localisation as lo
from xai_bench.metrics.explanation import randomisation as ra
from xai_bench.metrics.explanation import robustness as ro
from xai_bench.models import create_model

# Image channels of the small regime. Quantus broadcasts an N×1×H×W map over C channels and counts channel values
# (its feature counts are ours × C), but it also asserts H·W % features_in_step == 0, which no multiple of 3 meets on
# 32×32: the small regime therefore uses grayscale images, where pixels and features are the same thing.
C = 1


# -- inputs -------------------------------------------------------------------------------------------------------
def saliency(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Captum Saliency, ``|∂logit_y/∂x|`` summed over channels: ``N×1×H×W``."""
    from captum.attr import Saliency

    return Saliency(model).attribute(x, target=y, abs=True).sum(1, keepdim=True).detach()


def small_setup(n: int, train_steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    data = make_shapes(max(n, 1024), 32, seed=0)
    model = create_model("small_cnn", num_classes=6, in_chans=C)
    x_all, y_all = data["image"].float().mean(1, keepdim=True).expand(-1, C, -1, -1), data["label"].long()
    if train_steps:  # a brief training run so the target's probability reacts to the image
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        model.train()
        g = torch.Generator().manual_seed(0)
        for _ in range(train_steps):
            idx = torch.randint(0, x_all.shape[0] - 256, (32,), generator=g)
            loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    x, y, s = x_all[:n].contiguous(), y_all[:n], data["mask"][:n].reshape(n, 1, 32, 32).float()
    with torch.no_grad():
        acc = (model(x_all[-256:]).argmax(1) == y_all[-256:]).float().mean().item()
    raw = saliency(model, x, y)
    a = raw / raw.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return {"model": model, "x": x, "y": y, "s": s, "a": a, "a_raw": raw, "accuracy": acc}


# -- the comparison table -----------------------------------------------------------------------------------------
@dataclass
class Spec:
    name: str
    ours: Any
    quantus: Callable[[], Any]  # built lazily (Quantus imports are slow)
    kind: str  # "det": agree to 1e-4 per image | "stoch": agree in distribution
    call: dict[str, Any] = field(default_factory=dict)  # extra Quantus __call__ kwargs
    post: Callable[[Any], float] = float  # Quantus's per-image output → our score
    batch_size: int | None = None  # Quantus's batch size (default: all images in one batch)
    suite: bool = True  # counts towards the suite's total time
    raw_maps: bool = False  # robustness: raw saliency (the explainer's own output) instead of normalised maps
    note: str = ""


def small_specs(n_classes: int) -> list[Spec]:
    import quantus as q

    if not hasattr(np, "trapz"):  # Quantus 0.6 calls np.trapz, removed in NumPy 2.4; np.trapezoid is the same rule
        np.trapz = np.trapezoid

    kw = {"disable_warnings": True, "display_progressbar": False, "return_aggregate": False}
    fis = 8  # pixels per step for the pixel-wise faithfulness metrics (1024 pixels: 128 steps)

    def aopc(curve: Any) -> float:  # Quantus's curve f(x) − f(x_k), k = 1…L → our AOPC over k = 0…L
        return float(np.sum(curve) / (len(curve) + 1))

    return [
        Spec("pixel_flipping", fa.PixelFlipping(features_in_step=fis),
             lambda: q.PixelFlipping(features_in_step=fis * C, return_auc_per_sample=True, **kw), "det",
             {"softmax": True}),
        Spec("region_perturbation", fa.RegionPerturbation(patch_size=4, regions_evaluation=64),
             lambda: q.RegionPerturbation(patch_size=4, regions_evaluation=64, **kw), "det", {"softmax": True},
             post=aopc),
        Spec("faithfulness_estimate", fa.FaithfulnessEstimate(features_in_step=fis),
             lambda: q.FaithfulnessEstimate(features_in_step=fis * C, **kw), "det", {"softmax": False}),
        Spec("infidelity", fa.Infidelity(patch_sizes=(4,)),
             lambda: q.Infidelity(perturb_patch_sizes=[4], n_perturb_samples=1, **kw), "det", {"softmax": False},
             note="Quantus repeats the square perturbation n_perturb_samples times identically: run once"),
        Spec("irof", fa.IROF(),
             lambda: q.IROF(**kw), "det", {"softmax": True},
             note="documented deviations: Quantus's `mean` baseline is the perturbed batch's mean and it pads "
                  "shorter curves with zeros"),
        Spec("irof (black, Quantus batch 1)", fa.IROF(perturb_baseline="black"),
             lambda: q.IROF(perturb_baseline="black", **kw), "det", {"softmax": True}, batch_size=1, suite=False,
             note="one image per Quantus batch and a baseline the perturbation keeps (the image's minimum) remove "
                  "both batch quirks: the definitions agree"),
        Spec("faithfulness_correlation", fa.FaithfulnessCorrelation(nr_runs=50, subset_size=64),
             lambda: q.FaithfulnessCorrelation(nr_runs=50, subset_size=64 * C, **kw), "stoch", {"softmax": False},
             note="Quantus draws channel values, we draw whole pixels"),
        Spec("monotonicity_correlation", fa.MonotonicityCorrelation(nr_samples=10, features_in_step=16),
             lambda: q.MonotonicityCorrelation(nr_samples=10, features_in_step=16 * C, **kw), "stoch",
             {"softmax": True}),
        Spec("max_sensitivity", ro.MaxSensitivity(nr_samples=10, clip=False),
             lambda: q.MaxSensitivity(nr_samples=10, **kw), "stoch", raw_maps=True),
        Spec("avg_sensitivity", ro.AvgSensitivity(nr_samples=10, clip=False),
             lambda: q.AvgSensitivity(nr_samples=10, **kw), "stoch", raw_maps=True),
        Spec("local_lipschitz_estimate", ro.LocalLipschitzEstimate(nr_samples=10, clip=False, normalise=False),
             lambda: q.LocalLipschitzEstimate(nr_samples=10, normalise=False, **kw), "stoch", raw_maps=True,
             note="normalise=False on both: with normalise=True Quantus divides by the batch's max, we by each "
                  "map's own (documented), which shifts the distribution"),
        Spec("random_logit", ra.RandomLogit(num_classes=n_classes),
             lambda: q.RandomLogit(num_classes=n_classes, **kw), "stoch", raw_maps=True),
        Spec("sparseness", cx.Sparseness(), lambda: q.Sparseness(**kw), "det"),
        Spec("complexity", cx.Complexity(), lambda: q.Complexity(**kw), "det"),
        Spec("effective_complexity", cx.EffectiveComplexity(), lambda: q.EffectiveComplexity(**kw), "det"),
        Spec("pointing_game", lo.PointingGame(), lambda: q.PointingGame(**kw), "det"),
        Spec("relevance_mass_accuracy", lo.RelevanceMassAccuracy(), lambda: q.RelevanceMassAccuracy(**kw), "det"),
        Spec("relevance_rank_accuracy", lo.RelevanceRankAccuracy(), lambda: q.RelevanceRankAccuracy(**kw), "det"),
        Spec("top_k_intersection", lo.TopKIntersection(k=100), lambda: q.TopKIntersection(k=100, **kw), "det"),
        Spec("attribution_localisation", lo.AttributionLocalisation(),
             lambda: q.AttributionLocalisation(**kw), "det"),
        Spec("auc", lo.AUC(), lambda: q.AUC(**kw), "det"),
    ]


def _best(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    best, out = math.inf, None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_small(args: argparse.Namespace) -> dict[str, Any]:
    env = small_setup(args.n_images, args.train_steps)
    model, x, y, s = env["model"], env["x"], env["y"], env["s"]
    specs = [sp for sp in small_specs(6) if not args.metrics or sp.name in args.metrics]
    x_np, y_np, s_np = x.numpy(), y.numpy(), s.numpy()

    def explainer(images: Tensor, targets: Tensor) -> Tensor:
        return saliency(model, images, targets)

    def quantus_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        return saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets).long()).numpy()

    # The floor set by the model itself: every image either library forwards (and back-propagates, for the
    # robustness metrics that re-explain) costs at least the small CNN's best per-image time at any batch size.
    # A speed-up over Quantus can be no larger than Quantus's time over the floor of the work it does.
    t_fwd, bs_fwd = best_per_image(model, 32, [16, 64, 256, 1024], max(3, args.repeats), channels=C)
    t_grad, bs_grad = best_per_image(model, 32, [16, 64, 256], max(3, args.repeats), channels=C, grad=True)
    counting = Counting(model).eval()

    def floor(images: int, grads: int) -> float:
        return images * t_fwd + grads * max(t_grad - t_fwd, 0.0)

    def counted(fn: Callable[[], Any]) -> tuple[Any, int, int]:
        counting.images = counting.grads = 0
        out = fn()
        return out, counting.images, counting.grads

    rows = []
    for sp in specs:
        maps = env["a_raw"] if sp.raw_maps else env["a"]
        a_np = maps.numpy()
        ours, t_ours = _best(lambda sp=sp, maps=maps: sp.ours(model, x, y, maps, masks=s.bool(),
                                                              explainer=explainer), args.repeats)
        _, n_ours, g_ours = counted(lambda sp=sp, maps=maps: sp.ours(counting, x, y, maps, masks=s.bool(),
                                    explainer=lambda imgs, tg: saliency(counting, imgs, tg)))
        metric_q = sp.quantus()

        def call_q(metric_q: Any = metric_q, sp: Spec = sp, a_np: np.ndarray = a_np) -> list:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                np.random.seed(0)
                return metric_q(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, s_batch=s_np,
                                channel_first=True, explain_func=quantus_explain, device="cpu",
                                batch_size=sp.batch_size or args.n_images, **sp.call)

        out_q, t_q = _best(call_q, args.quantus_repeats)

        def call_q_counted(metric_q: Any = metric_q, sp: Spec = sp, a_np: np.ndarray = a_np) -> list:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                np.random.seed(0)
                return metric_q(model=counting, x_batch=x_np, y_batch=y_np, a_batch=a_np, s_batch=s_np,
                                channel_first=True, device="cpu", batch_size=sp.batch_size or args.n_images,
                                explain_func=lambda model, inputs, targets, **_: saliency(
                                    counting, torch.as_tensor(inputs), torch.as_tensor(targets).long()).numpy(),
                                **sp.call)

        _, n_q, g_q = counted(call_q_counted) if n_ours or g_ours else (None, 0, 0)
        theirs = torch.tensor([sp.post(v) for v in out_q], dtype=torch.float64)
        ours = ours.double()
        row = {"metric": sp.name, "kind": sp.kind, "ours_s": t_ours, "quantus_s": t_q, "speedup": t_q / t_ours,
               "ours_mean": _nanmean(ours), "quantus_mean": _nanmean(theirs), "ours_se": _se(ours),
               "quantus_se": _se(theirs), "note": sp.note,
               "ours_forwards": n_ours, "ours_backwards": g_ours, "quantus_forwards": n_q, "quantus_backwards": g_q,
               "floor_ours_s": floor(n_ours, g_ours), "floor_quantus_s": floor(n_q, g_q)}
        for who, t in (("ours", t_ours), ("quantus", t_q)):
            fl = row[f"floor_{who}_s"]
            row[f"{who}_efficiency"] = fl / t if fl > 0 else float("nan")
        if sp.kind == "det":
            both_nan = ours.isnan() & theirs.isnan()
            rel = (ours - theirs).abs() / theirs.abs().clamp_min(1e-12)
            rel = torch.where(both_nan, torch.zeros_like(rel), rel)
            row["max_rel_diff"] = float(rel.max())
            row["n_disagree"] = int((rel > 1e-4).sum())
            row["agree"] = bool(row["max_rel_diff"] <= 1e-4)
        else:  # difference of means in units of its standard error
            se = math.hypot(row["ours_se"], row["quantus_se"])
            row["z"] = (row["ours_mean"] - row["quantus_mean"]) / se if se > 0 else float("nan")
            row["agree"] = bool(abs(row["z"]) < 3)
        rows.append(row)
        print(f"  done {sp.name}: ours {t_ours:.3f}s, quantus {t_q:.3f}s", flush=True)
    suite = [r for r, sp in zip(rows, specs) if sp.suite]
    t_ours = sum(r["ours_s"] for r in suite)
    t_q = sum(r["quantus_s"] for r in suite)
    fl_ours = sum(r["floor_ours_s"] for r in suite)
    fl_q = sum(r["floor_quantus_s"] for r in suite)
    model_desc = f"small_cnn (seed 0, {args.train_steps} Adam steps; held-out accuracy {env['accuracy']:.2f})"
    return {"settings": {"model": model_desc, "images": f"synthetic_shapes {C}×32×32 (grayscale), n={args.n_images}",
        "maps": "Captum Saliency (abs, summed over channels), each divided by its max",
        "repeats": {"ours": args.repeats, "quantus": args.quantus_repeats}},
        "roofline": {"forward_per_image_s": t_fwd, "forward_batch": bs_fwd, "grad_per_image_s": t_grad,
                     "grad_batch": bs_grad},
        "rows": rows, "total": {"ours_s": t_ours, "quantus_s": t_q, "speedup": t_q / t_ours,
                                "floor_ours_s": fl_ours, "floor_quantus_s": fl_q,
                                "ours_efficiency": fl_ours / t_ours, "quantus_efficiency": fl_q / t_q,
                                # the largest speed-up any library could reach on Quantus's own work
                                "max_speedup": t_q / fl_q if fl_q > 0 else float("nan")}}


def _nanmean(t: Tensor) -> float:
    return float(t[~t.isnan()].mean()) if (~t.isnan()).any() else float("nan")


def _se(t: Tensor) -> float:
    t = t[~t.isnan()]
    return float(t.std() / math.sqrt(t.numel())) if t.numel() > 1 else float("nan")


# -- the roofline regime ------------------------------------------------------------------------------------------
class Counting(nn.Module):
    """Forwards to ``model`` and counts the images it has seen."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0
        self.grads = 0  # images passed with requires_grad (to be back-propagated by an explainer)

    def forward(self, x: Tensor) -> Tensor:
        self.images += x.shape[0]
        if torch.is_grad_enabled() and x.requires_grad:  # an explainer's pass: it will be back-propagated
            self.grads += x.shape[0]
        return self.model(x)


def best_per_image(model: nn.Module, size: int, batch_sizes: list[int], repeats: int, channels: int = 3,
                   grad: bool = False) -> tuple[float, int]:
    """Best per-image time of a forward (``grad=False``, no grad) or forward + input-gradient pass over batch sizes."""
    best, best_bs = math.inf, 0

    def step(x: Tensor) -> None:
        if grad:
            x = x.detach().requires_grad_(True)
            model(x)[:, 0].sum().backward()
        else:
            with torch.inference_mode():
                model(x)

    # The best of both memory formats: the floor must not be beaten by a format choice (our metrics run
    # channels_last in inference mode, xai_bench.accel).
    for fmt in (torch.contiguous_format, torch.channels_last):
        model.to(memory_format=fmt)
        for bs in batch_sizes:
            x = torch.rand(bs, channels, size, size).contiguous(memory_format=fmt)
            step(x)  # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter()
                step(x)
                t = (time.perf_counter() - t0) / bs
                if t < best:
                    best, best_bs = t, bs
    model.to(memory_format=torch.contiguous_format)
    return best, best_bs


def roofline_specs() -> list[tuple[str, Any]]:
    # 224² = 50,176 pixels; settings cut to ~30–200 forward passes per image to fit a 2-core CPU
    return [
        ("deletion", fa.Deletion()),  # 32 steps
        ("insertion", fa.Insertion()),
        ("pixel_flipping", fa.PixelFlipping(features_in_step=50176 // 64)),  # 64 steps
        ("region_perturbation", fa.RegionPerturbation(patch_size=16, regions_evaluation=64)),
        ("faithfulness_estimate", fa.FaithfulnessEstimate(features_in_step=50176 // 64)),
        ("faithfulness_correlation", fa.FaithfulnessCorrelation(nr_runs=64, subset_size=224 * 16)),
        ("monotonicity_correlation", fa.MonotonicityCorrelation(nr_samples=4, features_in_step=50176 // 16)),
        ("infidelity", fa.Infidelity(patch_sizes=(32,))),
        ("irof", fa.IROF(segmentation_kwargs={"n_segments": 50})),
    ]


def photos(n: int, size: int) -> Tensor:
    """``n`` bundled scikit-image photographs (offline), centre-cropped and resized to ``size``², in [0, 1]."""
    import skimage.data
    import torch.nn.functional as F

    names = ("chelsea", "coffee", "astronaut", "rocket", "horse", "camera")
    out = []
    for i in range(n):
        img = torch.as_tensor(getattr(skimage.data, names[i % len(names)])()).float() / 255
        img = img.expand(3, *img.shape) if img.ndim == 2 else img.permute(2, 0, 1)[:3]
        side = min(img.shape[-2:])
        top, left = (img.shape[-2] - side) // 2, (img.shape[-1] - side) // 2
        img = img[:, top:top + side, left:left + side]
        out.append(F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out).clamp(0, 1)


def run_roofline(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    net = create_model("torchvision", arch="resnet18", num_classes=1000).eval()
    model = Counting(net).eval()
    size, n = 224, args.roofline_images
    x = photos(n, size)  # real photographs: on noise SLIC finds one segment and IROF would forward almost nothing
    y = torch.randint(0, 1000, (n,))
    maps = torch.rand(n, 1, size, size)  # the metrics' cost does not depend on the map's values
    metric_bs = default_batch_size(net, (3, size, size), "cpu")
    t_img, t_bs = best_per_image(net, size, sorted({4, 16, 32, metric_bs}), args.repeats)
    rows = []
    for name, metric in roofline_specs():
        if args.metrics and name not in args.metrics:
            continue
        best, count = math.inf, 0
        for _ in range(max(1, args.roofline_repeats)):
            model.images = 0
            t0 = time.perf_counter()
            metric(model, x, y, maps)
            best = min(best, time.perf_counter() - t0)
            count = model.images
        eff = count * t_img / best
        rows.append({"metric": name, "images_forwarded": count, "per_image": count / n, "seconds": best,
                     "roofline_s": count * t_img, "efficiency": eff})
        print(f"  done {name}: {count} images in {best:.2f}s, efficiency {eff:.2f}", flush=True)
    return {"settings": {"model": "torchvision resnet18, random weights (seed 0), best of NCHW and channels_last, "
                                  "inference mode",
                         "images": f"{n} scikit-image photos at 3×224×224", "metric_batch_size": metric_bs,
                         "best_per_image_s": t_img, "best_batch_size": t_bs},
            "rows": rows}


# -- output -------------------------------------------------------------------------------------------------------
def _fmt(v: float, spec: str = ".4g") -> str:
    return "nan" if v != v else format(v, spec)


def print_small(res: dict[str, Any]) -> None:
    print("\n### Agreement and speed vs Quantus 0.6 (small_cnn, 32×32)\n")
    print("; ".join(f"{k}: {v}" for k, v in res["settings"].items()))
    print("\n| metric | kind | agreement | ours (mean ± s.e.) | Quantus (mean ± s.e.) | ours s | Quantus s "
          "| speed-up |")
    print("|---|---|---|---|---|---:|---:|---:|")
    for r in res["rows"]:
        if r["kind"] == "det":
            agree = f"max rel diff {r['max_rel_diff']:.1e}" + ("" if r["agree"] else f" ✗ ({r['n_disagree']} img)")
        else:
            agree = f"z = {_fmt(r['z'], '.2f')}" + ("" if r["agree"] else " ✗")
        print(f"| {r['metric']} | {r['kind']} | {agree} | {_fmt(r['ours_mean'])} ± {_fmt(r['ours_se'], '.2g')} | "
              f"{_fmt(r['quantus_mean'])} ± {_fmt(r['quantus_se'], '.2g')} | {r['ours_s']:.3f} | "
              f"{r['quantus_s']:.3f} | {r['speedup']:.1f}× |")
    t = res["total"]
    print(f"| **suite** | | | | | {t['ours_s']:.2f} | {t['quantus_s']:.2f} | **{t['speedup']:.1f}×** |")
    rf = res["roofline"]
    print(f"\n### The model's floor on the same work (small_cnn, 32×32)\n\nbest forward "
          f"{rf['forward_per_image_s'] * 1e6:.0f} µs/image (batch {rf['forward_batch']}), forward + input gradient "
          f"{rf['grad_per_image_s'] * 1e6:.0f} µs/image (batch {rf['grad_batch']}). Floor = images forwarded × best "
          "forward time + images back-propagated × the gradient's extra time; efficiency = floor / measured time.\n")
    print("| metric | ours: fwd / bwd images | Quantus: fwd / bwd images | floor (ours) s | ours efficiency "
          "| Quantus efficiency |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in res["rows"]:
        if not (r["ours_forwards"] or r["quantus_forwards"]):
            continue
        print(f"| {r['metric']} | {r['ours_forwards']} / {r['ours_backwards']} | {r['quantus_forwards']} / "
              f"{r['quantus_backwards']} | {r['floor_ours_s']:.3f} | {_fmt(r['ours_efficiency'], '.2f')} | "
              f"{_fmt(r['quantus_efficiency'], '.2f')} |")
    print(f"| **suite** | | | {t['floor_ours_s']:.2f} | {t['ours_efficiency']:.2f} | {t['quantus_efficiency']:.2f} |")
    print(f"\nLargest speed-up any implementation could reach over Quantus on this work: Quantus's time / the floor "
          f"of its own forwards = **{t['max_speedup']:.1f}×**.")
    notes = [f"- {r['metric']}: {r['note']}" for r in res["rows"] if r["note"]]
    if notes:
        print("\n" + "\n".join(notes))


def print_roofline(res: dict[str, Any]) -> None:
    st = res["settings"]
    print("\n### Forward roofline (resnet18, 224×224)\n")
    print(f"{st['model']}; {st['images']}; best forward {st['best_per_image_s'] * 1e3:.1f} ms/image "
          f"(batch {st['best_batch_size']}); metrics' batch size {st['metric_batch_size']}")
    print("\n| metric | images forwarded | per image | measured s | roofline s | efficiency |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in res["rows"]:
        flag = "" if r["efficiency"] >= 0.8 else " ✗"
        print(f"| {r['metric']} | {r['images_forwarded']} | {r['per_image']:.0f} | {r['seconds']:.2f} | "
              f"{r['roofline_s']:.2f} | {r['efficiency']:.2f}{flag} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regime", choices=["small", "resnet18", "all"], default="all")
    parser.add_argument("--n-images", type=int, default=16, help="small regime: images")
    parser.add_argument("--train-steps", type=int, default=60, help="small regime: Adam steps before scoring")
    parser.add_argument("--repeats", type=int, default=3, help="our timings: best of this many runs")
    parser.add_argument("--quantus-repeats", type=int, default=1, help="Quantus timings: best of this many runs")
    parser.add_argument("--roofline-images", type=int, default=2, help="resnet18 regime: images")
    parser.add_argument("--roofline-repeats", type=int, default=1, help="resnet18 regime: best of this many runs")
    parser.add_argument("--metrics", nargs="*", default=None, help="only these metrics")
    parser.add_argument("--out", default="benchmarks/bench_metrics.json", help="JSON with every number")
    args = parser.parse_args()

    import captum
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": "cpu",
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "captum": captum.__version__, "python": platform.python_version()}
    results: dict[str, Any] = {"meta": meta}
    if args.regime in ("small", "all"):
        import quantus
        meta["quantus"] = quantus.__version__
        results["small"] = run_small(args)
    if args.regime in ("resnet18", "all"):
        results["resnet18"] = run_roofline(args)

    print("\n" + ", ".join(f"{k} {v}" for k, v in meta.items()))
    if "small" in results:
        print_small(results["small"])
    if "resnet18" in results:
        print_roofline(results["resnet18"])
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
