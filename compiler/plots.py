"""The report's figures as PNG bytes: a training curve and a sweep's Pareto panels.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot, so
no global backend or state) under matplotlib's default style (a user's
matplotlibrc cannot change them), at a fixed size and dpi, with no
"Software" entry in the PNG metadata: the same data gives the same bytes.
The caller writes the bytes through `slmc.writer`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

DPI = 100
LOSS_SIZE = (7.5, 4.2)      # inches at DPI
PARETO_SIZE = (12.0, 5.0)
LOSS_COLOUR, EVAL_COLOUR = "tab:blue", "tab:orange"
BOUND_COLOUR, MEASURED_COLOUR = "tab:blue", "tab:green"


def _render(draw, size: tuple[float, float]) -> bytes:
    """Run `draw(figure)` on a fresh Agg figure and return the PNG bytes."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"), matplotlib.rc_context({"font.size": 9}):
        figure = Figure(figsize=size, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _plain(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:g}"


def _label_rank(x: float) -> int:
    """Which ticks to label first: powers of ten, then 5s, 2s, 3s, the rest."""
    mantissa = round(x / 10 ** math.floor(math.log10(x) + 1e-9))
    return {1: 0, 5: 1, 2: 2, 3: 3}.get(mantissa, 4)


def _log_ticks(axis) -> None:
    """A tick at every 1..9 × 10^k, labelled as plain numbers (4,000, not 4×10³), and only as
    many labels as fit: at most about 8, at least 1/8 of the axis apart, powers of ten first."""
    from matplotlib.ticker import Formatter, LogLocator, NullFormatter, NullLocator

    class Labels(Formatter):
        def __call__(self, x, pos=None):
            return _plain(x)

        def format_ticks(self, values):
            low, high = sorted(self.axis.get_view_interval())
            if low <= 0:
                return [_plain(v) for v in values]
            gap = math.log10(high / low) / 8
            shown = sorted((v for v in values if low <= v <= high and v > 0), key=lambda v: (_label_rank(v), v))
            chosen: list[float] = []
            for v in shown:
                if all(abs(math.log10(v / c)) >= gap for c in chosen):
                    chosen.append(v)
            return [_plain(v) if v in chosen else "" for v in values]

    axis.set_major_locator(LogLocator(subs=tuple(range(1, 10))))
    axis.set_major_formatter(Labels())
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def loss_curve(steps: Sequence[int], losses: Sequence[float], eval_steps: Sequence[int],
               eval_ppl: Sequence[float], title: str) -> bytes:
    """Training loss (left axis) and held-out perplexity (right axis, log scale) against step."""

    def draw(figure) -> None:
        ax = figure.add_subplot()
        handles = ax.plot(steps, losses, color=LOSS_COLOUR, marker="." if len(steps) < 40 else None,
                          linewidth=1.4, label="training loss")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (cross-entropy, nats)", color=LOSS_COLOUR)
        ax.tick_params(axis="y", colors=LOSS_COLOUR)
        ax.grid(True, alpha=0.3)
        if eval_steps:
            right = ax.twinx()
            handles += right.plot(eval_steps, eval_ppl, color=EVAL_COLOUR, marker="o", markersize=4,
                                  linewidth=1.2, label="eval perplexity (log scale)")
            right.set_yscale("log")
            _log_ticks(right.yaxis)
            right.set_ylabel("eval perplexity", color=EVAL_COLOUR)
            right.tick_params(axis="y", which="both", colors=EVAL_COLOUR)
        ax.legend(handles=handles, loc="upper right", frameon=True)
        ax.set_title(title, fontsize=9)

    return _render(draw, LOSS_SIZE)


@dataclass(frozen=True)
class ParetoPoint:
    """One sweep run as the Pareto panels draw it (None: not available, not drawn)."""

    label: str
    size: float               # bundle size in the panels' unit (pareto_panels' size_unit)
    ppl: float | None
    bound_tps: float | None
    measured_tps: float | None
    on_size_front: bool
    on_bound_front: bool
    on_measured_front: bool


def _front_line(ax, xs: list[float], ys: list[float], *, colour: str, style: str, maximize_x: bool) -> None:
    """The staircase bounding the region the front dominates, in order of x."""
    if not xs:
        return
    order = sorted(zip(xs, ys))
    ax.step([x for x, _ in order], [y for _, y in order], where="pre" if maximize_x else "post", color=colour,
            linestyle=style, linewidth=1.1, alpha=0.8)


def _annotate(ax, drawn, x_of) -> None:
    """One label per visually coincident group of points ("cpu/fp32, jetson/fp32")."""
    groups: dict[tuple[str, str], list] = {}
    for p in drawn:
        groups.setdefault((f"{x_of(p):.3g}", f"{p.ppl:.6g}"), []).append(p)
    for members in groups.values():
        first = members[0]
        ax.annotate(", ".join(p.label for p in members), (x_of(first), first.ppl), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)


def _scatter(ax, points, x_of, front_of, *, colour: str, marker: str, label: str, annotate: bool,
             maximize_x: bool) -> None:
    drawn = [p for p in points if x_of(p) is not None and p.ppl is not None]
    if not drawn:
        return
    on = [p for p in drawn if front_of(p)]
    off = [p for p in drawn if not front_of(p)]
    ax.scatter([x_of(p) for p in on], [p.ppl for p in on], color=colour, marker=marker, s=42, zorder=3,
               label=f"{label}, Pareto-optimal")
    if off:
        ax.scatter([x_of(p) for p in off], [p.ppl for p in off], facecolors="none", edgecolors=colour,
                   marker=marker, s=42, zorder=3, label=label)
    _front_line(ax, [x_of(p) for p in on], [p.ppl for p in on], colour=colour,
                style="-" if annotate else "--", maximize_x=maximize_x)
    if annotate:
        _annotate(ax, drawn, x_of)


def _empty(ax, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="grey")


def pareto_panels(points: Sequence[ParetoPoint], title: str, size_unit: str = "MB") -> bytes:
    """Left: bundle size vs perplexity. Right: decode tokens/s (device bound, measured here) vs perplexity."""

    def draw(figure) -> None:
        size_ax, speed_ax = figure.subplots(1, 2)
        _scatter(size_ax, points, lambda p: p.size, lambda p: p.on_size_front, colour=BOUND_COLOUR,
                 marker="o", label="run", annotate=True, maximize_x=False)
        size_ax.set_xlabel(f"bundle size ({size_unit}, log scale) — smaller is better")
        size_ax.set_title("size vs held-out perplexity (line: Pareto front)")
        _scatter(speed_ax, points, lambda p: p.bound_tps, lambda p: p.on_bound_front, colour=BOUND_COLOUR,
                 marker="o", label="bound on the device", annotate=True, maximize_x=True)
        _scatter(speed_ax, points, lambda p: p.measured_tps, lambda p: p.on_measured_front,
                 colour=MEASURED_COLOUR, marker="s", label="measured here", annotate=False, maximize_x=True)
        for p in points:  # tie each run's two speeds together
            if p.bound_tps is not None and p.measured_tps is not None and p.ppl is not None:
                speed_ax.plot([p.measured_tps, p.bound_tps], [p.ppl, p.ppl], color="grey", linewidth=0.6,
                              alpha=0.6, zorder=1)
        speed_ax.set_xlabel("decode tokens/s at batch 1 (log scale) — larger is better")
        speed_ax.set_title("decode speed vs held-out perplexity (lines: Pareto fronts)")
        for ax in (size_ax, speed_ax):
            if not ax.collections:
                _empty(ax, "no run has both numbers")
                continue
            ax.set_xscale("log")
            _log_ticks(ax.xaxis)
            ax.set_ylabel("held-out perplexity — lower is better")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        figure.suptitle(title, fontsize=10)

    return _render(draw, PARETO_SIZE)
