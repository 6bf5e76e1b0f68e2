"""Checkov (offline) over every rendered manifest: zero failed checks, each skip justified."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

# Pinned in versions.toml [tool_venvs]; `make bootstrap` links it into .toolchain/bin.
CHECKOV_VERSION = tomllib.loads((Path(__file__).resolve().parents[2] / "versions.toml").read_text())["tool_venvs"][
    "checkov"
]
SKIPS = Path(__file__).with_name("checkov_skips.txt")


def checkov_binary() -> str:
    """checkov on PATH, else the link `make bootstrap` puts in .toolchain/bin (its tool venv's
    folder carries a hash of its pins, so the link is the one stable name)."""
    linked = Path(__file__).resolve().parents[2] / ".toolchain" / "bin" / "checkov"
    found = shutil.which("checkov") or (str(linked) if linked.is_file() else None)
    if not found:
        pytest.fail(f"checkov {CHECKOV_VERSION} is not installed (pip install checkov=={CHECKOV_VERSION})")
    return found


def skips() -> dict[str, str]:
    entries = {}
    for line in SKIPS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            check, _, reason = line.partition(" ")
            entries[check] = reason.strip()
    return entries


def test_every_skip_is_justified() -> None:
    for check, reason in skips().items():
        assert check.startswith("CKV"), check
        assert len(reason.split()) >= 5, f"{check}: say why in a sentence"


def test_checkov_finds_nothing(rendered: dict, tmp_path: Path) -> None:
    for (env, release), manifests in rendered.items():
        (tmp_path / f"{env}-{release}.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    binary = checkov_binary()
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_COLOR": "1", "LOG_LEVEL": "ERROR"}
    run = subprocess.run(
        [
            binary,
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--compact",
            "--quiet",
            "--output",
            "json",
            "--skip-check",
            ",".join(skips()),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    # The version from the report itself: `checkov --version` costs a start of checkov (4 s).
    assert {report["summary"]["checkov_version"] for report in reports} == {CHECKOV_VERSION}
    failed = [
        f"{f['check_id']} {f['check_name']}: {f['file_path']} {f['resource']}"
        for report in reports
        for f in report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed[:40])
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 1000, "checkov scanned too little: did it read the manifests?"
