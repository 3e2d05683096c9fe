"""The comparison figure: a valid PNG of the asked pixel size, and the numbers it plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runstore import RunStore
from services.analysis.compare import Selection, gradient_flow, select
from services.analysis.errors import InvalidRequest
from services.analysis.plots import band, render_png
from tests.services.analysis.pngs import png_size
from tests.services.analysis.runstore import epoch_line, run_config, summary, write_run


@pytest.mark.parametrize(("width", "height", "dpi"), [(800, 500, 100), (1200, 700, 150)])
def test_render_png_has_the_asked_size(
    known_store: Path, width: int, height: int, dpi: int
) -> None:
    groups = select(RunStore(str(known_store)), Selection("opt"))
    png = render_png(groups, gradient_flow(groups), width=width, height=height, dpi=dpi)
    assert png_size(png) == (width, height)


def test_render_png_rejects_silly_sizes(known_store: Path) -> None:
    groups = select(RunStore(str(known_store)), Selection("opt"))
    with pytest.raises(InvalidRequest, match="height 99999"):
        render_png(groups, (), height=99999)
    with pytest.raises(InvalidRequest, match="dpi 1"):
        render_png(groups, (), dpi=1)


def test_band_averages_over_the_runs_that_reached_each_epoch(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        "e",
        "long",
        config=run_config("adam", 1),
        epochs=[
            epoch_line(1, 0.5, elapsed=2.0),
            epoch_line(2, 0.7, elapsed=4.0),
            epoch_line(3, 0.9, elapsed=6.0),
        ],
        summary=summary(0.9, 3),
    )
    write_run(
        tmp_path,
        "e",
        "short",
        config=run_config("adam", 2),
        epochs=[epoch_line(1, 0.3, elapsed=1.0), epoch_line(2, 0.5, elapsed=3.0)],
        summary=summary(0.5, 2),
    )
    groups = select(RunStore(str(tmp_path)), Selection("e"))
    seconds, mean, low, high = band(groups.runs["adam"], "val_accuracy")
    np.testing.assert_allclose(seconds, [1.5, 3.5, 6.0])
    np.testing.assert_allclose(mean, [0.4, 0.6, 0.9])
    np.testing.assert_allclose(low, [0.3, 0.5, 0.9])
    np.testing.assert_allclose(high, [0.5, 0.7, 0.9])
    # a group with no gradient norms at all still renders
    png = render_png(groups, gradient_flow(groups), width=400, height=300)
    assert png_size(png) == (400, 300)


def test_render_png_with_every_extra_panel(tmp_path: Path) -> None:
    from services.analysis.layers import dead_units
    from services.analysis.panels import Extras
    from services.analysis.profiles import Workload, profile
    from services.analysis.sensitivity import sensitivity
    from services.analysis.tuning import expected_best
    from services.analysis.wins import win_matrix
    from tests.services.analysis.test_analyses import lr_store, profile_store

    lr_store(tmp_path)
    store = profile_store(tmp_path)
    groups = select(store, Selection("lr"))
    extras = Extras(
        dead_units=dead_units(groups.runs),  # none recorded: no panel
        profile=profile(store, [Workload("w1"), Workload("w2")], group_by="optimizer.name"),
        sensitivity=sensitivity(groups),
        expected_best=expected_best(groups),
        win_matrix=win_matrix(groups),
    )
    assert len(extras.panels()) == 4
    png = render_png(groups, gradient_flow(groups), width=700, height=650, extras=extras)
    assert png_size(png) == (700, 650)
