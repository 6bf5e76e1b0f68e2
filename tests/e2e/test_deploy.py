"""deploy.yml on the session's cluster: the nine services come up tier by tier, a rerun changes
nothing, a failed upgrade is rolled back by Helm and named, bad inputs change nothing.

The tests of this module build on each other in file order (one environment, deployed once).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from tests.e2e.deploy_env import FAILED_UPGRADE, SERVICES, DeployEnv, failure_messages, output, release_hosts_changed
from tests.helpers import Kube, recap

pytestmark = pytest.mark.cluster

NAMESPACE = "openpolicy-e2e-deploy"
# Short enough that a release that never becomes Ready fails fast; long enough for a rollout.
FAILING_TIMEOUT = 20


@pytest.fixture(scope="module")
def env(kube: Kube, cluster_vars: dict, tmp_path_factory: pytest.TempPathFactory):
    deploy_env = DeployEnv(kube, cluster_vars, NAMESPACE, tmp_path_factory.mktemp("credentials"))
    yield deploy_env
    deploy_env.remove()


@pytest.fixture(scope="module")
def cold(env: DeployEnv):
    result = env.deploy()
    assert result.returncode == 0, output(result)
    return result


def test_cold_deploy_brings_the_nine_services_up(env: DeployEnv, cold):
    assert env.serving() == dict.fromkeys(SERVICES, 1), env.history()
    ready = env.ready()
    assert sorted(ready) == sorted(SERVICES)
    assert all(have == want and want >= 1 for have, want in ready.values()), ready
    assert "service               version  revision  ready  status" in cold.stdout
    assert re.search(r"- api-gateway\s+1\.4\.2\s+1\s+1/1\s+deployed", cold.stdout), cold.stdout[-3000:]


def test_tiers_deploy_in_order_gateway_last(env: DeployEnv, cold):
    """Data tier before core before edge: each tier's first revision is no older than the last
    of the tier before (Helm records the time a release was deployed)."""
    releases = json.loads(env.helm("list", "-n", NAMESPACE, "-o", "json").stdout)
    updated = {r["name"]: r["updated"] for r in releases}
    data = max(updated[s] for s in ("etl-service", "scraper-service"))
    core = [updated[s] for s in SERVICES if s not in ("etl-service", "scraper-service", "api-gateway")]
    assert min(core) >= data
    assert updated["api-gateway"] >= max(core)


def test_release_set_records_every_service(env: DeployEnv, cold):
    sets = env.release_sets()
    assert [s["number"] for s in sets] == [1]
    services = sets[0]["services"]
    assert sorted(services) == sorted(SERVICES)
    for entry in services.values():
        assert entry["chart_version"] == "0.1.0"
        assert entry["app_version"] == "1.4.2"
        assert entry["revision"] == 1
        assert entry["values_checksum"].startswith("sha256:")
        assert entry["time"]
        assert entry["backup_label"] == ""


def test_secrets_never_reach_configmaps_values_or_logs(env: DeployEnv, cold):
    """The Secret the pods read holds the keys of docs/charts.md; none of its values is in a
    ConfigMap (release sets included), in Helm's values or in the run's output."""
    secret = env.kube.json("get", "secret", "auth-service-secrets", "-n", NAMESPACE)
    assert {"database_url", "redis_url", "jwt_signing_key"} <= set(secret["data"])
    values = [base64.b64decode(v).decode() for v in secret["data"].values()]
    configmaps = json.dumps(env.kube.json("get", "configmaps", "-n", NAMESPACE))
    helm_values = env.helm("get", "values", "auth-service", "-n", NAMESPACE, "-o", "json").stdout
    for value in values:
        assert value not in configmaps
        assert value not in helm_values
        assert value not in cold.stdout + cold.stderr


def test_second_run_changes_nothing(env: DeployEnv, cold):
    before = env.snapshot()
    again = env.deploy()
    assert again.returncode == 0, output(again)
    changed = release_hosts_changed(again)
    assert changed and all(count == 0 for count in changed.values()), changed
    assert env.snapshot() == before
    assert "release set 1 unchanged" in again.stdout


def failing_upgrade(env: DeployEnv, service: str, overrides: dict) -> tuple:
    before = env.serving()
    result = env.deploy(
        services=service,
        version="1.5.0",
        service_releases_timeout=FAILING_TIMEOUT,
        service_releases_values_overrides={service: overrides},
    )
    assert result.returncode != 0, output(result)
    return before, result


def assert_rolled_back(env: DeployEnv, service: str, before: dict, result) -> None:
    after = env.serving()
    messages = [m for m in failure_messages(result) if m.startswith(f"service {service}:")]
    assert messages, output(result)
    match = FAILED_UPGRADE.search(messages[-1])
    assert match, messages[-1]
    failed, serving = int(match["failed"]), int(match["serving"])
    assert failed == before[service] + 1 and serving == failed + 1, messages[-1]
    assert after[service] == serving
    history = dict(env.history()[service])
    assert history[failed] == "failed" and history[serving] == "deployed"
    assert env.descriptions(service)[serving] == f"Rollback to {before[service]}"
    assert {s: r for s, r in after.items() if s != service} == {s: r for s, r in before.items() if s != service}
    assert env.image_tag(service) == "1.4.2"
    ready, wanted = env.ready()[service]
    assert ready == wanted >= 1
    assert [s["number"] for s in env.release_sets()] == [1], "a failed deploy records no set"


def test_upgrade_that_never_becomes_ready_is_rolled_back(env: DeployEnv, cold):
    before, result = failing_upgrade(env, "auth-service", {"podLabels": {"openpolicy.dev/simulate": "crashloop"}})
    assert_rolled_back(env, "auth-service", before, result)
    # Seen in the pods' state and stopped before Helm's timeout, not found by it.
    assert re.search(
        r"in CrashLoopBackOff for \d+ s, stopped before Helm's \d+ s timeout$", failure_messages(result)[-1]
    )


def test_failing_migration_is_rolled_back(env: DeployEnv, cold):
    before, result = failing_upgrade(
        env, "policy-service", {"migration": {"podLabels": {"openpolicy.dev/simulate": "fail"}, "backoffLimit": 0}}
    )
    assert_rolled_back(env, "policy-service", before, result)
    assert "pre-upgrade hooks failed" in failure_messages(result)[-1]


def unreachable_kubeconfig(env: DeployEnv, path: Path) -> str:
    raw = json.loads(env.kube.run("config", "view", "--minify", "--raw", "-o", "json").stdout)
    raw["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    path.write_text(json.dumps(raw))
    return str(path)


BAD_INPUTS = {
    "unknown service": ("deploy.yml", {"services": "auth-service,billing-service"}, "services"),
    "malformed version": ("deploy.yml", {"services": "auth-service", "version": "1.5"}, "version"),
    "version for two services": (
        "deploy.yml",
        {"services": "auth-service,config-service", "version": "1.5.0"},
        "version",
    ),
    "malformed pinned version": (
        "deploy.yml",
        {"service_releases_versions": {"auth-service": "latest"}},
        "service_releases_versions",
    ),
    "production without confirmation": ("deploy.yml", {"inventory": "inventories/production"}, "confirm"),
    "revision that does not exist": ("rollback.yml", {"service": "auth-service", "revision": "99"}, "revision"),
    "revision not a number": ("rollback.yml", {"service": "auth-service", "revision": "two"}, "revision"),
    "release set that does not exist": ("rollback.yml", {"release_set": "42"}, "release_set"),
    "unreachable cluster": ("deploy.yml", {"unreachable": True}, "k8s_cluster_kubeconfig"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_in_one_line_and_changes_nothing(env: DeployEnv, cold, case: str, tmp_path: Path):
    playbook, extra, setting = BAD_INPUTS[case]
    extra = dict(extra)
    inventory = extra.pop("inventory", "inventories/local")
    if extra.pop("unreachable", False):
        extra |= {
            "k8s_cluster_provider": "existing",
            "k8s_cluster_kubeconfig": unreachable_kubeconfig(env, tmp_path / "kc"),
        }
    elif inventory != "inventories/local":
        # The production inventory pointed at the session's cluster: only the confirmation is missing.
        # Its secrets are generated into the test's own vault (production never generates unasked).
        extra |= {
            "k8s_cluster_kubeconfig": str(env.kube.kubeconfig),
            "k8s_cluster_context": env.kube.context,
            "secrets_generate_missing": True,
            "secrets_external_placeholders": True,
        }
    before = env.snapshot()
    result = env.playbook(playbook, inventory=inventory, **extra)
    assert result.returncode != 0, output(result)
    messages = failure_messages(result)
    assert messages, output(result)
    final = messages[-1]
    assert re.match(rf"^(preflight: )?[\w/]*{setting}\b", final), final
    assert "\n" not in final and "\\n" not in final, final
    assert env.snapshot() == before, f"{case} changed the cluster"


def test_upgrade_and_rollback_over_replicas_another_manager_wrote(env: DeployEnv, cold):
    """An HPA writes .spec.replicas through the scale subresource, as `kubectl scale` does. Helm 4
    applies server-side: without forcing that field's conflict the next upgrade, and a rollback,
    would stop on it (bench_scale found it: an upgrade after the autoscalers had scaled up)."""
    service = "api-gateway"
    env.kube.run("scale", "deployment", service, "--replicas=2", "-n", NAMESPACE)
    upgrade = env.deploy(services=service, version="1.5.0")
    assert upgrade.returncode == 0, output(upgrade)
    assert env.image_tag(service) == "1.5.0"
    env.kube.run("scale", "deployment", service, "--replicas=2", "-n", NAMESPACE)
    back = env.rollback(service=service)
    assert back.returncode == 0, output(back)
    assert env.image_tag(service) == "1.4.2"
    ready, wanted = env.ready()[service]
    assert ready == wanted == 1


def test_placeholder_secrets_serve_and_a_rerun_changes_nothing(
    kube: Kube, cluster_vars: dict, tmp_path_factory: pytest.TempPathFactory
):
    """The local-only fallback (service_releases_placeholder_secrets): one Secret per service made
    from passwords generated into the credentials folder, instead of the vault's. Delivered both
    ways, a rerun replaced each with the other (changed=2 at every run)."""
    placeholders = DeployEnv(
        kube, cluster_vars, "openpolicy-e2e-placeholders", tmp_path_factory.mktemp("placeholder-credentials")
    )
    try:
        cold = placeholders.deploy(service_releases_placeholder_secrets=True)
        assert cold.returncode == 0, output(cold)
        assert placeholders.serving() == dict.fromkeys(SERVICES, 1), placeholders.history()
        secrets = kube.json("get", "secrets", "-n", placeholders.namespace, "-l", "openpolicy.dev/placeholder=true")[
            "items"
        ]
        assert "auth-service-secrets" in {secret["metadata"]["name"] for secret in secrets}
        before = placeholders.snapshot()
        again = placeholders.deploy(service_releases_placeholder_secrets=True)
        assert again.returncode == 0, output(again)
        assert recap(again)["localhost"]["changed"] == 0, output(again)
        assert placeholders.snapshot() == before
    finally:
        placeholders.remove()
