"""Unit tests of roles/patroni/files/restore_wal.py: which archived WAL a Patroni replica refuses.

The e2e side (the command on real db hosts after a real failover) is in tests/e2e/test_staging.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "patroni" / "files" / "restore_wal.py"
_spec = importlib.util.spec_from_file_location("restore_wal", SCRIPT)
restore_wal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(restore_wal)

# Timeline 5's history as PostgreSQL 15 writes it (seen on the staging hosts): 5 left 4 at 0/18021A08.
HISTORY_5 = (
    "1\t0/C0237F8\tno recovery target specified\n\n"
    "2\t0/160000A0\tno recovery target specified\n\n"
    "3\t0/1602C328\tno recovery target specified\n\n"
    "4\t0/18021A08\tno recovery target specified\n"
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("000000040000000000000018", (4, 0x19000000)),
        ("0000000A00000001000000FF", (10, 0x200000000)),
        ("00000001000000000000000C", (1, 0xD000000)),
    ],
)
def test_segment_names_give_the_timeline_and_the_segment_end(name, expected):
    assert restore_wal.segment_of(name) == expected


@pytest.mark.parametrize(
    "name", ["00000005.history", "000000040000000000000018.partial", "000000010000000000000002.00000028.backup", "x"]
)
def test_anything_but_a_segment_is_not_a_segment(name):
    assert restore_wal.segment_of(name) is None


def test_the_segment_holding_the_fork_is_refused_naming_the_fork():
    why = restore_wal.refusal("000000040000000000000018", HISTORY_5)
    assert why == (
        "not restoring 000000040000000000000018: timeline 5 left timeline 4 at 0/18021A08, inside this "
        "segment; streaming from the primary takes over"
    )


def test_later_segments_of_the_old_timeline_are_refused():
    assert restore_wal.refusal("000000040000000000000019", HISTORY_5)


def test_segments_before_the_fork_are_restored():
    assert restore_wal.refusal("000000040000000000000017", HISTORY_5) is None


def test_a_fork_on_a_segment_boundary_leaves_the_segment_before_it_whole():
    history = "1\t0/3000000\tno recovery target specified\n"
    assert restore_wal.refusal("000000010000000000000002", history) is None
    assert restore_wal.refusal("000000010000000000000003", history)


def test_without_a_newer_timeline_everything_is_restored():
    assert restore_wal.refusal("000000040000000000000018", None) is None


def test_history_files_are_always_restored():
    assert restore_wal.refusal("00000004.history", HISTORY_5) is None


def test_a_newer_timeline_that_did_not_come_from_this_one_changes_nothing():
    """Timeline 5 left 3, not 4: whether 4 diverged is Patroni's check, not this command's."""
    assert restore_wal.refusal("000000040000000000000018", "1\t0/C0237F8\tx\n3\t0/14000100\tx\n") is None


def test_high_lsns_parse_both_halves():
    assert restore_wal.parse_lsn("1/FF000028") == 0x1FF000028
    assert restore_wal.refusal("0000000100000001000000FF", "1\t1/FF000028\tx\n")
    assert restore_wal.refusal("0000000100000001000000FE", "1\t1/FF000028\tx\n") is None
