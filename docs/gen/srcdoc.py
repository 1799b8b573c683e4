"""Read the documentation that lives in source comments, for the generated reference pages.

The config schema and the run-directory module document their fields with comments:
``# ...`` lines directly above a field, a trailing ``# ...`` on its line, or Sphinx-style
``#: ...`` lines above a module constant. This module turns those comments into data, so
the reference pages are generated from the code (``docs/gen/gen_pages.py``) and a test can
check that nothing is missing.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text without '#', whether the line holds only the comment)."""
    out: dict[int, tuple[str, bool]] = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            alone = not lines[row - 1][:col].strip()
            text = tok.string.lstrip("#").lstrip(":").strip()
            if text.startswith("---"):  # a section rule, not documentation
                continue
            out[row] = (text, alone)
    return out


def _clean(text: str) -> str:
    text = text.replace("fmt: skip", "").strip()
    return "" if text.startswith("noqa") or text.startswith("type:") else text


def comment_for(lineno: int, end_lineno: int, comments: dict[int, tuple[str, bool]]) -> str:
    """The comment block directly above ``lineno`` plus a trailing comment on ``lineno..end_lineno``."""
    above: list[str] = []
    row = lineno - 1
    while row in comments and comments[row][1]:
        above.insert(0, comments[row][0])
        row -= 1
    trailing = [comments[r][0] for r in range(lineno, end_lineno + 1) if r in comments and not comments[r][1]]
    parts = [_clean(" ".join(above)), *(_clean(t) for t in trailing)]
    return " ".join(p for p in parts if p)


def class_field_comments(path: Path, class_name: str) -> dict[str, str]:
    """``{field: comment}`` for the fields (annotated, or Enum members) of a class defined in ``path``."""
    source = Path(path).read_text(encoding="utf-8")
    comments = _comments(source)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            out = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    names = [stmt.target.id]
                elif isinstance(stmt, ast.Assign):  # Enum members
                    names = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
                else:
                    continue
                for name in names:
                    out[name] = comment_for(stmt.lineno, stmt.end_lineno or stmt.lineno, comments)
            return out
    raise KeyError(f"class {class_name} not found in {path}")


def module_constant_comments(path: Path) -> dict[str, str]:
    """``{NAME: comment}`` for the module-level assignments of ``path`` (``#:`` or ``#`` above, or trailing)."""
    source = Path(path).read_text(encoding="utf-8")
    comments = _comments(source)
    out: dict[str, str] = {}
    for stmt in ast.parse(source).body:
        targets = []
        if isinstance(stmt, ast.Assign):
            targets = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            targets = [stmt.target.id]
        for name in targets:
            out[name] = comment_for(stmt.lineno, stmt.end_lineno or stmt.lineno, comments)
    return out


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
