"""A deploy installs the versions the tests ran on.

constraints.txt pins every package the service runs on (transitive ones included) and
constraints-dev.txt bin/test's tools; requirements.txt, what a Procfile platform installs, is the
project under those pins, and bin/setup-venv installs .venv under them too. These tests hold the
pins to pyproject.toml's ranges and floors, to the dependency graph of the installed packages, to
the environment the suite is running in, and to what src/, tests/ and bench/ import."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PINS = "constraints.txt"
DEV_PINS = "constraints-dev.txt"
# First-party top-level packages; bench/peers/ runs in bin/bench's own venv, with its own installs.
LOCAL_MODULES = {"asyncqueue", "tests", "bench"}


@cache
def declared() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        "runtime": [Requirement(line) for line in project["dependencies"]],
        "dev": [Requirement(line) for line in project["optional-dependencies"]["dev"]],
    }


def pins(filename: str) -> dict[str, Version]:
    """A pin file's `name==version` lines; anything else there is a failure."""
    found = {}
    for number, line in enumerate((ROOT / filename).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{filename}:{number}: {line!r}"
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert not requirement.extras and requirement.marker is None, f"{where}: a bare name only"
        assert requirement.name == canonicalize_name(requirement.name), f"{where}: canonical name"
        assert len(specs) == 1 and specs[0].operator == "==", f"{where}: exactly one ==version"
        assert "*" not in specs[0].version, f"{where}: an exact version"
        assert requirement.name not in found, f"{where}: pinned twice"
        found[requirement.name] = Version(specs[0].version)
    return found


def all_pins() -> dict[str, Version]:
    runtime, dev = pins(RUNTIME_PINS), pins(DEV_PINS)
    both = sorted(set(runtime) & set(dev))
    assert not both, f"pinned in both files (keep the {RUNTIME_PINS} one): {both}"
    return runtime | dev


def closure(roots: list[Requirement]) -> dict[str, list[tuple[str, Requirement]]]:
    """Every distribution `roots` need in this interpreter, from the installed packages'
    metadata (markers evaluated, extras followed), each with who requires it and how."""
    needed: dict[str, list[tuple[str, Requirement]]] = {}
    extras_followed: dict[str, set[str]] = {}
    todo = [("pyproject.toml", requirement) for requirement in roots]
    while todo:
        by, requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        needed.setdefault(name, []).append((by, requirement))
        followed = extras_followed.get(name)
        if followed is not None and requirement.extras <= followed:
            continue
        extras_followed[name] = (followed or set()) | requirement.extras
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} (required by {by}) is not installed: run bin/setup-venv dev")
        environments = [{"extra": extra} for extra in ("", *requirement.extras)]
        for line in requires:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate(env) for env in environments):
                todo.append((name, sub))
    return needed


def test_pin_files_pin_each_package_once_to_an_exact_version():
    assert pins(RUNTIME_PINS), f"{RUNTIME_PINS} pins nothing"
    assert pins(DEV_PINS), f"{DEV_PINS} pins nothing"
    all_pins()


def test_requirements_txt_installs_the_project_under_the_runtime_pins():
    """pip reads a nested -c path relative to the requirements file, so this holds wherever
    the buildpack runs pip from; `.` is the app folder it runs in."""
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines == [f"-c {RUNTIME_PINS}", "."]
    assert (ROOT / RUNTIME_PINS).is_file()


@pytest.mark.parametrize(
    "kind, requirement",
    [(kind, r) for kind, requirements in declared().items() for r in requirements],
    ids=str,
)
def test_every_declared_dependency_is_pinned_within_its_range(kind, requirement):
    # The service's own dependencies must be in the file a deploy installs under.
    pinned = pins(RUNTIME_PINS) if kind == "runtime" else all_pins()
    name = canonicalize_name(requirement.name)
    assert name in pinned, f"{requirement} is declared but not pinned"
    assert requirement.specifier.contains(pinned[name], prereleases=True), (
        f"{name}=={pinned[name]} is pinned, outside the declared {requirement}"
    )


@pytest.mark.parametrize(
    "requirement", [r for requirements in declared().values() for r in requirements], ids=str
)
def test_declared_floors_are_the_tested_pins(requirement):
    """Nothing installs an older version than the pin, so a lower floor would be a claim no test
    backs: the floor is the pin, lifted with it."""
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    pinned = all_pins().get(canonicalize_name(requirement.name))
    assert floors == [pinned], f"{requirement}: its floor should be >={pinned}, the tested pin"


def test_the_pins_hold_every_dependency_and_agree_with_each_other():
    runtime, dev, pinned = pins(RUNTIME_PINS), pins(DEV_PINS), all_pins()
    needed_runtime = closure(declared()["runtime"])
    needed_dev = closure(declared()["dev"])
    problems = []
    for name, edges in sorted(needed_runtime.items()):
        if name not in runtime:
            by, requirement = edges[0]
            installed = metadata.version(name)
            problems.append(f"{RUNTIME_PINS} lacks {name}=={installed} ({by} needs {requirement})")
    for name, edges in sorted(needed_dev.items()):
        if name not in needed_runtime and name not in dev:
            by, requirement = edges[0]
            installed = metadata.version(name)
            problems.append(f"{DEV_PINS} lacks {name}=={installed} ({by} needs {requirement})")
    # As pip check would on the pinned set: every requirement met by the version pinned.
    for needed in (needed_runtime, needed_dev):
        for name, edges in sorted(needed.items()):
            for by, requirement in edges:
                if name in pinned and not requirement.specifier.contains(pinned[name], True):
                    problems.append(f"{name}=={pinned[name]} does not meet {by}'s {requirement}")
    for name in sorted(set(runtime) - set(needed_runtime)):
        problems.append(f"{name} is in {RUNTIME_PINS}, but the service does not need it")
    for name in sorted(set(dev) - set(needed_dev)):
        problems.append(f"{name} is in {DEV_PINS}, but nothing in the dev extra needs it")
    problems = list(dict.fromkeys(problems))  # (an edge met from both closures: once)
    assert not problems, "\n".join(problems)


def test_the_suite_runs_on_the_pinned_versions():
    """What bin/setup-venv installed is what a deploy installs: the tests vouch for the pins."""
    wrong = []
    for name, version in sorted(all_pins().items()):
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}=={version} is pinned but not installed")
            continue
        if installed != version:
            wrong.append(f"{name} {installed} is installed, {version} is pinned")
    assert not wrong, "run bin/setup-venv dev:\n" + "\n".join(wrong)


def _imported(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Top-level modules imported (absolutely) by the .py files under `folder`, less the standard
    library and our own packages, each with one file that imports it."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        if any(path.is_relative_to(s) for s in skip):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for module in (name.partition(".")[0] for name in names):
                if module not in sys.stdlib_module_names and module not in LOCAL_MODULES:
                    found.setdefault(module, str(path.relative_to(ROOT)))
    return found


DEV_ONLY_CODE = ROOT / "src" / "asyncqueue" / "dev"  # bin/dev's and bin/test's, not a deploy's


@pytest.mark.parametrize(
    "folder, skip, kinds",
    [
        ("src", (DEV_ONLY_CODE,), ("runtime",)),
        ("src/asyncqueue/dev", (), ("runtime", "dev")),
        ("tests", (), ("runtime", "dev")),
        ("bench", (ROOT / "bench" / "peers",), ("runtime", "dev")),
    ],
    ids=["src", "src-dev", "tests", "bench"],
)
def test_every_third_party_import_is_declared(folder, skip, kinds):
    """Declared directly, not only reachable through another package that may drop it."""
    names = {canonicalize_name(r.name) for kind in kinds for r in declared()[kind]}
    providers = metadata.packages_distributions()
    undeclared = []
    for module, where in sorted(_imported(ROOT / folder, skip).items()):
        distributions = {canonicalize_name(d) for d in providers.get(module, [])}
        if not distributions & names:
            source = ", ".join(sorted(distributions)) or "no installed distribution"
            undeclared.append(f"{where} imports {module} ({source}), not declared")
    assert not undeclared, "\n".join(undeclared)
