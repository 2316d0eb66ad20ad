"""What an executed chapter and its pages must not carry: used by tests/test_notebooks.py on every chapter's executed
copy, by tests/test_site.py on the site, and tested itself in tests/test_pages.py (on noisy notebooks too)."""

from __future__ import annotations

import html as html_lib
import re

# Start-up notices of the pinned stack (helpers/quiet.py drops them in the kernel). Written out here on their own, not
# taken from helpers/quiet.py: a pattern there that misses its line must make these checks fail.
NOISE = {
    "absl's line before its logging is set up": "All log messages before absl::InitializeLog() is called",
    "TensorFlow's oneDNN notice": "oneDNN custom operations are on",
    "torchao's CUDA-only extensions failing to load": "torchao/_C_",
    "torchao's notice that Triton is missing": "Detected no triton",
    "torch's deprecation of torchao's enum registration (_pytree)": "is an Enum subclass and is now natively supported",
    "ExecuTorch's probe for ARM cores (cpuinfo)": "cpuinfo_utils",
    "Ray Serve's INFO notes": "Started Serve in namespace",
}


def notebook_problems(nb) -> list[str]:
    """What is wrong with an executed copy as a page: papermill's injected cell, progress-bar residue (carriage
    returns or backspaces in a stream output), a NOISE line, no title in the metadata (nbconvert's <title>)."""
    problems = []
    for index, cell in enumerate(nb.cells):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            problems.append(f"cell {index}: papermill's injected-parameters cell")
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            text = "".join(output["text"]) if isinstance(output["text"], list) else output["text"]
            if "\r" in text or "\b" in text:
                problems.append(f"cell {index}: progress-bar residue (\\r or \\b) in its {output['name']}")
            problems += [f"cell {index}: {what} in its {output['name']}: {line.strip()[:120]}"
                         for line in text.splitlines() for what, marker in NOISE.items() if marker in line]
    if nb.metadata.get("title", "Notebook") == "Notebook":
        problems.append("the notebook's metadata has no title (nbconvert would title the page 'Notebook')")
    return problems


def page_title(page: str) -> str | None:
    found = re.search(r"<title>(.*?)</title>", page, re.S)
    return html_lib.unescape(found.group(1).strip()) if found else None


def remote_resources(page: str) -> list[str]:
    """The URLs a page would load from the network: the src/href of its scripts, stylesheets, images and frames that
    are http(s):// or protocol-relative, and every http(s):// URL in an inline script (a loader built in JavaScript).
    Links a reader may follow (<a href>) are not resources."""
    in_tags = re.findall(r"""<(?:script|link|img|iframe|source|audio|video|embed)\b[^>]*?\s(?:src|href)\s*=\s*["']?"""
                         r"""((?:https?:)?//[^"'\s>]+)""", page, re.I)
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S | re.I)
    in_scripts = [url for body in scripts for url in re.findall(r"""https?://[^\s"'`)<]+""", body)]
    return in_tags + in_scripts
