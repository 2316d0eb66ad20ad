"""`make setup`'s venvs for chapter 10's servers (course_tools/server_envs.py) and what `make doctor` says of them."""

import json
import sys

import pytest

from course_tools import doctor, server_envs


@pytest.fixture
def servers_in(tmp_path, monkeypatch):
    """servers/ and build/servers/ in a temporary folder: one server, `demo`, whose requirements install nothing."""
    monkeypatch.setattr(server_envs, "SERVERS", tmp_path / "servers")
    monkeypatch.setattr(server_envs, "ENVS", tmp_path / "build" / "servers")
    requirements = tmp_path / "servers" / "demo" / "requirements.txt"
    requirements.parent.mkdir(parents=True)
    requirements.write_text(f"# a server with no packages\n# python: {sys.version_info.major}.{sys.version_info.minor}\n")
    return requirements


def test_the_python_a_requirements_file_asks_for(tmp_path):
    file = tmp_path / "requirements.txt"
    file.write_text("# Triton's own venv\n# python: 3.11\nnumpy==1.26.4\n")
    assert server_envs.wanted_python(file) == "3.11"
    file.write_text("numpy==1.26.4\n")
    assert server_envs.wanted_python(file) is None
    assert server_envs.find_python(None) == sys.executable


@pytest.mark.integration  # creates a venv
def test_a_venv_is_built_once_recorded_and_rebuilt_when_its_requirements_change(servers_in, capsys):
    assert [c.status for c in doctor.check_server_envs()] == ["WARN"]
    assert "not built" in doctor.check_server_envs()[0].detail and "make setup" in doctor.check_server_envs()[0].fix
    server_envs.main([])
    target = server_envs.ENVS / "demo"
    record = json.loads((target / "install.json").read_text())
    assert (target / "bin" / "python").exists() and record["seconds"] > 0 and record["bytes"] > 0
    assert server_envs.up_to_date("demo", servers_in) and doctor.check_server_envs()[0].status == "ok"
    assert "demo: venv build/servers/demo/ built" in capsys.readouterr().out
    server_envs.main([])
    assert capsys.readouterr().out == ""  # up to date: nothing done, nothing said
    servers_in.write_text(servers_in.read_text() + "# changed\n")
    assert "out of date" in doctor.check_server_envs()[0].detail
    server_envs.main([])
    assert server_envs.up_to_date("demo", servers_in)


@pytest.mark.integration  # creates a venv
def test_a_server_that_fails_to_install_is_reported_and_removed(servers_in):
    servers_in.write_text("surely-not-a-package-anywhere==0.0.0\n")
    line = server_envs.build("demo", servers_in)
    assert line.startswith("Note: demo's venv failed to install") and "chapter 10 skips demo" in line
    assert not (server_envs.ENVS / "demo").exists()


def test_building_can_be_skipped(servers_in, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_SERVER_ENVS", "0")
    server_envs.main([])
    assert "not built" in capsys.readouterr().out and not (server_envs.ENVS / "demo").exists()
