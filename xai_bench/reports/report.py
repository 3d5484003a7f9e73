"""``xai-report <run or sweep dir>``: every job's ``results.json`` under a folder → one table and one HTML report.

Writes into the folder:

- ``report.html`` — one self-contained page (figures embedded as PNG, no external asset): failed jobs with their
  errors and log tails first, the runs table, then each figure whose data some job holds: training curves,
  accuracy vs ε across models and attacks, methods × metrics heat map and ranking, corruption × severity heat map,
  ensemble accuracy and uncertainty ranking;
- ``report/runs.csv`` — the one table, a row per job (swept values as columns); ``report/report.md`` — every table
  in Markdown with links to the figures; ``report/<table>.csv`` per kind of result and ``report/figures/*.png``.

With a tracker (a :class:`~xai_bench.tracking.WandbTracker` started by the caller), every table is also logged as a
W&B table (``report/<name>``) and every figure as an image.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from xai_bench.reports import tables as T
from xai_bench.reports.collect import Job, collect_jobs, swept_keys
from xai_bench.reports.figures import report_figures
from xai_bench.reports.html import Section, markdown_table, render_html
from xai_bench.tracking import Tracker
from xai_bench.utils import atomic_path

__all__ = ["HTML_NAME", "REPORT_DIR", "build_tables", "write_report"]

log = logging.getLogger(__name__)

HTML_NAME = "report.html"
REPORT_DIR = "report"
_DPI = 110  # embedded figures: sharp on screen, a few hundred KB for a whole study

# table name → (section title, what the table holds)
_SECTIONS = {
    "training": ("Training", "Per-epoch history of each train job."),
    "attack": ("Adversarial robustness", "Accuracy under attack per ε (attack jobs)."),
    "metrics": ("Explanation metrics", "Mean ± standard error over images per method × metric (explain jobs)."),
    "ranking": ("Explanation metrics", "Methods ranked by their median rank over the metrics (LATEC style)."),
    "corruption": ("Corruptions", "Accuracy per corruption × severity (evaluate jobs with a corruption suite)."),
    "ensemble_accuracy": ("Ensembles", "Top-1 / top-5 of each member and combination."),
    "uncertainty": ("Ensembles", "Images ranked from most to least certain (predictive entropy)."),
}
_FIGURE_SECTION = {"training": "training", "accuracy": "attack", "metrics": "metrics", "corruption": "corruption",
                   "ensemble": "ensemble_accuracy", "uncertainty": "uncertainty"}


def build_tables(jobs: list[Job]) -> dict[str, list[dict[str, Any]]]:
    """Every table of the report: ``runs`` always, the others when some job holds their data (empty lists)."""
    swept = swept_keys(jobs)
    return {"runs": T.runs_table(jobs, swept), "training": T.training_rows(jobs, swept),
            "attack": T.attack_rows(jobs, swept), "metrics": T.metric_rows(jobs, swept),
            "ranking": T.ranking_rows(jobs, swept), "corruption": T.corruption_rows(jobs, swept),
            "ensemble_accuracy": T.ensemble_accuracy_rows(jobs, swept), "uncertainty": T.uncertainty_rows(jobs, swept)}


def write_report(root: str | Path, *, tracker: Tracker | None = None, title: str | None = None) -> dict[str, Path]:
    """Gather every job under ``root`` and write the report files listed in the module docstring.

    Args:
        root: a run folder, a sweep folder (``hydra.sweep.dir``) or a folder of either (the demo's).
        tracker: a started tracker to log the tables and figures to (``None``: files only).
        title: the page title (default: ``xai-bench report · <folder name>``).

    Returns:
        ``{"html", "csv", "md"}`` and one ``<table>_csv`` per non-empty table, all paths.

    Raises:
        NoResultsError: ``root`` holds no job.
    """
    root = Path(root).resolve()
    jobs = collect_jobs(root)
    tables = build_tables(jobs)
    out = root / REPORT_DIR
    written: dict[str, Path] = {}
    for name, rows in tables.items():
        if rows or name == "runs":
            written["csv" if name == "runs" else f"{name}_csv"] = _write_csv(out / f"{name}.csv", rows)

    figures: list[tuple[str, str, bytes]] = []
    notes: list[str] = []
    for key, caption, draw in report_figures(tables):
        try:
            fig = draw()
        except Exception as exc:  # one figure's odd data must not cost the whole report; its table still holds it
            log.warning("[report] figure %s not drawn: %s: %s", key, type(exc).__name__, exc)
            notes.append(f"figure <code>{key}</code> not drawn ({_esc(type(exc).__name__)}: {_esc(exc)}); its "
                         "table is below")
            continue
        png = _png(fig)
        _write_bytes(out / "figures" / f"{key}.png", png)
        figures.append((key, caption, png))
    failed = [j for j in jobs if not j.ok]
    title = title or f"xai-bench report · {root.name}"
    sections = _sections(jobs, failed, tables, figures)
    meta = [f"{len(jobs)} job(s) under <code>{_esc(root)}</code>: {len(jobs) - len(failed)} finished, "
            f"<span class=\"{'failed' if failed else 'ok'}\">{len(failed)} failed or unfinished</span>",
            f"written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by xai-report; tables as CSV in "
            f"<code>{REPORT_DIR}/</code>", *notes]
    written["html"] = root / HTML_NAME
    _write_bytes(written["html"], render_html(title, meta, sections).encode("utf-8"))
    written["md"] = _write_bytes(out / "report.md", _markdown(title, tables, figures).encode("utf-8"))
    if tracker is not None:
        for name, rows in tables.items():
            if rows:
                tracker.log_table(f"report/{name}", rows)
        for key, caption, _ in figures:
            tracker.log_image(f"report/{key}", out / "figures" / f"{key}.png", caption)
        tracker.summary({"jobs": len(jobs), "failed_jobs": len(failed)})
    for j in failed:
        log.warning("[report] job %s %s: %s", j.name, j.status, (j.error or "no error recorded").strip()
                    .splitlines()[-1])
    log.info("[report] %d job(s), %d failed → %s", len(jobs), len(failed), written["html"])
    return written


def _sections(jobs: list[Job], failed: list[Job], tables: dict[str, list[dict[str, Any]]],
              figures: list[tuple[str, str, bytes]]) -> list[Section]:
    sections: dict[str, Section] = {}
    if failed:
        s = sections.setdefault("failed", Section(f"Failed jobs ({len(failed)})",
                                                  "These jobs did not finish; their results are not in the figures."))
        s.tables.append(("failed jobs", [{"job": j.name, "task": j.task, "status": j.status,
                                          "error": (j.error or "").strip()} for j in failed]))
        for j in failed:
            if j.log_tail:
                s.pre.append((f"{j.name}: last lines of its log", j.log_tail))
    runs = sections.setdefault("runs", Section("Runs", "One row per job; the columns after <i>status</i> are the "
                                                       "values the sweep varied."))
    runs.tables.append(("runs", tables["runs"]))
    for key, caption, png in figures:
        kind = next(v for k, v in _FIGURE_SECTION.items() if key.startswith(k))
        title = _SECTIONS[kind][0]
        sections.setdefault(title, Section(title)).figures.append((caption, png))
    for name, rows in tables.items():
        if name == "runs" or not rows:
            continue
        title, what = _SECTIONS[name]
        sections.setdefault(title, Section(title)).tables.append((f"{name}: {what}", rows))
    return list(sections.values())


def _markdown(title: str, tables: dict[str, list[dict[str, Any]]], figures: list[tuple[str, str, bytes]]) -> str:
    parts = [f"# {title}\n"]
    parts += [f"![{caption}](figures/{key}.png)\n" for key, caption, _ in figures]
    for name, rows in tables.items():
        if rows or name == "runs":
            parts.append(f"## {name}\n\n{markdown_table(rows)}")
    return "\n".join(parts)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", pad_inches=0.05)
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=cols or ["job"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _esc(v: Any) -> str:
    import html

    return html.escape(str(v))
