"""Self-contained HTML pages: tables, and plots inlined as base64 PNGs, so a report opens in any browser
with no network and no files beside it.

Figures are made without pyplot (`matplotlib.figure.Figure` renders to PNG by itself): no global
figure state, no backend to choose at import time, nothing left open. Every layer that writes a page
(data reports, run reports, compare, search, cross-validation) builds on this module alone.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from matplotlib.figure import Figure

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}
td.text{text-align:left;white-space:pre-wrap;vertical-align:top;max-width:30em}h2{border-bottom:1px solid #ddd;margin-top:2em}
img{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:1em}pre{background:#f6f6f6;padding:1em;overflow:auto}"""


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs):
    """(figure, axes) as pyplot.subplots gives them, on a figure pyplot does not track."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def png(fig: Figure) -> str:
    """The figure as an <img> with its PNG inlined."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; floats shown with 4 decimals, everything escaped."""

    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(
    path: Path, *, title: str, facts: dict[str, str], sections: list[tuple[str, str]], config_text: str
) -> Path:
    """A page: its facts table, the sections (heading, html) in order, and the resolved config."""
    facts_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items()
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<h2>Run</h2><table>{facts_rows}</table>",
        *(f"<h2>{html.escape(heading)}</h2>{body}" for heading, body in sections),
        "<h2>Resolved config</h2>",
        f"<pre>{html.escape(config_text)}</pre>",
        "</body></html>",
    ]
    path.write_text("".join(parts), encoding="utf-8")
    return path
