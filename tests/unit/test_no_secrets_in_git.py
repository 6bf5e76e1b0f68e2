"""No unencrypted secret in the repository: detect-secrets over every tracked file.

`.secrets.baseline` lists the audited findings (all false positives: key names such as
`existingSecret`, test values in bad-values cases), each marked is_secret=false. Anything the
scanner finds that is not in it fails here. To audit a new false positive:
`detect-secrets scan --baseline .secrets.baseline` then `detect-secrets audit .secrets.baseline`.

The scanner's findings for a file follow from its path and its bytes alone, so they are kept in
.local/cache/detect-secrets under the hash of both (and of the scanner's version): a file scanned
before with the same content is not scanned again. A fresh clone (CI) scans every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

from tests.helpers import REPO, toolchain_env

FINDINGS_CACHE = REPO / ".local" / "cache" / "detect-secrets"


def scan(*paths: str, cwd: Path = REPO) -> dict[str, list[dict]]:
    result = subprocess.run(
        ["detect-secrets", "scan", *paths], cwd=cwd, env=toolchain_env(), text=True, capture_output=True, check=True
    )
    return json.loads(result.stdout)["results"]


def findings_key(path: str) -> str:
    identity = f"{metadata.version('detect-secrets')}\0{path}\0".encode()
    return hashlib.sha256(identity + (REPO / path).read_bytes()).hexdigest()


def scan_with_cache(paths: list[str]) -> dict[str, list[dict]]:
    """scan() of the tracked files, each file's findings read from FINDINGS_CACHE when its path
    and content were scanned before; what is scanned now is kept there."""
    keys = {path: findings_key(path) for path in paths}
    found: dict[str, list[dict]] = {}
    unscanned = []
    for path, key in keys.items():
        try:
            findings = json.loads((FINDINGS_CACHE / key).read_text())
        except (OSError, ValueError):
            unscanned.append(path)
            continue
        if findings:
            found[path] = findings
    scanned = scan(*unscanned) if unscanned else {}
    FINDINGS_CACHE.mkdir(parents=True, exist_ok=True)
    for path in unscanned:
        findings = scanned.get(path, [])
        partial = FINDINGS_CACHE / f"{keys[path]}.{os.getpid()}"
        partial.write_text(json.dumps(findings))
        partial.replace(FINDINGS_CACHE / keys[path])
        if findings:
            found[path] = findings
    return found


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, text=True, capture_output=True, check=True).stdout
    return [p for p in out.split("\0") if p and (REPO / p).is_file() and p != ".secrets.baseline"]


def test_no_tracked_file_holds_a_secret_outside_the_audited_baseline():
    baseline = json.loads((REPO / ".secrets.baseline").read_text())["results"]
    audited = {
        (path, finding["hashed_secret"])
        for path, findings in baseline.items()
        for finding in findings
        if finding.get("is_secret") is False
    }
    found = scan_with_cache(tracked_files())
    new = [
        f"{path}:{finding['line_number']} {finding['type']}"
        for path, findings in found.items()
        for finding in findings
        if (path, finding["hashed_secret"]) not in audited
    ]
    assert not new, "unaudited secrets in git:\n" + "\n".join(new)


def test_the_scanner_finds_a_planted_secret(tmp_path):
    """A control: the same scan catches a private key and a password in a vault-style file."""
    planted = tmp_path / "vault.yml"
    key_header = "-----BEGIN " + "RSA PRIVATE KEY-----"
    planted.write_text(f"vault_db_password: 'Xq3!vR9#mZ2@pL7$'\nkey: |\n  {key_header}\n  MIIEow\n")
    found = scan(planted.name, cwd=tmp_path)
    types = {finding["type"] for findings in found.values() for finding in findings}
    assert "Private Key" in types


def test_a_file_is_scanned_again_when_its_content_changes(tmp_path, monkeypatch):
    """The findings kept for a file are those of its content: the same content is not scanned
    again, a changed one is, and a secret planted in it is found."""
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    monkeypatch.setattr(f"{__name__}.FINDINGS_CACHE", tmp_path / "cache")
    scanned: list[tuple[str, ...]] = []
    real_scan = scan

    def counted_scan(*paths: str) -> dict[str, list[dict]]:
        scanned.append(paths)
        return real_scan(*paths, cwd=tmp_path)

    monkeypatch.setattr(f"{__name__}.scan", counted_scan)
    (tmp_path / "clean.yml").write_text("name: value\n")
    (tmp_path / "vault.yml").write_text("name: value\n")
    assert scan_with_cache(["clean.yml", "vault.yml"]) == {}
    assert scan_with_cache(["clean.yml", "vault.yml"]) == {}
    assert scanned == [("clean.yml", "vault.yml")]
    (tmp_path / "vault.yml").write_text("key: |\n  -----BEGIN " + "RSA PRIVATE KEY-----\n  MIIEow\n")
    found = scan_with_cache(["clean.yml", "vault.yml"])
    assert scanned[-1] == ("vault.yml",)
    assert [finding["type"] for finding in found["vault.yml"]] == ["Private Key"]
    assert scan_with_cache(["clean.yml", "vault.yml"]) == found and len(scanned) == 2


def test_every_vault_file_in_git_is_encrypted():
    vaults = [p for p in tracked_files() if p.endswith(("/vault.yml", "/vault.yaml"))]
    for path in vaults:
        assert (REPO / path).read_text().startswith("$ANSIBLE_VAULT;"), f"{path} is not ansible-vault encrypted"
