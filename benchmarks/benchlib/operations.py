"""The benchmarked operations: ours (as a user runs them, from ``conf/attribution/*.yaml``) and the peer a user would
pick instead, on the same model, images, targets and settings.

Each ``op_<name>(ctx)`` returns one row (a dict). A peer library that is not installed is skipped with a note in the
row instead of failing the run (``pip install -e '.[bench]'``; torchattacks needs ``pip install --no-deps
torchattacks==3.5.1``, its ``requests`` pin clashes with wandb's).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from benchlib.timing import BatchFloor, Counted, Roofline, Timing, timed
from xai_bench.attribution.rise import generate_rise_masks
from xai_bench.attribution.runner import Explainer, build_attribution, occlusion_window
from xai_bench.attribution.superpixels import segment

CONF = Path(__file__).resolve().parents[2] / "conf" / "attribution"
EPS_10 = [0.0, 0.5 / 255, 1 / 255, 2 / 255, 3 / 255, 4 / 255, 6 / 255, 8 / 255, 12 / 255, 16 / 255]


@dataclass
class Context:
    regime: str
    model: Counted
    images: Tensor
    targets: Tensor
    device: torch.device
    sizes: DictConfig  # the regime's settings from the mode file
    roofline: Roofline
    batch_floor: BatchFloor | None = None  # the bare model at the batch sizes an operation used
    repeats: int = 1
    peers: bool = True
    amp: bool = False


def load_method(name: str, **overrides: Any) -> DictConfig:
    """``conf/attribution/<name>.yaml`` merged onto its schema, as Hydra composes it, plus ``overrides``."""
    from xai_bench.config.schemas import AttributionSchema

    node = OmegaConf.load(CONF / f"{name}.yaml")
    node.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(AttributionSchema), node, OmegaConf.create(overrides))


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _autocast(ctx: Context) -> Any:
    return torch.autocast("cuda", dtype=torch.bfloat16) if ctx.amp and ctx.device.type == "cuda" \
        else contextlib.nullcontext()


def _row(ctx: Context, op: str, work: str, ours: Timing, peer_name: str, peer: Timing | None, note: str = "",
         agreement: str = "") -> dict[str, Any]:
    row = {
        "calls": {f"{b}{'+grad' if g else ''}": n for (b, g), n in ours.calls.items()},
        "calls_raw": [[b, g, n] for (b, g), n in ours.calls.items()],  # for derive(): (batch size, grad, calls)
        "regime": ctx.regime, "operation": op, "work": work, "ours_s": ours.seconds, "fwd": ours.fwd,
        "fwdbwd": ours.fwdbwd, "ours_peak_mb": ours.peak_mb,
        "peer": peer_name, "peer_s": peer.seconds if peer else None,
        "speedup": peer.seconds / ours.seconds if peer else None, "peer_peak_mb": peer.peak_mb if peer else None,
        "peer_fwd": peer.fwd + peer.fwdbwd if peer else None, "agreement": agreement, "note": note,
    }
    return derive(row, ctx.roofline, ctx.batch_floor)


def derive(row: dict[str, Any], roofline: Roofline, batch_floor: BatchFloor | None) -> dict[str, Any]:
    """(Re)compute the fields of ``row`` that rest on the roofline and the bare model's call times: the runner calls
    it again at the end of a regime with the best roofline and call times measured around all its operations (a
    slow spell of the machine during one measurement then no longer inflates or deflates an efficiency)."""
    if row.get("ours_s") is None:
        return row
    floor = roofline.floor(row.get("fwd") or 0, row.get("fwdbwd") or 0)
    calls = {(int(b), bool(g)): int(n) for b, g, n in row.get("calls_raw") or []}
    # efficiency = roofline / call floor (what our calls' batch sizes allow) × call floor / ours (our overhead)
    call_floor = batch_floor.floor(calls) if batch_floor is not None and calls else None
    row.update({
        "call_floor_s": call_floor, "efficiency_at_calls": call_floor / row["ours_s"] if call_floor else None,
        "batch_bound": floor / call_floor if call_floor and floor > 0 else None,
        "roofline_s": floor if floor > 0 else None, "efficiency": floor / row["ours_s"] if floor > 0 else None,
        # the most any implementation doing our model passes could gain on the peer: its time over the passes' floor
        "speedup_bound": row["peer_s"] / floor if row.get("peer_s") and floor > 0 else None,
    })
    if row.get("segment_s") is not None:
        seg = row["segment_s"]
        row["segment_bound"] = floor / (floor + seg) if floor > 0 else None
        bound = f", so efficiency ≤ {row['segment_bound']:.2f}" if floor > 0 else ""
        sentence = f"both sides segment (SLIC) inside the timed call; SLIC alone takes {seg:.3f} s{bound}"
        row["note"] = f"{row['note_before_segment']}; {sentence}" if row.get("note_before_segment") else sentence
    return row


def _per_image(ctx: Context, fn: Callable[[Tensor, Tensor], Tensor], batched: bool = False) -> Callable[[], Tensor]:
    """One call per image in the overhead regime ("many single images"); one batched call in the compute regime when
    ``batched``."""
    x, t = ctx.images, ctx.targets

    def run() -> Tensor:
        with _autocast(ctx):
            if batched and ctx.regime == "compute":
                return fn(x, t)
            return torch.cat([fn(x[i:i + 1], t[i:i + 1]) for i in range(x.shape[0])])

    def warm() -> None:
        with _autocast(ctx):
            fn(x[:1], t[:1])

    run.warm = warm  # type: ignore[attr-defined]
    return run


def _agree(ours: Tensor, theirs: Tensor) -> str:
    ours, theirs = ours.float().cpu(), theirs.float().cpu()
    scale = theirs.abs().max().clamp_min(1e-12)
    return f"max diff / max = {float((ours - theirs).abs().max() / scale):.1e}"


def _explainer(ctx: Context, name: str, **overrides: Any) -> Explainer:
    return build_attribution(load_method(name, **overrides), ctx.model)


def _time(ctx: Context, fn: Callable[[], Any]) -> Timing:
    """Time ``fn``; in the overhead regime one untimed call on the first image first (first-call costs — lazy
    imports, kernel set-up — would otherwise land on whichever side runs first). The compute regime skips it (it
    would double the slowest rows); there the roofline measured just before has warmed the model."""
    if ctx.regime == "overhead" and hasattr(fn, "warm"):
        fn.warm()  # type: ignore[attr-defined]
    return timed(fn, ctx.device, repeats=ctx.repeats, counted=ctx.model)


def _segmentation_bound(ctx: Context, seg_cfg: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Time the segmentation alone (the same SLIC calls, one per image in the overhead regime) and add to ``row`` the
    efficiency it leaves: ``roofline / (roofline + segmentation)``, the most an operation that segments inside the
    timed call can reach however little else it does (:func:`derive` writes it into the note)."""
    row["segment_s"] = _time(ctx, _per_image(ctx, lambda x, t: segment(x, seg_cfg))).seconds
    row["note_before_segment"] = row.get("note", "")
    return derive(row, ctx.roofline, ctx.batch_floor)


# -- attribution methods ------------------------------------------------------------------------------------------
def op_occlusion(ctx: Context) -> dict[str, Any]:
    from captum.attr import Occlusion

    h, w = ctx.images.shape[-2:]
    window, stride = occlusion_window(h, w, ctx.sizes.get("occlusion_window"), ctx.sizes.get("occlusion_stride"))
    ex = _explainer(ctx, "occlusion", window=window, stride=stride)
    ours = _time(ctx, _per_image(ctx, lambda x, t: ex.attribute(x, t)))
    n_win = ((h - window) // stride + 1) * ((w - window) // stride + 1)
    work = f"{ctx.images.shape[0]} image(s), {window}-px window, stride {stride} ({n_win} windows)"
    occ = Occlusion(ctx.model)
    c = ctx.images.shape[1]

    def peer_fn(x: Tensor, t: Tensor) -> Tensor:
        return occ.attribute(x, target=t, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                             baselines=0.5).mean(1, keepdim=True)

    peer = _time(ctx, _per_image(ctx, peer_fn)) if ctx.peers else None
    agree = _agree(ours.value, peer.value) if peer else ""
    return _row(ctx, "Occlusion", work, ours, "Captum Occlusion, defaults (1 window per pass)", peer, agreement=agree)


def op_feature_ablation(ctx: Context) -> dict[str, Any]:
    from captum.attr import FeatureAblation

    cfg = load_method("feature_ablation")
    ex = build_attribution(cfg, ctx.model)
    ours = _time(ctx, _per_image(ctx, lambda x, t: ex.attribute(x, t)))
    masks = segment(ctx.images, cfg.segmentation)
    n_seg = int(masks.flatten(1).amax(1).float().mean()) + 1
    fa = FeatureAblation(ctx.model)

    def peer_fn(x: Tensor, t: Tensor) -> Tensor:
        mask = segment(x, cfg.segmentation)  # the same SLIC call a Captum user makes, timed on both sides
        return fa.attribute(x, target=t, feature_mask=mask, baselines=0.0).mean(1, keepdim=True)

    peer = _time(ctx, _per_image(ctx, peer_fn)) if ctx.peers else None
    agree = _agree(ours.value, peer.value) if peer else ""
    return _segmentation_bound(ctx, cfg.segmentation, _row(
        ctx, "Feature Ablation", f"{ctx.images.shape[0]} image(s), SLIC ~{n_seg} segments", ours,
        "Captum FeatureAblation, defaults (1 segment per pass)", peer, agreement=agree))


def op_integrated_gradients(ctx: Context) -> dict[str, Any]:
    from captum.attr import IntegratedGradients

    steps = int(ctx.sizes.ig_steps)
    cfg = load_method("integrated_gradients")
    cfg.kwargs.n_steps = steps
    ex = build_attribution(cfg, ctx.model)
    ours = _time(ctx, _per_image(ctx, lambda x, t: ex.attribute(x, t), batched=True))
    ig = IntegratedGradients(ctx.model)
    peer_fn = lambda x, t: ig.attribute(x, target=t, baselines=0.0, n_steps=steps).sum(1, keepdim=True)
    peer = _time(ctx, _per_image(ctx, peer_fn, batched=True)) if ctx.peers else None
    agree = _agree(ours.value, peer.value) if peer else ""
    return _row(ctx, "Integrated Gradients", f"{ctx.images.shape[0]} image(s) × {steps} steps", ours,
                "Captum IntegratedGradients, defaults (all steps in one batch)", peer, agreement=agree)


def op_gradcam(ctx: Context) -> dict[str, Any]:
    ex = _explainer(ctx, "gradcam")
    ours = _time(ctx, _per_image(ctx, lambda x, t: ex.attribute(x, t), batched=True))
    peer, note = None, ""
    if ctx.peers and have("pytorch_grad_cam"):
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        # `with`: GradCAM's hooks copy the layer's activations on every forward until released; left on the model
        # they would slow every operation timed after this one
        with GradCAM(model=ctx.model, target_layers=[ctx.model.get_layer(ex.layer_name)]) as cam:
            def peer_fn(x: Tensor, t: Tensor) -> Tensor:
                out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
                return torch.as_tensor(out).unsqueeze(1)

            peer = _time(ctx, _per_image(ctx, peer_fn, batched=True))
    elif ctx.peers:
        note = "peer skipped: grad-cam not installed (pip install -e '.[bench]')"
    return _row(ctx, "Grad-CAM", f"{ctx.images.shape[0]} image(s), layer {ex.layer_name}", ours,
                "pytorch-grad-cam GradCAM", peer, note=note)


def plain_rise(model: nn.Module, x: Tensor, target: Tensor, n_masks: int, batch: int = 64, seed: int = 0) -> Tensor:
    """RISE as a user writes it in plain PyTorch: all masks first, a loop of fixed batches under ``no_grad``."""
    h, w = x.shape[-2:]
    g = torch.Generator(device=x.device).manual_seed(seed)
    masks = generate_rise_masks(n_masks, (h, w), 7, 0.5, device=x.device, generator=g)
    sal = torch.zeros(h, w, device=x.device)
    with torch.no_grad():
        for i in range(0, n_masks, batch):
            m = masks[i:i + batch]
            p = model(x * m.unsqueeze(1)).softmax(1)[:, int(target)]
            sal += (p.view(-1, 1, 1) * m).sum(0)
    return (sal / (n_masks * 0.5)).view(1, 1, h, w)


def op_rise(ctx: Context) -> dict[str, Any]:
    n_masks = int(ctx.sizes.rise_masks)
    ex = _explainer(ctx, "rise", kwargs={"n_masks": n_masks})
    ours = _time(ctx, _per_image(ctx, lambda x, t: ex.attribute(x, t)))
    peer_fn = lambda x, t: plain_rise(ctx.model, x, t[0], n_masks)
    peer = _time(ctx, _per_image(ctx, peer_fn)) if ctx.peers else None
    return _row(ctx, "RISE", f"{ctx.images.shape[0]} image(s) × {n_masks} masks", ours,
                "plain PyTorch RISE loop, batch 64 (no library)", peer)


def _lime_peer(ctx: Context, n_samples: int, seg_cfg: Any) -> Callable[[Tensor, Tensor], Tensor]:
    import numpy as np
    from lime import lime_image

    explainer = lime_image.LimeImageExplainer(random_state=0)
    device = ctx.device

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(batch, dtype=torch.float32, device=device).permute(0, 3, 1, 2)
        with torch.no_grad():
            return ctx.model(x).softmax(1).cpu().numpy()

    def peer_fn(x: Tensor, t: Tensor) -> Tensor:
        seg = segment(x, seg_cfg)[0, 0].cpu().numpy()  # the same SLIC segments as ours, timed on both sides
        img = x[0].permute(1, 2, 0).double().cpu().numpy()
        with contextlib.redirect_stderr(io.StringIO()):  # lime always draws a tqdm bar
            exp = explainer.explain_instance(img, classifier_fn, labels=(int(t[0]),), top_labels=None, hide_color=0,
                                             num_samples=n_samples, segmentation_fn=lambda _: seg,
                                             random_seed=0)
        weights = dict(exp.local_exp[int(t[0])])
        out = torch.zeros(seg.shape)
        for s, v in weights.items():
            out[torch.as_tensor(seg == s)] = float(v)
        return out.view(1, 1, *seg.shape)

    return peer_fn


def op_lime(ctx: Context) -> dict[str, Any]:
    n = int(ctx.sizes.lime_samples)
    cfg = load_method("lime")
    cfg.kwargs.n_samples = n
    ex = build_attribution(cfg, ctx.model)
    ours = _time(ctx, _per_image(ctx, lambda x, t: ex.attribute(x, t)))
    peer, note = None, ""
    if ctx.peers and have("lime"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer = _time(ctx, _per_image(ctx, _lime_peer(ctx, n, cfg.segmentation)))
    elif ctx.peers:
        note = "peer skipped: lime not installed (pip install -e '.[bench]')"
    return _segmentation_bound(ctx, cfg.segmentation, _row(
        ctx, "LIME", f"{ctx.images.shape[0]} image(s) × {n} samples, SLIC", ours,
        "lime 0.2 LimeImageExplainer (batch 10)", peer, note=note))


def op_kernel_shap(ctx: Context) -> dict[str, Any]:
    from captum.attr import KernelShap

    n = int(ctx.sizes.lime_samples)
    cfg = load_method("kernel_shap")
    cfg.kwargs.n_samples = n
    ex = build_attribution(cfg, ctx.model)
    ours = _time(ctx, _per_image(ctx, lambda x, t: ex.attribute(x, t)))
    ks = KernelShap(ctx.model)

    def peer_fn(x: Tensor, t: Tensor) -> Tensor:
        mask = segment(x, cfg.segmentation)  # the same SLIC call a Captum user makes, timed on both sides
        return ks.attribute(x, target=t, feature_mask=mask, baselines=0.0, n_samples=n).mean(1, True)

    peer = _time(ctx, _per_image(ctx, peer_fn)) if ctx.peers else None
    return _segmentation_bound(ctx, cfg.segmentation, _row(
        ctx, "Kernel SHAP", f"{ctx.images.shape[0]} image(s) × {n} samples, SLIC", ours,
        "Captum KernelShap, defaults (1 sample per pass)", peer))


# -- robustness ---------------------------------------------------------------------------------------------------
def op_fgsm_sweep(ctx: Context) -> dict[str, Any]:
    from xai_bench.robustness.attacks import FGSM

    n = int(ctx.sizes.fgsm_images)
    g = torch.Generator().manual_seed(0)
    x = ctx.images[:1].expand(n, -1, -1, -1)
    x = (x + 0.05 * torch.randn(x.shape, generator=g).to(x.device)).clamp(0, 1)  # n distinct images
    y = ctx.targets[:1].expand(n).clone()
    fgsm = FGSM(ctx.model)
    ours = _time(ctx, lambda: fgsm.sweep(x, y, EPS_10))
    peer, note = None, ""
    if ctx.peers and have("torchattacks"):
        import torchattacks

        def peer_fn() -> None:
            for eps in EPS_10:
                adv = torchattacks.FGSM(ctx.model, eps=eps)(x, y)
                if eps != 0:  # scored like the sweep, which reuses the clean logits at ε = 0
                    with torch.no_grad():
                        ctx.model(adv)

        peer = _time(ctx, peer_fn)
    elif ctx.peers:
        note = "peer skipped: torchattacks not installed (pip install --no-deps torchattacks==3.5.1)"
    return _row(ctx, "FGSM sweep", f"{n} images × {len(EPS_10)} ε", ours, "torchattacks FGSM, one call per ε",
                peer, note=note)


def op_imagenet_c(ctx: Context) -> dict[str, Any]:
    import numpy as np

    from xai_bench.robustness.corruptions import CORRUPTIONS, IMAGENET_C_NAMES

    names = list(IMAGENET_C_NAMES[:15])
    n = int(ctx.sizes.corruption_images)
    x = ctx.images[:1].expand(n, -1, -1, -1).contiguous()
    g = torch.Generator(device=x.device).manual_seed(0)

    def ours_fn() -> None:
        for name in names:
            CORRUPTIONS.get(name)(x, 3, generator=g)

    for name in names:  # first calls load the frost photos and set up kernels
        CORRUPTIONS.get(name)(x[:1], 3, generator=g)
    ours = timed(ours_fn, ctx.device, repeats=ctx.repeats)
    peer, note = None, ""
    if ctx.peers and have("imagecorruptions"):
        from xai_bench.robustness.corruptions._reference import load_imagecorruptions

        ic = load_imagecorruptions()
        imgs = [(im.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8) for im in x]

        for name in names:
            ic.corrupt(imgs[0], corruption_name=name, severity=3)  # warm-up, as ours

        def peer_fn() -> None:
            np.random.seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for name in names:
                    for im in imgs:
                        ic.corrupt(im, corruption_name=name, severity=3)

        peer = timed(peer_fn, ctx.device, repeats=1)
    elif ctx.peers:
        note = "peer skipped: imagecorruptions not installed (pip install -e '.[bench]')"
    row = _row(ctx, "ImageNet-C, 15 corruptions", f"{n} image(s) × 15 corruptions, severity 3", ours,
               "imagecorruptions 1.1 (NumPy, per image)", peer, note=note)
    row["per_image_ms"] = 1e3 * ours.seconds / n
    row["peer_per_image_ms"] = 1e3 * peer.seconds / n if peer else None
    return row


# -- explanation metrics ------------------------------------------------------------------------------------------
def op_metrics(ctx: Context) -> dict[str, Any]:
    """Overhead regime: the Quantus comparison of ``bench_metrics.py`` (its own small model); compute regime:
    Deletion + Insertion on the regime's model against the roofline (no peer: Quantus at 224² takes minutes)."""
    if ctx.regime == "overhead":
        import argparse

        import bench_metrics

        args = argparse.Namespace(n_images=int(ctx.sizes.metric_images), train_steps=60, repeats=ctx.repeats,
                                  quantus_repeats=1, metrics=None)
        if not (ctx.peers and have("quantus")):
            return {"regime": ctx.regime, "operation": "explanation metrics", "work": "", "ours_s": None,
                    "note": "skipped: quantus not installed (pip install -e '.[bench]')"}
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)  # Quantus logs one INFO line per model call on the root logger
        try:
            res = bench_metrics.run_small(args)
        finally:
            root.setLevel(level)
        t = res["total"]
        agree = sum(r["agree"] for r in res["rows"])
        ours = Timing(t["ours_s"], float("nan"))
        peer = Timing(t["quantus_s"], float("nan"))
        row = _row(ctx, "explanation metrics (suite)", f"{len(res['rows'])} metrics × {args.n_images} images, "
                   "1×32×32", ours, "Quantus 0.6", peer, agreement=f"{agree}/{len(res['rows'])} agree",
                   note="bench_metrics.py small regime; per-metric rows in the JSON")
        row["detail"] = res["rows"]
        return row
    from xai_bench.metrics.explanation import faithfulness as fa

    maps = torch.rand(ctx.images.shape[0], 1, *ctx.images.shape[-2:], device=ctx.device)

    def ours_fn() -> None:
        fa.Deletion()(ctx.model, ctx.images, ctx.targets, maps)
        fa.Insertion()(ctx.model, ctx.images, ctx.targets, maps)

    ours = _time(ctx, ours_fn)
    return _row(ctx, "explanation metrics (Deletion + Insertion)", f"{ctx.images.shape[0]} image(s)", ours, "", None,
                note="no peer at 224² (Quantus would take minutes); agreement with Quantus: overhead regime")


def op_ig_memory_cap(ctx: Context) -> dict[str, Any]:
    """GPU only: IG (50 steps) on a batch of 64 images with all steps asked for in one pass, under a 16 GB cap; the
    runner's out-of-memory halving must finish it."""
    if ctx.device.type != "cuda":
        return {"regime": ctx.regime, "operation": "IG memory cap", "ours_s": None, "note": "GPU only"}
    total = torch.cuda.get_device_properties(ctx.device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 16 * 2**30 / total), ctx.device)
    x = ctx.images[:1].expand(64, -1, -1, -1).contiguous()
    t = ctx.targets[:1].expand(64).contiguous()
    cfg = load_method("integrated_gradients", batch_size=64)
    cfg.kwargs.n_steps = 50
    cfg.kwargs.internal_batch_size = 64 * 50
    ex = build_attribution(cfg, ctx.model)
    try:
        ours = _time(ctx, lambda: ex.attribute(x, t))
        note = f"finished under a 16 GB cap; inner batch learned: {ex._inner_limits or 'none needed'}"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
    return _row(ctx, "IG memory cap", "64 images × 50 steps, 16 GB cap", ours, "", None, note=note)


OPERATIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "occlusion": op_occlusion, "feature_ablation": op_feature_ablation,
    "integrated_gradients": op_integrated_gradients, "gradcam": op_gradcam, "rise": op_rise, "lime": op_lime,
    "kernel_shap": op_kernel_shap, "fgsm_sweep": op_fgsm_sweep, "imagenet_c": op_imagenet_c, "metrics": op_metrics,
    "ig_memory_cap": op_ig_memory_cap,
}
