"""Data sets in an object store: packed into S3 (a local moto server) with `stride data
pack`, described, and trained on streamed from there, with the run store beside them.
Credentials come from the environment (tests/conftest.py sets them for the shared Ray
instance, as every node of a real cluster has them), never from the URI."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.datafiles import DataError, DataRoot
from pipeline.manifest import read_manifest
from pipeline.ray_train import train_on_ray
from runstore import RunDir
from stride.cli import main
from tests.pipeline.conftest import tiny_config
from tests.pipeline.typed import not_none

BUCKET = "stride-data"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """A moto S3 server with one bucket; yields its URI options and the server."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if key not in os.environ:
                env.setenv(key, "stride-test")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        root = DataRoot.parse(f"s3://{BUCKET}?{options}&allow_bucket_creation=true")
        fs, _ = root.filesystem()
        fs.create_dir(BUCKET)
        yield {"options": options, "server": server}
        server.stop()


def uri(s3: dict[str, Any], prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}?{s3['options']}"


@pytest.mark.ray
@pytest.mark.slow
def test_pack_describe_and_stream_from_s3(
    ray_cluster: object, s3: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    data = uri(s3, "digits")
    assert main(["data", "pack", "digits", "--out", data, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "packed 1,797 images" in out and "manifest checksum:" in out
    assert "endpoint_override" not in out  # the location is shown without options
    assert main(["data", "pack", "digits", "--out", data, "--quiet"]) == 0
    assert "already packed" in capsys.readouterr().out
    assert main(["data", "describe", data, "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["splits"]["test"]["rows"] == 270 and manifest["image"]["encoding"] == "raw"
    cfg = tiny_config(
        **{"data.name": "parquet", "data.root": data, "training.epochs": 2}
    )  # auto: a URI streams
    runs = uri(s3, "runs")
    run, summary = train_on_ray(cfg, runs=runs, experiment="s3", name="streamed")
    assert summary.status == "completed" and not_none(summary.test_accuracy) > 0.5
    record = RunDir.at(runs, "s3", "streamed").read_config()
    assert record.data["source"] == {
        "name": "parquet",
        "location": f"s3://{BUCKET}/digits",
        "streaming": True,
        "manifest_checksum": manifest["checksum"],
        "encoding": "raw",
    }
    assert record.data["sizes"] == {"train": 1257, "val": 270, "test": 270}
    assert [r.epoch for r in run.read_metrics()] == [1, 2]


def test_refused_credentials_and_an_unreachable_store_are_named(s3: dict[str, Any]) -> None:
    import moto.settings

    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on moto checks credentials
    try:
        with pytest.raises(
            DataError, match=r"s3://stride-data/x: cannot read manifest\.json: .*ACCESS_DENIED"
        ):
            read_manifest(DataRoot.parse(uri(s3, "x")))
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    closed = "s3://nowhere/x?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    with pytest.raises(DataError, match=r"s3://nowhere/x: cannot read manifest\.json: .*connect"):
        read_manifest(DataRoot.parse(closed))
    with pytest.raises(DataError, match=r"s3://stride-data/missing: no manifest\.json"):
        read_manifest(DataRoot.parse(uri(s3, "missing")))
