import re

import pytest

from helpers import env, paths

# `name==version`, then an optional environment marker (`; sys_platform == "linux" and ...`), then a comment
PIN = r"([A-Za-z0-9_.\-\[\]]+)==([^\s#;]+)\s*(?:;([^#]*))?"


def pins_with_markers(lines) -> set[tuple[str, str, str]]:
    """{(name, version, marker)} of pin lines; the marker with its spacing normalized ("" when there is none)."""
    return {(env.normalize(name), version, " ".join(marker.split()))
            for name, version, marker in (m.groups("") for m in (re.match(PIN, line) for line in lines) if m)}


def environment_yml_pins() -> set[tuple[str, str, str]]:
    """The `- name==version[; marker]` lines of environment.yml's pip section (no YAML library needed for that)."""
    text = (paths.ROOT / "environment.yml").read_text()
    return pins_with_markers(re.findall(r"^\s*-\s*([A-Za-z0-9_.\-\[\]]+==.*)$", text, re.M))


def pins_for_this_machine() -> dict[str, str]:
    """{name: version} of the pins whose marker holds here (packaging evaluates markers as pip does)."""
    from packaging.markers import Marker

    return {name: version for name, version, marker in pins_with_markers(paths.REQUIREMENTS.read_text().splitlines())
            if not marker or Marker(marker).evaluate()}


def test_every_requirement_is_pinned_exactly():
    for line in paths.REQUIREMENTS.read_text().splitlines():
        spec = line.split("#")[0].strip()
        if spec:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[0-9][^\s;]*(\s*;\s*\S.*)?", spec), f"not pinned with ==: {line!r}"


def test_environment_yml_mirrors_requirements():
    assert environment_yml_pins() == pins_with_markers(paths.REQUIREMENTS.read_text().splitlines())
    assert re.search(r"^\s*-\s*python=3\.11\s*$", (paths.ROOT / "environment.yml").read_text(), re.M)


@pytest.mark.parametrize("machine", [{"sys_platform": "linux", "platform_machine": "x86_64"},
                                     {"sys_platform": "linux", "platform_machine": "aarch64"},
                                     {"sys_platform": "darwin", "platform_machine": "arm64"}],
                         ids=lambda m: m["platform_machine"])
def test_each_machine_gets_one_distribution_per_module(machine):
    """Marker-split packages (tensorflow-cpu on Linux x86_64, tensorflow elsewhere): exactly one of each pair applies."""
    from packaging.markers import Marker

    environment = {"platform_system": machine["sys_platform"].title()} | machine
    applying = {name for name, _, marker in pins_with_markers(paths.REQUIREMENTS.read_text().splitlines())
                if not marker or Marker(marker).evaluate(environment)}
    assert len(applying & {"tensorflow", "tensorflow-cpu"}) == 1, applying & {"tensorflow", "tensorflow-cpu"}


def test_the_pinned_stack_is_what_is_installed():
    for name, pinned in pins_for_this_machine().items():
        installed = env.installed_version(name)
        assert installed is not None and env.same_release(installed, pinned), f"{name}: pinned {pinned}, installed {installed}"


def test_check_versions_warns_with_the_fix_when_a_version_differs(tmp_path, capsys):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==0.0.1  # deliberately wrong\n")
    with pytest.warns(UserWarning, match="make setup"):
        assert env.check_versions("numpy", requirements=requirements) is False
    assert "DIFFERENT" in capsys.readouterr().out


def test_check_versions_raises_with_the_fix_when_a_package_is_missing(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("surely-not-installed-pkg==1.0\n")
    with pytest.raises(ImportError, match="make setup"):
        env.check_versions("surely-not-installed-pkg", requirements=requirements)


def test_check_versions_passes_on_this_install():
    assert env.check_versions("numpy", "torch", "tensorflow-cpu") is True


def test_a_local_build_tag_is_the_same_release():
    assert env.same_release("2.13.0+cpu", "2.13.0") and not env.same_release("2.13.1", "2.13.0")


def test_the_browser_runtime_is_pinned_exactly_and_locked():
    """web/package.json pins each npm dependency (ONNX Runtime Web, Swagger UI) with an exact version (no ^ or ~) and
    the lock file agrees with it."""
    import json

    package = json.loads((paths.WEB / "package.json").read_text())
    lock = json.loads((paths.WEB / "package-lock.json").read_text())
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: pin an exact version, not {version!r}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, f"{name}: run `npm install` in web/ to update the lock"
