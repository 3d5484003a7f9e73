"""Accuracy under common corruptions: per corruption × severity, mean corruption error, and which images flipped.

:func:`corruption_correctness` runs models over a corruption suite (from
:func:`xai_bench.robustness.corruptions.build_suite`); :func:`corruption_summary` and :func:`flip_rows` turn its
per-image correctness into the numbers and tables the evaluate task reports; :func:`group_order` sorts corruption
names into ImageNet-C's noise / blur / weather / digital groups, the order of the paper's tables and figures.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xai_bench.checks import accept_matrix, eval_mode
from xai_bench.metrics import topk_correct
from xai_bench.resume import BatchStore, finished_batches, remaining_batches, rng_state, set_rng_state
from xai_bench.robustness.corruptions.suites import SeededCorruption

__all__ = ["IMAGENET_C_GROUPS", "CorruptionRun", "corruption_correctness", "corruption_group", "corruption_summary",
           "flip_rows", "group_order", "split_label"]

# Hendrycks & Dietterich (ICLR 2019), Fig. 1 and Table 1, in the paper's order; the four extra corruptions of the
# released code (speckle_noise, gaussian_blur, spatter, saturate) go to the group the paper names for them.
IMAGENET_C_GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}
_RANK = {name: (g, i) for g, names in enumerate(IMAGENET_C_GROUPS.values()) for i, name in enumerate(names)}


def corruption_group(name: str) -> str:
    """ImageNet-C group of a corruption name (``"other"`` for names outside ImageNet-C)."""
    for group, names in IMAGENET_C_GROUPS.items():
        if name in names:
            return group
    return "other"


def group_order(names: list[str] | tuple[str, ...] | Any) -> list[str]:
    """``names`` in ImageNet-C order (noise, blur, weather, digital, paper order within each), others after them in
    their given order."""
    names = list(names)
    return sorted(names, key=lambda n: _RANK.get(n, (len(IMAGENET_C_GROUPS), names.index(n))))


class CorruptionRun(NamedTuple):
    """What :func:`corruption_correctness` measured.

    Attributes:
        correct: model → label → Bool[N] top-1 correctness (label ``"clean"`` for the clean images).
        scored: Bool[N], images with a label or reference set (the others cannot be right or wrong).
        predictions: model → label → Long[N] top-1 class.
        examples: label → the first ``keep`` images as that label altered them (``keep×C×H×W``, CPU), exactly the
            tensors the models saw (for a gallery).
    """

    correct: dict[str, dict[str, torch.Tensor]]
    scored: torch.Tensor
    predictions: dict[str, dict[str, torch.Tensor]]
    examples: dict[str, torch.Tensor]


@torch.no_grad()
def corruption_correctness(models: dict[str, nn.Module], loader: DataLoader,
                           suite: dict[str, Callable[[torch.Tensor], torch.Tensor]], device: torch.device, *,
                           progress: bool = True, keep: int = 0, store: BatchStore | None = None) -> CorruptionRun:
    """Top-1 correctness and class of each model on clean images (label ``"clean"``) and under each corruption,
    which images can be scored at all, and the first ``keep`` corrupted images (see :class:`CorruptionRun`).

    Each batch is corrupted once per label on ``device`` and shared by all models, so a reference model costs
    forward passes only. With ``store`` (:mod:`xai_bench.resume`), each finished batch is committed to it with the
    random state after it (each seeded corruption's generator, torch's global RNG); the batches it already holds are
    read back, and the random streams continue from the last of them, so a resumed run equals an uninterrupted one.
    """
    out: dict[str, dict[str, list[torch.Tensor]]] = {m: defaultdict(list) for m in models}
    preds: dict[str, dict[str, list[torch.Tensor]]] = {m: defaultdict(list) for m in models}
    examples: dict[str, list[torch.Tensor]] = defaultdict(list)
    labels = ["clean", *suite]
    scored: list[torch.Tensor] = []
    done, seen = finished_batches(store), 0
    last: dict[str, torch.Tensor] = {}
    for b in range(done):
        shard, _ = store.get(b)  # type: ignore[union-attr]
        scored.append(shard["scored"])
        seen += len(shard["scored"])
        for label in labels:
            if f"example/{label}" in shard:
                examples[label].append(shard[f"example/{label}"])
            for name in models:
                out[name][label].append(shard[f"correct/{name}/{label}"])
                preds[name][label].append(shard[f"pred/{name}/{label}"])
        last = shard
    with contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(eval_mode(model))
        batches = iter(remaining_batches(loader, done))
        if last:  # after the loader drew its seed: the next batch sees the random state the uninterrupted run's did
            _set_random_state(last, suite, device)
        for b, batch in enumerate(tqdm(batches, desc="corruptions", disable=not progress, leave=False, initial=done,
                                       total=len(loader)), start=done):
            x = batch["image"].to(device)
            y = batch["label"].to(device)
            given = batch.get("accept")
            scored.append((given.bool().any(1) if given is not None else y >= 0).cpu())
            accept: dict[int, torch.Tensor] = {}  # per class count: models may differ (a reference model)
            take = max(0, min(keep - seen, len(x)))
            shard = {"scored": scored[-1]}
            for label in labels:
                xc = x if label == "clean" else suite[label](x)
                if take:
                    shard[f"example/{label}"] = xc[:take].float().cpu()
                    examples[label].append(shard[f"example/{label}"])
                for name, model in models.items():
                    probs = model(xc).softmax(1)
                    k = probs.shape[1]
                    if k not in accept:
                        accept[k] = accept_matrix(y, k, given, device=device)
                    shard[f"correct/{name}/{label}"] = topk_correct(probs, accept[k], 1).cpu()
                    shard[f"pred/{name}/{label}"] = probs.argmax(1).cpu()
                    out[name][label].append(shard[f"correct/{name}/{label}"])
                    preds[name][label].append(shard[f"pred/{name}/{label}"])
            seen += len(x)
            if store is not None:
                store.put(b, {**shard, **_random_state(suite, device)})
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}
    return CorruptionRun({m: cat(d) for m, d in out.items()}, torch.cat(scored), {m: cat(d) for m, d in preds.items()},
                         cat(examples))


def _random_state(suite: dict[str, Callable[[torch.Tensor], torch.Tensor]], device: torch.device
                  ) -> dict[str, torch.Tensor]:
    """Each seeded corruption's generator state (``gen/<label>``) and torch's global RNG state (unseeded ones)."""
    out = rng_state(device)
    for label, fn in suite.items():
        state = fn.get_state() if isinstance(fn, SeededCorruption) else None
        if state is not None:
            out[f"gen/{label}"] = state
    return out


def _set_random_state(shard: dict[str, torch.Tensor], suite: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                      device: torch.device) -> None:
    set_rng_state(shard, device)
    for label, fn in suite.items():
        if isinstance(fn, SeededCorruption) and f"gen/{label}" in shard:
            fn.set_state(shard[f"gen/{label}"], device)


def split_label(label: str) -> tuple[str, int | None]:
    """``"fog/3"`` → ("fog", 3); a custom label has no severity."""
    name, _, sev = label.rpartition("/")
    return (name, int(sev)) if name and sev.isdigit() else (label, None)


def corruption_summary(correct: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None = None,
                       scored: torch.Tensor | None = None) -> dict[str, Any]:
    """Accuracy per label, per corruption (mean over severities), mean corruption error relative to clean and,
    with a reference model, Hendrycks & Dietterich's mCE and relative mCE (ratios of summed errors per corruption)."""
    if scored is not None:  # unlabelled images are classified but cannot be right or wrong
        if not scored.any():
            return {"accuracy": {}, "n_scored": 0}
        correct = {k: v[scored] for k, v in correct.items()}
        reference = {k: v[scored] for k, v in reference.items()} if reference is not None else None
    acc = {k: float(v.float().mean()) for k, v in correct.items()}
    clean_err = 1 - acc["clean"]
    by_corruption: dict[str, list[str]] = defaultdict(list)
    for label in correct:
        if label != "clean":
            by_corruption[split_label(label)[0]].append(label)
    summary: dict[str, Any] = {"accuracy": acc, "clean_accuracy": acc["clean"], "n_scored": len(correct["clean"])}
    if not by_corruption:
        return summary
    errs = {c: [1 - acc[lb] for lb in labels] for c, labels in by_corruption.items()}
    summary["corruption_accuracy"] = {c: 1 - sum(e) / len(e) for c, e in errs.items()}
    summary["mean_corruption_error"] = sum(sum(e) / len(e) for e in errs.values()) / len(errs)
    summary["relative_corruption_error"] = summary["mean_corruption_error"] - clean_err
    if reference is None:
        summary["notes"] = ["mCE and relative mCE are not reported: they divide this model's errors by a reference "
                            "model's (AlexNet in Hendrycks & Dietterich); set +model@reference_model=<conf/model "
                            "name> to get them. mean_corruption_error is the unnormalised mean error."]
        return summary
    ref_acc = {k: float(v.float().mean()) for k, v in reference.items()}
    ref_clean_err = 1 - ref_acc["clean"]
    ce, rel = {}, {}
    for c, labels in by_corruption.items():
        e = sum(1 - acc[lb] for lb in labels)
        r = sum(1 - ref_acc[lb] for lb in labels)
        ce[c] = e / r if r > 0 else float("nan")
        dr = r - len(labels) * ref_clean_err
        rel[c] = (e - len(labels) * clean_err) / dr if dr > 0 else float("nan")
    summary["CE"], summary["relative_CE"] = ce, rel
    summary["mCE"] = sum(ce.values()) / len(ce)
    summary["relative_mCE"] = sum(rel.values()) / len(rel)
    notes = []
    if undefined := [c for c, v in ce.items() if math.isnan(v)]:
        notes.append(f"mCE is undefined (nan): the reference model makes no error under {undefined} "
                     f"(n={summary['n_scored']} images), so the ratio E_model / E_reference has no denominator")
    if undefined := [c for c, v in rel.items() if math.isnan(v)]:
        notes.append(f"relative mCE is undefined (nan): under {undefined} the reference model's error does not "
                     f"exceed its clean error ({ref_clean_err:.3f}; n={summary['n_scored']} images), so the ratio "
                     "of error increases has no positive denominator; use more images or a weaker reference")
    if notes:
        summary["notes"] = notes
    return summary


def flip_rows(correct: dict[str, torch.Tensor], names: list[str], scored: torch.Tensor | None = None,
              predictions: dict[str, torch.Tensor] | None = None,
              class_names: list[str] | None = None) -> list[dict[str, Any]]:
    """Per scored image: correct or not on the clean image and under each alteration (and, with ``predictions``,
    the predicted class beside each: ``<label>_pred``), and how many alterations flipped it."""
    rows = []
    labels = [k for k in correct if k != "clean"]
    name_of = (lambda c: class_names[c]) if class_names else (lambda c: c)
    for i, name in enumerate(names):
        if scored is not None and not scored[i]:
            continue
        row: dict[str, Any] = {"image": name, "clean": bool(correct["clean"][i])}
        if predictions is not None:
            row["clean_pred"] = name_of(int(predictions["clean"][i]))
        for k in labels:
            row[k] = bool(correct[k][i])
            if predictions is not None:
                row[f"{k}_pred"] = name_of(int(predictions[k][i]))
        row["flipped"] = sum(row["clean"] != row[k] for k in labels)
        rows.append(row)
    return rows
