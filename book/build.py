"""Build the offline HTML book: every chapter executed, one static site in build/book/.

    python tasks.py book                  # execute every chapter in QUICK mode, then build
    python tasks.py book --full           # the same in FULL mode (minutes)
    python tasks.py book --from-executed build/executed   # reuse executed copies (the notebook tests keep them)

Run with the project's virtual environment (``tasks.py book`` does). The chapters are found by
glob (``chapters/*.ipynb``) and ordered by their chapter number (01, 02_1, ..., 05_3, 06), which is
the seed's order. Each chapter is executed with papermill into ``build/executed/`` (FULL runs:
``build/executed-full/``; never over ``chapters/``) the way the notebook tests run it (kernel
python3, working directory ``chapters/``, QUICK or FULL, one BLAS thread per kernel), except that
matplotlib's inline backend keeps the figures; then converted with nbconvert and the template in
``book/jupyter/nbconvert/templates/nnopt_book``.

Why nbconvert with a template: it is already installed (JupyterLab and papermill need it), renders
exactly what JupyterLab shows, and needs no Node or network. Offline means every file the pages load
comes from the build: MathJax 2.7 is copied from the pip package ``jupyter-server-mathjax``
(the MathJax that the classic notebook served), require.js and the widget manager are not loaded at
all (the pages hold no live widgets: each explorer is replaced by a note, and the static figure the
chapter draws beside it is shown), and nbconvert's mermaid loader is left out. Jupyter Book /
Sphinx + myst-nb would need several new packages and still load MathJax from a CDN unless told not to.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
TEMPLATES = Path(__file__).resolve().parent / "jupyter" / "nbconvert" / "templates"
TEMPLATE = "nnopt_book"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CELL_TIMEOUT_S = 600
# figures as PNG in the outputs (what JupyterLab shows); with MPLBACKEND=Agg plt.show() would draw nothing
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# a widget's text/plain is its repr, "VBox(children=(...))"; tqdm's bars show their meter instead
_WIDGET_REPR = re.compile(r"^[A-Za-z_]\w*\(")
_BACKEND_LINE = re.compile(r"backend: ([\w\-]+)(?:, QUICK=(True|False))?")


def chapter_key(path: Path) -> tuple:
    """Sort key in the seed's order: the numbers at the start of the name (``02_1_x`` -> (2, 1))."""
    numbers = []
    for part in path.stem.split("_"):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return (tuple(numbers) or (10 ** 6,), path.stem)


def chapters(source: Path = CHAPTERS) -> list[Path]:
    """Every chapter notebook in ``source`` (by glob, never a fixed list), in the seed's order."""
    return sorted(source.glob("*.ipynb"), key=chapter_key)


def chapter_number(path: Path) -> str:
    """``02_1_data_cleaning`` -> ``"2.1"``; ``06_capstone`` -> ``"6"``."""
    return ".".join(str(n) for n in chapter_key(path)[0] if n != 10 ** 6)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def title_of(nb: dict, fallback: str) -> str:
    """The first markdown heading of the notebook (its title), without the leading ``#``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return fallback


def printed_text(nb: dict) -> str:
    return "".join("".join(o.get("text", "")) for c in nb.get("cells", []) for o in c.get("outputs", []))


def run_facts(nb: dict) -> dict:
    """Run time (papermill's record), backend and mode (the set-up cell's ``backend: X, QUICK=Y`` line)."""
    papermill = nb.get("metadata", {}).get("papermill", {})
    match = _BACKEND_LINE.search(printed_text(nb))
    quick = None if not match or match.group(2) is None else match.group(2) == "True"
    facts = nb.get("metadata", {}).get("nnopt_lab", {})
    errored = papermill.get("exception") or any(
        o.get("output_type") == "error" for c in nb.get("cells", []) for o in c.get("outputs", []))
    return {"seconds": papermill.get("duration"), "backend": match.group(1) if match else "unknown",
            "quick": facts.get("quick", quick), "errored": bool(errored)}


def execute(nb_path: Path, out: Path, quick: bool) -> Path:
    """Execute one chapter with papermill into ``out`` (a subprocess: one kernel per chapter).

    The executed copy records the source's sha256 and the mode in ``metadata.nnopt_lab``, so a
    later build can tell whether it is still current.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    source_sha256 = _sha256(nb_path)                     # the source as it was run
    env = {**os.environ, "QUICK": "1" if quick else "0", "MPLBACKEND": INLINE_BACKEND,
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    tmp = out.with_name(out.stem + ".running.ipynb")
    code = ("import sys, papermill\n"
            "papermill.execute_notebook(sys.argv[1], sys.argv[2], kernel_name='python3', cwd=sys.argv[3],"
            f" progress_bar=False, log_output=False, execution_timeout={CELL_TIMEOUT_S})\n")
    result = subprocess.run([sys.executable, "-c", code, str(nb_path), str(tmp), str(nb_path.parent)],
                            env=env, capture_output=True, text=True)
    if not tmp.exists():
        raise RuntimeError(f"papermill could not run {nb_path.name}:\n{result.stderr[-3000:]}")
    nb = json.loads(tmp.read_text(encoding="utf-8"))
    nb.setdefault("metadata", {})["nnopt_lab"] = {"source_sha256": source_sha256, "quick": quick}
    tmp.write_text(json.dumps(nb, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(out)                                    # written whole or not at all
    if result.returncode != 0:
        print(f"  ! {nb_path.name} stopped at an error (its page shows it):"
              f" {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}", flush=True)
    return out


def is_current(executed: Path, source: Path, quick: bool) -> bool:
    """An executed copy is reused when it ran the same source in the same mode, to the end without error."""
    if not executed.exists():
        return False
    nb = json.loads(executed.read_text(encoding="utf-8"))
    meta = nb.get("metadata", {})
    facts = meta.get("nnopt_lab", {})
    return (facts.get("source_sha256") == _sha256(source) and facts.get("quick") == quick and "papermill" in meta
            and not run_facts(nb)["errored"])


EXPLORER_NOTE = (
    '<div class="nnopt-explorer-note"><b>Interactive explorer.</b> It runs with a live kernel: open this '
    "chapter in JupyterLab (<code>python tasks.py lab</code>) or as an app "
    "(<code>python tasks.py app {slug}</code>). The static figure beside it shows what it draws.</div>")


def static_outputs(nb: dict, slug: str) -> dict:
    """The notebook as a static page shows it: no widget state, each explorer replaced by a note.

    A widget needs a kernel (or a widget manager loaded from a CDN) to draw; the book has neither,
    so an explorer's output becomes a note naming the commands that run it live. A progress bar
    (tqdm) becomes its meter as text, where it ended; one that was closed (``leave=False``) is dropped.
    """
    state = nb.get("metadata", {}).pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.get("cells", []):
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                kept.append(output)
                continue
            text = "".join(data.get("text/plain", ""))
            if _WIDGET_REPR.match(text):
                output["data"] = {"text/html": EXPLORER_NOTE.format(slug=slug)}
                kept.append(output)
            elif data[WIDGET_VIEW].get("model_id") in state and text.strip():
                meter = progress_meter(state, data[WIDGET_VIEW]["model_id"])
                output["data"] = {"text/plain": meter or text}     # a progress bar where it ended
                kept.append(output)
        cell["outputs"] = kept
    return nb


def progress_meter(state: dict, model_id: str, width: int = 10) -> str | None:
    """tqdm's notebook bar as text, where it ended: ``seeds: 100%|██████████| 1/1 [00:00<00:00]``.

    Its ``text/plain`` was printed when the bar appeared (0 %); the saved widget state holds the
    last values: an HBox of an HTML label, a progress bar and an HTML meter.
    """
    children = [state.get(str(c).removeprefix("IPY_MODEL_"), {}).get("state", {})
                for c in state.get(model_id, {}).get("state", {}).get("children", [])]
    bars = [c for c in children if c.get("_model_name") in ("FloatProgressModel", "IntProgressModel")]
    labels = [html.unescape(str(c.get("value", ""))).replace("\u2007", " ")
              for c in children if c.get("_model_name") == "HTMLModel"]
    if len(bars) != 1 or len(labels) != 2:
        return None
    value, top = bars[0].get("value") or 0, bars[0].get("max") or 0
    filled = round(width * min(max(value / top, 0), 1)) if top else 0
    return f"{labels[0]}|{'█' * filled}{' ' * (width - filled)}|{labels[1]}"


def _exporter():
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name=TEMPLATE)
    exporter.exclude_anchor_links = False
    return exporter


_HREF = re.compile(r'href="([^"#?]+)([#?][^"]*)?"')


def rewrite_links(page: str, chapters_in_book: set[str]) -> str:
    """Links between notebooks become links between pages: ``X.ipynb`` -> ``X.html``, the glossary too."""
    def one(match):
        target, rest = match.group(1), match.group(2) or ""
        name = target.removeprefix("./").removeprefix("chapters/")
        if name == "GLOSSARY.md":
            return f'href="glossary.html{rest}"'
        if name.endswith(".ipynb") and name[:-len(".ipynb")] in chapters_in_book:
            return f'href="{name[:-len(".ipynb")]}.html{rest}"'
        return match.group(0)
    return _HREF.sub(one, page)


def render(nb: dict, out: Path, book: dict) -> None:
    """One page with the book's template; ``book`` goes to the template as ``resources.book``."""
    import nbformat

    node = nbformat.reads(json.dumps(nb), as_version=4)   # joins the stored line lists
    body, _ = _exporter().from_notebook_node(node, resources={"book": book})
    body = rewrite_links(body, set(book.get("chapters", ())))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(out)


def markdown_page(title: str, markdown: str) -> dict:
    """A one-cell notebook holding ``markdown``: the index and the glossary go through the same template."""
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"title": title, "kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "markdown", "id": "page", "metadata": {}, "source": markdown}]}


def copy_mathjax(out: Path) -> Path:
    """MathJax 2.7 from the ``jupyter-server-mathjax`` package into ``out/mathjax`` (no CDN)."""
    import jupyter_server_mathjax

    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = out / "mathjax"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(static, target, ignore=shutil.ignore_patterns("localization", "SVG", "*.py", "__pycache__"))
    return target


def _fmt_seconds(seconds) -> str:
    return "—" if seconds is None else f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _mode(quick) -> str:
    return {True: "QUICK", False: "FULL"}.get(quick, "?")


def build(out: Path, quick: bool = True, from_executed: Path | None = None, executed: Path | None = None,
          only: list[str] | None = None, jobs: int = 2, source: Path = CHAPTERS) -> dict:
    """Execute (or reuse) every chapter and write the site to ``out``; returns a summary.

    ``from_executed``: a folder of executed copies to reuse (as the notebook tests leave them);
    a chapter missing there, run from another source or mode, or stopped at an error, is executed
    again (into ``executed``). Without it every chapter is executed: the outputs also depend on
    ``nnopt_lab``, which a source's hash does not cover.
    ``only``: substrings of chapter names, to build a part of the book (tests do).
    """
    start = time.perf_counter()
    executed = executed or ROOT / "build" / ("executed" if quick else "executed-full")
    notebooks = [p for p in chapters(source) if not only or any(o in p.stem for o in only)]
    if not notebooks:
        raise SystemExit(f"no chapter matches {only!r} in {source}")
    todo, reused, copies = [], [], {}
    for nb_path in notebooks:
        candidate = from_executed / nb_path.name if from_executed else None
        if candidate is not None and is_current(candidate, nb_path, quick):
            copies[nb_path] = candidate
            reused.append(nb_path.name)
        else:
            copies[nb_path] = executed / nb_path.name
            todo.append(nb_path)
    if reused:
        print(f"reusing {len(reused)} executed chapter(s) from {from_executed}", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(execute, p, copies[p], quick): p for p in todo}
        for future in concurrent.futures.as_completed(futures):
            nb_path = futures[future]
            future.result()
            print(f"  executed {nb_path.name} ({_mode(quick)})", flush=True)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    copy_mathjax(out)
    pages, rows = [], []
    for nb_path in notebooks:
        nb = json.loads(copies[nb_path].read_text(encoding="utf-8"))
        facts = run_facts(nb)
        number, heading = chapter_number(nb_path), title_of(nb, nb_path.stem)
        title = re.sub(rf"^{re.escape(number)}\s*[·.:-]?\s*", "", heading) if number else heading
        pages.append({"file": nb_path.stem + ".html", "number": number, "heading": heading,
                      "title": title or heading, "slug": nb_path.stem, **facts})
    total = len(pages)
    for i, (nb_path, page) in enumerate(zip(notebooks, pages)):
        nb = static_outputs(json.loads(copies[nb_path].read_text(encoding="utf-8")), _app_name(nb_path))
        nb["metadata"]["title"] = page["heading"]
        book = {"mathjax": "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe",
                "chapters": [p["slug"] for p in pages], "prev": pages[i - 1] if i > 0 else None, "next": pages[i + 1] if i + 1 < total else None,
                "page": page, "run": f"{_mode(page['quick'])} run on {page['backend']} in "
                                     f"{_fmt_seconds(page['seconds'])}" + (" — stopped at an error" if page["errored"] else "")}
        render(nb, out / page["file"], book)
        rows.append(page)
    glossary = source / "GLOSSARY.md"
    if glossary.exists():
        render(markdown_page("Glossary", glossary.read_text(encoding="utf-8")), out / "glossary.html",
               {"mathjax": "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe", "page": None})
    render(markdown_page("nnopt-lab: the book", index_markdown(rows, glossary.exists(), quick)),
           out / "index.html", {"mathjax": "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe", "page": None})
    summary = {"chapters": [r["file"] for r in rows], "seconds": time.perf_counter() - start,
               "executed": [p.name for p in todo], "reused": reused,
               "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
               "errored": [r["file"] for r in rows if r["errored"]]}
    (out / "book.json").write_text(json.dumps({**summary, "pages": rows}, indent=1), encoding="utf-8")
    return summary


def _app_name(nb_path: Path) -> str:
    """The shortest name ``tasks.py app`` accepts for this chapter: its number part (``02_2``)."""
    numbers = [p for p in nb_path.stem.split("_") if p.isdigit()]
    return "_".join(numbers) or nb_path.stem


def index_markdown(rows: list[dict], glossary: bool, quick: bool) -> str:
    lines = ["# nnopt-lab — neural-network optimization (神经网络优化), the book", "",
             "Every chapter of the workbook, executed, in the seed's order. Each page shows the run it "
             "comes from: the mode (QUICK numbers are too small to show the trends; FULL is the real run), "
             "the backend and the time it took. The explorers need a live kernel: "
             "`python tasks.py lab` (JupyterLab) or `python tasks.py app NAME` (one chapter's explorers as an app). "
             "Everything on these pages is served from this folder: nothing is fetched from another host.", "",
             "| § | chapter | run | backend | time |", "|---|---|---|---|---|"]
    for r in rows:
        title = r["title"].replace("|", "\\|")
        mark = " (stopped at an error)" if r["errored"] else ""
        lines.append(f"| {r['number']} | [{title}]({r['file']}){mark} | {_mode(r['quick'])} | "
                     f"{r['backend']} | {_fmt_seconds(r['seconds'])} |")
    if glossary:
        lines += ["", "**[Glossary](glossary.html)** — the English terms with the seed's Chinese terms (术语表)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tasks.py book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="execute in FULL mode (default QUICK)")
    parser.add_argument("--from-executed", type=Path, metavar="DIR",
                        help="reuse the executed copies in DIR (e.g. build/executed, kept by the notebook tests)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="site folder (build/book)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only the chapters whose name contains NAME")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="chapters executed at once (default 2)")
    args = parser.parse_args(argv)
    summary = build(args.out.resolve(), quick=not args.full, from_executed=args.from_executed,
                    only=args.only, jobs=args.jobs)
    print(f"book: {args.out / 'index.html'} — {len(summary['chapters'])} chapters, "
          f"{summary['bytes'] / 2 ** 20:.1f} MiB, built in {summary['seconds']:.0f} s "
          f"({len(summary['executed'])} executed, {len(summary['reused'])} reused)", flush=True)
    if summary["errored"]:
        print(f"chapters that stopped at an error: {', '.join(summary['errored'])}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
