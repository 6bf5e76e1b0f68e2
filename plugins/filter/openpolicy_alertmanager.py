"""Alertmanager's configuration from the inventory's receivers and routes (role alertmanager).

Filters, pure functions unit-tested in tests/unit/test_monitoring_config.py and
tests/unit/test_monitoring_inputs.py:

- ``openpolicy_alertmanager_problems(settings)``: one line per bad input, naming the field and
  the expected form, never a secret's value (module_utils/monitoring_inputs.py, which the shared
  preflight calls too);
- ``openpolicy_alertmanager_config(settings)``: the alertmanager.yml document;
- ``openpolicy_monitoring_problems(values, role, secrets_known)``: the input problems of any
  monitoring role (its variables without their prefix), for the roles' validate tasks.

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

from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.openpolicy.deploy.plugins.module_utils import monitoring_inputs
from ansible_collections.openpolicy.deploy.plugins.module_utils.catalog import plain
from ansible_collections.openpolicy.deploy.plugins.module_utils.monitoring_inputs import alertmanager_problems


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
    settings = plain(settings)
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


def monitoring_problems(values: dict, role: str, secrets_known: bool = True) -> list[str]:
    """The problems of a monitoring role's inputs (module_utils/monitoring_inputs.py)."""
    return monitoring_inputs.problems(role, values, boolean(secrets_known, strict=False))


class FilterModule:
    def filters(self) -> dict:
        return {
            "openpolicy_alertmanager_problems": alertmanager_problems,
            "openpolicy_alertmanager_config": alertmanager_config,
            "openpolicy_monitoring_problems": monitoring_problems,
        }
