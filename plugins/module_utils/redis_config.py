"""The logic behind the filters of roles/redis: redis.conf read as Redis reads it, so that the
role compares settings rather than bytes. Pure functions, unit-tested in
tests/unit/test_redis_config.py; plugins/filter/redis_config.py names them for Jinja.

Why settings: Sentinel persists the master it chooses with CONFIG REWRITE, and Redis rewrites
the whole file in its own layout (values quoted, `save` rules one per line, memory in kb/mb/gb)
and appends what it runs with (`replicaof`, `supervised` and `daemonize` from the unit's command
line, `latency-tracking-info-percentiles` at its default). Comparing bytes, the role would write
its own layout back after every failover and restart Redis for nothing.
"""

from __future__ import annotations

import re

# Directives the running server owns, not the role. The unit's command line (--supervised systemd
# --daemonize no) wins over the file, whatever the role renders. What Redis sets by itself is
# left to it unless the role renders it: `maxclients`, lowered to what the open-file limit
# allows, and `latency-tracking-info-percentiles`, which Redis 7.0 appends at its default.
# Sentinel's `replicaof` is neither: the role renders the one the file has (configure.yml).
COMMAND_LINE = frozenset({"daemonize", "supervised"})
SET_BY_SERVER = frozenset({"maxclients", "latency-tracking-info-percentiles"})

# Redis's own names for the same directive (config.c aliases).
_ALIASES = {"slaveof": "replicaof", "slave-read-only": "replica-read-only"}

# Redis writes memory as kb/mb/gb (powers of 1024) when it divides evenly; `k`, `m`, `g` are
# powers of 1000 (redis.conf's "units" note).
_MEMORY = re.compile(r"^(\d+)(k|kb|m|mb|g|gb)$", re.IGNORECASE)
_UNITS = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}


def split_args(line: str) -> list[str]:
    """One line of redis.conf split into arguments the way Redis does (sdssplitargs): double
    quotes with backslash escapes (\\xHH too), single quotes with \\' only. Raises ValueError on
    unbalanced quotes, as Redis refuses to start with them."""
    args: list[str] = []
    i, n = 0, len(line)
    directive = line.split(maxsplit=1)[0] if line.strip() else ""
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return args
        current, quote = [], None
        while True:
            if i >= n:
                if quote:
                    raise ValueError(f"unbalanced quotes in redis.conf line: {directive} ...")
                break
            c = line[i]
            if quote and c == quote:
                if i + 1 < n and not line[i + 1].isspace():
                    raise ValueError(f"a closing quote must be followed by a space: {directive} ...")
                i += 1
                break
            if quote == '"':
                if c == "\\" and i + 3 < n and line[i + 1] == "x" and _is_hex(line[i + 2 : i + 4]):
                    current.append(chr(int(line[i + 2 : i + 4], 16)))
                    i += 3
                elif c == "\\" and i + 1 < n:
                    current.append(_ESCAPES.get(line[i + 1], line[i + 1]))
                    i += 1
                else:
                    current.append(c)
            elif quote == "'":
                if c == "\\" and i + 1 < n and line[i + 1] == "'":
                    current.append("'")
                    i += 1
                else:
                    current.append(c)
            elif c.isspace():
                break
            elif c in "\"'":
                quote = c
            else:
                current.append(c)
            i += 1
        args.append("".join(current))


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def _value(arg: str) -> str:
    memory = _MEMORY.match(arg)
    if memory:
        return str(int(memory.group(1)) * _UNITS[memory.group(2).lower()])
    return arg


def redis_config_settings(text: str) -> dict[str, list[list[str]]]:
    """The settings of a redis.conf: directive (lower case, aliases resolved) -> the argument
    lists of its lines in order. `save` is one list of its rules, empty for `save ""`, as Redis
    keeps it; memory sizes are in bytes; comments and blank lines are dropped."""
    settings: dict[str, list[list[str]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, *args = split_args(line)
        name = _ALIASES.get(name.lower(), name.lower())
        values = [_value(arg) for arg in args]
        if name == "save":
            rules = settings.setdefault("save", [[]])[0]
            rules.extend(value for value in values if value != "")
            continue
        settings.setdefault(name, []).append(values)
    return settings


def redis_config_drift(current: str, desired: str) -> list[str]:
    """The directives whose settings differ between the redis.conf on the host (`current`, as
    Redis may have rewritten it) and the one the role renders (`desired`), sorted; the
    directives the running server owns (COMMAND_LINE, and SET_BY_SERVER unless rendered) are
    left out. Empty: nothing to write."""
    want = redis_config_settings(desired)
    try:
        have = redis_config_settings(current)
    except ValueError:
        # A file Redis would refuse to start with (a hand edit): every setting is written again.
        return sorted(want)
    names = (set(have) | set(want)) - COMMAND_LINE - (SET_BY_SERVER - set(want))
    return sorted(name for name in names if have.get(name) != want.get(name))


def redis_config_replicaof(text: str) -> str:
    """The master a redis.conf names (`replicaof HOST PORT`, the last one), as "HOST PORT"; ""
    when it names none."""
    lines = redis_config_settings(text).get("replicaof", [])
    return " ".join(lines[-1]) if lines and lines[-1] and lines[-1][0].lower() != "no" else ""
