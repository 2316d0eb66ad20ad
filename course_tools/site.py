"""`make site`: the executed course as a static site (Sphinx + MyST-NB, the book theme) in build/site/.

Pages are the notebooks `make course` executed in full mode (build/course/), with their outputs; each chapter page
starts with its measured runtime and peak memory and links to the source-document sections it covers (a page that
maps the document's sections to chapters). Nothing is executed here and nothing is fetched: the site opens from disk
(file://) with no server, MathJax included.

Search works from disk too: Sphinx's search page reads searchindex.js (a script, which a page opened from disk may
load), then fetches each result's page for its excerpt, which a browser refuses on file://. This module is also a
Sphinx extension (`setup` below, loaded by the generated conf.py) that writes every page's content into a script,
_static/search-pages.js, and answers the search page's fetches from it when the site is opened from disk.
`make serve-site` serves the site over HTTP instead, where the search fetches pages as usual.

Why Sphinx + MyST-NB rather than Jupyter Book 2 (MyST's own site builder): the latter's HTML needs a web server
(mystmd issue #188) and downloads its theme at build time; MyST-NB is the same project's Sphinx extension, and what
Jupyter Book 1 was built on.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from course_tools import course, runner
from helpers import paths

# The source document's sections (in Chinese in the document), for the map page the chapters link to.
SOURCE_SECTIONS = {
    "1": "Background", "1.1": "Where the problem comes from", "1.2": "The key points", "1.3": "Why it matters",
    "2": "Core concepts", "2.1": "Overview of the concepts", "2.2": "How the concepts relate",
    "3": "Algorithm principles and steps", "3.1": "Overview", "3.2": "The steps in detail",
    "3.3": "Strengths and weaknesses", "3.4": "Where it is applied",
    "4": "Mathematical model and formulas", "4.1": "Building the model", "4.2": "Deriving the formulas",
    "4.3": "Case study: an image classifier on an Android device",
    "5": "Project practice: code", "5.1": "Setting up the environment", "5.2": "The source code",
    "5.3": "Reading the code", "5.4": "The results",
    "6": "Application scenarios", "6.1": "Recommender systems", "6.2": "Medical imaging", "6.3": "Autonomous driving",
    "6.4": "Financial risk control",
    "7": "Tools and resources", "7.1": "Learning resources", "7.2": "Development tools", "7.3": "Papers",
    "8": "Summary: trends and challenges", "8.1": "Summary", "8.2": "Future trends", "8.3": "Challenges",
    "8.4": "Research outlook", "9": "Appendix: frequently asked questions",
}


def site_dir() -> Path:
    return paths.build() / "site"


def anchor(section: str) -> str:
    return "source-" + section.replace(".", "-")


def cited_sections(source: str) -> list[str]:
    """'§3.1–3.2, §8.2 (trends)' -> ['3.1', '3.2', '8.2']: every section a chapter's `source` field names."""
    found = []
    for first, last in re.findall(r"§(\d+(?:\.\d+)?)(?:\s*[–-]\s*(\d+(?:\.\d+)?))?", source):
        found.append(first)
        if last and "." in first and "." in last and first.split(".")[0] == last.split(".")[0]:
            major = first.split(".")[0]
            found += [f"{major}.{minor}" for minor in range(int(first.split(".")[1]) + 1, int(last.split(".")[1]) + 1)]
    return [s for s in dict.fromkeys(found) if s in SOURCE_SECTIONS]


def source_links(source: str) -> str:
    return ", ".join(f"{{ref}}`§{s} {SOURCE_SECTIONS[s]} <{anchor(s)}>`" for s in cited_sections(source)) or source


def chapter_header(info: dict, run: dict | None) -> str:
    if run and run.get("error"):
        measured = f"**This chapter FAILED in this build** ({run['error']}): its outputs stop there."
    elif run and "seconds" in run:
        measured = (f"**Measured in this build (full mode):** {course.format_duration(run['seconds'])}, "
                    f"peak memory {run['peak_rss_mb'] / 1024:.2f} GiB.")
    else:
        measured = "**No measurement of this chapter in this build.**"
    return f"{measured} **Source document:** {source_links(info['source'])}.\n\n---"


def write_chapter(executed: Path, out: Path, run: dict | None) -> dict:
    """Copy an executed notebook into the site, with a header cell after its title; returns its course-map fields."""
    info = course.chapter_info(executed)
    nb = nbformat.read(executed, as_version=4)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(chapter_header(info, run)))
    for cell in nb.cells:
        cell.pop("id", None)  # ids are optional for nbformat 4.4 readers, and the inserted cell has none
    nb.nbformat_minor = 4
    nbformat.write(nb, out / executed.name)
    return info


def source_map(chapters: list[dict]) -> str:
    lines = ["# The source document, section by section", "",
             "The course follows a Chinese-language article, *AI人工智能核心算法原理与代码实例讲解：模型部署* (\"core AI algorithms "
             "explained with code: model deployment\"). Each of its sections below lists the chapters that cover it; each "
             "chapter says what the article gets wrong there and fixes it.", ""]
    for section, title in SOURCE_SECTIONS.items():
        covering = [c for c in chapters if section in cited_sections(c["source"])]
        links = ", ".join(f"[{c['title'].split(' — ')[0]}]({Path(c['notebook']).stem}.ipynb)" for c in covering)
        depth = "##" if "." not in section else "###"
        lines += [f"({anchor(section)})=", f"{depth} §{section} {title}", "", f"Covered by: {links}." if links else "Not covered by a chapter.", ""]
    return "\n".join(lines)


def index_page(chapters: list[dict], runs: dict) -> str:
    rows = []
    total = 0.0
    for c in chapters:
        run = runs.get(Path(c["notebook"]).stem, {})
        total += run.get("seconds", 0)
        runtime = course.format_duration(run["seconds"]) if "seconds" in run else "–"
        rows.append(f"| [{c['title'].split(' — ')[0]}]({Path(c['notebook']).stem}.ipynb) | {c['learn']} | "
                    f"{source_links(c['source'])} | {runtime} |")
    toc = "\n".join(Path(c["notebook"]).stem for c in chapters)
    return f"""# Deploying deep-learning models: the executed course

Every chapter below was executed in full mode by `make course`; the pages show its real outputs, and the runtimes are
those measured in that run ({course.format_duration(total)} in all). The source of every page is a notebook in
`notebooks/`: open it in JupyterLab (`make lab`) to run it yourself.

| Chapter | What you learn | Source document | Runtime |
|---|---|---|---|
{chr(10).join(rows)}

```{{toctree}}
:maxdepth: 1
:caption: Chapters
:hidden:

{toc}
source-map
```
"""


CONF = """# Generated by course_tools/site.py
project = "Deploying deep-learning models"
author = "The course's authors"
extensions = ["myst_nb", "course_tools.site"]  # course_tools.site: search excerpts from disk
nb_execution_mode = "off"  # the pages show the outputs of `make course`; nothing runs here
myst_enable_extensions = ["dollarmath", "amsmath"]
html_theme = "sphinx_book_theme"
html_title = "Deploying deep-learning models"
html_static_path = ["_static"]
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"  # MathJax 2, copied beside the pages
# the copy ships the STIX-Web fonts only (as Jupyter uses them): without this MathJax looks for its TeX fonts and stops
mathjax2_config = {"HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None},
                   "tex2jax": {"inlineMath": [["\\\\(", "\\\\)"]], "displayMath": [["\\\\[", "\\\\]"]],
                               "processClass": "math|output_area|tex2jax_process", "ignoreClass": "tex2jax_ignore|mathjax_ignore"}}
myst_update_mathjax = False  # MyST's own MathJax settings are for MathJax 3
# one search box, the sidebar's: no search button in the header bar (the theme's default puts one there too)
html_theme_options = {"show_toc_level": 2, "use_download_button": False, "navbar_persistent": []}
exclude_patterns = ["_build"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
"""


SEARCH_PAGES = "search-pages.js"  # {page file name: its content (HTML)}, in _static/
SEARCH_FROM_DISK = "search-from-disk.js"
SEARCH_FROM_DISK_JS = """// Sphinx's search fetches each result's page for its excerpt, which a browser refuses for a page opened from disk:
// there, the pages come from search-pages.js (written by course_tools/site.py) instead.
if (window.location.protocol === "file:") {
  const pages = window.COURSE_SEARCH_PAGES || {};
  const fetchFromNetwork = window.fetch.bind(window);
  window.fetch = (resource, options) => {
    const name = decodeURIComponent(new URL(resource, window.location.href).pathname.split("/").pop());
    if (!(name in pages)) return fetchFromNetwork(resource, options);
    const page = `<div role="main">${pages[name]}</div>`;  // Sphinx takes the excerpt from [role=main]
    return Promise.resolve(new Response(page, {headers: {"Content-Type": "text/html"}}));
  };
}
"""


def collect_page(app, pagename, templatename, context, doctree) -> None:
    """Keep each page's content for search-pages.js; give the search page the two scripts (before Sphinx's own)."""
    if doctree is not None and "body" in context:
        app.builder.course_search_pages[pagename + app.builder.out_suffix] = context["body"]
    if pagename == "search":
        app.add_js_file(SEARCH_PAGES, priority=200)
        app.add_js_file(SEARCH_FROM_DISK, priority=201)


def write_search_pages(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        static = Path(app.builder.outdir) / "_static"
        pages = json.dumps(app.builder.course_search_pages, ensure_ascii=False)
        (static / SEARCH_PAGES).write_text(f"window.COURSE_SEARCH_PAGES = {pages};\n", encoding="utf-8")
        (static / SEARCH_FROM_DISK).write_text(SEARCH_FROM_DISK_JS, encoding="utf-8")


def setup(app):
    """The Sphinx extension: search results with excerpts on a site opened from disk (see the module's docstring)."""
    app.connect("builder-inited", lambda app: setattr(app.builder, "course_search_pages", {}))
    app.connect("html-page-context", collect_page)
    app.connect("build-finished", write_search_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": False}


def build_site(source: Path, out: Path) -> Path:
    """The site of the executed notebooks in `source` (with their runs.json) -> `out`/index.html."""
    executed = [source / nb.name for nb in paths.notebooks()]
    if missing := [nb.name for nb in executed if not nb.exists()]:
        raise FileNotFoundError(f"{source} has no executed copy of {', '.join(missing)}: run `make course` first "
                                "(it executes only what changed), then `make site`")
    runs = runner.load_runs(source / "runs.json")
    project = out.with_name(out.name + "-src")  # the Sphinx project: build/site-src beside build/site
    shutil.rmtree(project, ignore_errors=True)
    (project / "_static").mkdir(parents=True)
    course.install_mathjax(project / "_static")
    chapters = [write_chapter(nb, project, runs.get(nb.stem)) for nb in executed]
    (project / "conf.py").write_text(CONF)
    (project / "index.md").write_text(index_page(chapters, runs))
    (project / "source-map.md").write_text(source_map(chapters))
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", str(project), str(out)],
                            capture_output=True, text=True)
    shutil.rmtree(out.parent / "jupyter_execute", ignore_errors=True)  # MyST-NB's scratch copies: nothing executes here
    if result.returncode != 0:
        raise RuntimeError(f"sphinx-build failed:\n{result.stderr[-3000:]}")
    return out / "index.html"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_tools.site", description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=course.course_dir(), help="executed notebooks (default build/course)")
    parser.add_argument("--out", type=Path, default=site_dir())
    args = parser.parse_args(argv)
    try:
        index = build_site(args.source, args.out)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"Wrote {index} (open it from disk, search included, or serve it: make serve-site)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
