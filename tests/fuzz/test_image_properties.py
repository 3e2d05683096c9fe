"""Encoded images through the server decoder: valid files decode, damaged ones are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import targets
from services.inference.preprocess import Preprocess
from tests.fuzz.strategies import FUZZ, damaged, images

pytestmark = pytest.mark.timeout(300)
shapes = st.tuples(st.sampled_from([1, 3]), st.integers(1, 16), st.integers(1, 16))


@FUZZ
@given(data=images(), shape=shapes)
def test_every_real_png_and_jpeg_decodes_to_the_model_shape(
    data: bytes, shape: tuple[int, int, int]
) -> None:
    pre = Preprocess(*shape, (0.5,) * shape[0], (0.25,) * shape[0])
    array = pre.image_to_array(data)  # must not raise: these are valid files
    assert array.shape == shape


@FUZZ
@given(data=damaged(images()) | st.binary(max_size=200), shape=shapes)
def test_damaged_or_random_bytes_decode_or_are_invalid_input(
    data: bytes, shape: tuple[int, int, int]
) -> None:
    targets.check_image(data, *shape)
