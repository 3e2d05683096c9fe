"""Render a comparison as one PNG (matplotlib's Agg canvas, no pyplot global state).

Panels: validation loss and accuracy against epoch and against elapsed seconds
(mean over the group's runs, a band from the lowest to the highest run, train
curves dashed), the weight layers' gradient norm against depth, and the first/last
weight layer gradient ratio over epochs; below them the weight norm when runs recorded
it and the extra panels (services.analysis.panels) that were asked for. Curves of runs
of different lengths are averaged over the runs that reached each epoch.

A figure takes seconds to draw, most of it inside `savefig`. A caller that may have to
stop (its client left) passes `check`: it is called between panels and, through an
invisible artist in every panel, while the canvas draws, and stops the figure by
raising.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from runstore import Run, outcome
from services.analysis.compare import GroupFlow, Groups
from services.analysis.errors import InvalidRequest
from services.analysis.panels import Colours, Extras, weight_norm_panel
from services.analysis.series import epoch_series

DEFAULT_WIDTH = 1500
DEFAULT_HEIGHT = 900
DEFAULT_DPI = 100
MAX_PIXELS = 4000


def band(runs: Sequence[Run], field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch index: (mean elapsed seconds, mean, min, max) of `field` over the runs.

    NaN where no run has a finite value at that epoch (series.epoch_series).
    """
    n = max(len(r.epochs) for r in runs)

    def column(values: Sequence[float]) -> np.ndarray:
        return np.asarray(values, dtype=float) if values else np.full(n, np.nan)

    values = epoch_series(runs, field)
    seconds = epoch_series(runs, "elapsed_seconds").mean
    return column(seconds), column(values.mean), column(values.low), column(values.high)


def render_png(
    groups: Groups,
    flows: Sequence[GroupFlow],
    *,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    dpi: int = DEFAULT_DPI,
    title: str = "",
    extras: Extras | None = None,
    check: Callable[[], None] | None = None,
) -> bytes:
    """The comparison figure as PNG bytes of exactly `width` x `height` pixels.

    `extras` adds rows of three panels below the six (services.analysis.panels);
    `check()` is called between steps and may raise to stop the figure."""
    check_size(width, height, dpi)
    step = check or _nothing
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    extra_panels = recorded_panels(groups) + (extras.panels() if extras is not None else [])
    rows = 2 + math.ceil(len(extra_panels) / 3)
    axes = fig.subplots(rows, 3, squeeze=False)
    names = list(groups.runs)
    if extras is not None:
        names += [n for n in dict.fromkeys(extras.group_names()) if n not in groups.runs]
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    if check is not None:
        for ax in axes.flat:
            ax.add_artist(_Checkpoint(check))
    for i, draw in enumerate(extra_panels):
        step()
        draw(axes[2 + i // 3][i % 3], colours)
    for i in range(len(extra_panels), 3 * (rows - 2)):
        axes[2 + i // 3][i % 3].set_axis_off()
    panels = [
        (axes[0][0], "val_loss", "train_loss", "epoch", "loss"),
        (axes[0][1], "val_accuracy", "train_accuracy", "epoch", "accuracy"),
        (axes[1][0], "val_loss", "train_loss", "seconds", "loss"),
        (axes[1][1], "val_accuracy", "train_accuracy", "seconds", "accuracy"),
    ]
    labels = {name: _label(name, runs) for name, runs in groups.runs.items()}
    for ax, val_field, train_field, x_name, y_name in panels:
        step()
        for name, runs in groups.runs.items():
            _curve(ax, runs, val_field, x_name, colours[name], labels[name], solid=True)
            _curve(ax, runs, train_field, x_name, colours[name], None, solid=False)
        ax.set_xlabel("epoch" if x_name == "epoch" else "elapsed seconds")
        if x_name == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{y_name} (val solid, train dashed)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(title=groups.group_by, fontsize="small")
    step()
    _depth_panel(axes[0][2], flows, colours)
    _ratio_panel(axes[1][2], flows, colours)
    heading = title or f"{groups.experiment}: by {groups.group_by}"
    runs_total = sum(len(r) for r in groups.runs.values())
    fig.suptitle(f"{heading} ({runs_total} runs; line = mean, band = min..max over runs)")
    with warnings.catch_warnings():
        # Small figures cannot fit every label; the picture is still drawn.
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    step()
    buffer = io.BytesIO()
    # No bbox_inches="tight": it would change the pixel size the caller asked for.
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def check_size(width: int, height: int, dpi: int) -> None:
    """InvalidRequest unless the figure's size and resolution are within the limits."""
    for name, value in (("width", width), ("height", height)):
        if not 200 <= value <= MAX_PIXELS:
            raise InvalidRequest(f"{name} {value} px not in 200..{MAX_PIXELS}")
    if not 30 <= dpi <= 600:
        raise InvalidRequest(f"dpi {dpi} not in 30..600")


def _nothing() -> None:
    pass


class _Checkpoint(Artist):
    """Draws nothing; calls `check` when its panel is drawn (tight_layout and savefig
    draw every panel), so that a long draw can be stopped between panels."""

    def __init__(self, check: Callable[[], None]) -> None:
        super().__init__()
        self._check = check
        self.set_zorder(-1e9)  # first among its panel's artists
        self.set_in_layout(False)

    def draw(self, renderer: object) -> None:
        self._check()

    def get_window_extent(self, renderer: object = None) -> Any:
        from matplotlib.transforms import Bbox

        return Bbox.null()


def recorded_panels(groups: Groups) -> list[Callable[[Axes, Colours], None]]:
    """The weight-norm panel when a run recorded weight_norm (dropout vs weight decay)."""
    norms = {name: epoch_series(runs, "weight_norm") for name, runs in groups.runs.items()}
    if not any(s.epochs for s in norms.values()):
        return []
    return [lambda ax, c: weight_norm_panel(ax, norms, c)]


def _label(name: str, runs: Sequence[Run]) -> str:
    """A group's legend entry; it says how many of its runs diverged (their curves end
    where they diverged, and a run that diverged in its first epoch has none)."""
    diverged = sum(outcome(r) == "diverged" for r in runs)
    return f"{name} ({diverged} of {len(runs)} diverged)" if diverged else name


def _curve(
    ax: Axes,
    runs: Sequence[Run],
    field: str,
    x_name: str,
    colour: str,
    label: str | None,
    *,
    solid: bool,
) -> None:
    seconds, mean, low, high = band(runs, field)
    x = np.arange(1, len(mean) + 1) if x_name == "epoch" else seconds
    if np.all(np.isnan(mean)):
        if solid and label:  # nothing to draw, but the legend still lists the group
            ax.plot([], [], color=colour, label=label, marker="o", markersize=3)
        return
    if solid:
        ax.plot(x, mean, color=colour, label=label, marker="o", markersize=3)
        ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)
    else:
        ax.plot(x, mean, color=colour, linestyle="--", linewidth=1, alpha=0.8)


def _depth_panel(ax: Axes, flows: Sequence[GroupFlow], colours: dict[str, str]) -> None:
    # Weight layers only (conv, linear): a batch-norm layer between two convolutions has
    # a gradient of another scale, and would make the curve zig-zag.
    for flow in flows:
        layers = flow.weight_layers
        if not layers:
            continue
        means = [_finite_mean(layer.mean) for layer in layers]
        depth = np.arange(1, len(means) + 1)
        ax.plot(depth, means, color=colours.get(flow.name), marker="o", label=flow.name)
    ax.set_yscale("log")
    ax.set_xlabel("weight-layer depth: conv and linear (1 = input side)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("gradient norm, mean over epochs")
    ax.set_title("gradient norm vs depth", fontsize="medium")
    ax.grid(alpha=0.3, which="both")


def _ratio_panel(ax: Axes, flows: Sequence[GroupFlow], colours: dict[str, str]) -> None:
    for flow in flows:
        ratios = np.asarray(flow.ratio_by_epoch, dtype=float)
        if ratios.size and np.any(ratios > 0):
            ax.plot(flow.epochs, ratios, color=colours.get(flow.name), marker="o", label=flow.name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("first / last weight layer gradient norm")
    ax.set_title("gradient flow", fontsize="medium")
    ax.grid(alpha=0.3, which="both")


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
