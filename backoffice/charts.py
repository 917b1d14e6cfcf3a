"""Small charts drawn on the server as SVG strings: no JavaScript, no build step, nothing to load, and a picture
that prints and reads without hovering (axes labelled with values, a legend, the latest values written).

Pure functions of values (no database): the callers (``backoffice.chartdata``, ``backoffice.dashboard``) compute
the figures. A line's values arrive as they are (``Decimal`` money included) and become floats here only to place
points (``_coordinates``: display only, never money); a bar's height is a float already (a rate). Every
text in the picture (labels, the latest values) arrives as a string the caller formatted, exactly where it is
money, and goes in through ``format_html`` (escaped), so no data is ever marked safe unescaped.
"""
import math
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# Okabe-Ito: told apart by colour-blind readers too; the legend names each line anyway.
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"]
FONT = SafeString('font-family="sans-serif" font-size="11"')  # a constant of this module, never data
AXIS = "#888"


@dataclass(frozen=True)
class Series:
    """One line: a value per x (exact; drawn through ``_coordinates``) and its latest value written (``latest``)."""

    label: str
    values: list[Decimal]
    latest: str


@dataclass(frozen=True)
class Bar:
    """One bar: its height (float, for drawing), the text written on it, where it links and its tooltip."""

    value: float
    text: str
    href: str
    title: str
    count: int = 0


@dataclass(frozen=True)
class Stage:
    """A box of a pipeline: a state, how many are in it, a line under the count (e.g. the oldest), a link."""

    label: str
    count: int
    href: str
    note: str = ""
    terminal: bool = False


def _join(parts) -> SafeString:
    """Concatenate pieces that are already escaped (each built by ``format_html``)."""
    return format_html_join("", "{}", ((part,) for part in parts))


def _coordinates(values) -> list[float]:
    """Values as drawing coordinates: the one place a chart turns numbers (money among them) into floats."""
    return [float(value) for value in values]


def _n(value: float) -> str:
    """A coordinate as SVG text."""
    return f"{value:.1f}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten apart) covering ``low``..``high``, about ``count`` of them."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(high) * 0.05 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.5 and len(ticks) < 50:
        ticks.append(value)
        value += step
    if ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return ticks


def tick_label(value: float, ticks: list[float]) -> str:
    """A tick written with as many decimals as the step between ticks needs (and no "-0")."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    places = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    text = f"{value:,.{places}f}"
    return "0" if text.strip("-0.,") == "" else text


def _frame(*, width: int, height: int, title: str, body, chart_id: str, css_class: str) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" id="{}" class="chart {}" viewBox="0 0 {} {}" width="100%" '
        'style="max-width: {}px; height: auto;" role="img" aria-label="{}"><title>{}</title>{}</svg>',
        chart_id, css_class, width, height, width, title, title, body)


def _y_axis(ticks, y_of, left: float, right: float, y_label: str, top: float, bottom: float) -> SafeString:
    lines = []
    for tick in ticks:
        y = _n(y_of(tick))
        lines.append(format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>'
            '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle" {}>{}</text>',
            _n(left), y, _n(right), y, _n(left - 4), y, FONT, tick_label(tick, ticks)))
    middle = _n((top + bottom) / 2)
    lines.append(format_html(
        '<text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle" {}>{}</text>',
        middle, middle, FONT, y_label))
    return _join(lines)


def _x_labels(x_labels, x_of, y: float) -> SafeString:
    return format_html_join("", '<text x="{}" y="{}" text-anchor="{}" {}>{}</text>', (
        (_n(x_of(x)), _n(y), anchor, FONT, text)
        for x, text, anchor in x_labels))


def line_chart(*, chart_id: str, title: str, xs: list[float], series: list[Series], x_labels: list[tuple],
               y_label: str, width: int = 760, height: int = 240, step: bool = True) -> SafeString:
    """Lines over a shared x (e.g. unix seconds), with a y axis of round values, x labels (``(x, text, anchor)``
    triples, anchor "start", "middle" or "end") and a legend under the plot, each line with its latest value
    written. ``step``: a value holds until the next x (balances change at events, not in between)."""
    left, right, top = 84.0, width - 16.0, 12.0
    bottom = float(height - 28)
    legend_height = 18 * len(series) + 6
    drawn = [_coordinates(one.values) for one in series]
    all_values = [v for values in drawn for v in values if math.isfinite(v)] or [0.0]
    ticks = nice_ticks(min(all_values), max(all_values))
    low, high = ticks[0], ticks[-1]
    x_low, x_high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    x_span = (x_high - x_low) or 1.0

    def x_of(x):
        return left + (x - x_low) / x_span * (right - left) if x_high > x_low else (left + right) / 2

    def y_of(y):
        return bottom - (y - low) / ((high - low) or 1.0) * (bottom - top)

    parts = [_y_axis(ticks, y_of, left, right, y_label, top, bottom),
             format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}"/>', _n(left), _n(bottom), _n(right),
                         _n(bottom), AXIS),
             _x_labels(x_labels, x_of, bottom + 16)]
    for index, (one, values) in enumerate(zip(series, drawn)):
        colour = PALETTE[index % len(PALETTE)]
        points = []
        for i, (x, y) in enumerate(zip(xs, values)):
            if step and i:
                points.append((x_of(x), y_of(values[i - 1])))
            points.append((x_of(x), y_of(y)))
        if points:
            path = " ".join(f"{_n(px)},{_n(py)}" for px, py in points)
            parts.append(format_html('<polyline class="series" data-series="{}" points="{}" fill="none" '
                                     'stroke="{}" stroke-width="2"/>', one.label, path, colour))
            last_x, last_y = points[-1]
            parts.append(format_html('<circle cx="{}" cy="{}" r="3" fill="{}"/>', _n(last_x), _n(last_y), colour))
        legend_y = height + 14 + 18 * index
        parts.append(format_html(
            '<g class="legend"><rect x="{}" y="{}" width="14" height="4" fill="{}"/>'
            '<text x="{}" y="{}" {}>{}: <tspan class="latest" font-weight="bold">{}</tspan> (latest)</text></g>',
            _n(left), legend_y - 5, colour, _n(left + 20), legend_y, FONT, one.label, one.latest))
    return _frame(width=width, height=height + legend_height, title=title, body=_join(parts), chart_id=chart_id,
                  css_class="line-chart")


def bar_chart(*, chart_id: str, title: str, bars: list[Bar], x_labels: list[tuple], y_label: str,
              width: int = 760, height: int = 200) -> SafeString:
    """Bars side by side, each a link with its text written above it (when not zero) and a tooltip; x labels as
    for ``line_chart``, x being the bar's index (0 .. len(bars), its left edge)."""
    left, right, top = 56.0, width - 12.0, 16.0
    bottom = float(height - 26)
    ticks = nice_ticks(0.0, max([b.value for b in bars] + [1.0]))
    high = ticks[-1]
    slot = (right - left) / max(len(bars), 1)

    def y_of(y):
        return bottom - y / (high or 1.0) * (bottom - top)

    def x_of(index):
        return left + index * slot

    parts = [_y_axis(ticks, y_of, left, right, y_label, top, bottom)]
    for index, bar in enumerate(bars):
        x, y = x_of(index) + 1, y_of(bar.value)
        label = format_html('<text x="{}" y="{}" text-anchor="middle" font-family="sans-serif" font-size="9">{}</text>',
                            _n(x + (slot - 2) / 2), _n(y - 3), bar.text) if bar.value else ""
        parts.append(format_html(
            '<a href="{}"><g class="bar" data-count="{}"><title>{}</title>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="transparent"/>{}</g></a>',
            bar.href, bar.count, bar.title, _n(x), _n(y), _n(max(slot - 2, 1)), _n(bottom - y), PALETTE[0],
            _n(x), _n(top), _n(max(slot - 2, 1)), _n(bottom - top), label))  # the whole column is the link
    parts.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}"/>', _n(left), _n(bottom), _n(right),
                             _n(bottom), AXIS))
    parts.append(_x_labels(x_labels, x_of, bottom + 16))
    return _frame(width=width, height=height, title=title, body=_join(parts), chart_id=chart_id,
                  css_class="bar-chart")


def pipeline(*, chart_id: str, title: str, stages: list[Stage], width: int = 760) -> SafeString:
    """States as boxes in order, arrows between the ones on the way, the outcomes set apart; each box writes its
    count (and its note, e.g. the oldest waiting) and links to the list of settlements in that state."""
    flowing = [s for s in stages if not s.terminal]
    outcomes = [s for s in stages if s.terminal]
    gap, box_height = 14.0, 62.0
    box_width = (width - 2 - gap * (len(stages) - 1) - 24) / max(len(stages), 1)  # 1 each side: the stroke
    parts = []
    for index, stage in enumerate(flowing + outcomes):
        x = 1 + index * (box_width + gap) + (24 if stage.terminal else 0)
        waiting = stage.count and not stage.terminal
        parts.append(format_html(
            '<a href="{}" class="stage" data-state="{}" data-count="{}"><title>{}: {}</title>'
            '<rect x="{}" y="2" width="{}" height="{}" rx="4" fill="{}" stroke="{}"/>'
            '<text x="{}" y="18" text-anchor="middle" {}>{}</text>'
            '<text x="{}" y="40" text-anchor="middle" font-family="sans-serif" font-size="18" '
            'font-weight="bold">{}</text>'
            '<text x="{}" y="56" text-anchor="middle" font-family="sans-serif" font-size="9">{}</text></a>',
            stage.href, stage.label, stage.count, stage.label, stage.count,
            _n(x), _n(box_width), _n(box_height), "#fff3e0" if waiting else "#f5f5f5", AXIS,
            _n(x + box_width / 2), FONT, stage.label,
            _n(x + box_width / 2), stage.count, _n(x + box_width / 2), stage.note))
        if index < len(flowing) - 1:
            arrow_x = x + box_width
            parts.append(format_html('<path d="M{} {} l{} 0 m-4 -4 l4 4 l-4 4" fill="none" stroke="{}"/>',
                                     _n(arrow_x + 2), _n(2 + box_height / 2), _n(gap - 4), AXIS))
    return _frame(width=width, height=int(box_height + 6), title=title, body=_join(parts), chart_id=chart_id,
                  css_class="pipeline")
