"""Quality per cost: insertion AUC (higher is better) against forward passes per image for RISE, Occlusion and LIME.

A small CNN is trained for a few hundred Adam steps on synthetic_shapes at 32² (insertion needs a model whose
probabilities react to the image), then each method explains the same held-out images at a ladder of settings. The
curve shows the cheapest setting that is good enough.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from benchlib.operations import load_method
from benchlib.timing import Counted
from xai_bench.attribution.runner import build_attribution
from xai_bench.data.synthetic import make_shapes
from xai_bench.metrics.explanation import faithfulness as fa
from xai_bench.models import create_model


def trained_small_cnn(steps: int, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor], float]:
    torch.manual_seed(seed)
    data = make_shapes(1280, 32, seed=seed)
    x, y = data["image"].float(), data["label"].long()
    model = create_model("small_cnn", num_classes=6, in_chans=3)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, 1024, (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x[1024:]).argmax(1) == y[1024:]).float().mean())
    return model, {"image": x[1024:], "label": y[1024:]}, acc


def settings(cfg: DictConfig) -> dict[str, list[dict[str, Any]]]:
    return {
        "RISE": [{"kwargs": {"n_masks": int(n)}} for n in cfg.rise_masks],
        "Occlusion": [{"window": int(w), "stride": int(s)} for w, s in cfg.occlusion],
        "LIME": [{"kwargs": {"n_samples": int(n)}} for n in cfg.lime_samples],
    }


def quality_per_cost(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    model, data, acc = trained_small_cnn(int(cfg.train_steps))
    model = model.to(device)
    x, y = data["image"][: int(cfg.images)].to(device), data["label"][: int(cfg.images)].to(device)
    counted = Counted(model)
    yaml = {"RISE": "rise", "Occlusion": "occlusion", "LIME": "lime"}
    curves: dict[str, list[dict[str, Any]]] = {}
    insertion = fa.Insertion()
    for method, ladder in settings(cfg).items():
        for over in ladder:
            node = load_method(yaml[method], **{k: v for k, v in over.items() if k != "kwargs"})
            for k, v in over.get("kwargs", {}).items():
                node.kwargs[k] = v
            ex = build_attribution(node, counted)
            counted.reset()
            maps = ex.attribute(x, y)
            passes = (counted.fwd + counted.fwdbwd) / x.shape[0]
            auc = insertion(model, x, y, maps)
            curves.setdefault(method, []).append({"setting": over, "passes_per_image": passes,
                                                  "insertion_auc": float(auc.mean()),
                                                  "insertion_se": float(auc.std() / max(1, auc.numel()) ** 0.5)})
    return {"model": f"small_cnn, {cfg.train_steps} Adam steps on synthetic_shapes 32², held-out accuracy {acc:.2f}",
            "images": int(x.shape[0]), "curves": curves}


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method, pts in result["curves"].items():
        xs = [p["passes_per_image"] for p in pts]
        ys = [p["insertion_auc"] for p in pts]
        es = [p["insertion_se"] for p in pts]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("forward passes per image")
    ax.set_ylabel("insertion AUC (higher is better)")
    ax.set_title(f"Quality per cost ({result['images']} images)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
