"""No unencrypted secret in the repository: detect-secrets over every tracked file.

`.secrets.baseline` lists the audited findings (all false positives: key names such as
`existingSecret`, test values in bad-values cases), each marked is_secret=false. Anything the
scanner finds that is not in it fails here. To audit a new false positive:
`detect-secrets scan --baseline .secrets.baseline` then `detect-secrets audit .secrets.baseline`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers import REPO, toolchain_env


def scan(*paths: str, cwd: Path = REPO) -> dict[str, list[dict]]:
    result = subprocess.run(
        ["detect-secrets", "scan", *paths], cwd=cwd, env=toolchain_env(), text=True, capture_output=True, check=True
    )
    return json.loads(result.stdout)["results"]


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
    found = scan(*tracked_files())
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


def test_every_vault_file_in_git_is_encrypted():
    vaults = [p for p in tracked_files() if p.endswith(("/vault.yml", "/vault.yaml"))]
    for path in vaults:
        assert (REPO / path).read_text().startswith("$ANSIBLE_VAULT;"), f"{path} is not ansible-vault encrypted"
