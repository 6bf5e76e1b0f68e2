"""Monitoring end to end (issue 12): podman db, backup and monitoring hosts of the module's own
(tests/e2e/monitoring_env.py) provisioned by the toolkit's playbooks, then

- every scrape target up, and the dashboards' queries answered by the real Prometheus;
- PostgreSQL stopped on the db host: the alert fires and reaches PagerDuty, Slack and email
  (local stand-ins that check the payload formats), then resolves when it is started again;
- a backup made stale: the backup alert fires;
- a journal line of the db host found on the monitoring host; the retention job removes collected
  logs older than host_logs_retention and keeps the rest;
- a second run of provision_monitoring.yml changes nothing, and bad inputs stop the run in the
  shared preflight with one line each before any change.

One provisioning run serves every case. Scrapes and evaluations every 2 s, and the rules' `for:`
cut to seconds (TEST_RULE_FOR, in the tests' copy of monitoring/rules): the alerts are the shipped
expressions, they fire within seconds. The tests of this module build on each other in file order.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import uuid

import pytest

from tests.e2e.monitoring_env import HOSTS, SINK_HTTP_PORT, SINK_SMTP_PORT, TEST_RULE_FOR, MonitoringEnv
from tests.e2e.notification_sinks import Sinks, mentions
from tests.helpers import REPO, recap

pytestmark = pytest.mark.podman

REMOTE_JOURNAL = "/var/log/journal/remote"


@pytest.fixture(scope="module")
def sinks():
    stand_ins = Sinks(SINK_HTTP_PORT, SINK_SMTP_PORT)
    yield stand_ins
    stand_ins.close()


@pytest.fixture(scope="module")
def menv(tmp_path_factory: pytest.TempPathFactory, sinks: Sinks):
    env = MonitoringEnv(tmp_path_factory.mktemp("monitoring-env"), rule_for=TEST_RULE_FOR)
    env.down()
    first = env.up()
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    yield env
    if os.environ.get("OPENPOLICY_E2E_KEEP_MONITORING") == "1":
        print(f"\nmonitoring environment kept: bench/bench_monitoring.py --environment {env.root}")
    else:
        env.down()


def test_second_run_changes_nothing(menv: MonitoringEnv) -> None:
    again = menv.play("provision_monitoring.yml")
    assert again.returncode == 0, again.stdout[-4000:]
    changed = {host: counts["changed"] for host, counts in recap(again).items() if counts["changed"]}
    lines = again.stdout.splitlines()
    tasks = [f"{lines[i - 1]} {line}" for i, line in enumerate(lines) if line.startswith("changed:")]
    assert changed == {}, "\n".join(tasks) or again.stdout[-4000:]


def test_every_scrape_target_is_up(menv: MonitoringEnv) -> None:
    def all_up():
        targets = menv.api("/api/v1/targets")["data"]["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = menv.wait(all_up, 60)
    assert targets, [(t["labels"], t["lastError"]) for t in menv.api("/api/v1/targets")["data"]["activeTargets"]]
    jobs = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets}
    assert {("node", h) for h in HOSTS.values()} | {("postgres", HOSTS["db"]), ("redis", HOSTS["db"])} <= jobs
    rules = menv.api("/api/v1/rules")["data"]["groups"]
    assert len({g["file"] for g in rules}) == len(list((REPO / "monitoring" / "rules").glob("*.yml")))


def test_dashboard_queries_return_data(menv: MonitoringEnv) -> None:
    """Host, PostgreSQL, Redis and backup panels return data; the service panels (their metrics
    come from the services' /metrics, which do not run here) are accepted by Prometheus."""
    empty, refused = [], []
    for path in sorted((REPO / "monitoring" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = re.sub(r"\$\{?(instance|namespace|service)\}?", ".+", target["expr"])
                answer = menv.api("/api/v1/query", query=expr)
                if answer["status"] != "success":
                    refused.append((path.name, panel["title"]))
                elif not answer["data"]["result"] and dashboard["uid"] != "openpolicy-service":
                    empty.append((path.name, panel["title"]))
    assert refused == []
    assert empty == []


def test_postgresql_down_pages_and_resolves(menv: MonitoringEnv, sinks: Sinks) -> None:
    name = "OpenPolicyPostgresqlDown"
    menv.exec("db", "systemctl", "stop", "postgresql@15-main")
    try:
        for kind in ("pagerduty", "slack", "email"):
            got = sinks.wait_for(lambda r, k=kind: r.kind == k and mentions(r, name, "firing"), 180)
            assert got, f"no firing {kind} notification; refused: {sinks.refused}"
    finally:
        menv.exec("db", "systemctl", "start", "postgresql@15-main")
    for kind in ("pagerduty", "slack", "email"):
        got = sinks.wait_for(lambda r, k=kind: r.kind == k and mentions(r, name, "resolved"), 120)
        assert got, f"no resolved {kind} notification; refused: {sinks.refused}"
    assert sinks.refused == []


def test_stale_backup_alerts(menv: MonitoringEnv) -> None:
    """The backup job's metrics say the last good backup is 27 hours old: OpenPolicyBackupStale fires."""
    metrics = "/var/lib/node_exporter/textfile_collector/openpolicy_backup_openpolicy.prom"
    stale = int(time.time()) - 27 * 3600
    menv.exec(
        "backup", "sed", "-i", "-E",
        rf"s/^(openpolicy_backup_last_success_timestamp_seconds\{{[^}}]*\}}) .*/\1 {stale}/", metrics,
    )  # fmt: skip
    assert menv.wait(lambda: "firing" in menv.alert_states("OpenPolicyBackupStale"), 60)


def collected_log(menv: MonitoringEnv, identifier: str) -> str:
    """The db host's lines of one SYSLOG_IDENTIFIER, as collected on the monitoring host."""
    journal = menv.exec(
        "monitoring", "journalctl", "-D", REMOTE_JOURNAL, "--no-pager", "-o", "cat",
        f"_HOSTNAME={HOSTS['db']}", f"SYSLOG_IDENTIFIER={identifier}", check=False,
    )  # fmt: skip
    return journal.stdout


def journal_line_arrives(menv: MonitoringEnv) -> bool:
    """A line logged on the db host is read, by host and identifier, on the monitoring host."""
    marker = f"openpolicy-e2e-{uuid.uuid4().hex}"
    menv.exec("db", "logger", "-t", "openpolicy-e2e", marker)

    return menv.wait(lambda: marker in collected_log(menv, "openpolicy-e2e"), 60)


def test_journal_line_of_the_db_host_reaches_the_monitoring_host(menv: MonitoringEnv) -> None:
    """A system log line, and PostgreSQL's own log file (its stop and start above), by host and unit."""
    assert journal_line_arrives(menv)
    postgresql = collected_log(menv, "postgresql")
    assert "database system is ready to accept connections" in postgresql, postgresql[-2000:]


def test_host_logs_are_kept_for_the_retention(menv: MonitoringEnv) -> None:
    """The daily retention job (openpolicy-host-logs-vacuum) archives journal-remote's files and
    removes the archived files whose newest entry is older than host_logs_retention (7d here): a
    file of 40 days ago goes, today's stay readable, and journal-remote collects again after it."""
    old = int((time.time() - 40 * 86400) * 1_000_000)
    expired = f"remote-expired@{uuid.uuid4().hex}-{1:016x}-{old:016x}.journal"
    menv.exec("monitoring", "sh", "-c", f'set -- {REMOTE_JOURNAL}/*.journal; cp "$1" {REMOTE_JOURNAL}/{expired}')
    before = menv.exec("monitoring", "ls", REMOTE_JOURNAL).stdout.split()
    menv.exec("monitoring", "systemctl", "start", "openpolicy-host-logs-vacuum.service")
    files = menv.exec("monitoring", "ls", REMOTE_JOURNAL).stdout.split()
    assert expired not in files
    # Every file journal-remote was writing is archived (<name>@...). A line the db host sends
    # after the job (its status jobs log every minute) may already have opened a new one.
    archived_now = [name for name in files if "@" in name and name not in before]
    for active in (name for name in before if "@" not in name):
        assert any(name.startswith(active.removesuffix(".journal") + "@") for name in archived_now), (before, files)
    assert files, files
    assert "openpolicy-e2e-" in collected_log(menv, "openpolicy-e2e")
    assert journal_line_arrives(menv)


def preflight_lines(result) -> list[str]:
    """The preflight's report: the failed task's message, one problem a line."""
    lines = (result.stdout + "\n" + result.stderr).splitlines()
    first = [i for i, line in enumerate(lines) if line.startswith("[ERROR]: Task failed:")]
    if not first:
        return []
    report = [re.sub(r"^\[ERROR\]: Task failed: (Action failed: )?", "", lines[first[0]])]
    report += [line for line in itertools.takewhile(lambda x: x.startswith("preflight:"), lines[first[0] + 1 :])]
    return report


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # Every problem the preflight finds before the secrets are read, in one run: one line each.
        ({"alertmanager_receivers": [{"name": "mail", "type": "email", "to": "ops-at-example"},
                                     {"name": "chat", "type": "slack", "api_url": "hooks.slack.com/services/x"}],
          "alertmanager_default_receiver": "mail",
          "alertmanager_routes": [{"receiver": "nobody", "matchers": ['severity="critical"']}],
          "prometheus_retention_time": "-1d", "host_logs_retention": "-1d"},
         ["alertmanager_receivers[mail].to: expected e-mail addresses (name@domain), got ops-at-example",
          "alertmanager_receivers[chat].api_url: expected an http(s) URL",
          "alertmanager_routes[0].receiver: unknown receiver 'nobody'",
          "prometheus_retention_time: expected a duration such as 15d, 12h or 2w, got -1d",
          "host_logs_retention: expected a duration such as 30d, 12h or 2weeks, got -1d"]),
        # A receiver's secret is known missing once the secrets are read: the second check.
        ({"alertmanager_receivers": [{"name": "pd", "type": "pagerduty", "routing_key": ""}],
          "alertmanager_default_receiver": "pd", "alertmanager_routes": []},
         ["alertmanager_receivers[pd].routing_key: missing; put it in the vault (ansible-vault edit)"]),
    ],
    ids=["bad-email-url-route-retentions", "missing-secret"],
)  # fmt: skip
def test_bad_input_stops_before_any_change(menv: MonitoringEnv, extra: dict, expected: list[str]) -> None:
    result = menv.play("provision_monitoring.yml", **extra)
    assert result.returncode != 0
    lines = preflight_lines(result)
    assert len(lines) == len(expected), lines or result.stdout[-3000:]
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(f"preflight: {start}"), lines
    assert all(counts["changed"] == 0 for counts in recap(result).values()), result.stdout[-3000:]
