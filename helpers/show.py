"""Show the course's own code in a notebook, read from its source file, so the code shown is the code that runs.

    from helpers import show, export
    show.source(export.save_serving_model)          # the whole function, highlighted, with its file:line
    show.source(export.save_serving_model, lines=(1, 12))   # only its first twelve lines (1-based, inclusive)
    show.file_excerpt("web/demo.js", "async function inferDevice(", "}")  # a part of any file, found by its markers
    show.file("servers/litserve/server.py")                  # a whole file, with its line count

In JupyterLab and on the course's HTML pages the code is highlighted (IPython's `Code`, which uses Pygments); in a
terminal it prints as plain text. Nothing is copied into the notebook, so the shown code can never drift from the
module's. Files that are not Python modules (the page's JavaScript) are excerpted by marker strings, not line
numbers, for the same reason: the excerpt follows the code when lines are added above it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from helpers import paths


@dataclass(frozen=True)
class Source:
    """A piece of the course's code: its text, and where it lives."""
    text: str
    file: str  # relative to the course's root where it is inside it
    first_line: int
    last_line: int
    name: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.first_line}-{self.last_line}"

    def __str__(self) -> str:
        return f"# {self.name}  ({self.where})\n{self.text}"


def relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(paths.ROOT))
    except ValueError:
        return path


def get(obj, lines: tuple[int, int] | None = None) -> Source:
    """The source of a function, class or module; `lines` = (first, last), 1-based within it, to show a part."""
    text_lines, first = inspect.getsourcelines(obj)
    if first == 0:  # a module: getsourcelines counts from 0
        first = 1
    if lines is not None:
        start, end = lines
        if not 1 <= start <= end <= len(text_lines):
            raise ValueError(f"lines={lines} is outside {getattr(obj, '__qualname__', obj)}'s {len(text_lines)} lines")
        text_lines, first = text_lines[start - 1:end], first + start - 1
    text = "".join(text_lines).rstrip("\n")
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", str(obj))
    if inspect.isfunction(obj) or inspect.isclass(obj):
        name = f"{obj.__module__}.{name}"
    return Source(text, relative(inspect.getsourcefile(obj)), first, first + len(text_lines) - 1, name)


def excerpt(path, start: str, end: str) -> Source:
    """The lines of the text file `path` (relative to the course's root, or absolute) from the one line that contains
    `start` through the first later line that begins with `end` (so `end="}"` stops at the closing brace in column 0
    that ends a top-level JavaScript function). A `start` found in no line or in several, or no `end` after it, raises
    ValueError: an excerpt never silently shows other code."""
    file = Path(path) if Path(path).is_absolute() else paths.ROOT / path
    lines = file.read_text(encoding="utf-8").splitlines()
    starts = [number for number, line in enumerate(lines) if start in line]
    if len(starts) != 1:
        raise ValueError(f"{start!r} is in {len(starts)} lines of {relative(str(file))}, not exactly one")
    first = starts[0]
    last = next((number for number in range(first + 1, len(lines)) if lines[number].startswith(end)), None)
    if last is None:
        raise ValueError(f"no line of {relative(str(file))} after {start!r} begins with {end!r}")
    return Source("\n".join(lines[first:last + 1]), relative(str(file)), first + 1, last + 1, f"{file.name}: {start.strip()}")


def whole(path) -> Source:
    """The whole text file `path` (relative to the course's root, or absolute), trailing blank lines dropped."""
    file = Path(path) if Path(path).is_absolute() else paths.ROOT / path
    text = file.read_text(encoding="utf-8").rstrip("\n")
    count = len(text.splitlines())
    return Source(text, relative(str(file)), 1, count, f"{file.name}, {count} lines")


def display_source(found: Source, language: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import Code, Markdown, display
    except ImportError:
        print(found)
        return
    if get_ipython() is None:
        print(found)
        return
    display(Markdown(f"`{found.name}` — from `{found.where}`"), Code(found.text, language=language))


def file_excerpt(path, start: str, end: str, language: str = "javascript") -> None:
    """Display an excerpt of any of the course's files (`excerpt` says which lines), highlighted as `language`."""
    display_source(excerpt(path, start, end), language)


def file(path, language: str | None = None) -> None:
    """Display one of the course's files whole, headed by its name and line count (the language is taken from the
    file's suffix unless given)."""
    suffix = Path(path).suffix
    language = language or {".py": "python", ".js": "javascript", ".json": "json", ".yml": "yaml", ".yaml": "yaml",
                             ".pbtxt": "protobuf"}.get(suffix, "text")
    display_source(whole(path), language)


def source(obj, lines: tuple[int, int] | None = None) -> None:
    """Display `obj`'s source highlighted, headed by its name and file:line (`get` returns it instead)."""
    display_source(get(obj, lines), "python")
