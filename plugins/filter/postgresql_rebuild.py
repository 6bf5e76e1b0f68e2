"""Is the cluster on this host the live database the backup repository holds, or a new one?

`postgresql_rebuild_reason(controldata, info)` answers from `pg_controldata` (the cluster's
system id, timeline and last checkpoint; empty text when there is no cluster) and the JSON of
`pgbackrest info` of the stanza: '' when the cluster may be started as it is (the stanza holds
no backup, or the cluster is the one it backs up and not behind it), else one clause saying
why the cluster is not the live database. A cluster copied from another host (or a snapshot)
can share the stanza's system id, so a cluster on an older timeline, or whose last checkpoint
is before the start of the newest backup of its timeline, is not the live database either.
"""

from __future__ import annotations

import json
import re
from typing import Any


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _controldata(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        values[key.strip()] = value.strip()
    return values


def _stanza(info: Any) -> dict[str, Any]:
    if isinstance(info, str):
        info = json.loads(info) if info.strip() else []
    if isinstance(info, list):
        info = info[0] if info else {}
    return info if isinstance(info, dict) else {}


def postgresql_rebuild_reason(controldata: str, info: Any) -> str:
    stanza = _stanza(info)
    backups = [b for b in stanza.get("backup", []) if isinstance(b, dict)]
    if not backups:
        return ""
    if not controldata.strip():
        return "the host has no cluster yet"
    values = _controldata(controldata)
    system_id = values.get("Database system identifier", "")
    databases = [db for db in stanza.get("db", []) if isinstance(db, dict)]
    expected = str(max(databases, key=lambda db: db.get("id", 0)).get("system-id", "")) if databases else ""
    if expected and system_id != expected:
        return f"its system id {system_id} is not the stanza's {expected}"
    timeline = int(values.get("Latest checkpoint's TimeLineID", "0") or 0)
    # A backup's first WAL segment name starts with its timeline (8 hex digits).
    on_timeline = [b for b in backups if re.match(r"^[0-9A-F]{24}$", str(b.get("archive", {}).get("start", "")))]
    timelines = [int(b["archive"]["start"][:8], 16) for b in on_timeline]
    if timelines and timeline < max(timelines):
        return f"it is on timeline {timeline}, the backups reach timeline {max(timelines)}"
    same = [b for b, t in zip(on_timeline, timelines, strict=True) if t == timeline and b.get("lsn", {}).get("start")]
    checkpoint = values.get("Latest checkpoint location", "0/0")
    newest = same[-1] if same else {}
    if newest and _lsn(checkpoint) < _lsn(newest["lsn"]["start"]):
        start = newest["lsn"]["start"]
        return f"its last checkpoint {checkpoint} is before the start {start} of backup {newest['label']}"
    return ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"postgresql_rebuild_reason": postgresql_rebuild_reason}
