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
