"""The project root is found by walking up, like git and dvc find theirs; DVC_ROOT names the
store of a queued experiment's temporary copy."""

from __future__ import annotations

import pytest

from vaeops.project import ProjectNotFound, find_root, store_root


def make_project(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")
    (folder / "params.yaml").write_text("{}\n")
    return folder


def test_given_a_subfolder_of_a_project_when_searched_then_the_project_root_is_found(tmp_path):
    root = make_project(tmp_path / "study")
    deep = root / "src" / "pkg"
    deep.mkdir(parents=True)

    assert find_root(deep) == root
    assert find_root(root) == root


def test_given_no_start_when_searched_then_the_current_folder_is_the_start(tmp_path, monkeypatch):
    root = make_project(tmp_path / "study")
    (root / "outputs").mkdir()
    monkeypatch.chdir(root / "outputs")

    assert find_root() == root


def test_given_nested_projects_when_searched_then_the_nearest_one_wins(tmp_path):
    outer = make_project(tmp_path / "outer")
    inner = make_project(outer / "inner")

    assert find_root(inner) == inner
    assert find_root(outer) == outer


def test_given_a_folder_with_only_one_of_the_two_files_when_searched_then_it_is_passed_over(
    tmp_path,
):
    root = make_project(tmp_path / "study")
    half = root / "notebooks"
    half.mkdir()
    (half / "params.yaml").write_text("{}\n")  # a params file alone is not a project

    assert find_root(half) == root


def test_given_a_folder_outside_any_project_when_searched_then_project_not_found_says_so(
    tmp_path,
):
    outside = tmp_path / "scratch"
    outside.mkdir()
    (outside / "params.yaml").write_text("{}\n")

    with pytest.raises(ProjectNotFound) as caught:
        find_root(outside)

    assert str(outside) in str(caught.value)
    assert "dvc.yaml" in str(caught.value) and "--params" in str(caught.value)


def test_given_no_dvc_root_when_asked_for_the_store_then_it_is_the_project_root(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    root = make_project(tmp_path / "study")

    assert store_root(root) == root


def test_given_dvc_root_of_a_project_when_asked_for_the_store_then_it_is_dvc_root(
    tmp_path, monkeypatch
):
    parent = make_project(tmp_path / "repository")
    temporary_copy = make_project(tmp_path / "exp-copy")
    monkeypatch.setenv("DVC_ROOT", str(parent))

    assert store_root(temporary_copy) == parent


def test_given_dvc_root_without_a_pipeline_when_asked_for_the_store_then_it_is_ignored(
    tmp_path, monkeypatch
):
    root = make_project(tmp_path / "study")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "not-a-project"))

    assert store_root(root) == root
