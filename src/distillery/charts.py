"""Small, dependency-free SVG charts for the dashboard and the demo's HTML report.

Three functions, each returning one standalone ``<svg>`` element as a string that can be inlined into
HTML or written to a ``.svg`` file:

- ``bar_chart(series, title=...)``: grouped bars. ``series`` maps a series name (a model, a run)
  to ``{category: value}`` (a criterion, a metric); categories keep first-seen order. Each bar is
  labelled with its value; a value axis with gridlines and a legend are drawn.
- ``line_chart(points_by_series, title=...)``: lines over numeric x (loss curves). Each series is a
  sequence of ``(x, y)`` pairs.
- ``timeline_chart(lanes, items, title=...)``: events in order, one lane per kind, with shaded
  phases and marked moments (who answered each request of a route, through its phases).

Every chart carries an accessible ``<title>`` and ``<desc>`` (``role="img"``), escapes every label,
and uses a font stack that renders Japanese. This module is a leaf: it imports only the standard
library.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart", "line_chart", "timeline_chart"]

#: Series colours (Okabe-Ito, distinguishable with colour-vision deficiencies).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FONT_STACK = '"Noto Sans CJK JP", "Hiragino Sans", "Yu Gothic", Meiryo, system-ui, sans-serif'

_AXIS = "#555"
_GRID = "#ddd"


def _esc(text: object) -> str:
    return escape(str(text), quote=True)


def _num(value: float) -> str:
    """Coordinates with at most two decimals (short, deterministic output)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _default_format(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _tick_format(ticks: Sequence[float]) -> Callable[[float], str]:
    """Tick labels with as many decimals as the tick step needs (0, 0.25, 0.5 / 2, 4, 6)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > 1e-9:
        decimals += 1
    return lambda v: f"{v:,.{decimals}f}"


def nice_ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (about ``count`` of them); whole numbers only with
    ``integer`` (training steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, float(round(step)))
    first = math.floor(lo / step) * step
    ticks: list[float] = []
    value = first
    while value < hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _chart_id(kind: str, *parts: object) -> str:
    digest = hashlib.sha1(repr((kind, *parts)).encode("utf-8")).hexdigest()[:10]
    return f"{kind}-{digest}"


def _open_svg(chart_id: str, width: int, height: int, title: str, desc: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f"font-family='{FONT_STACK}' font-size=\"12\">",
        f'<title id="{chart_id}-title">{_esc(title)}</title>',
        f'<desc id="{chart_id}-desc">{_esc(desc)}</desc>',
        f'<text x="{width / 2:.0f}" y="18" text-anchor="middle" font-size="14" '
        f'font-weight="bold">{_esc(title)}</text>',
    ]


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = ['<g class="legend">']
    for i, name in enumerate(names):
        yy = y + i * 18
        colour = PALETTE[i % len(PALETTE)]
        out.append(
            f'<rect x="{_num(x)}" y="{_num(yy - 10)}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{_num(x + 18)}" y="{_num(yy)}">{_esc(name)}</text>'
        )
    out.append("</g>")
    return out


def _legend_width(names: Sequence[str]) -> float:
    # CJK glyphs are about twice as wide as Latin ones at the same size.
    longest = max((sum(2 if ord(c) > 0x2E7F else 1 for c in n) for n in names), default=0)
    return min(40 + longest * 7, 240)


def _value_axis(
    ticks: Sequence[float],
    scale: Callable[[float], float],
    left: float,
    right: float,
    fmt: Callable[[float], str],
    label: str | None,
    top: float,
    bottom: float,
) -> list[str]:
    out = ['<g class="axis y">']
    for t in ticks:
        y = scale(t)
        out.append(
            f'<line x1="{_num(left)}" x2="{_num(right)}" y1="{_num(y)}" y2="{_num(y)}" '
            f'stroke="{_GRID}"/>'
            f'<text x="{_num(left - 6)}" y="{_num(y + 4)}" text-anchor="end" fill="{_AXIS}">'
            f"{_esc(fmt(t))}</text>"
        )
    out.append(
        f'<line x1="{_num(left)}" x2="{_num(left)}" y1="{_num(top)}" y2="{_num(bottom)}" '
        f'stroke="{_AXIS}"/>'
    )
    if label:
        mid = (top + bottom) / 2
        out.append(
            f'<text x="14" y="{_num(mid)}" text-anchor="middle" fill="{_AXIS}" '
            f'transform="rotate(-90 14 {_num(mid)})">{_esc(label)}</text>'
        )
    out.append("</g>")
    return out


def bar_chart(
    series: Mapping[str, Mapping[str, float | None]],
    *,
    title: str,
    y_label: str | None = None,
    y_max: float | None = None,
    value_format: Callable[[float], str] | None = None,
    width: int = 640,
    height: int = 320,
) -> str:
    """Grouped bars: one group per category, one bar per series, each labelled with its value.

    ``series`` maps a series name to ``{category: value}``; ``None`` values are left out. ``y_max``
    fixes the top of the axis (``1.0`` for pass rates); otherwise it follows the data. Returns an
    ``<svg>`` string; with no data it is an empty chart that says so.
    """
    fmt = value_format or _default_format
    names = list(series)
    categories: list[str] = []
    for values in series.values():
        categories.extend(c for c in values if c not in categories)
    numbers = [
        float(v)
        for values in series.values()
        for v in values.values()
        if v is not None and math.isfinite(float(v))
    ]
    desc = "; ".join(
        f"{name}: "
        + ", ".join(
            f"{cat} {fmt(float(val))}" for cat, val in series[name].items() if val is not None
        )
        for name in names
    )
    chart_id = _chart_id("bar", title, desc)
    out = _open_svg(chart_id, width, height, title, desc or "no data")
    if not numbers or not categories:
        out.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="{_AXIS}">no data</text></svg>'
        )
        return "\n".join(out)

    legend_w = _legend_width(names)
    left, top, right, bottom = 56.0, 32.0, width - legend_w - 12, height - 48.0
    lo = min(0.0, *numbers)
    hi = max(0.0, *numbers) if y_max is None else max(y_max, *numbers)
    ticks = nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])

    def scale(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    tick_fmt = value_format or _tick_format(ticks)
    out += _value_axis(ticks, scale, left, right, tick_fmt, y_label, top, bottom)
    group_w = (right - left) / len(categories)
    bar_w = max(min(group_w * 0.8 / max(len(names), 1), 48.0), 2.0)
    zero = scale(0.0)
    out.append('<g class="bars">')
    for ci, cat in enumerate(categories):
        gx = left + ci * group_w + (group_w - bar_w * len(names)) / 2
        for si, name in enumerate(names):
            value = series[name].get(cat)
            if value is None or not math.isfinite(float(value)):
                continue
            v = float(value)
            x = gx + si * bar_w
            y0, y1 = sorted((zero, scale(v)))
            out.append(
                f'<rect x="{_num(x)}" y="{_num(y0)}" width="{_num(bar_w - 1)}" '
                f'height="{_num(max(y1 - y0, 0.5))}" fill="{PALETTE[si % len(PALETTE)]}">'
                f"<title>{_esc(name)} · {_esc(cat)}: {_esc(fmt(v))}</title></rect>"
            )
            label_y = y0 - 3 if v >= 0 else y1 + 11
            out.append(
                f'<text x="{_num(x + bar_w / 2)}" y="{_num(label_y)}" text-anchor="middle" '
                f'font-size="10">{_esc(fmt(v))}</text>'
            )
        out.append(
            f'<text x="{_num(left + (ci + 0.5) * group_w)}" y="{_num(bottom + 16)}" '
            f'text-anchor="middle">{_esc(cat)}</text>'
        )
    out.append("</g>")
    out.append(
        f'<line x1="{_num(left)}" x2="{_num(right)}" y1="{_num(zero)}" y2="{_num(zero)}" '
        f'stroke="{_AXIS}"/>'
    )
    out += _legend(names, right + 16, top + 10)
    out.append("</svg>")
    return "\n".join(out)


def line_chart(
    points_by_series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str = "step",
    y_label: str = "loss",
    value_format: Callable[[float], str] | None = None,
    width: int = 640,
    height: int = 320,
) -> str:
    """Lines over numeric x, one per series (``{"train_loss": [(step, loss), ...]}``).

    Points are drawn in x order; non-finite points are left out. A series with one point is drawn
    as a dot. Returns an ``<svg>`` string; with no data it is an empty chart that says so.
    """
    fmt = value_format or _default_format
    clean: dict[str, list[tuple[float, float]]] = {
        name: sorted(
            (float(x), float(y))
            for x, y in points
            if math.isfinite(float(x)) and math.isfinite(float(y))
        )
        for name, points in points_by_series.items()
    }
    names = [n for n, pts in clean.items() if pts]
    desc = "; ".join(
        f"{name}: {len(clean[name])} points, last {fmt(clean[name][-1][1])} "
        f"at {x_label} {fmt(clean[name][-1][0])}"
        for name in names
    )
    chart_id = _chart_id("line", title, desc)
    out = _open_svg(chart_id, width, height, title, desc or "no data")
    if not names:
        out.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="{_AXIS}">no data</text></svg>'
        )
        return "\n".join(out)

    legend_w = _legend_width(names)
    left, top, right, bottom = 56.0, 32.0, width - legend_w - 12, height - 48.0
    xs = [x for n in names for x, _ in clean[n]]
    ys = [y for n in names for _, y in clean[n]]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    y_ticks = nice_ticks(min(ys), max(ys))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    if y_hi == y_lo:
        y_hi = y_lo + 1

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    def sy(y: float) -> float:
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    y_fmt = value_format or _tick_format(y_ticks)
    out += _value_axis(y_ticks, sy, left, right, y_fmt, y_label, top, bottom)
    out.append('<g class="axis x">')
    x_ticks = nice_ticks(x_lo, x_hi, 6, integer=all(float(x).is_integer() for x in xs))
    x_fmt = _tick_format(x_ticks)
    for t in x_ticks:
        if t < x_lo or t > x_hi:
            continue
        out.append(
            f'<line x1="{_num(sx(t))}" x2="{_num(sx(t))}" y1="{_num(bottom)}" '
            f'y2="{_num(bottom + 4)}" stroke="{_AXIS}"/>'
            f'<text x="{_num(sx(t))}" y="{_num(bottom + 16)}" text-anchor="middle" '
            f'fill="{_AXIS}">{_esc(x_fmt(t))}</text>'
        )
    out.append(
        f'<line x1="{_num(left)}" x2="{_num(right)}" y1="{_num(bottom)}" y2="{_num(bottom)}" '
        f'stroke="{_AXIS}"/>'
        f'<text x="{_num((left + right) / 2)}" y="{_num(bottom + 34)}" text-anchor="middle" '
        f'fill="{_AXIS}">{_esc(x_label)}</text></g>'
    )
    out.append('<g class="lines">')
    for si, name in enumerate(names):
        colour = PALETTE[si % len(PALETTE)]
        pts = clean[name]
        if len(pts) == 1:
            x, y = pts[0]
            out.append(
                f'<circle cx="{_num(sx(x))}" cy="{_num(sy(y))}" r="3" fill="{colour}">'
                f"<title>{_esc(name)}: {_esc(fmt(y))}</title></circle>"
            )
            continue
        path = " ".join(f"{_num(sx(x))},{_num(sy(y))}" for x, y in pts)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{_esc(name)}</title></polyline>"
        )
    out.append("</g>")
    out += _legend(names, right + 16, top + 10)
    out.append("</svg>")
    return "\n".join(out)


def timeline_chart(
    lanes: Sequence[str],
    items: Sequence[str],
    *,
    title: str,
    bands: Sequence[tuple[int, str]] = (),
    marks: Sequence[tuple[int, str]] = (),
    x_label: str = "request",
    width: int = 720,
    height: int | None = None,
) -> str:
    """Events in order, one row (lane) per kind: ``items[i]`` is the lane of the i-th event
    (who answered the i-th request: ``teacher``, ``student``, ``fallback``), drawn as a tick in
    its lane's colour. ``bands`` shade stretches of the x axis, each ``(first index, label)`` up
    to the next band (a route's phases); ``marks`` are dashed lines ``(index, label)`` (a gate
    decision, a rollback). Lanes with no item are still drawn, so an empty lane says *none*."""
    n = len(items)
    counts = {lane: sum(1 for item in items if item == lane) for lane in lanes}
    desc = f"{n} {x_label}s; " + ", ".join(f"{lane}: {counts[lane]}" for lane in lanes)
    if bands:
        desc += "; phases: " + ", ".join(label for _, label in bands)
    if marks:
        desc += "; events: " + ", ".join(f"{label} at {x_label} {i + 1}" for i, label in marks)
    lane_h = 28.0
    left, top = 84.0, 52.0
    bottom = top + lane_h * max(len(lanes), 1)
    height = height or int(bottom + 64)
    right = width - 16.0
    chart_id = _chart_id("timeline", title, desc)
    out = _open_svg(chart_id, width, height, title, desc)
    if n == 0:
        out.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="{_AXIS}">no data</text></svg>'
        )
        return "\n".join(out)

    def sx(index: float) -> float:
        return left + index / n * (right - left)

    out.append('<g class="bands">')
    starts = sorted((max(0, min(i, n)), label) for i, label in bands)
    for k, (start, label) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else n
        if end <= start:
            continue
        shade = "#f3f6fa" if k % 2 == 0 else "#e6edf5"
        out.append(
            f'<rect x="{_num(sx(start))}" y="{_num(top - 16)}" width="{_num(sx(end) - sx(start))}" '
            f'height="{_num(bottom - top + 16)}" fill="{shade}"><title>{_esc(label)}: '
            f"{x_label}s {start + 1}-{end}</title></rect>"
            f'<text x="{_num((sx(start) + sx(end)) / 2)}" y="{_num(top - 4)}" '
            f'text-anchor="middle" fill="{_AXIS}">{_esc(label)}</text>'
        )
    out.append("</g>")
    out.append('<g class="lanes">')
    tick = max(1.0, min(6.0, (right - left) / n - 0.5))
    for li, lane in enumerate(lanes):
        y = top + li * lane_h
        colour = PALETTE[li % len(PALETTE)]
        out.append(
            f'<text x="{_num(left - 8)}" y="{_num(y + lane_h / 2 + 4)}" text-anchor="end">'
            f"{_esc(lane)} ({counts[lane]})</text>"
        )
        for i, item in enumerate(items):
            if item == lane:
                out.append(
                    f'<rect x="{_num(sx(i + 0.5) - tick / 2)}" y="{_num(y + 6)}" '
                    f'width="{_num(tick)}" height="{_num(lane_h - 12)}" fill="{colour}"/>'
                )
    out.append("</g>")
    out.append('<g class="marks">')
    for k, (index, label) in enumerate(sorted(marks)):
        x = sx(max(0, min(index, n)))
        y = bottom + 28 + (k % 2) * 14  # alternate rows so close labels do not overlap
        # a label at either end of the axis runs inwards, so it is not cut off
        anchor = "end" if x > right - 60 else "start" if x < left + 60 else "middle"
        out.append(
            f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{_num(top - 16)}" y2="{_num(y - 10)}" '
            f'stroke="#D55E00" stroke-dasharray="4 3"/>'
            f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" fill="#D55E00">'
            f"{_esc(label)}</text>"
        )
    out.append("</g>")
    out.append(
        f'<g class="axis x"><line x1="{_num(left)}" x2="{_num(right)}" y1="{_num(bottom)}" '
        f'y2="{_num(bottom)}" stroke="{_AXIS}"/>'
        f'<text x="{_num(left)}" y="{_num(bottom + 14)}" fill="{_AXIS}">1</text>'
        f'<text x="{_num(right)}" y="{_num(bottom + 14)}" text-anchor="end" fill="{_AXIS}">'
        f"{n} {_esc(x_label)}s</text></g>"
    )
    out.append("</svg>")
    return "\n".join(out)
