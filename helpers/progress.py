"""Progress bars that look right in both places a notebook runs.

Live in JupyterLab, `tqdm.auto` draws a widget. When papermill executes a notebook (tests, `make course`) a widget
would be saved frozen at 0 %, so `course_tools.runner` sets COURSE_TEXT_PROGRESS and the bar is plain text on stdout
instead, drawn once, when it closes: no one watches an executed notebook's bar move, and the states in between would
land among the lines the loop prints.
"""

from __future__ import annotations

import functools
import os
import sys

TEXT_MODE_VARIABLE = "COURSE_TEXT_PROGRESS"


def is_text_mode() -> bool:
    """True when a notebook is being executed non-interactively (papermill), so progress should be plain text."""
    return bool(os.environ.get(TEXT_MODE_VARIABLE))


def progress(iterable=None, **kwargs):
    """`tqdm(iterable, **kwargs)`, widget or text as described above."""
    if is_text_mode():
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("ascii", False)
        return final_state_bar()(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


@functools.cache
def final_state_bar():
    """The class of text bars (made on first use: importing this module does not import tqdm)."""
    from tqdm.std import tqdm

    class FinalStateBar(tqdm):
        """A text bar that draws only its final state, as it closes (a bar closed with leave=False draws nothing)."""

        def display(self, msg=None, pos=None):
            return super().display(msg, pos) if getattr(self, "closing", False) else True

        def close(self):
            self.closing = True
            super().close()

    return FinalStateBar

