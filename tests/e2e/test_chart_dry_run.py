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
from tests.unit.test_helm_releases import run_module


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


def namespace_terminating(kube: Kube, namespace: str) -> bool:
    phase = kube.run("get", "namespace", namespace, "-o", "jsonpath={.status.phase}", check=False).stdout
    return phase.strip() == "Terminating"


@pytest.mark.parametrize("environment", ["local", "dev", "staging", "production"])
def test_every_manifest_is_accepted_by_the_api_server(kube: Kube, rendered, monitoring_crds, environment: str):
    releases = {release: manifests for (env, release), manifests in rendered.items() if env == environment}
    platform = releases.pop(f"openpolicy-platform-{environment}")
    namespace = render.namespace(environment)
    # A module that ran before on this worker's cluster may have left the environment's namespace
    # being deleted (--wait=false): a terminating namespace takes no new object.
    kube.wait_for(
        lambda: not namespace_terminating(kube, namespace), timeout=180, what=f"namespace {namespace} to be deleted"
    )
    server_side(kube, platform, dry_run=False)
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


UNKNOWN_FIELD_CHART = {
    "Chart.yaml": "apiVersion: v2\nname: unknown-field\nversion: 0.1.0\n",
    # The same mistake in a hook (applied before the release's objects) and in an object of the
    # release: each alone is refused.
    "templates/hook.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hook\n  annotations:\n"
        "    helm.sh/hook: pre-install\n{{- if .Values.hookMistake }}\nspecx: 1\n{{- end }}\ndata: {a: b}\n"
    ),
    "templates/own.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: own\n{{- if .Values.ownMistake }}\nspecx: 1\n{{- end }}\n"
        "data: {a: b}\n"
    ),
}


@pytest.mark.parametrize("mistake", ["hookMistake", "ownMistake"])
def test_the_api_server_refuses_an_unknown_field_without_helms_openapi_check(kube: Kube, tmp_path, mistake: str):
    """release_tiers runs Helm with --disable-openapi-validation (its check of the cluster's schema
    cost most of a release's CPU): the API server's strict check of a server-side apply still
    fails the release, before the object exists, naming the field."""
    namespace = f"t-unknown-field-{mistake.lower()}"
    kube.run("create", "namespace", namespace)
    chart = tmp_path / "chart"
    for name, text in UNKNOWN_FIELD_CHART.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)
    args = {
        "namespace": namespace,
        "kubeconfig": str(kube.kubeconfig),
        "context": kube.context,
        "chart": str(chart),
        "releases": [{"name": "unknown-field", "values": {mistake: True}, "labels": {}}],
        "timeout": 60,
        "failure_grace": 0,
    }
    try:
        result = run_module("release_tiers", tmp_path, args)["releases"]["unknown-field"]
        own = kube.json("get", "configmaps", "-n", namespace, "--field-selector", "metadata.name=own")["items"]
    finally:
        kube.run("delete", "namespace", namespace, "--wait=false", check=False)
    assert result["rc"] != 0
    assert ".specx: field not declared in schema" in result["stderr"], result["stderr"]
    assert own == []
