"""kernla's version (part of every compiled kernel's cache key)."""

__version__ = "0.1.0"
