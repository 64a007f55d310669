"""Every chapter runs top to bottom in QUICK mode, and the cells whose printed output is part of the
text (tagged ``nbval-check-output``) print the same thing when run again (nbval).

Notebooks are executed with papermill into a temporary folder: a run never writes over a source
notebook (checked). Run one chapter: ``python tasks.py test -k 01_why``.

A chapter that passes its QUICK run (with matplotlib's inline backend, so its figures are in the
outputs, as in JupyterLab) leaves its executed copy in ``build/executed/`` (git-ignored), marked with
its source's sha256: ``python tasks.py book --from-executed build/executed`` builds the HTML book
from these copies instead of running every chapter again (CI does).
"""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
EXECUTED = ROOT / "build" / "executed"   # executed QUICK copies kept for the book (book/build.py)
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
QUICK_BUDGET_S = 60  # the workbook's promise on a 2-core laptop; reported, not asserted (noisy machines)
CELL_TIMEOUT_S = 300  # a hung cell fails the test instead of stalling the suite


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def quick_env(monkeypatch):
    """QUICK mode, no display, one thread per kernel (kernels run two at a time under pytest -n 2)."""
    monkeypatch.setenv("QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")


def _execute(nb: Path, out: Path, **parameters) -> None:
    import papermill

    papermill.execute_notebook(str(nb), str(out), parameters=parameters or None, kernel_name="python3",
                               cwd=str(nb.parent), progress_bar=False, log_output=False,
                               execution_timeout=CELL_TIMEOUT_S)


def _checked_cells(nb_path: Path) -> int:
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    return sum("nbval-check-output" in c.get("metadata", {}).get("tags", []) for c in cells)


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_runs_in_quick_mode_and_its_checked_outputs_reproduce(nb, tmp_path, quick_env, monkeypatch):
    before = _digest(nb)
    executed = tmp_path / nb.name
    monkeypatch.setenv("MPLBACKEND", INLINE_BACKEND)   # figures land in the outputs (kept for the book), and nbval's
    start = time.perf_counter()
    _execute(nb, executed)
    seconds = time.perf_counter() - start                # re-run below draws them the same way
    assert _digest(nb) == before, f"running {nb.name} changed the source notebook"
    print(f"{nb.name}: QUICK run took {seconds:.1f} s (budget {QUICK_BUDGET_S} s)")

    assert _checked_cells(executed) > 0, f"{nb.name} has no cell tagged nbval-check-output (its check verdicts)"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider",
         "-p", "no:randomly", "--no-header", "-o", "addopts=", str(executed)],
        cwd=nb.parent, capture_output=True, text=True, env={**os.environ, "QUICK": "1"})
    assert result.returncode == 0, f"nbval: checked outputs of {nb.name} did not reproduce:\n{result.stdout[-4000:]}"
    _keep_for_the_book(executed, before)


def _keep_for_the_book(executed: Path, source_sha256: str) -> None:
    """Put a passing QUICK run in build/executed/, marked so that the book knows its source and mode."""
    copy = json.loads(executed.read_text(encoding="utf-8"))
    copy.setdefault("metadata", {})["nnopt_lab"] = {"source_sha256": source_sha256, "quick": True}
    EXECUTED.mkdir(parents=True, exist_ok=True)
    tmp = EXECUTED / f".{executed.name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(copy, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(EXECUTED / executed.name)              # written whole or not at all


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_runs_unchanged_on_torch_tensors(nb, tmp_path, quick_env):
    """The same chapter with BACKEND = "torch-cpu": every technique runs on torch tensors too."""
    executed = tmp_path / nb.name
    _execute(nb, executed, BACKEND="torch-cpu")
    outputs = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    printed = "".join("".join(o.get("text", "")) for c in outputs for o in c.get("outputs", []))
    assert "backend: torch-cpu" in printed, f"{nb.name} did not run on (or report) the torch-cpu backend"


FULL_BUDGET_S = 300  # a FULL run stays within minutes on a CPU; reported, not asserted (noisy machines)


@pytest.mark.full
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_runs_in_full_mode_and_its_claims_hold(nb, tmp_path, monkeypatch):
    """FULL mode: real data sizes and epochs; a false ``claim(...)`` raises and fails the chapter."""
    monkeypatch.setenv("QUICK", "0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    before = _digest(nb)
    executed = tmp_path / nb.name
    start = time.perf_counter()
    _execute(nb, executed)
    seconds = time.perf_counter() - start
    assert _digest(nb) == before, f"running {nb.name} changed the source notebook"
    cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    print(f"{nb.name}: FULL run took {seconds:.1f} s (budget {FULL_BUDGET_S} s); "
          f"{printed.count(chr(10) + '✓ ') + printed.startswith('✓ ')} checks printed ✓")
