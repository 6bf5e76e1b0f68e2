"""Unit tests of the cron expression filters of roles/pgbackrest (plugins/filter/pgbackrest_schedule.py):
validation, systemd OnCalendar."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import load_filter_plugin

schedule = load_filter_plugin("pgbackrest_schedule")


@pytest.mark.parametrize(
    ("cron", "calendar"),
    [
        ("30 1 * * 0", "Sun *-*-* 01:30:00"),
        ("30 1 * * 1-6", "Mon..Sat *-*-* 01:30:00"),
        ("30 0,2-23 * * *", "*-*-* 00,02..23:30:00"),
        ("* * * * *", "*-*-* *:*:00"),
        ("*/15 * * * *", "*-*-* *:00/15:00"),
        ("0 3 1 * *", "*-*-01 03:00:00"),
        ("0 0 * * 5-7", "Fri..Sun *-*-* 00:00:00"),
        ("0 0 * * 0-7", "*-*-* 00:00:00"),
    ],
)
def test_translation(cron: str, calendar: str) -> None:
    assert schedule.cron_error(cron) == ""
    assert schedule.cron_to_oncalendar(cron) == calendar


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("30 1 * *", "expected 5 fields"),
        ("61 * * * *", "minute field '61'"),
        ("0 24 * * *", "hour field '24'"),
        ("0 0 0 * *", "day of month field '0'"),
        ("0 0 * 13 *", "month field '13'"),
        ("0 0 * * 8", "day of week field '8'"),
        ("0 3 1 * 1", "cannot both be restricted"),
        ("@daily", "expected 5 fields"),
        ("5-1 * * * *", "ranges low-high"),
        ("*/0 * * * *", "step from 1"),
        ("1,*/5 * * * *", "*/step stands alone"),
    ],
)
def test_invalid_expressions_name_the_problem(cron: str, reason: str) -> None:
    assert reason in schedule.cron_error(cron)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
@pytest.mark.parametrize("cron", ["30 1 * * 0", "30 0,2-23 * * *", "*/15 * * * *", "0 0 * * 5-7", "0 3 1 * *"])
def test_systemd_accepts_the_translation(cron: str) -> None:
    result = subprocess.run(
        ["systemd-analyze", "calendar", schedule.cron_to_oncalendar(cron)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_backup_job_item() -> None:
    job = schedule.backup_job({"key": "incr", "value": "30 * * * *"}, "pgbackrest", "--stanza s")
    assert job == {
        "name": "openpolicy-backup-incr",
        "user": "pgbackrest",
        "schedule": "30 * * * *",
        "args": "backup --type incr --stanza s",
    }
