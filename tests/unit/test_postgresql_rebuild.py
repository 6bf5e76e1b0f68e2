"""Unit tests of roles/postgresql's guard filter: is the host's cluster the live database the
stanza backs up, or a new one (a rebuilt host) that must not be started as an empty database?"""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_filter_plugin

rebuild = load_filter_plugin("postgresql_rebuild")

STANZA_ID = 7310000000000000001


def controldata(system_id: int = STANZA_ID, timeline: int = 1, checkpoint: str = "0/9000060") -> str:
    """The lines of pg_controldata (LC_ALL=C) the filter reads, among others it ignores."""
    return "\n".join([
        "pg_control version number:            1300",
        f"Database system identifier:           {system_id}",
        "Database cluster state:               in production",
        f"Latest checkpoint location:           {checkpoint}",
        "Latest checkpoint's REDO location:    0/9000028",
        f"Latest checkpoint's TimeLineID:       {timeline}",
    ])  # fmt: skip


def info(*backups: tuple[str, str], system_id: int = STANZA_ID) -> str:
    """pgbackrest info --output=json of a stanza with backups (first WAL segment, start LSN)."""
    items = [
        {"label": f"20261201-0{n}0000F", "type": "full", "archive": {"start": wal, "stop": wal}, "lsn": {"start": lsn}}
        for n, (wal, lsn) in enumerate(backups)
    ]
    stanza = {"name": "openpolicy", "status": {"code": 0 if items else 2}, "backup": items}
    stanza["db"] = [{"id": 1, "repo-key": 1, "system-id": system_id, "version": "15"}]
    return json.dumps([stanza])


BACKUP_TL1 = ("000000010000000000000005", "0/5000028")


@pytest.mark.parametrize(
    ("cluster", "stanza", "expected"),
    [
        (controldata(), info(), ""),  # a stanza without backups: nothing to protect
        ("", info(BACKUP_TL1), "the host has no cluster yet"),
        (controldata(system_id=7320000000000000002), info(BACKUP_TL1), "system id 7320000000000000002 is not"),
        # a cluster baked into an image: the stanza's system id, but far behind its backups
        (
            controldata(checkpoint="0/1000060"),
            info(BACKUP_TL1),
            "last checkpoint 0/1000060 is before the start 0/5000028",
        ),
        (
            controldata(timeline=1),
            info(("000000020000000000000007", "0/7000028")),
            "timeline 1, the backups reach timeline 2",
        ),
        (controldata(), info(BACKUP_TL1), ""),  # the live primary, past its latest backup
        # restored and promoted: a timeline newer than every backup's
        (controldata(timeline=2, checkpoint="0/5800060"), info(("000000010000000000000009", "0/9000028")), ""),
    ],
)
def test_rebuild_reason(cluster: str, stanza: str, expected: str) -> None:
    reason = rebuild.postgresql_rebuild_reason(cluster, stanza)
    assert (expected in reason and reason) if expected else reason == ""


def test_empty_or_missing_info_protects_nothing() -> None:
    assert rebuild.postgresql_rebuild_reason("", "[]") == ""
    assert rebuild.postgresql_rebuild_reason("", "") == ""


def test_the_filter_is_registered() -> None:
    assert "postgresql_rebuild_reason" in rebuild.FilterModule().filters()
