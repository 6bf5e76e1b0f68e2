"""Render the OpenPolicy charts with the real helm binary.

The values of every service in every environment are built here from the project's catalog
(catalog/services.yml) the way the inventory builds them, with test stand-ins where the
catalog has no answer (image version, database addresses). Entry points:

- ``render_all()``: every service for every environment plus each environment's baseline;
  returns {(environment, release): [manifest, ...]} (the e2e dry run uses it);
- ``render_service(name, environment)``, ``render_platform(environment)``;
- ``helm_template(chart, release, namespace, values)``: one render, raising HelmError with
  Helm's message when the chart rejects the values.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
CATALOG = ROOT / "catalog" / "services.yml"
SERVICE_CHART = CHARTS / "openpolicy-service"
PLATFORM_CHART = CHARTS / "openpolicy-platform"
APP_CHARTS = (SERVICE_CHART, PLATFORM_CHART)
KUBE_VERSION = "1.36.3"
# The platform release lives outside the namespace it creates (see docs/charts.md).
PLATFORM_RELEASE_NAMESPACE = "openpolicy-system"

# Test stand-ins: an image version, and one database/Redis host per environment.
TEST_IMAGE_TAG = "1.4.2"
TEST_DB_CIDRS = {
    "local": "10.89.0.10/32",
    "dev": "10.20.0.10/32",
    "staging": "10.30.0.10/32",
    "production": "10.40.0.10/32",
}
# The local cluster's simulated nodes carry this taint.
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}
# Environment variables whose values carry credentials: they come from the Secret, by key.
SECRET_ENV = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "CELERY_BROKER_URL": "redis_url",
    "CELERY_RESULT_BACKEND": "redis_url",
    "JWT_SECRET": "jwt_signing_key",
}
SECRET_KEY_ENV = {
    "smtp_password": "SMTP_PASSWORD",
    "slack_webhook_url": "SLACK_WEBHOOK_URL",
}
# Sample non-secret settings for the catalog's env names; others get no value here.
CONFIG_SAMPLES = {
    "LOG_LEVEL": "info",
    "ENABLE_METRICS": "true",
    "DB_POOL_SIZE": "10",
    "DB_MAX_OVERFLOW": "5",
    "JWT_EXPIRES_IN": "900",
    "JWT_REFRESH_EXPIRES_IN": "86400",
    "ENABLE_2FA": "true",
    "ENABLE_RATE_LIMITING": "true",
    "MAX_LOGIN_ATTEMPTS": "5",
    "SESSION_TIMEOUT": "3600",
    "CONFIG_REFRESH_INTERVAL": "60",
    "ENABLE_HOT_RELOAD": "false",
    "ENABLE_CONFIG_VALIDATION": "true",
    "SEARCH_INDEX_PREFIX": "openpolicy",
    "ENABLE_EMAIL": "true",
    "ENABLE_SMS": "false",
    "ENABLE_PUSH": "false",
    "HEALTH_CHECK_INTERVAL": "30",
    "HEALTH_CHECK_TIMEOUT": "5",
    "BATCH_SIZE": "500",
    "MAX_WORKERS": "4",
    "MAX_CONCURRENT_SCRAPERS": "4",
    "DEFAULT_TIMEOUT": "30",
    "RETRY_ATTEMPTS": "3",
}


class HelmError(RuntimeError):
    """helm failed; the message is Helm's stderr."""


def helm_binary() -> str:
    found = shutil.which("helm", path=f"{ROOT / '.toolchain' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise FileNotFoundError("helm not found: run `make bootstrap`")
    return found


@functools.cache
def catalog() -> dict:
    return yaml.safe_load(CATALOG.read_text())


def environments() -> list[str]:
    return list(catalog()["platform"]["environments"])


def service_names() -> list[str]:
    return [service["name"] for service in catalog()["services"]]


def namespace(environment: str) -> str:
    return catalog()["platform"]["namespace_pattern"].format(env=environment)


@functools.cache
def build_dependencies() -> None:
    """`helm dependency build` for the app charts (vendors openpolicy-common; offline)."""
    for chart in APP_CHARTS:
        run = subprocess.run(
            [helm_binary(), "dependency", "build", "--skip-refresh", str(chart)],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            raise HelmError(f"helm dependency build {chart.name}: {run.stderr.strip()}")


def helm_template(
    chart: Path, release: str, namespace_: str, values: dict | None = None, values_files: tuple[Path, ...] = ()
) -> list[dict]:
    """Render one release and return its manifests (hooks included)."""
    build_dependencies()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as handle:
        yaml.safe_dump(values or {}, handle)
        handle.flush()
        command = [
            helm_binary(),
            "template",
            release,
            str(chart),
            "--namespace",
            namespace_,
            "--kube-version",
            KUBE_VERSION,
        ]
        for path in values_files:
            command += ["--values", str(path)]
        command += ["--values", handle.name]
        run = subprocess.run(command, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise HelmError(run.stderr.strip())
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def _callers(name: str) -> list[str]:
    return [s["name"] for s in catalog()["services"] if name in (s.get("calls") or []) and s["name"] != "api-gateway"]


def _port(name: str) -> int:
    return next(s["port"] for s in catalog()["services"] if s["name"] == name)


def service_values(name: str, environment: str) -> dict:
    """The values the inventory gives the release of one service in one environment."""
    service = next(s for s in catalog()["services"] if s["name"] == name)
    infra = catalog()["infrastructure"]
    needs = service.get("needs") or []
    production = environment == "production"
    scaled = environment in ("staging", "production") and service.get("autoscaling")
    env_names = service.get("env") or []
    secret_env = {var: key for var, key in SECRET_ENV.items() if var in env_names}
    for key in service.get("secrets") or []:
        if key in SECRET_KEY_ENV:
            secret_env[SECRET_KEY_ENV[key]] = key
    config = {var: CONFIG_SAMPLES[var] for var in env_names if var in CONFIG_SAMPLES}
    for called in service.get("calls") or []:
        var = called.upper().replace("-", "_") + "_URL"
        if var in env_names:
            config[var] = f"http://{called}:{_port(called)}"
    values: dict = {
        "service": {"name": name, "tier": service["tier"], "port": service["port"]},
        "environment": environment,
        "image": {"repository": f"ghcr.io/openpolicy/{name}", "tag": TEST_IMAGE_TAG},
        "replicaCount": 1 if environment in ("local", "dev") else 2,
        "resources": copy.deepcopy(service["resources"]),
        "callers": _callers(name),
        "calls": [{"name": called, "port": _port(called)} for called in service.get("calls") or []],
        "database": {
            "enabled": "postgresql" in needs,
            "port": infra["postgresql"]["port"],
            "cidrs": [TEST_DB_CIDRS[environment]] if "postgresql" in needs else [],
        },
        "redis": {
            "enabled": "redis" in needs,
            "port": infra["redis"]["port"],
            "cidrs": [TEST_DB_CIDRS[environment]] if "redis" in needs else [],
        },
        "externalHttps": {"enabled": "https" in (service.get("external_egress") or [])},
        "config": config,
        "existingSecret": f"{name}-secrets" if secret_env else "",
        "secretEnv": secret_env,
        "migration": {
            "enabled": bool(service.get("migration")),
            "command": ["openpolicy-migrate"],
            "args": ["upgrade", "head"],
        },
        "cronJobs": [
            {"name": job["name"], "schedule": job["cron"], "args": ["scrape", job["name"]]}
            for job in service.get("schedules") or []
        ],
        "monitoring": {
            "serviceMonitor": {"enabled": environment != "local"},
            "prometheusRule": {"enabled": environment != "local"},
        },
    }
    if scaled:
        target = service["autoscaling"]["production"]
        values["autoscaling"] = {
            "enabled": True,
            "minReplicas": target["min"],
            "maxReplicas": target["max"] if production else min(target["max"], 4),
            "targetCPUUtilizationPercentage": target["cpu_pct"],
            "targetMemoryUtilizationPercentage": target["memory_pct"],
        }
        if not production:
            values["autoscaling"]["minReplicas"] = min(2, values["autoscaling"]["maxReplicas"])
    if service.get("public"):
        values["ingress"] = {
            "enabled": True,
            "className": "nginx",
            "host": f"api.{environment}.openpolicy.example",
            "tlsSecretName": "" if environment == "local" else "api-gateway-tls",
        }
    if environment == "local":
        values["tolerations"] = [KWOK_TOLERATION]
    return values


def platform_values(environment: str) -> dict:
    values: dict = {"environment": environment, "namespace": {"name": namespace(environment), "create": True}}
    if environment in ("staging", "production"):
        values["resourceQuota"] = {
            "enabled": True,
            "hard": {
                "requests.cpu": "16",
                "requests.memory": "32Gi",
                "limits.cpu": "48",
                "limits.memory": "72Gi",
                "pods": "120",
                "services": "20",
                "configmaps": "60",
                "secrets": "200",
                "persistentvolumeclaims": "0",
                "services.loadbalancers": "0",
                "services.nodeports": "0",
            },
        }
    return values


def render_service(name: str, environment: str, overrides: dict | None = None) -> list[dict]:
    values = service_values(name, environment)
    if overrides:
        values = merge(values, overrides)
    return helm_template(SERVICE_CHART, name, namespace(environment), values)


def render_platform(environment: str) -> list[dict]:
    return helm_template(
        PLATFORM_CHART, f"openpolicy-platform-{environment}", PLATFORM_RELEASE_NAMESPACE, platform_values(environment)
    )


def render_all(monitoring: bool | None = None) -> dict[tuple[str, str], list[dict]]:
    """Every release of every environment: {(environment, release name): manifests}.

    ``monitoring=False`` leaves out the ServiceMonitor and PrometheusRule objects (for a
    cluster without the monitoring.coreos.com CRDs); None keeps each environment's choice.
    """
    build_dependencies()
    jobs: dict[tuple[str, str], tuple] = {}
    for environment in environments():
        jobs[(environment, f"openpolicy-platform-{environment}")] = (render_platform, environment)
        for name in service_names():
            overrides = None
            if monitoring is not None:
                overrides = {
                    "monitoring": {"serviceMonitor": {"enabled": monitoring}, "prometheusRule": {"enabled": monitoring}}
                }
            jobs[(environment, name)] = (render_service, name, environment, overrides)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {key: pool.submit(job[0], *job[1:]) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def merge(base: dict, extra: dict) -> dict:
    """Deep merge, extra wins; lists are replaced, not appended."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
