"""Monitoring as configured per environment, without hosts: Alertmanager's configuration from each
inventory (amtool check-config, one `amtool config routes test` per route), its one-line input
errors, the Grafana dashboards' queries (PromQL checked by promtool) and the monitoring roles'
contracts (defaults, argument_specs, README tables agree)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.helpers import REPO

ROLES = ["prometheus", "alertmanager", "node_exporter", "postgres_exporter", "redis_exporter", "host_logs"]
DASHBOARDS = sorted((REPO / "monitoring" / "dashboards").glob("*.json"))
# Stand-ins for the vault's receiver secrets: the tests never see real ones.
FAKE_VAULT = {
    "vault_pagerduty_routing_key": "e2e0stand0in0routing0key00000000",
    "vault_slack_webhook_url": "https://hooks.slack.invalid/services/T000/B000/XXXX",
    "vault_smtp_password": "smtp-password-stand-in",  # pragma: allowlist secret
    "vault_alertmanager_webhook_url": "https://alerts.invalid/hook/token",
}
# Each environment's routes: labels of an alert -> the receivers it must reach.
ROUTES = {
    "production": [
        ({"environment": "production", "severity": "critical"}, "pagerduty-oncall,email-ops,slack-production"),
        ({"environment": "production", "severity": "warning"}, "slack-production"),
    ],
    "staging": [
        ({"environment": "staging", "severity": "critical"}, "slack-staging"),
        ({"environment": "staging", "severity": "warning"}, "slack-staging"),
    ],
    "dev": [({"environment": "dev", "severity": "critical"}, "dev-webhook")],
    "local": [({"environment": "local", "severity": "critical"}, "local-webhook")],
}


def load_filter():
    path = REPO / "plugins" / "filter" / "openpolicy_alertmanager.py"
    spec = importlib.util.spec_from_file_location("openpolicy_alertmanager", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FILTER = load_filter()


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: apt-get install prometheus prometheus-alertmanager")
    return found


def role_defaults(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())


def render(value, context: dict):
    """The inventory's Jinja strings rendered as Ansible would, with the stand-in vault."""
    if isinstance(value, str):
        return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(value).render(**context)
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    return value


def settings(env: str, vault: dict | None = None) -> dict:
    """Alertmanager's settings of an environment: the role's defaults under its inventory."""
    inventory = REPO / "inventories" / env / "group_vars" / "all"
    values = {**role_defaults("alertmanager"), **yaml.safe_load((inventory / "monitoring.yml").read_text())}
    environment = yaml.safe_load((inventory / "environment.yml").read_text())["openpolicy_environment"]
    context = {"openpolicy_environment": environment, **(FAKE_VAULT if vault is None else vault)}
    values = {k: render(v, context) for k, v in values.items() if k.startswith("alertmanager_")}
    return {key: values[f"alertmanager_{key}"] for key in (
        "receivers", "default_receiver", "routes", "smtp", "group_by", "group_wait", "group_interval",
        "repeat_interval", "inhibit_rules")}  # fmt: skip


def write_config(env: str, tmp_path: Path) -> Path:
    path = tmp_path / f"alertmanager-{env}.yml"
    path.write_text(yaml.safe_dump(FILTER.alertmanager_config(settings(env))))
    return path


@pytest.mark.parametrize("env", sorted(ROUTES))
def test_amtool_accepts_the_configuration_of(env: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [tool("amtool"), "check-config", str(write_config(env, tmp_path))], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("env", "labels", "receivers"), [(e, lab, r) for e, cases in ROUTES.items() for lab, r in cases]
)
def test_amtool_routes(env: str, labels: dict, receivers: str, tmp_path: Path) -> None:
    args = [f"{k}={v}" for k, v in {"alertname": "OpenPolicyPostgresqlDown", "instance": "db1", **labels}.items()]
    run = subprocess.run(
        [tool("amtool"), "config", "routes", "test", f"--config.file={write_config(env, tmp_path)}",
         f"--verify.receivers={receivers}", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_environment_has_a_route_case() -> None:
    envs = {p.parent.parent.parent.name for p in (REPO / "inventories").glob("*/group_vars/all/monitoring.yml")}
    assert envs - {"sample"} == set(ROUTES)


def test_the_host_down_inhibits_that_hosts_other_alerts(tmp_path: Path) -> None:
    rules = FILTER.alertmanager_config(settings("production"))["inhibit_rules"]
    host = next(r for r in rules if 'alertname="OpenPolicyHostDown"' in r["source_matchers"])
    assert host["equal"] == ["instance"]


def test_secrets_stay_out_of_the_problems() -> None:
    bad = settings("production")
    bad["receivers"][1]["api_url"] = "not a url " + FAKE_VAULT["vault_slack_webhook_url"]
    problems = FILTER.alertmanager_problems(bad)
    assert problems == ["alertmanager_receivers[slack-production].api_url: expected an http(s) URL"]


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (lambda s: s["receivers"][0].update(routing_key=""),
         "alertmanager_receivers[pagerduty-oncall].routing_key: missing; put it in the vault (ansible-vault edit)"),
        (lambda s: s["routes"].append({"receiver": "nobody", "matchers": []}),
         "alertmanager_routes[4].receiver: unknown receiver 'nobody'"
         " (known: pagerduty-oncall, slack-production, email-ops)"),
        (lambda s: s["receivers"][2].update(to="ops-at-example"),
         "alertmanager_receivers[email-ops].to: expected e-mail addresses (name@domain), got ops-at-example"),
        (lambda s: s["receivers"][0].update(url="events.pagerduty.com"),
         "alertmanager_receivers[pagerduty-oncall].url: expected an http(s) URL (the Events API v2 endpoint)"),
        (lambda s: s["smtp"].update(auth_password=""),
         "alertmanager_smtp.auth_password: missing; put it in the vault (vault_smtp_password)"),
        (lambda s: s.update(group_wait="-1s"),
         "alertmanager_group_wait: expected a duration such as 30s, 5m or 4h, got '-1s'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_the_field(change, line: str) -> None:
    bad = settings("production")
    change(bad)
    assert FILTER.alertmanager_problems(bad) == [line]
    with pytest.raises(ValueError, match=re.escape(line)):
        FILTER.alertmanager_config(bad)


def dashboard_queries(path: Path) -> list[str]:
    dashboard = json.loads(path.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def substitute(expr: str) -> str:
    """A dashboard query as Grafana sends it with every variable at "All"."""
    return re.sub(r"\$\{?(instance|namespace|service)\}?", ".+", expr)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_the_datasource_variable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule."""
    rules = [
        {"record": f"dashboard:{i}", "expr": substitute(e)}
        for i, e in enumerate(e for p in DASHBOARDS for e in dashboard_queries(p))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    run = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def metric_names(expr: str) -> set[str]:
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[|\))", expr))
    functions = {"rate", "sum", "by", "histogram_quantile", "max", "min", "count", "on", "avg", "time", "vector"}
    return {w for w in words if w not in functions and "_" in w}


def test_service_dashboard_reads_the_metrics_the_service_alerts_read() -> None:
    rules = yaml.safe_load((REPO / "monitoring" / "rules" / "services.yml").read_text())
    alert_metrics = set().union(*(metric_names(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    used = set().union(
        *(metric_names(e) for e in dashboard_queries(REPO / "monitoring/dashboards/openpolicy-service.json"))
    )
    assert used and used <= alert_metrics | {"up"}, used - alert_metrics


@pytest.mark.parametrize("role", ROLES)
def test_role_contract_defaults_specs_and_readme_agree(role: str) -> None:
    base = REPO / "roles" / role
    defaults = set(role_defaults(role))
    specs = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = set(specs["main"]["options"])
    readme = set(re.findall(r"^\| `([a-z_]+)` \|", (base / "README.md").read_text(), re.MULTILINE))
    assert all(name.startswith(f"{role}_") for name in defaults), role
    assert defaults == options == readme
    # validate (the shared preflight's) checks everything but the password read from the vault after it.
    secrets = {f"{role}_password"}
    assert specs["validate"]["options"] == {k: v for k, v in specs["main"]["options"].items() if k not in secrets}
    main = yaml.safe_load((base / "tasks" / "main.yml").read_text())
    assert all({"include_tasks", "import_tasks"} & {k.split(".")[-1] for k in t} for t in main)
