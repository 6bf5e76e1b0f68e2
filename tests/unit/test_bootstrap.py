"""The pinned toolchain: one place for versions, and a bootstrap that is idempotent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import yaml

from openpolicy_tools import pins
from tests.helpers import REPO, toolchain_env


def test_versions_file_pins_exact_versions():
    versions = pins.load_versions()
    for table in ("python", "go"):
        for name, version in versions[table].items():
            assert version[0].isdigit() or version.startswith("v"), f"{table}.{name} = {version!r} is not exact"
            assert not any(c in version for c in "<>=~*^"), f"{table}.{name} = {version!r} is a range"


def test_requirements_pin_every_collection_exactly_and_kubernetes_core_fits_helm4():
    data = yaml.safe_load((REPO / "requirements.yml").read_text())
    collections = {c["name"]: c["version"] for c in data["collections"]}
    assert all(str(v)[0].isdigit() for v in collections.values()), collections
    major, minor, _ = (int(p) for p in collections["kubernetes.core"].split("."))
    assert (major, minor) >= (6, 5), "Helm 4 needs kubernetes.core >= 6.5.0"
    assert pins.load_versions()["go"]["helm"].startswith("v4.")


def test_installed_collections_match_requirements():
    data = yaml.safe_load((REPO / "requirements.yml").read_text())
    root = REPO / ".toolchain" / "collections" / "ansible_collections"
    for collection in data["collections"]:
        namespace, name = collection["name"].split(".")
        manifest = yaml.safe_load((root / namespace / name / "MANIFEST.json").read_text())
        assert manifest["collection_info"]["version"] == collection["version"], collection["name"]


def test_ansible_loads_the_pinned_kubernetes_core():
    """The venv's ansible package bundles an older kubernetes.core: the pinned copy must win."""
    result = subprocess.run(
        ["ansible-doc", "-j", "kubernetes.core.helm"],
        cwd=REPO,
        env=toolchain_env(),
        text=True,
        capture_output=True,
        check=True,
    )
    module = json.loads(result.stdout)["kubernetes.core.helm"]["doc"]["filename"]
    assert module.startswith(str(REPO / ".toolchain" / "collections")), module
    manifest = Path(module).parents[2] / "MANIFEST.json"
    assert json.loads(manifest.read_text())["collection_info"]["version"] == "6.6.0"


def test_second_bootstrap_changes_and_rebuilds_nothing():
    """Run twice: the second run reports every step cached and leaves every binary as it was."""
    first = subprocess.run(
        [sys.executable, "scripts/bootstrap.py"], cwd=REPO, text=True, capture_output=True, check=False
    )
    assert first.returncode == 0, first.stderr
    binaries = sorted((REPO / ".toolchain" / "bin").iterdir())
    before = {b.name: b.resolve().stat().st_mtime_ns for b in binaries}
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "scripts/bootstrap.py"], cwd=REPO, text=True, capture_output=True, check=False
    )
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert "built" not in second.stdout and "installed" not in second.stdout, second.stdout
    assert second.stdout.count("cached") >= 3, second.stdout
    after = {b.name: b.resolve().stat().st_mtime_ns for b in sorted((REPO / ".toolchain" / "bin").iterdir())}
    assert after == before
    assert elapsed < 60, f"a warm bootstrap should take seconds, took {elapsed:.0f}s"


def test_bootstrap_rejects_an_unknown_step():
    result = subprocess.run(
        [sys.executable, "scripts/bootstrap.py", "--only", "everything"],
        cwd=REPO,
        text=True,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 2
    assert "--only: unknown step everything" in result.stderr


def test_bootstrap_explains_a_missing_go_toolchain(tmp_path):
    env = toolchain_env(PATH=f"{tmp_path}:/usr/bin:/bin", OPENPOLICY_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "scripts/bootstrap.py", "--only", "go"],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 1
    assert "no Go toolchain on PATH" in result.stderr and "install Go" in result.stderr


def test_pins_are_tomllib_readable_without_any_package():
    with (REPO / "versions.toml").open("rb") as handle:
        assert tomllib.load(handle)["go"]["kubernetes"].startswith("v1.36.")
