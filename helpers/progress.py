"""Progress bars that look right in both places a notebook runs.

Live in JupyterLab, `tqdm.auto` draws a widget. When papermill executes a notebook (tests, `make course`) a widget
would be saved frozen at 0 %, so `course_tools.runner` sets COURSE_TEXT_PROGRESS and the bar is plain text on stdout
instead, updated at most once a second, whose final state is what the executed copy shows.
"""

from __future__ import annotations

import os
import sys

TEXT_MODE_VARIABLE = "COURSE_TEXT_PROGRESS"


def is_text_mode() -> bool:
    """True when a notebook is being executed non-interactively (papermill), so progress should be plain text."""
    return bool(os.environ.get(TEXT_MODE_VARIABLE))


def progress(iterable=None, **kwargs):
    """`tqdm(iterable, **kwargs)`, widget or text as described above."""
    if is_text_mode():
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", 1.0)
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("ascii", False)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
