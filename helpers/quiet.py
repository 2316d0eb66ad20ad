"""Start-up notices of the pinned stack, kept out of the notebooks' outputs; every other line passes untouched.

The course's kernel calls `install()` when it starts (`make setup` registers it with PYTHONSTARTUP pointing at
course_tools/kernel_startup.py), before a notebook's first import: most of these lines are printed while `import
tensorflow` or `import torchao` runs, too early for anything a cell could call. Each one is printed on every machine,
says nothing about this run's models or results, and asks nothing of a learner. None can be turned off at its source
without changing what runs: TensorFlow's notice comes from a static initialiser of its C++ library that
TF_CPP_MIN_LOG_LEVEL does not reach (only TF_ENABLE_ONEDNN_OPTS=0 stops it, by switching oneDNN's kernels off, which
changes the numerics), and ExecuTorch's and torchao's are printed unconditionally. So the kernel drops these exact
lines from what it shows. Set COURSE_SHOW_NOTICES=1 to see them.
"""

from __future__ import annotations

import os
import re
import sys
import threading

SHOW_VARIABLE = "COURSE_SHOW_NOTICES"

# what each line is -> a pattern that matches it and nothing a learner would need to see
NOTICES = {
    "absl's note that C++ logging is not set up yet (it precedes the next line)":
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    "TensorFlow's notice that its oneDNN kernels are on (the default on this CPU)":
        r"port\.cc:\d+\] oneDNN custom operations are on\. ",
    "torchao's CUDA-only extensions, which a CPU build of torch cannot load":
        r"Failed to load \S*torchao[/\\]_C_\w+\S*\.so: ",
    "torchao's GPU kernels need Triton, which a CPU has no use for (`make setup` removes it)":
        r"Detected no triton, on systems without Triton certain kernels will not work$",
    "torch deprecating the way torchao's own code registers one of its enums":
        r"_pytree\.py:\d+\] <enum 'KernelPreference'> is an Enum subclass .* register_constant\(\) on Enum subclasses is deprecated",
    "ExecuTorch's thread pool looking for a phone's ARM core types (files a PC does not have)":
        r"^\[cpuinfo_utils\.cpp:\d+\] ",
}
PATTERN = re.compile("|".join(f"(?:{p})" for p in NOTICES.values()))
# A partial line waits for its end only when it is a notice already (`print` writes the text, then "\n") or may become
# one: ExecuTorch writes its lines in pieces ("[", "cpuinfo_utils.cpp", ":", "71", "] ", message, "\n"). Any other
# partial line is shown at once (a progress bar on stderr redraws one line for as long as it runs).
PIECEWISE = ("[cpuinfo_utils.cpp:",)


def is_notice(line: str) -> bool:
    return PATTERN.search(line.rstrip("\r\n")) is not None


def may_become_notice(partial: str) -> bool:
    return is_notice(partial) or any(prefix.startswith(partial) or partial.startswith(prefix) for prefix in PIECEWISE)


class LineFilter:
    """`write(text)` passes `text` to `write_through` without the lines that are NOTICES (whole lines only)."""

    def __init__(self, write_through):
        self.write_through = write_through
        self.pending = ""
        self.lock = threading.Lock()  # the kernel writes captured C-level output from a thread of its own

    def write(self, text: str) -> int:
        with self.lock:
            *lines, rest = (self.pending + text).split("\n")
            kept = "".join(line + "\n" for line in lines if not is_notice(line))
            self.pending = rest if rest and may_become_notice(rest) else ""
            if not self.pending:
                kept += rest
            if kept:
                self.write_through(kept)
        return len(text)


def install(stream=None) -> bool:
    """Filter `stream` (default: sys.stderr, the kernel's stream for a cell's stderr) in place; False when
    COURSE_SHOW_NOTICES is set or it is filtered already.

    In place, because the kernel's thread that forwards C-level output (fd 2) calls this very object's `write`.
    """
    stream = sys.stderr if stream is None else stream
    if os.environ.get(SHOW_VARIABLE) or isinstance(getattr(stream.write, "__self__", None), LineFilter):
        return False
    stream.write = LineFilter(stream.write).write
    return True
