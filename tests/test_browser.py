"""The browser demo (chapter 09): the JavaScript preprocessing against its Python twin (in Node.js and in Chromium),
the server's /demo routes, the last-resort clean-up (it kills only browsers this process started), and the page itself
driven by Playwright in headless Chromium: drawn with the mouse and answered on both paths. The browser tests are
skipped, with the reason, only where Chromium or the runtime is absent."""

import json
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest
from small_models import make_export, repository_of

from helpers import browser, digits, export, paths
from helpers.fixes import FIXES
from helpers.serving import openapi
from helpers.serving.process import running_server

pytestmark = pytest.mark.integration  # starts real processes or trains and exports models

RNG = np.random.default_rng(0)
PREPROCESS_JS = paths.WEB / "preprocess.js"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def float_scribbles(count: int) -> list:
    """Drawings with points anywhere in float64, some off the canvas: no help from round numbers."""
    return [[[(float(x), float(y)) for x, y in RNG.uniform(-20, 300, (RNG.integers(1, 25), 2))]
             for _ in range(RNG.integers(1, 4))] for _ in range(count)]


def mnist_strokes(real_mnist, count: int) -> list:
    return [digits.image_to_strokes(image) for image in real_mnist.x_test[:count]]


def node_images(cases: list) -> np.ndarray:
    script = (f"const P = require({json.dumps(str(PREPROCESS_JS))});"
              "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "process.stdout.write(JSON.stringify(cases.map((c) => Array.from(P.strokesToImage(c)))));")
    out = subprocess.run(["node", "-e", script], input=json.dumps(cases), capture_output=True, text=True, check=True)
    return np.array(json.loads(out.stdout), dtype=np.float32).reshape(-1, 28, 28)


# ---------------------------------------------------------------------------------------------- preprocessing


def test_python_preprocessing_makes_mnist_style_images(real_mnist):
    for strokes in mnist_strokes(real_mnist, 20) + digits.random_scribbles(RNG, 20, margin=-20) + float_scribbles(20):
        image = digits.strokes_to_image(strokes)
        assert image.shape == (28, 28) and image.dtype == np.float32
        assert image.min() >= 0 and image.max() <= 1 and image.max() > 0
        rows, cols = np.nonzero(image)
        assert rows.max() - rows.min() < 21 and cols.max() - cols.min() < 21  # fits the 20x20 box (anti-aliased edge)
        centre = [(image.sum(axis=1) @ np.arange(28)) / image.sum(), (image.sum(axis=0) @ np.arange(28)) / image.sum()]
        assert np.all(np.abs(np.array(centre) - 13.5) <= 0.5 + 1e-9)  # centre of mass in the middle, to the pixel
    assert not digits.strokes_to_image([]).any()


def test_redrawn_mnist_digits_look_like_their_originals(real_mnist):
    """Drawing MNIST digits as strokes and preprocessing them puts the ink where it was: blurred (the redraw's strokes
    are thicker), each redraw matches its own original far better than another digit (measured: 0.90 vs 0.47)."""
    from scipy.ndimage import gaussian_filter

    def blurred(image):
        return gaussian_filter(image.astype(np.float64), 1.0).ravel()

    own, other = [], []
    for i in range(50):
        redrawn = blurred(digits.strokes_to_image(digits.image_to_strokes(real_mnist.x_test[i])))
        own.append(np.corrcoef(redrawn, blurred(real_mnist.x_test[i]))[0, 1])
        other.append(np.corrcoef(redrawn, blurred(real_mnist.x_test[i + 100]))[0, 1])
    assert np.mean(own) > 0.85 and np.mean(other) < 0.6 and min(own) > 0.6


def test_bad_strokes_are_refused_with_a_message():
    with pytest.raises(ValueError, match="stroke 1 must be a non-empty list"):
        digits.strokes_to_image([[(1, 2)], []])
    with pytest.raises(ValueError, match="finite"):
        digits.strokes_to_image([[(1, float("nan"))]])
    with pytest.raises(ValueError, match="28x28"):
        digits.image_to_strokes(np.zeros((27, 28), np.uint8))


# the reason names the program: where COURSE_REQUIRE names it (CI), the skip fails instead (tests/conftest.py)
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (apt-get install nodejs; macOS: "
                                "brew install node): the JavaScript twin is not run in Node.js, only in Chromium")


@needs_node
def test_javascript_preprocessing_equals_python_bit_for_bit_in_node(real_mnist):
    too_wide = [[[(0.0, 100.0), (3000.0, 100.0)]], [[(0.0, 0.0)], [(5e5, 5e5)]]]  # the pen falls between the samples
    cases = (mnist_strokes(real_mnist, 30) + digits.random_scribbles(RNG, 30, margin=-20) + float_scribbles(30)
             + [[[(140.25, 140.75)]], []] + too_wide)
    expected = np.stack([digits.strokes_to_image(c) for c in cases])
    np.testing.assert_array_equal(node_images(cases), expected)
    assert not expected[-2:].any()  # blank, in both


@needs_node
def test_both_twins_refuse_coordinates_beyond_their_limit():
    with pytest.raises(ValueError, match="beyond"):
        digits.strokes_to_image([[(1e300, 1.0)]])
    with pytest.raises(subprocess.CalledProcessError) as refused:
        node_images([[[[1e300, 1.0]]]])
    assert "beyond" in refused.value.stderr


# ---------------------------------------------------------------------------------------------- the server's /demo routes


@pytest.fixture(scope="module")
def demo_repository(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    x = RNG.random((300, 1, 28, 28), dtype=np.float32)
    directory, reference = make_export(tmp, seed=3, x=x)
    return {"root": repository_of(directory, tmp), "export": directory, "x": x, "reference": reference}


@pytest.fixture(scope="module")
def demo_server(demo_repository):
    with running_server(demo_repository["root"], demo=True, name="demo-test") as server:
        yield server


def test_demo_routes_serve_the_page_the_runtime_and_the_model(demo_server, demo_repository):
    with httpx.Client(base_url=demo_server.url, timeout=30) as http:
        assert http.get("/demo", follow_redirects=False).headers["location"] == "/demo/"
        page = http.get("/demo/")
        assert page.status_code == 200 and "preprocess.js" in page.text
        # cross-origin isolation: the browser allows WebAssembly threads only with these
        assert page.headers["cross-origin-opener-policy"] == "same-origin"
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert http.get("/demo/preprocess.js").headers["content-type"].startswith("text/javascript")
        model = http.get("/demo/models/mnist/model.onnx")
        assert model.content == (demo_repository["export"] / "model.onnx").read_bytes()
        assert model.headers["x-model-version"] == "1"
        for bad, status in [("/demo/package.json", 404), ("/demo/models/nope/model.onnx", 404),
                            ("/demo/models/mnist/model.onnx?version=x", 400), ("/demo/vendor/evil.js", 404)]:
            answer = http.get(bad)
            assert answer.status_code == status and answer.json()["error"], bad
        if paths.WEB_RUNTIME.is_dir():
            wasm = http.get("/demo/vendor/ort-wasm-simd-threaded.wasm")
            assert wasm.headers["content-type"] == "application/wasm" and wasm.content[:4] == b"\0asm"
        assert http.post("/v2/models/mnist/infer", content=b"{").status_code == 400  # still the inference server


def test_with_an_api_key_the_model_file_needs_the_key(demo_repository):
    with running_server(demo_repository["root"], demo=True, api_key="course-demo", name="demo-key") as server:
        assert httpx.get(f"{server.url}/demo/models/mnist/model.onnx", timeout=30).status_code == 401
        keyed = httpx.get(f"{server.url}/demo/models/mnist/model.onnx", headers={"X-API-Key": "course-demo"}, timeout=30)
        assert keyed.status_code == 200 and keyed.content == (demo_repository["export"] / "model.onnx").read_bytes()
        assert httpx.get(f"{server.url}/demo/", timeout=30).status_code == 200  # the page itself is public


def test_without_demo_flag_there_is_no_demo(demo_repository):
    with running_server(demo_repository["root"], name="no-demo") as server:
        answer = httpx.get(f"{server.url}/demo/", timeout=30)
        assert answer.status_code == 404 and "error" in answer.json()


def test_a_missing_runtime_is_explained(tmp_path, demo_repository):
    """Where npm was absent at setup, the vendor route says what to run (and the server path still works)."""
    from fastapi.testclient import TestClient

    from helpers.serving import demo
    from helpers.serving.app import Settings, create_app

    app = create_app(Settings(repository=demo_repository["root"]))
    demo.add_routes(app.app, app.app.state.server, runtime=tmp_path / "not-installed")
    with TestClient(app.app) as client:
        answer = client.get("/demo/vendor/ort.wasm.min.js")
    assert answer.status_code == 404 and "make setup" in answer.json()["error"]


# ---------------------------------------------------------------------------------------------- the last-resort clean-up


def test_the_last_resort_kills_only_browsers_this_process_started(monkeypatch, tmp_path):
    """kill_started_browsers() kills this process's descendants whose command line names a browser, and leaves a
    process outside its tree alone whatever its command line says (another notebook's Chromium, the learner's own)."""
    mark = f"fake-chromium-{tmp_path.name}"
    monkeypatch.setattr(browser, "BROWSER_MARKS", (mark,))  # not "chromium": the module's real browser stays open
    sleeping = [sys.executable, "-c", "import time; time.sleep(600)", mark]
    ours = subprocess.Popen(sleeping)
    shell = f"{sys.executable} -c 'import time; time.sleep(600)' {mark} >/dev/null 2>&1 & echo $!"  # a double fork
    outsider = psutil.Process(int(subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout))
    try:
        assert browser.kill_started_browsers() == 1
        assert ours.wait(10) is not None and outsider.is_running() and outsider.status() != psutil.STATUS_ZOMBIE
    finally:
        ours.kill()
        ours.wait()
        outsider.kill()


# ---------------------------------------------------------------------------------------------- the page in Chromium

needs_browser = pytest.mark.skipif(browser.missing() is not None,
                                   reason=f"the browser tests need Chromium and ONNX Runtime Web: {browser.missing()}")


@pytest.fixture(scope="module")
def chromium():
    with browser.running_browser() as running:
        yield running


@needs_browser
def test_page_drawn_with_the_mouse_answers_like_python_on_both_paths(chromium, demo_server, demo_repository, real_mnist):
    predict = export.onnx_predictor(export.load_onnx(demo_repository["export"]))
    with browser.DemoPage(chromium, demo_server.url) as page:
        assert page.info["deviceError"] is None and page.info["crossOriginIsolated"], page.console
        for image in real_mnist.x_test[:3]:
            page.clear()
            page.draw(digits.image_to_strokes(image))
            recorded = page.strokes()
            expected = digits.strokes_to_image(recorded)  # the strokes the page saw, preprocessed by Python
            probabilities = export.softmax(predict(expected.reshape(1, 1, 28, 28)).astype(np.float64))[0]
            for path in ("device", "server"):
                answer = page.classify(path)
                np.testing.assert_array_equal(np.float32(answer["input"]).reshape(28, 28), expected)
                assert np.abs(np.array(answer["probs"]) - probabilities).max() <= 1e-5, path
                assert answer["digit"] == probabilities.argmax() and answer["path"] == path
        assert not [line for line in page.console if line.startswith(("error", "pageerror"))], page.console


@needs_browser
def test_page_on_two_threads_answers_like_python_onnx_runtime_and_downloads_only_from_the_server(chromium, demo_server, demo_repository):
    x = demo_repository["x"]
    python = export.softmax(export.onnx_predictor(export.load_onnx(demo_repository["export"]))(x).astype(np.float64))
    with browser.DemoPage(chromium, demo_server.url, threads=2) as page:
        assert page.info["threads"] == 2 and page.info["crossOriginIsolated"]
        logits, ms = page.classify_images(x)
    probabilities = export.softmax(logits.astype(np.float64))
    assert np.abs(probabilities - python).max() <= 1e-5 and np.mean(probabilities.argmax(1) == python.argmax(1)) >= 0.999
    assert len(ms) == len(x) and np.all(ms >= 0)
    assert set(ORT_FILES) <= {d["url"].rsplit("/", 1)[-1] for d in page.first_visit}
    assert all(d["url"].startswith(demo_server.url) for d in page.first_visit), page.first_visit


@needs_browser
def test_page_without_its_runtime_says_so_and_answers_on_the_server(chromium, demo_server, real_mnist):
    with browser.DemoPage(chromium, demo_server.url, block="**/vendor/**") as page:
        assert "ONNX Runtime Web did not load" in page.info["deviceError"] and page.info["path"] == "server"
        page.draw(digits.image_to_strokes(real_mnist.x_test[0]))
        answer = page.evaluate("demo.lastResult()")  # drawing classified it on the selected path, the server
        assert answer is not None and answer["path"] == "server"
        status = page.evaluate("document.getElementById('status').textContent")
    assert "On-device path unavailable" in status


# ---------------------------------------------------------------------------------------------- the server's /docs in Chromium


@needs_browser
@pytest.mark.skipif(not openapi.swagger_ui_installed(),
                    reason=f"swagger-ui-dist is not installed in web/node_modules: {FIXES['swagger-ui'].fix}")
def test_docs_renders_every_operation_with_nothing_from_beyond_the_server(chromium, demo_server):
    """/docs in headless Chromium, every request to a host other than 127.0.0.1 refused and recorded: Swagger UI
    renders one block per documented operation, from the server's own copy of its files."""
    requested, refused = [], []

    def only_the_server(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    def visit():
        context = chromium.browser.new_context()
        try:
            context.route("**/*", only_the_server)
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{demo_server.url}{openapi.DOCS_URL}")
            page.wait_for_selector(".opblock")
            return page.locator(".opblock").count(), page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            context.close()

    blocks, shown = chromium.call(visit)
    doc = httpx.get(f"{demo_server.url}{openapi.OPENAPI_URL}", timeout=30).json()
    documented = [(path, method) for path, item in doc["paths"].items() for method in item]
    assert refused == [] and all(url.startswith(f"{demo_server.url}/") for url in requested), (refused, requested)
    assert {f"{demo_server.url}{url}" for url in (openapi.SWAGGER_JS_URL, openapi.SWAGGER_CSS_URL)} <= set(requested)
    assert blocks == len(documented) and "/v2/models/{model}/infer" in {p.replace("\u200b", "") for p in shown}
