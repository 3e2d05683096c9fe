"""stride data: pack a data set into parquet shards with a manifest, or describe one."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from stride.commands._paths import local_path

NAME = "data"
HELP = "pack a data set into parquet shards (a folder, the digits, ...), or describe one"
ORDER = 15


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    pack = sub.add_parser(
        "pack",
        help="pack a data set into parquet shards plus manifest.json",
        description="Pack SOURCE (a folder of class subfolders, a path or URI, or a data set "
        "name such as digits) into parquet shards at --out, resized to data.image_size, split "
        "as training splits it, with a manifest. Packing again into the same --out is a "
        "no-op; into one that holds anything else it is refused.",
    )
    pack.add_argument(
        "source", help="a folder (path or URI such as s3://BUCKET/PREFIX), or a data set name"
    )
    pack.add_argument("--out", required=True, help="where the shards go: a path or a URI")
    pack.add_argument(
        "--config",
        type=local_path,
        help="take the data section (image_size, channels, split) from this run config",
    )
    pack.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.image_size=[32,32] (repeatable)",
    )
    pack.add_argument("--shard-mb", type=float, default=64.0, help="shard size in MiB (default 64)")
    pack.add_argument(
        "--encoding",
        default="auto",
        help="raw (pixels), png, jpeg, or auto: raw up to 64x64x3, else png (default auto)",
    )
    pack.add_argument(
        "--address",
        default=None,
        help="Ray cluster address for a folder's decoding (default: env RAY_ADDRESS, else "
        "a local instance)",
    )
    pack.add_argument("--quiet", action="store_true", help="no progress bar")
    describe = sub.add_parser("describe", help="print a packed data set's manifest")
    describe.add_argument("location", help="the packed data set: a path or a URI")
    describe.add_argument("--json", action="store_true", help="the whole manifest as JSON")


def run(args: argparse.Namespace) -> int:
    if args.action == "pack":
        return _pack(args)
    return _describe(args)


def _spec(args: argparse.Namespace) -> Any:
    from pipeline.config import parse_config, read_config_file
    from pipeline.data import DATASETS

    base = read_config_file(args.config) if args.config else {}
    source = args.source
    if source in DATASETS:
        where = [f"data.name={source}"]
    else:
        root = source if "://" in source else os.path.abspath(os.path.expanduser(source))
        where = ["data.name=folder", f"data.root={json.dumps(root)}"]
    cfg = parse_config(base, [*args.overrides, *where])
    return cfg.data


def _pack(args: argparse.Namespace) -> int:
    from pipeline.datafiles import DataRoot
    from pipeline.packing import pack

    spec = _spec(args)
    out = DataRoot.parse(args.out)
    if spec.name == "folder":
        from pipeline.ray_train import ensure_ray

        ensure_ray(args.address)
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(unit="img", desc="packing", dynamic_ncols=True, disable=None, file=sys.stderr)
    try:
        result = pack(
            spec,
            out,
            shard_mb=args.shard_mb,
            encoding=args.encoding,
            progress=None if bar is None else bar.update,
        )
    finally:
        if bar is not None:
            bar.close()
    manifest = result.manifest
    if not result.written:
        print(f"{out}: already packed from the same source and settings; nothing to do")
        print(f"manifest checksum: {manifest.checksum}")
        return 0
    for note in result.skipped:
        print(f"skipped: {note}", file=sys.stderr)
    print(
        f"packed {result.images:,} images in {result.seconds:.1f} s "
        f"({result.images / max(result.seconds, 1e-9):,.0f} images/s) into {out}"
    )
    print(_summary(manifest))
    return 0


def _summary(manifest: Any) -> str:
    from pipeline.tables import format_table

    data = manifest.data
    c, h, w = manifest.shape
    lines = [
        f"source: {data['source']['location']} ({data['source']['name']})",
        f"images: {c}x{h}x{w} uint8, {manifest.encoding}; {len(manifest.class_names)} "
        f"classes: {', '.join(manifest.class_names[:10])}"
        + (" ..." if len(manifest.class_names) > 10 else ""),
        "mean: "
        + ", ".join(f"{v:.4f}" for v in manifest.mean)
        + "  std: "
        + ", ".join(f"{v:.4f}" for v in manifest.std),
    ]
    rows = []
    for split in ("train", "val", "test"):
        shards = manifest.shards(split)
        size = sum(s.bytes for s in shards)
        rows.append((split, f"{manifest.rows(split):,}", str(len(shards)), f"{size / 2**20:,.1f}"))
    table = format_table(
        ("split", "images", "shards", "MiB"), rows, ("left", "right", "right", "right")
    )
    skipped = data.get("skipped") or []
    tail = [f"skipped when packed: {len(skipped)}"] if skipped else []
    return "\n".join([*lines, table, *tail, f"manifest checksum: {manifest.checksum}"])


def _describe(args: argparse.Namespace) -> int:
    from pipeline.datafiles import DataRoot
    from pipeline.manifest import read_manifest

    manifest = read_manifest(DataRoot.parse(args.location))
    if args.json:
        print(json.dumps(manifest.data, indent=2))
    else:
        print(_summary(manifest))
    return 0
