"""Filling the engines' source templates: ``@NAME@`` slots replaced, none left unfilled.

Both compiling engines (``cpu/template.cpp``, ``cuda_templates/*.cu``) write their kernels as
templates with ``@NAME@`` slots (upper-case letters and underscores) and fill them here.

>>> fill("T x = @VALUE@;\\n@BODY@", {"VALUE": "1", "BODY": indent("a;\\n\\nb;", 4)})
'T x = 1;\\n    a;\\n\\n    b;'
>>> fill("@A@ @B@", {"A": "1"})
Traceback (most recent call last):
ValueError: unfilled template slots ['@B@']
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SLOT = re.compile(r"@([A-Z_]+)@")


def fill(text: str, slots: Mapping[str, str]) -> str:
    """``text`` with every ``@KEY@`` replaced by ``slots[KEY]``, in one pass (values are not rescanned).

    A slot of ``text`` missing from ``slots`` is an error: a template and its generator out of step.
    """
    left = sorted({m.group(0) for m in _SLOT.finditer(text) if m.group(1) not in slots})
    if left:
        raise ValueError(f"unfilled template slots {left}")
    return _SLOT.sub(lambda m: slots[m.group(1)], text)


def indent(text: str, n: int) -> str:
    """Every non-blank line of ``text`` indented by ``n`` spaces; blank lines left empty."""
    pad = " " * n
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())
