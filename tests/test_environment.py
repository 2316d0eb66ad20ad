import re

import pytest

from helpers import env, paths


def environment_yml_pins() -> dict[str, str]:
    """The `- name==version` lines of environment.yml's pip section (no YAML library needed for that)."""
    text = (paths.ROOT / "environment.yml").read_text()
    return {env.normalize(n): v for n, v in re.findall(r"^\s*-\s*([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)", text, re.M)}


def test_every_requirement_is_pinned_exactly():
    for line in paths.REQUIREMENTS.read_text().splitlines():
        spec = line.split("#")[0].strip()
        if spec:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[0-9][^\s]*", spec), f"not pinned with ==: {line!r}"


def test_environment_yml_mirrors_requirements():
    assert environment_yml_pins() == env.pinned_versions()
    assert re.search(r"^\s*-\s*python=3\.11\s*$", (paths.ROOT / "environment.yml").read_text(), re.M)


def test_the_pinned_stack_is_what_is_installed():
    for name, pinned in env.pinned_versions().items():
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
    """web/package.json pins ONNX Runtime Web with an exact version (no ^ or ~) and the lock file agrees with it."""
    import json

    package = json.loads((paths.WEB / "package.json").read_text())
    lock = json.loads((paths.WEB / "package-lock.json").read_text())
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: pin an exact version, not {version!r}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, f"{name}: run `npm install` in web/ to update the lock"
