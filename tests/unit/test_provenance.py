"""Which code computed a result: the import closure of a package module, read from the sources
without importing them, and a digest of its files."""

from __future__ import annotations

import shutil

import pytest

from vaeops import provenance
from vaeops.provenance import closure_files, code_digest, import_closure


@pytest.fixture
def package(tmp_path, monkeypatch):
    """`write(relative, text)` writes a module of a stand-in `vaeops` package in tmp_path, which
    provenance reads instead of the real one; its caches are cleared before and after."""
    root = tmp_path / "vaeops"
    monkeypatch.setattr(provenance, "PACKAGE_DIR", root)
    import_closure.cache_clear()
    code_digest.cache_clear()

    def write(relative: str, text: str = "") -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        import_closure.cache_clear()
        code_digest.cache_clear()

    yield write
    import_closure.cache_clear()
    code_digest.cache_clear()


def test_given_a_module_graph_when_closed_then_every_import_form_and_parent_package_counts(
    package,
):
    package("__init__.py")
    package("entry.py", "import os\nfrom vaeops.lib import helper\nimport vaeops.plain\n")
    package("lib/__init__.py", "")
    package("lib/helper.py", "def f():\n    from vaeops.lazy import thing\n    return thing\n")
    package("lazy.py", "thing = 1\n")
    package("plain.py", "from vaeops.lib.helper import f\n")
    package("unused.py", "import vaeops.entry\n")  # imports the entry; nothing imports it

    closure = import_closure("vaeops.entry")

    assert closure == {
        "vaeops",
        "vaeops.entry",
        "vaeops.lib",
        "vaeops.lib.helper",  # `from package import module`
        "vaeops.lazy",  # imported inside a function
        "vaeops.plain",
    }
    assert [path.name for path in closure_files("vaeops.lazy")] == ["__init__.py", "lazy.py"]


def test_given_the_prepare_step_when_closed_then_it_holds_the_split_code_but_no_tracking():
    closure = import_closure("vaeops.steps.prepare")

    assert {"vaeops.data.splits", "vaeops.config", "vaeops.steps", "vaeops"} <= closure
    assert "vaeops.tracking" not in closure
    assert "vaeops.steps.train" not in closure


def test_given_the_model_entry_when_closed_then_it_holds_the_serving_code_only():
    closure = import_closure("vaeops.pyfunc_entry")

    assert {"vaeops.serving", "vaeops.checkpoints", "vaeops.models.autoencoder"} <= closure
    assert not closure & {"vaeops.cli", "vaeops.tracking", "vaeops.registry", "vaeops.steps"}


@pytest.fixture
def copied_package(tmp_path, monkeypatch):
    """A copy of the real package that provenance reads instead (caches cleared around it)."""
    copy = tmp_path / "vaeops"
    shutil.copytree(provenance.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE_DIR", copy)
    import_closure.cache_clear()
    code_digest.cache_clear()
    yield copy
    import_closure.cache_clear()
    code_digest.cache_clear()


def test_given_a_copy_of_the_package_when_digested_then_it_equals_the_installed_digest(
    copied_package, monkeypatch
):
    copied = code_digest("vaeops.steps.prepare")
    monkeypatch.undo()  # back to the installed package
    code_digest.cache_clear()
    import_closure.cache_clear()

    assert code_digest("vaeops.steps.prepare") == copied


def test_given_an_edit_inside_the_closure_when_digested_again_then_the_digest_changes(
    copied_package,
):
    before = code_digest("vaeops.steps.prepare")

    splits = copied_package / "data" / "splits.py"
    splits.write_text(splits.read_text() + "\n# an edit\n")
    code_digest.cache_clear()

    assert code_digest("vaeops.steps.prepare") != before


def test_given_an_edit_outside_the_closure_when_digested_again_then_the_digest_is_unchanged(
    copied_package,
):
    before = code_digest("vaeops.steps.prepare")

    tracking = copied_package / "tracking.py"
    tracking.write_text(tracking.read_text() + "\n# an edit\n")
    code_digest.cache_clear()

    assert code_digest("vaeops.steps.prepare") == before
