"""A :class:`~agentplex.sim.Comparison` drawn: a PNG with matplotlib (the ``analysis``
extra), or one self-contained HTML page whose charts are inline SVG written here (no
script, nothing fetched) with a table of the values per round under each chart."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from ..tracing.lowlevel import html_page
from ._compare import Comparison, Series

__all__ = ["PALETTE", "comparison_html", "write_png"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
"""Series colours, in order (matplotlib's ``tab10``): the PNG and the page agree."""


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def write_png(comparison: Comparison, path: str | Path, *, width: int = 900,
              metric_height: int = 300, dpi: int = 100) -> Path:
    """Draw each metric of ``comparison`` per round, one chart under the other, into a PNG
    of ``width`` x ``metric_height`` per metric pixels: a line per run or arm, and an
    arm's 95 % interval as a band of its colour."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:  # pragma: no cover - the analysis extra
        raise ImportError("a PNG needs matplotlib: pip install 'agentplex[analysis]'"
                          ) from exc
    metrics = list(comparison.metrics)
    fig = Figure(figsize=(width / dpi, metric_height * len(metrics) / dpi), dpi=dpi,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics, strict=True):
        for i, s in enumerate(comparison.metrics[metric]):
            ax.plot(s.rounds, s.values, marker="o", markersize=3, color=_color(i),
                    label=s.label)
            if s.band:
                assert s.low is not None and s.high is not None
                ax.fill_between(s.rounds, [math.nan if v is None else v for v in s.low],
                                [math.nan if v is None else v for v in s.high],
                                color=_color(i), alpha=0.2, linewidth=0)
        ax.set_title(metric, loc="left", fontsize="medium")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    target = Path(path)
    fig.savefig(target, dpi=dpi, format="png")
    return target


def _ticks(lo: float, hi: float, count: int = 5) -> tuple[float, float, list[float]]:
    """A range holding ``lo``..``hi`` with round tick values (1, 2 or 5 x 10^k apart)."""
    if not hi > lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first, last = math.floor(lo / step) * step, math.ceil(hi / step) * step
    ticks = [first + k * step for k in range(round((last - first) / step) + 1)]
    return first, last, ticks


def _label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:,.{decimals}f}" if abs(value) < 1e6 else f"{value:.3g}"


def _svg(metric: str, series: Sequence[Series], rounds: list[int]) -> str:
    w, h, left, right, top, bottom = 720, 260, 64, 16, 14, 36
    values = [v for s in series for v in (*s.values, *(s.low or ()), *(s.high or ()))
              if v is not None]
    y0, y1, yticks = _ticks(min(values), max(values))
    x0, x1 = rounds[0], rounds[-1]

    def x(r: float) -> float:
        return left + (w - left - right) * ((r - x0) / (x1 - x0) if x1 > x0 else 0.5)

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - (v - y0) / (y1 - y0))

    parts = []
    step = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    for t in yticks:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                     f'stroke="#e6e6e6"/><text x="{left - 6}" y="{y(t) + 4:.1f}" '
                     f'text-anchor="end">{_label(t, step)}</text>')
    every = max(1, math.ceil(len(rounds) / 12))
    for r in rounds[::every]:
        parts.append(f'<text x="{x(r):.1f}" y="{h - bottom + 16}" text-anchor="middle">'
                     f"{r}</text>")
    parts.append(f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" '
                 'stroke="#999"/>')
    parts.append(f'<text x="{(left + w - right) / 2}" y="{h - 4}" text-anchor="middle">'
                 "round</text>")
    for i, s in enumerate(series):  # the bands first: every line is drawn over them
        if s.band and s.low is not None and s.high is not None:
            for seg in _segments(s):
                upper = [f"{x(s.rounds[k]):.1f},{y(s.high[k] or 0):.1f}" for k in seg]
                lower = [f"{x(s.rounds[k]):.1f},{y(s.low[k] or 0):.1f}" for k in seg[::-1]]
                parts.append(f'<polygon class="band" fill="{_color(i)}" fill-opacity="0.2" '
                             f'points="{" ".join(upper + lower)}"><title>'
                             f"{html.escape(s.label)}: 95 % interval</title></polygon>")
    for i, s in enumerate(series):
        color, label = _color(i), html.escape(s.label)
        points = " ".join(f"{x(r):.1f},{y(v):.1f}" for r, v in zip(s.rounds, s.values,
                                                                     strict=True))
        parts.append(f'<polyline class="series" fill="none" stroke="{color}" '
                     f'stroke-width="2" points="{points}"><title>{label}</title></polyline>')
        for k, (r, v) in enumerate(zip(s.rounds, s.values, strict=True)):
            parts.append(f'<circle cx="{x(r):.1f}" cy="{y(v):.1f}" r="3" fill="{color}">'
                         f"<title>{label}, round {r}: {_cell(s, k)}</title></circle>")
    return (f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            f'role="img" aria-label="{html.escape(metric)} per round">{"".join(parts)}</svg>')


def _segments(s: Series) -> list[list[int]]:
    """Runs of consecutive points that have an interval."""
    out: list[list[int]] = []
    assert s.low is not None and s.high is not None
    for k in range(len(s.rounds)):
        if s.low[k] is None or s.high[k] is None:
            continue
        if out and out[-1][-1] == k - 1:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def _number(value: float) -> str:
    return f"{value:,.6g}" if abs(value) < 1e15 else f"{value:.6g}"


def _cell(s: Series, k: int) -> str:
    text = _number(s.values[k])
    if s.low is not None and s.high is not None and s.n is not None:
        lo, hi = s.low[k], s.high[k]
        if lo is not None and hi is not None:
            text += f" [{_number(lo)}, {_number(hi)}]"
        text += f" n={s.n[k]}"
    return text


def _table(series: Sequence[Series], rounds: list[int]) -> str:
    head = "".join(f'<th><span class="key" style="background:{_color(i)}"></span>'
                   f"{html.escape(s.label)}</th>" for i, s in enumerate(series))
    index = [dict(zip(s.rounds, range(len(s.rounds)), strict=True)) for s in series]
    rows = []
    for r in rounds:
        cells = "".join(f"<td>{_cell(s, at[r]) if r in at else '-'}</td>"
                        for s, at in zip(series, index, strict=True))
        rows.append(f"<tr><td>{r}</td>{cells}</tr>")
    return (f'<table><thead><tr><th>round</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def comparison_html(comparison: Comparison, title: str = "agentplex comparison") -> str:
    """One self-contained HTML page: per metric an SVG chart (a line per run or arm, an
    arm's 95 % interval as a band) and a table of its values per round."""
    sections = []
    for metric, series in comparison.metrics.items():
        rounds = comparison.rounds(metric)
        legend = "".join(f'<span class="item"><span class="key" style="background:'
                         f'{_color(i)}"></span>{html.escape(s.label)}</span>'
                         for i, s in enumerate(series))
        sections.append(f'<section><h2>{html.escape(metric)}</h2>'
                        f'<div class="legend">{legend}</div>{_svg(metric, series, rounds)}'
                        f"{_table(series, rounds)}</section>")
    banded = any(s.band for ss in comparison.metrics.values() for s in ss)
    note = (" A sweep arm's line is its mean across seeds; its band and the bracketed "
            "figures are the 95 % interval (Student's t), n the seeds counted."
            if banded else "")
    body = (f"<h1>{html.escape(title)}</h1><p class=\"meta\">"
            f"{html.escape(', '.join(comparison.sources))}.{note}</p>{''.join(sections)}")
    return html_page(title, body, _CSS, width=1000)


_CSS = """\
.legend .item{margin-right:14px;white-space:nowrap}
.key{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
table{margin-top:6px}
"""
