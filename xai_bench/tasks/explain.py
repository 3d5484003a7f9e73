"""``explain.py``: attribution maps of a classifier's predictions for a set of methods, drawn images × methods.

The methods come from ``conf/attribution/*.yaml``, a multi-select config group: each file lands at
``attribution.<name>``, so ``attribution=[saliency,gradcam]`` runs two, ``attribution=rise`` one, and
``-m attribution=saliency,gradcam`` sweeps them as separate jobs. Each (image, target class) gets one map per method;
the run writes a grid figure, a per-map table, ``maps.safetensors`` and ``results.json``. How a method's maps are
drawn (signed or not, as an overlay) and whether it may run under bf16 autocast are the method's own facts
(:mod:`xai_bench.attribution.base`).
Images are explained ``batch_size`` at a time and every finished batch of maps is committed to ``shards/``
(:mod:`xai_bench.resume`); ``resume=<run dir>`` explains only what a killed run had not, and ``maps.safetensors`` is
written before the figures and metrics.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig
from torch import Tensor, nn
from torch.utils.data import Subset

from xai_bench import viz
from xai_bench.attribution.base import method_facts
from xai_bench.attribution.diagnostics import target_output, warn_constant_maps
from xai_bench.attribution.runner import CONFIG_KEYS, Explainer, build_attribution, expand_targets
from xai_bench.checks import safe_name
from xai_bench.data import make_loader
from xai_bench.distributed import PeerStore, Ranks, finished, merge_ranks, process_group
from xai_bench.resume import ShardStore, results_config
from xai_bench.progress import ProgressBar, progress_reporting
from xai_bench.tasks._background import draw_background, needs_background
from xai_bench.tasks.common import RunContext, run_context
from xai_bench.tasks.setup import build_data, build_model
from xai_bench.utils import batch_seed, build, save_safetensors, seed_everything

log = logging.getLogger(__name__)

FIGURE_KINDS = ("overlay", "heatmap", "isolines", "signed", "all")
_RESERVED_KEYS = ("images", "targets", "image_index")
# Settings a resumed run may change: they act after the maps are made.
_NOT_IN_MAPS = ("figure", "metric", "metric_suite", "save_maps")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Explain the first ``max_images`` images of ``cfg.split`` with every selected method (see conf/explain.yaml).

    Returns:
        The run's metrics: ``n_images``, ``n_maps``, ``methods``, ``seconds/<method>``, ``skipped`` (methods the
        model does not support, with ``skip_unsupported: true``).
    """
    with run_context(cfg, "explain") as ctx, process_group(ctx.device) as ranks:
        # config mistakes fail before any data or model is loaded (and still land in results.json)
        methods = method_nodes(cfg)
        fig_cfg = cfg.get("figure") or {}
        kind = fig_cfg.get("kind", "overlay")
        if kind not in FIGURE_KINDS:
            raise ValueError(f"figure.kind must be one of {FIGURE_KINDS}, got {kind!r}")
        if fig_cfg.get("scale", "per_map") not in viz.SCALES:
            raise ValueError(f"figure.scale must be one of {viz.SCALES}, got {fig_cfg.get('scale')!r}")
        store: Any = ShardStore.open(ctx.out_dir, task="explain", config=results_config(cfg, ignore=_NOT_IN_MAPS),
                                     device=str(ctx.device), resume=cfg.get("resume")) if ranks.is_main else None
        if ranks.sharded:  # torchrun: rank 0 keeps the run's store; the others learn which batches it already has
            done, skipped = ranks.broadcast((finished(store), store.state.get("skipped", [])) if ranks.is_main
                                            else None)
            store = store if ranks.is_main else PeerStore(done, {"skipped": skipped})
        data = build_data(cfg)
        model = build_model(cfg, data).to(ctx.device).eval()
        ctx.name(model.name, data.name)
        backgrounds = {key: draw_background(data, node, key, ctx.device) for key, node in methods.items()
                       if needs_background(node)}  # baseline: data (Expected Gradients, DeepLIFT-SHAP)
        ds = data.split(cfg.split)
        if cfg.get("max_images"):
            ds = Subset(ds, range(min(int(cfg.max_images), len(ds))))  # type: ignore[arg-type]
        if len(ds) == 0:  # type: ignore[arg-type]
            raise ValueError(f"split {cfg.split!r} of dataset {data.name!r} is empty; pick another split")
        with ctx.timer("predict"):
            images, labels, names, probs, masks = _load_and_predict(model, ds, cfg, ctx.device)
        class_names = list(getattr(model, "class_names", None) or data.class_names)
        targets = resolve_targets(cfg.get("target", "predicted"), probs, labels, names,
                                  num_classes=probs.shape[1], top_k=int(cfg.get("top_k", 1)), dataset=data.name)
        n, t = targets.shape
        x, flat_t = expand_targets(images, targets)  # row r = image r // t, class flat_t[r]
        image_index = torch.arange(n).repeat_interleave(t)

        maps, signed, styles, explainers = _attribute_all(ctx, model, methods, images, targets, names, image_index,
                                                          fig_cfg, store, ranks, backgrounds)
        if not ranks.is_main:  # rank 0 has this rank's maps and writes the run's outputs
            return {"rank": ranks.rank, "world_size": ranks.world}
        if ranks.sharded:
            ctx.metrics["world_size"] = ranks.world
        if store.resumed_from is not None:
            ctx.metrics["resumed_from"] = str(store.resumed_from)
        x_cpu = x.detach().float().cpu()
        if cfg.get("save_maps", True):  # the maps first: figures and metrics take long, and may be killed
            _save_maps(ctx, maps, x_cpu, flat_t.cpu(), image_index, names, class_names)
        if cfg.get("metric"):
            _score_maps(ctx, model, x, flat_t, maps, None if masks is None else masks[image_index], explainers,
                        methods)
        flat_t = flat_t.cpu()

        pred = probs.argmax(1)
        row_titles = [_row_title(class_names, int(pred[image_index[r]]), float(probs[image_index[r]].max()),
                                 int(flat_t[r]), float(probs[image_index[r], flat_t[r]])) for r in range(n * t)]
        outputs = {name: target_output(e) for name, e in explainers.items()}
        fig_cfg = {**fig_cfg, "title": _figure_title(model, outputs)}
        grid_paths = _draw_grids(ctx, x_cpu, maps, signed, styles, row_titles, fig_cfg, kind)
        for name, e in explainers.items():
            if e.segmentation is not None:  # the classic LIME view: the k most positive and most negative segments
                _draw_topk(ctx, x_cpu, maps[name], e, row_titles, fig_cfg)
        map_paths = _draw_per_map(ctx, x_cpu, maps, signed, names, image_index, flat_t, class_names, probs,
                                  fig_cfg, kind) if fig_cfg.get("per_map") else {}
        ctx.table("maps", _table_rows(maps, names, image_index, flat_t, class_names, probs, map_paths,
                                      grid_paths[0], outputs))
        store.close()
        ctx.metrics.update({"n_images": n, "n_maps": n * t * len(maps), "methods": list(maps)})
        log.info("explained %d image(s) × %d target(s) with %d method(s): %s  → %s", n, t, len(maps),
                 ", ".join(f"{k} {ctx.timings[f'attr/{k}']:.1f}s" for k in maps), grid_paths[0])
        return dict(ctx.metrics)


# ---------------------------------------------------------------------------------------------------------------
def method_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The selected attribution nodes, ``cfg.attribution`` (file name → node, in selection order). Unknown config
    keys fail here, before any data or model is loaded."""
    nodes = {str(k): v for k, v in (cfg.get("attribution") or {}).items() if v is not None}
    if not nodes:
        raise ValueError("no attribution method selected: set attribution=<name> or attribution=[<name>,<name>] "
                         "(files of conf/attribution/)")
    for key, node in nodes.items():
        if not isinstance(node, (DictConfig, Mapping)) or node.get("method") is None:
            raise ValueError(f"attribution.{key} is not a conf/attribution node (it has no `method`: {node!r}); "
                             f"select the method with attribution=[...,{key}] before overriding its settings")
        unknown = [k for k in node if k not in CONFIG_KEYS]
        if unknown:
            raise ValueError(f"attribution.{key} has unknown config key(s) {unknown}; valid keys: "
                             f"{', '.join(CONFIG_KEYS)}")
    return nodes


def resolve_targets(target: Any, probs: Tensor, labels: Tensor, names: list[str], *, num_classes: int,
                    top_k: int = 1, dataset: str = "dataset") -> Tensor:
    """The class ids to explain, one row per image.

    Args:
        target: ``"predicted"`` (the ``top_k`` most probable classes), ``"label"`` (the dataset's label), or a
            class id / list of ids explained for every image.
        probs: N×K predicted probabilities.
        labels: N dataset labels, -1 where unknown.
        names: N image names (for error messages).
        num_classes: K.
        top_k: classes per image with ``target="predicted"``.

    Returns:
        N×T long tensor of class ids.
    """
    n = probs.shape[0]
    if isinstance(target, str):
        if target == "predicted":
            if not 1 <= top_k <= num_classes:
                raise ValueError(f"top_k must be in [1, {num_classes}] (num_classes), got {top_k}")
            return probs.topk(top_k, dim=1).indices
        if target == "label":
            missing = [names[i] for i in (labels < 0).nonzero().flatten().tolist()]
            if missing:
                raise ValueError(f"target=label but dataset {dataset!r} has no label for {missing[:5]}"
                                 f"{' …' if len(missing) > 5 else ''}; use target=predicted or class ids")
            return labels.view(n, 1).long()
        raise ValueError(f"target must be 'predicted', 'label', a class id or a list of ids, got {target!r}")
    ids = list(target) if isinstance(target, (list, tuple, ListConfig)) else [target]
    if not ids or not all(isinstance(c, int) and not isinstance(c, bool) for c in ids):
        raise ValueError(f"target must be 'predicted', 'label', a class id or a non-empty list of ids, got {target!r}")
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"target ids {bad} are out of range for a model with num_classes={num_classes}; "
                         f"use ids in [0, {num_classes - 1}]")
    return torch.tensor(ids, dtype=torch.long).expand(n, -1).contiguous()


def is_signed(node: Mapping[str, Any], override: Any = None, name: str | None = None) -> bool:
    """Whether a method's maps are drawn signed (diverging colormap centred at 0) or as magnitudes.

    ``override`` (``figure.signed``): a bool for every method, a mapping method name → bool, or ``None`` for the
    method's own ``signed`` fact (its YAML key, else its class attribute), made unsigned by magnitude reductions
    (``abs_sum``/``max_abs``), ``abs: true``, ReLU'd CAMs and variance wrappers.
    """
    if isinstance(override, bool) or (isinstance(override, Mapping) and name in override):
        return _signed(override, name, False)
    return method_facts(build(node["method"]).func, node).signed


def _signed(override: Any, name: str | None, default: bool) -> bool:
    if isinstance(override, bool):
        return override
    if isinstance(override, Mapping) and name in override:
        return bool(override[name])
    return default


# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _load_and_predict(model: nn.Module, ds: Any, cfg: DictConfig, device: torch.device
                      ) -> tuple[Tensor, Tensor, list[str], Tensor, Tensor | None]:
    """All images of ``ds`` on ``device`` (it is at most ``max_images`` long), labels, names, probabilities and the
    ground-truth object masks when the dataset has them."""
    images, labels, names, probs, masks = [], [], [], [], []
    loader = make_loader(ds, int(cfg.get("batch_size") or 16), num_workers=int(cfg.get("num_workers") or 0))
    for batch in loader:
        x = batch["image"].to(device)
        images.append(x)
        labels.append(torch.as_tensor(batch["label"]).long())
        names += list(batch.get("name", [str(len(names) + i) for i in range(len(x))]))
        probs.append(model(x).float().softmax(1).cpu())
        if "mask" in batch:
            masks.append(batch["mask"].to(device))
    return (torch.cat(images), torch.cat(labels), names, torch.cat(probs),
            torch.cat(masks) if len(masks) == len(images) and masks else None)


def _attribute_all(ctx: RunContext, model: nn.Module, methods: dict[str, DictConfig], images: Tensor,
                   targets: Tensor, names: list[str], image_index: Tensor, fig_cfg: Any, store: Any,
                   ranks: Ranks, backgrounds: dict[str, Tensor]
                   ) -> tuple[dict[str, Tensor], dict[str, bool], dict[str, str], dict[str, Explainer]]:
    """Run every method on all (image, target) pairs: name → (N·T)×C×H×W maps on the CPU, name → signed, and
    name → the figure style the method reads best in (its ``figure`` fact, where it has one).

    Images go ``batch_size`` at a time; each finished batch is committed to ``store`` (batches it already holds,
    from a resumed run, are read back instead). A method is seeded per batch from ``(seed, batch)``, so its maps do
    not depend on which methods ran before it, nor on where an earlier run was killed — nor on which torchrun rank
    made it: rank r makes the batches b with b % world == r, and rank 0 gathers them (:mod:`xai_bench.distributed`)."""
    cfg = ctx.cfg
    n, t = targets.shape
    step = int(cfg.get("batch_size") or 16)
    skipped: list[dict[str, str]] = list(store.state.get("skipped", []))
    seconds: dict[str, float] = dict(store.state.get("seconds", {}))
    explainers: dict[str, Explainer] = {}
    seen: set[str] = set()
    for key, node in methods.items():
        name = str(node.get("name") or key)
        if name in seen or name in _RESERVED_KEYS:
            raise ValueError(f"two methods (or a reserved key) share the name {name!r}; give attribution.{key}.name "
                             f"a distinct value")
        seen.add(name)
        if any(s["method"] == name for s in skipped):
            continue
        try:
            explainers[name] = build_attribution(node, model, background=backgrounds.get(key))
        except (ValueError, NotImplementedError) as err:
            _skip(cfg, skipped, name, err)
        ctx.timings[f"attr/{name}"] = 0.0
    parts: dict[str, dict[int, Tensor]] = {name: {} for name in explainers}
    show = bool(cfg.get("progress", True)) and ranks.is_main
    for b, start in enumerate(ProgressBar(range(0, n, step), desc="batches", unit="batch", show=show)):
        stop = min(start + step, n)
        flat = targets[start:stop].flatten().cpu()
        if b in store:
            if not ranks.is_main:  # rank 0 reads it back from its store
                continue
            shard, _ = store.get(b)
            if not torch.equal(shard["targets"], flat) or any(m not in shard for m in explainers):
                raise ValueError(f"resume: batch {b} of {store.resumed_from} explained other targets or methods "
                                 f"than this run would (the images, the model or its weights changed); start a "
                                 f"fresh run")
            for m in explainers:
                parts[m][b] = shard[m]
            continue
        if not ranks.owns(b):
            continue
        out: dict[str, Tensor] = {}
        for name, explainer in list(explainers.items()):
            seed_everything(batch_seed(int(cfg.seed), b))
            t0 = time.perf_counter()
            try:
                with progress_reporting(enabled=show), _autocast(cfg, ctx.device, explainer), \
                        _captum_progress(explainer, show):
                    m = explainer.attribute(images[start:stop], targets[start:stop])
            except (ValueError, NotImplementedError) as err:
                _skip(cfg, skipped, name, err)
                del explainers[name], parts[name]
                continue
            elapsed = time.perf_counter() - t0
            ctx.timings[f"attr/{name}"] = round(ctx.timings[f"attr/{name}"] + elapsed, 3)
            seconds[name] = seconds.get(name, 0.0) + elapsed
            m = m.flatten(0, 1).float().cpu()  # n×T×C×H×W → (n·T)×C×H×W
            bad = [start * t + r for r in (~torch.isfinite(m)).flatten(1).any(1).nonzero().flatten().tolist()]
            if bad:
                raise FloatingPointError(f"{name} produced NaN/inf maps for rows {bad} (images "
                                         f"{[names[image_index[r]] for r in bad]}); check its kwargs and the model")
            out[name] = m
            parts[name][b] = m
        store.put(b, {**out, "targets": flat}, state={"skipped": skipped, "seconds": seconds})
    if ranks.sharded:  # rank 0 gets every rank's maps; a method skipped on one rank is skipped on all
        merge_ranks(ranks, store, parts, skipped, seconds)
        explainers = {name: e for name, e in explainers.items() if name in parts}
        if not ranks.is_main:
            return {}, {}, {}, {}
    maps = {name: torch.cat([parts[name][b] for b in sorted(parts[name])]) for name in explainers}
    for name, m in maps.items():
        warn_constant_maps(explainers[name], m, [names[int(image_index[r])] for r in range(m.shape[0])])
    signed = {name: _signed(fig_cfg.get("signed"), name, e.facts.signed) for name, e in explainers.items()}
    styles = {name: e.facts.figure for name, e in explainers.items() if e.facts.figure}
    for name in explainers:
        ctx.metrics[f"seconds/{name}"] = round(seconds.get(name, 0.0), 3)
    for name in {s["method"] for s in skipped}:
        ctx.timings.pop(f"attr/{name}", None)
    if skipped:
        ctx.metrics["skipped"] = skipped
    if not maps:
        raise ValueError(f"no method could explain model {getattr(model, 'name', type(model).__name__)!r}: "
                         f"{[s['method'] for s in skipped]} were skipped (see metrics.skipped)")
    return maps, signed, styles, explainers


@contextlib.contextmanager
def _captum_progress(explainer: Explainer, show: bool) -> Any:
    """Captum's perturbation methods (Occlusion, FeatureAblation, Lime, KernelShap) report per batch only when
    called with ``show_progress=True``: ask for it during the explain pass only (metrics re-explain hundreds of
    times with the same explainer). Our methods (RISE, Score-CAM) follow :func:`progress_reporting` themselves."""
    params = inspect.signature(explainer.method_cls.attribute).parameters
    add = show and "show_progress" in params and "show_progress" not in explainer.kwargs \
        and params["show_progress"].default is False
    if add:
        explainer.kwargs["show_progress"] = True
    try:
        yield
    finally:
        if add:
            explainer.kwargs.pop("show_progress", None)


def _skip(cfg: DictConfig, skipped: list[dict[str, str]], name: str, err: Exception) -> None:
    if not cfg.get("skip_unsupported", False):
        raise err
    skipped.append({"method": name, "error": f"{type(err).__name__}: {err}"})
    log.warning("skipping %s: %s", name, err)


def _score_maps(ctx: RunContext, model: nn.Module, x: Tensor, targets: Tensor, maps: dict[str, Tensor],
                masks: Tensor | None, explainers: dict[str, Explainer], nodes: dict[str, DictConfig]) -> None:
    """The selected ``metric`` nodes on every method's maps (:mod:`xai_bench.tasks._explain_metrics`): tables,
    ranking, heat map and the per-family curves; methods re-explain with their own explainer (a rebuilt one for a
    randomised model), reseeded before every call."""
    from xai_bench.tasks._explain_metrics import build_metrics, score_maps

    cfg = ctx.cfg
    metrics = build_metrics(cfg)
    node_of = {str(node.get("name") or key): node for key, node in nodes.items()}  # method name → its YAML node

    def reexplainer(name: str) -> Any:
        explainer, node = explainers[name], node_of[name]

        def run(images: Tensor, targets: Tensor, model: nn.Module | None = None) -> Tensor:
            seed_everything(int(cfg.seed))
            e = explainer if model is None else build_attribution(node, model, background=explainer.background)
            return e.attribute(images, targets).float()

        return run

    rows = score_maps(ctx, metrics, model, x, targets, maps, masks=masks,
                      explainers={m: reexplainer(m) for m in maps})
    if not rows:
        log.warning("no metric could be computed (see the warnings above)")


def _table_rows(maps: dict[str, Tensor], names: list[str], image_index: Tensor, targets: Tensor,
                class_names: list[str], probs: Tensor, map_paths: dict[tuple[int, str], str],
                grid_path: str, outputs: dict[str, str]) -> list[dict[str, Any]]:
    """One row per (image, target, method): prediction, confidence, what the map explains (``attributed_output``:
    the target's ``logit`` or ``probability``), figure and map statistics."""
    pred = probs.argmax(1)
    rows = []
    for r in range(len(targets)):
        i, c = int(image_index[r]), int(targets[r])
        for name, m in maps.items():
            rows.append({
                "image": names[i], "target": c, "target_name": class_names[c],
                "target_prob": round(float(probs[i, c]), 4), "prediction": class_names[int(pred[i])],
                "confidence": round(float(probs[i].max()), 4), "method": name,
                "attributed_output": f"{outputs.get(name, 'logit')} of target",
                "figure": map_paths.get((r, name), grid_path),
                "map_min": float(m[r].min()), "map_max": float(m[r].max()), "map_mean_abs": float(m[r].abs().mean()),
            })
    return rows


def _autocast(cfg: DictConfig, device: torch.device, explainer: Explainer) -> Any:
    if cfg.get("amp", False) and device.type == "cuda" and explainer.facts.forward_only:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _short(class_name: str) -> str:
    return class_name.split(",")[0]


def _row_title(class_names: list[str], pred: int, p_pred: float, target: int, p_target: float) -> str:
    title = f"{_short(class_names[pred])} {p_pred:.2f}"
    if target != pred:  # say which class the row explains when it is not the prediction
        title += f" → {_short(class_names[target])} {p_target:.2f}"
    return title


def _style(fig_cfg: Any) -> dict[str, Any]:
    return {"alpha": float(fig_cfg.get("alpha", 0.5)), "cmap": fig_cfg.get("cmap"),
            "percentile": float(fig_cfg.get("percentile", 99.0))}


def _figure_title(model: nn.Module, outputs: dict[str, str]) -> str:
    """The model, and which output the maps explain: the target class's logit unless a method scores its
    probability (RISE)."""
    probability = [m for m, o in outputs.items() if o == "probability"]
    what = "maps explain the row's target class: its logit"
    if probability:
        what = (f"maps explain the row's target class: its probability for {', '.join(probability)}" +
                (", its logit for the others" if len(probability) < len(outputs) else ""))
    return f"{getattr(model, 'name', type(model).__name__)} · {what}"


def _draw_topk(ctx: RunContext, x: Tensor, maps: Tensor, explainer: Explainer, titles: list[str],
               fig_cfg: Any) -> str:
    from xai_bench.attribution.superpixels import segment

    k = int(fig_cfg.get("topk", 5))
    masks = segment(x, explainer.segmentation)  # the same masks the method used (deterministic per image)
    fig = viz.topk_superpixel_figure(x, maps, masks, k=k, titles=titles, cell_size=float(fig_cfg.get("cell_size", 1.8)),
                                     title=f"{explainer.name}: the {k} superpixels with the largest weights for and "
                                           f"against the target · {fig_cfg.get('title', '')}")
    return str(ctx.figure(f"{safe_name(explainer.name)}_topk", fig).relative_to(ctx.out_dir))


def _draw_grids(ctx: RunContext, x: Tensor, maps: dict[str, Tensor], signed: dict[str, bool], styles: dict[str, str],
                titles: list[str], fig_cfg: Any, kind: str) -> list[str]:
    kinds = ("overlay", "heatmap", "isolines", "signed") if kind == "all" else (kind,)
    # "(±)" in the header tells a diverging column (blue = evidence against the class) from a magnitude one
    headers = {name: f"{name} (±)" if signed[name] else name for name in maps}
    maps = {headers[name]: m for name, m in maps.items()}
    signed = {headers[name]: v for name, v in signed.items()}
    paths = []
    for k in kinds:
        # per-method exceptions (Grad-CAM as an overlay among heat maps) apply to a single-kind grid only
        method_kinds = {headers[m]: v for m, v in styles.items() if m in headers} if kind != "all" else {}
        fig = viz.attribution_grid(x, maps, titles=titles, kind=k, method_kinds=method_kinds, signed=signed,
                                   cell_size=float(fig_cfg.get("cell_size", 1.8)), title=fig_cfg.get("title"),
                                   scale=fig_cfg.get("scale", "per_map"), **_style(fig_cfg))
        path = ctx.figure("attributions" if kind != "all" else f"attributions_{k}", fig)
        paths.append(str(path.relative_to(ctx.out_dir)))
    return paths


def _draw_per_map(ctx: RunContext, x: Tensor, maps: dict[str, Tensor], signed: dict[str, bool], names: list[str],
                  image_index: Tensor, targets: Tensor, class_names: list[str], probs: Tensor, fig_cfg: Any,
                  kind: str) -> dict[tuple[int, str], str]:
    out = {}
    scale = fig_cfg.get("scale", "per_map")
    ranges = viz.display_ranges(maps, signed, scale=scale, percentile=_style(fig_cfg)["percentile"])
    for r in range(x.shape[0]):
        i, c = int(image_index[r]), int(targets[r])
        for name, m in maps.items():
            title = f"{name} · {names[i]} · {_short(class_names[c])} {float(probs[i, c]):.2f} ({scale})"
            vrange = tuple(ranges[name][r]) if scale != "per_map" else None
            fig = viz.attribution_figure(x[r], m[r], kind=kind, title=title, signed=signed[name], vrange=vrange,
                                         **_style(fig_cfg))
            stem = safe_name(f"{r:03d}_{names[i]}_{c}_{name}")
            out[(r, name)] = str(ctx.figure(f"maps/{stem}", fig).relative_to(ctx.out_dir))
    return out


def _save_maps(ctx: RunContext, maps: dict[str, Tensor], x: Tensor, targets: Tensor, image_index: Tensor,
               names: list[str], class_names: list[str]) -> None:
    """Write ``maps.safetensors``: ``<method>`` → M×C×H×W raw maps (M = images × targets; C = 1 after channel
    reduction), ``images`` M×C×H×W (the exact tensors explained), ``targets`` M, ``image_index`` M (row → image),
    and JSON metadata ``names``, ``target_names``, ``methods``."""
    tensors = {name: m.contiguous() for name, m in maps.items()}
    tensors.update({"images": x.contiguous(), "targets": targets.cpu().contiguous(),
                    "image_index": image_index.contiguous()})
    meta = {"names": json.dumps(names), "target_names": json.dumps([class_names[int(c)] for c in targets]),
            "methods": json.dumps(list(maps))}
    path = ctx.out_dir / "maps.safetensors"
    save_safetensors(tensors, path, meta)
    ctx.files.append(path.name)


__all__ = ["FIGURE_KINDS", "is_signed", "method_nodes", "resolve_targets", "run"]
