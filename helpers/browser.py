"""Drive the browser demo (chapter 09) from Python: Playwright controlling the system's Chromium, headless.

Playwright's own browser download needs the internet, so the course uses the distribution's Chromium (Debian's
`chromium` package, installed by `make setup`). Playwright's synchronous API refuses to run inside an event loop, and
a Jupyter kernel runs one, so every Playwright call here runs on one dedicated thread: notebooks and tests call plain
functions. `running_browser()` always closes the browser and its driver, also when a cell fails.

    with running_browser() as browser:
        page = DemoPage(browser, server.url, threads=1)
        page.draw(strokes)
        result = page.classify("device")
"""

from __future__ import annotations

import base64
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from urllib.parse import quote

import numpy as np

from helpers import digits, paths
from helpers.fixes import FIXES, with_fix
from helpers.processes import stop_descendants

CALL_TIMEOUT_S = 300.0  # the longest any one call may take (10,000 inferences in the page take ~5 s)
CHROMIUM_ENV = "COURSE_CHROMIUM"  # a Chromium or Chrome binary to use instead of the system's
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# without the background-networking flags Chromium keeps trying to reach Google's services, which an offline
# classroom or CI machine refuses, many connections at a time
CHROMIUM_FLAGS = ("--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-quic", "--no-first-run", "--disable-dev-shm-usage")
BROWSER_MARKS = ("chromium", "chrome", "playwright")  # in the command lines of Chromium's processes and of the driver


def chromium_path() -> str | None:
    """The Chromium binary to drive: $COURSE_CHROMIUM, else the first of CHROMIUM_NAMES on the PATH."""
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV] if os.access(os.environ[CHROMIUM_ENV], os.X_OK) else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def missing() -> str | None:
    """Why the browser chapter cannot drive a browser here, or None when it can."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return f"the Python package playwright is not installed: {FIXES['setup'].fix}"
    if chromium_path() is None:
        return f"no Chromium found: {FIXES['chromium'].fix}"
    if not paths.WEB_RUNTIME.is_dir():
        return f"{FIXES['web-runtime'].symptom}: {FIXES['web-runtime'].fix}"
    return None


class Browser:
    """A headless Chromium under Playwright, every call made on Playwright's own thread."""

    def __init__(self, headless: bool = True):
        executable = chromium_path()
        if executable is None:
            raise RuntimeError(with_fix("no Chromium found", "chromium"))
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self.playwright = self.browser = None
        try:
            self.browser = self.call(self.launch, executable, headless)
        except BaseException:
            self.close()
            raise

    def launch(self, executable: str, headless: bool):
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        return self.playwright.chromium.launch(executable_path=executable, headless=headless, args=list(CHROMIUM_FLAGS))

    def call(self, function, *args, timeout_s: float = CALL_TIMEOUT_S, **kwargs):
        """Run `function` on Playwright's thread and return its result (or raise its error); a call that takes longer
        than `timeout_s` raises TimeoutError (Playwright's own timeouts do not cover `page.evaluate`)."""
        try:
            return self.thread.submit(function, *args, **kwargs).result(timeout_s)
        except FutureTimeout:
            raise TimeoutError(f"the browser did not answer within {timeout_s:.0f} s") from None

    def version(self) -> str:
        return self.call(lambda: self.browser.version)

    def close(self) -> None:
        """Close the browser and stop Playwright's driver; if they do not stop in time (a call stuck in the page),
        kill every Chromium and driver process this Python process started."""
        def shut():
            try:
                if self.browser is not None:
                    self.browser.close()
            finally:
                if self.playwright is not None:
                    self.playwright.stop()

        try:
            self.call(shut, timeout_s=30)
        except Exception:
            kill_started_browsers()
            raise
        finally:
            self.thread.shutdown(wait=False, cancel_futures=True)


def kill_started_browsers() -> int:
    """Kill the Chromium and Playwright driver processes descended from this process (a last resort); returns how
    many. Only this process's descendants: another notebook's (or the learner's own) Chromium is left alone."""
    return stop_descendants(*BROWSER_MARKS, grace_s=0)


@contextmanager
def running_browser(headless: bool = True):
    browser = Browser(headless)
    try:
        yield browser
    finally:
        browser.close()


def to_base64(images: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(images, dtype=np.float32).tobytes()).decode()


def from_base64(text: str, columns: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).reshape(-1, columns)


class DemoPage:
    """The draw-a-digit page (web/index.html) open in its own browser context, a fresh profile with an empty cache,
    so that load times include the downloads a first visit makes. `block`: a URL pattern whose requests fail (to test
    the page without its runtime, say). `key`: the server's API key, in the page's address as `make demo` prints it."""

    def __init__(self, browser: Browser, server_url: str, model: str = "mnist", threads: int = 1, reject: float = 0.0,
                 timeout_s: float = 60.0, block: str | None = None, key: str | None = None):
        self.browser = browser
        self.console: list[str] = []  # the page's console messages and errors, for diagnosis
        self.url = f"{server_url}/demo/?model={model}&threads={threads}&reject={reject}"
        self.url += f"&key={quote(key, safe='')}" if key else ""
        self.context, self.page = browser.call(self.open, timeout_s, block)
        try:
            # readyMs: from the start of navigation until the page can answer, as the page's own clock measures it
            self.info = self.evaluate("demo.ready.then(() => ({...demo.info(), readyMs: performance.now()}))")
            self.first_visit = self.downloads()  # now, before the page's own API calls add to the list
        except BaseException:
            self.close()
            raise

    def open(self, timeout_s: float, block: str | None):
        context = self.browser.browser.new_context(viewport={"width": 1100, "height": 760})
        if block:
            context.route(block, lambda route: route.abort())
        page = context.new_page()
        page.set_default_timeout(timeout_s * 1000)
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        page.goto(self.url)
        return context, page

    def evaluate(self, expression: str, argument=None):
        return self.browser.call(lambda: self.page.evaluate(expression, argument))

    def close(self) -> None:
        self.browser.call(self.context.close)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ drawing with the mouse

    def draw(self, strokes, steps: int = 4) -> None:
        """Draw `strokes` (canvas pixels) with the mouse: press, move in `steps` steps per segment, release."""
        def mouse_strokes():
            box = self.page.locator("#pad").bounding_box()
            to_page = box["width"] / digits.CANVAS_SIZE
            mouse = self.page.mouse
            for stroke in strokes:
                (x, y), rest = stroke[0], stroke[1:]
                mouse.move(box["x"] + x * to_page, box["y"] + y * to_page)
                mouse.down()
                for x, y in rest:
                    mouse.move(box["x"] + x * to_page, box["y"] + y * to_page, steps=steps)
                mouse.up()

        self.browser.call(mouse_strokes)

    def clear(self) -> None:
        self.evaluate("demo.clear()")

    def strokes(self) -> list:
        """The strokes as the page recorded them from the mouse events, in canvas pixels."""
        return self.evaluate("demo.strokes()")

    def classify(self, path: str = "device") -> dict:
        """The page's answer for what is drawn now, on `path` ("device" or "server"), with the input it made."""
        return self.evaluate("path => demo.classify(path)", path)

    def classify_images(self, images: np.ndarray, path: str = "device", chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(logits, ms per call) for float32 images of shape (n, 1, 28, 28), one page inference call per image."""
        logits, ms = [], []
        for start in range(0, len(images), chunk):
            answer = self.evaluate("([b64, path]) => demo.classifyImages(b64, path)",
                                   [to_base64(images[start : start + chunk]), path])
            logits.append(from_base64(answer["logits"], 10))
            ms += answer["ms"]
        return np.concatenate(logits), np.asarray(ms)

    def downloads(self) -> list[dict]:
        return self.evaluate("demo.downloads()")

    def screenshot(self, path) -> None:
        self.browser.call(lambda: self.page.screenshot(path=str(path), full_page=True))


def measure_page(browser: Browser, server_url: str, model: str, threads: int, image: np.ndarray, repeats: int) -> dict:
    """One first visit of the page with `model` on `threads` WebAssembly threads: what it downloaded, how long it took
    to become ready, and the latency of `repeats` single-image inferences of `image` on each path (ms)."""
    images = np.repeat(image.reshape(1, 1, 28, 28), repeats, axis=0)
    with DemoPage(browser, server_url, model=model, threads=threads) as page:
        if page.info["deviceError"]:
            raise RuntimeError(f"the page could not run the model on the device: {page.info['deviceError']}")
        _, device_ms = page.classify_images(images, "device")
        _, server_ms = page.classify_images(images, "server")
    downloads = page.first_visit
    load = page.info["load"]
    runtime = [d for d in downloads if d["url"].endswith(".wasm")]
    return {"model": model, "threads": threads, "model_kB": load["modelBytes"] / 1024,
            "first_visit_MB": sum(d["bytes"] for d in downloads) / 2**20,
            "runtime_download_ms": sum(d["ms"] for d in runtime), "session_ms": load["sessionMs"],
            "ready_ms": page.info["readyMs"],
            **{f"device_p{q}_ms": float(np.percentile(device_ms, q)) for q in (50, 90)},
            **{f"server_p{q}_ms": float(np.percentile(server_ms, q)) for q in (50, 90)}}
