"""Bad values are rejected at template time with a message that names the value at fault."""

from __future__ import annotations

import re

import pytest

from tests.charts import render

SERVICE_CASES = [
    # (case, overrides on valid production values of auth-service, pattern the error must match)
    ("wrong type for replicas", {"replicaCount": "three"}, r"at '/replicaCount'.*(integer|number)"),
    ("unknown top-level key", {"replicas": 3}, r"additional properties 'replicas' not allowed"),
    ("unknown nested key", {"image": {"version": "1.0.0"}}, r"at '/image'.*additional properties 'version'"),
    ("negative replicas", {"replicaCount": -1}, r"at '/replicaCount'.*minimum"),
    (
        "HPA minimum above maximum",
        {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
        r"autoscaling\.minReplicas \(5\) must not be greater than autoscaling\.maxReplicas \(3\)",
    ),
    ("latest in production", {"image": {"tag": "latest"}}, r"at '/image/tag'"),
    ("missing image version", {"image": {"tag": ""}}, r"at '/image/tag'.*(minLength|length)"),
    ("unknown service among the callers", {"callers": ["billing-service"]}, r"at '/callers/0'.*must be one of"),
    ("unknown service among the calls", {"calls": [{"name": "billing", "port": 8000}]}, r"at '/calls/0/name'"),
    ("unknown service name", {"service": {"name": "billing-service"}}, r"at '/service/name'"),
    ("secret-looking name in config", {"config": {"DATABASE_PASSWORD": "hunter2"}}, r"at '/config/DATABASE_PASSWORD'"),
    (
        "credentials in a config URL",
        {"config": {"REDIS_URL": "redis://app:hunter2@db:6379/0"}},
        r"at '/config/REDIS_URL'",
    ),
    ("secretEnv without existingSecret", {"existingSecret": ""}, r"at '/existingSecret'"),
    (
        "Ingress on a service other than the gateway",
        {"ingress": {"enabled": True, "host": "auth.example"}},
        r"at '/service/name'.*api-gateway",
    ),
    ("database egress without hosts", {"database": {"cidrs": []}}, r"at '/database/cidrs'"),
    ("malformed CIDR", {"redis": {"cidrs": ["10.0.0.300"]}}, r"at '/redis/cidrs/0'"),
    ("malformed CPU quantity", {"resources": {"requests": {"cpu": "lots"}}}, r"at '/resources/requests/cpu'"),
    ("missing resource limits", {"resources": {"limits": None}}, r"at '/resources'.*limits"),
    ("unknown environment", {"environment": "prod"}, r"at '/environment'"),
    (
        "malformed cron schedule",
        {"cronJobs": [{"name": "nightly", "schedule": "every night"}]},
        r"at '/cronJobs/0/schedule'",
    ),
    (
        "a service calling itself",
        {"calls": [{"name": "auth-service", "port": 8000}]},
        r"calls: auth-service lists itself",
    ),
    ("privilege through a root user id", {"securityContext": {"runAsUser": 0}}, r"at '/securityContext/runAsUser'"),
]

PLATFORM_CASES = [
    ("unknown key", {"quota": {}}, r"additional properties 'quota' not allowed"),
    ("unknown quota resource", {"resourceQuota": {"hard": {"gpus": "4"}}}, r"at '/resourceQuota/hard'"),
    ("weaker Pod Security level", {"namespace": {"podSecurity": "privileged"}}, r"at '/namespace/podSecurity'"),
    (
        "creating the release's own namespace",
        {"namespace": {"name": render.PLATFORM_RELEASE_NAMESPACE}},
        r"namespace\.create: Helm keeps the release in namespace openpolicy-system",
    ),
]


def rejection(chart, release: str, namespace: str, values: dict) -> str:
    with pytest.raises(render.HelmError) as caught:
        render.helm_template(chart, release, namespace, values)
    return str(caught.value)


def test_there_are_at_least_ten_cases() -> None:
    assert len(SERVICE_CASES) + len(PLATFORM_CASES) >= 10


def test_the_base_values_are_valid() -> None:
    """So that each case below fails for its own reason only."""
    assert render.render_service("auth-service", "production")


@pytest.mark.parametrize(("case", "overrides", "pattern"), SERVICE_CASES, ids=[c[0] for c in SERVICE_CASES])
def test_service_chart_rejects(case: str, overrides: dict, pattern: str) -> None:
    values = render.merge(render.service_values("auth-service", "production"), overrides)
    message = rejection(render.SERVICE_CHART, "auth-service", "openpolicy-production", values)
    assert re.search(pattern, message, re.DOTALL), f"{case}: {message}"


@pytest.mark.parametrize(("case", "overrides", "pattern"), PLATFORM_CASES, ids=[c[0] for c in PLATFORM_CASES])
def test_platform_chart_rejects(case: str, overrides: dict, pattern: str) -> None:
    values = render.merge(render.platform_values("production"), overrides)
    release_namespace = render.PLATFORM_RELEASE_NAMESPACE
    message = rejection(render.PLATFORM_CHART, "openpolicy-platform-production", release_namespace, values)
    assert re.search(pattern, message, re.DOTALL), f"{case}: {message}"


def test_latest_is_fine_outside_production() -> None:
    values = render.merge(render.service_values("auth-service", "dev"), {"image": {"tag": "latest"}})
    assert render.helm_template(render.SERVICE_CHART, "auth-service", "openpolicy-dev", values)
