r"""A griffe extension for the API reference: kernla's docstrings are written for reST, the site is Markdown.

It rewrites every docstring of the loaded package before mkdocstrings renders it:

- ``:func:`x```, ``:class:`~a.b.C``` and the other Sphinx roles become code spans (``~`` keeps the last part);
- reST's double-backtick literals become Markdown code spans;
- doctest examples (``>>>`` lines and their output) and ``::`` literal blocks become fenced code blocks;
- numpy-style section titles (``Parameters`` over a line of dashes) become bold lines (the site parses no sections);
- an attribute without a docstring takes the ``#:`` comment lines above it (Sphinx's convention, used in kernla).

Loaded by mkdocs.yml (``extensions: [docs/griffe_rst.py:RestToMarkdown]``).

>>> rest_to_markdown("See :func:`~kernla.linalg.eigsh` and ``K @ b``.\n\n>>> 1 + 1\n2").splitlines()
['See `eigsh` and `K @ b`.', '', '```pycon', '>>> 1 + 1', '2', '```']
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const|term):`(~?)([^`]+)`")
LITERAL = re.compile(r"``(.+?)``")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _fence_blocks(lines: list[str]) -> list[str]:
    """Doctest runs and ``::`` literal blocks as fenced code; everything else unchanged."""
    out: list[str] = []
    k = 0
    while k < len(lines):
        line = lines[k]
        stripped = line.strip()
        if stripped.startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            block = []
            while k < len(lines) and lines[k].strip():
                block.append(lines[k][len(indent) :] if lines[k].startswith(indent) else lines[k].strip())
                k += 1
            out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
            continue
        if stripped.endswith("::") and not stripped.startswith(">>>"):
            out.append(line[:-1] if stripped != "::" else "")
            k += 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            base = len(line) - len(line.lstrip())
            block = []
            while k < len(lines) and (not lines[k].strip() or len(lines[k]) - len(lines[k].lstrip()) > base):
                block.append(lines[k])
                k += 1
            while block and not block[-1].strip():
                block.pop()
            inner = min(len(b) - len(b.lstrip()) for b in block if b.strip()) if block else 0
            pad = " " * base
            out += ["", f"{pad}```text", *(pad + b[inner:] for b in block), f"{pad}```", ""]
            continue
        out.append(line)
        k += 1
    return out


def _sections(lines: list[str]) -> list[str]:
    """``Title`` over ``-----`` as a bold line."""
    out: list[str] = []
    for line in lines:
        if out and out[-1].strip() and set(line.strip()) == {"-"} and len(line.strip()) >= 3:
            out[-1] = f"**{out[-1].strip()}**\n"
        else:
            out.append(line)
    return out


def comment_doc(lines: list[str], lineno: int) -> str | None:
    """The ``#:`` comment lines just above line ``lineno`` (1-based), joined; None without any."""
    k, found = lineno - 2, []
    while k >= 0 and lines[k].lstrip().startswith("#:"):
        found.insert(0, lines[k].lstrip()[2:].strip())
        k -= 1
    return " ".join(found) or None


def rest_to_markdown(text: str) -> str:
    """The Markdown form of one reST docstring (see the module docstring)."""
    lines = _fence_blocks(_sections(text.splitlines()))
    fenced = False
    for k, line in enumerate(lines):
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines[k] = LITERAL.sub(r"`\1`", ROLE.sub(_role, line))
    return "\n".join(lines)


@functools.cache
def _source_lines(path: Path) -> list[str]:
    return Path(path).read_text().splitlines()


class RestToMarkdown(griffe.Extension):
    """Rewrite every docstring of a loaded package from reST to Markdown."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        stack: list[griffe.Object | griffe.Alias] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.is_alias or id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is None and obj.is_attribute and obj.lineno and obj.filepath:
                text = comment_doc(_source_lines(obj.filepath), obj.lineno)
                if text:
                    obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
            if obj.docstring is not None:
                obj.docstring.value = rest_to_markdown(obj.docstring.value)
            stack.extend(obj.members.values())
