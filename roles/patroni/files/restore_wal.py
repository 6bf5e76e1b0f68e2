#!/usr/bin/env python3
"""restore_command of Patroni's replicas: pgBackRest's archive-get, minus WAL a newer timeline left.

Usage (PostgreSQL substitutes %f and %p):
    restore_wal.py --stanza S %f %p

Why: after a failover, Patroni restarts the old primary, archives the WAL it still has marked
ready and rewinds it. That WAL is the old timeline past the point where the new primary forked
from it. A replica that has not yet switched to the new timeline can restore that segment from
the repository and replay past the fork; it then cannot follow the new primary ("requested
starting point ... is not in this server's history") and Patroni 3.0.2, which checked the
replica's position once when the leader changed, leaves it there. In synchronous mode such a
replica can also hold back the next failover.

So a segment of timeline T is refused (exit 1, as for a missing file) when the repository holds
timeline T+1's history and T+1 left T before that segment's end. PostgreSQL then streams from the
new primary, which serves T only up to the fork, and switches to T+1 there. History files and
every other segment go to `pgbackrest archive-get` unchanged. Installed by roles/patroni; stdlib only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
# initdb's default WAL segment size; roles/postgresql and roles/patroni keep it.
SEGMENT_BYTES = 16 * 1024 * 1024
SEGMENTS_PER_XLOGID = 0x100000000 // SEGMENT_BYTES
EXIT_NOT_RESTORED = 1


def segment_of(wal_file: str) -> tuple[int, int] | None:
    """(timeline, end LSN of the segment) of a WAL segment file name; None for anything else
    (history files, .partial, backup labels)."""
    match = SEGMENT.match(wal_file)
    if not match:
        return None
    timeline, xlogid, segment = (int(part, 16) for part in match.groups())
    return timeline, (xlogid * SEGMENTS_PER_XLOGID + segment + 1) * SEGMENT_BYTES


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def fork_point(history: str, timeline: int) -> int | None:
    """Where the timeline whose history file this is left `timeline`; None if not its ancestor."""
    for line in history.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) == timeline:
            return parse_lsn(fields[1])
    return None


def refusal(wal_file: str, next_history: str | None) -> str | None:
    """Why this segment must not be restored, or None to restore it."""
    segment = segment_of(wal_file)
    if segment is None or next_history is None:
        return None
    timeline, end = segment
    fork = fork_point(next_history, timeline)
    if fork is None or fork >= end:
        return None
    return (
        f"not restoring {wal_file}: timeline {timeline + 1} left timeline {timeline} at "
        f"{fork >> 32:X}/{fork & 0xFFFFFFFF:X}, inside this segment; streaming from the primary takes over"
    )


def archive_get(stanza: str, wal_file: str, destination: str, quiet: bool = False) -> int:
    """pgBackRest's exit code: 0 restored, 1 not in the repository, others an error."""
    command = ["pgbackrest", f"--stanza={stanza}", "archive-get", wal_file, destination]
    return subprocess.run(command, check=False, capture_output=quiet).returncode


def next_history(stanza: str, wal_file: str) -> str | None:
    """The history file of the timeline after the segment's, from the repository, if there is one."""
    segment = segment_of(wal_file)
    if segment is None:
        return None
    name = f"{segment[0] + 1:08X}.history"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        # Usually absent (no newer timeline): pgBackRest's own "not found" stays out of the log.
        found = archive_get(stanza, name, str(path), quiet=True) == 0
        return path.read_text() if found and path.is_file() else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stanza", required=True)
    parser.add_argument("wal_file", help="%%f: the file PostgreSQL asks for")
    parser.add_argument("destination", help="%%p: where to put it")
    args = parser.parse_args(argv)
    why = refusal(args.wal_file, next_history(args.stanza, args.wal_file))
    if why:
        print(why, file=sys.stderr)
        return EXIT_NOT_RESTORED
    return archive_get(args.stanza, args.wal_file, args.destination)


if __name__ == "__main__":
    sys.exit(main())
