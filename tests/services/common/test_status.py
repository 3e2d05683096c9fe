"""The one error table: every domain error maps to its status code, the rest to INTERNAL."""

from __future__ import annotations

import grpc
import pytest

from services.common import errors
from services.common.status import STATUS_FOR_ERROR, register_error, status_for

TABLE = [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.NotReady, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
]


@pytest.mark.parametrize(("cls", "code"), TABLE, ids=[c.__name__ for c, _ in TABLE])
def test_each_domain_error_maps_to_its_code_with_its_message(cls: type, code: object) -> None:
    got, message, expected = status_for(cls("what was wrong; expected this"))
    assert got == code
    assert message == "what was wrong; expected this"
    assert expected


def test_table_covers_every_error_class() -> None:
    classes = {
        c
        for c in vars(errors).values()
        if isinstance(c, type)
        and issubclass(c, errors.ServiceError)
        and c is not errors.ServiceError
    }
    assert classes == {c for c, _ in TABLE} == set(STATUS_FOR_ERROR) & classes


def test_subclass_of_a_domain_error_maps_like_its_parent() -> None:
    class RunNotFound(errors.ModelNotFound):
        pass

    assert status_for(RunNotFound("run x"))[0] == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("exc", [RuntimeError("/secret/path"), ValueError("x"), KeyError("k")])
def test_unexpected_errors_are_internal_and_hide_their_text(exc: Exception) -> None:
    code, message, expected = status_for(exc, request_id="rid-1")
    assert code == grpc.StatusCode.INTERNAL
    assert "rid-1" in message and str(exc) not in message
    assert not expected


def test_domain_errors_keep_their_builtin_bases() -> None:
    assert issubclass(errors.InvalidInput, ValueError)
    assert issubclass(errors.ModelNotFound, LookupError)


def test_register_error_refuses_a_second_mapping() -> None:
    with pytest.raises(ValueError, match="mapped already"):
        register_error(errors.InvalidInput, grpc.StatusCode.INTERNAL)
