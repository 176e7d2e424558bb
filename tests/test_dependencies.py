"""The locked dependency set (requirements/lock.txt, tools/deps.py, make install).

The lock must agree with pyproject.toml (every requirement satisfied by its pin, the recorded
inputs equal to the current ones), this environment must be exactly the lock, and
``tools/deps.py install`` must stop, naming the package and the command that fixes it, on a stale
lock, a hash mismatch or a package the registry does not have - with nothing of the failed step
installed. The install cases run offline against a wheel built here (``PIP_NO_INDEX``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "deps.py"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("distillery_deps_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


deps = _load_tool()


def test_lock_records_the_current_inputs() -> None:
    deps.check(ROOT)  # raises DepsError naming what changed
    assert deps.recorded_inputs(deps.LOCK) == deps.inputs(ROOT)


def test_every_pyproject_requirement_is_satisfied_by_its_pin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in ("dev", "redaction", "redaction-names"):
        wanted += project["optional-dependencies"][extra]
    pins = deps.pins(deps.LOCK)
    unmet = []
    for line in wanted:
        requirement = Requirement(line)
        name = deps.canonical(requirement.name)
        if name == "distillery" or (requirement.marker and not requirement.marker.evaluate()):
            continue
        pin = pins.get(name)
        if pin is None or not requirement.specifier.contains(pin.version, prereleases=True):
            unmet.append(f"{line} (lock: {pin.version if pin else 'absent'})")
    assert unmet == []
    for extra in deps.EXTRAS_IN.read_text(encoding="utf-8").splitlines():
        if extra.strip() and not extra.startswith("#"):
            assert deps.canonical(Requirement(extra).name) in pins, extra


def test_the_lock_is_for_cpython_311_linux_with_hashes_and_the_cpu_torch() -> None:
    pins = deps.pins(deps.LOCK)
    assert pins["torch"].version == "2.13.0+cpu"
    assert not [name for name in pins if name.startswith("nvidia-")]  # no CUDA wheels
    assert {"llm", "llama-cpp-python"}.isdisjoint(pins)  # excluded (excludes.txt)
    missing_hashes = [name for name, pin in pins.items() if "--hash=sha256:" not in pin.text]
    assert missing_hashes == []
    assert "target: CPython 3.11 x86_64-manylinux_2_28" in deps.recorded_inputs(deps.LOCK)


def test_this_environment_is_exactly_the_lock() -> None:
    """make install installed the lock: every pin at its version, nothing else."""
    python = Path(sys.prefix) / "bin" / "python"
    have = deps.installed(python)
    pins = deps.pins(deps.LOCK)
    assert deps.verify(have, pins) == []
    assert sorted(set(have) - set(pins) - {"distillery"}) == []


# -- what a stale lock, a wrong hash and a missing package do ---------------------------------


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel, so pip can install it with no index."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }

    def digest(text: str) -> str:
        raw = hashlib.sha256(text.encode()).digest()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    record = [f"{path},sha256={digest(body)},{len(body.encode())}" for path, body in files.items()]
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, body in files.items():
            archive.writestr(member, body)
    return path


def _project(root: Path, dependencies: list[str]) -> None:
    (root / "tools").mkdir(parents=True)
    shutil.copy(TOOL, root / "tools" / "deps.py")
    (root / "requirements").mkdir()
    listed = ", ".join(f'"{d}"' for d in dependencies)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "demo-app"\nversion = "0"\ndependencies = [{listed}]\n',
        encoding="utf-8",
    )


def _lock(root: Path, entries: list[str]) -> None:
    header = [f"{deps.HEADER_INPUT}{line}" for line in deps.inputs(root)]
    text = "\n".join([*header, *entries]) + "\n"
    (root / "requirements" / "lock.txt").write_text(text, encoding="utf-8")


def _install(root: Path, venv: Path, wheels: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    return subprocess.run(
        [sys.executable, str(root / "tools" / "deps.py"), "install", "--venv", str(venv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    _wheel(folder, "tinypkg", "1.0")
    return folder


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("venv") / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    yield path


def _has(venv: Path, name: str) -> bool:
    return name in deps.installed(venv / "bin" / "python")


def test_stale_lock_stops_install_naming_the_package(tmp_path: Path, wheels: Path) -> None:
    _project(tmp_path, ["tinypkg>=1"])
    _lock(tmp_path, [])
    _project_text = (tmp_path / "pyproject.toml").read_text(encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(
        _project_text.replace('"tinypkg>=1"', '"tinypkg>=2", "leftpad"'), encoding="utf-8"
    )
    venv = tmp_path / ".venv"
    done = _install(tmp_path, venv, wheels)
    assert done.returncode == 2
    assert "changed: requires: tinypkg>=1  ->  requires: tinypkg>=2" in done.stderr
    assert "new: requires: leftpad" in done.stderr
    assert "make lock" in done.stderr
    assert not venv.exists()  # stopped before anything was made


def test_hash_mismatch_installs_nothing_and_says_what_to_do(
    tmp_path: Path, wheels: Path, venv: Path
) -> None:
    _project(tmp_path, ["tinypkg"])
    _lock(tmp_path, [f"tinypkg==1.0 \\\n    --hash=sha256:{'0' * 64}"])
    done = _install(tmp_path, venv, wheels)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "tinypkg==1.0" in done.stderr and "does not match the hash" in done.stderr
    assert "make lock" in done.stderr
    assert not _has(venv, "tinypkg")


def test_package_missing_from_the_registry_is_named(
    tmp_path: Path, wheels: Path, venv: Path
) -> None:
    _project(tmp_path, ["tinypkg"])
    _lock(tmp_path, [f"tinypkg==2.0 \\\n    --hash=sha256:{'1' * 64}"])
    done = _install(tmp_path, venv, wheels)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no installable file for tinypkg==2.0" in done.stderr
    assert "make lock" in done.stderr
    assert not _has(venv, "tinypkg")


def test_the_right_hash_installs_the_pin(tmp_path: Path, wheels: Path, venv: Path) -> None:
    """The good path of the same step (the editable install after it needs setuptools)."""
    wheel = next(wheels.glob("tinypkg-1.0-*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    _project(tmp_path, ["tinypkg"])
    _lock(tmp_path, [f"tinypkg==1.0 \\\n    --hash=sha256:{digest}"])
    done = _install(tmp_path, venv, wheels)
    assert deps.installed(venv / "bin" / "python").get("tinypkg") == "1.0", done.stdout
