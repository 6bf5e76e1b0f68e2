"""plugins/module_utils/openpolicy_drift.py: drift, promotion checks and pins, on plain data."""

from __future__ import annotations

import pytest
import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import openpolicy_drift as drift

from tests.helpers import REPO

CONTEXT = {"environment": "staging", "namespace": "openpolicy-staging", "chart_name": "openpolicy-service"}
VALUES = {
    "image": {"repository": "ghcr.io/openpolicy/auth-service", "tag": "1.4.2"},
    "replicaCount": 2,
    "config": {"LOG_LEVEL": "info"},
    "existingSecret": "auth-service-secrets",  # pragma: allowlist secret
    "secretChecksum": "abc",
}
MANIFEST = """---
# Source: openpolicy-service/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata: {name: auth-service}
spec:
  replicas: 2
  template: {spec: {containers: [{name: app, image: "ghcr.io/openpolicy/auth-service:1.4.2"}]}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: auth-service-config}
data: {LOG_LEVEL: info}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: auth-service}
"""


def live_objects(replicas: int = 2, ready: int = 2, log_level: str = "info") -> list[dict]:
    objects = [o for o in drift.manifest_objects(MANIFEST) if o["kind"] != "ServiceMonitor"]
    deployment, configmap = yaml.safe_load(yaml.safe_dump(objects))
    deployment["spec"]["replicas"] = replicas
    deployment["status"] = {"readyReplicas": ready, "updatedReplicas": ready}
    configmap["data"]["LOG_LEVEL"] = log_level
    return [deployment, configmap]


def state(values: dict | None = None, status: str = "deployed", chart: str = "openpolicy-service-0.1.0", **live):
    release = {
        "revision": 3,
        "status": status,
        "chart": chart,
        "app_version": "0.1.0",
        "values": values or VALUES,
        "objects": drift.manifest_objects(MANIFEST),
    }
    return {"releases": {"auth-service": release}, "objects": live_objects(**live)}


def report(live_state: dict, checksums: dict | None = None, desired: dict | None = None) -> dict:
    return drift.drift_report(
        live_state,
        desired or {"auth-service": VALUES},
        "0.1.0",
        {"auth-service": "abc"} if checksums is None else checksums,
        CONTEXT,
    )


def messages(result: dict) -> list[str]:
    return [d["message"] for d in result["differences"]]


def test_nothing_differs():
    result = report(state())
    assert result["differences"] == [] and result["unhealthy"] == []
    assert result["live"] == {"auth-service": {"version": "1.4.2", "revision": 3, "status": "deployed"}}


def test_a_deployment_scaled_by_hand_is_named():
    assert messages(report(state(replicas=5, ready=5))) == [
        "Deployment/auth-service: 5 replicas, release auth-service sets 2"
    ]


def test_replicas_an_autoscaler_owns_are_not_drift():
    """The chart renders the HPA's count (its minimum on a first install); the HPA moves it."""
    live_state = state(replicas=4, ready=4)
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "auth-service"}}
    hpa["spec"] = {"scaleTargetRef": {"kind": "Deployment", "name": "auth-service"}, "minReplicas": 2}
    live_state["releases"]["auth-service"]["objects"].append(hpa)
    live_state["objects"].append(hpa)
    assert messages(report(live_state)) == []


def test_a_release_upgraded_outside_the_toolkit_names_version_and_chart():
    upgraded = {**VALUES, "image": {**VALUES["image"], "tag": "1.5.0"}}
    result = report(state(values=upgraded, chart="openpolicy-service-0.2.0"))
    assert messages(result) == [
        "release auth-service: chart openpolicy-service-0.2.0, the inventory deploys 0.1.0",
        "release auth-service: values differ from the inventory: image.tag 1.5.0 (inventory 1.4.2)",
    ]
    assert result["differences"][1]["live"] == {"image.tag": "1.5.0"}


def test_an_edited_secret_is_named_once():
    """The Secret's checksum is compared with the release's, not reported as a changed value."""
    result = report(
        state(),
        checksums={"auth-service": "edited"},
        desired={"auth-service": {**VALUES, drift.SECRET_CHECKSUM_KEY: "edited"}},  # pragma: allowlist secret
    )
    assert messages(result) == [
        "Secret/auth-service-secrets: edited outside the toolkit (not release auth-service's secretChecksum)"
    ]
    assert messages(report(state(), checksums={})) == ["Secret/auth-service-secrets: missing"]


def test_configmap_edits_missing_objects_and_extra_releases():
    live = state(log_level="debug")
    live["objects"] = live["objects"][1:]
    live["releases"]["old-service"] = {**live["releases"]["auth-service"], "objects": []}
    assert messages(report(live)) == [
        "Deployment/auth-service: missing (release auth-service renders it)",
        "ConfigMap/auth-service-config: data differs from release auth-service (LOG_LEVEL)",
        "release old-service: installed, but the inventory does not enable it",
    ]


def test_a_failed_release_and_an_unready_deployment_are_unhealthy():
    result = report(state(status="failed", ready=1))
    assert messages(result) == ["release auth-service: status failed at revision 3"]
    assert [d["message"] for d in result["unhealthy"]] == [
        "release auth-service: status failed at revision 3",
        "Deployment/auth-service: 1/2 Ready",
    ]
    errors = drift.promotion_errors(result, "staging", ["auth-service"])
    assert errors == [
        "promote: staging's live set is not healthy: release auth-service: status failed at revision 3; "
        "Deployment/auth-service: 1/2 Ready"
    ]


def test_a_missing_release_is_named_and_blocks_a_promotion():
    result = report({"releases": {}, "objects": []})
    assert messages(result) == ["release auth-service: not installed (the inventory enables it)"]
    assert drift.promotion_errors(result, "staging", ["auth-service"]) == [
        "promote: staging's live set differs from its inventory: "
        "release auth-service: not installed (the inventory enables it)",
        "promote: staging runs no release of auth-service, which the target enables",
    ]


def test_a_healthy_set_equal_to_its_inventory_may_be_promoted():
    assert drift.promotion_errors(report(state()), "staging", ["auth-service"]) == []


def test_pins_replace_only_the_versions():
    text = (REPO / "inventories/production/group_vars/all/services.yml").read_text()
    written = drift.pins_text(text, {"auth-service": "1.5.0", "api-gateway": "1.4.3"})
    data = yaml.safe_load(written)
    assert data["service_releases_versions"] == {"api-gateway": "1.4.3", "auth-service": "1.5.0"}
    assert data["service_releases_enabled"] == yaml.safe_load(text)["service_releases_enabled"]
    assert data["service_releases_require_pinned_versions"] is True
    assert [line for line in written.splitlines() if line.startswith("#")] == [
        line for line in text.splitlines() if line.startswith("#")
    ]
    assert drift.pins_text(written, {"auth-service": "1.5.0", "api-gateway": "1.4.3"}) == written


def test_pins_replace_an_inline_mapping_and_keep_what_follows():
    text = "---\nservice_releases_versions: {}\n# next\nother: 1\n"
    assert drift.pins_text(text, {"a": "1.0.0"}) == '---\nservice_releases_versions:\n  a: "1.0.0"\n# next\nother: 1\n'


INPUTS = {
    "environments": ["local", "dev", "staging", "production"],
    "inventory_environment": "staging",
    "pins_file": "inventories/production/group_vars/all/services.yml",
    "pins_file_exists": True,
}


@pytest.mark.parametrize(
    ("source", "target", "error"),
    [
        ("staging", "production", None),
        ("", "production", "from: missing; run promote.yml -e from=<environment> -e to=<environment>"),
        ("staging", "", "to: missing; run promote.yml"),
        ("qa", "production", "from: unknown environment 'qa'; expected one of local, dev, staging, production"),
        ("staging", "prod", "to: unknown environment 'prod'; expected one of"),
        ("staging", "staging", "to: expected another environment than from (staging)"),
        ("dev", "production", "from: dev, but the inventory is staging's; expected -i inventories/dev"),
    ],
)
def test_promotion_inputs(source: str, target: str, error: str | None):
    errors = drift.promotion_input_errors({**INPUTS, "from": source, "to": target})
    if error is None:
        assert errors == []
    else:
        assert errors and errors[0].startswith(error), errors


def _deployment(service: str, replicas: int) -> dict:
    return {
        "metadata": {"name": service, "labels": {"app.kubernetes.io/instance": service}},
        "spec": {"replicas": replicas},
    }


@pytest.mark.parametrize(
    ("values", "live", "changed"),
    [
        ({"replicaCount": 1, "autoscaling": {"enabled": False}}, 3, True),
        ({"replicaCount": 1, "autoscaling": {"enabled": False}}, 1, False),
        ({"replicaCount": 2, "autoscaling": {"enabled": True}}, 5, False),
        ({"replicaCount": 1}, None, False),
    ],
    ids=["scaled by hand", "as set", "the autoscaler's", "not installed"],
)
def test_a_deployment_scaled_by_hand_makes_its_release_change(values, live, changed):
    plan = {"health-service": {"tier": "core", "values": values, "changed": False}}
    deployments = [] if live is None else [_deployment("health-service", live)]
    entry = drift.with_live_replicas(plan, deployments)["health-service"]
    assert entry["changed"] is changed and entry.get("rescale", False) is changed
