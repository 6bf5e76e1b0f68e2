"""Which files of a folder on the control host a copy loop must send: one `find` of the
destination (get_checksum) replaces a copy call per file on a run with nothing to change."""

from __future__ import annotations

import hashlib
from pathlib import Path


def openpolicy_files_to_copy(sources: list[str], found: list[dict], mode: str = "0644", uid: int = 0, gid: int = 0):
    """The sources (sha1, as find reports it) whose file of the same name in the destination (found: an
    ansible.builtin.find result's files, with checksums) is missing, differs in content (sha1),
    or has another mode or owner than the copy sets."""
    there = {Path(entry["path"]).name: entry for entry in found}
    stale = []
    for source in sources:
        entry = there.get(Path(source).name)
        if (
            entry is None
            or entry.get("checksum") != hashlib.sha1(Path(source).read_bytes()).hexdigest()
            or entry.get("mode") != mode
            or entry.get("uid") != uid
            or entry.get("gid") != gid
        ):
            stale.append(source)
    return stale


class FilterModule:
    """Ansible filter: openpolicy_files_to_copy."""

    def filters(self) -> dict:
        return {"openpolicy_files_to_copy": openpolicy_files_to_copy}
