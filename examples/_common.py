"""Helpers shared by the example scripts (imported as ``_common``: each script's folder is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path


def figure_path(name: str, out: str | None) -> Path:
    """Where to write a figure: ``out``, else ``$KERNLA_FIGURES/name``, else in the examples folder."""
    if out:
        return Path(out)
    folder = os.environ.get("KERNLA_FIGURES")
    return Path(folder) / name if folder else Path(__file__).resolve().parent / name


def scaled(n: int, least: int = 10) -> int:
    """A default size times ``$KERNLA_EXAMPLE_SCALE`` (default 1), at least ``least``.

    The docs' gallery runs every example with ``KERNLA_EXAMPLE_SCALE=0.1``: one variable shrinks them all.
    Sizes given on the command line are used as given.
    """
    return max(least, round(n * float(os.environ.get("KERNLA_EXAMPLE_SCALE", "1"))))
