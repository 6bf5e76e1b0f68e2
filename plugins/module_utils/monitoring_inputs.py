"""Checks of the monitoring roles' inputs (issue 12) that argument specs cannot express: one line
per problem, naming the inventory key and the expected form, never a secret's value. Pure
functions over a role's variables without their prefix (``{"retention_time": "15d"}`` for
``prometheus_retention_time``), unit-tested in tests/unit/test_monitoring_inputs.py. The shared
preflight (plugins/action/preflight.py) calls ``problems(role, values)`` for all of them at once,
before anything changes; each role's validate tasks call it again, through the filter
``openpolicy.deploy.openpolicy_monitoring_problems``, on the hosts it runs on.

The secrets role reads the vault (and generates what it may) after the first check: with
``secrets_known=False`` no line asks for a vault value, and a password absent from ``values`` is
not checked; the preflight checks those again once the vault is read
(roles/preflight/tasks/secrets.yml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ansible_collections.openpolicy.deploy.plugins.module_utils.catalog import plain

RECEIVER_TYPES = ("webhook", "slack", "email", "pagerduty")
# The field that carries each receiver type's secret (or address).
REQUIRED_FIELD = {"webhook": "url", "slack": "api_url", "email": "to", "pagerduty": "routing_key"}
SECRET_FIELDS = {"url", "api_url", "routing_key", "auth_password"}
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/\S*)?")
EMAIL = re.compile(r"[^@\s,]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
MATCHER = re.compile(r'[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*"?[^"]*"?')
# Prometheus' durations (Alertmanager's timings take the same form).
DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")
# Alertmanager's --data.retention: hours at most.
SHORT_DURATION = re.compile(r"([0-9]+(ms|s|m|h))+")
HOSTPORT = re.compile(r"[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")
SIZE = re.compile(r"[0-9]+(B|KB|MB|GB|TB|PB|EB)")
JOB = re.compile(r"[a-z][a-z0-9_]*")
# journalctl --vacuum-time and journal-remote's MaxUse.
# Not 0: journalctl reads a vacuum limit of 0 as no limit at all.
JOURNAL_TIME = re.compile(r"[1-9][0-9]*(s|min|h|d|weeks|months|years)")
JOURNAL_SIZE = re.compile(r"[1-9][0-9]*[KMGT]?")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_.-]*")
SQL_NAME = re.compile(r"[a-z_][a-z0-9_]*")
ACL_NAME = re.compile(r"[A-Za-z0-9_]+")
REDIS_URL = re.compile(r"rediss?://[^/\s]+")
SSLMODES = ("require", "verify-ca", "verify-full")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _full(pattern: re.Pattern, value: Any) -> bool:
    return isinstance(value, str) and bool(pattern.fullmatch(value))


def seconds(duration: str) -> float:
    """A Prometheus duration (checked with DURATION) in seconds."""
    return sum(float(n) * UNIT_SECONDS[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", duration))


def _port(key: str, value: Any) -> list[str]:
    try:
        good = not isinstance(value, bool) and 1 <= int(str(value)) <= 65535
    except ValueError:
        good = False
    return [] if good else [f"{key}: expected a port 1-65535, got {value}"]


def _listen(key: str, value: Any) -> list[str]:
    if str(value or "").strip() in ("", "0.0.0.0", "::"):
        return [f"{key}: expected the address Prometheus reaches this host at (not every address), got {value!r}"]
    return []


def _duration(key: str, value: Any, example: str, pattern: re.Pattern = DURATION) -> list[str]:
    return [] if _full(pattern, value) else [f"{key}: expected a duration such as {example}, got {value}"]


def _password(key: str, values: dict, vault_key: str) -> list[str]:
    if "password" in values and not str(values["password"] or ""):
        return [f"{key}: missing; put vault_monitoring_passwords.{vault_key} in the vault"]
    return []


def _receiver_problems(index: int, receiver: dict, smtp: dict) -> list[str]:
    label = f"alertmanager_receivers[{receiver.get('name', index)}]"
    kind = receiver.get("type")
    if kind not in RECEIVER_TYPES:
        return [f"{label}.type: expected one of {', '.join(RECEIVER_TYPES)}, got {kind!r}"]
    field = REQUIRED_FIELD[kind]
    value = str(receiver.get(field) or "").strip()
    if not value:
        where = "the vault (ansible-vault edit)" if field in SECRET_FIELDS else "the inventory"
        return [f"{label}.{field}: missing; put it in {where}"]
    out = []
    if field in ("url", "api_url") and not _full(URL, value):
        out.append(f"{label}.{field}: expected an http(s) URL")
    if kind == "pagerduty" and receiver.get("url") and not _full(URL, str(receiver["url"])):
        out.append(f"{label}.url: expected an http(s) URL (the Events API v2 endpoint)")
    if kind == "email":
        bad = [a.strip() for a in value.split(",") if not _full(EMAIL, a.strip())]
        if bad:
            out.append(f"{label}.to: expected e-mail addresses (name@domain), got {', '.join(bad)}")
        out += _smtp_problems(smtp)
    return out


def _smtp_problems(smtp: dict) -> list[str]:
    out = []
    if not _full(HOSTPORT, str(smtp.get("smarthost") or "")):
        out.append("alertmanager_smtp.smarthost: expected host:port of the mail relay")
    if not _full(EMAIL, str(smtp.get("from") or "")):
        out.append("alertmanager_smtp.from: expected an e-mail address (name@domain)")
    if smtp.get("auth_username") and not smtp.get("auth_password"):
        out.append("alertmanager_smtp.auth_password: missing; put it in the vault (vault_smtp_password)")
    return out


def alertmanager_problems(settings: dict) -> list[str]:
    """Receivers, routes and timings (keys receivers, default_receiver, routes, smtp, group_wait,
    group_interval, repeat_interval): one line per bad setting, empty when alertmanager.yml can
    be written."""
    settings = plain(settings) or {}
    receivers = settings.get("receivers") or []
    smtp = settings.get("smtp") or {}
    out: list[str] = []
    names: list[str] = []
    for index, receiver in enumerate(receivers):
        if not isinstance(receiver, dict):
            out.append(f"alertmanager_receivers[{index}]: expected a mapping {{name, type, ...}}, got {receiver!r}")
            continue
        name = str(receiver.get("name") or "")
        if not _full(NAME, name):
            out.append(
                f"alertmanager_receivers[{index}].name: expected lowercase letters, digits, '-', '_' or '.',"
                f" got {name!r}"
            )
        elif name in names:
            out.append(f"alertmanager_receivers[{name}].name: defined twice")
        names.append(name)
        out += _receiver_problems(index, receiver, smtp)
    if not receivers:
        out.append("alertmanager_receivers: expected at least one receiver")
    known = ", ".join(names) or "none"
    default = settings.get("default_receiver")
    if default not in names:
        out.append(f"alertmanager_default_receiver: unknown receiver {default!r} (known: {known})")
    for index, route in enumerate(settings.get("routes") or []):
        if route.get("receiver") not in names:
            out.append(
                f"alertmanager_routes[{index}].receiver: unknown receiver {route.get('receiver')!r} (known: {known})"
            )
        for matcher in route.get("matchers") or []:
            if not _full(MATCHER, str(matcher)):
                out.append(
                    f'alertmanager_routes[{index}].matchers: expected label="value" (=, !=, =~, !~), got {matcher!r}'
                )
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if key in settings and not _full(DURATION, str(settings[key])):
            out.append(f"alertmanager_{key}: expected a duration such as 30s, 5m or 4h, got {settings[key]!r}")
    return out


def _alertmanager(v: dict) -> list[str]:
    out = alertmanager_problems({k: v[k] for k in v if k not in ("data_retention", "port")})
    if "data_retention" in v:
        out += _duration("alertmanager_data_retention", v["data_retention"], "120h (hours or less)", SHORT_DURATION)
    if "port" in v:
        out += _port("alertmanager_port", v["port"])
    return out


def _prometheus(v: dict) -> list[str]:
    out = []
    if "port" in v:
        out += _port("prometheus_port", v["port"])
    for key, example in (
        ("retention_time", "15d, 12h or 2w"),
        ("scrape_interval", "30s"),
        ("scrape_timeout", "10s"),
        ("evaluation_interval", "30s"),
    ):
        if key in v:
            out += _duration(f"prometheus_{key}", v[key], example)
    interval, timeout = v.get("scrape_interval"), v.get("scrape_timeout")
    if _full(DURATION, interval) and _full(DURATION, timeout) and seconds(timeout) > seconds(interval):
        out.append(f"prometheus_scrape_timeout: expected at most the scrape interval ({interval}), got {timeout}")
    size = v.get("retention_size", "")
    if size not in ("", None) and not _full(SIZE, size):
        out.append(f'prometheus_retention_size: expected a size such as 512MB or 10GB, or "", got {size}')
    jobs = v.get("scrape_jobs") or []
    if any(not isinstance(j, dict) or not _full(JOB, j.get("name")) for j in jobs):
        out.append("prometheus_scrape_jobs: every job needs a name of lowercase letters, digits and _")
    else:
        names = [j["name"] for j in jobs]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            out.append(f"prometheus_scrape_jobs: job names must be unique, got {', '.join(twice)} twice")
        for job in jobs:
            if not job.get("groups") or not isinstance(job["groups"], list):
                out.append(f"prometheus_scrape_jobs[{job['name']}].groups: expected a list of inventory groups")
            if not isinstance(job.get("only_where", {}), dict):
                out.append(
                    f"prometheus_scrape_jobs[{job['name']}].only_where: expected a mapping of host variable to value"
                )
    if "rules_source_dir" in v:
        folder = str(v["rules_source_dir"] or "")
        if not folder or not any(Path(folder).glob("*.yml")):
            out.append(
                f'prometheus_rules_source_dir: expected a control-host folder with *.yml rule files, got "{folder}"'
            )
    return out


def _served(role: str, v: dict) -> list[str]:
    """An exporter's address and port: where Prometheus reaches it."""
    out = _listen(f"{role}_listen_address", v["listen_address"]) if "listen_address" in v else []
    return out + (_port(f"{role}_port", v["port"]) if "port" in v else [])


def _login(role: str, v: dict, pattern: re.Pattern, form: str) -> list[str]:
    """A database exporter's own login: its name, and its password once the vault is read."""
    out = [f"{role}_user: expected {form}, got {v['user']}"] if "user" in v and not _full(pattern, v["user"]) else []
    return out + _password(f"{role}_password", v, role) + _served(role, v)


def _node_exporter(v: dict) -> list[str]:
    out = _served("node_exporter", v)
    if "textfile_dir" in v and not str(v["textfile_dir"]).startswith("/"):
        out.append(f"node_exporter_textfile_dir: expected an absolute path, got {v['textfile_dir']}")
    return out


def _postgres_exporter(v: dict) -> list[str]:
    out = _login("postgres_exporter", v, SQL_NAME, "an SQL identifier")
    if "sslmode" in v and v["sslmode"] not in SSLMODES:
        out.append(f"postgres_exporter_sslmode: expected one of {', '.join(SSLMODES)}, got {v['sslmode']}")
    return out


def _redis_exporter(v: dict) -> list[str]:
    out = _login("redis_exporter", v, ACL_NAME, "letters, digits and _")
    if "redis_address" in v and not _full(REDIS_URL, v["redis_address"]):
        out.append(
            f"redis_exporter_redis_address: expected redis://host:port or rediss://host:port, got {v['redis_address']}"
        )
    return out


def _host_logs(v: dict) -> list[str]:
    out = _port("host_logs_collector_port", v["collector_port"]) if "collector_port" in v else []
    if "retention" in v and not _full(JOURNAL_TIME, v["retention"]):
        out.append(f"host_logs_retention: expected a duration such as 30d, 12h or 2weeks, got {v['retention']}")
    if "max_use" in v and not _full(JOURNAL_SIZE, str(v["max_use"])):
        out.append(f"host_logs_max_use: expected a size such as 2G or 500M, got {v['max_use']}")
    files = v.get("files") or []
    if any(not isinstance(f, dict) or not _full(IDENTIFIER, f.get("identifier")) for f in files):
        out.append("host_logs_files: every entry needs an identifier of lowercase letters, digits, _, . or -")
    return out


RULES = {
    "alertmanager": _alertmanager,
    "prometheus": _prometheus,
    "node_exporter": _node_exporter,
    "postgres_exporter": _postgres_exporter,
    "redis_exporter": _redis_exporter,
    "host_logs": _host_logs,
}


def problems(role: str, values: dict, secrets_known: bool = True) -> list[str]:
    """Every problem of a monitoring role's inputs, one line each ([] for other roles)."""
    check = RULES.get(role)
    found = check(plain(values) or {}) if check else []
    return found if secrets_known else [line for line in found if "in the vault" not in line]
