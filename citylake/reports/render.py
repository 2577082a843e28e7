"""A report as HTML (figures embedded) or Markdown (figures as PNG files beside it)."""

from __future__ import annotations

import base64
import html
import zoneinfo
from pathlib import Path

import polars as pl

from citylake.analytics.report import Report

STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.note,.meta{color:#666;font-size:13px}img{max-width:100%}")
TABLE_ROWS = 50  # rows of a section's table a report shows


def to_html(report: Report, figures: dict[str, bytes], /) -> str:
    parts = [f"<h1>{html.escape(report.name)}</h1>", f"<p class=meta>{html.escape(_meta(report))}</p>", "<h2>Headline</h2><table>"]
    parts += [f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{html.escape(v)}</td></tr>" for k, v in _headline(report)]
    parts.append("</table>")
    for title, png in figures.items():
        embedded = base64.b64encode(png).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{embedded}'>")
    for title, table, note in report.sections:
        parts.append(f"<h2>{html.escape(title)}</h2>" + (f"<p class=note>{html.escape(note)}</p>" if note else ""))
        parts.append(_html_table(table))
    return f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(report.name)}</title><style>{STYLE}</style></head>" \
           f"<body>{''.join(parts)}</body></html>"


def to_markdown(report: Report, figures: dict[str, bytes], out: Path, /) -> str:
    """The Markdown text; writes each figure as ``<out stem>-figure-N.png`` beside ``out``."""
    lines = [f"# {report.name}", "", _meta(report), "", "## Headline", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in _headline(report)]
    for i, (title, png) in enumerate(figures.items()):
        name = f"{out.stem}-figure-{i + 1}.png"
        (out.parent / name).write_bytes(png)
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    for title, table, note in report.sections:
        lines += ["", f"## {title}", ""] + ([note, ""] if note else [])
        if table is None or table.is_empty():
            lines.append("None.")
            continue
        lines += ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
        lines += ["| " + " | ".join(_text(v).replace("|", "/") for v in row) + " |" for row in table.head(TABLE_ROWS).rows()]
    return "\n".join(lines) + "\n"


def _headline(report: Report) -> list[tuple[str, str]]:
    """The headline's figures as text; events that could not be judged say why, never "None"."""
    shown = {**report.headline}
    if shown.get("events") is None and "events" in shown:
        shown["events"] = f"not judged: {shown.get('history')}"
    return [(k, str(v)) for k, v in shown.items()]


def _meta(report: Report) -> str:
    start, end = (t.astimezone(zoneinfo.ZoneInfo(report.timezone)).isoformat() if t else None for t in (report.start, report.end))
    return (f"{report.place_id} · {start or 'all data'} → {end or 'latest'} · times in {report.timezone} · "
            f"k-anonymity k = {report.k}")


def _html_table(table: pl.DataFrame | None) -> str:
    if table is None or table.is_empty():
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>" for row in table.head(TABLE_ROWS).rows())
    return f"<table><tr>{head}</tr>{rows}</table>"


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value else f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)
