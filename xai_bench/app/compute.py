"""The web app's work, without Gradio: compose the CLI's config, explain, score, draw, attack and corrupt.

Each action composes the very config ``explain.py`` / ``attack.py`` would (Hydra's compose API on ``conf/``, with the
overrides the app prints as its command) and runs it through the library the tasks use: ``build_attribution`` and
the task's seeding for maps (so the app's maps equal ``maps.safetensors`` of the printed command), the explanation
metrics' ``score_methods``, ``build_attack``, the ImageNet-C corruptions and the viz figures.
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from xai_bench.app.loading import MAX_IMAGES, AppError, LoadedModel, check_image_files, sample_names

__all__ = ["Cancelled", "ExplainResult", "ImageSet", "command", "compose", "explain", "explain_steps",
           "load_images", "method_overrides", "render_maps", "save_maps", "top_k"]

_HYDRA_LOCK = threading.Lock()  # Hydra's global state is one per process; sessions compose one at a time

# The widgets' settings → the override of each method's conf/attribution file that they set.
SETTINGS: dict[str, dict[str, str]] = {
    "integrated_gradients": {"ig_steps": "kwargs.n_steps", "ig_baseline": "baseline"},
    "occlusion": {"occ_window": "window", "occ_stride": "stride"},
    "lime": {"lime_samples": "kwargs.n_samples", "lime_segments": "segmentation.slic.n_segments"},
    "rise": {"rise_masks": "kwargs.n_masks", "rise_grid": "kwargs.grid_size", "rise_p": "kwargs.p"},
    "smoothgrad": {"sg_noise": "wrapper.stdevs"},
    "saliency_forgrad": {"forgrad_sigma": "forgrad_sigma"},
}
LAYER_METHODS = ("gradcam", "gradcam_plus_plus", "guided_gradcam", "scorecam", "eigencam")
DEFAULT_METHODS = ("saliency", "gradcam")
DEFAULT_METRICS = ("sparseness", "complexity", "deletion", "insertion")
VIEWS = ("all", "heatmap", "overlay", "isolines", "signed")


class Cancelled(Exception):
    """The user pressed Stop; raised from the progress callback between two batches."""


def conf_dir() -> Path:
    from xai_bench.cli import _conf_dir

    return Path(_conf_dir())


def config_names(group: str) -> list[str]:
    """The files of a config group (``conf/<group>/*.yaml``), sorted."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def compose(task: str, overrides: Sequence[str]) -> DictConfig:
    """The config ``<task>.py <overrides>`` would run with (Hydra's compose API; no output folder, no logging)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with _HYDRA_LOCK:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(conf_dir()), version_base="1.3"):
                return hydra_compose(config_name=task, overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as exc:
            raise AppError(f"these settings do not form a valid {task}.py config: {exc}") from None
        finally:
            GlobalHydra.instance().clear()


def command(task: str, overrides: Sequence[str]) -> str:
    """The shell command that runs ``task`` with ``overrides``."""
    return " ".join([f"python {task}.py", *(shlex.quote(o) for o in overrides)])


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ImageSet:
    """Model-ready images (the model's own resize and crop applied) and how the command line selects them."""

    images: Tensor  # N×C×H×W in [0, 1], CPU
    names: list[str]
    labels: Tensor
    overrides: list[str]


def _safe_file_name(name: str, taken: set[str]) -> str:
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:60] or "image"
    out, i = f"{stem}{suffix}", 1
    while out in taken:
        out, i = f"{stem}_{i}{suffix}", i + 1
    taken.add(out)
    return out


def load_images(model: LoadedModel, uploads: Sequence[str] | None, samples: Sequence[str] | None,
                workdir: Path) -> ImageSet:
    """Uploaded files (validated, copied into the session's ``workdir`` under safe names) and bundled samples, read
    by the ``images`` / ``samples`` dataset with the model's eval transform, exactly as ``explain.py`` reads them."""
    from xai_bench.data import _sample_photos
    from xai_bench.tasks.setup import build_data, prepare_for_model

    uploads, samples = list(uploads or []), list(samples or [])
    unknown = [s for s in samples if s not in sample_names()]
    if unknown:
        raise AppError(f"unknown sample(s) {unknown}; available: {sample_names()}")
    if not uploads and not samples:
        raise AppError("no image: upload one (PNG, JPEG, …) or pick a bundled sample")
    if uploads:
        check_image_files(uploads)
    if len(uploads) + len(samples) > MAX_IMAGES:
        raise AppError(f"{len(uploads) + len(samples)} images; the app explains at most {MAX_IMAGES} at a time")
    m = model.model
    c, k = int(m.input_size[0]), int(m.num_classes)
    if not uploads and k == 1000 and c == 3:
        overrides = ["dataset=samples", f"dataset.names=[{','.join(samples)}]"]
    else:
        folder = workdir / "images"
        folder.mkdir(parents=True, exist_ok=True)
        taken = {p.name for p in folder.iterdir()}
        paths = []
        for p in uploads:
            dest = folder / _safe_file_name(Path(p).name, taken)
            shutil.copyfile(p, dest)
            paths.append(str(dest.resolve()))
        photos = _sample_photos()
        paths += [str(photos[s][0]) for s in samples]
        overrides = ["dataset=images", f"dataset.paths=[{','.join(paths)}]"]
        if k != 1000:
            overrides.append(f"dataset.num_classes={k}")
        if c != 3:
            overrides.append(f"dataset.channels={c}")
    cfg = compose("explain", [*model.overrides, *overrides])
    try:
        data = prepare_for_model(build_data(cfg), m)
    except ValueError as exc:
        raise AppError(str(exc)) from None
    ds = data.split("test")
    items = [ds[i] for i in range(len(ds))]
    return ImageSet(torch.stack([it["image"] for it in items]), [str(it.get("name", i)) for i, it in
                                                                  enumerate(items)],
                    torch.tensor([int(it["label"]) for it in items]), overrides)


def top_k(model: torch.nn.Module, images: Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each image, ``[(class name, probability), …]``."""
    with torch.no_grad():
        probs = model(images.to(_device(model))).float().softmax(1).cpu()
    p, idx = probs.topk(min(k, probs.shape[1]), dim=1)
    names = list(model.class_names)
    return [[(names[int(i)], float(v)) for v, i in zip(pr, ix)] for pr, ix in zip(p, idx)]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------------------------
def method_overrides(methods: Sequence[str], settings: dict[str, Any] | None = None) -> list[str]:
    """``attribution=[…]`` and the widgets' settings of the selected methods as overrides."""
    if not methods:
        raise AppError("no attribution method selected: tick at least one")
    settings = settings or {}
    out = [f"attribution=[{','.join(methods)}]"]
    for method in methods:
        for key, path in SETTINGS.get(method, {}).items():
            value = settings.get(key)
            if value is not None and value != "":
                out.append(f"attribution.{method}.{path}={_value(value)}")
        if method in LAYER_METHODS and settings.get("layer"):
            out.append(f"attribution.{method}.layer={settings['layer']}")
    return out


def _value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return str(int(v))
    return str(v)


@dataclass
class ExplainResult:
    """Maps of every (image, target) row × method, and what made them."""

    images: Tensor  # M×C×H×W rows (image repeated per target), CPU
    targets: Tensor  # M
    image_index: Tensor  # M
    names: list[str]
    class_names: list[str]
    probs: Tensor  # N×K
    maps: dict[str, Tensor]  # method → M×1×H×W, CPU
    signed: dict[str, bool]
    seconds: dict[str, float]
    overrides: list[str]
    nodes: dict[str, DictConfig] = field(repr=False, default_factory=dict)
    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # method → metric → Tensor[M]
    metric_info: dict[str, tuple[str, bool]] = field(default_factory=dict)  # metric → (category, higher is better)

    @property
    def command(self) -> str:
        return command("explain", self.overrides)


ProgressFn = Callable[[str, int, "int | None"], None]


def explain(model: LoadedModel, images: ImageSet, methods: Sequence[str], settings: dict[str, Any] | None = None,
            *, target: int | None = None, metrics: Sequence[str] = (), progress: ProgressFn | None = None
            ) -> ExplainResult:
    """All of :func:`explain_steps` at once: the finished result."""
    steps = list(explain_steps(model, images, methods, settings, target=target, metrics=metrics,
                               progress=progress))
    return steps[-1][1]


def explain_steps(model: LoadedModel, images: ImageSet, methods: Sequence[str],
                  settings: dict[str, Any] | None = None, *, target: int | None = None, metrics: Sequence[str] = (),
                  progress: ProgressFn | None = None) -> Iterator[tuple[str, ExplainResult]]:
    """Maps of ``images`` for ``methods`` (and their ``metrics``), as ``explain.py`` with :attr:`~ExplainResult.
    overrides` makes them: the same config nodes, explainers, targets and per-method seeding (one batch: the app
    explains at most :data:`MAX_IMAGES` images, under explain.py's ``batch_size``).

    Args:
        target: a class id explained for every image, ``None`` for each image's predicted class.
        metrics: ``conf/metric`` names scored on every map.
        progress: ``fn(description, done, total)`` after each batch of a long method; it may raise
            :class:`Cancelled`.

    Yields:
        ``(step, result)`` after each method (``step`` its name; the UI shows maps as they come) and, with
        ``metrics``, once more after scoring (``step`` = ``"metrics"``); ``result`` fills up as it goes.
    """
    from xai_bench.attribution.runner import build_attribution, expand_targets
    from xai_bench.progress import progress_reporting
    from xai_bench.tasks.explain import _captum_progress, method_nodes, resolve_targets
    from xai_bench.tasks.setup import check_against_model
    from xai_bench.utils import resolve_device, seed_everything

    settings = dict(settings or {})
    if settings.get("layer") == getattr(model.model, "default_layer", None):
        settings.pop("layer")  # the model's own default: the command stays short
    overrides = [*model.overrides, *images.overrides, *method_overrides(methods, settings),
                 f"target={'predicted' if target is None else f'[{int(target)}]'}"]
    if metrics:
        overrides.append(f"metric=[{','.join(metrics)}]")
    cfg = compose("explain", overrides)
    try:
        nodes = method_nodes(cfg)
        m = model.model
        check_against_model(cfg, m)
    except (ValueError, KeyError) as exc:
        raise AppError(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)) from None
    device = resolve_device(cfg.device)
    m.to(device).eval()
    x = images.images.to(device)
    with torch.no_grad():
        probs = m(x).float().softmax(1).cpu()
    try:
        targets = resolve_targets(cfg.target, probs, images.labels, images.names, num_classes=probs.shape[1],
                                  top_k=int(cfg.get("top_k", 1)))
    except ValueError as exc:
        raise AppError(str(exc)) from None
    n, t = targets.shape
    xx, flat_t = expand_targets(x, targets)
    result = ExplainResult(xx.cpu(), flat_t.cpu(), torch.arange(n).repeat_interleave(t), images.names,
                           list(m.class_names), probs, {}, {}, {}, overrides)
    callback = progress or (lambda *a: None)
    explainers = {}
    for key, node in nodes.items():
        name = str(node.get("name") or key)
        callback(name, 0, None)
        try:
            explainer = build_attribution(node, m)
        except (ValueError, NotImplementedError, KeyError) as exc:
            raise AppError(f"{name}: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}") from None
        seed_everything(int(cfg.seed))  # explain.py seeds every method of batch 0 with the run's seed
        t0 = time.perf_counter()
        # file=StringIO: the bars' text goes nowhere; the callback carries the progress to the page
        with progress_reporting(enabled=True, callback=callback, file=io.StringIO()), \
                _captum_progress(explainer, True):
            try:
                maps = explainer.attribute(x, targets)
            except (ValueError, NotImplementedError) as exc:  # the library's refusals name the setting to change
                raise AppError(f"{name}: {exc}") from None
        result.seconds[name] = time.perf_counter() - t0
        result.maps[name] = maps.flatten(0, 1).float().cpu()
        result.signed[name] = bool(explainer.facts.signed)
        result.nodes[name] = node
        explainers[name] = explainer
        yield name, result
    if metrics:
        _score(cfg, m, xx, flat_t.to(device), result, explainers, callback)
        yield "metrics", result


def _score(cfg: DictConfig, model: torch.nn.Module, x: Tensor, targets: Tensor, result: ExplainResult,
           explainers: dict[str, Any], callback: ProgressFn) -> None:
    from xai_bench.metrics.explanation.scoring import score_methods
    from xai_bench.tasks._explain_metrics import build_metrics
    from xai_bench.utils import seed_everything

    try:
        metrics = build_metrics(cfg)
    except (ValueError, TypeError) as exc:
        raise AppError(f"metric settings: {exc}") from None
    seed = int(cfg.seed)

    def reexplainer(e: Any) -> Callable[..., Tensor]:
        def run(images: Tensor, targets: Tensor, model: torch.nn.Module | None = None) -> Tensor:
            from xai_bench.attribution.runner import build_attribution

            seed_everything(seed)
            ex = e if model is None else build_attribution(result.nodes[e.name], model)
            return ex.attribute(images, targets).float()

        return run

    for i, (mname, metric) in enumerate(metrics.items()):
        callback(f"metric {mname}", i, len(metrics))
        scores = score_methods({mname: metric}, model, x, targets, result.maps,
                               explainers={k: reexplainer(e) for k, e in explainers.items()})
        for method, per in scores.items():
            result.scores.setdefault(method, {}).update(per)
        result.metric_info[mname] = (metric.category, bool(metric.higher_is_better))


def score_rows(result: ExplainResult) -> list[list[Any]]:
    """Table rows: image, class, method, then one column per metric (↑/↓ in :func:`score_header`)."""
    rows = []
    for r in range(len(result.targets)):
        i, c = int(result.image_index[r]), int(result.targets[r])
        for method in result.maps:
            per = result.scores.get(method, {})
            rows.append([result.names[i], _short(result.class_names[c]), method,
                         *[round(float(per[k][r]), 4) if k in per else None for k in result.metric_info]])
    return rows


def score_table(result: ExplainResult) -> Any:
    """:func:`score_rows` as a pandas DataFrame with :func:`score_header` columns (what the page's table shows)."""
    import pandas as pd

    return pd.DataFrame(score_rows(result), columns=score_header(result))


def to_pil(image: Tensor) -> Any:
    """A C×H×W image in [0, 1] as a PIL image (what the page shows as 'what the model sees')."""
    from PIL import Image

    arr = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def score_header(result: ExplainResult) -> list[str]:
    return ["image", "class", "method",
            *[f"{k} {'↑' if hib else '↓'}" for k, (_, hib) in result.metric_info.items()]]


def _short(name: str) -> str:
    return name.split(",")[0]


def row_title(result: ExplainResult, r: int) -> str:
    i, c = int(result.image_index[r]), int(result.targets[r])
    return f"{result.names[i]} · {_short(result.class_names[c])} {float(result.probs[i, c]):.2f}"


def render_maps(result: ExplainResult, outdir: Path, *, view: str = "all", alpha: float = 0.5,
                methods: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """One PNG per (row, method): the image with its map drawn as ``view`` (``all``: heat map, overlay, isolines
    and signed map side by side). Returns ``[(path, caption), …]``."""
    from xai_bench import viz

    if view not in VIEWS:
        raise AppError(f"view must be one of {VIEWS}, got {view!r}")
    outdir.mkdir(parents=True, exist_ok=True)
    out = []
    for r in range(len(result.targets)):
        for method in methods or list(result.maps):
            title = f"{method} · {row_title(result, r)}"
            fig = viz.attribution_figure(result.images[r], result.maps[method][r], kind=view, title=title,
                                         signed=result.signed[method] and view != "all", alpha=float(alpha),
                                         panel_size=2.2)
            path = outdir / f"{r:02d}_{re.sub(r'[^A-Za-z0-9_-]', '_', method)}_{view}.png"
            viz.save_figure(fig, path, dpi=90)
            out.append((str(path), title))
    return out


def stack_figures(paths: Sequence[str], out: Path) -> str:
    """The figures one below the other in one PNG (the page shows it whole; the figures stay downloadable)."""
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in paths]
    width = max(im.width for im in ims)
    canvas = Image.new("RGB", (width, sum(im.height for im in ims)), "white")
    y = 0
    for im in ims:
        canvas.paste(im, (0, y))
        y += im.height
    canvas.save(out)
    return str(out)


def save_maps(result: ExplainResult, path: Path) -> Path:
    """``maps.safetensors`` in explain.py's layout: ``<method>`` M×1×H×W, ``images``, ``targets``,
    ``image_index``, and JSON metadata ``names``, ``target_names``, ``methods``."""
    import json

    from xai_bench.utils import save_safetensors

    tensors = {name: m.contiguous() for name, m in result.maps.items()}
    tensors.update({"images": result.images.contiguous(), "targets": result.targets.contiguous(),
                    "image_index": result.image_index.contiguous()})
    meta = {"names": json.dumps(result.names),
            "target_names": json.dumps([result.class_names[int(c)] for c in result.targets]),
            "methods": json.dumps(list(result.maps))}
    return save_safetensors(tensors, path, meta)
