"""``attack.py``: robust accuracy of a classifier under an ε sweep of one gradient attack (FGSM, PGD L∞ / L2).

Every batch of the split goes through the attack's :meth:`~xai_bench.robustness.attacks.Attack.sweep` over
``attack.eps`` (FGSM computes its input gradient once per batch and only re-scores per ε). Per-ε *counts* are summed
over batches and divided at the end (:class:`~xai_bench.robustness.sweeps.SweepAccumulator`), so every number is over
the whole split whatever the batch size. Accuracy uses the dataset's reference sets (``accept``) where it has them,
so a tabby called "tiger cat" still counts as correct.

Outputs in the run folder:

- ``figures/accuracy_vs_eps.png`` (symlog ε axis, ticks in k/255) and ``tables/eps_sweep.csv`` (one row per ε), also
  logged to W&B;
- ``figures/adversarial_grid.png``: clean | perturbation | adversarial for the first ``grid_images`` images at
  ``grid_eps`` (default: the smallest ε that changes one of their predictions, else the largest);
- with ``attack.save_examples: true``: ``adversarial.safetensors`` (lossless float tensors, see
  :func:`save_examples`; ``dataset=tensors`` reads them back exactly), ``tables/examples.csv`` (each saved image's
  prediction per ε) and ``examples/*.png`` (8-bit, for viewing only);
- ``results.json`` whose metrics hold ``model``, ``attack``, ``norm`` and the ``eps_sweep`` rows, which
  :class:`xai_bench.reports.callbacks.AccuracyVsEpsCallback` gathers into one plot after a multirun;
- while running, ``shards/``: every finished batch (running sums, kept examples; :mod:`xai_bench.resume`), so
  ``resume=<run dir>`` continues a killed run to the numbers an uninterrupted one gives (each batch is seeded on its
  own: PGD's random start does not depend on the batches before it).

Under ``torchrun --nproc_per_node=N attack.py …`` the ranks split the batches round robin; rank 0 gathers every
batch's own sums and kept images and adds them in batch order, so its ``results.json`` and tables equal the
single-process run's (``tests/test_distributed.py``). A sharded run commits its batches to ``shards/`` when the ranks
finish.
"""

from __future__ import annotations

import json

from collections.abc import Sequence
from pathlib import Path
import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import Subset
from tqdm.auto import tqdm

from xai_bench import viz
from xai_bench.checks import accept_matrix, safe_name
from xai_bench.data import make_loader
from xai_bench.distributed import gather_or_fail, process_group
from xai_bench.resume import ShardStore, results_config
from xai_bench.robustness.attacks import Attack, build_attack, parse_eps
from xai_bench.robustness.sweeps import SweepAccumulator, eps_label
from xai_bench.tasks.common import run_context
from xai_bench.tasks.setup import build_data, build_model
from xai_bench.utils import atomic_path, batch_seed, save_safetensors, seed_everything

__all__ = ["run", "save_examples"]

# ‖δ‖ may exceed ε by float rounding only (x + ε·sign(g) − x ≠ ε exactly in float32).
_BALL_RTOL, _BALL_ATOL = 1e-5, 1e-6

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Sweep ``cfg.attack`` over its ε list on ``cfg.split`` of the dataset (see conf/attack.yaml).

    Returns:
        The run's metrics: ``model``, ``attack``, ``norm``, ``dataset``, ``n``, ``eps_sweep`` (one dict per ε, as in
        ``tables/eps_sweep.csv``), ``accuracy@<eps>`` per ε, ``clean_accuracy`` (ε = 0, when swept), ``grid_eps`` and
        ``objective`` (robust accuracy at the largest ε).
    """
    with run_context(cfg, "attack") as ctx, process_group(ctx.device) as ranks:
        # grid_eps only picks the ε drawn: a resumed run may change it. Under torchrun only rank 0 keeps the store.
        store = ShardStore.open(ctx.out_dir, task="attack", config=results_config(cfg, ignore=("grid_eps",)),
                                device=str(ctx.device), resume=cfg.get("resume")) if ranks.is_main else None
        data = build_data(cfg)
        model = build_model(cfg, data).to(ctx.device).eval()
        attack, eps = build_attack(cfg.attack, model)
        ctx.name(getattr(model, "name", type(model).__name__), str(cfg.attack.name))
        target_class = cfg.attack.get("target_class")
        grid_fixed = _fixed_grid_eps(cfg.get("grid_eps"), eps, attack.norm)  # fail before the sweep, not after
        ds = data.split(cfg.split)
        if cfg.get("max_images"):
            ds = Subset(ds, range(min(int(cfg.max_images), len(ds))))  # type: ignore[arg-type]
        if len(ds) == 0:  # type: ignore[arg-type]
            raise ValueError(f"split {cfg.split!r} of dataset {data.name!r} is empty; pick another split")
        class_names = list(getattr(model, "class_names", None) or data.class_names)
        save = bool(cfg.attack.get("save_examples", False))
        n_keep = _keep_count(cfg, save, len(ds))  # type: ignore[arg-type]

        counts = SweepAccumulator(eps, attack.norm, targeted=attack.targeted, device=ctx.device)
        kept: dict[str, list[Any]] = {k: [] for k in _KEPT}
        done, n_seen = _restore(store, counts, kept) if ranks.is_main else (0, 0)
        if ranks.sharded:  # the other ranks learn how much of a resumed run rank 0 already holds
            done, n_seen = ranks.broadcast((done, n_seen) if ranks.is_main else None)
        if done:
            ctx.metrics.update(resumed_from=str(store.resumed_from) if store else "", resumed_batches=done)
            ds = Subset(ds, range(n_seen, len(ds)))  # type: ignore[arg-type]
        bs, first = int(cfg.batch_size), n_seen
        batches = iter(make_loader(ds, bs, num_workers=int(cfg.get("num_workers", 0))))
        # torchrun: this rank's batches (round robin), each with its own sums, kept images and size, for rank 0
        mine: list[tuple[int, dict[str, Tensor], dict[str, Tensor], list[str], int]] = []
        with ctx.timer("attack"):
            for b, batch in enumerate(tqdm(batches, desc=f"{cfg.attack.name} ε sweep", initial=done,
                                           total=done + (len(ds) + bs - 1) // bs,  # type: ignore[arg-type]
                                           disable=not cfg.get("progress", True)), start=done):
                if not ranks.owns(b):
                    continue
                seed_everything(batch_seed(int(cfg.seed), b))  # PGD's random start: the same on any rank or resume
                offset = first + (b - done) * bs  # images before this batch (every batch but the last is full)
                x = batch["image"].to(ctx.device)
                accept = accept_matrix(batch["label"], len(class_names), batch.get("accept"), device=ctx.device)
                labels = _attack_labels(model, x, batch["label"].to(ctx.device), accept)
                result = attack.sweep(x, labels, eps, target_labels=target_class, accept=accept, return_images=True)
                _check_bounds(result, x, eps, attack.norm)
                take = min(len(x), n_keep - offset)
                new: dict[str, Any] = {}
                names: list[str] = []
                if take > 0:
                    new = {"images": x[:take], "adv": result["images"][:, :take], "labels": batch["label"][:take],
                           "accept": accept[:take], "clean_prob": result["clean_logits"][:take].float().softmax(-1),
                           "adv_prob": result["logits"][:, :take].float().softmax(-1)}
                    new = {k: v.cpu() for k, v in new.items()}
                    names = _names(batch, offset, take)
                if ranks.sharded:
                    part = SweepAccumulator(eps, attack.norm, targeted=attack.targeted, device=ctx.device)
                    part.add(result, accept)
                    mine.append((b, {k: v.cpu() for k, v in part.state_dict().items()}, new, names, len(x)))
                else:
                    counts.add(result, accept)
                    n_seen = _commit(store, b, counts, kept, new, names, offset + len(x))
                del result
        if ranks.sharded:  # rank 0 adds every rank's batches in batch order: the sums of the single-process run
            got = gather_or_fail(ranks, mine)
            if not ranks.is_main:
                return {"rank": ranks.rank, "world_size": ranks.world}
            for b, sums, new, names, n in sorted((p for part in got or [] for p in part), key=lambda p: p[0]):
                counts.merge(sums)
                n_seen = _commit(store, b, counts, kept, new, names, first + (b - done) * bs + n)
            ctx.metrics["world_size"] = ranks.world

        rows = counts.rows()
        ctx.metrics.update(model=getattr(model, "name", type(model).__name__), attack=str(cfg.attack.name),
                           norm=attack.norm, dataset=data.name, n=n_seen, targeted=attack.targeted,
                           target_class=target_class, eps_sweep=rows)
        for row in rows:
            ctx.metrics[f"accuracy@{row['eps']:.4g}"] = row["accuracy"]
        if 0.0 in eps:
            ctx.metrics["clean_accuracy"] = rows[eps.index(0.0)]["accuracy"]
        ctx.metrics["objective"] = rows[max(range(len(eps)), key=eps.__getitem__)]["accuracy"]
        _print_rows(rows, ctx.metrics["model"], str(cfg.attack.name), data.name)

        ctx.table("eps_sweep", rows)
        xs = [r["eps_255"] if attack.norm == "inf" else r["eps"] for r in rows]
        ctx.tracker.log_line("attack/accuracy_vs_eps", xs,
                             {"accuracy": [r["accuracy"] for r in rows],
                              "attack_success_rate": [r["attack_success_rate"] for r in rows]},
                             xname="eps ×255" if attack.norm == "inf" else "eps (L2)",
                             title=f"{cfg.attack.name} on {ctx.metrics['model']}")
        ctx.figure("accuracy_vs_eps", viz.accuracy_vs_eps(
            {f"{ctx.metrics['model']} · {cfg.attack.name}": (eps, [r["accuracy"] for r in rows])},
            scale_255=attack.norm == "inf",
            xlabel=None if attack.norm == "inf" else "ε (L2 norm of δ, pixel units; symlog axis)",
            ylabel="robust accuracy" if not attack.targeted else "accuracy",
            title=f"{ctx.metrics['model']} · {cfg.attack.name} · {data.name}/{cfg.split} (n={n_seen})"))

        if kept["images"]:
            ex = {k: torch.cat(v, dim=1 if k in ("adv", "adv_prob") else 0) if k != "names" else v
                  for k, v in kept.items()}
            grid_i = grid_fixed if grid_fixed is not None else _grid_eps_index(
                eps, ex, int(cfg.get("grid_images", 4)), attack, target_class)
            ctx.metrics["grid_eps"] = eps[grid_i]
            if int(cfg.get("grid_images", 4)) > 0:
                ctx.figure("adversarial_grid", _grid_figure(ex, grid_i, eps, attack, class_names,
                                                            int(cfg.grid_images)))
            if save:
                path = save_examples(ctx.out_dir / "adversarial.safetensors", ex["images"], ex["adv"], eps,
                                     ex["labels"], names=ex["names"], norm=attack.norm,
                                     accept=ex["accept"] if (ex["accept"].sum(1) > 1).any() else None,
                                     metadata={"attack": str(cfg.attack.name), "model": ctx.metrics["model"],
                                               "dataset": data.name, "class_names": json.dumps(class_names)})
                ctx.files.append(str(path.relative_to(ctx.out_dir)))
                ctx.table("examples", _example_rows(ex, eps, attack.norm, class_names))
                ctx.files += _write_pngs(ctx.out_dir / "examples", ex, grid_i, eps, attack.norm, ctx.out_dir)
        store.close()
        return dict(ctx.metrics)


_KEPT = ("images", "adv", "labels", "accept", "names", "clean_prob", "adv_prob")


def _restore(store: ShardStore, counts: SweepAccumulator, kept: dict[str, list[Any]]) -> tuple[int, int]:
    """Carry a resumed run's finished batches: the running sums of the last one, every batch's kept images.

    Returns:
        (batches done, images seen).
    """
    done, n_seen, last = 0, 0, {}
    while done in store:
        last, meta = store.get(done)
        for k in _KEPT:
            if k == "names":
                kept[k] += json.loads(meta.get("names", "[]"))
            elif f"kept/{k}" in last:
                kept[k].append(last[f"kept/{k}"])
        n_seen = int(meta["n_seen"])
        done += 1
    if done:
        counts.load_state_dict(last)
    return done, n_seen


def _commit(store: ShardStore, b: int, counts: SweepAccumulator, kept: dict[str, list[Any]], new: dict[str, Tensor],
            names: list[str], n_seen: int) -> int:
    """Add batch ``b``'s kept images to ``kept`` and commit the running sums after it to ``store``; returns
    ``n_seen``, the images seen up to and including this batch."""
    for k, v in new.items():
        kept[k].append(v)
    kept["names"] += names
    state = {**counts.state_dict(), **{f"kept/{k}": v for k, v in new.items()}}
    store.put(b, state, {"n_seen": str(n_seen), "names": json.dumps(names)})
    return n_seen


@torch.no_grad()
def _attack_labels(model: nn.Module, x: Tensor, labels: Tensor, accept: Tensor) -> Tensor:
    """The class an untargeted attack pushes away from.

    With one accepted class per image this is the label. With reference sets it is the clean prediction when that is
    accepted (pushing a tabby away from "tabby" towards "tiger cat" would not change its correctness), else the
    label; unlabelled images are attacked away from their clean prediction. Costs one extra forward, no backward.
    """
    multi = accept.sum(1) > 1
    unknown = labels < 0
    if not (multi.any() or unknown.any()):
        return labels
    pred = model(x).argmax(1)
    rows = torch.arange(len(x), device=x.device)
    use_pred = unknown | (multi & accept[rows, pred])
    return torch.where(use_pred, pred, labels)


def _check_bounds(result: dict[str, Any], x: Tensor, eps: Sequence[float], norm: str) -> None:
    """The attack contract, checked on every batch: ‖δ‖ ≤ ε in the attack's norm and images in [0, 1]."""
    radius = torch.tensor(eps, dtype=result["linf"].dtype, device=x.device)[:, None]
    size = result["linf"] if norm == "inf" else result["l2"]
    over = size > radius * (1 + _BALL_RTOL) + _BALL_ATOL
    if over.any():
        e = int(over.any(1).nonzero()[0, 0])
        raise RuntimeError(f"the attack left the ε-ball: ‖δ‖ = {size[e].max().item():.6g} > ε = {eps[e]:.6g} "
                           f"(norm {norm}); this is a bug in the attack")
    adv = result["images"]
    if adv.numel() and (adv.min() < 0 or adv.max() > 1):
        raise RuntimeError(f"adversarial images left [0, 1] (min {adv.min().item():.4g}, max {adv.max().item():.4g});"
                           " this is a bug in the attack")


def _keep_count(cfg: DictConfig, save: bool, n_total: int) -> int:
    """How many leading images keep their adversarial copies in memory (for the grid and ``save_examples``)."""
    grid = max(int(cfg.get("grid_images", 4)), 0)
    if not save:
        return min(grid, n_total)
    cap = cfg.get("max_examples")
    return min(n_total, max(grid, int(cap) if cap is not None else n_total))


def _names(batch: dict[str, Any], offset: int, take: int) -> list[str]:
    if "name" in batch:
        return [str(v) for v in list(batch["name"])[:take]]
    return [str(offset + i) for i in range(take)]


def _fixed_grid_eps(grid_eps: Any, eps: list[float], norm: str) -> int | None:
    """Index of ``grid_eps`` in ``eps`` (``None`` when ``grid_eps`` is null: chosen after the sweep)."""
    if grid_eps is None:
        return None
    (value,) = parse_eps(grid_eps, norm=norm, name="grid_eps")
    matches = [i for i, e in enumerate(eps) if abs(e - value) <= 1e-9 + 1e-6 * e]
    if not matches:
        raise ValueError(f"grid_eps={grid_eps!r} is not one of attack.eps {[eps_label(e, norm) for e in eps]}; "
                         f"pick one of them or null")
    return matches[0]


def _grid_eps_index(eps: list[float], ex: dict[str, Any], n_grid: int, attack: Attack,
                    target_class: int | None) -> int:
    """The smallest ε that fools the model on one of the first ``n_grid`` images, else the largest ε."""
    # "Flipped" means the attack worked on that image: a labelled image is now wrong (leaving its reference set,
    # not merely moving inside it), an unlabelled one changed its prediction, a targeted one reached the target.
    clean = ex["clean_prob"][:n_grid].argmax(-1)
    adv = ex["adv_prob"][:, :n_grid].argmax(-1)  # E×G
    accept = ex["accept"][:n_grid]
    rows = torch.arange(len(clean))
    if attack.targeted:
        flipped = adv == target_class
    else:
        scored = accept.any(1)
        flipped = torch.where(scored, accept[rows, clean] & ~accept[rows, adv], adv != clean)
    for i in sorted(range(len(eps)), key=eps.__getitem__):
        if eps[i] > 0 and flipped[i].any():
            return i
    return max(range(len(eps)), key=eps.__getitem__)


def _grid_figure(ex: dict[str, Any], e: int, eps: list[float], attack: Attack, class_names: list[str],
                 n: int) -> Any:
    n = min(n, len(ex["images"]))
    clean_p, adv_p = ex["clean_prob"][:n], ex["adv_prob"][e, :n]
    c_conf, c_cls = clean_p.max(-1)
    a_conf, a_cls = adv_p.max(-1)
    label = eps_label(eps[e], attack.norm)
    accept = ex["accept"][:n]
    # ✓/✗: in the image's reference set or not (a tabby called "tiger cat" is still ✓); no mark when unlabelled.
    mark = lambda i, c: "" if not accept[i].any() else " ✓" if accept[i, c] else " ✗"
    clean_titles = [f"{ex['names'][i]}: {class_names[c_cls[i]]} {c_conf[i]:.0%}{mark(i, c_cls[i])}"
                    for i in range(n)]
    adv_titles = [f"ε={label}: {class_names[a_cls[i]]} {a_conf[i]:.0%}{mark(i, a_cls[i])}" for i in range(n)]
    return viz.adversarial_grid(ex["images"][:n], ex["adv"][e, :n], clean_titles, adv_titles,
                                images_per_row=2 if n >= 4 else 1)


def save_examples(path: str | Path, images: Tensor, adv: Tensor, eps: Sequence[float], labels: Tensor, *,
                  names: Sequence[str] | None = None, norm: str = "inf", accept: Tensor | None = None,
                  metadata: dict[str, str] | None = None) -> Path:
    """Write clean and adversarial images losslessly to a safetensors file (8-bit PNG would round δ away).

    Layout (all float32, CPU): ``images`` N×C×H×W clean images in [0, 1]; ``adv_<eps>`` N×C×H×W adversarial images
    per ε, the key formatted as ``f"adv_{eps:.6g}"`` (e.g. ``adv_0.0313725`` for 8/255); ``eps`` the E radii;
    ``labels`` N (−1 = unknown); ``accept`` N×K bool reference sets, when given. The string metadata holds ``eps``
    (JSON list), ``adv_keys`` (JSON list aligned with it), ``norm``, ``names`` (JSON list) and whatever ``metadata``
    adds. Read it back with ``safetensors.torch.load_file(path)`` (tensors) and
    ``safetensors.safe_open(path, "pt").metadata()``, or explain/evaluate the very tensors that were attacked with
    ``dataset=tensors dataset.path=<file> dataset.key=adv_0.0313725`` (no resize or crop is re-applied).

    Args:
        path: destination ``.safetensors`` file (written atomically).
        images: N×C×H×W clean images.
        adv: E×N×C×H×W adversarial images, one slice per ε.
        eps: the E radii, in the order of ``adv``.
        labels: N class indices.
        names: N image names. Default: ``"0"`` … ``"N-1"``.
        norm: ``"inf"`` or ``"2"``.
        accept: N×K accepted classes per image (reference sets), saved as ``accept``.
        metadata: extra string metadata.

    Returns:
        ``path`` as a ``Path``.
    """
    if adv.ndim != 5 or adv.shape[0] != len(eps) or adv.shape[1:] != images.shape:
        raise ValueError(f"adv must be E×N×C×H×W = ({len(eps)}, {', '.join(map(str, images.shape))}), "
                         f"got {tuple(adv.shape)}")
    keys = [f"adv_{e:.6g}" for e in eps]
    if len(set(keys)) != len(keys):
        raise ValueError(f"attack.eps has values equal to 6 significant digits: {list(eps)}; remove duplicates")
    tensors = {"images": images.float(), "labels": labels.long(), "eps": torch.tensor(list(eps), dtype=torch.float32)}
    tensors.update({k: adv[i].float() for i, k in enumerate(keys)})
    if accept is not None:
        tensors["accept"] = accept.bool()
    meta = {"eps": json.dumps(list(eps)), "adv_keys": json.dumps(keys), "norm": norm,
            "names": json.dumps(list(names) if names is not None else [str(i) for i in range(len(images))]),
            **(metadata or {})}
    return save_safetensors(tensors, path, meta)


def _example_rows(ex: dict[str, Any], eps: list[float], norm: str, class_names: list[str]) -> list[dict[str, Any]]:
    """One row per saved image and ε: the prediction on the tensor stored under ``key`` in adversarial.safetensors
    (what ``dataset=tensors dataset.key=<key>`` reproduces)."""
    rows = []
    for e, value in enumerate(eps):
        conf, cls = ex["adv_prob"][e].max(-1)
        for i, name in enumerate(ex["names"]):
            label = int(ex["labels"][i])
            rows.append({"image": name, "label": class_names[label] if label >= 0 else "", "eps": value,
                         "eps_label": eps_label(value, norm), "key": f"adv_{value:.6g}",
                         "prediction": class_names[int(cls[i])], "confidence": round(float(conf[i]), 4)})
    return rows


def _write_pngs(folder: Path, ex: dict[str, Any], e: int, eps: list[float], norm: str, root: Path) -> list[str]:
    """8-bit PNGs of the kept images, clean and at the grid's ε, for looking at (not for reuse: they are rounded)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    tag = safe_name(eps_label(eps[e], norm), "-")
    to_u8 = lambda t: t.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).squeeze(-1).numpy()
    written = []
    for i, name in enumerate(ex["names"]):
        stem = f"{i:03d}_{safe_name(name, '-')}"
        for suffix, img in (("clean", ex["images"][i]), (f"eps{tag}", ex["adv"][e, i])):
            path = folder / f"{stem}_{suffix}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(to_u8(img)).save(tmp, format="PNG")
            written.append(str(path.relative_to(root)))
    return written


def _print_rows(rows: list[dict[str, Any]], model: str, attack: str, dataset: str) -> None:
    lines = [f"{attack} on {model} ({dataset}, n={rows[0]['n'] if rows else 0}):",
             f"  {'eps':>9}  {'accuracy':>8}  {'success':>8}  {'flips':>6}  {'conf':>6}"]
    lines += [f"  {r['eps_label']:>9}  {r['accuracy']:8.4f}  {r['attack_success_rate']:8.4f}  {r['flip_rate']:6.3f}"
              f"  {r['mean_confidence']:6.3f}" for r in rows]
    log.info("\n".join(lines))
