"""A package's public names imported on first use (PEP 562), listed once: as the ``from ...
import ...`` lines of its ``if TYPE_CHECKING:`` block, which type checkers read as they stand.

Importing one module of the package (the command line's help, a grid file check) then does
not import torch and Lightning through the package's ``__init__``.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["lazy_exports"]


def _type_checking_imports(init_file: Path) -> dict[str, tuple[str, str]]:
    """Public name -> (module, name in it) of each import in ``init_file``'s TYPE_CHECKING block."""
    tree = ast.parse(init_file.read_text(encoding="utf-8"), str(init_file))
    blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    ]
    if len(blocks) != 1:
        raise ImportError(f"{init_file}: expected one `if TYPE_CHECKING:` block of exports")
    exports: dict[str, tuple[str, str]] = {}
    for statement in blocks[0].body:
        if not isinstance(statement, ast.ImportFrom) or statement.level or not statement.module:
            raise ImportError(
                f"{init_file}:{statement.lineno}: the TYPE_CHECKING block holds only absolute "
                "`from package.module import name` lines"
            )
        for alias in statement.names:
            exports[alias.asname or alias.name] = (statement.module, alias.name)
    return exports


def lazy_exports(
    package: str, init_file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, whose ``__init__.py`` is
    ``init_file``, serving the names its ``if TYPE_CHECKING:`` block imports."""
    exports = _type_checking_imports(Path(init_file))

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = exports[name]
        return getattr(importlib.import_module(module), attribute)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
