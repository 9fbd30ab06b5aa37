"""`hba inspect`: a schedule drawn in the terminal and as a PNG, in panels that fit its space.

Over 400 lines on purpose: the terminal and PNG renderings share their scales, ticks and
labels, so the two pictures say the same thing.

A space with the augmentation policy (hba) is drawn as the paper's Figure 4:

(a) the sum over the 24 op copies with a magnitude of the normalised magnitude
    (m − lo)/(hi − lo), per epoch, as a line plot (braille dots);
(b) every op copy's probability per epoch as a heat map (one row per op copy, epochs resampled
    to the available columns by averaging).
Short tables follow: provenance, and the five most probable op copies at the start, middle and
end of training.

A space of scalars (stn) gets one heat map per kind of scalar ((a) augmentation, (b) dropout),
a row per scalar: its value per epoch as a fraction (v − lo)/(hi − lo) of its range, since the
scalars' units differ. Tables follow: provenance, and every scalar's value in its unit at the
start, middle and end of training (a discrete one also as the whole number it is used as).

Drawing is pure (schedule → rich renderables, schedule → PIL image); ``inspect_schedule`` only
loads, prints and writes. The terminal drawing takes the console's width, at most 80 columns
and at least ``MIN_WIDTH`` (36); a narrower console gets a one-line note instead of the drawing.
The PNG uses Pillow alone.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich import box
from rich.console import Console, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

from . import space
from .errors import HbaError
from .files import atomic_write_bytes
from .schedule import VERSION_1_SPACE, Schedule, load_schedule, stretch_positions
from .spaces import KINDS, floor_discrete

MAX_WIDTH = 80
LABEL_WIDTH = 14  # "AutoContrast#0"
MARGIN = LABEL_WIDTH + 2  # label, space, axis character
MIN_COLUMNS = 20  # the fewest plot columns worth drawing (10 epochs each for 200 epochs)
MIN_WIDTH = MARGIN + MIN_COLUMNS
LINE_ROWS = 8  # height of the line plot in characters (4 braille dots each)
SHADES = " ░▒▓█"  # heat map without colour, lightest to darkest
TOP_N = 5
PANEL_A = f"sum of normalised magnitudes (m-lo)/(hi-lo), {space.NUM_MAGNITUDES} copies"
PANEL_B = "probability of each op copy per epoch"
PANEL_SCALARS = "{kind} scalars per epoch, fraction (v-lo)/(hi-lo) of each range"
PANEL_LETTERS = "abcdefgh"
RANGE_WIDTH = 60  # the scalars' table shows their ranges from this width on

# A perceptually ordered colour map (viridis' endpoints and three stops between).
COLORMAP_STOPS = np.array([
    [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
], dtype=np.float64)

# Rows of the heat map: Table 7 order, the two copies of each op side by side.
HEATMAP_ORDER: tuple[int, ...] = tuple(
    i for op in space.OPS for i, oc in enumerate(space.OP_COPIES) if oc.op is op
)


# ---------------------------------------------------------------------------------------------
# What is drawn


def normalised_magnitude_sum(schedule: Schedule) -> np.ndarray:
    """(epochs,) sum over the op copies with a magnitude of (m − lo)/(hi − lo): Figure 4(a)."""
    index = space.MAGNITUDE_COPY_INDEX
    low = np.array([space.OP_COPIES[i].op.low for i in index])
    high = np.array([space.OP_COPIES[i].op.high for i in index])
    return ((schedule.magnitudes()[:, index] - low) / (high - low)).sum(axis=1)


def bin_means(values: np.ndarray, bins: int) -> np.ndarray:
    """Average ``values`` (epochs, ...) over ``bins`` equal spans of epochs (repeat if fewer)."""
    epochs = values.shape[0]
    edges = np.linspace(0, epochs, bins + 1)
    starts = np.minimum(np.floor(edges[:-1]).astype(int), epochs - 1)
    ends = np.maximum(np.ceil(edges[1:]).astype(int), starts + 1)
    return np.stack([values[a:b].mean(axis=0) for a, b in zip(starts, ends)])


def probability_scale(schedule: Schedule) -> float:
    """Top of the heat map's scale: the largest probability, rounded up to a multiple of 0.05."""
    return heat_scale(schedule.probabilities())


def heat_scale(values: np.ndarray) -> float:
    """Top of a heat map's scale: the largest value, rounded up to a multiple of 0.05, so that
    a search that stays near its start (0.05) still shows its changes."""
    top = float(values.max())
    return max(0.05, float(np.ceil(top / 0.05 - 1e-9) * 0.05))


def scalar_groups(schedule: Schedule) -> list[tuple[str, list[int]]]:
    """(kind, indices into the space's scalars) for each kind the space has, in KINDS order:
    one panel each."""
    scalars = schedule.search_space.scalars
    groups = [(kind, [i for i, s in enumerate(scalars) if s.kind == kind]) for kind in KINDS]
    return [(kind, indices) for kind, indices in groups if indices]


def scalar_fractions(schedule: Schedule) -> np.ndarray:
    """(epochs, scalars) each scalar's value as the fraction (v − lo)/(hi − lo) of its range."""
    scalars = schedule.search_space.scalars
    low = np.array([s.low for s in scalars])
    high = np.array([s.high for s in scalars])
    values = np.stack(list(schedule.scalar_values().values()), axis=1)
    return (values - low) / (high - low)


def colormap(fractions: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB, (...,) → (..., 3)."""
    x = np.clip(fractions, 0, 1) * (len(COLORMAP_STOPS) - 1)
    low = np.minimum(np.floor(x).astype(int), len(COLORMAP_STOPS) - 2)
    t = (x - low)[..., None]
    rgb = COLORMAP_STOPS[low] * (1 - t) + COLORMAP_STOPS[low + 1] * t
    return np.round(rgb).astype(np.uint8)


def top_ops(probabilities: np.ndarray, n: int = TOP_N) -> list[tuple[str, float]]:
    """The ``n`` most probable op copies of one epoch, most probable first."""
    order = np.argsort(-probabilities, kind="stable")[:n]
    return [(space.OP_COPIES[i].label, float(probabilities[i])) for i in order]


def key_epochs(epochs: int) -> dict[str, int]:
    return {"start": 0, "middle": epochs // 2, "end": epochs - 1}


def nice_step(span: float, target: int = 4) -> float:
    """The step of 1, 2 or 5 × 10^k nearest (in ratio) to ``span`` / ``target``."""
    raw = max(span, 1e-12) / target
    power = 10 ** np.floor(np.log10(raw))
    return float(min((m * power for m in (1, 2, 5, 10)), key=lambda step: abs(np.log(step / raw))))


def nice_ticks(low: float, high: float, target: int = 4) -> np.ndarray:
    """Round values between ``low`` and ``high`` (inclusive) for axis labels."""
    step = nice_step(high - low, target)
    first = np.ceil(low / step - 1e-9)
    return np.arange(first, high / step + 1e-9) * step + 0.0  # + 0.0 turns -0.0 into 0.0


def tick_label(value: float, step: float) -> str:
    decimals = max(0, int(-np.floor(np.log10(step) + 1e-9)))
    return f"{value:.{decimals}f}"


def epoch_ticks(epochs: int, columns: int) -> list[tuple[int, int]]:
    """(column, epoch) pairs for the epoch axis: round epochs, and the last one."""
    if epochs == 1:
        return [(0, 0)]
    last = epochs - 1
    step = max(1, round(nice_step(last)))
    marks = list(range(0, last + 1, step))
    if last - marks[-1] > step / 2:
        marks.append(last)
    return [(round(e / last * (columns - 1)), e) for e in marks]


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# ---------------------------------------------------------------------------------------------
# Terminal


def braille_rows(values: np.ndarray, rows: int, low: float, high: float) -> list[str]:
    """A line through ``values`` (one per dot column, 2 per character) as braille text rows."""
    dots_y = rows * 4
    span = high - low if high > low else 1.0
    levels = np.round((values - low) / span * (dots_y - 1)).astype(int).clip(0, dots_y - 1)
    cells = np.zeros((rows, (len(values) + 1) // 2), dtype=np.int64)
    # Bit of the dot in (column within cell, row within cell from the top), Unicode braille.
    bits = np.array([[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]])
    previous = levels[0]
    for x, level in enumerate(levels):
        # Fill from next to the previous dot up to this one, so that steep parts stay connected.
        step = 1 if level >= previous else -1
        span_levels = range(previous + step, level + step, step) if level != previous else [level]
        for y in span_levels:
            from_top = dots_y - 1 - y
            cells[from_top // 4, x // 2] |= bits[x % 2, from_top % 4]
        previous = level
    return ["".join(chr(0x2800 + int(c)) if c else " " for c in row) for row in cells]


def axis_labels(ticks: list[tuple[int, int]], columns: int) -> str:
    """Epoch numbers under their tick columns, skipping any that would collide."""
    line = [" "] * (columns + 6)
    last_end = -2
    for column, epoch in ticks:
        label = str(epoch)
        start = min(max(column - len(label) // 2, 0), columns - len(label))
        if start <= last_end + 1:
            continue
        line[start:start + len(label)] = label
        last_end = start + len(label) - 1
    return "".join(line).rstrip()


def epoch_axis(epochs: int, columns: int) -> Text:
    ticks = epoch_ticks(epochs, columns)
    rule = ["─"] * columns
    for column, _ in ticks:
        rule[column] = "┬"
    text = Text(" " * (MARGIN - 1) + "└" + "".join(rule) + "\n", style="dim")
    text.append(f"{'epoch':>{LABEL_WIDTH}}  " + axis_labels(ticks, columns), style="dim")
    return text


def magnitude_panel(schedule: Schedule, width: int) -> Text:
    columns = width - MARGIN
    series = normalised_magnitude_sum(schedule)
    dense = np.interp(stretch_positions(schedule.epochs, 2 * columns),
                      np.arange(schedule.epochs), series)
    low, high = float(series.min()), float(series.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    rows = braille_rows(dense, LINE_ROWS, low, high)
    middle = LINE_ROWS // 2
    dots = 4 * LINE_ROWS - 1  # dot levels above the lowest
    middle_value = low + (dots - (4 * middle + 1.5)) / dots * (high - low)  # centre of that row
    labelled = {0: high, middle: middle_value, LINE_ROWS - 1: low}
    text = Text()
    text.append("(a) ", style="bold")
    text.append(PANEL_A + "\n")
    for r, row in enumerate(rows):
        if r in labelled:
            text.append(f"{labelled[r]:>{LABEL_WIDTH}.2f} ┤", style="dim")
        else:
            text.append(" " * (LABEL_WIDTH + 1) + "│", style="dim")
        text.append(row + "\n", style="cyan")
    text.append_text(epoch_axis(schedule.epochs, columns))
    return text


def heatmap_panel(schedule: Schedule, width: int, colour: bool) -> Text:
    probs = schedule.probabilities()[:, list(HEATMAP_ORDER)]
    labels = [space.OP_COPIES[i].label for i in HEATMAP_ORDER]
    return heatmap("b", PANEL_B, labels, probs, probability_scale(schedule), "probability",
                   width, colour)


def scalar_panel(schedule: Schedule, letter: str, kind: str, indices: list[int], width: int,
                 colour: bool) -> Text:
    """One kind's scalars, a heat-map row each (see the module docstring)."""
    fractions = scalar_fractions(schedule)[:, indices]
    labels = [schedule.search_space.scalars[i].name for i in indices]
    return heatmap(letter, PANEL_SCALARS.format(kind=kind), labels, fractions,
                   heat_scale(fractions), "fraction", width, colour)


def heatmap(letter: str, title: str, labels: list[str], values: np.ndarray, top: float,
            scale_label: str, width: int, colour: bool) -> Text:
    """A labelled row per column of ``values`` (epochs, rows), shaded from 0 to ``top``, with
    the epoch axis and the legend."""
    columns = width - MARGIN
    fractions = bin_means(values, columns) / top  # (columns, rows)
    text = Text()
    text.append(f"({letter}) ", style="bold")
    text.append(title + "\n")
    for row, label in enumerate(labels):
        text.append(f"{label:>{LABEL_WIDTH}}  ", style="dim")
        text.append_text(shade_cells(fractions[:, row], colour))
        text.append("\n")
    text.append_text(epoch_axis(values.shape[0], columns))
    text.append("\n")
    text.append_text(legend(top, colour, width, scale_label))
    return text


def shade_cells(fractions: np.ndarray, colour: bool) -> Text:
    if not colour:
        levels = np.minimum((np.clip(fractions, 0, 1) * len(SHADES)).astype(int), len(SHADES) - 1)
        return Text("".join(SHADES[k] for k in levels))
    cells = Text()
    for r, g, b in colormap(fractions):
        cells.append("█", style=Style(color=f"rgb({r},{g},{b})"))
    return cells


def legend(top: float, colour: bool, width: int = MAX_WIDTH, label: str = "probability") -> Text:
    """The heat map's scale: a colour bar from 0 to ``top``, or what each shade stands for.

    Fits ``width`` columns: the bar shortens, the shades continue on further lines.
    """
    text = Text()
    text.append(f"{label:>{LABEL_WIDTH}}  ", style="dim")
    room = width - MARGIN
    if colour:
        end = f" {top:.2f}"
        bar_width = max(4, min(24, room - 2 - len(end)))
        text.append("0 ", style="dim")
        text.append_text(shade_cells((np.arange(bar_width) + 0.5) / bar_width, colour))
        text.append(end, style="dim")
        return text
    bounds = np.arange(1, len(SHADES)) * top / len(SHADES)
    entries = [f"blank <{bounds[0]:.2f}"] + [f"{shade} ≥{bound:.2f}"
                                             for shade, bound in zip(SHADES[1:], bounds)]
    used = 0
    for entry in entries:
        if used and used + 2 + len(entry) > room:
            text.append("\n" + " " * MARGIN)
            used = 0
        text.append(("  " if used else "") + entry, style="dim")
        used += (2 if used else 0) + len(entry)
    return text


def provenance_table(schedule: Schedule) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False,
                  title="provenance", title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    prov = schedule.provenance
    rows: list[tuple[str, str]] = [("epochs", str(schedule.epochs))]
    if prov is not None:
        if prov.epochs is not None and prov.epochs != schedule.epochs:
            rows[0] = ("epochs", f"{schedule.epochs} (searched over {prov.epochs})")
        sizes = [f"{n} {what}" for n, what in ((prov.train_size, "train"), (prov.val_size, "val"))
                 if n is not None]
        dataset = prov.dataset + (f" ({', '.join(sizes)})" if sizes else "")
        rows = [("dataset", dataset), ("model", prov.model or "?"),
                ("strategy", prov.strategy or "?"), *rows]
        if prov.search_seconds is not None:
            rows.append(("search time", format_duration(prov.search_seconds)))
        if prov.device:
            rows.append(("device", prov.device))
        if prov.note:
            rows.append(("note", prov.note))
    else:
        rows.append(("provenance", "none recorded"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def top_ops_table(schedule: Schedule) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), pad_edge=False,
                  title=f"top {TOP_N} op copies by probability", title_justify="left")
    table.add_column("#", justify="right", style="dim")
    probs = schedule.probabilities()
    ranked = {}
    for name, epoch in key_epochs(schedule.epochs).items():
        table.add_column(f"{name} (epoch {epoch})")
        ranked[name] = top_ops(probs[epoch])
    for rank in range(min(TOP_N, space.NUM_OP_COPIES)):
        table.add_row(str(rank + 1), *(f"{ranked[k][rank][0]:<14} {ranked[k][rank][1]:.2f}"
                                       for k in ranked))
    return table


def scalar_table(schedule: Schedule, width: int = MAX_WIDTH) -> Table:
    """Every scalar in its unit at the start, middle and end, grouped as the panels. Names stay
    whole; in a narrow terminal (under ``RANGE_WIDTH``) the ranges make way for the values,
    and the short headers (the epochs are in the title) help too."""
    epochs = key_epochs(schedule.epochs)
    title = ("scalars at the start (epoch {start}), middle ({middle}) and end ({end})"
             .format(**epochs))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), pad_edge=False,
                  title=title, title_justify="left")
    table.add_column("scalar", style="dim", no_wrap=True)
    ranges = width >= RANGE_WIDTH
    if ranges:
        table.add_column("range")
    for name in epochs:
        table.add_column(name, justify="right")
    values = list(schedule.scalar_values().values())
    for _, indices in scalar_groups(schedule):
        for i in indices:
            scalar = schedule.search_space.scalars[i]
            cells = [_scalar_value(values[i][epoch], scalar.discrete)
                     for epoch in epochs.values()]
            limits = [f"[{scalar.low:g}, {scalar.high:g}]"] if ranges else []
            table.add_row(scalar.name, *limits, *cells)
    return table


def _scalar_value(value: float, discrete: bool) -> str:
    """A discrete scalar is used as floor(value): show that number too."""
    text = f"{value:.3g}"
    return f"{text} (used {floor_discrete(value)})" if discrete else text


def title_parts(schedule: Schedule, title: str) -> list[str]:
    """The file name, then what the schedule is for (its space unless the usual hba), for the
    heading."""
    prov = schedule.provenance
    about = [] if prov is None else [prov.dataset, *([prov.model] if prov.model else [])]
    named = [] if schedule.space_name == VERSION_1_SPACE else [f"{schedule.space_name} space"]
    return [title, *about, *named, f"{schedule.epochs} epoch{'s' if schedule.epochs != 1 else ''}"]


def schedule_renderables(schedule: Schedule, title: str, width: int = MAX_WIDTH,
                         colour: bool = True) -> list[RenderableType]:
    """Everything ``hba inspect`` prints, laid out for ``width`` columns."""
    first, *rest = title_parts(schedule, title)
    header = Text()
    header.append(first, style="bold")
    header.append("".join(f"  ·  {part}" for part in rest), style="dim")
    if schedule.search_space.policy:
        panels = [magnitude_panel(schedule, width), heatmap_panel(schedule, width, colour)]
        summary = top_ops_table(schedule)
    else:
        panels = [scalar_panel(schedule, letter, kind, indices, width, colour)
                  for letter, (kind, indices) in zip(PANEL_LETTERS, scalar_groups(schedule))]
        summary = scalar_table(schedule, width)
    renderables: list[RenderableType] = [header]
    for part in [*panels, provenance_table(schedule), summary]:
        renderables += [Text(), part]
    return renderables


# ---------------------------------------------------------------------------------------------
# PNG


PNG_WIDTH = 1000
PNG_PAD = 20
PNG_LABEL_W = 130
PNG_LINE_H = 240
PNG_ROW_H = 16
PNG_SCALAR_ROW_H = 24  # a scalar space has a few rows per panel: taller ones read better
PNG_BAR_W = 16
INK = (40, 40, 40)
GRID = (225, 225, 225)
LINE = (33, 113, 181)


PNG_PLOT_X0 = PNG_PAD + PNG_LABEL_W
PNG_PLOT_X1 = PNG_WIDTH - PNG_PAD - PNG_BAR_W - 60
PNG_PANEL_GAP = 50 + 28  # below a panel: its epoch axis; above the next: its title


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_png(schedule: Schedule, title: str) -> Image.Image:
    """The terminal's panels as a picture: Figure 4 for the hba space, the scalars' heat maps
    otherwise."""
    if schedule.search_space.policy:
        return _policy_png(schedule, title)
    return _scalar_png(schedule, title)


def _policy_png(schedule: Schedule, title: str) -> Image.Image:
    """Figure 4: (a) the magnitude sum above (b) the probability heat map."""
    font, small, bold = _font(14), _font(12), _font(16)
    plot_x0, plot_x1 = PNG_PLOT_X0, PNG_PLOT_X1
    plot_w = plot_x1 - plot_x0
    heat_h = PNG_ROW_H * space.NUM_OP_COPIES
    a_top = PNG_PAD + 30 + 28
    b_top = a_top + PNG_LINE_H + PNG_PANEL_GAP
    height = b_top + heat_h + 50 + PNG_PAD
    image = Image.new("RGB", (PNG_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((PNG_PAD, PNG_PAD), "  ·  ".join(title_parts(schedule, title)), fill=INK, font=bold)

    # (a) line plot
    draw.text((PNG_PAD, a_top - 26), f"(a) {PANEL_A}", fill=INK, font=font)
    series = normalised_magnitude_sum(schedule)
    low, high = float(series.min()), float(series.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    pad = 0.08 * (high - low)
    low, high = low - pad, high + pad

    def y_of(v: float) -> float:
        return a_top + (high - v) / (high - low) * PNG_LINE_H

    y_step = nice_step(high - low, 6)
    for v in nice_ticks(low, high, 6):
        y = y_of(v)
        draw.line([(plot_x0, y), (plot_x1, y)], fill=GRID)
        label = tick_label(v, y_step)
        draw.text((plot_x0 - 8 - draw.textlength(label, font=small), y - 7), label, fill=INK,
                  font=small)
    draw.rectangle([plot_x0, a_top, plot_x1, a_top + PNG_LINE_H], outline=INK)
    values = series if schedule.epochs > 1 else np.repeat(series, 2)  # a flat line for 1 epoch
    xs = np.linspace(plot_x0, plot_x1, len(values))
    draw.line([(x, y_of(v)) for x, v in zip(xs, values)], fill=LINE, width=3, joint="curve")
    _png_epoch_axis(draw, schedule.epochs, plot_x0, plot_w, a_top + PNG_LINE_H, small)

    # (b) heat map
    probs = schedule.probabilities()[:, list(HEATMAP_ORDER)]  # (epochs, 30 rows)
    labels = [space.OP_COPIES[i].label for i in HEATMAP_ORDER]
    _png_heatmap(image, draw, f"(b) {PANEL_B}", labels, probs, probability_scale(schedule),
                 b_top, PNG_ROW_H)
    return image


def _scalar_png(schedule: Schedule, title: str) -> Image.Image:
    """A heat map per kind of scalar, as in the terminal."""
    groups = scalar_groups(schedule)
    fractions = scalar_fractions(schedule)
    tops = [PNG_PAD + 30 + 28]
    for _, indices in groups:
        tops.append(tops[-1] + PNG_SCALAR_ROW_H * len(indices) + PNG_PANEL_GAP)
    image = Image.new("RGB", (PNG_WIDTH, tops[-1] - 28 + PNG_PAD), "white")
    draw = ImageDraw.Draw(image)
    draw.text((PNG_PAD, PNG_PAD), "  ·  ".join(title_parts(schedule, title)), fill=INK,
              font=_font(16))
    for letter, (kind, indices), top in zip(PANEL_LETTERS, groups, tops):
        values = fractions[:, indices]
        labels = [schedule.search_space.scalars[i].name for i in indices]
        _png_heatmap(image, draw, f"({letter}) {PANEL_SCALARS.format(kind=kind)}", labels,
                     values, heat_scale(values), top, PNG_SCALAR_ROW_H)
    return image


def _png_heatmap(image: Image.Image, draw: ImageDraw.ImageDraw, heading: str, labels: list[str],
                 values: np.ndarray, top: float, y: int, row_h: int) -> None:
    """A titled heat map at ``y``: a labelled row per column of ``values`` (epochs, rows), one
    pixel column per epoch stretched to the plot, with its epoch axis and colour bar."""
    small = _font(12)
    plot_w = PNG_PLOT_X1 - PNG_PLOT_X0
    heat_h = row_h * len(labels)
    draw.text((PNG_PAD, y - 26), heading, fill=INK, font=_font(14))
    cells = Image.fromarray(colormap(values.T / top))  # one pixel per (row, epoch)
    image.paste(cells.resize((plot_w, heat_h), Image.Resampling.NEAREST), (PNG_PLOT_X0, y))
    for row, label in enumerate(labels):
        draw.text((PNG_PLOT_X0 - 8 - draw.textlength(label, font=small),
                   y + row * row_h + (row_h - 14) / 2), label, fill=INK, font=small)
    draw.rectangle([PNG_PLOT_X0, y, PNG_PLOT_X1, y + heat_h], outline=INK)
    _png_epoch_axis(draw, values.shape[0], PNG_PLOT_X0, plot_w, y + heat_h, small)
    _png_colour_bar(image, draw, top, PNG_PLOT_X1 + 20, y, heat_h, small)


def _png_epoch_axis(draw: ImageDraw.ImageDraw, epochs: int, x0: int, width: int, y: int,
                    font) -> None:
    for column, epoch in epoch_ticks(epochs, width + 1):
        x = x0 + column
        draw.line([(x, y), (x, y + 5)], fill=INK)
        label = str(epoch)
        draw.text((x - draw.textlength(label, font=font) / 2, y + 7), label, fill=INK, font=font)
    label = "epoch"
    draw.text((x0 + width / 2 - draw.textlength(label, font=font) / 2, y + 24), label, fill=INK,
              font=font)


def _png_colour_bar(image: Image.Image, draw: ImageDraw.ImageDraw, top: float, x: int, y: int,
                    height: int, font) -> None:
    fractions = np.linspace(1, 0, height)[:, None].repeat(PNG_BAR_W, axis=1)
    image.paste(Image.fromarray(colormap(fractions)), (x, y))
    draw.rectangle([x, y, x + PNG_BAR_W, y + height], outline=INK)
    step = nice_step(top, 5)
    for v in nice_ticks(0, top, 5):
        ty = y + (1 - v / top) * height
        draw.line([(x + PNG_BAR_W, ty), (x + PNG_BAR_W + 4, ty)], fill=INK)
        draw.text((x + PNG_BAR_W + 6, ty - 7), tick_label(v, step), fill=INK, font=font)


# ---------------------------------------------------------------------------------------------
# I/O


def inspect_schedule(path: str | Path, png: str | Path | None = None,
                     console: Console | None = None) -> None:
    """Print the schedule at ``path`` as Figure 4 (+ tables); also write it as a PNG if asked."""
    schedule = load_schedule(path)
    console = console or Console()
    width = min(console.width, MAX_WIDTH)
    colour = console.color_system is not None and not console.no_color
    if width < MIN_WIDTH:
        console.print(f"too narrow to draw: {width} columns, needs {MIN_WIDTH} (or use --png)",
                      overflow="fold")
    else:
        for renderable in schedule_renderables(schedule, str(path), width, colour):
            console.print(renderable, width=width)
    if png is not None:
        write_png(render_png(schedule, str(path)), png)
        console.print(f"wrote {png}")


def write_png(image: Image.Image, path: str | Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise HbaError(f"cannot write {path}: {exc.strerror or exc}") from None
