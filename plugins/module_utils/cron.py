"""Cron expressions of the backup schedules (roles/pgbackrest): their validation, shared by the
filter plugin pgbackrest_schedule (which also translates them to systemd OnCalendar) and the
preflight's rules (inputs.py).

Accepted per field: `*`, `*/step`, numbers, ranges `a-b` and comma lists of those. A day of
the month and a day of the week restricted together is refused: cron runs when either
matches, systemd when both do, so the two schedulers would disagree.
"""

from __future__ import annotations

import re

# name, lowest, highest
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
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
