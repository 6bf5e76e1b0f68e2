"""The filter openpolicy_files_to_copy: which files a copy loop still sends after one `find` of the
destination (roles/prometheus's rule files and dashboards)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ansible_collections.openpolicy.deploy.plugins.filter.openpolicy_files import openpolicy_files_to_copy


def found(path: Path, content: bytes, **changes) -> dict:
    entry = {"path": f"/etc/prometheus/rules/{path.name}", "checksum": hashlib.sha1(content).hexdigest(),
             "mode": "0644", "uid": 0, "gid": 0}  # fmt: skip
    return entry | changes


def test_only_files_missing_different_or_with_another_mode_or_owner_are_sent(tmp_path: Path) -> None:
    names = ["a.yml", "b.yml", "c.yml", "d.yml", "e.yml"]
    sources = []
    for name in names:
        (tmp_path / name).write_bytes(f"groups: [{name}]\n".encode())
        sources.append(str(tmp_path / name))
    same = [found(tmp_path / name, (tmp_path / name).read_bytes()) for name in names]
    assert openpolicy_files_to_copy(sources, same) == []
    drifted = [
        same[0],
        found(tmp_path / "b.yml", b"groups: []\n"),
        found(tmp_path / "c.yml", (tmp_path / "c.yml").read_bytes(), mode="0600"),
        found(tmp_path / "d.yml", (tmp_path / "d.yml").read_bytes(), uid=1000),
    ]
    assert openpolicy_files_to_copy(sources, drifted) == sources[1:]
