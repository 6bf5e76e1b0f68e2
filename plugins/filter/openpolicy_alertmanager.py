"""Alertmanager's configuration from the inventory's receivers and routes (role alertmanager).

Two filters, pure functions unit-tested in tests/unit/test_alertmanager_config.py:

- ``openpolicy_alertmanager_problems(settings)``: one line per bad input, naming the field and
  the expected form, never a secret's value (the role's validate fails with them);
- ``openpolicy_alertmanager_config(settings)``: the alertmanager.yml document.

``settings`` keys: receivers, routes, default_receiver, group_by, group_wait, group_interval,
repeat_interval, inhibit_rules, smtp ({smarthost, from, auth_username, auth_password,
require_tls}). A receiver is {name, type, ...} with type
- ``webhook``: url (may carry a token: a secret);
- ``slack``: api_url (the incoming-webhook URL: a secret), channel;
- ``email``: to (one address or several, comma separated), through ``smtp``;
- ``pagerduty``: routing_key (Events API v2 integration key: a secret), url (optional events endpoint).
A route is {receiver, matchers: ['label="value"', ...], continue: bool}.
"""

from __future__ import annotations

import json
import re
from typing import Any

RECEIVER_TYPES = ("webhook", "slack", "email", "pagerduty")
# The field that carries each type's secret (or address) and where an operator puts it.
REQUIRED_FIELD = {"webhook": "url", "slack": "api_url", "email": "to", "pagerduty": "routing_key"}
SECRET_FIELDS = {"url", "api_url", "routing_key", "auth_password"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/\S*)?$")
EMAIL = re.compile(r"^[^@\s,]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MATCHER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*"?[^"]*"?$')
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
HOSTPORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")


def _plain(value: Any) -> Any:
    """Ansible's lazy containers and tagged strings as plain JSON data."""
    return json.loads(json.dumps(value))


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
    if field in ("url", "api_url") and not URL.match(value):
        out.append(f"{label}.{field}: expected an http(s) URL")
    if kind == "pagerduty" and receiver.get("url") and not URL.match(str(receiver["url"])):
        out.append(f"{label}.url: expected an http(s) URL (the Events API v2 endpoint)")
    if kind == "email":
        bad = [a.strip() for a in value.split(",") if not EMAIL.match(a.strip())]
        if bad:
            out.append(f"{label}.to: expected e-mail addresses (name@domain), got {', '.join(bad)}")
        out += _smtp_problems(smtp)
    return out


def _smtp_problems(smtp: dict) -> list[str]:
    out = []
    if not HOSTPORT.match(str(smtp.get("smarthost") or "")):
        out.append("alertmanager_smtp.smarthost: expected host:port of the mail relay")
    if not EMAIL.match(str(smtp.get("from") or "")):
        out.append("alertmanager_smtp.from: expected an e-mail address (name@domain)")
    if smtp.get("auth_username") and not smtp.get("auth_password"):
        out.append("alertmanager_smtp.auth_password: missing; put it in the vault (vault_smtp_password)")
    return out


def alertmanager_problems(settings: dict) -> list[str]:
    """One line per bad setting; empty when the configuration can be written."""
    settings = _plain(settings) or {}
    receivers = settings.get("receivers") or []
    smtp = settings.get("smtp") or {}
    out: list[str] = []
    names: list[str] = []
    for index, receiver in enumerate(receivers):
        name = str(receiver.get("name") or "")
        if not NAME.match(name):
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
            if not MATCHER.match(str(matcher)):
                out.append(
                    f'alertmanager_routes[{index}].matchers: expected label="value" (=, !=, =~, !~), got {matcher!r}'
                )
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if not DURATION.match(str(settings.get(key, ""))):
            out.append(f"alertmanager_{key}: expected a duration such as 30s, 5m or 4h, got {settings.get(key)!r}")
    return out


def _receiver(receiver: dict) -> dict:
    kind = receiver["type"]
    if kind == "webhook":
        return {"name": receiver["name"], "webhook_configs": [{"url": receiver["url"], "send_resolved": True}]}
    if kind == "slack":
        config = {"api_url": receiver["api_url"], "send_resolved": True}
        if receiver.get("channel"):
            config["channel"] = receiver["channel"]
        return {"name": receiver["name"], "slack_configs": [config]}
    if kind == "email":
        return {"name": receiver["name"], "email_configs": [{"to": receiver["to"], "send_resolved": True}]}
    config = {"routing_key": receiver["routing_key"], "send_resolved": True}
    if receiver.get("url"):
        config["url"] = receiver["url"]
    return {"name": receiver["name"], "pagerduty_configs": [config]}


def alertmanager_config(settings: dict) -> dict:
    """The alertmanager.yml document (settings checked by alertmanager_problems first)."""
    settings = _plain(settings)
    problems = alertmanager_problems(settings)
    if problems:
        raise ValueError(problems[0])
    receivers = settings["receivers"]
    config: dict[str, Any] = {"global": {"resolve_timeout": "5m"}}
    if any(r["type"] == "email" for r in receivers):
        smtp = settings["smtp"]
        config["global"].update(
            {
                "smtp_smarthost": smtp["smarthost"],
                "smtp_from": smtp["from"],
                "smtp_require_tls": bool(smtp.get("require_tls", True)),
            }
        )
        if smtp.get("auth_username"):
            config["global"]["smtp_auth_username"] = smtp["auth_username"]
            config["global"]["smtp_auth_password"] = smtp["auth_password"]
    config["route"] = {
        "receiver": settings["default_receiver"],
        "group_by": list(settings.get("group_by") or ["alertname"]),
        "group_wait": settings["group_wait"],
        "group_interval": settings["group_interval"],
        "repeat_interval": settings["repeat_interval"],
        "routes": [
            {
                "receiver": r["receiver"],
                "matchers": list(r.get("matchers") or []),
                "continue": bool(r.get("continue", False)),
            }
            for r in settings.get("routes") or []
        ],
    }
    config["inhibit_rules"] = list(settings.get("inhibit_rules") or [])
    config["receivers"] = [_receiver(r) for r in receivers]
    return config


class FilterModule:
    def filters(self) -> dict:
        return {
            "openpolicy_alertmanager_problems": alertmanager_problems,
            "openpolicy_alertmanager_config": alertmanager_config,
        }
