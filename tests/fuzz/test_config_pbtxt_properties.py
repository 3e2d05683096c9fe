"""config.pbtxt as the server loads it: the model loads and answers, or the load fails."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import targets
from fuzz.workspace import CONFIG_BASE, Workspace
from tests.fuzz.strategies import FUZZ, damaged

pytestmark = pytest.mark.timeout(300)

TYPES = ["TYPE_FP32", "TYPE_FP16", "TYPE_INT64", "TYPE_STRING", "TYPE_BF16", "TYPE_INVALID"]
small = st.integers(-3, 9) | st.sampled_from([64, 2**31 - 1, -(2**31)])
file_names = st.sampled_from(
    ["labels.txt"] * 4 + ["", "model.onnx", "../labels.txt", "/etc/passwd", "a/b"]
)


PLATFORM = "onnxruntime_onnx"
KINDS = ["KIND_GPU", "KIND_AUTO", "KIND_MODEL", "KIND_CPU"]
QUEUES = [
    "",
    "default_queue_policy { max_queue_size: 1 default_timeout_microseconds: 1 }",
    "default_queue_policy { timeout_action: DELAY }",
    "priority_levels: 2",
]
POLICIES = ["", "latest { num_versions: 0 }", "all { }", "specific { versions: [ 2 ] }"]


def _list(values: list[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


FIELDS = (
    "name", "platform", "batch", "input", "type", "format", "dims", "outputs", "label", "kind"
)  # fmt: skip


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    """A ModelConfig in protobuf text: valid but for up to two fields, plus optional sections."""
    broken = draw(st.sets(st.sampled_from(FIELDS), max_size=2))

    def pick(field: str, good: object, bad: st.SearchStrategy[object]) -> object:
        return draw(bad) if field in broken else good

    shapes = st.sampled_from([[64], [-1, 8, 8], [1, 8, -1], [1, -1, 8]])
    dims = pick("dims", [1, 8, 8], shapes | st.lists(small, max_size=4))
    fmt = pick("format", "FORMAT_NCHW", st.sampled_from(["FORMAT_NHWC", "7", str(2**40)]))
    outputs = pick(
        "outputs",
        ["logits", "probabilities"],
        st.lists(st.sampled_from(["logits", "probabilities", "input"]), max_size=3),
    )
    label = pick("label", "labels.txt", file_names)
    entries = []
    for name in outputs:  # type: ignore[attr-defined]
        odims = draw(st.sampled_from([[10]] * 6 + [[-1], [5], [10, 1]]))
        entries.append(
            f'{{ name: "{name}" data_type: TYPE_FP32 dims: {_list(odims)} '
            f'label_filename: "{label}" }}'
        )
    lines = [
        f'name: "{pick("name", "m", st.sampled_from(["", "other", "M"]))}"',
        f'platform: "{pick("platform", PLATFORM, st.sampled_from(["", "tensorrt_plan"]))}"',
        f"max_batch_size: {pick('batch', draw(st.integers(0, 8)), small)}",
        f'input [ {{ name: "{pick("input", "input", st.sampled_from(["x", "logits", ""]))}" '
        f"data_type: {pick('type', 'TYPE_FP32', st.sampled_from(TYPES))} format: {fmt} "
        f"dims: {_list(dims)} }} ]",  # type: ignore[arg-type]
        "output [ " + ", ".join(entries) + " ]",
        f"instance_group [ {{ kind: {pick('kind', 'KIND_CPU', st.sampled_from(KINDS))} "
        f"count: {draw(st.integers(0, 2))} }} ]",
    ]
    if draw(st.booleans()):
        sizes = draw(st.lists(st.integers(1, 8) | small, max_size=3))
        queue = draw(st.sampled_from(QUEUES))
        lines.append(
            f"dynamic_batching {{ preferred_batch_size: {_list(sizes)} "
            f"max_queue_delay_microseconds: {draw(st.integers(0, 10**6))} {queue} }}"
        )
    policy = draw(st.sampled_from(POLICIES))
    if policy:
        lines.append(f"version_policy {{ {policy} }}")
    if draw(st.booleans()):
        lines.append(f"optimization {{ graph {{ level: {draw(small)} }} }}")
    if draw(st.booleans()):
        lines.append(f'default_model_filename: "{draw(file_names)}"')
    return "\n".join(lines).encode()


@FUZZ
@given(text=configs() | damaged(configs()) | st.binary(max_size=100))
def test_configs_load_or_fail_with_a_reason(ws: Workspace, text: bytes) -> None:
    targets.check_config_pbtxt(text)


def test_the_base_config_loads_and_serves(ws: Workspace) -> None:
    # The other side: the target must reach a loaded model, not only refusals.
    targets.check_config_pbtxt(CONFIG_BASE.encode())
    assert ws.config_repository.is_ready("m")
