"""WatchRun's part of the analysis service: the checks of a request and the bounds of a
stream. Following the run itself is the run store's (runstore.follow), the same
follower `stride train` and the sweep's live view use; docs/analysis.md says what a
client sees across a resumed run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

from runstore import Event, RunStore, follow
from services.analysis.errors import InvalidRequest

DEFAULT_POLL_SECONDS = 0.5
MIN_POLL_SECONDS = 0.01
MAX_POLL_SECONDS = 30.0


def poll_interval(requested: float) -> float:
    """The poll interval for a request: 0 means the default; otherwise clamped to
    [MIN, MAX]. NaN, infinities and negatives are refused (NaN would pass a clamp and
    become a busy loop)."""
    if not math.isfinite(requested) or requested < 0:
        raise InvalidRequest(
            f"poll_seconds {requested!r} is not allowed: give 0 (the default, "
            f"{DEFAULT_POLL_SECONDS} s) or a finite number of seconds"
        )
    if requested == 0:
        return DEFAULT_POLL_SECONDS
    return min(max(requested, MIN_POLL_SECONDS), MAX_POLL_SECONDS)


def watch(
    store: RunStore,
    experiment: str,
    run_id: str,
    *,
    after_epoch: int = 0,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    wait: Callable[[float], object] = time.sleep,
    active: Callable[[], bool] = lambda: True,
    deadline: float | None = None,
) -> Iterator[Event]:
    """The run's epochs after `after_epoch` as they appear, then its summary (see
    runstore.follow). RunNotFound and MalformedRun are raised before the first event."""
    if after_epoch < 0:
        raise InvalidRequest(f"after_epoch must not be negative, got {after_epoch}")
    store.run(experiment, run_id)  # RunNotFound / MalformedRun up front
    return follow(
        store.run_dir(experiment, run_id),
        after_epoch=after_epoch,
        poll_seconds=poll_interval(poll_seconds),
        wait=wait,
        active=active,
        deadline=deadline,
        max_file_bytes=store.max_file_bytes,
    )
