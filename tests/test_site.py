"""`make site`: the executed course as a static site that opens from disk. Built here from the smoke-mode executions
that tests/test_notebooks.py has just made (`make test` runs it first), with the same code `make site` runs."""

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from course_tools import site
from helpers import paths

EXECUTED = paths.build() / "test-notebooks"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    missing = [nb.name for nb in paths.notebooks() if not (EXECUTED / nb.name).exists()]
    if missing:
        pytest.skip(f"no executed copies of {missing[:3]}: run tests/test_notebooks.py first (make test does)")
    out = tmp_path_factory.mktemp("site") / "site"
    return site.build_site(EXECUTED, out).parent


def local_targets(page: Path) -> list[str]:
    """Every href/src of `page` that points at a file of the site (not an anchor, not data:, not mailto:)."""
    html = page.read_text(encoding="utf-8")
    targets = re.findall(r'(?:href|src)="([^"#]+)', html)
    return [t for t in targets if not t.startswith(("data:", "mailto:", "javascript:"))]


def test_every_chapter_has_a_page_with_its_outputs_and_a_figure(built):
    index = (built / "index.html").read_text(encoding="utf-8")
    for notebook in paths.notebooks():
        page = built / f"{notebook.stem}.html"
        assert page.exists(), f"no page for {notebook.name}"
        assert f'href="{notebook.stem}.html"' in index, f"the index does not link {notebook.name}"
        html = page.read_text(encoding="utf-8")
        figures = re.findall(r'<img[^>]+src="(_images/[^"]+\.png)"', html)
        assert figures and all((built / f).exists() for f in figures), f"{notebook.name}: no figure on its page"
        assert "Measured in this build" in html and "source-map.html#source-" in html, notebook.name


def test_every_local_link_of_the_site_resolves_on_disk(built):
    for page in built.glob("*.html"):
        for target in local_targets(page):
            if urlparse(target).scheme or target.startswith("//"):
                continue  # an external link a reader may follow, not a resource the page needs
            assert not target.startswith("/"), f"{page.name}: absolute path {target} breaks file://"
            assert (page.parent / unquote(target.split("?")[0])).exists(), f"{page.name}: {target} is missing"
    assert (built / "_static" / "mathjax" / "MathJax.js").exists()


def test_resources_are_never_loaded_from_the_network(built):
    for page in built.glob("*.html"):
        html = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|img|link)[^>]+(?:src|href)="(https?://[^"]+)"', html)
        assert not remote, f"{page.name} loads {remote[:3]}"


@pytest.mark.parametrize("source, sections", [("§3.1–3.2, §8.2", ["3.1", "3.2", "8.2"]),
                                              ("§4.3 (the Android model.ptl case), §6 and §8.2", ["4.3", "6", "8.2"]),
                                              ("§5.1–5.4", ["5.1", "5.2", "5.3", "5.4"])])
def test_chapters_link_the_sections_they_cite(source, sections):
    assert site.cited_sections(source) == sections
