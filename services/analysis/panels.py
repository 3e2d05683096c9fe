"""The figure's panels past the comparison's six: weight norm, dead units, the
performance profile, learning-rate sensitivity, expected best after k trials, the
win-probability matrix.

Each panel draws one domain answer on one matplotlib Axes; `Extras` says which are
drawn. Colours follow the group names, as in the other panels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator, NullLocator

from services.analysis.layers import GroupDeadUnits
from services.analysis.profiles import Profile
from services.analysis.sensitivity import Sensitivity
from services.analysis.series import EpochSeries
from services.analysis.tuning import ExpectedBest
from services.analysis.wins import WinMatrix

Colours = Mapping[str, str]


@dataclass(frozen=True)
class Extras:
    """The figure's panels past the six of a comparison; each None (or empty) when not drawn."""

    dead_units: tuple[GroupDeadUnits, ...] = ()
    profile: Profile | None = None
    sensitivity: Sensitivity | None = None
    expected_best: ExpectedBest | None = None
    win_matrix: WinMatrix | None = None

    def panels(self) -> list[Callable[[Axes, Colours], None]]:
        """One drawing function per panel to draw, in figure order."""
        out: list[Callable[[Axes, Colours], None]] = []
        dead = self.dead_units
        if any(g.layers for g in dead):
            out.append(lambda ax, c: dead_units_panel(ax, dead, c))
        if self.profile is not None:
            prof = self.profile
            out.append(lambda ax, c: profile_panel(ax, prof, c))
        if self.sensitivity is not None:
            sens = self.sensitivity
            out.append(lambda ax, c: sensitivity_panel(ax, sens, c))
        if self.expected_best is not None:
            best = self.expected_best
            out.append(lambda ax, c: expected_best_panel(ax, best, c))
        if self.win_matrix is not None:
            wins = self.win_matrix
            out.append(lambda ax, c: win_matrix_panel(ax, wins))
        return out

    def group_names(self) -> list[str]:
        """Every group name the panels show (for a colour each)."""
        names = [g.name for g in self.dead_units]
        if self.profile is not None:
            names += [c.group for c in self.profile.curves]
        if self.sensitivity is not None:
            names += [c.name for c in self.sensitivity.curves]
        if self.expected_best is not None:
            names += [c.name for c in self.expected_best.curves]
        return names


def weight_norm_panel(ax: Axes, norms: Mapping[str, EpochSeries], colours: Colours) -> None:
    """The weight norm over epochs per group: mean over the runs, band min..max."""
    for name, s in norms.items():
        if not s.epochs:
            continue
        colour = colours.get(name)
        ax.plot(s.epochs, s.mean, color=colour, marker="o", label=name)
        ax.fill_between(s.epochs, s.low, s.high, color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("L2 norm of conv and linear weights")
    ax.set_title("weight norm", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def dead_units_panel(ax: Axes, groups: tuple[GroupDeadUnits, ...], colours: Colours) -> None:
    """Mean fraction of dead units over the activation layers, per epoch; the band runs
    from the layer with the fewest dead units to the one with the most."""
    for g in groups:
        if not g.layers:
            continue
        per_layer = np.array([layer.mean for layer in g.layers], dtype=float)  # (layers, epochs)
        ax.plot(g.epochs, g.mean_by_epoch, color=colours.get(g.name), marker="o", label=g.name)
        with np.errstate(all="ignore"):
            low, high = np.nanmin(per_layer, axis=0), np.nanmax(per_layer, axis=0)
        ax.fill_between(g.epochs, low, high, color=colours.get(g.name), alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("dead units (mean over layers; band: layers)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("dead units per activation layer", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def profile_panel(ax: Axes, profile: Profile, colours: Colours) -> None:
    """rho(tau) per group (Dolan and More), log tau axis, AlgoPerf's score in the legend."""
    for c in profile.curves:
        ax.step(
            profile.taus,
            c.rho,
            where="post",
            color=colours.get(c.group),
            label=f"{c.group} (score {c.score:.2f})",
        )
    ax.set_xscale("log")
    ax.set_xlim(1.0, profile.tau_max)
    ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 10, 20, 50, 100) if t <= profile.tau_max]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"tau (x the best group's {profile.time} to target)")
    ax.set_ylabel(f"fraction of {len(profile.workloads)} workloads")
    ax.set_title(f"performance profile ({profile.metric})", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")


def sensitivity_panel(ax: Axes, value: Sensitivity, colours: Colours) -> None:
    """The metric against the learning rate, mean over seeds with a min..max band; a
    rate where a run diverged is marked with an x."""
    for c in value.curves:
        lr = [p.lr for p in c.points]
        colour = colours.get(c.name)
        ax.plot(lr, [p.mean for p in c.points], color=colour, marker="o", label=c.name)
        ax.fill_between(
            lr, [p.low for p in c.points], [p.high for p in c.points], color=colour, alpha=0.2
        )
        bad = [p for p in c.points if p.diverged and math.isfinite(p.mean)]
        ax.plot(
            [p.lr for p in bad],
            [p.mean for p in bad],
            "x",
            color=colour,
            markersize=10,
            markeredgewidth=2,
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate ({value.lr_key})")
    ax.set_ylabel(f"{value.metric} (band: min..max over seeds; x: a run diverged)")
    ax.set_title("learning-rate sensitivity", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")


def expected_best_panel(ax: Axes, value: ExpectedBest, colours: Colours) -> None:
    """The unbiased E[best of k trials] against k (no band: none has a known coverage)."""
    for c in value.curves:
        colour = colours.get(c.name)
        ax.plot(c.ks, c.mean, color=colour, marker="o", label=f"{c.name} ({c.trials} trials)")
    ax.set_xlabel("trials of a random search (k)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"expected best {value.metric}")
    ax.set_title("expected best after k trials (unbiased)", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def win_matrix_panel(ax: Axes, value: WinMatrix) -> None:
    """P(row beats column) as a heat map with the value in each cell."""
    n = len(value.groups)
    index = {g: i for i, g in enumerate(value.groups)}
    grid = np.full((n, n), np.nan)
    for cell in value.cells:
        if cell.probability is not None:
            grid[index[cell.a], index[cell.b]] = cell.probability
    ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdBu")
    for cell in value.cells:
        if cell.probability is not None and n <= 12:
            ax.text(
                index[cell.b],
                index[cell.a],
                f"{cell.probability:.2f}",
                ha="center",
                va="center",
                fontsize="small",
            )
    ax.set_xticks(range(n), value.groups, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(n), value.groups, fontsize="small")
    ax.set_title(f"P(row beats column), {value.metric} ({value.pairing})", fontsize="medium")
