"""dvc.yaml's code deps are derived, not kept by hand: each stage lists exactly the library files
its command imports, so DVC reruns a stage exactly when code it runs changes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from vaeops.provenance import PACKAGE_DIR, import_closure, imports_in, module_file

REPO = Path(__file__).resolve().parents[2]
CLI = PACKAGE_DIR / "cli.py"


def stage_commands() -> dict[str, str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage["cmd"] for name, stage in stages.items()}


def command_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """The CLI's commands by name: functions decorated with `app.command(...)`."""
    commands = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if isinstance(target, ast.Attribute) and target.attr == "command":
                named = call and call.args and isinstance(call.args[0], ast.Constant)
                commands[call.args[0].value if named else node.name] = node
    return commands


def shared_cli_imports(tree: ast.Module) -> set[str]:
    """Package modules the CLI imports for every command (outside the command functions)."""
    commands = set(command_functions(tree).values())
    return set().union(*(imports_in(node) for node in tree.body if node not in commands))


def expected_code_deps(command: str) -> set[str]:
    """cli.py, what it imports for every command, and the closure of the command's own imports."""
    tree = ast.parse(CLI.read_text())
    subcommand = command.split()[1]
    function = command_functions(tree)[subcommand]
    roots = shared_cli_imports(tree) | imports_in(function)
    modules = set().union(*(import_closure(name) for name in roots))
    files = {module_file(name) for name in modules} | {CLI}
    return {str(path.relative_to(REPO)) for path in files}


@pytest.mark.parametrize("stage", sorted(stage_commands()))
def test_each_stage_lists_exactly_the_code_it_imports(stage):
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    listed = {dep for dep in spec["deps"] if dep.startswith("src/")}
    expected = expected_code_deps(stage_commands()[stage])
    assert listed == expected, (
        f"dvc.yaml stage '{stage}': missing {sorted(expected - listed)}, "
        f"not imported {sorted(listed - expected)}"
    )
