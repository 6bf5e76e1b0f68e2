"""Render the OpenPolicy charts with the real helm binary.

The values of every service in every environment come from the toolkit's own mapping
(plugins/module_utils/catalog.py) applied to the project's catalog (catalog/services.yml), with
test stand-ins for what an inventory would set (image version, database addresses). Entry points:

- ``render_all()``: every service for every environment plus each environment's baseline;
  returns {(environment, release): [manifest, ...]} (the e2e dry run uses it);
- ``render_service(name, environment)``, ``render_platform(environment)``;
- ``helm_template(chart, release, namespace, values)``: one render, raising HelmError with
  Helm's message when the chart rejects the values.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog as platform

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


# `helm dependency build` vendors into a tmpcharts-<pid> folder inside the chart and removes it;
# a `helm template` of the same chart in another pytest-xdist worker that lists the chart's files
# meanwhile fails on it ("lstat charts/openpolicy-service/tmpcharts-6412: no such file or
# directory", once in a make test-quick). Builds take this checkout's lock exclusively, renders
# shared: renders still run side by side.
CHARTS_LOCK = Path(tempfile.gettempdir()) / f"openpolicy-charts-{hashlib.sha256(bytes(CHARTS)).hexdigest()[:12]}.lock"


@contextlib.contextmanager
def charts_locked(exclusive: bool) -> Iterator[None]:
    with CHARTS_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


@functools.cache
def build_dependencies() -> None:
    """`helm dependency build` for the app charts (vendors openpolicy-common; offline)."""
    with charts_locked(exclusive=True):
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
        with charts_locked(exclusive=False):
            run = subprocess.run(command, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise HelmError(run.stderr.strip())
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def settings(name: str, environment: str) -> dict:
    """The inventory settings of one service in one environment, with the test stand-ins: what
    roles/service_releases hands module_utils/catalog.py (service_settings) in that environment."""
    service = next(s for s in catalog()["services"] if s["name"] == name)
    scaled = environment in ("staging", "production") and service.get("autoscaling")
    out = {
        "environment": environment,
        "version": TEST_IMAGE_TAG,
        "replicas": 1 if environment in ("local", "dev") else 2,
        "config": CONFIG_SAMPLES,
        "database_cidrs": [TEST_DB_CIDRS[environment]],
        "redis_cidrs": [TEST_DB_CIDRS[environment]],
        "monitoring": environment != "local",
        "ingress_host": f"api.{environment}.openpolicy.example",
        "ingress_tls_secret": "" if environment == "local" else "api-gateway-tls",
        "tolerations": [KWOK_TOLERATION] if environment == "local" else [],
    }
    if scaled:
        target = service["autoscaling"]["production"]
        maximum = target["max"] if environment == "production" else min(target["max"], 4)
        minimum = target["min"] if environment == "production" else min(2, maximum)
        out["autoscaling"] = {"min": minimum, "max": maximum}
    return out


def service_values(name: str, environment: str) -> dict:
    """The values the inventory gives the release of one service in one environment: the
    toolkit's own mapping (module_utils/catalog.py), without a Secret's checksum."""
    values = platform.service_values(catalog(), name, settings(name, environment))
    values.pop("secretChecksum")
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


# Deep merge, extra wins; lists are replaced (the toolkit's own, for overrides in tests).
merge = platform.merge
