"""Alert rules: promtool checks and unit tests, a firing and a quiet case for every alert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.charts import render

MONITORING = render.ROOT / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
TEST_FILES = sorted((MONITORING / "tests").glob("*.yml"))
REQUIRED = {
    "OpenPolicyServiceDown",
    "OpenPolicyServiceErrorRateHigh",
    "OpenPolicyServiceLatencyP95High",
    "OpenPolicyPodCrashLooping",
    "OpenPolicyHPAAtMaximum",
    "OpenPolicyDatabaseConnectionsNearLimit",
    "OpenPolicyBackupStale",
    "OpenPolicyBackupFailed",
    # issue 12: what the hosts' exporters watch
    "OpenPolicyHostDown",
    "OpenPolicyTargetDown",
    "OpenPolicyRedisDown",
    "OpenPolicyRedisMemoryHigh",
    "OpenPolicyDiskFilling",
    "OpenPolicyPostgresqlDown",
    "OpenPolicyReplicationLagHigh",
    "OpenPolicyReplicaGone",
    "OpenPolicyCertificateExpiringSoon",
    "OpenPolicyWalArchivingFailing",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: apt-get install prometheus")
    return found


def alerts(path: Path) -> dict[str, dict]:
    return {
        rule["alert"]: rule
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def all_alerts() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for path in RULE_FILES:
        found.update(alerts(path))
    return found


def test_the_issue_alerts_exist() -> None:
    assert set(all_alerts()) >= REQUIRED


def test_promtool_check_rules() -> None:
    run = subprocess.run(
        [promtool(), "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_test_rules() -> None:
    run = subprocess.run(
        [promtool(), "test", "rules", *map(str, TEST_FILES)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = set(all_alerts())
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"


def test_every_alert_has_severity_summary_and_runbook() -> None:
    for name, rule in all_alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name


def test_every_runbook_url_is_a_runbook_that_exists() -> None:
    for name, rule in all_alerts().items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("docs/runbooks/"), name
        # A link may point at a section: the file must exist and carry that heading.
        path, _, section = url.partition("#")
        runbook = render.ROOT / path
        assert runbook.is_file(), f"{name}: {path} does not exist"
        if section:
            headings = {
                re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in runbook.read_text().splitlines()
                if line.startswith("#")
            }
            assert section in headings, f"{name}: {path} has no section #{section}"


def test_disk_filling_predicts_the_trend() -> None:
    assert "predict_linear(" in all_alerts()["OpenPolicyDiskFilling"]["expr"]


def test_thresholds_are_the_catalog_slos() -> None:
    slo = render.catalog()["platform"]["slo"]
    error_pct = slo["error_rate_pct"]["current"]
    p95_seconds = slo["response_p95_ms"]["current"] / 1000
    rules = all_alerts()
    assert rules["OpenPolicyServiceErrorRateHigh"]["expr"].rstrip().endswith(f"> {error_pct:g}")
    assert rules["OpenPolicyServiceLatencyP95High"]["expr"].rstrip().endswith(f"> {p95_seconds:g}")
    defaults = yaml.safe_load((render.SERVICE_CHART / "values.yaml").read_text())["monitoring"]["prometheusRule"]
    assert defaults["errorRatePercent"] == error_pct
    assert defaults["latencyP95Seconds"] == p95_seconds


def test_the_chart_rules_are_the_platform_rules_scoped_to_one_release(rendered: dict, tmp_path: Path) -> None:
    """The PrometheusRule of a release passes promtool and keeps the platform rules' alert set."""
    rule = next(m for m in rendered[("production", "api-gateway")] if m["kind"] == "PrometheusRule")
    path = tmp_path / "api-gateway.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    run = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    chart_alerts = alerts(path)
    platform = all_alerts()
    for name, chart_rule in chart_alerts.items():
        assert name in platform
        assert chart_rule["for"] == platform[name]["for"]
        assert chart_rule["labels"] == platform[name]["labels"]
        assert 'namespace="openpolicy-production"' in chart_rule["expr"]
