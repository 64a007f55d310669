"""The offline HTML book (``python tasks.py book``, book/build.py): built from one chapter here.

What the pages load is read from the HTML: every script, stylesheet, image and frame must come
from the build folder (or be a ``data:`` URL), never from another host. That the math renders and
that a browser makes no outside request is checked in Chromium by tests/test_browser.py.
"""
import hashlib
import importlib.util
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("nnopt_book_build", ROOT / "book" / "build.py")
book = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(book)

CHAPTER = "05_2_distillation"        # a short chapter with an explorer, math and figures
EXECUTED = ROOT / "build" / "executed"


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class _Loads(HTMLParser):
    """Every URL that a page loads by itself (not the links a reader may click)."""

    LOADING = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src",
               "audio": "src", "embed": "src", "object": "data", "input": "src"}

    def __init__(self):
        super().__init__()
        self.urls, self.links, self.scripts = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.LOADING and attrs.get(self.LOADING[tag]):
            self.urls.append(attrs[self.LOADING[tag]])
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "script":
            self.scripts.append(attrs.get("type", "text/javascript"))


def _loads(page: Path) -> _Loads:
    parser = _Loads()
    text = page.read_text(encoding="utf-8")
    parser.feed(text)
    parser.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", text)          # CSS url(...) and @import url(...)
    parser.urls += re.findall(r"@import\s+['\"]([^'\"]+)", text)
    return parser


def _external(url: str) -> bool:
    return bool(re.match(r"^\s*(https?:)?//", url, re.I)) or (":" in url.split("/")[0] and not url.startswith("data:"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A one-chapter book, executed into a temporary folder (or reusing a current copy in build/executed/)."""
    out = tmp_path_factory.mktemp("book") / "site"
    executed = out.parent / "executed"
    before = _tree_digest(ROOT / "chapters")
    summary = book.build(out, quick=True, from_executed=EXECUTED, executed=executed, only=[CHAPTER], jobs=1)
    assert _tree_digest(ROOT / "chapters") == before, "building the book wrote into chapters/"
    return out, summary


def test_chapters_are_found_by_glob_and_ordered_by_chapter_number(tmp_path):
    for name in ["10_later", "02_10_x", "02_2_b", "06_capstone", "01_why", "02_1_a", "notes_no_number"]:
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in book.chapters(tmp_path)] == [
        "01_why", "02_1_a", "02_2_b", "02_10_x", "06_capstone", "10_later", "notes_no_number"]
    assert [book.chapter_number(p) for p in book.chapters(tmp_path)][:5] == ["1", "2.1", "2.2", "2.10", "6"]
    found = book.chapters()
    assert {p.name for p in found} == {p.name for p in (ROOT / "chapters").glob("*.ipynb")}
    assert found[0].stem.startswith("01_")


def _widget_output(model_id: str, text: str) -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {book.WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0},
                     "text/plain": text}}


def test_static_outputs_replace_explorers_show_progress_bars_where_they_ended_and_drop_closed_ones():
    bar = {"b": {"state": {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
           "l": {"state": {"_model_name": "HTMLModel", "value": "epochs:\u2007100%"}},
           "p": {"state": {"_model_name": "FloatProgressModel", "value": 5.0, "max": 5.0}},
           "r": {"state": {"_model_name": "HTMLModel", "value": "\u20075/5\u2007[00:01&lt;00:00]"}}}
    nb = {"metadata": {"widgets": {book.WIDGET_STATE: {"state": {"a": {}, **bar, "c": {}}}}}, "cells": [
        {"cell_type": "code", "outputs": [_widget_output("a", "VBox(children=(IntSlider(value=3),))")]},
        {"cell_type": "code", "outputs": [_widget_output("b", "epochs:   0%|          | 0/5 [00:00<?, ?it/s]"),
                                          {"output_type": "stream", "name": "stdout", "text": "done\n"}]},
        {"cell_type": "code", "outputs": [_widget_output("closed", "epochs:  20%|█ | 1/5")]},
        {"cell_type": "code", "outputs": [_widget_output("c", "a meter without its widgets: 3/5")]},
    ]}
    out = book.static_outputs(nb, "05_2")
    assert "widgets" not in out["metadata"]
    first, second, third, fourth = (c["outputs"] for c in out["cells"])
    assert list(first[0]["data"]) == ["text/html"] and "python tasks.py app 05_2" in first[0]["data"]["text/html"]
    assert second[0]["data"] == {"text/plain": "epochs: 100%|██████████| 5/5 [00:01<00:00]"}   # where it ended
    assert second[1]["text"] == "done\n"
    assert third == []
    assert fourth[0]["data"] == {"text/plain": "a meter without its widgets: 3/5"}


def test_links_between_notebooks_become_links_between_pages():
    page = ('<a href="GLOSSARY.md">g</a> <a href="03_2_pruning.ipynb#magnitude">p</a> <a href="chapters/01_a.ipynb">a</a>'
            ' <a href="99_not_built.ipynb">n</a> <a href="https://arxiv.org/abs/1503.02531">paper</a> <a href="README.md">r</a>')
    assert book.rewrite_links(page, {"03_2_pruning", "01_a"}) == (
        '<a href="glossary.html">g</a> <a href="03_2_pruning.html#magnitude">p</a> <a href="01_a.html">a</a>'
        ' <a href="99_not_built.ipynb">n</a> <a href="https://arxiv.org/abs/1503.02531">paper</a> <a href="README.md">r</a>')


def test_run_facts_read_papermills_duration_and_the_backend_line():
    nb = {"metadata": {"papermill": {"duration": 12.5}}, "cells": [
        {"cell_type": "code", "outputs": [{"output_type": "stream", "text": ["backend: torch-cpu, QUICK=False\n"]}]},
        {"cell_type": "code", "outputs": [{"output_type": "error", "ename": "ValueError"}]}]}
    assert book.run_facts(nb) == {"seconds": 12.5, "backend": "torch-cpu", "quick": False, "errored": True}


@pytest.mark.notebook
def test_the_book_has_contents_in_order_with_run_time_and_backend_and_the_glossary(built):
    out, summary = built
    index = (out / "index.html").read_text(encoding="utf-8")
    assert summary["chapters"] == [f"{CHAPTER}.html"] and not summary["errored"]
    row = re.search(rf'<tr>\s*<td>5\.2</td>\s*<td><a href="{CHAPTER}\.html">(.*?)</a></td>\s*<td>QUICK</td>'
                    r'\s*<td>(\w[\w-]*)</td>\s*<td>([\d.]+) s</td>', index)
    assert row, f"no contents row for {CHAPTER} with mode, backend and time in index.html"
    assert "distillation" in row.group(1).lower() and row.group(2) == "numpy" and float(row.group(3)) > 0
    glossary = (out / "glossary.html").read_text(encoding="utf-8")
    assert "知识蒸馏" in glossary and "<table" in glossary
    page = (out / f"{CHAPTER}.html").read_text(encoding="utf-8")
    assert re.search(r"QUICK run on numpy in [\d.]+ s", page), "the page does not say how it was run"
    assert 'href="index.html"' in page and 'href="glossary.html"' in page


@pytest.mark.notebook
def test_the_pages_show_figures_and_explain_explorers_and_hold_no_widget_state(built):
    out, _ = built
    page = (out / f"{CHAPTER}.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) >= 2, "the chapter's figures are missing"
    assert "nnopt-explorer-note" in page and "python tasks.py app 05_2" in page
    assert "widget-state+json" not in page and "widget-view+json" not in page
    assert "Traceback" not in page and "jp-OutputArea-error" not in page


@pytest.mark.notebook
def test_every_file_a_page_loads_is_in_the_build(built):
    out, _ = built
    pages = sorted(out.glob("*.html"))
    assert len(pages) == 3
    for page in pages:
        loads = _loads(page)
        external = [u for u in loads.urls if _external(u)]
        assert not external, f"{page.name} loads from another host: {external[:5]}"
        local = {u.split("?")[0].split("#")[0] for u in loads.urls if not u.startswith("data:")}
        missing = [u for u in local if u and not (out / u).exists()]
        assert not missing, f"{page.name} loads files missing from the build: {missing}"
        assert any("mathjax/MathJax.js" in u for u in loads.urls), f"{page.name} does not load the local MathJax"
        assert not any("require" in u for u in loads.urls)
    mathjax = out / "mathjax"
    assert (mathjax / "config" / "TeX-AMS-MML_HTMLorMML-full.js").exists()
    assert list((mathjax / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").rglob("*.woff"))


@pytest.mark.notebook
def test_an_executed_copy_is_reused_only_for_the_same_source_and_mode(built, tmp_path):
    out, summary = built
    copies = out.parent / "executed"
    copy = (copies if summary["executed"] else EXECUTED) / f"{CHAPTER}.ipynb"
    source = ROOT / "chapters" / f"{CHAPTER}.ipynb"
    assert book.is_current(copy, source, quick=True)
    assert not book.is_current(copy, source, quick=False)
    nb = json.loads(copy.read_text(encoding="utf-8"))
    nb["metadata"]["nnopt_lab"]["source_sha256"] = "0" * 64
    stale = tmp_path / copy.name
    stale.write_text(json.dumps(nb), encoding="utf-8")
    assert not book.is_current(stale, source, quick=True)
    nb["metadata"]["nnopt_lab"]["source_sha256"] = book._sha256(source)
    nb["cells"][-1].setdefault("outputs", []).append({"output_type": "error", "ename": "E", "evalue": "", "traceback": []})
    stale.write_text(json.dumps(nb), encoding="utf-8")
    assert not book.is_current(stale, source, quick=True), "a run that stopped at an error was reused"
    again = book.build(tmp_path / "again", quick=True, from_executed=copy.parent, executed=tmp_path / "unused",
                       only=[CHAPTER])
    assert again["executed"] == [] and again["reused"] == [f"{CHAPTER}.ipynb"]
    assert not (tmp_path / "unused").exists()
