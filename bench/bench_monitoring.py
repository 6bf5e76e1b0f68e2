#!/usr/bin/env python3
"""Monitoring figures, in one run, on the environment of tests/e2e/monitoring_env.py (podman db,
backup and monitoring hosts provisioned by the toolkit's playbooks, receivers pointed at local
stand-ins):

- fault to notification: PostgreSQL stopped on the db host until the PagerDuty stand-in receives
  the trigger of OpenPolicyPostgresqlDown (and start to the resolve), with the scrape and
  evaluation intervals, the rule's `for` and Alertmanager's group_wait used; the ratio is against
  the least any Prometheus could do with those settings (for + one evaluation + group_wait);
- the monitoring host's resident memory (Prometheus, Alertmanager, journal-remote, node_exporter)
  with every target scraped, against Prometheus alone.

Writes bench/results/monitoring.json. Not part of `make test` (no timing is asserted).

    python bench/bench_monitoring.py [--keep] [--environment DIR]

--environment measures on hosts already provisioned: those a run with --keep left, or those of
`OPENPOLICY_E2E_KEEP_MONITORING=1 pytest tests/e2e/test_monitoring.py` (whose rule copy fires after
seconds; the `for` used is read from the environment's rules and reported), while nothing else has
run test_monitoring since. The bench takes test_monitoring's lock (same hosts, same ports).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results_file import write_results  # noqa: E402
from tests.e2e.monitoring_env import (  # noqa: E402
    INTERVALS,
    SINK_HTTP_PORT,
    SINK_SMTP_PORT,
    MonitoringEnv,
    hosts_lock,
)
from tests.e2e.notification_sinks import Sinks, mentions  # noqa: E402

ALERT = "OpenPolicyPostgresqlDown"


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    raise ValueError(duration)


def rule_for(rules: Path, name: str) -> str:
    import yaml

    for path in rules.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    return rule.get("for", "0s")
    raise KeyError(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the hosts running")
    parser.add_argument(
        "--environment", type=Path, help="measure on the provisioned environment a run with --keep left in DIR"
    )
    args = parser.parse_args()
    with hosts_lock():
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    sinks = Sinks(SINK_HTTP_PORT, SINK_SMTP_PORT)
    env = (
        MonitoringEnv.existing(args.environment)
        if args.environment
        else MonitoringEnv(Path(tempfile.mkdtemp(prefix="bench-monitoring-")))
    )
    print(f"environment: {env.root}", flush=True)
    provision = None
    try:
        if not args.environment:
            env.down()
            started = time.time()
            up = env.up()
            if up.returncode != 0:
                print(up.stdout[-4000:], up.stderr[-2000:], file=sys.stderr)
                return 1
            provision = time.time() - started
        env.wait(lambda: all(t["health"] == "up" for t in env.api("/api/v1/targets")["data"]["activeTargets"]), 60)
        time.sleep(10)  # a few scrapes of every target before memory is read
        rss = env.rss_kib("prometheus", "prometheus-alertmanager", "systemd-journal-remote", "prometheus-node-exporter")
        active = env.api("/api/v1/targets")["data"]["activeTargets"]
        targets, targets_up = len(active), sum(t["health"] == "up" for t in active)

        fault = time.time()
        env.exec("db", "systemctl", "stop", "postgresql@15-main")
        fired = sinks.wait_for(lambda r: r.kind == "pagerduty" and mentions(r, ALERT, "firing"), 300)
        trigger = min(r.at for r in fired if r.kind == "pagerduty" and mentions(r, ALERT, "firing")) if fired else None
        repaired = time.time()
        env.exec("db", "systemctl", "start", "postgresql@15-main")
        done = sinks.wait_for(lambda r: r.kind == "pagerduty" and mentions(r, ALERT, "resolved"), 300)
        resolve = min(r.at for r in done if r.kind == "pagerduty" and mentions(r, ALERT, "resolved")) if done else None
    finally:
        sinks.close()
        if not args.keep:
            env.down()

    alert_for = rule_for(env.rules_dir, ALERT)
    floor = seconds(alert_for) + seconds(INTERVALS["evaluation"]) + seconds(INTERVALS["group_wait"])
    results = {
        "intervals": {**INTERVALS, "rule_for": alert_for},
        "provision_seconds": round(provision, 1) if provision else None,
        "fault_to_notification_seconds": round(trigger - fault, 1) if trigger else None,
        "fault_to_notification_floor_seconds": floor,
        "fault_to_notification_ratio": round((trigger - fault) / floor, 2) if trigger else None,
        "repair_to_resolved_seconds": round(resolve - repaired, 1) if resolve else None,
        "monitoring_host_rss_kib": rss,
        "monitoring_host_rss_total_kib": sum(rss.values()),
        "monitoring_rss_ratio_to_prometheus_alone": round(sum(rss.values()) / rss["prometheus"], 2)
        if rss.get("prometheus")
        else None,
        "scrape_targets": targets,
        "scrape_targets_up": targets_up,
    }
    for key, value in results.items():
        print(f"{key}: {value}")
    write_results("monitoring", results, notes="fault to notification: PostgreSQL stopped -> PagerDuty stand-in")
    return 0 if results["fault_to_notification_seconds"] else 1


if __name__ == "__main__":
    sys.exit(main())
