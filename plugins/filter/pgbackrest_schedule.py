"""Cron expressions of the backup schedules: validation and translation to systemd OnCalendar.

Accepted per field: `*`, `*/step`, numbers, ranges `a-b` and comma lists of those. A day of
the month and a day of the week restricted together is refused: cron runs when either
matches, systemd when both do, so the two schedulers would disagree.
"""

from __future__ import annotations

import re

# name, lowest, highest
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
ITEM = re.compile(r"^(?:\*/(?P<step>\d+)|(?P<low>\d+)(?:-(?P<high>\d+))?)$")


def _parse_field(text: str, name: str, lowest: int, highest: int) -> list[tuple[int, int]] | str | None:
    """Return None for `*`, a step as a string "*/n", or the list of (low, high) ranges."""
    if text == "*":
        return None
    ranges: list[tuple[int, int]] = []
    for item in text.split(","):
        match = ITEM.match(item)
        if not match:
            raise ValueError(f"{name} field {text!r}: expected *, */step, a number, a-b or a list of those")
        if match["step"] is not None:
            step = int(match["step"])
            if len(text.split(",")) > 1 or not 1 <= step <= highest:
                raise ValueError(f"{name} field {text!r}: */step stands alone, with a step from 1 to {highest}")
            return f"*/{step}"
        low = int(match["low"])
        high = int(match["high"]) if match["high"] is not None else low
        if not lowest <= low <= high <= highest:
            raise ValueError(f"{name} field {text!r}: values from {lowest} to {highest}, ranges low-high")
        ranges.append((low, high))
    return ranges


def parse_cron(expression: str) -> list[list[tuple[int, int]] | str | None]:
    """Parse a five-field cron expression; raise ValueError naming what is wrong."""
    fields = str(expression).split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    parsed = [_parse_field(text, *spec) for text, spec in zip(fields, FIELDS, strict=True)]
    if parsed[2] is not None and parsed[4] is not None:
        raise ValueError("day of month and day of week cannot both be restricted")
    return parsed


def cron_error(expression: str) -> str:
    """The reason an expression is not valid, or an empty string."""
    try:
        parse_cron(expression)
    except ValueError as error:
        return str(error)
    return ""


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
