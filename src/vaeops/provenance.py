"""Which code computed a result: the import closure of a module inside this package.

DVC reruns a stage when one of its `deps` changes, so a stage must list every library module its
command imports (a test derives the lists in dvc.yaml from `import_closure`). The same closure
keys the trained-variant store: a variant trained by other code is a different variant.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "vaeops"


PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(name: str) -> Path | None:
    """The source file of a package module, found on disk without importing anything (importing
    would run torch and mlflow); None when `name` is not a module (a class, say)."""
    relative = Path(*name.split(".")[1:])
    for candidate in (PACKAGE_DIR / relative / "__init__.py", PACKAGE_DIR / f"{relative}.py"):
        if candidate.is_file():
            return candidate
    return None


def is_module(name: str) -> bool:
    return module_file(name) is not None


def imported_names(path: Path) -> set[str]:
    """Every `vaeops...` module a file imports, at module level or inside functions."""
    return imports_in(ast.parse(path.read_text(), str(path)))


def imports_in(tree: ast.AST) -> set[str]:
    """Every `vaeops...` module the code under `tree` imports."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from vaeops.data import splits` imports the submodule vaeops.data.splits
            names |= {
                f"{node.module}.{alias.name}"
                for alias in node.names
                if is_module(f"{node.module}.{alias.name}")
            }
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


def with_parent_packages(name: str) -> set[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts) + 1)}


@functools.cache
def import_closure(module: str) -> frozenset[str]:
    """`module` and every package module it imports, directly or not (names, not files)."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        for member in with_parent_packages(name) - seen:
            seen.add(member)
            pending.extend(imported_names(module_file(member)) - seen)
    return frozenset(seen)


def closure_files(module: str) -> list[Path]:
    return sorted(module_file(name) for name in import_closure(module))  # type: ignore[type-var]


@functools.cache
def code_digest(module: str) -> str:
    """sha256 over the source files of `module`'s import closure (path within the package and
    bytes of each), so any edit to code the module runs gives another digest."""
    digest = hashlib.sha256()
    for path in closure_files(module):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
