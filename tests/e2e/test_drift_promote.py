"""drift.yml, deploy.yml --check --diff and promote.yml on the session's cluster, against one
environment deployed once.

"staging" is a namespace deployed with inventories/staging itself, overlaid only where the
local cluster differs from staging's (provider existing with the session cluster's kubeconfig,
a namespace of its own, no monitoring CRDs here). Drift: it is changed outside the toolkit the
way operators do (a Deployment scaled by hand, a release upgraded with plain helm, a Secret
edited): the check names each and fails; after deploy.yml it passes. The plan of a changed
version and a changed value changes nothing. Promotion writes the production pins to a copy of
inventories/production's services.yml. The tests build on each other in file order.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.e2e.deploy_env import KINDS, SERVICES, DeployEnv, failure_messages, output, shown
from tests.e2e.topology import seed_vault_file
from tests.helpers import REPO, Kube

pytestmark = pytest.mark.cluster

CHART = str(REPO / "charts" / "openpolicy-service")
PINS = REPO / "inventories" / "production" / "group_vars" / "all" / "services.yml"
# What staging proves before production: two services ahead of production's 1.4.2.
STAGING_VERSIONS = {**dict.fromkeys(SERVICES, "1.4.2"), "auth-service": "1.5.0", "policy-service": "1.4.3"}
STAGING_RELEASES = REPO / "inventories" / "staging" / "group_vars" / "all" / "releases.yml"


class StagingEnv(DeployEnv):
    """inventories/staging against the session's cluster, reached as an existing cluster."""

    def playbook(self, name: str, *args: str, inventory: str = "inventories/staging", **extra):
        overlay = {
            "k8s_cluster_provider": "existing",
            "k8s_cluster_context": f"kwok-{self.cluster_vars['k8s_cluster_name']}",
            "service_releases_monitoring": False,
            "service_releases_versions": STAGING_VERSIONS,
            # Staging's db, backup and monitoring hosts are not here, and neither drift nor
            # promotion reads them: the preflight's login to every managed host is skipped as if
            # it had passed.
            "preflight_hosts_reached": True,
        }
        return super().playbook(name, *args, inventory=inventory, **{**overlay, **extra})


@pytest.fixture(scope="module")
def staging(kube: Kube, cluster_vars: dict, tmp_path_factory: pytest.TempPathFactory):
    env = StagingEnv(kube, cluster_vars, "openpolicy-e2e-staging", tmp_path_factory.mktemp("staging"))
    # Staging generates no provider-issued secret (SMTP, Slack): the operator adds them first.
    seed_vault_file(env.credentials / "vault.yml")
    result = env.deploy()
    assert result.returncode == 0, output(result)
    yield env
    env.remove()


def drift(env: DeployEnv, report: Path, **extra):
    result = env.playbook("drift.yml", release_drift_report_file=str(report), **extra)
    return result, json.loads(report.read_text()) if report.exists() else None


def test_drift_names_every_change_made_outside_the_toolkit(staging: DeployEnv, tmp_path: Path):
    ns = staging.namespace
    # health-service runs without autoscaling (its catalog has no bounds): the release sets 2.
    staging.kube.run("scale", "deployment", "health-service", "--replicas=3", "-n", ns)
    upgrade = staging.helm("upgrade", "search-service", CHART, "-n", ns, "--reuse-values", "--set", "image.tag=1.5.0")
    assert upgrade.returncode == 0, upgrade.stderr
    staging.kube.run(
        "patch", "secret", "config-service-secrets", "-n", ns, "-p", '{"stringData": {"edited": "by hand"}}'
    )

    result, report = drift(staging, tmp_path / "drift.json")
    assert result.returncode != 0
    message = failure_messages(result)[-1]
    assert message.startswith(f"drift in {ns}: "), output(result)
    # A plain `helm upgrade` leaves the live objects equal to that release's own manifest: the
    # change shows as the release's values against the inventory, not as an object difference.
    for expected in (
        "Deployment/health-service: 3 replicas, release health-service sets 2",
        "release search-service: values differ from the inventory: image.tag 1.5.0 (inventory 1.4.2)",
        "Secret/config-service-secrets: edited outside the toolkit",
    ):
        assert expected in message, message
    names = {d["name"] for d in report["differences"]}
    assert {"Deployment/health-service", "search-service", "Secret/config-service-secrets"} <= names
    assert report["environment"] == "staging" and report["namespace"] == ns


def test_after_a_deploy_nothing_differs(staging: DeployEnv, tmp_path: Path):
    result = staging.deploy()
    assert result.returncode == 0, output(result)
    # The upgraded release and the edited Secret come back, and the Deployment scaled by hand in
    # an unchanged release counts as a change of its release (roles/service_releases, plan).
    result, report = drift(staging, tmp_path / "drift.json")
    assert result.returncode == 0, output(result)
    assert report["differences"] == [] and len(report["live"]) == len(SERVICES)
    assert f"no drift in {staging.namespace}: {len(SERVICES)} releases equal the inventory" in result.stdout


def written(env: DeployEnv) -> tuple:
    """What a run may write: Helm's revisions, the release sets, and each object's spec (its
    generation where the kind keeps one, else a digest of the object without its status and
    resourceVersion: an HPA has no generation). The deploy just before leaves the controllers
    and kwok updating statuses (a rollout, an HPA, pods): those are not compared."""
    kinds = ",".join(kind for kind in KINDS.split(",") if kind not in ("pods", "rs"))
    items = env.kube.json("get", kinds, "-n", env.namespace)["items"]
    items += env.kube.json("get", "secrets", "-n", "openpolicy-system", "-l", f"name={env.baseline_release}")["items"]
    return env.history(), env.release_sets(), {f"{i['kind']}/{i['metadata']['name']}": spec(i) for i in items}


def spec(item: dict) -> int | str:
    meta = item["metadata"]
    if "generation" in meta:
        return meta["generation"]
    kept = {k: v for k, v in item.items() if k not in ("metadata", "status")}
    kept["metadata"] = {k: meta.get(k) for k in ("labels", "annotations")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def test_check_diff_plans_a_version_and_a_value_and_changes_nothing(staging: DeployEnv):
    before = written(staging)
    settings = yaml.safe_load(STAGING_RELEASES.read_text())["service_releases_service_settings"]
    result = staging.deploy(
        "--check", "--diff",
        service_releases_versions={**STAGING_VERSIONS, "search-service": "1.5.0"},
        service_releases_service_settings={**settings, "health-service": {"replicas": 3}},
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    plan = plan_lines(result)
    # The version label is on every object of the release: all of them change with the version.
    search = plan["search-service"]
    assert search.startswith("search-service: upgrade 1.4.2 -> 1.5.0; values image.tag: 1.4.2 -> 1.5.0; objects "), plan
    assert "~Deployment/search-service" in search and search.endswith("; migration hook runs"), search
    health = plan["health-service"]
    assert health.startswith("health-service: upgrade 1.4.2; values replicaCount: 2 -> 3; objects "), plan
    assert "~Deployment/health-service" in health, health
    assert plan["config-service"] == "config-service: no change (1.4.2)"
    assert plan[f"plan for {staging.namespace}"] == (
        f"plan for {staging.namespace}: 2 of {len(SERVICES)} releases change, nothing was changed (--check)"
    )
    # --diff: the changed values, serving and after.
    assert "-image.tag: 1.4.2" in result.stdout and "+image.tag: 1.5.0" in result.stdout, output(result)
    after = written(staging)
    objects = {name for name in before[2].keys() | after[2].keys() if before[2].get(name) != after[2].get(name)}
    assert after == before, f"changed: {sorted(objects)}"


def plan_lines(result) -> dict[str, str]:
    """The lines deploy.yml --check printed, by release (and the closing line by its head)."""
    text = shown(result).split("Show what the deploy would change]", 1)[1].split("TASK [", 1)[0]
    return {item.split(":", 1)[0]: item.strip() for item in text.split(" - ")[1:]}


@pytest.fixture
def pins(tmp_path: Path) -> Path:
    copy = tmp_path / "services.yml"
    shutil.copyfile(PINS, copy)
    return copy


def promote(env: DeployEnv, pins: Path, **extra):
    return env.playbook(
        "promote.yml", **{"from": "staging", "to": "production", "release_promotion_pins_file": str(pins), **extra}
    )


def test_promotion_writes_staging_live_versions(staging: DeployEnv, pins: Path):
    original = pins.read_text()
    result = promote(staging, pins)
    assert result.returncode == 0, output(result)
    live = {name: staging.image_tag(name) for name in SERVICES}
    assert live == STAGING_VERSIONS
    written = yaml.safe_load(pins.read_text())
    assert written["service_releases_versions"] == live
    # Only the pins changed: the rest of production's file is as it was.
    untouched = {k: v for k, v in yaml.safe_load(original).items() if k != "service_releases_versions"}
    assert {k: v for k, v in written.items() if k != "service_releases_versions"} == untouched
    again = promote(staging, pins)
    assert again.returncode == 0 and "already pins" in again.stdout, output(again)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"from": "qa"}, "from: unknown environment 'qa'; expected one of local, dev, staging, production"),
        ({"to": "staging"}, "to: expected another environment than from (staging)"),
        ({"from": ""}, "from: missing; run promote.yml -e from=<environment> -e to=<environment>"),
    ],
    ids=["unknown-from", "same-environment", "missing-from"],
)
def test_bad_promotion_input_fails_in_one_line(staging: DeployEnv, pins: Path, extra: dict, expected: str):
    # What the toolkit writes: Helm's revisions and the release sets (the controllers and kwok
    # keep updating the status of Deployments and pods meanwhile).
    before = staging.history(), staging.release_sets()
    result = promote(staging, pins, **extra)
    assert result.returncode != 0
    messages = failure_messages(result)
    assert len(messages) == 1 and messages[0].startswith(expected), output(result)
    assert pins.read_text() == PINS.read_text() and (staging.history(), staging.release_sets()) == before


def test_promotion_is_refused_when_a_staging_release_failed(staging: DeployEnv, pins: Path):
    failed = staging.helm(
        "upgrade", "search-service", CHART, "-n", staging.namespace, "--reuse-values",
        "--set", "podLabels.openpolicy\\.dev/simulate=crashloop", "--wait=watcher", "--timeout", "15s",
    )  # fmt: skip
    assert failed.returncode != 0
    result = promote(staging, pins)
    assert result.returncode != 0
    message = failure_messages(result)[-1]
    assert message.startswith("promote: staging's live set is not healthy: release search-service: status failed"), (
        output(result)
    )
    assert pins.read_text() == PINS.read_text()
