"""The evaluate task's corruption figures: accuracy per corruption × severity (rows in ImageNet-C's noise / blur /
weather / digital order), accuracy per corruption beside the clean accuracy, and a gallery of the very corrupted
tensors the model classified, each with its prediction."""

from __future__ import annotations

from typing import Any

from xai_bench import viz
from xai_bench.robustness.corruption_eval import CorruptionRun, corruption_group, group_order, split_label
from xai_bench.tasks.common import RunContext

__all__ = ["corruption_figures"]

_GALLERY_COLS = 5  # custom (severity-free) alterations per gallery row


def corruption_figures(ctx: RunContext, summary: dict[str, Any], run: CorruptionRun, names: list[str],
                       class_names: list[str], model_name: str) -> None:
    """Write ``corruption_heatmap`` (graded corruptions), ``corruption_accuracy`` and ``corruption_gallery[_<i>]``."""
    acc = summary["accuracy"]
    head = (f"{model_name} · {summary['suite']} (n={summary['n_scored']}, clean accuracy "
            f"{summary['clean_accuracy']:.1%})")
    graded = group_order(list(dict.fromkeys(split_label(k)[0] for k in acc if split_label(k)[1] is not None)))
    sevs = sorted({s for k in acc if (s := split_label(k)[1]) is not None})
    custom = [k for k in acc if split_label(k)[1] is None and k != "clean"]
    if graded:
        grid = [[acc.get(f"{c}/{s}", float("nan")) for s in sevs] for c in graded]
        ctx.figure("corruption_heatmap", viz.corruption_heatmap(
            grid, graded, sevs, groups=[corruption_group(c) for c in graded], title=head))
    labels = graded + custom
    if labels:
        values = [summary["corruption_accuracy"][c] for c in graded] + [acc[k] for k in custom]
        groups = [corruption_group(c) for c in graded] + ["custom"] * len(custom)
        sub = f"\naccuracy per corruption, mean over severities {', '.join(map(str, sevs))}" if graded else ""
        ctx.figure("corruption_accuracy", viz.corruption_bars(labels, values, groups=groups,
                                                              clean=summary["clean_accuracy"], title=head + sub))
    for i in range(len(run.examples.get("clean", []))):
        ctx.figure("corruption_gallery" if i == 0 else f"corruption_gallery_{i}",
                   _gallery(run, i, names[i], graded, sevs, custom, class_names, model_name, summary["suite"]))


def _gallery(run: CorruptionRun, i: int, name: str, graded: list[str], sevs: list[int], custom: list[str],
             class_names: list[str], model_name: str, suite: str) -> Any:
    scored = bool(run.scored[i])

    def cell(label: str, caption: str | None = None) -> tuple[Any, str]:
        pred = int(run.predictions["model"][label][i])
        mark = (" ✓" if run.correct["model"][label][i] else " ✗") if scored else ""
        short = class_names[pred].split(",")[0]
        return run.examples[label][i], f"{caption + ': ' if caption else ''}{short}{mark}"

    clean = cell("clean")
    ncols = len(sevs) if graded else min(_GALLERY_COLS, max(len(custom), 1))
    rows: list[tuple[str, list[tuple[Any, str] | None]]] = [(c, [clean] + [cell(f"{c}/{s}") for s in sevs])
                                                           for c in graded]
    for start in range(0, len(custom), ncols):
        chunk = [cell(k, k) for k in custom[start:start + ncols]]
        rows.append(("custom" if start == 0 else "", [clean] + chunk + [None] * (ncols - len(chunk))))
    return viz.corruption_gallery(
        [[c[0] if c else None for c in cells] for _, cells in rows], [r for r, _ in rows],
        ["clean"] + ([f"severity {s}" for s in sevs] if graded else [""] * ncols),
        [[c[1] if c else None for c in cells] for _, cells in rows],
        title=f"{model_name} · {suite} · image {name!r}: prediction under each corruption"
              + (" (✓ correct, ✗ wrong)" if scored else ""))
