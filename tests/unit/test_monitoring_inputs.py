"""The monitoring roles' inputs (issue 12), checked by the shared preflight before anything changes:
each bad input one line naming the inventory key and the expected form, never a secret's value.
Pure rules through plugins/module_utils/monitoring_inputs.py; the wiring through the preflight
(playbooks/preflight.yml on the control host only, nothing else is reached)."""

from __future__ import annotations

import pytest
from ansible_collections.openpolicy.deploy.plugins.module_utils import monitoring_inputs

from tests.helpers import REPO, failure_messages, run_playbook

RULES_DIR = str(REPO / "monitoring" / "rules")
WEBHOOK = {"name": "hook", "type": "webhook", "url": "https://alerts.invalid/hook/token"}
GOOD = {
    "alertmanager": {
        "receivers": [WEBHOOK],
        "default_receiver": "hook",
        "routes": [],
        "smtp": {"smarthost": "", "from": ""},
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "4h",
        "data_retention": "120h",
        "port": 9093,
    },
    "prometheus": {
        "port": 9090,
        "retention_time": "15d",
        "retention_size": "",
        "scrape_interval": "30s",
        "scrape_timeout": "10s",
        "evaluation_interval": "30s",
        "scrape_jobs": [{"name": "node", "groups": ["db"]}],
        "rules_source_dir": RULES_DIR,
    },
    "node_exporter": {"listen_address": "10.0.0.5", "port": 9100, "textfile_dir": "/var/lib/node_exporter"},
    "postgres_exporter": {
        "user": "postgres_exporter",
        "password": "s3cret-exporter-password",  # pragma: allowlist secret
        "listen_address": "10.0.0.5",
        "port": 9187,
        "sslmode": "require",
    },
    "redis_exporter": {
        "user": "redis_exporter",
        "password": "s3cret-exporter-password",  # pragma: allowlist secret
        "redis_address": "redis://127.0.0.1:6379",
        "listen_address": "10.0.0.5",
        "port": 9121,
    },
    "host_logs": {
        "collector_port": 19532,
        "retention": "30d",
        "max_use": "2G",
        "files": [{"identifier": "postgresql", "paths": ["/var/log/postgresql/*.log"]}],
    },
}

# case: (role, changed inputs, the exact line)
CASES = {
    "receiver whose secret is missing": (
        "alertmanager",
        {"receivers": [{"name": "pd", "type": "pagerduty", "routing_key": ""}], "default_receiver": "pd"},
        "alertmanager_receivers[pd].routing_key: missing; put it in the vault (ansible-vault edit)",
    ),
    "route to an unknown receiver": (
        "alertmanager",
        {"routes": [{"receiver": "nobody", "matchers": ['severity="critical"']}]},
        "alertmanager_routes[0].receiver: unknown receiver 'nobody' (known: hook)",
    ),
    "malformed email address": (
        "alertmanager",
        {"receivers": [WEBHOOK, {"name": "mail", "type": "email", "to": "ops-at-example"}],
         "smtp": {"smarthost": "smtp.example:587", "from": "am@example.org"}},
        "alertmanager_receivers[mail].to: expected e-mail addresses (name@domain), got ops-at-example",
    ),
    "malformed URL": (
        "alertmanager",
        {"receivers": [{**WEBHOOK, "url": "alerts.invalid/hook"}]},
        "alertmanager_receivers[hook].url: expected an http(s) URL",
    ),
    "email without a mail relay": (
        "alertmanager",
        {"receivers": [WEBHOOK, {"name": "mail", "type": "email", "to": "ops@example.org"}],
         "smtp": {"smarthost": "smtp.example", "from": "am@example.org"}},
        "alertmanager_smtp.smarthost: expected host:port of the mail relay",
    ),
    "alertmanager retention in days": (
        "alertmanager", {"data_retention": "5d"},
        "alertmanager_data_retention: expected a duration such as 120h (hours or less), got 5d",
    ),
    "negative retention": (
        "prometheus", {"retention_time": "-1d"},
        "prometheus_retention_time: expected a duration such as 15d, 12h or 2w, got -1d",
    ),
    "retention ending in a newline": (
        "prometheus", {"retention_time": "15d\n"},
        "prometheus_retention_time: expected a duration such as 15d, 12h or 2w, got 15d\n",
    ),
    "scrape timeout above the interval": (
        "prometheus", {"scrape_timeout": "1m"},
        "prometheus_scrape_timeout: expected at most the scrape interval (30s), got 1m",
    ),
    "retention size without a unit": (
        "prometheus", {"retention_size": "10"},
        'prometheus_retention_size: expected a size such as 512MB or 10GB, or "", got 10',
    ),
    "two scrape jobs of one name": (
        "prometheus", {"scrape_jobs": [{"name": "node", "groups": ["db"]}, {"name": "node", "groups": ["backup"]}]},
        "prometheus_scrape_jobs: job names must be unique, got node twice",
    ),
    "a scrape job's host filter that is not a mapping": (
        "prometheus", {"scrape_jobs": [{"name": "patroni", "groups": ["db"], "only_where": "patroni"}]},
        "prometheus_scrape_jobs[patroni].only_where: expected a mapping of host variable to value",
    ),
    "no rule files": (
        "prometheus", {"rules_source_dir": "/nonexistent"},
        'prometheus_rules_source_dir: expected a control-host folder with *.yml rule files, got "/nonexistent"',
    ),
    "exporter on every address": (
        "node_exporter", {"listen_address": "0.0.0.0"},
        "node_exporter_listen_address: expected the address Prometheus reaches this host at (not every address),"
        " got '0.0.0.0'",
    ),
    "port out of range": ("node_exporter", {"port": 70000}, "node_exporter_port: expected a port 1-65535, got 70000"),
    "relative textfile folder": (
        "node_exporter", {"textfile_dir": "textfiles"},
        "node_exporter_textfile_dir: expected an absolute path, got textfiles",
    ),
    "exporter password missing": (
        "postgres_exporter", {"password": ""},
        "postgres_exporter_password: missing; put vault_monitoring_passwords.postgres_exporter in the vault",
    ),
    "login role not an identifier": (
        "postgres_exporter", {"user": "pg-exporter"},
        "postgres_exporter_user: expected an SQL identifier, got pg-exporter",
    ),
    "TLS off": (
        "postgres_exporter", {"sslmode": "disable"},
        "postgres_exporter_sslmode: expected one of require, verify-ca, verify-full, got disable",
    ),
    "Redis address without a scheme": (
        "redis_exporter", {"redis_address": "127.0.0.1:6379"},
        "redis_exporter_redis_address: expected redis://host:port or rediss://host:port, got 127.0.0.1:6379",
    ),
    "log retention in Prometheus' form": (
        "host_logs", {"retention": "2w"},
        "host_logs_retention: expected a duration such as 30d, 12h or 2weeks, got 2w",
    ),
    "log retention of nothing": (
        "host_logs", {"retention": "0d"},
        "host_logs_retention: expected a duration such as 30d, 12h or 2weeks, got 0d",
    ),
    "negative log retention": (
        "host_logs", {"retention": "-1d"},
        "host_logs_retention: expected a duration such as 30d, 12h or 2weeks, got -1d",
    ),
    "log size with a B": (
        "host_logs", {"max_use": "2GB"}, "host_logs_max_use: expected a size such as 2G or 500M, got 2GB",
    ),
}  # fmt: skip


@pytest.mark.parametrize("role", list(GOOD))
def test_good_inputs_have_no_problem(role: str) -> None:
    assert monitoring_inputs.problems(role, GOOD[role]) == []


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_field(case: str) -> None:
    role, change, line = CASES[case]
    assert monitoring_inputs.problems(role, GOOD[role] | change) == [line]


def test_a_password_not_known_yet_is_left_to_the_role() -> None:
    """In the preflight the exporter's password (from the vault, read after it) is absent."""
    values = {k: v for k, v in GOOD["postgres_exporter"].items() if k != "password"}
    assert monitoring_inputs.problems("postgres_exporter", values) == []


def test_receiver_secrets_are_checked_once_the_vault_is_read() -> None:
    bad = GOOD["alertmanager"] | CASES["receiver whose secret is missing"][1]
    assert monitoring_inputs.problems("alertmanager", bad, secrets_known=False) == []


def test_secrets_stay_out_of_the_lines() -> None:
    secret = "https://hooks.slack.invalid/services/T000/B000/XXXX not a url"  # pragma: allowlist secret
    bad = GOOD["alertmanager"] | {"receivers": [{"name": "chat", "type": "slack", "api_url": secret}]}
    lines = monitoring_inputs.problems("alertmanager", bad | {"default_receiver": "chat"})
    assert lines == ["alertmanager_receivers[chat].api_url: expected an http(s) URL"]


def test_the_preflight_reports_every_monitoring_problem_before_any_change(tmp_path) -> None:
    """One run, three roles' bad inputs: all named, one line each, and the vault not yet written."""
    result = run_playbook(
        "provision_monitoring.yml",
        "--limit",
        "control",
        extra_vars={
            "prometheus_retention_time": "-1d",
            "alertmanager_routes": [{"receiver": "nobody", "matchers": []}],
            "host_logs_max_use": "lots",
            "secrets_vault_file": str(tmp_path / "vault.yml"),
        },
    )
    assert result.returncode != 0
    assert [m for m in failure_messages(result) if m.startswith("preflight:")] == [
        "preflight: alertmanager_routes[0].receiver: unknown receiver 'nobody' (known: local-webhook)"
    ], result.stdout[-3000:]
    block = result.stdout[result.stdout.index("preflight: alertmanager_routes") :]
    for line in (
        "preflight: prometheus_retention_time: expected a duration such as 15d, 12h or 2w, got -1d",
        "preflight: host_logs_max_use: expected a size such as 2G or 500M, got lots",
    ):
        assert line in block, block[:2000]
    assert not (tmp_path / "vault.yml").exists(), "the vault is written only after the preflight passed"


def test_a_missing_receiver_secret_is_named_once_the_vault_is_read(tmp_path) -> None:
    """The first check cannot tell a secret the secrets role will generate from a missing one; the
    second, right after the secrets role, names it before any managed host is contacted."""
    result = run_playbook(
        "preflight.yml",
        "--limit",
        "control",
        extra_vars={
            "alertmanager_receivers": [{"name": "pd", "type": "pagerduty", "routing_key": ""}],
            "alertmanager_default_receiver": "pd",
            "alertmanager_routes": [],
            "secrets_vault_file": str(tmp_path / "vault.yml"),
        },
    )
    assert result.returncode != 0
    assert [m for m in failure_messages(result) if "routing_key" in m] == [
        "preflight: alertmanager_receivers[pd].routing_key: missing; put it in the vault (ansible-vault edit)"
    ], result.stdout[-3000:]
    assert "TASK [secrets :" in result.stdout.split("routing_key: missing")[0], "named after the vault was read"
