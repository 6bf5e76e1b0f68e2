"""The local cluster of the foundation issue: real control plane, simulated nodes, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import local_cluster
from tests.helpers import Kube, recap, run_playbook, toolchain_env

SIMULATE = "openpolicy.dev/simulate"


def deployment(name: str, replicas: int, labels: dict | None = None) -> dict:
    pod_labels = {"app": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/openpolicy/sample:1.0.0"}]},
            },
        },
    }


def job(name: str, labels: dict | None = None, backoff_limit: int = 1) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": labels or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "job", "image": "ghcr.io/openpolicy/sample:1.0.0"}],
                },
            },
        },
    }


def ready_replicas(kube: Kube, namespace: str, name: str) -> int:
    return kube.json("get", "deployment", name, "-n", namespace).get("status", {}).get("readyReplicas", 0)


def job_condition(kube: Kube, namespace: str, name: str) -> str | None:
    conditions = kube.json("get", "job", name, "-n", namespace).get("status", {}).get("conditions", [])
    for condition in conditions:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return condition["type"]
    return None


def test_nodes_are_ready(kube: Kube, cluster_vars: dict):
    nodes = kube.json("get", "nodes", "-l", "openpolicy.dev/simulated-node=true")["items"]
    ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])]
    assert len(ready) == cluster_vars["k8s_cluster_nodes"]


def test_control_plane_reports_the_pinned_version(kube: Kube):
    version = json.loads(kube.run("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"] == "v1.36.3"


def test_api_server_binds_loopback_only(kube: Kube):
    server = kube.run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    assert server.startswith("https://127.0.0.1:"), server


def test_controller_manager_and_scheduler_hold_no_leader_lease(kube: Kube):
    """One of each, so no leader election: under load a missed lease renewal would stop them for good."""
    leases = {lease["metadata"]["name"] for lease in kube.json("get", "leases", "-n", "kube-system")["items"]}
    assert not leases & {"kube-controller-manager", "kube-scheduler"}, leases


def test_a_rerun_reads_the_cluster_as_kubectl_does(kube: Kube, cluster_vars: dict):
    """A rerun of `up` reads the version and the nodes on one connection of its own
    (local_cluster.py read_serving): the same server, version and Ready nodes as kubectl."""
    cluster = local_cluster.Cluster(
        cluster_vars["k8s_cluster_name"],
        Path(cluster_vars["k8s_cluster_workdir"]),
        Path(cluster_vars["k8s_cluster_kubeconfig"]),
    )
    served = cluster.read_serving()
    assert served is not None
    server, version, nodes = served
    assert server == kube.run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    assert version["gitVersion"] == json.loads(kube.run("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    listed = kube.json("get", "nodes", "-l", "openpolicy.dev/simulated-node=true")["items"]
    assert sorted(local_cluster.readiness(nodes)) == sorted(node["metadata"]["name"] for node in listed)
    assert sum(local_cluster.readiness(nodes).values()) == cluster_vars["k8s_cluster_nodes"]


def test_second_run_changes_nothing(cluster_first_run, cluster_vars: dict):
    again = run_playbook("provision_cluster.yml", extra_vars=cluster_vars)
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again)["localhost"]["changed"] == 0, again.stdout[-3000:]


def test_three_replica_deployment_becomes_ready(kube: Kube, namespace: str):
    kube.apply(deployment("web", 3), namespace)
    kube.wait_for(lambda: ready_replicas(kube, namespace, "web") == 3, timeout=90, what="3 ready replicas")
    pods = kube.json("get", "pods", "-n", namespace, "-l", "app=web")["items"]
    assert {p["status"]["phase"] for p in pods} == {"Running"}


def test_job_completes(kube: Kube, namespace: str):
    kube.apply(job("migrate"), namespace)
    assert (
        kube.wait_for(lambda: job_condition(kube, namespace, "migrate"), timeout=90, what="job to finish") == "Complete"
    )


def test_crashloop_pod_never_becomes_ready(kube: Kube, namespace: str):
    kube.apply([deployment("healthy", 1), deployment("broken", 1, {SIMULATE: "crashloop"})], namespace)
    # The healthy twin proves the stages ran; only then is "not ready" meaningful.
    kube.wait_for(lambda: ready_replicas(kube, namespace, "healthy") == 1, timeout=90, what="the healthy pod")
    pods = kube.wait_for(
        lambda: [
            p
            for p in kube.json("get", "pods", "-n", namespace, "-l", "app=broken")["items"]
            if p["status"].get("phase") == "Running"
        ],
        timeout=60,
        what="the broken pod to run",
    )
    statuses = pods[0]["status"]["containerStatuses"]
    assert statuses[0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    ready = [c["status"] for c in pods[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == ["False"]
    assert ready_replicas(kube, namespace, "broken") == 0


def test_job_labelled_fail_fails(kube: Kube, namespace: str):
    kube.apply(job("doomed", {SIMULATE: "fail"}, backoff_limit=1), namespace)
    assert (
        kube.wait_for(lambda: job_condition(kube, namespace, "doomed"), timeout=120, what="job to finish") == "Failed"
    )
    pods = kube.json("get", "pods", "-n", namespace, "-l", f"{SIMULATE}=fail")["items"]
    assert pods and {p["status"]["phase"] for p in pods} == {"Failed"}


def test_rbac_denies_unbound_service_account_and_allows_bound_one(kube: Kube, namespace: str, tmp_path):
    kube.run("create", "serviceaccount", "nobody", "-n", namespace)
    kube.run("create", "serviceaccount", "reader", "-n", namespace)
    kube.run("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace)
    kube.run(
        "create", "rolebinding", "reader", "--role=pod-reader", f"--serviceaccount={namespace}:reader", "-n", namespace
    )
    # Real tokens against the real API server, not impersonation by the admin certificate.
    nobody = kube.with_token(
        kube.run("create", "token", "nobody", "-n", namespace).stdout.strip(), tmp_path / "nobody.kubeconfig"
    )
    denied = nobody.run("get", "--raw", f"/api/v1/namespaces/{namespace}/pods", check=False)
    assert denied.returncode != 0
    assert "(Forbidden)" in denied.stderr, denied.stderr
    assert f"system:serviceaccount:{namespace}:nobody" in denied.stderr
    reader = kube.with_token(
        kube.run("create", "token", "reader", "-n", namespace).stdout.strip(), tmp_path / "reader.kubeconfig"
    )
    kube.wait_for(
        lambda: reader.run("get", "pods", "-n", namespace, check=False).returncode == 0,
        timeout=30,
        what="the RoleBinding to allow the reader",
    )
    # The binding allows reading pods, nothing more.
    assert reader.run("get", "secrets", "-n", namespace, check=False).returncode != 0


def test_metrics_server_is_registered(kube: Kube):
    service = kube.json("get", "apiservice", "v1beta1.metrics.k8s.io")
    assert service["spec"]["service"]["name"] == "metrics-server"


def test_metrics_server_reports_simulated_pod_usage(kube: Kube, namespace: str):
    """kwok serves kubelet-style metrics from pod annotations; metrics-server aggregates them."""
    load = deployment("load", 1)
    load["spec"]["template"]["metadata"]["annotations"] = {
        "kwok.x-k8s.io/usage-cpu": "250m",
        "kwok.x-k8s.io/usage-memory": "100Mi",
    }
    load["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    kube.apply(load, namespace)

    def usage() -> str | None:
        top = kube.run("top", "pods", "-n", namespace, "--no-headers", check=False)
        return top.stdout if top.returncode == 0 and "m" in top.stdout else None

    line = kube.wait_for(usage, timeout=150, interval=5, what="kubectl top pods to report usage")
    cpu = int(line.split()[1].rstrip("m"))
    assert 200 <= cpu <= 300, line


def test_cluster_scales_to_a_hundred_nodes_and_back(kube: Kube, cluster_vars: dict):
    """The node count is desired state: raising it adds Ready nodes, lowering it removes them."""
    wider = run_playbook("provision_cluster.yml", extra_vars={**cluster_vars, "k8s_cluster_nodes": 100})
    assert wider.returncode == 0, wider.stdout[-3000:]
    assert recap(wider)["localhost"]["changed"] == 1
    ready = [
        n
        for n in kube.json("get", "nodes", "-l", "openpolicy.dev/simulated-node=true")["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert len(ready) == 100
    back = run_playbook("provision_cluster.yml", extra_vars=cluster_vars)
    assert back.returncode == 0, back.stdout[-3000:]
    names = kube.run("get", "nodes", "-l", "openpolicy.dev/simulated-node=true", "-o", "name").stdout.split()
    assert len(names) == cluster_vars["k8s_cluster_nodes"]


def test_make_up_on_a_stopped_cluster_runs_pods_at_once(tmp_path: Path):
    """A cluster stopped (a reboot, `kwokctl stop cluster`), or whose API server alone was
    killed, brought up again by the role: the kwok controller that starts holds every node's
    lease before the role returns, so a Job created right after completes in seconds. The
    stopped controller's leases used to keep every pod Pending for minutes, and a deploy right
    after `make up` failed its migration hooks. A cluster of its own: the other modules' cluster
    is never stopped."""
    name = "openpolicy-e2e-restart"
    cluster = {
        "k8s_cluster_name": name,
        "k8s_cluster_workdir": str(tmp_path / "cluster"),
        "k8s_cluster_kubeconfig": str(tmp_path / "kubeconfig"),
        "k8s_cluster_nodes": 2,
        "secrets_vault_file": str(tmp_path / "vault.yml"),
    }
    created = run_playbook("provision_cluster.yml", extra_vars=cluster)
    assert created.returncode == 0, created.stdout[-3000:]
    try:
        subprocess.run(
            ["kwokctl", "--name", name, "stop", "cluster"],
            env=toolchain_env(KWOK_WORKDIR=cluster["k8s_cluster_workdir"]),
            check=True,
            capture_output=True,
        )
        again = run_playbook("provision_cluster.yml", extra_vars=cluster)
        assert again.returncode == 0, again.stdout[-3000:]
        assert recap(again)["localhost"]["changed"] == 1, "the stopped cluster must be reported as started"
        kube = Kube(Path(cluster["k8s_cluster_kubeconfig"]), f"kwok-{name}")
        # Leases of 40 s, renewed every 10 s: kwokctl's own 200 s is replaced on the command line.
        leases = kube.json("get", "leases", "-n", "kube-node-lease")["items"]
        assert {lease["spec"]["leaseDurationSeconds"] for lease in leases} == {40}
        kube.apply(job("after-restart"), namespace="default")
        # A Job here completes in a second or two; the stopped controller's leases held its pod
        # Pending for up to four minutes (200 s leases, tried every 50 s).
        condition = kube.wait_for(
            lambda: job_condition(kube, "default", "after-restart"), timeout=60, what="the Job to end after the restart"
        )
        assert condition == "Complete"

        # The API server alone killed (the rest still running): kwokctl's start left it down after
        # a five-minute wait, and the role failed. It now restarts the whole control plane.
        pids = Path(cluster["k8s_cluster_workdir"]) / "clusters" / name / "pids"
        os.kill(int((pids / "kube-apiserver.pid").read_text()), signal.SIGKILL)
        revived = run_playbook("provision_cluster.yml", extra_vars=cluster, timeout=240)
        assert revived.returncode == 0, revived.stdout[-3000:]
        kube.apply(job("after-api-server-killed"), namespace="default")
        condition = kube.wait_for(
            lambda: job_condition(kube, "default", "after-api-server-killed"), timeout=60, what="the second Job"
        )
        assert condition == "Complete"
    finally:
        down = run_playbook("teardown_local.yml", extra_vars={**cluster, "podman_hosts_groups": []})
        assert down.returncode == 0, down.stdout[-3000:]
