"""Student copies: nbgrader's ``generate_assignment`` accepts every chapter (default settings,
``enforce_metadata`` on), replaces each solution with ``raise NotImplementedError`` and keeps the
locked checks; run as a student who has not started, every check says so cleanly.

``python tasks.py student`` writes the same copies to ``build/student/``.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
NOT_STARTED = "not answered yet"  # what the shared checker kit (nnopt_lab.exercises.checks) says


def _nbgrader_cells(nb: dict, kind: str) -> list[dict]:
    return [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get(kind)]


def _generate(nb_path: Path, course: Path) -> dict:
    source = course / "source" / "workbook"
    source.mkdir(parents=True)
    shutil.copy2(nb_path, source / nb_path.name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "workbook",
                             f"--CourseDirectory.root={course}", "--force", "--log-level=ERROR"],
                            cwd=course, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"nbgrader refused {nb_path.name}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return json.loads((course / "release" / "workbook" / nb_path.name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbgrader_makes_a_student_copy_with_solutions_replaced_and_checks_kept(nb_path, tmp_path):
    source = json.loads(nb_path.read_text(encoding="utf-8"))
    solutions, checks = _nbgrader_cells(source, "solution"), _nbgrader_cells(source, "grade")
    assert solutions, f"{nb_path.name} has no nbgrader solution cell (an exercise a teacher can hand out)"
    assert len(checks) >= len(solutions), f"{nb_path.name}: every solution cell needs a locked check cell"
    for cell in checks:
        assert cell["metadata"]["nbgrader"].get("locked"), f"{nb_path.name}: check cell not locked"
    student = _generate(nb_path, tmp_path / "course")
    text = json.dumps(student)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, f"{nb_path.name}: a solution leaked"
    student_solutions = _nbgrader_cells(student, "solution")
    assert len(student_solutions) == len(solutions)
    for cell in student_solutions:
        assert "raise NotImplementedError" in "".join(cell["source"]), f"{nb_path.name}: solution not replaced"
    kept = ["".join(c["source"]) for c in _nbgrader_cells(student, "grade")]
    assert kept == ["".join(c["source"]) for c in checks], f"{nb_path.name}: a check cell changed"


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_student_who_has_not_started_is_told_so_by_every_check(nb_path, tmp_path):
    """Run the student copy in QUICK mode: each check cell reports 'not answered yet', no traceback
    through the checker's own code; every other cell runs."""
    import nbformat
    from nbclient import NotebookClient

    student = _generate(nb_path, tmp_path / "course")
    nb = nbformat.reads(json.dumps(student), as_version=4)
    env_backup = dict(os.environ)
    os.environ.update(QUICK="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(nb_path.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        grader = cell.metadata.get("nbgrader", {})
        errors = [o for o in cell.outputs if o.output_type == "error"]
        text = "".join(o.get("text", "") for o in cell.outputs) + "".join(
            o.get("ename", "") + ": " + o.get("evalue", "") for o in errors)
        if grader.get("grade"):
            assert NOT_STARTED in text, f"{nb_path.name} {grader.get('grade_id')}: no 'not started' verdict:\n{text[-800:]}"
            for error in errors:
                frames = "\n".join(error.get("traceback", []))
                assert "nnopt_lab/exercises" not in frames, (
                    f"{nb_path.name} {grader.get('grade_id')}: traceback through the checker's code")
        elif not grader.get("solution"):
            assert not errors, f"{nb_path.name}: a cell failed in the student copy:\n{text[-800:]}\n{''.join(cell.source)[:300]}"
