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
