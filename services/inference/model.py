"""One loaded model version: ONNX Runtime sessions behind a dynamic batcher.

`ModelVersion.infer` checks a decoded request against the model (names,
datatypes, shapes, batch size, finite values), decodes images sent as bytes,
queues the rows, and builds the outputs, including Triton's `classification`
strings. It knows nothing of gRPC: problems are `services.common.errors`.

What a request may cost is settled before any work: the outputs it names (each
once), the size of the answer (against `RequestLimits.max_response_bytes`), and
for images the pixels each one claims and a decode slot.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import InvalidInput, ResourceExhausted
from services.generated.inference import model_config_pb2 as mc
from services.inference import runtime
from services.inference.batcher import BatcherSettings, DynamicBatcher
from services.inference.config import ModelConfigError, ModelSettings, TensorSpec, read_labels
from services.inference.preprocess import DecodeSlots, Preprocess
from services.inference.stats import ModelStats
from services.inference.tensors import (
    BYTES,
    NUMPY_DTYPES,
    InferRequest,
    InferResult,
    InputTensor,
    OutputTensor,
    RequestLimits,
)

log = logging.getLogger("stride.inference.model")

FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
FLOATS = ("FP16", "FP32", "FP64", "BF16")
# A classification string is "<score>:<index>:<label>" after a 4-byte length; "%f" of the
# largest float32 has 47 characters.
SCORE_CHARS = 48
# Protobuf framing of the answer and of each output (name, datatype, shape), generously.
ANSWER_OVERHEAD, OUTPUT_OVERHEAD = 1024, 256


def _file_in(folder: Path, name: str, what: str) -> Path:
    # A plain file name: no separators, no "..", so nothing outside the model's folder.
    if not FILE_NAME.fullmatch(name):
        raise ModelConfigError(f"{what} {name!r} must be a plain file name in {folder}")
    return folder / name


class ModelVersion:
    """A ready-to-serve version: sessions warmed up, batcher running."""

    def __init__(
        self,
        model_dir: Path,
        version: int,
        config: mc.ModelConfig,
        settings: ModelSettings,
        options: runtime.RuntimeOptions,
        limits: RequestLimits | None = None,
        decodes: DecodeSlots | None = None,
    ) -> None:
        self.name = settings.name
        self.limits = limits or RequestLimits()
        self._decodes = decodes or DecodeSlots(self.limits.max_decodes)
        self.version = version
        self.config = config
        self.settings = settings
        folder = model_dir / str(version)
        path = _file_in(folder, config.default_model_filename or "model.onnx", "model file")
        if not path.is_file():
            raise ModelConfigError(f"{path}: model file missing")
        self.path = path
        self.sessions = [
            runtime.create_session(path, settings, options) for _ in range(settings.instance_count)
        ]
        self.metadata = runtime.metadata(self.sessions[0])
        self.preprocess = self._read_preprocess()
        self.labels = {o.name: self._read_labels(model_dir, o) for o in settings.outputs}
        self._sizes = self._answer_sizes()
        for session in self.sessions:
            runtime.warm_up(session, settings)
        self._output_names = [o.name for o in settings.outputs]
        self._every_output = [(name, 0) for name in self._output_names]
        self._inputs = {spec.name: spec for spec in settings.inputs}
        self._outputs = {spec.name: spec for spec in settings.outputs}
        self._shapes = {spec.name: self._expected_shape(spec) for spec in settings.inputs}
        self._version = str(version)
        self.stats = ModelStats()
        self.batcher = DynamicBatcher(
            f"{self.name}:{version}",
            [self._runner(s) for s in self.sessions],
            BatcherSettings(
                max_batch_size=settings.max_batch_size,
                batching=settings.dynamic_batching,
                preferred_sizes=settings.preferred_batch_sizes,
                max_queue_delay_s=settings.max_queue_delay_us / 1e6,
                max_queue_size=settings.max_queue_size,
            ),
            on_batch=self.stats.record_batch,
        )

    def _read_preprocess(self) -> Preprocess | None:
        text = self.metadata.get("stride.preprocess")
        if text is None:
            return None
        try:
            return Preprocess.from_metadata(text)
        except ValueError as exc:
            raise ModelConfigError(f"{self.path}: {exc}") from exc

    def _read_labels(self, model_dir: Path, spec: TensorSpec) -> list[str]:
        if spec.label_filename:
            return read_labels(_file_in(model_dir, spec.label_filename, "label_filename"))
        if any(o.label_filename for o in self.settings.outputs):
            # Like Triton: once the config names label files, an output without one has
            # no labels (its classification strings are "score:index").
            return []
        if (model_dir / "labels.txt").is_file():
            return read_labels(model_dir / "labels.txt")
        try:
            labels = json.loads(self.metadata.get("stride.labels", "[]"))
        except json.JSONDecodeError:
            labels = []
        return [str(label) for label in labels] if isinstance(labels, list) else []

    def _runner(self, session: Any) -> Any:
        names = self._output_names
        call = runtime.binding_run(session)

        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(names, call(names, feeds), strict=True))

        return run

    # Requests ---------------------------------------------------------------

    def infer(self, request: InferRequest, deadline: float | None = None) -> InferResult:
        """Run one request; raises InvalidInput, ResourceExhausted, DeadlineExceeded, ..."""
        start = time.perf_counter_ns()
        try:
            wanted, feeds, rows, deadline = self._prepare(request, deadline)
            outputs, queue_ns = self.batcher.submit(feeds, rows, deadline, expected=True)
            result = self._result(request, wanted, rows, outputs)
        except BaseException:
            self.stats.record_failure(time.perf_counter_ns() - start)
            raise
        self.stats.record_success(rows, time.perf_counter_ns() - start, queue_ns)
        return result

    async def infer_async(
        self, request: InferRequest, deadline: float | None = None
    ) -> InferResult:
        """`infer` for a coroutine on an event loop (the same checks, queue and statistics)."""
        start = time.perf_counter_ns()
        try:
            wanted, feeds, rows, deadline = self._prepare(request, deadline)
            outputs, queue_ns = await self.batcher.submit_async(
                feeds, rows, deadline, expected=True
            )
            result = self._result(request, wanted, rows, outputs)
        except BaseException:
            self.stats.record_failure(time.perf_counter_ns() - start)
            raise
        self.stats.record_success(rows, time.perf_counter_ns() - start, queue_ns)
        return result

    def _prepare(
        self, request: InferRequest, deadline: float | None
    ) -> tuple[list[tuple[str, int]], dict[str, np.ndarray], int, float | None]:
        """Check and decode a request, announced to the batcher (withdrawn if it fails):
        the outputs wanted, the feeds, their rows and the deadline."""
        self.batcher.expect()
        try:
            wanted = self._requested(request)
            self._check_answer(wanted, self._declared_rows(request))
            feeds, rows = self._feeds(request, deadline)
            return wanted, feeds, rows, self._deadline(request, deadline)
        except BaseException:
            self.batcher.unexpect()
            raise

    def _result(
        self,
        request: InferRequest,
        wanted: list[tuple[str, int]],
        rows: int,
        outputs: dict[str, np.ndarray],
    ) -> InferResult:
        self._check_answer(wanted, rows, outputs)  # outputs of variable size
        result = InferResult(self.name, self._version, request.id)
        for name, k in wanted:
            result.outputs.append(self._output(name, outputs[name], k))
        return result

    def _deadline(self, request: InferRequest, deadline: float | None) -> float | None:
        s = self.settings
        timeout_us = s.default_timeout_us
        if request.timeout_us and (timeout_us == 0 or s.allow_timeout_override):
            timeout_us = min(request.timeout_us, timeout_us or request.timeout_us)
        if timeout_us:
            mine = time.perf_counter() + timeout_us / 1e6
            deadline = mine if deadline is None else min(deadline, mine)
        return deadline

    def _feeds(
        self, request: InferRequest, deadline: float | None = None
    ) -> tuple[dict[str, np.ndarray], int]:
        given = {t.name: t for t in request.inputs}
        if len(given) != len(request.inputs):
            raise InvalidInput("each input may appear only once in a request")
        if given.keys() != self._inputs.keys():
            unknown = sorted(set(given) - set(self._inputs))
            missing = sorted(set(self._inputs) - set(given))
            raise InvalidInput(
                f"model {self.name} expects inputs {sorted(self._inputs)}; "
                + (f"unknown: {unknown}" if unknown else f"missing: {missing}")
            )
        feeds: dict[str, np.ndarray] = {}
        batched = bool(self.settings.max_batch_size)
        rows = None
        for name, tensor in given.items():
            array = self._input_array(self._inputs[name], tensor, deadline)
            feeds[name] = array
            size = array.shape[0] if batched else 1
            if rows is None:
                rows = size
            elif size != rows:
                sizes = sorted({a.shape[0] for a in feeds.values()})
                raise InvalidInput(f"inputs have different batch sizes {sizes}")
        assert rows is not None
        return feeds, rows

    def _expected_shape(self, spec: TensorSpec) -> list[int]:
        return [-1, *spec.dims] if self.settings.max_batch_size else list(spec.dims)

    def _input_array(
        self, spec: TensorSpec, tensor: InputTensor, deadline: float | None = None
    ) -> np.ndarray:
        what = f"input {spec.name!r} of model {self.name}"
        if tensor.datatype != spec.datatype:
            if tensor.datatype == BYTES:
                return self._images(spec, tensor, what, deadline)
            hint = " or BYTES (encoded PNG/JPEG images)" if self._takes_images(spec) else ""
            raise InvalidInput(
                f"{what}: datatype {tensor.datatype} given, expected {spec.datatype}{hint}"
            )
        assert isinstance(tensor.data, np.ndarray)
        self._check_shape(spec, tensor.shape, what)
        array = tensor.data
        # A NaN or an infinity makes the sum NaN or infinite, so a finite sum clears the
        # array in one pass with no temporary; only a sum that is not finite (which
        # large finite values can also give) counts the values themselves.
        if spec.datatype in FLOATS and not math.isfinite(np.add.reduce(array, axis=None)):
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise InvalidInput(f"{what}: {bad} NaN or infinite values; expected finite numbers")
        return array

    def _check_shape(self, spec: TensorSpec, shape: tuple[int, ...], what: str) -> None:
        expected = self._shapes[spec.name]
        ok = len(shape) == len(expected)
        if ok:
            for e, s in zip(expected, shape, strict=True):
                if e != -1 and e != s:
                    ok = False
                    break
        limit = self.settings.max_batch_size
        if not ok:
            batch = f" (first dimension: batch of 1 to {limit})" if limit else ""
            raise InvalidInput(f"{what}: shape {list(shape)} given, expected {expected}{batch}")
        if limit and shape[0] == 0:
            raise InvalidInput(f"{what}: empty batch (batch size 0); expected 1 to {limit} items")
        if 0 in shape:
            raise InvalidInput(f"{what}: shape {list(shape)} has no elements")
        if limit and shape[0] > limit:
            raise InvalidInput(
                f"{what}: batch size {shape[0]} exceeds the maximum batch size {limit}"
            )

    def _takes_images(self, spec: TensorSpec) -> bool:
        pre = self.preprocess
        return pre is not None and spec.datatype == "FP32" and spec.dims == pre.shape

    def _images(
        self, spec: TensorSpec, tensor: InputTensor, what: str, deadline: float | None
    ) -> np.ndarray:
        if not self._takes_images(spec) or self.preprocess is None:
            raise InvalidInput(
                f"{what}: datatype BYTES given, expected {spec.datatype} (this model has no "
                "stride.preprocess metadata for decoding images)"
            )
        limit = max(self.settings.max_batch_size, 1)
        shape = tensor.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(f"{what}: BYTES images need shape [N] or [N, 1], got {list(shape)}")
        if shape[0] == 0:
            raise InvalidInput(f"{what}: empty batch (no images); expected 1 to {limit}")
        if shape[0] > limit:
            raise InvalidInput(f"{what}: {shape[0]} images exceed the maximum batch size {limit}")
        assert isinstance(tensor.data, list)
        batch = self.preprocess.images_to_batch(
            tensor.data,
            max_scale=self.limits.max_image_scale,
            slots=self._decodes,
            deadline=deadline,
        )
        return batch if self.settings.max_batch_size else batch[0]

    def _requested(self, request: InferRequest) -> list[tuple[str, int]]:
        if request.outputs is None:
            return self._every_output  # read, never changed
        wanted = []
        seen: set[str] = set()
        for out in request.outputs:
            if out.name in seen:
                raise InvalidInput(
                    f"output {out.name!r} is requested more than once; name each output once"
                )
            seen.add(out.name)
            if out.name not in self._outputs:
                raise InvalidInput(
                    f"unknown output {out.name!r}: model {self.name} has outputs "
                    f"{', '.join(self._output_names)}"
                )
            if out.classification and len(self._outputs[out.name].dims) != 1:
                raise InvalidInput(
                    f"output {out.name!r}: classification needs a 1-D output per batch item"
                )
            wanted.append((out.name, out.classification))
        return wanted

    def _declared_rows(self, request: InferRequest) -> int:
        """Rows the answer will have, from the shapes alone (a bad batch fails in `_feeds`)."""
        limit = self.settings.max_batch_size
        if not limit:
            return 1
        rows = 1
        for tensor in request.inputs:
            if tensor.shape and tensor.shape[0] > rows:
                rows = tensor.shape[0]
        return min(rows, limit)

    def _answer_sizes(self) -> dict[str, tuple[int | None, int, int]]:
        """Per output: elements per row (None if a dim is -1), bytes per element, and the
        longest classification string, worked out once at load."""
        sizes = {}
        for spec in self.settings.outputs:
            row = None if -1 in spec.dims else math.prod(spec.dims)
            dtype = NUMPY_DTYPES.get(spec.datatype)
            labels = max((len(label.encode()) for label in self.labels[spec.name]), default=0)
            text = 4 + SCORE_CHARS + 1 + len(str(row or 0)) + 1 + labels
            sizes[spec.name] = (row, dtype.itemsize if dtype is not None else 8, text)
        return sizes

    def _check_answer(
        self,
        wanted: list[tuple[str, int]],
        rows: int,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Refuse an answer larger than the message limit before it is built.

        Before the run, outputs of fixed dims are sized from the config; after it (with
        `arrays`), outputs with a variable dimension are sized from what the model gave.
        """
        limit = self.limits.max_response_bytes
        if limit is None:
            return
        total, variable = ANSWER_OVERHEAD, False
        for name, k in wanted:
            per_row, itemsize, text = self._sizes[name]
            if per_row is None:
                variable = True
                if arrays is None:
                    continue  # known once the model has run
                row = arrays[name][0] if self.settings.max_batch_size else arrays[name]
                per_row, text = row.size, text + len(str(row.size))
            size = rows * min(k, per_row) * text if k else rows * per_row * itemsize
            total += OUTPUT_OVERHEAD + size
        if arrays is not None and not variable:
            return  # checked before the run already
        if total > limit:
            raise ResourceExhausted(
                f"the answer would take about {total} bytes, more than the {limit} a message "
                "may carry (--max-message-mb); ask for fewer rows or outputs"
            )

    def _output(self, name: str, array: np.ndarray, k: int) -> OutputTensor:
        spec = self._outputs[name]
        if not k:
            return OutputTensor(name, spec.datatype, tuple(array.shape), array)
        rows = array if self.settings.max_batch_size else array[None]
        k = min(k, rows.shape[1])
        top = np.argsort(-rows, axis=1, kind="stable")[:, :k]
        labels = self.labels.get(name, [])
        items = []
        for row, indices in zip(rows, top, strict=True):
            for i in indices:
                label = f":{labels[i]}" if i < len(labels) else ""
                items.append(f"{row[i]:f}:{i}{label}".encode())
        shape = (rows.shape[0], k) if self.settings.max_batch_size else (k,)
        return OutputTensor(name, BYTES, shape, items)

    def close(self) -> None:
        """Finish queued requests, then drop the sessions."""
        self.batcher.close()
        self.sessions.clear()
