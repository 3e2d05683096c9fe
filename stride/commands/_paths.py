"""Argument types for the paths a command takes, resolved where they enter.

A relative path means "relative to where the user ran the command". Ray Train
workers, Ray tasks, servers and subprocesses start in other working directories, so
every path is made absolute here, by argparse (which also applies the type to string
defaults, so `STRIDE_RUNS` and the built-in defaults are resolved the same way).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from runstore import StoreLocation


def local_path(text: str) -> Path:
    """A local file or folder, absolute (`~` expanded)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(os.path.abspath(os.path.expanduser(text)))


def store_location(text: str) -> StoreLocation:
    """A run store (or a run in it): a folder, file://PATH or an object store URI."""
    try:
        return StoreLocation.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
