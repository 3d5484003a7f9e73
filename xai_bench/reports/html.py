"""The report as one self-contained HTML file: figures embedded as base64 PNG, styles inline, no script and no
external asset, so it opens from a mail attachment, an artifact store or a machine with no network. Also the
Markdown form of a table (for the README, a pull request or a terminal)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["Section", "markdown_table", "render_html"]

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1b1b1b;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555}.ok{color:#1a7f37}.failed,.interrupted{color:#c62828;font-weight:600}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}th,td{border:1px solid #d6d6d6;padding:3px 7px;
text-align:left;vertical-align:top}td:first-child{max-width:380px;overflow-wrap:anywhere}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#444;font-size:13px}
pre{background:#f7f7f7;border:1px solid #e2e2e2;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
details{margin:6px 0}summary{cursor:pointer;color:#0b57d0}.scroll{overflow-x:auto;max-width:100%}
"""

_MAX_ROWS_SHOWN = 60  # longer tables are folded (<details>); the CSV beside the report holds them whole


class Section:
    """A titled part of the report: text, figures (``(caption, png bytes)``) and tables (``(title, rows)``)."""

    def __init__(self, title: str, text: str = "") -> None:
        self.title, self.text = title, text
        self.figures: list[tuple[str, bytes]] = []
        self.tables: list[tuple[str, list[dict[str, Any]]]] = []
        self.pre: list[tuple[str, str]] = []


def render_html(title: str, meta: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole page."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    out += [f'<p class="meta">{m}</p>' for m in meta]
    for s in sections:
        out.append(f"<h2>{_e(s.title)}</h2>")
        if s.text:
            out.append(f"<p>{s.text}</p>")
        for label, text in s.pre:
            out.append(f"<p><b>{_e(label)}</b></p><pre>{_e(text)}</pre>")
        for caption, png in s.figures:
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_e(caption)}</figcaption></figure>")
        for name, rows in s.tables:
            # a section with figures shows them first and folds its tables (the figures are drawn from them)
            out.append(_html_table(name, rows, fold=bool(s.figures) or len(rows) > _MAX_ROWS_SHOWN))
    out.append("</body></html>")
    return "\n".join(out)


def _html_table(name: str, rows: list[dict[str, Any]], fold: bool) -> str:
    if not rows:
        return ""
    cols = _columns(rows)
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)

    def tr(r: dict[str, Any]) -> str:
        cells = []
        for c in cols:
            v = r.get(c)
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else (
                f' class="{_e(v)}"' if c == "status" else "")
            cells.append(f"<td{cls}>{_e(_cell(v))}</td>")
        return "<tr>" + "".join(cells) + "</tr>"

    body = "".join(tr(r) for r in rows)
    table = f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if fold:
        return f"<details><summary>table · {_e(name)} ({len(rows)} rows)</summary>{table}</details>"
    return f"<p><b>{_e(name)}</b></p>{table}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in values escaped); empty string for no rows."""
    if not rows:
        return ""
    cols = _columns(rows)

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    num = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows
               if r.get(c) is not None) for c in cols]
    out = [line(cols), "|" + "|".join("---:" if n else "---" for n in num) + "|"]
    out += [line([_cell(r.get(c)) for c in cols]) for r in rows]
    return "\n".join(out) + "\n"


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    return cols


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)
