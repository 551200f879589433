"""The dependency floors declared in pyproject.toml are high enough for what the code uses.

Installing the minimum versions into a throwaway venv would prove more, but costs a minute or
more of downloads and installs on every run; instead each feature the code relies on is listed
here with the release that brought it, and a check that the code still uses it (so the table
cannot outlive the reason for a floor)."""

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]

# package: (lowest version with everything below, [(feature, file, text that shows it is used)])
FEATURES = {
    "psycopg": (
        "3.2",
        [
            # notifies() gained timeout= and stop_after= in 3.2; 3.1's waits for ever.
            (
                "Connection.notifies(timeout=...)",
                "src/asyncqueue/worker/wakeup.py",
                "notifies(timeout",
            ),
        ],
    ),
    "urllib3": (
        "2.7",
        [
            # 2.0: NameResolutionError, enforce_content_length by default (a body shorter than
            # its Content-Length raises), HTTPHeaderDict.itermerged on responses.
            ("NameResolutionError", "src/asyncqueue/worker/http_client.py", "NameResolutionError"),
            ("HTTPHeaderDict.itermerged", "src/asyncqueue/worker/execute.py", "itermerged()"),
            # 2.6.0 (CVE-2025-66471) and 2.7.0 (CVE-2026-44432): read(amt) of a compressed
            # body inflates only what was asked for, so the body cap bounds memory.
            (
                "bounded read(amt, decode_content=True)",
                "src/asyncqueue/worker/execute.py",
                "decode_content=True",
            ),
        ],
    ),
    "requests": (
        "2.30",
        [
            # 2.30.0 is the first to accept urllib3 2.
            (
                "HTTPAdapter.send over urllib3 2",
                "src/asyncqueue/worker/http_client.py",
                "adapter.send(",
            ),
        ],
    ),
}


def declared_floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        for spec in requirement.specifier:
            if spec.operator in (">=", "==", "~="):
                floors[requirement.name] = Version(spec.version)
    return floors


@pytest.mark.parametrize("package", sorted(FEATURES))
def test_declared_floor_covers_the_features_used(package):
    floors = declared_floors()
    assert package in floors, f"{package} has no declared floor in pyproject.toml"
    needed, features = FEATURES[package]
    assert floors[package] >= Version(needed), (
        f"{package}>={floors[package]} is declared, but the code needs {needed}: "
        + ", ".join(feature for feature, _, _ in features)
    )


@pytest.mark.parametrize(
    "package, feature, path, text",
    [(p, f, path, text) for p, (_, fs) in FEATURES.items() for f, path, text in fs],
)
def test_the_features_behind_the_floors_are_still_used(package, feature, path, text):
    assert text in (ROOT / path).read_text(), f"{path} no longer uses {feature}: lower the floor?"
