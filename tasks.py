#!/usr/bin/env python3
"""Set up and run nnopt-lab with nothing but Python >= 3.10 and pip.

    python tasks.py lab     # create .venv, install, open your working copy (workbook/) in JupyterLab
    python tasks.py test    # create .venv, install, run the whole test suite
    python tasks.py bench   # create .venv, install, print the speed ratios against torch
    python tasks.py student # create .venv, install, write nbgrader student copies to build/student/
    python tasks.py book    # create .venv, install, execute every chapter into the offline HTML book build/book/
    python tasks.py app 05_2  # create .venv, install, serve one chapter's explorers as a Voila app
    python tasks.py setup   # only create .venv and install

The virtual environment lives in .venv/ next to this file. Installs use the exact versions
of constraints.txt (a reproducible classroom set, tested on Python 3.11) and are skipped
when pyproject.toml and constraints.txt have not changed since the last install.
Extra arguments after `test` go to pytest (e.g. `python tasks.py test -k backend`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".nnopt-lab-installed"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*cmd: str | Path, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def install_fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        h.update((ROOT / name).read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def setup() -> Path:
    """Create .venv and install the project with its test tools (once per change of the pins)."""
    if sys.version_info < (3, 10):
        sys.exit(f"nnopt-lab needs Python >= 3.10, this is {sys.version.split()[0]}")
    py = venv_python()
    if not py.exists():
        print(f"creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return py
    run(py, "-m", "pip", "install", "--quiet", "-c", "constraints.txt", "-e", ".[dev]")
    STAMP.write_text(fingerprint)
    return py


WORKBOOK = Path(os.environ.get("NNOPT_WORKBOOK") or ROOT / "workbook")   # the tests point it elsewhere
MANIFEST = ".nnopt-lab-copies.json"   # in the working copy: the hashes of each source and copy when copied


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def working_copy(source: Path = ROOT / "chapters", copy: Path = WORKBOOK) -> list[str]:
    """The learner's copy of the chapters, in ``copy`` (git-ignored ``workbook/``).

    JupyterLab saves into the files it opens, so it opens these copies and never the sources in
    ``chapters/``, which are only read. A missing copy is created; a copy the learner has not
    changed follows its source; a copy the learner changed is never overwritten: when its source
    changed too, the new source is put beside it as ``NAME.new.ipynb``. Returns what was done,
    one line per file.
    """
    copy.mkdir(parents=True, exist_ok=True)
    manifest_path = copy / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    done = []
    for src in sorted(p for p in source.iterdir() if p.suffix in (".ipynb", ".md")):
        dst, src_hash = copy / src.name, _sha256(src)
        seen = manifest.get(src.name, {})
        if not dst.exists():
            shutil.copy2(src, dst)
            done.append(f"created {dst.name}")
        elif src_hash != seen.get("source"):
            if _sha256(dst) == seen.get("copy"):        # untouched by the learner: follow the source
                shutil.copy2(src, dst)
                done.append(f"updated {dst.name}")
            elif _sha256(dst) != src_hash:              # the learner's work: keep it, offer the new one
                fresh = dst.with_name(f"{src.stem}.new{src.suffix}")
                shutil.copy2(src, fresh)
                done.append(f"kept your {dst.name}; the new version is {fresh.name}")
                manifest[src.name] = {"source": src_hash, "copy": seen.get("copy", _sha256(dst))}
                continue
        else:
            continue
        manifest[src.name] = {"source": src_hash, "copy": _sha256(dst)}
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(manifest_path)                          # written whole or not at all
    return done


def _lab_settings(copy: Path = WORKBOOK) -> Path:
    """JupyterLab settings for this server only: no news prompt, no update check (nothing leaves 127.0.0.1)."""
    folder = copy / ".jupyter-settings" / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
    return copy / ".jupyter-settings"


def lab_command(py: Path, rest: list[str], copy: Path = WORKBOOK) -> list[str]:
    """The JupyterLab command line: on 127.0.0.1 with token auth, in the working copy, chapter 1 open."""
    command = [str(py), "-m", "jupyter", "lab", "--ip=127.0.0.1", f"--ServerApp.root_dir={copy}",
               f"--LabApp.user_settings_dir={_lab_settings(copy)}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in rest:
        print("note: running as root (a container or classroom VM?): adding --allow-root", flush=True)
        command.append("--allow-root")
    return command + ["--LabApp.default_url=/lab/tree/01_why_optimize.ipynb", *rest]


def student_copies(py: Path, out: Path = ROOT / "build" / "student") -> Path:
    """nbgrader's ``generate_assignment`` over every chapter: solutions replaced, checks kept.

    The chapters are copied into a throw-away nbgrader course folder (``build/nbgrader``), so
    the sources in ``chapters/`` are never written; the student copies land in ``out``.
    """
    course = out.parent / "nbgrader"
    shutil.rmtree(course, ignore_errors=True)
    source = course / "source" / "workbook"
    source.mkdir(parents=True)
    for path in sorted((ROOT / "chapters").iterdir()):
        if path.suffix in (".ipynb", ".md"):
            shutil.copy2(path, source / path.name)
    env = {**os.environ, "PATH": f"{py.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # nbgrader runs alembic
    run(py, "-m", "nbgrader", "generate_assignment", "workbook", f"--CourseDirectory.root={course}",
        "--force", "--log-level=WARN", env=env)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(course / "release" / "workbook", out)
    print(f"student copies: {out}", flush=True)
    return out


def chapter_for(name: str, source: Path = ROOT / "chapters") -> Path:
    """The chapter that ``name`` names: its file name, number (``02_2``, ``2.2``) or slug (``data_augmentation``)."""
    stems = sorted(p.stem for p in source.glob("*.ipynb"))
    key = name.strip().removesuffix(".ipynb").replace(".", "_")
    number = "_".join(part.zfill(2) if i == 0 else part for i, part in enumerate(key.split("_")))
    found = [s for s in stems if s == key] or [s for s in stems if s.startswith(number + "_") or s == number] \
        or [s for s in stems if s.endswith("_" + key)]
    if len(found) != 1:
        raise SystemExit(f"app: {name!r} names {'no chapter' if not found else 'several: ' + ', '.join(found)}; "
                         f"give a number or slug of one of: {', '.join(stems)}")
    return source / f"{found[0]}.ipynb"


def app_command(py: Path, name: str, rest: list[str]) -> tuple[list[str], dict]:
    """Voila on one chapter with the ``nnopt_app`` template (book/jupyter/voila/templates): its explorers only.

    Bound to 127.0.0.1 with token auth; nothing is loaded from another host (see the template).
    The chapter is read from ``chapters/`` (Voila never writes a notebook). QUICK=1 unless QUICK is set.
    """
    chapter = chapter_for(name)
    command = [str(py), "-m", "voila", str(chapter), "--template=nnopt_app", "--Voila.ip=127.0.0.1",
               "--show_tracebacks=True"]
    if not any(a.startswith(("--token", "--Voila.token", "--Voila.auto_token")) for a in rest):
        command.append("--Voila.auto_token=True")
    paths = os.pathsep.join(p for p in (str(ROOT / "book" / "jupyter"), os.environ.get("JUPYTER_PATH")) if p)
    env = {**os.environ, "JUPYTER_PATH": paths, "QUICK": os.environ.get("QUICK", "1")}
    return command + rest, env


def main(argv: list[str]) -> int:
    task, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if task == "setup":
        setup()
    elif task == "lab":
        py = setup()
        # bound to this machine only, with the token JupyterLab prints (token auth stays on)
        for line in working_copy():
            print(line, flush=True)
        print(f"your working copy: {WORKBOOK} (the sources in chapters/ are never written)", flush=True)
        run(*lab_command(py, rest))
    elif task == "test":
        py = setup()
        workers = ["-n", os.environ.get("NNOPT_TEST_WORKERS", "2")]
        run(py, "-m", "pytest", *workers, *rest)
    elif task == "student":
        student_copies(setup())
    elif task == "book":
        py = setup()
        run(py, "book/build.py", *rest)   # --full, --from-executed DIR, --only NAME..., --out DIR
    elif task == "app":
        if not rest or rest[0].startswith("-"):
            print("usage: python tasks.py app NAME [voila options], NAME a chapter number or slug (02_2, data_augmentation)")
            return 2
        py = setup()
        command, env = app_command(py, rest[0], rest[1:])
        print(f"explorers of {chapter_for(rest[0]).name} (QUICK={env['QUICK']}; QUICK=0 for the full run)", flush=True)
        run(*command, env=env)
    elif task == "bench":
        py = setup()
        run(py, "benchmarks/run.py", *rest)
    else:
        print(__doc__)
        return 0 if task == "help" else 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
