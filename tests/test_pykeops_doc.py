"""The examples of docs/pykeops.md run, in order, and stay true."""

import re
from pathlib import Path

import pytest

import kernla.compat

DOC = Path(__file__).resolve().parents[1] / "docs" / "pykeops.md"


def test_examples_run():
    pytest.importorskip("torch")

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    try:
        for code in blocks:
            exec(compile(code, str(DOC), "exec"), namespace)
    finally:
        kernla.compat.uninstall_pykeops()
