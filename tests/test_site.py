"""`make site`: the executed course as a static site that opens from disk. Built here from the smoke-mode executions
that tests/test_notebooks.py has just made (`make test` runs it first), with the same code `make site` runs."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import page_checks
import pytest

from course_tools import site
from helpers import browser, paths

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
        remote = page_checks.remote_resources(page.read_text(encoding="utf-8"))
        assert not remote, f"{page.name} loads {remote[:3]}"


def test_every_page_has_one_search_box(built):
    for page in built.glob("*.html"):
        boxes = re.findall(r'<button[^>]*class="[^"]*\bsearch-button-field\b', page.read_text(encoding="utf-8"))
        assert len(boxes) == 1, f"{page.name} has {len(boxes)} search boxes"


def test_the_search_page_has_every_page_to_take_excerpts_from_without_a_server(built):
    search = (built / "search.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', search)
    shim, pages, sphinx = (scripts.index(f"_static/{name}") for name in
                           (site.SEARCH_FROM_DISK, site.SEARCH_PAGES, "searchtools.js"))
    assert pages < shim < sphinx, scripts
    data = (built / "_static" / site.SEARCH_PAGES).read_text(encoding="utf-8")
    contents = json.loads(data.removeprefix("window.COURSE_SEARCH_PAGES = ").rstrip().removesuffix(";"))
    for notebook in paths.notebooks():
        assert "Measured in this build" in contents[f"{notebook.stem}.html"], notebook.name
    assert "search.html" not in contents and site.SEARCH_PAGES not in (built / "index.html").read_text(encoding="utf-8")


def search_results(page, url: str) -> list[dict]:
    page.goto(url)
    page.wait_for_selector("#search-results li p.context", timeout=30_000)
    return page.eval_on_selector_all("#search-results li", "items => items.map(li => ({"
                                     "page: li.querySelector('a').getAttribute('href'), "
                                     "excerpt: (li.querySelector('p.context') || {}).textContent || ''}))")


@pytest.mark.integration  # a browser
@pytest.mark.skipif(browser.chromium_path() is None, reason="the search test needs Chromium (apt-get install chromium)")
def test_search_opened_from_disk_shows_results_with_excerpts(built):
    with browser.running_browser() as running:
        results = running.call(lambda: search_results(running.browser.new_page(),
                                                      (built / "search.html").as_uri() + "?q=quantization"))
    chapter = next(r for r in results if r["page"].startswith("05_quantization.html"))
    assert "quantization" in chapter["excerpt"].lower(), results[:3]


@pytest.mark.integration  # starts a server
def test_make_serve_site_serves_the_site_on_127_0_0_1(built):
    server = subprocess.Popen(["make", "-s", "serve-site", f"SITE={built}"], cwd=paths.ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = [server.stdout.readline() for _ in range(2)]
        found = re.search(r"Serving HTTP on 127\.0\.0\.1 port (\d+)", "".join(lines))
        assert found, lines  # a free port, chosen by the system (PORT= gives one)
        url = f"http://127.0.0.1:{found.group(1)}"
        deadline = time.monotonic() + 10
        while True:
            try:
                index = httpx.get(f"{url}/index.html", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"nothing answers on {url}"
                time.sleep(0.2)
        assert index.status_code == 200 and "Deploying deep-learning models" in index.text
        assert httpx.get(f"{url}/01_loss_and_gradients.html", timeout=5).status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make and the server it started: a session of their own
        server.wait(timeout=10)


@pytest.mark.integration  # runs make
def test_make_serve_site_takes_a_port_and_refuses_a_missing_site(tmp_path):
    dry = subprocess.run(["make", "--no-print-directory", "-n", "serve-site", "PORT=8123", f"SITE={tmp_path}"], cwd=paths.ROOT,
                         capture_output=True, text=True)
    assert "--bind 127.0.0.1" in dry.stdout and dry.stdout.rstrip().endswith("8123"), dry.stdout
    missing = subprocess.run(["make", "-s", "serve-site", f"SITE={tmp_path / 'none'}"], cwd=paths.ROOT,
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "make course, then make site" in missing.stdout


@pytest.mark.parametrize("source, sections", [("§3.1–3.2, §8.2", ["3.1", "3.2", "8.2"]),
                                              ("§4.3 (the Android model.ptl case), §6 and §8.2", ["4.3", "6", "8.2"]),
                                              ("§5.1–5.4", ["5.1", "5.2", "5.3", "5.4"])])
def test_chapters_link_the_sections_they_cite(source, sections):
    assert site.cited_sections(source) == sections
