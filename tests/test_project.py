"""Project rules that keep the workbook honest: from scratch, clean notebooks, synced installs."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nnopt_lab"
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))

# Who may import what. Everything else in nnopt_lab is technique code: array API only.
REFERENCE_LIBS = ("numpy", "torch", "sklearn", "scipy")
ALLOWED = {
    "backend.py": {"numpy", "torch"},              # the one place that names the array libraries
    "reference.py": {"torch"},                     # the production references the checks use
    "datasets.py": {"sklearn.datasets", "mnist1d"},  # loading bundled/generated data, not a technique
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_technique_code_is_from_scratch(path):
    allowed = ALLOWED.get(str(path.relative_to(PACKAGE)), set())
    for name in _imports(path):
        if name.split(".")[0] in REFERENCE_LIBS or name.split(".")[0] == "mnist1d":
            assert any(name == a or name.startswith(a + ".") for a in allowed), (
                f"{path.relative_to(ROOT)} imports {name}: technique code must use the array API "
                f"through nnopt_lab.backend (allowed here: {sorted(allowed) or 'nothing'})")
    if path.name not in ("backend.py", "reference.py"):   # code (not docstrings) naming the libraries
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hits = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in ("np", "numpy", "torch")}
        assert not hits, f"{path.relative_to(ROOT)} names {sorted(hits)}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs_and_with_python3_kernel(nb):
    data = json.loads(nb.read_text(encoding="utf-8"))
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert not [i for i, c in enumerate(code) if c.get("outputs")], f"{nb.name} has stored outputs"
    assert not [i for i, c in enumerate(code) if c.get("execution_count")], f"{nb.name} has execution counts"
    assert data["metadata"]["kernelspec"]["name"] == "python3"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{nb.name} needs exactly one cell tagged 'parameters' (papermill)"
    assert "QUICK" in "".join(tagged[0]["source"]) and "BACKEND" in "".join(tagged[0]["source"])


def _names(requirements) -> set[str]:
    return {re.split(r"[<>=!~ ;\[]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["dev"])
    conda_names = {"pytorch": "torch"}
    listed = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s+- ([A-Za-z0-9_.\-]+)", line)
        if m and m.group(1) not in ("python", "pip", "pip:", "conda-forge"):
            name = m.group(1).lower()
            listed.add(conda_names.get(name, name))
    assert listed == wanted, f"only in pyproject: {sorted(wanted - listed)}; only in environment.yml: {sorted(listed - wanted)}"


def test_constraints_pin_every_dependency_exactly():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["dev"])
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split(";")[0].split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    assert wanted <= set(pins), f"not pinned: {sorted(wanted - set(pins))}"
    assert pins["torch"] == "2.13.0"


def test_pyproject_uses_ranges_not_exact_pins():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    exact = [r for r in project["dependencies"] if "==" in r]
    assert not exact, f"exact pins belong in constraints.txt, not the package metadata: {exact}"


def test_readme_quick_start_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python tasks.py lab" in readme and "python tasks.py test" in readme
    assert "tasks.py test" in ci


SEE_LINE = re.compile(r"See:\s*(.*)")
NOTEBOOK_REF = re.compile(r"chapters/[^\s,;:()`'\"]+")


def _see_references():
    """``(file:line, reference)`` for every ``chapters/...`` named on a "See:" line in nnopt_lab/."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = SEE_LINE.search(line)
            if match:
                refs = NOTEBOOK_REF.findall(match.group(1))
                where = f"{path.relative_to(ROOT)}:{number}"
                found += [(where, ref.rstrip(".")) for ref in refs] or [(where, match.group(1).strip())]
    return found


def test_every_see_line_names_a_notebook_that_exists():
    """The "See: chapters/<slug>.ipynb" lines are how a reader finds where a function is taught."""
    assert NOTEBOOK_REF.findall("See: chapters/99_gone.ipynb (seed §1), chapters/x.ipynb") == [
        "chapters/99_gone.ipynb", "chapters/x.ipynb"]
    references = _see_references()
    assert len(references) > 20, "the scan found (almost) no See: lines: is the pattern still right?"
    existing = {f"chapters/{nb.name}" for nb in NOTEBOOKS}
    broken = [f"{where}: {ref}" for where, ref in references if ref not in existing]
    assert not broken, "See: lines naming no existing notebook (chapters/*.ipynb):\n" + "\n".join(broken)


SHARED_KITS = {"exercises": {"checks"}, "widgets": {"figures"}}
# Chapters whose companions take the name of the library module they teach (preprocessing/<name>.py).
COMPANION_NAMES = {"data_cleaning": "cleaning", "data_augmentation": "augmentation",
                   "data_compression": "input_compression"}


@pytest.mark.parametrize("package", sorted(SHARED_KITS))
def test_chapter_companions_are_one_per_chapter_slug(package):
    """``widgets/<slug>.py`` and ``exercises/<slug>.py`` belong to a chapter ``NN_<slug>.ipynb``;
    only the shared kit of each package is not named after a chapter."""
    slugs = {re.sub(r"^\d+(_\d+)?_", "", p.stem) for p in (ROOT / "chapters").glob("*.ipynb")}
    slugs = {COMPANION_NAMES.get(slug, slug) for slug in slugs}
    modules = {p.stem for p in (ROOT / "nnopt_lab" / package).glob("*.py")} - {"__init__"}
    strays = modules - slugs - SHARED_KITS[package]
    assert not strays, f"nnopt_lab/{package}/ modules that name no chapter: {sorted(strays)} (chapters: {sorted(slugs)})"
