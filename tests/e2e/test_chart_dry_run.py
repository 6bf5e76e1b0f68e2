"""Every rendered manifest of every environment is accepted by the real API server.

The platform baseline of each environment is applied for real (it creates the namespace,
quota, PriorityClasses the services need), then every service's manifests go through a
server-side dry run: admission (Pod Security restricted, quota, LimitRange) and the API
server's own validation, with nothing created.
"""

from __future__ import annotations

import json

import pytest

from tests.charts import k8s_schema, render
from tests.helpers import Kube


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], list[dict]]:
    return render.render_all()


@pytest.fixture(scope="module")
def monitoring_crds(kube: Kube) -> None:
    for path in k8s_schema.monitoring_crd_files():
        kube.run("apply", "--server-side", "-f", str(path))
    for path in k8s_schema.monitoring_crd_files():
        kube.run("wait", "--for=condition=Established", "-f", str(path), "--timeout=60s")


def server_side(kube: Kube, manifests: list[dict], dry_run: bool) -> None:
    hooks_last = sorted(manifests, key=lambda m: "helm.sh/hook" in m.get("metadata", {}).get("annotations", {}))
    args = ["apply", "--server-side", "--field-manager=openpolicy-e2e", "-f", "-"]
    if dry_run:
        args.insert(1, "--dry-run=server")
    kube.run(*args, stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": hooks_last}))


@pytest.mark.parametrize("environment", ["local", "dev", "staging", "production"])
def test_every_manifest_is_accepted_by_the_api_server(kube: Kube, rendered, monitoring_crds, environment: str):
    releases = {release: manifests for (env, release), manifests in rendered.items() if env == environment}
    platform = releases.pop(f"openpolicy-platform-{environment}")
    server_side(kube, platform, dry_run=False)
    namespace = render.namespace(environment)
    labels = kube.json("get", "namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert len(releases) == 9
    for release, manifests in releases.items():
        try:
            server_side(kube, manifests, dry_run=True)
        except AssertionError as error:
            raise AssertionError(f"{environment}/{release}: {error}") from None
    # A dry run creates nothing.
    assert kube.json("get", "deployments", "-n", namespace)["items"] == []


def test_dry_run_rejects_what_the_namespace_forbids(kube: Kube, rendered, monitoring_crds):
    """A control: the same dry run refuses a pod that escalates privileges in the restricted namespace.

    Pod Security admission enforces on pods (it only warns on Deployments), so the control is
    the chart's own pod template as a bare Pod, first as rendered (accepted), then escalating.
    """
    server_side(kube, rendered[("local", "openpolicy-platform-local")], dry_run=False)
    # The controller-manager adds a new namespace's default ServiceAccount a moment later.
    kube.run("wait", "--for=create", "serviceaccount/default", "-n", render.namespace("local"), "--timeout=60s")
    deployment = next(m for m in rendered[("local", "auth-service")] if m["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "control",
            "namespace": render.namespace("local"),
            "labels": template["metadata"]["labels"],
        },
        # The release's ServiceAccount is not created by a dry run; the namespace's default is.
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    server_side(kube, [pod], dry_run=True)
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(AssertionError, match="violates PodSecurity"):
        server_side(kube, [pod], dry_run=True)
