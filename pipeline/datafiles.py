"""Where a data set's files are, and how one image is read.

The pieces the in-memory loader (`pipeline.data`), `stride data pack`
(`pipeline.packing`) and the Ray Data stream (`pipeline.streaming`) share:

- `DataRoot`: `data.root` as a local folder or an object store URI, opened through
  pyarrow's file systems with the run store's rules (options in the URI's query,
  credentials from the environment), with every failure turned into a `DataError`
  that names the location without credentials;
- `scan_folder`: the class subfolders of a folder data set (with optional `train/`,
  `val/`, `test/` splits), listed in a fixed order;
- `decode_image`: bytes to a (C, H, W) uint8 array, converted and resized bilinearly
  (what the exported model's preprocessing says), or a `DataError` naming the file.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runstore.location import StoreLocation, redact

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = ("train", "val", "test")


class DataError(ValueError):
    """Bad data or an unreachable data set: the message names the file and what is wrong."""


@dataclass(frozen=True)
class DataRoot:
    """`data.root` (or `stride data` SOURCE / --out): an absolute path or a URI."""

    location: StoreLocation

    @classmethod
    def parse(cls, text: str | StoreLocation) -> DataRoot:
        try:
            return cls(StoreLocation.parse(text))
        except ValueError as exc:
            raise DataError(f"data location: {exc}") from None

    @property
    def is_local(self) -> bool:
        return self.location.is_local

    def __str__(self) -> str:
        return str(self.location)  # no credentials, no query

    def filesystem(self) -> tuple[Any, str]:
        """(pyarrow file system, base path in it) for this location."""
        import pyarrow
        import pyarrow.fs

        if self.is_local:
            return pyarrow.fs.LocalFileSystem(), self.location.uri.rstrip("/") or "/"
        text = self.location.uri
        try:
            fs, base = pyarrow.fs.FileSystem.from_uri(text)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
            return self._fsspec()
        except OSError as exc:
            raise DataError(f"{self}: cannot open the store: {clean(str(exc), text)}") from None
        return fs, base.rstrip("/")

    def _fsspec(self) -> tuple[Any, str]:
        """Schemes pyarrow does not know (memory:// in tests), through fsspec."""
        try:
            import fsspec
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            fs, path = fsspec.core.url_to_fs(self.location.uri)
        except (ImportError, ValueError, OSError) as exc:
            raise DataError(
                f"{self}: {self.location.scheme}:// is not a file system pyarrow or fsspec "
                f"can open ({clean(str(exc), self.location.uri)})"
            ) from None
        return PyFileSystem(FSSpecHandler(fs)), str(path).rstrip("/")

    def shown(self, path: str) -> str:
        """A path of this file system as a user reads it: a local path, or scheme://key."""
        return path if self.is_local else f"{self.location.scheme}://{path.lstrip('/')}"

    def child(self, *parts: str) -> DataRoot:
        return DataRoot(self.location.child(*parts))


def clean(detail: str, uri: str) -> str:
    """An error text on one line, with the URI's credentials and options taken out."""
    text = " ".join(detail.split())
    return text.replace(uri, redact(uri)).replace(uri.split("?", 1)[0], redact(uri))


def fs_call(root: DataRoot, what: str, fn: Any, *args: Any) -> Any:
    """Call a file system operation; an OSError (unreachable store, refused credentials,
    a missing bucket) becomes a DataError naming the location and what was being done."""
    try:
        return fn(*args)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DataError(f"{root}: cannot {what}: {clean(str(exc), root.location.uri)}") from None


def read_bytes(root: DataRoot, fs: Any, path: str) -> bytes:
    """A whole file; DataError naming it when it is missing or unreadable."""
    try:
        with fs_call(root, f"read {root.shown(path)}", fs.open_input_stream, path) as f:
            return bytes(f.read())
    except FileNotFoundError:
        raise DataError(f"{root.shown(path)}: not found") from None


# ---------------------------------------------------------------- folders


@dataclass
class ImageList:
    """Image files as the file system names them, with their class indices."""

    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # bytes of each file

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class FolderLayout:
    """A folder data set: its classes, and its images by split folder (`all` when the
    folder has no `train/`: then the split is drawn, as for every undivided source)."""

    root: DataRoot
    classes: tuple[str, ...]
    parts: dict[str, ImageList]

    @property
    def images(self) -> int:
        return sum(len(p) for p in self.parts.values())


def _entries(root: DataRoot, fs: Any, path: str, recursive: bool) -> list[Any]:
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(path, recursive=recursive, allow_not_found=True)
    return list(fs_call(root, f"list {root.shown(path)}", fs.get_file_info, selector))


def _is_dir(root: DataRoot, fs: Any, path: str) -> bool:
    import pyarrow.fs

    info = fs_call(root, f"read {root.shown(path)}", fs.get_file_info, path)
    return bool(info.type == pyarrow.fs.FileType.Directory)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def scan_folder(root: DataRoot) -> FolderLayout:
    """List a folder of class subfolders: `root/<class>/**/*.png|jpg|jpeg`, or with
    `root/train/<class>/...` plus optional `root/val/` and `root/test/` beside it.

    Classes are the subfolders of `train/` (or of the root), sorted; images within a
    class are sorted by path, so the order (and so every split drawn from it) is the
    same on every machine. A class folder without images, an image in a class folder
    the training split lacks, or fewer than two classes is a DataError naming it.
    """
    fs, base = root.filesystem()
    classes, top = folder_classes(root)
    divided = "train" in top
    parts: dict[str, ImageList] = {}
    if not divided:
        parts["all"] = _list_split(root, fs, base, classes, required=True)
    else:
        for split in SPLIT_FOLDERS:
            if split in top:
                parts[split] = _list_split(
                    root, fs, f"{base}/{split}", classes, required=split == "train"
                )
    return FolderLayout(root, classes, parts)


def folder_classes(root: DataRoot) -> tuple[tuple[str, ...], set[str]]:
    """(class names, the folder's top-level folders) of a folder data set, without
    listing its images: the subfolders of `train/` when there is one, else of the root."""
    fs, base = root.filesystem()
    if not _is_dir(root, fs, base):
        raise DataError(f"data.root: {root} is not a folder")
    top = {e.base_name for e in _entries(root, fs, base, False) if _is_directory(e)}
    train_base = f"{base}/train" if "train" in top else base
    classes = tuple(
        sorted(
            e.base_name
            for e in _entries(root, fs, train_base, False)
            if _is_directory(e) and not _hidden(e.base_name)
        )
    )
    if len(classes) < 2:
        raise DataError(
            f"data.root: {root.shown(train_base)} needs at least 2 class subfolders, "
            f"found {list(classes)}"
        )
    return classes, top


def _is_directory(info: Any) -> bool:
    import pyarrow.fs

    return bool(info.type == pyarrow.fs.FileType.Directory)


def _list_split(
    root: DataRoot, fs: Any, folder: str, classes: tuple[str, ...], *, required: bool
) -> ImageList:
    """The images of one split folder, class by class (each class's paths sorted)."""
    import pyarrow.fs

    by_class: dict[str, list[tuple[tuple[str, ...], int]]] = {c: [] for c in classes}
    prefix = folder.rstrip("/") + "/"
    for info in _entries(root, fs, folder, True):
        if info.type != pyarrow.fs.FileType.File:
            continue
        rel = info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
        parts = tuple(rel.split("/"))
        if len(parts) < 2 or _hidden(parts[0]):
            continue  # a file beside the class folders, or a hidden folder
        if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            continue
        if parts[0] not in by_class:
            raise DataError(
                f"{root.shown(info.path)}: class {parts[0]!r} is not one of the training "
                f"classes {list(classes)}"
            )
        by_class[parts[0]].append((parts, int(info.size or 0)))
    out = ImageList()
    for index, name in enumerate(classes):
        found = sorted(by_class[name])  # by path components: Path's own order
        if not found and required:
            raise DataError(f"{root.shown(prefix + name)}: class folder without PNG or JPEG images")
        out.paths.extend(prefix + "/".join(p) for p, _ in found)
        out.sizes.extend(size for _, size in found)
        out.labels.extend([index] * len(found))
    return out


# ---------------------------------------------------------------- images


def decode_image(
    data: bytes, channels: int, size: tuple[int, int], *, expect: int | None = None
) -> np.ndarray:
    """Decode PNG or JPEG bytes to uint8 (C, H, W): converted to L (C = 1) or RGB
    (C = 3), resized to `size` (H, W) bilinearly. `expect`: the channel count the
    image must have before conversion (a data set whose channels were not chosen);
    ValueError says what is wrong (the caller names the file)."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    try:
        with Image.open(io.BytesIO(data)) as img:
            if expect is not None and native_channels(img.mode) != expect:
                raise ValueError(
                    f"has {native_channels(img.mode)} channel(s) (mode {img.mode}) where the "
                    f"data set's images have {expect}; set data.channels to convert all"
                )
            mode = "L" if channels == 1 else "RGB"
            resized = img.convert(mode).resize((w, h), Image.Resampling.BILINEAR)
            array = np.asarray(resized, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(_pil_message(exc)) from None
    return array.reshape(h, w, channels).transpose(2, 0, 1)


def _pil_message(exc: BaseException) -> str:
    """Pillow's message without the in-memory file object it names."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not a PNG or JPEG image (cannot identify image file)"
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip()
    return text or type(exc).__name__


def native_channels(mode: str) -> int:
    """1 for a grey image (L, LA, 1, I, F), 3 for a colour one (RGB, RGBA, P, CMYK, ...)."""
    return 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def peek_channels(root: DataRoot, path: str) -> int:
    """The channel count of one image file (the first of a data set decides)."""
    from PIL import Image, UnidentifiedImageError

    fs, _ = root.filesystem()
    data = read_bytes(root, fs, path)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return native_channels(img.mode)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {root.shown(path)}: {exc}") from None
