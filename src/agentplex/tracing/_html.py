"""The frame of agentplex's self-contained HTML pages (a run's trace page, a comparison
of runs): one head, one base style sheet; each page adds the rules of its own parts."""

from __future__ import annotations

import html

__all__ = ["html_page"]

_BASE_CSS = """\
body{font:13px/1.45 system-ui,sans-serif;margin:0 auto;max-width:__WIDTH__px;padding:12px 20px;
color:#222}
h1{font-size:18px;margin:4px 0}h2{font-size:15px;margin:22px 0 4px}
.meta{color:#555;margin:0 0 6px}
.note{color:#666;margin:0 0 6px;font-size:12px}
.chart{display:block;margin:8px 0;font-size:11px;fill:#555}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:2px 10px;border-bottom:1px solid #e5e5e5;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4;font-weight:600}
"""


def html_page(title: str, body: str, css: str = "", *, width: int = 1100) -> str:
    """A whole HTML document: ``title`` (plain text, escaped here), ``body`` (HTML), the
    base style sheet (``width``: the page's widest, in CSS pixels) and ``css``, the
    page's own rules."""
    style = _BASE_CSS.replace("__WIDTH__", str(width)) + css
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title>\n<style>\n{style}</style></head>"
            f"<body>{body}</body></html>\n")
