"""`make course`: execute every chapter in full mode and publish build/course/index.html.

A chapter whose executed copy is newer than its notebook and every other input it reads (`helpers/`, `monitoring/`,
`web/`, requirements.txt) is skipped,
so re-running only redoes what changed (`--force` redoes everything). `--chapters 01,03` (`make course CHAPTERS=01,03`)
executes those chapters, and only those, whether or not they are up to date; the index lists the others' last runs.
"""

from __future__ import annotations

import argparse
import html
import shutil
import sys
import time
from pathlib import Path

import nbformat

from course_tools import runner
from helpers import paths


def course_dir() -> Path:
    return paths.build() / "course"


def chapter_info(notebook: Path) -> dict:
    """Title and course-map fields, from the notebook's first heading and its `course` metadata."""
    nb = nbformat.read(notebook, as_version=4)
    title = runner.chapter_title(nb) or notebook.stem
    meta = nb.metadata.get("course", {})
    return {"notebook": notebook.name, "title": title, "source": meta.get("source", ""), "learn": meta.get("learn", "")}


# Everything a chapter reads besides its notebook: the library, the pins, chapter 07's alert rules, chapter 09's page.
CHAPTER_INPUTS = ("helpers", "monitoring", "web")


def chapter_inputs(notebook: Path) -> list[Path]:
    """The files whose change makes an executed chapter stale (web/node_modules is installed from package-lock.json)."""
    files = [notebook, paths.REQUIREMENTS]
    for folder in CHAPTER_INPUTS:
        files += [f for f in (paths.ROOT / folder).rglob("*")
                  if f.is_file() and "node_modules" not in f.parts and "__pycache__" not in f.parts]
    return files


def newest_input_mtime(notebook: Path) -> float:
    return max(p.stat().st_mtime for p in chapter_inputs(notebook))


def install_mathjax(out: Path) -> str:
    """Copy MathJax (from the jupyter-server-mathjax wheel) beside the pages, so formulas render offline."""
    import jupyter_server_mathjax

    target = out / "mathjax"
    if not (target / "MathJax.js").exists():
        shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", target, dirs_exist_ok=True)
    return "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"


# nbconvert's lab template, less what it would fetch from the network (course_tools/templates/course/index.html.j2)
TEMPLATES = Path(__file__).parent / "templates"


def render_html(executed: Path) -> Path:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="course", extra_template_basedirs=[str(TEMPLATES)],
                            mathjax_url=install_mathjax(executed.parent))
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


# What a chapter may take in full mode on the course's reference machine (2 cores, no GPU): the budgets every chapter
# is written to. `make course` measures each chapter against them and fails, naming the chapter, when one is over.
FULL_MODE_BUDGET_S = 300
MEMORY_BUDGET_MB = 4096


def over_budget(run: dict) -> list[str]:
    """What a chapter's measured run exceeds: e.g. ["6.2 min > 5 min"]; empty when it is within its budgets."""
    over = []
    if run.get("seconds", 0) > FULL_MODE_BUDGET_S:
        over.append(f"{format_duration(run['seconds'])} > {FULL_MODE_BUDGET_S // 60} min")
    if run.get("peak_rss_mb", 0) > MEMORY_BUDGET_MB:
        over.append(f"peak {run['peak_rss_mb'] / 1024:.2f} GiB > {MEMORY_BUDGET_MB / 1024:.0f} GiB")
    return over


def format_duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def index_html(rows: list[dict]) -> str:
    def row(r: dict) -> str:
        over = over_budget(r)
        status = ("not run yet" if r.get("not_run") else f"FAILED: {html.escape(r['error'])}" if r.get("error") is not None
                  else f"over budget: {html.escape(', '.join(over))}" if over else "ok")
        minutes = format_duration(r["seconds"]) if "seconds" in r else "-"
        memory = f"{r['peak_rss_mb'] / 1024:.2f} GiB" if "peak_rss_mb" in r else "-"
        return (
            f"<tr><td><a href='{html.escape(Path(r['notebook']).with_suffix('.html').name)}'>{html.escape(r['title'])}</a></td>"
            f"<td>{html.escape(r['learn'])}</td><td>{html.escape(r['source'])}</td>"
            f"<td>{minutes}</td><td>{memory}</td><td>{status}</td></tr>"
        )

    total = sum(r.get("seconds", 0) for r in rows)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Deploying deep-learning models: the executed course</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:.4rem .6rem;text-align:left;vertical-align:top}}
th{{background:#f3f3f3}}</style></head><body>
<h1>Deploying deep-learning models: the executed course</h1>
<p>Every chapter below was executed in full mode by <code>make course</code>; its outputs are real results from this run.
Runtime and peak memory were measured during the run ({format_duration(total)} in all); each chapter's budget is
{FULL_MODE_BUDGET_S // 60} min and {MEMORY_BUDGET_MB / 1024:.0f} GiB on a 2-core machine.</p>
<table><tr><th>Chapter</th><th>What you learn</th><th>Source document</th><th>Runtime</th><th>Peak memory</th><th>Status</th></tr>
{chr(10).join(row(r) for r in rows)}
</table><p>Generated {time.strftime('%Y-%m-%d %H:%M %Z')}.</p></body></html>
"""


def chosen_chapters(names: str) -> set[str]:
    """The stems of the chapters `names` lists ("01,03", or full stems); an unknown name is an error."""
    stems = [notebook.stem for notebook in paths.notebooks()]
    chosen = set()
    for name in filter(None, (n.strip() for n in names.split(","))):
        match = [s for s in stems if s == name or s.startswith(f"{name}_")]
        if len(match) != 1:
            raise SystemExit(f"CHAPTERS: {name!r} names no chapter (the chapters are {', '.join(s[:2] for s in stems)})")
        chosen.update(match)
    return chosen


def build_course(force: bool = False, chapters: set[str] | None = None) -> bool:
    """Execute the chapters (those in `chapters` only, always, when given) and write the index."""
    out = course_dir()
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.json"
    runs = runner.load_runs(runs_path)
    rows = []
    for notebook in paths.notebooks():
        executed = out / notebook.name
        previous = runs.get(notebook.stem)
        fresh = executed.exists() and executed.stat().st_mtime > newest_input_mtime(notebook)
        if chapters is not None and notebook.stem not in chapters:
            if previous is None:
                print(f"{notebook.name}: not chosen, never run here")
                rows.append({**chapter_info(notebook), "not_run": True})
                continue
            print(f"{notebook.name}: not chosen ({previous['seconds']:.0f} s last time{'' if fresh else ', since changed'})")
        elif chapters is None and not force and fresh and previous and previous.get("error") is None:
            print(f"{notebook.name}: up to date ({previous['seconds']:.0f} s last time), skipped")
        else:
            print(f"{notebook.name}: executing in full mode ...")
            result = runner.execute(notebook, executed, smoke=False)
            render_html(executed)
            previous = runner.record_run(runs_path, result)
            print(f"  {result.seconds:.0f} s, peak {result.peak_rss_mb:.0f} MiB" + (f", FAILED at {result.error}" if result.error else ""))
        rows.append({**chapter_info(notebook), **previous})
    (out / "index.html").write_text(index_html(rows), encoding="utf-8")
    print(f"Wrote {out / 'index.html'}")
    # judged: the chapters this call chose to run (all of them without --chapters)
    judged = [r for r in rows if chapters is None or Path(r["notebook"]).stem in chapters]
    over = {r["notebook"]: over_budget(r) for r in judged if over_budget(r)}
    for notebook, what in over.items():
        print(f"OVER BUDGET: {notebook} took {', '.join(what)} (on a slower machine than the course's 2-core reference "
              "this can be the machine; on the reference it is a regression)")
    if not over:
        print(f"Every chapter is within its budget ({FULL_MODE_BUDGET_S // 60} min, {MEMORY_BUDGET_MB / 1024:.0f} GiB).")
    return all(r.get("error") is None for r in judged) and not over


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="re-execute every chapter")
    parser.add_argument("--chapters", default="", help="execute these chapters only, up to date or not: 01,03")
    args = parser.parse_args()
    sys.exit(0 if build_course(force=args.force, chapters=chosen_chapters(args.chapters) if args.chapters else None) else 1)


if __name__ == "__main__":
    main()
