"""Executed chapters read clean: the kernel drops the stack's start-up notices (helpers/quiet.py), the runner tidies
the executed copy (course_tools/runner.py: tidy), and the pages load nothing from the network. tests/test_notebooks.py
applies the same checks (tests/page_checks.py) to every chapter's executed copy; here they are tested themselves."""

import io
import re

import nbformat
import page_checks
import pytest

from course_tools import course, runner
from helpers import paths, quiet
from helpers.progress import TEXT_MODE_VARIABLE, progress

# lines as the pinned stack prints them (chapters 01-05 and 08 in smoke mode), one per entry of page_checks.NOISE
ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ONEDNN = ("I0000 00:00:1796188483.375513    8228 port.cc:153] oneDNN custom operations are on. You may see slightly "
          "different numerical results due to floating-point round-off errors from different computation orders. To turn "
          "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.")
TORCHAO = ("WARNING:torchao:Failed to load /venv/lib/python3.11/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: "
           "Could not load this library: /venv/lib/python3.11/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so")
TRITON = "WARNING:torchao.kernel.intmm:Warning: Detected no triton, on systems without Triton certain kernels will not work"
PYTREE = ("W1202 05:15:19.930000 8741 torch/utils/_pytree.py:630] <enum 'KernelPreference'> is an Enum subclass and is now "
          "natively supported by torch.compile as an opaque value type. Calling register_constant() on Enum subclasses is "
          "deprecated and will be an error in a future release.")
CPUINFO = ["[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version",
           "[cpuinfo_utils.cpp:125] CPU info and manual query on # of cpus dont match."]
RAY = 'INFO 2026-12-02 05:25:36,450 serve 13854 -- Started Serve in namespace "serve".'
KERNEL_NOTICES = [ABSL, ONEDNN, TORCHAO, TRITON, PYTREE, *CPUINFO]  # what the kernel's filter drops (Ray's: helpers)
# what must pass: a real warning (chapter 02 explains this one), TensorFlow's warnings, a torchao warning of another kind
REAL = ['/venv/keras/src/backend/tensorflow/nn.py:1402: UserWarning: "`sparse_categorical_crossentropy` received '
        '`from_logits=True`, but the `output` argument was produced by a Softmax activation',
        "W0000 00:00:1796188483.375513    8228 port.cc:153] oneDNN custom operations failed: kernel missing",
        "WARNING:torchao:Failed to load my_model.so: file not found",
        "[1, 2, 3] is a list"]


def filtered(*writes: str) -> str:
    shown = []
    line_filter = quiet.LineFilter(shown.append)
    for text in writes:
        line_filter.write(text)
    return "".join(shown)


def test_every_notice_is_dropped_and_every_other_line_kept():
    assert all(quiet.is_notice(line) for line in KERNEL_NOTICES)
    assert not any(quiet.is_notice(line) for line in REAL)
    assert filtered("".join(f"{line}\n" for line in [*KERNEL_NOTICES, *REAL, *KERNEL_NOTICES])) == \
        "".join(f"{line}\n" for line in REAL)


def test_a_line_written_in_pieces_is_dropped_whole_and_other_partial_lines_pass_at_once():
    pieces = ["[", "cpuinfo_utils.cpp", ":", "71", "] ", "Reading file /sys/devices/soc0/image_version", "\n"]  # ExecuTorch's
    assert filtered(*pieces, *pieces) == ""
    assert filtered("epoch 1", " done\n") == "epoch 1 done\n"
    shown = []
    line_filter = quiet.LineFilter(shown.append)
    line_filter.write("epoch 1")
    assert shown == ["epoch 1"], "a partial line that cannot become a notice must not wait for its end"
    assert filtered("[", "1, 2]\n") == "[1, 2]\n"  # held while it might have been ExecuTorch's, then shown whole
    assert filtered(ABSL, "\n", "next\n") == "next\n"  # `print` writes a line's text, then its end


def test_install_filters_a_stream_in_place_once_and_not_when_asked_to_show_everything(monkeypatch):
    monkeypatch.delenv(quiet.SHOW_VARIABLE, raising=False)
    stream = io.StringIO()
    assert quiet.install(stream) and not quiet.install(stream)
    print(ABSL, file=stream)
    print("kept", file=stream)
    assert stream.getvalue() == "kept\n"
    monkeypatch.setenv(quiet.SHOW_VARIABLE, "1")
    other = io.StringIO()
    assert not quiet.install(other)
    print(ABSL, file=other)
    assert other.getvalue() == ABSL + "\n"


def test_the_kernel_is_registered_with_the_startup_file_that_installs_the_filter():
    makefile = (paths.ROOT / "Makefile").read_text()
    install = next(line for line in makefile.splitlines() if "ipykernel install" in line)
    startup = re.search(r'--env PYTHONSTARTUP "\$\(CURDIR\)/([^"]+)"', install)
    assert startup, f"the Makefile's ipykernel line sets no PYTHONSTARTUP: {install}"
    assert "quiet.install()" in (paths.ROOT / startup.group(1)).read_text()


def notebook(*cells, title="# Chapter 99 — A tiny test"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(title), *cells]
    return nb


def code(*outputs, tags=()):
    cell = nbformat.v4.new_code_cell("pass", outputs=list(outputs), execution_count=1)
    cell.metadata["tags"] = list(tags)
    return cell


def stream(text, name="stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_terminal_text_is_what_a_terminal_shows():
    assert runner.terminal_text("\rbar:   0%|   | 0/3\rbar: 100%|###| 3/3\n") == "bar: 100%|###| 3/3\n"
    assert runner.terminal_text("\rcleared: 50%\r            \r") == ""  # a bar closed with leave=False
    assert runner.terminal_text("long line\rshort\n") == "shortline\n"  # overwritten, not erased
    assert runner.terminal_text("ab\bc\n") == "ac\n"
    assert runner.terminal_text("kept as is  \n\n  indented\n") == "kept as is  \n\n  indented\n"
    assert runner.terminal_text("line\r\n") == "line\n"


def test_tidy_drops_the_injected_cell_collapses_progress_and_titles_the_notebook():
    injected = code(tags=["injected-parameters"])
    bar = code(stream("\rfit:   0%|   | 0/2"), stream("\rfit: 100%|###| 2/2"), stream("\n"), stream("warned\n", "stderr"),
               stream("after\n"), nbformat.v4.new_output("display_data", data={"text/plain": "x\ry"}))
    gone = code(stream("\rscan: 10%"), stream("\r          \r"))
    nb = runner.tidy(notebook(injected, bar, gone))
    assert len(nb.cells) == 3 and nb.metadata["title"] == "Chapter 99 — A tiny test"
    assert [(o.output_type, o.get("text")) for o in nb.cells[1].outputs] == [
        ("stream", "fit: 100%|###| 2/2\n"), ("stream", "warned\n"), ("stream", "after\n"), ("display_data", None)]
    assert nb.cells[1].outputs[3].data["text/plain"] == "x\ry", "only stream outputs are rewritten"
    assert nb.cells[2].outputs == [], "a bar that cleared itself leaves no output"


def test_tidy_says_where_the_run_s_parameters_differ_from_the_cell_s():
    def ran_with(smoke):
        cell = nbformat.v4.new_code_cell("SMOKE = False  # papermill sets True in the tests\nSEED = 0")
        cell.metadata["tags"] = ["parameters"]
        nb = notebook(cell)
        nb.metadata["papermill"] = {"parameters": {"SMOKE": smoke}}
        return runner.tidy(nb).cells[1].source

    assert ran_with(True).endswith("SEED = 0\n# this run: SMOKE = True")
    assert ran_with(False).endswith("SEED = 0"), "a run with the cell's own values changes nothing"


def test_the_checks_fail_on_a_noisy_notebook_and_pass_once_it_is_filtered_and_tidied():
    noise = "".join(f"{line}\n" for line in [*KERNEL_NOTICES, RAY])
    noisy = notebook(code(tags=["injected-parameters"]), code(stream(noise + REAL[0] + "\n", "stderr")),
                     code(stream("\rfit: 50%"), stream("\rfit: 100%\n")))
    problems = page_checks.notebook_problems(noisy)
    assert any("injected-parameters" in p for p in problems) and any("residue" in p for p in problems)
    assert any("no title" in p for p in problems)
    assert {what for what in page_checks.NOISE if any(what in p for p in problems)} == set(page_checks.NOISE)
    assert not any("UserWarning" in p for p in problems), "a real warning is not noise"

    tidied = runner.tidy(noisy)
    assert all(any(what in p for what in page_checks.NOISE) for p in page_checks.notebook_problems(tidied))
    tidied.cells[1].outputs[0].text = filtered(tidied.cells[1].outputs[0].text)  # what the kernel's filter lets through
    assert [p for p in page_checks.notebook_problems(tidied) if "Ray" not in p] == []
    assert tidied.cells[1].outputs[0].text.startswith(RAY)  # Ray Serve's notes are quieted in helpers.ray_serving


def test_the_remote_resource_check_finds_scripts_styles_and_loaders_but_not_links():
    page = ('<script src="https://cdnjs.example/require.js"></script><link rel="stylesheet" href="//fonts.example/f.css">'
            '<script>var src = "https://unpkg.com/embed.js";</script><img src="_images/a.png">'
            '<a href="https://docs.example/">docs</a><script src="_static/local.js"></script>')
    assert page_checks.remote_resources(page) == ["https://cdnjs.example/require.js", "//fonts.example/f.css",
                                                  "https://unpkg.com/embed.js"]
    assert page_checks.page_title("<title>A &amp; B</title>") == "A & B"


def test_a_text_bar_draws_only_its_final_state(monkeypatch):
    monkeypatch.setenv(TEXT_MODE_VARIABLE, "1")
    out = io.StringIO()
    for step in progress(range(3), desc="steps", file=out):
        print(f"line {step}", file=out)
    for _ in progress(range(3), desc="vanishes", leave=False, file=out):
        pass
    shown = runner.terminal_text(out.getvalue())
    assert shown.startswith("line 0\nline 1\nline 2\nsteps: 100%") and "3/3" in shown and "vanishes" not in shown
    assert shown.count("steps") == 1


@pytest.mark.integration  # renders a notebook with nbconvert and copies MathJax
def test_the_html_page_has_the_chapter_title_and_loads_nothing_from_the_network(tmp_path):
    executed = tmp_path / "99_tiny.ipynb"
    nbformat.write(runner.tidy(notebook(code(stream("hello\n")))), executed)
    page = course.render_html(executed).read_text(encoding="utf-8")
    assert page_checks.page_title(page) == "Chapter 99 — A tiny test"
    assert page_checks.remote_resources(page) == []
    assert 'src="mathjax/MathJax.js' in page and (tmp_path / "mathjax" / "MathJax.js").exists()


NOISY_CELL = f'''import os, sys
os.write(2, b"{ABSL}\\n")  # C-level output, like TensorFlow's
for piece in ["[", "cpuinfo_utils.cpp", ":", "71", "] ", "Reading file /sys/devices/soc0/image_version", "\\n"]:
    sys.stderr.write(piece); sys.stderr.flush()  # ExecuTorch's way
import warnings
warnings.warn("a real warning")
assert "_quiet" not in globals()  # the startup file leaves no name in the notebook's namespace
'''


@pytest.mark.integration  # executes a notebook in the course kernel
def test_the_kernel_started_with_the_startup_file_drops_notices_and_keeps_warnings(tmp_path, monkeypatch):
    """As `make setup` registers the kernel (here through the environment it inherits, whatever this machine's
    kernel spec says)."""
    monkeypatch.setenv("PYTHONSTARTUP", str(paths.ROOT / "course_tools" / "kernel_startup.py"))
    monkeypatch.delenv(quiet.SHOW_VARIABLE, raising=False)
    source = notebook(nbformat.v4.new_code_cell("SMOKE = False"), nbformat.v4.new_code_cell(NOISY_CELL))
    source.cells[1].metadata["tags"] = ["parameters"]
    source.metadata["kernelspec"] = {"name": runner.KERNEL_NAME, "display_name": "course", "language": "python"}
    nbformat.write(source, tmp_path / "99_noisy.ipynb")
    result = runner.execute(tmp_path / "99_noisy.ipynb", tmp_path / "out.ipynb", smoke=True, progress=False)
    assert result.ok, result.error
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    stderr = "".join(o.text for o in executed.cells[-1].outputs if o.get("name") == "stderr")
    assert "a real warning" in stderr and "absl" not in stderr and "cpuinfo" not in stderr, stderr
    assert page_checks.notebook_problems(executed) == []
