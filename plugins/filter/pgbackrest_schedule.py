"""Cron expressions of the backup schedules: validation (module_utils/cron.py, which the
preflight's rules share) and translation to systemd OnCalendar."""

from __future__ import annotations

from ansible_collections.openpolicy.deploy.plugins.module_utils.cron import cron_error, parse_cron

DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _calendar_field(parsed: list[tuple[int, int]] | str | None, lowest: int, width: int) -> str:
    if parsed is None:
        return "*"
    if isinstance(parsed, str):
        return f"{lowest:0{width}d}/{parsed[2:]}"
    parts = []
    for low, high in parsed:
        parts.append(f"{low:0{width}d}" if low == high else f"{low:0{width}d}..{high:0{width}d}")
    return ",".join(parts)


def _weekday_field(parsed: list[tuple[int, int]] | str | None) -> str:
    if parsed is None:
        return ""
    if isinstance(parsed, str):
        step = int(parsed[2:])
        return ",".join(DAY_NAMES[day] for day in range(0, 7, step)) + " "
    parts = []
    for low, high in parsed:
        parts.append(DAY_NAMES[low] if low == high else f"{DAY_NAMES[low]}..{DAY_NAMES[high]}")
    return ",".join(parts) + " "


def cron_to_oncalendar(expression: str) -> str:
    """Translate a cron expression to a systemd OnCalendar value with the same firing times."""
    minute, hour, day, month, weekday = parse_cron(expression)
    if isinstance(weekday, list) and any(low == 0 and high == 7 for low, high in weekday):
        weekday = None
    date = f"*-{_calendar_field(month, 1, 2)}-{_calendar_field(day, 1, 2)}"
    time = f"{_calendar_field(hour, 0, 2)}:{_calendar_field(minute, 0, 2)}:00"
    return f"{_weekday_field(weekday)}{date} {time}"


def backup_job(item: dict, user: str, args: str) -> dict:
    """A scheduled backup job from a {key: type, value: cron expression} item."""
    return {
        "name": f"openpolicy-backup-{item['key']}",
        "user": user,
        "schedule": item["value"],
        "args": f"backup --type {item['key']} {args}".strip(),
    }


class FilterModule:
    """Ansible filters: pgbackrest_cron_error, pgbackrest_oncalendar, pgbackrest_backup_job."""

    def filters(self) -> dict:
        return {
            "pgbackrest_cron_error": cron_error,
            "pgbackrest_oncalendar": cron_to_oncalendar,
            "pgbackrest_backup_job": backup_job,
        }
