"""The app's stress test: attack (FGSM/PGD at ε) and/or corrupt (ImageNet-C at a severity) one explained image, then
predict and explain it again for the same class and compare the two maps, as the stability metrics do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from xai_bench.app.compute import ExplainResult, ImageSet, _device, _value, command, compose, row_title, top_k
from xai_bench.app.loading import AppError, LoadedModel

__all__ = ["StressResult", "stress", "stress_figure"]


@dataclass
class StressResult:
    perturbed: Tensor  # 1×C×H×W
    clean_top: list[tuple[str, float]]
    new_top: list[tuple[str, float]]
    clean_map: Tensor
    new_map: Tensor
    stability: dict[str, float]
    commands: list[str]
    what: str


def stress(model: LoadedModel, images: ImageSet, result: ExplainResult, *, method: str, row: int = 0,
           attack: str = "none", eps255: float = 0.0, corruption: str = "none", severity: int = 0) -> StressResult:
    """Perturb row ``row`` of ``result`` (an attack at ε = ``eps255``/255 against the clean prediction, then a
    corruption at ``severity``), predict it and explain it for the same class with ``method``; compare the maps
    (Spearman, top-10 % IoU, SSIM, as the stability metrics do)."""
    from xai_bench.attribution.runner import build_attribution
    from xai_bench.metrics.explanation._similarity import minmax_normalise, spearman, ssim, topk_iou
    from xai_bench.robustness.attacks import build_attack
    from xai_bench.robustness.corruptions import corrupt, list_corruptions
    from xai_bench.utils import seed_everything

    if method not in result.maps:
        raise AppError(f"method {method!r} has no map yet: explain with it first")
    m = model.model
    dev = _device(m)
    x = result.images[row:row + 1].to(dev)
    target = result.targets[row:row + 1].to(dev)
    with torch.no_grad():
        clean_pred = m(x).argmax(1)
    base = [*model.overrides, *images.overrides]
    commands, what = [], []
    adv = x
    eps = f"{_value(float(eps255))}/255"
    if attack != "none" and eps255 > 0:
        cfg = compose("attack", [*base, f"attack={attack}", f"attack.eps=[{eps}]"])
        try:
            atk, eps_list = build_attack(cfg.attack, m)
        except ValueError as exc:
            raise AppError(str(exc)) from None
        adv = atk(x, clean_pred, eps_list[0])
        what.append(f"{attack} ε = {eps}")
        commands.append(command("attack", [*base, f"attack={attack}", f"attack.eps=[0,{eps}]",
                                           "attack.save_examples=true"]) +
                        "   # attack.py attacks the dataset's labels (reference sets); the app, the prediction")
    if corruption != "none" and int(severity) > 0:
        if corruption not in list_corruptions():
            raise AppError(f"unknown corruption {corruption!r}; choose one of {list_corruptions()}")
        adv = corrupt(adv, corruption, int(severity), seed=0)
        what.append(f"{corruption} severity {int(severity)}")
        commands.append(command("evaluate", [*base, "corruption=imagenet_c", f"corruption.names=[{corruption}]",
                                             f"corruption.severities=[{int(severity)}]"]))
    explainer = build_attribution(result.nodes[method], m)
    seed_everything(int(compose("explain", result.overrides).seed))
    new_map = explainer.attribute(adv, target.view(1, 1)).flatten(0, 1).float().cpu()
    clean_map = result.maps[method][row:row + 1]
    stability = {
        "Spearman": float(spearman(clean_map.flatten(1), new_map.flatten(1))[0]),
        "top-10% IoU": float(topk_iou(clean_map, new_map, 0.1)[0]),
        "SSIM": float(ssim(minmax_normalise(clean_map), minmax_normalise(new_map))[0]),
    }
    if attack != "none" and eps255 > 0:
        rest = [o for o in result.overrides if not o.startswith(("dataset", "target", "metric"))]
        commands.append(command("explain", ["dataset=tensors", "dataset.key=adv_<eps>",
                                            "dataset.path=outputs/attack/<run>/adversarial.safetensors", *rest])
                        + "   # the map of the attacked image")
    return StressResult(adv.detach().cpu(), top_k(m, x)[0], top_k(m, adv)[0], clean_map, new_map, stability,
                        commands, ", ".join(what) or "no perturbation")


def stress_figure(result: ExplainResult, s: StressResult, method: str, row: int, path: Path,
                  view: str = "overlay", alpha: float = 0.5) -> str:
    """Clean and perturbed image with their maps, one row each."""
    from xai_bench import viz

    clean_t = f"clean: {s.clean_top[0][0].split(',')[0]} {s.clean_top[0][1]:.2f}"
    new_t = f"{s.what}: {s.new_top[0][0].split(',')[0]} {s.new_top[0][1]:.2f}"
    kind = "heatmap" if view == "all" else view
    fig = viz.attribution_grid(torch.cat([result.images[row:row + 1], s.perturbed]),
                               {method: torch.cat([s.clean_map, s.new_map])}, titles=[clean_t, new_t], kind=kind,
                               signed={method: result.signed[method]}, alpha=float(alpha), cell_size=2.4,
                               title=f"{method} · {row_title(result, row)}")
    viz.save_figure(fig, path, dpi=90)
    return str(path)
