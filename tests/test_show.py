import pytest

from helpers import export, show


def test_source_is_read_from_the_file_with_its_lines():
    found = show.get(export.parity)
    lines = open(found.file).read().splitlines()
    assert found.file == "helpers/export.py"
    assert "\n".join(lines[found.first_line - 1:found.last_line]) == found.text
    assert found.text.startswith("def parity(") and found.name == "helpers.export.parity"


def test_a_part_of_a_function_keeps_its_true_line_numbers():
    whole, part = show.get(export.parity), show.get(export.parity, lines=(2, 3))
    assert part.first_line == whole.first_line + 1 and part.last_line == whole.first_line + 2
    assert part.text.splitlines() == whole.text.splitlines()[1:3]
    with pytest.raises(ValueError, match="outside"):
        show.get(export.parity, lines=(3, 999))


def test_outside_a_notebook_it_prints(capsys):
    show.source(export.parity, lines=(1, 1))
    assert "helpers/export.py:" in capsys.readouterr().out


def test_an_excerpt_of_a_javascript_file_is_found_by_its_markers_with_its_true_lines():
    found = show.excerpt("web/demo.js", "async function inferDevice(", "}")
    lines = open(found.file).read().splitlines()
    assert found.file == "web/demo.js"
    assert "\n".join(lines[found.first_line - 1:found.last_line]) == found.text
    assert found.text.startswith("async function inferDevice(") and found.text.splitlines()[-1] == "}"
    assert "new ort.Tensor(" in found.text and "async function inferServer" not in found.text  # one function, whole


def test_an_indented_end_marker_stops_at_the_first_line_beginning_with_it():
    found = show.excerpt("web/preprocess.js", "function inkBox(", "  }")
    assert found.text.splitlines()[0].strip() == "function inkBox(strokes) {" and found.text.splitlines()[-1] == "  }"
    assert "function sampleRange" not in found.text


def test_an_excerpt_refuses_markers_that_do_not_pick_one_place(tmp_path):
    text = tmp_path / "a.js"
    text.write_text("function a() {\n  return 1;\n}\nfunction b() {\n  return 2;\n}\n")
    assert show.excerpt(text, "function b(", "}").text == "function b() {\n  return 2;\n}"
    with pytest.raises(ValueError, match="2 lines"):
        show.excerpt(text, "function", "}")
    with pytest.raises(ValueError, match="0 lines"):
        show.excerpt(text, "function c(", "}")
    with pytest.raises(ValueError, match="begins with"):
        show.excerpt(text, "function b(", "};")


def test_a_file_excerpt_prints_outside_a_notebook(capsys):
    show.file_excerpt("web/preprocess.js", "function centreByMass(", "  }")
    out = capsys.readouterr().out
    assert "web/preprocess.js:" in out and "function centreByMass(image)" in out


def test_a_whole_file_is_shown_with_its_line_count(tmp_path, capsys):
    path = tmp_path / "server.py"
    path.write_text("import os\n\nprint(os.getcwd())\n\n\n")
    found = show.whole(path)
    assert (found.first_line, found.last_line, found.text) == (1, 3, "import os\n\nprint(os.getcwd())")
    assert found.name == "server.py, 3 lines"
    show.file(path)
    assert "server.py, 3 lines" in capsys.readouterr().out
