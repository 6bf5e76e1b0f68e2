"""Every rendered manifest validates offline against the Kubernetes 1.36 API (strictly)."""

from __future__ import annotations

import copy

from tests.charts import k8s_schema


def test_every_rendered_manifest_matches_the_kubernetes_schemas(all_manifests: list[dict]) -> None:
    assert len(all_manifests) > 300
    errors = k8s_schema.validate_all(all_manifests)
    assert errors == [], "\n".join(errors[:40])


def test_the_validator_rejects_what_the_api_server_would(all_manifests: list[dict]) -> None:
    """Guard against a validator that accepts everything: typos, wrong types, unknown kinds."""
    deployment = copy.deepcopy(next(m for m in all_manifests if m["kind"] == "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFS"] = True
    container["ports"][0]["containerPort"] = "http"
    deployment["spec"]["replicas"] = "2"
    errors = "\n".join(k8s_schema.validate_all([deployment]))
    assert "readOnlyRootFS" in errors
    assert "containerPort" in errors
    assert "spec.replicas" in errors
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "no Kubernetes" in k8s_schema.validate_all([unknown])[0]
    monitor = copy.deepcopy(next(m for m in all_manifests if m["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert "intervall" in "\n".join(k8s_schema.validate_all([monitor]))
