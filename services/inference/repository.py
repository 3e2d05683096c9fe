"""The model repository: which models and versions are loaded, polling, load and unload.

Layout (Triton's): REPO/<name>/config.pbtxt, REPO/<name>/<version>/model.onnx.
Versions follow the config's version policy. `poll()` (a thread calls it every
`poll_interval` seconds) loads new or changed versions and removes deleted ones;
a new version is loaded and warmed up before it is routed to, and a removed one
finishes its queued requests before it is released, so requests in flight never
fail. A model whose files are invalid fails its own load only.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import FailedPrecondition, ModelNotFound, NotReady
from services.generated.inference import model_config_pb2 as mc
from services.inference.config import (
    NAME_PATTERN,
    VERSION_PATTERN,
    ModelConfigError,
    check_model_name,
    parse_version,
    read_config,
    settings_from,
    version_policy_select,
)
from services.inference.model import ModelVersion
from services.inference.preprocess import DecodeSlots
from services.inference.runtime import RuntimeOptions
from services.inference.tensors import InferRequest, InferResult, RequestLimits

log = logging.getLogger("stride.inference.repository")

READY, UNAVAILABLE, LOADING = "READY", "UNAVAILABLE", "LOADING"
Step = Callable[[], None]  # a change to what is routed, taken once every load is done


@dataclass
class VersionState:
    state: str
    reason: str = ""
    model: ModelVersion | None = None
    stamp: tuple[int, int] = (0, 0)  # model file (mtime ns, size) when loaded


@dataclass
class ModelEntry:
    name: str
    config: mc.ModelConfig | None = None
    stamp: tuple[int, int] = (0, 0)  # config.pbtxt (mtime ns, size)
    reason: str = ""  # why the model as a whole is unavailable (bad config)
    versions: dict[int, VersionState] = field(default_factory=dict)
    unloaded: bool = False  # unloaded explicitly: polling leaves it alone until a load


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


class ModelRepository:
    """Loads models from a folder and routes requests to their versions."""

    def __init__(
        self,
        root: Path,
        options: RuntimeOptions | None = None,
        *,
        limits: RequestLimits | None = None,
        on_health: Callable[[str, bool], None] | None = None,
    ) -> None:
        if not root.is_dir():
            raise NotADirectoryError(f"model repository {root} is not a folder")
        self.root = root
        self.options = options or RuntimeOptions()
        self.limits = limits or RequestLimits()
        self._decodes = DecodeSlots(self.limits.max_decodes)  # shared by every model
        self._models: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()  # guards _models
        self._sync_lock = threading.Lock()  # one load/unload at a time
        self._on_health = on_health or (lambda name, ready: None)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        # Called with the repository's stop event between loading and routing, when there
        # is something to route; returns once every process of the server has loaded the
        # same (or the event is set). None: route at once (one process).
        self.swap_together: Callable[[threading.Event], None] | None = None
        # The repository's own path, as it may appear in error text: clients are told
        # paths relative to the repository, never where it lives on the server.
        self._prefixes = sorted({str(root) + os.sep, str(root.resolve()) + os.sep}, key=len)[::-1]

    def _public(self, exc: BaseException) -> str:
        """An error's text for clients (RepositoryIndex, load and readiness errors)."""
        text = str(exc)
        for prefix in self._prefixes:
            text = text.replace(prefix, "")
        return text

    # Discovery and loading ---------------------------------------------------

    def _model_names(self) -> list[str]:
        return sorted(
            d.name
            for d in self.root.iterdir()
            if d.is_dir() and NAME_PATTERN.fullmatch(d.name) and (d / "config.pbtxt").is_file()
        )

    def poll(self) -> None:
        """Bring the loaded set in line with the folder (new, changed and removed models).
        Everything new is loaded and warmed up first; then every change is routed to at
        once (`_apply`)."""
        with self._sync_lock:
            present = set(self._model_names())
            steps: list[Step] = []
            for name in sorted(present):
                entry = self._models.get(name)
                if entry is None or not entry.unloaded:
                    steps += self._prepare(name)
            for name in sorted(set(self._models) - present):
                steps.append(functools.partial(self._remove_model, name))
            self._apply(steps)

    def _apply(self, steps: list[Step]) -> None:
        """Take the steps that route requests to what was loaded (and away from what goes).
        `swap_together` returns first when every process of the server has loaded the same
        (stride serve --workers; services.inference.workers), so that they swap together."""
        if steps and self.swap_together is not None:
            self.swap_together(self._stop)
        for step in steps:
            step()

    def _prepare(self, name: str, force: bool = False) -> list[Step]:
        """Load what changed in a model's folder; returns the steps that route to it."""
        folder = self.root / name
        entry = self._models.get(name)
        if entry is None:
            entry = ModelEntry(name)
            with self._lock:
                self._models[name] = entry
        stamp = _stamp(folder / "config.pbtxt")
        config_changed = force or stamp != entry.stamp
        if config_changed:
            try:
                config = read_config(folder / "config.pbtxt")
                settings_from(config, folder / "config.pbtxt")
            except ModelConfigError as exc:
                log.error("model %s: %s", name, exc)
                entry.stamp, entry.reason = stamp, self._public(exc)
                if not entry.versions:
                    self._on_health(name, False)
                return []  # keep serving what was loaded from the last good config
            entry.config, entry.stamp, entry.reason = config, stamp, ""
        assert entry.config is not None
        available = [
            int(d.name)
            for d in folder.iterdir()
            if d.is_dir() and VERSION_PATTERN.fullmatch(d.name)
        ]
        wanted = version_policy_select(entry.config, available)
        steps: list[Step] = []
        for version in wanted:
            state = entry.versions.get(version)
            filename = entry.config.default_model_filename or "model.onnx"
            file_stamp = _stamp(folder / str(version) / filename)
            if state is not None and not config_changed and file_stamp == state.stamp:
                continue  # unchanged (a failed load is not retried until its files change)
            route = self._load_version(entry, version, file_stamp)
            if route is not None:
                steps.append(route)
        for version in sorted(set(entry.versions) - set(wanted)):
            steps.append(functools.partial(self._remove_version, entry, version))
        if not steps:
            self._on_health(name, self._ready(entry))
            return []
        return [*steps, lambda: self._on_health(name, self._ready(entry))]

    def _load_version(self, entry: ModelEntry, version: int, stamp: tuple[int, int]) -> Step | None:
        """Load and warm up a version; returns the step that routes to it (and releases
        the version it replaces), or None when the load failed."""
        assert entry.config is not None
        folder = self.root / entry.name
        old = entry.versions.get(version)
        if old is None or old.model is None:
            with self._lock:
                entry.versions[version] = VersionState(LOADING, stamp=stamp)
        started = time.perf_counter()
        try:
            settings = settings_from(entry.config, folder / "config.pbtxt")
            model = ModelVersion(
                folder, version, entry.config, settings, self.options, self.limits, self._decodes
            )
        except (ModelConfigError, OSError) as exc:
            log.error("model %s version %d failed to load: %s", entry.name, version, exc)
            with self._lock:
                if old is not None and old.model is not None:
                    return None  # keep serving the version that works
                entry.versions[version] = VersionState(UNAVAILABLE, self._public(exc), stamp=stamp)
            return None
        took_ms = (time.perf_counter() - started) * 1e3

        def route() -> None:
            with self._lock:
                entry.versions[version] = VersionState(READY, model=model, stamp=stamp)
            log.info(
                "model %s version %d ready (%.0f ms, %s)",
                entry.name,
                version,
                took_ms,
                model.sessions[0].get_providers()[0] if model.sessions else "-",
            )
            if old is not None and old.model is not None:
                old.model.close()  # after the swap: requests already queued on it still finish

        return route

    def _remove_version(self, entry: ModelEntry, version: int) -> None:
        with self._lock:
            state = entry.versions.pop(version, None)
        if state is not None and state.model is not None:
            state.model.close()
            log.info("model %s version %d unloaded", entry.name, version)

    def _remove_model(self, name: str) -> None:
        entry = self._models.get(name)
        if entry is None:
            return
        for version in sorted(entry.versions):
            self._remove_version(entry, version)
        with self._lock:
            self._models.pop(name, None)
        self._on_health(name, False)

    # Explicit control --------------------------------------------------------

    def load(self, name: str) -> None:
        """Load (or reload) a model now, whatever polling does; FailedPrecondition if it fails."""
        check_model_name(name)
        with self._sync_lock:
            if name not in self._model_names():
                raise ModelNotFound(f"no model {name!r} in the model repository")
            entry = self._models.get(name)
            steps = self._prepare(name, force=True)
            if entry is not None and entry.unloaded:
                steps.insert(0, functools.partial(setattr, entry, "unloaded", False))
            self._apply(steps)
            entry = self._models[name]
            if not self._ready(entry):
                reasons = [entry.reason] + [v.reason for v in entry.versions.values() if v.reason]
                reason = "; ".join(r for r in reasons if r) or "no version folder with a model"
                raise FailedPrecondition(f"failed to load model {name!r}: {reason}")

    def unload(self, name: str) -> None:
        """Unload every version of a model; polling will not reload it until `load`."""
        check_model_name(name)
        with self._sync_lock:
            entry = self._models.get(name)
            if entry is None:
                raise ModelNotFound(f"model {name!r} is not loaded")
            steps: list[Step] = [functools.partial(setattr, entry, "unloaded", True)]
            steps += [
                functools.partial(self._remove_version, entry, v) for v in sorted(entry.versions)
            ]
            steps.append(functools.partial(self._on_health, name, False))
            self._apply(steps)

    # Lookups -----------------------------------------------------------------

    @staticmethod
    def _ready(entry: ModelEntry) -> bool:
        return any(v.state == READY for v in entry.versions.values())

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The loaded version to serve; ModelNotFound or NotReady with the reason otherwise."""
        number = parse_version(version)
        with self._lock:
            entry = self._models.get(name)
            if entry is None:
                check_model_name(name)  # a name found is valid: folders are checked
                raise ModelNotFound(f"unknown model {name!r}; see RepositoryIndex for the models")
            if number is None:
                ready = max((v for v, s in entry.versions.items() if s.state == READY), default=0)
                if ready:
                    model = entry.versions[ready].model
                    assert model is not None
                    return model
                if entry.unloaded:  # Triton: NOT_FOUND, "has no available versions"
                    raise ModelNotFound(f"model {name!r} is not ready: unloaded")
                reasons = [s.reason for s in entry.versions.values() if s.reason] or [entry.reason]
                why = "; ".join(r for r in reasons if r) or "no version loaded"
                raise NotReady(f"model {name!r} is not ready: {why}")
            state = entry.versions.get(number)
            if state is None:
                have = ", ".join(str(v) for v in sorted(entry.versions)) or "none"
                raise ModelNotFound(f"model {name!r} has no version {number} (loaded: {have})")
            if state.state != READY or state.model is None:
                raise NotReady(
                    f"model {name!r} version {number} is {state.state}"
                    + (f": {state.reason}" if state.reason else "")
                )
            return state.model

    def infer(self, request: InferRequest, deadline: float | None = None) -> InferResult:
        """Route a request to its model version and run it."""
        model = self.get(request.model, request.version)
        try:
            return model.infer(request, deadline)
        except NotReady:
            # The version was swapped out between lookup and queueing (hot reload): the
            # replacement is ready already, so try it once.
            if request.version or self.get(request.model) is model:
                raise
            return self.get(request.model).infer(request, deadline)

    async def infer_async(
        self, request: InferRequest, deadline: float | None = None
    ) -> InferResult:
        """`infer` for a coroutine on an event loop."""
        model = self.get(request.model, request.version)
        try:
            return await model.infer_async(request, deadline)
        except NotReady:
            if request.version or self.get(request.model) is model:
                raise
            return await self.get(request.model).infer_async(request, deadline)

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except (ModelNotFound, NotReady):
            return False
        return True

    def all_ready(self) -> bool:
        """Every model that should be served has a ready version."""
        with self._lock:
            return all(self._ready(e) for e in self._models.values() if not e.unloaded)

    def models(self) -> list[ModelVersion]:
        """Every loaded version (for statistics and metrics)."""
        with self._lock:
            return [
                s.model
                for e in self._models.values()
                for _, s in sorted(e.versions.items())
                if s.model is not None
            ]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model in the folder and its versions' states (RepositoryIndex)."""
        # The folder is listed outside the lock: every request takes it to find its model.
        on_disk = set(self._model_names())
        with self._lock:
            entries = dict(self._models)
            out = []
            for name in sorted(set(entries) | on_disk):
                entry = entries.get(name)
                if entry is None or not entry.versions:
                    reason = entry.reason if entry else ""
                    if not ready_only:
                        why = reason or ("unloaded" if entry and entry.unloaded else "")
                        out.append(IndexEntry(name, "", UNAVAILABLE, why))
                    continue
                for version, state in sorted(entry.versions.items()):
                    if not ready_only or state.state == READY:
                        out.append(IndexEntry(name, str(version), state.state, state.reason))
            return out

    # Polling -----------------------------------------------------------------

    def start_polling(self, interval: float) -> None:
        """Call `poll()` every `interval` seconds in a daemon thread."""
        if interval <= 0:
            raise ValueError(f"poll interval must be positive, got {interval}")

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll()
                except Exception:  # a bad poll must not end polling
                    log.exception("repository poll failed")

        self._poller = threading.Thread(target=loop, name="repository-poll", daemon=True)
        self._poller.start()

    def close(self) -> None:
        """Stop polling and release every model (their queues drain first)."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        with self._sync_lock:
            for name in list(self._models):
                self._remove_model(name)
