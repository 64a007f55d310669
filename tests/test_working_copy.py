"""``python tasks.py lab`` opens a working copy: JupyterLab never writes into ``chapters/``, and a
learner's changed copy is never overwritten (``tasks.working_copy``)."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tasks", ROOT / "tasks.py")
tasks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tasks)


@pytest.fixture
def folders(tmp_path):
    source, copy = tmp_path / "chapters", tmp_path / "workbook"
    source.mkdir()
    (source / "01_a.ipynb").write_text("v1")
    (source / "GLOSSARY.md").write_text("g1")
    (source / "notes.txt").write_text("not a chapter")
    return source, copy


def test_missing_copies_are_created_and_the_sources_are_only_read(folders):
    source, copy = folders
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    assert tasks.working_copy(source, copy) == ["created 01_a.ipynb", "created GLOSSARY.md"]
    assert (copy / "01_a.ipynb").read_text() == "v1" and not (copy / "notes.txt").exists()
    assert tasks.working_copy(source, copy) == []                       # nothing to do the second time
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_an_untouched_copy_follows_its_source(folders):
    source, copy = folders
    tasks.working_copy(source, copy)
    (source / "01_a.ipynb").write_text("v2")
    assert tasks.working_copy(source, copy) == ["updated 01_a.ipynb"]
    assert (copy / "01_a.ipynb").read_text() == "v2"


def test_a_learners_work_is_kept_and_the_new_source_offered_beside_it(folders):
    source, copy = folders
    tasks.working_copy(source, copy)
    (copy / "01_a.ipynb").write_text("my answers")
    assert tasks.working_copy(source, copy) == []                       # source unchanged: nothing happens
    (source / "01_a.ipynb").write_text("v2")
    assert tasks.working_copy(source, copy) == ["kept your 01_a.ipynb; the new version is 01_a.new.ipynb"]
    assert (copy / "01_a.ipynb").read_text() == "my answers"
    assert (copy / "01_a.new.ipynb").read_text() == "v2"
    assert tasks.working_copy(source, copy) == []                       # offered once
    assert (copy / "01_a.ipynb").read_text() == "my answers"


def test_a_copy_made_before_the_manifest_existed_is_kept(folders):
    source, copy = folders
    copy.mkdir()
    (copy / "01_a.ipynb").write_text("older work")
    tasks.working_copy(source, copy)
    assert (copy / "01_a.ipynb").read_text() == "older work"
    assert (copy / "01_a.new.ipynb").read_text() == "v1"
    assert json.loads((copy / tasks.MANIFEST).read_text())["01_a.ipynb"]["source"]


def test_lab_runs_on_the_working_copy_on_localhost_with_chapter_1_and_no_news(tmp_path):
    command = tasks.lab_command(Path("python"), ["--port", "8899"], copy=tmp_path)
    assert "--ip=127.0.0.1" in command and f"--ServerApp.root_dir={tmp_path}" in command
    assert "--LabApp.default_url=/lab/tree/01_why_optimize.ipynb" in command
    assert "--LabApp.news_url=None" in command and not any("token=" in c or "--IdentityProvider" in c for c in command)
    settings = tmp_path / ".jupyter-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    assert json.loads(settings.read_text()) == {"fetchNews": "false", "checkForUpdates": False}
    assert command[-2:] == ["--port", "8899"]


def test_app_names_a_chapter_by_number_or_slug_and_refuses_an_unclear_name(tmp_path):
    for stem in ["01_why", "02_1_data_cleaning", "02_2_data_augmentation", "06_capstone"]:
        (tmp_path / f"{stem}.ipynb").write_text("{}")
    find = lambda name: tasks.chapter_for(name, tmp_path).stem                # noqa: E731
    assert find("02_2") == find("2.2") == find("data_augmentation") == find("02_2_data_augmentation.ipynb") \
        == "02_2_data_augmentation"
    assert find("1") == find("01") == "01_why" and find("6") == "06_capstone"
    with pytest.raises(SystemExit, match="several: 02_1_data_cleaning, 02_2_data_augmentation"):
        find("02")
    with pytest.raises(SystemExit, match="no chapter.*01_why"):
        find("pruning")


def test_app_serves_one_chapter_with_the_offline_template_on_localhost_with_a_token(monkeypatch):
    monkeypatch.delenv("QUICK", raising=False)
    command, env = tasks.app_command(Path("py"), "05_2", ["--port=8867"])
    assert command[:4] == ["py", "-m", "voila", str(ROOT / "chapters" / "05_2_distillation.ipynb")]
    assert "--template=nnopt_app" in command and "--Voila.ip=127.0.0.1" in command
    assert "--Voila.auto_token=True" in command and command[-1] == "--port=8867"
    assert env["QUICK"] == "1" and env["JUPYTER_PATH"].split(os.pathsep)[0] == str(ROOT / "book" / "jupyter")
    template = ROOT / "book" / "jupyter" / "voila" / "templates" / "nnopt_app" / "index.html.j2"
    assert template.exists() and "cdn" not in template.read_text().lower().replace("a cdn", "")
    given, _ = tasks.app_command(Path("py"), "05_2", ["--Voila.token=abc"])
    assert "--Voila.auto_token=True" not in given                           # the caller's token is kept
    monkeypatch.setenv("QUICK", "0")
    assert tasks.app_command(Path("py"), "05_2", [])[1]["QUICK"] == "0"


def test_the_working_copy_folder_can_be_moved_for_tests(tmp_path, monkeypatch):
    monkeypatch.setenv("NNOPT_WORKBOOK", str(tmp_path / "elsewhere"))
    moved = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(moved)
    assert moved.WORKBOOK == tmp_path / "elsewhere"
